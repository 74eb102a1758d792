"""The kernel's special sections: tables with one entry per site in the code.

Each entry belongs to the function its first relocation points into (the site:
``__bug_table``'s bug_addr, ``__ex_table``'s insn, ``__jump_table``'s code,
``.altinstructions``' instr_offset, a ``__mcount_loc`` address ...); ``klpelf diff``
keeps exactly the entries of the functions it includes.  Entry sizes are found in the
object, not written down per release (struct bug_entry, alt_instr and jump_entry
changed size over the years): sh_entsize when the assembler set it, else the
smallest size that cuts the section into entries with the same relocations at the
same places (relocation spacing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from klpelf.arch import arch_for
from klpelf.elf.constants import EM
from klpelf.errors import KlpFormatError

if TYPE_CHECKING:
    from klpelf.elf.file import Section
    from klpelf.objdiff.objects import Entity, Reloc, Unit

__all__ = [
    "OWNED_DATA_SECTIONS",
    "SPECIAL_SECTIONS",
    "Entry",
    "code_bias",
    "entries_by_owner",
    "field_width",
    "is_special_section",
    "split_entries",
]

#: the tables of sites whose entries follow their functions
SPECIAL_SECTIONS = frozenset({
    "__bug_table", "__ex_table", "__jump_table", ".altinstructions", ".parainstructions",
    ".smp_locks", ".static_call_sites", ".retpoline_sites", ".return_sites", ".call_sites",
    "__mcount_loc", "__patchable_function_entries", ".printk_index", ".orc_unwind_ip",
    ".orc_unwind", ".ibt_endbr_seal",
})  # fmt: skip

#: sections whose entries pair one to one with another's (objtool's ORC: entry i of
#: .orc_unwind describes the address in entry i of .orc_unwind_ip) -> that section
PARALLEL = {".orc_unwind": ".orc_unwind_ip"}

#: the entries whose line number (``__LINE__`` of BUG/WARN) is the two bytes after the
#: last relocated field: struct bug_entry { bug_addr, file, line, flags } on every
#: architecture with CONFIG_DEBUG_BUGVERBOSE (include/asm-generic/bug.h)
LINE_AFTER_RELOCATIONS = frozenset({"__bug_table"})

#: sections of data objects that belong to the one function that uses them: the
#: dynamic debug descriptors of pr_debug() (struct _ddebug, include/linux/dynamic_debug.h:
#: modname, function, filename, format, then lineno:18 and flags:8 in one word, then
#: the static key of the call site's jump label).  Such an object is compared as part
#: of its function (the word after its pointers, the line, ignored) and copied with it
#: (kept under its section's name, which the module loader looks up: ld -r merges
#: them), never referred to in the kernel, nor refused as changed data.
OWNED_DATA_SECTIONS = frozenset({"__dyndbg"})


def is_special_section(name: str) -> bool:
    return name in SPECIAL_SECTIONS


class Entry(NamedTuple):
    """One entry of a special section: bytes [start, end), its relocations."""

    start: int
    end: int
    relocs: tuple[Reloc, ...]


def field_width(machine: int, r_type: int) -> int:
    """Bytes of the place a relocation of type ``r_type`` writes (0: unknown)."""
    arch = arch_for(machine)
    if arch is None:
        return 0
    t = arch.relocation_types.get(r_type)
    return t.width if t is not None else 0


def code_bias(machine: int, r_type: int) -> int:
    """What to add to a code relocation's addend to reach the byte it refers to.

    A PC-relative field is computed from its own address (P), while the instruction
    counts from its end (x86: ``lea sym(%rip)`` is ``sym - 4`` for a 4-byte field at
    the end) or its start (s390 ``larl``: ``sym + 2``, the field two bytes in); a
    string or a static local is found by where the reference lands, not by the
    addend, whose value depends on the instruction.
    """
    arch = arch_for(machine)
    t = arch.relocation_types.get(r_type) if arch is not None else None
    if t is None or "- P" not in t.formula:
        return 0
    if machine == EM.X86_64:
        return t.width
    if machine == EM.S390 and t.name.endswith("DBL"):
        return -2
    return 0


def split_entries(unit: Unit, sec: Section) -> list[Entry]:
    """The entries of special section ``sec``.

    :raises KlpFormatError: no entry size fits the section (then its entries cannot
        be told apart, and the section cannot be kept in part).
    """
    size = sec.sh_size
    relocs = unit.relocs.get(sec.index, [])
    if size == 0:
        return []
    if sec.name in PARALLEL:
        return _parallel_entries(unit, sec)
    sizes = [sec.sh_entsize] if sec.sh_entsize and size % sec.sh_entsize == 0 else [
        e for e in range(1, size + 1) if size % e == 0]  # fmt: skip
    for e in sizes:
        entries = _cut(relocs, size, e)
        if entries is not None:
            return entries
    raise KlpFormatError(
        f"section {sec.name}: no entry size cuts it into entries with the same relocations "
        "at the same places", path=unit.path)  # fmt: skip


def _cut(relocs: list[Reloc], size: int, e: int) -> list[Entry] | None:
    n = size // e
    per: list[list[Reloc]] = [[] for _ in range(n)]
    for r in relocs:
        if r.offset >= size:
            return None
        per[r.offset // e].append(r)
    shape = None
    out = []
    for k, rs in enumerate(per):
        this = tuple((r.offset - k * e, r.type) for r in rs)
        if not this or (shape is not None and this != shape):
            return None
        shape = this
        out.append(Entry(k * e, (k + 1) * e, tuple(rs)))
    return out


def _parallel_entries(unit: Unit, sec: Section) -> list[Entry]:
    other = next((s for s in unit.elf.sections if s.name == PARALLEL[sec.name]), None)
    if other is None:
        raise KlpFormatError(f"section {sec.name} without {PARALLEL[sec.name]}", path=unit.path)
    n = len(split_entries(unit, other))
    if n == 0 or sec.sh_size % n:
        raise KlpFormatError(f"section {sec.name}: {sec.sh_size} bytes are not one entry for "
                             f"each of the {n} of {other.name}", path=unit.path)  # fmt: skip
    e = sec.sh_size // n
    return [Entry(k * e, (k + 1) * e, ()) for k in range(n)]


def entries_by_owner(unit: Unit) -> tuple[dict[Entity, list[tuple[Section, Entry]]],
                                          list[tuple[Section, Entry]]]:  # fmt: skip
    """The entries of every special section of ``unit`` by the function they belong to,
    and those that belong to no function of the unit (in section order)."""
    owned: dict[Entity, list[tuple[Section, Entry]]] = {}
    orphans: list[tuple[Section, Entry]] = []
    owners_of: dict[str, list[Entity | None]] = {}
    secs = [s for s in unit.elf.sections if is_special_section(s.name) and s.sh_size]
    # the parallel tables last: their owners are those of their partner's entries
    for sec in sorted(secs, key=lambda s: s.name in PARALLEL):
        entries = split_entries(unit, sec)
        if sec.name in PARALLEL:
            owners = owners_of.get(PARALLEL[sec.name], [])
        else:
            owners = [_owner(unit, en) for en in entries]
            owners_of[sec.name] = owners
        for en, owner in zip(entries, owners, strict=False):
            if owner is None:
                orphans.append((sec, en))
            else:
                owned.setdefault(owner, []).append((sec, en))
    return owned, orphans


def _owner(unit: Unit, en: Entry) -> Entity | None:
    for r in en.relocs:
        t, _ = unit.target(r.sym, r.addend)
        if t is not None and t.kind == "func":
            return t
    return None
