"""arch/loongarch64.py: the twin of LoongArch's apply_relocate_add() and its module GOT and
PLT, against GNU ld 2.44 (binutils-loongarch64-linux-gnu, run in a trixie chroot) and,
where the kernel differs from ld (its PLT, its GOT, its refusals), its own formulas."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from klpelf.arch import ModuleLayout, WriteFacts, arch_for
from klpelf.arch import loongarch64 as la
from klpelf.arch import loongarch64_sections as las
from klpelf.elf.constants import EM
from klpelf.release import KernelRelease
from ld_oracle import Linked, cross, link, twin
from reloc_entries import relocation_table

V60, V61, V65 = KernelRelease(6, 0), KernelRelease(6, 1), KernelRelease(6, 5)
V612, V616, V72 = KernelRelease(6, 12), KernelRelease(6, 16), KernelRelease(7, 2)
TEXT, DATA = 0xFFFF_8000_0020_0000, 0xFFFF_8000_0030_0000
GOT, PLT = 0xFFFF_8000_0040_0000, 0xFFFF_8000_0040_1000
SYMBOLS = {
    "near": TEXT + 0x1_0000,
    "far": 0x1234_5678_90AB_CDEF,  # lo12 > 0x7ff, bit 31 set: every PCALA64 adjustment
    "far2": 0xFFFF_8000_1234_5678,
    "kfunc": 0x9000_0000_0123_4568,  # vmlinux: far from the module area, through the PLT
    "ext": DATA + 0x40,
    "high": 0x0000_1234_5678_9ABC,  # >> 32 fits SOP_POP_32_U
}

#: every type the kernel handles and ld computes the same way (ld given --no-relax, as
#: kbuild's -mno-relax); PCALA64 sequences sit on one 4 KiB page (see
#: test_pcala64_uses_each_instruction_s_own_page)
TEXT_ASM = """
    .text
f:  pcalau12i $t0, %pc_hi20(far)
    addi.d $t1, $zero, %pc_lo12(far)
    lu32i.d $t1, %pc64_lo20(far)
    lu52i.d $t1, $t1, %pc64_hi12(far)
    pcalau12i $t0, %pc_hi20(far2)
    addi.d $t1, $zero, %pc_lo12(far2)
    lu32i.d $t1, %pc64_lo20(far2)
    lu52i.d $t1, $t1, %pc64_hi12(far2)
    pcalau12i $a0, %pc_hi20(ext)
    ld.d $a0, $a0, %pc_lo12(ext)
    bl near
    b near + 8
    bl f
"""

#: the stack machine of psABI v1 (binutils < 2.40 emitted it; gas still takes it from
#: .reloc and ld 2.44 still computes it): bl near, la.pcrel $a0, near + 0x10
SOP_ASM = """
    .text
g:
0:  .reloc 0b, R_LARCH_SOP_PUSH_PLT_PCREL, near
    .reloc 0b, R_LARCH_SOP_POP_32_S_0_10_10_16_S2
    bl 0
1:  .reloc 1b, R_LARCH_SOP_PUSH_PCREL, near + 0x810
    .reloc 1b, R_LARCH_SOP_PUSH_ABSOLUTE, 12
    .reloc 1b, R_LARCH_SOP_SR
    .reloc 1b, R_LARCH_SOP_POP_32_S_5_20
    pcaddu12i $a0, 0
2:  .reloc 2b, R_LARCH_SOP_PUSH_PCREL, near + 0x14
    .reloc 2b, R_LARCH_SOP_PUSH_PCREL, near + 0x814
    .reloc 2b, R_LARCH_SOP_PUSH_ABSOLUTE, 12
    .reloc 2b, R_LARCH_SOP_SR
    .reloc 2b, R_LARCH_SOP_PUSH_ABSOLUTE, 12
    .reloc 2b, R_LARCH_SOP_SL
    .reloc 2b, R_LARCH_SOP_SUB
    .reloc 2b, R_LARCH_SOP_POP_32_S_10_12
    addi.d $a0, $a0, 0
3:  .reloc 3b, R_LARCH_SOP_PUSH_ABSOLUTE, ext
    .reloc 3b, R_LARCH_SOP_PUSH_DUP
    .reloc 3b, R_LARCH_SOP_ADD
    .reloc 3b, R_LARCH_SOP_PUSH_ABSOLUTE, 0xfff
    .reloc 3b, R_LARCH_SOP_AND
    .reloc 3b, R_LARCH_SOP_POP_32_U_10_12
    ori $a1, $a1, 0
4:  .reloc 4b, R_LARCH_MARK_LA, near
    .reloc 4b, R_LARCH_MARK_PCREL, near
    .reloc 4b, R_LARCH_SOP_PUSH_ABSOLUTE, 1
    .reloc 4b, R_LARCH_SOP_PUSH_ABSOLUTE, 0x1234
    .reloc 4b, R_LARCH_SOP_PUSH_ABSOLUTE, 0x5678
    .reloc 4b, R_LARCH_SOP_IF_ELSE
    .reloc 4b, R_LARCH_SOP_POP_32_S_10_16
    addu16i.d $a0, $a0, 0
