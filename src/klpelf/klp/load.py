"""The twins of the module loader's steps that a livepatch module meets (kernel/module/main.c).

``load_module()`` checks the ELF file (:func:`elf_validity`), the version of struct
module and the vermagic (:func:`check_modstruct_version`, :func:`check_modinfo`),
resolves the undefined symbols against the kernel's exports (:func:`simplify_symbols`,
with :mod:`klpelf.klp.version` for modversions) and applies the relocation sections in index order
(:func:`apply_relocations`): SHF_RELA_LIVEPATCH ones through livepatch
(:func:`klpelf.klp.core.klp_apply_section_relocs`), the others through the
architecture's ``apply_relocate_add()`` (:func:`apply_relocate_add`, which dispatches
to :mod:`klpelf.arch`).  Each step reports what the kernel reports, with the kernel's
text, into the :class:`LoadState` it is given, and returns False where the kernel
stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from klpelf._record import Record
from klpelf.arch import (
    NOT_MODELLED_RULE,
    Arch,
    ModuleLayout,
    arch_for,
    message_lines,
    not_modelled_message,
)
from klpelf.elf.constants import EM, ET, SHF, SHN, SHT, STB
from klpelf.elf.file import ElfFile, Section
from klpelf.elf.modinfo import module_depends
from klpelf.klp.diagnostics import Diagnostic, Resolver, Severity, When
from klpelf.klp.module import KlpModule, KlpRelaSection
from klpelf.klp.names import KLP_SYM_PREFIX
from klpelf.klp.version import check_version, module_versions, same_magic
from klpelf.release import EINVAL, ENOENT, ENOEXEC, KernelRelease

if TYPE_CHECKING:
    from klpelf.klp.enable import LoadedPatch
    from klpelf.klp.patch import KlpPatch
    from klpelf.symbols.exports import KernelExport
    from klpelf.symbols.sources import KernelSymbols


class LoadState(Record):
    """What one prediction of the load and enable path carries from step to step."""

    _fields = ("elf", "mod", "release", "resolver", "loaded", "diagnostics", "written")
    __slots__ = (*_fields, "_arch", "_klp_by_index", "_last_reader", "_livepatch_symbols",
                 "_not_modelled", "keep_written", "module_layout", "symbol_value",
                 "kernel", "loaded_patches", "decoded",
                 "target_vermagic", "target_release", "modversions", "find_export",
                 "warned_no_versions")  # fmt: skip

    def __init__(self, elf: ElfFile, mod: KlpModule, release: KernelRelease,
                 diagnostics: list[Diagnostic] | None = None, *,
                 resolver: Resolver | None = None,
                 loaded: Callable[[str], bool] | None = None,
                 keep_written: bool = False) -> None:  # fmt: skip
        self.elf, self.mod, self.release = elf, mod, release
        #: resolves livepatch symbols in the target kernel; None: not checked
        self.resolver = resolver
        #: whether a module object is loaded in the target kernel; None: loaded later
        self.loaded = loaded
        self.diagnostics: list[Diagnostic] = diagnostics if diagnostics is not None else []
        #: target section index -> its bytes as the relocations applied at load left
        #: them: a nonzero byte is nonzero in the file or written by a relocation (what
        #: the arch's nonzero rule needs; later steps start from these bytes)
        self.written: dict[int, bytearray] = {}
        #: keep every target's bytes in ``written``, not only those a later step reads
        self.keep_written = keep_written
        self._last_reader: dict[int, int] | None = None
        self._arch = arch_for(elf.machine)
        self._klp_by_index = {k.section.index: k for k in mod.sections}
        self._not_modelled = False
        self._livepatch_symbols: set[int] | None = None
        #: the symbol values as the kernel resolved them (symbol index -> st_value, None
        #: unknown) and the placed sections (:func:`klpelf.klp.layout.place`): with
        #: both, the arch twins compute every value and judge its range (an overflow
        #: only an apply can show); None: the twins only judge the bytes
        self.symbol_value: Callable[[int], int | None] | None = None
        self.module_layout: ModuleLayout | None = None
        #: the enable path (:mod:`klpelf.klp.enable`): the target's symbols (ftrace
        #: locations, lookups of the replaced functions), the livepatches already
        #: loaded there, the decoded patch (a 1-tuple once decoded)
        self.kernel: KernelSymbols | None = None
        self.loaded_patches: list[LoadedPatch] = []
        self.decoded: tuple[KlpPatch | None] | None = None
        #: the target kernel's vermagic and release (``uname -r``), None: unknown
        self.target_vermagic: str | None = None
        self.target_release: str | None = None
        #: the target kernel has CONFIG_MODVERSIONS; None: unknown (not judged)
        self.modversions: bool | None = None
        #: the kernel's find_symbol() over its export tables; None: the exports are
        #: not known, ordinary undefined symbols are not judged
        self.find_export: Callable[[str], KernelExport | None] | None = None
        self.warned_no_versions = False

    @property
    def arch(self) -> Arch | None:
        """The machine's relocation code, None when klpelf does not model it."""
        return self._arch

    def klp_section(self, sec: Section) -> KlpRelaSection:
        """The klp view of an SHF_RELA_LIVEPATCH section."""
        return self._klp_by_index[sec.index]

    @property
    def livepatch_symbols(self) -> set[int]:
        """Indices of the SHN_LIVEPATCH symbols."""
        if self._livepatch_symbols is None:
            tab = self.elf.symtab
            assert tab is not None
            self._livepatch_symbols = set(tab.indices_where_shndx(SHN.LIVEPATCH))
        return self._livepatch_symbols

    def read_later(self, sec: Section) -> bool:
        """Whether a step after relocation section ``sec`` at load reads the bytes of
        its target: a later relocation section with the same target, or any
        SHF_RELA_LIVEPATCH one (applied at enable or when its object loads)."""
        if self._last_reader is None:
            last: dict[int, int] = {}
            for s in self.elf.sections[1:]:
                if s.sh_flags & SHF.RELA_LIVEPATCH:
                    last[s.sh_info] = len(self.elf.sections)  # read after every load step
                elif s.sh_type == SHT.RELA:
                    last[s.sh_info] = max(last.get(s.sh_info, 0), s.index)
            self._last_reader = last
        return self.keep_written or self._last_reader.get(sec.sh_info, 0) > sec.index

    def add(self, severity: Severity, rule: str, message: str, **kw: object) -> None:
        """Report a diagnostic (keyword arguments: the other :class:`Diagnostic` fields)."""
        self.diagnostics.append(Diagnostic(severity, rule, message, **kw))  # type: ignore[arg-type]

    def refused_at_load(self) -> bool:
        """Whether the kernel refused the module while loading it."""
        return any(d.kernel and d.when == "load" for d in self.diagnostics)


