"""arch/aarch64.py: the twin of arm64's apply_relocate_add() and its module PLTs,
against GNU ld (binutils-aarch64-linux-gnu) and the kernel's own formulas."""

from __future__ import annotations

from pathlib import Path

import pytest

from klpelf.arch import ModuleLayout, WriteFacts, arch_for
from klpelf.arch import aarch64 as a64
from klpelf.elf.constants import EM, SHF, SHT
from klpelf.elf.reader import open_elf
from klpelf.klp.layout import place
from klpelf.release import KernelRelease
from ld_oracle import Linked, cross, link, twin
from reloc_entries import relocation_table

V510, V61, V66 = KernelRelease(5, 10), KernelRelease(6, 1), KernelRelease(6, 6)
V612, V72 = KernelRelease(6, 12), KernelRelease(7, 2)
TEXT, DATA, PLT = 0xFFFF8000_0800_0000, 0xFFFF8000_0810_0000, 0xFFFF8000_0820_0000

#: every type the kernel computes and GNU ld computes the same way, each in range
_TEXT_ASM = """
    .text
    .globl f
f:  movz x0, #:abs_g0_nc:far
    movk x0, #:abs_g1_nc:far
    movk x0, #:abs_g2_nc:far
    movk x0, #:abs_g3:far
    movz x1, #:abs_g0:small16
    movz x1, #:abs_g1:small32
    movz x1, #:abs_g2:small48
    movz x2, #:abs_g0_s:neg16
    movz x2, #:abs_g1_s:neg32
    movz x2, #:abs_g2_s:small48
    movz x3, #:prel_g0:near16
    movk x3, #:prel_g0_nc:near
    movz x3, #:prel_g1:near
    movk x3, #:prel_g1_nc:near
    movz x3, #:prel_g2:near
    movk x3, #:prel_g2_nc:near
    movz x3, #:prel_g3:near
    ldr x4, near_lit
    adr x5, near
    adrp x6, far_data
    adrp x6, :pg_hi21_nc:far_data
    add x6, x6, :lo12:far_data
    ldrb w7, [x6, :lo12:far_data]
    ldrh w7, [x6, :lo12:far_data2]
    ldr w7, [x6, :lo12:far_data4]
    ldr x7, [x6, :lo12:far_data8]
    ldr q7, [x6, :lo12:far_data16]
    tbz x8, #3, near_tb
    b.eq near_tb
    b near_fn
    bl near_fn
    bl near_fn + 16
"""

_DATA_ASM = """
    .data
    .xword far
    .xword far + 8
    .word small32
    .hword small16
    .hword 0
    .xword near - .
    .word near - .
    .hword data16 - .
    .hword 0
"""

_SYMBOLS = {
    "far": 0xFFFF8000_1234_5678,
    "small16": 0x1234,
    "small32": 0x1234_5678,
    "small48": 0x1234_5678_9ABC,
    "neg16": (1 << 64) - 0x1234,
    "neg32": (1 << 64) - 0x1234_5678,
    "near": TEXT + 0x1_2344,
    "near_lit": TEXT + 0x4_0000,
    "near16": TEXT + 0x2000,
    "data16": DATA + 0x100,
    "near_tb": TEXT + 0x1000,
    "near_fn": TEXT + 0x7F_0000,
    "far_data": TEXT + 0x1234_5678,
    "far_data2": TEXT + 0x1234_5676,
    "far_data4": TEXT + 0x1234_5674,
    "far_data8": TEXT + 0x1234_5670,
    "far_data16": TEXT + 0x1234_5660,
}


def test_registry_and_table() -> None:
    arch = arch_for(EM.AARCH64)
    assert arch is not None and arch is a64.ARCH and arch.byteorder == "little"
    t = a64.RELOCATION_TYPES
    assert t[257].name == "R_AARCH64_ABS64" and t[257].width == 8
    assert t[283].name == "R_AARCH64_CALL26" and t[283].width == 4
    assert t[299].name == "R_AARCH64_LDST128_ABS_LO12_NC"
    assert {0, 256} <= set(t) and 311 not in t  # ADR_GOT_PAGE: the kernel refuses it
    compute = t[261].compute
    assert compute is not None and compute(0x2000, 4, 0x1000) == 0x1004
    in_range = t[262].in_range
    assert in_range is not None and in_range(0x7FFF) and not in_range(0x8000)
    assert in_range((1 << 64) - 0x8000) and not in_range((1 << 64) - 0x8001)
    encode = t[283].encode
    assert encode is not None
    assert encode(bytes.fromhex("00000094"), 0x1000) == (0x94000400).to_bytes(4, "little")


