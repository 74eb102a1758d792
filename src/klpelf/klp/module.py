"""The livepatch view of a kernel module: its objects, livepatch symbols and klp sections.

Read-only, built over an :class:`~klpelf.elf.file.ElfFile`.  Names are parsed with
the kernel's own formats (:mod:`klpelf.klp.names`); what does not parse is kept and
labelled rather than dropped, so ``show`` can display it and ``check`` can judge it.
"""

from __future__ import annotations

from typing import NamedTuple

from klpelf._record import Record
from klpelf.elf.constants import SHF, SHN, SHT
from klpelf.elf.file import ElfFile, Section
from klpelf.elf.modinfo import module_name
from klpelf.elf.symbols import Symbol
from klpelf.klp.names import (
    KLP_ARCH_PREFIX,
    KLP_RELA_PREFIX,
    KLP_SYM_PREFIX,
    KSYM_NAME_LEN,
    KlpRelaSectionName,
    KlpSymbolName,
    parse_annotation_symbol,
    parse_draft_rel_section,
)


class LivepatchSymbol(NamedTuple):
    """A symbol with st_shndx == SHN_LIVEPATCH, or one named like a livepatch symbol."""

    symbol: Symbol
    #: the parsed name; None when the kernel's sscanf would reject it
    parsed: KlpSymbolName | None
    #: why the name does not parse (the kernel's message), when it does not
    error: str | None = None
    #: which part of the name the kernel's sscanf stopped at, in words
    detail: str | None = None

    @property
    def objname(self) -> str | None:
        return self.parsed.objname if self.parsed else None


class KlpRelaSection(NamedTuple):
    """A klp relocation section: flagged SHF_RELA_LIVEPATCH or named ``.klp.rela.*``."""

    section: Section
    parsed: KlpRelaSectionName | None
    error: str | None
    target: Section | None
    count: int  # type: ignore[assignment]  # a field: hides tuple.count()
    detail: str | None = None

    @property
    def objname(self) -> str | None:
        return self.parsed.objname if self.parsed else None

    @property
    def has_livepatch_flag(self) -> bool:
        return bool(self.section.sh_flags & SHF.RELA_LIVEPATCH)


class TargetObject(Record):
    """Everything of one patched object (``vmlinux`` or a module name)."""

    _fields = ("objname", "symbols", "sections")
    __slots__ = _fields

    def __init__(self, objname: str, symbols: list[LivepatchSymbol] | None = None,
                 sections: list[KlpRelaSection] | None = None) -> None:  # fmt: skip
        self.objname = objname
        self.symbols = symbols if symbols is not None else []
        self.sections = sections if sections is not None else []

    @property
    def is_vmlinux(self) -> bool:
        return self.objname == "vmlinux"


class Oddity(NamedTuple):
    """Something klp-like that is not valid klp content (draft names, annotations, .klp.arch)."""

    kind: str  # "draft-rel-section", "annotation-symbol", "klp-arch-section", ...
    what: str  # the section or symbol, as "[index] name"
    note: str


class KlpModule:
    """The livepatch view of one module; see :func:`klp_module`."""

    def __init__(self, elf: ElfFile, *, ksym_name_len: int = KSYM_NAME_LEN) -> None:
        self.elf = elf
        self.ksym_name_len = ksym_name_len
        mi = elf.modinfo
        #: the raw value of the ``livepatch`` modinfo key, None when it is absent
        self.livepatch: str | None = mi.get("livepatch") if mi else None
        self.vermagic: str | None = mi.get("vermagic") if mi else None
        self.name = module_name(elf)
        self.symbols: list[LivepatchSymbol] = []
        self.sections: list[KlpRelaSection] = []
        self.oddities: list[Oddity] = []
        self._scan_symbols()
        self._scan_sections()

    @property
    def is_livepatch(self) -> bool:
        """Any ``livepatch=`` modinfo entry marks the module, whatever its value.

        Mirrors check_modinfo_livepatch() in kernel/module/main.c.
        """
        return self.livepatch is not None

    @property
    def objects(self) -> dict[str, TargetObject]:
        """Livepatch symbols and klp sections per object, vmlinux first, then by name."""
        objs: dict[str, TargetObject] = {}
        for s in self.symbols:
            if s.objname is not None:
                objs.setdefault(s.objname, TargetObject(s.objname)).symbols.append(s)
        for sec in self.sections:
            if sec.objname is not None:
                objs.setdefault(sec.objname, TargetObject(sec.objname)).sections.append(sec)
        return dict(sorted(objs.items(), key=lambda kv: (kv[0] != "vmlinux", kv[0])))

    def _scan_symbols(self) -> None:
        tab = self.elf.symtab
        if tab is None:
            return
        lp = set(tab.indices_where_shndx(SHN.LIVEPATCH))
        indices = sorted(lp | set(tab.indices_with_prefix(KLP_SYM_PREFIX)))
        for i, sym in zip(indices, tab.symbols_at(indices), strict=True):
            name = sym.name
            ann = parse_annotation_symbol(name)  # classify_symbol_name()'s "annotation"
            if ann is not None:
                self.oddities.append(Oddity(
                    "annotation-symbol", f"[{i}] {name}",
                    f"klp-convert annotation for {ann.sym_objname}:{ann.name},{ann.sympos} "
                    "(not converted to a livepatch symbol)",
                ))  # fmt: skip
                if i not in lp:
                    continue
            scan = KlpSymbolName.scan(name, ksym_name_len=self.ksym_name_len)
            if scan.ok:
                self.symbols.append(LivepatchSymbol(sym, scan.symbol()))
            else:
                error = f"symbol {name} has an incorrectly formatted name"
                self.symbols.append(LivepatchSymbol(sym, None, error, scan.reason))

    def _scan_sections(self) -> None:
        elf = self.elf
        for sec in elf.sections:
            name = sec.name
            # Every SHF_RELA_LIVEPATCH section is parsed by the kernel, whatever its name;
            # a '.klp.rela.' name without the flag is a mistake worth showing too.
            if sec.sh_flags & SHF.RELA_LIVEPATCH or name.startswith(KLP_RELA_PREFIX):
                scan = KlpRelaSectionName.scan(name)
                parsed = scan.name if scan.ok else None
                error = None if scan.ok else f"section {name} has an incorrectly formatted name"
                target = sec.info_section
                count = sec.sh_size // sec.sh_entsize if sec.sh_entsize else 0
                if sec.sh_type == SHT.NOBITS:
                    count = 0
                self.sections.append(KlpRelaSection(sec, parsed, error, target, count, scan.reason))
            if name.startswith(KLP_ARCH_PREFIX):
                self.oddities.append(Oddity(
                    "klp-arch-section", str(sec),
                    ".klp.arch sections were removed in Linux 5.8 and are ignored since",
                ))  # fmt: skip
            elif parse_draft_rel_section(name) is not None:
                self.oddities.append(Oddity(
                    "draft-rel-section", str(sec),
                    "'.klp.rel.' is the 2016 draft spelling; the kernel only knows '.klp.rela.'",
                ))  # fmt: skip


def klp_module(elf: ElfFile, *, ksym_name_len: int = KSYM_NAME_LEN) -> KlpModule:
    """Build the livepatch view of ``elf``."""
    return KlpModule(elf, ksym_name_len=ksym_name_len)
