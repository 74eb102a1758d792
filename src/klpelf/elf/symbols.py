"""Symbol tables (SHT_SYMTAB, SHT_DYNSYM): lists of fields, or a numpy structured array.

The array keeps the file's byte order and field layout, so an unmodified table
serialises back to the very same bytes.  Symbol indices are the array's indices
and never change under :meth:`SymbolTable.set_symbol` or when a global symbol is
added: livepatch modules keep their symbol table 1:1 (module-elf-format.rst §4.1),
because relocations name symbols by index.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from klpelf.elf.arrays import (
    RecordTable,
    as_bytes,
    decode_u32,
    encode_u32,
    shndx_dtype,
    sym_record,
)
from klpelf.elf.constants import SHN, SHT, STB, STT
from klpelf.elf.strtab import StringTable, encode_name
from klpelf.errors import ElfEditError, ElfFormatError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from klpelf.elf.file import ElfFile, Section


def st_info(bind: int, type_: int) -> int:
    """ELF_ST_INFO(bind, type)."""
    return (bind << 4) | (type_ & 0xF)


class Symbol(NamedTuple):
    """One symbol-table entry, as a value (a snapshot; edits go through the table)."""

    index: int  # type: ignore[assignment]  # a field: hides tuple.index()
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

    ``len()``, indexing and iteration give :class:`Symbol` values.  Reading needs no
    numpy (:meth:`column`, :meth:`names`, :meth:`shndx_list` ...); the ``*_array``
    properties use it, and the edits of a big file.

    Malformed contents raise :class:`~klpelf.errors.ElfFormatError` when the view is
    made (entry size, st_name, section indices); an edit that would break the object
    raises :class:`~klpelf.errors.ElfEditError`.  Indexing past the end raises
    IndexError, as any sequence does: that index comes from the caller, not from
    the file (the indices that relocations hold are checked).
    """

    def __init__(self, elf: ElfFile, section: Section) -> None:
        if section.sh_type not in (SHT.SYMTAB, SHT.DYNSYM):
            raise elf.error("is not a symbol table", section)
        super().__init__(elf, section, sym_record(elf.layout))
        self.strtab: StringTable = elf.strtab(elf.section(section.sh_link))
        n = len(self)
        if section.sh_info > n:
            raise elf.error(
                f"sh_info {section.sh_info} (first non-local symbol) is past the {n} symbols",
                section,
            )
        self._names: list[str] | None = None
        # names decoded one by one (name()), by index, and their bytes together: the
        # same budget as names() (see _decode_names)
        self._named: dict[int, str] = {}
        self._named_bytes = 0
        self._shndx_sec: Section | None = None
        self._xindex_arr: npt.NDArray[np.uint32] | None = None
        self._xindex_list: list[int] | None = None
        for s in elf.sections:
            if s.sh_type == SHT.SYMTAB_SHNDX and s.sh_link == section.index:
                if s.sh_size != n * 4:
                    raise elf.error(
                        f"SHT_SYMTAB_SHNDX size {s.sh_size:#x} does not match the "
                        f"{n} symbols of {section}", s
                    )  # fmt: skip
                self._shndx_sec = s
                break
        if self.vector:
            self._check_vector()
        else:
            self._check()

    @property
    def shndx_section(self) -> Section | None:
        """The SHT_SYMTAB_SHNDX section of this table, if it has one."""
        return self._shndx_sec

    @property
    def _xindex(self) -> npt.NDArray[np.uint32] | None:
        """The SHT_SYMTAB_SHNDX entries as a numpy array, None without that section."""
        if self._xindex_arr is None and self._shndx_sec is not None:
            import numpy as np

            dt = shndx_dtype(self.elf.layout)
            self._xindex_arr = np.frombuffer(self._shndx_sec.data, dtype=dt)
        return self._xindex_arr

    @_xindex.setter
    def _xindex(self, value: npt.NDArray[np.uint32]) -> None:
        self._xindex_arr = value
        self._xindex_list = None

    def _xindex_values(self) -> list[int] | None:
        """The SHT_SYMTAB_SHNDX entries as a list, None without that section."""
        if self._xindex_list is None and self._shndx_sec is not None:
            if self._xindex_arr is not None:
                self._xindex_list = self._xindex_arr.tolist()
            else:
                self._xindex_list = decode_u32(self._shndx_sec.data, self.elf.layout.byteorder)
        return self._xindex_list

    def _check(self) -> None:
        n, strsize = len(self), len(self.strtab)
        if not n:
            return
        st_name = self.column("st_name")
        if max(st_name) >= max(strsize, 1):
            bad = next(i for i, o in enumerate(st_name) if o >= strsize)
            raise self._name_error(bad, st_name[bad])
        shnum = len(self.elf.sections)
        shndx = self.shndx_list()
        if max(shndx) < shnum:
            return
        # past the section count: fine for a reserved index (SHN_ABS, SHN_LIVEPATCH ...),
        # not for an ordinary one or an SHN_XINDEX resolved through SHT_SYMTAB_SHNDX
        xindex = self._shndx_sec is not None
        raw = self.column("st_shndx")
        for i, (r, s) in enumerate(zip(raw, shndx, strict=True)):
            if s >= shnum and (r < SHN.LORESERVE or (xindex and r == SHN.XINDEX)):
                raise self._shndx_error(i, s, shnum)

    def _check_vector(self) -> None:
        # _check() with numpy, for big files
        import numpy as np

        arr = self._arr
        if not len(arr):
            return
        if int(arr["st_name"].max()) >= max(len(self.strtab), 1):
            bad = int(np.argmax(arr["st_name"] >= len(self.strtab)))
            raise self._name_error(bad, int(arr["st_name"][bad]))
        shnum = len(self.elf.sections)
        shndx = self.shndx_array
        bad_mask = (shndx >= shnum) & (arr["st_shndx"] < SHN.LORESERVE)
        if self._xindex is not None:
            bad_mask |= (arr["st_shndx"] == SHN.XINDEX) & (self._xindex >= shnum)
        if bad_mask.any():
            bad = int(np.argmax(bad_mask))
            raise self._shndx_error(bad, int(shndx[bad]), shnum)

    def _name_error(self, index: int, st_name: int) -> ElfFormatError:
        return self.elf.error(
            f"symbol {index}: st_name {st_name:#x} is past the end of the string table "
            f"(size {len(self.strtab):#x})",
            self.section,
        )

    def _shndx_error(self, index: int, shndx: int, shnum: int) -> ElfFormatError:
        return self.elf.error(
            f"symbol {index} ('{self.name(index)}'): section index {shndx} is out of "
            f"range (0..{shnum - 1})",
            self.section,
        )

    # --- reading ------------------------------------------------------------------

    @property
    def first_global(self) -> int:
        """Index of the first non-local symbol: the symbol table's sh_info."""
        return self.section.sh_info

    def shndx_list(self) -> list[int]:
        """Section index of every symbol, with SHN_XINDEX resolved through SHT_SYMTAB_SHNDX
        (may be the cached column: do not modify it)."""
        raw = self.column("st_shndx")
        xindex = self._xindex_values()
        if xindex is None or SHN.XINDEX not in raw:
            return raw
        return [x if r == SHN.XINDEX else r for r, x in zip(raw, xindex, strict=True)]

    def binds(self) -> list[int]:
        """ELF_ST_BIND of every symbol."""
        return [i >> 4 for i in self.column("st_info")]

    def types(self) -> list[int]:
        """ELF_ST_TYPE of every symbol."""
        return [i & 0xF for i in self.column("st_info")]

    @property
    def shndx_array(self) -> npt.NDArray[np.uint32]:
        """Section index of every symbol, with SHN_XINDEX resolved through SHT_SYMTAB_SHNDX."""
        import numpy as np

        raw = self._arr["st_shndx"].astype(np.uint32)
        if self._xindex is not None:
            x = raw == SHN.XINDEX
            raw[x] = self._xindex[x]
        return raw

    @property
    def bind_array(self) -> npt.NDArray[np.uint8]:
        import numpy as np

        return (self._arr["st_info"] >> 4).astype(np.uint8)

    @property
    def type_array(self) -> npt.NDArray[np.uint8]:
        import numpy as np

        return (self._arr["st_info"] & 0xF).astype(np.uint8)

    def name(self, index: int) -> str:
        if self._names is not None:
            return self._names[index]
        name = self._named.get(index)
        return name if name is not None else self._decode(index, self.field(index, "st_name"))

    def _decode(self, index: int, st_name: int) -> str:
        # one name decoded by itself, kept, and counted against the names' budget
        name = self.strtab.get(st_name)
        self._named_bytes += len(name)
        if self._named_bytes > self._name_budget():
            raise self._name_budget_error(self._named_bytes)
        self._named[index] = name
        return name

    def _name_budget(self) -> int:
        return NAME_BYTES_FACTOR * (len(self.strtab) + self.section.sh_size) + (1 << 16)

    def _name_budget_error(self, total: int) -> ElfFormatError:
        return self.elf.error(
            f"the symbols' names add up to more than {total:#x} bytes, over "
            f"{NAME_BYTES_FACTOR} times the symbol and string tables: symbols share or "
            "overlap long names",
            self.section,
        )

    def names(self) -> list[str]:
        """Every symbol's name, in index order (decoded once and cached)."""
        if self._names is None:
            data = bytes(self.strtab.data)
            try:
                self._names = _decode_names(data, self.column("st_name"), self._name_budget())
            except _NameBudgetError as e:
                raise self._name_budget_error(e.total) from None
            self._named.clear()
        return self._names

    def names_at(self, indices: Sequence[int]) -> list[str]:
        """``[self.name(i) for i in indices]``, without decoding every name."""
        if self._names is not None:
            names = self._names
            return [names[i] for i in indices]
        named = self._named
        todo = list(dict.fromkeys(i for i in indices if i not in named))
        if len(todo) >= 64:  # their offsets in one conversion, each name sliced at once
            data, budget, total = self.strtab.data, self._name_budget(), self._named_bytes
            size = len(data)
            for i, offset in zip(todo, self.column_at("st_name", todo), strict=True):
                if offset >= size:
                    self._named_bytes = total
                    self._decode(i, offset)  # the string table's error
                name = data[offset : data.index(0, offset)].decode("utf-8", "surrogateescape")
                total += len(name)
                if total > budget:
                    raise self._name_budget_error(total)
                named[i] = name
            self._named_bytes = total
            return [named[i] for i in indices]
        st_name = self.column("st_name")
        return [named.get(i) or self._decode(i, st_name[i]) for i in indices]

    def symbols_at(self, indices: Sequence[int]) -> list[Symbol]:
        """``[self[i] for i in indices]`` (in range), for many: one conversion of the
        records wanted (numpy tables) or the decoded columns, where one record at a
        time costs a conversion per field."""
        if len(indices) < 64:
            return [self[i] for i in indices]
        order = ("st_name", "st_info", "st_other", "st_shndx", "st_value", "st_size")
        if self._array is not None:
            import numpy as np

            picked = self._array[np.asarray(indices, dtype=np.intp)][list(order)]
            rows: list[tuple[int, ...]] = picked.tolist()
        else:
            rows = list(zip(*(self.column(name) for name in order), strict=True))
            rows = [rows[i] for i in indices]
        xindex = self._xindex_values() if self._shndx_sec is not None else None
        names, named = self._names, self._named
        out = []
        for i, (st_name, st_info, st_other, st_shndx, st_value, st_size) in zip(
            indices, rows, strict=True
        ):
            shndx = xindex[i] if xindex is not None and st_shndx == SHN.XINDEX else st_shndx
            name = names[i] if names is not None else named.get(i) or self._decode(i, st_name)
            out.append(Symbol(i, name, st_name, st_info, st_other, st_shndx, st_value, st_size,
                              shndx))  # fmt: skip
        return out

    def __getitem__(self, index: int) -> Symbol:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"symbol index {index} out of range (0..{n - 1})")
        r = self._row(index)
        st_shndx = r["st_shndx"]
        shndx = st_shndx
        xindex = self._xindex_values() if st_shndx == SHN.XINDEX else None
        if xindex is not None:
            shndx = xindex[index]
        return Symbol(
            index, self.name(index), r["st_name"], r["st_info"], r["st_other"],
            st_shndx, r["st_value"], r["st_size"], shndx,
        )  # fmt: skip

    def __iter__(self) -> Iterator[Symbol]:
        for i in range(len(self)):
            yield self[i]

    def indices_with_prefix(self, prefix: str) -> list[int]:
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
            return []
        if self.vector:
            import numpy as np

            found = np.isin(self._arr["st_name"], np.array(hits, dtype=np.uint32))
            return np.flatnonzero(found).tolist()
        at = set(hits)
        return [i for i, o in enumerate(self.column("st_name")) if o in at]

    def indices_where_shndx(self, value: int) -> list[int]:
        """Indices of the symbols whose raw st_shndx equals ``value`` (e.g. SHN_LIVEPATCH)."""
        if self.vector:
            import numpy as np

            return np.flatnonzero(self._arr["st_shndx"] == value).tolist()
        return [i for i, v in enumerate(self.column("st_shndx")) if v == value]

    # --- edits --------------------------------------------------------------------
    # Each edit has a plain-Python form (small files) and a numpy form (big files,
    # VECTOR_THRESHOLD); both leave the same bytes.

    def _writable(self) -> npt.NDArray[np.void]:
        if not self._arr.flags.writeable:
            self._arr = self._arr.copy()
        return self._arr

    def _commit(self) -> None:
        self._columns.clear()
        self._committed()
        sec = self._shndx_sec
        if sec is None:
            return
        if self._xindex_arr is not None:
            xindex = self._xindex_arr
            sec.set_pending(xindex.nbytes, lambda: as_bytes(xindex), self)
        elif self._xindex_list is not None:
            values, order = self._xindex_list, self.elf.layout.byteorder
            sec.set_pending(4 * len(values), lambda: encode_u32(values, order), self)

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
        if not 0 < index < len(self):
            raise ElfEditError(f"symbol index {index} out of range (1..{len(self) - 1})")
        if st_shndx == SHN.XINDEX and self._shndx_sec is None:
            raise ElfEditError("SHN_XINDEX needs an SHT_SYMTAB_SHNDX section")
        if st_info is not None:
            self._rebind(index, st_info >> 4 == STB.LOCAL)
        values = {"st_info": st_info, "st_other": st_other, "st_shndx": st_shndx,
                  "st_value": st_value, "st_size": st_size}  # fmt: skip
        if name is not None:
            values["st_name"] = self.strtab.add(name)
            self._named.pop(index, None)
            if self._names is not None:
                self._names[index] = name
        if self.vector:
            arr = self._writable()
            for fld, val in values.items():
                if val is not None:
                    arr[fld][index] = val
            self._commit()
            return
        row = self._row(index)
        row.update((fld, val) for fld, val in values.items() if val is not None)
        self._pack(index, row)
        self._committed()

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
        if st_shndx == SHN.XINDEX and self._shndx_sec is None:
            raise ElfEditError("SHN_XINDEX needs an SHT_SYMTAB_SHNDX section")
        row = {"st_name": self.strtab.add(name), "st_info": st_info, "st_other": st_other,
               "st_shndx": st_shndx, "st_value": st_value, "st_size": st_size}  # fmt: skip
        pos = len(self)
        if st_info >> 4 == STB.LOCAL:
            pos = self.section.sh_info
            self._renumber_from(pos)
            self.section.sh_info += 1
        if self.vector:
            self._insert_vector(pos, row, xindex)
        else:
            rec = self.record
            data = self._records()[: len(self) * rec.size]
            new = rec.codec.pack(*(row[n] for n, _ in rec.fields))
            at = pos * rec.size
            self._set_buf(bytearray(b"".join((data[:at], new, data[at:]))))
            if self._shndx_sec is not None:
                values = list(self._xindex_values() or [])
                values.insert(pos, xindex)
                self._xindex_arr, self._xindex_list = None, values
        self._named.clear()  # indices from pos on move
        if self._names is not None:
            self._names.insert(pos, name)
        self._commit()
        return pos

    def _insert_vector(self, pos: int, row: dict[str, int], xindex: int) -> None:
        import numpy as np

        new = np.zeros(1, dtype=self._arr.dtype)
        for fld, val in row.items():
            new[fld] = val
        # np.concatenate would convert to native byte order; keep the file's
        self._arr = np.concatenate([self._arr[:pos], new, self._arr[pos:]], dtype=self._arr.dtype)
        if self._xindex is not None:
            self._xindex = np.concatenate(
                [self._xindex[:pos], np.array([xindex], self._xindex.dtype), self._xindex[pos:]]
            )

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


