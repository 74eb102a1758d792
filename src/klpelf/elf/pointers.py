"""What the pointer at (section, offset) points to, read through the relocations.

In a relocatable object (a module) a pointer in data is zero bytes plus a relocation
that tells the loader what to write there: a symbol and an addend.  Decoding a
patch's structures (struct klp_patch -> klp_object -> klp_func, whose ``old_name``
is a pointer to a string and ``new_func`` a pointer to a function) therefore reads
the relocations that apply to the section, not its bytes.

Every relocation section whose sh_info names the section counts, the ordinary ones
and the ``.klp.rela.`` ones alike (a livepatch module has both for one target); an
SHF_RELA_LIVEPATCH section is read as the kernel reads it (Elf_Rela records, see
:meth:`~klpelf.elf.file.ElfFile.relocations_as_rela`).  For SHT_REL the addend is
implicit: the signed word at the target, in the file's word size and byte order.
Nothing here imports numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from klpelf.elf.constants import SHF, SHN, SHT, STT

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile, Section
    from klpelf.elf.relocs import RelocationTable
    from klpelf.elf.symbols import Symbol


#: the symbol types that name a place (not a section or a file)
_NAMED = (STT.FUNC, STT.OBJECT, STT.NOTYPE)


class Pointer(NamedTuple):
    """A pointer in a section, as a relocation makes it."""

    #: ELF_R_SYM of the relocation
    sym: int
    #: that symbol
    symbol: Symbol
    #: r_addend, or for SHT_REL the implicit addend read from the target
    addend: int
    #: ELF_R_TYPE of the relocation
    r_type: int
    #: the relocation section, and the entry's index in it
    relocation_section: Section
    entry: int


class Location(NamedTuple):
    """A place inside a section of the file: what a pointer points at."""

    section: Section
    offset: int


def relocations_by_target(elf: ElfFile) -> dict[int, list[Section]]:
    """The relocation sections (and klp ones) by the index of the section their sh_info
    names, in section-header order: one pass, for callers that ask of many sections."""
    out: dict[int, list[Section]] = {}
    for sec in elf.sections:
        target = sec.info_section
        if target is not None and (sec.sh_flags & SHF.RELA_LIVEPATCH or sec.is_relocation):
            out.setdefault(target.index, []).append(sec)
    return out


def _tables(
    elf: ElfFile, section: Section, by_target: dict[int, list[Section]] | None
) -> list[RelocationTable]:
    """The relocation tables that apply to ``section``, in section-header order."""
    out = []
    candidates = elf.sections if by_target is None else by_target.get(section.index, [])
    for sec in candidates:
        if sec.info_section is not section:
            continue
        if sec.sh_flags & SHF.RELA_LIVEPATCH:
            out.append(elf.relocations_as_rela(sec))
        elif sec.sh_type in (SHT.REL, SHT.RELA):
            out.append(elf.relocations(sec))
    return out


def _pointer(elf: ElfFile, tab: RelocationTable, entry: int) -> Pointer:
    rel = tab[entry]
    sec = tab.section
    if not sec.sh_link or sec.sh_link >= len(elf.sections):
        raise elf.error(f"sh_link {sec.sh_link} names no symbol table", sec)
    symtab = elf.symbol_table(elf.sections[sec.sh_link])
    if rel.sym >= len(symtab):
        raise elf.error(
            f"relocation {entry}: symbol index {rel.sym} is out of range "
            f"(the symbol table has {len(symtab)} entries)",
            sec,
        )
    addend = rel.r_addend if rel.r_addend is not None else _implicit_addend(elf, tab, entry)
    return Pointer(rel.sym, symtab[rel.sym], addend, rel.type, sec, entry)


def _implicit_addend(elf: ElfFile, tab: RelocationTable, entry: int) -> int:
    # SHT_REL: the addend is what the target holds where the relocation writes
    target = tab.target
    offset = tab[entry].r_offset
    width = 8 if elf.is64 else 4
    if target is None or target.sh_type == SHT.NOBITS or offset + width > len(target.data):
        raise elf.error(
            f"relocation {entry}: offset {offset:#x} leaves no {width}-byte addend in the target",
            tab.section,
        )
    raw = bytes(target.data[offset : offset + width])
    return int.from_bytes(raw, elf.byteorder, signed=True)  # type: ignore[arg-type]


def pointer_at(elf: ElfFile, section: Section, offset: int) -> Pointer | None:
    """The pointer at ``offset`` in ``section``: the first relocation entry (in
    section-header order, then entry order) whose r_offset is ``offset``; None if no
    relocation applies there.

    :raises ElfFormatError: the entry names a symbol past its symbol table, or an
        SHT_REL entry has no room for its implicit addend.
    """
    for tab in _tables(elf, section, None):
        offsets = tab.offsets()
        try:
            entry = offsets.index(offset)
        except ValueError:
            continue
        return _pointer(elf, tab, entry)
    return None


def pointers_in(
    elf: ElfFile, section: Section, by_target: dict[int, list[Section]] | None = None
) -> dict[int, Pointer]:
    """Every pointer in ``section``, by offset (for decoding arrays of structs); at an
    offset that several entries name, the one :func:`pointer_at` returns.
    ``by_target``: :func:`relocations_by_target` of ``elf``, when many sections are asked."""
    out: dict[int, Pointer] = {}
    for tab in _tables(elf, section, by_target):
        for entry, offset in enumerate(tab.offsets()):
            if offset not in out:
                out[offset] = _pointer(elf, tab, entry)
    return out


def location(elf: ElfFile, pointer: Pointer) -> Location | None:
    """Where ``pointer`` points inside the file: its symbol's section and st_value +
    addend (st_value - sh_addr + addend in a linked file); None for an undefined,
    absolute, common or livepatch symbol, a section without contents, or a place
    past the section's end."""
    sym = pointer.symbol
    shndx = sym.shndx
    if sym.st_shndx in (SHN.UNDEF, SHN.ABS, SHN.COMMON, SHN.LIVEPATCH):
        return None
    if not 0 < shndx < len(elf.sections):
        return None
    sec = elf.sections[shndx]
    if sec.sh_type == SHT.NOBITS:
        return None
    offset = sym.st_value + pointer.addend
    if not elf.is_relocatable:
        offset -= sec.sh_addr
    if not 0 <= offset < len(sec.data):
        return None
    return Location(sec, offset)


