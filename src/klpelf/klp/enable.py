"""The enable path of a decoded patch: what ``klp_enable_patch()`` does with the
``struct klp_patch`` the module's init hands it (kernel/livepatch/core.c, patch.c,
state.c), in the kernel's order:

1. ``klp_is_patch_compatible()`` (v5.5+): the states of the livepatches already loaded
   (named by the user) against this patch's states and ``replace``;
2. ``klp_init_patch_early()``: every static object needs its ``funcs`` array (NULL:
   -EINVAL without a message);
3. ``klp_init_patch()`` -> ``klp_init_object()`` for each object in declaration
   order: the module name's length (MODULE_NAME_LEN), its sysfs directory (``%s``),
   then ``klp_init_func()`` for each function (``old_name`` and ``new_func`` set,
   ``old_name`` shorter than KSYM_NAME_LEN, its sysfs directory ``"%s,%lu"`` with
   ``old_sympos ?: 1``); then, for an object that is loaded,
   ``klp_init_object_loaded()``: the object's klp relocations
   (:func:`klpelf.klp.core.klp_write_object_relocs`) and ``klp_find_object_symbol()``
   of every ``old_name``;
4. ``__klp_enable_patch()`` -> ``klp_patch_object()`` for each loaded object: the
   ftrace location of every function (``klp_patch_func()``).

A module object that loads later goes through steps 3 (its lookups) and 4 in
``klp_module_coming()``, whose failure refuses that module's load ("target-load").
Then klpelf's own rules about what the declared objects leave out: klp sections and
livepatch symbols of an object the patch does not declare are never applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from klpelf.errors import KlpError
from klpelf.klp.diagnostics import When
from klpelf.klp.load import LoadState
from klpelf.klp.patch import KlpFunc, KlpObjectDecl, KlpPatch, KlpState, decode_patches
from klpelf.release import EINVAL

if TYPE_CHECKING:
    from klpelf.symbols.resolve import Resolution

__all__ = [
    "EEXIST",
    "LoadedPatch",
    "enabled_patch",
    "klp_enable_decoded",
    "klp_is_patch_compatible",
    "patch_rules",
    "undeclared_objects",
]

EEXIST = 17

#: ftrace_location() looks for the call site inside the function, not only at its
#: address, since Linux kernel commit aebfd12521d9 ("x86/ibt,ftrace: Search for
#: __fentry__ location") (in v5.18); before, the generic klp_get_ftrace_location()
#: returned the address itself and ftrace_set_filter_ip() failed on it with -EINVAL
_FTRACE_SEARCH = (5, 18)

_LIVEPATCH = {"kernel": True, "dmesg_prefix": "livepatch: "}


class LoadedPatch(NamedTuple):
    """A livepatch already enabled on the target (``--loaded``): its module name and
    its decoded patch."""

    name: str
    patch: KlpPatch


def enabled_patch(state: LoadState) -> KlpPatch | None:
    """The one patch the module hands klp_enable_patch(), when the decode finds exactly
    one whose objects and functions are all read (else the enable path is judged from
    the klp sections alone, as before the decode); decoded once per state."""
    if state.decoded is None:
        try:
            patches = decode_patches(state.elf)
        except KlpError:  # relocations the decode cannot follow: other rules say why
            patches = []
        p = patches[0] if len(patches) == 1 else None
        if p is not None and any(n.startswith("only the first") or "runs off" in n
                                 or "do not make whole" in n or "does not follow" in n
                                 for n in p.notes):  # fmt: skip
            p = None
        state.decoded = (p,)
    return state.decoded[0]


def _module_name_len(state: LoadState) -> int:
    # MODULE_NAME_LEN: 64 - sizeof(unsigned long) (include/linux/module.h)
    return 64 - (8 if state.elf.is64 else 4)


def klp_is_patch_compatible(patch: KlpPatch, loaded: list[LoadedPatch]) -> bool:
    """Mirrors ``klp_is_patch_compatible()`` (kernel/livepatch/state.c): for every
    state of every loaded patch, this patch must have the same state id with a version
    at least as high, or, lacking it, not be a replace (cumulative) patch."""
    mine: dict[int, KlpState] = {}
    for s in patch.states or []:
        mine.setdefault(s.id, s)  # klp_get_state(): the first with the id
    for old in loaded:
        for old_state in old.patch.states or []:
            state = mine.get(old_state.id)
            if state is None:
                if patch.replace:
                    return False
            elif state.version < old_state.version:
                return False
    return True


def _silent(state: LoadState, rule: str, message: str, when: When = "enable") -> None:
    # a check klp_enable_patch() makes without a message: -EINVAL and nothing in dmesg
    state.add("error", rule, message, when=when, kernel=True, errno=EINVAL, logged=False)


def _sysfs_clash(state: LoadState, path: str, when: When) -> None:
    # kobject_add() of a name its parent already has: sysfs_warn_dup()
    # (fs/sysfs/dir.c) warns with the path, kobject_add_internal() fails with -EEXIST
    state.add("error", "sysfs-duplicate", f"cannot create duplicate filename '{path}'",
              when=when, kernel=True, errno=EEXIST, dmesg_prefix="sysfs: ")  # fmt: skip


def _sysfs_func_name(f: KlpFunc) -> str:
    return f"{f.old_name},{f.old_sympos or 1}"


def _init_object(state: LoadState, patch_dir: str, obj: KlpObjectDecl, seen: set[str]) -> bool:
    """klp_init_object() up to klp_init_object_loaded(): False where it fails."""
    v = state.release
    if obj.name is not None and len(obj.name.encode()) >= _module_name_len(state):
        _silent(state, "object-name-length",
                f"klp_object name '{obj.name}' is {len(obj.name.encode())} bytes, "
                f"MODULE_NAME_LEN is {_module_name_len(state)}: klp_init_object() fails "
                "with -EINVAL, without a message")  # fmt: skip
        return False
    if obj.objname in seen:
        _sysfs_clash(state, f"{patch_dir}/{obj.objname}", "enable")
        return False
    seen.add(obj.objname)
    names: set[str] = set()
    for f in obj.funcs:
        where = f"klp_func at {f.where} ({obj.objname})"
        if f.old_name is None:
            _silent(state, "func-old-name", f"{where}: old_name is NULL: klp_init_func() "
                    "fails with -EINVAL, without a message")  # fmt: skip
            return False
        if f.new_func is None:
            _silent(state, "func-new-func", f"{where}: new_func is NULL for '{f.old_name}': "
                    "klp_init_func() fails with -EINVAL, without a message")  # fmt: skip
            return False
        if len(f.old_name.encode()) >= v.ksym_name_len:
            _silent(state, "func-name-length",
                    f"{where}: old_name is {len(f.old_name.encode())} bytes, KSYM_NAME_LEN "
                    f"is {v.ksym_name_len}: klp_init_func() fails with -EINVAL, without a "
                    "message")  # fmt: skip
            return False
        sysfs = _sysfs_func_name(f)
        if sysfs in names:
            _sysfs_clash(state, f"{patch_dir}/{obj.objname}/{sysfs}", "enable")
            return False
        names.add(sysfs)
    return True


def _lookup(state: LoadState, objname: str, f: KlpFunc, when: When) -> tuple[
        str | None, Resolution | None]:  # fmt: skip
    """klp_find_object_symbol() of ``f.old_name``: the kernel's error (None: resolved or
    unknown) and the resolution, when the sources give one."""
    assert f.old_name is not None
    ks = state.kernel
    if ks is None:
        if state.resolver is None:
            return None, None
        err, _ = state.resolver(objname, f.old_name, f.old_sympos)
        return err, None
    from klpelf.symbols.resolve import klp_find_object_symbol

    r = klp_find_object_symbol(ks, objname, f.old_name, f.old_sympos)
    # a module in no source, or one that never loads (a note), has no error to say
    return (r.coming_error if when == "target-load" else r.error), r


def _lookups(state: LoadState, obj: KlpObjectDecl, when: When) -> list[tuple[KlpFunc,
        Resolution | None]] | None:  # fmt: skip
    """The lookups of klp_init_object_loaded(), each function in order; None at the
    first that fails (reported)."""
    out = []
    for f in obj.funcs:
        err, r = _lookup(state, obj.objname, f, when)
        if err is not None:
            state.add("error", "old-name", err, when=when, errno=EINVAL, **_LIVEPATCH)
            return None
        out.append((f, r))
    return out


def _traced(state: LoadState, objname: str, f: KlpFunc, r: Resolution | None,
            when: When) -> bool | None:  # fmt: skip
    """Whether the function klp_patch_func() patches has an ftrace location, from the
    sources that can tell; None when none can."""
    ks = state.kernel
    if ks is None or r is None or f.old_name is None:
        return None
    chosen = r.coming_chosen if when == "target-load" else r.chosen
    if chosen is None:
        return None
    cand = r.candidates[chosen]
    exact = not state.release.at_least(*_FTRACE_SEARCH)
    if ks.ftrace is not None and ks.ftrace.lists(objname):
        got = ks.ftrace.traced(objname, f.old_name, cand, r.candidates)
        if got is not None:
            return got
    from klpelf.symbols.ftrace import module_traced, vmlinux_traced

    if objname == "vmlinux":
        return vmlinux_traced(ks.vmlinux_elf, f.old_name, cand, exact=exact) if (
            ks.vmlinux_elf is not None) else None  # fmt: skip
    mod = ks.module_file(objname)
    return module_traced(mod, cand, exact=exact) if mod is not None else None


_LookedUp = list[tuple[KlpFunc, "Resolution | None"]]


def _patch_object(state: LoadState, obj: KlpObjectDecl, looked_up: _LookedUp,
                  when: When) -> bool:  # fmt: skip
    """klp_patch_object(): every function's ftrace location; False at the first
    function without one (reported with the kernel's message)."""
    for f, r in looked_up:
        if _traced(state, obj.objname, f, r, when) is not False:
            continue
        if state.release.at_least(*_FTRACE_SEARCH):
            message = f"failed to find location for function '{f.old_name}'"
        else:
            message = f"failed to set ftrace filter for function '{f.old_name}' (-22)"
        p, o = state.mod.name, obj.objname
        # what the callers print after it: __klp_enable_patch(), klp_module_coming()
        more = (f"failed to patch object '{o}'", f"failed to enable patch '{p}'") if (
            when == "enable") else (f"failed to apply patch '{p}' to module '{o}' (-22)",
                                    f"patch '{p}' failed for module '{o}', refusing to load "
                                    f"module '{o}'")  # fmt: skip
        state.add("error", "ftrace-location", message, when=when, errno=EINVAL, more=more,
                  **_LIVEPATCH)  # fmt: skip
        return False
    return True


def _is_loaded(state: LoadState, obj: KlpObjectDecl) -> bool:
    return obj.name is None or (state.loaded is not None and state.loaded(obj.objname))


def klp_enable_decoded(state: LoadState, patch: KlpPatch) -> None:
    """``klp_enable_patch()`` from ``klp_is_patch_compatible()`` on, for ``patch``
    (the steps of the module docstring); the relocations of each loaded object are
    written where klp_init_object_loaded() writes them."""
    from klpelf.klp.core import klp_write_object_relocs

    mod, v = state.mod, state.release
    if v.at_least(5, 5) and not klp_is_patch_compatible(patch, state.loaded_patches):
        state.add("error", "patch-compatible",
                  f"Livepatch patch ({mod.name}) is not compatible with the already "
                  "installed livepatches.", when="enable", errno=EINVAL,
                  **_LIVEPATCH)  # fmt: skip
        return
    for obj in patch.objects:  # klp_init_patch_early()
        if obj.funcs_null:
            _silent(state, "object-funcs",
                    f"klp_object '{obj.objname}' ({obj.where}) has no funcs array (NULL): "
                    "klp_enable_patch() fails with -EINVAL, without a message")  # fmt: skip
            return
    if state.kernel is not None:  # every old_name in one pass over kallsyms, and over
        names = [f.old_name for o in patch.objects for f in o.funcs if f.old_name]
        state.kernel.prefetch(names)
        if state.kernel.ftrace is not None:  # available_filter_functions
            state.kernel.ftrace.prefetch(names)
    patch_dir = f"/kernel/livepatch/{mod.name}"
    seen: set[str] = set()
    loaded_now: list[tuple[KlpObjectDecl, list[tuple[KlpFunc, Resolution | None]]]] = []
    later: list[KlpObjectDecl] = []
    for obj in patch.objects:
        if not _init_object(state, patch_dir, obj, seen):
            return
        if not _is_loaded(state, obj):
            later.append(obj)
            continue
        target = mod.objects.get(obj.objname)
        relocs_now = obj.name is not None or not v.vmlinux_relocs_at_load
        if target is not None and relocs_now and not klp_write_object_relocs(
                state, target, "enable"):  # fmt: skip
            return
        looked_up = _lookups(state, obj, "enable")
        if looked_up is None:
            return
        loaded_now.append((obj, looked_up))
    for obj, looked_up in loaded_now:  # __klp_enable_patch()
        if not _patch_object(state, obj, looked_up, "enable"):
            return
    from klpelf.klp.lint import target_reload

    for obj, _ in loaded_now:  # enabled: what a later reload of a patched module meets
        target = mod.objects.get(obj.objname)
        if target is not None and obj.name is not None:
            target_reload(state, target)
    for obj in later:
        klp_module_coming_decoded(state, obj)


def klp_module_coming_decoded(state: LoadState, obj: KlpObjectDecl) -> None:
    """``klp_module_coming()`` for a declared module object that loads after the
    patch: its klp relocations, its lookups, its ftrace locations; a failure refuses
    that module's load."""
    from klpelf.klp.core import klp_write_object_relocs
    from klpelf.klp.lint import target_reload

    target = state.mod.objects.get(obj.objname)
    if target is not None and not klp_write_object_relocs(state, target, "target-load"):
        return
    looked_up = _lookups(state, obj, "target-load")
    if looked_up is None or not _patch_object(state, obj, looked_up, "target-load"):
        return
    if target is not None:
        target_reload(state, target)


def undeclared_objects(state: LoadState, patch: KlpPatch) -> None:
    """klpelf's rules: a klp relocation section of an object the patch does not declare
    is never applied (livepatch applies an object's sections only for the objects of
    the patch: klp_write_object_relocs() from klp_init_object_loaded()), except the
    ``vmlinux`` ones that the loader applies itself (v5.8+); an object declared with no
    function and no callback does nothing."""
    declared = {o.objname for o in patch.objects}
    v = state.release
    for objname, target in state.mod.objects.items():
        if objname in declared or (objname == "vmlinux" and v.vmlinux_relocs_at_load):
            continue
        for k in target.sections:
            if not k.has_livepatch_flag:
                continue
            state.add(
                "error", "undeclared-object-section",
                f"{k.section.name}: the patch declares no klp_object '{objname}', so "
                "livepatch never applies these relocations: the code using them runs "
                "with the unrelocated values (klpelf's rule; the kernel says nothing)",
                section=k.section, when="runtime",
            )  # fmt: skip
        sections = {k.section.index for k in target.sections}
        for s in target.symbols:
            if _used_only_by(state, s.symbol.index, sections):
                state.add(
                    "error", "undeclared-object-symbol",
                    f"livepatch symbol {s.symbol.name}: the patch declares no klp_object "
                    f"'{objname}', so livepatch never resolves it (klpelf's rule; the "
                    "kernel says nothing)",
                    symbol=(s.symbol.index, s.symbol.name), when="runtime",
                )  # fmt: skip
    for obj in patch.objects:
        if not obj.funcs and not obj.callbacks:
            state.add(
                "warning", "empty-object",
                f"klp_object '{obj.objname}' ({obj.where}) declares no function and no "
                "callback: it patches nothing (klpelf's rule)",
            )  # fmt: skip


def _used_only_by(state: LoadState, sym: int, sections: set[int]) -> bool:
    # referenced by some klp section, and only by sections in `sections`
    used = False
    for k in state.mod.sections:
        if not k.has_livepatch_flag:
            continue
        if sym in state.elf.relocations_as_rela(k.section).syms():
            if k.section.index not in sections:
                return False
            used = True
    return used


def patch_rules(state: LoadState) -> None:
    """klpelf's rules on the decoded patch (:func:`undeclared_objects`), whatever the
    kernel did with the module."""
    patch = enabled_patch(state)
    if patch is not None:
        undeclared_objects(state, patch)