@pytest.mark.parametrize("section", [".text", ".data"])
def test_same_bytes_as_gnu_ld(section: str, tmp_path: Path) -> None:
    c = cross("aarch64")
    linked = link(c, _TEXT_ASM + _DATA_ASM, tmp_path, sections={".text": TEXT, ".data": DATA},
                  symbols=_SYMBOLS, ld_args=["--no-relax"])  # fmt: skip
    facts, data = twin(linked, section, V612)
    assert facts.stop is None, (facts.stop, facts.reason)
    assert facts.values is not None and None not in facts.values
    assert data == linked.section(section)


def _plt_asm(calls: str) -> str:
    return f"""
    .text
    .globl f
f:  {calls}
    .section .plt,"ax"
    .space 48
    .section .init.plt,"ax"
    .space 12
"""


def test_call26_out_of_range_goes_through_the_module_plt(tmp_path: Path) -> None:
    # ld links a call out of range with its own stub; the kernel uses the module's
    # .plt instead (module_emit_plt_entry()): the twin is checked against that formula,
    # and the slot's instructions against GNU ld's bytes for the same three lines
    c = cross("aarch64")
    far, other = 0xFFFF8000_9000_1234, 0xFFFF8000_A000_0010
    asm = _plt_asm("bl far\n    bl far\n    b other\n    bl near")
    linked = link(c, asm, tmp_path, sections={".text": TEXT, ".plt": PLT, ".init.plt": PLT + 0x100},
                  symbols={"far": far, "other": other, "near": TEXT + 0x100})  # fmt: skip
    layout_seen: list[ModuleLayout] = []
    facts, data = twin(linked, ".text", V72, prepare=layout_seen.append)
    assert facts.stop is None
    words = [int.from_bytes(data[i : i + 4], "little") for i in range(0, 16, 4)]

    def target(i: int, insn: int) -> int:
        imm = insn & 0x3FFFFFF
        return TEXT + 4 * i + ((imm - (1 << 26) if imm >> 25 else imm) << 2)

    # JUMP26 (282) sorts before CALL26 (283): `b other` takes slot 0, both `bl far` slot 1
    assert [target(i, w) for i, w in enumerate(words)] == [PLT + 12, PLT + 12, PLT, TEXT + 0x100]
    assert words[0] >> 26 == 0x25 and words[2] >> 26 == 0x05  # bl, b kept
    state = a64.plt_state(layout_seen[0])
    assert state.core.num == 2 and state.init.num == 0
    assert state.core.entries[0] == a64.plt_entry(other, PLT)
    veneer = link(c, "\n".join(f"""
    .section .p{i},"ax"
    adrp x16, {name}
    add x16, x16, :lo12:{name}
    br x16""" for i, name in enumerate(("other", "far"))), tmp_path / "v",
                  sections={".p0": PLT, ".p1": PLT + 12},
                  symbols={"far": far, "other": other})  # fmt: skip
    assert state.core.entries[0] == veneer.section(".p0")
    assert state.core.entries[1] == veneer.section(".p1")


def test_walk_order_partition() -> None:
    # the kernel's partition: branch entries needing a PLT to the front (by swaps),
    # sorted by (type, symbol, addend); the rest keep the partition's order
    class Sym:
        def __init__(self, shndx: int) -> None:
            self.st_shndx = shndx

    class Tab:
        def __getitem__(self, i: int) -> Sym:
            return Sym(1 if i == 9 else 0)  # symbol 9 is in the target section

    class Target:
        index, sh_flags, name = 1, 0x6, ".text"

    class Elf:
        symtab = Tab()

    class R:
        def __init__(self, entries: list[tuple[int, int, int, int]]) -> None:
            self.t = relocation_table(entries)

        def __getattr__(self, name: str) -> object:
            return getattr(self.t, name)

        @property
        def target(self) -> Target:
            return Target()

    entries = [(0, 1, 257, 0), (4, 3, 283, 0), (8, 9, 283, 0), (12, 2, 283, 0), (16, 2, 282, 0)]
    order = a64.walk_order(R(entries), Elf())  # type: ignore[arg-type]
    assert order == [4, 3, 1, 2, 0]


def _walk(entries: list[tuple[int, int, int, int]], data: bytes, release: KernelRelease,
          values: dict[int, int] | None = None) -> tuple[WriteFacts, bytearray]:  # fmt: skip
    place = bytearray(data)
    facts = a64.write_relocate_add(relocation_table(entries), place, release,
                                   symbol_value=None if values is None else values.get,
                                   address=None if values is None else 0x1000)  # fmt: skip
    return facts, place


