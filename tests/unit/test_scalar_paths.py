"""The plain-Python and the numpy paths agree (klpelf.elf.arrays.VECTOR_THRESHOLD).

Small modules are read and checked without numpy, big ones with it.  Each test
forces one path, then the other, and compares everything: ``check`` diagnostics
(every field), the bytes the x86 walk leaves written, the symbol and relocation
accessors, and the errors of malformed tables.  Without numpy, ``klpelf check`` and
``klpelf show`` of a small module take half the time they took with it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import test_bad_input
import test_check

from klpelf.elf import arrays
from klpelf.elf.arrays import rel_record, sym_record
from klpelf.elf.constants import EM, SHF, SHN, SHT
from klpelf.elf.file import ElfFile
from klpelf.elf.reader import open_elf, read_elf
from klpelf.elf.relocs import RelocationTable
from klpelf.elf.symbols import SymbolTable
from klpelf.elf.writer import write_elf
from klpelf.errors import KlpError
from klpelf.io import read_input
from klpelf.klp.check import Diagnostic, run_checks
from klpelf.klp.load import LoadState
from klpelf.klp.module import KlpModule
from klpelf.release import KernelRelease
from toolchain import TARGETS, assemble

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples/klp_sample/klp_sample_lp.ko"
SCALAR, VECTOR = 1 << 62, 0
VERSIONS = [KernelRelease(5, 10), KernelRelease(6, 1), KernelRelease(6, 12),
            KernelRelease(6, 19), KernelRelease(7, 2)]  # fmt: skip


@contextmanager
def _path(threshold: int) -> Iterator[None]:
    saved = arrays.VECTOR_THRESHOLD
    arrays.VECTOR_THRESHOLD = threshold
    try:
        yield
    finally:
        arrays.VECTOR_THRESHOLD = saved


# --- check: the same diagnostics ------------------------------------------------------

DiagKey = tuple[object, ...]
Records = npt.NDArray[np.void]


def _key(d: Diagnostic) -> DiagKey:
    sec = d.section
    return tuple((sec.index, sec.name) if name == "section" and sec is not None else value
                 for name, value in d._asdict().items())  # fmt: skip


def _run_checks(
    elf: ElfFile, version: KernelRelease, loaded: Callable[[str], bool] | None
) -> tuple[list[DiagKey], dict[int, bytes]]:
    """check_module()'s walk, keeping its load state: the diagnostics and the bytes
    the x86 relocations applied at load left nonzero (0 or not, per byte)."""
    mod = KlpModule(elf, ksym_name_len=version.ksym_name_len)
    state = LoadState(elf, mod, version, resolver=None, loaded=loaded, keep_written=True)
    try:
        run_checks(state)
    except KlpError as e:  # a malformed table met on the way
        return [("raised", str(e))], {}
    busy = {i: bytes(b != 0 for b in v) for i, v in state.written.items()}
    return [_key(d) for d in state.diagnostics], busy


def _both(
    data: bytes | bytearray, version: KernelRelease, loaded: Callable[[str], bool] | None = None
) -> list[DiagKey]:
    results = []
    for threshold in (SCALAR, VECTOR):
        with _path(threshold):
            elf = read_elf(data, path="m.ko")
            assert arrays.use_vector(elf) == (threshold == VECTOR)
            results.append(_run_checks(elf, version, loaded))
    (scalar, scalar_busy), (vector, vector_busy) = results
    assert scalar == vector
    assert scalar_busy == vector_busy
    return scalar


def _edit_relocs(name: str, edit: Callable[[Records], None]) -> Callable[[ElfFile], None]:
    def f(elf: ElfFile) -> None:
        sec = elf.section_by_name(name)
        assert sec is not None
        arr = np.frombuffer(bytes(sec.data), dtype=rel_record(elf.layout, True).dtype()).copy()
        edit(arr)
        sec.set_data(arr.tobytes())

    return f


def _set_type(idx: int, r_type: int) -> Callable[[Records], None]:
    def f(arr: Records) -> None:
        arr["r_info"][idx] = (arr["r_info"][idx] >> np.uint64(32) << np.uint64(32)) | np.uint64(
            r_type
        )

    return f


def _set_offset(idx: int, off: int) -> Callable[[Records], None]:
    def f(arr: Records) -> None:
        arr["r_offset"][idx] = off

    return f


def _overlap(arr: Records) -> None:
    arr["r_offset"][3] = arr["r_offset"][1] + 2  # into entry 1's four bytes


def _text_byte_at(rela: str, idx: int) -> Callable[[ElfFile], None]:
    # a nonzero byte where entry idx of ``rela`` writes
    def f(elf: ElfFile) -> None:
        sec = elf.section_by_name(rela)
        assert sec is not None
        off = elf.relocations(sec)[idx].r_offset
        target = elf.sections[sec.sh_info]
        data = bytearray(target.data)
        data[off + 1] = 0xCC
        target.set_data(bytes(data))

    return f


def _text_size(elf: ElfFile) -> int:
    text = elf.section_by_name(".text")
    assert text is not None
    return text.sh_size


def _past_the_end(elf: ElfFile) -> None:
    n = _text_size(elf)
    _edit_relocs(".rela.text", _set_offset(0, n - 2))(elf)
    _edit_relocs(".rela.text", _set_offset(1, 1 << 40))(elf)


def _klp(elf: ElfFile) -> int:
    return test_check._klp_section(elf)


def _klp_as(sh_type: int, extra: bytes = b"") -> Callable[[ElfFile], None]:
    def f(elf: ElfFile) -> None:
        sec = elf.sections[_klp(elf)]
        sec.sh_type = sh_type
        if extra:
            sec.set_data(bytes(sec.data) + extra)

    return f


def _klp_entsize(value: int) -> Callable[[ElfFile], None]:
    def f(elf: ElfFile) -> None:
        elf.sections[_klp(elf)].sh_entsize = value

    return f


def _second_klp_section(elf: ElfFile) -> None:
    # the same entries twice, for vmlinux: the second section finds the first's bytes
    klp = elf.sections[_klp(elf)]
    text = elf.sections[klp.sh_info]
    new = elf.add_relocation_section(
        ".klp.rela.vmlinux.text", text, extra_flags=SHF.ALLOC | SHF.RELA_LIVEPATCH
    )
    new.set_data(bytes(klp.data))


def _objects_to_module(objname: str) -> Callable[[ElfFile], None]:
    # every livepatch symbol and the klp section for a module object
    def f(elf: ElfFile) -> None:
        tab = elf.symtab
        assert tab is not None
        for i in tab.indices_where_shndx(SHN.LIVEPATCH):
            tab.set_symbol(i, name=tab.name(i).replace(".vmlinux.", f".{objname}."))
        elf.rename_section(elf.sections[_klp(elf)], f".klp.rela.{objname}.text")

    return f


def _sample_cases() -> list[tuple[str, Callable[[ElfFile], None]]]:
    cases: list[tuple[str, Callable[[ElfFile], None]]] = [("clean", lambda elf: None)]
    cases += [(c[0], c[1]) for c in test_check.KERNEL_CASES]
    cases += [(c[0], c[1]) for c in test_check._warn_cases()]
    cases += [
        ("two-symtabs", test_check._second_symtab),
        ("not-et-rel", test_check._not_relocatable),
        ("no-flag", test_check._clear_flag),
        ("ext4-section", test_check._rename_klp_section(".klp.rela.ext4.text")),
        ("ext4-object", _objects_to_module("ext4")),
        ("unknown-type", _edit_relocs(".rela.text", _set_type(2, 99))),
        ("klp-unknown-type", _edit_relocs(".klp.rela.vmlinux.text", _set_type(1, 77))),
        ("rex-gotpcrelx", _edit_relocs(".rela.text", _set_type(0, 42))),
        ("none-type", _edit_relocs(".rela.text", _set_type(1, 0))),
        ("overlap", _edit_relocs(".rela.text", _overlap)),
        ("nonzero-target", _text_byte_at(".rela.text", 2)),
        ("klp-nonzero-target", _text_byte_at(".klp.rela.vmlinux.text", 1)),
        ("past-the-end", _past_the_end),
        ("klp-progbits", _klp_as(SHT.PROGBITS)),
        ("klp-progbits-odd-size", _klp_as(SHT.PROGBITS, b"\0" * 5)),
        ("klp-rel", _klp_as(SHT.REL)),
        ("klp-entsize-0", _klp_entsize(0)),
        ("second-klp-section", _second_klp_section),
    ]
    return cases


@pytest.mark.parametrize(("name", "mutate"), _sample_cases(), ids=[c[0] for c in _sample_cases()])
def test_check_sample_cases_both_paths(name: str, mutate: Callable[[ElfFile], None]) -> None:
    elf = open_elf(SAMPLE)
    mutate(elf)
    data = write_elf(elf)
    seen: set[object] = set()
    for version in VERSIONS:
        for loaded in (None, lambda objname: True):
            seen.update(d[1] for d in _both(data, version, loaded))
    if name not in ("clean", "rex-gotpcrelx", "none-type"):
        assert seen, "the case should give diagnostics"


def test_sample_cases_reach_the_x86_rules() -> None:
    # the cases above exercise both x86 failures, on ordinary and klp sections
    rules: set[tuple[str, object]] = set()
    for name, mutate in _sample_cases():
        elf = open_elf(SAMPLE)
        mutate(elf)
        rules.update((name, d[1]) for d in _both(write_elf(elf), KernelRelease(6, 1)))
    assert ("unknown-type", "x86-unknown-relocation") in rules
    assert ("klp-unknown-type", "x86-unknown-relocation") in rules
    assert ("overlap", "x86-nonzero-target") in rules
    assert ("nonzero-target", "x86-nonzero-target") in rules
    assert ("klp-nonzero-target", "x86-nonzero-target") in rules
    assert ("second-klp-section", "x86-nonzero-target") in rules
    assert ("no-flag", "livepatch-symbol-in-ordinary-relocation") in rules


# --- constructor checks: the same errors ------------------------------------------------


def _decode(data: bytes) -> str:
    """What reading ``data`` fully gives: the error, or the counts."""
    try:
        elf = read_elf(data, path="bad.ko")
        elf.decode_all()
        tab = elf.symtab
        if tab is not None:
            tab.names()
            list(tab)
        for sec in elf.relocation_sections:
            list(elf.relocations(sec))
        mod = KlpModule(elf)
        return f"ok {len(mod.symbols)} {len(mod.sections)}"
    except KlpError as e:
        return f"{type(e).__name__}: {e}"


def _same_errors(data: bytes) -> str:
    with _path(SCALAR):
        scalar = _decode(data)
    with _path(VECTOR):
        vector = _decode(data)
    assert scalar == vector
    return scalar


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = {}
    tmp = tmp_path_factory.mktemp("objs")
    for t in TARGETS:
        try:
            out[t.name] = assemble(t, tmp / f"{t.name}.o").read_bytes()
        except pytest.skip.Exception:
            continue
    if not out:
        pytest.skip("no assembler")
    return out


#: the malformed-ELF cases of test_bad_input (the others are compressed, no table is read)
ELF_CASES = [c for c in test_bad_input.CASES if c[0] not in ("xz-garbage", "gzip-not-elf")]


@pytest.mark.parametrize(("name", "mutate", "message"), ELF_CASES, ids=[c[0] for c in ELF_CASES])
def test_bad_input_same_errors(
    name: str, mutate: Callable[[bytes], bytes], message: str, objects: dict[str, bytes]
) -> None:
    if "x86_64" not in objects:
        pytest.skip("no x86_64 assembler")
    assert message in _same_errors(mutate(objects["x86_64"]))


def _poke(elf: ElfFile, data: bytes, sec_index: int, record: int, field: str, value: int) -> bytes:
    """``data`` with one field of one record of a symbol or relocation section changed."""
    sec = elf.sections[sec_index]
    rec = sym_record(elf.layout) if sec.sh_type == SHT.SYMTAB else rel_record(
        elf.layout, sec.sh_type == SHT.RELA
    )  # fmt: skip
    off, code = rec.offsets[field]
    out = bytearray(data)
    struct.pack_into(rec.byteorder + code, out, sec.sh_offset + record * rec.size + off, value)
    return bytes(out)


def test_table_errors_same_on_every_target(objects: dict[str, bytes]) -> None:
    messages = []
    for name, data in objects.items():
        elf = read_elf(data)
        tab = elf.symtab
        assert tab is not None
        s = tab.section.index
        n = len(tab)
        last = n - 1
        cases = [
            _poke(elf, data, s, last, "st_name", 1 << 20),
            _poke(elf, data, s, 2, "st_name", len(tab.strtab)),
            _poke(elf, data, s, last, "st_shndx", len(elf.sections)),
            _poke(elf, data, s, 1, "st_shndx", 0xFEFF),  # reserved range: fine
            _poke(elf, data, s, 1, "st_shndx", SHN.XINDEX),  # no SHT_SYMTAB_SHNDX: fine
        ]
        shift = elf.layout.r_sym_shift()
        for sec in elf.relocation_sections:
            rt = elf.relocations(sec)
            for k in (0, len(rt) - 1):
                info = (n << shift) | rt[k].type
                cases.append(_poke(elf, data, sec.index, k, "r_info", info))
                cases.append(_poke(elf, data, sec.index, k, "r_info", info - (1 << shift)))
        for bad in cases:
            messages.append(f"{name}: {_same_errors(bad)}")
    assert any("is past the end of the string table" in m for m in messages)
    assert any("section index" in m and "is out of range" in m for m in messages)
    assert any("symbol index" in m for m in messages)
    assert any(m.endswith(tuple("0123456789")) for m in messages)  # some are fine


@pytest.fixture(scope="module")
def extended(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    # past 0xff00 sections, symbols use SHN_XINDEX and SHT_SYMTAB_SHNDX
    n = 66000
    src = "".join(f'.section .s{i},"a"\nsym{i}: .byte {i & 0xFF}\n' for i in range(n))
    src += ".globl last\nlast: .byte 0\n"
    path = tmp_path_factory.mktemp("ext") / "many.o"
    return assemble(TARGETS[0], path, src).read_bytes()


def test_xindex_both_paths(extended: bytes) -> None:
    with _path(SCALAR):
        a = read_elf(extended)
        ta = a.symtab
        assert ta is not None
        xindex = [i for i, v in enumerate(ta.column("st_shndx")) if v == SHN.XINDEX]
        assert len(xindex) > 100
        shndx = ta.shndx_list()
        picks = [0, 1, *xindex[:50], *xindex[-50:], len(ta) - 1]
        rows = [ta[i] for i in picks]
    with _path(VECTOR):
        b = read_elf(extended)
        tb = b.symtab
        assert tb is not None
        assert shndx == tb.shndx_array.tolist()
        tb.array  # noqa: B018 (rows from the array)
        assert rows == [tb[i] for i in picks]
    assert all(r.shndx == shndx[r.index] for r in rows)
    # an SHT_SYMTAB_SHNDX entry out of range: the same error both ways
    shndx_sec = a.sections_of_type(SHT.SYMTAB_SHNDX)[0]
    bad = bytearray(extended)
    struct.pack_into("<I", bad, shndx_sec.sh_offset + 4 * xindex[7], len(a.sections) + 5)
    assert "is out of range" in _same_errors(bytes(bad))


# --- the accessors: the same values ---------------------------------------------------


def _compare_tables(path: str) -> None:
    with _path(SCALAR):
        a = open_elf(path)
        a.decode_all()
    b = open_elf(path)
    with _path(VECTOR):
        b.decode_all()
    for sec in a.sections:
        if sec.sh_type in (SHT.SYMTAB, SHT.DYNSYM):
            _compare_symtabs(a.symbol_table(sec), b.symbol_table(b.sections[sec.index]))
        elif sec.sh_type in (SHT.REL, SHT.RELA):
            _compare_relocs(a.relocations(sec), b.relocations(b.sections[sec.index]))


def _picks(n: int) -> list[int]:
    return sorted({0, 1, n // 3, n // 2, n - 2, n - 1} & set(range(n)))


def _compare_symtabs(ta: SymbolTable, tb: SymbolTable) -> None:
    assert ta._array is None  # the scalar side never built the array
    for name, _ in ta.record.fields:
        assert ta.column(name) == tb.array[name].tolist(), name
    assert ta.shndx_list() == tb.shndx_array.tolist()
    assert ta.binds() == tb.bind_array.tolist()
    assert ta.types() == tb.type_array.tolist()
    assert ta.names() == tb.names()
    for value in (SHN.LIVEPATCH, SHN.UNDEF, SHN.ABS):
        with _path(SCALAR):
            scalar = ta.indices_where_shndx(value)
        with _path(VECTOR):
            assert scalar == tb.indices_where_shndx(value)
    for prefix in (".klp.sym.", "__ksymtab", "init_module", "x"):
        with _path(SCALAR):
            scalar = ta.indices_with_prefix(prefix)
        with _path(VECTOR):
            assert scalar == tb.indices_with_prefix(prefix)
    picks = _picks(len(ta))
    assert [ta[i] for i in picks] == [tb[i] for i in picks]
    assert [ta.name(i) for i in picks] == [tb.name(i) for i in picks]
    assert ta._array is None


def _compare_relocs(ra: RelocationTable, rb: RelocationTable) -> None:
    assert ra._array is None
    assert ra.offsets() == rb.array["r_offset"].tolist()
    assert ra.syms() == rb.sym_array.tolist()
    assert ra.types() == rb.type_array.tolist()
    addends = ra.addends()
    assert addends == (rb.array["r_addend"].tolist() if rb.is_rela else None)
    with _path(SCALAR):
        used = ra.symbols_used()
    with _path(VECTOR):
        assert used == rb.symbols_used()
    picks = _picks(len(ra))
    assert [ra[i] for i in picks] == [rb[i] for i in picks]
    if picks:
        assert ra[-1] == rb[-1]
    assert list(ra) == list(rb)
    assert ra._array is None


def test_sample_tables_both_paths() -> None:
    _compare_tables(str(SAMPLE))


def test_bad_index() -> None:
    elf = open_elf(SAMPLE)
    tab = elf.symtab
    assert tab is not None
    with pytest.raises(IndexError):
        tab[len(tab)]
    rela = elf.section_by_name(".rela.text")
    assert rela is not None
    rt = elf.relocations(rela)
    for i in (len(rt), -len(rt) - 1):
        with pytest.raises(IndexError):
            rt[i]
    assert rt[-1] == list(rt)[-1]


# --- the corpus: Debian's modules, both ways ---------------------------------------------


def _corpus(arch: str, count: int) -> list[str]:
    from corpus.test_corpus import _modules

    paths = _modules(arch)
    step = max(len(paths) // count, 1)
    return paths[::step][:count]


def _x86_mutants(path: str) -> list[bytes | bytearray]:
    """The module with a nonzero byte under one relocation, and with two relocations at
    the same place: both x86 failures, in the middle of a real section."""
    elf = open_elf(path)
    if elf.machine != EM.X86_64:
        return []
    for sec in elf.relocation_sections:
        target = elf.sections[sec.sh_info]
        rt = elf.relocations(sec)
        if not target.is_alloc or target.sh_type == SHT.NOBITS or len(rt) < 8:
            continue
        entries = [(i, r) for i, r in enumerate(rt) if r.type in (1, 2, 4, 11)]
        if len(entries) < 4:
            continue
        out: list[bytes | bytearray] = []
        r = entries[len(entries) // 2][1]
        nonzero = bytearray(target.data)
        nonzero[r.r_offset] = 1
        target.set_data(bytes(nonzero))
        out.append(write_elf(elf))
        elf = open_elf(path)
        arr = elf.relocations(elf.sections[sec.index]).array.copy()
        arr["r_offset"][entries[-1][0]] = arr["r_offset"][entries[1][0]]
        elf.sections[sec.index].set_data(arr.tobytes())
        out.append(write_elf(elf))
        return out
    return []


def _corpus_module(path: str) -> list[str]:
    """Both paths on one corpus module; returns the rules seen."""
    _compare_tables(path)
    data = bytes(read_input(path))
    rules = [str(d[1]) for d in _both(data, KernelRelease(6, 1))]
    for mutant in _x86_mutants(path):
        rules += [str(d[1]) for d in _both(mutant, KernelRelease(6, 1))]
    return rules


@pytest.mark.corpus
@pytest.mark.slow
@pytest.mark.parametrize(("arch", "count"), [("amd64", 300), ("arm64", 60), ("s390x", 60)])
def test_corpus_both_paths(arch: str, count: int) -> None:
    rules: list[str] = []
    for path in _corpus(arch, count):
        if open_elf(path).record_count > 150_000:
            continue  # amdgpu.ko and friends: minutes on the scalar path under pytest
        rules += _corpus_module(path)
    if arch == "amd64":
        assert rules.count("x86-nonzero-target") > count // 2


# --- the CLI does not import numpy for a small module --------------------------------------


@pytest.mark.parametrize("argv", [["check", "--static"], ["show", "-r"], ["show", "--json"]])
def test_cli_does_not_import_numpy(argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KLPELF_VECTOR_THRESHOLD"}
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "klpelf", *argv, str(SAMPLE)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines()]
    assert "klpelf.elf.symbols" in imported
    assert not [m for m in imported if m.split(".")[0] == "numpy"]
