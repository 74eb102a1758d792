"""``/proc/kallsyms`` dumps and ``System.map`` files, parsed in bulk with numpy: the
full index.  A large file is first read name by name (:mod:`klpelf.symbols.symtext`),
which builds this index only when a question needs every line.

Both are lines of ``ADDRESS TYPE NAME``; ``/proc/kallsyms`` adds ``\\t[MODULE]`` to
module symbols (``s_show()`` in kernel/kallsyms.c prints ``"%px %c %s\\t[%s]\\n"``).
The whole file is split with vectorised operations: one row per line, names kept as
byte spans of the file (no Python object per line), addresses as ``uint64``.

Which of the two a file is, is decided by its content (:func:`parse_symbol_text`):
module lines or all-zero addresses (``kptr_restrict``) mean kallsyms.  The symbols
``scripts/kallsyms`` writes into vmlinux (``kallsyms_names``...) are in every
System.map, and in /proc/kallsyms only before Linux 6.x: the real-kernel harness's
dumps of 6.12 and 7.2 list them (and 6.12's lists x86 per-cpu symbols as ``A``,
which the System.map filter would drop).  So a file that has them and nothing else
to tell is ambiguous: it is read as System.map only when its name says so
(``System.map*``), as kallsyms otherwise; ``system.map:PATH`` or ``kallsyms:PATH``
decides explicitly.

For System.map, :func:`is_ignored_symbol` applies the filter of
``scripts/kallsyms.c`` (``is_ignored_symbol()``, v6.1-v6.3, when it still carried the
name lists that later moved into ``scripts/mksysmap``) to tell which System.map
entries are in the kernel's kallsyms table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from klpelf._record import Record
from klpelf.errors import SymbolSourceError
from klpelf.io import Buffer
from klpelf.symbols._index import IntArray, NameIndex, U8Array, U64Array, word_at, words
from klpelf.symbols.symtext import (
    KALLSYMS_TABLES,
    LINE_FORMAT,
    PSEUDO_MODULES,
    Entry,
    SymbolTextKind,
    choose_kind,
    is_ignored_symbol,
)
from klpelf.text import quoted

__all__ = [
    "PSEUDO_MODULES", "SymbolText", "SymbolTextKind", "is_ignored_symbol", "parse_symbol_text",
]  # fmt: skip

BoolArray = npt.NDArray[np.bool_]

_HEX = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
_TYPE_OK = np.zeros(256, bool)
for _c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz?-":
    _TYPE_OK[_c] = True


class SymbolText(Record):
    """A parsed kallsyms or System.map file: one row per symbol line, in file order.

    ``module[row]`` is -1 for vmlinux lines, else an index into ``modules``.
    """

    _fields = ("path", "kind", "buf", "index", "address", "type", "module", "modules", "zeroed")
    __slots__ = (*_fields, "_cache", "_vmlinux_count")

    path: str
    kind: SymbolTextKind
    buf: Buffer
    index: NameIndex
    address: npt.NDArray[np.uint64]
    type: U8Array
    module: npt.NDArray[np.int32]
    modules: list[str]
    #: every address is 0: kallsyms read without the right to see them
    #: (kptr_restrict, kallsyms_show_value()); order is then all that is known
    zeroed: bool
    _cache: dict[str, list[int]]

    def __init__(self, path: str, kind: SymbolTextKind, buf: Buffer,  # noqa: PLR0917
                 index: NameIndex, address: npt.NDArray[np.uint64], type: U8Array,
                 module: npt.NDArray[np.int32], modules: list[str],
                 zeroed: bool) -> None:  # fmt: skip
        self.path, self.kind, self.buf, self.index = path, kind, buf, index
        self.address, self.type, self.module = address, type, module
        self.modules, self.zeroed, self._cache = modules, zeroed, {}
        self._vmlinux_count: int | None = None

    def __len__(self) -> int:
        return len(self.address)

    @property
    def vmlinux_count(self) -> int:
        # counted once: every lookup of a vmlinux name asks (KernelSymbols.has_vmlinux)
        if self._vmlinux_count is None:
            self._vmlinux_count = int(np.count_nonzero(self.module == -1))
        return self._vmlinux_count

    @property
    def has_vmlinux(self) -> bool:
        return self.vmlinux_count > 0

    def rows(self, name: str) -> list[int]:
        """The rows named exactly ``name``, in file order."""
        found = self._cache.get(name)
        if found is None:
            found = self._cache[name] = self.index.rows(name.encode("utf-8", "surrogateescape"))
        return found

    def prefetch(self, names: Iterable[str]) -> None:
        """Look ``names`` up in one vectorised search, for :meth:`rows` to answer later."""
        todo = sorted({n for n in names if n not in self._cache})
        found = self.index.rows_many([n.encode("utf-8", "surrogateescape") for n in todo])
        self._cache.update(zip(todo, found, strict=True))

    def lone_rows(self, names: Sequence[str]) -> list[int]:
        """Per name: its row when the file has exactly one line of that name, -1 when
        none, -2 when several (:meth:`NameIndex.lone_rows`)."""
        return self.index.lone_rows([n.encode("utf-8", "surrogateescape") for n in names])

    def module_id(self, name: str) -> int | None:
        try:
            return self.modules.index(name)
        except ValueError:
            return None

    def has_module(self, name: str) -> bool:
        """Whether lines of module ``name`` are listed (exact name)."""
        return name in self.modules

    def matches(self, name: str) -> list[Entry]:
        """Every line named ``name``, in file order."""
        mods = self.modules
        out = []
        for r in self.rows(name):
            m = int(self.module[r])
            module = mods[m] if m >= 0 else None
            out.append(Entry(r, int(self.address[r]), chr(self.type[r]), module))
        return out


def parse_symbol_text(buf: Buffer, path: str, *, kind: SymbolTextKind | None = None) -> SymbolText:
    """Parse ``buf`` (the whole file) as kallsyms or System.map.

    ``kind`` forces the format; by default it is decided by content (module docstring).

    :raises SymbolSourceError: a malformed line (the first one, with its line number),
        or no symbol at all.
    """
    data: U8Array = np.frombuffer(buf, np.uint8)
    size = len(data)
    newlines = _find_byte(data, 10)
    ends = newlines if size and data[-1] == 10 else np.append(newlines, size)
    starts = np.empty_like(ends)
    if len(starts):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    # CRLF files: the CR is not part of the name
    has_cr = ends > starts
    has_cr[has_cr] = data[ends[has_cr] - 1] == 13
    ends -= has_cr
    del has_cr, newlines
    keep = ends > starts
    lineno: IntArray | None = None
    if not keep.all():
        lineno = np.flatnonzero(keep) + 1
        starts, ends = starts[keep], ends[keep]
    del keep
    if not len(starts):
        raise SymbolSourceError("no symbol lines (empty file)", path=path)

    n = len(starts)
    # Fast path: every address has the width of the first line's, and the file has
    # exactly two spaces per line (so none inside a name).  Any line that does not fit
    # sends the whole file through the exact per-line parse, which names the first
    # malformed line.
    width = int(np.argmax(data[: int(ends[0]) + 1] == 32)) if size else 0
    fixed = 1 <= width <= 16 and _count_byte(data, 32) == 2 * n
    f = _fields(data, starts, ends, width if fixed else None)
    if fixed and f.bad.any():
        f = _fields(data, starts, ends, None)
    bad, types, name_start, name_end, address = f.bad, f.types, f.name_start, f.name_end, f.address
    mod_rows, mstart, mend = f.mod_rows, f.mstart, f.mend
    del f
    if bad.any():
        row = int(np.argmax(bad))
        line = bytes(data[starts[row] : ends[row]]).decode("utf-8", "replace")
        at = int(lineno[row]) if lineno is not None else row + 1
        raise SymbolSourceError(f"malformed symbol line ({LINE_FORMAT}): {quoted(line)}", path=path,
                                lineno=at)  # fmt: skip
    del starts, ends, bad, lineno

    module = np.full(n, -1, np.int32)
    modules: list[str] = []
    if len(mod_rows):
        module[mod_rows], modules = _module_ids(data, mstart, mend)
    index = NameIndex(buf if isinstance(buf, bytes) else memoryview(buf), name_start, name_end)
    zeroed = not address.any()
    if kind is None:
        has_tables = False
        if not len(mod_rows) and not zeroed:
            has_tables = any(index.rows_many(list(KALLSYMS_TABLES)))
        kind = choose_kind(path, bool(len(mod_rows)), zeroed, has_tables)
    return SymbolText(path, kind, buf, index, address, types, module, modules, zeroed)


class _Fields(NamedTuple):
    bad: BoolArray
    types: U8Array
    name_start: IntArray
    name_end: IntArray
    address: U64Array
    mod_rows: IntArray
    mstart: IntArray
    mend: IntArray


def _fields(data: U8Array, starts: IntArray, ends: IntArray, width: int | None) -> _Fields:
    # Split every line [starts, ends) into its fields; `width`: every address has this
    # many digits (else each line's first space is searched for).
    size = len(data)
    bad = np.zeros(len(starts), bool)
    spaces: IntArray | None = None
    if width is not None:
        first = starts + width
        bad |= first >= ends
        bad |= data[np.minimum(first, size - 1)] != 32
    else:
        spaces = _find_byte(data, 32)
        first = _next(spaces, starts, ends)  # ends when there is none on the line
    bad |= (first - starts < 1) | (first - starts > 16) | (first + 3 > ends)
    types = data[np.minimum(first + 1, size - 1)]
    bad |= ~_TYPE_OK[types]
    bad |= data[np.minimum(first + 2, size - 1)] != 32
    name_start = first + 3
    tabs = _find_byte(data, 9)
    # module lines end with ']'; when there is one tab per such line, in order, the
    # tabs are theirs (checked: inside the line, after the name's first byte)
    ends_mod = np.flatnonzero(data[ends - 1] == 93)
    if len(tabs) == len(ends_mod) and bool(
        ((tabs > name_start[ends_mod]) & (tabs < ends[ends_mod])).all()
    ):
        tab = ends.copy()
        tab[ends_mod] = tabs
    else:
        tab = _next(tabs, name_start, ends)
    del tabs, ends_mod
    name_end = tab
    bad |= name_end <= name_start
    if spaces is not None:
        bad |= _next(spaces, name_start, name_end) < name_end  # a space inside the name
    address = _hex(data, starts, first, bad, width or 0)
    del first, spaces
    mod_rows = np.flatnonzero(tab < ends)
    mstart = tab[mod_rows] + 2
    mend = ends[mod_rows] - 1
    bad[mod_rows] |= (mend <= mstart) | (data[np.minimum(tab[mod_rows] + 1, size - 1)] != 91)
    bad[mod_rows] |= data[np.maximum(mend, 0)] != 93
    return _Fields(bad, types, name_start, name_end, address, mod_rows, mstart, mend)


def _hex(data: U8Array, starts: IntArray, first: IntArray, bad: BoolArray, width: int) -> U64Array:
    # The hex numbers data[starts:first], at most 16 digits; marks non-hex lines in bad.
    if width in (8, 16):
        # 8 digits at a time: the 8-byte words at the line starts, as bytes
        w = words(data)
        value = np.zeros(len(starts), np.uint64)
        for off in range(0, width, 8):
            digits = _HEX[word_at(w, starts + off).view(np.uint8)].reshape(-1, 8)
            if (digits == 255).any():
                bad |= (digits == 255).any(axis=1)
            pairs = np.ascontiguousarray((digits[:, 0::2] << 4) | digits[:, 1::2])
            value = (value << np.uint64(32)) | pairs.view(">u4")[:, 0].astype(np.uint64)
        return value
    address = np.zeros(len(starts), np.uint64)
    for k in range(16):
        pos = first - 16 + k
        inside = (pos >= starts) & (pos < len(data))
        digit = _HEX[data[np.where(inside, pos, 0)]]
        bad |= inside & (digit == 255)
        address = (address << np.uint64(4)) | np.where(inside, digit, 0).astype(np.uint64)
    return address


_CHUNK = 1 << 20


def _count_byte(data: U8Array, byte: int) -> int:
    return sum(int(np.count_nonzero(data[i : i + _CHUNK] == byte))
               for i in range(0, len(data), _CHUNK))  # fmt: skip


def _find_byte(data: U8Array, byte: int) -> IntArray:
    # np.flatnonzero(data == byte), a megabyte at a time: no file-sized temporary
    parts = [np.flatnonzero(data[i : i + _CHUNK] == byte) + i for i in range(0, len(data), _CHUNK)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _next(positions: IntArray, lo: IntArray, hi: IntArray) -> IntArray:
    # For each line: the first of the sorted `positions` at or after lo, or hi if none < hi.
    if not len(positions):
        return hi.astype(np.int64)
    i = np.searchsorted(positions, lo)
    found = np.where(i < len(positions), positions[np.minimum(i, len(positions) - 1)], hi)
    return np.where((i < len(positions)) & (found < hi), found, hi).astype(np.int64)


def _module_ids(
    data: U8Array, start: IntArray, end: IntArray
) -> tuple[npt.NDArray[np.int32], list[str]]:
    # A module's lines are contiguous in /proc/kallsyms: find where the name changes
    # between neighbours (exact byte comparison, vectorised over all pairs at once),
    # decode one name per run, and give runs with the same name the same id.
    length = end - start
    same = length[1:] == length[:-1]
    pairs = np.flatnonzero(same)
    k = 0
    while len(pairs):
        pairs = pairs[length[pairs] > k]
        differ = data[start[pairs] + k] != data[start[pairs + 1] + k]
        same[pairs[differ]] = False
        pairs = pairs[~differ]
        k += 1
    run_starts = np.flatnonzero(np.concatenate(([True], ~same)))
    run_of_row = np.cumsum(np.concatenate(([False], ~same))).astype(np.int64)
    names: list[str] = []
    ids: dict[str, int] = {}
    run_ids = np.empty(len(run_starts), np.int32)
    for r, row in enumerate(run_starts.tolist()):
        name = bytes(data[start[row] : end[row]]).decode("utf-8", "surrogateescape")
        run_ids[r] = ids.setdefault(name, len(ids))
        if run_ids[r] == len(names):
            names.append(name)
    return run_ids[run_of_row], names
