"""Reader and writer on objects made by the system and cross assemblers."""

from __future__ import annotations

from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from klpelf.elf.reader import open_elf, read_elf
from klpelf.elf.writer import write_elf
from toolchain import TARGETS, Target, assemble


@pytest.fixture(params=TARGETS, ids=[t.name for t in TARGETS])
def obj(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    target: Target = request.param
    return assemble(target, tmp_path / f"{target.name}.o")


def test_round_trip_is_byte_identical(obj: Path) -> None:
    data = obj.read_bytes()
    assert write_elf(read_elf(data, path=str(obj))) == data


def test_agrees_with_pyelftools(obj: Path) -> None:
    elf = open_elf(obj)
    with obj.open("rb") as f:
        ref = ELFFile(f)
        assert elf.is64 == (ref.elfclass == 64)
        assert elf.byteorder == ("little" if ref.little_endian else "big")
        assert len(elf.sections) == ref.num_sections()
        for ours, theirs in zip(elf.sections, ref.iter_sections(), strict=True):
            assert ours.name == theirs.name
            for fld in ("sh_type", "sh_flags", "sh_offset", "sh_size", "sh_link", "sh_info",
                        "sh_addralign", "sh_entsize"):  # fmt: skip
                raw = theirs.header[fld]
                if fld == "sh_type" and isinstance(raw, str):
                    continue  # pyelftools names the type; the offset and size checks suffice
                assert getattr(ours, fld) == raw, (ours, fld)
            if isinstance(theirs, SymbolTableSection):
                tab = elf.symbol_table(ours)
                assert len(tab) == theirs.num_symbols()
                for s, t in zip(tab, theirs.iter_symbols(), strict=True):
                    assert (s.name, s.st_value, s.st_size) == (t.name, t["st_value"], t["st_size"])
            if isinstance(theirs, RelocationSection):
                rt = elf.relocations(ours)
                assert len(rt) == theirs.num_relocations()
                for r, rr in zip(rt, theirs.iter_relocations(), strict=True):
                    assert r.r_offset == rr["r_offset"]
                    assert r.sym == rr["r_info_sym"]
                    assert r.type == rr["r_info_type"]
                    if r.r_addend is not None:
                        assert r.r_addend == rr["r_addend"]


def test_many_sections_use_extended_numbering(tmp_path: Path) -> None:
    # Past SHN_LORESERVE (0xff00) sections, e_shnum lives in section 0 and symbols
    # need SHT_SYMTAB_SHNDX.  `as` writes both.
    n = 66000
    src = "".join(f'.section .s{i},"a"\nsym{i}: .byte {i & 0xFF}\n' for i in range(n))
    src += ".globl last\nlast: .byte 0\n"
    obj = assemble(TARGETS[0], tmp_path / "many.o", src)
    data = obj.read_bytes()
    elf = read_elf(data, path=str(obj))
    assert elf.extended_numbering
    assert len(elf.sections) > n
    assert write_elf(elf) == data
    tab = elf.symtab
    assert tab is not None
    shndx = tab.shndx_array
    by_name = {tab.name(i): int(shndx[i]) for i in range(len(tab))}
    assert elf.sections[by_name["sym65999"]].name == ".s65999"
    assert elf.sections[by_name["sym5"]].name == ".s5"
    last = tab[len(tab) - 1]
    assert last.name == "last" and elf.sections[last.shndx].name == ".s65999"
