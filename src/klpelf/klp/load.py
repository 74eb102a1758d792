"""The twins of the module loader's steps that a livepatch module meets (kernel/module/main.c).

``load_module()`` checks the ELF file (:func:`elf_validity`), resolves the undefined
symbols (:func:`simplify_symbols`) and applies the relocation sections in index order
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
from klpelf.arch import NOT_MODELLED_RULE, Arch, ModuleLayout, arch_for, not_modelled_message
from klpelf.elf.constants import ET, SHF, SHN, SHT, STB
from klpelf.elf.file import ElfFile, Section
from klpelf.klp.diagnostics import Diagnostic, Resolver, Severity, When
from klpelf.klp.module import KlpModule, KlpRelaSection
from klpelf.klp.names import KLP_SYM_PREFIX
from klpelf.release import ENOENT, ENOEXEC, KernelRelease

if TYPE_CHECKING:
    from klpelf.klp.enable import LoadedPatch
    from klpelf.klp.patch import KlpPatch
    from klpelf.symbols.sources import KernelSymbols


class LoadState(Record):
    """What one prediction of the load and enable path carries from step to step."""

    _fields = ("elf", "mod", "release", "resolver", "loaded", "diagnostics", "written")
    __slots__ = (*_fields, "_arch", "_klp_by_index", "_last_reader", "_livepatch_symbols",
                 "_not_modelled", "keep_written", "module_layout", "symbol_value",
                 "kernel", "loaded_patches", "decoded")  # fmt: skip

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
    if not elf_validity(state) or not module_frob_arch_sections(state):
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
              dmesg_prefix=arch.dmesg_prefix)  # fmt: skip
    return False


def elf_validity(state: LoadState) -> bool:
    """``elf_validity_ehdr()`` and ``elf_validity_cache_index_sym()`` of
    ``elf_validity_cache_copy()`` (kernel/module/main.c; ``elf_validity_check()`` and
    ``setup_load_info()`` before v6.4): ET_REL, section 0, one SHT_SYMTAB."""
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
    return True


def simplify_symbols(state: LoadState) -> None:
    """``simplify_symbols()`` (kernel/module/main.c): SHN_LIVEPATCH symbols are left
    alone; an undefined symbol must be resolved against the kernel's exports, so a
    livepatch symbol that was never given SHN_LIVEPATCH is "Unknown" and fails the
    load.  (Whether other undefined symbols are exported is not checked.)"""
    tab = state.elf.symtab
    assert tab is not None
    names = tab.names()
    st_info = tab.column("st_info")
    for i in tab.indices_where_shndx(SHN.UNDEF):
        name = names[i]
        if i == 0 or not name.startswith(KLP_SYM_PREFIX) or st_info[i] >> 4 == STB.WEAK:
            continue
        state.add("error", "unknown-symbol", f"{state.mod.name}: Unknown symbol {name} (err -2)",
                  symbol=(i, name), when="load", kernel=True, errno=ENOENT)  # fmt: skip


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
    rule, message = arch.refusal(state.release, state.mod.name, sec.index, facts)
    errno = ENOEXEC if arch.refusal_errno is None else arch.refusal_errno(facts)
    state.add("error", rule, message, section=sec, relocation=facts.stop, when=when,
              kernel=True, errno=errno, dmesg_prefix=arch.dmesg_prefix)  # fmt: skip
    return False
