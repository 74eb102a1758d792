"""Kernel symbols read from ELF: a vmlinux's ``.symtab`` and a module's ``.ko``.

vmlinux: the entries kallsyms would hold are the ``nm -n`` symbols that survive
``scripts/mksysmap`` (System.map) and then ``scripts/kallsyms``; the filters of both
are applied by name and nm type.  STT_FILE symbols are kept aside: each local symbol
gets the source file of the STT_FILE symbol before it, as a hint for picking a sympos.

Modules: what ``module_kallsyms_on_each_symbol()`` (kernel/module/kallsyms.c) walks
is the module's symbol table in ELF order, skipping SHN_UNDEF, and *which* table
depends on the module's state.  While the module is COMING (a livepatch for it is
applied as it loads) ``mod->kallsyms`` is the full table; after its init it is
``core_kallsyms``: symbol 0 and the symbols for which ``is_core_symbol()`` holds.
:meth:`ModuleFile.matches` gives both ranks.
"""

from __future__ import annotations

import re
from functools import cache

from klpelf.elf.constants import SHF, SHN, SHT, STB, STT
from klpelf.elf.file import ElfFile, Section
from klpelf.elf.symbols import SymbolTable
from klpelf.errors import SymbolSourceError
from klpelf.symbols.candidate import Candidate
from klpelf.symbols.symtext import is_ignored_symbol


@cache
def _banner_re() -> re.Pattern[bytes]:
    # compiled on first use: only a vmlinux source needs it
    return re.compile(rb"Linux version ([^\s%]+) \(")


#: section flags the module loader clears before laying the module out
#: (rewrite_section_headers(), layout_and_allocate() in kernel/module/main.c)
_UNALLOCATED = frozenset({".modinfo", "__versions", "__version_ext_crcs", "__version_ext_names"})
_PERCPU = ".data..percpu"

#: scripts/mksysmap: names System.map (and so kallsyms) leaves out, by prefix and exactly
_SYSMAP_PREFIXES = (
    "$", ".L", "__crc_", "__kstrtab_", "__kstrtabns_", "__efistub_", "__pi_$", "__pi_.L",
    "__kvm_nvhe_$", "__kvm_nvhe_.L", "__kvm_nvhe___kcfi_typeid_", "__pi___kcfi_typeid_",
)  # fmt: skip
_SYSMAP_NAMES = frozenset({"L0"})


def nm_type(bind: int, type_: int, shndx: int, section: Section | None) -> str:
    """The ``nm`` letter of an ELF symbol (binutils' rules, as System.map shows them)."""
    if shndx == SHN.UNDEF:
        return ("v" if type_ == STT.OBJECT else "w") if bind == STB.WEAK else "U"
    if bind == STB.WEAK:
        return "V" if type_ == STT.OBJECT else "W"
    if shndx == SHN.ABS:
        letter = "a"
    elif shndx == SHN.COMMON:
        letter = "c"
    elif section is None:
        letter = "?"
    elif section.sh_flags & SHF.EXECINSTR:
        letter = "t"
    elif section.sh_type == SHT.NOBITS:
        letter = "b"
    elif section.sh_flags & SHF.ALLOC:
        letter = "d" if section.sh_flags & SHF.WRITE else "r"
    elif section.name.startswith(".debug"):
        return "N"
    else:
        letter = "n"
    return letter.upper() if bind != STB.LOCAL else letter


def _symtab(elf: ElfFile, what: str) -> SymbolTable:
    tab = elf.symtab
    if tab is None:
        raise SymbolSourceError(f"{what} has no symbol table (.symtab): stripped?", path=elf.path)
    return tab


def _file_hints(tab: SymbolTable) -> list[int]:
    # For every symbol, the index of the STT_FILE symbol before it, or -1.  Linkers
    # keep each file's locals after its STT_FILE; globals follow all the locals.
    out, last = [], -1
    for i, t in enumerate(tab.types()[: tab.first_global]):
        if t == STT.FILE:
            last = i
        out.append(last)
    return out + [-1] * (len(tab) - len(out))