def test_overflow_stops_with_the_kernels_message() -> None:
    entries = [(0, 1, 258, 0), (4, 2, 259, 0), (8, 1, 258, 0)]
    facts, after = _walk(entries, bytes(12), V612, {1: 0x10, 2: 0x1_0000})
    assert (facts.stop, facts.reason, len(facts)) == (1, "overflow", 2)
    assert after[:4] == (0x10).to_bytes(4, "little") and after[4:6] == b"\0\0"  # written, cut
    assert after[8:] == bytes(4)  # never reached
    assert a64.refusal(V612, "m", 3, facts) == (
        "arm64-relocation-overflow", "module m: overflow in relocation type 259 val 10000"
    )  # fmt: skip
    # in dmesg: after module.c's pr_fmt, "Modules: " since v6.5, nothing before
    for release, prefix in ((V510, ""), (V61, ""), (V66, "Modules: "), (V612, "Modules: "),
                            (V72, "Modules: ")):  # fmt: skip
        _, message = a64.refusal(release, "m", 3, facts)
        line = a64.ARCH.refusal_dmesg_prefix(release, facts) + message
        assert line == f"{prefix}module m: overflow in relocation type 259 val 10000", release
    # the _NC forms and ABS64 are not checked
    facts, _ = _walk([(0, 2, 264, 0), (4, 2, 257, 0)], bytes(12), V612, {2: 1 << 40})
    assert facts.stop is None


def test_unknown_type_and_no_values() -> None:
    facts, after = _walk([(0, 1, 275, 0), (4, 1, 311, 0), (8, 1, 9999, 0)], bytes(12), V61)
    assert (facts.stop, facts.reason, facts.values) == (1, "unknown-type", None)
    assert not facts[1].known and facts[1].width == 0
    assert after == bytes(12)  # no values: nothing written, nothing checked
    assert a64.refusal(V61, "m", 3, facts) == (
        "arm64-unknown-relocation", "module m: unsupported RELA relocation: 311"
    )  # fmt: skip
    assert a64.refusal(V72, "m", 3, facts)[1] == "module m: unsupported RELA relocation: 311"
    assert a64.ARCH.refusal_dmesg_prefix(V72, facts) == "Modules: "


@pytest.mark.parametrize(("release", "line"), [
    ("5.10", "module m: unsupported RELA relocation: 549"),
    ("6.1", "module m: unsupported RELA relocation: 549"),
    ("6.6", "Modules: module m: unsupported RELA relocation: 549"),
    ("6.12", "Modules: module m: unsupported RELA relocation: 549"),
    ("7.2", "Modules: module m: unsupported RELA relocation: 549"),
])  # fmt: skip
def test_check_predicts_the_dmesg_line(release: str, line: str, tmp_path: Path) -> None:
    # the line the kernel logs when apply_relocate_add() meets a type it has no case
    # for (TLSLE_ADD_TPREL_HI12, 549): "Modules: " is module.c's pr_fmt since v6.5
    from toolchain import check_refused

    got = check_refused("aarch64", "R_AARCH64_TLSLE_ADD_TPREL_HI12", release, tmp_path / "m.ko")
    assert got == ("refuse", 8, line)


def test_signed_movw_picks_movn_or_movz() -> None:
    # reloc_insn_movw() MOVNZ: opcode bits 29..30 set by the sign, the immediate inverted
    movz = (0xD2800000).to_bytes(4, "little")
    facts, after = _walk([(0, 1, 270, 0), (4, 2, 270, 0)], movz * 2, V612,
                         {1: 0x1234, 2: (1 << 64) - 0x1234})  # fmt: skip
    assert facts.stop is None
    assert int.from_bytes(after[:4], "little") == 0xD2800000 | (0x1234 << 5)
    assert int.from_bytes(after[4:], "little") == 0x92800000 | (0x1233 << 5)
    facts, _ = _walk([(0, 1, 270, 0)], movz, V612, {1: 0x1_0000})
    assert facts.reason == "overflow"


def test_erratum_843419_adrp_becomes_adr() -> None:
    # at page offset 0xff8 with the workaround, an ADRP in ADR range becomes an ADR of
    # the page (reloc_insn_adrp()); without it, an ordinary ADRP
    layout = ModuleLayout(None, {})  # type: ignore[arg-type]
    layout.arch_state["aarch64"] = a64.PltState(None, None, erratum_843419=True)
    adrp = (0x90000000).to_bytes(4, "little")
    place = bytearray(adrp)
    facts = a64.write_relocate_add(relocation_table([(0, 1, 275, 0)]), place, V612,
                                   symbol_value={1: 0x5123}.get, address=0x4FF8,
                                   layout=layout)  # fmt: skip
    assert facts.stop is None
    insn = int.from_bytes(place, "little")
    assert insn >> 31 == 0 and (insn >> 24) & 0x1F == 0x10  # ADR
    imm = ((insn >> 29) & 3) | (((insn >> 5) & 0x7FFFF) << 2)
    assert imm == 0x5000 - 0x4FF8
    _, plain = _walk([(0, 1, 275, 0)], adrp, V612, {1: 0x5123})
    assert int.from_bytes(plain, "little") >> 31 == 1


