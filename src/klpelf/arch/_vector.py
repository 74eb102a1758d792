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
    "symbol_columns",
    "write_free",
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


def write_free(target: bytearray, offsets: npt.NDArray[np.uint64], values: npt.NDArray[np.uint64],
               widths: npt.NDArray[np.uint8], byteorder: str) -> bool:  # fmt: skip
    """Write the low ``widths[i]`` bytes of each value at its offset (width 0: nothing),
    in the machine's byte order, when the places of the entries that write are
    disjoint, inside the section and hold zero bytes: then no entry can stop the walk
    or see what another wrote, and the order of the writes does not matter.  False,
    and ``target`` as it was, when they are not.

    Block by block, in the places' order: each block is checked (disjoint, also from
    the block before; inside; zero) and then written, so that its offsets are
    gathered once for both.  A later block that fails undoes the writes before it by
    writing zeros back: every place written was checked zero, and none overlaps."""
    offs, ws, vals = offsets, widths, values
    if not bool(widths.all()):
        live = widths > 0
        offs, ws, vals = offsets[live], widths[live], values[live]
    if not len(offs):
        return True
    if len(offs) > 1 and not bool(np.all(offs[1:] >= offs[:-1])):
        order = np.argsort(offs, kind="stable")
        offs, ws, vals = offs[order], ws[order], vals[order]
    if int(offs[-1]) >= len(target):  # (and offs + ws cannot wrap around)
        return False
    data = np.frombuffer(target, dtype=np.uint8)
    done = 0
    for sl in blocks(len(offs)):
        o, w = offs[sl], ws[sl]
        ends = o + w
        # disjoint (each place ends where the next may start, across blocks too)
        fits = bool(np.all(ends[:-1] <= o[1:])) and int(ends[-1]) <= len(target)
        if fits and sl.stop < len(offs):
            fits = int(ends[-1]) <= int(offs[sl.stop])
        groups = _groups(o, w) if fits else []
        if not fits or not all(_zero_at(data, at, width) for width, at, _ in groups):
            if done:
                _write(data, [(width, at, np.zeros(len(at), U64)) for width, at, _ in
                              _groups(offs[:done], ws[:done])], byteorder)  # fmt: skip
            return False
        _write(data, [(width, at, vals[sl][sel]) for width, at, sel in groups], byteorder)
        done = sl.stop
    return True


def _groups(offs: npt.NDArray[np.uint64], ws: npt.NDArray[np.uint8]
            ) -> list[tuple[int, npt.NDArray[np.intp], slice | npt.NDArray[np.bool_]]]:  # fmt: skip
    # (width, the places' offsets, which entries) per width present
    if bool((ws == ws[0]).all()):
        return [(int(ws[0]), offs.astype(np.intp), slice(None))]
    out: list[tuple[int, npt.NDArray[np.intp], slice | npt.NDArray[np.bool_]]] = []
    for width in np.flatnonzero(np.bincount(ws)).tolist():
        sel = ws == width
        out.append((width, offs[sel].astype(np.intp), sel))
    return out


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


def _zero_at(data: npt.NDArray[np.uint8], at: npt.NDArray[np.intp], width: int) -> bool:
    # a gather of whole places (byte order does not matter for zero)
    if width in _WINDOW_WIDTHS:
        return not bool(_windows(data, width, "little")[at].any())
    return not any(bool(data[at + k].any()) for k in range(width))


_WINDOW_WIDTHS = frozenset((1, 2, 4, 8))


def _write(data: npt.NDArray[np.uint8],
           groups: list[tuple[int, npt.NDArray[np.intp], npt.NDArray[np.uint64]]],
           byteorder: str) -> None:  # fmt: skip
    # the low `width` bytes of each value at its place, per width
    big = byteorder == "big"
    for width, at, values in groups:
        if width in _WINDOW_WIDTHS:
            # the cast keeps the value's low bytes, the window stores them in order
            _windows(data, width, byteorder)[at] = values.astype(f"u{width}")
            continue
        v = values.copy()
        pos = at + (width - 1 if big else 0)  # the low byte goes last when big-endian
        for _ in range(width):
            data[pos] = v.astype(np.uint8)
            v >>= U64(8)
            pos += -1 if big else 1
