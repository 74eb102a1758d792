"""klpelf's own rules: what breaks a livepatch module but the kernel does not refuse.

The module loads and then crashes when the code runs, a section is silently never
applied, a patched module cannot be loaded again, or the content is only odd.  The
kernel's own checks are in :mod:`klpelf.klp.load` and :mod:`klpelf.klp.core`;
:func:`klpelf.klp.check.check_module` runs both, in the kernel's order.
"""

from __future__ import annotations

from klpelf.elf.constants import SHF, SHN, SHT, STB
from klpelf.elf.file import Section
from klpelf.klp.diagnostics import UNSAFE_LATE_SECTIONS
from klpelf.klp.load import LoadState
from klpelf.klp.module import KlpRelaSection, TargetObject
from klpelf.klp.names import KLP_RELA_PREFIX
from klpelf.release import ENOEXEC


def livepatch_symbols_in_ordinary_relocations(state: LoadState, sec: Section) -> None:
    """An entry of an ordinary relocation section (no SHF_RELA_LIVEPATCH) against a
    livepatch symbol: ``apply_relocate_add()`` applies it with the symbol's value 0."""
    elf = state.elf
    tab = elf.symtab
    assert tab is not None
    lp = state.livepatch_symbols
    syms = elf.relocations_as_rela(sec).syms()
    if not lp or lp.isdisjoint(syms):
        return
    names = tab.names()
    what = (
        "a .klp.rela. section without SHF_RELA_LIVEPATCH"
        if sec.name.startswith(KLP_RELA_PREFIX)
        else "an ordinary relocation section"
    )
    for idx, r_sym in enumerate(syms):
        if r_sym not in lp:
            continue
        state.add(
            "error",
            "livepatch-symbol-in-ordinary-relocation",
            f"relocation against livepatch symbol {names[r_sym]} in {what}: the loader "
            "applies it with the symbol's value 0 (the module loads, then crashes when "
            "the code runs)",
            section=sec,
            symbol=(r_sym, names[r_sym]),
            relocation=idx,
            when="runtime",
        )


def not_a_livepatch(state: LoadState) -> bool:
    """Whether a module without the ``livepatch`` modinfo entry is no livepatch at all
    (then a note says so): klp_enable_patch() runs only if the module's init calls it,
    and without the modinfo entry, klp content or that call is what shows a livepatch."""
    mod = state.mod
    tab = state.elf.symtab
    calls = tab is not None and len(tab.indices_with_prefix("klp_enable_patch")) > 0
    if mod.sections or mod.symbols or calls:
        return False
    state.add(
        "note",
        "not-a-livepatch",
        "no livepatch modinfo, klp sections, livepatch symbols or call to "
        "klp_enable_patch(): not a livepatch module",
    )
    return True


def target_reload(state: LoadState, obj: TargetObject) -> None:
    """Before 6.3 nothing clears an object's klp relocations when it unloads
    (``clear_relocate_add()``, x86_64 only): the bytes written stay in the patch
    module, and the next load of the object finds them nonzero and is refused."""
    arch, v = state.arch, state.release
    if v.clears_relocations or arch is None or arch.nonzero_message is None:
        return
    for k in obj.sections:
        if not k.has_livepatch_flag:
            continue
        types = state.elf.relocations_as_rela(k.section).types()
        for idx, r_type in enumerate(types):
            if r_type == arch.none_type:
                continue
            # the dmesg line: the message after its file's pr_fmt (x86: "module: ")
            message = arch.nonzero_message(v, k.section.index, idx, r_type)
            kernel_text = arch.dmesg_prefix(v) + message
            state.add(
                "warning",
                "target-reload-refused",
                f"module {obj.objname} cannot be loaded again while this patch stays "
                f"loaded: Linux {v} does not clear klp relocations when {obj.objname} "
                f"unloads (6.3+ does), so its next load fails (errno {ENOEXEC}) with: "
                f"{kernel_text}",
                section=k.section,
                relocation=idx,
                when="target-load",
                errno=ENOEXEC,
            )
            return


def module_rules(state: LoadState) -> None:
    """The rules over the whole module, after the load and enable path: the modinfo
    value, each klp section (:func:`klp_section_rules`), the symbol table
    (:func:`symbol_rules`) and the oddities of the livepatch view."""
    mod = state.mod
    if (mod.sections or mod.symbols) and mod.is_livepatch and mod.livepatch != "Y":
        message = f"modinfo livepatch={mod.livepatch!r}: the kernel takes any value as 'Y'"
        state.add("warning", "modinfo-livepatch-value", message)
    for k in mod.sections:
        klp_section_rules(state, k)
    symbol_rules(state)
    for od in mod.oddities:
        state.add("warning", od.kind, f"{od.what}: {od.note}")