def test_init_sections_use_the_init_plt_and_slots_carry_across_sections(tmp_path: Path) -> None:
    # within_module_init(): a place in an .init section takes its slot from .init.plt;
    # mod->arch.core/init live across the sections of one module, so a later
    # section's call to the target of the slot last emitted reuses it
    c = cross("aarch64")
    far = 0xFFFF8000_9000_1234
    asm = """
    .text
f:  bl far
    .section .text.unlikely,"ax"
g:  bl far
    .section .init.text,"ax"
h:  bl far
    .section .plt,"ax"
    .space 24
    .section .init.plt,"ax"
    .space 24
"""
    init_text, unlikely = TEXT + 0x10_0000, TEXT + 0x30_0000
    sections = {".text": TEXT, ".text.unlikely": unlikely, ".init.text": init_text,
                ".plt": PLT, ".init.plt": PLT + 0x100}  # fmt: skip
    linked = link(c, asm, tmp_path, sections=sections, symbols={"far": far})
    layouts: list[ModuleLayout] = []
    twin(linked, ".text", V72, prepare=layouts.append)
    state = a64.plt_state(layouts[0])

    def share(layout: ModuleLayout) -> None:
        layout.arch_state["aarch64"] = state

    _, unlikely_bytes = twin(linked, ".text.unlikely", V72, prepare=share)
    _, init_bytes = twin(linked, ".init.text", V72, prepare=share)
    assert state.core.num == 1 and state.init.num == 1
    assert state.init.entries[0] == a64.plt_entry(far, PLT + 0x100)

    def branch_target(at: int, word: bytes) -> int:
        imm = int.from_bytes(word, "little") & 0x3FFFFFF
        return at + ((imm - (1 << 26) if imm >> 25 else imm) << 2)

    assert branch_target(unlikely, unlikely_bytes[:4]) == PLT
    assert branch_target(init_text, init_bytes[:4]) == PLT + 0x100


def test_frob_arch_sections_sizes_the_plts_as_count_plts(tmp_path: Path) -> None:
    # count_plts(): one slot per CALL26/JUMP26 against a symbol outside the target
    # section, an addend-0 duplicate of the entry before it (after the sort) shares it;
    # an .init target counts for .init.plt.  .plt and .init.plt become NOBITS, "ax",
    # 64-aligned, (slots + 1) * 12 bytes, and the loader lays the text out with them
    c = cross("aarch64")
    calls = "bl far\n    bl other\n    bl far\n    b other\n    bl far + 8\n    bl f"
    asm = _plt_asm(calls) + '\n    .section .init.text,"ax"\n    bl far\n    bl far\n'
    linked = link(c, asm, tmp_path, sections={".text": TEXT, ".plt": PLT, ".init.plt": PLT + 0x100,
                                              ".init.text": TEXT + 0x1000},
                  symbols={"far": TEXT + (1 << 30), "other": TEXT + (2 << 30)})  # fmt: skip
    elf = open_elf(linked.obj)
    # far, other (CALL26), other (JUMP26), far + 8: four; .init.text: far once
    assert a64.plt_slots(elf) == (4, 1)
    frobbed = a64.frob_sections(elf)
    plt, init_plt = elf.section_by_name(".plt"), elf.section_by_name(".init.plt")
    assert plt is not None and init_plt is not None
    assert frobbed[plt.index] == (SHT.NOBITS, SHF.EXECINSTR | SHF.ALLOC, 5 * 12, 64)
    assert frobbed[init_plt.index] == (SHT.NOBITS, SHF.EXECINSTR | SHF.ALLOC, 2 * 12, 64)
    placed = {p.name: p for p in place(elf)}
    assert placed[".plt"].size == 60 and placed[".plt"].region == "text"
    assert placed[".init.plt"].size == 24 and placed[".init.plt"].region == "init_text"


def _plt_link(tmp_path: Path, calls: str, **symbols: int) -> Linked:
    """``calls`` in .text with GNU ld, .plt and .init.plt at PLT and PLT + 0x100."""
    return link(cross("aarch64"), _plt_asm(calls), tmp_path, symbols=symbols,
                sections={".text": TEXT, ".plt": PLT, ".init.plt": PLT + 0x100})  # fmt: skip


