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

import re
import signal
from pathlib import Path

import pytest

from kernel.conftest import require, require_lane
from kernel.klpvm.cases import CASES_BY_NAME, CaseResult
from kernel.klpvm.lanes import LaneResult
from kernel.klpvm.suite import SuiteResult
from klpelf.arch import aarch64 as a64
from klpelf.arch import arch_for
from klpelf.elf.reader import open_elf
from klpelf.operations.apply import AppliedModule, apply
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
    kallsyms = suite.kallsyms_for(case) if case.kallsyms_from else suite.kallsyms
    if applied_case == "late_module_patch":
        kallsyms = res.directory / "kallsyms"  # dumped with klpt_target loaded
    applied = compare_writes(suite.modules.modules[module], kallsyms, res.directory, index,
                             objects)  # fmt: skip
    assert applied.skipped == []
    assert len(applied.writes) >= least


def compare_writes(ko: Path, kallsyms: Path, directory: Path, index: int,
                   objects: set[str]) -> AppliedModule:  # fmt: skip
    """``klpelf apply`` of ``ko`` (the klp relocations of ``objects``) at the addresses
    of snapshot ``sections<index>`` in ``directory`` with ``kallsyms``: every place a
    klp relocation wrote holds the bytes the kernel wrote there.  Returns the apply."""
    bases, kernel_bytes = _snapshot(directory, index)
    ks = load_sources([f"kallsyms:{kallsyms}"])
    applied = apply(ko, ks, bases=bases, objects=sorted(objects - {"vmlinux"}))
    assert applied.refusals == []
    assert {w.object for w in applied.writes} == objects
    arch = arch_for(open_elf(ko).machine)
    assert arch is not None
    width = {t.name: t.width for t in arch.relocation_types.values()}
    for w in applied.writes:
        assert w.value is not None, w
        n = width[w.type]
        section = next(s for s in applied.sections if s.name == w.section)
        ours = bytes(applied.contents[section.index][w.offset : w.offset + n])
        theirs = kernel_bytes[w.section][w.offset : w.offset + n]
        assert ours == theirs, (w, ours.hex(), theirs.hex())
        if arch.name == "x86_64":
            assert ours == w.value.to_bytes(8, "little")[:n]
    return applied


# --- the arm64 lane (tests/kernel/klpvm/lanes.py) ---------------------------------------

#: case -> (the livepatch module, the objects whose klp relocations are applied)
ARM64_APPLIED = {
    "vmlinux_patch": ("klpt_a64_near", {"vmlinux"}),
    "plt_patch": ("klpt_a64_far", {"vmlinux"}),
    "late_module_patch": ("klpt_a64_near", {"vmlinux", "klpt_a64_target"}),
}


def _arm64_case(lane: LaneResult, name: str) -> tuple[CaseResult, int]:
    """The case's result and the index of its (last) sections step, which succeeded."""
    require_lane(lane)
    res = lane.cases[name]
    assert res.ran and res.setup_failures() == [] and res.errno == 0, (res.steps, res.dmesg)
    index = max(i for i, s in enumerate(res.case.steps) if s.op == "sections")
    assert res.directory is not None
    return res, index


@pytest.mark.arm64
@pytest.mark.parametrize("applied_case", sorted(ARM64_APPLIED))
def test_apply_writes_the_arm64_kernel_s_bytes(arm64_lane: LaneResult, applied_case: str) -> None:
    module, objects = ARM64_APPLIED[applied_case]
    res, index = _arm64_case(arm64_lane, applied_case)
    assert res.directory is not None
    has_kallsyms = any(s.op == "kallsyms" for s in res.case.steps)
    kallsyms = res.directory / "kallsyms" if has_kallsyms else arm64_lane.kallsyms
    applied = compare_writes(arm64_lane.modules[module], kallsyms, res.directory, index, objects)
    # every PLT slot the kernel wrote (module_emit_plt_entry()), and the rest of .plt
    _, kernel_bytes = _snapshot(res.directory, index)
    plt = next(s for s in applied.sections if s.name == ".plt")
    assert bytes(applied.contents[plt.index]) == kernel_bytes[".plt"]
    assert len(kernel_bytes[".plt"]) == plt.size


def _branch_target(insn: bytes, address: int) -> int:
    """Where the B/BL at ``address`` goes (imm26, in words)."""
    imm = int.from_bytes(insn, "little") & 0x3FFFFFF
    return address + ((imm - (1 << 26) if imm >> 25 else imm) << 2)


