"""The ELF object model: header, sections, and typed views of their contents.

An :class:`ElfFile` is created by :func:`klpelf.elf.reader.read_elf` and written
by :func:`klpelf.elf.writer.write_elf`.  Section contents stay zero-copy views of
the input until an edit replaces them.  Symbol tables, relocation sections,
string tables and ``.modinfo`` get typed views (built on first use and cached), and
every edit goes through those views or through the methods here, which keep the
cross references (sh_link, sh_info, symbol indices) consistent.

A section's bytes have one source of truth: its contents, or the view that last
edited them (serialised when the bytes are next read).  Replacing the contents with
:meth:`Section.set_data` drops every view decoded from the old bytes and the views
that depend on them (:meth:`ElfFile.drop_views`), so the next read decodes the new
bytes; no cache needs to be cleared by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from klpelf._record import Record
from klpelf.elf.constants import EM, ET, SHF, SHT
from klpelf.elf.layout import EHDR_FIELDS, SHDR_FIELDS, Layout
from klpelf.elf.strtab import StringTable
from klpelf.errors import ElfEditError, ElfFormatError

if TYPE_CHECKING:
    from klpelf.elf.modinfo import Modinfo
    from klpelf.elf.relocs import RelocationTable
    from klpelf.elf.symbols import SymbolTable
    from klpelf.io import Buffer

#: The kernel's MODULE_SIG_STRING (include/linux/module_signature.h): the last
#: bytes of a module with an appended signature.
MODULE_SIG_STRING = b"~Module signature appended~\n"


class ElfHeader(Record):
    """Elf32_Ehdr / Elf64_Ehdr after e_ident, field for field."""

    _fields = EHDR_FIELDS
    __slots__ = _fields

    e_type: int
    e_machine: int
    e_version: int
    e_entry: int
    e_phoff: int
    e_shoff: int
    e_flags: int
    e_ehsize: int
    e_phentsize: int
    e_phnum: int
    e_shentsize: int
    e_shnum: int
    e_shstrndx: int

    # the fields in file order, as struct unpacks them: ElfHeader(*ehdr.unpack(...))
    def __init__(self, e_type: int, e_machine: int, e_version: int,  # noqa: PLR0917
                 e_entry: int, e_phoff: int, e_shoff: int, e_flags: int, e_ehsize: int,
                 e_phentsize: int, e_phnum: int, e_shentsize: int, e_shnum: int,
                 e_shstrndx: int) -> None:  # fmt: skip
        self.e_type, self.e_machine, self.e_version = e_type, e_machine, e_version
        self.e_entry, self.e_phoff, self.e_shoff = e_entry, e_phoff, e_shoff
        self.e_flags, self.e_ehsize, self.e_phentsize = e_flags, e_ehsize, e_phentsize
        self.e_phnum, self.e_shentsize = e_phnum, e_shentsize
        self.e_shnum, self.e_shstrndx = e_shnum, e_shstrndx


class Section(Record):
    """One section header and its contents.

    ``sh_*`` are the raw header fields.  ``orig_offset`` and ``orig_size`` remember
    where the contents were in the input, for the writer's layout; a section added
    by an edit has ``orig_offset`` None.
    """

    _fields = ("index", "name", *SHDR_FIELDS, "orig_offset", "orig_size")
    __slots__ = ("elf", *_fields, "_data", "dirty", "_pending")

    elf: ElfFile
    index: int
    name: str
    sh_name: int
    sh_type: int
    sh_flags: int
    sh_addr: int
    sh_offset: int
    sh_size: int
    sh_link: int
    sh_info: int
    sh_addralign: int
    sh_entsize: int
    orig_offset: int | None
    orig_size: int
    _data: bytes | bytearray | memoryview
    #: the contents changed since reading (the writer re-serialises them)
    dirty: bool
    #: a view's serialiser, run when the bytes are next needed (see set_pending)
    _pending: Callable[[], bytes | bytearray | memoryview] | None

    # the header fields in file order, as struct unpacks them: Section(elf, i, name, *fields)
    def __init__(self, elf: ElfFile, index: int, name: str,  # noqa: PLR0917
                 sh_name: int, sh_type: int, sh_flags: int, sh_addr: int, sh_offset: int,
                 sh_size: int, sh_link: int, sh_info: int, sh_addralign: int, sh_entsize: int,
                 orig_offset: int | None = None, orig_size: int = 0) -> None:  # fmt: skip
        self.elf, self.index, self.name = elf, index, name
        self.sh_name, self.sh_type, self.sh_flags = sh_name, sh_type, sh_flags
        self.sh_addr, self.sh_offset, self.sh_size = sh_addr, sh_offset, sh_size
        self.sh_link, self.sh_info = sh_link, sh_info
        self.sh_addralign, self.sh_entsize = sh_addralign, sh_entsize
        self.orig_offset, self.orig_size = orig_offset, orig_size
        self._data, self.dirty, self._pending = b"", False, None

    @property
    def data(self) -> bytes | bytearray | memoryview:
        """The section contents (empty for SHT_NOBITS)."""
        if self._pending is not None:
            make, self._pending = self._pending, None
            self._data = make()
        return self._data

    def set_data(self, data: bytes | bytearray | memoryview, view: object = None) -> None:
        """Replace the contents; sh_size follows (except for SHT_NOBITS).

        Every view decoded from the old bytes is dropped, and the views that depend
        on them (:meth:`ElfFile.drop_views`): the next ``elf.relocations(sec)``,
        ``elf.symtab`` ... decode the new bytes.  ``view`` is for the views' own
        edits: the view that made the change stays, as the truth.
        """
        self._pending = None
        self._data = data
        if self.sh_type != SHT.NOBITS:
            self.sh_size = len(data)
        self.dirty = True
        self.elf.modified = True
        self.elf.drop_views(self, keep=view)

    def set_pending(
        self, size: int, make: Callable[[], bytes | bytearray | memoryview], view: object
    ) -> None:
        """``view`` changed the contents: sh_size is ``size`` now, the bytes come from
        ``make()`` when first read.  Many edits in a row then cost one serialisation.
        ``view`` stays the truth; the other views of these bytes are dropped."""
        self._pending = make
        if self.sh_type != SHT.NOBITS:
            self.sh_size = size
        self.dirty = True
        self.elf.modified = True
        self.elf.drop_views(self, keep=view)

    @property
    def info_section(self) -> Section | None:
        """The section that sh_info names, as a relocation section's target: None when
        sh_info is 0 or past the last section.  (The one place this rule is written.)"""
        i = self.sh_info
        sections = self.elf.sections
        return sections[i] if 0 < i < len(sections) else None

    @property
    def file_size(self) -> int:
        """Bytes the section occupies in the file."""
        return 0 if self.sh_type in (SHT.NOBITS, SHT.NULL) else self.sh_size

    @property
    def flags(self) -> SHF:
        return SHF(self.sh_flags)

    @property
    def is_alloc(self) -> bool:
        return bool(self.sh_flags & SHF.ALLOC)

    @property
    def is_relocation(self) -> bool:
        return self.sh_type in (SHT.REL, SHT.RELA)

    def __str__(self) -> str:
        return f"[{self.index}] {self.name}"


class ElfFile:
    """An ELF object: use :func:`klpelf.elf.reader.read_elf` or :func:`open_elf` to get one."""

    def __init__(
        self,
        *,
        path: str | None,
        buf: Buffer,
        layout: Layout,
        ident: bytes,
        header: ElfHeader,
        extended_numbering: bool,
        phdr_range: tuple[int, int] | None,
    ) -> None:
        self.path = path
        self.buf = buf
        self.layout = layout
        self.ident = ident
        self.header = header
        #: e_shnum/e_shstrndx were stored in section 0 (needed past 0xff00 sections)
        self.extended_numbering = extended_numbering
        #: (offset, size) of the program header table, kept as it is
        self.phdr_range = phdr_range
        self.sections: list[Section] = []
        #: bytes after the last ELF structure, such as an appended module signature
        self.trailer: bytes | memoryview = b""
        self.trailer_offset = 0
        #: where the input had its section header table, how many entries, and the raw
        #: e_shnum/e_shstrndx fields (0 / SHN_XINDEX under extended numbering)
        self.orig_shoff = header.e_shoff
        self.orig_shnum = 0
        self.raw_shnum = header.e_shnum
        self.raw_shstrndx = header.e_shstrndx
        self.modified = False
        # the views, by section index (see drop_views)
        self._shstrtab: StringTable | None = None
        self._strtabs: dict[int, StringTable] = {}
        self._symtabs: dict[int, SymbolTable] = {}
        self._relocs: dict[int, RelocationTable] = {}
        self._rela_views: dict[int, RelocationTable] = {}
        self._modinfo: Modinfo | None = None
        self._record_count: int | None = None
        # the first SHT_SYMTAB, found once per section count (asked per klp section:
        # a search each time was quadratic in the number of sections)
        self._symtab_at: tuple[int, Section | None] | None = None

    # --- identity -------------------------------------------------------------------

    @property
    def machine(self) -> int:
        return self.header.e_machine

    @property
    def machine_name(self) -> str:
        try:
            return EM(self.machine).name.lower()
        except ValueError:
            return f"machine {self.machine}"

    @property
    def is64(self) -> bool:
        return self.layout.is64

    @property
    def byteorder(self) -> str:
        return "little" if self.layout.byteorder == "<" else "big"

    @property
    def is_relocatable(self) -> bool:
        return self.header.e_type == ET.REL

    @property
    def has_module_signature(self) -> bool:
        return bytes(self.trailer[-len(MODULE_SIG_STRING) :]) == MODULE_SIG_STRING

    def strip_signature(self) -> None:
        """Drop an appended module signature (an edit invalidates it anyway)."""
        if self.trailer:
            self.trailer = b""
            self.modified = True

    def error(self, message: str, section: Section | None = None) -> ElfFormatError:
        """An ElfFormatError about this file (and section), for the views to raise."""
        where = f"section {section}: " if section is not None else ""
        return ElfFormatError(where + message, path=self.path)

    # --- sections -------------------------------------------------------------------

    def __iter__(self) -> Iterator[Section]:
        return iter(self.sections)

    def section(self, index: int) -> Section:
        if not 0 <= index < len(self.sections):
            raise self.error(f"section index {index} out of range (0..{len(self.sections) - 1})")
        return self.sections[index]

    def section_by_name(self, name: str) -> Section | None:
        """The first section called ``name``, or None."""
        for sec in self.sections:
            if sec.name == name:
                return sec
        return None

    def sections_of_type(self, sh_type: int) -> list[Section]:
        return [s for s in self.sections if s.sh_type == sh_type]

    @property
    def shstrtab(self) -> StringTable:
        if self._shstrtab is None:
            self._shstrtab = self.strtab(self.section(self.header.e_shstrndx))
        return self._shstrtab

    def strtab(self, section: Section) -> StringTable:
        """The string-table view of ``section`` (checked to be SHT_STRTAB)."""
        tab = self._strtabs.get(section.index)
        if tab is None:
            if section.sh_type != SHT.STRTAB:
                raise self.error("is not a string table (SHT_STRTAB)", section)
            tab = self._strtabs[section.index] = StringTable(section)
        return tab

    # --- symbols and relocations ----------------------------------------------------

    @property
    def symtab(self) -> SymbolTable | None:
        """The SHT_SYMTAB of the object (the first, if there are several), or None."""
        if self._symtab_at is None or self._symtab_at[0] != len(self.sections):
            tabs = self.sections_of_type(SHT.SYMTAB)
            self._symtab_at = (len(self.sections), tabs[0] if tabs else None)
        sec = self._symtab_at[1]
        return self.symbol_table(sec) if sec is not None else None

    def symbol_table(self, section: Section) -> SymbolTable:
        tab = self._symtabs.get(section.index)
        if tab is None:
            from klpelf.elf.symbols import SymbolTable

            tab = self._symtabs[section.index] = SymbolTable(self, section)
        return tab

    @property
    def record_count(self) -> int:
        """Symbol and relocation records in the file as read (from the section headers).

        It decides whether the tables are handled with numpy (see
        :func:`klpelf.elf.arrays.use_vector`).
        """
        if self._record_count is None:
            lay, n = self.layout, 0
            sizes: dict[int, int] = {SHT.SYMTAB: lay.sym_size, SHT.DYNSYM: lay.sym_size,
                                     SHT.REL: lay.rel_size, SHT.RELA: lay.rela_size}  # fmt: skip
            for sec in self.sections:
                size = sizes.get(sec.sh_type)
                if size:
                    n += sec.sh_size // size
            self._record_count = n
        return self._record_count

    @property
    def relocation_sections(self) -> list[Section]:
        return [s for s in self.sections if s.sh_type in (SHT.REL, SHT.RELA)]

    def relocations(self, section: Section) -> RelocationTable:
        tab = self._relocs.get(section.index)
        if tab is None:
            from klpelf.elf.relocs import RelocationTable

            tab = self._relocs[section.index] = RelocationTable(self, section)
        return tab

    def relocations_as_rela(self, section: Section) -> RelocationTable:
        """The section's entries as the kernel reads an SHF_RELA_LIVEPATCH section:
        Elf_Rela records whatever sh_type and sh_entsize say, ``sh_size /
        sizeof(Elf_Rela)`` of them (kernel/livepatch/core.c klp_resolve_symbols(),
        arch/*/kernel/module.c apply_relocate_add()); symbol indices are not checked.

        The same view as :meth:`relocations` when the section is an SHT_RELA of the
        right entry size over the symbol table.
        """
        symtab = self.symtab
        linked = symtab is not None and section.sh_link == symtab.section.index
        if section.sh_type == SHT.RELA and section.sh_entsize == self.layout.rela_size and linked:
            return self.relocations(section)
        tab = self._rela_views.get(section.index)
        if tab is None:
            from klpelf.elf.relocs import RelocationTable

            tab = self._rela_views[section.index] = RelocationTable(self, section, as_rela=True)
        return tab

    @property
    def modinfo(self) -> Modinfo | None:
        """The ``.modinfo`` view, or None if the object has no such section."""
        if self._modinfo is None:
            sec = self.section_by_name(".modinfo")
            if sec is None or sec.sh_type == SHT.NOBITS:
                return None
            from klpelf.elf.modinfo import Modinfo

            self._modinfo = Modinfo(sec)
        return self._modinfo

    def drop_views(self, section: Section, keep: object = None) -> None:
        """``section``'s bytes changed: forget the views decoded from the old bytes.

        From outside the views (``keep`` None, :meth:`Section.set_data`): every view
        of the section goes, and the views that read it: the symbol tables over a
        string table or an SHT_SYMTAB_SHNDX section, the relocation tables over a
        symbol table (their symbol indices were checked against its size); section
        names are decoded again from a new ``.shstrtab``.

        A view's own edit (``keep`` the view): it stays as the truth, and the other
        views of the same bytes go (a section's ordinary and as-Elf_Rela relocation
        views).  Nothing that depends on it needs to go: a string table only appends
        (every offset keeps its string), a symbol table keeps its indices (an
        inserted local renumbers the relocations itself), and nothing reads a
        relocation table or ``.modinfo``.
        """
        i = section.index
        own = keep is not None
        for views in (self._strtabs, self._symtabs, self._relocs, self._rela_views):
            view = views.get(i)
            if view is not None and view is not keep:
                del views[i]
        modinfo = self._modinfo
        if modinfo is not None and modinfo.section is section and modinfo is not keep:
            self._modinfo = None
        if own:
            return
        for j, tab in list(self._symtabs.items()):
            if tab.strtab.section is section or tab.shndx_section is section:
                del self._symtabs[j]
        for j, rt in list(self._relocs.items()):
            if rt.section.sh_link == i:
                del self._relocs[j]
        if self._shstrtab is not None and self._shstrtab.section is section:
            self._shstrtab = None
            names = self.shstrtab
            decoded = [names.get(sec.sh_name) for sec in self.sections]
            for sec, name in zip(self.sections, decoded, strict=True):
                sec.name = name

    def decode_all(self) -> None:
        """Decode (and so check) every symbol table and relocation section.

        :raises ElfFormatError: the first malformed table found.
        """
        for sec in self.sections:
            if sec.sh_type in (SHT.SYMTAB, SHT.DYNSYM):
                self.symbol_table(sec)
            elif sec.sh_type in (SHT.REL, SHT.RELA):
                self.relocations(sec)

    # --- edits ----------------------------------------------------------------------

    def _require_relocatable(self, what: str) -> None:
        if self.phdr_range is not None or not self.is_relocatable:
            raise ElfEditError(
                f"{what}: only relocatable objects (ET_REL) can be edited", path=self.path
            )

    def rename_section(self, section: Section, name: str) -> None:
        """Give ``section`` a new name (added to .shstrtab; old offsets stay valid)."""
        self._require_relocatable("rename section")
        section.sh_name = self.shstrtab.add(name)
        section.name = name
        self.modified = True

    def add_section(
        self,
        name: str,
        sh_type: int,
        *,
        sh_flags: int = 0,
        data: bytes | bytearray = b"",
        sh_link: int = 0,
        sh_info: int = 0,
        sh_addralign: int = 1,
        sh_entsize: int = 0,
        sh_addr: int = 0,
    ) -> Section:
        """Append a section at the end of the section header table and return it.

        Existing section indices do not change, so nothing else needs rewriting.
        """
        self._require_relocatable("add section")
        sec = Section(
            elf=self, index=len(self.sections), name=name, sh_name=0, sh_type=sh_type,
            sh_flags=sh_flags, sh_addr=sh_addr, sh_offset=0, sh_size=0, sh_link=sh_link,
            sh_info=sh_info, sh_addralign=sh_addralign, sh_entsize=sh_entsize,
        )  # fmt: skip
        self.sections.append(sec)
        sec.sh_name = self.shstrtab.add(name)
        sec.set_data(bytes(data))
        if sh_type == SHT.NOBITS:
            sec.sh_size = len(data)
            sec._data = b""
        self.modified = True
        return sec

    def add_relocation_section(
        self,
        name: str,
        target: Section,
        *,
        symtab: Section | None = None,
        rela: bool = True,
        extra_flags: int = 0,
    ) -> Section:
        """Add an empty SHT_RELA (or SHT_REL) section for ``target``.

        It gets SHF_INFO_LINK, sh_link the symbol table, sh_info the target, and the
        entry size and alignment of the ELF class, as GNU as writes them.
        """
        if symtab is None:
            tabs = self.sections_of_type(SHT.SYMTAB)
            if len(tabs) != 1:
                raise ElfEditError(
                    "add relocation section: the object needs exactly one symbol table"
                )
            symtab = tabs[0]
        lay = self.layout
        return self.add_section(
            name, SHT.RELA if rela else SHT.REL, sh_flags=SHF.INFO_LINK | extra_flags,
            sh_link=symtab.index, sh_info=target.index, sh_addralign=lay.word_align,
            sh_entsize=lay.rela_size if rela else lay.rel_size,
        )  # fmt: skip
