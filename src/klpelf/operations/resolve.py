"""``klpelf resolve``: how every livepatch symbol of a module resolves, as data and as text.

:func:`resolve` is the verb: every livepatch symbol of the module (the klp/ view)
looked up in the kernel symbols (symbols/) as ``klp_find_object_symbol()`` would
(:func:`resolve_module`).  Its result, :class:`ResolvedModule`, gives one ``Module``
of the ``klpelf.resolve/2`` schema (docs/json.md;
:class:`~klpelf.operations.schemas.ResolveJson`) and the table ``klpelf resolve`` prints.

Addresses are hex strings or null (unknown: kallsyms addresses hidden, or the module
is not loaded).  Within a version keys are only ever added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from klpelf._record import FrozenRecord
from klpelf.klp.module import KlpModule, LivepatchSymbol, klp_module
from klpelf.operations import ModuleSource, naming, open_module
from klpelf.symbols.candidate import Candidate
from klpelf.symbols.resolve import Resolution, klp_find_object_symbol, release_mismatch
from klpelf.symbols.sources import KernelSymbols, load_sources
from klpelf.text import join_lines

if TYPE_CHECKING:
    from klpelf.operations.schemas import (
        CandidateJson,
        KernelJson,
        ResolveJson,
        ResolveModuleJson,
        ResolveSymbolJson,
        Verdict,
    )

__all__ = [
    "SCHEMA",
    "ResolvedModule",
    "SymbolResolution",
    "kernel_messages",
    "resolve",
    "resolve_document",
    "resolve_kernel",
    "resolve_module",
]

SCHEMA: Literal["klpelf.resolve/2"] = "klpelf.resolve/2"


def kernel_json(ks: KernelSymbols) -> KernelJson:
    """The ``kernel`` object of the ``klpelf.resolve/2`` schema."""
    return {"description": ks.description, "release": ks.release, "running": ks.is_running}


def kernel_text(ks: KernelSymbols) -> str:
    """The lines ``klpelf resolve`` prints first: which kernel's symbols (no final newline)."""
    lines = []
    if ks.is_running:
        lines.append("kernel: no --kernel given: the running kernel, as modinfo and modprobe "
                     "default to")  # fmt: skip
    lines.append(f"kernel: {ks.description}")
    return join_lines(lines)


class SymbolResolution(NamedTuple):
    """One livepatch symbol of a module and how it resolves."""

    symbol: LivepatchSymbol
    #: None when the kernel cannot parse the name (``error`` says why)
    resolution: Resolution | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        r = self.resolution
        return r is not None and r.ok and (not r.coming_differs or bool(r.coming_ok))

    @property
    def not_loaded(self) -> bool:
        return self.resolution is not None and self.resolution.not_loaded


def resolve_module(ks: KernelSymbols, module: KlpModule) -> list[SymbolResolution]:
    """Resolve every livepatch symbol of ``module`` against ``ks``, in symbol-table order.

    The real-kernel harness can compare :func:`kernel_messages` of the result with
    the VM's dmesg after loading the module.
    """
    out: list[SymbolResolution] = []
    cache: dict[tuple[str, str, int], Resolution] = {}
    ks.prefetch(s.parsed.name for s in module.symbols if s.parsed is not None)
    for s in module.symbols:
        p = s.parsed
        if p is None:
            out.append(SymbolResolution(s, None, s.error))
            continue
        key = (p.objname, p.name, p.sympos)
        if key not in cache:
            cache[key] = klp_find_object_symbol(ks, *key)
        out.append(SymbolResolution(s, cache[key]))
    return out


def kernel_messages(results: list[SymbolResolution]) -> list[str]:
    """The ``livepatch: ...`` lines the kernel would log for the failing symbols."""
    msgs = []
    for r in results:
        err = r.error if r.resolution is None else r.resolution.error
        if err is not None:
            msgs.append(f"livepatch: {err}")
    return msgs


def _hex(address: int | None) -> str | None:
    return None if address is None else f"{address:#x}"


def _candidate_json(c: Candidate, chosen: bool, coming_chosen: bool) -> CandidateJson:
    return {
        "position": c.position, "coming_position": c.coming_position,
        "address": _hex(c.address),
        "type": c.type, "section": c.section, "offset": c.offset,
        "source_file": c.source_file, "chosen": chosen, "coming_chosen": coming_chosen,
    }  # fmt: skip


def _symbol_json(r: SymbolResolution) -> ResolveSymbolJson:
    s, res = r.symbol, r.resolution
    p = s.parsed
    out: ResolveSymbolJson = {
        "index": s.symbol.index, "name": s.symbol.name,
        "objname": p.objname if p else None, "symbol": p.name if p else None,
        "sympos": p.sympos if p else None, "ok": r.ok, "not_loaded": r.not_loaded,
        "address": None, "error": r.error, "note": None, "coming_differs": False,
        "coming_ok": None, "coming_error": None, "source": None, "candidates": [],
    }  # fmt: skip
    if res is not None:
        out.update({
            "address": _hex(res.address), "error": res.error, "note": res.note,
            "coming_differs": res.coming_differs, "coming_ok": res.coming_ok,
            "coming_error": res.coming_error, "source": res.source or None,
            "candidates": [_candidate_json(c, i == res.chosen, i == res.coming_chosen)
                           for i, c in enumerate(res.candidates)],
        })  # fmt: skip
    return out


