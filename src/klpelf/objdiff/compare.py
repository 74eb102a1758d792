"""Position-independent comparison of an entity's two builds.

An entity's *fingerprint* is what must be equal for the two builds to behave the
same: its bytes with every relocated field zeroed, and its relocations as (offset
in the entity, type, what the target is), the target named by identity (the
original's name of a correlated pair, the contents of a string literal), never by
a symbol index, a section offset or an addend that only says where things landed.
A function's fingerprint also holds its entries in the special sections.

Line numbers are not behaviour: ``__LINE__`` reaches the code as the ``line`` field
of a ``__bug_table`` entry (BUG/WARN), and as an immediate passed next to
``__FILE__`` (``__might_sleep(__FILE__, __LINE__)``, WARN-like macros). A change
made only of those is *line-only* and ignored.  The immediate is recognised on
x86_64 (``mov $imm32, %esi``, the second argument, with a reference to a string
naming a C file or header close by); on other machines such a change counts.
"""

from __future__ import annotations

from typing import NamedTuple

from klpelf.elf.constants import EM, SHF, SHN, SHT
from klpelf.elf.file import Section
from klpelf.objdiff.correlate import Correlation, pattern
from klpelf.objdiff.objects import Entity, Reloc, Unit
from klpelf.objdiff.special import (
    LINE_AFTER_RELOCATIONS,
    OWNED_DATA_SECTIONS,
    Entry,
    code_bias,
    field_width,
)

__all__ = ["Fingerprint", "Verdict", "compare", "fingerprint", "reloc_key"]

#: (kind, name or string contents, offset): see reloc_key
Key = tuple[str, str | bytes, int]

#: how far (bytes) from a line immediate the reference to __FILE__ may be
_FILE_NEAR = 40
#: x86_64 ``mov $imm32, %esi``: opcode B8+r with r = 6
_MOV_IMM32_ESI = 0xBE


class Fingerprint(NamedTuple):
    size: int
    #: the bytes, relocated fields zeroed (empty for SHT_NOBITS)
    code: bytes
    #: (offset in the entity, type, target)
    relocs: tuple[tuple[int, int, Key], ...]
    #: (section, bytes with relocated fields and line fields zeroed, targets), in order
    special: tuple[tuple[str, bytes, tuple[Key, ...]], ...]
    #: the line fields of the special entries (only the line changed: these differ)
    lines: tuple[bytes, ...]


class Verdict(NamedTuple):
    changed: bool
    #: differences there are, but only in line numbers
    line_only: bool
    #: what differs, for the report ("" when nothing does)
    why: str


def reloc_key(unit: Unit, c: Correlation, r: Reloc, *, code: bool) -> Key:
    """What a relocation refers to, the same in both builds when it is the same thing."""
    s = unit.symbols[r.sym]
    if s.shndx == SHN.UNDEF:
        return ("extern", s.name, r.addend)
    if s.shndx == SHN.ABS or s.shndx >= len(unit.elf.sections):
        return ("abs", s.name, s.st_value + r.addend)
    machine = unit.elf.machine
    bias = code_bias(machine, r.type) if code else 0
    sec = unit.section(s.shndx)
    off = s.st_value + r.addend
    # against the section symbol, or a local label (s390x's as keeps .LC0 for PC32DBL)
    if sec.sh_flags & SHF.STRINGS and r.sym not in unit.entity_of_symbol:
        text, at = string_at(sec, off + bias)
        return ("string", text, at)
    t, off = unit.target(r.sym, r.addend, bias)
    if t is None:
        return ("section", pattern(sec.name), off)
    return ("entity", c.ident(unit, t), off - t.value)


def string_at(sec: Section, off: int) -> tuple[bytes, int]:
    """The NUL-terminated string of a string section that holds byte ``off``, and the
    position of ``off`` in it."""
    data = bytes(sec.data)
    if not 0 <= off < len(data):
        return b"", off
    start = data.rfind(b"\0", 0, off) + 1 if off else 0
    if off and data[off - 1] == 0:
        start = off
    end = data.find(b"\0", off)
    return data[start : end if end >= 0 else len(data)], off - start


def _masked(data: bytes, relocs: list[Reloc] | tuple[Reloc, ...], base: int,
            machine: int) -> bytearray:  # fmt: skip
    out = bytearray(data)
    for r in relocs:
        w = field_width(machine, r.type)
        at = r.offset - base
        out[at : at + w] = bytes(len(out[at : at + w]))
    return out


def _entity_bytes(unit: Unit, e: Entity) -> bytes:
    sec = unit.section(e.section)
    if sec.sh_type == SHT.NOBITS:
        return b""
    return bytes(sec.data[e.start : e.end])