5:  .reloc 5b, R_LARCH_SOP_PUSH_PCREL, near
    .reloc 5b, R_LARCH_SOP_POP_32_S_10_16_S2
    beq $a0, $a1, 0
6:  .reloc 6b, R_LARCH_SOP_PUSH_PCREL, near
    .reloc 6b, R_LARCH_SOP_POP_32_S_0_5_10_16_S2
    beqz $a0, 0
7:  .reloc 7b, R_LARCH_SOP_PUSH_ABSOLUTE, high
    .reloc 7b, R_LARCH_SOP_PUSH_ABSOLUTE, 32
    .reloc 7b, R_LARCH_SOP_SR
    .reloc 7b, R_LARCH_SOP_POP_32_U
    .word 0
8:  .reloc 8b, R_LARCH_SOP_PUSH_ABSOLUTE, 0
    .reloc 8b, R_LARCH_SOP_PUSH_ABSOLUTE, 7
    .reloc 8b, R_LARCH_SOP_PUSH_ABSOLUTE, 9
    .reloc 8b, R_LARCH_SOP_IF_ELSE
    .reloc 8b, R_LARCH_SOP_POP_32_U_10_12
    ori $a1, $a1, 0
"""

DATA_ASM = """
    .data
    .quad far
    .word ext
    .quad ext - far
    .word ext - far
0:  .reloc 0b, R_LARCH_32_PCREL, ext
    .word 0
1:  .reloc 1b, R_LARCH_64_PCREL, far
    .quad 0