def load_module(state: LoadState) -> bool:
    """The steps of ``load_module()`` (kernel/module/main.c) that klpelf models, in
    the kernel's order; False where the kernel refuses the module."""
    if not (elf_validity(state) and check_modstruct_version(state) and check_modinfo(state)
            and module_frob_arch_sections(state)):  # fmt: skip
        return False
    simplify_symbols(state)
    return apply_relocations(state)


def module_frob_arch_sections(state: LoadState) -> bool:
    """The machine's ``module_frob_arch_sections()`` (from ``layout_and_allocate()``):
    False where it refuses the module (loongarch64: its GOT or PLT section missing)."""
    arch = state.arch
    if arch is None or arch.frob_refusal is None:
        return True
    refused = arch.frob_refusal(state.release, state.elf, state.mod.name)
    if refused is None:
        return True
    rule, message = refused
    state.add("error", rule, message, when="load", kernel=True, errno=ENOEXEC,
              dmesg_prefix=arch.frob_dmesg_prefix(state.release))  # fmt: skip
    return False


def elf_validity(state: LoadState, *, module: bool = True) -> bool:
    """``elf_validity_ehdr()`` and ``elf_validity_cache_index_sym()`` of
    ``elf_validity_cache_copy()`` (kernel/module/main.c; ``elf_validity_check()`` and
    ``setup_load_info()`` before v6.4): ET_REL, section 0, one SHT_SYMTAB and, unless
    ``module`` is False (convert takes plain objects), one .gnu.linkonce.this_module
    (``elf_validity_cache_index_mod()``), in the release's order."""
    elf, name, v = state.elf, state.mod.name, state.release
    if elf.header.e_type != ET.REL:
        message = f"Invalid ELF header type: {elf.header.e_type} != 1"
        logged = v.prints_elf_header_errors
        if not logged:
            message = (
                f"ELF header type {elf.header.e_type} is not ET_REL (1): the loader "
                "refuses the module without a message"
            )
        state.add("error", "elf-type", message, when="load", kernel=True, errno=ENOEXEC,
                  logged=logged)  # fmt: skip
        return False
    s0 = elf.sections[0] if elf.sections else None
    if s0 is None or s0.sh_type != SHT.NULL or (s0.sh_size != 0 and not elf.extended_numbering):
        t = s0.sh_type if s0 else 0
        state.add(
            "error",
            "elf-section0",
            f"ELF Spec violation: section 0 type({t})!=SH_NULL or non-zero len or addr",
            when="load",
            kernel=True,
            errno=ENOEXEC,
        )
        return False
    # v6.4+: .gnu.linkonce.this_module is looked for before the symbol table, before
    # 6.4 after it (the release's rule)
    if module and v.validates_this_module and not _this_module(state):
        return False
    symtabs = len(elf.sections_of_type(SHT.SYMTAB))
    if symtabs > 1 and not v.requires_one_symtab:
        state.add(
            "warning",
            "elf-symtab",
            f"{symtabs} symbol tables (SHT_SYMTAB): this release uses the first; "
            f"Linux 6.4+ refuses the module: {name}: module has no symbols (stripped?)",
        )
    elif symtabs != 1:
        state.add("error", "elf-symtab", f"{name}: module has no symbols (stripped?)",
                  when="load", kernel=True, errno=ENOEXEC)  # fmt: skip
        return False
    return not module or v.validates_this_module or _this_module(state)