class VmlinuxElf:
    """The symbols of a vmlinux ELF file, as kallsyms would list them."""

    def __init__(self, elf: ElfFile) -> None:
        # a vmlinux has 100,000+ symbols: indexed with numpy, unlike a module
        import numpy as np

        from klpelf.symbols._index import NameIndex

        self.elf = elf
        self.path = elf.path or "vmlinux"
        tab = self.tab = _symtab(elf, "vmlinux")
        arr = tab.array
        strtab = bytes(tab.strtab.data)
        types = tab.type_array
        keep = (
            (arr["st_shndx"] != SHN.UNDEF)
            & (types != STT.FILE)
            & (types != STT.SECTION)
            & (arr["st_name"] != 0)
        )
        self.rows = np.flatnonzero(keep).astype(np.int64)
        start = arr["st_name"][self.rows].astype(np.int64)
        nuls = np.flatnonzero(np.frombuffer(strtab, np.uint8) == 0)
        end = nuls[np.searchsorted(nuls, start)].astype(np.int64)
        self.index = NameIndex(strtab, start, end)
        self._files = _file_hints(tab)
        self.release = _banner_release(elf)

    def __len__(self) -> int:
        return len(self.rows)

    def matches(self, name: str) -> list[Candidate]:
        """The kallsyms entries named ``name``, in the order the kernel walks them."""
        if is_ignored_symbol(name, "T") or name in _SYSMAP_NAMES:
            return []
        if name.startswith(_SYSMAP_PREFIXES):
            return []
        elf, tab = self.elf, self.tab
        found = []
        for row in self.index.rows(name.encode("utf-8", "surrogateescape")):
            sym = tab[int(self.rows[row])]
            sec = elf.sections[sym.shndx] if 0 < sym.shndx < len(elf.sections) else None
            letter = nm_type(sym.bind, sym.type, sym.st_shndx, sec)
            if letter in "aNUw" or is_ignored_symbol(name, letter):
                continue
            fidx = self._files[sym.index]
            found.append((sym.st_value, letter in "wWvV", sym.index, letter, sec, fidx))
        # scripts/kallsyms.c compare_symbols(): address, then non-weak before weak, then
        # input order; the other tie rules compare names, equal here.
        found.sort(key=lambda f: (f[0], f[1], f[2]))
        return [
            Candidate(pos, value, letter, sec.name if sec else None,
                      tab.name(fidx) if fidx >= 0 else None, None, pos)
            for pos, (value, _, _, letter, sec, fidx) in enumerate(found, 1)
        ]  # fmt: skip


def _banner_release(elf: ElfFile) -> str | None:
    # init/version.c: linux_banner = "Linux version " UTS_RELEASE " (" ...
    for sec in elf.sections:
        if sec.sh_type != SHT.PROGBITS or not sec.sh_flags & SHF.ALLOC:
            continue
        if sec.sh_flags & (SHF.EXECINSTR | SHF.WRITE):
            continue
        m = _banner_re().search(bytes(sec.data))
        if m:
            return m.group(1).decode("utf-8", "replace")
    return None