def fingerprint(unit: Unit, c: Correlation, e: Entity,
                entries: list[tuple[Section, Entry]] | None = None) -> Fingerprint:  # fmt: skip
    """The fingerprint of ``e`` (with ``entries``, its special-section entries)."""
    machine = unit.elf.machine
    relocs = unit.relocs_in(e.section, e.start, e.end)
    code = e.kind == "func" or bool(unit.section(e.section).sh_flags & SHF.EXECINSTR)
    masked = _masked(_entity_bytes(unit, e), relocs, e.start, machine)
    keys = tuple((r.offset - e.start, r.type, reloc_key(unit, c, r, code=code)) for r in relocs)
    special = []
    lines = []
    if e.kind == "data" and relocs and unit.section(e.section).name in OWNED_DATA_SECTIONS:
        # the word after the pointers: a pr_debug descriptor's lineno and flags
        last = max(r.offset - e.start + field_width(machine, r.type) for r in relocs)
        lines.append(bytes(masked[last : last + 4]))
        masked[last : last + 4] = bytes(len(masked[last : last + 4]))
    for sec, en in entries or ():
        raw = bytes(sec.data[en.start : en.end]) if sec.sh_type != SHT.NOBITS else b""
        b = _masked(raw, en.relocs, en.start, machine)
        if sec.name in LINE_AFTER_RELOCATIONS and en.relocs:
            last = max(r.offset - en.start + field_width(machine, r.type) for r in en.relocs)
            lines.append(bytes(b[last : last + 2]))
            b[last : last + 2] = bytes(len(b[last : last + 2]))
        special.append((sec.name, bytes(b),
                        tuple(reloc_key(unit, c, r, code=False) for r in en.relocs)))  # fmt: skip
    size = e.end - e.start
    return Fingerprint(size, bytes(masked), keys, tuple(special), tuple(lines))


def compare(c: Correlation, o: Entity, p: Entity,
            fo: Fingerprint, fp: Fingerprint) -> Verdict:  # fmt: skip
    """Whether the two builds of an entity differ, and how."""
    if fo.size != fp.size:
        return Verdict(True, False, f"size {fo.size} -> {fp.size}")
    if fo.relocs != fp.relocs:
        return Verdict(True, False, _reloc_difference(fo, fp))
    if len(fo.special) != len(fp.special):
        return Verdict(True, False, "special-section entries added or removed: " + ", ".join(
            sorted({s for s, _, _ in fp.special} ^ {s for s, _, _ in fo.special}
                   or {s for s, _, _ in fp.special})))  # fmt: skip
    for (so, bo, ko), (sp, bp, kp) in zip(fo.special, fp.special, strict=True):
        if so != sp or bo != bp or ko != kp:
            return Verdict(True, False, f"its {sp} entry changed")
    line_only = fo.lines != fp.lines
    if fo.code != fp.code:
        if not _line_immediates_only(c, p, fo, fp):
            what = "code" if p.kind == "func" else "contents"
            return Verdict(True, False, f"{what} at +{_first_difference(fo.code, fp.code):#x}")
        line_only = True
    return Verdict(False, line_only, "line numbers only" if line_only else "")


def _first_difference(a: bytes, b: bytes) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _reloc_difference(fo: Fingerprint, fp: Fingerprint) -> str:
    for a, b in zip(fo.relocs, fp.relocs, strict=False):
        if a != b:
            return f"relocation at +{b[0]:#x}: {_show(a[2])} -> {_show(b[2])}"
    extra = fp.relocs[len(fo.relocs) :] or fo.relocs[len(fp.relocs) :]
    return f"relocation at +{extra[0][0]:#x} ({_show(extra[0][2])}) added or removed"


def _show(k: Key) -> str:
    kind, what, add = k
    if isinstance(what, bytes):
        return f"{kind} {what.decode('utf-8', 'replace')!r}"
    return what.lstrip("+") + (f"{add:+#x}" if add else "")


def _line_immediates_only(c: Correlation, p: Entity, fo: Fingerprint, fp: Fingerprint) -> bool:
    # every differing byte inside the imm32 of an x86_64 `mov $imm32, %esi` whose two
    # values could be line numbers, with a reference to a C file name's string near it
    if c.patched.elf.machine != EM.X86_64 or len(fo.code) != len(fp.code):
        return False
    a, b = fo.code, fp.code
    diffs = [i for i in range(len(a)) if a[i] != b[i]]
    files = [
        off
        for off, _, (_, what, _) in fp.relocs
        if isinstance(what, bytes) and what.endswith((b".c", b".h"))
    ]
    done = -1
    for i in diffs:
        if i < done:
            continue
        imm = next((q for q in range(max(1, i - 3), i + 1)
                    if a[q - 1] == b[q - 1] == _MOV_IMM32_ESI and i < q + 4), None)  # fmt: skip
        if imm is None or imm + 4 > len(a):
            return False
        va = int.from_bytes(a[imm : imm + 4], "little")
        vb = int.from_bytes(b[imm : imm + 4], "little")
        if not (0 < va < 1 << 20 and 0 < vb < 1 << 20):
            return False
        if not any(abs(off - imm) <= _FILE_NEAR for off in files):
            return False
        done = imm + 4
    return True
