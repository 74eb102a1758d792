"""The twins of livepatch's relocation steps (kernel/livepatch/core.c).

At load, ``apply_relocations()`` hands every SHF_RELA_LIVEPATCH section to
:func:`klp_apply_section_relocs`, which applies the ``vmlinux`` ones (v5.8+).  The
module's init calls :func:`klp_enable_patch`, which applies the sections of the
objects already loaded (:func:`klp_write_object_relocs`); an object loaded later gets
its sections applied by :func:`klp_module_coming`.  Every section is applied by
:func:`klp_write_section_relocs`: :func:`klp_resolve_symbols`, then the arch's
``apply_relocate_add()`` (:func:`klpelf.klp.load.apply_relocate_add`).
``klp_find_object_symbol()`` is :func:`klpelf.symbols.resolve.klp_find_object_symbol`,
called through the state's resolver.
"""

from __future__ import annotations

from klpelf.elf.constants import SHN
from klpelf.klp.diagnostics import When
from klpelf.klp.load import LoadState, apply_relocate_add
from klpelf.klp.module import KlpRelaSection, TargetObject
from klpelf.klp.names import KlpSymbolName
from klpelf.release import EINVAL


def _bad_section_name(state: LoadState, k: KlpRelaSection, when: When) -> None:
    state.add("error", "section-name",
              f"section {k.section.name} has an incorrectly formatted name", section=k.section,
              when=when, kernel=True, errno=EINVAL, dmesg_prefix="livepatch: ")  # fmt: skip


def klp_apply_section_relocs(state: LoadState, k: KlpRelaSection) -> bool:
    """``klp_apply_section_relocs(pmod, ..., objname=NULL)`` as ``apply_relocations()``
    calls it at load: the section's name must parse ("incorrectly formatted name");
    only a ``vmlinux`` section is applied now (v5.8+; before, every section waits for
    :func:`klp_enable_patch`).  False where the kernel refuses the module."""
    if k.parsed is None:
        _bad_section_name(state, k, "load")
        return False
    if k.objname == "vmlinux" and state.release.vmlinux_relocs_at_load:
        return klp_write_section_relocs(state, k, "load")
    return True


def klp_write_section_relocs(state: LoadState, k: KlpRelaSection, when: When) -> bool:
    """``klp_write_section_relocs(..., apply=true)``: resolve the section's symbols,
    then apply it with the arch's ``apply_relocate_add()``; False at the first error."""
    return klp_resolve_symbols(state, k, when) and apply_relocate_add(state, k.section, when)


def klp_resolve_symbols(state: LoadState, k: KlpRelaSection, when: When) -> bool:
    """``klp_resolve_symbols()``: for each entry of the section, in order, its symbol
    must be SHN_LIVEPATCH, its name must parse, a ``vmlinux`` symbol may not be used
    from a module-specific section (v5.8+), and the symbol must resolve
    (``klp_find_object_symbol()``, through the state's resolver).  False at the first
    entry that fails, with the kernel's message."""
    elf, sec, v = state.elf, k.section, state.release
    tab = elf.symtab
    assert tab is not None
    symndx = tab.section.index
    names = tab.names()
    raw_shndx = tab.column("st_shndx")
    sec_vmlinux = k.objname == "vmlinux"
    # at load, apply_relocations() passes the ELF string table; later (module objects
    # at enable or when they load, and every object before 5.8)
    # klp_write_object_relocs() passes the core kallsyms copy, whose names are cut
    # to KSYM_NAME_LEN - 1 bytes
    from_kallsyms = when != "load"
    common = {"section": sec, "when": when, "kernel": True, "errno": EINVAL,
              "dmesg_prefix": "livepatch: "}  # fmt: skip
    # the kernel reads any SHF_RELA_LIVEPATCH section as Elf_Rela, whatever sh_type
    # and sh_entsize say: count = sh_size / sizeof(Elf_Rela)
    for idx, r_sym in enumerate(elf.relocations_as_rela(sec).syms()):
        name = names[r_sym] if r_sym < len(names) else f"#{r_sym}"
        if from_kallsyms:
            name = v.kallsyms_copy(name)
        if r_sym >= len(names) or raw_shndx[r_sym] != SHN.LIVEPATCH:
            state.add("error", "not-livepatch-symbol", v.not_marked_message(name, symndx, idx),
                      symbol=(r_sym, name), relocation=idx, **common)  # fmt: skip
            return False
        scan = KlpSymbolName.scan(name, ksym_name_len=v.ksym_name_len)
        if not scan.ok:
            state.add("error", "symbol-name", f"symbol {name} has an incorrectly formatted name",
                      symbol=(r_sym, name), relocation=idx, **common)  # fmt: skip
            return False
        sym = scan.symbol()
        if sym.is_vmlinux and not sec_vmlinux and v.forbids_vmlinux_from_module_sections:
            state.add(
                "error",
                "vmlinux-from-module-section",
                f"invalid access to vmlinux symbol '{sym.name}' from module-specific "
                "livepatch relocation section",
                symbol=(r_sym, name),
                relocation=idx,
                **common,
            )
            return False
        if state.resolver is not None:
            err, _ = state.resolver(sym.objname, sym.name, sym.sympos)
            if err is not None:
                state.add("error", "resolve", err, symbol=(r_sym, name), relocation=idx,
                          **common)  # fmt: skip
                return False
    return True


