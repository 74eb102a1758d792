"""s390x: the relocations of ``arch/s390/kernel/module.c`` in the releases klpelf models.

``apply_relocate_add()`` walks the Elf64_Rela entries of one section in order and
calls ``apply_rela()`` for each (v5.8+ through ``__apply_relocate_add()`` with memcpy
while the module is unformed, ``s390_kernel_write`` for late klp relocations; the
bytes are the same).  ``apply_rela()`` computes ``val`` per type and hands it to
``apply_rela_bits(loc, val, sign, bits, shift)``, which refuses a value whose low
``shift`` bits are set or that does not fit ``bits`` bits (signed or unsigned), then
stores it big-endian; the 12- and 20-bit fields are merged into the instruction.
There is no zero check of the place (unlike x86_64).  A refused value stops the walk
with "relocation error for symbol ..."; an unknown type with "unknown relocation";
COPY, GLOB_DAT, JMP_SLOT and RELATIVE with -ENOEXEC and no message.

GOT and PLT: ``module_frob_arch_sections()`` counts, over every SHT_RELA section of
the module (klp ones included), one GOT slot (8 bytes) per symbol that a GOT type
names and one PLT entry per symbol that a PLT type names, in section then entry
order.  It runs before ``layout_sections()``, when the size of the module's core
text is still 0: the GOT sits at offset 0 of the core text (``core_layout.base``,
``mem[MOD_TEXT].base`` since v6.4, commit ac3b43283923), the PLT right after it (plus
one more entry, the expoline thunk, when CONFIG_EXPOLINE is on and not disabled),
and the module's sections follow.  A PLT entry is ``basr 1,0; lg 1,..(1); br 1``
(or a jump to the thunk) and the 8-byte target: 20 bytes before commit f3b7e73b2c66
("s390/module: fix loading modules with a lot of relocations", v5.17, in 5.10.96),
22 bytes since.  PLT16DBL and PLT32DBL go to the symbol itself when it is in range,
through the PLT entry when not; PLT32 and PLT64 always go through the PLT entry.
Versions read: the 2.6-era file, the v6.1-era file (22-byte entries, core_layout)
and the v6.4 module_memory diff.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from klpelf.arch import (
    NO_PR_FMT,
    Arch,
    ModuleLayout,
    RelocType,
    StopReason,
    WriteFacts,
    silent_refusal,
)
from klpelf.elf.constants import EM, SHF, SHT
from klpelf.release import ENOEXEC

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile
    from klpelf.elf.relocs import RelocationTable
    from klpelf.release import KernelRelease

_U64 = (1 << 64) - 1

# the kind of value a type computes, as apply_rela() groups them
_DIRECT, _PC, _GOT, _GOTENT, _PLT, _PLTOFF, _GOTOFF, _GOTPC, _SHARED = range(9)


@dataclass(frozen=True)
class _Field:
    """apply_rela_bits()'s (sign, bits, shift) of a type."""

    sign: bool
    bits: int
    shift: int

    def check(self, val: int) -> bool:
        """Whether apply_rela_bits() accepts ``val`` (a u64)."""
        if val & ((1 << self.shift) - 1):
            return False
        if self.sign:
            v = (val - (1 << 64) if val >> 63 else val) >> self.shift
            return -(1 << (self.bits - 1)) <= v < 1 << (self.bits - 1)
        return val >> self.shift < 1 << self.bits

    def width(self) -> int:
        """Bytes apply_rela_bits() writes."""
        return {8: 1, 12: 2, 16: 2, 20: 4, 32: 4, 64: 8}[self.bits]

    def encode(self, old: bytes, val: int) -> bytes:
        """The place after apply_rela_bits() stored ``val`` (big-endian)."""
        val &= _U64
        # (long)val >> shift for the signed fields: an arithmetic shift
        v = (val - (1 << 64) if self.sign and val >> 63 else val) >> self.shift
        n = self.width()
        if self.bits == 12:
            # (val & 0xfff) | (*(u16 *)loc & 0xf000)
            word = (v & 0xFFF) | (int.from_bytes(old, "big") & 0xF000)
        elif self.bits == 20:
            # DL in bits 16..27, DH in bits 8..15 of the u32 at loc
            word = ((v & 0xFFF) << 16) | ((v & 0xFF000) >> 4)
            word |= int.from_bytes(old, "big") & 0xF00000FF
        else:
            word = v & ((1 << (8 * n)) - 1)
        return word.to_bytes(n, "big")


