"""One source of truth for a section's bytes: every edit drops the views it changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from klpelf.elf.constants import SHF, SHT
from klpelf.elf.reader import open_elf, read_elf
from klpelf.elf.relocs import move_relocations
from klpelf.elf.writer import write_elf
from klpelf.errors import ElfEditError, ElfFormatError
from toolchain import TARGETS, assemble

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples/klp_sample/klp_sample_lp.ko"


def test_shrunk_relocation_section_is_read_again() -> None:
    elf = open_elf(SAMPLE)
    sec = elf.section_by_name(".rela.text")
    assert sec is not None
    rt = elf.relocations(sec)
    assert len(rt) == 13 and len(rt.syms()) == 13
    first = rt[0]
    sec.set_data(bytes(sec.data[: elf.layout.rela_size]))
    now = elf.relocations(sec)
    assert len(now) == 1 and list(now) == [first] and now.offsets() == [first.r_offset]
    assert len(elf.relocations_as_rela(sec)) == 1
    out = read_elf(write_elf(elf))
    assert len(out.relocations(out.sections[sec.index])) == 1


def test_as_rela_view_follows_the_bytes() -> None:
    elf = open_elf(SAMPLE)
    sec = elf.section_by_name(".rela.text")
    assert sec is not None
    sec.sh_type = SHT.REL  # read as Elf_Rela all the same: its own view
    view = elf.relocations_as_rela(sec)
    assert len(view) == 13
    sec.set_data(bytes(sec.data[: 2 * elf.layout.rela_size]))
    assert len(elf.relocations_as_rela(sec)) == 2


def test_symbol_renamed_by_a_new_string_table() -> None:
    elf = open_elf(SAMPLE)
    tab = elf.symtab
    assert tab is not None
    i = tab.names().index("patch")
    rela = elf.section_by_name(".rela.data")
    assert rela is not None
    before = list(elf.relocations(rela))
    strtab = tab.strtab.section
    data = bytes(strtab.data)
    at = tab[i].st_name
    strtab.set_data(data[:at] + b"pitch" + data[at + 5 :])
    now = elf.symtab
    assert now is not None and now is not tab
    assert now.name(i) == "pitch" and now.names()[i] == "pitch" and now[i].name == "pitch"
    assert list(elf.relocations(rela)) == before  # the relocations did not change
    # an edit through the new view lands in the new table
    now.set_symbol(i, name="patch2")
    back = read_elf(write_elf(elf)).symtab
    assert back is not None and back.name(i) == "patch2"


def test_replaced_symbol_table_rechecks_the_relocations() -> None:
    elf = open_elf(SAMPLE)
    tab = elf.symtab
    assert tab is not None
    rela = elf.section_by_name(".rela.text")
    assert rela is not None
    assert len(elf.relocations(rela)) == 13
    keep = tab.section.sh_info  # only the locals: the relocations name globals
    tab.section.set_data(bytes(tab.section.data[: keep * elf.layout.sym_size]))
    now = elf.symtab
    assert now is not None and len(now) == keep
    with pytest.raises(ElfFormatError, match=r"symbol index .* is out of range"):
        elf.relocations(rela)


def test_modinfo_follows_set_data() -> None:
    elf = open_elf(SAMPLE)
    mi = elf.modinfo
    assert mi is not None and mi.get("livepatch") == "Y"
    mi.section.set_data(b"license=GPL\0name=other\0")
    now = elf.modinfo
    assert now is not None and now is not mi
    assert now.get("livepatch") is None and now.get("name") == "other"
    now.set("livepatch", "Y")  # an own edit keeps the view
    assert elf.modinfo is now and now.get_all("name") == ["other"]


def test_new_shstrtab_renames_the_sections() -> None:
    elf = open_elf(SAMPLE)
    shstr = elf.sections[elf.header.e_shstrndx]
    text = elf.section_by_name(".text")
    assert text is not None
    data = bytes(shstr.data)
    at = text.sh_name
    assert data[at : at + 6] == b".text\0"
    shstr.set_data(data[:at] + b".tExt" + data[at + 5 :])
    assert text.name == ".tExt" and elf.section_by_name(".text") is None
    elf.rename_section(text, ".text.new")
    back = read_elf(write_elf(elf))
    assert back.sections[text.index].name == ".text.new"
    with pytest.raises(ElfFormatError, match="past the end"):
        shstr.set_data(b"\0")


def test_own_edits_keep_the_view() -> None:
    elf = open_elf(SAMPLE)
    tab = elf.symtab
    assert tab is not None
    text = elf.section_by_name(".text")
    rela = elf.section_by_name(".rela.text")
    assert text is not None and rela is not None
    klp = elf.add_relocation_section(
        ".klp.rela.vmlinux.text2", text, extra_flags=SHF.ALLOC | SHF.RELA_LIVEPATCH
    )
    src, dst = elf.relocations(rela), elf.relocations(klp)
    moved = [src[1], src[4]]
    assert move_relocations(elf, rela, klp, [4, 1]) == 2  # any order: moved in order
    assert elf.relocations(rela) is src and elf.relocations(klp) is dst
    assert len(src) == 11 and list(dst) == moved
    tab.set_symbol(1, name="renamed")
    assert elf.symtab is tab and tab.name(1) == "renamed"
    assert elf.strtab(tab.strtab.section) is tab.strtab
    with pytest.raises(ElfEditError, match="relocation index 11 out of range"):
        move_relocations(elf, rela, klp, [11])
    with pytest.raises(ElfEditError, match="NUL byte"):
        tab.set_symbol(1, name="a\0b")


def test_unmodified_round_trip_is_byte_identical(tmp_path: Path) -> None:
    for path in (SAMPLE, assemble(TARGETS[0], tmp_path / "x.o")):
        data = Path(path).read_bytes()
        elf = read_elf(data)
        elf.decode_all()
        assert elf.symtab is not None
        elf.symtab.names()
        assert elf.modinfo is None or elf.modinfo.get("vermagic") is not None
        assert write_elf(elf) == data
