"""Memory and time stay linear in the input (issue 13, resources): hostile modules that
multiplied the work of every reader, each run as the CLI in a child process that
reports its own peak RSS and time."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# the sample without its DWARF (a few KiB): the hostile parts dominate
SEED = (REPO / "tests" / "fuzz" / "seeds" / "klp_sample_lp.ko").read_bytes()
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")

_MEASURE = """
import json, sys, time
from klpelf.cli import main
start = time.monotonic()
rc = main(sys.argv[1:])
# VmHWM, this process's own peak: ru_maxrss keeps the forking parent's across exec
hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
peak = int(hwm.split()[1]) // 1024
print(json.dumps({"rc": rc, "seconds": time.monotonic() - start, "mb": peak}), file=sys.stderr)
"""


def _run(argv: list[str]) -> tuple[dict[str, float], str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    done = subprocess.run([sys.executable, "-c", _MEASURE, *argv], check=False, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    *lines, figures = done.stderr.strip().splitlines()
    return json.loads(figures), "\n".join(lines)


class _Module:
    """The seed's sections, to be given new contents and headers."""

    def __init__(self) -> None:
        shoff = struct.unpack_from("<Q", SEED, 0x28)[0]
        shnum, self.shstrndx = struct.unpack_from("<HH", SEED, 0x3C)
        self.body = bytearray(SEED[:shoff])
        self.headers = [list(_SHDR.unpack_from(SEED, shoff + i * 64)) for i in range(shnum)]
        names = self.headers[self.shstrndx]
        table = SEED[names[4] : names[4] + names[5]]
        self.index = {table[h[0] : table.index(0, h[0])].decode(): i
                      for i, h in enumerate(self.headers)}  # fmt: skip

    def contents(self, name: str) -> bytes:
        h = self.headers[self.index[name]]
        return SEED[h[4] : h[4] + h[5]]

    def put(self, name: str, data: bytes) -> None:
        """New contents for section ``name``, appended to the file."""
        h = self.headers[self.index[name]]
        h[4], h[5] = len(self.body), len(data)
        self.body += data

    def write(self, path: Path) -> Path:
        body = bytearray(self.body)
        body += bytes(-len(body) % 8)
        struct.pack_into("<Q", body, 0x28, len(body))
        struct.pack_into("<H", body, 0x3C, len(self.headers))
        for h in self.headers:
            body += _SHDR.pack(*h)
        path.write_bytes(body)
        return path


def test_overlapping_relocation_sections_are_refused(tmp_path: Path) -> None:
    # 6,000 headers naming one 2,000-entry relocation table: check ran for minutes
    # and ~10 GB; refused now, from the headers alone
    m = _Module()
    entries = m.contents(".klp.rela.vmlinux.text")
    m.put(".klp.rela.vmlinux.text", (entries * 500)[: 2000 * 24])
    m.headers += [list(m.headers[m.index[".klp.rela.vmlinux.text"]]) for _ in range(6000)]
    path = m.write(tmp_path / "overlap.ko")
    for argv in (["check", "--static"], ["show", "-r"]):
        figures, err = _run([*argv, str(path)])
        assert figures["rc"] == 1
        assert re.fullmatch(
            f"klpelf: {re.escape(str(path))}: symbol and relocation sections add up to "
            f"0x[0-9a-f]+ bytes, more than 2 times the file's size \\({path.stat().st_size:#x}\\): "
            "their contents overlap",
            err,
        ), err
        assert figures["seconds"] < 10 and figures["mb"] < 200, figures


def test_many_sections_are_linear(tmp_path: Path) -> None:
    # 15,000 section headers (copies of .text) and 4,000 small klp relocation sections:
    # a search over every section for each section (the relocation tables of a section,
    # the symbol table of a klp section) took show 60 s, check 36 s
    m = _Module()
    m.headers += [list(m.headers[m.index[".text"]]) for _ in range(15_000)]
    entries = m.contents(".klp.rela.vmlinux.text")
    m.headers += [list(m.headers[m.index[".klp.rela.vmlinux.text"]]) for _ in range(4000)]
    assert len(entries) == 4 * 24
    path = m.write(tmp_path / "many.ko")
    for argv in (["check", "--static"], ["show", "-r"], ["show", "--json"]):
        figures, _ = _run([*argv, str(path)])
        assert figures["seconds"] < 20 and figures["mb"] < 200, (argv, figures)


def test_symbols_sharing_one_long_name(tmp_path: Path) -> None:
    # 20,000 symbols naming one 50 KB string: each reader's per-name work made
    # show take ~10 GB; the names' total is bounded by the tables' size
    m = _Module()
    strtab = m.contents(".strtab")
    long_name = b".klp.sym.vmlinux." + b"x" * 50_000 + b",0\0"
    m.put(".strtab", strtab + long_name)
    symbol = _SYM.pack(len(strtab), 0x10, 0, 0xFF20, 0, 0)
    m.put(".symtab", m.contents(".symtab") + symbol * 20_000)
    path = m.write(tmp_path / "names.ko")
    for argv in (["show"], ["check", "--static"], ["convert", "-o", str(tmp_path / "o.ko")]):
        figures, err = _run([*argv, str(path)])
        assert figures["rc"] == 1, argv
        assert "the symbols' names add up to more than" in err, err
        assert figures["seconds"] < 10 and figures["mb"] < 200, (argv, figures)


def test_real_modules_keep_within_the_bounds() -> None:
    # the budgets refuse nothing a linker writes: the sample with its DWARF (large
    # relocation and string tables) reads whole
    from klpelf.elf.reader import open_elf

    elf = open_elf(REPO / "samples" / "klp_sample" / "klp_sample.ko")
    tab = elf.symtab
    assert tab is not None and len(tab.names()) == len(tab)
    assert all(elf.relocations(s) is not None for s in elf.sections if s.is_relocation)


@pytest.mark.parametrize("command", ["check", "convert"])
def test_a_4_mb_undefined_name_in_kallsyms(command: str, tmp_path: Path) -> None:
    # one undefined symbol named by 4 MB, used by a relocation, and a kallsyms that
    # lists it: the targeted reader built a trie node per byte (~900 MB)
    m = _Module()
    strtab = m.contents(".strtab")
    name = b"y" * (4 << 20)
    m.put(".strtab", strtab + name + b"\0")
    symtab = m.contents(".symtab")
    m.put(".symtab", symtab + _SYM.pack(len(strtab), 0x10, 0, 0, 0, 0))
    rela = bytearray(m.contents(".rela.text"))
    info = struct.unpack_from("<Q", rela, 8)[0]
    struct.pack_into("<Q", rela, 8, (len(symtab) // 24) << 32 | (info & 0xFFFFFFFF))
    m.put(".rela.text", bytes(rela))
    path = m.write(tmp_path / "long.ko")
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_bytes(b"ffffffff81000000 T _stext\nffffffff81000700 t " + name + b"\n")
    symvers = tmp_path / "Module.symvers"
    symvers.write_text("".join(f"0x12345678\t{s}\tvmlinux\tEXPORT_SYMBOL\t\n" for s in
                               ("__fentry__", "__x86_return_thunk", "klp_enable_patch",
                                "seq_printf", "seq_puts")))  # fmt: skip
    argv = (["check", "-k", str(kallsyms), str(path)] if command == "check" else
            ["convert", str(path), "-o", str(tmp_path / "o.ko"), "-k", str(kallsyms),
             "--symvers", str(symvers)])  # fmt: skip
    figures, err = _run(argv)
    assert figures["rc"] == 1
    assert "\n" not in err
    assert figures["seconds"] < 20 and figures["mb"] < 250, figures