def _field(sign: int, bits: int, shift: int) -> _Field:
    return _Field(bool(sign), bits, shift)


#: number -> (name, kind, field, formula); the types apply_rela() has a case for
_TYPES: dict[int, tuple[str, int, _Field | None, str]] = {
    0: ("R_390_NONE", _DIRECT, None, "none"),
    1: ("R_390_8", _DIRECT, _field(0, 8, 0), "S + A"),
    2: ("R_390_12", _DIRECT, _field(0, 12, 0), "S + A"),
    3: ("R_390_16", _DIRECT, _field(0, 16, 0), "S + A"),
    4: ("R_390_32", _DIRECT, _field(0, 32, 0), "S + A"),
    5: ("R_390_PC32", _PC, _field(1, 32, 0), "S + A - P"),
    6: ("R_390_GOT12", _GOT, _field(0, 12, 0), "O + A"),
    7: ("R_390_GOT32", _GOT, _field(0, 32, 0), "O + A"),
    8: ("R_390_PLT32", _PLT, _field(0, 32, 0), "L + A - P"),
    9: ("R_390_COPY", _SHARED, None, "refused"),
    10: ("R_390_GLOB_DAT", _SHARED, None, "refused"),
    11: ("R_390_JMP_SLOT", _SHARED, None, "refused"),
    12: ("R_390_RELATIVE", _SHARED, None, "refused"),
    13: ("R_390_GOTOFF32", _GOTOFF, _field(0, 32, 0), "S + A - GOT"),
    14: ("R_390_GOTPC", _GOTPC, _field(1, 32, 0), "GOT + A - P"),
    15: ("R_390_GOT16", _GOT, _field(0, 16, 0), "O + A"),
    16: ("R_390_PC16", _PC, _field(1, 16, 0), "S + A - P"),
    17: ("R_390_PC16DBL", _PC, _field(1, 16, 1), "(S + A - P) >> 1"),
    18: ("R_390_PLT16DBL", _PLT, _field(1, 16, 1), "(L + A - P) >> 1"),
    19: ("R_390_PC32DBL", _PC, _field(1, 32, 1), "(S + A - P) >> 1"),
    20: ("R_390_PLT32DBL", _PLT, _field(1, 32, 1), "(L + A - P) >> 1"),
    21: ("R_390_GOTPCDBL", _GOTPC, _field(1, 32, 1), "(GOT + A - P) >> 1"),
    22: ("R_390_64", _DIRECT, _field(0, 64, 0), "S + A"),
    23: ("R_390_PC64", _PC, _field(1, 64, 0), "S + A - P"),
    24: ("R_390_GOT64", _GOT, _field(0, 64, 0), "O + A"),
    25: ("R_390_PLT64", _PLT, _field(0, 64, 0), "L + A - P"),
    26: ("R_390_GOTENT", _GOTENT, _field(1, 32, 1), "(GOT + O + A - P) >> 1"),
    27: ("R_390_GOTOFF16", _GOTOFF, _field(0, 16, 0), "S + A - GOT"),
    28: ("R_390_GOTOFF64", _GOTOFF, _field(0, 64, 0), "S + A - GOT"),
    29: ("R_390_GOTPLT12", _GOT, _field(0, 12, 0), "O + A"),
    30: ("R_390_GOTPLT16", _GOT, _field(0, 16, 0), "O + A"),
    31: ("R_390_GOTPLT32", _GOT, _field(0, 32, 0), "O + A"),
    32: ("R_390_GOTPLT64", _GOT, _field(0, 64, 0), "O + A"),
    33: ("R_390_GOTPLTENT", _GOTENT, _field(1, 32, 1), "(GOT + O + A - P) >> 1"),
    34: ("R_390_PLTOFF16", _PLTOFF, _field(0, 16, 0), "L - GOT + A"),
    35: ("R_390_PLTOFF32", _PLTOFF, _field(0, 32, 0), "L - GOT + A"),
    36: ("R_390_PLTOFF64", _PLTOFF, _field(0, 64, 0), "L - GOT + A"),
    57: ("R_390_20", _DIRECT, _field(1, 20, 0), "S + A"),
    58: ("R_390_GOT20", _GOT, _field(1, 20, 0), "O + A"),
    59: ("R_390_GOTPLT20", _GOT, _field(1, 20, 0), "O + A"),
}

