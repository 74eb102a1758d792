"""The record layouts of ELF symbol and relocation tables, decoded two ways.

A small table is decoded with the standard library (:mod:`array` and :mod:`struct`)
into plain lists; a big one into a numpy structured array, so that huge modules
(amdgpu.ko: 320,000 relocations) are checked without a Python object per record.
Which one a file gets depends on how many records it holds in all (see
:func:`use_vector`): ``klpelf check`` of a livepatch module then never pays for
importing numpy (45-70 ms, more than the rest of the command).  numpy is imported
on first use only, by the functions that need it.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from functools import cache
from typing import TYPE_CHECKING

from klpelf.elf.layout import Layout

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    import numpy.typing as npt

    from klpelf.elf.file import ElfFile, Section


def _threshold() -> int:
    value = os.environ.get("KLPELF_VECTOR_THRESHOLD", "")
    try:
        return max(int(value), 0)
    except ValueError:
        return 50_000


#: Files with at least this many symbol and relocation records (all tables together)
#: are decoded and checked with numpy; smaller ones with plain Python.  Both give the
#: same results.  ``klpelf check`` costs about 0.6 us a record in plain Python, 0.2 us
#: with numpy plus the 45-70 ms of importing it: even at the threshold, plain Python
#: is the faster CLI (a livepatch module holds a few thousand records; xfs.ko 88,000,
#: amdgpu.ko 346,000).  ``$KLPELF_VECTOR_THRESHOLD`` sets it (0: always numpy); tests
#: monkeypatch it to force one path.
VECTOR_THRESHOLD: int = _threshold()


def use_vector(elf: ElfFile) -> bool:
    """Whether the tables of ``elf`` are handled with numpy (see VECTOR_THRESHOLD)."""
    return elf.record_count >= VECTOR_THRESHOLD


# struct format code -> numpy type (the array module shares the struct codes)
_NUMPY_TYPE = {"B": "u1", "H": "u2", "I": "u4", "Q": "u8", "i": "i4", "q": "i8"}
_NATIVE = "<" if sys.byteorder == "little" else ">"
assert all(array(c).itemsize == int(t[1]) for c, t in _NUMPY_TYPE.items())


class RecordLayout:
    """A fixed-size record: its fields in file order, as (name, struct code)."""

    __slots__ = ("_dtype", "byteorder", "codec", "fields", "offsets", "size")

    def __init__(self, byteorder: str, fields: tuple[tuple[str, str], ...]) -> None:
        self.byteorder = byteorder  # "<" or ">"
        self.fields = fields
        #: field name -> (byte offset in the record, struct code)
        self.offsets: dict[str, tuple[int, str]] = {}
        off = 0
        for name, code in fields:
            width = array(code).itemsize
            assert off % width == 0, "ELF record fields are naturally aligned"
            self.offsets[name] = (off, code)
            off += width
        self.size = off
        #: the struct codec of one record
        self.codec = struct.Struct(byteorder + "".join(code for _, code in fields))
        self._dtype: np.dtype[np.void] | None = None

    def dtype(self) -> np.dtype[np.void]:
        """The numpy structured dtype of the record (imports numpy)."""
        if self._dtype is None:
            import numpy as np

            e = self.byteorder
            self._dtype = np.dtype([(name, e + _NUMPY_TYPE[code]) for name, code in self.fields])
            assert self._dtype.itemsize == self.size
        return self._dtype


@cache
def sym_record(layout: Layout) -> RecordLayout:
    """Elf32_Sym / Elf64_Sym."""
    if layout.is64:
        fields = (
            ("st_name", "I"), ("st_info", "B"), ("st_other", "B"), ("st_shndx", "H"),
            ("st_value", "Q"), ("st_size", "Q"),
        )  # fmt: skip
    else:
        fields = (
            ("st_name", "I"), ("st_value", "I"), ("st_size", "I"), ("st_info", "B"),
            ("st_other", "B"), ("st_shndx", "H"),
        )  # fmt: skip
    rec = RecordLayout(layout.byteorder, fields)
    assert rec.size == layout.sym_size
    return rec


@cache
def rel_record(layout: Layout, rela: bool) -> RecordLayout:
    """Elf32_Rel / Elf64_Rel, or with ``rela`` Elf32_Rela / Elf64_Rela."""
    w = "Q" if layout.is64 else "I"
    fields = [("r_offset", w), ("r_info", w)]
    if rela:
        fields.append(("r_addend", w.lower()))
    rec = RecordLayout(layout.byteorder, tuple(fields))
    assert rec.size == (layout.rela_size if rela else layout.rel_size)
    return rec


def sym_dtype(layout: Layout) -> np.dtype[np.void]:
    return sym_record(layout).dtype()


def rel_dtype(layout: Layout, rela: bool) -> np.dtype[np.void]:
    return rel_record(layout, rela).dtype()


@cache
def shndx_dtype(layout: Layout) -> np.dtype[np.uint32]:
    import numpy as np

    return np.dtype(layout.byteorder + "u4")


def decode_column(data: bytes | bytearray | memoryview, rec: RecordLayout, name: str) -> list[int]:
    """Field ``name`` of every record in ``data`` (a whole number of records), as ints."""
    off, code = rec.offsets[name]
    values = array(code)
    values.frombytes(data)
    if rec.byteorder != _NATIVE and values.itemsize > 1:
        values.byteswap()
    width = values.itemsize
    return values[off // width :: rec.size // width].tolist()


def decode_u32(data: bytes | bytearray | memoryview, byteorder: str) -> list[int]:
    """``data`` as an array of 32-bit words (SHT_SYMTAB_SHNDX)."""
    values = array("I")
    values.frombytes(data[: len(data) // 4 * 4])
    if byteorder != _NATIVE:
        values.byteswap()
    return values.tolist()


def encode_u32(values: list[int], byteorder: str) -> bytes:
    """32-bit words as bytes in ``byteorder`` (the inverse of :func:`decode_u32`)."""
    words = array("I", values)
    if byteorder != _NATIVE:
        words.byteswap()
    return words.tobytes()


class RecordTable:
    """A section holding an array of fixed-size records (symbols, relocations).

    Checks sh_entsize and sh_size against the record size.  The records are decoded
    on demand: one field at a time into lists (:meth:`column`), or all at once into a
    numpy structured array over the section's bytes (:attr:`array`).

    The edit methods of the subclasses work on plain bytes for a small file and on
    the numpy array for a big one (:func:`use_vector`); both write the same bytes.
    Either way the edited table is the truth for its section: the edit keeps a
    working copy (``_buf``, a bytearray, or ``_array``), and the section's bytes are
    serialised from it when they are next read (:meth:`Section.set_pending`).
    """

    def __init__(
        self, elf: ElfFile, section: Section, record: RecordLayout, *, strict: bool = True
    ) -> None:
        self.elf = elf
        self.section = section
        self.record = record
        size = record.size
        self._array: npt.NDArray[np.void] | None = None
        #: the records after a plain-Python edit (None: the section's bytes, or _array)
        self._buf: bytearray | None = None
        self._columns: dict[str, list[int]] = {}
        if not strict:
            # records as a reader that ignores sh_entsize takes them: whole records
            # of the section's bytes, a partial one at the end dropped
            self._count = len(section.data) // size
            return
        if section.sh_entsize != size:
            raise elf.error(f"sh_entsize is {section.sh_entsize}, expected {size}", section)
        if section.sh_size % size:
            raise elf.error(
                f"size {section.sh_size:#x} is not a multiple of the entry size {size}",
                section,
            )
        self._count = len(section.data) // size

    def __len__(self) -> int:
        return self._count

    @property
    def vector(self) -> bool:
        """Whether this table's file is handled with numpy (:func:`use_vector`)."""
        return use_vector(self.elf)

    def _records(self) -> bytes | bytearray | memoryview:
        """The bytes of the records as they are now (after any edit)."""
        if self._buf is not None:
            return self._buf
        return self.section.data

    @property
    def array(self) -> npt.NDArray[np.void]:
        """The raw records (read-only view; use the edit methods to change them)."""
        if self._array is None:
            import numpy as np

            n = self._count * self.record.size
            # over the section's bytes (no copy), or a copy of an edited table's
            data = self.section.data[:n] if self._buf is None else bytes(self._buf[:n])
            self._array = np.frombuffer(data, dtype=self.record.dtype())
            self._buf = None  # the array is the truth from now on
        return self._array

    @property
    def _arr(self) -> npt.NDArray[np.void]:
        return self.array

    @_arr.setter
    def _arr(self, value: npt.NDArray[np.void]) -> None:
        self._array = value
        self._buf = None
        self._count = len(value)
        self._columns.clear()

    def column(self, name: str) -> list[int]:
        """Field ``name`` of every record, as a list of ints (cached: do not modify it)."""
        col = self._columns.get(name)
        if col is None:
            if self._array is not None:
                col = self._array[name].tolist()
            else:
                data = self._records()
                col = decode_column(data[: self._count * self.record.size], self.record, name)
            self._columns[name] = col
        return col

    def column_at(self, name: str, indices: Sequence[int]) -> list[int]:
        """``[self.field(i, name) for i in indices]`` (in range), in one conversion."""
        col = self._columns.get(name)
        if col is None and self._array is not None:
            import numpy as np

            return self._array[name][np.asarray(indices, dtype=np.intp)].tolist()  # type: ignore[no-any-return]
        col = self.column(name)
        return [col[i] for i in indices]

    def field(self, index: int, name: str) -> int:
        """Field ``name`` of record ``index`` (in range), without decoding the column
        (an edited table drops its columns: one lookup must not rebuild them)."""
        col = self._columns.get(name)
        if col is not None:
            return col[index]
        return self._row(index)[name]

    def _row(self, index: int) -> dict[str, int]:
        """Every field of record ``index`` (in range)."""
        if self._array is not None:
            # one conversion of the whole record (a tuple of ints), not one per field
            values = self._array[index].item()
            return {name: v for (name, _), v in zip(self.record.fields, values, strict=True)}
        rec = self.record
        values = rec.codec.unpack_from(self._records(), index * rec.size)
        return {name: v for (name, _), v in zip(rec.fields, values, strict=True)}

    # --- the plain-Python edits (small files) -------------------------------------

    def _editable(self) -> bytearray:
        """The records as a bytearray to edit in place (made once, then reused)."""
        if self._buf is None:
            n = self._count * self.record.size
            self._buf = bytearray(self._records()[:n])
            self._array = None
        return self._buf

    def _set_buf(self, buf: bytearray) -> None:
        """The records are ``buf`` now (a new bytearray: never resize one in place,
        a numpy view of it may exist)."""
        self._buf = buf
        self._array = None
        self._count = len(buf) // self.record.size
        self._columns.clear()

    def _pack(self, index: int, row: dict[str, int]) -> None:
        """Write record ``index`` (in range) from ``row`` into the working copy."""
        rec = self.record
        rec.codec.pack_into(self._editable(), index * rec.size, *(row[n] for n, _ in rec.fields))
        # the cached columns may be held by a caller as they were: new ones on demand
        self._columns.clear()

    def _serialise(self) -> bytes | bytearray | memoryview:
        if self._buf is not None:
            return bytes(self._buf)
        return as_bytes(self.array)

    def _committed(self) -> None:
        """The records changed: the section's bytes come from this table from now on."""
        self.section.set_pending(self._count * self.record.size, self._serialise, self)


def as_bytes(arr: npt.NDArray[np.generic]) -> memoryview:
    """The bytes of a C-contiguous array, without copying (for the writer)."""
    import numpy as np

    return np.ascontiguousarray(arr).view(np.uint8).data
