"""Parse an ELF object into :class:`klpelf.elf.file.ElfFile`.

The header and the section header table are decoded and checked here, eagerly,
with one clear :class:`~klpelf.errors.ElfFormatError` per problem; the contents of
symbol and relocation sections are decoded (and checked) by their views when first
used.  Every check bounds work and memory by the file's size: counts and offsets
are compared with the size before anything is allocated.
"""

from __future__ import annotations

import os

from klpelf.elf.constants import ELFCLASS, ELFDATA, ELFMAG, SHN, SHT
from klpelf.elf.file import ElfFile, ElfHeader, Section
from klpelf.elf.layout import EI_NIDENT, layout_for
from klpelf.errors import ElfFormatError, UnsupportedElfError
from klpelf.io import Buffer, read_input


def open_elf(path: str | os.PathLike[str]) -> ElfFile:
    """Read the ELF object at ``path`` (plain or xz/zstd/gzip-compressed).

    :raises InputError: the file cannot be read.
    :raises ElfError: it is not a well-formed ELF object.
    """
    name = os.fspath(path)
    return read_elf(read_input(name), path=name)


def read_elf(buf: Buffer, *, path: str | None = None) -> ElfFile:
    """Parse ``buf`` (bytes, or a memory map) as an ELF object."""
    size = len(buf)
    if size < EI_NIDENT or bytes(buf[:4]) != ELFMAG:
        what = "file is empty" if size == 0 else "not an ELF file (bad magic)"
        raise ElfFormatError(what, path=path, offset=0)
    ident = bytes(buf[:EI_NIDENT])
    elfclass, elfdata = ident[4], ident[5]
    if elfclass not in (ELFCLASS.CLASS32, ELFCLASS.CLASS64):
        raise UnsupportedElfError(f"unknown ELF class {elfclass} (EI_CLASS)", path=path, offset=4)
    if elfdata not in (ELFDATA.LSB, ELFDATA.MSB):
        raise UnsupportedElfError(
            f"unknown ELF data encoding {elfdata} (EI_DATA)", path=path, offset=5
        )
    layout = layout_for(elfclass, "<" if elfdata == ELFDATA.LSB else ">")
    if size < layout.ehdr_size:
        raise ElfFormatError(
            f"file is truncated: {size} bytes, the ELF header alone needs {layout.ehdr_size}",
            path=path, offset=0,
        )  # fmt: skip
    header = ElfHeader(*layout.ehdr.unpack_from(buf, EI_NIDENT))

    phdr_range = None
    if header.e_phnum:
        phsize = header.e_phnum * header.e_phentsize
        if header.e_phoff > size or phsize > size - header.e_phoff:
            raise ElfFormatError(
                f"program header table (offset {header.e_phoff:#x}, {header.e_phnum} entries) "
                f"extends past the end of the file (size {size:#x})",
                path=path, offset=header.e_phoff,
            )  # fmt: skip
        phdr_range = (header.e_phoff, phsize)

    elf = ElfFile(
        path=path, buf=buf, layout=layout, ident=ident, header=header,
        extended_numbering=False, phdr_range=phdr_range,
    )  # fmt: skip
    if header.e_shoff == 0:
        if header.e_shnum:
            raise ElfFormatError(
                "e_shnum is nonzero but there is no section header table", path=path
            )
        _set_trailer(elf)
        return elf
    _read_sections(elf)
    _set_trailer(elf)
    return elf


