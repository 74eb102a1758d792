# ruff: noqa: E501  (the canned readelf output has readelf's long lines)
"""tests/readelf_oracle.py: the readelf 2.40 output parser, checked against pyelftools.

The second opinion is :func:`expected_from_pyelftools`: it reads a file with
pyelftools (plus the raw ``st_other`` byte, which pyelftools decodes lossily)
and renders every field the way readelf 2.40 prints it, following readelf's
source: type and flag letters, ``Ndx``, escaped names, section names for
unnamed section symbols.  The parsed readelf output must then equal it, field
for field, for objects made by the system and cross assemblers, for objects
with hand-patched symbols, and (marker ``corpus``) for real kernel modules.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.descriptions import describe_reloc_type
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import (
    ENUM_E_MACHINE,
    ENUM_EI_OSABI,
    ENUM_SH_TYPE_AARCH64,
    ENUM_SH_TYPE_AMD64,
    ENUM_SH_TYPE_ARM,
    ENUM_SH_TYPE_BASE,
    ENUM_SH_TYPE_MIPS,
    ENUM_SH_TYPE_RISCV,
    ENUM_ST_INFO_BIND,
    ENUM_ST_INFO_TYPE,
    ENUM_ST_SHNDX,
)
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from readelf_oracle import (
    ReadelfOutput,
    ReadelfParseError,
    ReadelfReloc,
    ReadelfSection,
    ReadelfSymbol,
    parse_readelf,
    readelf_printable,
    readelf_version,
    run_readelf,
)
from toolchain import TARGETS, Target, assemble

TARGET = {t.name: t for t in TARGETS}


def _have_readelf_2_40() -> bool:
    if shutil.which("readelf") is None:
        return False
    return readelf_version().endswith(" 2.40")


needs_readelf = pytest.mark.skipif(
    not _have_readelf_2_40(), reason="needs GNU readelf 2.40 (the parser mirrors its output)"
)

# --------------------------------------------------------------------------- second opinion

EM_386, EM_PPC, EM_PPC64, EM_S390, EM_ARM, EM_X86_64, EM_AARCH64 = 3, 20, 21, 22, 40, 62, 183
ELFOSABI_GNU, ELFOSABI_FREEBSD = 3, 9

_NAME_TO_VALUE: dict[str, int] = {}
for _enum in (
    ENUM_SH_TYPE_BASE,
    ENUM_SH_TYPE_AMD64,
    ENUM_SH_TYPE_ARM,
    ENUM_SH_TYPE_AARCH64,
    ENUM_SH_TYPE_MIPS,
    ENUM_SH_TYPE_RISCV,
):
    _NAME_TO_VALUE.update({k: v for k, v in _enum.items() if k != "_default_"})

#: readelf 2.40 get_section_type_name, the machine-independent part
_SHT_NAMES = {
    0: "NULL",
    1: "PROGBITS",
    2: "SYMTAB",
    3: "STRTAB",
    4: "RELA",
    5: "HASH",
    6: "DYNAMIC",
    7: "NOTE",
    8: "NOBITS",
    9: "REL",
    10: "SHLIB",
    11: "DYNSYM",
    14: "INIT_ARRAY",
    15: "FINI_ARRAY",
    16: "PREINIT_ARRAY",
    17: "GROUP",
    18: "SYMTAB SECTION INDICES",
    19: "RELR",
    0x6FFFFFF0: "VERSYM",
    0x6FFFFFF5: "GNU_ATTRIBUTES",
    0x6FFFFFF6: "GNU_HASH",
    0x6FFFFFF7: "GNU_LIBLIST",
    0x6FFFFFFC: "VERDEF",
    0x6FFFFFFD: "VERDEF",
    0x6FFFFFFE: "VERNEED",
    0x6FFFFFFF: "VERSYM",
    0x7FFFFFFD: "AUXILIARY",
    0x7FFFFFFF: "FILTER",
}
_SHT_PROC_NAMES = {
    EM_X86_64: {0x70000001: "X86_64_UNWIND"},
    EM_ARM: {
        0x70000001: "ARM_EXIDX",
        0x70000002: "ARM_PREEMPTMAP",
        0x70000003: "ARM_ATTRIBUTES",
        0x70000004: "ARM_DEBUGOVERLAY",
        0x70000005: "ARM_OVERLAYSECTION",
    },
}


def _c_alt_hex(value: int) -> str:
    """C's ``%#x``: no ``0x`` for zero."""
    return f"{value:#x}" if value else "0"


def readelf_section_type(sh_type: int, machine: int) -> str:
    name = _SHT_NAMES.get(sh_type)
    if name is not None:
        return name
    if 0x70000000 <= sh_type <= 0x7FFFFFFF:
        return _SHT_PROC_NAMES.get(machine, {}).get(
            sh_type, "LOPROC+" + _c_alt_hex(sh_type - 0x70000000)
        )
    if 0x60000000 <= sh_type <= 0x6FFFFFFF:
        return "LOOS+" + _c_alt_hex(sh_type - 0x60000000)
    if sh_type >= 0x80000000:
        return "LOUSER+" + _c_alt_hex(sh_type - 0x80000000)
    return f"{sh_type:08x}: <unknown>"


_SHF_LETTERS = {
    0x1: "W",
    0x2: "A",
    0x4: "X",
    0x10: "M",
    0x20: "S",
    0x40: "I",
    0x80: "L",
    0x100: "O",
    0x200: "G",
    0x400: "T",
    0x800: "C",
    0x80000000: "E",
}


def readelf_section_flags(flags: int, machine: int, osabi: int) -> str:
    """readelf 2.40 get_elf_section_flags without -t: one letter per bit, low to high."""
    out = []
    while flags:
        flag = flags & -flags
        flags &= ~flag
        letter = _SHF_LETTERS.get(flag)
        if letter is None:
            if machine == EM_X86_64 and flag == 0x10000000:
                letter = "l"
            elif machine == EM_ARM and flag == 0x20000000:
                letter = "y"
            elif machine == EM_PPC and flag == 0x10000000:
                letter = "v"
            elif flag & 0x0FF00000:
                if osabi in (ELFOSABI_GNU, ELFOSABI_FREEBSD) and flag == 0x200000:
                    letter = "R"
                elif osabi in (0, ELFOSABI_GNU, ELFOSABI_FREEBSD) and flag == 0x01000000:
                    letter = "D"
                else:
                    letter = "o"
                    flags &= ~0x0FF00000
            elif flag & 0xF0000000:
                letter = "p"
                flags &= ~0xF0000000
            else:
                letter = "x"
        out.append(letter)
    return "".join(out)


