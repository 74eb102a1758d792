"""`klpelf apply` writes the bytes the kernel wrote, kernel by kernel.

In the VM, a ``sections`` step saves a loaded livepatch module's section addresses
(``/sys/module/<name>/sections/``) and the bytes there (``/proc/kcore``, read by
guest/klpt_mod.c).  Here :func:`klpelf.operations.apply.apply` runs on the very file
the VM loaded, with ``--base`` from those addresses and ``--kernel`` the VM's
/proc/kallsyms, and every place a klp relocation wrote must hold the same bytes:

* ``vmlinux_patch``: the vmlinux klp relocations, applied at load (5.8+; before, at
  enable);
* ``late_module_patch``: klpt_late's relocations for klpt_target, applied when
  klpt_target loads after the livepatch (the snapshot is taken after that load, with
  the kallsyms dumped then).

Only the places are compared: the rest of a section is rewritten by the kernel after
the relocations (alternatives, ftrace's nops at __fentry__ calls, static keys).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.conftest import require
from kernel.klpvm.cases import CASES_BY_NAME
from kernel.klpvm.suite import SuiteResult
from klpelf.arch import arch_for
from klpelf.elf.reader import open_elf
from klpelf.operations.apply import apply
from klpelf.symbols.sources import load_sources

pytestmark = pytest.mark.kernel

#: case -> (the livepatch module, the objects whose klp relocations it has, how many
#: places at least: klpt_vmlinux reads four vmlinux variables, klpt_late calls one
#: function of klpt_target)
APPLIED = {"vmlinux_patch": ("klpt_vmlinux", {"vmlinux"}, 4),
           "late_module_patch": ("klpt_late", {"klpt_target"}, 1)}  # fmt: skip


def _snapshot(directory: Path, index: int) -> tuple[dict[str, int], dict[str, bytes]]:
    snap = directory / f"sections{index}"
    addresses = {}
    for line in (snap / "addresses").read_text().splitlines():
        name, address = line.split(" ")
        addresses[name] = int(address, 16)
    return addresses, {name: (snap / f"{name}.bin").read_bytes() for name in addresses}


@pytest.mark.parametrize("applied_case", sorted(APPLIED))
def test_apply_writes_the_kernel_s_bytes(suite: SuiteResult, applied_case: str) -> None:
    require(suite)
    module, objects, least = APPLIED[applied_case]
    case = CASES_BY_NAME[applied_case]
    res = suite.cases[applied_case]
    assert res.ran and res.errno == 0, res.steps
    (index,) = [i for i, s in enumerate(case.steps) if s.op == "sections"]
    assert res.steps[index].rc == 0, (res.steps[index], res.directory)
    assert res.directory is not None and suite.modules is not None
    bases, kernel_bytes = _snapshot(res.directory, index)
    ko = suite.modules.modules[module]
    kallsyms = suite.kallsyms_for(case) if case.kallsyms_from else suite.kallsyms
    if applied_case == "late_module_patch":
        kallsyms = res.directory / "kallsyms"  # dumped with klpt_target loaded
    ks = load_sources([f"kallsyms:{kallsyms}"])
    applied = apply(ko, ks, bases=bases)
    assert applied.refusals == [] and applied.skipped == []
    assert {w.object for w in applied.writes} == objects
    arch = arch_for(open_elf(ko).machine)
    assert arch is not None
    width = {t.name: t.width for t in arch.relocation_types.values()}
    compared = 0
    for w in applied.writes:
        assert w.value is not None, w
        n = width[w.type]
        section = next(s for s in applied.sections if s.name == w.section)
        ours = bytes(applied.contents[section.index][w.offset : w.offset + n])
        theirs = kernel_bytes[w.section][w.offset : w.offset + n]
        assert ours == theirs, (w, ours.hex(), theirs.hex())
        assert ours == w.value.to_bytes(8, "little")[:n]
        compared += 1
    assert compared >= least
