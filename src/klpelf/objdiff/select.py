"""What the diff object holds, and what a livepatch cannot do.

Included: every function that changed or is new; a part gcc split off (``.cold``,
``.part.N``) pulls in its parent when it changed, and comes with its parent; a
function that uses an anonymous section (a jump table, ``.rodata`` without a symbol)
whose contents changed is changed.  Then what the included code needs and the kernel
does not have: new data objects and the anonymous sections it refers to, and copies
of the read-only statics without pointers it uses (``__func__.N``, constant tables).

Refused, each with a reason naming the symbol: a data object that changed (its
contents, size or what its pointers point to) or was removed while code of the
original still uses it: the kernel's copy is live and a livepatch replaces
functions only; init code that changed or is new (it has run, and is freed); a
change in a section that no function owns (a special-section entry of no function,
an anonymous section no function refers to).
"""

from __future__ import annotations

from typing import NamedTuple

from klpelf.elf.constants import SHF, SHT, STB
from klpelf.elf.file import Section
from klpelf.objdiff.compare import compare, fingerprint
from klpelf.objdiff.correlate import Correlation, parent_name
from klpelf.objdiff.objects import Entity, Unit, is_init_section
from klpelf.objdiff.special import OWNED_DATA_SECTIONS, Entry, code_bias, entries_by_owner

__all__ = ["Included", "Selection", "select"]

#: the sections that give each traceable function its ftrace location
_FTRACE_SECTIONS = {"__mcount_loc", "__patchable_function_entries"}


class Included(NamedTuple):
    """One entity of the patched build that goes into the diff object, and why."""

    entity: Entity
    why: str


class Selection:
    """The outcome: what is included, what was only a line-number change, what is refused."""

    def __init__(self) -> None:
        self.functions: dict[Entity, Included] = {}
        self.data: dict[Entity, Included] = {}
        #: functions whose only differences are line numbers (patched names)
        self.line_only: list[str] = []
        #: functions of the original the patched build no longer has
        self.removed: list[str] = []
        self.refusals: list[str] = []
        #: the included functions a klp_func replaces (the kernel has them, with an
        #: ftrace location)
        self.replaced: set[Entity] = set()
        #: the special-section entries of the patched build, by owner
        self.entries: dict[Entity, list[tuple[Section, Entry]]] = {}

    @property
    def included(self) -> set[Entity]:
        return set(self.functions) | set(self.data)


def _init(unit: Unit, e: Entity) -> bool:
    return is_init_section(unit.section(e.section).name)


def _owned(unit: Unit, e: Entity) -> bool:
    return e.kind == "data" and unit.section(e.section).name in OWNED_DATA_SECTIONS


def _is_string(unit: Unit, e: Entity) -> bool:
    return bool(unit.section(e.section).sh_flags & SHF.STRINGS)


def _shares_code_section(unit: Unit, e: Entity) -> bool:
    # gcc without -ffunction-sections: the assembler resolves a call or jump to another
    # function of the same section itself, and the copy would jump to the wrong place
    if _init(unit, e):
        return False  # refused on its own
    return sum(x.kind == "func" for x in unit.by_section.get(e.section, ())) > 1


def _users(unit: Unit) -> dict[Entity, list[Entity]]:
    # entity -> the functions and data whose relocations refer to it
    out: dict[Entity, list[Entity]] = {}
    machine = unit.elf.machine
    for e in unit.entities:
        for r in unit.relocs_in(e.section, e.start, e.end):
            bias = code_bias(machine, r.type) if e.kind == "func" else 0
            t, _ = unit.target(r.sym, r.addend, bias)
            if t is not None and t != e and e not in out.get(t, ()):
                out.setdefault(t, []).append(e)
    return out