R_390_NONE = 0
_GOT_KINDS = (_GOT, _GOTENT)
_PLT_KINDS = (_PLT, _PLTOFF)


def _s_a(s: int, a: int, p: int) -> int:
    return (s + a) & _U64


def _s_a_p(s: int, a: int, p: int) -> int:
    return (s + a - p) & _U64


def _row(number: int, name: str, kind: int, f: _Field | None, formula: str) -> RelocType:
    if f is None:
        return RelocType(number, name, 0, formula)
    check = f"apply_rela_bits(sign={int(f.sign)}, bits={f.bits}, shift={f.shift})"
    # O (the symbol's GOT slot offset), L (its PLT entry) and GOT need the module's
    # layout: no function of (S, A, P) alone; the twin computes them
    compute = {_DIRECT: _s_a, _PC: _s_a_p}.get(kind)
    return RelocType(number, name, f.width(), formula, compute, check, f.check, f.encode)


#: the types apply_rela() handles; any other is "unknown relocation"
RELOCATION_TYPES: dict[int, RelocType] = {n: _row(n, *row) for n, row in _TYPES.items()}


def plt_entry_size(release: KernelRelease) -> int:
    """PLT_ENTRY_SIZE: 22 since f3b7e73b2c66 (v5.17, backported to 5.10.96), 20 before."""
    return 22 if release.at_least(5, 17) or (release.major, release.minor) == (5, 10) else 20


@dataclass
class ModuleTables:
    """What ``module_frob_arch_sections()`` reserves for one module and what
    ``apply_rela()`` has filled in so far (kept in ``layout.arch_state["s390x"]``).

    ``core_base``: the address of the module's core text, where the GOT starts (None:
    not known; the GOT and PLT types then give unknown values).  ``expoline``: the
    kernel adds the thunk entry after the PLT (CONFIG_EXPOLINE and not nospec=off).
    """

    entry_size: int
    got_offset: dict[int, int] = field(default_factory=dict)
    plt_offset: dict[int, int] = field(default_factory=dict)
    got_size: int = 0
    plt_size: int = 0
    core_base: int | None = None
    expoline: bool = True
    #: symbol index -> the value written into its GOT slot / PLT entry (first use)
    got_values: dict[int, int] = field(default_factory=dict)
    plt_values: dict[int, int] = field(default_factory=dict)

    @property
    def plt_start(self) -> int:
        """Offset of the PLT from the core base (the GOT is at 0)."""
        return self.got_size

    @property
    def area_size(self) -> int:
        """Bytes of GOT and PLT before the module's first core section."""
        thunk = self.entry_size if self.plt_size and self.expoline else 0
        return self.got_size + self.plt_size + thunk


def module_tables(elf: ElfFile, release: KernelRelease, *, expoline: bool = True) -> ModuleTables:
    """The GOT and PLT of ``module_frob_arch_sections()``: every SHT_RELA section, in
    section order, entries in order; first use of a symbol gets the next slot."""
    tables = ModuleTables(plt_entry_size(release), expoline=expoline)
    for section in elf.sections_of_type(SHT.RELA):
        relocs = elf.relocations_as_rela(section)
        for sym, r_type in zip(relocs.syms(), relocs.types(), strict=True):
            kind = _TYPES.get(r_type, ("", -1))[1]
            if kind in _GOT_KINDS and sym not in tables.got_offset:
                tables.got_offset[sym] = tables.got_size
                tables.got_size += 8
            elif kind in _PLT_KINDS and sym not in tables.plt_offset:
                tables.plt_offset[sym] = tables.plt_size
                tables.plt_size += tables.entry_size
    return tables


