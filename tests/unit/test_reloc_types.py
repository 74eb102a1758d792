"""klpelf.elf.reloc_types against GNU readelf 2.40 as the oracle.

Two oracles:

* objects assembled by the (cross) GNU assemblers from ``.reloc`` directives
  naming every relocation type the assembler accepts, then read back with
  ``readelf -W -r``: readelf's Type column must be our display of the type in
  the Info column, and the type must be the number we give the written name;
* hand-built ET_REL objects holding one relocation of every r_type in a range
  (0..4095 on ELF64, 0..255 on ELF32, plus a few huge ones), for every machine
  including LoongArch, which bookworm has no assembler for.

Both need readelf; the tables mirror readelf 2.40, so with another readelf the
oracle tests skip.  The remaining tests are plain unit tests.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from klpelf.elf.constants import EM
from klpelf.elf.reloc_types import (
    _READELF_2_40,
    READELF_VERSION,
    reloc_type_display,
    reloc_type_field,
    reloc_type_name,
    reloc_type_value,
)

READELF = shutil.which("readelf")


def _readelf_version() -> str | None:
    if READELF is None:
        return None
    out = subprocess.run([READELF, "--version"], capture_output=True, text=True, check=True)
    # "GNU readelf (GNU Binutils for Debian) 2.40"
    match = re.search(r"\s(\d+\.\d+)(?:\.\d+)?\S*$", out.stdout.splitlines()[0])
    return match.group(1) if match else None


READELF_FOUND_VERSION = _readelf_version()

needs_readelf_2_40 = pytest.mark.skipif(
    READELF_FOUND_VERSION != READELF_VERSION,
    reason=(
        f"the tables mirror GNU readelf {READELF_VERSION}; "
        + ("no readelf on PATH" if READELF is None else f"found readelf {READELF_FOUND_VERSION}")
    ),
)


# --- reading `readelf -W -r` -------------------------------------------------


@dataclass(frozen=True)
class Row:
    offset: int
    r_type: int
    rest: str  # the line from the Type column on


_ROW64 = re.compile(r"([0-9a-f]{16})  ([0-9a-f]{16}) ")
_ROW32 = re.compile(r"([0-9a-f]{8})  ([0-9a-f]{8}) ")


def readelf_rows(path: Path, is64: bool) -> list[Row]:
    assert READELF is not None
    out = subprocess.run(
        [READELF, "-W", "-r", str(path)], capture_output=True, text=True, check=True
    ).stdout
    pattern = _ROW64 if is64 else _ROW32
    rows = []
    for line in out.splitlines():
        match = pattern.match(line)
        if match is None:
            continue
        info = int(match.group(2), 16)
        r_type = info & 0xFFFFFFFF if is64 else info & 0xFF
        rows.append(Row(int(match.group(1), 16), r_type, line[match.end() :]))
    return rows


def type_column(rest: str) -> str:
    """readelf's Type text without its padding (only "unrecognized: x" has a space)."""
    prefix = "unrecognized: "
    if rest.startswith(prefix):
        return prefix + rest[len(prefix) :].split(maxsplit=1)[0]
    return rest.split(maxsplit=1)[0]


def check_row(machine: int, row: Row) -> None:
    assert reloc_type_display(machine, row.r_type) == type_column(row.rest), row
    field = reloc_type_field(machine, row.r_type)
    assert row.rest.startswith(field), (field, row)
    assert len(row.rest) == len(field) or row.rest[len(field)] == " ", (field, row)


# --- oracle 1: the GNU assemblers ---------------------------------------------


@dataclass(frozen=True)
class Gas:
    id: str
    programs: tuple[str, ...]  # first one found on PATH is used
    flags: tuple[str, ...]
    machine: int
    is64: bool
    min_accepted: int  # how many of our names binutils 2.40's gas took

    def names(self) -> list[str]:
        table = _READELF_2_40[self.machine]
        if self.machine == EM.AARCH64:  # LP64 takes the 256+ names, ILP32 the P32 ones
            return [n for t, n in table.items() if (t == 0 or t >= 256) == self.is64]
        return list(table.values())