def _read_sections(elf: ElfFile) -> None:
    buf, h, lay, path = elf.buf, elf.header, elf.layout, elf.path
    size = len(buf)
    entsize = lay.shdr.size
    if h.e_shentsize != entsize:
        raise ElfFormatError(
            f"e_shentsize is {h.e_shentsize}, expected {entsize} for ELF{lay.elfclass * 32}",
            path=path, offset=EI_NIDENT,
        )  # fmt: skip
    if h.e_shoff > size - entsize:
        raise ElfFormatError(
            f"section header table offset {h.e_shoff:#x} is past the end of the file "
            f"(size {size:#x})",
            path=path, offset=h.e_shoff,
        )  # fmt: skip
    shnum, shstrndx = h.e_shnum, h.e_shstrndx
    sec0 = lay.shdr.unpack_from(buf, h.e_shoff)
    # gABI extended numbering: past SHN_LORESERVE sections, e_shnum is 0 and the count
    # is in section 0's sh_size; e_shstrndx is SHN_XINDEX and the index in its sh_link.
    if shnum == 0:
        shnum = sec0[5]
        elf.extended_numbering = True
    if shstrndx == SHN.XINDEX:
        shstrndx = sec0[6]
        elf.extended_numbering = True
    if shnum > (size - h.e_shoff) // entsize:
        raise ElfFormatError(
            f"section header table ({shnum} entries at offset {h.e_shoff:#x}) extends past "
            f"the end of the file (size {size:#x})",
            path=path, offset=h.e_shoff,
        )  # fmt: skip
    if shnum == 0:
        return
    if not 0 < shstrndx < shnum:
        raise ElfFormatError(f"e_shstrndx {shstrndx} is out of range (0..{shnum - 1})", path=path)

    sections = elf.sections
    mv = memoryview(buf) if not isinstance(buf, memoryview) else buf
    for i, fields in enumerate(lay.shdr.iter_unpack(mv[h.e_shoff : h.e_shoff + shnum * entsize])):
        sec = Section(elf, i, "", *fields)
        sec.orig_offset = sec.sh_offset
        sec.orig_size = sec.sh_size
        if sec.sh_type not in (SHT.NOBITS, SHT.NULL) and sec.sh_size:
            if sec.sh_offset > size or sec.sh_size > size - sec.sh_offset:
                raise ElfFormatError(
                    f"section [{i}]: contents (offset {sec.sh_offset:#x}, size {sec.sh_size:#x}) "
                    f"extend past the end of the file (size {size:#x})",
                    path=path, offset=h.e_shoff + i * entsize,
                )  # fmt: skip
            sec._data = mv[sec.sh_offset : sec.sh_offset + sec.sh_size]
        sections.append(sec)
    h.e_shstrndx = shstrndx
    h.e_shnum = shnum
    elf.orig_shnum = shnum
    _check_entry_bytes(sections, size, path)

    shstr = sections[shstrndx]
    if shstr.sh_type != SHT.STRTAB:
        raise ElfFormatError(
            f"section [{shstrndx}] named by e_shstrndx is not a string table", path=path
        )
    names = elf.shstrtab
    for sec in sections:
        sec.name = names.get(sec.sh_name)
        if sec.sh_link >= shnum and sec.sh_type in _LINKED_TYPES:
            raise ElfFormatError(
                f"section {sec}: sh_link {sec.sh_link} is out of range (0..{shnum - 1})", path=path
            )


#: section types whose contents klpelf decodes entry by entry (symbols, relocations)
_ENTRY_TYPES = frozenset({SHT.SYMTAB, SHT.DYNSYM, SHT.REL, SHT.RELA, SHT.SYMTAB_SHNDX})

#: how many times the file's size those sections may add up to
ENTRY_BYTES_FACTOR = 2


def _check_entry_bytes(sections: list[Section], size: int, path: str | None) -> None:
    # Each section lies inside the file (checked above), but headers may share bytes: a
    # 1 MB file with 16,000 headers naming one relocation table holds 16,000 copies of
    # it for every reader (check and show -r ran for minutes, and 10 GB).  A linker
    # never lays out symbol or relocation tables over one another, so together they
    # fit in the file; twice its size leaves room for a hand-made overlap or two while
    # keeping every per-entry pass linear in the file's size.
    total = sum(s.sh_size for s in sections if s.sh_type in _ENTRY_TYPES)
    if total > ENTRY_BYTES_FACTOR * size:
        raise ElfFormatError(
            f"symbol and relocation sections add up to {total:#x} bytes, more than "
            f"{ENTRY_BYTES_FACTOR} times the file's size ({size:#x}): their contents overlap",
            path=path,
        )


# section types whose sh_link must name another section
_LINKED_TYPES = frozenset(
    {SHT.SYMTAB, SHT.DYNSYM, SHT.REL, SHT.RELA, SHT.SYMTAB_SHNDX, SHT.GROUP, SHT.HASH, SHT.DYNAMIC}
)


def _set_trailer(elf: ElfFile) -> None:
    # Everything past the last ELF structure (an appended module signature, most of
    # the time) is kept as opaque bytes so that a round trip reproduces it.
    h = elf.header
    end = elf.layout.ehdr_size
    if elf.phdr_range:
        end = max(end, sum(elf.phdr_range))
    if elf.sections:
        end = max(end, h.e_shoff + len(elf.sections) * elf.layout.shdr.size)
    for sec in elf.sections:
        if sec.file_size:
            end = max(end, sec.sh_offset + sec.sh_size)
    elf.trailer_offset = end
    if end < len(elf.buf):
        buf = elf.buf
        elf.trailer = (memoryview(buf) if not isinstance(buf, memoryview) else buf)[end:]
