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

__all__ = [
    "Block",
    "Entries",
    "VectorWrites",
    "entries",
    "places_free",
    "scatter",
    "symbol_columns",
]

U64 = np.uint64


class Block(NamedTuple):
    """Entries ``[start, stop)`` of a section as numpy columns, with S of each."""

    offsets: npt.NDArray[np.uint64]
    types: npt.NDArray[np.uint64]
    syms: npt.NDArray[np.uint64]
    #: r_addend as unsigned 64-bit (two's complement), for wrapping arithmetic
    addends: npt.NDArray[np.uint64]
    #: S of each entry (0 where unknown)
    values: npt.NDArray[np.uint64]
    #: whether S of the entry is known
    known: npt.NDArray[np.bool_]


class Entries:
    """One relocation section's entries as numpy columns over the file's records, and
    the symbol values (:func:`symbol_columns`); :meth:`block` decodes a block of them
    (ELF_R_SYM, ELF_R_TYPE, S), so no whole-section temporary is made."""

    __slots__ = ("addends", "info", "offsets", "shift", "sym_known", "sym_values")

    def __init__(self, offsets: npt.NDArray[np.uint64], info: npt.NDArray[np.uint64], *,
                 shift: int, addends: npt.NDArray[np.uint64], sym_values: npt.NDArray[np.uint64],
                 sym_known: npt.NDArray[np.bool_]) -> None:  # fmt: skip
        self.offsets, self.info, self.shift, self.addends = offsets, info, shift, addends
        self.sym_values, self.sym_known = sym_values, sym_known

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def types(self) -> npt.NDArray[np.uint64]:
        """ELF_R_TYPE of every entry."""
        return self.info & U64((1 << self.shift) - 1)

    @property
    def syms(self) -> npt.NDArray[np.uint64]:
        """ELF_R_SYM of every entry."""
        return self.info >> U64(self.shift)

    def block(self, sl: slice) -> Block:
        info = self.info[sl]
        syms = info >> U64(self.shift)
        # "clip": an index past the table takes the last entry, the unknown one
        return Block(self.offsets[sl], info & U64((1 << self.shift) - 1), syms,
                     self.addends[sl], np.take(self.sym_values, syms, mode="clip"),
                     np.take(self.sym_known, syms, mode="clip"))  # fmt: skip


class VectorWrites(NamedTuple):
    """What a vector twin wrote for one section: every entry was applied, none stopped.

    ``widths[i]`` 0: entry i wrote nothing (R_*_NONE, or a type klpelf does not
    model); ``values[i]`` is then meaningless.
    """

    entries: Entries
    widths: npt.NDArray[np.uint8]
    values: npt.NDArray[np.uint64]


#: entries per block: the temporaries of a block (256 KiB of u64) are reused from one
#: block to the next (glibc raises its mmap threshold once such a chunk is freed);
#: whole-section temporaries (a few MiB each) were fresh pages every time, and their
#: page faults cost as much as the arithmetic (the walk of 300,000 entries: 5,700
#: faults, half its time).  8192 and 16384 measured 10-15% slower, whole sections 30%.
BLOCK = 32768


def blocks(n: int) -> list[slice]:
    """``range(n)`` in slices of :data:`BLOCK`."""
    return [slice(i, min(i + BLOCK, n)) for i in range(0, n, BLOCK)]


