"""Bad input: one line naming the file and the problem, exit status 1, never a traceback."""

from __future__ import annotations

import gzip
import lzma
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from klpelf import io as klpio
from klpelf.cli import main
from klpelf.elf.reader import read_elf
from toolchain import TARGETS, assemble

# Offsets in an ELF64 little-endian header / section header.
E_SHOFF, E_SHENTSIZE, E_SHNUM, E_SHSTRNDX = 0x28, 0x3A, 0x3C, 0x3E
SH_SIZE = 64
SH_TYPE, SH_OFFSET, SH_SIZE_FIELD, SH_LINK, SH_INFO, SH_ENTSIZE = 4, 0x18, 0x20, 0x28, 0x2C, 0x38


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return assemble(TARGETS[0], tmp_path_factory.mktemp("bad") / "good.o").read_bytes()


def _shdr(data: bytes, i: int) -> int:
    (shoff,) = struct.unpack_from("<Q", data, E_SHOFF)
    return int(shoff) + i * SH_SIZE


def _section_index(data: bytes, sh_type: int) -> int:
    (shnum,) = struct.unpack_from("<H", data, E_SHNUM)
    for i in range(shnum):
        if struct.unpack_from("<I", data, _shdr(data, i) + SH_TYPE)[0] == sh_type:
            return i
    raise AssertionError(sh_type)


def _patch(data: bytes, off: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


def _sec_patch(sh_type: int, field: int, fmt: str, value: int) -> Callable[[bytes], bytes]:
    def f(d: bytes) -> bytes:
        return _patch(d, _shdr(d, _section_index(d, sh_type)) + field, fmt, value)

    return f


def _strtab_without_nul(d: bytes) -> bytes:
    # make the last byte of .strtab non-NUL
    i = _section_index(d, 2)  # symtab
    link = struct.unpack_from("<I", d, _shdr(d, i) + SH_LINK)[0]
    off = struct.unpack_from("<Q", d, _shdr(d, link) + SH_OFFSET)[0]
    size = struct.unpack_from("<Q", d, _shdr(d, link) + SH_SIZE_FIELD)[0]
    return _patch(d, off + size - 1, "<B", ord("x"))


def _bad_reloc_symbol(d: bytes) -> bytes:
    i = _section_index(d, 4)  # first SHT_RELA
    off = struct.unpack_from("<Q", d, _shdr(d, i) + SH_OFFSET)[0]
    return _patch(d, off + 8, "<Q", (0xFFFF << 32) | 2)  # r_info: symbol 65535, type PC32


def _bad_symbol_shndx(d: bytes) -> bytes:
    i = _section_index(d, 2)
    off = struct.unpack_from("<Q", d, _shdr(d, i) + SH_OFFSET)[0]
    return _patch(d, off + 24 + 6, "<H", 0x7000)  # symbol 1: st_shndx 0x7000


CASES: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("empty", lambda d: b"", "file is empty"),
    ("bad-magic", lambda d: b"\x7fELG" + d[4:], "not an ELF file"),
    ("truncated-header", lambda d: d[:40], "truncated"),
    ("truncated-sections", lambda d: d[: len(d) // 2], "past the end of the file"),
    ("bad-class", lambda d: _patch(d, 4, "<B", 7), "unknown ELF class 7"),
    ("bad-data", lambda d: _patch(d, 5, "<B", 9), "unknown ELF data encoding 9"),
    ("shoff-past-end", lambda d: _patch(d, E_SHOFF, "<Q", 1 << 40), "past the end of the file"),
    ("absurd-shnum", lambda d: _patch(d, E_SHNUM, "<H", 0xFEFF), "extends past the end"),
    ("bad-shentsize", lambda d: _patch(d, E_SHENTSIZE, "<H", 12), "e_shentsize is 12"),
    (
        "bad-shstrndx",
        lambda d: _patch(d, E_SHSTRNDX, "<H", 0xFE00),
        "e_shstrndx 65024 is out of range",
    ),
    ("section-past-end", _sec_patch(1, SH_SIZE_FIELD, "<Q", 1 << 50), "extend past the end"),
    ("symtab-entsize-0", _sec_patch(2, SH_ENTSIZE, "<Q", 0), "sh_entsize is 0, expected 24"),
    ("rela-entsize-0", _sec_patch(4, SH_ENTSIZE, "<Q", 0), "sh_entsize is 0, expected 24"),
    ("symtab-odd-size", _sec_patch(2, SH_SIZE_FIELD, "<Q", 25), "not a multiple of the entry size"),
    ("symtab-link-range", _sec_patch(2, SH_LINK, "<I", 999), "sh_link 999 is out of range"),
    ("symtab-info-range", _sec_patch(2, SH_INFO, "<I", 999), "sh_info 999"),
    ("strtab-no-nul", _strtab_without_nul, "not NUL-terminated"),
    ("reloc-symbol-range", _bad_reloc_symbol, "symbol index 65535 is out of range"),
    ("symbol-shndx-range", _bad_symbol_shndx, "section index 28672 is out of range"),
    ("xz-garbage", lambda d: b"\xfd7zXZ\x00garbage", "corrupt xz data"),
    ("gzip-not-elf", lambda d: gzip.compress(b"hello"), "not an ELF file"),
]


@pytest.mark.parametrize(("name", "mutate", "message"), CASES, ids=[c[0] for c in CASES])
def test_one_clear_line(
    name: str,
    mutate: Callable[[bytes], bytes],
    message: str,
    good: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / f"{name}.ko"
    path.write_bytes(mutate(good))
    assert main(["show", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"klpelf: {path}: ")
    assert message in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("which", ["missing", "directory"])
def test_unreadable_paths(which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.ko" if which == "missing" else tmp_path
    assert main(["show", str(path)]) == 1
    err = capsys.readouterr().err
    expected = "No such file or directory" if which == "missing" else "is a directory"
    assert err == f"klpelf: {path}: {expected}\n"


def test_decompression_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(klpio, "MAX_DECOMPRESSED", 1 << 20)
    path = tmp_path / "bomb.ko.xz"
    path.write_bytes(lzma.compress(b"\0" * (8 << 20)))
    assert main(["show", str(path)]) == 1
    assert "decompresses to more than" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["show"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2


def test_fuzzed_headers_never_crash(good: bytes) -> None:
    # Every single-byte change in the ELF header and the first section headers gives
    # either a model or a KlpError: never another exception.
    from klpelf.errors import KlpError

    (shoff,) = struct.unpack_from("<Q", good, E_SHOFF)
    spots = list(range(64)) + list(range(int(shoff), int(shoff) + 4 * SH_SIZE))
    for off in spots:
        for val in (0x00, 0x01, 0x7F, 0xFF):
            b = bytearray(good)
            b[off] = val
            try:
                elf = read_elf(bytes(b), path="fuzz")
                if elf.symtab is not None:
                    elf.symtab.names()
                for s in elf.relocation_sections:
                    list(elf.relocations(s))
            except KlpError:
                pass
