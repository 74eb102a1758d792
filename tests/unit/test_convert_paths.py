"""convert and the table edits: the plain-Python and numpy paths write the same bytes,
and ``klpelf convert`` of a livepatch-sized module imports no numpy."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import test_convert

from klpelf.elf import arrays
from klpelf.elf.constants import SHF, SHN, STB, STT
from klpelf.elf.file import ElfFile
from klpelf.elf.reader import read_elf
from klpelf.elf.relocs import move_relocations
from klpelf.elf.symbols import st_info
from klpelf.elf.writer import write_elf
from klpelf.klp.convert import convert_annotations
from klpelf.symbols.symtext import SCAN_MIN_BYTES
from toolchain import TARGETS, Target, assemble

REPO = Path(__file__).resolve().parents[2]
UNCONVERTED = REPO / "samples/klp_sample/klp_sample.ko"
SCALAR, VECTOR = 1 << 62, 0


@contextmanager
def _path(threshold: int) -> Iterator[None]:
    saved = arrays.VECTOR_THRESHOLD
    arrays.VECTOR_THRESHOLD = threshold
    try:
        yield
    finally:
        arrays.VECTOR_THRESHOLD = saved


def _both(data: bytes, edit: Callable[[ElfFile], object]) -> bytes:
    """``edit`` on the plain-Python path and on the numpy path: the same output bytes."""
    out = []
    for threshold in (SCALAR, VECTOR):
        with _path(threshold):
            elf = read_elf(data, path="m.ko")
            assert arrays.use_vector(elf) == (threshold == VECTOR)
            edit(elf)
            out.append(bytes(write_elf(elf)))
            if threshold == SCALAR:  # numpy never came into the edits
                assert all(t._array is None for t in elf._relocs.values())
                assert all(t._array is None for t in elf._symtabs.values())
    assert out[0] == out[1]
    return out[0]


def _convert(elf: ElfFile) -> None:
    convert_annotations(elf)


def test_convert_sample_both_paths() -> None:
    data = UNCONVERTED.read_bytes()
    out = _both(data, _convert)
    assert out != data
    assert _both(out, _convert) == out  # idempotent both ways


@pytest.mark.parametrize("arch", sorted(test_convert.ARCHES))
def test_convert_corpus_like_objects_both_paths(arch: str, tmp_path: Path) -> None:
    data = test_convert._compile(arch, tmp_path).read_bytes()
    assert _both(data, _convert) != data


def _edits(elf: ElfFile) -> None:
    # every table edit: rename, add a global and a local (renumbers the relocations),
    # move entries by index and by mask, then undo a move with take/extend
    tab = elf.symtab
    assert tab is not None
    ext = tab.names().index("ext_func")
    tab.set_symbol(ext, name=".klp.sym.vmlinux.ext_func,0", st_shndx=SHN.LIVEPATCH)
    tab.add_symbol(".klp.sym.vmlinux.other,1", st_shndx=SHN.LIVEPATCH)
    tab.add_symbol("new_local", st_info=st_info(STB.LOCAL, STT.NOTYPE), st_shndx=SHN.ABS)
    for sec in list(elf.relocation_sections):
        target = elf.sections[sec.sh_info]
        rt = elf.relocations(sec)
        if not len(rt) or not target.is_alloc:
            continue
        klp = elf.add_relocation_section(
            ".klp.rela.vmlinux" + target.name, target, rela=rt.is_rela,
            extra_flags=SHF.ALLOC | SHF.RELA_LIVEPATCH,
        )  # fmt: skip
        move_relocations(elf, sec, klp, [len(rt) - 1])
        rest = elf.relocations(sec)
        move_relocations(elf, sec, klp, [i == 0 for i in range(len(rest))])
        elf.relocations(sec).extend(elf.relocations(klp).take([0]))


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_table_edits_both_paths(target: Target, tmp_path: Path) -> None:
    data = assemble(target, tmp_path / "in.o").read_bytes()
    _both(data, _edits)


def test_xindex_edits_both_paths(tmp_path: Path) -> None:
    n = 66000  # past SHN_LORESERVE sections: SHT_SYMTAB_SHNDX
    src = "".join(f'.section .s{i},"a"\nsym{i}: .byte {i & 0xFF}\n' for i in range(n))
    src += ".globl last\nlast: .byte 0\n.quad ext\n"
    data = assemble(TARGETS[0], tmp_path / "many.o", src).read_bytes()

    def edit(elf: ElfFile) -> None:
        tab = elf.symtab
        assert tab is not None
        tab.add_symbol("glob", st_shndx=SHN.XINDEX, xindex=n - 5)
        tab.add_symbol("loc", st_info=st_info(STB.LOCAL, STT.NOTYPE), st_shndx=SHN.XINDEX,
                       xindex=n - 7)  # fmt: skip
        tab.set_symbol(tab.names().index("sym12"), name="sym12b")

    out = read_elf(_both(data, edit))
    tab = out.symtab
    assert tab is not None
    names = tab.names()
    assert tab[names.index("glob")].shndx == n - 5 and tab[names.index("loc")].shndx == n - 7
    assert out.sections[tab[names.index("sym65999")].shndx].name == ".s65999"


# --- `klpelf convert` of a small module imports no numpy ------------------------------


def _imports(argv: list[str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "KLPELF_VECTOR_THRESHOLD"}
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "klpelf", *argv],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines()]
    assert "klpelf.klp.convert" in imported and "klpelf.elf.relocs" in imported
    return imported


def test_convert_does_not_import_numpy(tmp_path: Path) -> None:
    imported = _imports(["convert", str(UNCONVERTED), "-o", str(tmp_path / "lp.ko")])
    assert not [m for m in imported if m.split(".")[0] == "numpy"]


def _kernel_symbols(tmp_path: Path, *, filler: int = 0) -> list[str]:
    # a kallsyms and Module.symvers: the sample's undefined symbols are vmlinux
    # exports, its .klp.sym. names stay as they are; ``filler`` module lines make the
    # kallsyms as large as a real one (a real /proc/kallsyms is 5-15 MB)
    elf = read_elf(UNCONVERTED.read_bytes())
    tab = elf.symtab
    assert tab is not None
    undef = [tab.name(i) for i in tab.indices_where_shndx(SHN.UNDEF) if i]
    plain = [n for n in undef if n and not n.startswith(".klp.")]
    (tmp_path / "kallsyms").write_text(
        "ffffffff81000000 T _stext\n"
        + "".join(f"ffffffff81{i:06x} T {n}\n" for i, n in enumerate(plain, 1))
        + "".join(f"ffffffffc0{i:06x} t filler_{i}\t[filler]\n" for i in range(filler))
    )
    (tmp_path / "Module.symvers").write_text(
        "".join(f"0x{i:08x}\t{n}\tvmlinux\tEXPORT_SYMBOL\t\n" for i, n in enumerate(plain, 1))
    )
    return ["--kernel", str(tmp_path / "kallsyms"), "--symvers", str(tmp_path / "Module.symvers")]


def test_automatic_convert_imports_numpy_only_for_symbols(tmp_path: Path) -> None:
    # klp/ and elf/ bring no numpy in; the kallsyms table of symbols/ still does
    args = _kernel_symbols(tmp_path)
    imported = _imports(["convert", str(UNCONVERTED), "-o", str(tmp_path / "lp.ko"), *args])
    first_numpy = next((i for i, m in enumerate(imported) if m.split(".")[0] == "numpy"), None)
    if first_numpy is not None:
        # importtime lists a module after what it imported: the importer comes next
        importer = next(m for m in imported[first_numpy:] if m.startswith("klpelf."))
        assert importer.startswith("klpelf.symbols."), importer


def test_automatic_convert_does_not_import_numpy(tmp_path: Path) -> None:
    # with a kallsyms of a real one's size, read name by name (the targeted reader of
    # symbols/symtext.py); a test-sized file under SCAN_MIN_BYTES gets the full index,
    # which is numpy's (test_automatic_convert_imports_numpy_only_for_symbols)
    args = _kernel_symbols(tmp_path, filler=SCAN_MIN_BYTES // 30)
    assert (tmp_path / "kallsyms").stat().st_size >= SCAN_MIN_BYTES
    imported = _imports(["convert", str(UNCONVERTED), "-o", str(tmp_path / "lp.ko"), *args])
    assert not [m for m in imported if m.split(".")[0] == "numpy"]