"""

R_B26, R_GOT_HI20, R_GOT_LO12, R_32_PCREL, R_RELAX = 66, 75, 76, 99, 100


def _linked(tmp_path: Path, asm: str, **symbols: int) -> Linked:
    c = cross("loongarch64")
    return link(c, asm, tmp_path, sections={".text": TEXT, ".data": DATA},
                symbols={**SYMBOLS, **symbols}, ld_args=["--no-relax"])  # fmt: skip


def test_registry_and_table() -> None:
    arch = arch_for(EM.LOONGARCH)
    assert arch is la.ARCH and arch.name == "loongarch64" and arch.byteorder == "little"
    t = la.RELOCATION_TYPES
    assert {n: (t[n].name, t[n].width) for n in (1, 2, 66, 71, 75, 99, 109, 50, 56)} == {
        1: ("R_LARCH_32", 4), 2: ("R_LARCH_64", 8), 66: ("R_LARCH_B26", 4),
        71: ("R_LARCH_PCALA_HI20", 4), 75: ("R_LARCH_GOT_PC_HI20", 4),
        99: ("R_LARCH_32_PCREL", 4), 109: ("R_LARCH_64_PCREL", 8),
        50: ("R_LARCH_ADD32", 4), 56: ("R_LARCH_SUB64", 8),
    }  # fmt: skip
    assert t[22].width == 0 and t[22].name == "R_LARCH_SOP_PUSH_PCREL"  # writes nothing
    # never given handlers: the ABS family, GOT64_PC, ADD8/16/24, the TLS types
    assert not {67, 68, 69, 70, 77, 78, 47, 48, 49, 83} & set(t)
    assert t[66].range_check == "signed 28 bits, 4-aligned"
    # per release: the v6.1 types, then 32_PCREL/64_PCREL from v6.6
    assert 66 not in la.handlers(V60) and 66 in la.handlers(V61)
    assert 99 not in la.handlers(V61) and 99 in la.handlers(KernelRelease(6, 6))
    assert (la.table_end(V60), la.table_end(V61), la.table_end(V65), la.table_end(V612)) == (
        101, 110, 101, 110)  # fmt: skip


@pytest.mark.parametrize("release", [V61, V612, V72])
def test_same_bytes_as_gnu_ld(release: KernelRelease, tmp_path: Path) -> None:
    linked = _linked(tmp_path, TEXT_ASM + DATA_ASM)
    facts, text = twin(linked, ".text", release)
    assert facts.stop is None, (facts.stop, facts.reason)
    assert text == linked.section(".text")
    assert set(facts.types) == {71, 72, 73, 74, R_B26}
    facts, data = twin(linked, ".data", release)
    assert set(facts.types) <= {1, 2, 50, 51, 55, 56, R_32_PCREL, 109}
    if release == V61:  # 6.1.y has no 32_PCREL: "Unsupport ... please add its support."
        assert (facts.types[facts.stop or 0], facts.reason) == (R_32_PCREL, "unknown-type")
        assert data[:24] == linked.section(".data")[:24]
    else:
        assert facts.stop is None and data == linked.section(".data")
        assert facts.values is not None and None not in facts.values


def test_the_stack_machine_is_ld_s_in_file_order(tmp_path: Path) -> None:
    # ld 2.44 still evaluates the psABI v1 stack relocations: the kernel's stack machine
    # (push, dup, sub, sl, sr, add, and, the pops and their fields) gives its bytes
    linked = _linked(tmp_path, SOP_ASM)
    facts, text = twin(linked, ".text", V61)
    assert facts.stop is None and text == linked.section(".text")
    assert set(range(38, 47)) - {38} | {20, 21, 22, 23, 24, 29} | set(range(32, 38)) == set(
        facts.types)  # every type of the stack machine the kernel handles but SOP_POP_32_S_10_5
    assert facts.values is not None and facts.values[1] == SYMBOLS["near"] - TEXT  # bl's offset


def test_the_stack_is_signed(tmp_path: Path) -> None:
    # the kernel's stack holds s64 and SOP_SR shifts arithmetically: (module address)
    # >> 32 is negative, and SOP_POP_32_U's unsigned check refuses it; ld 2.44 writes
    # its low 32 bits.  The kernel's refusal is its formula
    linked = _linked(tmp_path, SOP_ASM, high=SYMBOLS["ext"])
    facts, _ = twin(linked, ".text", V61)
    assert (facts.types[facts.stop or 0], facts.reason) == (46, "overflow")
    assert facts.stop is not None and facts[facts.stop - 1].r_type == 34  # SOP_SR
    assert la.refusal(V61, "m", 2, facts)[1] == (
        "module m: opr1 = 0xffffffffffff8000 overflow! dangerous apply_r_larch_sop_imm_field "
        "(46) relocation"
    )
    word = linked.section(".text")[28:32]  # the .word of SOP_POP_32_U
    assert int.from_bytes(word, "little") == SYMBOLS["ext"] >> 32


def test_sort_since_6_17_reorders_the_stack(tmp_path: Path) -> None:
    # count_max_entries() sorts the entries in the module image (63dbd8fb2af3): the pops
    # of symbol 0 come before the pushes of near/ext, and the first pop finds the
    # stack empty: -ENOEXEC with no message
    linked = _linked(tmp_path, SOP_ASM)
    for release in (V612, V72):
        facts, _ = twin(linked, ".text", release)
        assert facts.reason == "rela-stack", release
        r_type = facts.types[facts.stop or 0]
        assert la.refusal(release, "m", 2, facts) == ("loongarch-rela-stack", (
            f"{la._name(r_type)} ({r_type}) is refused silently: rela_stack_pop() returns "
            "-ENOEXEC (errno 8) without a message (the relocation stack is empty)"))  # fmt: skip
        # nothing in dmesg: check predicts no line (and no prefix) for it
        assert not la.ARCH.refusal_is_logged(facts)
    assert not la.sorts_relocations(V616) and la.sorts_relocations(KernelRelease(6, 17))


def test_pcala64_uses_each_instruction_s_own_page(tmp_path: Path) -> None:
    # apply_r_larch_pcala() anchors PCALA64_LO20/HI12 at the page of their own place;
    # ld at the page of the pcalau12i (pc - 8, pc - 12).  They differ when the sequence
    # crosses a page and the offset is near 2 GiB: here 0x80000000 from the pcalau12i's
    # page, 0x7ffff000 from the lu32i.d's.  The kernel's value is its formula there.
    target = TEXT + 0x8000_0000
    asm = """
    .text
    .skip 0xff8
    pcalau12i $t0, %pc_hi20(x)
    addi.d $t1, $zero, %pc_lo12(x)
    lu32i.d $t1, %pc64_lo20(x)
    lu52i.d $t1, $t1, %pc64_hi12(x)
"""
    linked = _linked(tmp_path, asm, x=target)
    facts, text = twin(linked, ".text", V612)
    assert facts.stop is None
    ours, ld = text[0xFF8:], linked.section(".text")[0xFF8:]
    assert ours[:8] == ld[:8]  # the pcalau12i and the addi.d: the same
    assert ours[8:16] != ld[8:16]
    lo20 = (int.from_bytes(ours[8:12], "little") >> 5) & 0xFFFFF
    hi12 = (int.from_bytes(ours[12:16], "little") >> 10) & 0xFFF
    kernel = la.pcala(73, target, TEXT + 0x1000), la.pcala(74, target, TEXT + 0x1004)
    assert (lo20, hi12) == kernel
    assert (lo20, hi12) == (0, 0)  # ld: 1 and 0
    assert (int.from_bytes(ld[8:12], "little") >> 5) & 0xFFFFF == 1


def _kernel_layout(prepare_got: bool = True) -> tuple[list[las.ModuleTables], object]:
    state: list[las.ModuleTables] = []

    def prepare(layout: ModuleLayout) -> None:
        gots, plts = las.count_max_entries(layout.elf)
        tables = las.ModuleTables(GOT if prepare_got else None, PLT, gots, plts)
        layout.arch_state["loongarch64"] = tables
        state.append(tables)

    return state, prepare


GOT_PLT_ASM = """
    .text