def core_base_of(layout: ModuleLayout, tables: ModuleTables) -> int | None:
    """The core text's address as the loader chose it, from where it placed the first
    core text section: ``layout_sections()`` puts the lowest-index SHF_ALLOC |
    SHF_EXECINSTR section not named .init* first, at ALIGN(GOT + PLT, sh_addralign)."""
    for section in layout.elf:
        flags = section.sh_flags
        if not (flags & SHF.ALLOC and flags & SHF.EXECINSTR) or section.name.startswith(".init"):
            continue
        addr = layout.addresses.get(section.index)
        if addr is None:
            return None
        align = section.sh_addralign or 1
        return addr - (tables.area_size + align - 1) // align * align
    return None


def _tables(layout: ModuleLayout | None, release: KernelRelease) -> ModuleTables | None:
    if layout is None:
        return None
    tables = layout.arch_state.get("s390x")
    if not isinstance(tables, ModuleTables):
        tables = module_tables(layout.elf, release)
        tables.core_base = core_base_of(layout, tables)
        layout.arch_state["s390x"] = tables
    return tables


def _value(kind: int, r_type: int, sym: int, s: int, a: int, p: int,  # noqa: PLR0917
           t: ModuleTables | None) -> int | None:  # fmt: skip
    """apply_rela()'s ``val`` for one entry, or None when it needs what is unknown."""
    if kind == _DIRECT:
        return (s + a) & _U64
    if kind == _PC:
        return (s + a - p) & _U64
    if t is None or t.core_base is None:
        return None
    got = t.core_base  # the GOT is at offset 0 of the core text
    if kind in _GOT_KINDS:
        t.got_values.setdefault(sym, s)  # the slot gets S on first use
        val = t.got_offset[sym] + a
        return (val + got - p) & _U64 if kind == _GOTENT else val & _U64
    if kind in _PLT_KINDS:
        t.plt_values.setdefault(sym, s)
        entry = t.plt_start + t.plt_offset[sym]
        if kind == _PLTOFF:
            return (entry + a) & _U64  # plt_offset - got_offset + info->plt_offset
        d = (s - p) & _U64
        near = (r_type == 18 and (d + 0xFFFF) & _U64 < 0x1FFFFE) or (
            r_type == 20 and (d + 0xFFFF_FFFF) & _U64 < 0x1_FFFF_FFFE
        )
        target = s if near else got + entry
        return (target + a - p) & _U64
    if kind == _GOTOFF:
        return (s + a - got) & _U64
    return (got + a - p) & _U64  # _GOTPC


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
    """The twin of ``apply_relocate_add()`` (arch/s390/kernel/module.c) for one
    section: see :class:`klpelf.arch.WriteRelocateAdd`.  The GOT and PLT types need
    ``layout`` (their slots are counted over the whole module, once per layout, in
    ``layout.arch_state["s390x"]``, see :class:`ModuleTables`).

    A place past the end of ``target`` is not written (the kernel writes whatever
    memory follows the section).
    """
    offsets, types, syms = relocs.offsets(), relocs.types(), relocs.syms()
    addends = relocs.addends() or [0] * len(types)
    known = symbol_value is not None and address is not None
    tables = _tables(layout, release) if known else None
    widths: list[int] = []
    values: list[int | None] = []
    overflow: list[bool | None] = []
    stop: int | None = None
    reason: StopReason | None = None
    n = len(target)
    for i, r_type in enumerate(types):
        row = _TYPES.get(r_type)
        if row is None or row[1] == _SHARED:
            widths.append(0)
            values.append(None)
            overflow.append(None)
            stop, reason = i, "unknown-type"
            break
        _, kind, f, _ = row
        if f is None:  # R_390_NONE
            widths.append(0)
            values.append(None)
            overflow.append(False)
            continue
        off, width = offsets[i], f.width()
        widths.append(width)
        val: int | None = None
        if known:
            assert symbol_value is not None and address is not None
            s = symbol_value(syms[i])
            if s is not None:
                val = _value(kind, r_type, syms[i], s, addends[i], address + off, tables)
        values.append(val)
        bad = None if val is None else not f.check(val)
        overflow.append(bad)
        if bad:
            stop, reason = i, "overflow"
            break
        if off + width > n:
            continue
        # written whatever ``keep``: a 12- or 20-bit field merges with what is there
        old = bytes(target[off : off + width])
        target[off : off + width] = f.encode(old, val) if val is not None else _mark(f, old)
    nonzero = [False] * len(widths)
    if not known:
        return WriteFacts(offsets[: len(widths)], types[: len(widths)], widths, nonzero,
                          stop=stop, reason=reason)  # fmt: skip
    return WriteFacts(offsets[: len(widths)], types[: len(widths)], widths, nonzero,
                      values=values, overflow=overflow, stop=stop, reason=reason)  # fmt: skip


