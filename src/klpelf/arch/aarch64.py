"""arm64: the relocations of ``arch/arm64/kernel/module.c`` and the module PLTs of
``module-plts.c``, in the releases klpelf models (v5.10 .. v7.x).

``apply_relocate_add()`` walks the Elf64_Rela entries of one section in order:
``val = S + A``, then per type ``reloc_data()`` (ABS/PREL 64/32/16),
``reloc_insn_movw()`` (the MOVW families), ``reloc_insn_imm()`` (the immediate fields
of ADR, ADRP, ADD, LDST, TBZ, B.cond, B/BL) or ``reloc_insn_adrp()``.  Each writes
the place first and then reports -ERANGE; the walk stops ("overflow in relocation
type %d val %Lx", with ``val`` the S + A of the entry, or the PLT slot's address for
a CALL26/JUMP26 sent through one) when the type is range-checked.  A type not in the
switch stops it with "unsupported RELA relocation: %llu".  arm64 has no check that the
place is zero.

Per release:

* v6.5 (3e35d303ab7d "arm64: module: rework module VA range selection") adds
  ``#define pr_fmt(fmt) "Modules: " fmt`` to module.c: in dmesg both messages gain
  the prefix (:data:`PR_FMT`; read: absent in 5.10 and 6.1, present in 6.12 and 7.2).
  module-plts.c has no pr_fmt in any release read ("%s: module PLT section(s)
  missing", not modelled);
* before v6.5 a CALL26/JUMP26 out of range goes through a PLT only with
  CONFIG_ARM64_MODULE_PLTS (selected by RANDOMIZE_BASE, which Debian and defconfig
  enable); v6.5 (ea3752ba9685 "arm64: module: mandate MODULE_PLTS") always does.
  klpelf models the PLT in every release;
* v6.17-era "arm64/module: Use text-poke API for late relocations" changes how the
  bytes are written (aarch64_insn_copy() after the module is formed), not which.

The order of the walk: ``module_frob_arch_sections()`` first reorders every SHT_RELA
section whose target is SHF_EXECINSTR (in the module image, so klp sections too):
the CALL26/JUMP26 entries against a symbol outside the target section are moved to
the front (``partition_branch_plt_relas()``, swaps), and those sorted by (type,
symbol, addend).  The kernel's sort is a heapsort, not stable; entries it may order
either way have the same type, symbol and addend, so the same value and PLT slot.

Module PLTs (``module_emit_plt_entry()``): a branch out of range gets the next slot
of ``.plt`` (``.init.plt`` for a place in an ``.init`` section), 12 bytes
``adrp x16, S+A; add x16, x16, :lo12:S+A; br x16``, unless the slot last emitted has
the same target, which is reused.  The slots are kept in ``layout.arch_state``
across the sections of one module.  The erratum-843419 workaround
(``is_forbidden_offset_for_adrp()``: an ADRP at page offset 0xff8/0xffc on an
affected CPU, Cortex-A53) depends on the CPU that loads the module: off unless
``layout.arch_state["aarch64"]`` says ``erratum_843419`` (:func:`plt_state`).

Running out of slots: ``module_emit_plt_entry()`` and ``module_emit_veneer_for_adrp()``
return 0 once ``plt_num_entries`` passes ``plt_max_entries`` (the slots
:func:`plt_slots` counts), after a ``WARN_ON`` (a stack trace, no pr_err), and
apply_relocate_add() returns -ENOEXEC (read in 5.10, 6.1, 6.12 and 7.2).  The count
covers every SHT_RELA section, klp ones included (a SHN_LIVEPATCH symbol is never in
the target section), and one walk of all of them never needs more.  But a klp
relocation section of a module object is applied again each time that module loads
(klp_module_coming(), kernel/livepatch/core.c), and the slots are never given back:
only a target equal to the slot last emitted is reused, so a reload whose branches
go through two or more slots takes new ones until the count runs out
("plt-full", :attr:`Arch.refusal_logged` False).  The twin keeps the slots in
``layout.arch_state``: walking a section again with the same layout is that reload.
With the erratum workaround the count has more (veneers, slack) and is not modelled
(no limit then).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from klpelf.arch import (
    Arch,
    ModuleLayout,
    PrFmt,
    RelocType,
    SectionFrob,
    StopReason,
    WriteFacts,
    silent_refusal,
)
from klpelf.elf.constants import EM, SHF, SHT
from klpelf.release import ENOEXEC, KernelRelease

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile
    from klpelf.elf.relocs import RelocationTable

_U64 = (1 << 64) - 1
R_ARM_NONE, R_AARCH64_NONE = 0, 256
R_AARCH64_ADR_PREL_PG_HI21, R_AARCH64_ADR_PREL_PG_HI21_NC = 275, 276
R_AARCH64_JUMP26, R_AARCH64_CALL26 = 282, 283
#: AARCH64_BREAK_FAULT: aarch64_insn_encode_immediate() leaves it as it is
_BREAK_FAULT = 0xD4202000
_PLT_ENTRY = 12  # struct plt_entry: adrp, add, br
_PLT_ALIGN = 64  # L1_CACHE_BYTES (arch/arm64/include/asm/cache.h)


def _s64(v: int) -> int:
    v &= _U64
    return v - (1 << 64) if v >> 63 else v


class _Op(NamedTuple):
    """How module.c handles one type: the helper, its RELOC_OP, and its arguments."""

    helper: str  # "data", "movw", "imm", "adrp", "branch", "none"
    op: str = "abs"  # "abs", "prel", "page"
    lsb: int = 0
    length: int = 0  # bits: of the data, or of the immediate
    field: str = ""  # AARCH64_INSN_IMM_*: "26", "19", "16", "14", "12", "adr"
    movnz: bool = False
    checked: bool = True


# aarch64_insn_encode_immediate(): (mask, shift) of each field
_FIELDS = {"26": (0x3FFFFFF, 0), "19": (0x7FFFF, 5), "16": (0xFFFF, 5), "14": (0x3FFF, 5),
           "12": (0xFFF, 10)}  # fmt: skip


def _encode(field: str, insn: int, imm: int) -> int:
    if insn == _BREAK_FAULT:
        return insn
    if field == "adr":  # immlo at bits 29..30, immhi at 5..23
        imm = ((imm & 3) << 24) | ((imm >> 2) & 0x7FFFF)
        mask, shift = (3 << 24) | 0x7FFFF, 5
    else:
        mask, shift = _FIELDS[field]
    return (insn & ~(mask << shift) & 0xFFFFFFFF) | ((imm & mask) << shift)


def _do_reloc(op: str, place: int, val: int) -> int:
    if op == "prel":
        return (val - place) & _U64
    if op == "page":
        return ((val & ~0xFFF) - (place & ~0xFFF)) & _U64
    return val & _U64


def _reloc_imm(op: str, place: int, val: int, o: _Op, insn: int) -> tuple[int, bool]:
    """reloc_insn_imm(): the new instruction and whether -ERANGE."""
    sval = _s64(_do_reloc(op, place, val)) >> o.lsb
    imm_mask = ((1 << (o.lsb + o.length)) - 1) >> o.lsb
    insn = _encode(o.field, insn, sval & imm_mask)
    upper = (sval & ~(imm_mask >> 1)) >> (o.length - 1)
    return insn, ((upper + 1) & _U64) >= 2


def _reloc_movw(op: str, place: int, val: int, o: _Op, insn: int) -> tuple[int, bool]:
    """reloc_insn_movw(): MOVZ/MOVN chosen by the sign for the signed forms."""
    sval = _s64(_do_reloc(op, place, val))
    imm = (sval >> o.lsb) & _U64
    if o.movnz:
        insn &= ~(3 << 29)
        if sval >= 0:
            insn |= 2 << 29
        else:
            imm = ~imm & _U64
    return _encode("16", insn, imm), imm > 0xFFFF


def _reloc_data(op: str, place: int, val: int, bits: int) -> tuple[int, bool]:
    """reloc_data(): the value stored and whether -ERANGE (PREL signed, ABS unsigned)."""
    sval = _s64(_do_reloc(op, place, val))
    if bits == 64:
        return sval & _U64, False
    if op == "abs":
        bad = sval < 0 or sval >= 1 << bits
    else:
        bad = not -(1 << (bits - 1)) <= sval < 1 << (bits - 1)
    return sval & ((1 << bits) - 1), bad


_OPS: dict[int, _Op] = {
    R_ARM_NONE: _Op("none"),
    R_AARCH64_NONE: _Op("none"),
    257: _Op("data", "abs", length=64, checked=False),
    258: _Op("data", "abs", length=32),
    259: _Op("data", "abs", length=16),
    260: _Op("data", "prel", length=64, checked=False),
    261: _Op("data", "prel", length=32),
    262: _Op("data", "prel", length=16),
    263: _Op("movw", "abs", 0),
    264: _Op("movw", "abs", 0, checked=False),
    265: _Op("movw", "abs", 16),
    266: _Op("movw", "abs", 16, checked=False),
    267: _Op("movw", "abs", 32),
    268: _Op("movw", "abs", 32, checked=False),
    269: _Op("movw", "abs", 48, checked=False),  # the top bits: cannot overflow
    270: _Op("movw", "abs", 0, movnz=True),
    271: _Op("movw", "abs", 16, movnz=True),
    272: _Op("movw", "abs", 32, movnz=True),
    273: _Op("imm", "prel", 2, 19, "19"),
    274: _Op("imm", "prel", 0, 21, "adr"),
    275: _Op("adrp", "page", 12, 21, "adr"),
    276: _Op("adrp", "page", 12, 21, "adr", checked=False),
    277: _Op("imm", "abs", 0, 12, "12", checked=False),
    278: _Op("imm", "abs", 0, 12, "12", checked=False),
    279: _Op("imm", "prel", 2, 14, "14"),
    280: _Op("imm", "prel", 2, 19, "19"),
    282: _Op("branch", "prel", 2, 26, "26"),
    283: _Op("branch", "prel", 2, 26, "26"),
    284: _Op("imm", "abs", 1, 11, "12", checked=False),
    285: _Op("imm", "abs", 2, 10, "12", checked=False),
    286: _Op("imm", "abs", 3, 9, "12", checked=False),
    287: _Op("movw", "prel", 0, movnz=True),
    288: _Op("movw", "prel", 0, checked=False),
    289: _Op("movw", "prel", 16, movnz=True),
    290: _Op("movw", "prel", 16, checked=False),
    291: _Op("movw", "prel", 32, movnz=True),
    292: _Op("movw", "prel", 32, checked=False),
    293: _Op("movw", "prel", 48, movnz=True, checked=False),
    299: _Op("imm", "abs", 4, 8, "12", checked=False),
}

_NAMES = {
    0: "R_ARM_NONE", 256: "R_AARCH64_NONE", 257: "R_AARCH64_ABS64", 258: "R_AARCH64_ABS32",
    259: "R_AARCH64_ABS16", 260: "R_AARCH64_PREL64", 261: "R_AARCH64_PREL32",
    262: "R_AARCH64_PREL16", 263: "R_AARCH64_MOVW_UABS_G0", 264: "R_AARCH64_MOVW_UABS_G0_NC",
    265: "R_AARCH64_MOVW_UABS_G1", 266: "R_AARCH64_MOVW_UABS_G1_NC",
    267: "R_AARCH64_MOVW_UABS_G2", 268: "R_AARCH64_MOVW_UABS_G2_NC",
    269: "R_AARCH64_MOVW_UABS_G3", 270: "R_AARCH64_MOVW_SABS_G0", 271: "R_AARCH64_MOVW_SABS_G1",
    272: "R_AARCH64_MOVW_SABS_G2", 273: "R_AARCH64_LD_PREL_LO19", 274: "R_AARCH64_ADR_PREL_LO21",
    275: "R_AARCH64_ADR_PREL_PG_HI21", 276: "R_AARCH64_ADR_PREL_PG_HI21_NC",
    277: "R_AARCH64_ADD_ABS_LO12_NC", 278: "R_AARCH64_LDST8_ABS_LO12_NC",
    279: "R_AARCH64_TSTBR14", 280: "R_AARCH64_CONDBR19", 282: "R_AARCH64_JUMP26",
    283: "R_AARCH64_CALL26", 284: "R_AARCH64_LDST16_ABS_LO12_NC",
    285: "R_AARCH64_LDST32_ABS_LO12_NC", 286: "R_AARCH64_LDST64_ABS_LO12_NC",
    287: "R_AARCH64_MOVW_PREL_G0", 288: "R_AARCH64_MOVW_PREL_G0_NC", 289: "R_AARCH64_MOVW_PREL_G1",
    290: "R_AARCH64_MOVW_PREL_G1_NC", 291: "R_AARCH64_MOVW_PREL_G2",
    292: "R_AARCH64_MOVW_PREL_G2_NC", 293: "R_AARCH64_MOVW_PREL_G3",
    299: "R_AARCH64_LDST128_ABS_LO12_NC",
}  # fmt: skip

_FORMULA = {"abs": "S + A", "prel": "S + A - P", "page": "Page(S + A) - Page(P)"}


def _row(number: int, o: _Op) -> RelocType:
    name = _NAMES[number]
    if o.helper == "none":
        return RelocType(number, name, 0, "none")
    op = o.op

    def compute(s: int, a: int, p: int) -> int:
        return _do_reloc(op, p, s + a)

    width = o.length // 8 if o.helper == "data" else 4
    formula = _FORMULA[op]
    if o.helper == "branch":
        formula = "S + A - P (or the module PLT slot: L + A - P)"
    check: str | None = None
    in_range: Callable[[int], bool] | None = None
    encode: Callable[[bytes, int], bytes] | None = None
    if o.helper == "data":
        bits = o.length
        if o.checked:
            check = (
                f"0 <= val < 2^{bits}" if op == "abs" else f"-2^{bits - 1} <= val < 2^{bits - 1}"
            )
            if op == "abs":

                def in_range(v: int, bits: int = bits) -> bool:
                    return 0 <= _s64(v) < 1 << bits
            else:

                def in_range(v: int, bits: int = bits) -> bool:
                    return -(1 << (bits - 1)) <= _s64(v) < 1 << (bits - 1)
    else:

        def encode(before: bytes, value: int, o: _Op = o) -> bytes:
            insn = int.from_bytes(before[:4], "little")
            return _merge(o, insn, value).to_bytes(4, "little")

        if o.checked:
            check = "imm <= U16_MAX" if o.helper == "movw" else f"signed {o.length + o.lsb} bits"
    return RelocType(number, name, width, formula, compute, check, in_range, encode)


def _merge(o: _Op, insn: int, value: int) -> int:
    """The instruction with ``value`` (the result of the type's formula) merged, as
    the kernel's helper does it (place 0 and val = value give do_reloc() = value)."""
    if o.helper == "movw":
        return _reloc_movw("abs", 0, value, o, insn)[0]
    return _reloc_imm("abs", 0, value, o, insn)[0]


#: ADR_PREL_LO21, as reloc_insn_adrp() uses it for the ADR of the erratum workaround
_ADR = _OPS[274]

#: the types apply_relocate_add() handles; any other is "unsupported RELA relocation"
RELOCATION_TYPES: dict[int, RelocType] = {n: _row(n, o) for n, o in _OPS.items()}


# --- module PLTs (module-plts.c) ---------------------------------------------------------


def _gen_adrp(pc: int, addr: int, reg: int) -> int:
    """aarch64_insn_gen_adr(..., AARCH64_INSN_ADR_TYPE_ADRP)."""
    offset = _s64((addr & ~0xFFF) - (pc & ~0xFFF))
    if not -(1 << 32) <= offset < 1 << 32:
        return _BREAK_FAULT
    return _encode("adr", 0x90000000 | reg, (offset >> 12) & _U64)


def _gen_branch(pc: int, addr: int) -> int:
    """aarch64_insn_gen_branch_imm(..., AARCH64_INSN_BRANCH_NOLINK)."""
    offset = _s64(addr - pc)
    if offset & 3 or not -(1 << 27) <= offset < 1 << 27:
        return _BREAK_FAULT
    return 0x14000000 | ((offset >> 2) & 0x3FFFFFF)


def plt_entry(dst: int, pc: int, reg: int = 16) -> bytes:
    """``get_plt_entry()``: adrp xR, dst; add xR, xR, #dst % 4K; br x16."""
    adrp = _gen_adrp(pc, dst, reg)
    add = 0x91000000 | ((dst % 4096) << 10) | (reg << 5) | reg
    return b"".join(x.to_bytes(4, "little") for x in (adrp, add, 0xD61F0200))


def _same_target(a: bytes, a_addr: int, b: bytes, b_addr: int) -> bool:
    """plt_entries_equal()."""
    if a[4:] != b[4:]:
        return False

    def target(e: bytes, at: int) -> int:
        adrp = int.from_bytes(e[:4], "little")
        imm = ((adrp >> 29) & 3) | (((adrp >> 5) & 0x7FFFF) << 2)
        imm -= (1 << 21) if imm >> 20 else 0
        return (at & ~0xFFF) + (imm << 12)

    return target(a, a_addr) == target(b, b_addr)


class PltSection:
    """One of ``mod->arch.core`` / ``mod->arch.init``: the section's address and the
    slots emitted so far (``plt_num_entries``), with their bytes, and the slots counted
    (``plt_max_entries``; None: no limit modelled)."""

    __slots__ = ("address", "entries", "max_entries", "num", "written")

    def __init__(self, address: int | None, max_entries: int | None = None) -> None:
        self.address = address
        self.max_entries = max_entries
        self.num = 0
        #: slot index -> its 12 bytes, for the slots emitted
        self.entries: dict[int, bytes] = {}
        #: slot index -> the bytes the kernel stored there last: also the copy it
        #: stores in the next slot before it finds the last one has the same target
        self.written: dict[int, bytes] = {}


class PltState:
    """What the twin keeps across the sections of one module
    (``layout.arch_state["aarch64"]``)."""

    __slots__ = ("core", "counts", "erratum_843419", "exhausted", "init", "stores")

    def __init__(self, core: int | None, init: int | None, *, erratum_843419: bool = False) -> None:
        self.core, self.init = PltSection(core), PltSection(init)
        #: the (core, init) slot counts, set on first emit (None: no limit)
        self.counts: Callable[[], tuple[int, int]] | None = None
        #: the last emit found no slot left (module_emit_*() returned 0)
        self.exhausted = False
        #: the loading CPU needs the ARM64_WORKAROUND_843419 (Cortex-A53)
        self.erratum_843419 = erratum_843419
        #: the stores into a PLT section so far (a reused slot is stored too)
        self.stores = 0

    def forbidden(self, place: int) -> bool:
        """is_forbidden_offset_for_adrp()."""
        return self.erratum_843419 and (place & 0xFFF) >= 0xFF8

    def _full(self, sec: PltSection) -> bool:
        """WARN_ON(pltsec->plt_num_entries > pltsec->plt_max_entries)."""
        if self.counts is not None and not self.erratum_843419:
            self.core.max_entries, self.init.max_entries = self.counts()
            self.counts = None
        self.exhausted = sec.max_entries is not None and sec.num > sec.max_entries
        return self.exhausted

    def emit(self, sec: PltSection, val: int) -> int | None:
        """module_emit_plt_entry(): the slot's address for target ``val``; None when
        the section's address is not known or no slot is left (:attr:`exhausted`)."""
        self.exhausted = False
        if sec.address is None:
            return None
        i = sec.num
        j = i - 1
        if self.forbidden(sec.address + i * _PLT_ENTRY):
            i += 1
        at = sec.address + i * _PLT_ENTRY
        entry = plt_entry(val, at)
        sec.written[i] = entry  # stored before the duplicate check, as the kernel does
        self.stores += 1
        if j >= 0 and j in sec.entries:
            prev_at = sec.address + j * _PLT_ENTRY
            if _same_target(entry, at, sec.entries[j], prev_at):
                return prev_at
        sec.entries[i] = entry
        sec.num += i - j
        if self._full(sec):
            return None
        return at

    def emit_veneer(self, sec: PltSection, place: int, insn: int, val: int) -> int | None:
        """module_emit_veneer_for_adrp(): adrp/add into the ADRP's register, then a
        branch back to the instruction after the place."""
        self.exhausted = False
        if sec.address is None:
            return None
        i = sec.num
        sec.num += 1
        if self._full(sec):
            return None
        if self.forbidden(sec.address + i * _PLT_ENTRY):
            i = sec.num
            sec.num += 1
        at = sec.address + i * _PLT_ENTRY
        rd = insn & 0x1F
        br = _gen_branch(at + 8, place + 4)
        sec.entries[i] = plt_entry(val, at, rd)[:8] + br.to_bytes(4, "little")
        sec.written[i] = sec.entries[i]
        self.stores += 1
        return at


def plt_slots(elf: ElfFile) -> tuple[int, int]:
    """The (core, init) PLT slots ``module_frob_arch_sections()`` reserves: ``count_plts()``
    over every SHT_RELA section whose target is SHF_EXECINSTR (klp sections too), in the
    order :func:`walk_order` gives, one slot per CALL26/JUMP26 against a symbol outside
    the target section, except one with addend 0 equal (type, symbol, addend) to the
    entry before it (``duplicate_rel()``); a target named ``.init*`` counts for
    ``.init.plt`` (``module_init_layout_section()``).  For a CPU without the
    erratum-843419 workaround (which adds veneer slots and slack)."""
    core = init = 0
    tab = elf.symtab
    if tab is None:
        return 0, 0
    shndx = tab.column("st_shndx")
    for sec in elf.sections[1:]:
        target = sec.info_section
        if sec.sh_type != SHT.RELA or target is None or not target.sh_flags & SHF.EXECINSTR:
            continue
        relocs = elf.relocations_as_rela(sec)
        types, syms = relocs.types(), relocs.syms()
        addends = relocs.addends() or [0] * len(types)
        order = walk_order(relocs, elf)
        n = 0
        for pos, k in enumerate(order):
            if types[k] not in (R_AARCH64_JUMP26, R_AARCH64_CALL26):
                continue
            if syms[k] < len(shndx) and shndx[syms[k]] == target.index:
                continue
            prev = order[pos - 1] if pos else None
            duplicate = prev is not None and (types[prev], syms[prev], _s64(addends[prev])) == (
                types[k], syms[k], _s64(addends[k]))  # fmt: skip
            if addends[k] != 0 or not duplicate:
                n += 1
        if target.name.startswith(".init"):
            init += n
        else:
            core += n
    return core, init


def frob_sections(elf: ElfFile) -> dict[int, SectionFrob]:
    """What ``module_frob_arch_sections()`` makes of ``.plt`` and ``.init.plt`` before
    the layout: SHT_NOBITS, SHF_EXECINSTR | SHF_ALLOC, one 12-byte slot per
    :func:`plt_slots` plus one, L1_CACHE_BYTES (64).  (The ftrace trampolines it also
    resizes are left as the file has them: NR_FTRACE_PLTS depends on the release.)"""
    core, init = plt_slots(elf)
    out = {}
    for name, slots in ((".plt", core), (".init.plt", init)):
        sec = elf.section_by_name(name)
        if sec is not None:
            out[sec.index] = SectionFrob(SHT.NOBITS, SHF.EXECINSTR | SHF.ALLOC,
                                         (slots + 1) * _PLT_ENTRY, _PLT_ALIGN)  # fmt: skip
    return out


def write_tables(layout: ModuleLayout, contents: Mapping[int, bytearray]) -> None:
    """The PLT slots the walks stored (``module_emit_plt_entry()``,
    ``module_emit_veneer_for_adrp()``) into the bytes of .plt and .init.plt."""
    state = layout.arch_state.get("aarch64")
    if not isinstance(state, PltState):
        return
    for name, plt in ((".plt", state.core), (".init.plt", state.init)):
        sec = layout.elf.section_by_name(name)
        data = None if sec is None else contents.get(sec.index)
        if data is None:
            continue
        for i, entry in plt.written.items():
            if (i + 1) * _PLT_ENTRY <= len(data):
                data[i * _PLT_ENTRY : (i + 1) * _PLT_ENTRY] = entry


def plt_state(layout: ModuleLayout, *, erratum_843419: bool = False) -> PltState:
    """The PLT state of ``layout``'s module, created on first use at the addresses
    of its ``.plt`` and ``.init.plt`` (module_frob_arch_sections())."""
    state = layout.arch_state.get("aarch64")
    if not isinstance(state, PltState):
        elf = layout.elf
        core, init = elf.section_by_name(".plt"), elf.section_by_name(".init.plt")
        state = PltState(
            None if core is None else layout.addresses.get(core.index),
            None if init is None else layout.addresses.get(init.index),
            erratum_843419=erratum_843419,
        )
        state.counts = lambda: plt_slots(elf)  # counted once, when a slot is first needed
        layout.arch_state["aarch64"] = state
    return state


def walk_order(relocs: RelocationTable, elf: ElfFile | None) -> list[int]:
    """The order in which apply_relocate_add() meets the entries, after
    module_frob_arch_sections() partitioned and sorted them (see the module doc)."""
    types = relocs.types()
    n = len(types)
    target = getattr(relocs, "target", None)
    if elf is None or target is None or not target.sh_flags & SHF.EXECINSTR or elf.symtab is None:
        return list(range(n))
    syms = relocs.syms()
    tab = elf.symtab

    def needs_plt(k: int) -> bool:
        if types[k] not in (R_AARCH64_JUMP26, R_AARCH64_CALL26):
            return False
        return bool(tab[syms[k]].st_shndx != target.index)

    order = list(range(n))
    i, j = 0, n - 1
    while i < j:  # partition_branch_plt_relas()
        if needs_plt(order[i]):
            i += 1
        elif needs_plt(order[j]):
            order[i], order[j] = order[j], order[i]
        else:
            j -= 1
    if i:
        addends = relocs.addends() or [0] * n
        front = sorted(order[:i], key=lambda k: (types[k], syms[k], _s64(addends[k])))
        order[:i] = front
    return order


# --- the twin -------------------------------------------------------------------------------


class Aarch64Facts(WriteFacts):
    """:class:`WriteFacts` with the ``val`` the kernel prints when it stops (S + A,
    or the PLT slot's address), and the entries that stored a PLT slot."""

    __slots__ = ("kernel_val", "plt_stores")

    def __init__(self, *args: object, kernel_val: int | None = None,
                 plt_stores: tuple[int, ...] = (), **kwargs: object) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.kernel_val = kernel_val
        #: the entries (file order) for which module_emit_plt_entry() or
        #: module_emit_veneer_for_adrp() stored a slot into .plt / .init.plt
        self.plt_stores = plt_stores


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
    """The twin of arm64's ``apply_relocate_add()`` for one section: see
    :class:`klpelf.arch.WriteRelocateAdd`.

    The rows are in file order, up to and including the entry where the kernel stops
    (``stop`` is its index in the section); the entries are walked in the kernel's
    order (:func:`walk_order`).  A place whose value is not known is left as it is
    (arm64 checks no place for zero).  A place past the end of ``target`` is neither
    read nor written.  ``layout``: the PLT sections (``.plt``, ``.init.plt``); without
    it a branch out of range has an unknown value.
    """
    del release  # the bytes are the same in every release modelled (see the module doc)
    offsets, types, syms = relocs.offsets(), relocs.types(), relocs.syms()
    n = len(types)
    addends = relocs.addends() or [0] * n
    elf = layout.elf if layout is not None else getattr(relocs, "elf", None)
    order = walk_order(relocs, elf)
    known_values = symbol_value is not None and address is not None
    widths = [RELOCATION_TYPES[t].width if t in _OPS else 0 for t in types]
    values: list[int | None] = [None] * n
    overflow: list[bool | None] = [None] * n
    stop: int | None = None
    reason: StopReason | None = None
    kernel_val: int | None = None
    init_target = False
    tsec = getattr(relocs, "target", None)
    if tsec is not None:
        init_target = tsec.name.startswith(".init")
    plt_stores: list[int] = []
    for k in order:
        o = _OPS.get(types[k])
        if o is None:
            stop, reason = k, "unknown-type"
            break
        if o.helper == "none":
            overflow[k] = False if known_values else None
            continue
        s = symbol_value(syms[k]) if symbol_value is not None else None
        if s is None or address is None:
            continue
        off = offsets[k]
        width = widths[k]
        if off + width > len(target):
            continue
        place = address + off
        val = (s + addends[k]) & _U64
        stores = plt_state(layout).stores if layout is not None else 0
        ovf, written = _apply_one(
            o, target, off, place, val, layout=layout, init_target=init_target
        )
        if layout is not None and plt_state(layout).stores != stores:
            plt_stores.append(k)
        if written is None:  # a PLT slot was needed: its section is not known, or full
            if layout is not None and plt_state(layout).exhausted:
                stop, reason = k, "plt-full"
                break
            continue
        values[k], val = written
        overflow[k] = ovf
        if ovf and o.checked:
            stop, reason, kernel_val = k, "overflow", val
            break
    rows = n if stop is None else stop + 1
    if reason == "unknown-type":
        widths[stop] = 0  # type: ignore[index]
    return Aarch64Facts(offsets[:rows], types[:rows], widths[:rows], [False] * rows,
                        values=values[:rows] if known_values else None,
                        overflow=overflow[:rows] if known_values else None,
                        stop=stop, reason=reason, kernel_val=kernel_val,
                        plt_stores=tuple(sorted(plt_stores)))  # fmt: skip


def _apply_one(o: _Op, target: bytearray, off: int, place: int, val: int, *,
               layout: ModuleLayout | None,
               init_target: bool) -> tuple[bool, tuple[int, int] | None]:  # fmt: skip
    """One entry: write the place; (whether -ERANGE, (the formula's value, the val the
    kernel prints)), or (False, None) when a PLT slot is needed and not known."""
    if o.helper == "data":
        stored, bad = _reloc_data(o.op, place, val, o.length)
        target[off : off + o.length // 8] = stored.to_bytes(o.length // 8, "little")
        return bad, (_do_reloc(o.op, place, val), val)
    insn = int.from_bytes(target[off : off + 4], "little")
    if o.helper == "movw":
        insn, bad = _reloc_movw(o.op, place, val, o, insn)
        target[off : off + 4] = insn.to_bytes(4, "little")
        return bad, (_do_reloc(o.op, place, val), val)
    if o.helper == "adrp":
        return _apply_adrp(
            o, target, off, place, val, insn=insn, layout=layout, init_target=init_target
        )
    new, bad = _reloc_imm(o.op, place, val, o, insn)
    if bad and o.helper == "branch":
        if layout is None:
            return False, None
        state = plt_state(layout)
        slot = state.emit(state.init if init_target else state.core, val)
        if slot is None:
            return False, None
        val = slot
        new, bad = _reloc_imm(o.op, place, val, o, insn)
    target[off : off + 4] = new.to_bytes(4, "little")
    return bad, (_do_reloc(o.op, place, val), val)


def _apply_adrp(o: _Op, target: bytearray, off: int, place: int, val: int, *, insn: int,
                layout: ModuleLayout | None,
                init_target: bool) -> tuple[bool, tuple[int, int] | None]:  # fmt: skip
    """reloc_insn_adrp(): ADRP, or with the erratum-843419 workaround at a forbidden
    offset, ADR when in range, else a branch to a veneer in the PLT."""
    state = plt_state(layout) if layout is not None else None
    if state is None or not state.forbidden(place):
        new, bad = _reloc_imm("page", place, val, o, insn)
        target[off : off + 4] = new.to_bytes(4, "little")
        return bad, (_do_reloc("page", place, val), val)
    page = val & ~0xFFF
    new, bad = _reloc_imm("prel", place, page, _ADR, insn)
    if not bad:
        new &= ~(1 << 31)
    else:
        slot = state.emit_veneer(state.init if init_target else state.core, place, insn, page)
        if slot is None:
            return False, None
        new = _gen_branch(place, slot)
    target[off : off + 4] = new.to_bytes(4, "little")
    return False, (_do_reloc("prel", place, page), val)


# --- the kernel's messages --------------------------------------------------------------


#: module.c's pr_fmt: v6.5 3e35d303ab7d "arm64: module: rework module VA range selection"
PR_FMT = PrFmt("Modules: ", since=KernelRelease(6, 5))


def unknown_message(module: str, r_type: int) -> str:
    """What the kernel prints for a type apply_relocate_add() does not handle."""
    return f"module {module}: unsupported RELA relocation: {r_type}"


def overflow_message(module: str, r_type: int, val: int | None) -> str:
    """What the kernel prints for a range-checked value out of range (``val``: S + A,
    or the PLT slot's address)."""
    shown = "<val>" if val is None else f"{val:x}"
    return f"module {module}: overflow in relocation type {r_type} val {shown}"


#: the rule of :func:`late_plt_oops`
LATE_PLT_RULE = "arm64-late-plt-oops"


def late_plt_oops(module: str, objname: str, facts: WriteFacts,
                  assumed: bool) -> list[tuple[int, str, str]]:  # fmt: skip
    """klpelf's prediction of a kernel bug (no message of the kernel's: an oops) for a
    klp relocation section of a module object, applied once ``module`` is formed: at
    enable (klp_init_object_loaded()) or when ``objname`` loads (klp_module_coming()),
    after complete_formation() made the module's text, its .plt with it, read-only.
    The place is written through aarch64_insn_copy() (the v6.17-era text-poke rework of
    module.c), but module_emit_plt_entry() and module_emit_veneer_for_adrp()
    (module-plts.c) store the slot with a plain store: a write fault in
    module_emit_plt_entry(), and the loading task dies (read in 7.2; arm64 has
    livepatch since v6.17, fd1e0fd71f65).  vmlinux's sections are applied at load,
    before complete_formation(): safe.  (entry, rule, message) per entry that stores a slot,
    the first one only: the kernel dies there.  ``assumed``: the addresses are
    klpelf's placement, so the slot may not be needed."""
    stores = getattr(facts, "plt_stores", ())
    if not stores:
        return []
    k = stores[0]
    r_type = facts.types[k]
    helper = ("module_emit_veneer_for_adrp()" if r_type in (R_AARCH64_ADR_PREL_PG_HI21,
              R_AARCH64_ADR_PREL_PG_HI21_NC) else "module_emit_plt_entry()")  # fmt: skip
    verb = "may oops" if assumed else "oopses"
    cond = " (at klpelf's assumed addresses)" if assumed else ""
    what = f"{_NAMES[r_type]} ({r_type}) for {objname}"
    return [(k, LATE_PLT_RULE, f"{what} needs a module PLT slot{cond}: the kernel {verb} "
                f"when it applies it, at enable if {objname} is loaded "
                f"(klp_init_object_loaded()) or when {objname} loads (klp_module_coming()): "
                f"{helper} stores the slot into the .plt of {module}, read-only since "
                "complete_formation() (\"Unable to handle kernel write to read-only "
                "memory\"), and the loading task dies; klpelf's prediction of a kernel bug "
                "(arm64, v6.17+)")]  # fmt: skip


def refusal_logged(facts: WriteFacts) -> bool:
    """Whether the kernel prints a message for the stop: not for a PLT with no slot left
    (a WARN_ON's stack trace only)."""
    return facts.reason != "plt-full"


def refusal(release: KernelRelease, module: str, sec: int, facts: WriteFacts) -> tuple[str, str]:
    """The rule and the kernel's message for the entry where ``facts`` stopped."""
    # the same text in every release (what changed, v6.5, is PR_FMT before it); arm64's
    # messages name neither the section nor the entry
    del release, sec
    assert facts.stop is not None
    r_type = facts.types[facts.stop]
    if facts.reason == "plt-full":
        name = _NAMES[r_type]
        helper = ("module_emit_veneer_for_adrp()" if r_type in (R_AARCH64_ADR_PREL_PG_HI21,
                  R_AARCH64_ADR_PREL_PG_HI21_NC) else "module_emit_plt_entry()")  # fmt: skip
        return "arm64-plt-exhausted", silent_refusal(
            f"{name} ({r_type}) of module {module}", "apply_relocate_add()",
            ("ENOEXEC", ENOEXEC),
            f"{helper} found no PLT slot left of those module_frob_arch_sections() "
            "counted; its WARN_ON prints a stack trace: a livepatch relocation section "
            "applied again when its module loads again takes new slots")  # fmt: skip
    if facts.reason == "unknown-type":
        return "arm64-unknown-relocation", unknown_message(module, r_type)
    val = facts.kernel_val if isinstance(facts, Aarch64Facts) else None
    return "arm64-relocation-overflow", overflow_message(module, r_type, val)


ARCH = Arch(
    name="aarch64",
    machine=EM.AARCH64,
    byteorder="little",
    relocation_types=RELOCATION_TYPES,
    none_type=R_AARCH64_NONE,
    write_relocate_add=write_relocate_add,
    refusal=refusal,
    write_tables=write_tables,
    frob_sections=frob_sections,
    dmesg_prefix=PR_FMT,
    refusal_logged=refusal_logged,
    late_hazards=late_plt_oops,
)
