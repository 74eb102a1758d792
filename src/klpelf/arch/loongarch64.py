"""loongarch64: the relocations of ``arch/loongarch/kernel/module.c`` and the module GOT
and PLT of ``module-sections.c``, in the releases klpelf models (LoongArch is in
Linux since v5.19).

``apply_relocate_add()`` walks the Elf64_Rela entries of one section with
``v = st_value + r_addend`` and calls the handler ``reloc_rela_handlers[type]``.  The
handler table has an entry for every type up to its last designated index; a type
past it stops the walk with "%s: Unknown relocation type %u", an entry that is
``apply_r_larch_error`` with "%s: Unsupport relocation type %u, please add its
support.", and a handler's own ``default:`` case with "%s: Unsupport relocation type
%u" (all -EINVAL).  No handler checks that the place is zero.  In dmesg, module.c's
messages follow its ``pr_fmt`` "kmod: " (:data:`PR_FMT`); module-sections.c, which
prints the bad GOT entry and the missing sections, has no pr_fmt (read in 6.1, 6.12
and 7.2).

Per release (mainline commits; what the modelled stable releases took is said where
it differs):

* v5.19 fcdfe9d22bed ("LoongArch: Add ELF and module support"): R_LARCH_NONE, 32,
  64, MARK_LA and MARK_PCREL (nothing), and the stack machine of the psABI v1
  (SOP_PUSH_PCREL/ABSOLUTE/DUP/PLT_PCREL, SOP_SUB..IF_ELSE, SOP_POP_32_*), a stack of
  RELA_STACK_DEPTH (16) s64 per call, its overflow and underflow -ENOEXEC with no
  message; ADD32/ADD64/SUB32/SUB64 (their range ADD32..SUB64 takes SUB8, SUB16 and
  SUB24 to the handler's default case); the table ends at R_LARCH_RELAX (100);
* v6.1 9bd1e38032fb ("LoongArch: Support PC-relative relocations in modules"): B26
  (through a module PLT entry when out of +-128 MiB), PCALA_HI20/LO12 and
  PCALA64_LO20/HI12 (no range check at all); 59b3d4a9b0cc ("Support
  R_LARCH_GOT_PC_{LO12,HI20} in modules"): GOT_PC_HI20/LO12 through the module GOT.
  R_LARCH_ABS* and GOT64_PC_* were never given handlers;
* v6.6 2761498876ad ("Define relocation types for ABI v2.10"): the table ends at
  R_LARCH_64_PCREL (109), so 101..109 get "Unsupport ... please add its support."
  instead of "Unknown relocation type" (taken by 6.1.y in 6.1.56; the 6.1 of klpelf is
  that 6.1.y); c1c2ce2d3bf9 and b1dc55a3d6a8: 32_PCREL and 64_PCREL (6.5.y took them
  with it, 6.1.y's review series did not: a 6.1.y module.c stored with the new table
  end and no 32_PCREL handler is what klpelf's 6.1 follows);
* v6.2 ("LoongArch: module: Use got/plt section indices for relocations") moves B26,
  GOT_PC and SOP_PUSH_PLT_PCREL out of the table into a switch: same bytes;
* v6.17 63dbd8fb2af3 ("LoongArch: Optimize module load time by optimizing PLT/GOT
  counting"): ``count_max_entries()`` sorts, in the module image, the entries of
  every SHT_RELA section whose target is SHF_EXECINSTR by (r_info, r_addend), so
  ``apply_relocate_add()`` meets them in that order (backported to the stable trees
  in August 2025, 6.6.y's review series among them; klpelf's 6.12, Debian's late
  6.12.y, is taken to have it).  The kernel's sort is lib/sort.c's heapsort, not
  stable; the twin walks in its order (:mod:`klpelf.arch.kernel_sort`, both versions
  of lib/sort.c).  Equal keys have the same type, symbol and addend, so the same
  value and GOT/PLT entry: only for the stack machine does their order matter.  The
  sort breaks stack sequences anyway (no toolchain since binutils 2.40 emits them);
* v6.19-era "LoongArch: Adjust module loader for 32BIT/64BIT": same bytes on 64-bit.

The module GOT and PLT of module-sections.c are in :mod:`klpelf.arch.loongarch64_sections`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from klpelf.arch import (
    NO_PR_FMT,
    Arch,
    ModuleLayout,
    PrFmt,
    RelocType,
    StopReason,
    WriteFacts,
    silent_refusal,
)
from klpelf.arch.kernel_sort import double_pop, heapsort_order
from klpelf.arch.loongarch64_sections import (
    ModuleTables,
    frob_refusal,
    frob_sections,
    module_tables,
    write_tables,
)
from klpelf.elf.constants import EM, SHF
from klpelf.elf.reloc_types import reloc_type_name
from klpelf.release import EINVAL, ENOEXEC

if TYPE_CHECKING:
    from klpelf.elf.relocs import RelocationTable
    from klpelf.release import KernelRelease

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
SZ_128M = 1 << 27
RELA_STACK_DEPTH = 16
R_LARCH_NONE = 0
R_LARCH_SOP_PUSH_PLT_PCREL, R_LARCH_SOP_IF_ELSE = 29, 37
R_LARCH_B26, R_LARCH_GOT_PC_HI20, R_LARCH_GOT_PC_LO12 = 66, 75, 76
R_LARCH_PCALA_HI20, R_LARCH_PCALA_LO12 = 71, 72
R_LARCH_RELAX, R_LARCH_64_PCREL = 100, 109
#: the handlers of the stack machine: once one value is unknown, so is the stack
_STACK_KINDS = frozenset({"push", "sop", "pop"})
#: __func__ in the stack machine's messages
_IMM_FIELD = "apply_r_larch_sop_imm_field"


def _s64(v: int) -> int:
    v &= _U64
    return v - (1 << 64) if v >> 63 else v


def _s32(v: int) -> int:
    v &= _U32
    return v - (1 << 32) if v >> 31 else v


def _signed_imm_check(val: int, bits: int) -> bool:
    return -(1 << (bits - 1)) <= _s64(val) < 1 << (bits - 1)


# --- the handler of each type, per release ---------------------------------------------

#: handler kinds: "none", "abs32", "abs64", "push" (pcrel/absolute/dup/plt_pcrel by
#: type), "sop" (SUB..IF_ELSE), "pop" (SOP_POP_32_*), "add_sub", "b26", "pcala",
#: "got_pc", "pcrel32", "pcrel64"; absent from the dict but below the table's end:
#: apply_r_larch_error
_V519: dict[int, str] = {
    0: "none", 1: "abs32", 2: "abs64", 20: "none", 21: "none",
    22: "push", 23: "push", 24: "push", 29: "push",
    **dict.fromkeys(range(32, 38), "sop"),
    **dict.fromkeys(range(38, 47), "pop"),
    **dict.fromkeys(range(50, 57), "add_sub"),
}  # fmt: skip
_V61 = {**_V519, 66: "b26", 71: "pcala", 72: "pcala", 73: "pcala", 74: "pcala",
        75: "got_pc", 76: "got_pc"}  # fmt: skip
_V66 = {**_V61, 99: "pcrel32", 109: "pcrel64"}


def handlers(release: KernelRelease) -> dict[int, str]:
    """The handler kind of every type ``release`` has a handler for."""
    if release.at_least(6, 6):
        return _V66
    return _V61 if release.at_least(6, 1) else _V519


def table_end(release: KernelRelease) -> int:
    """ARRAY_SIZE(reloc_rela_handlers): types at or past it are "Unknown relocation
    type"; 2761498876ad (v6.6, in 6.1.y) moved the end from RELAX to 64_PCREL."""
    if release.at_least(6, 6) or (release.major, release.minor) == (6, 1):
        return R_LARCH_64_PCREL + 1
    return R_LARCH_RELAX + 1