#: how many times the bytes of the string and symbol tables the symbols' names may add
#: up to (see :meth:`SymbolTable.names`)
NAME_BYTES_FACTOR = 4


class _NameBudgetError(Exception):
    def __init__(self, total: int) -> None:
        self.total = total


def _decode_names(data: bytes, offsets: list[int], budget: int) -> list[str]:
    # Most st_name values point at the start of a string: split the table once and
    # look those up; the rest (tail-shared strings) are cut out one by one.  Symbols
    # may share one name, or each point into the tail of a long one: every reader does
    # per-name work, so the names together must stay within `budget` bytes (20,000
    # symbols naming one 50 KB string drove show to 10 GB), else _NameBudgetError.
    total = 0
    if data.isascii():
        text = data.decode("ascii")
        starts: dict[int, str] = {}
        pos = 0
        for part in text.split("\0"):
            starts[pos] = part
            pos += len(part) + 1
        find = text.find
        out = []
        for o in offsets:
            name = starts.get(o)
            if name is None:
                end = find("\0", o)
                total += end - o
                if total > budget:
                    raise _NameBudgetError(total)
                name = text[o:end]
            else:
                total += len(name)
                if total > budget:
                    raise _NameBudgetError(total)
            out.append(name)
        return out
    find_b = data.find
    out = []
    for o in offsets:
        end = find_b(b"\0", o)
        total += end - o
        if total > budget:
            raise _NameBudgetError(total)
        out.append(data[o:end].decode("utf-8", "surrogateescape"))
    return out
