"""Kernel symbol text files (``/proc/kallsyms``, ``System.map``): what both readers share,
and the targeted reader used for large files.

A livepatch names tens of kernel symbols; a kallsyms dump lists a couple of hundred
thousand.  :class:`ScannedSymbolText` looks up only the names asked for, with one
regular-expression pass over the file per batch of names (:meth:`prefetch`), in pure
Python: for the usual question "do these 50 symbols resolve?" that is faster than
indexing every line (``klpelf.symbols.kallsyms``, numpy) and saves the process
numpy's import, which alone costs more than the scan.  It checks the shape of the
first and last lines and every line it returns; a file it cannot read that way, or
a question it cannot answer cheaply (the list of every module), goes to the full
index, which checks every line.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, NamedTuple

from klpelf.io import Buffer

if TYPE_CHECKING:
    from klpelf.symbols.kallsyms import SymbolText

SymbolTextKind = Literal["kallsyms", "System.map"]

#: ``/proc/kallsyms`` pseudo-modules that are not modules: ftrace and kprobe
#: trampolines, BPF programs (kernel/kallsyms.c get_ksymbol_{ftrace_mod,bpf,kprobe}).
PSEUDO_MODULES = frozenset({"bpf", "__builtin__ftrace", "__builtin__kprobes"})

#: what scripts/kallsyms writes into vmlinux: in System.map, never in kallsyms
KALLSYMS_TABLES = (
    b"kallsyms_names", b"kallsyms_num_syms", b"kallsyms_offsets", b"kallsyms_addresses",
    b"kallsyms_token_table", b"kallsyms_token_index", b"kallsyms_markers",
)  # fmt: skip

LINE_FORMAT = "expected 'ADDRESS TYPE NAME' or 'ADDRESS TYPE NAME<TAB>[MODULE]'"

#: files at least this large are read by :class:`ScannedSymbolText` (a real kallsyms
#: dump is 5-15 MB); smaller ones are indexed whole.  Tests change it.
SCAN_MIN_BYTES = 1 << 20

#: single-name lookups a scanned file answers before it is indexed whole
_SCAN_LOOKUPS = 8

#: names looked up at once above which indexing the whole file is faster (measured on
#: 200,000 lines: 100 names 28 ms, 1,000 names 80 ms; the full index 50 ms)
_SCAN_NAMES = 500

#: longest name the scan looks up (longer ones go to the index)
_SCAN_NAME_BYTES = 1024

_TYPES = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz?-"
_HEX = frozenset(b"0123456789abcdefABCDEF")


class Entry(NamedTuple):
    """One line of a symbol text: ``order`` sorts lines in file order."""

    order: int
    address: int
    type: str
    #: the ``[module]`` of a kallsyms module line, None for vmlinux
    module: str | None


def is_ignored_symbol(name: str, type_: str) -> bool:
    """Whether ``scripts/kallsyms`` leaves this System.map entry out of the kallsyms table.

    Mirrors ``is_ignored_symbol()`` of scripts/kallsyms.c (v6.2 text, whose name lists
    moved to scripts/mksysmap in v6.4 without changing the result).
    """
    if name in _IGNORED_NAMES or name.startswith(_IGNORED_PREFIXES):
        return True
    if name.endswith(_IGNORED_SUFFIXES) or any(m in name for m in _IGNORED_MATCHES):
        return True
    if type_ in "UuNn":
        return True
    return type_ in "Aa" and name not in _KEPT_ABSOLUTE


_IGNORED_NAMES = frozenset(
    {n.decode() for n in KALLSYMS_TABLES} | {"kallsyms_relative_base", "_SDA_BASE_", "_SDA2_BASE_"}
)
_IGNORED_PREFIXES = (
    "__efistub_", "__kvm_nvhe_$", "__kvm_nvhe_.L", "__AArch64ADRPThunk_", "__ARMV5PILongThunk_",
    "__ARMV7PILongThunk_", "__ThumbV7PILongThunk_", "__LA25Thunk_", "__microLA25Thunk_",
    "__kcfi_typeid_",
)  # fmt: skip
_IGNORED_SUFFIXES = ("_from_arm", "_from_thumb", "_veneer")
_IGNORED_MATCHES = (".long_branch.", ".plt_branch.")
_KEPT_ABSOLUTE = frozenset(
    {"__kernel_syscall_via_break", "__kernel_syscall_via_epc", "__kernel_sigtramp", "__gp"}
)


def choose_kind(path: str, has_modules: bool, zeroed: bool, has_tables: bool) -> SymbolTextKind:
    """kallsyms or System.map, from content (see klpelf.symbols.kallsyms): module lines
    or hidden addresses mean kallsyms; the tables scripts/kallsyms writes into vmlinux
    are in every System.map and in some kernels' kallsyms, so then the name decides."""
    if has_modules or zeroed or not has_tables:
        return "kallsyms"
    return "System.map" if os.path.basename(path).startswith("System.map") else "kallsyms"