def select(c: Correlation) -> Selection:
    """Decide what the diff object holds (see the module docstring)."""
    orig, patched = c.orig, c.patched
    sel = Selection()
    o_owned, o_orphans = entries_by_owner(orig)
    p_owned, p_orphans = entries_by_owner(patched)
    sel.entries = p_owned
    o_users, p_users = _users(orig), _users(patched)
    mismatch = next((o for o, p in c.to_patched.items() if o.kind == "func"
                     and not _init(orig, o) and _shares_code_section(orig, o)
                     != _shares_code_section(patched, p)), None)  # fmt: skip
    if mismatch is not None:
        # one build with -ffunction-sections, the other without: nothing compares
        sel.refusals.append(f"function {mismatch.name} has a section of its own in one build "
                            "only: ORIG.o and PATCHED.o must be built with the same flags "
                            "(-ffunction-sections -fdata-sections)")  # fmt: skip
        return sel
    changed: dict[Entity, str] = {}
    for o, p in c.to_patched.items():
        if o.kind == "anon" and _is_string(orig, o):
            continue  # strings are compared where they are used, by contents
        v = compare(c, o, p, fingerprint(orig, c, o, o_owned.get(o)),
                    fingerprint(patched, c, p, p_owned.get(p)))  # fmt: skip
        if v.changed:
            changed[p] = v.why
        elif v.line_only and p.kind == "func":
            sel.line_only.append(p.name)
    new = [p for p in patched.entities if p not in c.to_orig]
    for p in new:
        if p.kind == "func":
            changed[p] = "new"

    # changed data and sections: refused, or pulled into the functions that use them
    for p, why in changed.items():
        was = c.to_orig.get(p)
        if _owned(patched, p):
            continue  # part of its function, below
        if p.kind == "data" and was is not None:
            if was.bind != STB.LOCAL or o_users.get(was):
                sel.refusals.append(f"data {was.name} changed ({why}): the kernel's copy is in "
                                    "use, and a livepatch replaces functions only")  # fmt: skip
        elif p.kind == "anon" and was is not None:
            if _init(patched, p):
                sel.refusals.append(f"init data in {p.name} changed ({why})")
            elif not p_users.get(p) and not o_users.get(was):
                sel.refusals.append(f"section {p.name} changed ({why}) and no function owns it")
    funcs: dict[Entity, str] = {p: why if why == "new" else f"changed: {why}"
                                for p, why in changed.items() if p.kind == "func"}  # fmt: skip
    for p, why in changed.items():
        if (p.kind == "anon" or _owned(patched, p)) and p in c.to_orig and not _init(patched, p):
            for u in p_users.get(p, ()):
                if u.kind == "func" and u not in funcs:
                    funcs[u] = f"uses {p.name}, which changed ({why})"
    _parents(patched, funcs)
    for p, why in funcs.items():
        if _shares_code_section(patched, p):
            sec = patched.section(p.section).name
            sel.refusals.append(
                f"function {p.name} shares section {sec} with other functions: calls and jumps "
                "inside a section have no relocations, so its code cannot be moved; build "
                "with -ffunction-sections -fdata-sections (kbuild: KCFLAGS=...)")  # fmt: skip
            continue
        if _init(patched, p):
            what = "new init code" if why == "new" else (
                f"init code changed ({why.removeprefix('changed: ')})")
            sel.refusals.append(f"function {p.name}: {what}: init code has run and is freed; "
                                "a livepatch cannot change it")  # fmt: skip
            continue
        sel.functions[p] = Included(p, why)

    # a replaced function needs an ftrace location in the kernel's copy: klp_patch_func()
    # redirects it there ("failed to find location for function")
    # (a .cold part has none: it is reached through its parent, and so is a .part
    # without one when its parent is included)
    traced = {s.name for s in orig.elf.sections} & _FTRACE_SECTIONS
    names = {f.name for f in sel.functions}
    for p in list(sel.functions):
        old = c.to_orig.get(p)
        if old is None or p.name.endswith(".cold"):
            continue
        if not traced or any(sec.name in _FTRACE_SECTIONS for sec, _ in o_owned.get(old, ())):
            sel.replaced.add(p)
        elif parent_name(p.name) not in names:
            del sel.functions[p]
            sel.refusals.append(f"function {old.name}: the original has no ftrace location "
                                "(notrace?): livepatch cannot redirect it")  # fmt: skip

    # removed entities
    for o in orig.entities:
        if o in c.to_patched:
            continue
        if o.kind == "func":
            sel.removed.append(o.name)
        elif o.kind == "data" and not _owned(orig, o):
            still = [u for u in o_users.get(o, ()) if u.kind == "func"
                     and c.to_patched.get(u) not in sel.functions]  # fmt: skip
            if o.bind != STB.LOCAL or still:
                who = f"used by {still[0].name}" if still else "global: other code may use it"
                sel.refusals.append(f"data {o.name} removed ({who}): the kernel keeps it; a "
                                    "livepatch cannot remove data")  # fmt: skip
    _orphans(c, o_orphans, p_orphans, sel)
    _needed(patched, c, sel)
    return sel