def _mark(f: _Field, old: bytes) -> bytes:
    """The place with every bit of the field set: written, value unknown."""
    return f.encode(old, _U64 if f.sign else (1 << (f.bits + f.shift)) - 1)


# --- the kernel's messages --------------------------------------------------------------


def unknown_message(module: str, r_type: int) -> str:
    """What apply_rela() prints for a type it has no case for."""
    return f"module {module}: unknown relocation: {r_type}"


def error_message(module: str, symbol: str, r_type: int, value: int | None) -> str:
    """What apply_rela() prints when apply_rela_bits() refuses ``value``."""
    val = "<val>" if value is None else f"0x{value:x}"
    return f"module {module}: relocation error for symbol {symbol} (r_type {r_type}, value {val})"


def refusal(release: KernelRelease, module: str, sec: int, facts: WriteFacts) -> tuple[str, str]:
    """The rule and the kernel's message for the entry where ``facts`` stopped; the
    symbol's name is shown as <symbol> (the facts hold no names)."""
    assert facts.stop is not None
    idx = facts.stop
    r_type = facts.types[idx]
    if facts.reason == "overflow":
        value = facts.values[idx] if facts.values is not None else None
        return "s390-relocation-error", error_message(module, "<symbol>", r_type, value)
    row = _TYPES.get(r_type)
    if row is not None:  # COPY, GLOB_DAT, JMP_SLOT, RELATIVE: -ENOEXEC, nothing printed
        return "s390-unknown-relocation", silent_refusal(
            f"{row[0]} ({r_type})", "apply_rela()", ("ENOEXEC", ENOEXEC),
            "only needed for modules linked with -shared")  # fmt: skip
    return "s390-unknown-relocation", unknown_message(module, r_type)


def refusal_logged(facts: WriteFacts) -> bool:
    """apply_rela() prints every stop but COPY, GLOB_DAT, JMP_SLOT and RELATIVE, which
    return -ENOEXEC before the printk()s (read in 5.10, 6.1, 6.12 and 7.2)."""
    assert facts.stop is not None
    row = _TYPES.get(facts.types[facts.stop])
    return not (facts.reason == "unknown-type" and row is not None and row[1] == _SHARED)


ARCH = Arch(
    name="s390x",
    machine=EM.S390,
    byteorder="big",
    relocation_types=RELOCATION_TYPES,
    none_type=R_390_NONE,
    write_relocate_add=write_relocate_add,
    refusal=refusal,
    nonzero_message=None,
    # module.c prints with printk(KERN_ERR "module %s: ..."), which no pr_fmt touches
    # (and it defines none): the line is the message (read in 5.10, 6.1, 6.12, 7.2)
    dmesg_prefix=NO_PR_FMT,
    refusal_logged=refusal_logged,
)