def open_symbol_text(
    buf: Buffer, path: str, *, kind: SymbolTextKind | None = None
) -> SymbolText | ScannedSymbolText:
    """The reader for a kallsyms or System.map file: targeted for a large file whose
    first and last lines have the expected shape, the full index otherwise.

    :raises SymbolSourceError: a malformed line, or no symbol at all.
    """
    if len(buf) >= SCAN_MIN_BYTES:
        data = buf if isinstance(buf, (bytes, mmap.mmap)) else bytes(buf)
        scanned = ScannedSymbolText.open(data, path, kind)
        if scanned is not None:
            return scanned
    from klpelf.symbols.kallsyms import parse_symbol_text

    return parse_symbol_text(buf, path, kind=kind)


class _UnscannableError(Exception):
    """The file does not have the shape the targeted reader relies on."""


class ScannedSymbolText:
    """A large kallsyms or System.map file, looked up name by name without an index.

    Relies on every line having exactly two spaces (checked for the lines it reads):
    then ``' T name'`` followed by a tab or a newline is exactly a line's type and
    name fields.
    """

    def __init__(self, data: bytes | mmap.mmap, path: str, kind: SymbolTextKind | None) -> None:
        self.path, self.buf = path, data
        self._cache: dict[str, list[Entry]] = {}
        self._full: SymbolText | None = None
        self._lookups = 0
        self._modules: dict[str, bool] = {}
        self._lines: int | None = None
        self._module_lines: int | None = None
        first = self._first = self._line_at(0)
        last = self._line_at(len(data) - 1)
        self.width = first.index(b" ") if b" " in first else 0
        if self._line_entry(first) is None or self._line_entry(last) is None:
            raise _UnscannableError
        #: every address is 0 (kptr_restrict): order is all that is known.  x86_64's
        #: first lines are per-cpu symbols at 0: the last line tells first.
        self.zeroed = (
            _is_zero(first[: self.width])
            and _is_zero(last[: self.width])
            and _count(data, b"\n" + b"0" * self.width + b" ") + 1 == self.line_count
        )
        has_modules = data.find(b"\t") >= 0
        has_tables = not has_modules and not self.zeroed and _has_tables(data)
        self.kind: SymbolTextKind = kind or choose_kind(path, has_modules, self.zeroed, has_tables)

    @classmethod
    def open(
        cls, data: bytes | mmap.mmap, path: str, kind: SymbolTextKind | None
    ) -> ScannedSymbolText | None:
        """The scanned reader, or None when the file needs the full index."""
        # A CR or a blank line anywhere (not only in the first page: a trailing
        # "\n\n" hid the zeroing of a dump, a CR stayed in a name) is for the full
        # index to read or reject by line number.  Two memchr-speed passes.
        if data[:1] == b"\n" or data.find(b"\r") >= 0 or data.find(b"\n\n") >= 0:
            return None
        if isinstance(data, mmap.mmap):
            # fault the pages in at once (Linux 5.14+) rather than during the scan
            with contextlib.suppress(OSError, ValueError):
                data.madvise(_MADV_POPULATE_READ)
        try:
            return cls(data, path, kind)
        except _UnscannableError:
            return None

    # --- counts -------------------------------------------------------------------------

    @property
    def line_count(self) -> int:
        """Lines in the file (counted once, when first asked: a pass over the file)."""
        if self._lines is None:
            data = self.buf
            self._lines = _count(data, b"\n") + (0 if data[-1:] == b"\n" else 1)
        return self._lines

    @property
    def module_lines(self) -> int:
        """``[module]`` lines (one tab each)."""
        if self._module_lines is None:
            self._module_lines = _count(self.buf, b"\t")
        return self._module_lines

    def __len__(self) -> int:
        return self.line_count

    @property
    def vmlinux_count(self) -> int:
        return self.line_count - self.module_lines

    @property
    def has_vmlinux(self) -> bool:
        """Whether vmlinux lines are listed (they come first in /proc/kallsyms)."""
        return b"\t" not in self._first or self.vmlinux_count > 0

    @property
    def modules(self) -> list[str]:
        """Every module listed, in order of first appearance (indexes the file)."""
        return self.full().modules

    def has_module(self, name: str) -> bool:
        """Whether lines of module ``name`` are listed (exact name)."""
        if self._full is not None:
            return self._full.has_module(name)
        known = self._modules.get(name)
        if known is not None:
            return known
        if any(e.module == name for found in self._cache.values() for e in found):
            self._modules[name] = True
            return True
        self._modules[name] = self._find_module(name)
        return self._modules[name]

    def _find_module(self, name: str) -> bool:
        tag = b"\t[" + name.encode("utf-8", "surrogateescape") + b"]"
        data, pos = self.buf, self.buf.find(tag)
        while pos >= 0:
            end = pos + len(tag)
            if end == len(data) or data[end] == 10:
                return True
            pos = data.find(tag, end)
        return False

    def full(self) -> SymbolText:
        """The full index of the file (every line parsed and checked)."""
        if self._full is None:
            from klpelf.symbols.kallsyms import parse_symbol_text

            self._full = parse_symbol_text(self.buf, self.path, kind=self.kind)
        return self._full

    # --- lookups ------------------------------------------------------------------------

    def prefetch(self, names: Iterable[str]) -> None:
        """Find the lines of all ``names`` in one pass, for :meth:`matches` to answer."""
        todo = {n for n in names if n not in self._cache}
        if not todo:
            return
        if self._full is not None:
            self._full.prefetch(todo)
            return
        found: dict[str, list[Entry]] = {n: [] for n in todo}
        raw = {n.encode("utf-8", "surrogateescape"): n for n in todo}
        data, w = self.buf, self.width
        # ' TYPE NAME', NAME one of `todo` (the trie), then the rest of the line
        pattern = None
        # a name no kernel writes (KSYM_NAME_LEN is 512) would make a trie node per
        # byte (a 4 MB name took 900 MB): the index looks it up in linear time
        if len(raw) <= _SCAN_NAMES and max(map(len, raw)) <= _SCAN_NAME_BYTES:
            # a trie nested deeper than the compiler recurses (each name a prefix of
            # the next) is left to the index too
            with contextlib.suppress(RecursionError):
                trie = _trie(list(raw))
                pattern = re.compile(rb" ([^ \n\t]) (" + trie + rb")(?=[\t\n]|\Z)([^\n]*)")
        if pattern is None:
            self.full().prefetch(todo)
            return
        for m in pattern.finditer(data):
            start = m.start() - w
            type_, name, rest = m.groups()
            entry = None
            if start == 0 or (start > 0 and data[start - 1] == 10):
                entry = self._entry(start, data[start : m.start()], type_[0], rest)
            if entry is None:
                # a line of another shape: the full index reads (and checks) every line
                self.full().prefetch(todo)
                return
            found[raw[name]].append(entry)
        self._cache.update(found)

    def matches(self, name: str) -> list[Entry]:
        """Every line named ``name``, in file order."""
        if self._full is not None:
            return self._full.matches(name)
        if name not in self._cache:
            self._lookups += 1
            if self._lookups > _SCAN_LOOKUPS:
                return self.full().matches(name)
            self.prefetch([name])
            if self._full is not None:  # the scan met a line of another shape
                return self._full.matches(name)
        return self._cache[name]

    # --- lines --------------------------------------------------------------------------

    def _line_at(self, pos: int) -> bytes:
        # the line holding byte `pos` (the last line for a final newline)
        data = self.buf
        if pos and pos == len(data) - 1 and data[-1:] == b"\n":
            pos -= 1
        start = data.rfind(b"\n", 0, pos) + 1 if pos > 0 else 0
        end = data.find(b"\n", start)
        return data[start : end if end >= 0 else len(data)]

    def _line_entry(self, line: bytes) -> Entry | None:
        """One whole line split into its fields and checked (see :meth:`_entry`)."""
        w = self.width
        if not 1 <= w <= 16 or len(line) < w + 4 or line[w] != 32 or line[w + 2] != 32:
            return None
        name, tab, module = line[w + 3 :].partition(b"\t")
        if not name or b" " in name:
            return None
        return self._entry(0, line[:w], line[w + 1], tab + module)

    def _entry(self, start: int, addr: bytes, type_: int, rest: bytes) -> Entry | None:
        # A line's fields, checked as the full parser checks them (``rest`` is what
        # follows the name); None for a line of another shape (another address width,
        # a malformed module tag...), which sends the file to the full index: it
        # reports malformed lines by number.
        module = None
        if rest:
            if not (rest.startswith(b"\t[") and rest.endswith(b"]") and len(rest) > 3):
                return None
            module = rest[2:-1].decode("utf-8", "surrogateescape")
        if len(addr) != self.width or chr(type_) not in _TYPES or not _HEX.issuperset(addr):
            return None
        return Entry(start, int(addr, 16), chr(type_), module)