def klp_section_rules(state: LoadState, k: KlpRelaSection) -> None:
    """What is wrong with one klp section that the kernel takes silently."""
    elf, sec = state.elf, k.section
    tab = elf.symtab
    assert tab is not None
    if not k.has_livepatch_flag:
        state.add(
            "error",
            "klp-section-without-flag",
            f"section {sec.name} has no SHF_RELA_LIVEPATCH flag: the loader applies it as "
            "an ordinary relocation section",
            section=sec,
            when="runtime",
        )
        return
    if not sec.is_alloc:
        state.add(
            "warning",
            "klp-section-not-alloc",
            f"section {sec.name} is not SHF_ALLOC: it is freed after load and never applied "
            "later (module objects, or a reloaded target)",
            section=sec,
        )
    if k.target is None:
        state.add("warning", "klp-section-target",
                  f"section {sec.name}: sh_info {sec.sh_info} names no section; the loader "
                  "skips it", section=sec)  # fmt: skip
    else:
        _target_rules(state, k, k.target)
    if sec.sh_type != SHT.RELA or sec.sh_entsize != elf.layout.rela_size:
        state.add(
            "warning",
            "klp-section-type",
            f"section {sec.name} is not SHT_RELA with sh_entsize {elf.layout.rela_size}; "
            "the kernel reads it as Elf_Rela anyway",
            section=sec,
        )
    if sec.sh_link != tab.section.index:
        state.add(
            "warning",
            "klp-section-link",
            f"section {sec.name}: sh_link {sec.sh_link} is not the symbol table "
            f"({tab.section.index}); the kernel uses the symbol table anyway",
            section=sec,
        )
    if k.parsed is not None and k.parsed.truncated:
        state.add(
            "warning",
            "klp-objname-too-long",
            f"section {sec.name}: object name longer than 55 bytes; the kernel reads "
            f"'{k.parsed.objname}' and never applies it to '{k.parsed.full_objname}'",
            section=sec,
        )


def _target_rules(state: LoadState, k: KlpRelaSection, target: Section) -> None:
    sec = k.section
    if not target.is_alloc:
        state.add("warning", "klp-target-not-alloc",
                  f"section {sec.name}: target {target.name} is not SHF_ALLOC; the loader "
                  "silently skips the section", section=sec)  # fmt: skip
    if k.parsed is not None and not k.parsed.matches_target(target.name):
        state.add("warning", "klp-section-suffix",
                  f"section {sec.name} relocates {target.name} (sh_info {sec.sh_info}); its "
                  "name suggests another section", section=sec)  # fmt: skip
    if k.objname not in (None, "vmlinux") and target.name.startswith(UNSAFE_LATE_SECTIONS):
        state.add(
            "warning",
            "klp-unsafe-section",
            f"section {sec.name}: klp relocations for module {k.objname} in {target.name} "
            "are applied after the loader processed that section",
            section=sec,
        )


def symbol_rules(state: LoadState) -> None:
    """Locals after the first global, and each livepatch symbol: referenced by no
    relocation, defined twice, or with a name the kernel cannot parse."""
    elf, mod = state.elf, state.mod
    tab = elf.symtab
    assert tab is not None
    st_info = tab.column("st_info")
    first_global = tab.first_global
    late_locals = [i for i in range(first_global, len(st_info)) if st_info[i] >> 4 == STB.LOCAL]
    for i in late_locals[:10]:
        state.add("warning", "local-after-globals",
                  f"local symbol {tab.name(i)} at index {i} after the first global "
                  f"(sh_info {first_global})", symbol=(i, tab.name(i)))  # fmt: skip
    referenced: set[int] = set()
    for sec in elf.relocation_sections if mod.symbols else ():
        if sec.sh_flags & SHF.RELA_LIVEPATCH:
            # read as the kernel reads it: Elf_Rela, whatever sh_type/sh_entsize say
            referenced |= elf.relocations_as_rela(sec).symbols_used()
        elif sec.sh_link == tab.section.index and sec.sh_entsize:
            referenced |= elf.relocations(sec).symbols_used()
    seen: dict[str, int] = {}
    for s in mod.symbols:
        idx, name = s.symbol.index, s.symbol.name
        if s.symbol.st_shndx == SHN.LIVEPATCH and idx not in referenced:
            state.add("warning", "unreferenced-livepatch-symbol",
                      f"livepatch symbol {name} is never referenced by a relocation",
                      symbol=(idx, name))  # fmt: skip
        if name in seen:
            state.add("warning", "duplicate-livepatch-symbol",
                      f"livepatch symbol {name} also at index {seen[name]}",
                      symbol=(idx, name))  # fmt: skip
        seen.setdefault(name, idx)
        if s.parsed is None and s.symbol.st_shndx == SHN.LIVEPATCH:
            state.add(
                "error" if idx in referenced else "warning",
                "symbol-name-static",
                f"symbol {name} has an incorrectly formatted name"
                + (f" ({s.detail})" if s.detail else ""),
                symbol=(idx, name),
            )