_STT = {0: "NOTYPE", 1: "OBJECT", 2: "FUNC", 3: "SECTION", 4: "FILE", 5: "COMMON", 6: "TLS"}
_STT |= {8: "RELC", 9: "SRELC"}
_STB = {0: "LOCAL", 1: "GLOBAL", 2: "WEAK"}
_STV = ("DEFAULT", "INTERNAL", "HIDDEN", "PROTECTED")


def readelf_symbol_type(stt: int, machine: int, osabi: int) -> str:
    if stt in _STT:
        return _STT[stt]
    if 13 <= stt <= 15:
        if machine == EM_ARM and stt == 13:
            return "THUMB_FUNC"
        return f"<processor specific>: {stt}"
    if 10 <= stt <= 12:
        if stt == 10 and osabi in (ELFOSABI_GNU, ELFOSABI_FREEBSD):
            return "IFUNC"
        return f"<OS specific>: {stt}"
    return f"<unknown>: {stt}"


def readelf_symbol_bind(stb: int, osabi: int) -> str:
    if stb in _STB:
        return _STB[stb]
    if 13 <= stb <= 15:
        return f"<processor specific>: {stb}"
    if 10 <= stb <= 12:
        if stb == 10 and osabi in (ELFOSABI_GNU, ELFOSABI_FREEBSD):
            return "UNIQUE"
        return f"<OS specific>: {stb}"
    return f"<unknown>: {stb}"


def readelf_symbol_other(other: int, machine: int) -> str | None:
    """The bracketed text readelf prints for the st_other bits above the visibility."""
    if other == 0:
        return None
    if machine == EM_PPC64 and other & ~0xE0 == 0:
        val = other >> 5
        if val <= 6:
            return f"<localentry>: {((1 << val) >> 2) << 2 if val >= 2 else val}"
    if machine == EM_AARCH64 and other & 0x80:
        rest = other & ~0x80
        return "VARIANT_PCS" if rest == 0 else f"VARIANT_PCS | {rest:x}"
    return f"<other>: {other:x}"


def readelf_ndx(shndx: int, resolved: bool, machine: int, shnum: int) -> str:
    """readelf 2.40 get_symbol_index_type; ``resolved``: taken from SHT_SYMTAB_SHNDX."""
    if not resolved:
        if shndx == 0:
            return "UND"
        if shndx == 0xFFF1:
            return "ABS"
        if shndx == 0xFFF2:
            return "COM"
        if machine == EM_X86_64 and shndx == 0xFF02:
            return "LARGE_COM"
        if 0xFF00 <= shndx <= 0xFF1F:
            return f"PRC[0x{shndx:04x}]"
        if 0xFF20 <= shndx <= 0xFF3F:
            return f"OS [0x{shndx:04x}]"
        if shndx >= 0xFF00:
            return f"RSV[0x{shndx:04x}]"
    if shnum and shndx >= shnum:
        return f"bad section index[{shndx:3d}]"
    return str(shndx)


def _cstr(data: bytes, offset: int) -> bytes:
    end = data.find(b"\0", offset)
    return data[offset : end if end >= 0 else len(data)]


def _enum_int(value: Any, enum: Mapping[str, Any]) -> int:
    return value if isinstance(value, int) else int(enum[value])


def _unpadded(printed: str) -> str:
    """A ``-S`` name as the parser returns it: trailing spaces are lost within 17 bytes."""
    fits = len(printed.encode("utf-8", "surrogateescape")) <= 17
    return printed.rstrip(" ") if fits else printed