GAS = [
    Gas("x86_64", ("x86_64-linux-gnu-as", "as"), ("--64",), EM.X86_64, True, 45),
    Gas("aarch64", ("aarch64-linux-gnu-as",), (), EM.AARCH64, True, 110),
    Gas("aarch64_ilp32", ("aarch64-linux-gnu-as",), ("-mabi=ilp32",), EM.AARCH64, False, 71),
    Gas("ppc64le", ("powerpc64le-linux-gnu-as",), ("-a64", "-mlittle"), EM.PPC64, True, 161),
    Gas("ppc64", ("powerpc64-linux-gnu-as",), ("-a64", "-mbig"), EM.PPC64, True, 161),
    Gas("s390x", ("s390x-linux-gnu-as",), ("-m64",), EM.S390, True, 62),
    Gas("i386", ("i686-linux-gnu-as",), ("--32",), EM.I386, False, 35),
    Gas("arm", ("arm-linux-gnueabi-as", "arm-linux-gnueabihf-as"), (), EM.ARM, False, 124),
    Gas("ppc", ("powerpc-linux-gnu-as",), ("-a32",), EM.PPC, False, 106),
    Gas("riscv64", ("riscv64-linux-gnu-as",), (), EM.RISCV, True, 53),
]


def _find(programs: tuple[str, ...]) -> str | None:
    for program in programs:
        found = shutil.which(program)
        if found is not None:
            return found
    return None


_GAS_ERROR = re.compile(r":(\d+): Error: ")


