"""Build everything for one kernel, run every case in as few boots as possible, collect.

Used by the pytest session fixture (tests/kernel/conftest.py) and by the command line
(``python -m kernel.klpvm``).  The /proc/kallsyms the VM dumped is also kept at
``<cache>/<release>/kallsyms`` (see :func:`kallsyms_path`) for other tests.
"""

from __future__ import annotations

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


@dataclass
class SuiteResult:
    spec: KernelSpec
    workdir: Path
    modules: BuiltModules | None = None
    boots: list[BootResult] = field(default_factory=list)
    cases: dict[str, CaseResult] = field(default_factory=dict)
    #: the build or VM failure that stopped the run (the cases then are missing)
    error: str | None = None
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


def boot_groups(cases: tuple[Case, ...]) -> list[list[Case]]:
    main = [c for c in cases if c.name not in OWN_BOOT]
    return [main] + [[c] for c in cases if c.name in OWN_BOOT]


def run_suite(spec: KernelSpec, workdir: Path, cases: tuple[Case, ...] = CASES) -> SuiteResult:
    """Build, boot, run ``cases``; errors are recorded in the result, not raised."""
    t0 = time.monotonic()
    res = SuiteResult(spec, workdir)
    try:
        res.modules = build_all(spec, workdir)
    except BuildError as e:
        res.error = f"building the test modules for {spec.release} failed: {e}"
        return res
    res.build_seconds = time.monotonic() - t0
    for i, group in enumerate(boot_groups(cases)):
        files = {f"mods/{m}.ko": res.modules.modules[m].read_bytes() for m in modules_needed(group)}
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
        write_atomic(kallsyms_path(spec.release), res.kallsyms.read_bytes())
    late = res.cases.get("late_module_patch")
    if late and late.directory and (late.directory / "kallsyms").exists():
        snap = (late.directory / "kallsyms").read_bytes()
        write_atomic(kallsyms_path(spec.release, "kallsyms.modules"), snap)
    return res


def _tail(text: str, n: int = 80) -> str:
    return "--- serial console ---\n" + "\n".join(text.splitlines()[-n:])
