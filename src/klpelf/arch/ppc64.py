"""ppc64le (ELFv2): the relocations of ``arch/powerpc/kernel/module_64.c``.

``apply_relocate_add()`` walks the Elf64_Rela entries in the order
``get_stubs_size()`` left them: it sorts every SHT_RELA section in place (klp ones
too) with ``relacmp()``, whose arguments are swapped, so by r_info, then the signed
addend, descending (read in 5.10, 6.1, 6.12, 7.2); lib/sort.c's heapsort places
entries of equal keys (:mod:`klpelf.arch.kernel_sort`: the twin walks in a stable
order, and again in the heapsort's when an entry stops, where which of equal entries
comes first matters).  Each gets ``value = S + A`` and a switch on the type; any type
it has no case for, R_PPC64_NONE and the ADDR16 family included (those are
module_32.c's), stops the walk with "Unknown ADD relocation".  The TOC pointer
``my_r2`` is the module's .toc address + 0x8000 (.stubs when there is no .toc;
rounded down to 256 bytes first in the v6.4+ file read).

R_PPC_REL24 to a symbol that is SHN_UNDEF or SHN_LIVEPATCH goes through a stub: the
stubs are 40-byte ``ppc64_stub_entry`` slots of the module's .stubs section, one per
distinct target address (``stub_for_addr()``: the first free slot, or the one already
made for that address), and the branch goes to the stub.  ``restore_r2()`` then looks
at the next instruction: nothing to do after a call to ``_mcount``/``ftrace_caller``/
``ftrace_regs_caller`` or, since v4.15, after a branch without LK (a sibling call); since
v6.3 an ``ld r2,24(r1)`` already there is accepted (a livepatch relocation applied
again when its module loads again); a ``nop`` becomes ``ld r2,24(r1)``; anything else
stops the walk with "Expected nop after call" ("Expect noop after relocate" before
v4.15: :func:`expected_nop_message`).  A REL24 to a defined symbol goes to its local
entry point (``st_other``).  Versions read: 5.10, 6.1, 6.12 and 7.2 (Debian's), a
v4.x-era ELFv2 file (before SHN_LIVEPATCH, with is_early_mcount_callsite()), a 2.6-era
one; kernel-rules.md 5.2 for the v6.3 ``ld r2`` change.  The other texts klpelf emits
("Unknown ADD relocation: %lu", "REL24 %li out of range!", "REL32 %li out of range!",
"bad TOC16[_DS|_LO_DS] relocation (0x%lx)") are the same in 5.10, 6.1, 6.12, 7.2 and
the v4.x-era file (which has no REL32 case); only the 2.6-era file printed the TOC16
values with %lu.  CONFIG_PPC_KERNEL_PCREL (not the Debian configuration) is not
modelled.

Not modelled before 5.10 (no file of those releases on hand; the twin applies the 5.10
rules there; what the older copies found in public repositories show):

* the ftrace exemption of restore_r2() went through three forms.  A v4.x-era file:
  ``is_early_mcount_callsite()``, the instruction(s) before the call (``mflr r0``, or
  ``mflr r0; std r0,16(r1)``) whatever the callee.  Then
  ``is_mprofile_mcount_callsite(name, insn)``: the callee named ``_mcount`` *and* that
  sequence (a file with the v4.15 sibling-call check has it).  Then the callee's name
  only, ``is_mprofile_ftrace_call()``: Naveen N. Rao's "powerpc/module_64: Simplify
  check for -mprofile-kernel ftrace relocations" (posted 2020-04-21, so v5.8 or
  later: the merge release not checked).  Before that patch a call to ``_mcount``
  without the mflr sequence before it needs the nop, and in the first form a call to
  any function right after ``mflr r0`` needs none; the twin uses the name rule;
* the v4.0-era file read sends only SHN_UNDEF through a stub (SHN_LIVEPATCH came with
  the klp relocation sections, recalled as 425595a7fc20 "livepatch: reuse module
  loader code to write relocations", v4.7: not checked), so a REL24 to a livepatch
  symbol of a 4.5/4.6 kernel would take the local-entry branch (moot: those kernels do
  not know klp relocation sections);
* that file has ``BUG_ON(i >= num_stubs)`` in stub_for_addr() where 5.10 has WARN_ON
  and -ENOENT: no stub left was an oops there (when it changed is not checked), and
  its ``R_PPC64_REL32`` has no case ("Unknown ADD relocation"; the twin knows REL32
  in every release).

No stub left: ``stub_for_addr()`` returns 0 after a ``WARN_ON`` (a stack trace, no
pr_err: there is no "No stub for" text in any file read) once the slots of .stubs
(``num_stubs``, :func:`stubs_size`) run out, and apply_relocate_add() returns -ENOENT
("no-stub", :attr:`Arch.refusal_logged` False).  get_stubs_size() counts every SHT_RELA
section, klp ones included, so one walk of them all never runs out; but a klp
relocation section of a module object is applied again each time that module loads
(klp_module_coming(), kernel/livepatch/core.c, read in 5.10 and 7.2), at the module's
new addresses, and stubs are never freed (clear_relocate_add() rewrites the calls, not
the stubs): each reload takes new ones.  The twin keeps the stubs in
``layout.arch_state``: walking a section again with the same layout is that reload.
The two ftrace trampolines (module_finalize_ftrace(), after apply_relocations()) take
their stubs before the first klp section.  How the last slot goes, per release
(:func:`counts_stubs`): up to 6.12 (read: 5.10, 6.1, 6.12) .stubs has one slot more
than counted, the zero terminator the scan stops at, and a stub may be made in it; the
scan then reads past the section (taken here as a used slot: WARN_ON).  In 7.2
(``me->arch.stub_count``, no terminator slot) the scan stops at stub_count: a stub
is made in the slot past the end unchecked, and the next lookup, reused target or
not, meets i >= num_stubs.  CONFIG_PPC_FTRACE_OUT_OF_LINE's stubs (7.2) are counted
and taken alike before any relocation and are left out of both.

dmesg: module_64.c has ``#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt`` and is built as
module_64.o, so every message is preceded by "module_64: " (:data:`PR_FMT`; read in
5.10, 6.1, 6.12, 7.2 and the v4.x-era file, and in reported dmesg lines such as
"module_64: livepatch_nfsd: Expected nop after call, ..."); only the 2.6-era file
printed with a bare printk().
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from klpelf.arch import (
    Arch,
    ModuleLayout,
    PrFmt,
    RelocType,
    StopReason,
    WriteFacts,
    silent_refusal,
)
from klpelf.arch.kernel_sort import double_pop, heapsort_order
from klpelf.elf.constants import EM, SHF, SHN, SHT
from klpelf.release import ENOENT, ENOEXEC, KernelRelease

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile
    from klpelf.elf.relocs import RelocationTable

_U64 = (1 << 64) - 1
PPC_INST_NOP = 0x6000_0000
#: ld r2,R2_STACK_OFFSET(r1), R2_STACK_OFFSET 24 on ELFv2
PPC_INST_LD_TOC = 0xE841_0018
STUB_SIZE = 40  # u32 jump[7]; u32 magic; func_desc_t funcdata (8 bytes on ELFv2)
_FTRACE_CALLS = frozenset({"_mcount", "ftrace_caller", "ftrace_regs_caller"})

R_PPC64_ADDR32, R_PPC64_REL24, R_PPC64_REL32, R_PPC64_ADDR64, R_PPC64_REL64 = 1, 10, 26, 38, 44
R_PPC64_TOC16, R_PPC64_TOC16_LO, R_PPC64_TOC16_HA, R_PPC64_TOC = 47, 48, 50, 51
R_PPC64_TOC16_DS, R_PPC64_TOC16_LO_DS, R_PPC64_TOCSAVE, R_PPC64_ENTRY = 63, 64, 109, 118
R_PPC64_REL16_LO, R_PPC64_REL16_HA = 250, 252


def _s_a(s: int, a: int, p: int) -> int:
    return (s + a) & _U64


def _s_a_p(s: int, a: int, p: int) -> int:
    return (s + a - p) & _U64


def _fits_rel24(v: int) -> bool:
    # value + 0x2000000 > 0x3ffffff || (value & 3) != 0
    return (v + 0x200_0000) & _U64 <= 0x3FF_FFFF and not v & 3


def _fits_rel32(v: int) -> bool:
    return (v + 0x8000_0000) & _U64 <= 0xFFFF_FFFF


def _fits_toc16(v: int) -> bool:
    return (v + 0x8000) & _U64 <= 0xFFFF


def _fits_toc16_ds(v: int) -> bool:
    return not v & 3 and _fits_toc16(v)


def _aligned4(v: int) -> bool:
    return not v & 3


def _le(n: int) -> Callable[[bytes, int], bytes]:
    def encode(old: bytes, v: int) -> bytes:
        return (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")

    return encode


def _half(mask: int, shift: int = 0, ha: bool = False) -> Callable[[bytes, int], bytes]:
    """A 16-bit field: (old & ~mask) | (v' & mask), v' = v (>> 16 after + 0x8000 for HA)."""

    def encode(old: bytes, v: int) -> bytes:
        if ha:
            v = ((v + 0x8000) & _U64) >> 16
        word = (int.from_bytes(old, "little") & ~mask & 0xFFFF) | (v & mask)
        return word.to_bytes(2, "little")

    return encode


def _rel24(old: bytes, v: int) -> bytes:
    # (*(u32 *)location & ~PPC_LI_MASK) | PPC_LI(value)
    word = (int.from_bytes(old, "little") & ~0x03FF_FFFC & 0xFFFF_FFFF) | (v & 0x03FF_FFFC)
    return word.to_bytes(4, "little")


#: the types apply_relocate_add() handles (without CONFIG_PPC_KERNEL_PCREL); any other
#: is "Unknown ADD relocation".  The TOC types' ``compute`` takes the TOC pointer as S
#: (the twin passes my_r2 - (S + A) through P: see _value)
RELOCATION_TYPES: dict[int, RelocType] = {
    t.number: t
    for t in (
        # no range check: the value is cut to 32 bits
        RelocType(1, "R_PPC64_ADDR32", 4, "S + A", _s_a, encode=_le(4)),
        RelocType(38, "R_PPC64_ADDR64", 8, "S + A", _s_a, encode=_le(8)),
        RelocType(51, "R_PPC64_TOC", 8, ".TOC.", None, encode=_le(8)),
        RelocType(
            47,
            "R_PPC64_TOC16",
            2,
            "S + A - .TOC.",
            None,
            "value + 0x8000 <= 0xffff",
            _fits_toc16,
            _half(0xFFFF),
        ),
        RelocType(48, "R_PPC64_TOC16_LO", 2, "#lo(S + A - .TOC.)", None, encode=_half(0xFFFF)),
        RelocType(
            63,
            "R_PPC64_TOC16_DS",
            2,
            "(S + A - .TOC.) >> 2",
            None,
            "!(value & 3) && value + 0x8000 <= 0xffff",
            _fits_toc16_ds,
            _half(0xFFFC),
        ),
        RelocType(
            64,
            "R_PPC64_TOC16_LO_DS",
            2,
            "#lo(S + A - .TOC.) >> 2",
            None,
            "!(value & 3)",
            _aligned4,
            _half(0xFFFC),
        ),
        RelocType(
            50, "R_PPC64_TOC16_HA", 2, "#ha(S + A - .TOC.)", None, encode=_half(0xFFFF, ha=True)
        ),
        # L: the stub for an undefined or livepatch symbol, else S + its local entry offset
        RelocType(
            10,
            "R_PPC_REL24",
            4,
            "(L + A - P) >> 2",
            None,
            "value + 0x2000000 <= 0x3ffffff && !(value & 3)",
            _fits_rel24,
            _rel24,
        ),
        RelocType(44, "R_PPC64_REL64", 8, "S + A - P", _s_a_p, encode=_le(8)),
        RelocType(
            26,
            "R_PPC64_REL32",
            4,
            "S + A - P",
            _s_a_p,
            "value + 0x80000000 <= 0xffffffff",
            _fits_rel32,
            _le(4),
        ),
        RelocType(109, "R_PPC64_TOCSAVE", 0, "none"),  # a marker: nothing written
        # rewrites a large-code-model prologue when .TOC. is within 2 GiB (see _entry)
        RelocType(118, "R_PPC64_ENTRY", 8, ".TOC. - P", None),
        RelocType(
            252, "R_PPC64_REL16_HA", 2, "#ha(S + A - P)", _s_a_p, encode=_half(0xFFFF, ha=True)
        ),
        RelocType(250, "R_PPC64_REL16_LO", 2, "#lo(S + A - P)", _s_a_p, encode=_half(0xFFFF)),
    )
}

_TOC_TYPES = frozenset({47, 48, 63, 64, 50})


@dataclass
class ModuleStubs:
    """The .stubs and .toc of one module (``layout.arch_state["ppc64"]``).

    ``stubs_addr``: the .stubs section's address (None: not known, REL24 values to
    external symbols are then unknown); ``toc``: my_r2 (None: not known);
    ``targets``: the target address of each stub made so far, in slot order (None:
    an ftrace trampoline's); ``num_stubs``: the slots of .stubs (None: no limit);
    ``stub_count``: the 7.2 scan (see the module doc).
    """

    stubs_addr: int | None
    toc: int | None
    targets: list[int | None] = field(default_factory=list)
    num_stubs: int | None = None
    stub_count: bool = False
    #: the ftrace trampolines' stubs were taken (before the first klp section)
    ftrace_taken: bool = False
    #: the last lookup found no stub (stub_for_addr() returned 0)
    exhausted: bool = False

    def stub_for_addr(self, addr: int) -> int | None:
        """The stub's address for ``addr``: the one made for it, or the next slot;
        None when .stubs' address is not known or no slot is left (:attr:`exhausted`)."""
        self.exhausted = False
        if self.stubs_addr is None:
            return None
        limit = self.num_stubs
        for i, made in enumerate(self.targets):
            if limit is not None and i >= limit:  # WARN_ON(i >= num_stubs)
                self.exhausted = True
                return None
            if made == addr:
                return self.stubs_addr + STUB_SIZE * i
        i = len(self.targets)
        if limit is not None and not self.stub_count and i >= limit:
            self.exhausted = True  # the scan reads past .stubs
            return None
        self.targets.append(addr)
        return self.stubs_addr + STUB_SIZE * i

    def take_ftrace_stubs(self, ftrace_stubs: int = 2) -> None:
        """module_finalize_ftrace(): the trampolines' stubs, after the module's own
        relocations and before any klp section's."""
        if not self.ftrace_taken:
            self.ftrace_taken = True
            self.targets.extend([None] * ftrace_stubs)


def counts_stubs(release: KernelRelease) -> bool:
    """Whether stub_for_addr() scans up to ``me->arch.stub_count`` and .stubs has no
    terminator slot: absent in 6.12, present in 7.2 (both read); taken as v6.13, the
    release of the out-of-line ftrace stubs that keep the count (recalled, not read)."""
    return release.at_least(6, 13)


def stubs_size(elf: ElfFile, *, ftrace_stubs: int = 2, release: KernelRelease | None = None) -> int:
    """The size ``module_frob_arch_sections()`` gives .stubs (``get_stubs_size()``),
    which the loader then lays out: one slot (the terminator; none when
    :func:`counts_stubs` for ``release``, None: before), one per distinct (symbol, addend) of
    the R_PPC_REL24 entries of each SHT_RELA section (klp ones included; the kernel
    sorts each section and counts changes from (0, 0)), and ``ftrace_stubs`` (one each
    for CONFIG_DYNAMIC_FTRACE and CONFIG_DYNAMIC_FTRACE_WITH_REGS, both on in Debian's
    configuration)."""
    slots = (0 if release is not None and counts_stubs(release) else 1) + ftrace_stubs
    for section in elf.sections_of_type(SHT.RELA):
        relocs = elf.relocations_as_rela(section)
        addends = relocs.addends() or [0] * len(relocs)
        pairs = {
            (sym, addend & _U64)
            for sym, r_type, addend in zip(relocs.syms(), relocs.types(), addends, strict=True)
            if r_type == R_PPC64_REL24
        }
        slots += len(pairs - {(0, 0)})
    return slots * STUB_SIZE


def my_r2(layout: ModuleLayout, release: KernelRelease) -> int | None:
    """The module's TOC pointer: .toc's address (.stubs' without a .toc) + 0x8000."""
    section = layout.elf.section_by_name(".toc") or layout.elf.section_by_name(".stubs")
    if section is None or section.index not in layout.addresses:
        return None
    addr = layout.addresses[section.index]
    if release.at_least(6, 4):
        addr &= ~0xFF
    return addr + 0x8000


def module_stubs(layout: ModuleLayout, release: KernelRelease) -> ModuleStubs:
    """The state of ``layout``'s module, made on first use."""
    state = layout.arch_state.get("ppc64")
    if not isinstance(state, ModuleStubs):
        stubs = layout.elf.section_by_name(".stubs")
        addr = None if stubs is None else layout.addresses.get(stubs.index)
        state = ModuleStubs(addr, my_r2(layout, release),
                            num_stubs=stubs_size(layout.elf, release=release) // STUB_SIZE,
                            stub_count=counts_stubs(release))  # fmt: skip
        layout.arch_state["ppc64"] = state
    return state


def _local_entry_offset(st_other: int) -> int:
    # PPC64_LOCAL_ENTRY_OFFSET: ((1 << ((other >> 5) & 7)) >> 2) << 2
    return ((1 << ((st_other >> 5) & 7)) >> 2) << 2


def _is_link_branch(insn: int) -> bool:
    # instr_is_relative_link_branch(): opcode 18, AA clear, LK set
    return insn & 0xFC00_0003 == 0x4800_0001


def checks_sibling_calls(release: KernelRelease) -> bool:
    """Whether restore_r2() lets a branch without LK (a sibling call) through: since
    v4.15 (b9eab08d012f, "powerpc/modules: Don't try to restore r2 after a sibling
    call", which also reworded the message, see :func:`expected_nop_message`; the hash
    and release recalled, not re-read: every file read with the check has the new
    text, every one without it the old); before, every REL24 through a stub needed a
    nop after it."""
    return release.at_least(4, 15)


def restore_r2(release: KernelRelease, name: str, call: int, next_insn: int) -> int | None:
    """What ``restore_r2()`` leaves after the call instruction ``call``: the
    instruction to write (None: nothing to write), or -1 when it refuses."""
    if name in _FTRACE_CALLS or (checks_sibling_calls(release) and not _is_link_branch(call)):
        return None
    if next_insn == PPC_INST_LD_TOC and release.at_least(6, 3):
        return None
    if next_insn != PPC_INST_NOP:
        return -1
    return PPC_INST_LD_TOC


def _entry(place: bytes, toc: int, p: int) -> bytes | None:
    """R_PPC64_ENTRY: ``ld r2,x(r12); add r2,r2,r12`` becomes ``addis r2,r12,ha; addi
    r2,r2,lo`` of .TOC. - P when that fits; None: left as it is."""
    value = (toc - p) & _U64
    if (value + 0x8000_8000) & _U64 > 0xFFFF_FFFF or len(place) < 8:
        return None
    first, second = int.from_bytes(place[:4], "little"), int.from_bytes(place[4:8], "little")
    if first & ~0xFFFC & 0xFFFF_FFFF != 0xE84C_0000 or second != 0x7C42_6214:
        return None
    ha, lo = ((value + 0x8000) >> 16) & 0xFFFF, value & 0xFFFF
    return (0x3C4C_0000 | ha).to_bytes(4, "little") + (0x3842_0000 | lo).to_bytes(4, "little")


@dataclass
class _Walk:
    """What one entry's step found."""

    width: int = 0
    value: int | None = None
    bad: bool | None = None
    reason: StopReason | None = None


def write_relocate_add(
    relocs: RelocationTable,
    target: bytearray,
    release: KernelRelease,
    *,
    symbol_value: Callable[[int], int | None] | None = None,
    address: int | None = None,
    keep: bool = True,
    layout: ModuleLayout | None = None,
) -> WriteFacts:
    """The twin of ``apply_relocate_add()`` (arch/powerpc/kernel/module_64.c) for one
    section: see :class:`klpelf.arch.WriteRelocateAdd`.  The symbols' sections and
    st_other (REL24's stub or local entry) come from ``layout.elf`` or the table's
    own file; the TOC and the stubs need ``layout``.  The nop rule after a call to an
    undefined or livepatch symbol is checked whenever the symbols are known, values or
    not.
    """
    offsets, types, syms = relocs.offsets(), relocs.types(), relocs.syms()
    addends = relocs.addends() or [0] * len(types)
    elf: ElfFile | None = layout.elf if layout is not None else getattr(relocs, "elf", None)
    symtab = elf.symtab if elf is not None else None
    known = symbol_value is not None and address is not None
    state = module_stubs(layout, release) if layout is not None and known else None
    section = getattr(relocs, "section", None)
    if state is not None and section is not None and section.sh_flags & SHF.RELA_LIVEPATCH:
        state.take_ftrace_stubs()
    keys = _sort_keys(relocs, types, syms, addends)
    order = sorted(range(len(types)), key=keys.__getitem__)
    pristine = bytes(target)
    saved = list(state.targets) if state is not None else []

    def walk(order: list[int]) -> dict[int, _Walk]:
        rows: dict[int, _Walk] = {}
        for i in order:
            r_type = types[i]
            row = RELOCATION_TYPES.get(r_type)
            if row is None:
                rows[i] = _Walk(reason="unknown-type")
                break
            step = _Walk(width=row.width)
            rows[i] = step
            if row.width == 0:
                continue
            off = offsets[i]
            p = None if address is None else address + off
            s = symbol_value(syms[i]) if symbol_value is not None else None
            sym = symtab[syms[i]] if symtab is not None and syms[i] < len(symtab) else None
            value: int | None = None
            toc = state.toc if state is not None else None
            if sym is not None and sym.st_shndx == SHN.UNDEF and sym.name in (".TOC.", "TOC."):
                # the first call sets the undefined .TOC. (TOC. after dedotify()) to my_r2
                s = toc
            if r_type == R_PPC64_REL24:
                external = sym is not None and sym.st_shndx in (SHN.UNDEF, SHN.LIVEPATCH)
                if external and sym is not None:
                    fix = _restore(release, sym.name, target, off)
                    if fix == -1:
                        step.reason = "expected-nop"
                        break
                    if s is not None and state is not None and p is not None:
                        stub = state.stub_for_addr((s + addends[i]) & _U64)
                        if state.exhausted:
                            step.reason = "no-stub"
                            break
                        value = None if stub is None else (stub - p) & _U64
                    if fix is not None:
                        target[off + 4 : off + 8] = fix.to_bytes(4, "little")
                elif sym is not None and s is not None and p is not None:
                    value = (s + addends[i] + _local_entry_offset(sym.st_other) - p) & _U64
            elif r_type == R_PPC64_TOC:
                value = toc
            elif r_type == R_PPC64_ENTRY:
                if toc is not None and p is not None:
                    new = _entry(bytes(target[off : off + 8]), toc, p)
                    if new is not None:
                        target[off : off + 8] = new
                continue
            elif r_type in _TOC_TYPES:
                if s is not None and toc is not None:
                    value = (s + addends[i] - toc) & _U64
            elif s is not None and row.compute is not None and p is not None:
                value = row.compute(s, addends[i], p)
            step.value = value
            if value is not None and row.in_range is not None:
                step.bad = not row.in_range(value)
                if step.bad:
                    step.reason = "overflow"
                    break
            elif value is not None:
                step.bad = False
            if off + row.width > len(target):
                continue
            assert row.encode is not None
            old = bytes(target[off : off + row.width])
            target[off : off + row.width] = (
                row.encode(old, value) if value is not None else b"\1" * row.width
            )
        return rows

    rows = walk(order)
    stop = next((i for i, w in rows.items() if w.reason is not None), None)
    if stop is not None and len(types) > 1:
        # the stop among entries of equal keys is where the heapsort put them: walk
        # again from the bytes and stubs as they were, in the kernel's own order
        target[:] = pristine
        if state is not None:
            state.targets[:] = saved
            state.exhausted = False
        rows = walk(heapsort_order(keys, double=double_pop(release)))
        stop = next((i for i, w in rows.items() if w.reason is not None), None)
    walked = len(types) if stop is None else stop + 1
    for i in range(walked):
        if i not in rows:  # after the stop in the kernel's order: not walked
            row = RELOCATION_TYPES.get(types[i])
            rows[i] = _Walk(width=0 if row is None else row.width)
    reason = rows[stop].reason if stop is not None else None
    steps = [rows[i] for i in range(walked)]
    widths = [0 if w.reason == "unknown-type" else w.width for w in steps]
    facts_values: list[int | None] | None = [w.value for w in steps] if known else None
    facts_overflow: list[bool | None] | None = [w.bad for w in steps] if known else None
    return WriteFacts(offsets[:walked], types[:walked], widths, [False] * walked,
                      values=facts_values, overflow=facts_overflow, stop=stop,
                      reason=reason)  # fmt: skip


def _sort_keys(relocs: RelocationTable, types: list[int], syms: list[int],
               addends: list[int]) -> list[int]:  # fmt: skip
    """get_stubs_size() sorts every SHT_RELA section in place with relacmp(), which
    compares its arguments the other way round: by r_info, then the signed addend,
    descending.  The keys, ascending in that order (for :func:`heapsort_order`)."""
    shift = getattr(relocs, "r_sym_shift", 32)
    keys = []
    for sym, r_type, addend in zip(syms, types, addends, strict=True):
        a = addend & _U64
        signed = a - (1 << 64) if a >> 63 else a
        keys.append(-(((sym << shift) | r_type) << 64 | (signed + (1 << 63))))
    return keys


def _restore(release: KernelRelease, name: str, target: bytearray, off: int) -> int | None:
    """:func:`restore_r2` on the bytes of ``target`` (nothing past its end)."""
    if off + 8 > len(target):
        return None
    call = int.from_bytes(target[off : off + 4], "little")
    return restore_r2(release, name, call, int.from_bytes(target[off + 4 : off + 8], "little"))


# --- the kernel's messages --------------------------------------------------------------


#: module_64.c's pr_fmt: KBUILD_MODNAME of module_64.o
PR_FMT = PrFmt("module_64: ")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def expected_nop_message(release: KernelRelease, module: str, insn: int | None) -> str:
    """What restore_r2() prints when the instruction after a call is not a nop: since
    v4.15 (b9eab08d012f, with the sibling-call check) "Expected nop after call, got
    %08x at %pS" (read in 5.10, 6.1, 6.12, 7.2); before, "Expect noop after relocate,
    got %08x" (read in a v4.x file with is_early_mcount_callsite(); a v4.14-era
    kernel's dmesg: "module_64: livepatch_data_read_mostly: Expect noop after
    relocate, got 7c630034", kpatch PR #757, 2017-11)."""
    shown = "<insn>" if insn is None else f"{insn:08x}"
    if checks_sibling_calls(release):
        return f"{module}: Expected nop after call, got {shown} at <loc>"
    return f"{module}: Expect noop after relocate, got {shown}"


def refusal_errno(facts: WriteFacts) -> int:
    """-ENOENT for no stub left, else -ENOEXEC."""
    return ENOENT if facts.reason == "no-stub" else ENOEXEC


def refusal_logged(facts: WriteFacts) -> bool:
    """Whether the kernel prints a message: not for no stub left (a WARN_ON only)."""
    return facts.reason != "no-stub"


def refusal(release: KernelRelease, module: str, sec: int, facts: WriteFacts) -> tuple[str, str]:
    """The rule and the kernel's message for the entry where ``facts`` stopped; the
    runtime address of the instruction is shown as <loc>."""
    assert facts.stop is not None
    idx = facts.stop
    r_type = facts.types[idx]
    if facts.reason == "no-stub":
        return "ppc64-no-stub", silent_refusal(
            f"R_PPC_REL24 ({r_type}) of module {module}", "apply_relocate_add()",
            ("ENOENT", ENOENT),
            "stub_for_addr() found no free slot in .stubs of those get_stubs_size() "
            "counted; its WARN_ON prints a stack trace: a livepatch relocation section "
            "applied again when its module loads again takes new stubs")  # fmt: skip
    if facts.reason == "unknown-type":
        return "ppc64-unknown-relocation", f"{module}: Unknown ADD relocation: {r_type}"
    if facts.reason == "expected-nop":
        return "ppc64-expected-nop", expected_nop_message(release, module, None)
    value = facts.values[idx] if facts.values is not None else None
    if r_type in (R_PPC64_REL24, R_PPC64_REL32):
        shown = "<val>" if value is None else str(_signed(value))
        name = "REL24" if r_type == R_PPC64_REL24 else "REL32"
        return "ppc64-relocation-overflow", f"{module}: {name} {shown} out of range!"
    shown = "<val>" if value is None else f"0x{value:x}"
    name = RELOCATION_TYPES[r_type].name.removeprefix("R_PPC64_")
    return "ppc64-relocation-overflow", f"{module}: bad {name} relocation ({shown})"


ARCH = Arch(
    name="ppc64le",
    machine=EM.PPC64,
    byteorder="little",
    relocation_types=RELOCATION_TYPES,
    # R_PPC64_NONE: module_64.c has no case for it, so it is refused like any unknown type
    none_type=0,
    write_relocate_add=write_relocate_add,
    refusal=refusal,
    nonzero_message=None,
    dmesg_prefix=PR_FMT,
    refusal_errno=refusal_errno,
    refusal_logged=refusal_logged,
    # module_frob_arch_sections() is module_64.c's too (its refusals are not modelled)
    frob_dmesg_prefix=PR_FMT,
)