@needs_readelf_2_40
@pytest.mark.parametrize("gas", GAS, ids=[g.id for g in GAS])
def test_gas_reloc_directives_match_readelf(gas: Gas, tmp_path: Path) -> None:
    assembler = _find(gas.programs)
    if assembler is None:
        pytest.skip(f"no {' or '.join(gas.programs)} on PATH (Debian: binutils-<target>)")
    names = gas.names()
    source = tmp_path / "relocs.s"
    obj = tmp_path / "relocs.o"

    def assemble(names: list[str]) -> subprocess.CompletedProcess[str]:
        # Line 1 is ".text"; name i sits on line 2 + 2 * i, at offset 8 * i.
        lines = [".text"]
        for name in names:
            lines += [f".reloc ., {name}, sym", ".skip 8"]
        source.write_text("\n".join(lines) + "\n")
        return subprocess.run(
            [assembler, *gas.flags, "-o", str(obj), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )

    result = assemble(names)
    if result.returncode != 0:
        # Drop the names this gas refuses ("unrecognized reloc type") and retry.
        refused = {(int(n) - 2) // 2 for n in _GAS_ERROR.findall(result.stderr)}
        assert refused, result.stderr
        names = [n for i, n in enumerate(names) if i not in refused]
        result = assemble(names)
        assert result.returncode == 0, result.stderr
    assert len(names) >= gas.min_accepted

    rows = readelf_rows(obj, gas.is64)
    by_offset = {8 * i: name for i, name in enumerate(names)}
    assert {row.offset for row in rows} >= set(by_offset)
    for row in rows:
        check_row(gas.machine, row)
        name = by_offset.get(row.offset)
        if name is not None:
            assert reloc_type_value(gas.machine, name) == row.r_type, (name, row)
            assert reloc_type_name(gas.machine, row.r_type) == name


# --- oracle 2: one relocation of every r_type ----------------------------------


def build_rel_object(machine: int, is64: bool, little: bool, rela: bool, types: list[int]) -> bytes:
    """A minimal ET_REL: .text, .symtab (one global "sym"), .strtab, .rel[a].text."""
    e = "<" if little else ">"
    rel_name = b".rela.text" if rela else b".rel.text"
    shstrtab = b"\0.text\0.symtab\0.strtab\0" + rel_name + b"\0.shstrtab\0"
    strtab = b"\0sym\0"
    text = bytes(16)
    if is64:
        symbols = struct.pack(e + "IBBHQQ", 0, 0, 0, 0, 0, 0)
        symbols += struct.pack(e + "IBBHQQ", 1, 0x10, 0, 0, 0, 0)  # GLOBAL NOTYPE UND
        relocs = b"".join(
            struct.pack(e + "QQ", 0, (1 << 32) | t) + (struct.pack(e + "q", 0) if rela else b"")
            for t in types
        )
        ehsize, shentsize, symentsize, relentsize = 64, 64, 24, 24 if rela else 16
    else:
        symbols = struct.pack(e + "IIIBBH", 0, 0, 0, 0, 0, 0)
        symbols += struct.pack(e + "IIIBBH", 1, 0, 0, 0x10, 0, 0)
        relocs = b"".join(
            struct.pack(e + "II", 0, (1 << 8) | t) + (struct.pack(e + "i", 0) if rela else b"")
            for t in types
        )
        ehsize, shentsize, symentsize, relentsize = 52, 40, 16, 12 if rela else 8

    body = b""
    offsets = []
    for blob in (text, symbols, strtab, relocs, shstrtab):
        body += bytes(-(ehsize + len(body)) % 8)
        offsets.append(ehsize + len(body))
        body += blob
    body += bytes(-(ehsize + len(body)) % 8)
    shoff = ehsize + len(body)

    def name(n: bytes) -> int:
        return shstrtab.index(n + b"\0")

    sections = [
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (name(b".text"), 1, 0x6, 0, offsets[0], len(text), 0, 0, 4, 0),
        (name(b".symtab"), 2, 0, 0, offsets[1], len(symbols), 3, 1, 8, symentsize),
        (name(b".strtab"), 3, 0, 0, offsets[2], len(strtab), 0, 0, 1, 0),
        (name(rel_name), 4 if rela else 9, 0x40, 0, offsets[3], len(relocs), 2, 1, 8, relentsize),
        (name(b".shstrtab"), 3, 0, 0, offsets[4], len(shstrtab), 0, 0, 1, 0),
    ]
    shdr = e + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII")
    headers = b"".join(struct.pack(shdr, *s) for s in sections)
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1 if little else 2, 1]) + bytes(9)
    ehdr = e + ("HHIQQQIHHHHHH" if is64 else "HHIIIIIHHHHHH")
    header = ident + struct.pack(
        ehdr, 1, machine, 1, 0, 0, shoff, 0, ehsize, 0, 0, shentsize, len(sections), 5
    )
    return header + body + headers


@dataclass(frozen=True)
class Layout:
    id: str
    machine: int
    is64: bool
    little: bool
    rela: bool


LAYOUTS = [
    Layout("x86_64", EM.X86_64, True, True, True),
    Layout("l1om", 180, True, True, True),
    Layout("k1om", 181, True, True, True),
    Layout("i386", EM.I386, False, True, False),
    Layout("iamcu", 6, False, True, False),
    Layout("aarch64", EM.AARCH64, True, True, True),
    Layout("aarch64_ilp32", EM.AARCH64, False, True, True),
    Layout("arm", EM.ARM, False, True, False),
    Layout("ppc64", EM.PPC64, True, False, True),
    Layout("ppc64le", EM.PPC64, True, True, True),
    Layout("ppc", EM.PPC, False, False, True),
    Layout("s390x", EM.S390, True, False, True),
    Layout("s390", EM.S390, False, False, True),
    Layout("s390_old", 0xA390, True, False, True),
    Layout("riscv64", EM.RISCV, True, True, True),
    Layout("riscv32", EM.RISCV, False, True, True),
    Layout("loongarch64", EM.LOONGARCH, True, True, True),
    Layout("loongarch32", EM.LOONGARCH, False, True, True),
    Layout("unknown_machine", 0x7FFF, True, True, True),
]