def sorts_relocations(release: KernelRelease) -> bool:
    """Whether count_max_entries() sorts the entries (63dbd8fb2af3, v6.17; 6.6.y, 6.12.y)."""
    return release.at_least(6, 17) or (release.major, release.minor) in ((6, 6), (6, 12))


# --- instruction fields (union loongarch_instruction) -------------------------------------


def _field(insn: int, lsb: int, bits: int, value: int) -> int:
    mask = ((1 << bits) - 1) << lsb
    return (insn & ~mask & _U32) | ((value << lsb) & mask)


def _imm12(insn: int, v: int) -> int:  # reg2i12_format.immediate
    return _field(insn, 10, 12, v)


def _imm16(insn: int, v: int) -> int:  # reg2i16_format.immediate
    return _field(insn, 10, 16, v)


def _imm20(insn: int, v: int) -> int:  # reg1i20_format.immediate
    return _field(insn, 5, 20, v)


def _imm21(insn: int, v: int) -> int:  # reg1i21_format: immediate_l, immediate_h
    return _field(_field(insn, 10, 16, v), 0, 5, v >> 16)


def _imm26(insn: int, v: int) -> int:  # reg0i26_format: immediate_l, immediate_h
    return _field(_field(insn, 10, 16, v), 0, 10, v >> 16)


