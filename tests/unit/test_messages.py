"""Messages: what came from the input is escaped and cut, so every problem is one line
and no control byte reaches the terminal (issue 13, messages)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from klpelf.cli import main
from klpelf.elf.reader import open_elf
from klpelf.elf.writer import save_elf

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "klp_sample" / "klp_sample.ko"
CONVERTED = REPO / "samples" / "klp_sample" / "klp_sample_lp.ko"

HOSTILE = "seq\nputs\x1b[31m\r\u2028\x85"
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _module(tmp_path: Path, name: str) -> Path:
    # an annotation whose symbol name carries a newline, an escape sequence, a CR,
    # a Unicode line separator and a C1 control; and a section named the same way
    elf = open_elf(SAMPLE)
    tab = elf.symtab
    assert tab is not None
    tab.set_symbol(tab.names().index("seq_puts"), name=f".klp.sym.vmlinux.{name},0")
    sec = elf.section_by_name(".rodata.str1.1")
    assert sec is not None
    elf.rename_section(sec, f".rodata.{name}")
    out = tmp_path / f"in-{len(name)}.ko"
    save_elf(elf, out, overwrite=True)
    return out


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("command", ["show", "show -r", "check --static", "convert"])
def test_names_with_newlines_and_controls_stay_on_their_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results: list[tuple[int, str, str]] = []
    for name in ("seq_puts", HOSTILE):
        module = _module(tmp_path, name)
        argv = [*command.split(), str(module)]
        if command == "convert":
            argv += ["-o", str(tmp_path / f"out-{len(results)}.ko")]
        results.append(_run(argv, capsys))
    (rc0, out0, err0), (rc1, out1, err1) = results
    assert rc1 == rc0
    # the same number of lines as with an ordinary name: none was split
    assert (out1.count("\n"), err1.count("\n")) == (out0.count("\n"), err0.count("\n"))
    assert CONTROL.search(out1 + err1) is None
    assert "seq\\nputs\\e[31m\\r\\u2028\\x85" in out1 + err1


def test_path_with_a_newline_in_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "a\nb\x1b.ko"
    rc, out, err = _run(["show", str(missing)], capsys)
    assert (rc, out) == (1, "")
    assert err.count("\n") == 1 and "a\\nb\\e.ko" in err


def test_a_huge_malformed_symvers_line_is_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    symvers = tmp_path / "Module.symvers"
    symvers.write_text("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL\t\n" + "x" * 10_000_000 + "\tend\n")
    rc, _, err = _run(
        ["convert", str(SAMPLE), "-o", str(tmp_path / "o.ko"), "--symvers", str(symvers)], capsys
    )
    assert rc == 1 and err.count("\n") == 1
    assert len(err) < 1000  # 10 MB before
    assert f"{symvers}:2: malformed Module.symvers line" in err
    assert "characters cut" in err and err.rstrip().endswith("xxx\\tend'")


def test_sh_info_out_of_range_under_5_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `check --static --kernel-release 5.4` once raised IndexError on a relocation
    # section whose sh_info names no section
    good = CONVERTED.read_bytes()
    (shoff,) = struct.unpack_from("<Q", good, 0x28)
    (shnum,) = struct.unpack_from("<H", good, 0x3C)
    for i in range(1, shnum):
        (sh_type,) = struct.unpack_from("<I", good, shoff + 64 * i + 4)
        if sh_type not in (4, 9):
            continue
        for value in (shnum, 0xFFFFFFFF):
            data = bytearray(good)
            struct.pack_into("<I", data, shoff + 64 * i + 44, value)
            path = tmp_path / "m.ko"
            path.write_bytes(data)
            for release in ("5.4", "6.1"):
                rc = main(["check", "--static", "--kernel-release", release, str(path)])
                _, err = capsys.readouterr()
                assert "internal error" not in err, (i, value, release, err)
                assert rc in (0, 1)
