"""Resolve livepatch symbols as the kernel does: ``klp_find_object_symbol()``.

The kernel (kernel/livepatch/core.c, v6.2+; the same outcome since v4.5) walks the
symbols named ``name`` of the target object, ``klp_match_callback()`` keeping the
address of the last one visited and counting them, and stopping at the ``sympos``-th
(or at the second when sympos is 0).  Then, in this order::

    args.addr == 0             -> "symbol '%s' not found in symbol table"
    count > 1 && sympos == 0   -> "unresolvable ambiguity for symbol '%s' in object '%s'"
                                  (objname is NULL for vmlinux: printk shows "(null)")
    sympos > 0 && sympos != count
                               -> "symbol position %lu for symbol '%s' in object '%s' not found"
                                  (here vmlinux is printed as "vmlinux")

The walk order is what makes sympos mean something; the sources give it
(:mod:`klpelf.symbols.sources`): for vmlinux the same-named kallsyms entries in
ascending address order (``kallsyms_on_each_match_symbol()`` over
``kallsyms_seqs_of_names``, sorted by scripts/kallsyms.c ``compare_names()``: name,
address, then position in the address-sorted table, whose ties ``compare_symbols()``
breaks: non-weak first, then input order; before v6.2 ``kallsyms_on_each_symbol()``
walked that address-sorted table itself, so the order is the same); for a module its
symbol-table order, over the full table while it is COMING and the core symbols once
it is LIVE (:class:`~klpelf.symbols.elfsyms.ModuleFile`).

A failure is typed (:class:`~klpelf.errors.SymbolNotFoundError`,
:class:`~klpelf.errors.AmbiguousSymbolError`, :class:`~klpelf.errors.SymbolPositionError`)
and :attr:`Resolution.failure` carries it; the kernel's message is made from it.
"""

from __future__ import annotations

from typing import NamedTuple

from klpelf.errors import (
    AmbiguousSymbolError,
    SymbolLookupError,
    SymbolNotFoundError,
    SymbolPositionError,
)
from klpelf.symbols.candidate import Candidate
from klpelf.symbols.sources import KernelSymbols

__all__ = [
    "Candidate",
    "Resolution",
    "exported_by",
    "klp_find_object_symbol",
    "release_mismatch",
]


class Resolution(NamedTuple):
    """The outcome of :func:`klp_find_object_symbol` for one (objname, name, sympos).

    For a module, ``ok``/``address``/``failure`` are the outcome once the module is LIVE
    (loaded before the livepatch is enabled: its core symbols); ``coming_*`` the
    outcome while it is COMING (the livepatch applied as the module loads: its full
    symbol table), and ``coming_differs`` says they differ.  For vmlinux both are
    the same.
    """

    objname: str
    name: str
    sympos: int
    ok: bool
    #: the resolved address; None when unknown (zeroed kallsyms, module not loaded)
    address: int | None
    #: why the kernel would not resolve it: the typed failure, carrying the kernel's message
    failure: SymbolLookupError | None
    #: every same-named symbol, in walk order
    candidates: list[Candidate]
    #: the module is in no source: the kernel applies these relocations when it loads
    not_loaded: bool = False
    coming_differs: bool = False
    coming_ok: bool | None = None
    coming_failure: SymbolLookupError | None = None
    #: the candidate chosen (index into candidates) when ok / when coming_ok
    chosen: int | None = None
    coming_chosen: int | None = None
    #: a remark that is not a kernel message (not loaded, built-in, name spelling...)
    note: str | None = None
    #: which source answered
    source: str = ""

    @property
    def error(self) -> str | None:
        """The kernel's message, without the "livepatch: " prefix, or None."""
        return self.failure.message if self.failure is not None else None

    @property
    def coming_error(self) -> str | None:
        """The kernel's message while the module is COMING, or None."""
        return self.coming_failure.message if self.coming_failure is not None else None

    @property
    def message(self) -> str | None:
        """The kernel's message, else the note."""
        return self.error or self.note

    def exception(self) -> SymbolLookupError | None:
        """The kernel's error as a :class:`~klpelf.errors.SymbolLookupError`, or None."""
        return self.failure


def _klp_match(
    objname: str, name: str, sympos: int, cands: list[Candidate]
) -> tuple[bool, int | None, SymbolLookupError | None, int | None]:
    # klp_match_callback() over `cands` (already in walk order), then the three checks of
    # klp_find_object_symbol(): (ok, address, failure, index of the candidate chosen).
    # An unknown address (None) counts as nonzero.
    count, last = 0, -1
    addr: int | None = 0
    for i, c in enumerate(cands):
        addr, last = c.address, i
        count += 1
        if (sympos and count == sympos) or (not sympos and count > 1):
            break
    failure: type[SymbolLookupError]
    if count == 0 or addr == 0:
        failure = SymbolNotFoundError
    elif count > 1 and sympos == 0:
        failure = AmbiguousSymbolError
    elif sympos > 0 and sympos != count:
        failure = SymbolPositionError
    else:
        return True, addr, None, last
    return False, None, failure(objname=objname, name=name, sympos=sympos), None