def expected_from_pyelftools(path: Path) -> ReadelfOutput:
    """What readelf 2.40 ``-W -S -s -r`` should print for ``path``, read with pyelftools.

    Only what ET_REL objects need: symbol versions (``.dynsym``) are not rendered.
    """
    with path.open("rb") as f:
        elf = ELFFile(f)
        machine = _enum_int(elf["e_machine"], ENUM_E_MACHINE)
        osabi = _enum_int(elf["e_ident"]["EI_OSABI"], ENUM_EI_OSABI)
        shnum = elf.num_sections()
        headers = [elf.get_section(i) for i in range(shnum)]
        shstrndx = elf["e_shstrndx"]
        if shstrndx in ("SHN_XINDEX", 0xFFFF):
            shstrndx = headers[0]["sh_link"]
        shstrtab = headers[shstrndx].data()
        raw_names = [_cstr(shstrtab, s["sh_name"]) for s in headers]

        sections = []
        for i, sec in enumerate(headers):
            sh_type = _enum_int(sec["sh_type"], _NAME_TO_VALUE)
            sections.append(
                ReadelfSection(
                    index=i,
                    name=_unpadded(readelf_printable(raw_names[i])),
                    type=readelf_section_type(sh_type, machine),
                    address=sec["sh_addr"],
                    offset=sec["sh_offset"],
                    size=sec["sh_size"],
                    entsize=sec["sh_entsize"],
                    flags=readelf_section_flags(sec["sh_flags"], machine, osabi),
                    link=sec["sh_link"],
                    info=sec["sh_info"],
                    align=sec["sh_addralign"],
                )
            )

        # symbol tables, with section indexes resolved through SHT_SYMTAB_SHNDX
        shndx_tables: dict[int, list[int]] = {}
        for sec in headers:
            if _enum_int(sec["sh_type"], _NAME_TO_VALUE) == 18:
                fmt = ("<" if elf.little_endian else ">") + "I"
                words = sec.data()
                shndx_tables[sec["sh_link"]] = [
                    struct.unpack_from(fmt, words, 4 * k)[0] for k in range(len(words) // 4)
                ]
        other_at = 5 if elf.elfclass == 64 else 13
        symbol_tables: list[tuple[str, list[ReadelfSymbol]]] = []
        raw_symbols: dict[int, list[tuple[Any, int, int, bool]]] = {}
        for i, sec in enumerate(headers):
            if not isinstance(sec, SymbolTableSection):
                continue
            strtab = headers[sec["sh_link"]].data()
            data = sec.data()
            xindex = shndx_tables.get(i)
            rows: list[ReadelfSymbol] = []
            raws: list[tuple[Any, int, int, bool]] = []
            for n, sym in enumerate(sec.iter_symbols()):
                stt = _enum_int(sym["st_info"]["type"], ENUM_ST_INFO_TYPE)
                stb = _enum_int(sym["st_info"]["bind"], ENUM_ST_INFO_BIND)
                st_other = data[n * sec["sh_entsize"] + other_at]
                shndx = _enum_int(sym["st_shndx"], {**ENUM_ST_SHNDX, "SHN_XINDEX": 0xFFFF})
                resolved = shndx == 0xFFFF and xindex is not None
                if resolved:
                    assert xindex is not None
                    shndx = xindex[n]
                raws.append((sym, stt, shndx, resolved))
                if stt == 3 and sym["st_name"] == 0 and (resolved or shndx < 0xFF00):
                    raw_name = raw_names[shndx] if shndx < shnum else b""
                else:
                    raw_name = _cstr(strtab, sym["st_name"])
                rows.append(
                    ReadelfSymbol(
                        num=n,
                        value=sym["st_value"],
                        size=sym["st_size"],
                        type=readelf_symbol_type(stt, machine, osabi),
                        bind=readelf_symbol_bind(stb, osabi),
                        vis=_STV[st_other & 3],
                        other=readelf_symbol_other(st_other & ~3, machine),
                        ndx=readelf_ndx(shndx, resolved, machine, shnum),
                        name=readelf_printable(raw_name),
                    )
                )
            symbol_tables.append((readelf_printable(raw_names[i], title=True), rows))
            raw_symbols[i] = raws

        reloc_sections: list[tuple[str, int, list[ReadelfReloc]]] = []
        for i, sec in enumerate(headers):
            sh_type = _enum_int(sec["sh_type"], _NAME_TO_VALUE)
            if not isinstance(sec, RelocationSection) or sec["sh_size"] == 0:
                continue
            strtab = headers[headers[sec["sh_link"]]["sh_link"]].data()
            syms = raw_symbols[sec["sh_link"]]
            entries = []
            for rel in sec.iter_relocations():
                info = rel["r_info"]
                sym_index = info >> 32 if elf.elfclass == 64 else info >> 8
                rtype = info & 0xFFFFFFFF if elf.elfclass == 64 else info & 0xFF
                sym_value = sym_name = None
                ifunc = False
                if sym_index:
                    sym, stt, shndx, resolved = syms[sym_index]
                    ifunc = stt == 10
                    sym_value = None if ifunc else sym["st_value"]
                    if sym["st_name"] != 0:
                        sym_name = readelf_printable(_cstr(strtab, sym["st_name"]))
                    elif stt != 3:
                        sym_name = "<null>"
                    elif (resolved or shndx < 0xFF00) and shndx < shnum:
                        sym_name = readelf_printable(raw_names[shndx])
                    elif shndx == 0xFFF1:
                        sym_name = "ABS"
                    elif shndx == 0xFFF2:
                        sym_name = "COMMON"
                    elif machine == EM_X86_64 and shndx == 0xFF02:
                        sym_name = "LARGE_COMMON"
                    else:
                        internal = shndx if resolved or shndx < 0xFF00 else shndx | 0xFFFF0000
                        sym_name = f"<section 0x{internal:x}>"
                entries.append(
                    ReadelfReloc(
                        offset=rel["r_offset"],
                        info=info,
                        type=describe_reloc_type(rtype, elf),
                        sym_value=sym_value,
                        sym_name=sym_name,
                        addend=rel["r_addend"] if sh_type == 4 else None,
                        ifunc=ifunc,
                    )
                )
            title = readelf_printable(raw_names[i], title=True)
            reloc_sections.append((title, sec["sh_offset"], entries))

        symtabs: dict[str, list[ReadelfSymbol]] = {}
        for name, table in symbol_tables:
            symtabs.setdefault(name, []).extend(table)
        relocs: dict[str, list[ReadelfReloc]] = {}
        for name, _, entries in reloc_sections:
            relocs.setdefault(name, []).extend(entries)
        return ReadelfOutput(
            elf_class=elf.elfclass,
            shnum=shnum,
            shoff=elf["e_shoff"],
            sections=sections,
            symtabs=symtabs,
            symbol_tables=symbol_tables,
            relocs=relocs,
            reloc_sections=reloc_sections,
            relr_sections=[],
            stderr="",
            returncode=0,
        )


def _unknown_reloc_type(name: str) -> bool:
    """pyelftools does not know every type readelf names; those are not compared."""
    return name == "<unknown>"


def mismatches(ours: ReadelfOutput, ref: ReadelfOutput) -> Iterator[str]:
    """Every difference between parsed readelf output and the pyelftools rendering."""
    for fld in ("elf_class", "shnum", "shoff"):
        if getattr(ours, fld) != getattr(ref, fld):
            yield f"{fld}: {getattr(ours, fld)!r} != {getattr(ref, fld)!r}"
    if len(ours.sections) != len(ref.sections):
        yield f"{len(ours.sections)} sections != {len(ref.sections)}"
    for a, b in zip(ours.sections, ref.sections, strict=False):
        if a != b:
            yield f"section {a} != {b}"
    tables = [(n, len(t)) for n, t in ours.symbol_tables]
    ref_tables = [(n, len(t)) for n, t in ref.symbol_tables]
    if tables != ref_tables:
        yield f"symbol tables {tables} != {ref_tables}"
    for (name, got), (_, syms) in zip(ours.symbol_tables, ref.symbol_tables, strict=False):
        if len(got) != len(syms):
            yield f"{name}: {len(got)} symbols != {len(syms)}"
        for a_sym, b_sym in zip(got, syms, strict=False):
            if a_sym != b_sym:
                yield f"symbol {a_sym} != {b_sym}"
    heads = [(n, o, len(e)) for n, o, e in ours.reloc_sections]
    ref_heads = [(n, o, len(e)) for n, o, e in ref.reloc_sections]
    if heads != ref_heads:
        yield f"relocation sections {heads} != {ref_heads}"
    for (name, _, got_rel), (_, _, want_rel) in zip(
        ours.reloc_sections, ref.reloc_sections, strict=False
    ):
        for a_rel, b_rel in zip(got_rel, want_rel, strict=False):
            want = replace(b_rel, type=a_rel.type) if _unknown_reloc_type(b_rel.type) else b_rel
            if a_rel != want:
                yield f"{name}: {a_rel} != {want}"
    if {k: len(v) for k, v in ours.relocs.items()} != {k: len(v) for k, v in ref.relocs.items()}:
        yield "relocs by name differ"


def check_against_pyelftools(path: Path) -> ReadelfOutput:
    out = run_readelf(path)
    diffs = list(mismatches(out, expected_from_pyelftools(path)))
    assert not diffs, f"{path}: {len(diffs)} differences, first: " + "\n".join(diffs[:10])
    return out


# --------------------------------------------------------------------------- object builders


def _symtab(elf: ELFFile) -> SymbolTableSection:
    tab = elf.get_section_by_name(".symtab")
    assert isinstance(tab, SymbolTableSection)
    return tab


def _patch_symbols(path: Path, patches: dict[str, dict[str, int]]) -> None:
    """Overwrite fields (info, other, shndx, value, size) of .symtab entries.

    Entries go by name; an unnamed section symbol by its section's name.
    """
    with path.open("r+b") as f:
        elf = ELFFile(f)
        tab = _symtab(elf)
        e = "<" if elf.little_endian else ">"
        is64 = elf.elfclass == 64
        index = {s.name: i for i, s in enumerate(tab.iter_symbols()) if s.name}
        # unnamed section symbols go by their section's name
        for i, sym in enumerate(tab.iter_symbols()):
            if sym["st_info"]["type"] == "STT_SECTION" and isinstance(sym["st_shndx"], int):
                index.setdefault(elf.get_section(sym["st_shndx"]).name, i)
        base, entsize = tab["sh_offset"], tab["sh_entsize"]
        layout = (
            {"info": (4, "B"), "other": (5, "B"), "shndx": (6, "H"), "value": (8, "Q")}
            | {"size": (16, "Q")}
            if is64
            else {"value": (4, "I"), "size": (8, "I"), "info": (12, "B"), "other": (13, "B")}
            | {"shndx": (14, "H")}
        )
        for name, fields in patches.items():
            for fld, value in fields.items():
                off, fmt = layout[fld]
                f.seek(base + index[name] * entsize + off)
                f.write(struct.pack(e + fmt, value))


def _weird_names_source() -> bytes:
    """x86-64 assembly: escaped and odd names, odd section types and flags, RELA quirks."""
    names = [
        b"sym with space",
        b"sym\x7fdel",
        b"caf\xc3\xa9",
        b"high\xff",
        b"tab\there",
        b"esc\x1bape",
        b"trail ",
        b" lead",
        b"a_name_longer_than_seventeen_bytes_ending_in_a_space ",
        b".klp.sym.vmlinux.printk,0",
    ]
    lines = [b'.section .data,"aw"']
    for i, name in enumerate(names):
        lines += [b'"' + name + b'":', b'.quad "' + name + b'" + %d' % (i * 3 - 5)]
    lines += [b".globl " + b'"' + names[-1] + b'"']
    lines += [
        b'.section "sec with space","ax",@progbits',
        b'.quad "sec with space" - 16',
        b".reloc ., R_X86_64_NONE, 0",
        b".reloc ., R_X86_64_64, -0x20",
        b".reloc ., R_X86_64_PC32, 0x7fffffff",
        b".quad 0",
        b'.section "sec\x7fdel","a"',
        b'.quad "sec\x7fdel"',
        b'.section "sec\xc3\xa9","a"',
        b'.quad "sec\xc3\xa9"',
        b'.section "sec\ttab","a"',
        b'.quad "sec\ttab"',
        b'.section ".loos","a",@0x60000001',
        b'.section ".loos0","a",@0x60000000',
        b'.section ".versym_alias","a",@0x6ffffff0',
        b'.section ".unwind","a",@0x70000001',
        b'.section ".loproc","a",@0x7ffffff0',
        b'.section ".louser","",@0x80000001',
        b'.section ".unknown_type","",@0x40',
        b'.section ".os_flag","a0x00100000",@progbits',
        b'.section ".large","a0x10000000",@progbits',
        b'.section ".exclude","e",@progbits',
        b'.section ".no_flags","",@progbits',
        b'.section ".grp","axG",@progbits,grpsig,comdat',
        b"ret",
        b'.section ".merge","aMS",@progbits,1',
        b'.string "x"',
        b'.section .tbss,"awT",@nobits',
        b".zero 8",
        # two sections of one name, each with its relocation section (as in livepatch
        # modules, where .klp.rela.vmlinux..text can appear more than once)
        b'.section .text.dup,"ax",@progbits,unique,1',
        b".quad .data",
        b'.section .text.dup,"ax",@progbits,unique,2',
        b".quad .data + 8",
        b".section .L" + b"n" * 300 + b',"a"',
        b".quad .L" + b"n" * 300,
        b'.section .rela.empty,"",@rela',
    ]
    return b"\n".join(lines) + b"\n"


def _build(target: Target, dest: Path, source: bytes) -> Path:
    if shutil.which(target.as_cmd[0]) is None:
        pytest.skip(f"{target.as_cmd[0]} is not installed")
    src = dest.with_suffix(".s")
    src.write_bytes(source)
    subprocess.run([*target.as_cmd, "-o", str(dest), str(src)], check=True, capture_output=True)
    return dest


# --------------------------------------------------------------------------- tests: parser only

_SAMPLE_64 = """\
There are 9 section headers, starting at offset 0x3c8:

Section Headers:
  [Nr] Name              Type            Address          Off    Size   ES Flg Lk Inf Al
  [ 0]                   NULL            0000000000000000 000000 000000 00      0   0  0
  [ 1] sec with space    PROGBITS        0000000000000000 000048 000014 00  AX  0   0  1
  [ 2] .klp.rela.vmlinux..text.x PROGBITS        0000000000000000 00005c 000020 00  WA  0   0  1
  [ 3] .rela.klp.rela.vmlinux..text.x RELA            0000000000000000 0001c0 000078 18   I  7   2  8
  [ 4] .unk              00000040: <unknown> 0000000000000000 000080 000000 00      0   0  1
  [ 5] .loproc2          LOPROC+0xffffff0 0000000000000000 000094 000001 00  Al  0   0  1
  [ 6] .symtab_shndx     SYMTAB SECTION INDICES 0000000000000000 3ce248 088b84 04      7   0  4
  [ 7] .symtab           SYMTAB          0000000000000000 000098 000108 18      8  11  8
  [ 8] .strtab           STRTAB          0000000000000000 0001a0 00003e 00      0   0  1
Key to Flags:
  W (write), A (alloc), X (execute), M (merge), S (strings), I (info),
  L (link order), O (extra OS processing required), G (group), T (TLS),
  C (compressed), x (unknown), o (OS specific), E (exclude),
  D (mbind), l (large), p (processor specific)

Relocation section '.rela.klp.rela.vmlinux..text.x' at offset 0x1c0 contains 5 entries:
    Offset             Info             Type               Symbol's Value  Symbol's Name + Addend
0000000000000000  0000000800000001 R_X86_64_64            0000000000000000 .klp.sym.vmlinux.foo,0 + 0
0000000000000008  0000000700000001 R_X86_64_64            0000000000000000 sym with space + 5
0000000000000010  0000000100000001 R_X86_64_64            0000000000000000 sec with space - 4
0000000000000018  0000000000000000 R_X86_64_NONE                             0
0000000000000020  0000000000000001 R_X86_64_64                               -20

Relocation section '.rela.klp.rela.vmlinux..text.x' at offset 0x200 contains 1 entry:
    Offset             Info             Type               Symbol's Value  Symbol's Name + Addend
0000000000000024  0000000d000000fc R_AARCH64_TLSLE_ADD_TPREL_LO12_NC 0000000000000010 a + b - 1 + 7fffffff

Relocation section '.relr.dyn' at offset 0x5b8 contains 2 entries:
  3 offsets
0000000000003dd0
0000000000003dd8
0000000000004008

Symbol table '.symtab' contains 7 entries:
   Num:    Value          Size Type    Bind   Vis      Ndx Name
     0: 0000000000000000     0 NOTYPE  LOCAL  DEFAULT  UND \n\
     1: 0000000000000000 0x61a80 OBJECT  GLOBAL DEFAULT    4 global_arr
     2: 0000000000000000   124 FUNC    GLOBAL DEFAULT [<localentry>: 8]     1 fn
     3: 0000000000000008     0 NOTYPE  GLOBAL DEFAULT [<other>: 4]  PRC[0xff00] s1
     4: 0000000000000010     0 <OS specific>: 11 GLOBAL PROTECTED [<other>: 80]  RSV[0xfff0] s2
     5: 0000000000000030 0x186a0 RELC    <processor specific>: 13 DEFAULT bad section index[500]  x y
     6: 0000000000000000     0 NOTYPE  GLOBAL DEFAULT OS [0xff20] .klp.sym.vmlinux.foo,0
"""


def test_parse_canned_elf64_output() -> None:
    out = parse_readelf(_SAMPLE_64)
    assert out.elf_class == 64 and (out.shnum, out.shoff) == (9, 0x3C8)
    s = out.sections
    assert [x.name for x in s] == [
        "",
        "sec with space",
        ".klp.rela.vmlinux..text.x",
        ".rela.klp.rela.vmlinux..text.x",
        ".unk",
        ".loproc2",
        ".symtab_shndx",
        ".symtab",
        ".strtab",
    ]
    assert [x.type for x in s][3:7] == [
        "RELA",
        "00000040: <unknown>",
        "LOPROC+0xffffff0",
        "SYMTAB SECTION INDICES",
    ]
    assert s[3] == ReadelfSection(3, s[3].name, "RELA", 0, 0x1C0, 0x78, 0x18, "I", 7, 2, 8)
    assert [x.flags for x in s][:6] == ["", "AX", "WA", "I", "", "Al"]
    assert s[6].offset == 0x3CE248 and s[6].size == 0x88B84

    name = ".rela.klp.rela.vmlinux..text.x"
    assert [(n, o, len(e)) for n, o, e in out.reloc_sections] == [
        (name, 0x1C0, 5),
        (name, 0x200, 1),
    ]
    rel = out.relocs[name]
    assert len(rel) == 6
    assert rel[0] == ReadelfReloc(
        0, 0x800000001, "R_X86_64_64", 0, ".klp.sym.vmlinux.foo,0", 0, False
    )
    assert (rel[1].sym_name, rel[1].addend) == ("sym with space", 5)
    assert (rel[2].sym_name, rel[2].addend) == ("sec with space", -4)
    assert rel[3] == ReadelfReloc(0x18, 0, "R_X86_64_NONE", None, None, 0, False)
    assert rel[4] == ReadelfReloc(0x20, 1, "R_X86_64_64", None, None, -0x20, False)
    assert rel[5].type == "R_AARCH64_TLSLE_ADD_TPREL_LO12_NC"
    assert (rel[5].sym_value, rel[5].sym_name, rel[5].addend) == (0x10, "a + b - 1", 0x7FFFFFFF)
    assert out.relr_sections == [(".relr.dyn", 0x5B8, [0x3DD0, 0x3DD8, 0x4008])]

    syms = out.symtabs[".symtab"]
    assert syms[0] == ReadelfSymbol(0, 0, 0, "NOTYPE", "LOCAL", "DEFAULT", None, "UND", "")
    assert syms[1].size == 0x61A80 and syms[1].shndx == 4
    assert (syms[2].other, syms[2].ndx, syms[2].name) == ("<localentry>: 8", "1", "fn")
    assert (syms[3].other, syms[3].ndx, syms[3].shndx) == ("<other>: 4", "PRC[0xff00]", 0xFF00)
    assert (syms[4].type, syms[4].vis, syms[4].other) == (
        "<OS specific>: 11",
        "PROTECTED",
        "<other>: 80",
    )
    assert (syms[5].bind, syms[5].ndx, syms[5].shndx) == ("<processor specific>: 13", "bad section index[500]", None)  # fmt: skip
    assert syms[5].name == " x y" and syms[5].size == 100000
    assert (syms[6].ndx, syms[6].shndx) == ("OS [0xff20]", 0xFF20)


_SAMPLE_32 = """\
There are 4 section headers, starting at offset 0x3f4:

Section Headers:
  [Nr] Name              Type            Addr     Off    Size   ES Flg Lk Inf Al
  [ 0]                   NULL            00000000 000000 000000 00      0   0  0
  [ 1] .text             PROGBITS        00000000 000040 000066 00  AX  0   0 16
  [ 2] .rel.text         REL             00000000 0002fc 000030 08   I  3   1  4
  [ 3] .rela.data        RELA            00000000 0000b4 000030 0c   I  3   1  4
Key to Flags:
  W (write), A (alloc), X (execute), M (merge), S (strings), I (info),

Relocation section '.rel.text' at offset 0x2fc contains 3 entries:
 Offset     Info    Type                Sym. Value  Symbol's Name
00000004  0000081c R_ARM_CALL             00000000   ext
0000000c  00000000 R_ARM_NONE            \n\
00000010  00000002 R_ARM_ABS32           \n\

Relocation section '.rela.data' at offset 0xb4 contains 3 entries:
 Offset     Info    Type                Sym. Value  Symbol's Name + Addend
00000008  00000501 R_PPC_ADDR32           00000000   ext - 8
0000000c  00000001 R_PPC_ADDR32                      10
00000010  00000000 R_PPC_NONE                        0

Symbol table '.symtab' contains 2 entries:
   Num:    Value  Size Type    Bind   Vis      Ndx Name
     0: 00000000     0 NOTYPE  LOCAL  DEFAULT  UND \n\
     1: ffffffff 0xffffffff FUNC    GLOBAL DEFAULT  COM ext
"""


def test_parse_canned_elf32_output() -> None:
    out = parse_readelf(_SAMPLE_32)
    assert out.elf_class == 32
    assert out.sections[2] == ReadelfSection(2, ".rel.text", "REL", 0, 0x2FC, 0x30, 8, "I", 3, 1, 4)
    rel = out.relocs[".rel.text"]
    assert rel[0] == ReadelfReloc(4, 0x81C, "R_ARM_CALL", 0, "ext", None, False)
    assert rel[1] == ReadelfReloc(0xC, 0, "R_ARM_NONE", None, None, None, False)
    rela = out.relocs[".rela.data"]
    assert rela[0] == ReadelfReloc(8, 0x501, "R_PPC_ADDR32", 0, "ext", -8, False)
    assert rela[1] == ReadelfReloc(0xC, 1, "R_PPC_ADDR32", None, None, 0x10, False)
    sym = out.symtabs[".symtab"][1]
    assert (sym.value, sym.size, sym.ndx, sym.shndx) == (0xFFFFFFFF, 0xFFFFFFFF, "COM", 0xFFF2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_SAMPLE_64.replace("0000000000000018  0000", "000000000000018  0000"), "unparsed"),
        (_SAMPLE_64.replace("sym with space + 5", "sym with space +5"), "unparsed"),
        (_SAMPLE_64.replace("contains 7 entries", "contains 8 entries"), "title says 8"),
        (_SAMPLE_64.replace("There are 9 section", "There are 10 section"), "title says 10"),
        (_SAMPLE_64 + "\nSomething new\n", "unexpected output"),
        (_SAMPLE_64.replace("   Num:    Value   ", "   Num:  Value     "), "heading"),
        (_SAMPLE_32.replace("00000004  0000081c", "0000004  0000081c"), "unparsed"),
    ],
)
def test_parse_rejects_what_it_does_not_understand(text: str, message: str) -> None:
    with pytest.raises(ReadelfParseError, match=message):
        parse_readelf(text)


