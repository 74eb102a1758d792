"""convert never exits 0 writing a file that klpelf itself then rejects (issue 13):
inputs no convert can make loadable are refused, and what it writes reads back."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from klpelf.cli import main
from klpelf.elf.constants import SHT
from klpelf.elf.reader import open_elf, read_elf
from klpelf.elf.writer import save_elf, write_elf
from klpelf.errors import KlpError
from klpelf.klp.check import check_module
from klpelf.klp.convert import convert_annotations
from klpelf.release import KernelRelease

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "klp_sample" / "klp_sample.ko"
GOOD = SAMPLE.read_bytes()
(SHOFF,) = struct.unpack_from("<Q", GOOD, 0x28)
(SHNUM,) = struct.unpack_from("<H", GOOD, 0x3C)
FIELDS = {"type": (4, "<I"), "offset": (24, "<Q"), "size": (32, "<Q")}


def _get(data: bytes | bytearray, i: int, field: str) -> int:
    off, fmt = FIELDS[field]
    (value,) = struct.unpack_from(fmt, data, SHOFF + 64 * i + off)
    return int(value)


def _put(data: bytearray, i: int, field: str, value: int) -> None:
    off, fmt = FIELDS[field]
    struct.pack_into(fmt, data, SHOFF + 64 * i + off, value)


def _index(name: str) -> int:
    sec = read_elf(GOOD).section_by_name(name)
    assert sec is not None
    return sec.index


def _convert(data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    src, out = tmp_path / "in.ko", tmp_path / "out.ko"
    src.write_bytes(data)
    out.unlink(missing_ok=True)
    rc = main(["convert", str(src), "-o", str(out)])
    err = capsys.readouterr().err
    if rc != 0:
        assert not out.exists()
    return rc, err


def test_section_0_not_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(GOOD)
    _put(data, 0, "type", SHT.PROGBITS)
    _put(data, 0, "size", 16)
    rc, err = _convert(bytes(data), tmp_path, capsys)
    assert rc == 1 and err.count("\n") == 1
    assert "the kernel would refuse this module: ELF Spec violation: section 0 type(1)" in err


def test_modinfo_that_is_not_a_data_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(GOOD)
    _put(data, _index(".modinfo"), "type", SHT.NOBITS)
    rc, err = _convert(bytes(data), tmp_path, capsys)
    assert rc == 1 and err.count("\n") == 1
    assert ".modinfo is SHT_NOBITS, not a data section: livepatch=Y cannot be added" in err


def test_modinfo_last_entry_without_its_nul(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # no livepatch entry, and the last entry (vermagic) runs to the section's end
    elf = open_elf(SAMPLE)
    sec = elf.section_by_name(".modinfo")
    assert sec is not None
    vermagic = "6.1.0-56-amd64 SMP preempt mod_unload modversions "
    sec.set_data(b"license=GPL\0name=klp_sample\0vermagic=" + vermagic.encode())
    src = tmp_path / "unterminated.ko"
    save_elf(elf, src)
    out = tmp_path / "out.ko"
    assert main(["convert", str(src), "-o", str(out)]) == 0
    assert "modinfo livepatch=Y added" in capsys.readouterr().out
    mi = open_elf(out).modinfo
    assert mi is not None
    assert (mi.get("vermagic"), mi.get("livepatch")) == (vermagic, "Y")  # not glued
    res = check_module(open_elf(out), version=KernelRelease(6, 1))
    assert not res.errors, [d.message for d in res.errors]


def test_nonzero_bytes_before_the_section_header_table(tmp_path: Path) -> None:
    # The writer copied the input's bytes between the last section and the header
    # table over the klp relocation section it had just added there.
    data = bytearray(GOOD[:SHOFF] + b"\xaa" * 64 + GOOD[SHOFF:])
    struct.pack_into("<Q", data, 0x28, SHOFF + 64)
    elf = read_elf(bytes(data), path="x")
    convert_annotations(elf)
    back = read_elf(bytes(write_elf(elf)), path="y")
    back.decode_all()
    assert [s.name for s in back.sections] == [s.name for s in elf.sections]
    for old, new in zip(elf.sections, back.sections, strict=True):
        if old.sh_type != SHT.NOBITS:
            assert bytes(new.data) == bytes(old.data), old.name
    assert not check_module(back, version=KernelRelease(6, 1)).errors


def test_overlapping_sections_either_refused_or_read_back() -> None:
    # Section b moved onto section a's bytes: convert refuses the input with a
    # KlpError, or what it writes reads back (every table) and checks without one.
    rng = random.Random(13)
    pairs = [(a, b) for a in range(1, SHNUM) for b in range(1, SHNUM)
             if a != b and _get(GOOD, b, "type") != SHT.NOBITS]  # fmt: skip
    for a, b in rng.sample(pairs, 250):
        data = bytearray(GOOD)
        _put(data, b, "offset", _get(data, a, "offset"))
        try:
            elf = read_elf(bytes(data), path="in")
            convert_annotations(elf)
            out = write_elf(elf)
        except KlpError:
            continue
        back = read_elf(bytes(out), path="out")
        back.decode_all()  # show reads every table: a KlpError here fails the test
        check_module(back, version=KernelRelease(6, 1))