def symbol_columns(
    values: list[int | None],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """st_value by symbol index as the twins get it (``symbol_value``), as two arrays
    with one entry more than there are symbols: the values (0 where unknown) and
    whether each is known; the last one stands for any index past the table (unknown)."""
    n = len(values)
    known = np.zeros(n + 1, dtype=bool)
    known[:n] = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    vals = np.zeros(n + 1, dtype=U64)
    vals[:n] = np.fromiter((v or 0 for v in values), dtype=U64, count=n)
    return vals, known


def entries(relocs: RelocationTable, sym_values: npt.NDArray[np.uint64],
            sym_known: npt.NDArray[np.bool_]) -> Entries:  # fmt: skip
    """The entries of ``relocs`` (decoded with numpy), with the symbol values of
    :func:`symbol_columns`."""
    arr = relocs.array
    if relocs.is_rela:
        addends = arr["r_addend"].astype(np.int64, copy=False).view(U64)
    else:
        addends = np.zeros(len(arr), dtype=U64)
    return Entries(arr["r_offset"].astype(U64, copy=False), arr["r_info"].astype(U64, copy=False),
                   shift=relocs.r_sym_shift, addends=addends, sym_values=sym_values,
                   sym_known=sym_known)  # fmt: skip


def places_free(target: bytearray, offsets: npt.NDArray[np.uint64],
                widths: npt.NDArray[np.uint8], *, zero: bool) -> bool:  # fmt: skip
    """Whether the places of the entries that write (width > 0) are disjoint, inside
    the section and, with ``zero``, hold zero bytes: then no entry can stop the walk
    or see what another wrote, and the order of the writes does not matter."""
    offs, ws = offsets, widths
    if not bool(widths.all()):
        live = widths > 0
        offs, ws = offsets[live], widths[live]
    if not len(offs):
        return True
    if len(offs) > 1 and not bool(np.all(offs[1:] >= offs[:-1])):
        order = np.argsort(offs, kind="stable")
        offs, ws = offs[order], ws[order]
    if int(offs[-1]) >= len(target):  # (and offs + ws cannot wrap around)
        return False
    data = np.frombuffer(target, dtype=np.uint8)
    for sl in blocks(len(offs)):
        o, w = offs[sl], ws[sl]
        ends = o + w
        # disjoint (each place ends where the next may start, across blocks too)
        if not bool(np.all(ends[:-1] <= o[1:])):
            return False
        if sl.stop < len(offs) and int(ends[-1]) > int(offs[sl.stop]):
            return False
        if int(ends[-1]) > len(target):
            return False
        if zero and not _zeros(data, o, w):
            return False
    return True


def _windows(data: npt.NDArray[np.uint8], width: int, byteorder: str) -> npt.NDArray[np.uint64]:
    """Every ``width``-byte window of ``data`` as one unsigned integer in ``byteorder``:
    ``_windows(data, 4, "little")[i]`` is the u32 at byte i (unaligned, overlapping).
    A gather or a scatter at disjoint offsets then reads or writes whole places in
    one operation (``data`` must be writable to write)."""
    dtype = np.dtype(("<" if byteorder == "little" else ">") + f"u{width}")
    rows = np.lib.stride_tricks.as_strided(
        data, shape=(len(data) - width + 1, width), strides=(1, 1), writeable=data.flags.writeable
    )
    return rows.view(dtype)[:, 0]


def _zeros(data: npt.NDArray[np.uint8], offs: npt.NDArray[np.uint64],
           ws: npt.NDArray[np.uint8]) -> bool:  # fmt: skip
    # a gather of whole places per width (byte order does not matter for zero)
    at = offs.astype(np.intp)
    lone = int(ws[0]) if bool((ws == ws[0]).all()) else None
    for width in [lone] if lone is not None else np.flatnonzero(np.bincount(ws)).tolist():
        sel = at if lone is not None else at[ws == width]
        if width in _WINDOW_WIDTHS:
            if bool(_windows(data, width, "little")[sel].any()):
                return False
            continue
        for k in range(width):
            if bool(data[sel + k].any()):
                return False
    return True


_WINDOW_WIDTHS = frozenset((1, 2, 4, 8))


def scatter(target: bytearray, offsets: npt.NDArray[np.uint64], values: npt.NDArray[np.uint64],
            widths: npt.NDArray[np.uint8], byteorder: str) -> None:  # fmt: skip
    """Write the low ``widths[i]`` bytes of each value at its offset (places checked
    by :func:`places_free`: disjoint, inside; width 0: nothing), in the machine's
    byte order."""
    data = np.frombuffer(target, dtype=np.uint8)
    big = byteorder == "big"
    for width in np.flatnonzero(np.bincount(widths)).tolist():
        if not width:
            continue
        lone = len(widths) and int(widths[0]) == width and bool((widths == width).all())
        sel = slice(None) if lone else widths == width
        at, v = offsets[sel].astype(np.intp), values[sel]
        if width in _WINDOW_WIDTHS:
            # the cast keeps the value's low bytes, the window stores them in order
            _windows(data, width, byteorder)[at] = v.astype(f"u{width}")
            continue
        v = v.copy()
        if big:  # the low byte goes last
            at += width - 1
        for _ in range(width):
            data[at] = v.astype(np.uint8)
            v >>= U64(8)
            at += -1 if big else 1