def _this_module(state: LoadState) -> bool:
    # setup_load_info() (before 6.4) / elf_validity_cache_index_mod(): the section that
    # holds struct module; what modpost's <module>.mod.c adds to a plain object
    elf = state.elf
    if sum(s.name == ".gnu.linkonce.this_module" for s in elf.sections) == 1 or (
        not state.release.validates_this_module
        and elf.section_by_name(".gnu.linkonce.this_module") is not None
    ):
        return True
    mi = elf.modinfo
    name = mi.get("name") if mi is not None else None
    state.add("error", "no-module", state.release.no_module_message(name), when="load",
              kernel=True, errno=ENOEXEC)  # fmt: skip
    return False


def check_modstruct_version(state: LoadState) -> bool:
    """``check_modstruct_version()`` (kernel/module/version.c; kernel/module.c before
    v5.19): on a CONFIG_MODVERSIONS kernel the module's ``__versions`` must have the
    CRC of ``module_layout``, the symbol that stands for the layout of struct module."""
    if not state.modversions:
        return True
    crc = None
    if state.find_export is not None:
        export = state.find_export("module_layout")
        crc = export.crc if export is not None else None
    return check_version(state, "module_layout", crc, errno=ENOEXEC)


def check_modinfo(state: LoadState) -> bool:
    """The vermagic step of ``check_modinfo()`` (kernel/module/main.c): the module's
    ``vermagic=`` against the kernel's VERMAGIC_STRING by ``same_magic()``, "version
    magic '%s' should be '%s'".  The kernel's string is the target's
    (:attr:`LoadState.target_vermagic`); with only its release known, the module's
    other words are taken for the kernel's (said in a note)."""
    magic, name = state.mod.vermagic, state.mod.name
    if magic is None:
        # try_to_force_load(mod, "bad vermagic")
        state.add("warning", "no-vermagic",
                  f"no vermagic: the kernel loads the module only with "
                  f"CONFIG_MODULE_FORCE_LOAD, tainting it ({name}: bad vermagic: kernel "
                  "tainted.); without, it refuses the module (errno 8) without a "
                  "message")  # fmt: skip
        return True
    kernel = state.target_vermagic
    assumed = False
    if kernel is None and state.target_release is not None:
        kernel = state.target_release + magic[len(magic.split(" ", 1)[0]) :]
        assumed = True
    if kernel is None:
        return True
    has_crcs = bool(state.modversions) and module_versions(state.elf) is not None
    if same_magic(magic, kernel, has_crcs):
        return True
    state.add("error", "vermagic", f"{name}: version magic '{magic}' should be '{kernel}'",
              when="load", kernel=True, errno=ENOEXEC)  # fmt: skip
    if assumed:
        state.add("note", "vermagic",
                  f"the kernel's vermagic is taken to be its release {state.target_release} "
                  "followed by the module's other words (no source gave the kernel's "
                  "vermagic: a module of its tree would)")  # fmt: skip
    return False


