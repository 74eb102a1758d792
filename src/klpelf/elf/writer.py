"""Serialise an :class:`~klpelf.elf.file.ElfFile` back to bytes.

Layout policy, chosen so that an unmodified object comes out byte-identical and an
edited one changes as little as possible:

* When no section changed size and none was added, every section keeps its offset;
  the output is the input with the changed contents and headers written over it.
* Otherwise the file is laid out again in the input's offset order: each section
  (and the section header table) follows the previous one at its alignment,
  keeping any gap wider than the alignment that the input had, and copying the
  gap's bytes.  New sections go just before the section header table when that
  table was last (as ``ld -r`` and ``as`` write it), else at the end.  Bytes after
  the last structure (an appended module signature) follow the last structure.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

from klpelf._record import Record
from klpelf.elf.constants import SHN, SHT
from klpelf.elf.file import ElfFile, Section
from klpelf.elf.layout import EI_NIDENT
from klpelf.errors import ElfEditError
from klpelf.io import Piece, write_atomic


class _Item(Record):
    _fields = ("orig_offset", "orig_end", "size", "align", "section", "start")
    __slots__ = _fields

    def __init__(self, orig_offset: int | None, orig_end: int, size: int, align: int,
                 section: Section | None) -> None:  # fmt: skip
        self.orig_offset, self.orig_end = orig_offset, orig_end
        self.size = size  # bytes in the output
        self.align = align
        self.section = section  # None: the section header table
        self.start = 0  # where it goes in the output (set by _plan / _place)


def _align_up(x: int, a: int) -> int:
    return x if a <= 1 else (x + a - 1) // a * a


class _Plan(Record):
    """The output as pieces: ``chunks`` (offset, bytes) sorted by offset.

    With ``base`` set (nothing moved), the pieces are written over a copy of the
    input; without it they tile the file in order, zero bytes between them.
    """

    _fields = ("size", "base", "chunks", "sources")
    __slots__ = _fields

    def __init__(self, size: int, base: memoryview | None,
                 chunks: list[tuple[int, bytes | bytearray | memoryview]],
                 sources: dict[int, int] | None = None) -> None:  # fmt: skip
        self.size, self.base, self.chunks = size, base, chunks
        #: chunk index -> offset in the input of a chunk that is an unchanged input range
        self.sources = sources if sources is not None else {}


def write_elf(elf: ElfFile) -> bytearray:
    """Return the bytes of ``elf`` as it is now (its edits included)."""
    plan = _plan(elf)
    if plan.base is not None:
        out = bytearray(plan.base)
        out.extend(bytes(plan.size - len(out)))
        for off, data in plan.chunks:
            out[off : off + len(data)] = data
        return out
    out = bytearray()
    for piece in _stream(plan):
        out += piece
    return out


def _stream(plan: _Plan) -> Iterator[bytes | bytearray | memoryview]:
    pos = 0
    for off, data in plan.chunks:
        if off > pos:
            yield bytes(off - pos)
        yield data
        pos = off + len(data)
    if plan.size > pos:
        yield bytes(plan.size - pos)


def _plan(elf: ElfFile) -> _Plan:
    lay = elf.layout
    secs = elf.sections
    shnum = len(secs)
    shentsize = lay.shdr.size
    items = _layout_items(elf)
    size_changed = (
        shnum != elf.orig_shnum
        or any(
            it.section is not None and it.size != it.orig_end - (it.orig_offset or 0)
            for it in items
        )
        or any(it.orig_offset is None for it in items)
    )
    if elf.phdr_range is not None and size_changed:
        raise ElfEditError("cannot lay out again an object with program headers", path=elf.path)

    if not size_changed:
        for it in items:
            it.start = it.orig_offset if it.orig_offset is not None else 0
        end = elf.trailer_offset
    else:
        end = _place(elf, items)
    chunks: list[tuple[int, bytes | bytearray | memoryview]] = []
    sources: dict[int, int] = {}  # output offset -> input offset, for unchanged ranges

    # ELF header (e_ident is copied as read, padding bytes included)
    h = elf.header
    shoff = next(it.start for it in items if it.section is None) if shnum else h.e_shoff
    use_ext_shnum = shnum >= SHN.LORESERVE or (elf.raw_shnum == 0 and shnum > 0)
    use_ext_strndx = h.e_shstrndx >= SHN.LORESERVE or (elf.raw_shstrndx == SHN.XINDEX and shnum > 0)
    if shnum:
        if use_ext_shnum:
            secs[0].sh_size = shnum
        if use_ext_strndx:
            secs[0].sh_link = h.e_shstrndx
    header = bytearray(lay.ehdr_size)
    header[:EI_NIDENT] = elf.ident
    lay.ehdr.pack_into(
        header, EI_NIDENT, h.e_type, h.e_machine, h.e_version, h.e_entry, h.e_phoff, shoff,
        h.e_flags, h.e_ehsize, h.e_phentsize, h.e_phnum, h.e_shentsize,
        0 if use_ext_shnum else shnum, SHN.XINDEX if use_ext_strndx else h.e_shstrndx,
    )  # fmt: skip
    chunks.append((0, header))

    for it in items:
        sec = it.section
        if sec is None:
            continue
        if sec.sh_type != SHT.NULL:
            sec.sh_offset = it.start
        if it.size and (sec.dirty or size_changed):
            if not sec.dirty and it.orig_offset is not None:
                sources[it.start] = it.orig_offset
            chunks.append((it.start, sec.data))
    table = bytearray(shnum * shentsize)
    for sec in secs:
        lay.shdr.pack_into(
            table, sec.index * shentsize, sec.sh_name, sec.sh_type, sec.sh_flags,
            sec.sh_addr, sec.sh_offset, sec.sh_size, sec.sh_link, sec.sh_info,
            sec.sh_addralign, sec.sh_entsize,
        )  # fmt: skip
    if shnum:
        chunks.append((shoff, table))
    h.e_shoff = shoff
    if elf.trailer:
        chunks.append((end, elf.trailer))
    if not size_changed:
        chunks.sort(key=lambda c: c[0])
        return _Plan(end + len(elf.trailer), memoryview(elf.buf)[: elf.trailer_offset], chunks)
    chunks += _gaps(elf, items)
    chunks.sort(key=lambda c: c[0])
    by_index = {i: sources[off] for i, (off, _) in enumerate(chunks) if off in sources}
    return _Plan(end + len(elf.trailer), None, chunks, by_index)


def _layout_items(elf: ElfFile) -> list[_Item]:
    lay = elf.layout
    items: list[_Item] = []
    for sec in elf.sections[1:]:
        size = sec.file_size
        if sec.orig_offset is None:
            items.append(_Item(None, 0, size, max(sec.sh_addralign, 1), sec))
        else:
            orig_size = 0 if sec.sh_type in (SHT.NOBITS, SHT.NULL) else sec.orig_size
            items.append(_Item(sec.orig_offset, sec.orig_offset + orig_size, size,
                               max(sec.sh_addralign, 1), sec))  # fmt: skip
    if elf.sections:
        # section 0 (SHT_NULL) carries no contents; keep it in the list for sh_offset
        items.insert(0, _Item(elf.sections[0].sh_offset, elf.sections[0].sh_offset, 0, 1,
                              elf.sections[0]))  # fmt: skip
        shsize = len(elf.sections) * lay.shdr.size
        orig_shsize = elf.orig_shnum * lay.shdr.size
        table_end = elf.orig_shoff + orig_shsize
        items.append(_Item(elf.orig_shoff, table_end, shsize, lay.word_align, None))
    return items


def _place(elf: ElfFile, items: list[_Item]) -> int:
    old = [it for it in items if it.orig_offset is not None and it.section is not None
           and it.section.index != 0]  # fmt: skip
    new = [it for it in items if it.orig_offset is None]
    table = [it for it in items if it.section is None]
    old_and_table = sorted(old + table, key=lambda it: (it.orig_offset or 0, it.size > 0))
    if table and old_and_table and old_and_table[-1] is table[0]:
        order = old_and_table[:-1] + new + table
    else:
        order = old_and_table + new
    cursor = elf.layout.ehdr_size
    prev_orig_end = cursor
    # Output never grows beyond the input, the new contents and some padding: a
    # corrupt sh_addralign or sh_offset must not make the writer allocate gigabytes.
    budget = len(elf.buf) + sum(it.size for it in items) + (1 << 20)
    for it in order:
        if not it.size:
            # empty and SHT_NOBITS sections take no room (their sh_offset is unchecked)
            it.start = min(_align_up(cursor, it.align), cursor + (1 << 20))
            continue
        gap = 0
        if it.orig_offset is not None:
            gap = max(0, it.orig_offset - prev_orig_end)
            prev_orig_end = max(prev_orig_end, it.orig_end)
        it.start = _align_up(cursor + (gap if gap >= it.align else 0), it.align)
        cursor = max(cursor, it.start + it.size)
        if cursor > budget:
            what = f"section {it.section}" if it.section is not None else "section header table"
            raise ElfEditError(
                f"{what}: sh_addralign {it.align:#x} would pad the output past any sensible "
                "size (corrupt section header?)",
                path=elf.path,
            )
    return cursor


def _gaps(elf: ElfFile, items: list[_Item]) -> list[tuple[int, memoryview]]:
    # Reproduce the bytes between structures (usually zero padding) where the input
    # had a gap before the same structure.
    # New sections take part in the walk only as room taken in the output: the bytes
    # before the next structure go after them, never over them (the input's bytes
    # before its section header table, nonzero, were written over the sections added
    # in front of the table).
    buf = memoryview(elf.buf)
    placed = sorted((it for it in items if it.size), key=lambda it: it.start)
    out = []
    prev_orig_end, prev_new_end = elf.layout.ehdr_size, elf.layout.ehdr_size
    for it in placed:
        if it.orig_offset is None:
            prev_new_end = it.start + it.size
            continue
        n = min(it.orig_offset - prev_orig_end, it.start - prev_new_end)
        if n > 0 and any(buf[prev_orig_end : prev_orig_end + n]):
            out.append((prev_new_end, buf[prev_orig_end : prev_orig_end + n]))
        prev_orig_end, prev_new_end = it.orig_end, it.start + it.size
    return out


def save_elf(elf: ElfFile, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Write ``elf`` to ``path`` atomically (temporary file, then rename).

    :param overwrite: replace ``path`` if it exists; without it an existing file is
        never touched, so the input cannot be lost by accident.
    """
    plan = _plan(elf)
    if plan.base is not None:
        write_atomic(path, write_elf(elf), overwrite=overwrite)
        return
    src = _open_source(elf)
    try:
        write_atomic(path, _pieces(plan, src), overwrite=overwrite)
    finally:
        if src is not None:
            os.close(src)