def test_parse_empty_outputs() -> None:
    out = parse_readelf("\nThere are no relocations in this file.\n", "", 0)
    assert (out.sections, out.symtabs, out.reloc_sections, out.elf_class) == ([], {}, [], None)
    assert parse_readelf("", "readelf: Error: Not an ELF file\n", 1).warnings == [
        "readelf: Error: Not an ELF file"
    ]


def test_printable() -> None:
    assert readelf_printable(b"plain.name,0") == "plain.name,0"
    assert readelf_printable(b"a\tb\x1b\x00") == "a^Ib^[^@"
    assert readelf_printable(b"del\x7f") == "del^" + b"\xbf".decode("utf-8", "surrogateescape")
    assert readelf_printable(b"caf\xc3\xa9 \xff") == "café " + "\udcff"
    assert readelf_printable("café") == "café"


# --------------------------------------------------------------------------- tests: with readelf


@needs_readelf
@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_toolchain_samples_agree_with_pyelftools(target: Target, tmp_path: Path) -> None:
    obj = assemble(target, tmp_path / f"{target.name}.o")
    out = check_against_pyelftools(obj)
    assert out.warnings == [] and out.returncode == 0
    assert out.elf_class == (32 if target.name in ("i386", "s390-31") else 64)
    assert out.reloc_sections and out.symtabs[".symtab"]