_MADV_POPULATE_READ = 22  # include/uapi/asm-generic/mman-common.h
_CHUNK = 1 << 22


def _count(data: bytes | mmap.mmap, sub: bytes) -> int:
    """data.count(sub), also for an mmap (which has no count()): a chunk at a time,
    each cut before a newline so that no `sub` starting with one is split."""
    if isinstance(data, bytes):
        return data.count(sub)
    n, pos, size = 0, 0, len(data)
    while pos < size:
        end = data.find(b"\n", pos + _CHUNK) if pos + _CHUNK < size else -1
        end = size if end < 0 else end
        n += data[pos:end].count(sub)
        pos = end
    return n


def _is_zero(digits: bytes) -> bool:
    return bool(digits) and not digits.strip(b"0")


def _has_tables(data: bytes | mmap.mmap) -> bool:
    pos = data.find(b" kallsyms_")
    while pos >= 0:
        end = data.find(b"\n", pos)
        if data[pos + 1 : end if end >= 0 else len(data)] in KALLSYMS_TABLES:
            return True
        pos = data.find(b" kallsyms_", pos + 1)
    return False


def _trie(words: list[bytes]) -> bytes:
    # One alternation per trie node: the regular expression engine then tries each
    # candidate line's name against all words at once, byte by byte.
    root: dict[int, dict] = {}  # type: ignore[type-arg]
    for w in words:
        node = root
        for c in w:
            node = node.setdefault(c, {})
        node[-1] = {}

    def emit(node: dict[int, dict]) -> bytes:  # type: ignore[type-arg]
        alts = [re.escape(bytes([c])) + emit(sub) for c, sub in node.items() if c != -1]
        if not alts:
            return b""
        body = alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"
        return b"(?:" + body + b")?" if -1 in node else body

    return emit(root)
