"""Symbol tables (SHT_SYMTAB, SHT_DYNSYM), decoded in bulk into a numpy structured array.

The array keeps the file's byte order and field layout, so an unmodified table
serialises back to the very same bytes.  Symbol indices are the array's indices
and never change under :meth:`SymbolTable.set_symbol` or when a global symbol is
added: livepatch modules keep their symbol table 1:1 (module-elf-format.rst §4.1),
because relocations name symbols by index.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from klpelf.elf.arrays import RecordTable, as_bytes, shndx_dtype, sym_dtype
from klpelf.elf.constants import SHN, SHT, STB, STT
from klpelf.elf.strtab import StringTable, encode_name
from klpelf.errors import ElfEditError

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile, Section


def st_info(bind: int, type_: int) -> int:
    """ELF_ST_INFO(bind, type)."""
    return (bind << 4) | (type_ & 0xF)


@dataclass(frozen=True, slots=True)
class Symbol:
    """One symbol-table entry, as a value (a snapshot; edits go through the table)."""

    index: int
    name: str
    st_name: int
    st_info: int
    st_other: int
    st_shndx: int
    st_value: int
    st_size: int
    #: the section index after SHN_XINDEX is resolved (equal to st_shndx otherwise)
    shndx: int

    @property
    def bind(self) -> int:
        """ELF_ST_BIND(st_info)."""
        return self.st_info >> 4

    @property
    def type(self) -> int:
        """ELF_ST_TYPE(st_info)."""
        return self.st_info & 0xF

    @property
    def visibility(self) -> int:
        """ELF_ST_VISIBILITY(st_other)."""
        return self.st_other & 0x3

    @property
    def is_livepatch(self) -> bool:
        return self.st_shndx == SHN.LIVEPATCH

    @property
    def is_undefined(self) -> bool:
        return self.st_shndx == SHN.UNDEF


class SymbolTable(RecordTable):
    """The view of one symbol table section.

    ``len()``, indexing and iteration give :class:`Symbol` values.
    """

    def __init__(self, elf: ElfFile, section: Section) -> None:
        lay = elf.layout
        if section.sh_type not in (SHT.SYMTAB, SHT.DYNSYM):
            raise elf.error("is not a symbol table", section)
        super().__init__(elf, section, sym_dtype(lay))
        self.strtab: StringTable = elf.strtab(elf.section(section.sh_link))
        if section.sh_info > len(self._arr):
            raise elf.error(
                f"sh_info {section.sh_info} (first non-local symbol) is past the "
                f"{len(self._arr)} symbols",
                section,
            )
        self._names: list[str] | None = None
        self._shndx_sec: Section | None = None
        self._xindex: npt.NDArray[np.uint32] | None = None
        for s in elf.sections:
            if s.sh_type == SHT.SYMTAB_SHNDX and s.sh_link == section.index:
                xdt = shndx_dtype(lay)
                if s.sh_size != len(self._arr) * xdt.itemsize:
                    raise elf.error(
                        f"SHT_SYMTAB_SHNDX size {s.sh_size:#x} does not match the "
                        f"{len(self._arr)} symbols of {section}", s
                    )  # fmt: skip
                self._shndx_sec = s
                self._xindex = np.frombuffer(s.data, dtype=xdt)
                break
        self._check()

    def _check(self) -> None:
        arr = self._arr
        if not len(arr):
            return
        if int(arr["st_name"].max()) >= max(len(self.strtab), 1):
            bad = int(np.argmax(arr["st_name"] >= len(self.strtab)))
            raise self.elf.error(
                f"symbol {bad}: st_name {int(arr['st_name'][bad]):#x} is past the end of the "
                f"string table (size {len(self.strtab):#x})",
                self.section,
            )
        shnum = len(self.elf.sections)
        shndx = self.shndx_array
        bad_mask = (shndx >= shnum) & (arr["st_shndx"] < SHN.LORESERVE)
        if self._xindex is not None:
            bad_mask |= (arr["st_shndx"] == SHN.XINDEX) & (self._xindex >= shnum)
        if bad_mask.any():
            bad = int(np.argmax(bad_mask))
            raise self.elf.error(
                f"symbol {bad} ('{self.name(bad)}'): section index {int(shndx[bad])} is out of "
                f"range (0..{shnum - 1})",
                self.section,
            )

    # --- reading ------------------------------------------------------------------

    @property
    def first_global(self) -> int:
        """Index of the first non-local symbol: the symbol table's sh_info."""
        return self.section.sh_info

    @property
    def shndx_array(self) -> npt.NDArray[np.uint32]:
        """Section index of every symbol, with SHN_XINDEX resolved through SHT_SYMTAB_SHNDX."""
        raw = self._arr["st_shndx"].astype(np.uint32)
        if self._xindex is not None:
            x = raw == SHN.XINDEX
            raw[x] = self._xindex[x]
        return raw

    @property
    def bind_array(self) -> npt.NDArray[np.uint8]:
        return (self._arr["st_info"] >> 4).astype(np.uint8)

    @property
    def type_array(self) -> npt.NDArray[np.uint8]:
        return (self._arr["st_info"] & 0xF).astype(np.uint8)

    def name(self, index: int) -> str:
        if self._names is not None:
            return self._names[index]
        return self.strtab.get(int(self._arr["st_name"][index]))

    def names(self) -> list[str]:
        """Every symbol's name, in index order (decoded once and cached)."""
        if self._names is None:
            self._names = _decode_names(bytes(self.strtab.data), self._arr["st_name"].tolist())
        return self._names

    def __getitem__(self, index: int) -> Symbol:
        n = len(self._arr)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"symbol index {index} out of range (0..{n - 1})")
        r = self._arr[index]
        st_shndx = int(r["st_shndx"])
        shndx = st_shndx
        if st_shndx == SHN.XINDEX and self._xindex is not None:
            shndx = int(self._xindex[index])
        return Symbol(
            index, self.name(index), int(r["st_name"]), int(r["st_info"]), int(r["st_other"]),
            st_shndx, int(r["st_value"]), int(r["st_size"]), shndx,
        )  # fmt: skip

    def __iter__(self) -> Iterator[Symbol]:
        for i in range(len(self._arr)):
            yield self[i]

    def indices_with_prefix(self, prefix: str) -> npt.NDArray[np.intp]:
        """Indices of the symbols whose name starts with ``prefix``, without decoding names.

        A name starts with the prefix exactly when its st_name is an offset where the
        prefix occurs in the string table, so the table is searched once.
        """
        data = bytes(self.strtab.data)
        raw = encode_name(prefix)
        hits = []
        pos = data.find(raw)
        while pos >= 0:
            hits.append(pos)
            pos = data.find(raw, pos + 1)
        if not hits:
            return np.zeros(0, dtype=np.intp)
        return np.flatnonzero(np.isin(self._arr["st_name"], np.array(hits, dtype=np.uint32)))

    def indices_where_shndx(self, value: int) -> npt.NDArray[np.intp]:
        """Indices of the symbols whose raw st_shndx equals ``value`` (e.g. SHN_LIVEPATCH)."""
        return np.flatnonzero(self._arr["st_shndx"] == value)

    # --- edits --------------------------------------------------------------------

    def _writable(self) -> npt.NDArray[np.void]:
        if not self._arr.flags.writeable:
            self._arr = self._arr.copy()
        return self._arr

    def _commit(self) -> None:
        self.section.set_pending(self._arr.nbytes, lambda: as_bytes(self._arr))
        xindex, sec = self._xindex, self._shndx_sec
        if xindex is not None and sec is not None:
            sec.set_pending(xindex.nbytes, lambda: as_bytes(xindex))

    def set_symbol(
        self,
        index: int,
        *,
        name: str | None = None,
        st_info: int | None = None,
        st_other: int | None = None,
        st_shndx: int | None = None,
        st_value: int | None = None,
        st_size: int | None = None,
    ) -> None:
        """Change fields of symbol ``index`` in place; its index does not change.

        A new ``name`` is added to the string table.  Changing the binding is refused
        when it would put a local symbol after a global one (or the reverse), except
        at the boundary, where sh_info moves with it.
        """
        if not 0 < index < len(self._arr):
            raise ElfEditError(f"symbol index {index} out of range (1..{len(self._arr) - 1})")
        if st_info is not None:
            self._rebind(index, st_info >> 4 == STB.LOCAL)
        arr = self._writable()
        if name is not None:
            arr["st_name"][index] = self.strtab.add(name)
            if self._names is not None:
                self._names[index] = name
        for fld, val in (("st_info", st_info), ("st_other", st_other), ("st_value", st_value),
                         ("st_size", st_size)):  # fmt: skip
            if val is not None:
                arr[fld][index] = val
        if st_shndx is not None:
            if st_shndx == SHN.XINDEX and self._xindex is None:
                raise ElfEditError("SHN_XINDEX needs an SHT_SYMTAB_SHNDX section")
            arr["st_shndx"][index] = st_shndx
        self._commit()

    def _rebind(self, index: int, local: bool) -> None:
        first_global = self.section.sh_info
        was_local = index < first_global
        if local == was_local:
            return
        if local and index == first_global:
            self.section.sh_info += 1
        elif not local and index == first_global - 1:
            self.section.sh_info -= 1
        else:
            what = "local" if local else "global"
            raise ElfEditError(
                f"symbol {index} ('{self.name(index)}'): making it {what} would break the "
                f"order of locals before globals (sh_info {first_global})"
            )

    def add_symbol(
        self,
        name: str,
        *,
        st_info: int = st_info(STB.GLOBAL, STT.NOTYPE),
        st_other: int = 0,
        st_shndx: int = SHN.UNDEF,
        st_value: int = 0,
        st_size: int = 0,
        xindex: int = 0,
    ) -> int:
        """Add a symbol and return its index.

        A non-local symbol is appended, so no index changes.  A local symbol must go
        before the first global: it is inserted at sh_info, every later symbol moves
        up by one, and every reference by index (relocations, section groups) is
        rewritten to match.
        """
        new = np.zeros(1, dtype=self._arr.dtype)
        new["st_name"] = self.strtab.add(name)
        new["st_info"], new["st_other"], new["st_shndx"] = st_info, st_other, st_shndx
        new["st_value"], new["st_size"] = st_value, st_size
        if st_shndx == SHN.XINDEX and self._xindex is None:
            raise ElfEditError("SHN_XINDEX needs an SHT_SYMTAB_SHNDX section")
        pos = len(self._arr)
        if st_info >> 4 == STB.LOCAL:
            pos = self.section.sh_info
            self._renumber_from(pos)
            self.section.sh_info += 1
        # np.concatenate would convert to native byte order; keep the file's
        self._arr = np.concatenate([self._arr[:pos], new, self._arr[pos:]], dtype=self._arr.dtype)
        if self._xindex is not None:
            self._xindex = np.concatenate(
                [self._xindex[:pos], np.array([xindex], self._xindex.dtype), self._xindex[pos:]]
            )
        if self._names is not None:
            self._names.insert(pos, name)
        self._commit()
        return pos

    def _renumber_from(self, pos: int) -> None:
        # Symbol indices >= pos move up by one: rewrite every reference by index.
        elf = self.elf
        for sec in elf.sections:
            if sec.sh_link != self.section.index:
                continue
            if sec.sh_type in (SHT.REL, SHT.RELA):
                elf.relocations(sec).renumber_symbols(pos, 1)
            elif sec.sh_type == SHT.GROUP and sec.sh_info >= pos:
                sec.sh_info += 1
                elf.modified = True


def _decode_names(data: bytes, offsets: list[int]) -> list[str]:
    # Most st_name values point at the start of a string: split the table once and
    # look those up; the rest (tail-shared strings) are cut out one by one.
    if data.isascii():
        text = data.decode("ascii")
        starts: dict[int, str] = {}
        pos = 0
        for part in text.split("\0"):
            starts[pos] = part
            pos += len(part) + 1
        find = text.find
        return [starts[o] if o in starts else text[o : find("\0", o)] for o in offsets]
    find_b = data.find
    return [data[o : find_b(b"\0", o)].decode("utf-8", "surrogateescape") for o in offsets]