def simplify_symbols(state: LoadState) -> None:
    """``simplify_symbols()`` (kernel/module/main.c): SHN_LIVEPATCH symbols are left
    alone; every other undefined symbol must be found by ``resolve_symbol()`` in the
    kernel's export tables (:attr:`LoadState.find_export`), with its modversions CRC
    (:func:`klpelf.klp.version.check_version`), else "Unknown symbol %s (err %d)":
    -2 when no export has it, -22 when its version does not match.  A weak symbol no
    export has is fine, as is x86's ``_GLOBAL_OFFSET_TABLE_``.  The kernel reports
    every such symbol before failing the load.  A livepatch symbol that was never
    given SHN_LIVEPATCH is "Unknown" whatever the sources: no kernel exports a
    ``.klp.sym.`` name.  Without known exports, other symbols are not judged."""
    tab = state.elf.symtab
    assert tab is not None
    names = tab.names()
    st_info = tab.column("st_info")
    depends = module_depends(state.elf)
    mi = state.elf.modinfo
    found = mi.get("license") if mi is not None else None
    license = "unspecified" if found is None else found  # set_license(mod, NULL)
    gplok = license_is_gpl_compatible(license)
    for i in tab.indices_where_shndx(SHN.UNDEF):
        name = names[i]
        if i == 0:
            continue
        weak = st_info[i] >> 4 == STB.WEAK
        if name.startswith(KLP_SYM_PREFIX):
            if not weak:
                _unknown(state, i, name, ENOENT)
            continue
        if state.find_export is None:
            continue
        export = state.find_export(name)
        if export is not None and export.gpl_only and not gplok:
            # find_symbol() with gplok false skips EXPORT_SYMBOL_GPL exports
            state.add("note", "gpl-only-export",
                      f"{name} is EXPORT_SYMBOL_GPL and the module's license '{license}' "
                      f"is not GPL-compatible ({state.mod.name}: module license "
                      f"'{license}' taints kernel.): the loader does not see it",
                      symbol=(i, name))  # fmt: skip
            export = None
        if export is not None and export.loaded is False:
            if export.owner not in depends:
                export = None  # its module is not loaded: find_symbol() does not see it
            else:
                state.add("note", "export-not-loaded",
                          f"{name} is exported by module {export.owner}, which is not "
                          f"loaded: modprobe loads it first (depends={','.join(depends)}); "
                          f"insmod would fail: {state.mod.name}: Unknown symbol {name} "
                          "(err -2)", symbol=(i, name))  # fmt: skip
        if export is None:
            if not (weak or _ignore_undef_symbol(state.elf.machine, name)):
                _unknown(state, i, name, ENOENT)
            continue
        if export.loaded is None and export.owner != "vmlinux" and export.owner not in depends:
            state.add("warning", "export-not-a-dependency",
                      f"{name} is exported by module {export.owner}, which depends= does not "
                      f"name: the load fails ({state.mod.name}: Unknown symbol {name} (err "
                      f"-2)) unless {export.owner} is loaded first", symbol=(i, name))  # fmt: skip
        # resolve_symbol(): check_version(), then verify_namespace_is_imported(); either
        # failing is ERR_PTR(-EINVAL)
        versioned = not state.modversions or check_version(
            state, name, export.crc, errno=EINVAL, symbol=(i, name)
        )
        if not (versioned and verify_namespace_is_imported(state, i, name, export.namespace)):
            _unknown(state, i, name, EINVAL)


def verify_namespace_is_imported(state: LoadState, i: int, name: str,
                                 namespace: str | None) -> bool:  # fmt: skip
    """Mirrors ``verify_namespace_is_imported()`` (the same in 5.10, 6.1 and 6.12): an
    export in a namespace (EXPORT_SYMBOL_NS, Module.symvers' last field) needs a
    modinfo ``import_ns=`` of it; 7.2 also lets a ``module:`` namespace (a comma
    list of module names, ``*`` at the end a glob; '-' and '_' alike) name the module.
    CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS (not in Debian's) would only warn."""
    if not namespace:
        return True
    mod = state.mod.name
    if namespace.startswith("module:"):
        for pattern in namespace.removeprefix("module:").split(","):
            glob = pattern.endswith("*")
            stem = pattern.removesuffix("*").replace("-", "_")
            here = mod.replace("-", "_")
            if here.startswith(stem) if glob else here == stem:
                return True
    mi = state.elf.modinfo
    if mi is not None and namespace in mi.get_all("import_ns"):
        return True
    state.add("error", "namespace-not-imported",
              f"{mod}: module uses symbol ({name}) from namespace {namespace}, but does "
              "not import it.", symbol=(i, name), when="load", kernel=True,
              errno=EINVAL)  # fmt: skip
    return False


def license_is_gpl_compatible(license: str) -> bool:
    """Mirrors include/linux/license.h (the same list in 5.10 and 7.2): a module
    whose license is not one of these is tainted proprietary by set_license() (
    module_license_taint_check() since 6.4), and find_symbol() then hides
    EXPORT_SYMBOL_GPL symbols from it."""
    return license in ("GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL",
                       "Dual MIT/GPL", "Dual MPL/GPL")  # fmt: skip


