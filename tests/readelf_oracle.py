"""GNU readelf 2.40 as an oracle for klpelf's own ELF reader.

:func:`run_readelf` runs ``readelf -W -S -s -r FILE`` once (``LC_ALL=C``) and
parses the three tables into frozen dataclasses; :func:`parse_readelf` parses
output that was captured elsewhere.  Everything readelf prints is kept *as
printed* where printing loses information (names, type strings, ``Ndx``), and
numbers are turned into ints.  The parser is strict: a line it does not
understand, or an entry count that differs from the count in the table's
title, raises :class:`ReadelfParseError` instead of silently dropping data.
Only when readelf reported an error (``Error:`` on stderr, i.e. a corrupt
file) may a table be shorter than its title says; a title with no table
under it (readelf could not read the table) gives an empty list.  stderr is
kept, so a test can require it to be empty.

Output is decoded as UTF-8 with ``surrogateescape``, so every byte survives.
Quirks of readelf 2.40 that the parser (or a comparison against it) has to
know about:

* Names are escaped: a control byte ``c`` (0x00-0x1f, and 0x7f) is printed
  as ``^`` followed by the byte ``c + 0x40`` (so DEL becomes ``^`` + byte
  0xbf), bytes >= 0x80 are printed raw.  The section name in the title of a
  relocation or symbol table is escaped differently: bytes >= 0x80 become
  ``<C3>``, and the name is cut at 256 characters, so the keys of
  :attr:`ReadelfOutput.symtabs` and :attr:`ReadelfOutput.relocs` can differ
  from the same section's name in :attr:`ReadelfOutput.sections`.
  :func:`readelf_printable` does either to a raw name, for comparisons.
* ``-S``: the name is ``%-17s`` (padding counted in bytes) and the type
  ``%-15s``; longer ones are followed by a single space.  Section types can
  contain spaces (``SYMTAB SECTION INDICES`` for SHT_SYMTAB_SHNDX,
  ``00000040: <unknown>``) and are otherwise names (``VERSYM``,
  ``X86_64_UNWIND``, ``GNU_HASH`` ...) or ``LOOS+0x1``, ``LOPROC+0xffffff0``,
  ``LOUSER+0x1``.  The flags column can be empty.  Trailing spaces of a name
  that fits in 17 bytes cannot be told from padding and are dropped.
* ``-s``: ``Size`` is decimal up to 99999 and ``0x...`` hex above.  Type and
  binding can contain spaces (``<OS specific>: 10``, ``<processor specific>:
  13``, ``<unknown>: 7``; ``IFUNC`` and ``UNIQUE`` are only named for
  ELFOSABI_GNU/FreeBSD).  Extra ``st_other`` bits are printed as `` [...] ``
  after the visibility (``[<localentry>: 8]`` on ppc64, ``[VARIANT_PCS]`` on
  arm64, ``[<other>: 4]`` elsewhere); they are :attr:`ReadelfSymbol.other`.
  ``Ndx`` can contain a space (``OS [0xff20]``, SHN_LIVEPATCH), or be
  ``PRC[0xff00]``, ``RSV[0xffff]``, ``bad section index[500]``; indexes from
  SHT_SYMTAB_SHNDX are printed resolved (``65300``).  A STT_SECTION symbol
  with ``st_name == 0`` is printed with its section's name (empty when
  ``st_shndx`` is not below ``e_shnum``).  In ``.dynsym`` the version is
  appended: ``foo@@VER``, ``foo@VER``, ``foo@VER (2)`` for undefined ones.
* ``-r``: for a STT_GNU_IFUNC symbol the value column holds ``name()``
  (padded, then at least one space), not the value.  A symbol-less RELA entry
  has no ``+``: the addend follows 20 (ELF32: 12) spaces, ``-`` for negative;
  a symbol-less REL entry ends after the type.
  For STT_SECTION symbols with ``st_name == 0`` the name is the section's name,
  ``ABS``/``COMMON``/..., or ``<section 0x1f4>`` (OS/processor indexes appear
  as readelf's internal ``0xffffff20``).  Empty relocation sections are not
  listed at all.  SHT_RELR sections list their decoded offsets.
* ELF32 tables have narrower columns (8 hex digits for addresses, three
  spaces between a reloc's symbol value and name).
* Corrupt files: ``Section Header:`` for a single section, negative counts
  (``There are -16777216 section headers``), ``Relocation section -5534`` (the
  sh_name number when there is no string table), names ``<no-strings>`` and
  ``<corrupt>``, several symbol tables of one name.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
from dataclasses import dataclass

__all__ = [
    "ReadelfOutput",
    "ReadelfParseError",
    "ReadelfReloc",
    "ReadelfSection",
    "ReadelfSymbol",
    "parse_readelf",
    "readelf_printable",
    "readelf_version",
    "run_readelf",
]

READELF = "readelf"


class ReadelfParseError(Exception):
    """readelf printed something this parser does not understand."""


@dataclass(frozen=True, slots=True)
class ReadelfSection:
    index: int
    name: str
    #: as printed: ``PROGBITS``, ``RELA``, ``LOOS+0x1``, ``SYMTAB SECTION INDICES`` ...
    type: str
    address: int
    offset: int
    size: int
    entsize: int
    #: as printed, possibly empty: ``AX``, ``AIo``, ``WAT``
    flags: str
    link: int
    info: int
    align: int


#: Ndx strings that stand for the generic special section indexes
_SPECIAL_NDX = {"UND": 0, "ABS": 0xFFF1, "COM": 0xFFF2}
_BRACKET_NDX_RE = re.compile(r"(?:OS |PRC|RSV)\[0x([0-9a-f]+)\]")


@dataclass(frozen=True, slots=True)
class ReadelfSymbol:
    num: int
    value: int
    size: int
    #: as printed: ``FUNC``, ``IFUNC``, ``<OS specific>: 10`` ...
    type: str
    bind: str
    vis: str
    #: the bracketed st_other text after the visibility, e.g. ``<localentry>: 8``
    other: str | None
    #: as printed, stripped: ``UND``, ``ABS``, ``COM``, ``5``, ``OS [0xff20]`` ...
    ndx: str
    #: as printed (escaped, version suffix included)
    name: str

    @property
    def shndx(self) -> int | None:
        """The section index ``Ndx`` stands for, where that is machine-independent.

        A number, UND/ABS/COM, or the value in ``OS [0x..]``/``PRC[0x..]``/
        ``RSV[0x..]``; ``None`` for machine-specific names (``LARGE_COM``,
        ``SCOM`` ...) and for ``bad section index[...]``.
        """
        if self.ndx.isdigit():
            return int(self.ndx)
        special = _SPECIAL_NDX.get(self.ndx)
        if special is not None:
            return special
        m = _BRACKET_NDX_RE.fullmatch(self.ndx)
        return int(m.group(1), 16) if m else None


@dataclass(frozen=True, slots=True)
class ReadelfReloc:
    offset: int
    info: int
    #: as printed: ``R_X86_64_PLT32``, ``unrecognized: 3e8``
    type: str
    #: the symbol's st_value; None when the entry has no symbol (index 0 or bad),
    #: and for STT_GNU_IFUNC symbols (see ``ifunc``)
    sym_value: int | None
    #: as printed (section name for unnamed STT_SECTION symbols); None without symbol
    sym_name: str | None
    #: signed; None for REL entries
    addend: int | None
    #: readelf printed ``name()`` instead of the value: the symbol is STT_GNU_IFUNC
    ifunc: bool


@dataclass(frozen=True, slots=True)
class ReadelfOutput:
    #: 32 or 64, from the table headings; None when readelf printed no table
    elf_class: int | None
    #: from "There are N section headers, starting at offset 0x...:"
    shnum: int | None
    shoff: int | None
    sections: list[ReadelfSection]
    #: symbol tables by (title) section name: ``.symtab``, ``.dynsym`` (same-named
    #: tables, which only corrupt files have, are concatenated)
    symtabs: dict[str, list[ReadelfSymbol]]
    #: (name, symbols) of every symbol table, in file order
    symbol_tables: list[tuple[str, list[ReadelfSymbol]]]
    #: entries of all non-empty REL/RELA sections of that name, in file order
    relocs: dict[str, list[ReadelfReloc]]
    #: (name, sh_offset, entries) of every non-empty REL/RELA section, in file order
    reloc_sections: list[tuple[str, int, list[ReadelfReloc]]]
    #: (name, sh_offset, decoded offsets) of every SHT_RELR section
    relr_sections: list[tuple[str, int, list[int]]]
    stderr: str
    returncode: int

    @property
    def warnings(self) -> list[str]:
        """The non-empty lines readelf wrote to stderr (warnings and errors)."""
        return [line for line in self.stderr.splitlines() if line.strip()]


# --------------------------------------------------------------------------- helpers


def readelf_printable(name: bytes | str, *, title: bool = False) -> str:
    """``name`` the way readelf 2.40 prints it under ``LC_ALL=C``, decoded like its output.

    Names in table rows (``-S`` names, symbol names, reloc symbol names): a control
    byte ``c`` becomes ``^`` + byte ``c + 0x40``, other bytes are printed raw.
    Section names in the titles of ``-r`` and ``-s`` tables (``title=True``, readelf's
    printable_section_name): bytes >= 0x80 become ``<XX>``, and the result is cut
    at 256 characters.  A ``str`` is taken as UTF-8 (with surrogateescape).
    """
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    if _NONPRINT_RE.search(raw) is None and (not title or len(raw) <= _TITLE_MAX):
        return raw.decode("ascii")
    out = bytearray()
    if not title:
        for b in raw:
            if b < 0x20 or b == 0x7F:
                out += b"^"
                out.append(b + 0x40)
            else:
                out.append(b)
        return out.decode("utf-8", "surrogateescape")
    remaining = _TITLE_MAX
    for b in raw:
        if b < 0x20 or b == 0x7F:
            if remaining < 2:
                break
            out += b"^"
            out.append(b + 0x40)
            remaining -= 2
        elif b < 0x7F:
            out.append(b)
            remaining -= 1
        else:
            if remaining < 4:
                break
            out += b"<%02X>" % b
            remaining -= 4
        if remaining == 0:
            break
    return out.decode("utf-8", "surrogateescape")


_NONPRINT_RE = re.compile(rb"[\x00-\x1f\x7f-\xff]")
_TITLE_MAX = 256


def readelf_version() -> str:
    """The first line of ``readelf --version``: ``GNU readelf (GNU Binutils for Debian) 2.40``."""
    proc = subprocess.run(
        [READELF, "--version"], capture_output=True, text=True, check=True, env=_env()
    )
    return proc.stdout.splitlines()[0] if proc.stdout else ""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_") and k != "LANG"}
    env["LC_ALL"] = "C"
    return env


def run_readelf(path: str | os.PathLike[str]) -> ReadelfOutput:
    """Run ``readelf -W -S -s -r path`` and parse its output.

    readelf's exit status is kept in :attr:`ReadelfOutput.returncode` (it is
    non-zero when readelf reported errors); what it printed is still parsed.
    """
    proc = subprocess.run(
        [READELF, "-W", "-S", "-s", "-r", "--", os.fspath(path)],
        capture_output=True,
        env=_env(),
        check=False,
    )
    return parse_readelf(
        proc.stdout.decode("utf-8", "surrogateescape"),
        proc.stderr.decode("utf-8", "surrogateescape"),
        proc.returncode,
    )


# --------------------------------------------------------------------------- regexes

_SHNUM_RE = re.compile(
    r"There (?:is|are) (-?\d+) section headers?, starting at offset (0x[0-9a-f]+|0):"
)
_NOTHING_LINES = frozenset(
    {
        "There are no relocations in this file.",
        "There are no sections in this file.",
        "There are no section headers in this file.",
        "Dynamic symbol information is not available for displaying symbols.",
    }
)

_SEC_HEADINGS = {
    "  [Nr] Name              Type            Address          Off    Size   ES Flg Lk Inf Al": 64,
    "  [Nr] Name              Type            Addr     Off    Size   ES Flg Lk Inf Al": 32,
}


def _section_re(addr_digits: int) -> re.Pattern[str]:
    # name: greedy, so it ends at the single space before the type; the type is one
    # token, or one of the two readelf types with spaces (the lookahead stops the
    # last word of those from being taken for the whole type)
    return re.compile(
        r"^  \[ *(\d+)\] (.*) "
        r"(SYMTAB SECTION INDICES|[0-9a-f]{8}: <unknown>|(?!INDICES |<unknown> )\S+)"
        rf" +([0-9a-f]{{{addr_digits}}}) ([0-9a-f]+) ([0-9a-f]+) ([0-9a-f]+)"
        r" +([A-Za-z]*) +(\d+) +(\d+) +(\d+)$",
        re.MULTILINE,
    )


_SECTION_RE = {64: _section_re(16), 32: _section_re(8)}

_SYMTAB_TITLE_RE = re.compile(r"Symbol table '(.*)' contains (\d+) entr(?:y|ies):")
_SYM_HEADINGS = {
    "   Num:    Value          Size Type    Bind   Vis      Ndx Name": 64,
    "   Num:    Value  Size Type    Bind   Vis      Ndx Name": 32,
}

_SYM_WORD = r"<[A-Za-z ]+>: -?\d+|[A-Za-z0-9_]+"


def _symbol_re(value_digits: int) -> re.Pattern[str]:
    return re.compile(
        rf"^ *(\d+): ([0-9a-f]{{{value_digits}}}) +(\d+|0x[0-9a-f]+) ({_SYM_WORD}) +({_SYM_WORD})"
        rf" +({_SYM_WORD}|<[A-Za-z ]+>)(?: +\[([^\]\n]*)\] )?"
        r" +(OS \[0x[0-9a-f]+\]|bad section index\[ *-?\d+\]|[A-Z]*\[0x[0-9a-f]+\]|[A-Za-z0-9_]+)"
        r" (.*)$",
        re.MULTILINE,
    )


_SYMBOL_RE = {64: _symbol_re(16), 32: _symbol_re(8)}

_RELOC_TITLE_RE = re.compile(
    r"Relocation section (?:'(.*)'|(-?\d+)) at offset (0x[0-9a-f]+|0) contains (\d+) entr(?:y|ies):"
)
#: heading -> (elf class, is_rela)
_RELOC64_HEADING = "    Offset             Info             Type               Symbol's Value"
_RELOC_HEADINGS = {
    _RELOC64_HEADING + "  Symbol's Name + Addend": (64, True),
    _RELOC64_HEADING + "  Symbol's Name": (64, False),
    " Offset     Info    Type                Sym. Value  Symbol's Name + Addend": (32, True),
    " Offset     Info    Type                Sym. Value  Symbol's Name": (32, False),
}
_RELR_COUNT_RE = re.compile(r"  (\d+) offsets?")
_RELR_ENTRY_RE = re.compile(r"^([0-9a-f]+)$", re.MULTILINE)

_RTYPE = r"(unrecognized: [0-9a-f]+|\S+)"


def _reloc_re(digits: int, sep: str, rela: bool) -> re.Pattern[str]:
    head = rf"^([0-9a-f]{{{digits}}})  ([0-9a-f]{{{digits}}}) {_RTYPE}"
    # the symbol's value, or for STT_GNU_IFUNC symbols its name and "()", padded
    value = rf" +(?:([0-9a-f]{{{digits}}}){sep}|(.*?\(\)) +)"
    if rela:
        # with a symbol: " value name + addend"; without: padding and a bare addend
        body = rf"(?:{value}(.*) ([+-]) ([0-9a-f]+)| +(-?[0-9a-f]+))? *$"
    else:
        body = rf"(?:{value}(.*))? *$"
    return re.compile(head + body, re.MULTILINE)


_RELOC_RE = {
    (64, True): _reloc_re(16, " ", True),
    (64, False): _reloc_re(16, " ", False),
    (32, True): _reloc_re(8, "   ", True),
    (32, False): _reloc_re(8, "   ", False),
}


# --------------------------------------------------------------------------- parser


def _fail(what: str, text: str) -> ReadelfParseError:
    return ReadelfParseError(f"{what}: {text[:500]!r}")


def _unmatched(regex: re.Pattern[str], body: str) -> str:
    for line in body.split("\n"):
        if regex.fullmatch(line) is None:
            return line
    return "<no line failed on its own>"


def _check_count(
    regex: re.Pattern[str], body: str, found: int, expected: int, what: str, strict: bool
) -> None:
    """Every line of ``body`` must be an entry; ``strict``: as many as the title says."""
    lines = body.count("\n") + 1 if body else 0
    if found != lines:
        raise _fail(f"unparsed {what} line", _unmatched(regex, body))
    if found != expected and strict:
        raise _fail(f"{what}: {found} entries, title says {expected}", body[:200])


def _unpad(field: str, width: int) -> str:
    """A ``%-{width}s`` field: strip the padding if the text fitted in ``width`` bytes."""
    n = len(field) if field.isascii() else len(field.encode("utf-8", "surrogateescape"))
    return field.rstrip(" ") if n <= width else field


def _int(text: str) -> int:
    return int(text, 16) if text.startswith("0x") else int(text)


def _parse_sections(
    block: str, shnum: int | None, strict: bool
) -> tuple[int, list[ReadelfSection]]:
    lines = block.split("\n", 2)
    if len(lines) < 2 or lines[1] not in _SEC_HEADINGS:
        raise _fail("unknown section header table heading", block)
    elf_class = _SEC_HEADINGS[lines[1]]
    body = lines[2] if len(lines) > 2 else ""
    key = body.find("Key to Flags:")
    if key >= 0:
        for line in body[key:].split("\n")[1:]:
            if not line.startswith("  ") or "(" not in line:
                raise _fail("unexpected line in Key to Flags", line)
        body = body[:key]
    body = body.rstrip("\n")
    regex = _SECTION_RE[elf_class]
    rows = regex.findall(body)
    expected = len(rows) if shnum is None else shnum
    _check_count(regex, body, len(rows), expected, "section", strict)
    sections = [
        ReadelfSection(
            int(nr),
            _unpad(name, 17),
            typ,
            int(addr, 16),
            int(off, 16),
            int(size, 16),
            int(es, 16),
            flags,
            int(lk),
            int(inf),
            int(al),
        )
        for nr, name, typ, addr, off, size, es, flags, lk, inf, al in rows
    ]
    return elf_class, sections


def _parse_symbols(
    title: re.Match[str], rest: str, strict: bool
) -> tuple[int | None, list[ReadelfSymbol]]:
    if not rest:
        return None, []  # readelf could not read the table
    heading, _, body = rest.partition("\n")
    elf_class = _SYM_HEADINGS.get(heading)
    if elf_class is None:
        raise _fail("unknown symbol table heading", heading)
    regex = _SYMBOL_RE[elf_class]
    rows = regex.findall(body)
    _check_count(regex, body, len(rows), int(title.group(2)), "symbol", strict)
    symbols = [
        ReadelfSymbol(
            int(num),
            int(value, 16),
            _int(size),
            typ,
            bind,
            vis,
            other if other else None,
            ndx,
            name,
        )
        for num, value, size, typ, bind, vis, other, ndx, name in rows
    ]
    return elf_class, symbols


def _parse_relr(rest: str, strict: bool) -> list[int] | None:
    """The offsets of a SHT_RELR table, or None if ``rest`` is not one."""
    heading, _, body = rest.partition("\n")
    count = _RELR_COUNT_RE.fullmatch(heading)
    if count is None:
        return None
    words = _RELR_ENTRY_RE.findall(body)
    _check_count(_RELR_ENTRY_RE, body, len(words), int(count.group(1)), "RELR offset", strict)
    return [int(w, 16) for w in words]


def _parse_relocs(
    title: re.Match[str], rest: str, strict: bool
) -> tuple[int | None, list[ReadelfReloc]]:
    if not rest:
        return None, []  # readelf could not read the table
    heading, _, body = rest.partition("\n")
    kind = _RELOC_HEADINGS.get(heading)
    if kind is None:
        raise _fail("unknown relocation table heading", heading)
    elf_class, is_rela = kind
    regex = _RELOC_RE[kind]
    rows = regex.findall(body)
    _check_count(regex, body, len(rows), int(title.group(4)), "relocation", strict)
    if is_rela:
        return elf_class, [
            ReadelfReloc(
                int(off, 16),
                int(info, 16),
                typ,
                int(value, 16) if value else None,
                name if value or ifunc else None,
                int(sign + addend, 16) if sign else int(bare, 16) if bare else None,
                bool(ifunc),
            )
            for off, info, typ, value, ifunc, name, sign, addend, bare in rows
        ]
    return elf_class, [
        ReadelfReloc(
            int(off, 16),
            int(info, 16),
            typ,
            int(value, 16) if value else None,
            name if value or ifunc else None,
            None,
            bool(ifunc),
        )
        for off, info, typ, value, ifunc, name in rows
    ]


def parse_readelf(stdout: str, stderr: str = "", returncode: int = 0) -> ReadelfOutput:
    """Parse the output of ``readelf -W -S -s -r`` (any subset of the three)."""
    # hundreds of thousands of acyclic objects: the collector would only rescan them
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(stdout, stderr, returncode)
    finally:
        if gc_was_enabled:
            gc.enable()


def _parse(stdout: str, stderr: str, returncode: int) -> ReadelfOutput:
    # Entry counts must match the tables' titles, unless readelf reported an error:
    # then it may have printed a title and only part of the table, or none of it.
    strict = "Error: " not in stderr
    elf_classes: set[int | None] = set()
    shnum: int | None = None
    shoff: int | None = None
    sections: list[ReadelfSection] = []
    symtabs: dict[str, list[ReadelfSymbol]] = {}
    symbol_tables: list[tuple[str, list[ReadelfSymbol]]] = []
    relocs: dict[str, list[ReadelfReloc]] = {}
    reloc_sections: list[tuple[str, int, list[ReadelfReloc]]] = []
    relr_sections: list[tuple[str, int, list[int]]] = []

    # tables are separated by blank lines; no entry line is ever empty (names are
    # escaped, so they hold no newline, and an empty name leaves a trailing space)
    for raw_block in stdout.split("\n\n"):
        block = raw_block.strip("\n")
        if not block:
            continue
        first, _, rest = block.partition("\n")
        if first.startswith("Relocation section "):
            title = _RELOC_TITLE_RE.fullmatch(first)
            if title is None:
                raise _fail("bad relocation section title", first)
            name = title.group(1) if title.group(1) is not None else title.group(2)
            offset = int(title.group(3), 16)
            relr = _parse_relr(rest, strict)
            if relr is not None:
                relr_sections.append((name, offset, relr))
                continue
            cls, entries = _parse_relocs(title, rest, strict)
            elf_classes.add(cls)
            reloc_sections.append((name, offset, entries))
            relocs.setdefault(name, []).extend(entries)
        elif first.startswith("Symbol table "):
            title = _SYMTAB_TITLE_RE.fullmatch(first)
            if title is None:
                raise _fail("bad symbol table title", first)
            cls, symbols = _parse_symbols(title, rest, strict)
            elf_classes.add(cls)
            symbol_tables.append((title.group(1), symbols))
            symtabs.setdefault(title.group(1), []).extend(symbols)
        elif first in ("Section Headers:", "Section Header:"):
            if sections:
                raise _fail("two section header tables", first)
            cls, sections = _parse_sections(block, shnum, strict)
            elf_classes.add(cls)
        elif (m := _SHNUM_RE.fullmatch(first)) is not None and not rest:
            shnum, shoff = int(m.group(1)), int(m.group(2), 16)
        elif first in _NOTHING_LINES and not rest:
            pass
        else:
            raise _fail("unexpected output", block)

    elf_classes.discard(None)
    if len(elf_classes) > 1:
        raise ReadelfParseError("tables of both ELF32 and ELF64 layout in one output")
    return ReadelfOutput(
        elf_class=elf_classes.pop() if elf_classes else None,
        shnum=shnum,
        shoff=shoff,
        sections=sections,
        symtabs=symtabs,
        symbol_tables=symbol_tables,
        relocs=relocs,
        reloc_sections=reloc_sections,
        relr_sections=relr_sections,
        stderr=stderr,
        returncode=returncode,
    )
