"""The harness's own pieces, without a VM: initramfs archive, messages, mutations, script."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kernel.klpvm.cases import (
    CASES,
    guest_script,
    message_pattern,
    messages_match,
    relevant_messages,
)
from kernel.klpvm.cpio import Entry, with_parents, write_newc
from kernel.klpvm.mutate import MUTATIONS, make_variant
from kernel.test_check_agreement import matches_kernel
from klpelf.elf.constants import SHF, SHN
from klpelf.elf.reader import open_elf
from toolchain import readelf

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "klp_sample" / "klp_sample_lp.ko"


def _read_newc(data: bytes) -> list[tuple[str, int, bytes]]:
    out: list[tuple[str, int, bytes]] = []
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        body = data[pos : pos + size]
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out.append((name, mode, body))


def test_newc_archive() -> None:
    entries = with_parents(
        [
            Entry("bin/busybox", b"\x7fELF...", 0o755),
            Entry("bin/sh", symlink="busybox"),
            Entry("klpt/mods/a.ko", b"abc"),
            Entry("proc", None),
        ]
    )
    back = _read_newc(write_newc(entries))
    names = [n for n, _, _ in back]
    assert names == ["bin", "bin/busybox", "bin/sh", "klpt", "klpt/mods", "klpt/mods/a.ko", "proc"]
    by = {n: (m, b) for n, m, b in back}
    assert stat.S_ISDIR(by["klpt/mods"][0])
    assert stat.S_ISLNK(by["bin/sh"][0]) and by["bin/sh"][1] == b"busybox"
    assert by["bin/busybox"] == (stat.S_IFREG | 0o755, b"\x7fELF...")


def test_relevant_messages_and_patterns() -> None:
    dmesg = [
        "klpt_a: loading out-of-tree module taints kernel.",
        "livepatch: symbol 'x' not found in symbol table",
        "virtio_blk virtio0: [vda] 524288 512-byte logical blocks",
        "module: x86/modules: Skipping invalid relocation target, existing value is nonzero "
        "for type 2, loc 00000000deadbeef, val ffffffffc023f3bc",
        "module: x86/modules: Skipping invalid relocation target, existing value is nonzero "
        "for type 2, loc (____ptrval____), val ffffffff83317004",
    ]
    got = relevant_messages(dmesg)
    assert got == [
        "livepatch: symbol 'x' not found in symbol table",
        "module: x86/modules: Skipping invalid relocation target, existing value is nonzero "
        "for type 2, loc <ptr>, val <module address>",
        "module: x86/modules: Skipping invalid relocation target, existing value is nonzero "
        "for type 2, loc <ptr>, val ffffffff83317004",
    ]
    expected = [
        got[0],
        got[1].replace("<module address>", "<hex>"),
        got[2].replace("ff", "<hex>", 1),
    ]
    assert not message_pattern(expected[2]).fullmatch(got[1])
    assert messages_match([got[0], *expected[1:]], got)
    assert not messages_match(got[:2], got)


def test_check_message_matching() -> None:
    kernel = relevant_messages(
        [
            "livepatch: symbol seq_printf is not marked as a livepatch symbol",
            "module: x86/modules: Skipping invalid relocation target, existing value is "
            "nonzero for type 2, loc 00000000deadbeef, val ffffffff83317004",
            "klpt_sym_undef: Unknown symbol .klp.sym.vmlinux.total_forks,0 (err -2)",
        ]
    )
    assert matches_kernel("symbol seq_printf is not marked as a livepatch symbol", kernel)
    assert matches_kernel(
        "x86/modules: Skipping invalid relocation target, existing value is nonzero for "
        "type 2, loc <loc>, val <val>",
        kernel,
    )
    assert matches_kernel(
        "x86/modules: Skipping invalid relocation target, existing value is nonzero for "
        "type 2, loc <loc>, val ffffffff83317004",
        kernel,
    )
    assert not matches_kernel(
        "x86/modules: Skipping invalid relocation target, existing value is nonzero for "
        "type 2, loc <loc>, val ffffffff83317000",
        kernel,
    )
    assert matches_kernel("Unknown symbol .klp.sym.vmlinux.total_forks,0 (err -2)", kernel)
    assert not matches_kernel("symbol seq_puts is not marked as a livepatch symbol", kernel)


def test_guest_script_runs_every_step() -> None:
    script = guest_script(list(CASES))
    for case in CASES:
        assert f"case_begin {case.name}\n" in script
    assert script.count("step_") - script.count("step_() {") >= sum(len(c.steps) for c in CASES)
    assert "step_load klpt_sec_not_flagged" in script.split("case_begin")[-1]


# The vmlinux-based mutations apply to the checked-in sample (it has total_forks,0,
# max_cstate,1/2 and seq_printf calls too); klpt_late-based ones need a kbuild.
@pytest.mark.parametrize(
    "case", [c for c, m in MUTATIONS.items() if m.base == "klpt_vmlinux"], ids=str
)
def test_mutation_applies(case: str, tmp_path: Path) -> None:
    out = make_variant(SAMPLE, tmp_path / f"klpt_{case}.ko", f"klpt_{case}", MUTATIONS[case])
    res = readelf(out, "-a")
    assert res.returncode == 0 and "Error" not in res.stderr, res.stderr
    elf = open_elf(out)
    assert elf.modinfo is not None and elf.modinfo.get("name") == f"klpt_{case}"
    this = elf.section_by_name(".gnu.linkonce.this_module")
    assert this is not None and bytes(this.data[24:80]).rstrip(b"\0") == f"klpt_{case}".encode()
    base = open_elf(SAMPLE)
    tab, btab = elf.symtab, base.symtab
    assert tab is not None and btab is not None
    klp = [s for s in elf.sections if s.sh_flags & SHF.RELA_LIVEPATCH]
    changed = (
        tab.names() != btab.names()
        or [s.st_shndx for s in tab] != [s.st_shndx for s in btab]
        or [(s.name, s.sh_flags, s.sh_size) for s in elf.sections]
        != [(s.name, s.sh_flags, s.sh_size) for s in base.sections]
        or bytes(elf.section_by_name(".text").data)  # type: ignore[union-attr]
        != bytes(base.section_by_name(".text").data)  # type: ignore[union-attr]
        or elf.modinfo.get("livepatch") != "Y"
    )
    assert changed, f"{case}: nothing but the name changed"
    assert all(s.st_shndx in (SHN.LIVEPATCH, SHN.UNDEF) for s in tab if s.name.startswith(".klp"))
    assert klp or case == "sec_not_flagged"
