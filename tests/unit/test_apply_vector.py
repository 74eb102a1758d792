"""The vector twin of apply_relocate_add() (klpelf.arch._vector) and the entry-by-entry
walk agree: the same bytes, the same values, the same refusals with the same messages.

The vector twin applies a whole section at once when no entry can stop and leaves
anything else to the walk; each test runs both and compares everything:

* x86_64 at the twin level, over thousands of random sections (regular ones, and
  ones with unknown types, unknown symbols, overflows, overlapping places, nonzero
  targets, places past the end);
* ``apply()`` of livepatch modules assembled here (test_apply.py's, and ones the
  kernel refuses), with numpy tables forced (klpelf.elf.arrays.VECTOR_THRESHOLD 0);
* ``apply()`` of real amd64 modules of the corpus against its System.map.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_apply

from klpelf.arch import Arch, _vector, arch_for
from klpelf.arch import x86_64 as x86
from klpelf.arch._vector import Entries
from klpelf.cli import main
from klpelf.elf import arrays
from klpelf.elf.constants import EM
from klpelf.elf.reader import open_elf
from klpelf.errors import KlpError
from klpelf.klp.layout import _kernel_values
from klpelf.operations import apply as apply_op
from klpelf.operations.apply import AppliedModule, apply
from klpelf.release import KernelRelease
from klpelf.symbols.kallsyms import SymbolText
from klpelf.symbols.sources import load_sources
from reloc_entries import relocation_table
from toolchain import MODULE_STRUCT

U64 = (1 << 64) - 1
RELEASES = [KernelRelease(5, 10), KernelRelease(6, 1), KernelRelease(6, 19)]


# --- x86_64: the twin ------------------------------------------------------------------


def _entries(rows: list[tuple[int, int, int, int]], values: dict[int, int]) -> Entries:
    col = [np.array([r[k] & U64 for r in rows], dtype=np.uint64) for k in range(4)]
    offsets, syms, types, addends = col
    # symbols 0..7, the last one standing for any index past the table
    sym_values = np.array([values.get(i, 0) for i in range(8)], dtype=np.uint64)
    sym_known = np.array([i in values for i in range(8)], dtype=bool)
    info = (syms << np.uint64(32)) | types
    return Entries(offsets, info, shift=32, addends=addends, sym_values=sym_values,
                   sym_known=sym_known)  # fmt: skip


def _section(rng: random.Random) -> tuple[list[tuple[int, int, int, int]], bytearray]:
    """A section of up to 40 entries: most regular, some with one irregularity."""
    size = rng.choice([16, 64, 256])
    data = bytearray(size)
    rows, at = [], 0
    types = [0, 1, 2, 4, 11, 24, 42] * 8 + [10]  # a kernel address overflows 32
    for _ in range(rng.randrange(1, 40)):
        t = rng.choice(types)
        width = x86.RELOCATION_TYPES[t].width if t not in (0, 42) else 0
        if at + max(width, 1) > size:
            break
        addend = rng.choice([0, -4, 8, 0, -4, 16, 0, rng.randrange(-(1 << 40), 1 << 40)])
        rows.append((at, rng.randrange(1, 6), t, addend))
        at += width + rng.choice([0, 0, 1, 3])
    rng.shuffle(rows) if rng.random() < 0.2 else None  # any order, places still disjoint
    what = rng.randrange(8)
    if what == 0 and rows:  # a type the kernel does not know
        i = rng.randrange(len(rows))
        rows[i] = (rows[i][0], rows[i][1], rng.choice([3, 9, 41, 64, 1 << 20]), rows[i][3])
    elif what == 1 and rows:  # two entries at one place
        rows.append(rows[rng.randrange(len(rows))])
    elif what == 2:  # nonzero bytes somewhere
        data[rng.randrange(size)] = rng.randrange(1, 256)
    elif what == 3:  # a place past the end
        rows.append((size - rng.randrange(0, 4), 1, rng.choice([1, 2]), 0))
    return rows, data


def _values(rng: random.Random) -> dict[int, int]:
    near = 0xFFFF_FFFF_8100_0000
    out = {s: near + rng.randrange(1 << 24) for s in range(1, 6)}
    if rng.random() < 0.3:  # a small value: 32 fits, 32S fits, PC32 wraps
        out[rng.randrange(1, 6)] = rng.randrange(1 << 31)
    if rng.random() < 0.2:  # a symbol the kernel does not know
        del out[rng.randrange(1, 6)]
    return out


@pytest.mark.parametrize("block", [32768, 3])
def test_x86_64_twin_agrees_with_the_walk(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    # block 3: sections of many blocks, each checked and written in turn (a later one
    # that fails undoes the writes before it)
    monkeypatch.setattr(_vector, "BLOCK", block)
    rng = random.Random(14)
    applied = refused = 0
    for _ in range(3000):
        rows, data = _section(rng)
        values = _values(rng)
        address = rng.choice([0xFFFF_FFFF_A000_0000, 0x1000, 0xFFFF_FFFF_FFFF_FFF0])
        release = rng.choice(RELEASES)
        vec_place, walk_place = bytearray(data), bytearray(data)
        relocs = relocation_table(rows)
        got = x86.vector_relocate_add(relocs, vec_place, release,
                                      entries=_entries(rows, values), address=address)  # fmt: skip
        facts = x86.write_relocate_add(relocs, walk_place, release, symbol_value=values.get,
                                       address=address)  # fmt: skip
        if got is None:
            refused += 1
            assert vec_place == data, "the vector twin wrote before giving up"
            continue
        applied += 1
        assert facts.stop is None, (rows, facts.reason)
        assert vec_place == walk_place, rows
        assert got.widths.tolist() == facts.widths
        assert facts.values is not None
        for i, w in enumerate(facts.widths):
            if w:
                assert int(got.values[i]) == facts.values[i]
    # both paths were taken often
    assert applied > 800 and refused > 800, (applied, refused)


# --- the kernel symbols of many names at once -----------------------------------------

SYMBOLS = """\
ffffffff81000000 T one
ffffffff81000100 t twice
ffffffff81000080 t twice
ffffffff81000200 U undefined_here
ffffffff81000300 A absolute
0000000000000000 T at_zero
ffffffffc0000000 t in_module\t[mod]
ffffffffc0000040 T both\t[mod]
ffffffff81000400 T both
"""


@pytest.mark.parametrize("kind", ["kallsyms", "System.map", "zeroed"])
def test_vmlinux_lone_values_are_the_one_candidate(tmp_path: Path, kind: str) -> None:
    path = _symbols_file(tmp_path, kind)
    names = ["one", "twice", "undefined_here", "absolute", "at_zero", "in_module", "both",
             "nowhere", "one", "twice"]  # fmt: skip
    ks = load_sources([str(path)])
    lone = ks.vmlinux_lone_values(names)
    assert lone is not None
    for name, value in zip(names, lone, strict=True):
        cands = ks.vmlinux_matches(name)
        if value is True:  # several lines of the name: asked one by one
            text = ks.texts[0]
            assert isinstance(text, SymbolText)
            assert len(text.rows(name)) > 1, name
            continue
        assert len(cands) <= 1, name
        assert value == (cands[0].address or None if cands else None), name


def _symbols_file(tmp_path: Path, kind: str) -> Path:
    text = SYMBOLS
    if kind == "System.map":  # no module lines there
        text = "".join(line + "\n" for line in text.splitlines() if "[" not in line)
    elif kind == "zeroed":
        text = "".join("0" * 16 + line[16:] + "\n" for line in text.splitlines())
    path = tmp_path / ("System.map" if kind == "System.map" else "kallsyms")
    path.write_text(text)
    return path


# livepatch symbols of every sympos against SYMBOLS' names, a module object's, and
# undefined symbols resolved by name
LOOKUPS = "".join(f"""    call ".klp.sym.vmlinux.{n},{p}"\n""" for n in (
    "one", "twice", "undefined_here", "absolute", "at_zero", "in_module", "both", "nowhere")
    for p in (0, 1, 2)) + """    call ".klp.sym.mod.in_module,0"
    call one
    call twice
    call both
    call at_zero
    call nowhere