h:  bl kfunc
    bl near
    bl kfunc
    la.got $a0, ext
    la.got $a1, far
    la.got $a2, ext
    bl kfunc + 4
"""


def test_module_plt_and_got(tmp_path: Path) -> None:
    # the kernel's own PLT and GOT: ld cannot reach kfunc with a B26 and makes its own
    # .got, so the calls are checked against module_emit_plt_entry()'s slots and the
    # GOT loads against apply_r_larch_pcala() of the entry's address
    linked = _linked(tmp_path, GOT_PLT_ASM, kfunc=SYMBOLS["near"])
    real = dataclasses.replace(linked, symbols=SYMBOLS)
    state, prepare = _kernel_layout()
    facts, text = twin(real, ".text", V61, prepare=prepare)  # type: ignore[arg-type]
    assert facts.stop is None, (facts.stop, facts.reason)
    t = state[0]
    # module_frob_arch_sections(): distinct (r_info, r_addend) over executable targets
    assert (t.plt_max, t.got_max) == (3, 2)  # kfunc, near, kfunc + 4; ext, far
    assert t.plt_values == [SYMBOLS["kfunc"], SYMBOLS["kfunc"] + 4]  # near needs none
    assert t.got_values == [SYMBOLS["ext"], SYMBOLS["far"]]

    def b26(off: int) -> int:
        insn = int.from_bytes(text[off : off + 4], "little")
        imm = ((insn >> 10) & 0xFFFF) | ((insn & 0x3FF) << 16)
        return (imm - (1 << 26) if imm >> 25 else imm) << 2

    assert b26(0) == PLT - TEXT and b26(8) == PLT - (TEXT + 8)  # one slot, reused
    assert b26(4) == SYMBOLS["near"] - (TEXT + 4)
    assert b26(36) == PLT + 16 - (TEXT + 36)
    # the GOT loads: ld's own bytes for a PC-relative load of the entry's address
    pcala = _linked(tmp_path / "pcala", """
    .text
h:  .skip 12
    pcalau12i $a0, %pc_hi20(e0)
    ld.d $a0, $a0, %pc_lo12(e0)
    pcalau12i $a1, %pc_hi20(e1)
    ld.d $a1, $a1, %pc_lo12(e1)
    pcalau12i $a2, %pc_hi20(e0)
    ld.d $a2, $a2, %pc_lo12(e0)
