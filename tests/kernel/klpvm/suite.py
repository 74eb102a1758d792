"""Build everything for one kernel, run every case in as few boots as possible, collect.

Used by the pytest session fixture (tests/kernel/conftest.py) and by the command line
(``python -m kernel.klpvm``).  The /proc/kallsyms the VM dumped is also kept at
``<cache>/<release>/kallsyms`` (see :func:`kallsyms_path`) for other tests, and for
the next run's ``klpelf convert`` in automatic mode, which needs the kernel's symbols
before anything boots (:func:`convert_kallsyms`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from kernel.klpvm.build import BuildError, BuiltModules, build_all
from kernel.klpvm.cases import (
    BOOT_CMDLINE,
    CASES,
    Case,
    CaseResult,
    guest_script,
    modules_needed,
    parse_case,
    section_lists,
)
from kernel.klpvm.vm import BootResult, KernelSpec, VmError, boot, cache_root, write_atomic

#: cases that get a boot of their own (none so far: the oops case runs last in the
#: main boot, and 6.1's refused reload leaves nothing behind)
OWN_BOOT: frozenset[str] = frozenset()


def kallsyms_path(release: str, which: str = "kallsyms") -> Path:
    """Where the last run saved the VM's /proc/kallsyms for ``release``.

    ``which`` is ``kallsyms`` (vmlinux only, saved before any module was loaded) or
    ``kallsyms.modules`` (with klpt_target and klpt_late loaded).
    """
    return cache_root() / release / which


def _vmlinuz_digest(spec: KernelSpec) -> str:
    return hashlib.sha256(spec.vmlinuz.read_bytes()).hexdigest()


def _stamp_path(release: str) -> Path:
    """The sha256 of the vmlinuz whose boot wrote ``kallsyms_path(release)``."""
    return kallsyms_path(release, "kallsyms.vmlinuz")


def save_kallsyms(spec: KernelSpec, data: bytes) -> None:
    """Keep a VM's /proc/kallsyms (vmlinux only) in the cache, stamped with its vmlinuz."""
    write_atomic(kallsyms_path(spec.release), data)
    write_atomic(_stamp_path(spec.release), _vmlinuz_digest(spec).encode() + b"\n")


def convert_kallsyms(spec: KernelSpec, workdir: Path) -> tuple[Path, BootResult | None]:
    """The kernel's /proc/kallsyms for ``klpelf convert``'s automatic mode, before the
    modules are built: the cached dump when a boot of this very vmlinuz wrote it (a
    Debian release keeps its name across rebuilds), else a boot that only dumps it
    (``/init`` saves it before anything else; ``nokaslr`` keeps it identical between
    boots).  Returns a copy in ``workdir`` (the run itself refreshes the cache) and
    that extra boot (None: the cache served).

    :raises VmError: the extra boot failed.
    """
    out = workdir / "kallsyms.convert"
    workdir.mkdir(parents=True, exist_ok=True)
    cached = kallsyms_path(spec.release)
    stamp = _stamp_path(spec.release)
    try:
        if stamp.read_text().strip() == _vmlinuz_digest(spec):
            out.write_bytes(cached.read_bytes())
            return out, None
    except FileNotFoundError:
        pass
    b = boot(spec, workdir / "boot-kallsyms", guest_script([]), cmdline=BOOT_CMDLINE)
    dump = b.out_dir / "kallsyms"
    if not dump.is_file():
        raise VmError(f"the kallsyms boot of {spec.release} brought no kallsyms", b.console)
    out.write_bytes(dump.read_bytes())
    save_kallsyms(spec, out.read_bytes())
    return out, b


@dataclass
class SuiteResult:
    spec: KernelSpec
    workdir: Path
    modules: BuiltModules | None = None
    boots: list[BootResult] = field(default_factory=list)
    cases: dict[str, CaseResult] = field(default_factory=dict)
    #: the build or VM failure that stopped the run (the cases then are missing)
    error: str | None = None
    #: the /proc/kallsyms ``klpelf convert`` ran with in automatic mode
    convert_kallsyms: Path | None = None
    #: the boot that dumped it (cold cache only)
    kallsyms_boot: BootResult | None = None
    build_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def kallsyms(self) -> Path:
        return self.workdir / "boot0" / "out" / "kallsyms"

    def kallsyms_for(self, case: Case) -> Path:
        if case.kallsyms_from:
            snap = self.cases[case.kallsyms_from].directory
            if snap is not None and (snap / "kallsyms").exists():
                return snap / "kallsyms"
        return self.kallsyms

    def ftrace_for(self, case: Case) -> Path | None:
        """The available_filter_functions ``case`` is judged with, when it has one."""
        if case.ftrace_from:
            snap = self.cases[case.ftrace_from].directory
            if snap is not None and (snap / "ftrace").exists():
                return snap / "ftrace"
        return None


def boot_groups(cases: tuple[Case, ...]) -> list[list[Case]]:
    main = [c for c in cases if c.name not in OWN_BOOT]
    return [main] + [[c] for c in cases if c.name in OWN_BOOT]


def run_suite(spec: KernelSpec, workdir: Path, cases: tuple[Case, ...] = CASES) -> SuiteResult:
    """Build, boot, run ``cases``; errors are recorded in the result, not raised."""
    t0 = time.monotonic()
    res = SuiteResult(spec, workdir)
    try:
        res.convert_kallsyms, res.kallsyms_boot = convert_kallsyms(spec, workdir)
    except VmError as e:
        res.error = f"dumping the kallsyms of {spec.release} for klpelf convert failed: {e}"
        return res
    t1 = time.monotonic()
    try:
        res.modules = build_all(spec, workdir, res.convert_kallsyms)
    except BuildError as e:
        res.error = f"building the test modules for {spec.release} failed: {e}"
        return res
    res.build_seconds = time.monotonic() - t1
    for i, group in enumerate(boot_groups(cases)):
        files = {f"mods/{m}.ko": res.modules.modules[m].read_bytes() for m in modules_needed(group)}
        files.update(section_lists(group, res.modules.modules))
        try:
            b = boot(spec, workdir / f"boot{i}", guest_script(group), files, cmdline=BOOT_CMDLINE)
        except VmError as e:
            res.error = str(e)
            break
        res.boots.append(b)
        for case in group:
            res.cases[case.name] = parse_case(case, b.out_dir / "cases" / case.name)
        if b.watchdog:
            res.error = "the guest watchdog fired: the run did not finish\n" + _tail(b.console)
            break
    res.total_seconds = time.monotonic() - t0
    if res.boots and res.kallsyms.exists():
        save_kallsyms(spec, res.kallsyms.read_bytes())
    late = res.cases.get("late_module_patch")
    if late and late.directory and (late.directory / "kallsyms").exists():
        snap = (late.directory / "kallsyms").read_bytes()
        write_atomic(kallsyms_path(spec.release, "kallsyms.modules"), snap)
    return res


def _tail(text: str, n: int = 80) -> str:
    return "--- serial console ---\n" + "\n".join(text.splitlines()[-n:])