#: SOP_POP_32_*: (signed, bits checked, shift, field); 38 (S_10_5) has no case
_POPS: dict[int, tuple[bool, int, int, Callable[[int, int], int] | None]] = {
    39: (False, 12, 0, _imm12), 40: (True, 12, 0, _imm12), 41: (True, 16, 0, _imm16),
    42: (True, 18, 2, _imm16), 43: (True, 20, 0, _imm20), 44: (True, 23, 2, _imm21),
    45: (True, 28, 2, _imm26), 46: (False, 32, 0, None),
}  # fmt: skip


def pcala(kind: int, v: int, place: int) -> int:
    """apply_r_larch_pcala(): the immediate of PCALA_LO12/HI20/64_LO20/64_HI12 (also
    what GOT_PC_LO12/HI20 encode, with ``v`` the GOT entry's address)."""
    v &= _U64
    page = place & ~0xFFF & _U64
    # "Use s32 for a sign-extension deliberately."
    offset_hi20 = _s32(((v + 0x800) & ~0xFFF) - page)
    anchor = (page + offset_hi20) & _U64
    offset_rem = _s64(v - anchor)
    if kind == R_LARCH_PCALA_LO12:
        return v & 0xFFF
    if kind == R_LARCH_PCALA_HI20:
        return (offset_hi20 >> 12) & 0xFFFFF
    if kind == 73:  # PCALA64_LO20
        return (offset_rem >> 32) & 0xFFFFF
    return (offset_rem >> 52) & 0xFFF  # PCALA64_HI12


def walk_order(relocs: RelocationTable, release: KernelRelease) -> list[int]:
    """The order apply_relocate_add() meets the entries: file order, or on a release
    that sorts (:func:`sorts_relocations`) and an executable target, the order
    lib/sort.c's heapsort leaves them in by (r_info, r_addend) (:mod:`.kernel_sort`)."""
    n = len(relocs.types())
    target = getattr(relocs, "target", None)
    if not sorts_relocations(release) or target is None or not target.sh_flags & SHF.EXECINSTR:
        return list(range(n))
    syms, types = relocs.syms(), relocs.types()
    addends = relocs.addends() or [0] * n
    # compare_rela(): r_info, then r_addend as an s64, as one integer
    keys = [(((syms[k] << 32) | types[k]) << 64) | ((addends[k] + (1 << 63)) & _U64)
            for k in range(n)]  # fmt: skip
    if not any(20 <= t <= 46 for t in types):
        # without the stack machine the order among equal keys changes nothing (the
        # same value and GOT/PLT entry, each at its own place): Python's sort
        return sorted(range(n), key=keys.__getitem__)
    return heapsort_order(keys, double=double_pop(release))


# --- the twin ----------------------------------------------------------------------------


class LoongFacts(WriteFacts):
    """:class:`WriteFacts` with what the kernel's message at the stop prints:
    (which message, the number in it)."""

    __slots__ = ("detail",)

    def __init__(self, *args: object, detail: tuple[str, int] | None = None,
                 **kwargs: object) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.detail = detail


class _Stop(Exception):  # noqa: N818 (a control-flow signal inside the walk)
    def __init__(self, reason: StopReason, detail: tuple[str, int]) -> None:
        self.reason, self.detail = reason, detail


