"""Build the test modules of tests/kernel/cases/ for one kernel, convert them, mutate them.

``make -C <build_dir> M=<copy of cases/> modules`` with the kernel's own kbuild tree
(Debian's linux-headers-<release>), then ``klpelf convert`` (the command line, as a
user runs it) on the livepatch modules, then the negative corpus from
:mod:`kernel.klpvm.mutate`.

``klpelf convert`` runs in annotation mode on :data:`LIVEPATCH_MODULES` and in
automatic mode on :data:`AUTO_MODULES`: ``--kernel kallsyms:<the VM's /proc/kallsyms>
--symvers <build_dir>/Module.symvers``.  That kallsyms comes from a boot of the same
kernel (:func:`kernel.klpvm.suite.convert_kallsyms`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kernel.klpvm.debian import chroot_command
from kernel.klpvm.mutate import MUTATIONS, make_variant
from kernel.klpvm.vm import KernelSpec

CASES_DIR = Path(__file__).resolve().parent.parent / "cases"
#: kbuild output -> the module the VM loads (converted or not)
LIVEPATCH_MODULES = ("klpt_vmlinux", "klpt_late", "klpt_objs", "klpt_e_noexist", "klpt_e_sympos",
                     "klpt_e_ambiguous", "klpt_e_notrace", "klpt_e_undeclared",
                     "klpt_e_states", "klpt_e_replace")  # fmt: skip
PLAIN_MODULES = ("klpt_target", "klpt_dup")
#: converted in automatic mode: module -> its ``--sympos`` options
AUTO_MODULES: dict[str, tuple[str, ...]] = {"klpt_auto": ("vmlinux:max_cstate=1",)}


class BuildError(Exception):
    pass


@dataclass
class BuiltModules:
    """Module name -> the .ko to load, for one kernel."""

    release: str
    directory: Path
    modules: dict[str, Path]


def kbuild(spec: KernelSpec, dest: Path, subdir: str = "") -> Path:
    """Copy the C sources to ``dest`` and build them (those of ``cases/<subdir>`` when
    given: ``arm64``); return the directory of the modules built.

    With ``spec.chroot`` the build runs in that chroot (the release's own compiler and
    kbuild tools), in a directory of its own under the chroot's /tmp, copied back to
    ``dest`` afterwards.
    """
    if dest.exists():
        shutil.rmtree(dest)
    ignore = shutil.ignore_patterns("*.ko", "*.o", ".*")
    if spec.chroot is None:
        shutil.copytree(CASES_DIR, dest, ignore=ignore)
        _make(spec, dest / subdir, dest / subdir)
        return dest / subdir
    tmp = Path(tempfile.mkdtemp(dir=spec.chroot / "tmp", prefix="klpt-"))
    try:
        shutil.copytree(CASES_DIR, tmp / "src", ignore=ignore)
        inside = Path("/") / (tmp / "src").relative_to(spec.chroot)
        try:
            _make(spec, inside / subdir, tmp / "src" / subdir)
        finally:
            shutil.copytree(tmp / "src", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / subdir


def _make(spec: KernelSpec, src: Path, log_dir: Path) -> None:
    """``make -C build_dir M=src modules`` on the host or in ``spec.chroot``."""
    make = ["make", "-C", str(spec.build_dir), *spec.machine.kbuild_args, f"M={src}",
            "KBUILD_MODPOST_WARN=1", "modules"]  # fmt: skip
    cmd = make if spec.chroot is None else chroot_command(spec.chroot, make)
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    (log_dir / "build.log").write_text(" ".join(cmd) + "\n" + res.stdout + res.stderr)
    if res.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")


def convert(src: Path, out: Path, auto: list[str] | None = None) -> None:
    """``klpelf convert src -o out``; ``auto``: the automatic mode's options."""
    cmd = [sys.executable, "-m", "klpelf", "convert", str(src), "-o", str(out), *(auto or [])]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise BuildError(f"klpelf convert {src.name} failed:\n{res.stdout}{res.stderr}")


def auto_options(spec: KernelSpec, kallsyms: Path, sympos: tuple[str, ...] = ()) -> list[str]:
    """The automatic mode's options of ``klpelf convert`` for ``spec``."""
    symvers = spec.host_build_dir / "Module.symvers"
    opts = ["--kernel", f"kallsyms:{kallsyms}", "--symvers", str(symvers)]
    for s in sympos:
        opts += ["--sympos", s]
    return opts


def build_all(spec: KernelSpec, workdir: Path, kallsyms: Path) -> BuiltModules:
    """Build, convert and mutate everything; the modules land in ``workdir/ko``.

    ``kallsyms``: the kernel's /proc/kallsyms (vmlinux only) for the automatic mode.
    """
    src = kbuild(spec, workdir / "kbuild")
    ko = workdir / "ko"
    if ko.exists():
        shutil.rmtree(ko)
    ko.mkdir(parents=True)
    mods: dict[str, Path] = {}
    for name in LIVEPATCH_MODULES:
        mods[name] = ko / f"{name}.ko"
        convert(src / f"{name}.ko", mods[name])
    for name, sympos in AUTO_MODULES.items():
        mods[name] = ko / f"{name}.ko"
        convert(src / f"{name}.ko", mods[name], auto_options(spec, kallsyms, sympos))
    for name in PLAIN_MODULES:
        mods[name] = ko / f"{name}.ko"
        shutil.copyfile(src / f"{name}.ko", mods[name])
    # a plain object, as gcc -c (kbuild) made it before modpost: no struct module
    mods["klpt_plain_object"] = ko / "klpt_plain_object.ko"
    shutil.copyfile(src / "klpt_target.o", mods["klpt_plain_object"])
    for case, mutation in MUTATIONS.items():
        modname = f"klpt_{case}"
        mods[modname] = make_variant(mods[mutation.base], ko / f"{modname}.ko", modname, mutation)
    return BuiltModules(spec.release, ko, mods)