@needs_readelf
def test_weird_names_types_and_flags(tmp_path: Path) -> None:
    obj = _build(TARGET["x86_64"], tmp_path / "weird.o", _weird_names_source())
    out = check_against_pyelftools(obj)
    # only the hand-made empty .rela.empty, whose sh_info is 0, is worth a warning
    assert len(out.warnings) == 1
    assert out.warnings[0].endswith(": Info field (0) should index a relocatable section.")
    by_name = {s.name: s for s in out.sections}
    assert by_name["sec with space"].flags == "AX"
    assert by_name["sec^\udcbfdel"].type == "PROGBITS"
    assert by_name["sec^Itab"].flags == "A"
    assert by_name["secé"].index > 0
    assert by_name[".loos"].type == "LOOS+0x1"
    assert by_name[".loos0"].type == "LOOS+0"
    assert by_name[".versym_alias"].type == "VERSYM"
    assert by_name[".unwind"].type == "X86_64_UNWIND"
    assert by_name[".loproc"].type == "LOPROC+0xffffff0"
    assert by_name[".louser"].type == "LOUSER+0x1"
    assert by_name[".unknown_type"].type == "00000040: <unknown>"
    assert by_name[".os_flag"].flags == "Ao"
    assert by_name[".large"].flags == "Al"
    assert by_name[".exclude"].flags == "E"
    assert by_name[".no_flags"].flags == ""
    assert by_name[".grp"].flags == "AXG"
    assert by_name[".merge"].flags == "AMS"
    assert by_name[".tbss"].flags == "WAT"
    assert by_name[".L" + "n" * 300].type == "PROGBITS"
    assert any(s.type == "RELA" and s.name == ".rela.empty" and s.size == 0 for s in out.sections)
    # empty relocation sections are not listed; same-named ones are, each
    assert ".rela.empty" not in out.relocs
    dups = [(n, len(e)) for n, _, e in out.reloc_sections if n == ".rela.text.dup"]
    assert dups == [(".rela.text.dup", 1), (".rela.text.dup", 1)]
    assert [r.addend for r in out.relocs[".rela.text.dup"]] == [0, 8]

    names = {s.name for s in out.symtabs[".symtab"]}
    for raw in (b"sym with space", b"caf\xc3\xa9", b"high\xff", b"tab\there", b" lead"):
        assert readelf_printable(raw) in names
    assert "trail " in names and "a_name_longer_than_seventeen_bytes_ending_in_a_space " in names
    assert "sym^\udcbfdel" in names and "esc^[ape" in names

    text = out.relocs[".relasec with space"]  # gas's name for it
    assert [(r.type, r.sym_name, r.addend) for r in text] == [
        ("R_X86_64_64", "sec with space", -16),
        ("R_X86_64_NONE", None, 0),
        ("R_X86_64_64", None, -0x20),
        ("R_X86_64_PC32", None, 0x7FFFFFFF),
    ]
    data = out.relocs[".rela.data"]
    assert {r.sym_name for r in data} == {".data", ".klp.sym.vmlinux.printk,0"}