def _parents(unit: Unit, funcs: dict[Entity, str]) -> None:
    by_name = {e.name: e for e in unit.entities if e.kind == "func"}
    children: dict[Entity, list[Entity]] = {}
    for e in by_name.values():
        up = parent_name(e.name)
        if up is not None and up in by_name:
            children.setdefault(by_name[up], []).append(e)
    todo = list(funcs)
    while todo:
        f = todo.pop()
        pname = parent_name(f.name)
        parent = by_name.get(pname) if pname else None
        if parent is not None and parent not in funcs:
            funcs[parent] = f"its part {f.name} changed"
            todo.append(parent)
        for child in children.get(f, ()):
            if child not in funcs and child.name.endswith(".cold"):
                funcs[child] = f"part of {f.name}"
                todo.append(child)


def _orphans(c: Correlation, o_orphans: list[tuple[Section, Entry]],
             p_orphans: list[tuple[Section, Entry]], sel: Selection) -> None:  # fmt: skip
    from klpelf.objdiff.compare import reloc_key

    def shape(unit: Unit, items: list[tuple[Section, Entry]]) -> dict[str, list[object]]:
        out: dict[str, list[object]] = {}
        for sec, en in items:
            raw = bytes(sec.data[en.start : en.end]) if sec.sh_type != SHT.NOBITS else b""
            out.setdefault(sec.name, []).append(
                (raw, tuple(reloc_key(unit, c, r, code=False) for r in en.relocs))
            )
        return out

    so, sp = shape(c.orig, o_orphans), shape(c.patched, p_orphans)
    for name in sorted(set(so) | set(sp)):
        if so.get(name) != sp.get(name):
            sel.refusals.append(f"section {name}: entries that belong to no function changed "
                                "(a change only in a section no function owns)")  # fmt: skip


def _constant_bytes(unit: Unit, e: Entity) -> bool:
    # A static of .rodata without pointers (``__func__.N``, a string or number table) is
    # copied, not referred to: its bytes never change, and a reference would need a
    # sympos among the kernel's many same-named ``__func__.N``.  One with relocations
    # (a const struct of pointers) stays the kernel's: its address may be compared.
    sec = unit.section(e.section)
    return (e.kind == "data" and e.bind == STB.LOCAL and not sec.sh_flags & SHF.WRITE
            and sec.sh_type != SHT.NOBITS and not unit.relocs_in(e.section, e.start, e.end))


def _needed(unit: Unit, c: Correlation, sel: Selection) -> None:
    # new data and anonymous sections the included code refers to, to a fixed point
    machine = unit.elf.machine
    todo = list(sel.functions)
    while todo:
        e = todo.pop()
        relocs = list(unit.relocs_in(e.section, e.start, e.end))
        for _, en in sel.entries.get(e, ()) if e.kind == "func" else ():
            relocs.extend(en.relocs)
        for r in relocs:
            bias = code_bias(machine, r.type) if e.kind == "func" else 0
            t, _ = unit.target(r.sym, r.addend, bias)
            if t is None or t in sel.functions or t in sel.data or t.kind == "func":
                continue
            if t.kind == "anon":
                why = f"used by {e.name}"
            elif t not in c.to_orig:
                why = f"new, used by {e.name}"
            elif _constant_bytes(unit, t):
                why = f"read-only bytes, copied for {e.name}"
            elif _owned(unit, t):
                why = f"{unit.section(t.section).name} entry of {e.name}, copied with it"
            else:
                continue  # the kernel has it: a reference
            if _init(unit, t):
                sel.refusals.append(f"{t.name}: init data used by {e.name}: it is freed "
                                    "after init")  # fmt: skip
                continue
            sel.data[t] = Included(t, why)
            todo.append(t)