def _unknown(state: LoadState, i: int, name: str, errno: int) -> None:
    state.add("error", "unknown-symbol",
              f"{state.mod.name}: Unknown symbol {name} (err -{errno})", symbol=(i, name),
              when="load", kernel=True, errno=errno)  # fmt: skip


def _ignore_undef_symbol(machine: int, name: str) -> bool:
    # ignore_undef_symbol(): GNU as before 2.37 leaves an unreferenced
    # _GLOBAL_OFFSET_TABLE_ in x86 objects (5.10, 6.1, 6.12 and 7.2 alike)
    return machine in (EM.X86_64, EM.I386) and name == "_GLOBAL_OFFSET_TABLE_"


def apply_relocations(state: LoadState) -> bool:
    """``apply_relocations()`` (kernel/module/main.c): every relocation section whose
    target (sh_info) is in range and SHF_ALLOC, in index order; SHF_RELA_LIVEPATCH ones
    go to ``klp_apply_section_relocs()``, SHT_RELA ones to ``apply_relocate_add()``.
    False at the first section the kernel refuses."""
    from klpelf.klp.core import klp_apply_section_relocs
    from klpelf.klp.lint import livepatch_symbols_in_ordinary_relocations

    for sec in state.elf.sections[1:]:
        target = sec.info_section
        if target is None or not target.is_alloc:
            continue
        if sec.sh_flags & SHF.RELA_LIVEPATCH:
            if not klp_apply_section_relocs(state, state.klp_section(sec)):
                return False
        elif sec.sh_type == SHT.RELA and sec.sh_entsize:
            # what the kernel applies without a word but klpelf reports
            livepatch_symbols_in_ordinary_relocations(state, sec)
            if not apply_relocate_add(state, sec, "load"):
                return False
        elif sec.sh_type == SHT.REL and state.arch is None:
            _not_modelled(state)  # apply_relocate(): not modelled either
    return True


def _not_modelled(state: LoadState) -> None:
    """The one note of a machine whose relocation code klpelf does not model."""
    if not state._not_modelled:
        state._not_modelled = True
        state.add("note", NOT_MODELLED_RULE, not_modelled_message(state.elf.machine_name))


def apply_relocate_add(state: LoadState, sec: Section, when: When) -> bool:
    """The architecture's ``apply_relocate_add()`` (arch/<arch>/kernel/module.c) for
    relocation section ``sec``, through :mod:`klpelf.arch`; False where it fails.

    The place bytes start as earlier relocations at load left them
    (:attr:`LoadState.written`); what this section writes is kept only at load
    (``when`` "load"), as the relocations of later steps are judged each against the
    module as loaded, and only when a later step reads it
    (:meth:`LoadState.read_later`).  A machine klpelf does not model gets one note,
    once.
    """
    arch = state.arch
    if arch is None:
        _not_modelled(state)
        return True
    target = sec.info_section
    if target is None:  # a klp section applied at enable whatever its sh_info: no bytes
        place = bytearray()
    elif (written := state.written.get(target.index)) is not None:
        place = bytearray(written)
    else:
        place = bytearray(target.data) if target.sh_type != SHT.NOBITS else bytearray()
    # the kernel reads every section it applies as Elf_Rela: sh_size / sizeof(Elf_Rela)
    relocs = state.elf.relocations_as_rela(sec)
    keep = target is not None and when == "load" and state.read_later(sec)
    layout = state.module_layout
    address = layout.addresses.get(target.index) if layout and target is not None else None
    facts = arch.write_relocate_add(relocs, place, state.release, keep=keep, layout=layout,
                                    symbol_value=state.symbol_value, address=address)  # fmt: skip
    if facts.stop is None:
        if keep and target is not None:
            state.written[target.index] = place
        return True
    rule, said = arch.refusal(state.release, state.mod.name, sec.index, facts)
    message, *more = message_lines(said)
    errno = ENOEXEC if arch.refusal_errno is None else arch.refusal_errno(facts)
    logged = arch.refusal_is_logged(facts)
    prefix = arch.refusal_dmesg_prefix(state.release, facts) if logged else ""
    state.add("error", rule, message, section=sec, relocation=facts.stop, when=when,
              kernel=True, errno=errno, dmesg_prefix=prefix, logged=logged,
              more=tuple(more))  # fmt: skip
    return False