""", e0=GOT, e1=GOT + 8)  # fmt: skip
    assert text[12:36] == pcala.section(".text")[12:36]
    assert {R_GOT_HI20, R_GOT_LO12} <= set(facts.types)


def test_plt_entry_bytes_are_the_kernel_s() -> None:
    # emit_plt_entry(): lu12i.w $t1, v[31:12]; lu32i.d $t1, v[51:32];
    # lu52i.d $t1, $t1, v[63:52]; jirl $zero, $t1, v[11:0] (jirl's offs16 is << 2)
    e = las.plt_entry(0x9000_0000_0123_4568)
    words = [int.from_bytes(e[i : i + 4], "little") for i in range(0, 16, 4)]
    assert words[0] == 0x14000000 | (0x01234 << 5) | 13
    assert words[1] == 0x16000000 | (0x00000 << 5) | 13
    assert words[2] == 0x03000000 | (0x900 << 10) | (13 << 5) | 13
    assert words[3] == 0x4C000000 | ((0x568 >> 2) << 10) | (13 << 5)
    # ADDR_IMM() sign-extends the fields (in range); jirl refuses a target not 4-aligned
    assert las.plt_entry(0x9000_0000_8000_0002)[12:] == (0x002A0000).to_bytes(4, "little")


def test_bad_got_and_b26_messages(tmp_path: Path) -> None:
    # a GOT_PC_LO12 without its HI20 finds no entry and takes one past the count
    facts = la.write_relocate_add(
        relocation_table([(0, 1, R_GOT_LO12, 0)]), bytearray(4), V612,
        symbol_value=lambda i: 0x9000_0000_0000_1000, address=TEXT,
        layout=_layout_with_tables(las.ModuleTables(GOT, PLT, 0, 0)),
    )  # fmt: skip
    assert (facts.stop, facts.reason) == (0, "overflow")
    assert la.refusal(V612, "m", 2, facts) == (
        "loongarch-relocation-overflow", "m: module contains bad GOT relocation"
    )  # fmt: skip
    # module_emit_got_entry() is module-sections.c's: no pr_fmt, unlike module.c's
    assert la.ARCH.refusal_dmesg_prefix(V612, facts) == ""
    # B26 to an odd address in range: unaligned; through a PLT out of range: overflow
    facts = _walk([(0, 1, R_B26, 0)], lambda i: TEXT + 0x102)
    assert la.refusal(V612, "m", 2, facts)[1] == (
        "module m: jump offset = 0x102 unaligned! dangerous R_LARCH_B26 (66) relocation"
    )
    far_plt = las.ModuleTables(GOT, TEXT + (1 << 30), 0, 1)
    facts = la.write_relocate_add(
        relocation_table([(0, 1, R_B26, 0)]), bytearray(4), V612,
        symbol_value=lambda i: SYMBOLS["kfunc"], address=TEXT,
        layout=_layout_with_tables(far_plt),
    )  # fmt: skip
    assert la.refusal(V612, "m", 2, facts)[1] == (
        "module m: jump offset = 0x40000000 overflow! dangerous R_LARCH_B26 (66) "
        "relocation"
    )


def _layout_with_tables(tables: las.ModuleTables) -> ModuleLayout:
    class _Elf:  # the twin reads only layout.arch_state here
        pass

    layout = ModuleLayout(_Elf(), {})  # type: ignore[arg-type]
    layout.arch_state["loongarch64"] = tables
    return layout


def _walk(entries: list[tuple[int, int, int, int]], value: int | Callable[[int], int],
          release: KernelRelease = V612, data: bytes = bytes(16)) -> WriteFacts:  # fmt: skip
    fn = value if callable(value) else (lambda i: value)
    return la.write_relocate_add(relocation_table(entries), bytearray(data), release,
                                 symbol_value=fn, address=TEXT)  # fmt: skip


@pytest.mark.parametrize(
    ("release", "r_type", "message"),
    [
        # never handled: the ABS family (la.abs), GOT64_PC, ADD8: apply_r_larch_error
        (V612, 67, "m: Unsupport relocation type 67, please add its support."),
        (V612, 77, "m: Unsupport relocation type 77, please add its support."),
        (V612, 47, "m: Unsupport relocation type 47, please add its support."),
        # SUB8 is in the ADD32..SUB64 range: apply_r_larch_add_sub()'s default case
        (V612, 52, "m: Unsupport relocation type 52"),
        # R_LARCH_RELAX (gas without -mno-relax)
        (V72, R_RELAX, "m: Unsupport relocation type 100, please add its support."),
        # past the table: RELAX+1 before 2761498876ad (v6.6; 6.1.y has it), 64_PCREL+1 since
        (V65, 102, "m: Unknown relocation type 102"),
        (V61, 102, "m: Unsupport relocation type 102, please add its support."),
        (V72, 110, "m: Unknown relocation type 110"),
        # v6.0 has only the stack machine
        (V60, R_B26, "m: Unsupport relocation type 66, please add its support."),
        (V61, R_32_PCREL, "m: Unsupport relocation type 99, please add its support."),
    ],
)
def test_refused_types(release: KernelRelease, r_type: int, message: str) -> None:
    facts = _walk([(0, 1, 2, 0), (8, 1, r_type, 0)], 0x1234, release)
    assert (facts.stop, facts.reason, len(facts)) == (1, "unknown-type", 2)
    assert not facts[1].known and facts[1].width == 0
    assert la.refusal(release, "m", 3, facts) == ("loongarch-unknown-relocation", message)
    assert la.ARCH.refusal_dmesg_prefix(release, facts) == "kmod: "  # module.c's pr_fmt
    assert la.ARCH.refusal_is_logged(facts)


def test_stack_machine_checks() -> None:
    # SOP_POP_32_S_10_16_S2 of an odd value: unaligned; of 2^17: overflow (signed 18)
    push = (0, 1, 23, 0)  # SOP_PUSH_ABSOLUTE of symbol 1
    facts = _walk([push, (0, 0, 42, 0)], 6)
    assert la.refusal(V612, "m", 2, facts) == ("loongarch-relocation-overflow", (
        "module m: opr1 = 0x6 unaligned! dangerous apply_r_larch_sop_imm_field (42) "
        "relocation"))  # fmt: skip
    facts = _walk([push, (0, 0, 42, 0)], 1 << 17)
    assert "opr1 = 0x20000 overflow!" in la.refusal(V612, "m", 2, facts)[1]
    # a negative operand is printed as the kernel's %llx of an s64
    facts = _walk([push, (0, 0, 39, 0)], (1 << 64) - 1)  # SOP_POP_32_U_10_12: unsigned
    assert "opr1 = 0xffffffffffffffff overflow!" in la.refusal(V612, "m", 2, facts)[1]
    # SOP_POP_32_S_10_5 pops, then has no case: the handler's default message
    facts = _walk([push, (0, 0, 38, 0)], 1)
    assert la.refusal(V612, "m", 2, facts)[1] == "m: Unsupport relocation type 38"
    # RELA_STACK_DEPTH 16: the 17th push overflows, silently
    facts = _walk([push] * 17, 1)
    assert (facts.stop, facts.reason) == (16, "rela-stack")
    assert la.refusal(V612, "m", 2, facts)[1] == (
        "R_LARCH_SOP_PUSH_ABSOLUTE (23) is refused silently: rela_stack_push() returns "
        "-ENOEXEC (errno 8) without a message (the relocation stack is full, "
        "RELA_STACK_DEPTH 16)")  # fmt: skip
    assert not la.ARCH.refusal_is_logged(facts) and la.ARCH.refusal_errno is not None
    assert la.ARCH.refusal_errno(facts) == 8
    # the stack lives for one call: a pop in the next section finds it empty
    facts = _walk([(0, 0, 46, 0)], 1)
    assert facts.reason == "rela-stack"


def test_add_sub_pairs_and_no_zero_check() -> None:
    # ADD/SUB accumulate into what is there; no handler checks the place for zero
    data = (5).to_bytes(4, "little") + (1 << 64 - 1).to_bytes(8, "little")
    facts = _walk([(0, 1, 50, 0), (0, 2, 55, 0), (4, 1, 51, 0), (4, 2, 56, 3)],
                  lambda i: {1: 100, 2: 30}[i], data=data)  # fmt: skip
    assert facts.stop is None and not any(f.nonzero for f in facts)
    assert facts.values == [105, 75, ((1 << 63) + 100) % (1 << 64), ((1 << 63) + 67) % (1 << 64)]
    assert la.ARCH.nonzero_message is None


def test_without_values_only_the_types_are_judged() -> None:
    place = bytearray(8)
    facts = la.write_relocate_add(relocation_table([(0, 1, 2, 0), (0, 0, 67, 0)]), place, V612)
    assert facts.values is None and facts.overflow is None and place == bytearray(8)
    assert (facts.stop, facts.reason) == (1, "unknown-type")


# --- a module gcc built: convert, check, apply, flatten --------------------------------

MODULE_C = """
extern int foo_var;
extern void foo(void);
extern void bar(void);
static const char msg[] = "hello";
void *ptrs[] = { (void *)foo, &foo_var };
int f(int x) { foo(); bar(); return foo_var + msg[x]; }
/* what modpost's <module>.mod.c adds to a module: struct module's section */
char __this_module[64] __attribute__((section(".gnu.linkonce.this_module"))) = { 1 };
"""
#: arch/loongarch/include/asm/module.lds.h: the placeholders module_frob_arch_sections()
#: sizes (scripts/module.lds includes it in the link of every .ko)
MODULE_LDS = """SECTIONS {
    . = ALIGN(4);
    .got 0 : { BYTE(0) }
    .plt 0 : { BYTE(0) }
    .plt.idx 0 : { BYTE(0) }
    .ftrace_trampoline 0 : { BYTE(0) }
}
"""
#: kbuild's LoongArch flags that decide the relocations (arch/loongarch/Makefile)
CFLAGS = ["-O2", "-fno-pic", "-mabi=lp64s", "-msoft-float", "-mexplicit-relocs",
          "-ffreestanding", "-fno-asynchronous-unwind-tables"]  # fmt: skip
FOO, FOO_VAR, BAR = 0x9000_0000_0100_1000, 0x9000_0000_0200_0000, 0x9000_0000_0100_2000


def _gcc_module(tmp_path: Path, *, relax: bool = False) -> Path:
    """lp.c built as kbuild would (-mno-relax unless ``relax``), linked with
    module.lds, converted against a kallsyms where foo and foo_var are not exported."""
    from klpelf.cli import main

    c = cross("loongarch64")
    (tmp_path / "lp.c").write_text(MODULE_C)
    (tmp_path / "module.lds").write_text(MODULE_LDS)
    flags = [*CFLAGS, *([] if relax else ["-mno-relax"])]
    c.run([c.tool("gcc"), "-c", *flags, "-o", "lp0.o", "lp.c"], tmp_path)
    c.run([c.tool("ld"), "-r", "-T", "module.lds", "-o", "lp.o", "lp0.o"], tmp_path)
    (tmp_path / "kallsyms").write_text(f"{FOO:x} T foo\n{FOO_VAR:x} D foo_var\n{BAR:x} T bar\n")
    (tmp_path / "Module.symvers").write_text("0x12345678\tbar\tvmlinux\tEXPORT_SYMBOL\t\n")
    ko = tmp_path / "lp.ko"
    assert main(["convert", str(tmp_path / "lp.o"), "-o", str(ko), "--kernel",
                 str(tmp_path / "kallsyms"), "--symvers", str(tmp_path / "Module.symvers")]) == 0
    return ko


def test_gcc_module_check_apply_flatten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from klpelf.cli import main
    from klpelf.elf.reader import open_elf
    from klpelf.klp.layout import place

    ko = _gcc_module(tmp_path)
    ks = str(tmp_path / "kallsyms")
    capsys.readouterr()
    assert main(["check", "--kernel-release", "6.12", "--kernel", ks, str(ko)]) == 0
    assert "Linux 6.12 (--kernel-release) would load the module" in capsys.readouterr().out
    text = 0xFFFF_8000_0020_1000
    out = tmp_path / "out"
    assert main(["apply", str(ko), "-k", ks, "--kernel-release", "6.12", "--json",
                 "--base", f".text={text:x}", "-o", str(out)]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)["modules"][0]
    writes = {w["type"]: w for w in doc["writes"]}
    assert set(writes) == {"R_LARCH_B26", "R_LARCH_GOT_PC_HI20", "R_LARCH_GOT_PC_LO12",
                           "R_LARCH_64"}  # fmt: skip
    # the layout after module_frob_arch_sections(): .plt in the text region (64-aligned,
    # 3 entries: bar, foo and the spare one), .got (2 entries) with the read-only data
    elf = open_elf(ko)
    at = {s.name: s for s in place(elf, {".text": text})}
    assert at[".plt"].address == text + 128 and at[".plt"].size == 48
    assert at[".got"].region == "rodata" and at[".got"].size == 16
    # bar's B26 is applied at load from .rela.text and takes PLT entry 0; foo's klp
    # relocation takes entry 1
    b26 = writes["R_LARCH_B26"]
    # apply/2 writes addresses and values as hex strings
    assert int(b26["value"], 16) == at[".plt"].address + 16 - int(b26["address"], 16)
    hi20 = writes["R_LARCH_GOT_PC_HI20"]
    assert int(hi20["value"], 16) == la.pcala(71, at[".got"].address, int(hi20["address"], 16))
    assert (out / ".got.bin").read_bytes()[:8] == FOO_VAR.to_bytes(8, "little")
    # the PLT entries as GNU objdump reads them: $t1 loaded with the target, jr $t1
    plt = _objdump(out / ".plt.bin", "-D", "-b", "binary", "-m", "loongarch64")
    for entry, target in ((0, BAR), (1, FOO)):
        lines = [ln.split("\t", 2)[-1].split() for ln in plt.splitlines()
                 if ln.strip().startswith(f"{entry * 16 + 0:x}:") or
                 ln.strip().startswith(f"{entry * 16 + 8:x}:")]  # fmt: skip
        assert lines == [["lu12i.w", "$t1,", str((target >> 12) & 0xFFFFF)],
                         ["lu52i.d", "$t1,", "$t1,", str((target >> 52) - 4096)]]  # fmt: skip
    assert plt.count("jr          \t$t1") == 2
    # --flatten: objdump -dr reads the module and names the kernel's symbols
    flat = tmp_path / "flat.ko"
    assert main(["apply", str(ko), "-k", ks, "--flatten", "-o", str(flat)]) == 0
    dump = _objdump(flat, "-dr")
    assert "R_LARCH_B26\tfoo" in dump and "R_LARCH_GOT_PC_HI20\tfoo_var" in dump


def _objdump(path: Path, *args: str) -> str:
    """The cross objdump of the chroot toolchain on ``path``."""
    import subprocess

    from cross_chroot import TOOLCHAINS, chroot_argv

    cross("loongarch64")
    argv = chroot_argv(TOOLCHAINS["loongarch64"].root, path.parent,
                       ["loongarch64-linux-gnu-objdump", *args, path.name])  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout


def test_gcc_module_with_relaxation_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # without kbuild's -mno-relax gcc 14 emits R_LARCH_ALIGN (102): 6.12 refuses the
    # module at load with -EINVAL ("Unsupport ..."), 6.5 ("Unknown relocation type")
    from klpelf.cli import main

    ko = _gcc_module(tmp_path, relax=True)
    ks = str(tmp_path / "kallsyms")
    capsys.readouterr()
    assert main(["check", "--kernel-release", "6.12", "--kernel", ks, str(ko)]) == 1
    out = capsys.readouterr().out
    assert ("would refuse the module when the module loads (errno 22): kmod: lp: Unsupport "
            "relocation type 102, please add its support.") in out
    assert main(["check", "--kernel-release", "6.5", "--kernel", ks, str(ko)]) == 1
    assert "(errno 22): kmod: lp: Unknown relocation type 102" in capsys.readouterr().out


def test_module_without_the_got_and_plt_placeholders_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # an object not linked with module.lds has no .got/.plt/.plt.idx:
    # module_frob_arch_sections() refuses it before any relocation; v6.0 has no GOT yet
    from klpelf.cli import main

    ko = _gcc_module(tmp_path)
    bare = tmp_path / "bare.ko"
    assert main(["convert", str(tmp_path / "lp0.o"), "-o", str(bare), "--kernel",
                 str(tmp_path / "kallsyms"), "--symvers", str(tmp_path / "Module.symvers")]) == 0
    ks = str(tmp_path / "kallsyms")
    capsys.readouterr()
    assert main(["check", "--kernel-release", "6.12", "-k", ks, str(bare)]) == 1
    # printed by module-sections.c, which has no pr_fmt (module.c's is "kmod: ")
    assert ("would refuse the module when the module loads (errno 8): bare: module GOT "
            "section(s) missing") in capsys.readouterr().out
    assert main(["check", "--kernel-release", "6.0", "-k", ks, str(bare)]) == 1
    assert "(errno 8): bare: module PLT section(s) missing" in capsys.readouterr().out
    assert main(["check", "--kernel-release", "6.12", "-k", ks, str(ko)]) == 0


@pytest.mark.corpus
@pytest.mark.slow
def test_debian_loong64_modules_walk_through() -> None:
    # Debian sid's loong64 modules (7.2, tests/corpus/loong64.py) load on Debian's
    # kernel: every 10th module has its GOT/PLT placeholders and every relocation
    # section walks through the 7.2 twin without a stop, with the module laid out and
    # each undefined symbol at a vmlinux address (so every B26 to one goes through
    # the PLT and every GOT_PC gets an entry), within module_frob_arch_sections()'s
    # counts
    import os
    from collections import Counter

    from corpus.loong64 import modules_dir
    from klpelf.elf.constants import SHN, SHT
    from klpelf.elf.reader import open_elf
    from klpelf.klp.layout import place, section_bytes

    mods = modules_dir()
    if mods is None:
        reason = "no loong64 corpus: PYTHONPATH=tests python -m corpus.loong64"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    paths = sorted(mods.rglob("*.ko*"))
    assert len(paths) > 1000
    types: Counter[int] = Counter()
    entries = 0
    for path in paths[::10]:
        elf = open_elf(path)
        assert las.frob_refusal(V72, elf, path.name) is None, path
        addresses = {s.index: s.address for s in place(elf, base=0xFFFF_8000_0200_0000)}
        tab = elf.symtab
        assert tab is not None
        values: list[int | None] = []
        for i, (shndx, st_value) in enumerate(zip(tab.column("st_shndx"), tab.column("st_value"),
                                                  strict=True)):  # fmt: skip
            if shndx == SHN.UNDEF:
                values.append(0 if i == 0 else 0x9000_0000_0100_0000 + 16 * i)
            elif shndx == SHN.ABS:
                values.append(st_value)
            else:
                base = addresses.get(shndx)
                values.append(None if base is None else base + st_value)
        layout = ModuleLayout(elf, addresses)
        for sec in elf.sections_of_type(SHT.RELA):
            target = sec.info_section
            if target is None or target.index not in addresses:
                continue
            relocs = elf.relocations_as_rela(sec)
            types.update(relocs.types())
            facts = la.write_relocate_add(relocs, section_bytes(elf, target.index), V72,
                                          symbol_value=values.__getitem__,
                                          address=addresses[target.index],
                                          layout=layout)  # fmt: skip
            assert facts.stop is None, (path, sec.name, facts.reason)
        tables = layout.arch_state.get("loongarch64")
        if isinstance(tables, las.ModuleTables):
            assert len(tables.plt_values) <= tables.plt_max, path
            assert len(tables.got_values) <= tables.got_max, path
            entries += len(tables.plt_values) + len(tables.got_values)
    # what Debian's build of the modules emits (kbuild passes -mno-relax)
    assert {2, R_B26, 71, 72, R_GOT_HI20, R_GOT_LO12, R_32_PCREL, 109} <= set(types)
    assert not set(types) & {R_RELAX, 102, *range(20, 47)}  # no relaxation, no stack
    assert entries > 5000


def test_the_kernel_s_heapsort_order() -> None:
    # lib/sort.c's heapsort, traced by hand for three equal keys: 1, 2, 0 in both
    # versions; distinct keys come out sorted; the two versions order ties apart
    from klpelf.arch.kernel_sort import double_pop, heapsort_order

    for double in (False, True):
        assert heapsort_order([7, 7, 7], double=double) == [1, 2, 0]
        keys = [(i * 7919) % 101 for i in range(101)]
        order = heapsort_order(keys, double=double)
        assert [keys[i] for i in order] == sorted(keys)
        assert heapsort_order([], double=double) == []
        assert heapsort_order([3], double=double) == [0]
    ties = [k % 3 for k in range(40)]
    old, new = (heapsort_order(ties, double=d) for d in (False, True))
    assert [ties[i] for i in old] == [ties[i] for i in new] == sorted(ties) and old != new
    assert not double_pop(V65) and double_pop(KernelRelease(6, 11))
    # the walk of a section that sorts: the heapsort's order of (r_info, r_addend)
    relocs = relocation_table([(8 * k, 1, 23, 0) for k in range(3)])  # SOP_PUSH_ABSOLUTE
    object.__setattr__(relocs, "target", dataclasses.make_dataclass("T", ["sh_flags"])(4))
    assert la.walk_order(relocs, V72) == [1, 2, 0] and la.walk_order(relocs, V61) == [0, 1, 2]
