"""tests/ld_oracle.py: GNU ld and the x86_64 twin agree on the bytes of every type both apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from klpelf.release import KernelRelease
from ld_oracle import CROSS, Cross, cross, link, twin

TEXT, DATA = 0xFFFF_FFFF_C000_0000, 0xFFFF_FFFF_C000_2000
#: ext_near is within +-2 GiB of .text (PC32 fits), low fits R_X86_64_32
SYMBOLS = {"ext_near": 0xFFFF_FFFF_8100_1234, "ext_far": 0x0000_7000_0000_0010, "low": 0x1234_5678}

ASM = """
    .text
    .globl f
f:  call ext_near
    movl ext_near(%rip), %eax
    movq $ext_near + 16, %rax
    movl $low, %eax
    jmp local
local: ret
    .section .data.t,"aw"
    .quad ext_far
    .quad local - 8
    .quad ext_far - .
    .long ext_near - .
    .long low + 3
"""


def test_x86_64_twin_matches_ld(tmp_path: Path) -> None:
    c = cross("x86_64")
    linked = link(c, ASM, tmp_path, sections={".text": TEXT, ".data.t": DATA}, symbols=SYMBOLS)
    # PLT32, PC32, 32S, 32 in .text; 64, PC64, PC32, 32 in .data.t
    want = {".text": {4, 2, 11, 10}, ".data.t": {1, 24, 2, 10}}
    for section, types in want.items():
        facts, data = twin(linked, section, KernelRelease(6, 12))
        assert facts.stop is None, (section, facts.reason)
        assert set(facts.types) == types, section
        assert data == linked.section(section), section
    # the object's places were zero: ld wrote something at each
    assert linked.section(".data.t")[:8] == SYMBOLS["ext_far"].to_bytes(8, "little")


def test_missing_cross_binutils_skip_or_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        CROSS, "nowhere", Cross("nowhere", "nowhere-linux-gnu-", "binutils-nowhere")
    )
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install binutils-nowhere"):
        cross("nowhere")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="nowhere-linux-gnu-as, nowhere-linux-gnu-ld"):
        cross("nowhere")


def test_chroot_toolchain_not_prepared_skips_or_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a chroot toolchain (tests/cross_chroot.py) that is not prepared: every tool missing
    from cross_chroot import TOOLCHAINS, ChrootToolchain

    monkeypatch.setenv("KLPELF_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setitem(TOOLCHAINS, "nowhere", ChrootToolchain("nowhere", "trixie", ("x",)))
    monkeypatch.setitem(CROSS, "nowhere", Cross("nowhere", "nowhere-linux-gnu-", "x (trixie)",
                                                chroot="nowhere"))  # fmt: skip
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"nowhere-linux-gnu-as.*install x"):
        cross("nowhere")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        cross("nowhere")
