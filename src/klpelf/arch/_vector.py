"""The common case of ``apply_relocate_add()`` for a whole relocation section at once.

A module with hundreds of thousands of relocations (amdgpu.ko: 320,000) spends
seconds in a walk that takes one Python step per entry.  Yet in the common case
nothing depends on the order of the entries: every symbol's value is known, every
value is in its type's range, and the places are disjoint, inside the section and
(where the kernel checks) zero.  Then the section's bytes after the walk are the
file's with every value written, whatever the order, and the machine's vector twin
(``vector_relocate_add`` of an arch file) computes them with numpy, one operation
per relocation type.  Anything else (an unknown type, an unknown symbol, an overflow,
overlapping places, a nonzero target, a type the vector twin does not compute) makes
it return None before writing anything: the caller then runs the entry-by-entry
twin, whose facts and messages are the kernel's, so the two paths never differ in
what they report (tests/unit/test_apply_vector.py compares them).

numpy is imported by the callers of this module only (it is reached only for tables
that klpelf.elf.arrays already decoded with numpy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    from klpelf.elf.relocs import RelocationTable

__all__ = ["Entries", "VectorWrites", "entries", "places_free", "scatter", "symbol_columns"]

U64 = np.uint64


class Entries(NamedTuple):
    """One relocation section's entries as numpy columns, with S known for each."""

    offsets: npt.NDArray[np.uint64]
    types: npt.NDArray[np.uint64]
    syms: npt.NDArray[np.uint64]
    #: r_addend as unsigned 64-bit (two's complement), for wrapping arithmetic
    addends: npt.NDArray[np.uint64]
    #: S of each entry (0 where unknown)
    values: npt.NDArray[np.uint64]
    #: whether S of the entry is known
    known: npt.NDArray[np.bool_]


class VectorWrites(NamedTuple):
    """What a vector twin wrote for one section: every entry was applied, none stopped.

    ``widths[i]`` 0: entry i wrote nothing (R_*_NONE, or a type klpelf does not
    model); ``values[i]`` is then meaningless.
    """

    offsets: npt.NDArray[np.uint64]
    types: npt.NDArray[np.uint64]
    syms: npt.NDArray[np.uint64]
    widths: npt.NDArray[np.uint8]
    values: npt.NDArray[np.uint64]


def symbol_columns(
    values: list[int | None],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """st_value by symbol index as the twins get it (``symbol_value``), as two arrays:
    the values (0 where unknown) and whether each is known."""
    known = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    vals = np.fromiter((v or 0 for v in values), dtype=np.uint64, count=len(values))
    return vals, known


def entries(relocs: RelocationTable, sym_values: npt.NDArray[np.uint64],
            sym_known: npt.NDArray[np.bool_]) -> Entries:  # fmt: skip
    """The columns of ``relocs`` (decoded with numpy) with S of each entry; a symbol
    index past the table is unknown, as ``symbol_value`` has it."""
    arr = relocs.array
    offsets = arr["r_offset"].astype(U64, copy=False)
    syms, types = relocs.sym_array, relocs.type_array
    n = len(sym_values)
    inside = syms < U64(n)
    index = np.where(inside, syms, U64(0)).astype(np.intp)
    values = sym_values[index]
    known = sym_known[index] & inside
    if relocs.is_rela:
        addends = arr["r_addend"].astype(np.int64, copy=False).view(U64)
    else:
        addends = np.zeros(len(arr), dtype=U64)
    return Entries(offsets, types, syms, addends, values, known)


def places_free(target: bytearray, offsets: npt.NDArray[np.uint64],
                widths: npt.NDArray[np.uint8], *, zero: bool) -> bool:  # fmt: skip
    """Whether the places of the entries that write (width > 0) are disjoint, inside
    the section and, with ``zero``, hold zero bytes: then no entry can stop the walk
    or see what another wrote, and the order of the writes does not matter."""
    live = widths > 0
    offs = offsets[live]
    if not len(offs):
        return True
    ws = widths[live]
    if len(offs) > 1 and not bool(np.all(offs[1:] >= offs[:-1])):
        order = np.argsort(offs, kind="stable")
        offs, ws = offs[order], ws[order]
    if int(offs[-1]) >= len(target):  # (and offs + ws cannot wrap around)
        return False
    ends = offs + ws.astype(U64)
    # disjoint (each place ends where the next may start), then the last ends last
    if len(offs) > 1 and not bool(np.all(ends[:-1] <= offs[1:])):
        return False
    if int(ends[-1]) > len(target):
        return False
    if not zero:
        return True
    data = np.frombuffer(target, dtype=np.uint8)
    for w in np.flatnonzero(np.bincount(ws)).tolist():
        at = offs[ws == w].astype(np.intp)
        # byte by byte: one gather per byte of the place beats one 2-D gather
        if any(bool(data[at + k].any()) for k in range(w)):
            return False
    return True


def scatter(target: bytearray, offsets: npt.NDArray[np.uint64], values: npt.NDArray[np.uint64],
            width: int, byteorder: str) -> None:  # fmt: skip
    """Write the low ``width`` bytes of each value at its offset (places checked by
    :func:`places_free`), in the machine's byte order."""
    if not len(offsets):
        return
    data = np.frombuffer(target, dtype=np.uint8)
    at = offsets.astype(np.intp)
    for k in range(width):  # byte k of the place: a shift and one scatter each
        shift = 8 * k if byteorder == "little" else 8 * (width - 1 - k)
        data[at + k] = (values >> np.uint64(shift)).astype(np.uint8)