def _open_source(elf: ElfFile) -> int | None:
    # The input is a plain file that is memory-mapped (not decompressed): its
    # unchanged ranges can be copied file to file.
    if not isinstance(elf.buf, mmap.mmap) or elf.path is None:
        return None
    try:
        fd = os.open(elf.path, os.O_RDONLY)
    except OSError:
        return None
    if os.fstat(fd).st_size != len(elf.buf):
        os.close(fd)
        return None
    return fd


_COPY_MIN = 1 << 16


def _pieces(plan: _Plan, src: int | None) -> Iterator[Piece]:
    pos = 0
    for i, (off, data) in enumerate(plan.chunks):
        if off > pos:
            yield bytes(off - pos)
        origin = plan.sources.get(i)
        if src is not None and origin is not None and len(data) >= _COPY_MIN:
            yield (src, origin, len(data))
        else:
            yield data
        pos = off + len(data)
    if plan.size > pos:
        yield bytes(plan.size - pos)


def new_relocatable(like: ElfFile) -> ElfFile:
    """An empty relocatable object of ``like``'s class, byte order, OS ABI, machine and
    e_flags: the null section, ``.shstrtab``, ``.strtab`` and a ``.symtab`` holding the
    null symbol.  Sections, symbols and relocations are added with the model's edits."""
    from klpelf.elf.constants import ET
    from klpelf.elf.reader import read_elf

    lay = like.layout
    shstr = b"\0.shstrtab\0.strtab\0.symtab\0"
    strtab = b"\0"
    symtab = bytes(lay.sym_size)
    body = lay.ehdr_size
    off_shstr = body
    off_str = off_shstr + len(shstr)
    off_sym = _align_up(off_str + len(strtab), lay.word_align)
    shoff = _align_up(off_sym + len(symtab), lay.word_align)
    shdrs = [
        lay.shdr.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        lay.shdr.pack(1, SHT.STRTAB, 0, 0, off_shstr, len(shstr), 0, 0, 1, 0),
        lay.shdr.pack(11, SHT.STRTAB, 0, 0, off_str, len(strtab), 0, 0, 1, 0),
        lay.shdr.pack(19, SHT.SYMTAB, 0, 0, off_sym, len(symtab), 2, 1, lay.word_align,
                      lay.sym_size),
    ]  # fmt: skip
    h = like.header
    ehdr = lay.ehdr.pack(ET.REL, h.e_machine, 1, 0, 0, shoff, h.e_flags, lay.ehdr_size, 0, 0,
                         lay.shdr.size, len(shdrs), 1)  # fmt: skip
    ident = like.ident[:9] + bytes(EI_NIDENT - 9)  # magic, class, data, version, OS ABI
    out = bytearray(ident + ehdr)
    out += shstr + strtab
    out += bytes(off_sym - len(out)) + symtab
    out += bytes(shoff - len(out)) + b"".join(shdrs)
    return read_elf(bytes(out), path=None)