class _Walk:
    """One call of apply_relocate_add(): its stack and the module's tables."""

    def __init__(self, target: bytearray, tables: ModuleTables | None) -> None:
        self.target = target
        self.tables = tables
        self.stack: list[int] = []

    def push(self, value: int) -> None:
        if len(self.stack) >= RELA_STACK_DEPTH:
            raise _Stop("rela-stack", ("push", 0))
        self.stack.append(_s64(value))

    def pop(self) -> int:
        if not self.stack:
            raise _Stop("rela-stack", ("pop", 0))
        return self.stack.pop()

    def plt_if_far(self, v: int, place: int) -> int:
        """``v``, or its module PLT entry when ``v - place`` is out of +-128 MiB;
        raises LookupError when the PLT is not known."""
        if -SZ_128M <= _s64(v - place) < SZ_128M:
            return v
        slot = None if self.tables is None else self.tables.emit_plt(v)
        if slot is None:
            raise LookupError
        return slot

    def insn(self, off: int) -> int:
        return int.from_bytes(self.target[off : off + 4], "little")

    def put(self, off: int, value: int, width: int) -> None:
        self.target[off : off + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(
            width, "little"
        )


def _width(kind: str | None, r_type: int) -> int:
    if kind in (None, "none", "push", "sop"):
        return 0
    if kind in ("abs64", "pcrel64") or (kind == "add_sub" and r_type in (51, 56)):
        return 8
    return 4


def _apply(w: _Walk, kind: str, r_type: int, off: int, v: int, *, place: int) -> int | None:
    """One handler: the value it writes (None: nothing written), or raises _Stop."""
    if kind == "abs32":
        w.put(off, v, 4)
        return v
    if kind == "abs64":
        w.put(off, v, 8)
        return v
    if kind == "push":
        _push(w, r_type, v, place)
        return None
    if kind == "sop":
        _sop(w, r_type)
        return None
    if kind == "pop":
        return _pop(w, r_type, off)
    if kind == "add_sub":
        return _add_sub(w, r_type, off, v)
    if kind == "b26":
        return _b26(w, r_type, off, v, place)
    if kind == "pcrel32":
        w.put(off, v - place, 4)
        return (v - place) & _U64
    if kind == "pcrel64":
        w.put(off, v - place, 8)
        return (v - place) & _U64
    if kind == "got_pc":
        if w.tables is None:
            raise LookupError
        got = w.tables.emit_got(v)
        if got is None:
            raise LookupError
        if got == 0:
            raise _Stop("overflow", ("bad-got", r_type))
        v, r_type = got, R_LARCH_PCALA_LO12 if r_type == R_LARCH_GOT_PC_LO12 else R_LARCH_PCALA_HI20
    imm = pcala(r_type, v, place)
    insn = w.insn(off)
    w.put(off, _imm20(insn, imm) if r_type in (R_LARCH_PCALA_HI20, 73) else _imm12(insn, imm), 4)
    return imm


def _push(w: _Walk, r_type: int, v: int, place: int) -> None:
    if r_type == 22:  # SOP_PUSH_PCREL
        w.push(v - place)
    elif r_type == 23:  # SOP_PUSH_ABSOLUTE
        w.push(v)
    elif r_type == 24:  # SOP_PUSH_DUP
        top = w.pop()
        w.push(top)
        w.push(top)
    else:  # SOP_PUSH_PLT_PCREL
        w.push(w.plt_if_far(v, place) - place)


def _sop(w: _Walk, r_type: int) -> None:
    opr3 = w.pop() if r_type == R_LARCH_SOP_IF_ELSE else 0
    opr2 = w.pop()
    opr1 = w.pop()
    # sll.d/sra.d take the shift amount modulo 64
    result = {32: opr1 - opr2, 33: opr1 << (opr2 & 63), 34: opr1 >> (opr2 & 63),
              35: opr1 + opr2, 36: opr1 & opr2, 37: opr2 if opr1 else opr3}[r_type]  # fmt: skip
    w.push(result)


def _pop(w: _Walk, r_type: int, off: int) -> int:
    opr1 = w.pop()
    case = _POPS.get(r_type)
    if case is None:  # SOP_POP_32_S_10_5: the handler's default case
        raise _Stop("unknown-type", ("default", r_type))
    signed, bits, shift, field = case
    if shift and opr1 % 4:  # C's opr1 % 4: nonzero for any non-multiple
        raise _Stop("overflow", ("sop-unaligned", opr1))
    ok = _signed_imm_check(opr1, bits) if signed else (opr1 & _U64) < 1 << bits
    if not ok:
        raise _Stop("overflow", ("sop-overflow", opr1))
    if field is None:  # SOP_POP_32_U: the whole word
        w.put(off, opr1, 4)
    else:
        w.put(off, field(w.insn(off), (opr1 >> shift) & _U32), 4)
    return opr1 & _U64


def _add_sub(w: _Walk, r_type: int, off: int, v: int) -> int:
    width = {50: 4, 51: 8, 55: 4, 56: 8}.get(r_type)
    if width is None:  # SUB8, SUB16, SUB24: the handler's default case
        raise _Stop("unknown-type", ("default", r_type))
    old = int.from_bytes(w.target[off : off + width], "little")
    new = (old + v if r_type in (50, 51) else old - v) & ((1 << (8 * width)) - 1)
    w.put(off, new, width)
    return new


def _b26(w: _Walk, r_type: int, off: int, v: int, place: int) -> int:
    offset = _s64(w.plt_if_far(v, place) - place)
    if offset & 3:
        raise _Stop("overflow", ("b26-unaligned", offset))
    if not _signed_imm_check(offset, 28):
        raise _Stop("overflow", ("b26-overflow", offset))
    w.put(off, _imm26(w.insn(off), (offset >> 2) & 0x3FFFFFF), 4)
    return offset & _U64


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
    """The twin of LoongArch's ``apply_relocate_add()`` for one section: see
    :class:`klpelf.arch.WriteRelocateAdd`.

    Rows are in file order up to and including the entry where the kernel stops,
    walked in the kernel's order (:func:`walk_order`).  Values: what each handler
    encodes (S + A for 32/64, S + A - P for the PC-relative ones, the branch offset
    for B26, the immediate for PCALA and GOT_PC, the popped operand for SOP_POP_*, the
    sum for ADD/SUB); None for the stack pushes and operations, which write nothing.
    Without symbol values the walk writes nothing and only the types are judged (the
    stack machine cannot be followed).  ``layout``: the module's .got and .plt; without
    it a B26 out of range or a GOT_PC has an unknown value, and the walk goes on.
    """
    del keep  # the stack machine needs every entry's bytes in order anyway
    offsets, types, syms = relocs.offsets(), relocs.types(), relocs.syms()
    n = len(types)
    addends = relocs.addends() or [0] * n
    known = handlers(release)
    end = table_end(release)
    kinds = [known.get(t) for t in types]
    widths = [_width(k, t) for k, t in zip(kinds, types, strict=True)]
    have = symbol_value is not None and address is not None
    values: list[int | None] = [None] * n
    overflow: list[bool | None] = [None] * n
    stop: int | None = None
    reason: StopReason | None = None
    detail: tuple[str, int] | None = None
    tables = module_tables(layout) if layout is not None and have else None
    w = _Walk(target, tables)
    followable = True  # False once a value is unknown: the stack is no longer known
    for k in walk_order(relocs, release):
        r_type, kind = types[k], kinds[k]
        if kind is None:
            stop, reason = k, "unknown-type"
            detail = ("unknown" if r_type >= end else "error", r_type)
            break
        if not have or kind == "none":
            overflow[k] = False if have else None
            continue
        assert symbol_value is not None and address is not None
        s = symbol_value(syms[k])
        off = offsets[k]
        stack_op = kind in _STACK_KINDS
        if s is None or (stack_op and not followable) or off + widths[k] > len(target):
            followable = followable and not stack_op
            continue
        try:
            values[k] = _apply(w, kind, r_type, off, (s + addends[k]) & _U64, place=address + off)
            overflow[k] = False
        except LookupError:  # the GOT or PLT is not known
            followable = followable and not stack_op
        except _Stop as e:
            stop, reason, detail = k, e.reason, e.detail
            overflow[k] = e.reason == "overflow"
            break
    rows = n if stop is None else stop + 1
    if stop is not None:
        widths[stop] = 0
    return LoongFacts(offsets[:rows], types[:rows], widths[:rows], [False] * rows,
                      values=values[:rows] if have else None,
                      overflow=overflow[:rows] if have else None,
                      stop=stop, reason=reason, detail=detail)  # fmt: skip


# --- the kernel's messages --------------------------------------------------------------


#: module.c's pr_fmt
PR_FMT = PrFmt("kmod: ")


def refusal_pr_fmt(facts: WriteFacts) -> PrFmt:
    """The pr_fmt before the message of the stop in ``facts``: module-sections.c's
    module_emit_got_entry() prints the bad GOT entry (no pr_fmt), module.c the rest."""
    detail = facts.detail if isinstance(facts, LoongFacts) else None
    return NO_PR_FMT if detail is not None and detail[0] == "bad-got" else PR_FMT


def message(module: str, detail: tuple[str, int]) -> str:
    """What the kernel prints for a stop's ``detail`` (the text after the pr_fmt of
    :func:`refusal_pr_fmt`)."""
    what, n = detail
    if what == "unknown":
        return f"{module}: Unknown relocation type {n}"
    if what == "error":
        return f"{module}: Unsupport relocation type {n}, please add its support."
    if what == "default":
        return f"{module}: Unsupport relocation type {n}"
    if what == "bad-got":
        return f"{module}: module contains bad GOT relocation"
    hexval = f"0x{n & _U64:x}"
    if what.startswith("b26-"):
        return (f"module {module}: jump offset = {hexval} {what[4:]}! dangerous "
                f"R_LARCH_B26 ({R_LARCH_B26}) relocation")  # fmt: skip
    raise AssertionError(what)


def refusal_errno(facts: WriteFacts) -> int:
    """-EINVAL for a type without a handler and a bad GOT entry, -ENOEXEC for the
    range and alignment checks and the stack."""
    detail = facts.detail if isinstance(facts, LoongFacts) else None
    if facts.reason == "unknown-type" or (detail is not None and detail[0] == "bad-got"):
        return EINVAL
    return ENOEXEC


def refusal_logged(facts: WriteFacts) -> bool:
    """Every stop is printed but the relocation stack's: rela_stack_push() and
    rela_stack_pop() return -ENOEXEC and nothing prints it (read in 6.1, 6.12, 7.2)."""
    return facts.reason != "rela-stack"


def refusal(release: KernelRelease, module: str, sec: int, facts: WriteFacts) -> tuple[str, str]:
    """The rule and the kernel's message for the entry where ``facts`` stopped."""
    del release, sec  # the messages name neither the section nor the entry
    assert facts.stop is not None
    r_type = facts.types[facts.stop]
    detail = facts.detail if isinstance(facts, LoongFacts) else None
    if detail is None:
        detail = ("error", r_type)
    what, n = detail
    if what in {"push", "pop"}:
        why = f"full, RELA_STACK_DEPTH {RELA_STACK_DEPTH}" if what == "push" else "empty"
        return "loongarch-rela-stack", silent_refusal(
            f"{_name(r_type)} ({r_type})", f"rela_stack_{what}()", ("ENOEXEC", ENOEXEC),
            f"the relocation stack is {why}")  # fmt: skip
    if what.startswith("sop-"):
        return "loongarch-relocation-overflow", (
            f"module {module}: opr1 = 0x{n & _U64:x} {what[4:]}! dangerous "
            f"{_IMM_FIELD} ({r_type}) relocation"
        )
    rule = "loongarch-unknown-relocation" if facts.reason == "unknown-type" else (
        "loongarch-relocation-overflow")  # fmt: skip
    return rule, message(module, detail)


def _name(r_type: int) -> str:
    return reloc_type_name(EM.LOONGARCH, r_type) or f"type {r_type}"


def _row(number: int, kind: str) -> RelocType:
    name = _name(number)
    width = _width(kind, number)
    formula, compute, check = {
        "none": ("none", None, None),
        "abs32": ("S + A", lambda s, a, p: (s + a) & _U64, None),
        "abs64": ("S + A", lambda s, a, p: (s + a) & _U64, None),
        "push": ("push onto the relocation stack", None, None),
        "sop": ("stack operation", None, None),
        "pop": ("pop from the relocation stack", None, "apply_r_larch_sop_imm_field()"),
        "add_sub": ("*P +/- (S + A)", None, None),
        "b26": ("S + A - P (or the module PLT entry: L - P)", lambda s, a, p: (s + a - p) & _U64,
                "signed 28 bits, 4-aligned"),
        "pcala": ("apply_r_larch_pcala(S + A, P)", None, None),
        "got_pc": ("apply_r_larch_pcala(G, P), G the module GOT entry of S + A", None, None),
        "pcrel32": ("S + A - P", lambda s, a, p: (s + a - p) & _U64, None),
        "pcrel64": ("S + A - P", lambda s, a, p: (s + a - p) & _U64, None),
    }[kind]
    return RelocType(number, name, width, formula, compute, check)


#: the types the latest release modelled handles (older ones: :func:`handlers`)
RELOCATION_TYPES: dict[int, RelocType] = {n: _row(n, k) for n, k in _V66.items()}

ARCH = Arch(
    name="loongarch64",
    machine=EM.LOONGARCH,
    byteorder="little",
    relocation_types=RELOCATION_TYPES,
    none_type=R_LARCH_NONE,
    write_relocate_add=write_relocate_add,
    refusal=refusal,
    dmesg_prefix=PR_FMT,
    refusal_pr_fmt=refusal_pr_fmt,
    refusal_errno=refusal_errno,
    refusal_logged=refusal_logged,
    write_tables=write_tables,
    frob_refusal=frob_refusal,
    frob_dmesg_prefix=NO_PR_FMT,  # module_frob_arch_sections() is module-sections.c's
    frob_sections=frob_sections,
)