@needs_readelf_2_40
@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay.id for lay in LAYOUTS])
def test_every_r_type_matches_readelf(layout: Layout, tmp_path: Path) -> None:
    if layout.is64:
        types = [*range(4096), 0x10000, 0x1234567, 0x7FFFFFFF, 0xFFFFFFFF]
    else:
        types = list(range(256))
    path = tmp_path / "every.o"
    path.write_bytes(
        build_rel_object(layout.machine, layout.is64, layout.little, layout.rela, types)
    )
    rows = readelf_rows(path, layout.is64)
    assert [row.r_type for row in rows] == types
    for row in rows:
        check_row(layout.machine, row)


# --- plain unit tests ----------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "r_type", "name"),
    [
        (EM.X86_64, 2, "R_X86_64_PC32"),
        (EM.X86_64, 4, "R_X86_64_PLT32"),
        (EM.X86_64, 11, "R_X86_64_32S"),
        (EM.AARCH64, 283, "R_AARCH64_CALL26"),
        (EM.AARCH64, 282, "R_AARCH64_JUMP26"),
        (EM.AARCH64, 275, "R_AARCH64_ADR_PREL_PG_HI21"),
        (EM.PPC64, 10, "R_PPC64_REL24"),
        (EM.PPC64, 109, "R_PPC64_TOCSAVE"),
        (EM.PPC64, 50, "R_PPC64_TOC16_HA"),
        (EM.S390, 19, "R_390_PC32DBL"),
        (EM.S390, 20, "R_390_PLT32DBL"),
        (EM.S390, 65, "R_390_PLT24DBL"),
        (EM.I386, 2, "R_386_PC32"),
        (EM.ARM, 28, "R_ARM_CALL"),
        (EM.PPC, 10, "R_PPC_REL24"),
        (EM.RISCV, 19, "R_RISCV_CALL_PLT"),
        # LoongArch, checked by hand against include/elf/loongarch.h and the
        # kernel's arch/loongarch/include/asm/elf.h (no assembler in bookworm).
        (EM.LOONGARCH, 0, "R_LARCH_NONE"),
        (EM.LOONGARCH, 2, "R_LARCH_64"),
        (EM.LOONGARCH, 22, "R_LARCH_SOP_PUSH_PCREL"),
        (EM.LOONGARCH, 29, "R_LARCH_SOP_PUSH_PLT_PCREL"),
        (EM.LOONGARCH, 42, "R_LARCH_SOP_POP_32_S_10_16_S2"),
        (EM.LOONGARCH, 51, "R_LARCH_ADD64"),
        (EM.LOONGARCH, 56, "R_LARCH_SUB64"),
        (EM.LOONGARCH, 64, "R_LARCH_B16"),
        (EM.LOONGARCH, 66, "R_LARCH_B26"),
        (EM.LOONGARCH, 71, "R_LARCH_PCALA_HI20"),
        (EM.LOONGARCH, 72, "R_LARCH_PCALA_LO12"),
        (EM.LOONGARCH, 75, "R_LARCH_GOT_PC_HI20"),
        (EM.LOONGARCH, 99, "R_LARCH_32_PCREL"),
        (EM.LOONGARCH, 100, "R_LARCH_RELAX"),
    ],
)
def test_known_names(machine: int, r_type: int, name: str) -> None:
    assert reloc_type_name(machine, r_type) == name
    assert reloc_type_display(machine, r_type) == name
    assert reloc_type_value(machine, name) == r_type
    assert reloc_type_field(machine, r_type) == name.ljust(22)


def test_unknown_type_display() -> None:
    assert reloc_type_name(EM.X86_64, 252) is None
    assert reloc_type_display(EM.X86_64, 252) == "unrecognized: fc"
    assert reloc_type_field(EM.X86_64, 252) == "unrecognized: fc     "
    assert reloc_type_display(EM.S390, 0xFFFFFFFF) == "unrecognized: ffffffff"
    assert reloc_type_field(EM.S390, 0xFFFFFFFF) == "unrecognized: ffffffff"
    assert reloc_type_display(EM.AARCH64, 0x1234567) == "unrecognized: 1234567"
    # readelf masks with 0xffffffff before printing.
    assert reloc_type_display(EM.PPC64, (1 << 32) | 0x2B) == "unrecognized: 2b"


