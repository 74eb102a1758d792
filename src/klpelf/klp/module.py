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
    canonical_names,
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
        self.sections: list[KlpRelaSection] = []
        # the symbols are read when first asked for: apply needs only the livepatch
        # symbols' names (livepatch_names()), which one pass over the string table reads
        self._symbols: list[LivepatchSymbol] | None = None
        self._symbol_oddities: list[Oddity] = []
        self._section_oddities: list[Oddity] = []
        self._scan_sections()

    @property
    def symbols(self) -> list[LivepatchSymbol]:
        """Every SHN_LIVEPATCH symbol and every symbol named like one, in index order."""
        if self._symbols is None:
            self._symbols = self._scan_symbols()
        return self._symbols

    @property
    def oddities(self) -> list[Oddity]:
        """What is klp-like but not valid klp content: symbols first, then sections."""
        self.symbols  # noqa: B018 (read on first use)
        return self._symbol_oddities + self._section_oddities

    def livepatch_names(self) -> list[tuple[int, KlpSymbolName]]:
        """(symbol index, parsed name) of every SHN_LIVEPATCH symbol whose name the
        kernel's sscanf accepts, in index order: what klp_resolve_symbols() resolves;
        the same as ``[(s.symbol.index, s.parsed) for s in self.symbols if ...]``
        without a :class:`LivepatchSymbol` each (the names read at once:
        :func:`~klpelf.klp.names.canonical_names`)."""
        if self._symbols is not None:
            return [(s.symbol.index, s.parsed) for s in self._symbols
                    if s.parsed is not None and s.symbol.st_shndx == SHN.LIVEPATCH]  # fmt: skip
        tab = self.elf.symtab
        if tab is None:
            return []
        indices = tab.indices_where_shndx(SHN.LIVEPATCH)
        if not indices:
            return []
        offsets = tab.column_at("st_name", indices)
        fast = canonical_names(bytes(tab.strtab.data), self.ksym_name_len)
        out = []
        for i, offset in zip(indices, offsets, strict=True):
            hit = fast.get(offset)
            if hit is not None:
                out.append((i, KlpSymbolName.read(*hit)))
                continue
            scan = KlpSymbolName.scan(tab.name(i), ksym_name_len=self.ksym_name_len)
            if scan.ok:
                out.append((i, scan.symbol()))
        return out

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

    def _scan_symbols(self) -> list[LivepatchSymbol]:
        tab = self.elf.symtab
        symbols: list[LivepatchSymbol] = []
        oddities: list[Oddity] = []
        self._symbol_oddities = oddities
        if tab is None:
            return symbols
        lp = set(tab.indices_where_shndx(SHN.LIVEPATCH))
        indices = sorted(lp | set(tab.indices_with_prefix(KLP_SYM_PREFIX)))
        for i, sym in zip(indices, tab.symbols_at(indices), strict=True):
            name = sym.name
            ann = parse_annotation_symbol(name)  # classify_symbol_name()'s "annotation"
            if ann is not None:
                oddities.append(Oddity(
                    "annotation-symbol", f"[{i}] {name}",
                    f"klp-convert annotation for {ann.sym_objname}:{ann.name},{ann.sympos} "
                    "(not converted to a livepatch symbol)",
                ))  # fmt: skip
                if i not in lp:
                    continue
            scan = KlpSymbolName.scan(name, ksym_name_len=self.ksym_name_len)
            if scan.ok:
                symbols.append(LivepatchSymbol(sym, scan.symbol()))
            else:
                error = f"symbol {name} has an incorrectly formatted name"
                symbols.append(LivepatchSymbol(sym, None, error, scan.reason))
        return symbols

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
                self._section_oddities.append(Oddity(
                    "klp-arch-section", str(sec),
                    ".klp.arch sections were removed in Linux 5.8 and are ignored since",
                ))  # fmt: skip
            elif parse_draft_rel_section(name) is not None:
                self._section_oddities.append(Oddity(
                    "draft-rel-section", str(sec),
                    "'.klp.rel.' is the 2016 draft spelling; the kernel only knows '.klp.rela.'",
                ))  # fmt: skip


def klp_module(elf: ElfFile, *, ksym_name_len: int = KSYM_NAME_LEN) -> KlpModule:
    """Build the livepatch view of ``elf``."""
    return KlpModule(elf, ksym_name_len=ksym_name_len)
