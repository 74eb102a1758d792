"""Livepatch symbol names and klp relocation section names, parsed as the kernel does.

The kernel reads these names with its own ``sscanf`` (``kernel/livepatch/core.c``)::

    klp_write_section_relocs():  sscanf(secname, ".klp.rela.%55[^.]", sec_objname)
        cnt != 1  ->  "section %s has an incorrectly formatted name"
    klp_resolve_symbols():       sscanf(name, ".klp.sym.%55[^.].%511[^,],%lu",
                                        sym_objname, sym_name, &sympos)
        cnt != 3  ->  "symbol %s has an incorrectly formatted name"

(``%127[^,]`` before v6.1, when KSYM_NAME_LEN was 128.)  The kernel's ``vsscanf`` is
not glibc's, so :func:`kernel_sscanf` re-implements the part of it these formats use.
What follows was read in ``lib/vsprintf.c`` ``vsscanf()`` (torvalds/linux, the newest
stored blob, with ``simple_strntoull()``), ``lib/kstrtox.c``
(``_parse_integer_fixup_radix()``, ``_parse_integer[_limit]()``) and ``lib/ctype.c``
(``_ctype[]``); the same paths were compared with a v4.9-based tree and a pre-2021
``vsprintf.c``, and nothing that these two formats reach differs:

* Literal format characters are compared byte for byte (``*fmt++ != *str++`` ->
  stop): case-sensitive, no whitespace skipping before them.  Only whitespace *in the
  format* skips input whitespace, and these formats have none.
* Before any conversion, ``if (!*str) break;``: input that ends before a conversion
  stops the scan there, so the count is the number of conversions done so far.
* ``%N[^set]`` needs a width, reads **bytes** (``test_bit((u8)*str, set)``), stops at a
  byte of the set, at NUL (a negated set always excludes NUL) or after N bytes, and
  does **not** skip leading whitespace.  An empty match ends the scan
  (``/* match must be non-empty */`` -> ``return num``).  After N bytes the scan just
  goes on with the next format character, so an over-long field shows up as a
  mismatch of the literal that follows it (``.`` or ``,``), or, for the section
  format which ends with the conversion, as a silent truncation with the count still 1.
* ``%lu`` skips leading whitespace (``skip_spaces()``: ``isspace()`` of the kernel
  ctype table, i.e. ``\\t \\n \\v \\f \\r``, space and the Latin-1 byte 0xA0), then needs a
  decimal digit: ``u`` is unsigned base 10, so a leading ``-`` (only allowed when
  ``is_sign``) or ``+`` stops the scan.  Base 10 is fixed (``base = 10``; only ``%i``
  uses base 0), and ``_parse_integer_fixup_radix()`` strips ``0x`` only for base 16, so
  ``0x10`` reads as 0 and ``x10`` is left over.  Leading zeros are plain digits.  The
  digits accumulate in an ``unsigned long long`` with the overflow flag masked away
  (``cp += (rv & ~KSTRTOX_OVERFLOW)``), so a too-large value wraps modulo 2**64 and is
  then stored in an ``unsigned long``.  Without a field width the limit is
  ``INT_MAX`` digits.  Nothing after the number is checked (the format ends there).

Sources: ``lib/vsprintf.c`` at torvalds/linux 387f7d81925c (newest stored, uses
``simple_strntoull()``), at torvalds/linux 010e85f9e47c (pre-2021: ``simple_strtoul()``
plus a divide-back loop that only runs with a field width) and in a v4.9-based tree
(same ``%[`` code as today).  Not settled from source: the release that added ``%[``
(it predates the v4.7 livepatch loader, which needs it; the commit was not found),
the body of mainline ``skip_spaces()`` (assumed ``while (isspace(*str)) ++str;``, as in
every copy seen), and 32-bit kernels, where ``unsigned long`` wraps at 2**32
(:func:`kernel_sscanf` takes ``ulong_bits``; the klp classes assume 64).

Names must be ``str`` that encode with ``surrogateescape`` (anything decoded from
bytes that way does); others raise :class:`UnicodeEncodeError`.

The kernel works on the NUL-terminated bytes of the string table.  klpelf decodes
names as UTF-8 with ``errors="surrogateescape"``, so every function here encodes the
``str`` back to exactly those bytes before scanning: all widths (55, 511, 127) count
**bytes**, not Python characters, and an over-long object name can be cut in the
middle of a multi-byte character (the pieces then decode to lone surrogates, and
``str()`` reassembles them).  A ``str`` that contains NUL is read only up to the NUL,
as the kernel would.

Two spellings that are *not* kernel content are recognised so a checker can name
them: the January 2016 draft section spelling ``.klp.rel.<objname>.<section>``
(:func:`parse_draft_rel_section`), and the symbol names that the unmerged klp-convert
series' ``KLP_RELOC_SYMBOL_POS()`` emits, ``.klp.sym.rela.<lp_obj>.<sym_obj>.<sym>,<pos>``
(:class:`KlpAnnotationName`).  Note that an annotation name also satisfies the
kernel's own symbol format: ``.klp.sym.rela.x.y.z,0`` scans as object ``rela``, symbol
``x.y.z`` (the object name ends at the first dot, the symbol name may contain dots).
:func:`classify_symbol_name` therefore checks for annotations first, and
:meth:`KlpAnnotationName.kernel_reading` gives the kernel's interpretation.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from klpelf._record import FrozenRecord
from klpelf.errors import KlpFormatError
from klpelf.release import KSYM_NAME_LEN, KSYM_NAME_LEN_OLD

__all__ = [
    "KLP_DRAFT_REL_PREFIX",
    "KLP_RELA_PREFIX",
    "KLP_RELA_SECTION_FORMAT",
    "KLP_SYM_PREFIX",
    "KLP_SYM_RELA_PREFIX",
    "KSYM_NAME_LEN",
    "KSYM_NAME_LEN_OLD",
    "MODULE_NAME_LEN",
    "OBJNAME_MAX",
    "SYMPOS_MAX",
    "KlpAnnotationName",
    "KlpAnnotationScan",
    "KlpDraftRelSectionName",
    "KlpRelaSectionName",
    "KlpRelaSectionScan",
    "KlpSymbolName",
    "KlpSymbolScan",
    "ScanResult",
    "classify_symbol_name",
    "kernel_sscanf",
    "klp_annotation_format",
    "klp_sym_format",
    "parse_annotation_symbol",
    "parse_draft_rel_section",
]

MODULE_NAME_LEN = 56
"""MODULE_NAME_LEN on 64-bit; the klp formats hard-code ``%55`` for object names."""
OBJNAME_MAX = MODULE_NAME_LEN - 1
"""Longest object name, in bytes, that the ``%55[^.]`` conversions read."""
SYMPOS_MAX = (1 << 64) - 1
"""``ULONG_MAX`` on the 64-bit kernels livepatch runs on; larger values wrap."""

KLP_SYM_PREFIX = ".klp.sym."
KLP_RELA_PREFIX = ".klp.rela."
KLP_SYM_RELA_PREFIX = ".klp.sym.rela."
KLP_DRAFT_REL_PREFIX = ".klp.rel."
#: x86 alternatives/paravirt sections of v4.9..v5.7, removed in v5.8 ("livepatch: Remove .klp.arch")
KLP_ARCH_PREFIX = ".klp.arch."

KLP_RELA_SECTION_FORMAT = f"{KLP_RELA_PREFIX}%{OBJNAME_MAX}[^.]"
"""The format of ``klp_write_section_relocs()``."""

_INT_MAX = (1 << 31) - 1
# lib/ctype.c _ctype[]: the entries with _S are 9-13 (\t \n \v \f \r), 32 and 160 (0xA0,
# Latin-1 NBSP).  isspace() casts to unsigned char first, so a 0xA0 byte is whitespace.
_KSPACE = frozenset(b"\t\n\v\f\r \xa0")
_PERCENT = ord("%")
_BRACKET = ord("[")
_CLOSE_BRACKET = ord("]")
_CARET = ord("^")
_DOT = ord(".")
_COMMA = ord(",")


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _c_string(s: str) -> bytes:
    """The bytes the kernel sees: the encoded name up to (not including) any NUL."""
    raw = _enc(s)
    nul = raw.find(0)
    return raw if nul < 0 else raw[:nul]


def _isdigit(c: int) -> bool:
    return 0x30 <= c <= 0x39


# --------------------------------------------------------------------------------------
# The kernel's vsscanf, restricted to what the klp formats use


class ScanResult(NamedTuple):
    """What :func:`kernel_sscanf` read.

    ``values`` holds one item per successful conversion (``bytes`` for ``%[``, ``int``
    for ``%u``), so ``count`` is the kernel's return value.  ``spans[i]`` is the
    ``(start, end)`` byte range of conversion ``i`` in the input (for ``%u`` after the
    skipped whitespace).  ``wrapped`` is true when a number did not fit its C type and
    was reduced modulo its width, as the kernel stores it.
    """

    values: tuple[bytes | int, ...]
    spans: tuple[tuple[int, int], ...]
    wrapped: bool = False

    @property
    def count(self) -> int:  # type: ignore[override]  # hides tuple.count()
        return len(self.values)


def kernel_sscanf(buf: bytes, fmt: str, *, ulong_bits: int = 64) -> ScanResult:
    """Scan ``buf`` with ``fmt`` exactly as ``lib/vsprintf.c:vsscanf()`` does.

    Supported: literal characters, whitespace in the format, ``%%``, ``%N[set]`` and
    ``%N[^set]``, and unsigned decimal ``%u`` with the ``hh``/``h``/``l``/``ll``/``L``/``z``
    qualifiers (``ulong_bits`` is the width of ``unsigned long`` and ``size_t``).
    Anything else in ``fmt`` is a programming error and raises :class:`ValueError`.
    ``buf`` is read as a C string: scanning never looks past its first NUL.
    """
    if ulong_bits not in (32, 64):
        raise ValueError(f"ulong_bits must be 32 or 64, not {ulong_bits}")
    nul = buf.find(0)
    if nul >= 0:
        buf = buf[:nul]
    f = _enc(fmt)
    n = len(buf)
    flen = len(f)

    def at(k: int) -> int:
        # *str: 0 at the terminating NUL.
        return buf[k] if k < n else 0

    values: list[bytes | int] = []
    spans: list[tuple[int, int]] = []
    wrapped = False
    i = p = 0
    while i < flen:
        # "white space in format matches any amount of white space, including none".
        if f[i] in _KSPACE:
            i += 1
            while i < flen and f[i] in _KSPACE:
                i += 1
            while at(p) in _KSPACE:
                p += 1
        # "anything that is not a conversion must match exactly": a byte compare.
        if i < flen and f[i] != _PERCENT:
            if f[i] != at(p):
                break
            i += 1
            p += 1
            continue
        if i >= flen:
            break
        i += 1
        if i < flen and f[i] == ord("*"):
            raise ValueError(f"kernel_sscanf: '%*' is not supported: {fmt!r}")
        width = -1
        if i < flen and _isdigit(f[i]):
            width = 0
            while i < flen and _isdigit(f[i]):
                width = width * 10 + f[i] - 0x30
                i += 1
            if width <= 0:
                raise ValueError(f"kernel_sscanf: zero field width: {fmt!r}")
        qualifier = ""
        if i < flen and chr(f[i]) in "hlLz":
            qualifier = chr(f[i])
            i += 1
            if i < flen and chr(f[i]) == qualifier and qualifier in "hl":
                qualifier = "H" if qualifier == "h" else "L"
                i += 1
        if i >= flen:
            raise ValueError(f"kernel_sscanf: format ends inside a conversion: {fmt!r}")
        conv = f[i]
        i += 1
        if conv == ord("n"):
            raise ValueError(f"kernel_sscanf: '%n' is not supported: {fmt!r}")
        # "if (!*str) break;": input that ends before a conversion ends the scan.
        if at(p) == 0:
            break
        if conv == _BRACKET:
            # '%[': a field width is required; '^' negates; ']' cannot be a member.
            if width == -1:
                raise ValueError(f"kernel_sscanf: '%[' needs a field width: {fmt!r}")
            negate = i < flen and f[i] == _CARET
            if negate:
                i += 1
            members: set[int] = set()
            while i < flen and f[i] != _CLOSE_BRACKET:
                members.add(f[i])
                i += 1
            if i >= flen or not members:
                raise ValueError(f"kernel_sscanf: bad '%[' set: {fmt!r}")
            i += 1
            if negate:
                # bitmap_complement() then clear_bit(0): NUL never matches.
                members = set(range(1, 256)) - members
            # "match must be non-empty": an empty match ends the scan (return num).
            if at(p) not in members:
                break
            start = p
            while at(p) in members and width > 0:
                p += 1
                width -= 1
            values.append(buf[start:p])
            spans.append((start, p))
            continue
        if conv == _PERCENT:
            if at(p) != _PERCENT:
                break
            p += 1
            continue
        if conv != ord("u"):
            raise ValueError(f"kernel_sscanf: conversion %{chr(conv)} is not supported: {fmt!r}")
        # Integer conversions: skip_spaces(), then the first character must be a digit
        # ('-' is only looked past when is_sign, which 'u' is not; '+' never is).
        while at(p) in _KSPACE:
            p += 1
        if not _isdigit(at(p)):
            break
        # simple_strntoull(str, field_width >= 0 ? field_width : INT_MAX, &next, 10):
        # base 10 has no radix prefix, _parse_integer_limit() takes digits while
        # they are < base and wraps in unsigned long long (the overflow bit is masked).
        max_chars = width if width >= 0 else _INT_MAX
        start = p
        value = 0
        while max_chars > 0 and _isdigit(at(p)):
            value = value * 10 + at(p) - 0x30
            p += 1
            max_chars -= 1
        bits = {"H": 8, "h": 16, "": 32, "l": ulong_bits, "L": 64, "z": ulong_bits}[qualifier]
        stored = value % (1 << bits)
        wrapped = wrapped or stored != value
        values.append(stored)
        spans.append((start, p))
    return ScanResult(tuple(values), tuple(spans), wrapped)


def klp_sym_format(ksym_name_len: int = KSYM_NAME_LEN) -> str:
    """The ``klp_resolve_symbols()`` format for a kernel with this KSYM_NAME_LEN."""
    if not 2 <= ksym_name_len <= KSYM_NAME_LEN:
        raise ValueError(f"ksym_name_len must be in 2..{KSYM_NAME_LEN}, not {ksym_name_len}")
    return f"{KLP_SYM_PREFIX}%{OBJNAME_MAX}[^.].%{ksym_name_len - 1}[^,],%lu"


def klp_annotation_format() -> str:
    """The format klp-convert's ``convert_symbol()`` reads annotation names with."""
    return (
        f"{KLP_SYM_RELA_PREFIX}%{OBJNAME_MAX}[^.].%{OBJNAME_MAX}[^.].%{KSYM_NAME_LEN - 1}[^,],%lu"
    )


# (label, terminator literal or None for the final %lu, width)
_Field = tuple[str, int | None, int]


def _failure_reason(raw: bytes, prefix: str, fields: list[_Field], res: ScanResult) -> str:
    """Why the scan stopped after ``res.count`` of ``len(fields)`` conversions."""
    n = len(raw)

    def at(k: int) -> int:
        return raw[k] if k < n else 0

    k = res.count
    if k == 0:
        if not raw.startswith(_enc(prefix)):
            return f"does not start with {prefix!r}"
        pos = len(_enc(prefix))
    else:
        label, term, width = fields[k - 1]
        assert term is not None
        pos = res.spans[k - 1][1]
        if at(pos) == 0:
            return f"ends after the {label} (no {chr(term)!r} follows)"
        if at(pos) != term:
            return f"{label} is longer than {width} bytes"
        pos += 1
    label, term, width = fields[k]
    if term is None:
        while at(pos) in _KSPACE:
            pos += 1
        if at(pos) == 0:
            return f"{label} is missing"
        c = at(pos)
        found = repr(chr(c)) if 0x20 < c < 0x7F else f"byte {c:#04x}"
        return (
            f"{label} does not start with a decimal digit (found {found}); "
            "the kernel's %lu takes no sign and no 0x prefix"
        )
    if at(pos) == 0:
        return f"{label} is missing"
    return f"{label} is empty"


def _canonical(name: str) -> str:
    """The canonical decoding of the bytes of ``name``: name fields are stored so, and
    equality and hashing are then bytewise, as the kernel compares (the strings
    "\\udcc3\\udca9" and "\\u00e9" are both the bytes C3 A9)."""
    return name if name.isascii() else _dec(_enc(name))


def _check_objname(what: str, objname: str) -> None:
    # the bytes' length (ASCII: one a character); '.' and NUL are one byte each
    raw = objname if objname.isascii() else _enc(objname)
    if not raw or len(raw) > OBJNAME_MAX or "." in objname or "\0" in objname:
        raise KlpFormatError(
            f"{what} must be 1-{OBJNAME_MAX} bytes without '.' or NUL, not {objname!r}"
        )


def _check_symname(name: str, ksym_name_len: int = KSYM_NAME_LEN) -> None:
    raw = name if name.isascii() else _enc(name)  # as _check_objname()
    if not raw or len(raw) > ksym_name_len - 1 or "," in name or "\0" in name:
        raise KlpFormatError(
            f"symbol name must be 1-{ksym_name_len - 1} bytes without ',' or NUL, not {name!r}"
        )


def _check_sympos(sympos: int) -> None:
    if not 0 <= sympos <= SYMPOS_MAX:
        raise KlpFormatError(f"sympos must be in 0..{SYMPOS_MAX}, not {sympos}")


# --------------------------------------------------------------------------------------
# .klp.sym.<objname>.<name>,<sympos>


class KlpSymbolName(FrozenRecord):
    """A livepatch symbol name ``.klp.sym.<objname>.<name>,<sympos>``.

    Constructing one checks that it would scan back to itself (object name 1-55 bytes
    without '.', symbol name 1-511 bytes without ',', sympos fits an unsigned long);
    :meth:`parse` reads a name the way the kernel does.
    """

    _fields = ("objname", "name", "sympos")
    __slots__ = _fields

    def __init__(self, objname: str, name: str, sympos: int) -> None:
        objname, name = _canonical(objname), _canonical(name)
        _check_objname("object name", objname)
        _check_symname(name)
        _check_sympos(sympos)
        if TYPE_CHECKING:
            self.objname: Final = objname
            self.name: Final = name
            self.sympos: Final = sympos
        else:
            # each field once, without FrozenRecord's check of an unset slot (an
            # AttributeError raised and caught per field: most of the time of
            # klp_module() on a module with thousands of livepatch symbols)
            _set = object.__setattr__
            _set(self, "objname", objname)
            _set(self, "name", name)
            _set(self, "sympos", sympos)

    @classmethod
    def read(cls, objname: str, name: str, sympos: int) -> KlpSymbolName:
        """The name of fields :func:`canonical_names` read, without the constructor's
        checks: what that expression matches passes them (ASCII, so already canonical;
        the widths; no '.' in the object name, no ',' in the name; sympos <= ULONG_MAX)."""
        self = cls.__new__(cls)
        _set = object.__setattr__
        _set(self, "objname", objname)
        _set(self, "name", name)
        _set(self, "sympos", sympos)
        return self

    @classmethod
    def scan(cls, s: str, *, ksym_name_len: int = KSYM_NAME_LEN) -> KlpSymbolScan:
        """Run the kernel's sscanf on ``s``: the count, the values and why it stopped."""
        fast = _scan_canonical(s, ksym_name_len)
        if fast is not None:
            return fast
        raw = _c_string(s)
        res = kernel_sscanf(raw, klp_sym_format(ksym_name_len))
        vals = res.values
        objname = _dec(vals[0]) if len(vals) > 0 and isinstance(vals[0], bytes) else None
        name = _dec(vals[1]) if len(vals) > 1 and isinstance(vals[1], bytes) else None
        sympos = vals[2] if len(vals) > 2 and isinstance(vals[2], int) else None
        if res.count == 3:
            ignored = _dec(raw[res.spans[2][1] :])
            return KlpSymbolScan(s, 3, objname, name, sympos, None, ignored, res.wrapped)
        fields: list[_Field] = [
            ("object name", _DOT, OBJNAME_MAX),
            ("symbol name", _COMMA, ksym_name_len - 1),
            ("sympos", None, 0),
        ]
        reason = _failure_reason(raw, KLP_SYM_PREFIX, fields, res)
        return KlpSymbolScan(s, res.count, objname, name, sympos, reason)

    @classmethod
    def parse(cls, s: str, *, ksym_name_len: int = KSYM_NAME_LEN) -> KlpSymbolName:
        """Parse ``s`` as ``klp_resolve_symbols()`` does; raise :class:`KlpFormatError`
        with the kernel's message when its sscanf would not return 3."""
        return cls.scan(s, ksym_name_len=ksym_name_len).symbol()

    @property
    def is_vmlinux(self) -> bool:
        """``!strcmp(sym_objname, "vmlinux")``: resolved in vmlinux, not in a module."""
        return self.objname == "vmlinux"

    def __str__(self) -> str:
        return f"{KLP_SYM_PREFIX}{self.objname}.{self.name},{self.sympos}"


@functools.cache
def _canonical_re(ksym_name_len: int) -> re.Pattern[str]:
    return re.compile(
        rf"\.klp\.sym\.([^.\x00]{{1,{OBJNAME_MAX}}})\.([^,\x00]{{1,{ksym_name_len - 1}}}),"
        r"([0-9]{1,20})\Z"
    )


def _scan_canonical(s: str, ksym_name_len: int) -> KlpSymbolScan | None:
    # Fast path for the common, plain-ASCII, nothing-to-ignore spelling: what this
    # regex accepts, kernel_sscanf() accepts with the same three values (widths count
    # bytes, and for ASCII a character is a byte).  Anything else takes the exact path.
    if not s.isascii():
        return None
    m = _canonical_re(ksym_name_len).match(s)
    if m is None:
        return None
    sympos = int(m.group(3))
    if sympos > SYMPOS_MAX:
        return None
    return KlpSymbolScan(s, 3, m.group(1), m.group(2), sympos, None)


@functools.cache
def _canonical_bytes_re(ksym_name_len: int) -> re.Pattern[bytes]:
    # _canonical_re() over a string table: each name between a NUL and the next, ASCII
    # only (what _scan_canonical() takes); the lookahead leaves the closing NUL to open
    # the next name
    return re.compile(
        rb"\x00\.klp\.sym\.([^.\x00\x80-\xff]{1,%d})\.([^,\x00\x80-\xff]{1,%d}),([0-9]{1,20})"
        rb"(?=\x00)" % (OBJNAME_MAX, ksym_name_len - 1)
    )


def canonical_names(
    strtab: bytes, ksym_name_len: int = KSYM_NAME_LEN
) -> dict[int, tuple[str, str, int]]:
    """String offset -> (object name, symbol name, sympos) of every name in ``strtab``
    (a string table's bytes) that :meth:`KlpSymbolName.scan` reads on its fast path:
    plain ASCII, canonical, one regular-expression pass for all of a module's livepatch
    symbols instead of a scan per name.  A name not found here (at offset 0, or any
    other spelling) is for :meth:`KlpSymbolName.scan` to read; what is found, it reads
    with the same values (tests/unit/test_names.py compares them)."""
    out: dict[int, tuple[str, str, int]] = {}
    for m in _canonical_bytes_re(ksym_name_len).finditer(strtab):
        objname, name, digits = m.groups()
        sympos = int(digits)
        if sympos <= SYMPOS_MAX:
            out[m.start() + 1] = (objname.decode("ascii"), name.decode("ascii"), sympos)
    return out


class KlpSymbolScan(NamedTuple):
    """The kernel's view of a would-be livepatch symbol name.

    ``count`` is the sscanf return value (3 means the kernel accepts the name).
    ``objname``/``name``/``sympos`` are the values of the conversions that succeeded
    (an over-long object name is the truncated 55 bytes the kernel read).  ``reason``
    says in words why the count is short, and is None when it is 3.  ``ignored`` is
    what follows the number and the kernel ignores; ``wrapped`` is true when the
    number was larger than ULONG_MAX and wrapped.
    """

    source: str
    count: int  # type: ignore[assignment]  # a field: hides tuple.count()
    objname: str | None
    name: str | None
    sympos: int | None
    reason: str | None
    ignored: str = ""
    wrapped: bool = False

    @property
    def ok(self) -> bool:
        return self.count == 3

    def symbol(self) -> KlpSymbolName:
        """The parsed name; :class:`KlpFormatError` with the kernel's message if not ok."""
        if self.count != 3 or self.objname is None or self.name is None or self.sympos is None:
            raise KlpFormatError(f"symbol {self.source} has an incorrectly formatted name")
        return KlpSymbolName(self.objname, self.name, self.sympos)

    @property
    def canonical(self) -> bool:
        """Accepted, and spelled exactly as ``str()`` of the parsed name (no leading
        whitespace or zeros in sympos, nothing ignored, no wrap, no NUL)."""
        return self.ok and str(self.symbol()) == self.source


# --------------------------------------------------------------------------------------
# .klp.rela.<objname><suffix>


class KlpRelaSectionName(FrozenRecord):
    """A klp relocation section name ``.klp.rela.<objname><suffix>``.

    ``objname`` is what the kernel's ``%55[^.]`` stores and compares with the object
    name: at most 55 bytes.  If the name has more non-dot bytes there, the kernel
    silently drops them (the count is still 1); they are kept in ``objname_overflow``
    so that ``str()`` gives back the original name.  Such a section is applied only for
    a module whose name is exactly the first 55 bytes, which is almost certainly not
    the one meant: see :attr:`truncated`.

    ``suffix`` is everything after the object name: ``""`` or text starting with '.'.
    The kernel never reads it (the target is ``sh_info``).  See :attr:`target_name`.
    """

    _fields = ("objname", "suffix", "objname_overflow")
    __slots__ = _fields

    def __init__(self, objname: str, suffix: str, objname_overflow: str = "") -> None:
        self.objname: Final = _canonical(objname)
        self.suffix: Final = _canonical(suffix)
        self.objname_overflow: Final = _canonical(objname_overflow)
        _check_objname("section object name", self.objname)
        over = _enc(self.objname_overflow)
        if over and (b"." in over or b"\0" in over or len(_enc(self.objname)) != OBJNAME_MAX):
            raise KlpFormatError(
                f"objname_overflow {self.objname_overflow!r} must follow a {OBJNAME_MAX}-byte "
                "object name and contain no '.' or NUL"
            )
        raw = _enc(self.suffix)
        if raw and (raw[0] != _DOT or b"\0" in raw):
            raise KlpFormatError(f"suffix must be empty or start with '.', not {self.suffix!r}")

    @classmethod
    def scan(cls, s: str) -> KlpRelaSectionScan:
        """Run the kernel's sscanf on ``s``: the count, the parsed name if 1, and why not."""
        raw = _c_string(s)
        res = kernel_sscanf(raw, KLP_RELA_SECTION_FORMAT)
        if res.count != 1:
            fields: list[_Field] = [("object name", _DOT, OBJNAME_MAX)]
            reason = _failure_reason(raw, KLP_RELA_PREFIX, fields, res)
            return KlpRelaSectionScan(s, res.count, None, reason)
        start, end = res.spans[0]
        stop = end
        while stop < len(raw) and raw[stop] != _DOT:
            stop += 1
        name = cls(_dec(raw[start:end]), _dec(raw[stop:]), _dec(raw[end:stop]))
        return KlpRelaSectionScan(s, 1, name, None)

    @classmethod
    def parse(cls, s: str) -> KlpRelaSectionName:
        """Parse ``s`` as ``klp_write_section_relocs()`` does; raise
        :class:`KlpFormatError` with the kernel's message when its sscanf fails."""
        return cls.scan(s).section()

    @property
    def truncated(self) -> bool:
        """The object name is longer than 55 bytes and the kernel compares a prefix."""
        return bool(self.objname_overflow)

    @property
    def full_objname(self) -> str:
        """The object name as written, before the kernel's truncation."""
        return _dec(_enc(self.objname) + _enc(self.objname_overflow))

    @property
    def is_vmlinux(self) -> bool:
        return self.objname == "vmlinux"

    @property
    def target_name(self) -> str | None:
        """The target section the suffix implies, or None when there is no suffix.

        Two conventions exist.  kpatch and klp-convert write ``.klp.rela.<obj>`` + the
        section name, so ``.klp.rela.vmlinux.text.foo`` means ``.text.foo``.  klp-build
        (``tools/objtool/klp-post-link.c``, v6.19) writes ``.klp.rela.<obj>.`` + the
        section name, so the same target gives ``.klp.rela.vmlinux..text.foo``.  A
        suffix starting with two dots is read the klp-build way.  The kernel uses
        ``sh_info`` and never this name; use :meth:`matches_target` to compare.
        """
        if not self.suffix:
            return None
        return self.suffix[1:] if self.suffix.startswith("..") else self.suffix

    def matches_target(self, section_name: str) -> bool:
        """Whether the suffix names ``section_name`` under either convention."""
        if not self.suffix:
            return False
        return self.suffix in (section_name, "." + section_name)

    def __str__(self) -> str:
        return _dec(
            _enc(KLP_RELA_PREFIX)
            + _enc(self.objname)
            + _enc(self.objname_overflow)
            + _enc(self.suffix)
        )


class KlpRelaSectionScan(NamedTuple):
    """The kernel's view of a would-be klp relocation section name (count 0 or 1)."""

    source: str
    count: int  # type: ignore[assignment]  # a field: hides tuple.count()
    name: KlpRelaSectionName | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.count == 1

    def section(self) -> KlpRelaSectionName:
        if self.name is None:
            raise KlpFormatError(f"section {self.source} has an incorrectly formatted name")
        return self.name


# --------------------------------------------------------------------------------------
# Recognised, not valid: the 2016 draft section spelling


class KlpDraftRelSectionName(FrozenRecord):
    """``.klp.rel.<objname><suffix>``: the section spelling of a January 2016 draft of
    the format document, never merged.  The kernel rejects it (its sscanf needs
    ``.klp.rela.``; ``'a' != '.'`` gives a count of 0)."""

    _fields = ("objname", "suffix")
    __slots__ = _fields

    def __init__(self, objname: str, suffix: str) -> None:
        self.objname: Final = objname
        self.suffix: Final = suffix

    def to_rela(self) -> KlpRelaSectionName:
        """The merged-format name for the same object and suffix."""
        return KlpRelaSectionName.parse(KLP_RELA_PREFIX + self.objname + self.suffix)

    def __str__(self) -> str:
        return KLP_DRAFT_REL_PREFIX + self.objname + self.suffix


def parse_draft_rel_section(s: str) -> KlpDraftRelSectionName | None:
    """Recognise the draft spelling ``.klp.rel.<objname>.<section>``; None otherwise.

    The object name runs to the first '.', like the merged format's, and must not be
    empty; no length limit applies (no kernel ever read this spelling).
    """
    raw = _c_string(s)
    prefix = _enc(KLP_DRAFT_REL_PREFIX)
    if not raw.startswith(prefix):
        return None
    rest = raw[len(prefix) :]
    dot = rest.find(b".")
    obj, suffix = (rest, b"") if dot < 0 else (rest[:dot], rest[dot:])
    if not obj:
        return None
    return KlpDraftRelSectionName(_dec(obj), _dec(suffix))


# --------------------------------------------------------------------------------------
# Recognised, not valid: klp-convert annotation symbols


class KlpAnnotationName(FrozenRecord):
    """``.klp.sym.rela.<lp_obj>.<sym_obj>.<sym>,<pos>``: the name that the unmerged
    klp-convert series' ``KLP_RELOC_SYMBOL_POS()`` gives a symbol, for klp-convert to
    turn into ``.klp.sym.<sym_obj>.<sym>,<pos>`` in a ``.klp.rela.<lp_obj>.*`` section.

    klp-convert reads it with ``".klp.sym.rela.%55[^.].%55[^.].%511[^,],%lu"`` using
    glibc's sscanf; here the kernel's rules are applied to the same format.  They
    differ only on sympos edge cases (glibc's ``%lu`` also accepts a sign), which no
    kernel ever sees because klp-convert rewrites the name.  The kernel itself, given
    such a name unconverted, reads it as object ``rela``: see :meth:`kernel_reading`.
    """

    _fields = ("lp_objname", "sym_objname", "name", "sympos")
    __slots__ = _fields

    def __init__(self, lp_objname: str, sym_objname: str, name: str, sympos: int) -> None:
        self.lp_objname: Final = _canonical(lp_objname)
        self.sym_objname: Final = _canonical(sym_objname)
        self.name: Final = _canonical(name)
        self.sympos: Final = sympos
        _check_objname("livepatched object name", self.lp_objname)
        _check_objname("symbol object name", self.sym_objname)
        _check_symname(self.name)
        _check_sympos(self.sympos)

    @classmethod
    def scan(cls, s: str) -> KlpAnnotationScan:
        raw = _c_string(s)
        res = kernel_sscanf(raw, klp_annotation_format())
        if res.count == 4:
            lp, obj, name, pos = res.values
            assert isinstance(lp, bytes) and isinstance(obj, bytes)
            assert isinstance(name, bytes) and isinstance(pos, int)
            return KlpAnnotationScan(s, 4, cls(_dec(lp), _dec(obj), _dec(name), pos), None)
        fields: list[_Field] = [
            ("livepatched object name", _DOT, OBJNAME_MAX),
            ("symbol object name", _DOT, OBJNAME_MAX),
            ("symbol name", _COMMA, KSYM_NAME_LEN - 1),
            ("sympos", None, 0),
        ]
        reason = _failure_reason(raw, KLP_SYM_RELA_PREFIX, fields, res)
        return KlpAnnotationScan(s, res.count, None, reason)

    @classmethod
    def parse(cls, s: str) -> KlpAnnotationName:
        """Parse an annotation name; :class:`KlpFormatError` with klp-convert's message
        if it does not have the four parts."""
        scan = cls.scan(s)
        if scan.annotation is None:
            raise KlpFormatError(f"Invalid format of symbol ({s})")
        return scan.annotation

    def to_symbol_name(self) -> KlpSymbolName:
        """The livepatch symbol name klp-convert turns this into."""
        return KlpSymbolName(self.sym_objname, self.name, self.sympos)

    def kernel_reading(self, *, ksym_name_len: int = KSYM_NAME_LEN) -> KlpSymbolScan:
        """How the kernel would read this name if it were left unconverted: as
        ``.klp.sym.rela.<lp_obj>.<sym_obj>.<sym>,<pos>`` with object ``rela`` and symbol
        name ``<lp_obj>.<sym_obj>.<sym>`` (count 2 if that is over 511 bytes)."""
        return KlpSymbolName.scan(str(self), ksym_name_len=ksym_name_len)

    def __str__(self) -> str:
        return (
            f"{KLP_SYM_RELA_PREFIX}{self.lp_objname}.{self.sym_objname}.{self.name},{self.sympos}"
        )


class KlpAnnotationScan(NamedTuple):
    source: str
    count: int  # type: ignore[assignment]  # a field: hides tuple.count()
    annotation: KlpAnnotationName | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.count == 4


def parse_annotation_symbol(s: str) -> KlpAnnotationName | None:
    """Recognise a klp-convert annotation symbol name; None otherwise."""
    if not s.startswith(KLP_SYM_RELA_PREFIX):
        return None
    return KlpAnnotationName.scan(s).annotation


def classify_symbol_name(
    s: str, *, ksym_name_len: int = KSYM_NAME_LEN
) -> Literal["klp", "annotation", "other"]:
    """``"annotation"`` for a klp-convert annotation name (checked first, because those
    also satisfy the kernel's format), ``"klp"`` when the kernel's sscanf returns 3,
    ``"other"`` for everything else, malformed ``.klp.sym.`` names included (use
    :meth:`KlpSymbolName.scan` to say what is wrong with those)."""
    if parse_annotation_symbol(s) is not None:
        return "annotation"
    if KlpSymbolName.scan(s, ksym_name_len=ksym_name_len).ok:
        return "klp"
    return "other"
