"""One build of a translation unit as ``klpelf diff`` sees it: functions, data, sections.

The object is compiled with -ffunction-sections -fdata-sections, so most functions
and data objects have a section each; a section that holds several (``.init.text``,
``.text`` of assembler code) is cut at the symbols.  An *entity* is what can be
compared and included on its own: a function (STT_FUNC), a data object
(STT_OBJECT), or an allocated section without either (string literals, jump tables:
*anonymous* data, which only the code that refers to it owns).  ``__pfx_``/``__cfi_``
symbols (the padding objtool and -fsanitize=kcfi put before a function) are part of
their function, not entities.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from klpelf.elf.constants import SHF, SHN, SHT, STT
from klpelf.elf.file import ElfFile, Section
from klpelf.elf.symbols import Symbol
from klpelf.errors import KlpFormatError
from klpelf.objdiff.special import is_special_section

__all__ = ["Entity", "Reloc", "Unit", "read_unit"]

#: prefixes of the symbols that belong to the function named after them
FUNCTION_PREFIXES = ("__pfx_", "__cfi_")

#: allocated sections that are neither code nor data of the unit: export tables (the
#: exports are facts about the target kernel, never copied), notes, .modinfo (its
#: import_ns lines are kept apart), discarded sections, and the compiler's unwind
#: tables (.eh_frame: the module loader does not read them; kernel/module/main.c
#: knows no .eh_frame, and arm64 reads only .init.eh_frame, for shadow call stacks)
_METADATA_PREFIXES = ("___ksymtab", "__ksymtab", "__kcrctab", ".export_symbol", ".note",
                      ".discard", ".modinfo", ".gnu.linkonce", "__versions",
                      ".eh_frame")  # fmt: skip

EntityKind = Literal["func", "data", "anon"]


class Entity(NamedTuple):
    """A function, a data object or an anonymous section of one build."""

    name: str
    kind: EntityKind
    #: the section index and the byte range [start, end) that belongs to the entity
    section: int
    start: int
    end: int
    #: the symbol (None for an anonymous section) and its fields
    symbol: int | None
    bind: int
    value: int
    size: int


class Reloc(NamedTuple):
    """A relocation of an allocated section, as Elf_Rela (r_addend 0 for SHT_REL)."""

    offset: int
    type: int
    sym: int
    addend: int


class Unit:
    """The entities, relocations and export facts of one object."""

    def __init__(self, elf: ElfFile) -> None:
        self.elf = elf
        self.path = elf.path or "-"
        tab = elf.symtab
        if tab is None:
            raise KlpFormatError("object has no symbol table (stripped?)", path=elf.path)
        self.symbols: list[Symbol] = list(tab)
        #: the source file (the first STT_FILE symbol), as the kernel's vmlinux ELF names it
        self.file_name: str | None = next(
            (s.name for s in self.symbols if s.type == STT.FILE and s.name), None
        )
        #: section index -> its relocations, sorted by offset
        self.relocs: dict[int, list[Reloc]] = {}
        for rs in elf.relocation_sections:
            target = rs.info_section
            if target is None or not target.is_alloc or rs.sh_link != tab.section.index:
                continue
            rt = elf.relocations(rs)
            adds = rt.addends() or [0] * len(rt)
            got = self.relocs.setdefault(target.index, [])
            got.extend(Reloc(o, t, s, a) for o, t, s, a in
                       zip(rt.offsets(), rt.types(), rt.syms(), adds, strict=True))  # fmt: skip
        for lst in self.relocs.values():
            lst.sort()
        self.entities: list[Entity] = []
        #: section index -> its entities, by start
        self.by_section: dict[int, list[Entity]] = {}
        self._read_entities()
        #: symbol index -> the entity it names (functions and data objects)
        self.entity_of_symbol = {e.symbol: e for e in self.entities if e.symbol is not None}
        #: names the unit exports (EXPORT_SYMBOL*: ``__ksymtab_<name>`` symbols, or the
        #: ``___ksymtab+<name>`` / ``___ksymtab_gpl+<name>`` sections of 5.x-6.4)
        self.exported: set[str] = set()
        for s in self.symbols:
            if s.name.startswith("__ksymtab_") and s.shndx != SHN.UNDEF:
                self.exported.add(s.name.removeprefix("__ksymtab_"))
        for sec in elf.sections:
            if sec.name.startswith("___ksymtab") and "+" in sec.name:
                self.exported.add(sec.name.partition("+")[2])

    def section(self, index: int) -> Section:
        return self.elf.section(index)

    def entity_at(self, section: int, offset: int) -> Entity | None:
        """The entity whose range holds ``offset`` of section ``section``: the one that
        starts there on a boundary; for an offset outside every range (a reference
        just before or after an object, as ``addl $1, x(%rip)`` makes with its
        addend), the nearest entity."""
        es = self.by_section.get(section, ())
        for e in es:
            if e.start <= offset < e.end or offset == e.end == e.start:
                return e
        if not es:
            return None
        return min(es, key=lambda e: min(abs(offset - e.start), abs(offset - e.end)))

    def target(self, sym: int, addend: int, bias: int = 0) -> tuple[Entity | None, int]:
        """The entity a relocation against symbol ``sym`` with ``addend`` points into, and
        the offset in its section (``bias``: the distance from the place to the end of
        a PC-relative instruction, added to find the entity; not to the offset)."""
        s = self.symbols[sym]
        if s.shndx in (SHN.UNDEF, SHN.ABS, SHN.COMMON) or s.shndx >= len(self.elf.sections):
            return None, 0
        off = s.st_value + addend
        if s.type != STT.SECTION and sym in self.entity_of_symbol:
            return self.entity_of_symbol[sym], off
        return self.entity_at(s.shndx, off + bias), off

    def relocs_in(self, section: int, start: int, end: int) -> list[Reloc]:
        return [r for r in self.relocs.get(section, ()) if start <= r.offset < end]

    def _read_entities(self) -> None:
        elf = self.elf
        per_section: dict[int, list[Symbol]] = {}
        for s in self.symbols:
            if s.type not in (STT.FUNC, STT.OBJECT) or not s.name:
                continue
            if s.shndx in (SHN.UNDEF, SHN.ABS, SHN.COMMON) or s.shndx >= len(elf.sections):
                continue
            if s.name.startswith(FUNCTION_PREFIXES):
                continue
            per_section.setdefault(s.shndx, []).append(s)
        for sec in elf.sections:
            if not is_unit_section(sec):
                continue
            syms = sorted(per_section.get(sec.index, ()), key=lambda s: (s.st_value, s.index))
            size = sec.sh_size
            if not syms:
                self._add(Entity(sec.name, "anon", sec.index, 0, size, None, 0, 0, size))
                continue
            for n, s in enumerate(syms):
                kind: EntityKind = "func" if s.type == STT.FUNC else "data"
                if len(syms) == 1:
                    start, end = 0, size  # the whole section: padding and __pfx_ too
                else:
                    start = s.st_value if n else 0
                    nxt = syms[n + 1].st_value if n + 1 < len(syms) else size
                    end = max(s.st_value + s.st_size, nxt) if n + 1 == len(syms) else nxt
                    end = max(end, start)
                self._add(Entity(s.name, kind, sec.index, start, end, s.index, s.bind,
                                 s.st_value, s.st_size))  # fmt: skip

    def _add(self, e: Entity) -> None:
        self.entities.append(e)
        self.by_section.setdefault(e.section, []).append(e)


def is_unit_section(sec: Section) -> bool:
    """An allocated section of code or data of the unit (not a special section, not
    metadata): its contents are entities."""
    if not sec.is_alloc or sec.sh_type not in (SHT.PROGBITS, SHT.NOBITS):
        return False
    if sec.name.startswith(_METADATA_PREFIXES) or is_special_section(sec.name):
        return False
    return not (sec.sh_flags & SHF.EXCLUDE)


def is_init_section(name: str) -> bool:
    """Code and data the kernel frees after init (``__init``, ``__initdata``, ...)."""
    return name.startswith((".init.", ".exit.")) or name in (".init", ".exit")


def read_unit(elf: ElfFile) -> Unit:
    """The :class:`Unit` of a relocatable object.

    :raises KlpFormatError: the object is not ET_REL or has no symbol table.
    """
    if not elf.is_relocatable:
        raise KlpFormatError("not a relocatable object (ET_REL): klpelf diff compares the "
                             ".o files of one translation unit", path=elf.path)  # fmt: skip
    return Unit(elf)
