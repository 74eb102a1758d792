"""``klpelf diff``: from two builds of one translation unit, the object that holds what changed.

:func:`diff` runs every step (:mod:`klpelf.objdiff`): read both objects, correlate,
compare and select, then, when nothing is refused, emit and write the output
atomically.  Its result, :class:`DiffResult`, says function by function what
changed and why each thing is in the output (text and JSON, schema
``klpelf.diff/1``); refusals are part of the result, one line each, and nothing is
written then.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Literal

from klpelf._record import FrozenRecord
from klpelf.errors import KlpError, UsageError
from klpelf.operations import ModuleSource, module_path, naming, open_module
from klpelf.text import join_lines

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile
    from klpelf.operations.schemas import DiffJson

__all__ = ["DiffResult", "diff"]

#: how a reference is written: an ordinary undefined symbol, or a livepatch symbol
Kind = Literal["exported", "klp"]


class DiffResult(FrozenRecord):
    """What :func:`diff` found and did."""

    _fields = ("orig", "patched", "output", "objname", "functions", "data", "line_only",
               "removed", "renamed", "references", "externs", "entries", "notes", "refusals",
               "elf", "klp_funcs", "module_dir")  # fmt: skip
    __slots__ = _fields

    def __init__(self, orig: str, patched: str, output: str | None, objname: str, *,
                 functions: list[tuple[str, str]], data: list[tuple[str, str]],
                 line_only: list[str], removed: list[str], renamed: list[tuple[str, str]],
                 references: list[tuple[str, str, Kind, str | None]],
                 externs: list[tuple[str, str]], entries: dict[str, int],
                 notes: list[str], refusals: list[str], elf: ElfFile | None,
                 klp_funcs: list[tuple[str, int, str]] | None = None,
                 module_dir: str | None = None) -> None:  # fmt: skip
        self.orig: Final = orig
        self.patched: Final = patched
        #: where the diff object was written (None: refused, or not asked)
        self.output: Final = output
        self.objname: Final = objname
        #: included functions: (name in the patched build, why)
        self.functions: Final = functions
        #: included data and sections: (name, why)
        self.data: Final = data
        #: functions whose only differences are line numbers
        self.line_only: Final = line_only
        #: functions the patched build no longer has (left in the kernel)
        self.removed: Final = removed
        #: (original name, patched name) of correlated entities whose names differ
        self.renamed: Final = renamed
        #: (original name, output symbol, kind, note) for the kernel's symbols referred to
        self.references: Final = references
        #: (undefined symbol of the unit, its name in the output)
        self.externs: Final = externs
        #: special section -> entries kept
        self.entries: Final = entries
        self.notes: Final = tuple(notes)
        #: why a livepatch cannot be made (nothing is written then), one line each
        self.refusals: Final = tuple(refusals)
        #: the diff object (None when refused)
        self.elf: Final = elf
        #: the functions a klp_func replaces: (old_name, old_sympos, new code's symbol)
        self.klp_funcs: Final = klp_funcs or []
        #: where the patch module's sources were written (``module_dir``), or None
        self.module_dir: Final = module_dir

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    def to_text(self) -> str:
        """What ``klpelf diff`` prints: the changes, function by function, and why each
        thing is included; then the references."""
        name = self.patched
        lines = [f"{name}: refused: {r}" for r in self.refusals]
        lines += [f"{name}: function {f}: {why}" for f, why in self.functions]
        lines += [f"{name}: data {d}: {why}" for d, why in self.data]
        lines += [f"{name}: function {f}: line numbers only, not included" for f in self.line_only]
        lines += [f"{name}: function {f}: removed (the kernel keeps it)" for f in self.removed]
        lines += [f"{name}: {o} is {p} in the patched build" for o, p in self.renamed]
        for orig, sym, kind, note in self.references:
            what = "exported: ordinary undefined symbol" if kind == "exported" else sym
            lines.append(f"{name}: reference {orig} -> {what}" + (f" ({note})" if note else ""))
        lines += [f"{name}: undefined {u} -> {o}" for u, o in self.externs if u != o]
        lines += [f"{name}: {sec}: {n} entr{'y' if n == 1 else 'ies'} kept"
                  for sec, n in sorted(self.entries.items())]  # fmt: skip
        lines += [f"{name}: klp_func {old},{pos} -> {new}" for old, pos, new in self.klp_funcs]
        if self.module_dir is not None:
            lines.append(f"{self.module_dir}: patch module sources written (Kbuild, C, object)")
        if self.output is not None:
            n = len(self.functions)
            lines.append(f"{self.output}: written, {n} function{'s' if n != 1 else ''}")
        elif not self.refused and not self.functions:
            lines.append(f"{name}: no function changed")
        return join_lines(lines)

    def to_json(self) -> DiffJson:
        """The ``klpelf.diff/1`` form (docs/json.md)."""
        return {
            "schema": "klpelf.diff/1",
            "orig": self.orig, "patched": self.patched, "output": self.output,
            "object": self.objname,
            "functions": [{"name": f, "why": w} for f, w in self.functions],
            "data": [{"name": d, "why": w} for d, w in self.data],
            "line_only": list(self.line_only), "removed": list(self.removed),
            "renamed": [{"orig": o, "patched": p} for o, p in self.renamed],
            "references": [{"name": o, "symbol": s, "kind": k, "note": n}
                           for o, s, k, n in self.references],
            "externs": [{"name": u, "symbol": o} for u, o in self.externs],
            "entries": dict(sorted(self.entries.items())),
            "notes": list(self.notes), "refusals": list(self.refusals),
            "klp_funcs": [{"old_name": o, "sympos": n, "symbol": s}
                          for o, n, s in self.klp_funcs],
            "module_dir": self.module_dir,
        }  # fmt: skip


def diff(orig: ModuleSource, patched: ModuleSource, output: str | os.PathLike[str] | None = None,
         *, objname: str = "vmlinux", kernel: Sequence[str | os.PathLike[str]] = (),
         sympos: Sequence[str] = (), module_dir: str | os.PathLike[str] | None = None,
         name: str | None = None, replace: bool = True) -> DiffResult:  # fmt: skip
    """Diff two builds of one translation unit; write the diff object to ``output``.

    :param objname: the object the unit is part of: ``vmlinux`` or a module's name
    :param kernel: the target kernel's symbol sources (kallsyms, System.map, vmlinux,
        module tree, Module.symvers), as ``--kernel`` and ``--symvers`` take them
    :param sympos: ``OBJ:SYMBOL=N`` / ``OBJ:SYMBOL=FILE`` choices for ambiguous names
    :param module_dir: also write the patch module's sources there (Kbuild, the C of
        klp_patch/klp_object/klp_func and the module init, the diff object), for
        ``make -C KERNEL_BUILD M=DIR``; ``name`` is the module's name (default
        ``livepatch_<unit>``), ``replace`` its klp_patch.replace
    :raises KlpError: an input that cannot be read, a reference that cannot be placed
        (naming the file); refusals are in the result, not raised.
    """
    from klpelf.elf.writer import save_elf
    from klpelf.klp.autoconvert import SymposChoice
    from klpelf.klp.names import KlpSymbolName
    from klpelf.objdiff.correlate import correlate
    from klpelf.objdiff.emit import emit
    from klpelf.objdiff.objects import read_unit
    from klpelf.objdiff.select import select

    try:
        KlpSymbolName(objname, "x", 0)
    except ValueError as e:
        raise UsageError(f"--object {objname!r}: {e}") from None
    choices = [SymposChoice.parse(s) for s in sympos]
    o_elf, p_elf = open_module(orig), open_module(patched)
    o_path, p_path = module_path(orig) or "ORIG", module_path(patched) or "PATCHED"
    with naming(o_path):
        o = read_unit(o_elf)
    with naming(p_path):
        p = read_unit(p_elf)
        if o_elf.machine != p_elf.machine or o_elf.is64 != p_elf.is64:
            raise UsageError(f"{o_path} and {p_path} are not built for the same machine")
        c = correlate(o, p)
        sel = select(c)
        funcs = sorted((e.name, i.why) for e, i in sel.functions.items())
        data = sorted((e.name, i.why) for e, i in sel.data.items())

        def result(out: str | None, refs: list[tuple[str, str, Kind, str | None]],
                   externs: list[tuple[str, str]], entries: dict[str, int], *,
                   notes: list[str], elf: ElfFile | None,
                   klp_funcs: list[tuple[str, int, str]] | None = None,
                   module_dir: str | None = None) -> DiffResult:  # fmt: skip
            return DiffResult(o_path, p_path, out, objname, functions=funcs, data=data,
                              line_only=sorted(sel.line_only), removed=sorted(sel.removed),
                              renamed=c.renamed(), references=refs, externs=externs,
                              entries=entries, notes=notes, refusals=sel.refusals,
                              elf=elf, klp_funcs=klp_funcs, module_dir=module_dir)  # fmt: skip

        if sel.refusals or not sel.functions:
            return result(None, [], [], {}, notes=[], elf=None)
        ks = None
        if kernel:
            from klpelf.symbols.sources import load_sources

            ks = load_sources([os.fspath(k) for k in kernel])
        em = emit(c, sel, objname=objname, ks=ks, choices=choices)
        if em.refusals:
            sel.refusals.extend(em.refusals)
            return result(None, [], [], {}, notes=[], elf=None)
    out = os.fspath(output) if output is not None else None
    if out is not None:
        with naming(out):
            save_elf(em.elf, out, overwrite=True)
    where = None
    if module_dir is not None:
        where = os.fspath(module_dir)
        _write_module_dir(where, name or _default_name(p.file_name), objname, em.elf,
                          em.klp_funcs, unit=_unit_stem(p.file_name),
                          replace=replace)  # fmt: skip
    refs = [(n, r.symbol, r.kind, r.note) for n, r in sorted(em.references.items())]
    return result(out, refs, sorted(em.externs.items()), em.entries, notes=em.notes,
                  elf=em.elf, klp_funcs=em.klp_funcs, module_dir=where)


def _unit_stem(file_name: str | None) -> str:
    import re

    return re.sub(r"\W", "_", os.path.splitext(os.path.basename(file_name or "unit"))[0])


def _default_name(file_name: str | None) -> str:
    return "livepatch_" + _unit_stem(file_name)


#: the patch module's manifest in ``module_dir``: the units diffed into it so far
MANIFEST = "klpelf-module.json"


def _write_module_dir(where: str, name: str, objname: str, elf: ElfFile,
                      funcs: list[tuple[str, int, str]], *, unit: str,
                      replace: bool) -> None:  # fmt: skip
    # One unit's diff object joins the units already in the directory (its manifest):
    # a fix that touches several files is one module, one klp_object per patched object.
    import json

    from klpelf.elf.writer import write_elf
    from klpelf.io import write_atomic
    from klpelf.objdiff.module_source import kbuild_file, patch_source

    if not name or not name.replace("_", "").isalnum() or len(name) > 55:
        raise UsageError(f"--name {name!r}: a module name is up to 55 letters, digits and '_'")
    with naming(where):
        os.makedirs(where, exist_ok=True)
        path = os.path.join(where, MANIFEST)
        units: list[dict[str, object]] = []
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    known = json.load(f)
                if not isinstance(known, dict) or not isinstance(known.get("units"), list):
                    raise ValueError("not a klpelf diff manifest")
            except (OSError, ValueError) as e:
                raise KlpError(f"--module-dir {where}: {MANIFEST} cannot be read: {e}") from None
            if known.get("name") != name:
                raise UsageError(f"--module-dir {where}: it holds module {known.get('name')}, "
                                 f"not {name}: give --name {known.get('name')}")  # fmt: skip
            units = [u for u in known.get("units", []) if u.get("unit") != unit]
        diff_obj = f"{name}_{unit}_diff.o"
        units.append({"unit": unit, "object": objname, "diff": diff_obj,
                      "funcs": [list(f) for f in funcs]})  # fmt: skip
        objects: dict[str, list[tuple[str, int, str]]] = {}
        for u in units:
            objects.setdefault(str(u["object"]), []).extend(
                (str(o), int(p), str(n)) for o, p, n in u["funcs"])  # type: ignore[attr-defined]
        files = {
            "Kbuild": kbuild_file(name, [str(u["diff"]) for u in units]).encode(),
            f"{name}_patch.c": patch_source(name, objects, replace=replace).encode(),
            diff_obj: bytes(write_elf(elf)),
            # modpost reads the .cmd file of every object of a module (the sources of
            # its srcversion, scripts/mod/sumversion.c); a prebuilt one has none
            f".{diff_obj}.cmd": f"cmd_{diff_obj} := klpelf diff (prebuilt)\n".encode(),
            MANIFEST: (json.dumps({"name": name, "replace": replace, "units": units},
                                  indent=1) + "\n").encode(),
        }
        for fname, data in files.items():
            write_atomic(os.path.join(where, fname), data, overwrite=True)