@needs_readelf
def test_patched_symbols(tmp_path: Path) -> None:
    """Indexes and st_info/st_other values as never assembled: livepatch SHN_LIVEPATCH & co."""
    n = 16
    src = ".data\n" + "".join(f".globl s{i}\ns{i}: .quad 0\n" for i in range(n))
    src += "".join(f".quad s{i} + {i}\n" for i in range(n))
    src += '.quad .data\n.section .other,"a"\n.quad .other\n.quad .text\n'
    obj = _build(TARGET["x86_64"], tmp_path / "patched.o", src.encode())
    _patch_symbols(
        obj,
        {
            "s0": {"shndx": 0xFF20},  # SHN_LIVEPATCH
            "s1": {"shndx": 0xFF00, "other": 4},
            "s2": {"shndx": 0xFFF0, "info": (1 << 4) | 11, "other": 0x83},
            "s3": {"shndx": 0xFF1F, "info": (1 << 4) | 13, "size": 2**64 - 1},
            "s4": {"info": (3 << 4) | 5, "shndx": 0xFF3F},
            "s5": {"info": (10 << 4) | 7, "shndx": 0xFFF2, "size": 99999},
            "s6": {"info": (13 << 4) | 8, "shndx": 500, "size": 100000},
            "s7": {"info": (15 << 4) | 10, "shndx": 0xFFFF, "value": 2**64 - 1},
            "s8": {"info": (1 << 4) | 9, "shndx": 0xFF02},
            "s9": {"info": (1 << 4) | 6, "shndx": 0xFFF1},
            "s10": {"info": (1 << 4) | 3, "other": 0xF8},
        },
    )
    out = check_against_pyelftools(obj)
    syms = {s.name: s for s in out.symtabs[".symtab"]}
    assert syms["s0"].ndx == "OS [0xff20]" and syms["s0"].shndx == 0xFF20
    assert (syms["s1"].ndx, syms["s1"].other) == ("PRC[0xff00]", "<other>: 4")
    assert (syms["s2"].type, syms["s2"].vis, syms["s2"].ndx) == (
        "<OS specific>: 11",
        "PROTECTED",
        "RSV[0xfff0]",
    )
    assert syms["s3"].size == 2**64 - 1
    assert (syms["s5"].size, syms["s6"].size) == (99999, 100000)
    assert syms["s6"].ndx == "bad section index[500]"
    assert (syms["s7"].value, syms["s7"].ndx) == (2**64 - 1, "RSV[0xffff]")
    assert syms["s8"].ndx == "LARGE_COM" and syms["s9"].ndx == "ABS"
    assert (syms["s10"].type, syms["s10"].other) == ("SECTION", "<other>: f8")
    assert all(w.startswith("readelf: Warning: ") for w in out.warnings)


