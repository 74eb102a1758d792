"""The targeted kallsyms/System.map reader (klpelf.symbols.symtext) against the full index."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klpelf.errors import SymbolSourceError
from klpelf.symbols import symtext
from klpelf.symbols.kallsyms import parse_symbol_text
from klpelf.symbols.sources import load_sources
from klpelf.symbols.symtext import ScannedSymbolText, open_symbol_text

BENCH = Path.home() / ".cache/klpelf/bench"


@pytest.fixture
def scan_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file, however small, goes to the targeted reader."""
    monkeypatch.setattr(symtext, "SCAN_MIN_BYTES", 0)


def _kallsyms(lines: int, seed: int = 1, zeroed: bool = False) -> bytes:
    # vmlinux lines then module lines, names repeated within and across objects
    rng = random.Random(seed)
    names = [f"sym_{i}" for i in range(lines // 3)] + ["helper", "helper_x", "h", "_", "a.b"]
    out = []
    for i in range(lines):
        mod = None if i < lines // 2 else f"mod{(i - lines // 2) // 50}"
        addr = 0 if zeroed else 0xFFFFFFFF81000000 + rng.randrange(1 << 30)
        t = rng.choice("TtDdBbRrWVA")
        out.append(f"{addr:016x} {t} {rng.choice(names)}" + (f"\t[{mod}]" if mod else ""))
    return ("\n".join(out) + "\n").encode()


def _same(scanned: ScannedSymbolText, full_path: bytes, names: list[str]) -> None:
    full = parse_symbol_text(full_path, "x")
    assert scanned.kind == full.kind and scanned.zeroed == full.zeroed
    assert len(scanned) == len(full) and scanned.vmlinux_count == full.vmlinux_count
    scanned.prefetch(names[: len(names) // 2])
    for n in names:
        got = scanned.matches(n)
        want = full.matches(n)
        # rows are line numbers there, byte offsets here: same order, same lines
        assert [(e.address, e.type, e.module) for e in got] == [
            (e.address, e.type, e.module) for e in want
        ], n
        assert [e.order for e in got] == sorted(e.order for e in got)
    for m in full.modules:
        assert scanned.has_module(m)
    assert not scanned.has_module("mod") and not scanned.has_module("nosuch")


@pytest.mark.parametrize("zeroed", [False, True])
def test_scanned_equals_full_index(scan_all: None, zeroed: bool) -> None:
    data = _kallsyms(3000, zeroed=zeroed)
    t = open_symbol_text(data, "kallsyms")
    assert isinstance(t, ScannedSymbolText)
    names = ["helper", "helper_x", "h", "_", "a.b", "sym_1", "sym_10", "sym_100", "nosuch", "sym"]
    _same(t, data, names)
    assert t._full is None  # answered without the index


def test_many_single_lookups_switch_to_the_index(scan_all: None) -> None:
    data = _kallsyms(600)
    t = open_symbol_text(data, "kallsyms")
    assert isinstance(t, ScannedSymbolText)
    for i in range(symtext._SCAN_LOOKUPS + 3):
        full = parse_symbol_text(data, "x").matches(f"sym_{i}")
        assert [(e.address, e.module) for e in t.matches(f"sym_{i}")] == [
            (e.address, e.module) for e in full
        ]
    assert t._full is not None
    assert t.modules == parse_symbol_text(data, "x").modules


def test_system_map_kind_and_ordering(scan_all: None, tmp_path: Path) -> None:
    body = (
        b"ffffffff81000010 t helper\nffffffff81000000 t helper\nffffffff82000000 D kallsyms_names\n"
    )
    p = tmp_path / "System.map-6.1.0-56-amd64"
    p.write_bytes(body)
    ks = load_sources([str(p)])
    assert isinstance(ks.texts[0], ScannedSymbolText) and ks.texts[0].kind == "System.map"
    assert [c.address for c in ks.vmlinux_matches("helper")] == [
        0xFFFFFFFF81000000,
        0xFFFFFFFF81000010,
    ]
    q = tmp_path / "map"
    q.write_bytes(body)
    assert load_sources([str(q)]).texts[0].kind == "kallsyms"  # ambiguous: the name decides


@pytest.mark.parametrize(
    "bad",
    [
        b"ffffffff81000000 T a\nzzzzzzzzzzzzzzzz T helper\n",  # a used line is malformed
        b"ffffffff81000000 T a\nffffffff81000000 T help er\n",  # last line: space in a name
        b"ffffffff81000000 T a\n81000000 T helper\nffffffff81000000 T b\n",  # other width
        b"ffffffff81000000 T a\r\nffffffff81000000 T helper\r\n",  # CRLF
        b"ffffffff81000000 T a\nffffffff81000000 T helper\t[m\nffffffff81000000 T b\n",
    ],
)
def test_lines_of_another_shape_go_to_the_index(scan_all: None, bad: bytes) -> None:
    # whatever the targeted reader cannot read, the full index reads or rejects with
    # its line number, exactly as without the targeted reader
    try:
        want = [
            (e.address, e.type, e.module) for e in parse_symbol_text(bad, "f").matches("helper")
        ]
    except SymbolSourceError as e:
        with pytest.raises(SymbolSourceError) as exc:
            open_symbol_text(bad, "f").matches("helper")
        assert str(exc.value) == str(e)
    else:
        got = open_symbol_text(bad, "f").matches("helper")
        assert [(e.address, e.type, e.module) for e in got] == want


def _real_dumps() -> list[Path]:
    root = Path.home() / ".cache/klpelf/vm"
    found = sorted(p for n in ("kallsyms", "kallsyms.modules") for p in root.glob(f"*/{n}"))
    return found + sorted(BENCH.glob("kallsyms-*"))


@pytest.mark.corpus
def test_real_dumps_scanned_equal_full_index() -> None:
    """The harness's /proc/kallsyms dumps of four kernels and the benchmark's input."""
    dumps = _real_dumps()
    if not dumps:
        pytest.skip("no kallsyms dump in ~/.cache/klpelf/vm or bench (run the harness)")
    rng = random.Random(7)
    for path in dumps:
        raw = path.read_bytes()
        t = open_symbol_text(raw, str(path))
        assert isinstance(t, ScannedSymbolText), path
        lines = raw.splitlines()
        names = [ln.split(b"\t")[0].split(b" ")[2].decode() for ln in rng.sample(lines, 60)]
        _same(t, raw, [*names, "no_such_symbol_here"])


SAMPLE = Path(__file__).resolve().parents[2] / "samples/klp_sample/klp_sample_lp.ko"


@pytest.mark.parametrize("command", ["check", "resolve"])
def test_cli_with_large_kallsyms_does_not_import_numpy(tmp_path: Path, command: str) -> None:
    # a kallsyms dump large enough for the targeted reader, with the sample's symbols
    extra = (
        "ffffffff82b9f480 b max_cstate\nffffffff82b9f490 d max_cstate\n"
        "ffffffff82a00000 D total_forks\nffffffff82a00010 D nr_threads\n"
        "ffffffff81400000 t cmdline_proc_show\n"
    )
    p = tmp_path / "kallsyms"
    p.write_bytes(extra.encode() + _kallsyms(40_000))
    assert p.stat().st_size >= symtext.SCAN_MIN_BYTES
    env = {k: v for k, v in os.environ.items() if k != "KLPELF_VECTOR_THRESHOLD"}
    argv = [sys.executable, "-X", "importtime", "-m", "klpelf", command, str(SAMPLE)]
    done = subprocess.run([*argv, "--kernel", str(p)], capture_output=True, text=True,
                          env=env, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "read by name" in done.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    assert "klpelf.symbols.symtext" in imported
    assert not [m for m in imported if m.split(".")[0] == "numpy"]


def test_names_the_scan_cannot_take_go_to_the_index(scan_all: None) -> None:
    # each name a prefix of the next: a trie nested deeper than re can compile
    chain = ["a" * i for i in range(1, 700)]
    data = b"".join(f"ffffffff81{i:06x} t {n}\n".encode() for i, n in enumerate(chain[:40]))
    data += _kallsyms(2000)
    t = open_symbol_text(data, "kallsyms")
    assert isinstance(t, ScannedSymbolText)
    t.prefetch(chain)
    assert t._full is not None
    assert [e.address for e in t.matches("aaa")] == [0xFFFFFFFF81000002]
    many = open_symbol_text(data, "kallsyms")
    assert isinstance(many, ScannedSymbolText)
    many.prefetch([f"sym_{i}" for i in range(symtext._SCAN_NAMES + 1)])
    assert many._full is not None


_NAMES = ["f", "fo", "foo", "foo_bar", "bar", "a.b", "x$y", "__func__", "é", "Z"]


@given(
    st.lists(
        st.tuples(
            st.integers(0, (1 << 64) - 1),
            st.sampled_from("TtDdBbRrWwVvAaU?-"),
            st.sampled_from(_NAMES),
            st.sampled_from([None, None, "m1", "mod_2", "m.x"]),
        ),
        min_size=1,
        max_size=40,
    ),
    st.booleans(),
    st.booleans(),
    st.lists(st.sampled_from([*_NAMES, "nope", "fooo"]), min_size=1, max_size=6),
)
@settings(max_examples=300, deadline=None)
def test_well_formed_files_scan_as_they_index(
    lines: list[tuple[int, str, str, str | None]],
    zero: bool,
    final_newline: bool,
    queries: list[str],
) -> None:
    body = "\n".join(
        f"{0 if zero else a:016x} {t} {n}" + (f"\t[{m}]" if m else "") for a, t, n, m in lines
    )
    data = (body + ("\n" if final_newline else "")).encode()
    full = parse_symbol_text(data, "kallsyms")
    scanned = ScannedSymbolText.open(data, "kallsyms", None)
    assert scanned is not None
    assert (scanned.kind, scanned.zeroed) == (full.kind, full.zeroed)
    scanned.prefetch(queries[:2])
    for q in queries:
        assert [(e.address, e.type, e.module) for e in scanned.matches(q)] == [
            (e.address, e.type, e.module) for e in full.matches(q)
        ]
    for m in ("m1", "mod_2", "m.x", "m"):
        assert scanned.has_module(m) == full.has_module(m)


@given(
    st.lists(
        st.sampled_from([b"ffffffff81000000", b"0", b" ", b"T", b"t", b"\t", b"[m]", b"\n",
                         b"foo", b"]", b"[", b"\r", b"zz", b"\x00", b"\xff", b"a" * 20]),
        max_size=40,
    ),
    st.lists(st.sampled_from(["foo", "a", "m", "", "foo\n", "é"]), min_size=1, max_size=3),
)  # fmt: skip
@settings(max_examples=500, deadline=None)
def test_garbage_never_crashes_the_scan(pieces: list[bytes], queries: list[str]) -> None:
    data = b"".join(pieces)
    if not data:
        return
    try:
        t = ScannedSymbolText.open(data, "fuzz", None) or parse_symbol_text(data, "fuzz")
        t.prefetch(queries)
        for q in queries:
            t.matches(q)
            t.has_module(q)
    except SymbolSourceError as e:
        assert e.path == "fuzz" and "\n" not in str(e)


@pytest.mark.corpus
def test_zeroed_dumps_rank_as_addresses_do(tmp_path: Path) -> None:
    """With kptr_restrict every address reads 0 and klpelf ranks same-named vmlinux
    symbols by line order.  That is the address order because /proc/kallsyms walks the
    kallsyms table, which scripts/kallsyms sorts by address: checked on the dumps of
    the four real kernels, by zeroing them and resolving every duplicated name."""
    root = Path.home() / ".cache/klpelf/vm"
    dumps = sorted(root.glob("*/kallsyms"))
    if not dumps:
        pytest.skip("no /proc/kallsyms dump in ~/.cache/klpelf/vm (run the harness)")
    for path in dumps:
        raw = path.read_bytes()
        lines = raw.splitlines(keepends=True)
        vm = [ln for ln in lines if b"\t" not in ln]
        addrs = [int(ln.split(b" ", 1)[0], 16) for ln in vm]
        assert addrs == sorted(addrs), path
        zeroed = tmp_path / f"{path.parent.name}.zeroed"
        zeroed.write_bytes(b"".join(b"0" * 16 + ln[16:] for ln in lines))
        real, hidden = load_sources([str(path)]), load_sources([str(zeroed)])
        assert hidden.zeroed and not real.zeroed
        names = [ln.split(b" ")[2].rstrip(b"\n").decode() for ln in vm]
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        dups = sorted(n for n, c in counts.items() if c > 1)[:400]
        assert dups, path
        real.prefetch(dups)
        hidden.prefetch(dups)
        real_text, hidden_text = real.texts[0], hidden.texts[0]
        for n in dups:
            # the zeroed file has the same byte offsets: a line is known by its offset
            address_of = {e.order: e.address for e in real_text.matches(n)}
            lines_hidden = [e.order for e in hidden_text.matches(n) if e.module is None]
            picked = [c.address for c in real.vmlinux_matches(n)]
            assert [c.position for c in hidden.vmlinux_matches(n)] == list(
                range(1, len(picked) + 1)
            )
            assert [address_of[o] for o in lines_hidden] == picked, (path, n)