def string_at(elf: ElfFile, pointer: Pointer) -> bytes | None:
    """The NUL-terminated string ``pointer`` points at (without the NUL), when it
    points into a section of the file; None otherwise, or when no NUL ends it before
    the section does."""
    loc = location(elf, pointer)
    if loc is None:
        return None
    data = bytes(loc.section.data)
    end = data.find(b"\0", loc.offset)
    return data[loc.offset : end] if end >= 0 else None


def symbol_at(elf: ElfFile, pointer: Pointer) -> Symbol | None:
    """The symbol ``pointer`` points at: itself when it is a named symbol (function,
    object, or untyped) and the addend is 0, else the first such symbol defined
    exactly where the pointer points (a compiler points at a static function through
    its section symbol plus an offset); None when there is none."""
    sym = pointer.symbol
    if sym.type in _NAMED and pointer.addend == 0:
        return sym
    loc = location(elf, pointer)
    if loc is None:
        return None
    symtab = elf.symbol_table(elf.sections[pointer.relocation_section.sh_link])
    value = loc.offset if elf.is_relocatable else loc.offset + loc.section.sh_addr
    shndx = symtab.shndx_list()
    values = symtab.column("st_value")
    types = symtab.types()
    for i in range(len(symtab)):
        if shndx[i] == loc.section.index and values[i] == value and types[i] in _NAMED:
            return symtab[i]
    return None