def klp_write_object_relocs(state: LoadState, obj: TargetObject, when: When) -> bool:
    """``klp_write_object_relocs(patch, obj, apply=true)``: every SHF_RELA_LIVEPATCH
    section of the object.  At enable the first failure stops (False); for an object
    loaded later ("target-load") each section is judged on its own, and False says
    that one failed."""
    applied = True
    for k in obj.sections:
        if k.has_livepatch_flag and not klp_write_section_relocs(state, k, when):
            if when == "enable":
                return False
            applied = False
    return applied


def klp_enable_patch(state: LoadState) -> None:
    """``klp_enable_patch()``, called by the module's init: the module must be marked
    as a livepatch module (``livepatch`` modinfo); then, for each object (vmlinux
    first), its klp sections are applied now if it is loaded
    (``klp_init_object_loaded()``), else when it loads (:func:`klp_module_coming`).
    Nothing happens if the kernel refused the module at load."""
    from klpelf.klp.lint import not_a_livepatch, target_reload

    if state.refused_at_load():
        return  # the module never gets to its init
    mod, v = state.mod, state.release
    if not mod.is_livepatch:
        if not not_a_livepatch(state):
            state.add("error", "not-livepatch",
                      f"module {mod.name} is not marked as a livepatch module", when="enable",
                      kernel=True, errno=EINVAL, dmesg_prefix="livepatch: ")  # fmt: skip
        return
    # klp_write_object_relocs() parses the name of every SHF_RELA_LIVEPATCH section
    # for each object, whatever its target (the load path skipped sections with a
    # non-ALLOC target).
    for k in mod.sections:
        if k.has_livepatch_flag and k.parsed is None:
            _bad_section_name(state, k, "enable")
            return
    from klpelf.klp.enable import enabled_patch, klp_enable_decoded

    patch = enabled_patch(state)
    if patch is not None:  # the objects the patch declares, in its order
        klp_enable_decoded(state, patch)
        return
    for obj in mod.objects.values():
        if obj.is_vmlinux and v.vmlinux_relocs_at_load:
            continue
        if not obj.is_vmlinux and (state.loaded is None or not state.loaded(obj.objname)):
            klp_module_coming(state, obj)
            continue
        if not klp_write_object_relocs(state, obj, "enable"):
            return
        if not obj.is_vmlinux:
            target_reload(state, obj)


def klp_module_coming(state: LoadState, obj: TargetObject) -> None:
    """``klp_module_coming()``: when module ``obj`` loads after the patch, its klp
    sections are applied; a failure refuses that module's load ("target-load")."""
    from klpelf.klp.lint import target_reload

    if klp_write_object_relocs(state, obj, "target-load"):
        target_reload(state, obj)