"""  # fmt: skip


@pytest.mark.parametrize("kind", ["kallsyms", "System.map", "zeroed"])
def test_kernel_values_batched_are_name_by_name(tmp_path: Path, kind: str) -> None:
    _, ko = test_apply._module(tmp_path, "    .text\nf:\n" + LOOKUPS + "    ret\n"
                               + MODULE_STRUCT, "lookups")  # fmt: skip
    path = _symbols_file(tmp_path, kind)
    with _numpy_tables():
        elf = open_elf(ko)
        release = KernelRelease(6, 19)
        got = _kernel_values(elf, load_sources([str(path)]), release, None, None)
        want = _kernel_values(elf, load_sources([str(path)]), release, None, None,
                              batched=False)  # fmt: skip
    assert got == want
    assert len(got) > 20
    assert any(v is not None for v in got.values()) == (kind != "zeroed")


# --- apply(): modules ---------------------------------------------------------------------


@contextmanager
def _numpy_tables() -> Iterator[None]:
    saved = arrays.VECTOR_THRESHOLD
    arrays.VECTOR_THRESHOLD = 0
    try:
        yield
    finally:
        arrays.VECTOR_THRESHOLD = saved


def _scalar(arch: Arch | None) -> Arch | None:
    return arch._replace(vector_relocate_add=None) if arch is not None else None


def _both(monkeypatch: pytest.MonkeyPatch, ko: Path, kernel: list[str],
          **kw: object) -> tuple[AppliedModule, AppliedModule]:  # fmt: skip
    """apply() with the vector twin, then with the walk only; numpy tables both times."""
    with _numpy_tables():
        vec = apply(ko, load_sources(kernel), **kw)  # type: ignore[arg-type]
        with monkeypatch.context() as m:
            m.setattr(apply_op, "arch_for", lambda machine: _scalar(arch_for(machine)))
            walk = apply(ko, load_sources(kernel), **kw)  # type: ignore[arg-type]
    return vec, walk


def _same(vec: AppliedModule, walk: AppliedModule) -> None:
    assert vec.writes == walk.writes
    assert vec.write_count == len(walk.writes)
    assert vec.refusals == walk.refusals
    assert (vec.skipped, vec.sections) == (walk.skipped, walk.sections)
    assert vec.contents == walk.contents
    assert vec.to_text() == walk.to_text()
    assert json.dumps(vec.to_json()) == json.dumps(walk.to_json())


REFUSED = {
    # R_X86_64_32 of a kernel address: overflow
    "overflow": test_apply.OVERFLOW,
    # a type __write_relocate_add() does not handle (GOTPCREL)
    "unknown": """
    .text