def test_plt_slots_are_written_into_the_plt_bytes(tmp_path: Path) -> None:
    # module_emit_plt_entry() stores the slot into .plt: write_tables() puts the same
    # 12 bytes into the section's bytes (GNU ld's veneer bytes are checked against
    # plt_entry() above).  The kernel stores the next slot before it finds that the
    # last one has the same target: the second call reuses slot 0, and slot 1 holds a
    # copy for its own address, which a later slot overwrites
    far = 0xFFFF8000_9000_1234
    linked = _plt_link(tmp_path, "bl far\n    bl far", far=far)
    layouts: list[ModuleLayout] = []
    facts, _ = twin(linked, ".text", V72, prepare=layouts.append)
    assert facts.stop is None and facts.values == [PLT - TEXT, PLT - TEXT - 4]
    plt = layouts[0].elf.section_by_name(".plt")
    assert plt is not None
    kept = bytearray(3 * 12)
    a64.write_tables(layouts[0], {plt.index: kept})
    assert bytes(kept) == a64.plt_entry(far, PLT) + a64.plt_entry(far, PLT + 12) + bytes(12)


def _reload(linked: Linked, walks: int) -> tuple[list[WriteFacts], a64.PltState]:
    """The .text section walked ``walks`` times over one module's PLT state: the
    kernel applying a klp relocation section again each time its module loads."""
    layouts: list[ModuleLayout] = []
    all_facts = [twin(linked, ".text", V72, prepare=layouts.append)[0]]
    state = a64.plt_state(layouts[0])

    def share(layout: ModuleLayout) -> None:
        layout.arch_state["aarch64"] = state

    for _ in range(walks - 1):
        all_facts.append(twin(linked, ".text", V72, prepare=share)[0])
    return all_facts, state


def test_a_walk_again_runs_out_of_the_counted_plt_slots(tmp_path: Path) -> None:
    # count_plts() gives two slots (far, other); the first walk takes both.  Walked
    # again (klp_module_coming() applying the section when its module loads again),
    # `bl far` is not the target of the slot last emitted (other's): slot 2 would be
    # the third, plt_num_entries 3 > plt_max_entries 2, WARN_ON, 0, -ENOEXEC, no pr_err
    linked = _plt_link(tmp_path, "bl far\n    bl other", far=0xFFFF8000_9000_1234,
                       other=0xFFFF8000_A000_0010)  # fmt: skip
    assert a64.plt_slots(open_elf(linked.obj)) == (2, 0)
    (first, again), state = _reload(linked, 2)
    assert first.stop is None and first.values == [PLT - TEXT, PLT + 12 - TEXT - 4]
    assert again.stop == 0 and again.reason == "plt-full" and len(again) == 1
    assert state.core.num == 3 and state.core.max_entries == 2
    arch = arch_for(EM.AARCH64)
    assert arch is not None
    assert not arch.refusal_is_logged(again)
    assert arch.refusal_errno is None  # -ENOEXEC
    rule, text = arch.refusal(V72, "livepatch_x", 3, again)
    assert isinstance(text, str) and rule == "arm64-plt-exhausted"
    assert text.startswith("R_AARCH64_CALL26 (283) of module livepatch_x is refused silently: "
                           "apply_relocate_add() returns -ENOEXEC (errno 8) without a message "
                           "(module_emit_plt_entry() found no PLT slot left")  # fmt: skip
    assert "WARN_ON prints a stack trace" in text


def test_a_walk_again_to_one_target_reuses_the_last_slot(tmp_path: Path) -> None:
    # the same target as the slot last emitted is reused (plt_entries_equal() with
    # plt[j]): one branch target per module survives any number of reloads
    linked = _plt_link(tmp_path, "bl far\n    b far", far=0xFFFF8000_9000_1234)
    # JUMP26 and CALL26 count apart (two slots), and share one: the count is never short
    assert a64.plt_slots(open_elf(linked.obj)) == (2, 0)
    walks, state = _reload(linked, 4)
    assert [f.stop for f in walks] == [None] * 4
    assert state.core.num == 1


def test_the_erratum_workaround_leaves_the_count_unmodelled() -> None:
    # with ARM64_WORKAROUND_843419 count_plts() adds veneer slots and slack: no limit
    state = a64.PltState(PLT, None, erratum_843419=True)
    state.counts = lambda: (0, 0)
    assert state.emit(state.core, 0xFFFF8000_9000_0000) == PLT
    assert state.core.max_entries is None
