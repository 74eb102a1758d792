"""A livepatch made by ``klpelf diff --module-dir`` from a source fix, loaded in the VM.

The fix is to tests/kernel/cases/klpt_target.c (an ordinary module with
/proc/klpt_target): its show function prints something new.  The module the VM loads
is the plain kbuild build; the two builds that are diffed are the original and the
fixed source with ``-ffunction-sections -fdata-sections``, as a livepatch build makes
them.  ``klpelf diff`` writes the patch module's sources (klp_func klpt_target_show,
the module's static klpt_target_secret as ``.klp.sym.klpt_target.klpt_target_secret,0``),
kbuild links it, ``klpelf convert`` finishes it, and in one boot of the host's kernel
(Debian 12's 6.1, the release of the installed headers):

* ``diff_patch``: klpt_target loaded, then the patch: /proc/klpt_target prints the
  fixed text; disabled, the original again;
* ``diff_late``: the patch first, then klpt_target (late module patching: the klp
  relocations are written when the module loads): the fixed text, the secret read;
* ``diff_vmlinux``: a fix to a unit of vmlinux (tests/kernel/cases_diff/cmdline.c, the
  /proc/cmdline handler, compiled as it is and with the fix by the same kbuild): the
  patch replaces cmdline_proc_show, which reads ``saved_command_line`` and
  intel_idle's ``max_cstate`` (vmlinux has two: ``--sympos vmlinux:max_cstate=1``,
  sympos from the VM's /proc/kallsyms) through ``.klp.sym.vmlinux.`` symbols.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.klpvm.cases import (
    BOOT_CMDLINE,
    CMDLINE,
    Case,
    disable,
    guest_script,
    load,
    parse_case,
    read,
    unload,
)
from kernel.klpvm.suite import convert_kallsyms
from kernel.klpvm.vm import KernelSpec, VmError, boot, host_problems, installed_releases

pytestmark = pytest.mark.kernel

CASES_DIR = Path(__file__).parent / "cases"
VMLINUX_UNIT = Path(__file__).parent / "cases_diff" / "cmdline.c"
PROC = "/proc/klpt_target"
ORIGINAL = "klpt_target: original (secret set)\n"
FIXED = "klpt_target: fixed by klpelf diff (secret 4242)\n"
FIX = (
    ('seq_printf(m, "klpt_target: original (secret %s)\\n",\n'
     '\t\t   READ_ONCE(klpt_target_secret) ? "set" : "unset");'),
    ('seq_printf(m, "klpt_target: fixed by klpelf diff (secret %d)\\n",\n'
     "\t\t   READ_ONCE(klpt_target_secret));"),
)  # fmt: skip


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"real-kernel tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"real-kernel tests: {reason}")


def _spec() -> KernelSpec:
    ok = [r for r in installed_releases() if r.startswith("6.1.")]
    if not ok:
        _unavailable("no Linux 6.1 with image, modules and headers installed "
                     "(apt-get install linux-image-amd64 linux-headers-amd64)")  # fmt: skip
    problems = host_problems() + KernelSpec.installed(ok[-1]).problems()
    if problems:
        _unavailable("; ".join(problems))
    return KernelSpec.installed(ok[-1])


def _make(spec: KernelSpec, d: Path, target: str, *, sections: bool) -> None:
    cmd = ["make", "-C", str(spec.build_dir), f"M={d}", target, "KBUILD_MODPOST_WARN=1"]
    if sections:
        cmd.append("KCFLAGS=-ffunction-sections -fdata-sections")
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def _klpelf(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "klpelf", *args], capture_output=True,
                       text=True, check=False)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _tree(root: Path, name: str, source: str, unit: str = "klpt_target", flags: str = "") -> Path:
    d = root / name
    d.mkdir()
    (d / f"{unit}.c").write_text(source)
    (d / "Kbuild").write_text(f"obj-m := {unit}.o\n" + (f"ccflags-y := {flags}\n" if flags else ""))
    return d


def _vmlinux_patch(spec: KernelSpec, tmp: Path) -> Path:
    # the fix to a unit of vmlinux, diffed against the VM's kallsyms and Module.symvers
    text = VMLINUX_UNIT.read_text()
    orig = _tree(tmp, "v_orig", text, "cmdline")
    fixed = _tree(tmp, "v_fixed", text, "cmdline", "-DKLPT_FIXED")
    for d in (orig, fixed):
        _make(spec, d, "cmdline.o", sections=True)
    kallsyms, _ = convert_kallsyms(spec, tmp / "kallsyms")
    symvers = str(spec.host_build_dir / "Module.symvers")
    args = [str(orig / "cmdline.o"), str(fixed / "cmdline.o"), "--object", "vmlinux",
            "-k", f"kallsyms:{kallsyms}", "--symvers", symvers]  # fmt: skip
    # max_cstate is ambiguous in vmlinux: an error naming the candidates and the way out
    r = subprocess.run([sys.executable, "-m", "klpelf", "diff", *args, "-o", str(tmp / "x.o")],
                       capture_output=True, text=True, check=False)  # fmt: skip
    assert r.returncode == 1 and "--sympos vmlinux:max_cstate=N" in r.stderr, r.stderr
    mod = tmp / "klpt_cmdline_diff"
    report = _klpelf("diff", *args, "--sympos", "vmlinux:max_cstate=1", "--module-dir",
                     str(mod), "--name", "klpt_cmdline_diff", "--no-replace")  # fmt: skip
    assert "klp_func cmdline_proc_show,0 -> __klpelf_new_cmdline_cmdline_proc_show" in report
    assert "undefined max_cstate -> .klp.sym.vmlinux.max_cstate,1" in report
    assert "undefined saved_command_line -> .klp.sym.vmlinux.saved_command_line,0" in report
    _make(spec, mod, "modules", sections=False)
    lp = tmp / "klpt_cmdline_diff.ko"
    _klpelf("convert", str(mod / "klpt_cmdline_diff.ko"), "-o", str(lp))
    checked = _klpelf("check", "-k", f"kallsyms:{kallsyms}", "--kernel-release", "6.1", str(lp))
    assert "would load the module" in checked
    return lp


def test_fix_made_by_klpelf_diff_runs_in_the_kernel(tmp_path: Path) -> None:
    spec = _spec()
    text = (CASES_DIR / "klpt_target.c").read_text()
    assert FIX[0] in text
    plain = _tree(tmp_path, "plain", text)
    orig = _tree(tmp_path, "orig", text)
    fixed = _tree(tmp_path, "fixed", text.replace(*FIX))
    _make(spec, plain, "modules", sections=False)
    _make(spec, orig, "klpt_target.o", sections=True)
    _make(spec, fixed, "klpt_target.o", sections=True)
    mod = tmp_path / "klpt_diff"
    report = _klpelf(
        "diff",
        str(orig / "klpt_target.o"),
        str(fixed / "klpt_target.o"),
        "--object",
        "klpt_target",
        "-k",
        str(plain / "klpt_target.ko"),
        "--symvers",
        str(spec.host_build_dir / "Module.symvers"),
        "--module-dir",
        str(mod),
        "--name",
        "klpt_diff",
        "--no-replace",
    )
    assert "klp_func klpt_target_show,0 -> __klpelf_new_klpt_target_klpt_target_show" in report
    assert "reference klpt_target_secret -> .klp.sym.klpt_target.klpt_target_secret,0" in report
    _make(spec, mod, "modules", sections=False)
    lp = tmp_path / "klpt_diff.ko"
    _klpelf("convert", str(mod / "klpt_diff.ko"), "-o", str(lp))
    checked = _klpelf("check", "-k", str(plain / "klpt_target.ko"), "--kernel-release", "6.1",
                      str(lp))  # fmt: skip
    assert "would load the module" in checked

    vmlinux_lp = _vmlinux_patch(spec, tmp_path)
    cases = [
        Case("diff_patch", "the fix applied to a loaded module",
             (load("klpt_target"), read(PROC), load("klpt_diff"), read(PROC),
              disable("klpt_diff"), read(PROC), unload("klpt_diff"), unload("klpt_target")),
             2, "klpt_diff"),
        Case("diff_late", "the fix loaded before the module (late module patching)",
             (load("klpt_diff"), load("klpt_target"), read(PROC), disable("klpt_diff"),
              read(PROC)), 0, "klpt_diff"),
        Case("diff_vmlinux", "the fix to a unit of vmlinux",
             (read(CMDLINE), load("klpt_cmdline_diff"), read(CMDLINE),
              disable("klpt_cmdline_diff"), read(CMDLINE)), 1, "klpt_cmdline_diff"),
    ]  # fmt: skip
    files = {"mods/klpt_target.ko": (plain / "klpt_target.ko").read_bytes(),
             "mods/klpt_diff.ko": lp.read_bytes(),
             "mods/klpt_cmdline_diff.ko": vmlinux_lp.read_bytes()}  # fmt: skip
    try:
        b = boot(spec, tmp_path / "boot", guest_script(cases), files, cmdline=BOOT_CMDLINE)
    except VmError as e:
        pytest.fail(f"{e}\n{e.console[-4000:]}")
    got = {c.name: parse_case(c, b.out_dir / "cases" / c.name) for c in cases}
    patch, late = got["diff_patch"], got["diff_late"]
    assert [s.rc for s in patch.steps] == [0] * 8, patch.dmesg
    assert [patch.output(i) for i in (1, 3, 5)] == [ORIGINAL, FIXED, ORIGINAL], patch.dmesg
    assert [s.rc for s in late.steps] == [0] * 5, late.dmesg
    assert [late.output(i) for i in (2, 4)] == [FIXED, ORIGINAL], late.dmesg
    v = got["diff_vmlinux"]
    assert [s.rc for s in v.steps] == [0] * 5, v.dmesg
    before, during, after = (v.output(i) for i in (0, 2, 4))
    # intel_idle.max_cstate=3 on the command line: sympos 1 is intel_idle's
    assert during == f"klpelf diff: {before.strip()} max_cstate=3\n", v.dmesg
    assert after == before
    shutil.rmtree(tmp_path / "boot", ignore_errors=True)