_KLP_SOURCE = b"""
.text
.globl patched_fn
patched_fn: nop; nop; nop; nop; nop; nop; nop; nop
.section .klp.rela.vmlinux..text,"a0x00100000",@4,unique,1
.quad 0, 0, 0
.section .klp.rela.vmlinux..text,"a0x00100000",@4,unique,2
.quad 0, 0, 0, 0, 0, 0
.section .data.refs,"aw"
.quad ".klp.sym.vmlinux.foo,0"
.quad ".klp.sym.vmlinux.bar,1"
"""


@needs_readelf
def test_livepatch_style_module(tmp_path: Path) -> None:
    """Two SHF_RELA_LIVEPATCH sections of one name, against SHN_LIVEPATCH symbols."""
    obj = _build(TARGET["x86_64"], tmp_path / "klp.o", _KLP_SOURCE)
    _patch_symbols(obj, {".klp.sym.vmlinux.foo,0": {"shndx": 0xFF20}})
    _patch_symbols(obj, {".klp.sym.vmlinux.bar,1": {"shndx": 0xFF20}})
    with obj.open("r+b") as f:
        elf = ELFFile(f)
        tab = _symtab(elf)
        symtab_index = elf.get_section_index(".symtab")
        sym = {s.name: i for i, s in enumerate(tab.iter_symbols())}
        foo, bar = sym[".klp.sym.vmlinux.foo,0"], sym[".klp.sym.vmlinux.bar,1"]
        klp = [i for i, sec in enumerate(elf.iter_sections()) if sec.name.startswith(".klp.rela")]
        relas = [[(1, foo, -4)], [(3, bar, -4), (5, foo, 0x10)]]
        for index, entries in zip(klp, relas, strict=True):
            shdr = elf["e_shoff"] + index * elf["e_shentsize"]
            sec = elf.get_section(index)
            f.seek(shdr + 8)
            f.write(struct.pack("<Q", sec["sh_flags"] | 0x40))  # SHF_INFO_LINK
            f.seek(shdr + 40)
            f.write(struct.pack("<II", symtab_index, 1))  # sh_link, sh_info (.text)
            f.seek(shdr + 56)
            f.write(struct.pack("<Q", 24))  # sh_entsize
            f.seek(sec["sh_offset"])
            for off, symbol, addend in entries:
                f.write(struct.pack("<QQq", off, symbol << 32 | 2, addend))  # R_X86_64_PC32
    out = check_against_pyelftools(obj)
    assert out.warnings == []
    name = ".klp.rela.vmlinux..text"
    assert [(s.type, s.flags) for s in out.sections if s.name == name] == [("RELA", "AIo")] * 2
    assert [(n, len(e)) for n, _, e in out.reloc_sections if n == name] == [(name, 1), (name, 2)]
    assert [(r.offset, r.sym_name, r.addend) for r in out.relocs[name]] == [
        (1, ".klp.sym.vmlinux.foo,0", -4),
        (3, ".klp.sym.vmlinux.bar,1", -4),
        (5, ".klp.sym.vmlinux.foo,0", 0x10),
    ]
    klp_syms = [s for s in out.symtabs[".symtab"] if s.name.startswith(".klp.sym.")]
    assert {(s.ndx, s.shndx) for s in klp_syms} == {("OS [0xff20]", 0xFF20)}


_SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "klp_sample"


@needs_readelf
@pytest.mark.parametrize("name", ["klp_sample.ko", "klp_sample_lp.ko"])
def test_sample_modules(name: str) -> None:
    """The repository's sample module, before and after conversion to a livepatch module."""
    path = _SAMPLES / name
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    out = check_against_pyelftools(path)
    assert out.warnings == [] and out.returncode == 0
    klp_relas = [(n, e) for n, _, e in out.reloc_sections if n.startswith(".klp.rela.")]
    klp_syms = [s for s in out.symtabs[".symtab"] if s.ndx == "OS [0xff20]"]
    if name == "klp_sample.ko":
        assert klp_relas == [] and klp_syms == []
        return
    assert klp_relas and all(r.sym_name and r.sym_name.startswith(".klp.sym.") for _, e in klp_relas for r in e)  # fmt: skip
    assert {s.name for s in klp_syms} >= {r.sym_name for _, e in klp_relas for r in e}
    assert {s.flags for s in out.sections if s.name.startswith(".klp.rela.")} == {"AIo"}


@needs_readelf
def test_patched_section_symbols(tmp_path: Path) -> None:
    """Unnamed section symbols whose index is not a section: named ABS, COMMON, <section 0x..>."""
    src = b'.data\n.quad .data\n.quad .text + 1\n.quad .bss + 3\n.section .foo,"a"\n.quad .foo\n'
    obj = _build(TARGET["x86_64"], tmp_path / "secsyms.o", src)
    # pyelftools names unnamed section symbols after their section
    _patch_symbols(
        obj,
        {".text": {"shndx": 0xFFF1}, ".data": {"shndx": 500}, ".bss": {"shndx": 0xFF20}}
        | {".foo": {"shndx": 0xFFF2}},
    )
    out = check_against_pyelftools(obj)
    assert [r.sym_name for r in out.relocs[".rela.data"]] == [
        "<section 0x1f4>",
        "ABS",
        "<section 0xffffff20>",
    ]
    assert [r.sym_name for r in out.relocs[".rela.foo"]] == ["COMMON"]
    # in the symbol table they print without a name
    section_syms = [s for s in out.symtabs[".symtab"] if s.type == "SECTION"]
    assert {s.ndx: s.name for s in section_syms} == {
        "bad section index[500]": "",
        "ABS": "",
        "OS [0xff20]": "",
        "COM": "",
    }


