"""A livepatch made by ``klpelf build`` from a fix to Debian's linux-source-6.1, loaded.

The tree is Debian's linux-source-6.1 (/usr/src/linux-source-6.1.tar.xz: apt-get
install linux-source-6.1), the source of the 6.1 kernel the harness boots, prepared
once with that kernel's config (/boot/config-RELEASE) into the cache: unpacked, ``make
olddefconfig``, ``make KERNELRELEASE=RELEASE modules_prepare`` and the headers'
Module.symvers copied in (measured on the 2-core machine: 3 minutes at load 9 under
nice, unpack 73 s, olddefconfig 39 s, modules_prepare 78 s; under 40 s at load 3).
The fix (fs/proc/cmdline.c: /proc/cmdline prints a prefix) is built with ``klpelf
build`` against the VM's kallsyms, compiling only that file; in the VM the patch
changes /proc/cmdline, and disabled, gives the original back.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.conftest import unavailable
from kernel.klpvm.cases import (
    BOOT_CMDLINE,
    CMDLINE,
    Case,
    disable,
    guest_script,
    load,
    parse_case,  # fmt: skip
    read,
)
from kernel.klpvm.debian import cache_root
from kernel.klpvm.suite import convert_kallsyms
from kernel.klpvm.vm import KernelSpec, VmError, boot, host_problems, installed_releases

pytestmark = pytest.mark.kernel

TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
UNIT = "fs/proc/cmdline.c"
OLD = "\tseq_puts(m, saved_command_line);\n"
NEW = '\tseq_puts(m, "klpelf build: ");\n' + OLD


def _run(cmd: list[str], cwd: Path) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"{cmd}: {r.stderr[-2000:]}"


def _prepared_tree(spec: KernelSpec) -> Path:
    """The tree prepared for ``spec``, from the cache when the same tarball and config
    prepared it."""
    config = Path(f"/boot/config-{spec.release}")
    if not TARBALL.is_file() or not config.is_file():
        unavailable(f"needs {TARBALL} (apt-get install linux-source-6.1) and {config}")
    st = TARBALL.stat()
    digest = hashlib.sha256(config.read_bytes()).hexdigest()
    stamp = f"{st.st_size}:{st.st_mtime_ns} {digest} {spec.release}\n"
    root = cache_root() / f"linux-source-6.1-{spec.release}"
    tree, done = root / "linux-source-6.1", root / "prepared"
    if done.is_file() and done.read_text() == stamp:
        return tree
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    _run(["tar", "xf", str(TARBALL)], root)
    shutil.copy(config, tree / ".config")
    _run(["make", "-s", "olddefconfig"], tree)
    _run(["make", "-s", f"-j{os.cpu_count() or 1}", f"KERNELRELEASE={spec.release}",
          "modules_prepare"], tree)  # fmt: skip
    shutil.copy(spec.host_build_dir / "Module.symvers", tree / "Module.symvers")
    done.write_text(stamp)
    return tree


def test_fix_built_by_klpelf_build_runs_in_the_kernel(tmp_path: Path) -> None:
    ok = [r for r in installed_releases() if r.startswith("6.1.")]
    if not ok:
        unavailable("no Linux 6.1 with image, modules and headers installed")
    spec = KernelSpec.installed(ok[-1])
    problems = host_problems() + spec.problems()
    if problems:
        unavailable("; ".join(problems))
    tree = _prepared_tree(spec)
    text = (tree / UNIT).read_text()
    assert OLD in text
    fix = tmp_path / "cmdline.patch"
    fix.write_text("".join(difflib.unified_diff(
        text.splitlines(keepends=True), text.replace(OLD, NEW).splitlines(keepends=True),
        f"a/{UNIT}", f"b/{UNIT}")))  # fmt: skip
    kallsyms, _ = convert_kallsyms(spec, tmp_path / "kallsyms")
    lp = tmp_path / "livepatch_cmdline.ko"
    r = subprocess.run([sys.executable, "-m", "klpelf", "build", str(fix), "--source", str(tree),
                        "-k", f"kallsyms:{kallsyms}", "-k", str(tree / "Module.symvers"),
                        "-o", str(lp)], capture_output=True, text=True, check=False)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{UNIT}: klp_func cmdline_proc_show,0 (vmlinux)" in r.stdout
    assert "Linux 6.1 (vermagic) would load the module" in r.stdout
    assert (tree / UNIT).read_text() == text
    case = Case("build_cmdline", "klpelf build of fs/proc/cmdline.c from linux-source-6.1",
                (read(CMDLINE), load("livepatch_cmdline"), read(CMDLINE),
                 disable("livepatch_cmdline"), read(CMDLINE)), 1, "livepatch_cmdline")  # fmt: skip
    try:
        b = boot(spec, tmp_path / "boot", guest_script([case]),
                 {"mods/livepatch_cmdline.ko": lp.read_bytes()}, cmdline=BOOT_CMDLINE)  # fmt: skip
    except VmError as e:
        pytest.fail(f"{e}\n{e.console[-4000:]}")
    got = parse_case(case, b.out_dir / "cases" / case.name)
    assert [s.rc for s in got.steps] == [0] * 5, got.dmesg
    before, during, after = (got.output(i) for i in (0, 2, 4))
    assert during == f"klpelf build: {before}" and after == before, got.dmesg
    shutil.rmtree(tmp_path / "boot", ignore_errors=True)