def klp_find_object_symbol(ks: KernelSymbols, objname: str, name: str, sympos: int) -> Resolution:
    """Resolve ``name`` at ``sympos`` in ``objname`` ("vmlinux" or a module name).

    Mirrors ``klp_find_object_symbol()`` in kernel/livepatch/core.c, with the message
    the kernel would log on failure.  A module that no source knows is ``not_loaded``:
    the kernel resolves its symbols only when it loads.
    """
    if objname == "vmlinux":
        if not ks.has_vmlinux():
            return Resolution(objname, name, sympos, False, None, None, [],
                              note="no vmlinux symbols among the sources")  # fmt: skip
        cands = ks.vmlinux_matches(name)
        ok, addr, err, chosen = _klp_match(objname, name, sympos, cands)
        return Resolution(objname, name, sympos, ok, addr, err, cands, chosen=chosen,
                          coming_ok=ok, coming_failure=err, coming_chosen=chosen,
                          source="vmlinux")  # fmt: skip

    text = ks.loaded_module(objname)
    if text is not None:
        cands = ks.loaded_module_matches(text, objname, name)
        ok, addr, err, chosen = _klp_match(objname, name, sympos, cands)
        return Resolution(objname, name, sympos, ok, addr, err, cands, chosen=chosen,
                          coming_ok=ok, coming_failure=err, coming_chosen=chosen,
                          source=f"{text.path} (loaded)")  # fmt: skip

    mod = ks.module_file(objname)
    if mod is None:
        if ks.is_builtin(objname):
            return Resolution(objname, name, sympos, False, None, None, [], note=(
                f"'{objname}' is built into vmlinux (modules.builtin): no module of that "
                "name ever loads, so these relocations are never applied"))  # fmt: skip
        why = f"not loaded: relocations would be applied when {objname} loads"
        return Resolution(objname, name, sympos, False, None, None, [], not_loaded=True, note=why)
    cands = mod.matches(name)
    live = [i for i, c in enumerate(cands) if c.position is not None]
    coming = sorted((i for i, c in enumerate(cands) if c.coming_position is not None),
                    key=lambda i: cands[i].coming_position or 0)  # fmt: skip
    ok, addr, err, chosen = _klp_match(objname, name, sympos, [cands[i] for i in live])
    c_ok, _, c_err, c_chosen = _klp_match(objname, name, sympos, [cands[i] for i in coming])
    chosen_i = live[chosen] if chosen is not None else None
    c_chosen_i = coming[c_chosen] if c_chosen is not None else None
    differs = (ok, err, chosen_i) != (c_ok, c_err, c_chosen_i)
    note: str | None = None
    if mod.name != objname:
        ok, c_ok, differs, err, c_err = False, False, False, None, None
        note = (f"the module is named '{mod.name}' ({mod.path}); the kernel compares module "
                f"names exactly, so relocations for '{objname}' are never applied")  # fmt: skip
    return Resolution(
        objname, name, sympos, ok, addr, err, cands, chosen=chosen_i, coming_differs=differs,
        coming_ok=c_ok, coming_failure=c_err, coming_chosen=c_chosen_i, note=note,
        source=mod.path,
    )  # fmt: skip


def klp_find_address(ks: KernelSymbols, objname: str, name: str, sympos: int, *,
                     candidates: list[Candidate] | None = None) -> int | None:  # fmt: skip
    """The address :func:`klp_find_object_symbol` resolves to, now or when the module
    object comes (``ok or coming_ok``), else None: for many lookups (``klpelf apply``),
    a vmlinux symbol without building the :class:`Resolution`.  ``candidates``: what
    ``ks.vmlinux_matches(name)`` gives, when the caller has it (vmlinux only)."""
    if objname != "vmlinux":
        r = klp_find_object_symbol(ks, objname, name, sympos)
        ok = r.ok if r.coming_ok is None else r.ok or r.coming_ok
        return r.address if ok else None
    if not ks.has_vmlinux():
        return None
    cands = ks.vmlinux_matches(name) if candidates is None else candidates
    ok, addr, _, _ = _klp_match(objname, name, sympos, cands)
    return addr if ok else None


def exported_by(ks: KernelSymbols, name: str) -> str | None:
    """The object that exports ``name`` ("vmlinux" or a module name), from Module.symvers."""
    e = ks.exports.get(name)
    return e.objname if e is not None else None


def release_mismatch(ks: KernelSymbols, vermagic: str | None) -> str | None:
    """Why the sources are not the kernel a module was built for, or None.

    Compares the first word of the module's vermagic (its UTS_RELEASE) with the
    release of the sources, when both are known.
    """
    release = ks.release
    built = vermagic.split()[0] if vermagic and vermagic.split() else None
    if release is None or built is None or built == release:
        return None
    return (f"the module was built for {built} (vermagic), the kernel symbols are of "
            f"{release}: sympos and names may differ on the kernel it was built for")  # fmt: skip
