"""`klpelf check`, load time: exports, modversions, vermagic, plain objects, releases.

The module is the kbuild-built sample (vermagic 6.1.0-56-amd64 with modversions; its
ordinary undefined symbols klp_enable_patch, __fentry__, __x86_return_thunk,
seq_printf and seq_puts; __versions with their CRCs and module_layout's), edited
with the writer.  The kernel's exports are a Module.symvers, a kallsyms dump with
``__ksymtab_`` entries, or a module tree, written here with the CRCs the sample's
own __versions holds (the CRCs of the 6.1.0-56 kernel it was built against).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from klpelf.cli import main
from klpelf.elf.constants import STB, STT
from klpelf.elf.file import ElfFile
from klpelf.elf.reader import open_elf, read_elf
from klpelf.elf.symbols import st_info
from klpelf.elf.writer import save_elf
from klpelf.klp.check import CheckResult, check_module
from klpelf.klp.version import module_versions, same_magic
from klpelf.release import KernelRelease
from klpelf.symbols.sources import load_sources

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples/klp_sample/klp_sample_lp.ko"
MAGIC = "6.1.0-56-amd64 SMP preempt mod_unload modversions "
V61, V510, V612, V72 = (KernelRelease(*v) for v in ((6, 1), (5, 10), (6, 12), (7, 2)))
EXPORTED = ("klp_enable_patch", "__fentry__", "__x86_return_thunk", "seq_printf", "seq_puts")


def _crcs() -> dict[str, int]:
    v = module_versions(open_elf(SAMPLE))
    assert v is not None
    return v


def _symvers(tmp: Path, crcs: dict[str, int] | None = None, extra: str = "") -> Path:
    crcs = crcs if crcs is not None else _crcs()
    lines = [f"{crc:#010x}\t{name}\tvmlinux\tEXPORT_SYMBOL\t" for name, crc in crcs.items()]
    p = tmp / "Module.symvers"
    p.write_text("\n".join(lines) + "\n" + extra)
    return p


def _edited(tmp: Path, edit: Callable[[ElfFile], None], name: str = "m.ko") -> Path:
    elf = open_elf(SAMPLE)
    edit(elf)
    out = tmp / name
    save_elf(elf, out, overwrite=True)
    return out


def _rename(old: str, new: str, **kw: object) -> Callable[[ElfFile], None]:
    def f(elf: ElfFile) -> None:
        tab = elf.symtab
        assert tab is not None
        tab.set_symbol(tab.names().index(old), name=new, **kw)  # type: ignore[arg-type]

    return f


def _check(path: Path, *sources: Path, version: KernelRelease = V61,
           release: str | None = None) -> CheckResult:  # fmt: skip
    ks = load_sources([str(s) for s in sources]) if sources else None
    return check_module(read_elf(path.read_bytes(), path=str(path)), version=version,
                        kernel=ks, target_release=release)  # fmt: skip


def _kernel_errors(res: CheckResult) -> list[tuple[str, str, int | None]]:
    return [(d.rule, d.message, d.errno) for d in res.diagnostics if d.kernel]


def _unknown(res: CheckResult) -> list[str]:
    # the loader's errors (kallsyms also resolves the livepatch symbols, which it lacks)
    return [d.message for d in res.errors if d.rule == "unknown-symbol"]


# --- exports: simplify_symbols() ----------------------------------------------------------


def test_every_symbol_exported_loads(tmp_path: Path) -> None:
    res = _check(SAMPLE, _symvers(tmp_path))
    assert res.errors == [] and res.warnings == [] and res.kernel_verdict == "accept"


def test_unknown_ordinary_symbol(tmp_path: Path) -> None:
    # the case: a plain undefined total_forks, exported by nobody
    ko = _edited(tmp_path, _rename("seq_puts", "total_forks"))
    res = _check(ko, _symvers(tmp_path))
    assert _kernel_errors(res) == [
        ("unknown-symbol", "klp_sample: Unknown symbol total_forks (err -2)", 2)
    ]
    first = res.first_kernel_error
    assert first is not None and first.when == "load" and first.symbol is not None
    # without any export table, nothing is said of it but that it was not checked
    res = _check(ko)
    assert res.kernel_verdict == "accept"


def test_weak_and_got_symbols_are_allowed(tmp_path: Path) -> None:
    # simplify_symbols(): "Ok if weak or ignored" (only when no export has it)
    weak = st_info(STB.WEAK, STT.NOTYPE)
    ko = _edited(tmp_path, _rename("seq_puts", "klpt_weak_hook", st_info=weak))
    assert _check(ko, _symvers(tmp_path)).kernel_verdict == "accept"
    ko = _edited(tmp_path, _rename("seq_puts", "_GLOBAL_OFFSET_TABLE_"), "got.ko")
    assert _check(ko, _symvers(tmp_path)).kernel_verdict == "accept"


def test_gpl_only_export_needs_a_gpl_license(tmp_path: Path) -> None:
    # klp_enable_patch is EXPORT_SYMBOL_GPL: a proprietary module does not see it
    crcs = _crcs()
    sv = _symvers(tmp_path, {k: v for k, v in crcs.items() if k != "klp_enable_patch"},
                  f"{crcs['klp_enable_patch']:#010x}\tklp_enable_patch\tvmlinux\t"
                  "EXPORT_SYMBOL_GPL\t\n")  # fmt: skip
    assert _check(SAMPLE, sv).errors == []
    for lic in ("Proprietary", None):

        def edit(e: ElfFile, lic: str | None = lic) -> None:
            mi = e.modinfo
            assert mi is not None
            mi.set("license", lic if lic is not None else "")  # '' is not GPL either

        ko = _edited(tmp_path, edit, f"{lic}.ko")
        res = _check(ko, sv)
        assert _unknown(res) == ["klp_sample: Unknown symbol klp_enable_patch (err -2)"]
        assert any(d.rule == "gpl-only-export" for d in res.diagnostics)
    ko = _edited(tmp_path, lambda e: e.modinfo.set("license", "Dual MIT/GPL"), "mit.ko")  # type: ignore[union-attr]
    assert _check(ko, sv).errors == []


def test_namespace_must_be_imported(tmp_path: Path) -> None:
    crcs = _crcs()
    rest = {k: v for k, v in crcs.items() if k != "seq_puts"}

    def sv(ns: str) -> Path:
        line = f"{crcs['seq_puts']:#010x}\tseq_puts\tvmlinux\tEXPORT_SYMBOL\t{ns}\n"
        return _symvers(tmp_path, rest, line)

    assert _kernel_errors(_check(SAMPLE, sv("KLPT_NS"))) == [
        ("namespace-not-imported", "klp_sample: module uses symbol (seq_puts) from namespace "
         "KLPT_NS, but does not import it.", 22),
        ("unknown-symbol", "klp_sample: Unknown symbol seq_puts (err -22)", 22),
    ]  # fmt: skip
    imports = _edited(tmp_path, lambda e: e.modinfo.set("import_ns", "KLPT_NS"), "ns.ko")  # type: ignore[union-attr]
    assert _check(imports, sv("KLPT_NS")).errors == []
    # 7.2's module namespaces: the exporting module names its users
    assert _check(SAMPLE, sv("module:klpt_other,klp_s*")).errors == []
    assert _check(SAMPLE, sv("module:klp-sample")).errors == []
    assert _check(SAMPLE, sv("module:klpt_other")).errors != []


def test_exports_from_kallsyms_ksymtab(tmp_path: Path) -> None:
    ko = _edited(tmp_path, _rename("seq_puts", "total_forks"))
    ks = tmp_path / "kallsyms"
    lines = [f"ffffffff8{i:07x} r __ksymtab_{n}" for i, n in enumerate((*EXPORTED, "kfree"))]
    ks.write_text("\n".join([*lines, "ffffffff83f83070 B total_forks"]) + "\n")
    res = _check(ko, ks)
    assert _unknown(res) == ["klp_sample: Unknown symbol total_forks (err -2)"]
    # a dump without __ksymtab_ entries (no KALLSYMS_ALL) tells no export table
    ks.write_text("ffffffff81000000 T _stext\nffffffff83f83070 B total_forks\n")
    res = _check(ko, ks)
    assert _unknown(res) == []
    assert "ordinary undefined symbols not checked" in " ".join(d.message for d in res.diagnostics)


def test_export_of_a_module(tmp_path: Path) -> None:
    # seq_puts exported by module klpt_dep: resolved only while it is loaded
    crcs = _crcs()
    sv = _symvers(
        tmp_path,
        {k: v for k, v in crcs.items() if k != "seq_puts"},
        f"{crcs['seq_puts']:#010x}\tseq_puts\tdrivers/klpt_dep\tEXPORT_SYMBOL\t\n",
    )
    res = _check(SAMPLE, sv)
    assert res.kernel_verdict == "accept"
    assert [d.rule for d in res.warnings] == ["export-not-a-dependency"]
    ks = tmp_path / "kallsyms"
    ks.write_text("ffffffff81000000 r __ksymtab_kfree\n")
    res = _check(SAMPLE, sv, ks)  # kallsyms: klpt_dep is not loaded
    assert _unknown(res) == ["klp_sample: Unknown symbol seq_puts (err -2)"]
    ks.write_text("ffffffff81000000 r __ksymtab_kfree\nffffffffc0001000 t dep_fn\t[klpt_dep]\n")
    assert _unknown(_check(SAMPLE, sv, ks)) == []
    # named in depends=: modprobe loads it first (a note)
    mi_dep = _edited(tmp_path, lambda e: e.modinfo.set("depends", "klpt_dep"), "d.ko")  # type: ignore[union-attr]
    ks.write_text("ffffffff81000000 r __ksymtab_kfree\n")
    res = _check(mi_dep, sv, ks)
    assert _unknown(res) == [] and "modprobe loads it first" in " ".join(
        d.message for d in res.diagnostics
    )


# --- modversions: check_version(), check_modstruct_version() -------------------------------


def _set_crc(name: str, crc: int) -> Callable[[ElfFile], None]:
    def f(elf: ElfFile) -> None:
        sec = elf.section_by_name("__versions")
        assert sec is not None
        data = bytearray(sec.data)
        for off in range(0, len(data), 64):
            if data[off + 8 : off + 8 + len(name) + 1] == name.encode() + b"\0":
                data[off : off + 8] = crc.to_bytes(8, "little")
        sec.set_data(bytes(data))

    return f


def test_crc_mismatch(tmp_path: Path) -> None:
    ko = _edited(tmp_path, _set_crc("seq_printf", 0x12345678))
    res = _check(ko, _symvers(tmp_path))
    assert _kernel_errors(res) == [
        ("symbol-version", "klp_sample: disagrees about version of symbol seq_printf", 22),
        ("unknown-symbol", "klp_sample: Unknown symbol seq_printf (err -22)", 22),
    ]
    # a kernel without CONFIG_MODVERSIONS (its Module.symvers CRCs are 0) does not compare
    res = _check(ko, _symvers(tmp_path, dict.fromkeys(_crcs(), 0)))
    assert res.errors == []


def test_no_symbol_version(tmp_path: Path) -> None:
    # an export the module has no __versions entry for: "no symbol version", -EINVAL
    ko = _edited(tmp_path, _rename("seq_puts", "kfree"))
    res = _check(ko, _symvers(tmp_path, {**_crcs(), "kfree": 0x1111}))
    assert _kernel_errors(res)[0] == (
        "no-symbol-version",
        "klp_sample: no symbol version for kfree",
        22,
    )


def test_module_layout(tmp_path: Path) -> None:
    # check_modstruct_version(): before the vermagic and every symbol; ENOEXEC
    ko = _edited(tmp_path, _set_crc("module_layout", 1))
    res = _check(ko, _symvers(tmp_path))
    assert _kernel_errors(res) == [
        ("symbol-version", "klp_sample: disagrees about version of symbol module_layout", 8)
    ]


def test_extended_modversions_from_6_14(tmp_path: Path) -> None:
    # __version_ext_crcs/__version_ext_names: relied on from 6.14, ignored before
    def ext(elf: ElfFile) -> None:
        from klpelf.elf.constants import SHT

        names = list(_crcs())
        crcs = [(0x99 if n == "seq_printf" else c) for n, c in _crcs().items()]
        elf.add_section(
            "__version_ext_crcs", SHT.PROGBITS, data=b"".join(c.to_bytes(4, "little") for c in crcs)
        )
        elf.add_section(
            "__version_ext_names", SHT.PROGBITS, data=b"".join(n.encode() + b"\0" for n in names)
        )

    ko = _edited(tmp_path, ext)
    sv = _symvers(tmp_path)
    assert _check(ko, sv, version=V612).errors == []
    msgs = [d.message for d in _check(ko, sv, version=V72).errors]
    assert msgs[0] == "klp_sample: disagrees about version of symbol seq_printf"


# --- vermagic: check_modinfo() ----------------------------------------------------------------


def _tree(tmp: Path, magic: str) -> Path:
    # a module tree whose one module has the kernel's vermagic
    tree = tmp / "lib-modules"
    (tree / "kernel").mkdir(parents=True)
    dep = _edited(tmp, lambda e: e.modinfo.set("vermagic", magic), "dep.ko")  # type: ignore[union-attr]
    shutil.copy(dep, tree / "kernel" / "virtio.ko")
    # modules.dep lists more than the tree has (the harness keeps only a few modules)
    lines = [f"kernel/gone{i}.ko:" for i in range(10)]
    (tree / "modules.dep").write_text("\n".join([*lines, "kernel/virtio.ko:"]) + "\n")
    return tree


def test_same_magic() -> None:
    assert same_magic(MAGIC, "6.1.0-57-amd64" + MAGIC[14:], True)
    assert not same_magic(MAGIC, "6.1.0-57-amd64" + MAGIC[14:], False)
    assert not same_magic(MAGIC, "6.1.0-56-amd64 SMP preempt modversions ", True)


def test_vermagic(tmp_path: Path) -> None:
    sv = _symvers(tmp_path)
    # another release, the same flags: with __versions the release is not compared
    other = "6.1.0-57-amd64 SMP preempt mod_unload modversions "
    res = _check(SAMPLE, sv, _tree(tmp_path, other))
    assert res.errors == []
    assert (
        res.release_mismatch
        == "the module's vermagic is 6.1.0-56-amd64, the target is 6.1.0-57-amd64"
    )
    # other flags: refused, with the kernel's text
    flags = "6.1.0-56-amd64 SMP mod_unload modversions "
    shutil.rmtree(tmp_path / "lib-modules")
    res = _check(SAMPLE, sv, _tree(tmp_path, flags))
    assert _kernel_errors(res) == [("vermagic", f"klp_sample: version magic '{MAGIC}' should be "
                                    f"'{flags}'", 8)]  # fmt: skip
    # a kernel without modversions compares the release too (strcmp)
    plain = "7.2.13+deb14-amd64 SMP preempt mod_unload "
    shutil.rmtree(tmp_path / "lib-modules")
    res = _check(SAMPLE, _tree(tmp_path, plain), version=V72)
    assert res.first_kernel_error is not None
    assert res.first_kernel_error.message == (
        f"klp_sample: version magic '{MAGIC}' should be '{plain}'"
    )


def test_vermagic_from_the_release_alone(tmp_path: Path) -> None:
    # no source has the kernel's vermagic: its release and the module's other words
    nover = _edited(
        tmp_path,
        lambda e: e.rename_section(
            e.section_by_name("__versions"),  # type: ignore[arg-type]
            "__versions_gone",
        ),
    )
    res = _check(nover, version=V61, release="6.1.0-57-amd64")
    err = res.first_kernel_error
    assert err is not None and err.message == (
        f"klp_sample: version magic '{MAGIC}' should be '6.1.0-57-amd64{MAGIC[14:]}'"
    )
    assert any(d.rule == "vermagic" and d.severity == "note" for d in res.diagnostics)
    assert _check(SAMPLE, version=V61, release="6.1.0-57-amd64").errors == []


# --- not a module -----------------------------------------------------------------------------


def _plain_object(tmp: Path) -> Path:
    def strip(elf: ElfFile) -> None:
        for name in (".gnu.linkonce.this_module", ".modinfo"):
            sec = elf.section_by_name(name)
            assert sec is not None
            elf.rename_section(sec, name.replace(".", "_"))

    return _edited(tmp, strip, "t.o")


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (V510, "(missing .modinfo section or name field): No module found in object"),
        (V61, "(missing .modinfo section or name field): No module found in object"),
        (V612, "module (missing .modinfo section or name field): Exactly one "
               ".gnu.linkonce.this_module section must exist."),
        (V72, "module (missing .modinfo section or name field): Exactly one "
              ".gnu.linkonce.this_module section must exist."),
    ],
)  # fmt: skip
def test_plain_object(tmp_path: Path, version: KernelRelease, message: str) -> None:
    res = _check(_plain_object(tmp_path), version=version)
    assert _kernel_errors(res) == [("no-module", message, 8)]


def test_show_plain_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = _plain_object(tmp_path)
    assert main(["show", str(t)]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.startswith(f"{t}: object ") and "not a kernel module" in head
    assert main(["show", "--json", str(t)]) == 0
    assert json.loads(capsys.readouterr().out)["modules"][0]["is_module"] is False


# --- releases -----------------------------------------------------------------------------------


@pytest.mark.parametrize("release", ["2.6", "4.4", "7.3", "99.1", "4.4.0-1-amd64"])
def test_release_not_modelled_is_a_usage_error(
    release: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--kernel-release", release, "--static", str(SAMPLE)]) == 2
    assert "is not modelled: klpelf knows the rules of Linux 4.5 to 7.2" in capsys.readouterr().err


def test_release_mismatch_in_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--kernel-release", "4.5", "--static", str(SAMPLE)]) == 0
    assert main(["check", "--kernel-release", "6.12", "--static", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert (f"{SAMPLE}: Linux 6.12 (--kernel-release; the module's vermagic is "
            "6.1.0-56-amd64) would load the module") in out  # fmt: skip
    assert main(["check", "--json", "--kernel-release", "6.1.0-57-amd64", "--static",
                 str(SAMPLE)]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)["modules"][0]
    assert got["vermagic"] == MAGIC
    assert got["release_mismatch"] == (
        "the module's vermagic is 6.1.0-56-amd64, the target is 6.1.0-57-amd64"
    )
    assert main(["check", "--json", "--kernel-release", "6.1", "--static", str(SAMPLE)]) == 0
    assert json.loads(capsys.readouterr().out)["modules"][0]["release_mismatch"] is None


def test_vermagic_release_outside_the_model(tmp_path: Path) -> None:
    ko = _edited(tmp_path, lambda e: e.modinfo.set("vermagic", "9.1.0 SMP mod_unload "))  # type: ignore[union-attr]
    res = check_module(open_elf(ko))
    assert str(res.version) == "7.2" and res.version_source == "vermagic, judged as 7.2"
    assert [d.rule for d in res.warnings] == ["release-not-modelled"]
