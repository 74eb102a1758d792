"""The livepatch view and `show` on modules built with the writer: odd and broken klp content."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from corpus.compare import compare_module
from klpelf.cli import main
from klpelf.elf.constants import SHF, SHN, SHT
from klpelf.elf.reader import open_elf
from klpelf.elf.writer import save_elf
from klpelf.klp.module import klp_module
from toolchain import TARGETS, assemble

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples/klp_sample/klp_sample_lp.ko"


def _odd_module(tmp_path: Path) -> Path:
    elf = open_elf(assemble(TARGETS[0], tmp_path / "in.o"))
    tab = elf.symtab
    assert tab is not None
    names = tab.names()
    ext_var, ext_func = names.index("ext_var"), names.index("ext_func")
    tab.set_symbol(ext_var, name=".klp.sym.ext4.ext4_attr_store,1", st_shndx=SHN.LIVEPATCH)
    tab.set_symbol(ext_func, name=".klp.sym.vmlinux.no_sympos", st_shndx=SHN.LIVEPATCH)
    tab.add_symbol(".klp.sym.rela.lp.vmlinux.cmdline_proc_show,0")
    tab.add_symbol(".klp.sym." + "m" * 56 + ".x,0", st_shndx=SHN.LIVEPATCH)
    text = elf.section_by_name(".text")
    assert text is not None
    flags = SHF.ALLOC | SHF.RELA_LIVEPATCH
    elf.add_relocation_section(".klp.rela.ext4.text.ext4_attr_store", text, extra_flags=flags)
    elf.add_relocation_section(".klp.rela..text", text, extra_flags=flags)
    elf.add_relocation_section(".klp.rel.vmlinux.text", text, extra_flags=flags)
    elf.add_section(".klp.arch.vmlinux.altinstructions", SHT.PROGBITS, sh_flags=SHF.ALLOC)
    elf.add_section(".modinfo", SHT.PROGBITS, sh_flags=SHF.ALLOC, data=b"livepatch=N\0name=odd\0")
    out = tmp_path / "odd.ko"
    save_elf(elf, out)
    return out


def test_view_of_odd_module(tmp_path: Path) -> None:
    mod = klp_module(open_elf(_odd_module(tmp_path)))
    assert mod.name == "odd" and mod.is_livepatch and mod.livepatch == "N"
    objs = mod.objects
    assert list(objs) == ["ext4"]
    (sym,) = objs["ext4"].symbols
    assert sym.parsed is not None and (sym.parsed.name, sym.parsed.sympos) == ("ext4_attr_store", 1)
    assert [s.section.name for s in objs["ext4"].sections] == [
        ".klp.rela.ext4.text.ext4_attr_store"
    ]
    bad = {s.symbol.name: s.error for s in mod.symbols if s.parsed is None}
    assert bad == {
        ".klp.sym.vmlinux.no_sympos": "symbol .klp.sym.vmlinux.no_sympos has an incorrectly "
        "formatted name",
        ".klp.sym." + "m" * 56 + ".x,0": f"symbol .klp.sym.{'m' * 56}.x,0 has an incorrectly "
        "formatted name",
    }
    bad_secs = {k.section.name: k.error for k in mod.sections if k.parsed is None}
    assert bad_secs == {
        ".klp.rela..text": "section .klp.rela..text has an incorrectly formatted name",
        ".klp.rel.vmlinux.text": "section .klp.rel.vmlinux.text has an incorrectly formatted name",
    }
    kinds = sorted(o.kind for o in mod.oddities)
    assert kinds == ["annotation-symbol", "draft-rel-section", "klp-arch-section"]


def test_show_odd_module_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _odd_module(tmp_path)
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "livepatch: N" in out
    assert "object ext4:" in out
    assert "[  6] ext4_attr_store  sympos 1  GLOBAL NOTYPE" in out
    assert "symbol .klp.sym.vmlinux.no_sympos has an incorrectly formatted name" in out
    assert "section .klp.rela..text has an incorrectly formatted name" in out
    assert "(no SHF_RELA_LIVEPATCH flag)" not in out
    assert "note: " in out and ".klp.arch sections were removed in Linux 5.8" in out
    assert "klp-convert annotation for vmlinux:cmdline_proc_show,0" in out


@pytest.mark.parametrize("codec", ["xz", "zst", "gz"])
def test_compressed_modules_read_transparently(
    codec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = SAMPLE.read_bytes()
    packed = {
        "xz": lambda: lzma.compress(raw, check=lzma.CHECK_CRC32),
        "zst": lambda: zstandard.ZstdCompressor().compress(raw),
        "gz": lambda: gzip.compress(raw),
    }[codec]()
    path = tmp_path / f"klp_sample_lp.ko.{codec}"
    path.write_bytes(packed)
    assert main(["show", "--json", str(path)]) == 0
    compressed = capsys.readouterr().out
    assert main(["show", "--json", str(SAMPLE)]) == 0
    plain = capsys.readouterr().out
    assert compressed.replace(str(path), "P") == plain.replace(str(SAMPLE), "P")


@pytest.mark.parametrize("pie", [True, False], ids=["ET_DYN", "ET_EXEC"])
def test_linked_executables_agree_with_readelf(pie: bool, tmp_path: Path) -> None:
    # vmlinux is ET_EXEC: its .symtab is what the resolver reads
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src = tmp_path / "p.c"
    src.write_text("static int s; int g = 1; int main(void) { return s + g; }\n")
    exe = tmp_path / "p"
    subprocess.run(
        ["gcc", "-O1", "-fPIE" if pie else "-fno-pie", "-pie" if pie else "-no-pie", "-o", str(exe),
         str(src)], check=True,
    )  # fmt: skip
    assert compare_module(str(exe)) == []
    elf = open_elf(exe)
    assert elf.header.e_type == (3 if pie else 2)
    assert elf.phdr_range is not None
    tab = elf.symtab
    assert tab is not None and "main" in tab.names() and "g" in tab.names()