@needs_readelf
def test_ppc64_localentry_and_arm64_variant_pcs(tmp_path: Path) -> None:
    ppc = _build(
        TARGET["ppc64le"],
        tmp_path / "ppc.o",
        b".text\n.globl f, g, h\nf: addis 2,12,.TOC.-f@ha\naddi 2,2,.TOC.-f@l\n"
        b".localentry f, .-f\nblr\ng: nop\n.localentry g, 1\nblr\n"
        b"h: nop\nnop\nnop\nnop\n.localentry h, 16\nblr\n",
    )
    out = check_against_pyelftools(ppc)
    syms = {s.name: s for s in out.symtabs[".symtab"]}
    assert syms["f"].other == "<localentry>: 8"
    assert syms["g"].other == "<localentry>: 1"
    assert syms["h"].other == "<localentry>: 16"
    arm = _build(
        TARGET["aarch64"],
        tmp_path / "arm.o",
        b".text\n.globl f\n.variant_pcs f\n.type f,%function\nf: ret\n.quad f\n",
    )
    out = check_against_pyelftools(arm)
    assert {s.name: s for s in out.symtabs[".symtab"]}["f"].other == "VARIANT_PCS"


@needs_readelf
def test_elf32_big_endian_rela(tmp_path: Path) -> None:
    obj = _build(
        TARGET["s390-31"],
        tmp_path / "s390.o",
        b".data\nfoo: .long 0\n.long foo+4\n.long ext-8\n.reloc ., R_390_32, 0x10\n.long 0\n"
        b".reloc ., R_390_NONE\n.long 0\n",
    )
    out = check_against_pyelftools(obj)
    assert out.elf_class == 32
    assert [(r.sym_name, r.addend) for r in out.relocs[".rela.data"]] == [
        (".data", 4),
        ("ext", -8),
        (None, 0x10),
        (None, 0),
    ]


@needs_readelf
def test_elf32_rel(tmp_path: Path) -> None:
    obj = _build(
        TARGET["i386"],
        tmp_path / "i386.o",
        b".data\nfoo: .long 0\n.long foo+4\n.long ext\n.reloc ., R_386_NONE\n.long 0\n"
        b".reloc ., R_386_32, 0x10\n.long 0\n",
    )
    out = check_against_pyelftools(obj)
    assert [(r.sym_name, r.addend) for r in out.relocs[".rel.data"]] == [
        (".data", None),
        ("ext", None),
        (None, None),
        (None, None),
    ]


_IFUNC_SOURCE = """
.text
.type f, %gnu_indirect_function
.globl f
f: nop
.type a_very_long_ifunc_name_here, %gnu_indirect_function
a_very_long_ifunc_name_here: nop
.type exactly14chars, %gnu_indirect_function
exactly14chars: nop
.data
"""


@needs_readelf
@pytest.mark.parametrize("target", ["x86_64", "i386", "s390-31"])
def test_ifunc_symbols_print_name_instead_of_value(target: str, tmp_path: Path) -> None:
    word = ".quad" if target == "x86_64" else ".long"
    src = _IFUNC_SOURCE + "".join(
        f"{word} {name} + {i}\n"
        for i, name in enumerate(["f", "a_very_long_ifunc_name_here", "exactly14chars"])
    )
    obj = _build(TARGET[target], tmp_path / "ifunc.o", src.encode())
    out = check_against_pyelftools(obj)
    (entries,) = (e for _, _, e in out.reloc_sections)
    assert [(r.sym_value, r.sym_name, r.ifunc) for r in entries] == [
        (None, "f", True),
        (None, "a_very_long_ifunc_name_here", True),
        (None, "exactly14chars", True),
    ]
    assert [r.addend for r in entries] == ([None] * 3 if target == "i386" else [0, 1, 2])


@needs_readelf
@pytest.mark.slow
def test_extended_section_numbering(tmp_path: Path) -> None:
    # Past SHN_LORESERVE (0xff00) sections: e_shnum and e_shstrndx move to section 0,
    # symbol indexes to SHT_SYMTAB_SHNDX; readelf prints the resolved indexes.
    n = 65300
    src = "".join(f'.section .s{i},"a"\ns{i}: .byte 1\n' for i in range(n))
    src += '.globl s5, s65299\n.section .s65299,"a"\n.quad s65299\n.quad .s65299 + 1\n.quad s5\n'
    obj = _build(TARGET["x86_64"], tmp_path / "many.o", src.encode())
    out = check_against_pyelftools(obj)
    assert out.warnings == []
    assert out.shnum == len(out.sections) > n
    assert out.sections[0].size == out.shnum  # e_shnum lives in section 0
    assert any(s.type == "SYMTAB SECTION INDICES" for s in out.sections)
    syms = {s.name: s for s in out.symtabs[".symtab"]}
    high = syms["s65299"]
    assert high.shndx is not None and high.shndx > 0xFF00
    assert out.sections[high.shndx].name == ".s65299"
    assert [r.sym_name for r in out.relocs[".rela.s65299"]] == ["s65299", ".s65299", "s5"]


# --------------------------------------------------------------------------- tests: corpus


def _corpus_modules() -> list[Path]:
    root = Path(os.environ.get("KLPELF_CORPUS") or "~/.cache/klpelf/corpus").expanduser()
    return sorted(root.glob("*/lib/modules/*/kernel/**/*.ko"))


def _arch_root(path: Path) -> Path:
    """``$KLPELF_CORPUS/<arch>`` for a module path below it."""
    while not (path.parent.name == "modules" and path.parent.parent.name == "lib"):
        path = path.parent
    return path.parent.parent.parent


@needs_readelf
@pytest.mark.corpus
def test_corpus_sample_agrees_with_pyelftools() -> None:
    modules = _corpus_modules()
    if not modules:
        pytest.skip("no kernel-module corpus (tests/corpus/fetch.py)")
    arches: dict[Path, list[Path]] = {}
    for path in modules:
        arches.setdefault(_arch_root(path), []).append(path)
    rng = random.Random(0)
    for paths in arches.values():
        small = [p for p in paths if p.stat().st_size < 400_000]
        for path in rng.sample(small, min(5, len(small))):
            out = check_against_pyelftools(path)
            assert out.returncode == 0 and out.warnings == [], (path, out.warnings[:3])
            assert out.symtabs[".symtab"] and out.reloc_sections
