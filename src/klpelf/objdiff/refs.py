"""What a reference from the included code to the kernel's own copy of a symbol becomes.

A function or data object of the unit that is not included is the kernel's: the
reference goes to the original's symbol, in the patched object (``--object``,
vmlinux by default).  A global the kernel exports from vmlinux (the unit's own
EXPORT_SYMBOL, or Module.symvers) stays an ordinary undefined symbol, which the
module loader resolves; anything else becomes a livepatch symbol,
``.klp.sym.<object>.<name>,<sympos>`` (a static, a global nobody exports, a symbol
of a module: livepatch resolves it when that module is there).  The sympos follows
``klp_find_object_symbol()`` (:mod:`klpelf.symbols.resolve`); for a name the object
has several times, the candidate whose source file is the unit's (a vmlinux ELF or
the module's .ko names the files), else ``--sympos OBJ:NAME=N``, else an error
listing the candidates.  Undefined symbols of the unit are left to the convert
machinery (:func:`klpelf.klp.autoconvert.plan_klp_symbols`), as ``klpelf convert``
decides them.

The livepatch symbols are written in annotation form (undefined, named
``.klp.sym.``): the object is linked into a module by kbuild first, and ``ld``
cannot carry SHN_LIVEPATCH symbols; ``klpelf convert`` finishes the module.
"""

from __future__ import annotations

import os
from typing import Literal, NamedTuple

from klpelf.elf.constants import STB
from klpelf.errors import KlpFormatError
from klpelf.klp.autoconvert import SymposChoice, describe_candidates
from klpelf.klp.names import KlpSymbolName
from klpelf.objdiff.objects import Entity, Unit
from klpelf.symbols.resolve import klp_find_object_symbol
from klpelf.symbols.sources import KernelSymbols

__all__ = ["Reference", "place"]


class Reference(NamedTuple):
    """The output symbol for one entity of the original."""

    #: the symbol's name in the diff object
    symbol: str
    #: "exported" (ordinary undefined), "klp" (livepatch symbol)
    kind: Literal["exported", "klp"]
    #: a remark for the report (sympos unchecked, chosen by source file ...)
    note: str | None = None


def place(orig: Unit, e: Entity, objname: str, ks: KernelSymbols | None,
          choices: dict[tuple[str, str], SymposChoice]) -> Reference:  # fmt: skip
    """The reference to ``e`` (an entity of the original build) for the included code.

    :raises KlpFormatError: a name the target object has several times, with nothing
        to choose one, or none of (the candidates listed, with how to choose).
    """
    name = e.name
    if e.bind != STB.LOCAL and objname == "vmlinux":
        export = ks.exports.get(name) if ks is not None else None
        if name in orig.exported or (export is not None and export.objname == "vmlinux"):
            return Reference(name, "exported")
    choice = choices.get((objname, name))
    if choice is not None and choice.sympos is not None:
        return Reference(str(KlpSymbolName(objname, name, choice.sympos)), "klp", "--sympos")
    if ks is None or not ks.has_object(objname):
        return Reference(
            str(KlpSymbolName(objname, name, 0)),
            "klp",
            f"sympos 0 not checked: the sources do not have {objname}",
        )
    r = klp_find_object_symbol(ks, objname, name, 0)
    if r.ok or r.not_loaded:
        return Reference(str(KlpSymbolName(objname, name, 0)), "klp")
    cands = r.candidates
    if not cands:
        raise KlpFormatError(f"{name}: the unit's symbol is not in {objname} of the sources "
                             f"({r.message}); is --object right?", path=orig.path)  # fmt: skip
    want = choice.source_file if choice is not None else orig.file_name
    hits = [
        c
        for c in cands
        if c.source_file
        and want
        and (c.source_file == want or os.path.basename(c.source_file) == os.path.basename(want))
    ]
    if len(hits) == 1 and hits[0].position is not None:
        return Reference(str(KlpSymbolName(objname, name, hits[0].position)), "klp",
                         f"sympos {hits[0].position} of {len(cands)}: the one of "
                         f"{hits[0].source_file}")  # fmt: skip
    files = (
        ""
        if any(c.source_file for c in cands)
        else ("; a vmlinux ELF (or the module's .ko) among --kernel names their files")
    )
    raise KlpFormatError(
        f"{name}: {len(cands)} symbols of that name in {objname} "
        f"({describe_candidates(cands)}); choose one with --sympos {objname}:{name}=N{files}",
        path=orig.path)  # fmt: skip