class ModuleFile:
    """A module's ``.ko`` (or compressed ``.ko.xz``/``.zst``/``.gz``), not loaded."""

    def __init__(self, elf: ElfFile, *, kallsyms_all: bool = True) -> None:
        from klpelf.elf.modinfo import module_name

        self.elf = elf
        self.path = elf.path or "module"
        self.name = module_name(elf)
        mi = elf.modinfo
        self.vermagic = mi.get("vermagic") if mi else None
        self.is_livepatch = bool(mi and "livepatch" in mi)
        self.kallsyms_all = kallsyms_all
        self.tab = _symtab(elf, "module")
        self._by_name: dict[str, list[int]] | None = None
        self._flags, self._pcpu = self._alloc_flags()

    @property
    def release(self) -> str | None:
        """The kernel release the module was built for (vermagic's first word)."""
        return self.vermagic.split()[0] if self.vermagic and self.vermagic.split() else None

    def _alloc_flags(self) -> tuple[list[int], int]:
        # Section flags after the loader's edits, and the per-cpu section index
        # (find_pcpusec(): an SHF_ALLOC ".data..percpu", else 0).
        flags = [s.sh_flags for s in self.elf.sections]
        pcpu = 0
        for s in self.elf.sections:
            if s.name in _UNALLOCATED:
                flags[s.index] &= ~SHF.ALLOC
            elif s.name == _PERCPU and s.sh_flags & SHF.ALLOC and not pcpu:
                pcpu = s.index
        if pcpu:
            flags[pcpu] &= ~SHF.ALLOC
        return flags, pcpu

    def is_core_symbol(self, index: int) -> bool:
        """Mirrors ``is_core_symbol()`` in kernel/module/kallsyms.c (v6.4 text; same rule
        since v4.x with INIT_OFFSET_MASK): kept in kallsyms after the module's init."""
        if index == 0 or self.is_livepatch:
            return True
        sym = self.tab[index]
        if sym.st_shndx == SHN.UNDEF or sym.st_shndx >= len(self.elf.sections) or not sym.st_name:
            return False
        if self.kallsyms_all and sym.st_shndx == self._pcpu:
            return True
        f = self._flags[sym.st_shndx]
        if not f & SHF.ALLOC or (not self.kallsyms_all and not f & SHF.EXECINSTR):
            return False
        # module_init_layout_section(): ".init*" (and ".exit*" without MODULE_UNLOAD,
        # which every distribution kernel has)
        return not self.elf.sections[sym.st_shndx].name.startswith(".init")

    def _indices(self, name: str) -> list[int]:
        if self._by_name is None:
            by: dict[str, list[int]] = {}
            for i, n in enumerate(self.tab.names()):
                by.setdefault(n, []).append(i)
            self._by_name = by
        return self._by_name.get(name, [])

    def matches(self, name: str) -> list[Candidate]:
        """The symbols named ``name`` that the kernel's walk visits, in symtab order.

        ``position`` ranks them in the LIVE (core) table, ``coming_position`` in the
        COMING (full) table; a symbol missing from one table has None there.
        """
        elf, tab = self.elf, self.tab
        exported = bool(self._indices("__ksymtab_" + name))
        files = None
        out: list[Candidate] = []
        live = coming = 0
        for i in self._indices(name):
            sym = tab[i]
            if sym.st_shndx == SHN.UNDEF:
                continue
            coming += 1
            core = self.is_core_symbol(i)
            if core:
                live += 1
            in_section = sym.st_shndx < SHN.LORESERVE or sym.st_shndx == SHN.XINDEX
            sec = elf.sections[sym.shndx] if in_section and sym.shndx < len(elf.sections) else None
            if files is None:
                files = _file_hints(tab)
            fidx = files[i]
            # simplify_symbols() leaves SHN_ABS values alone: they are final (and 0
            # counts as "not found"); the others get their section's load address.
            address = sym.st_value if sym.st_shndx == SHN.ABS else None
            out.append(Candidate(
                live if core else None,
                address,
                self._elf_type(sym.bind, sym.type, sym.st_shndx, sec, exported),
                sec.name if sec is not None else None,
                tab.name(fidx) if fidx >= 0 else None,
                sym.st_value if sec is not None else None,
                coming,
            ))  # fmt: skip
        return out

    def kallsyms(self, *, coming: bool = False) -> list[tuple[str, str, str | None, int]]:
        """The module's kallsyms table once loaded: ``(name, type, section, st_value)`` per
        symbol, in the order ``/proc/kallsyms`` lists them (the core table; with
        ``coming`` the full table it has while loading).  Symbols with an empty name
        (symbol 0, among others) are left out, as ``s_show()`` skips them.
        """
        elf, tab = self.elf, self.tab
        names = tab.names()
        out = []
        for i in range(1, len(tab)):
            if not names[i] or not (coming or self.is_core_symbol(i)):
                continue
            sym = tab[i]
            in_section = sym.st_shndx < SHN.LORESERVE or sym.st_shndx == SHN.XINDEX
            sec = elf.sections[sym.shndx] if in_section and sym.shndx < len(elf.sections) else None
            exported = bool(self._indices("__ksymtab_" + names[i]))
            letter = self._elf_type(sym.bind, sym.type, sym.st_shndx, sec, exported)
            out.append((names[i], letter, sec.name if sec else None, sym.st_value))
        return out

    def _elf_type(
        self, bind: int, type_: int, st_shndx: int, sec: Section | None, exported: bool
    ) -> str:
        # elf_type() of kernel/module/kallsyms.c, on the loader's section flags;
        # s_show() prints it upper-case when the symbol is exported.
        if bind == STB.WEAK:
            letter = "v" if type_ == STT.OBJECT else "w"
        elif st_shndx == SHN.UNDEF:
            letter = "u"
        elif st_shndx == SHN.ABS or (self._pcpu and st_shndx == self._pcpu):
            letter = "a"
        elif st_shndx >= SHN.LORESERVE or sec is None:
            letter = "?"
        else:
            f = self._flags[sec.index]
            if f & SHF.EXECINSTR:
                letter = "t"
            elif f & SHF.ALLOC and sec.sh_type != SHT.NOBITS:
                letter = "d" if f & SHF.WRITE else "r"
            elif sec.sh_type == SHT.NOBITS:
                letter = "b"
            elif sec.name.startswith(".debug"):
                letter = "n"
            else:
                letter = "?"
        return letter.upper() if exported else letter
