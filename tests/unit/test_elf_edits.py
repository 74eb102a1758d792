"""Edits through the model: every output passes readelf and reads back as edited."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from klpelf.elf.constants import SHF, SHN, SHT, STB, STT
from klpelf.elf.file import ElfFile
from klpelf.elf.reader import open_elf, read_elf
from klpelf.elf.relocs import move_relocations
from klpelf.elf.symbols import st_info
from klpelf.elf.writer import save_elf, write_elf
from klpelf.errors import ElfEditError, InputError
from toolchain import TARGETS, Target, assemble, readelf


@pytest.fixture(params=TARGETS, ids=[t.name for t in TARGETS])
def target(request: pytest.FixtureRequest) -> Target:
    t: Target = request.param
    return t


def _reread(elf: ElfFile, tmp_path: Path) -> ElfFile:
    out = tmp_path / "out.o"
    out.write_bytes(write_elf(elf))
    res = readelf(out, "-a")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    return open_elf(out)


def _reloc_names(elf: ElfFile) -> dict[str, list[tuple[int, int, str]]]:
    out: dict[str, list[tuple[int, int, str]]] = {}
    for sec in elf.relocation_sections:
        tab = elf.symbol_table(elf.section(sec.sh_link))
        out[sec.name] = [(r.r_offset, r.type, tab.name(r.sym)) for r in elf.relocations(sec)]
    return out


def test_livepatch_edits(target: Target, tmp_path: Path) -> None:
    elf = open_elf(assemble(target, tmp_path / "in.o"))
    before = _reloc_names(elf)
    tab = elf.symtab
    assert tab is not None
    n_before = len(tab)
    ext = tab.names().index("ext_var" if "ext_var" in tab.names() else "ext_func")
    ext_name = tab.name(ext)

    # rename + mark SHN_LIVEPATCH in place: the index does not move
    klp_name = f".klp.sym.vmlinux.{ext_name},0"
    tab.set_symbol(ext, name=klp_name, st_shndx=SHN.LIVEPATCH)
    # a new global symbol is appended, a new local is inserted before the globals
    g = tab.add_symbol(".klp.sym.vmlinux.other,2", st_shndx=SHN.LIVEPATCH)
    assert g == n_before
    loc = tab.add_symbol("a_new_local", st_info=st_info(STB.LOCAL, STT.NOTYPE), st_shndx=SHN.ABS)
    assert loc < tab.first_global

    # move the relocations against the klp symbol into a new klp relocation section
    text = elf.section_by_name(".text")
    assert text is not None
    rel = next(s for s in elf.relocation_sections if s.sh_info == text.index)
    klp = elf.add_relocation_section(
        ".klp.rela.vmlinux.text", text, rela=rel.sh_type == SHT.RELA,
        extra_flags=SHF.ALLOC | SHF.RELA_LIVEPATCH,
    )  # fmt: skip
    rt = elf.relocations(rel)
    ext_now = tab.names().index(klp_name)
    mask = rt.sym_array == ext_now
    moved = move_relocations(elf, rel, klp, mask)
    assert moved > 0
    elf.rename_section(text, ".text.patched")
    mi = elf.add_section(".modinfo", SHT.PROGBITS, sh_flags=SHF.ALLOC, data=b"license=GPL\0")
    assert elf.modinfo is not None and mi.index == len(elf.sections) - 1
    elf.modinfo.set("livepatch", "Y")

    back = _reread(elf, tmp_path)
    btab = back.symtab
    assert btab is not None
    assert btab[ext + (1 if ext >= loc else 0)].name == klp_name
    assert btab[ext + (1 if ext >= loc else 0)].st_shndx == SHN.LIVEPATCH
    assert btab.name(len(btab) - 1) == ".klp.sym.vmlinux.other,2"
    assert back.sections[text.index].name == ".text.patched"
    after = _reloc_names(back)
    # every relocation still names the same symbol as before (renamed where edited)
    old = sorted(before[rel.name])
    new = sorted(after[rel.name] + after[".klp.rela.vmlinux.text"])
    rename = {ext_name: klp_name}
    assert new == sorted((o, t, rename.get(s, s)) for o, t, s in old)
    assert all(s == klp_name for _, _, s in after[".klp.rela.vmlinux.text"])
    assert back.modinfo is not None and back.modinfo.get("livepatch") == "Y"
    assert back.section_by_name(".klp.rela.vmlinux.text") is not None
    # writing the re-read file changes nothing
    assert write_elf(back) == Path(back.path or "").read_bytes()


def test_binding_order_is_kept(tmp_path: Path) -> None:
    elf = open_elf(assemble(TARGETS[0], tmp_path / "in.o"))
    tab = elf.symtab
    assert tab is not None
    with pytest.raises(ElfEditError, match="order of locals before globals"):
        tab.set_symbol(len(tab) - 1, st_info=st_info(STB.LOCAL, STT.NOTYPE))
    first = tab.first_global
    tab.set_symbol(first, st_info=st_info(STB.LOCAL, STT.NOTYPE))  # at the boundary: allowed
    assert tab.first_global == first + 1
    _reread(elf, tmp_path)


def test_modinfo_replace_keeps_offsets(tmp_path: Path) -> None:
    elf = open_elf(assemble(TARGETS[0], tmp_path / "in.o"))
    data = b"license=GPL\0\0\0livepatch=N\0vermagic=6.1.0 SMP\0"
    elf.add_section(".modinfo", SHT.PROGBITS, sh_flags=SHF.ALLOC, data=data)
    mi = elf.modinfo
    assert mi is not None
    assert mi.get("livepatch") == "N" and mi.get("missing") is None
    mi.set("livepatch", "Y")  # fits in place
    assert bytes(elf.section_by_name(".modinfo").data).startswith(  # type: ignore[union-attr]
        b"license=GPL\0\0\0livepatch=Y\0vermagic"
    )
    mi.set("license", "GPL v2")  # longer: blanked in place, appended
    raw = bytes(elf.section_by_name(".modinfo").data)  # type: ignore[union-attr]
    assert raw.index(b"livepatch=Y") == data.index(b"livepatch=N")
    assert raw.endswith(b"license=GPL v2\0")
    assert mi.get_all("license") == ["GPL v2"]
    mi.add("alias", "a")
    mi.add("alias", "b")
    assert mi.get_all("alias") == ["a", "b"]
    back = _reread(elf, tmp_path).modinfo
    assert back is not None and back.get("license") == "GPL v2" and back.get("livepatch") == "Y"


def test_move_between_sections_targeting_the_same_section(tmp_path: Path) -> None:
    elf = open_elf(assemble(TARGETS[0], tmp_path / "in.o"))
    text = elf.section_by_name(".text")
    assert text is not None
    rel = next(s for s in elf.relocation_sections if s.sh_info == text.index)
    a = elf.add_relocation_section(".klp.rela.vmlinux.text", text, extra_flags=SHF.RELA_LIVEPATCH)
    b = elf.add_relocation_section(".klp.rela.mod.text", text, extra_flags=SHF.RELA_LIVEPATCH)
    n = len(elf.relocations(rel))
    mask = np.zeros(n, dtype=bool)
    mask[0] = True
    move_relocations(elf, rel, a, mask)
    mask = np.zeros(n - 1, dtype=bool)
    mask[-1] = True
    move_relocations(elf, rel, b, mask)
    back = _reread(elf, tmp_path)
    counts = [len(back.relocations(s)) for s in back.relocation_sections if s.sh_info == text.index]
    assert counts == [n - 2, 1, 1]
    with pytest.raises(ElfEditError, match="mask has"):
        move_relocations(elf, rel, a, np.zeros(n + 5, dtype=bool))


def test_save_is_atomic_and_never_overwrites_by_default(tmp_path: Path) -> None:
    src = assemble(TARGETS[0], tmp_path / "in.o")
    orig = src.read_bytes()
    elf = open_elf(src)
    elf.rename_section(elf.sections[1], ".text.x")
    with pytest.raises(InputError, match="refusing to overwrite"):
        save_elf(elf, src)
    assert src.read_bytes() == orig
    save_elf(elf, src, overwrite=True)
    assert src.read_bytes() != orig
    assert read_elf(src.read_bytes()).sections[1].name == ".text.x"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_signature_trailer_round_trips_and_can_be_stripped(tmp_path: Path) -> None:
    src = assemble(TARGETS[0], tmp_path / "in.o")
    signed = src.read_bytes() + b"\x01\x02PKCS7...~Module signature appended~\n"
    elf = read_elf(signed)
    assert elf.has_module_signature
    assert write_elf(elf) == signed
    elf.rename_section(elf.sections[1], ".text.longer.name.than.before")
    assert write_elf(elf).endswith(b"~Module signature appended~\n")
    elf.strip_signature()
    out = write_elf(elf)
    assert not read_elf(out).has_module_signature
