"""numpy structured dtypes for the ELF symbol and relocation arrays.

Kept apart from :mod:`klpelf.elf.layout` so that importing the ELF model does not
import numpy: the CLI pays for numpy only when it decodes a table.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from klpelf.elf.layout import Layout


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
