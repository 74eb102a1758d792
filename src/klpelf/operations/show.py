"""``klpelf show``: what a module contains, as data (JSON-ready) and as text.

:func:`show` is the verb; :class:`ShownModule` its result, whose
:meth:`~ShownModule.to_json` is one ``Module`` of the ``klpelf.show/2`` schema
(docs/json.md; :class:`~klpelf.operations.schemas.ShowJson`) and whose
:meth:`~ShownModule.to_text` is what ``klpelf show`` prints.  The schema only grows
by new keys, so consumers can rely on the ones there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Literal

from klpelf._record import FrozenRecord
from klpelf.elf.constants import SHF
from klpelf.elf.describe import section_flags, symbol_bind, symbol_shndx, symbol_type
from klpelf.elf.reloc_types import reloc_type_display
from klpelf.klp.module import KlpModule, KlpRelaSection, LivepatchSymbol, klp_module
from klpelf.klp.patch import KlpPatch, decode_patches
from klpelf.operations import ModuleSource, naming, open_module
from klpelf.text import join_lines

if TYPE_CHECKING:
    from klpelf.operations.schemas import (
        ObjectJson,
        PatchJson,
        RelaSectionJson,
        RelocJson,
        ShowJson,
        ShowModuleJson,
        ShowSymbolJson,
    )

__all__ = [
    "SCHEMA",
    "ShownModule",
    "show",
    "show_document",
    "show_module",
]

SCHEMA: Literal["klpelf.show/2"] = "klpelf.show/2"


def _hex(value: int) -> str:
    # values of 64-bit fields as hex strings ("-0x4" for a negative addend): JSON
    # numbers above 2**53 are rounded by jq and JavaScript (docs/json.md)
    return f"{value:#x}" if value >= 0 else f"-{-value:#x}"


def _symbol_json(s: LivepatchSymbol) -> ShowSymbolJson:
    sym = s.symbol
    return {
        "index": sym.index, "name": sym.name, "objname": s.objname,
        "symbol": s.parsed.name if s.parsed else None,
        "sympos": s.parsed.sympos if s.parsed else None,
        "bind": symbol_bind(sym.bind), "type": symbol_type(sym.type),
        "shndx": symbol_shndx(sym.st_shndx), "error": s.error, "detail": s.detail,
    }  # fmt: skip


def _section_json(mod: KlpModule, k: KlpRelaSection, relocs: bool) -> RelaSectionJson:
    sec, elf = k.section, mod.elf
    entries: list[RelocJson] | None = None
    if relocs and sec.is_relocation and sec.sh_entsize:
        entries = []
        tab = elf.relocations(sec)
        symtab = elf.symbol_table(elf.section(sec.sh_link)) if sec.sh_link else None
        for r in tab:
            entries.append({
                "offset": _hex(r.r_offset), "type": reloc_type_display(elf.machine, r.type),
                "r_type": r.type, "symbol_index": r.sym,
                "symbol": symtab.name(r.sym) if symtab else "",
                "addend": None if r.r_addend is None else _hex(r.r_addend),
            })  # fmt: skip
    return {
        "index": sec.index, "name": sec.name, "objname": k.objname,
        "target": {"index": k.target.index, "name": k.target.name} if k.target else None,
        "flags": section_flags(sec.sh_flags, elf.machine, elf.ident[7]),
        "sh_flags": _hex(sec.sh_flags), "sh_type": sec.sh_type, "relocations": k.count,
        "error": k.error, "detail": k.detail, "entries": entries,
    }  # fmt: skip


def _patch_json(p: KlpPatch) -> PatchJson:
    return {
        "style": p.style, "where": p.where,
        "objects": [
            {
                "name": o.name, "objname": o.objname, "callbacks": dict(o.callbacks),
                "funcs": [
                    {"old_name": f.old_name, "old_sympos": f.old_sympos, "where": f.where,
                     "new_func": {"name": f.new_func.name, "size": _hex(f.new_func.size)}
                     if f.new_func else None}
                    for f in o.funcs
                ],
            }
            for o in p.objects
        ],
        "states": [{"id": _hex(s.id), "version": s.version} for s in p.states]
        if p.states is not None else None,
        "replace": p.replace, "notes": list(p.notes),
    }  # fmt: skip


def show_module(mod: KlpModule, *, relocs: bool = False) -> ShowModuleJson:
    """Describe ``mod`` as the ``klpelf.show/2`` JSON object of one module."""
    elf = mod.elf
    objects: list[ObjectJson] = [
        {
            "objname": o.objname,
            "symbols": [_symbol_json(s) for s in o.symbols],
            "relocation_sections": [_section_json(mod, k, relocs) for k in o.sections],
        }
        for o in mod.objects.values()
    ]
    return {
        "path": elf.path or "", "name": mod.name,
        "is_module": elf.section_by_name(".gnu.linkonce.this_module") is not None,
        "machine": elf.machine_name,
        "elfclass": 64 if elf.is64 else 32, "byteorder": elf.byteorder,
        "vermagic": mod.vermagic, "livepatch": mod.livepatch,
        "signed": elf.has_module_signature, "objects": objects,
        "unparsed_symbols": [_symbol_json(s) for s in mod.symbols if s.parsed is None],
        "unparsed_sections": [_section_json(mod, k, relocs) for k in mod.sections
                              if k.parsed is None],
        "oddities": [{"kind": o.kind, "what": o.what, "note": o.note} for o in mod.oddities],
        "patches": [_patch_json(p) for p in decode_patches(elf)],
    }  # fmt: skip


def _addend(a: str | None) -> str:
    if a is None:
        return ""
    return f" - {a[1:]}" if a.startswith("-") else f" + {a}"


def _render_section(k: RelaSectionJson, lines: list[str]) -> None:
    target = f"[{k['target']['index']}] {k['target']['name']}" if k["target"] else "(no target)"
    n = k["relocations"]
    lines.append(
        f"    [{k['index']:>3}] {k['name']}  -> {target}  flags {k['flags'] or '-'}  "
        f"{n} relocation{'s' if n != 1 else ''}"
    )
    if not int(k["sh_flags"], 16) & SHF.RELA_LIVEPATCH:
        lines.append("          (no SHF_RELA_LIVEPATCH flag)")
    if k["error"]:
        lines.append(f"          {k['error']}" + (f" ({k['detail']})" if k["detail"] else ""))
    for r in k["entries"] or []:
        lines.append(
            f"          {int(r['offset'], 16):#010x}  {r['type']:<24} [{r['symbol_index']}] "
            f"{r['symbol']}{_addend(r['addend'])}"
        )


def _text(m: ShowModuleJson) -> str:
    lines = [
        f"{m['path']}: "
        + (
            f"module {m['name']}"
            if m["is_module"]
            else f"object {m['name']} (not a kernel module: no .gnu.linkonce.this_module)"
        )
        + f", {m['machine']} ELF{m['elfclass']} "
        f"{m['byteorder']}-endian" + (", signed" if m["signed"] else ""),
        f"  vermagic:  {m['vermagic'] if m['vermagic'] is not None else '(none)'}",
        "  livepatch: "
        + (m["livepatch"] if m["livepatch"] is not None else "no (no livepatch modinfo)"),
    ]
    if not m["objects"] and not m["unparsed_symbols"] and not m["unparsed_sections"]:
        lines.append("  no livepatch symbols or klp relocation sections")
    for o in m["objects"]:
        lines.append(f"  object {o['objname']}:")
        if o["symbols"]:
            lines.append(f"    livepatch symbols ({len(o['symbols'])}):")
            for s in o["symbols"]:
                lines.append(
                    f"    [{s['index']:>3}] {s['symbol']}  sympos {s['sympos']}  "
                    f"{s['bind']} {s['type']}"
                    + (
                        ""
                        if s["shndx"] == "LIVEPATCH"
                        else f"  (st_shndx {s['shndx']}, not SHN_LIVEPATCH)"
                    )
                )
        if o["relocation_sections"]:
            lines.append(f"    klp relocation sections ({len(o['relocation_sections'])}):")
            for k in o["relocation_sections"]:
                _render_section(k, lines)
    if m["unparsed_symbols"]:
        lines.append("  livepatch symbols the kernel cannot parse:")
        for s in m["unparsed_symbols"]:
            why = f" ({s['detail']})" if s["detail"] else ""
            lines.append(f"    [{s['index']:>3}] {s['name']}: {s['error']}{why}")
    if m["unparsed_sections"]:
        lines.append("  klp relocation sections the kernel cannot parse:")
        for k in m["unparsed_sections"]:
            _render_section(k, lines)
    for od in m["oddities"]:
        lines.append(f"  note: {od['what']}: {od['note']}")
    for p in m["patches"]:
        _render_patch(p, lines)
    return join_lines(lines)


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _render_patch(p: PatchJson, lines: list[str]) -> None:
    lines.append(f"  {p['style']} {p['where']}: replace {_yes_no(p['replace'])}")
    for o in p["objects"]:
        n = len(o["funcs"])
        lines.append(f"    object {o['objname']}: {n} function{'s' if n != 1 else ''}")
        for f in o["funcs"]:
            new = f["new_func"]
            target = f"{new['name']} ({int(new['size'], 16)} bytes)" if new else "(no new_func)"
            old = f["old_name"] if f["old_name"] is not None else "(no old_name)"
            lines.append(f"      {old},{f['old_sympos']} -> {target}")
        for member, fn in o["callbacks"].items():
            lines.append(f"      callback {member}: {fn}")
    if p["states"]:
        states = ", ".join(f"id {int(s['id'], 16)} version {s['version']}" for s in p["states"])
        lines.append(f"    states: {states}")
    for note in p["notes"]:
        lines.append(f"    note: {note}")


class ShownModule(FrozenRecord):
    """What ``klpelf show`` says about one module."""

    _fields = ("module", "data")
    __slots__ = _fields

    def __init__(self, module: KlpModule, data: ShowModuleJson) -> None:
        #: the livepatch view of the module
        self.module: Final = module
        #: the module as one ``Module`` object of the ``klpelf.show/2`` schema
        self.data: Final = data

    def to_json(self) -> ShowModuleJson:
        """The module as one ``Module`` object of the ``klpelf.show/2`` schema."""
        return self.data

    def to_text(self) -> str:
        """What ``klpelf show`` prints for the module (no final newline)."""
        return _text(self.data)


def show(module: ModuleSource, *, relocs: bool = False) -> ShownModule:
    """Read ``module`` (a path or an ElfFile) and describe its livepatch content.

    Every table is decoded first, so a malformed one is reported here, as a
    :class:`~klpelf.errors.KlpError` naming the file, rather than half-way through
    the output.

    :param relocs: also list every klp relocation (``klpelf show -r``).
    """
    elf = open_module(module)
    with naming(elf.path):
        elf.decode_all()
        mod = klp_module(elf)
        return ShownModule(mod, show_module(mod, relocs=relocs))


def show_document(shown: Sequence[ShownModule],
                  failed: Sequence[tuple[str, str]] = ()) -> ShowJson:  # fmt: skip
    """The ``klpelf show --json`` document of several modules; ``failed``: (path,
    error) of the files that could not be read."""
    return {"schema": SCHEMA, "modules": [m.to_json() for m in shown],
            "failed": [{"path": p, "error": e} for p, e in failed]}  # fmt: skip
