"""klp_find_object_symbol() semantics: sympos over vmlinux and modules, COMING vs LIVE, the CLI."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from test_symbols_sources import build_module

from klpelf.cli import main
from klpelf.elf.constants import SHN, STB, STT
from klpelf.elf.reader import open_elf
from klpelf.elf.symbols import st_info
from klpelf.elf.writer import save_elf
from klpelf.errors import AmbiguousSymbolError, SymbolNotFoundError, SymbolPositionError
from klpelf.klp.module import klp_module
from klpelf.operations.resolve import kernel_messages, resolve_module
from klpelf.symbols.kallsyms import is_ignored_symbol
from klpelf.symbols.resolve import klp_find_object_symbol, release_mismatch
from klpelf.symbols.sources import KernelSymbols, load_sources

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples/klp_sample/klp_sample_lp.ko"

# dup: three in vmlinux, listed out of address order (a System.map or kallsyms read
# back in another order still ranks by address); zero_first: one match is at 0, which
# sorts first
KALLSYMS = """\
ffffffff81000300 t dup
ffffffff81000100 t dup
ffffffff81000200 t dup
ffffffff81000400 T unique
0000000000000000 A zero_only
ffffffff81000500 t zero_first
0000000000000000 A zero_first
ffffffffc0001000 t helper\t[ext4]
ffffffffc0001010 T ext4_attr_store\t[ext4]
ffffffffc0000800 t helper\t[ext4]
ffffffffc0100000 t nfsd_open\t[nfsd]
ffffffffc0201000 t ftrace_trampoline\t[__builtin__ftrace]
"""


@pytest.fixture
def ks(tmp_path: Path) -> KernelSymbols:
    p = tmp_path / "kallsyms"
    p.write_text(KALLSYMS)
    return load_sources([str(p)])


@pytest.mark.parametrize(
    ("name", "sympos", "address", "error"),
    [
        ("unique", 0, 0xFFFFFFFF81000400, None),
        ("unique", 1, 0xFFFFFFFF81000400, None),
        ("unique", 2, None, "symbol position 2 for symbol 'unique' in object 'vmlinux' not found"),
        ("dup", 0, None, "unresolvable ambiguity for symbol 'dup' in object '(null)'"),
        ("dup", 1, 0xFFFFFFFF81000100, None),
        ("dup", 2, 0xFFFFFFFF81000200, None),
        ("dup", 3, 0xFFFFFFFF81000300, None),
        ("dup", 4, None, "symbol position 4 for symbol 'dup' in object 'vmlinux' not found"),
        ("missing", 0, None, "symbol 'missing' not found in symbol table"),
        ("missing", 3, None, "symbol 'missing' not found in symbol table"),
        ("zero_only", 0, None, "symbol 'zero_only' not found in symbol table"),
        (
            "zero_first",
            0,
            None,
            "unresolvable ambiguity for symbol 'zero_first' in object '(null)'",
        ),
        ("zero_first", 1, None, "symbol 'zero_first' not found in symbol table"),
        ("zero_first", 2, 0xFFFFFFFF81000500, None),
        ("helper", 0, None, "symbol 'helper' not found in symbol table"),  # modules only
    ],
)
def test_vmlinux_sympos(
    ks: KernelSymbols, name: str, sympos: int, address: int | None, error: str | None
) -> None:
    r = klp_find_object_symbol(ks, "vmlinux", name, sympos)
    assert (r.ok, r.address, r.error) == (error is None, address, error)
    assert not r.not_loaded and not r.coming_differs


def test_vmlinux_candidates_for_picking_a_position(ks: KernelSymbols) -> None:
    r = klp_find_object_symbol(ks, "vmlinux", "dup", 0)
    assert [(c.position, c.address) for c in r.candidates] == [
        (1, 0xFFFFFFFF81000100), (2, 0xFFFFFFFF81000200), (3, 0xFFFFFFFF81000300),
    ]  # fmt: skip
    assert r.chosen is None
    err = r.exception()
    assert isinstance(err, AmbiguousSymbolError) and err.name == "dup"
    assert isinstance(
        klp_find_object_symbol(ks, "vmlinux", "dup", 9).exception(), SymbolPositionError
    )
    assert isinstance(
        klp_find_object_symbol(ks, "vmlinux", "x", 0).exception(), SymbolNotFoundError
    )
    assert klp_find_object_symbol(ks, "vmlinux", "dup", 2).exception() is None


def test_loaded_module_sympos_is_line_order(ks: KernelSymbols) -> None:
    # module symbols keep the module's symtab order, whatever their addresses
    r = klp_find_object_symbol(ks, "ext4", "helper", 1)
    assert r.ok and r.address == 0xFFFFFFFFC0001000
    r = klp_find_object_symbol(ks, "ext4", "helper", 0)
    assert r.error == "unresolvable ambiguity for symbol 'helper' in object 'ext4'"
    r = klp_find_object_symbol(ks, "ext4", "helper", 3)
    assert r.error == "symbol position 3 for symbol 'helper' in object 'ext4' not found"
    r = klp_find_object_symbol(ks, "nfsd", "helper", 0)
    assert r.error == "symbol 'helper' not found in symbol table"
    assert klp_find_object_symbol(ks, "ext4", "ext4_attr_store", 0).ok


def test_not_loaded_module(ks: KernelSymbols) -> None:
    r = klp_find_object_symbol(ks, "xfs", "xfs_foo", 0)
    assert r.not_loaded and not r.ok and r.error is None
    assert r.message == "not loaded: relocations would be applied when xfs loads"
    # pseudo-modules of /proc/kallsyms are not modules
    assert klp_find_object_symbol(ks, "__builtin__ftrace", "ftrace_trampoline", 0).not_loaded
    # the kernel compares mod->name exactly: no '-'/'_' folding for loaded modules
    assert not ks.has_object("ext-4") and ks.has_object("ext4")


def test_zeroed_kallsyms_ranks_by_line_order(tmp_path: Path) -> None:
    lines = [("0" * 16 + line[16:]) for line in KALLSYMS.splitlines()]
    p = tmp_path / "kallsyms"
    p.write_text("\n".join(lines) + "\n")
    ks = load_sources([str(p)])
    assert ks.zeroed and "kptr_restrict" in ks.description
    r = klp_find_object_symbol(ks, "vmlinux", "dup", 2)
    assert r.ok and r.address is None and r.chosen == 1
    assert [c.address for c in r.candidates] == [None, None, None]
    r = klp_find_object_symbol(ks, "vmlinux", "unique", 0)
    assert r.ok and r.address is None
    assert klp_find_object_symbol(ks, "vmlinux", "dup", 0).error is not None
    assert klp_find_object_symbol(ks, "ext4", "helper", 2).ok
    assert klp_find_object_symbol(ks, "vmlinux", "missing", 0).error is not None


def test_system_map_ties_and_filters(tmp_path: Path) -> None:
    p = tmp_path / "System.map"
    p.write_text(
        "00000000000001ea A kexec_control_code_size\n"
        "ffffffff81000100 W tie\n"
        "ffffffff81000100 T tie\n"
        "ffffffff81000200 T tie\n"
        "ffffffff82000000 D kallsyms_names\n"
    )
    ks = load_sources([str(p)])
    r = klp_find_object_symbol(ks, "vmlinux", "tie", 0)
    # compare_symbols(): at one address the non-weak symbol comes first
    assert [c.type for c in r.candidates] == ["T", "W", "T"]
    # absolute symbols and scripts/kallsyms' own tables are not in kallsyms
    assert klp_find_object_symbol(ks, "vmlinux", "kexec_control_code_size", 0).error is not None
    assert klp_find_object_symbol(ks, "vmlinux", "kallsyms_names", 0).error is not None


def test_module_coming_and_live(tmp_path: Path) -> None:
    ks = load_sources([str(build_module(tmp_path))])
    # helper: .text (a.c), .init.text (c.c), .text (b.c)
    r = klp_find_object_symbol(ks, "testmod", "helper", 1)
    assert r.ok and not r.coming_differs and r.address is None
    r = klp_find_object_symbol(ks, "testmod", "helper", 2)
    assert r.ok and r.coming_differs and r.coming_ok
    assert r.candidates[r.chosen or 0].source_file == "b.c"
    assert r.coming_chosen is not None and r.candidates[r.coming_chosen].section == ".init.text"
    r = klp_find_object_symbol(ks, "testmod", "helper", 3)
    assert not r.ok and r.coming_ok and r.coming_differs
    assert r.error == "symbol position 3 for symbol 'helper' in object 'testmod' not found"
    r = klp_find_object_symbol(ks, "testmod", "helper", 0)
    assert r.error == "unresolvable ambiguity for symbol 'helper' in object 'testmod'"
    assert not r.coming_differs
    # duplicate names in different sections, both core
    r = klp_find_object_symbol(ks, "testmod", "dupdata", 2)
    assert r.ok and r.candidates[r.chosen or 0].section == ".rodata"
    # SHN_ABS: only in the COMING table; a value of 0 there counts as not found
    r = klp_find_object_symbol(ks, "testmod", "abs_dup", 1)
    assert r.error == "symbol 'abs_dup' not found in symbol table"
    assert r.coming_ok and r.coming_differs
    r = klp_find_object_symbol(ks, "testmod", "abs_dup", 2)
    assert not r.ok and not r.coming_ok and not r.coming_differs
    assert r.coming_error == "symbol 'abs_dup' not found in symbol table"
    # sympos 0: the walk stops at the second match, whose address (0) is checked first
    r = klp_find_object_symbol(ks, "testmod", "abs_dup", 0)
    assert r.coming_error == "symbol 'abs_dup' not found in symbol table"
    assert klp_find_object_symbol(ks, "testmod", "abs_dup", 3).coming_ok


def test_failures_are_typed(tmp_path: Path) -> None:
    # the Resolution carries the kernel's failure as a typed error, LIVE and COMING
    # apart; the message is made from its fields, and equal failures compare equal
    ks = load_sources([str(build_module(tmp_path))])
    r = klp_find_object_symbol(ks, "testmod", "helper", 3)
    assert isinstance(r.failure, SymbolPositionError) and r.coming_failure is None
    assert (r.failure.objname, r.failure.name, r.failure.sympos) == ("testmod", "helper", 3)
    assert str(r.failure) == r.error and r.exception() is r.failure
    r = klp_find_object_symbol(ks, "testmod", "abs_dup", 1)
    assert isinstance(r.failure, SymbolNotFoundError) and r.coming_failure is None
    r = klp_find_object_symbol(ks, "testmod", "abs_dup", 2)
    assert (
        r.failure
        == r.coming_failure
        == SymbolNotFoundError(objname="testmod", name="abs_dup", sympos=2)
    )
    assert r.failure != SymbolNotFoundError(objname="testmod", name="abs_dup", sympos=1)
    assert AmbiguousSymbolError(objname="vmlinux", name="f", sympos=0).message == (
        "unresolvable ambiguity for symbol 'f' in object '(null)'"
    )


def test_module_name_spelling(tmp_path: Path) -> None:
    ko = build_module(tmp_path, "snd_hda_intel", filename="snd-hda-intel.ko")
    ks = load_sources([str(ko)])
    assert klp_find_object_symbol(ks, "snd_hda_intel", "helper", 1).ok
    r = klp_find_object_symbol(ks, "snd-hda-intel", "helper", 1)
    assert not r.ok and not r.not_loaded and r.note is not None
    assert "compares module names exactly" in r.note


def test_builtin_module(tmp_path: Path) -> None:
    root = tmp_path / "mods"
    root.mkdir()
    (root / "modules.order").write_text("")
    (root / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    ks = load_sources([str(root)])
    r = klp_find_object_symbol(ks, "ext4", "ext4_attr_store", 0)
    assert not r.ok and not r.not_loaded and "built into vmlinux" in (r.note or "")


def _livepatch(tmp: Path, names: list[str]) -> Path:
    elf = open_elf(SAMPLE)
    tab = elf.symtab
    assert tab is not None
    for n in names:
        tab.add_symbol(n, st_info=st_info(STB.GLOBAL, STT.NOTYPE), st_shndx=SHN.LIVEPATCH)
    out = tmp / "lp.ko"
    save_elf(elf, out)
    return out


def _release_kallsyms(tmp: Path, release: str | None) -> Path:
    p = tmp / "kallsyms"
    p.write_text(KALLSYMS + "ffffffff81000600 D max_cstate\nffffffff81000700 D total_forks\n"
                 "ffffffff81000800 D nr_threads\nffffffff81000900 d max_cstate\n")  # fmt: skip
    return p


def test_resolve_module_and_kernel_messages(tmp_path: Path) -> None:
    lp = _livepatch(tmp_path, [".klp.sym.vmlinux.dup,0", ".klp.sym.xfs.xfs_foo,0",
                               ".klp.sym.vmlinux.bad"])  # fmt: skip
    ks = load_sources([str(_release_kallsyms(tmp_path, None))])
    results = resolve_module(ks, klp_module(open_elf(lp)))
    by_name = {r.symbol.symbol.name: r for r in results}
    assert by_name[".klp.sym.vmlinux.max_cstate,1"].ok
    assert by_name[".klp.sym.vmlinux.max_cstate,2"].ok
    assert by_name[".klp.sym.xfs.xfs_foo,0"].not_loaded
    assert by_name[".klp.sym.vmlinux.bad"].resolution is None
    assert kernel_messages(results) == [
        "livepatch: unresolvable ambiguity for symbol 'dup' in object '(null)'",
        "livepatch: symbol .klp.sym.vmlinux.bad has an incorrectly formatted name",
    ]


def test_release_mismatch(tmp_path: Path) -> None:
    ks = load_sources([str(build_module(tmp_path))])
    assert release_mismatch(ks, "6.1.0-test SMP") is None
    assert release_mismatch(ks, None) is None
    msg = release_mismatch(ks, "6.1.0-56-amd64 SMP preempt")
    assert msg is not None and "6.1.0-56-amd64" in msg and "6.1.0-test" in msg


# --- the command line ---------------------------------------------------------------


def test_cli_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lp = _livepatch(tmp_path, [".klp.sym.vmlinux.dup,0", ".klp.sym.xfs.xfs_foo,0"])
    k = _release_kallsyms(tmp_path, None)
    assert main(["resolve", str(lp), "--kernel", str(k)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"kernel: {k}: kallsyms, ")
    assert "  note: the kernel symbols do not say their release; the module was built for " in out
    assert "unresolvable ambiguity for symbol 'dup' in object '(null)'" in out
    assert "not loaded: relocations would be applied when xfs loads" in out
    assert "candidates (position, address, type, where):" in out
    assert "   1  ffffffff81000100  t" in out and "   3  ffffffff81000300  t" in out
    assert "running kernel" not in out


def test_cli_exit_status_zero_with_only_not_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lp = _livepatch(tmp_path, [".klp.sym.xfs.xfs_foo,0"])
    k = _release_kallsyms(tmp_path, None)
    assert main(["resolve", str(lp), "-k", str(k)]) == 0
    out = capsys.readouterr().out
    assert "5 livepatch symbols: 4 resolve, 0 do not, 1 in modules that are not loaded" in out


def test_cli_release_mismatch_gives_no_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ko = build_module(tmp_path)  # release 6.1.0-test; the sample was built for 6.1.0-56-amd64
    k = _release_kallsyms(tmp_path, None)
    assert main(["resolve", str(SAMPLE), "-k", str(k), "-k", str(ko), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "klpelf.resolve/2"
    (m,) = doc["modules"]
    assert m["verdict"] == "no-verdict" and "6.1.0-56-amd64" in m["release_mismatch"]
    assert doc["kernel"]["release"] == "6.1.0-test" and not doc["kernel"]["running"]
    assert all(s["ok"] for s in m["symbols"])
    assert m["symbols"][0]["candidates"][0]["chosen"]


def test_cli_json_candidates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lp = _livepatch(tmp_path, [".klp.sym.vmlinux.dup,7"])
    assert main(["resolve", str(lp), "-k", str(_release_kallsyms(tmp_path, None)), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    sym = next(s for s in doc["modules"][0]["symbols"] if s["symbol"] == "dup")
    assert sym["error"] == "symbol position 7 for symbol 'dup' in object 'vmlinux' not found"
    assert [c["position"] for c in sym["candidates"]] == [1, 2, 3]
    # hex strings: jq and JavaScript round JSON numbers above 2**53 (klpelf.resolve/2)
    assert [c["address"] for c in sym["candidates"]] == [
        "0xffffffff81000100", "0xffffffff81000200", "0xffffffff81000300",
    ]  # fmt: skip


def test_cli_default_is_the_running_kernel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    k = _release_kallsyms(tmp_path, None)
    real = KernelSymbols.running.__func__  # type: ignore[attr-defined]

    def fake(cls: type[KernelSymbols], *, kallsyms_all: bool = True) -> KernelSymbols:
        return real(  # type: ignore[no-any-return]
            cls, kallsyms=str(k), modules=str(tmp_path), kallsyms_all=kallsyms_all
        )

    monkeypatch.setattr(KernelSymbols, "running", classmethod(fake))
    status = main(["resolve", str(SAMPLE)])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "kernel: no --kernel given: the running kernel, as modinfo and modprobe default to"
    )
    assert f"running kernel {os.uname().release}" in out
    assert "warning: the module was built for 6.1.0-56-amd64" in out
    # as check: a warning (the running kernel is not the target), exit 1 with --strict
    assert status == 0
    assert main(["resolve", "--strict", str(SAMPLE)]) == 1


def test_cli_bad_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    bad.write_text("ffffffff81000000 T ok\nffffffff8100zzzz T broken\n")
    assert main(["resolve", str(SAMPLE), "-k", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"klpelf: {bad}:2: malformed symbol line")
    assert len(err.splitlines()) == 1


def test_cli_bad_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k = _release_kallsyms(tmp_path, None)
    junk = tmp_path / "junk.ko"
    junk.write_bytes(b"not an elf")
    assert main(["resolve", str(junk), "-k", str(k)]) == 1
    assert capsys.readouterr().err.startswith(f"klpelf: {junk}: ")


# --- real data ------------------------------------------------------------------------

CORPUS = Path.home() / ".cache/klpelf/corpus"


@pytest.mark.corpus
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_real_kernel_symbols(arch: str) -> None:
    manifest = CORPUS / "manifest.json"
    if not manifest.exists():
        pytest.skip(f"no corpus at {CORPUS} (run tests/corpus/fetch.py)")
    info = json.loads(manifest.read_text())[arch]
    ks = load_sources([info["system_map"], info["modules_dir"]])
    assert ks.release == info["release"]
    # sympos over vmlinux = rank by address (non-weak first at one address), recounted here
    groups: dict[str, list[tuple[int, bool, int]]] = {}
    with open(info["system_map"]) as f:
        for lineno, line in enumerate(f):
            hexaddr, type_, name = line.split()
            if not is_ignored_symbol(name, type_):
                groups.setdefault(name, []).append((int(hexaddr, 16), type_ in "wWvV", lineno))
    dups = sorted(n for n, g in groups.items() if len(g) > 1)
    assert len(dups) > 100
    for name in random.Random(arch).sample(dups, 100):
        ranked = sorted(groups[name])
        ks.prefetch([name])
        assert klp_find_object_symbol(ks, "vmlinux", name, 0).error == (
            f"unresolvable ambiguity for symbol '{name}' in object '(null)'"
        )
        for pos, (addr, _, _) in enumerate(ranked, 1):
            r = klp_find_object_symbol(ks, "vmlinux", name, pos)
            assert r.ok == (addr != 0) and r.address == (addr or None)
        r = klp_find_object_symbol(ks, "vmlinux", name, len(ranked) + 1)
        assert r.error is not None and r.error.startswith(f"symbol position {len(ranked) + 1} ")
    uniques = sorted(n for n, g in groups.items() if len(g) == 1 and g[0][0])
    for name in random.Random(1).sample(uniques, 200):
        assert klp_find_object_symbol(ks, "vmlinux", name, 0).address == groups[name][0][0]
    # a module from the tree: not loaded, resolved from its .ko
    r = klp_find_object_symbol(ks, "ext4", "ext4_attr_store", 0)
    assert r.ok and r.address is None and r.source.endswith("ext4.ko")
    assert r.candidates[0].section == ".text"  # (distribution modules carry no STT_FILE)