def test_unknown_machine() -> None:
    assert reloc_type_name(EM.NONE, 1) is None
    assert reloc_type_name(0x7FFF, 0) is None
    assert reloc_type_display(0x7FFF, 0) == "unrecognized: 0"
    assert reloc_type_value(0x7FFF, "R_X86_64_PC32") is None


def test_long_names_are_not_truncated() -> None:
    name = "R_AARCH64_TLSLD_LDST128_DTPREL_LO12_NC"
    assert len(name) > 22
    assert reloc_type_display(EM.AARCH64, 573) == name
    assert reloc_type_field(EM.AARCH64, 573) == name


def test_machine_aliases() -> None:
    for machine in (180, 181):  # EM_L1OM, EM_K1OM
        assert reloc_type_display(machine, 2) == "R_X86_64_PC32"
    assert reloc_type_display(6, 2) == "R_386_PC32"  # EM_IAMCU
    assert reloc_type_value(0xA390, "R_390_PC32DBL") == 19  # EM_S390_OLD


def test_aarch64_quirks() -> None:
    # One table for both ABIs: an ELF64 r_type 1 prints with its ILP32 name.
    assert reloc_type_display(EM.AARCH64, 1) == "R_AARCH64_P32_ABS32"
    # binutils: 0 is NONE, 256 is NULL (the kernel calls 256 R_AARCH64_NONE).
    assert reloc_type_display(EM.AARCH64, 0) == "R_AARCH64_NONE"
    assert reloc_type_display(EM.AARCH64, 256) == "R_AARCH64_NULL"
    assert reloc_type_value(EM.AARCH64, "R_AARCH64_NONE") == 0
    # Aliases are accepted by name but never displayed.
    assert reloc_type_value(EM.AARCH64, "R_AARCH64_TLS_DTPMOD") == 1028
    assert reloc_type_display(EM.AARCH64, 1028) == "R_AARCH64_TLS_DTPMOD64"
    assert reloc_type_value(EM.AARCH64, "R_AARCH64_TLSDESC_LD64_LO12_NC") == 563
    assert reloc_type_display(EM.AARCH64, 563) == "R_AARCH64_TLSDESC_LD64_LO12"


@pytest.mark.parametrize(
    ("machine", "r_type", "name"),
    [
        (EM.X86_64, 43, "R_X86_64_CODE_4_GOTPCRELX"),
        (EM.X86_64, 51, "R_X86_64_CODE_6_GOTPC32_TLSDESC"),
        (EM.RISCV, 60, "R_RISCV_SET_ULEB128"),
        (EM.RISCV, 61, "R_RISCV_SUB_ULEB128"),
        (EM.LOONGARCH, 102, "R_LARCH_ALIGN"),
        (EM.LOONGARCH, 107, "R_LARCH_ADD_ULEB128"),
        (EM.LOONGARCH, 110, "R_LARCH_CALL36"),
        (EM.LOONGARCH, 14, "R_LARCH_TLS_DESC64"),
    ],
)
def test_types_named_after_2_40(machine: int, r_type: int, name: str) -> None:
    assert reloc_type_name(machine, r_type) == name
    assert reloc_type_value(machine, name) == r_type
    assert reloc_type_display(machine, r_type) == f"unrecognized: {r_type:x}"


def test_reverse_lookup_is_exact() -> None:
    assert reloc_type_value(EM.X86_64, "r_x86_64_pc32") is None
    assert reloc_type_value(EM.X86_64, "R_AARCH64_CALL26") is None
    assert reloc_type_value(EM.S390, "R_390_PC32DBL") == 19
