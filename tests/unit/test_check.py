"""`klpelf check`: one case per rule, on the real kbuild-built sample, broken with the writer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from klpelf.cli import main
from klpelf.elf.constants import SHF, SHN, SHT, STB, STT
from klpelf.elf.file import ElfFile
from klpelf.elf.reader import open_elf, read_elf
from klpelf.elf.relocs import move_relocations
from klpelf.elf.symbols import st_info
from klpelf.elf.writer import write_elf
from klpelf.klp.check import CheckResult, check_module
from klpelf.release import KernelRelease

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples/klp_sample/klp_sample_lp.ko"
V61 = KernelRelease(6, 1)


def _sample() -> ElfFile:
    return open_elf(SAMPLE)


def _klp_section(elf: ElfFile) -> int:
    sec = elf.section_by_name(".klp.rela.vmlinux.text")
    assert sec is not None
    return sec.index


def _sym(elf: ElfFile, name: str) -> int:
    tab = elf.symtab
    assert tab is not None
    return tab.names().index(name)


def _check(elf: ElfFile, version: KernelRelease = V61) -> CheckResult:
    # through bytes, so the check sees exactly what a file would hold
    return check_module(read_elf(write_elf(elf), path="m.ko"), version=version)


def _rename_klp_section(new: str) -> Callable[[ElfFile], None]:
    def f(elf: ElfFile) -> None:
        elf.rename_section(elf.sections[_klp_section(elf)], new)

    return f


def _non_klp_symbol_in_klp_section(elf: ElfFile) -> None:
    # move the relocation against seq_printf (exported, SHN_UNDEF) into the klp section
    text_rela = elf.section_by_name(".rela.text")
    assert text_rela is not None
    rt = elf.relocations(text_rela)
    mask = rt.sym_array == _sym(elf, "seq_printf")
    first = np.zeros(len(rt), dtype=bool)
    first[int(np.argmax(mask))] = True
    move_relocations(elf, text_rela, elf.sections[_klp_section(elf)], first)


def _set_symbol(old: str, **kw: object) -> Callable[[ElfFile], None]:
    def f(elf: ElfFile) -> None:
        tab = elf.symtab
        assert tab is not None
        tab.set_symbol(_sym(elf, old), **kw)  # type: ignore[arg-type]

    return f


def _drop_livepatch_modinfo(elf: ElfFile) -> None:
    mi = elf.modinfo
    assert mi is not None
    e = next(e for e in mi.entries if e.key == "livepatch")
    sec = mi.section
    data = bytearray(sec.data)
    data[e.offset : e.offset + e.length] = b"\0" * e.length
    sec.set_data(bytes(data))


def _clear_flag(elf: ElfFile) -> None:
    elf.sections[_klp_section(elf)].sh_flags &= ~SHF.RELA_LIVEPATCH


def _same_target_twice(elf: ElfFile) -> None:
    # an ordinary relocation at the offset of a klp one: the loader writes it first
    klp = elf.relocations(elf.sections[_klp_section(elf)])
    off = int(klp.array["r_offset"][0])
    rela = elf.section_by_name(".rela.text")
    assert rela is not None
    rt = elf.relocations(rela)
    arr = rt.array.copy()
    arr["r_offset"][0] = off
    rela.set_data(arr.tobytes())


KERNEL_CASES: list[tuple[str, Callable[[ElfFile], None], str, str, int]] = [
    (
        "section-name",
        _rename_klp_section(".klp.rela..text"),
        "load",
        "livepatch: section .klp.rela..text has an incorrectly formatted name",
        22,
    ),
    (
        "not-livepatch-symbol",
        _non_klp_symbol_in_klp_section,
        "load",
        "livepatch: symbol seq_printf is not marked as a livepatch symbol",
        22,
    ),
    (
        "symbol-name",
        _set_symbol(".klp.sym.vmlinux.nr_threads,0", name=".klp.sym.vmlinux.nr_threads"),
        "load",
        "livepatch: symbol .klp.sym.vmlinux.nr_threads has an incorrectly formatted name",
        22,
    ),
    (
        "unknown-symbol",
        _set_symbol(".klp.sym.vmlinux.nr_threads,0", st_shndx=SHN.UNDEF),
        "load",
        "klp_sample: Unknown symbol .klp.sym.vmlinux.nr_threads,0 (err -2)",
        2,
    ),
    (
        "not-livepatch",
        _drop_livepatch_modinfo,
        "enable",
        "livepatch: module klp_sample is not marked as a livepatch module",
        22,
    ),
    (
        "x86-nonzero-target",
        _same_target_twice,
        "load",
        "module: x86/modules: Skipping invalid relocation target, existing value is nonzero "
        "for type 2, loc <loc>, val <val>",
        8,
    ),
]


@pytest.mark.parametrize(
    ("name", "mutate", "when", "dmesg", "errno"), KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES]
)
def test_kernel_refuses(
    name: str, mutate: Callable[[ElfFile], None], when: str, dmesg: str, errno: int
) -> None:
    elf = _sample()
    mutate(elf)
    res = _check(elf)
    first = res.first_kernel_error
    assert first is not None, res.diagnostics
    assert (first.when, first.dmesg_prefix + first.message, first.errno) == (when, dmesg, errno)
    assert res.kernel_verdict == "refuse"


def test_sample_is_clean() -> None:
    res = _check(_sample())
    assert res.diagnostics == []
    assert res.kernel_verdict == "accept"
    assert str(check_module(_sample()).version) == "6.1"  # from vermagic


def test_section_of_an_undeclared_object_is_never_applied() -> None:
    # the sample's struct klp_patch declares vmlinux only: livepatch applies the
    # sections of the declared objects, so an ext4 section is never applied and the
    # kernel says nothing, ext4 loaded or not (the module-specific section's own rules
    # are never reached: tests/kernel modsec_vmlinux_sym shows them for a declared one)
    elf = _sample()
    _rename_klp_section(".klp.rela.ext4.text")(elf)
    for loaded in (None, lambda o: True):
        res = check_module(read_elf(write_elf(elf)), version=V61, loaded=loaded)
        assert res.kernel_verdict == "accept"
        assert [d for d in res.diagnostics if d.kernel] == []
        (d,) = [d for d in res.errors if d.rule == "undeclared-object-section"]
        assert d.section is not None and d.section.name == ".klp.rela.ext4.text"
        assert "declares no klp_object 'ext4'" in d.message and "klpelf's rule" in d.message
        assert d.when == "runtime" and not d.kernel
    # its livepatch symbols renamed to ext4's too: never resolved either
    tab = elf.symtab
    assert tab is not None
    for i, name in enumerate(tab.names()):
        if name.startswith(".klp.sym.vmlinux."):
            tab.set_symbol(i, name=name.replace(".vmlinux.", ".ext4.", 1))
    res = check_module(read_elf(write_elf(elf)), version=V61)
    never = sorted(d.symbol[1] for d in res.errors
                   if d.rule == "undeclared-object-symbol" and d.symbol)  # fmt: skip
    assert never == [".klp.sym.ext4.max_cstate,1", ".klp.sym.ext4.max_cstate,2",
                     ".klp.sym.ext4.nr_threads,0", ".klp.sym.ext4.total_forks,0"]  # fmt: skip
    assert [d for d in res.diagnostics if d.kernel] == []


def test_missing_flag_loads_then_crashes() -> None:
    elf = _sample()
    _clear_flag(elf)
    res = _check(elf)
    assert res.kernel_verdict == "accept"
    rules = sorted({d.rule for d in res.errors})
    assert rules == ["klp-section-without-flag", "livepatch-symbol-in-ordinary-relocation"]
    assert all(d.when == "runtime" for d in res.errors)


def test_version_wording() -> None:
    elf = _sample()
    _non_klp_symbol_in_klp_section(elf)
    tab = elf.symtab
    assert tab is not None
    symndx = tab.section.index
    new = _check(elf, KernelRelease(7, 2)).first_kernel_error
    assert new is not None
    assert new.message == (
        f"symbol seq_printf at rela sec {symndx} idx 4 is not marked as a livepatch symbol"
    )
    elf2 = _sample()
    _same_target_twice(elf2)
    msg63 = _check(elf2, KernelRelease(6, 12)).first_kernel_error
    assert msg63 is not None and msg63.message.startswith(
        "x86/modules: Invalid relocation target, existing value is nonzero for type 2,"
    )
    msg619 = _check(elf2, KernelRelease(6, 19)).first_kernel_error
    assert msg619 is not None and "nonzero for sec " in msg619.message


def test_ksym_name_len_by_release() -> None:
    long = "f" * 200
    elf = _sample()
    _set_symbol(".klp.sym.vmlinux.nr_threads,0", name=f".klp.sym.vmlinux.{long},0")(elf)
    assert _check(elf, KernelRelease(6, 1)).kernel_verdict == "accept"
    old = _check(elf, KernelRelease(5, 10)).first_kernel_error
    assert old is not None
    assert old.message == f"symbol .klp.sym.vmlinux.{long},0 has an incorrectly formatted name"


def _warn_cases() -> list[tuple[str, Callable[[ElfFile], None], str]]:
    def not_alloc(elf: ElfFile) -> None:
        elf.sections[_klp_section(elf)].sh_flags &= ~SHF.ALLOC

    def long_objname(elf: ElfFile) -> None:
        _rename_klp_section(".klp.rela." + "m" * 60 + ".text")(elf)

    def local_after_globals(elf: ElfFile) -> None:
        tab = elf.symtab
        assert tab is not None
        tab.add_symbol("late_local")
        tab._writable()["st_info"][len(tab) - 1] = st_info(STB.LOCAL, STT.NOTYPE)
        tab._commit()

    def unreferenced(elf: ElfFile) -> None:
        tab = elf.symtab
        assert tab is not None
        tab.add_symbol(".klp.sym.vmlinux.unused_sym,0", st_shndx=SHN.LIVEPATCH)

    def duplicate(elf: ElfFile) -> None:
        tab = elf.symtab
        assert tab is not None
        tab.add_symbol(".klp.sym.vmlinux.nr_threads,0", st_shndx=SHN.LIVEPATCH)

    def unsafe(elf: ElfFile) -> None:
        jt = elf.add_section("__jump_table", SHT.PROGBITS, sh_flags=SHF.ALLOC | SHF.WRITE)
        elf.add_relocation_section(
            ".klp.rela.ext4.__jump_table", jt, extra_flags=SHF.ALLOC | SHF.RELA_LIVEPATCH
        )

    def klp_arch(elf: ElfFile) -> None:
        elf.add_section(".klp.arch.vmlinux.altinstructions", SHT.PROGBITS)

    def draft(elf: ElfFile) -> None:
        text = elf.section_by_name(".text")
        assert text is not None
        elf.add_relocation_section(".klp.rel.vmlinux.text", text)

    def annotation(elf: ElfFile) -> None:
        tab = elf.symtab
        assert tab is not None
        tab.add_symbol(".klp.sym.rela.lp.vmlinux.foo,0", st_shndx=SHN.LIVEPATCH)

    def modinfo_n(elf: ElfFile) -> None:
        mi = elf.modinfo
        assert mi is not None
        mi.set("livepatch", "N")

    def bad_link(elf: ElfFile) -> None:
        elf.sections[_klp_section(elf)].sh_link = 1

    def as_rel(elf: ElfFile) -> None:
        # SHT_REL with Elf_Rela's entsize: the kernel reads Elf_Rela all the same
        elf.sections[_klp_section(elf)].sh_type = SHT.REL

    return [
        ("klp-section-not-alloc", not_alloc, "is not SHF_ALLOC"),
        ("klp-section-suffix", _rename_klp_section(".klp.rela.vmlinux.data"), "name suggests"),
        ("klp-objname-too-long", long_objname, "longer than 55 bytes"),
        ("local-after-globals", local_after_globals, "after the first global"),
        ("unreferenced-livepatch-symbol", unreferenced, "never referenced"),
        ("duplicate-livepatch-symbol", duplicate, "also at index"),
        ("klp-unsafe-section", unsafe, "applied after the loader processed"),
        ("klp-arch-section", klp_arch, "removed in Linux 5.8"),
        ("draft-rel-section", draft, "2016 draft spelling"),
        ("annotation-symbol", annotation, "klp-convert annotation"),
        ("modinfo-livepatch-value", modinfo_n, "takes any value"),
        ("klp-section-link", bad_link, "is not the symbol table"),
        ("klp-section-type", as_rel, "reads it as Elf_Rela anyway"),
    ]


@pytest.mark.parametrize(("rule", "mutate", "text"), _warn_cases(), ids=lambda x: str(x)[:30])
def test_warnings(rule: str, mutate: Callable[[ElfFile], None], text: str) -> None:
    elf = _sample()
    mutate(elf)
    res = _check(elf)
    hits = [d for d in res.warnings if d.rule == rule]
    assert hits, [d.rule for d in res.diagnostics]
    assert text in hits[0].message


def test_cli_json_and_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elf = _sample()
    _rename_klp_section(".klp.rela..text")(elf)
    bad = tmp_path / "bad.ko"
    bad.write_bytes(write_elf(elf))
    assert main(["check", "--json", str(SAMPLE), str(bad)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "klpelf.check/2"
    good, broken = doc["modules"]
    assert (good["verdict"], good["errors"], good["kernel_message"]) == ("accept", 0, None)
    assert broken["verdict"] == "refuse" and broken["errno"] == 22
    assert broken["kernel_message"] == (
        "livepatch: section .klp.rela..text has an incorrectly formatted name"
    )
    assert main(["check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: .klp.rela..text[42]: error: section .klp.rela..text has an incorrectly" in out
    assert "would refuse the module when the module loads (errno 22)" in out


def test_cli_strict_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elf = _sample()
    elf.modinfo.set("livepatch", "N")  # type: ignore[union-attr]
    warn = tmp_path / "warn.ko"
    warn.write_bytes(write_elf(elf))
    assert main(["check", str(warn)]) == 0
    assert main(["check", "--strict", str(warn)]) == 1
    junk = tmp_path / "junk.ko"
    junk.write_bytes(b"not an elf")
    capsys.readouterr()
    assert main(["check", str(junk)]) == 1
    assert capsys.readouterr().err == f"klpelf: {junk}: not an ELF file (bad magic)\n"
    assert main(["check", "--kernel-release", "banana", str(SAMPLE)]) == 2


def _second_symtab(elf: ElfFile) -> None:
    tab = elf.symtab
    assert tab is not None
    elf.add_section(
        ".symtab2", SHT.SYMTAB, data=bytes(tab.section.data)[:48], sh_link=tab.section.sh_link,
        sh_info=1, sh_entsize=24, sh_addralign=8,
    )  # fmt: skip


def _not_relocatable(elf: ElfFile) -> None:
    elf.header.e_type = 3  # ET_DYN
    elf.modified = True


@pytest.mark.parametrize(
    ("mutate", "version", "message"),
    [
        (_second_symtab, KernelRelease(6, 12), "klp_sample: module has no symbols (stripped?)"),
        (_not_relocatable, KernelRelease(6, 1), "Invalid ELF header type: 3 != 1"),
    ],
    ids=["two-symtabs", "not-ET_REL"],
)
def test_elf_validity(
    mutate: Callable[[ElfFile], None], version: KernelRelease, message: str
) -> None:
    elf = _sample()
    mutate(elf)
    first = _check(elf, version).first_kernel_error
    assert first is not None
    assert (first.message, first.when, first.errno) == (message, "load", 8)


def test_two_symtabs_before_6_4() -> None:
    # Debian's 5.10 and 6.1 load it (the loader takes the first symbol table); the
    # "exactly one" rule came with 6.4 (tests/kernel: two_symtabs)
    elf = _sample()
    _second_symtab(elf)
    res = _check(elf, KernelRelease(6, 1))
    assert res.kernel_verdict == "accept"
    assert [d.rule for d in res.warnings] == ["elf-symtab"]


def test_not_et_rel_before_5_16_is_silent() -> None:
    elf = _sample()
    _not_relocatable(elf)
    first = _check(elf, KernelRelease(5, 10)).first_kernel_error
    assert first is not None and "without a message" in first.message


def test_two_entries_of_one_section_at_the_same_place() -> None:
    # the kernel applies entries in order: the second finds the first's bytes
    elf = _sample()
    rela = elf.section_by_name(".rela.text")
    assert rela is not None
    arr = elf.relocations(rela).array.copy()
    arr["r_offset"][3] = arr["r_offset"][1] + 2  # overlaps entry 1's four bytes
    rela.set_data(arr.tobytes())
    first = _check(elf).first_kernel_error
    assert first is not None and first.section is not None
    assert (first.rule, first.relocation) == ("x86-nonzero-target", 3)
    assert first.section.index == rela.index


def test_klp_section_typed_rel_is_read_as_rela() -> None:
    # its entries still reference the livepatch symbols: no error, none unreferenced
    elf = _sample()
    elf.sections[_klp_section(elf)].sh_type = SHT.REL
    res = _check(elf)
    assert not res.errors
    assert [d.rule for d in res.warnings] == ["klp-section-type"]
