"""Compare klpelf's reading of one module with readelf's (the corpus oracle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from klpelf.elf.constants import SHN, SHT, STT
from klpelf.elf.describe import section_flags
from klpelf.elf.file import ElfFile
from klpelf.elf.reader import open_elf
from klpelf.elf.reloc_types import reloc_type_display
from klpelf.elf.writer import write_elf
from klpelf.klp.module import klp_module
from readelf_oracle import ReadelfOutput, readelf_printable, run_readelf


def _sym_ndx(st_shndx: int, shndx: int) -> int:
    return shndx if st_shndx == SHN.XINDEX else st_shndx


def compare_module(path: str) -> list[str]:
    """Every difference between klpelf and readelf for ``path``, plus round-trip failures."""
    problems: list[str] = []
    ref = run_readelf(path)
    if ref.stderr:
        problems.append(f"readelf stderr: {ref.stderr.strip()[:200]}")
    elf = open_elf(path)
    elf.decode_all()
    klp_module(elf)  # the livepatch view must build on every module
    _compare_sections(elf, ref, problems)
    _compare_symbols(elf, ref, problems)
    _compare_relocs(elf, ref, problems)
    if write_elf(elf) != Path(path).read_bytes():
        problems.append("write_elf() does not reproduce the file byte for byte")
    return [f"{path}: {p}" for p in problems[:20]]


def _compare_sections(elf: ElfFile, ref: ReadelfOutput, problems: list[str]) -> None:
    if len(ref.sections) != len(elf.sections):
        problems.append(f"{len(elf.sections)} sections, readelf {len(ref.sections)}")
        return
    osabi = elf.ident[7]
    for s, r in zip(elf.sections, ref.sections, strict=True):
        ours = (readelf_printable(s.name).rstrip(" "), s.sh_addr, s.sh_offset, s.sh_size,
                s.sh_entsize, section_flags(s.sh_flags, elf.machine, osabi), s.sh_link,
                s.sh_info, s.sh_addralign)  # fmt: skip
        theirs = (r.name, r.address, r.offset, r.size, r.entsize, r.flags, r.link, r.info, r.align)
        if ours != theirs:
            problems.append(f"section [{s.index}]: klpelf {ours}, readelf {theirs}")


def _compare_symbols(elf: ElfFile, ref: ReadelfOutput, problems: list[str]) -> None:
    tabs = [s for s in elf.sections if s.sh_type in (SHT.SYMTAB, SHT.DYNSYM)]
    if len(tabs) != len(ref.symtabs):
        problems.append(f"{len(tabs)} symbol tables, readelf {len(ref.symtabs)}")
        return
    for sec, (_, rsyms) in zip(tabs, ref.symtabs.items(), strict=True):
        tab = elf.symbol_table(sec)
        if len(tab) != len(rsyms):
            problems.append(f"{sec}: {len(tab)} symbols, readelf {len(rsyms)}")
            continue
        arr = tab.array
        if [r.value for r in rsyms] != arr["st_value"].tolist():
            problems.append(f"{sec}: st_value differs")
        if [r.size for r in rsyms] != arr["st_size"].tolist():
            problems.append(f"{sec}: st_size differs")
        shndx = tab.shndx_array.tolist()
        names = tab.names()
        types = tab.type_array.tolist()
        raw_shndx = arr["st_shndx"].tolist()
        for i, r in enumerate(rsyms):
            name = names[i]
            if types[i] == STT.SECTION and not name and shndx[i] < len(elf.sections):
                name = elf.sections[shndx[i]].name
            rname = r.name
            if sec.sh_type == SHT.DYNSYM:
                rname = rname.split("@", 1)[0]  # readelf appends the symbol version
            if readelf_printable(name) != rname:
                problems.append(f"{sec}: symbol {i} name {name!r}, readelf {r.name!r}")
            want = r.shndx
            if want is not None and want != _sym_ndx(raw_shndx[i], shndx[i]):
                problems.append(f"{sec}: symbol {i} shndx {shndx[i]}, readelf {r.ndx}")
            if len(problems) > 20:
                return


def _compare_relocs(elf: ElfFile, ref: ReadelfOutput, problems: list[str]) -> None:
    # readelf lists non-empty relocation sections in section order
    ours = [s for s in elf.relocation_sections if s.sh_size]
    if len(ours) != len(ref.reloc_sections):
        problems.append(f"{len(ours)} relocation sections, readelf {len(ref.reloc_sections)}")
        return
    for sec, (_, off, rrel) in zip(ours, ref.reloc_sections, strict=True):
        if off != sec.sh_offset:
            problems.append(f"{sec}: offset {sec.sh_offset:#x}, readelf {off:#x}")
        tab = elf.relocations(sec)
        if len(tab) != len(rrel):
            problems.append(f"{sec}: {len(tab)} relocations, readelf {len(rrel)}")
            continue
        arr = tab.array
        if [r.offset for r in rrel] != arr["r_offset"].tolist():
            problems.append(f"{sec}: r_offset differs")
        if [r.info for r in rrel] != arr["r_info"].tolist():
            problems.append(f"{sec}: r_info differs")
        if tab.is_rela and [r.addend or 0 for r in rrel] != arr["r_addend"].tolist():
            problems.append(f"{sec}: r_addend differs")
        types = tab.type_array
        for t in np.unique(types).tolist():
            want = reloc_type_display(elf.machine, t)
            got = {r.type for r, tt in zip(rrel, types.tolist(), strict=True) if tt == t}
            if got != {want}:
                problems.append(f"{sec}: type {t}: klpelf {want!r}, readelf {got}")
