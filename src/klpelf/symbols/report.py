"""``klpelf resolve``: how every livepatch symbol of a module resolves, as data and as text.

JSON schema ``klpelf.resolve/1``::

    {"schema": "klpelf.resolve/1",
     "kernel": {"description", "release", "running": bool},
     "modules": [{"path", "name", "vermagic", "release_mismatch": str|null,
                  "release_note": str|null,
                  "verdict": "ok"|"fail"|"no-verdict",
                  "symbols": [{"index", "symbol", "objname", "name", "sympos",
                               "ok", "not_loaded", "address", "error", "note",
                               "coming_differs", "coming_ok", "coming_error", "source",
                               "candidates": [{"position", "coming_position", "address",
                                               "type", "section", "offset",
                                               "source_file", "chosen",
                                               "coming_chosen"}]}]}]}

Addresses are integers or null (unknown: kallsyms addresses hidden, or the module is
not loaded).  Keys are only ever added.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from klpelf.klp.module import KlpModule
from klpelf.symbols.candidate import Candidate
from klpelf.symbols.resolve import SymbolResolution, release_mismatch, resolve_module
from klpelf.symbols.sources import KernelSymbols


class CandidateJson(TypedDict):
    position: int | None
    coming_position: int | None
    address: int | None
    type: str
    section: str | None
    offset: int | None
    source_file: str | None
    chosen: bool
    coming_chosen: bool


class SymbolJson(TypedDict):
    index: int
    symbol: str
    objname: str | None
    name: str | None
    sympos: int | None
    ok: bool
    not_loaded: bool
    address: int | None
    error: str | None
    note: str | None
    coming_differs: bool
    coming_ok: bool | None
    coming_error: str | None
    source: str | None
    candidates: list[CandidateJson]


Verdict = Literal["ok", "fail", "no-verdict"]


class ModuleJson(TypedDict):
    path: str
    name: str
    vermagic: str | None
    release_mismatch: str | None
    #: the sources do not say which release they are, so it could not be compared
    release_note: str | None
    verdict: Verdict
    symbols: list[SymbolJson]


class KernelJson(TypedDict):
    description: str
    release: str | None
    running: bool


def kernel_json(ks: KernelSymbols) -> KernelJson:
    return {"description": ks.description, "release": ks.release, "running": ks.is_running}


def module_report(path: str, module: KlpModule, ks: KernelSymbols) -> ModuleJson:
    """Resolve every livepatch symbol of ``module`` and describe the outcome."""
    results = resolve_module(ks, module)
    mismatch = release_mismatch(ks, module.vermagic)
    built = (module.vermagic or "").split()
    note = None
    if ks.release is None and built:
        note = (f"the kernel symbols do not say their release; the module was built for "
                f"{built[0]}")  # fmt: skip
    failed = any(not r.ok and not r.not_loaded for r in results)
    verdict: Verdict = "no-verdict" if mismatch else "fail" if failed else "ok"
    return {
        "path": path, "name": module.name, "vermagic": module.vermagic,
        "release_mismatch": mismatch, "release_note": note, "verdict": verdict,
        "symbols": [_symbol_json(r) for r in results],
    }  # fmt: skip


def _candidate_json(c: Candidate, chosen: bool, coming_chosen: bool) -> CandidateJson:
    return {
        "position": c.position, "coming_position": c.coming_position, "address": c.address,
        "type": c.type, "section": c.section, "offset": c.offset,
        "source_file": c.source_file, "chosen": chosen, "coming_chosen": coming_chosen,
    }  # fmt: skip


def _symbol_json(r: SymbolResolution) -> SymbolJson:
    s, res = r.symbol, r.resolution
    p = s.parsed
    out: SymbolJson = {
        "index": s.symbol.index, "symbol": s.symbol.name,
        "objname": p.objname if p else None, "name": p.name if p else None,
        "sympos": p.sympos if p else None, "ok": r.ok, "not_loaded": r.not_loaded,
        "address": None, "error": r.error, "note": None, "coming_differs": False,
        "coming_ok": None, "coming_error": None, "source": None, "candidates": [],
    }  # fmt: skip
    if res is not None:
        out.update({
            "address": res.address, "error": res.error, "note": res.note,
            "coming_differs": res.coming_differs, "coming_ok": res.coming_ok,
            "coming_error": res.coming_error, "source": res.source or None,
            "candidates": [_candidate_json(c, i == res.chosen, i == res.coming_chosen)
                           for i, c in enumerate(res.candidates)],
        })  # fmt: skip
    return out


# --- text -------------------------------------------------------------------------------


def _address(sym: SymbolJson) -> str:
    if sym["address"] is not None:
        return f"{sym['address']:x}"
    if not sym["ok"]:
        return "-"
    chosen = [c for c in sym["candidates"] if c["chosen"]]
    if chosen and chosen[0]["section"] is not None and chosen[0]["offset"] is not None:
        return f"{chosen[0]['section']}+{chosen[0]['offset']:#x}"
    return "?"


def _result(sym: SymbolJson) -> str:
    if sym["ok"]:
        if not sym["coming_differs"]:
            return "ok"
        if sym["coming_ok"]:
            return "ok; while the module loads, this sympos selects another symbol"
        return f"ok once loaded; while the module loads: {sym['coming_error']}"
    text = sym["error"] or sym["note"] or "does not resolve"
    if sym["coming_differs"] and sym["coming_ok"]:
        text += " (resolves while the module loads)"
    return text


def _candidate_line(c: CandidateJson, indent: int, modules: bool) -> str:
    pos = str(c["position"]) if c["position"] is not None else "-"
    addr = f"{c['address']:x}" if c["address"] is not None else "?"
    where = c["section"] or ""
    if where and c["offset"] is not None:
        where += f"+{c['offset']:#x}"
    notes = [x for x in (where, c["source_file"] or "") if x]
    if modules and c["coming_position"] != c["position"]:
        if c["position"] is None:
            notes.append(f"(while loading only: {c['coming_position']})")
        else:
            notes.append(f"(while loading: {c['coming_position']})")
    marks = [m for m, on in (("<-", c["chosen"]), ("<- while loading", c["coming_chosen"]
             and not c["chosen"])) if on]  # fmt: skip
    line = f"{'':{indent}}{pos:>4}  {addr:>16}  {c['type']}  " + "  ".join(notes + marks)
    return line.rstrip()


def render_text(m: ModuleJson) -> str:
    """The table ``klpelf resolve`` prints for one module."""
    vermagic = (m["vermagic"] or "").strip() or "(none)"
    lines = [f"{m['path']}: module {m['name']}, vermagic {vermagic}"]
    if m["release_mismatch"]:
        lines.append(f"  warning: {m['release_mismatch']}")
    elif m["release_note"]:
        lines.append(f"  note: {m['release_note']}")
    syms = m["symbols"]
    if not syms:
        lines.append("  no livepatch symbols")
        return "\n".join(lines)
    rows = [(f"[{s['index']}]", s["objname"] or "?", s["name"] or s["symbol"],
             "" if s["sympos"] is None else str(s["sympos"]), _address(s), _result(s))
            for s in syms]  # fmt: skip
    head = ("INDEX", "OBJECT", "SYMBOL", "POS", "ADDRESS", "RESULT")
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    for s, r in zip([None, *syms], [head, *rows], strict=True):
        lines.append("  " + "  ".join(f"{v:<{w[i]}}" for i, v in enumerate(r[:5])) + "  " + r[5])
        if s is not None and s["candidates"] and (not s["ok"] or s["coming_differs"]):
            modules = s["objname"] != "vmlinux"
            lines.append(f"{'':{w[0] + 4}}candidates (position, address, type, where):")
            lines += [_candidate_line(c, w[0] + 4, modules) for c in s["candidates"]]
    n_ok = sum(s["ok"] for s in syms)
    n_nl = sum(s["not_loaded"] for s in syms)
    n_bad = len(syms) - n_ok - n_nl
    summary = f"{len(syms)} livepatch symbols: {n_ok} resolve, {n_bad} do not"
    if n_nl:
        summary += f", {n_nl} in modules that are not loaded"
    if m["verdict"] == "no-verdict":
        summary += " (no verdict: the kernel symbols are not of the release it was built for)"
    lines.append("  " + summary)
    return "\n".join(lines)
