"""Which entity of the original build is which of the patched build.

Names decide, with the compiler's numbering taken out: gcc names the clones and
parts it makes ``foo.isra.0``, ``foo.constprop.1``, ``foo.part.0``, ``foo.cold``, and
static locals ``calls.0``, ``__key.12``, ``__func__.3``; the numbers count in the
order gcc meets them in the unit, so a fix that adds one shifts the others.  A name
is matched on its *pattern* (each numeric part replaced by ``#``); several entities
of one pattern are told apart by where they are used (the first function that
refers to a static local, and the rank of that reference among the function's
references of the same pattern), then by their numbers' order.  A C identifier has
no dot, so every dotted suffix is the compiler's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from klpelf.elf.constants import STB
from klpelf.objdiff.objects import Entity, Unit
from klpelf.objdiff.special import code_bias

__all__ = ["Correlation", "correlate", "parent_name", "pattern"]

_NUMBER = re.compile(r"\.\d+(?=\.|$)")
#: __UNIQUE_ID(prefix) names end the prefix with __COUNTER__ (include/linux/compiler.h):
#: it counts every use in the unit, and a fix that adds one shifts the rest
_UNIQUE_ID = re.compile(r"^(__UNIQUE_ID_[A-Za-z_]*?)\d+")
#: suffixes of the parts gcc splits off a function: they belong to their parent
_PART = re.compile(r"\.(cold|part\.\d+)(\.\d+)?$")


def pattern(name: str) -> str:
    """``name`` with each numbered part of its compiler suffixes made ``#`` (and the
    counter of a ``__UNIQUE_ID_`` name)."""
    return _UNIQUE_ID.sub(r"\1#", _NUMBER.sub(".#", name))


def parent_name(name: str) -> str | None:
    """The function that ``name`` was split from (``foo.cold``, ``foo.part.0`` -> ``foo``;
    ``foo.part.0.cold`` -> ``foo.part.0``), or None for a whole function."""
    m = _PART.search(name)
    return name[: m.start()] if m else None


class Correlation:
    """The pairs, and each entity's identity (the original's name for a pair)."""

    def __init__(self, orig: Unit, patched: Unit) -> None:
        self.orig, self.patched = orig, patched
        self.to_patched: dict[Entity, Entity] = {}
        self.to_orig: dict[Entity, Entity] = {}

    def pair(self, o: Entity, p: Entity) -> None:
        self.to_patched[o] = p
        self.to_orig[p] = o

    def ident(self, unit: Unit, e: Entity) -> str:
        """What a reference to ``e`` means in both builds: the original's name of the
        pair, or ``+name`` for an entity only the patched build has."""
        if unit is self.orig:
            return e.name
        o = self.to_orig.get(e)
        return o.name if o is not None else f"+{e.name}"

    def renamed(self) -> list[tuple[str, str]]:
        """Pairs whose names differ (renumbered locals, clones), original first."""
        return sorted((o.name, p.name) for o, p in self.to_patched.items() if o.name != p.name)


def correlate(orig: Unit, patched: Unit) -> Correlation:
    """Pair the entities of the two builds (functions first, then data and sections)."""
    c = Correlation(orig, patched)
    for kinds in (("func",), ("data", "anon")):
        os_ = [e for e in orig.entities if e.kind in kinds]
        ps = [e for e in patched.entities if e.kind in kinds]
        ctx_o = _contexts(orig, c, os_) if kinds != ("func",) else {}
        ctx_p = _contexts(patched, c, ps) if kinds != ("func",) else {}
        _pair_group(c, os_, ps, ctx_o, ctx_p)
    return c


def _by_pattern(es: Iterable[Entity]) -> dict[tuple[str, str], list[Entity]]:
    out: dict[tuple[str, str], list[Entity]] = {}
    for e in es:
        # a global and a local of one name are different things
        out.setdefault((pattern(e.name), "g" if e.bind != STB.LOCAL else "l"), []).append(e)
    return out


def _numbers(e: Entity) -> list[int]:
    return [int(m.group()[1:]) for m in _NUMBER.finditer(e.name)]


def _pair_group(c: Correlation, os_: list[Entity], ps: list[Entity],
                ctx_o: dict[Entity, tuple[str, int]],
                ctx_p: dict[Entity, tuple[str, int]]) -> None:  # fmt: skip
    po = _by_pattern(os_)
    pp = _by_pattern(ps)
    for key, olist in po.items():
        plist = pp.get(key, [])
        if not plist:
            continue
        if len(olist) == 1 and len(plist) == 1:
            c.pair(olist[0], plist[0])
            continue
        left_o, left_p = list(olist), list(plist)
        # by where they are used
        by_ctx = {ctx_p[p]: p for p in left_p if p in ctx_p}
        for o in list(left_o):
            p = by_ctx.get(ctx_o.get(o, ("", -1)))
            if p is not None and p in left_p:
                c.pair(o, p)
                left_o.remove(o)
                left_p.remove(p)
        # the same name, then the numbers' order
        names = {p.name: p for p in left_p}
        for o in list(left_o):
            p = names.get(o.name)
            if p is not None and (len(left_o) == len(left_p) or o.name == pattern(o.name)):
                c.pair(o, p)
                left_o.remove(o)
                left_p.remove(p)
        if len(left_o) == len(left_p):
            for o, p in zip(sorted(left_o, key=_numbers), sorted(left_p, key=_numbers),
                            strict=True):  # fmt: skip
                c.pair(o, p)


def _contexts(unit: Unit, c: Correlation, es: list[Entity]) -> dict[Entity, tuple[str, int]]:
    # entity -> (identity of the first function referring to it, rank of that reference
    # among the function's references to entities of the same pattern)
    wanted = set(es)
    out: dict[Entity, tuple[str, int]] = {}
    machine = unit.elf.machine
    funcs = sorted((e for e in unit.entities if e.kind == "func"), key=lambda e: c.ident(unit, e))
    for f in funcs:
        seen: dict[str, int] = {}
        for r in unit.relocs_in(f.section, f.start, f.end):
            t, _ = unit.target(r.sym, r.addend, code_bias(machine, r.type))
            if t is None or t not in wanted or t in out:
                continue
            pat = pattern(t.name)
            n = seen.get(pat, 0)
            seen[pat] = n + 1
            out[t] = (c.ident(unit, f), n)
    return out
