"""klpelf.elf.pointers: what the pointer at (section, offset) points to."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from klpelf.elf.constants import EM, SHT
from klpelf.elf.file import ElfFile
from klpelf.elf.pointers import location, pointer_at, pointers_in, string_at, symbol_at
from klpelf.elf.reader import open_elf
from klpelf.errors import ElfFormatError
from toolchain import Target, assemble

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples/klp_sample"

# The data of a small object: pointers to a string (+2), to a function, to an
# undefined symbol (+5), and a non-pointer word.
DATA = """
    .section .rodata.str1.1,"aMS",{progbits},1
msg: .string "hello"
    .data
    .globl table
table:
    {word} msg + 2
    {word} f
    {word} ext + 5
    {word} 7
"""


def _sym(elf: ElfFile, name: str) -> int:
    tab = elf.symtab
    assert tab is not None
    return tab.names().index(name)


@pytest.mark.parametrize("name", ["klp_sample.ko", "klp_sample_lp.ko"])
def test_klp_func_of_the_sample(name: str) -> None:
    # struct klp_patch patch = { .mod, .objs = objs }; objs[0] = { .name = NULL,
    # .funcs = funcs }; funcs[0] = { .old_name = "cmdline_proc_show",
    # .new_func = livepatch_cmdline_proc_show } (include/linux/livepatch.h, 6.1)
    elf = open_elf(SAMPLES / name)
    tab = elf.symtab
    assert tab is not None
    patch = tab[_sym(elf, "patch")]
    data = elf.sections[patch.shndx]
    assert data.name == ".data"
    mod = pointer_at(elf, data, patch.st_value)
    assert mod is not None and mod.symbol.name == "__this_module" and mod.addend == 0
    objs = pointer_at(elf, data, patch.st_value + 8)  # klp_patch.objs
    assert objs is not None
    objs_at = location(elf, objs)
    assert objs_at is not None and objs_at.section is data
    assert pointer_at(elf, data, objs_at.offset) is None  # klp_object.name: NULL, vmlinux
    funcs = pointer_at(elf, data, objs_at.offset + 8)  # klp_object.funcs
    assert funcs is not None
    funcs_at = location(elf, funcs)
    assert funcs_at is not None
    old_name = pointer_at(elf, data, funcs_at.offset)  # klp_func.old_name
    assert old_name is not None
    assert string_at(elf, old_name) == b"cmdline_proc_show"
    new_func = pointer_at(elf, data, funcs_at.offset + 8)  # klp_func.new_func
    assert new_func is not None
    assert new_func.relocation_section.name == ".rela.data"
    assert new_func.r_type == 1  # R_X86_64_64
    target = symbol_at(elf, new_func)
    assert target is not None and target.name == "livepatch_cmdline_proc_show"
    assert string_at(elf, new_func) is not None  # code bytes, up to a NUL: not a check
    # the whole section at once
    every = pointers_in(elf, data)
    assert every[funcs_at.offset] == old_name and every[funcs_at.offset + 8] == new_func
    assert len(every) == len(elf.relocations(elf.section_by_name(".rela.data")))  # type: ignore[arg-type]


def test_klp_relocations_count_too() -> None:
    # the converted sample: .klp.rela.vmlinux.text targets .text with .rela.text
    elf = open_elf(SAMPLES / "klp_sample_lp.ko")
    text = elf.section_by_name(".text")
    klp = elf.section_by_name(".klp.rela.vmlinux.text")
    assert text is not None and klp is not None
    rt = elf.relocations(klp)
    for i, r in enumerate(rt):
        p = pointer_at(elf, text, r.r_offset)
        assert p is not None and p.relocation_section is klp and p.entry == i
        assert p.symbol.name.startswith(".klp.sym.vmlinux.")
        assert location(elf, p) is None and string_at(elf, p) is None
    assert pointer_at(elf, text, 10**6) is None


def _object(tmp_path: Path, target: Target, word: str, progbits: str = "@progbits") -> ElfFile:
    src = DATA.format(word=word, progbits=progbits)
    return open_elf(assemble(target, tmp_path / f"{target.name}.o", target.asm + src))


def _check_table(elf: ElfFile, word: int) -> None:
    table = elf.symtab[_sym(elf, "table")]  # type: ignore[index]
    data = elf.sections[table.shndx]
    base = table.st_value
    msg = pointer_at(elf, data, base)
    assert msg is not None and msg.addend == 2
    assert string_at(elf, msg) == b"llo"
    f = pointer_at(elf, data, base + word)
    assert f is not None
    assert symbol_at(elf, f) is not None and symbol_at(elf, f).name == "f"  # type: ignore[union-attr]
    ext = pointer_at(elf, data, base + 2 * word)
    assert ext is not None and ext.symbol.name == "ext" and ext.addend == 5
    assert location(elf, ext) is None and string_at(elf, ext) is None
    assert pointer_at(elf, data, base + 3 * word) is None


def test_sht_rel_implicit_addend_i386(tmp_path: Path) -> None:
    t = Target("i386", ["as", "--32"], ".text\n.globl f\nf: ret\n")
    elf = _object(tmp_path, t, ".long")
    assert elf.machine == EM.I386
    assert elf.section_by_name(".rel.data") is not None
    _check_table(elf, 4)


def test_sht_rel_big_endian_arm(tmp_path: Path) -> None:
    t = Target("armeb", ["arm-linux-gnueabihf-as", "-EB"], ".text\n.globl f\nf: bx lr\n")
    elf = _object(tmp_path, t, ".long", "%progbits")
    assert elf.machine == EM.ARM and elf.byteorder == "big"
    rel = elf.section_by_name(".rel.data")
    assert rel is not None and rel.sh_type == SHT.REL
    _check_table(elf, 4)


def test_rela_big_endian_s390x(tmp_path: Path) -> None:
    t = Target("s390x", ["s390x-linux-gnu-as", "-m64"], ".text\n.globl f\nf: br %r14\n")
    elf = _object(tmp_path, t, ".quad")
    assert elf.machine == EM.S390 and elf.byteorder == "big"
    _check_table(elf, 8)


def test_rel_entry_past_the_target(tmp_path: Path) -> None:
    t = Target("i386", ["as", "--32"], ".text\n.globl f\nf: ret\n")
    elf = _object(tmp_path, t, ".long")
    rel = elf.section_by_name(".rel.data")
    assert rel is not None
    raw = bytearray(rel.data)
    struct.pack_into("<I", raw, 0, 0x1000)  # r_offset of entry 0 far past .data
    rel.set_data(bytes(raw))
    data = elf.section_by_name(".data")
    assert data is not None
    with pytest.raises(ElfFormatError, match="no 4-byte addend"):
        pointer_at(elf, data, 0x1000)
