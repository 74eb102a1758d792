"""Exact-name lookup over names stored as ``[start, end)`` byte spans of one buffer.

No Python object is made per name: every name gets a 64-bit key computed from its
length and three 8-byte windows (head, middle, tail), the keys are sorted once, and
a lookup binary-searches the key and then compares the candidates' bytes with the
query, so a key collision costs a comparison, never a wrong answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
_ROW_MASK = (1 << 24) - 1
U8Array = npt.NDArray[np.uint8]
U64Array = npt.NDArray[np.uint64]

# odd multipliers (from splitmix64 / xxhash) to mix the windows; overflow wraps
_K = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xC2B2AE3D27D4EB4F),
    np.uint64(0x165667B19E3779F9),
    np.uint64(0x27D4EB2F165667C5),
)


def words(data: U8Array) -> U64Array:
    """A zero-copy ``uint64`` view of every 8-byte window of ``data`` (little-endian):
    ``words(data)[i]`` holds ``data[i : i + 8]``.  Short data is padded (copied)."""
    if len(data) < 8:
        data = np.concatenate([data, np.zeros(8 - len(data), np.uint8)])
    view = np.lib.stride_tricks.as_strided(
        data, shape=(len(data) - 7, 8), strides=(1, 1), writeable=False
    )
    return view.view("<u8")[:, 0]


def word_at(w: U64Array, pos: IntArray) -> U64Array:
    """``data[pos : pos + 8]`` as little-endian uint64 for every pos, bytes past the end 0."""
    last = len(w) - 1
    out: U64Array = w[np.minimum(pos, last)]
    near_end = np.flatnonzero(pos > last)  # the last 7 bytes of the data
    if len(near_end):
        out[near_end] >>= ((pos[near_end] - last) * 8).astype(np.uint64)
    return out


def _keep_low_bytes(value: U64Array, n: IntArray) -> None:
    # Clear all but the low n bytes of each value (in place), where n < 8.
    short = np.flatnonzero(n < 8)
    if len(short):
        mask = (np.uint64(1) << (n[short].astype(np.uint64) * np.uint64(8))) - np.uint64(1)
        value[short] &= mask


def name_keys(data: U8Array, start: IntArray, end: IntArray) -> U64Array:
    """The 64-bit lookup key of every name ``data[start[i]:end[i]]``: its length and
    its first, middle and last 8 bytes, mixed."""
    w = words(data)
    length = end - start
    with np.errstate(over="ignore"):
        key = word_at(w, start)
        _keep_low_bytes(key, length)
        key *= _K[0]
        tail = word_at(w, np.maximum(end - 8, start))
        _keep_low_bytes(tail, length)
        tail *= _K[2]
        key ^= tail
        del tail
        long = np.flatnonzero(length >= 16)
        key[long] ^= word_at(w, start[long] + length[long] // 2 - 4) * _K[1]
        key ^= length.astype(np.uint64) * _K[3]
    return key


def keys_of(names: Sequence[bytes]) -> U64Array:
    """The keys of ``names``, computed exactly as :func:`name_keys` does for a buffer."""
    buf = b"".join(names)
    lens = np.fromiter((len(n) for n in names), np.int64, len(names))
    end = np.cumsum(lens)
    return name_keys(np.frombuffer(buf, np.uint8), end - lens, end)


class NameIndex:
    """Find the rows whose name is exactly a given byte string, in ascending row order.

    The first few lookups scan the keys (one vectorised pass, no sort: cheapest when a
    caller asks for all its names at once, as ``klpelf resolve`` does); after that the
    keys are sorted once and every lookup is a binary search.
    """

    #: lookups answered by scanning before the sorted index is built
    SCANS = 4

    def __init__(self, buf: bytes | memoryview, start: IntArray, end: IntArray) -> None:
        self.buf = buf
        self.start = start
        self.end = end
        self._keys: U64Array = name_keys(np.frombuffer(buf, np.uint8), start, end)
        self._order: IntArray | None = None
        self._shift = 0
        self._scans = 0

    def _sort(self) -> None:
        keys = self._keys
        n = len(keys)
        if n < 1 << 24:
            # one sort of (key high bits | row) instead of an argsort: rows with equal
            # high bits come out in ascending order; the low bits of the key are dropped
            # (a collision only costs a comparison)
            packed = np.sort((keys & ~np.uint64(_ROW_MASK)) | np.arange(n, dtype=np.uint64))
            self._order = (packed & np.uint64(_ROW_MASK)).astype(np.int64)
            self._keys = packed >> np.uint64(24)
            self._shift = 24
        else:
            self._order = np.argsort(keys, kind="stable").astype(np.int64)
            self._keys = keys[self._order]

    def __len__(self) -> int:
        return len(self.start)

    def name(self, row: int) -> bytes:
        return bytes(self.buf[int(self.start[row]) : int(self.end[row])])

    def rows(self, name: bytes) -> list[int]:
        """Rows named exactly ``name``, ascending."""
        return self.rows_many([name])[0]

    def rows_many(self, names: Sequence[bytes]) -> list[list[int]]:
        """:meth:`rows` for several names at once (one vectorised search)."""
        if not names:
            return []
        if self._order is None and self._scans < self.SCANS:
            self._scans += 1
            return self._scan(names)
        if self._order is None:
            self._sort()
        assert self._order is not None
        keys = keys_of(names) >> np.uint64(self._shift)
        lo = np.searchsorted(self._keys, keys, "left")
        hi = np.searchsorted(self._keys, keys, "right")
        order = self._order
        return [
            self._verify(name, order[a:b].tolist())
            for name, a, b in zip(names, lo.tolist(), hi.tolist(), strict=True)
        ]

    def lone_rows(self, names: Sequence[bytes]) -> list[int]:
        """Per name: its row when exactly one row has it, -1 when none, -2 when
        several: ``len(rows(n))`` and ``rows(n)[0]`` of many names in one pass, each
        candidate row read once (a name asked for twice gets the same answer)."""
        if not names:
            return []
        if self._order is not None:
            return [r[0] if len(r) == 1 else -2 if r else -1 for r in self.rows_many(names)]
        hits = self._candidates(keys_of(names))
        want: dict[bytes, int] = {}
        found: list[int] = []
        for n in names:
            if n not in want:
                want[n] = len(found)
                found.append(-1)
        buf = self.buf
        for row, s, e in zip(hits.tolist(), self.start[hits].tolist(), self.end[hits].tolist(),
                             strict=True):  # fmt: skip
            q = want.get(bytes(buf[s:e]))
            if q is not None:
                found[q] = row if found[q] == -1 else -2
        return [found[want[n]] for n in names]

    def _candidates(self, qkeys: U64Array) -> IntArray:
        # the rows (ascending) whose key is one of qkeys: a superset of the rows named so
        qsorted = np.sort(qkeys)
        # a 64K-entry filter on the keys' low bits first, a binary search on what passes
        table = np.zeros(1 << 16, bool)
        table[(qkeys & np.uint64(0xFFFF)).astype(np.intp)] = True
        maybe = np.flatnonzero(table[(self._keys & np.uint64(0xFFFF)).astype(np.intp)])
        at = np.minimum(np.searchsorted(qsorted, self._keys[maybe]), len(qsorted) - 1)
        hits: IntArray = maybe[qsorted[at] == self._keys[maybe]]
        return hits

    def _scan(self, names: Sequence[bytes]) -> list[list[int]]:
        # Every row whose key is one of the queries' keys, grouped by query.
        qkeys = keys_of(names)
        hits = self._candidates(qkeys)
        # the candidates' spans read at once, compared with the query name by name
        by_key: dict[int, list[tuple[int, int, int]]] = {}
        for row, k, s, e in zip(hits.tolist(), self._keys[hits].tolist(),
                                self.start[hits].tolist(), self.end[hits].tolist(),
                                strict=True):  # fmt: skip
            by_key.setdefault(k, []).append((row, s, e))
        buf = self.buf
        return [
            [row for row, s, e in by_key.get(k, ()) if e - s == len(n) and buf[s:e] == n]
            for n, k in zip(names, qkeys.tolist(), strict=True)
        ]

    def _verify(self, name: bytes, rows: list[int]) -> list[int]:
        buf, start, end = self.buf, self.start, self.end
        found = []
        for row in rows:
            s = int(start[row])
            if int(end[row]) - s == len(name) and buf[s : s + len(name)] == name:
                found.append(row)
        return found