@pytest.mark.arm64
def test_a_far_call_goes_through_a_module_plt_slot(arm64_lane: LaneResult) -> None:
    """klpt_a64_far's text landed beyond branch range of the kernel, so its CALL26 to
    nr_processes (a klp relocation) branches to a .plt slot that jumps to it; klpt_a64_near's
    branches to nr_processes directly.  Each as klpelf apply computes it."""
    ks = load_sources([f"kallsyms:{arm64_lane.kallsyms}"])
    (found,) = ks.vmlinux_matches("nr_processes")
    assert found.address is not None
    target = found.address
    for case, module, far in (("plt_patch", "klpt_a64_far", True),
                              ("vmlinux_patch", "klpt_a64_near", False)):  # fmt: skip
        res, index = _arm64_case(arm64_lane, case)
        assert res.directory is not None
        bases, kernel_bytes = _snapshot(res.directory, index)
        assert (abs(bases[".text"] - target) >= 1 << 27) == far, hex(bases[".text"])
        applied = apply(arm64_lane.modules[module], ks, bases=bases, objects=[])
        assert applied.hazards == []  # vmlinux's slot is stored at load: no oops
        (call,) = [w for w in applied.writes if w.symbol.endswith("nr_processes,0")]
        assert call.type == "R_AARCH64_CALL26"
        insn = kernel_bytes[call.section][call.offset : call.offset + 4]
        branch = _branch_target(insn, call.address)
        if not far:
            assert branch == target
            continue
        slot = branch - bases[".plt"]
        assert 0 <= slot < len(kernel_bytes[".plt"]) and slot % 12 == 0
        assert kernel_bytes[".plt"][slot : slot + 12] == a64.plt_entry(target, branch)


@pytest.mark.arm64
def test_a_late_plt_slot_oopses_the_arm64_kernel(arm64_lane: LaneResult) -> None:
    """Linux 7.2 on arm64: a klp relocation for a module object that needs a PLT slot,
    applied once the livepatch module's text is read-only (complete_formation() made it
    so before its init, where klp_enable_patch() applies the relocations of a target
    already loaded; klp_module_coming(), for a target that loads later, reaches the same
    code, not run here: one oops per boot), oopses:
    module_emit_plt_entry() stores the slot into the read-only .plt directly, where the
    place itself is written through aarch64_insn_copy().  The faulting address is the
    slot klpelf apply gives that call."""
    require_lane(arm64_lane)
    res = arm64_lane.cases["late_plt_patch"]
    assert res.ran and res.directory is not None, res.steps
    assert res.errno == 128 + signal.SIGSEGV  # the loading task died in the oops
    fault = re.compile(r"Unable to handle kernel write to read-only memory at virtual "
                       r"address ([0-9a-f]{16})$")  # fmt: skip
    (address,) = [int(m[1], 16) for line in res.dmesg if (m := fault.search(line))]
    assert any(line.startswith("pc : module_emit_plt_entry+") for line in res.dmesg)
    index = max(i for i, s in enumerate(res.case.steps) if s.op == "sections")
    bases, kernel_bytes = _snapshot(res.directory, index)
    ks = load_sources([f"kallsyms:{res.directory / 'kallsyms'}"])
    applied = apply(arm64_lane.modules["klpt_a64_far_late"], ks, bases=bases,
                    objects=["klpt_a64_target"])  # fmt: skip
    (call,) = [w for w in applied.writes if w.symbol.endswith("klpt_target_value,0")]
    # klpelf apply predicts the oops for that entry (at the kernel's addresses)
    (hazard,) = applied.hazards
    assert (hazard.object, hazard.rule) == ("klpt_a64_target", "arm64-late-plt-oops")
    assert (hazard.rela_section, hazard.entry) == (call.rela_section, call.entry)
    assert "the kernel oopses" in hazard.message
    section = next(s for s in applied.sections if s.name == call.section)
    insn = applied.contents[section.index][call.offset : call.offset + 4]
    assert _branch_target(bytes(insn), call.address) == address
    # the kernel stopped there: the place still holds the compiler's BL
    assert kernel_bytes[call.section][call.offset : call.offset + 4] != bytes(insn)


@pytest.mark.arm64
def test_the_arm64_patches_run(arm64_lane: LaneResult) -> None:
    """The patched functions run the new code, with what the klp relocations reached:
    non-exported vmlinux variables and nr_processes() (directly and through the far
    module's PLT), and klpt_a64_target's static variable and function."""
    require_lane(arm64_lane)
    near = arm64_lane.cases["vmlinux_patch"]
    assert near.output(0).startswith("console=ttyAMA0 ")
    after = near.output(2)
    assert after.startswith("klpt_a64_near: patched\ncmdline=console=ttyAMA0 "), after
    assert re.search(r"^total_forks=[1-9]\d*\nnr_processes=[1-9]\d*$", after, re.M), after
    far = arm64_lane.cases["plt_patch"].output(1)
    assert far.startswith("klpt_a64_far: patched\n") and "nr_processes=" in far, far
    late = arm64_lane.cases["late_module_patch"].output(1)
    assert late == "klpt_a64_near: patched secret=4242 value=4243\n"
