"""numpy structured dtypes for the ELF symbol and relocation arrays.

Kept apart from :mod:`klpelf.elf.layout` so that importing the ELF model does not
import numpy: the CLI pays for numpy only when it decodes a table.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from klpelf.elf.layout import Layout

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile, Section


@cache
def sym_dtype(layout: Layout) -> np.dtype[np.void]:
    e = layout.byteorder
    if layout.is64:
        fields = [
            ("st_name", e + "u4"), ("st_info", "u1"), ("st_other", "u1"),
            ("st_shndx", e + "u2"), ("st_value", e + "u8"), ("st_size", e + "u8"),
        ]  # fmt: skip
    else:
        fields = [
            ("st_name", e + "u4"), ("st_value", e + "u4"), ("st_size", e + "u4"),
            ("st_info", "u1"), ("st_other", "u1"), ("st_shndx", e + "u2"),
        ]  # fmt: skip
    dt = np.dtype(fields)
    assert dt.itemsize == layout.sym_size
    return dt


@cache
def rel_dtype(layout: Layout, rela: bool) -> np.dtype[np.void]:
    e = layout.byteorder
    w = "8" if layout.is64 else "4"
    fields = [("r_offset", e + "u" + w), ("r_info", e + "u" + w)]
    if rela:
        fields.append(("r_addend", e + "i" + w))
    dt = np.dtype(fields)
    assert dt.itemsize == (layout.rela_size if rela else layout.rel_size)
    return dt


@cache
def shndx_dtype(layout: Layout) -> np.dtype[np.uint32]:
    return np.dtype(layout.byteorder + "u4")


class RecordTable:
    """A section holding an array of fixed-size records (symbols, relocations).

    Checks sh_entsize and sh_size against the record size and decodes the records
    as one read-only numpy array over the section's bytes.
    """

    def __init__(self, elf: ElfFile, section: Section, dtype: np.dtype[np.void]) -> None:
        self.elf = elf
        self.section = section
        if section.sh_entsize != dtype.itemsize:
            raise elf.error(
                f"sh_entsize is {section.sh_entsize}, expected {dtype.itemsize}", section
            )
        if section.sh_size % dtype.itemsize:
            raise elf.error(
                f"size {section.sh_size:#x} is not a multiple of the entry size {dtype.itemsize}",
                section,
            )
        self._arr: npt.NDArray[np.void] = np.frombuffer(section.data, dtype=dtype)

    def __len__(self) -> int:
        return len(self._arr)

    @property
    def array(self) -> npt.NDArray[np.void]:
        """The raw records (read-only view; use the edit methods to change them)."""
        return self._arr


def as_bytes(arr: npt.NDArray[np.generic]) -> memoryview:
    """The bytes of a C-contiguous array, without copying (for the writer)."""
    return np.ascontiguousarray(arr).view(np.uint8).data
