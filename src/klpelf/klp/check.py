"""``klpelf check``: predict, rule by rule, what the kernel will do with a livepatch module.

The walk follows the kernel's own order, so that the first error found is the one
the kernel reports (load_module() in kernel/module/main.c, then the module's init
calling klp_enable_patch() in kernel/livepatch/core.c, then later loads of patched
modules through klp_module_coming()):

1. elf_validity(): what a broken writer can trip (one SHT_SYMTAB, ET_REL, section 0,
   .gnu.linkonce.this_module: a plain object is no module);
2. check_modstruct_version() and check_modinfo(): module_layout's CRC, the vermagic;
   then the machine's module_frob_arch_sections() (loongarch64: its .got/.plt/.plt.idx);
3. simplify_symbols(): an undefined symbol that is not SHN_LIVEPATCH must be exported
   by the kernel (vmlinux or a loaded module), with the CRC the module expects;
4. apply_relocations(), in section index order: SHF_RELA_LIVEPATCH sections go to
   klp_apply_section_relocs() (only ``vmlinux`` ones are applied now), the others to
   the arch's apply_relocate_add() (x86_64: the target bytes must be zero);
5. klp_enable_patch(): the ``livepatch`` modinfo entry, then the module-specific klp
   sections of objects already loaded;
6. klp_module_coming(): the sections of objects loaded later.

Steps 1-4 are in :mod:`klpelf.klp.load` (kernel/module/main.c), 5-6 in
:mod:`klpelf.klp.core` (kernel/livepatch/core.c), the relocation types of each machine
in :mod:`klpelf.arch`.  Each check that the kernel makes uses the kernel's message
text.  Problems the kernel does not refuse but which break the module (it loads and
then crashes, or a section is silently never applied) are klpelf's own rules
(:mod:`klpelf.klp.lint`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from klpelf.elf.file import ElfFile
from klpelf.elf.modinfo import module_depends
from klpelf.klp.core import klp_enable_patch
from klpelf.klp.diagnostics import (
    UNSAFE_LATE_SECTIONS,
    CheckResult,
    Diagnostic,
    Resolver,
    Severity,
    When,
)
from klpelf.klp.enable import LoadedPatch, patch_rules
from klpelf.klp.lint import module_rules
from klpelf.klp.load import (
    LoadState,
    apply_relocations,
    check_modinfo,
    check_modstruct_version,
    elf_validity,
    module_frob_arch_sections,
    simplify_symbols,
)
from klpelf.klp.module import KlpModule, klp_module
from klpelf.release import (
    DEFAULT_VERSION,
    NEWEST_MODELLED,
    OLDEST_MODELLED,
    KernelRelease,
    modelled,
)

if TYPE_CHECKING:
    from klpelf.symbols.sources import KernelSymbols

__all__ = [
    "UNSAFE_LATE_SECTIONS",
    "CheckResult",
    "Diagnostic",
    "Resolver",
    "Severity",
    "When",
    "check_module",
    "kernel_resolver",
    "run_checks",
]


def check_module(
    elf: ElfFile,
    *,
    version: KernelRelease | None = None,
    resolver: Resolver | None = None,
    loaded: Callable[[str], bool] | None = None,
    kernel: KernelSymbols | None = None,
    loaded_patches: list[LoadedPatch] | None = None,
    target_release: str | None = None,
) -> CheckResult:
    """Check ``elf`` against the rules of kernel ``version`` (default: from vermagic).

    :param resolver: resolves livepatch symbols in the target kernel (klpelf
        resolve's semantics); without it symbol resolution is not checked.
    :param loaded: whether an object (module name) is loaded in the target kernel;
        without it module objects are taken as loaded later ("target-load").
    :param kernel: the target kernel's symbols: sets ``resolver`` and ``loaded`` with
        :func:`kernel_resolver`, after looking every livepatch symbol's name up at once
        (one pass over a kallsyms file instead of one per name); its export tables
        judge the module's ordinary undefined symbols and modversions CRCs, its
        vermagic (a module tree's) the module's.
    :param loaded_patches: the livepatches already enabled on the target, for
        klp_is_patch_compatible() (states and replace).
    :param target_release: the target's full release (``uname -r``), when known: the
        vermagic's first word is compared with it (``version`` is major.minor only).
    """
    mod = klp_module(elf)
    undefined = _ordinary_undefined(elf)
    if kernel is not None:
        from klpelf.symbols.exports import ksymtab_names

        names = [s.parsed.name for s in mod.symbols if s.parsed is not None]
        kernel.prefetch([*names, *ksymtab_names([*undefined, "module_layout"])])
        resolver, loaded = kernel_resolver(kernel)
    source = "--kernel-release"
    notes: list[Diagnostic] = []
    if version is None:
        version, source = DEFAULT_VERSION, f"default ({DEFAULT_VERSION})"
        with contextlib.suppress(ValueError):
            if mod.vermagic:
                version, source = KernelRelease.parse(mod.vermagic), "vermagic"
        if not modelled(version):
            bound = OLDEST_MODELLED if version < OLDEST_MODELLED else NEWEST_MODELLED
            notes.append(Diagnostic("warning", "release-not-modelled",
                                    f"the vermagic's release {version} is outside what klpelf "
                                    f"models ({OLDEST_MODELLED} to {NEWEST_MODELLED}): judged "
                                    f"by the rules of {bound}"))  # fmt: skip
            version, source = bound, f"vermagic, judged as {bound}"
    if version.ksym_name_len != mod.ksym_name_len:
        mod = KlpModule(elf, ksym_name_len=version.ksym_name_len)
    res = CheckResult(elf.path or "", mod.name, version, source, notes)
    res.vermagic = mod.vermagic
    state = LoadState(elf, mod, version, res.diagnostics, resolver=resolver, loaded=loaded)
    state.kernel, state.loaded_patches = kernel, list(loaded_patches or [])
    _target(state, kernel, target_release)
    res.release_mismatch = _release_mismatch(mod.vermagic, version, state.target_release)
    if kernel is not None and state.arch is not None and elf.symtab is not None:
        _place(state, kernel)
    run_checks(state)
    return res


def _ordinary_undefined(elf: ElfFile) -> list[str]:
    # the names simplify_symbols() looks up in the export tables
    tab = elf.symtab
    if tab is None:
        return []
    from klpelf.elf.constants import SHN
    from klpelf.klp.names import KLP_SYM_PREFIX

    names = tab.names()
    return [names[i] for i in tab.indices_where_shndx(SHN.UNDEF)
            if i and not names[i].startswith(KLP_SYM_PREFIX)]  # fmt: skip


def _target(state: LoadState, kernel: KernelSymbols | None, release: str | None) -> None:
    """What the load steps know of the target kernel: its release and vermagic, whether
    it has CONFIG_MODVERSIONS, its export tables."""
    vermagic = state.mod.vermagic
    state.target_release = release
    if kernel is not None:
        from klpelf.symbols.exports import find_symbol, lists_vmlinux_exports, modversions

        state.target_vermagic = kernel.vermagic
        if state.target_release is None:
            state.target_release = kernel.release
        state.modversions = modversions(kernel)
        if lists_vmlinux_exports(kernel):
            deps = module_depends(state.elf)
            state.find_export = lambda name: find_symbol(kernel, name, deps)
        else:
            state.add("note", "exports-unknown",
                      "ordinary undefined symbols not checked: the kernel symbols list no export "
                      "table (no Module.symvers; no __ksymtab_ entries in kallsyms)")  # fmt: skip
    if state.modversions is None and vermagic is not None and state.target_vermagic is None:
        # the module was built for the target: its vermagic says how the kernel was
        state.modversions = "modversions" in vermagic.split()


def _release_mismatch(vermagic: str | None, version: KernelRelease,
                      target: str | None) -> str | None:  # fmt: skip
    # the release judged (or the target's full release) is not the vermagic's
    if not vermagic or not vermagic.split():
        return None
    built = vermagic.split()[0]
    try:
        built_version = KernelRelease.parse(built)
    except ValueError:
        return None
    if target is not None and target != built:
        return f"the module's vermagic is {built}, the target is {target}"
    if built_version != version:
        return f"the module's vermagic is {built}"
    return None


def _place(state: LoadState, kernel: KernelSymbols) -> None:
    """Give the twins what an apply needs: the symbol values, and on a machine whose
    module area is fixed (:data:`klpelf.klp.layout.MODULE_AREA`) the sections placed
    as the loader would there (a range then depends on the distance to the kernel,
    not on where in the module area the module is)."""
    from klpelf.arch import ModuleLayout
    from klpelf.klp.layout import MODULE_AREA, place, symbol_values

    base = MODULE_AREA.get(state.elf.machine)
    if base is None:
        return
    addresses = {s.index: s.address for s in place(state.elf, base=base)}
    values = symbol_values(state.elf, kernel, state.release, addresses)
    state.module_layout = ModuleLayout(state.elf, addresses)
    state.symbol_value = lambda i: values[i] if 0 <= i < len(values) else None


def run_checks(state: LoadState) -> None:
    """The walk of :func:`check_module` over ``state``: the load path, the enable path
    (with the later loads of patched modules), then klpelf's own rules."""
    if not (elf_validity(state) and check_modstruct_version(state) and check_modinfo(state)
            and module_frob_arch_sections(state)):  # fmt: skip
        return
    simplify_symbols(state)
    apply_relocations(state)
    klp_enable_patch(state)
    patch_rules(state)
    module_rules(state)


def kernel_resolver(ks: KernelSymbols) -> tuple[Resolver, Callable[[str], bool]]:
    """The resolver and the "is it loaded" test of :func:`check_module` for ``ks``.

    An object that is loaded (vmlinux, or a module with ``[mod]`` lines in kallsyms)
    resolves as it is now; a module known only from its .ko file resolves as the
    kernel sees it while that module is COMING (its full symbol table); a module that
    no source knows is not checked.
    """
    from klpelf.symbols.resolve import klp_find_object_symbol

    def loaded(objname: str) -> bool:
        return objname == "vmlinux" or ks.loaded_module(objname) is not None

    def resolve(objname: str, name: str, sympos: int) -> tuple[str | None, int | None]:
        r = klp_find_object_symbol(ks, objname, name, sympos)
        if r.not_loaded or (r.error is None and not r.ok):
            return None, None  # unknown here: nothing to say
        if loaded(objname):
            return r.error, r.address
        return r.coming_error, None

    return resolve, loaded