# --- text -------------------------------------------------------------------------------


def _address(sym: ResolveSymbolJson) -> str:
    if sym["address"] is not None:
        return sym["address"].removeprefix("0x")
    if not sym["ok"]:
        return "-"
    chosen = [c for c in sym["candidates"] if c["chosen"]]
    if chosen and chosen[0]["section"] is not None and chosen[0]["offset"] is not None:
        return f"{chosen[0]['section']}+{chosen[0]['offset']:#x}"
    return "?"


def _result(sym: ResolveSymbolJson) -> str:
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
    addr = c["address"].removeprefix("0x") if c["address"] is not None else "?"
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


def _text(m: ResolveModuleJson) -> str:
    vermagic = (m["vermagic"] or "").strip() or "(none)"
    lines = [f"{m['path']}: module {m['name']}, vermagic {vermagic}"]
    if m["release_mismatch"]:
        lines.append(f"  warning: {m['release_mismatch']}")
    elif m["release_note"]:
        lines.append(f"  note: {m['release_note']}")
    syms = m["symbols"]
    if not syms:
        lines.append("  no livepatch symbols")
        return join_lines(lines)
    rows = [(f"[{s['index']}]", s["objname"] or "?", s["symbol"] or s["name"],
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
    return join_lines(lines)


class ResolvedModule(FrozenRecord):
    """How every livepatch symbol of one module resolves (``klpelf resolve``)."""

    _fields = ("path", "module", "symbols", "release_mismatch", "release_note", "running")
    __slots__ = _fields

    def __init__(self, path: str, module: KlpModule, symbols: list[SymbolResolution],
                 release_mismatch: str | None, release_note: str | None, *,
                 running: bool = False) -> None:  # fmt: skip
        self.path: Final = path
        self.module: Final = module
        #: one per livepatch symbol, in symbol-table order
        self.symbols: Final = symbols
        #: why the sources are not the kernel the module was built for, or None
        self.release_mismatch: Final = release_mismatch
        #: the sources do not say which release they are, so it could not be compared
        self.release_note: Final = release_note
        #: the symbols are the running kernel's (no --kernel given)
        self.running: Final = running

    def failed(self, *, strict: bool = False) -> bool:
        """The exit status's rule: a symbol does not resolve, or the ``--kernel``
        sources are of another release; the running kernel of another release (no
        ``--kernel``) only with ``strict``, as ``klpelf check`` warns of it."""
        verdict = self.verdict
        if verdict == "no-verdict":
            return strict or not self.running
        return verdict == "fail"

    @property
    def verdict(self) -> Verdict:
        """``ok`` every symbol resolves or waits for a module that is not loaded;
        ``no-verdict`` the sources are of another release."""
        failed = any(not r.ok and not r.not_loaded for r in self.symbols)
        return "no-verdict" if self.release_mismatch else "fail" if failed else "ok"

    def to_json(self) -> ResolveModuleJson:
        """The module as one ``Module`` object of the ``klpelf.resolve/2`` schema."""
        m = self.module
        return {
            "path": self.path, "name": m.name, "vermagic": m.vermagic,
            "release_mismatch": self.release_mismatch, "release_note": self.release_note,
            "verdict": self.verdict, "symbols": [_symbol_json(r) for r in self.symbols],
        }  # fmt: skip

    def to_text(self) -> str:
        """The table ``klpelf resolve`` prints for the module (no final newline)."""
        return _text(self.to_json())


def resolve_kernel(sources: Sequence[str] = (), *, kallsyms_all: bool = True) -> KernelSymbols:
    """The kernel symbols ``klpelf resolve`` uses: ``sources`` (``--kernel``), else the
    running kernel's (/proc/kallsyms and /lib/modules/$(uname -r)).

    :param kallsyms_all: the kernel has CONFIG_KALLSYMS_ALL (module kallsyms keep data
        symbols too; every livepatch-capable kernel has it).
    :raises KlpError: a source cannot be read.
    """
    if sources:
        return load_sources(sources, kallsyms_all=kallsyms_all)
    return KernelSymbols.running(kallsyms_all=kallsyms_all)


def resolve(module: ModuleSource, kernel: KernelSymbols) -> ResolvedModule:
    """Resolve every livepatch symbol of ``module`` (a path or an ElfFile) in ``kernel``.

    :raises KlpError: the module cannot be read (the message names the file).
    """
    elf = open_module(module)
    with naming(elf.path):
        mod = klp_module(elf)
        results = resolve_module(kernel, mod)
    built = (mod.vermagic or "").split()
    note = None
    if kernel.release is None and built:
        note = (f"the kernel symbols do not say their release; the module was built for "
                f"{built[0]}")  # fmt: skip
    path = elf.path or ""
    return ResolvedModule(path, mod, results, release_mismatch(kernel, mod.vermagic), note,
                          running=kernel.is_running)  # fmt: skip


def resolve_document(kernel: KernelSymbols, resolved: Sequence[ResolvedModule],
                     failed: Sequence[tuple[str, str]] = ()) -> ResolveJson:  # fmt: skip
    """The ``klpelf resolve --json`` document of several modules; ``failed``: (path,
    error) of the files that could not be read."""
    return {"schema": SCHEMA, "kernel": kernel_json(kernel),
            "modules": [r.to_json() for r in resolved],
            "failed": [{"path": p, "error": e} for p, e in failed]}  # fmt: skip
