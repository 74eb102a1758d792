"""kallsyms and System.map text: parsing, format detection, malformed lines, real System.map."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klpelf.errors import SymbolSourceError
from klpelf.symbols._index import NameIndex, keys_of, name_keys
from klpelf.symbols.kallsyms import is_ignored_symbol, parse_symbol_text
from klpelf.symbols.sources import load_sources

KALLSYMS = b"""\
ffffffff81000000 T _stext
ffffffff81000010 t helper
ffffffff81000020 T schedule
ffffffff81000030 t helper
ffffffff81000040 W weak_fn
0000000000000000 A fixed_percpu_data
ffffffffc0001000 t helper\t[ext4]
ffffffffc0001010 T ext4_attr_store\t[ext4]
ffffffffc0002000 t helper\t[ext4]
ffffffffc0100000 t nfsd_open\t[nfsd]
ffffffffc0201000 t ftrace_trampoline\t[__builtin__ftrace]
"""

SYSTEM_MAP = b"""\
0000000000000000 D __per_cpu_start
0000000000000000 D fixed_percpu_data
00000000000001ea A kexec_control_code_size
ffffffff81000000 T _stext
ffffffff81000010 t helper
ffffffff82000000 D kallsyms_names
ffffffff82000010 D kallsyms_num_syms
"""

CORPUS = Path.home() / ".cache/klpelf/corpus"


def test_kallsyms_rows_addresses_and_modules() -> None:
    t = parse_symbol_text(KALLSYMS, "kallsyms")
    assert t.kind == "kallsyms" and len(t) == 11 and not t.zeroed
    assert t.modules == ["ext4", "nfsd", "__builtin__ftrace"]
    assert t.vmlinux_count == 6
    rows = t.rows("helper")
    assert rows == [1, 3, 6, 8]
    assert [int(t.module[r]) for r in rows] == [-1, -1, 0, 0]
    assert int(t.address[2]) == 0xFFFFFFFF81000020 and chr(t.type[2]) == "T"
    assert t.rows("nope") == [] and t.rows("") == []


def test_system_map_detected_by_kallsyms_tables() -> None:
    t = parse_symbol_text(SYSTEM_MAP, "/boot/System.map-6.1.0-56-amd64")
    assert t.kind == "System.map"
    # since Linux 6.x /proc/kallsyms lists the tables too: without module lines or a
    # System.map name the content is ambiguous, and kallsyms is the safe reading
    assert parse_symbol_text(SYSTEM_MAP, "map").kind == "kallsyms"
    # the same lines without the kallsyms_* tables read as kallsyms
    assert parse_symbol_text(SYSTEM_MAP.split(b"ffffffff82")[0], "x").kind == "kallsyms"
    assert parse_symbol_text(SYSTEM_MAP, "x", kind="kallsyms").kind == "kallsyms"


def test_zeroed_kallsyms() -> None:
    zeroed = b"".join(b"0" * 16 + line[16:] + b"\n" for line in KALLSYMS.splitlines())
    t = parse_symbol_text(zeroed, "kallsyms")
    assert t.zeroed and t.kind == "kallsyms"


@pytest.mark.parametrize(
    "text",
    [
        b"c0100000 T schedule\nc0100010 t helper\n",  # 32-bit addresses
        b"ffffffff81000000 T schedule\r\nffffffff81000010 t helper\r\n",  # CRLF
        b"ffffffff81000000 T schedule\n\nffffffff81000010 t helper",  # blank line, no final NL
        b"1000 T schedule\nffffffff81000010 t helper\n",  # widths differ (general path)
        b"FFFFFFFF81000000 T schedule\nffffffff81000010 t helper\n",  # upper-case hex
    ],
    ids=["32-bit", "crlf", "blank-line", "mixed-widths", "upper-hex"],
)
def test_line_variants(text: bytes) -> None:
    t = parse_symbol_text(text, "x")
    assert len(t) == 2
    (s,) = t.rows("schedule")
    (h,) = t.rows("helper")
    assert int(t.address[h]) in (0xC0100010, 0xFFFFFFFF81000010)
    assert int(t.address[s]) in (0xC0100000, 0xFFFFFFFF81000000, 0x1000)


@pytest.mark.parametrize(
    ("text", "lineno"),
    [
        (b"ffffffff81000000 T ok\nffffffff8100000g T bad_hex\n", 2),
        (b"ffffffff81000000 T ok\nffffffff81000000 T two words\n", 2),
        (b"ffffffff81000000 T ok\nffffffff81000000 T\n", 2),
        (b"ffffffff81000000 T ok\nffffffff81000000  T name\n", 2),
        (b"ffffffff81000000 T ok\nffffffff81000000 T name\t[mod\n", 2),
        (b"ffffffff81000000 T ok\nffffffff81000000 T name\tmod]\n", 2),
        (b"ffffffff81000000 T ok\nffffffff81000000 T name\t[]\n", 2),
        (b"ffffffff81000000 T ok\n\nffffffff81000000 % name\n", 3),
        (b"ffffffff81000000 T ok\n11112222333344445 T toolong\n", 2),
        (b"ffffffff81000000 T ok\nffffffff81000000\n", 2),
        (b"not a symbol file at all\n", 1),
    ],
    ids=["hex", "space-in-name", "no-name", "two-spaces", "module-open", "module-close",
         "module-empty", "type-after-blank", "address-17-digits", "address-only", "prose"],
)  # fmt: skip
def test_malformed_line_names_file_and_line(text: bytes, lineno: int) -> None:
    with pytest.raises(SymbolSourceError) as exc:
        parse_symbol_text(text, "dump.txt")
    assert exc.value.lineno == lineno
    assert str(exc.value).startswith(f"dump.txt:{lineno}: malformed symbol line")
    assert "\n" not in str(exc.value)


def test_empty_file() -> None:
    with pytest.raises(SymbolSourceError, match="no symbol lines"):
        parse_symbol_text(b"\n\n", "empty")


def test_load_sources_reports_prose_as_not_a_source(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello world\n")
    with pytest.raises(SymbolSourceError) as exc:
        load_sources([str(p)])
    assert (
        str(exc.value) == f"{p}: not a kernel symbol source (expected /proc/kallsyms, "
        "System.map, Module.symvers, available_filter_functions, a vmlinux or module ELF file, "
        "or a module directory)"
    )
    p.write_text("ffffffff81000000 T ok\nffffffff81000000 T two words\n")
    with pytest.raises(SymbolSourceError, match=r":2: malformed symbol line"):
        load_sources([str(p)])


def test_is_ignored_symbol() -> None:
    assert is_ignored_symbol("kallsyms_names", "D")
    assert is_ignored_symbol("kexec_control_code_size", "A")
    assert not is_ignored_symbol("__gp", "A")
    assert is_ignored_symbol("__efistub_foo", "T")
    assert is_ignored_symbol("foo_veneer", "t")
    assert is_ignored_symbol("x.long_branch.y", "t")
    assert is_ignored_symbol("undef", "U") and is_ignored_symbol("dbg", "N")
    assert not is_ignored_symbol("schedule", "T")


def test_index_matches_a_dict() -> None:
    rng = random.Random(7)
    alphabet = "ab_.x"
    names = ["".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 7, 8, 9, 16, 17, 40])))
             for _ in range(3000)]  # fmt: skip
    buf = "".join(n + "\n" for n in names).encode()
    end = np.cumsum([len(n) + 1 for n in names]) - 1
    start = end - np.array([len(n) for n in names])
    expect: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        expect.setdefault(n, []).append(i)
    queries = [n.encode() for n in expect] + [b"zzz"]
    answers = [*expect.values(), []]
    # the first lookups scan; later ones use the sorted keys
    index = NameIndex(buf, start.astype(np.int64), end.astype(np.int64))
    assert index.rows_many(queries) == answers
    for _ in range(NameIndex.SCANS):
        index.rows(b"a")
    assert index.rows_many(queries) == answers
    assert [index.rows(q) for q in queries] == answers
    # the key of a name in a buffer equals the key of the name alone
    k = name_keys(np.frombuffer(buf, np.uint8), start.astype(np.int64), end.astype(np.int64))
    assert (k == keys_of([n.encode() for n in names])).all()


def _corpus_system_maps() -> list[tuple[str, Path]]:
    manifest = CORPUS / "manifest.json"
    if not manifest.exists():
        return []
    info = json.loads(manifest.read_text())
    return [(arch, Path(v["system_map"])) for arch, v in sorted(info.items())]


@pytest.mark.corpus
@pytest.mark.parametrize("arch", ["amd64", "arm64", "ppc64el", "s390x"])
def test_real_system_map(arch: str) -> None:
    maps = dict(_corpus_system_maps())
    if arch not in maps:
        pytest.skip(f"no corpus System.map for {arch} (run tests/corpus/fetch.py)")
    path = maps[arch]
    raw = path.read_bytes()
    t = parse_symbol_text(raw, str(path))
    assert t.kind == "System.map" and t.vmlinux_count == len(raw.splitlines())
    # every line agrees with a plain split
    lines = raw.splitlines()
    for i in random.Random(arch).sample(range(len(lines)), 500):
        addr, type_, name = lines[i].decode().split()
        rows = t.rows(name)
        assert i in rows
        assert int(t.address[i]) == int(addr, 16) and chr(t.type[i]) == type_
    counts: dict[str, int] = {}
    for line in lines:
        name = line.rsplit(b" ", 1)[1].decode()
        counts[name] = counts.get(name, 0) + 1
    for name, c in random.Random(1).sample(sorted(counts.items()), 300):
        assert len(t.rows(name)) == c


_NAME = st.text(alphabet="abcxyz_.$0123456789", min_size=1, max_size=40)
_LINE = st.tuples(
    st.integers(0, 2**64 - 1),
    st.sampled_from("TtDdRrBbWwVvAa?"),
    _NAME,
    st.one_of(st.none(), st.sampled_from(["ext4", "nfsd", "snd_hda_intel", "bpf"])),
)


@given(
    lines=st.lists(_LINE, min_size=1, max_size=60),
    width=st.sampled_from([16, 8, None]),
    crlf=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_parse_agrees_with_split(
    lines: list[tuple[int, str, str, str | None]], width: int | None, crlf: bool
) -> None:
    out = []
    for addr, type_, name, mod in lines:
        a = f"{addr:016x}" if width == 16 else f"{addr & 0xFFFFFFFF:08x}" if width else f"{addr:x}"
        out.append(f"{a} {type_} {name}" + (f"\t[{mod}]" if mod else ""))
    text = ("\r\n" if crlf else "\n").join(out).encode()
    t = parse_symbol_text(text, "x")
    assert len(t) == len(lines)
    for row, (addr, type_, name, mod) in enumerate(lines):
        expect = addr & 0xFFFFFFFF if width == 8 else addr
        assert int(t.address[row]) == expect and chr(t.type[row]) == type_
        assert row in t.rows(name)
        assert (t.modules[t.module[row]] if t.module[row] >= 0 else None) == mod


@given(st.lists(st.sampled_from([b"ffffffff81000000", b"0", b" ", b"T", b"\t", b"[m]", b"\n",
                                 b"name", b"]", b"[", b"\r", b"zz", b"\x00", b"\xff"]),
                max_size=30))  # fmt: skip
@settings(max_examples=500, deadline=None)
def test_garbage_never_crashes(pieces: list[bytes]) -> None:
    try:
        t = parse_symbol_text(b"".join(pieces), "fuzz")
    except SymbolSourceError as e:
        assert e.path == "fuzz" and "\n" not in str(e)
    else:
        assert len(t) >= 1


def _vm_dumps() -> list[Path]:
    # the harness's dumps: kallsyms (vmlinux) and kallsyms.modules (a module loaded);
    # kallsyms.vmlinuz beside them is its cache stamp, not a dump
    root = Path.home() / ".cache/klpelf/vm"
    return sorted(p for name in ("kallsyms", "kallsyms.modules") for p in root.glob(f"*/{name}"))


@pytest.mark.corpus
def test_real_proc_kallsyms_dumps() -> None:
    """The /proc/kallsyms dumps the real-kernel harness saved, read back line by line."""
    dumps = _vm_dumps()
    if not dumps:
        pytest.skip("no /proc/kallsyms dump in ~/.cache/klpelf/vm (run the tests/kernel harness)")
    for path in dumps:
        raw = path.read_bytes()
        t = parse_symbol_text(raw, str(path))
        assert t.kind == "kallsyms" and not t.zeroed
        lines = raw.decode().splitlines()
        assert len(t) == len(lines)
        mods = set()
        for row, line in enumerate(lines):
            head, _, mod = line.partition("\t")
            addr, type_, name = head.split(" ")
            assert int(t.address[row]) == int(addr, 16) and chr(t.type[row]) == type_
            got = t.modules[t.module[row]] if t.module[row] >= 0 else ""
            assert got == mod.strip("[]")
            mods.add(got)
            if row % 97 == 0:
                assert row in t.rows(name)
        assert set(t.modules) == mods - {""}