f:  call ".klp.sym.vmlinux.foo,0"
    .reloc ., R_X86_64_GOTPCREL, ".klp.sym.vmlinux.foo_var,0" - 4
    .long 0
    ret
""",
    # a place that holds nonzero bytes
    "nonzero": """
    .text
f:  call ".klp.sym.vmlinux.foo,0"
    .byte 0xe8, 1, 2, 3, 4
    .reloc f + 6, R_X86_64_PLT32, ".klp.sym.vmlinux.foo,0" - 4
    ret
""",
    # a symbol no source has: its value is unknown (marker bytes)
    "unresolved": """
    .text
f:  call ".klp.sym.vmlinux.foo,0"
    call ".klp.sym.vmlinux.nowhere,0"
    call elsewhere
    ret
""",
}


@pytest.mark.parametrize("case", ["patch", *REFUSED])
@pytest.mark.parametrize("release", ["5.10", "6.19"])
def test_apply_agrees_on_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 case: str, release: str) -> None:  # fmt: skip
    _, ko = test_apply._module(tmp_path, REFUSED.get(case, test_apply.PATCH), case)
    k = str(test_apply._kallsyms(tmp_path))
    bases = {".text": test_apply.TEXT}
    vec, walk = _both(monkeypatch, ko, [k], bases=bases,
                      version=KernelRelease.parse(release))  # fmt: skip
    _same(vec, walk)
    assert bool(vec.refusals) == (case in ("overflow", "unknown", "nonzero"))


def test_apply_agrees_on_generated_module(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # bench/gen_apply.py's module, 3,000 relocations: every section applied whole
    gen = _gen_apply()
    spec = gen.generate("x86_64", 3000, tmp_path)
    ko = Path(str(spec["module"]))
    sections = spec["sections"]
    assert isinstance(sections, dict)
    vec, walk = _both(monkeypatch, ko, [str(spec["kallsyms"])], bases=sections)
    _same(vec, walk)
    assert vec.write_count == 1400 and not vec.refusals


def _gen_apply() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "bench/gen_apply.py"
    spec = importlib.util.spec_from_file_location("gen_apply", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, ko = test_apply._module(tmp_path)
    k = str(test_apply._kallsyms(tmp_path))
    out = tmp_path / "out"
    capsys.readouterr()  # convert's lines
    assert main(["apply", str(ko), "-k", k, "--summary", "-o", str(out)]) == 0
    text = capsys.readouterr().out.splitlines()
    # the module, the note on the assumed addresses, the count
    assert text[-1] == "  3 values written by klp relocations" and len(text) == 3
    assert (out / ".text.bin").exists()
    with pytest.raises(SystemExit) as e:
        main(["apply", str(ko), "-k", k, "--summary", "--json"])
    assert e.value.code == 2


# --- apply(): the corpus ------------------------------------------------------------------

CORPUS = Path(os.environ.get("KLPELF_CORPUS", Path.home() / ".cache/klpelf/corpus"))


@pytest.mark.corpus
@pytest.mark.slow
def test_apply_agrees_on_corpus_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = CORPUS / "manifest.json"
    if not manifest.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{manifest} is missing: run tests/corpus/fetch.py")
        pytest.skip(f"no corpus at {CORPUS} (run tests/corpus/fetch.py)")
    info = json.loads(manifest.read_text())["amd64"]
    paths = sorted(Path(info["modules_dir"]).rglob("*.ko"))
    # every 150th module (about 25, of every size), and two big ones
    picked = paths[::150] + [p for p in paths if p.name in ("xfs.ko", "btrfs.ko")]
    whole = 0
    for path in picked:
        try:
            elf = open_elf(path)
        except KlpError:
            continue
        if elf.machine != EM.X86_64 or elf.symtab is None or elf.section_by_name(".text") is None:
            continue
        vec, walk = _both(monkeypatch, path, [info["system_map"]],
                          bases={".text": 0xFFFF_FFFF_C000_0000})  # fmt: skip
        _same(vec, walk)
        ks, release = load_sources([info["system_map"]]), KernelRelease(6, 1)
        assert _kernel_values(elf, ks, release, None, None) == _kernel_values(
            elf, ks, release, None, None, batched=False)
        whole += not vec.refusals
    assert whole >= 10
