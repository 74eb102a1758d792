"""arch/ppc64.py: the twin of arch/powerpc/kernel/module_64.c apply_relocate_add(), against
GNU ld for ppc64le and, where the kernel differs from ld (its stubs and the ld r2 after a
call through one), against its own formula."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from klpelf.arch import ModuleLayout, arch_for, ppc64
from klpelf.arch.kernel_sort import double_pop, heapsort_order
from klpelf.elf.constants import EM, SHF, SHN, SHT
from klpelf.elf.reader import open_elf
from klpelf.release import KernelRelease
from ld_oracle import Linked, cross, link, twin
from reloc_entries import relocation_table

if TYPE_CHECKING:
    from collections.abc import Callable

    from klpelf.arch import WriteFacts

V510, V61, V63, V612 = (KernelRelease(5, 10), KernelRelease(6, 1), KernelRelease(6, 3),
                        KernelRelease(6, 12))  # fmt: skip

TEXT = 0xC008_0000_0000_0000
TEXT_G = TEXT + 0x1000
TOC = TEXT + 0x2_0000  # 256-byte aligned: my_r2 is the same with or without the v6.4 rounding
DATA = TEXT + 0x3_0000
STUBS = TEXT + 0x4_0000
SYMBOLS = {
    "ext_fn": TEXT + 0x80_0000,  # within REL24 range of .text (+-32 MiB)
    "ext_var": 0xC000_0000_0123_4560,
    "ext_small": 0x89AB_CDEF,
    "ext_near": DATA + 0x1234_5678,
}

#: the types ld and the kernel compute alike: ADDR64/32, REL64/32, REL16_HA/LO (the
#: global entry's .TOC. - P), the TOC16 family against a .toc whose base both take as
#: .toc + 0x8000, TOC, and a REL24 to a defined symbol, to its local entry
ASM_SAME = """
    .abiversion 2
    .text
    .globl f
f:
0:  addis 2, 12, .TOC.-0b@ha
    addi 2, 2, .TOC.-0b@l
    .localentry f, .-f
    bl g
    nop
    addis 3, 2, .LC0@toc@ha
    ld 3, .LC0@toc@l(3)
    addi 4, 2, .LC0@toc@l
    ld 5, .LC0@toc(2)
    lwz 6, .LC1@toc(2)
    blr
    .section .text.g,"ax",@progbits
    .globl g
g:
0:  addis 2, 12, .TOC.-0b@ha
    addi 2, 2, .TOC.-0b@l
    .localentry g, .-g
    blr
    .section .toc,"aw"
    .balign 8
.LC0: .quad ext_var
.LC1: .quad .TOC.@tocbase
    .section .data.t,"aw"
    .quad ext_var
    .long ext_small
    .quad ext_var - .
    .long ext_near - .
"""

#: calls to an undefined symbol: the kernel goes through its .stubs and writes
#: ld r2,24(r1) over the nop; a static ld link branches to the symbol directly (it is
#: in range and absolute) and leaves the nop
ASM_STUB = """
    .abiversion 2
    .text
    .globl f
f:  bl ext_fn
    nop
    bl ext_fn
    nop
    bl ext_fn+8
    nop
    b ext_fn
    blr
    .section .toc,"aw"
    .quad 0
    .section .stubs,"ax",@nobits
    .balign 8
    .space 8
"""

SECTIONS = {".text": TEXT, ".text.g": TEXT_G, ".toc": TOC, ".data.t": DATA}


def _linked(tmp_path: Path, asm: str = ASM_SAME, sections: dict[str, int] | None = None) -> Linked:
    c = cross("ppc64le")
    return link(c, asm, tmp_path, sections=sections or SECTIONS, symbols=SYMBOLS,
                ld_args=["--no-toc-optimize", "--no-plt-localentry"])  # fmt: skip


def test_registry_and_table() -> None:
    arch = arch_for(EM.PPC64)
    assert arch is ppc64.ARCH and arch.name == "ppc64le" and arch.byteorder == "little"
    t = ppc64.RELOCATION_TYPES
    assert {n: (t[n].name, t[n].width) for n in (38, 1, 47, 48, 50, 63, 64, 51, 10, 26, 44)} == {
        38: ("R_PPC64_ADDR64", 8), 1: ("R_PPC64_ADDR32", 4), 47: ("R_PPC64_TOC16", 2),
        48: ("R_PPC64_TOC16_LO", 2), 50: ("R_PPC64_TOC16_HA", 2), 63: ("R_PPC64_TOC16_DS", 2),
        64: ("R_PPC64_TOC16_LO_DS", 2), 51: ("R_PPC64_TOC", 8), 10: ("R_PPC_REL24", 4),
        26: ("R_PPC64_REL32", 4), 44: ("R_PPC64_REL64", 8),
    }  # fmt: skip
    # module_64.c has no case for NONE or the ADDR16 family (module_32.c's)
    assert not {0, 3, 4, 5, 6} & set(t)
    fits = t[10].in_range
    assert fits is not None and fits(0x1FF_FFFC) and not fits(0x200_0000) and not fits(2)
    assert fits((-0x200_0000) % (1 << 64)) and not fits((-0x200_0004) % (1 << 64))


def test_same_bytes_as_ld(tmp_path: Path) -> None:
    linked = _linked(tmp_path)
    for section in (".text", ".text.g", ".toc", ".data.t"):
        facts, data = twin(linked, section, V612)
        assert facts.stop is None, (section, facts.reason)
        assert None not in (facts.values or [None]), section
        assert data == linked.section(section), section
    facts, _ = twin(linked, ".text", V612)
    assert set(facts.types) == {252, 250, 10, 50, 64, 48, 63, 47}
    # bl g reached g's local entry (8 bytes in) and left the nop (g is not external)
    text = linked.section(".text")
    assert int.from_bytes(text[8:12], "little") == 0x4800_0001 | (TEXT_G + 8 - (TEXT + 8))
    assert text[12:16] == ppc64.PPC_INST_NOP.to_bytes(4, "little")


def _stub_twin(tmp_path: Path, release: KernelRelease) -> tuple[WriteFacts, bytes, Linked]:
    sections = {".text": TEXT, ".toc": TOC, ".stubs": STUBS}
    linked = _linked(tmp_path, ASM_STUB, sections)
    facts, data = twin(linked, ".text", release)
    return facts, data, linked


@pytest.mark.parametrize("release", [V510, V61, V612])
def test_calls_through_stubs(tmp_path: Path, release: KernelRelease) -> None:
    facts, data, linked = _stub_twin(tmp_path, release)
    assert facts.stop is None and facts.values is not None

    def word(off: int) -> int:
        return int.from_bytes(data[off : off + 4], "little")

    # stub_for_addr(): one stub per target address, in first-use order (40 bytes each),
    # the entries walked as get_stubs_size()'s relacmp() sorted them: by r_info, then
    # addend, descending: ext_fn + 8 (entry 2) takes the first stub
    assert word(16) == 0x4800_0001 | (STUBS - (TEXT + 16))
    assert word(0) == 0x4800_0001 | (STUBS + 40 - TEXT)
    assert word(8) == 0x4800_0001 | (STUBS + 40 - (TEXT + 8))  # the same target: the same stub
    # restore_r2(): the nop after each bl is now ld r2,24(r1)
    assert word(4) == word(12) == word(20) == ppc64.PPC_INST_LD_TOC
    # a b (no LK) is a sibling call: through the stub, nothing restored after it
    assert word(24) == 0x4800_0000 | (STUBS + 40 - (TEXT + 24)) and word(28) == 0x4E80_0020
    # ld branched to the symbol itself and kept the nops
    ld_text = linked.section(".text")
    assert int.from_bytes(ld_text[0:4], "little") == 0x4800_0001 | (SYMBOLS["ext_fn"] - TEXT)
    assert ld_text[4:8] == ppc64.PPC_INST_NOP.to_bytes(4, "little")


def test_no_nop_after_a_call_and_ld_r2_again(tmp_path: Path) -> None:
    linked = _linked(tmp_path, ASM_STUB, {".text": TEXT, ".toc": TOC, ".stubs": STUBS})
    # the relocations applied once more (the target module loads again): the ld r2 the
    # first pass wrote is accepted since v6.3, refused before, first at entry 2 (ext_fn
    # + 8: the greatest addend, walked first)
    _, once = twin(linked, ".text", V612)
    for release, stop in ((V612, None), (V63, None), (V61, 2), (V510, 2)):
        facts = _apply_again(linked, bytearray(once), release)
        assert facts.stop == stop, release
        if stop is not None:
            assert facts.reason == "expected-nop"
            assert ppc64.refusal(release, "m", 3, facts) == (
                "ppc64-expected-nop", "m: Expected nop after call, got <insn> at <loc>"
            )  # fmt: skip
    assert ppc64.expected_nop_message(V510, "m", 0x60000001) == (
        "m: Expected nop after call, got 60000001 at <loc>"
    )


def test_before_4_15_every_stub_call_needs_a_nop(tmp_path: Path) -> None:
    # before v4.15 (b9eab08d012f) restore_r2() had no sibling-call check and printed
    # "Expect noop after relocate, got %08x": ASM_STUB's b ext_fn (entry 3) is followed
    # by a blr and stops the walk; since, it goes through the stub unchecked
    v414, v415 = KernelRelease(4, 14), KernelRelease(4, 15)
    linked = _linked(tmp_path, ASM_STUB, {".text": TEXT, ".toc": TOC, ".stubs": STUBS})
    for release in (KernelRelease(4, 5), v414):
        facts, _ = twin(linked, ".text", release)
        assert (facts.stop, facts.reason) == (3, "expected-nop"), release
        assert ppc64.refusal(release, "m", 3, facts) == (
            "ppc64-expected-nop", "m: Expect noop after relocate, got <insn>")  # fmt: skip
    assert twin(linked, ".text", v415)[0].stop is None
    assert ppc64.expected_nop_message(v414, "m", 0x4E800020) == (
        "m: Expect noop after relocate, got 4e800020"
    )
    assert ppc64.expected_nop_message(v415, "m", 0x4E800020) == (
        "m: Expected nop after call, got 4e800020 at <loc>"
    )
    # the other texts are the same in every release modelled
    facts = ppc64.write_relocate_add(relocation_table([(0, 1, 69, 0)]), bytearray(8), v414)
    assert ppc64.refusal(v414, "m", 3, facts) == (
        "ppc64-unknown-relocation", "m: Unknown ADD relocation: 69")  # fmt: skip
    assert ppc64.ARCH.refusal_dmesg_prefix(v414, facts) == "module_64: "


def _apply_again(linked: Linked, data: bytearray, release: KernelRelease, *,
                 livepatch: bool = False) -> WriteFacts:  # fmt: skip
    """The twin over ``data`` as .text; ``livepatch``: ext_fn made an SHN_LIVEPATCH
    symbol first, as in a livepatch module's klp relocation section."""
    elf = open_elf(linked.obj)
    text = elf.section_by_name(".text")
    symtab = elf.symtab
    assert text is not None and symtab is not None
    if livepatch:
        index = symtab.names().index("ext_fn")
        symtab.set_symbol(index, name=".klp.sym.vmlinux.ext_fn,0", st_shndx=SHN.LIVEPATCH)
    rela = next(s for s in elf.relocation_sections if s.sh_info == text.index)
    layout = ModuleLayout(elf, {s.index: linked.sections[s.name] for s in elf
                                if s.name in linked.sections})  # fmt: skip
    return ppc64.write_relocate_add(elf.relocations(rela), data, release,
                                    symbol_value=lambda i: SYMBOLS["ext_fn"], address=TEXT,
                                    layout=layout)  # fmt: skip


def test_livepatch_symbol_goes_through_a_stub(tmp_path: Path) -> None:
    # an SHN_LIVEPATCH symbol is external as an undefined one is: the branch goes to a
    # stub and the nop after it must be there (kpatch/klp-build emit calls to klp
    # symbols as global calls for this reason)
    linked = _linked(tmp_path, ASM_STUB, {".text": TEXT, ".toc": TOC, ".stubs": STUBS})
    text = bytearray(open_elf(linked.obj).section_by_name(".text").data)  # type: ignore[union-attr]
    data = bytearray(text)
    facts = _apply_again(linked, data, V612, livepatch=True)
    assert facts.stop is None
    # ext_fn + 8 (entry 2) is walked first and takes stub 0 (see test_calls_through_stubs)
    assert int.from_bytes(data[0:4], "little") == 0x4800_0001 | (STUBS + 40 - TEXT)
    assert int.from_bytes(data[4:8], "little") == ppc64.PPC_INST_LD_TOC
    # the call compiled without the nop slot (a local call turned into a klp one): refused
    data = bytearray(text)
    data[4:8] = (0x6000_0001).to_bytes(4, "little")  # ori r0,r0,1: not a nop
    facts = _apply_again(linked, data, V612, livepatch=True)
    assert (facts.stop, facts.reason) == (0, "expected-nop")


def test_toc16_checks(tmp_path: Path) -> None:
    # TOC16_DS of a value not a multiple of 4, and TOC16 beyond +-32 KiB of the TOC
    elf = open_elf(_linked(tmp_path).obj)
    toc = elf.section_by_name(".toc")
    assert toc is not None
    layout = ModuleLayout(elf, {toc.index: TOC})
    r2 = TOC + 0x8000
    for r_type, s, message in (
        (63, r2 + 6, "m: bad TOC16_DS relocation (0x6)"),
        (47, r2 + 0x8000, "m: bad TOC16 relocation (0x8000)"),
        (64, r2 - 2, f"m: bad TOC16_LO_DS relocation (0x{(-2) % (1 << 64):x})"),
    ):
        facts = ppc64.write_relocate_add(relocation_table([(0, 1, r_type, 0)]), bytearray(4),
                                         V612, symbol_value={1: s}.get, address=TEXT,
                                         layout=layout)  # fmt: skip
        assert (facts.stop, facts.reason) == (0, "overflow"), r_type
        assert ppc64.refusal(V612, "m", 2, facts) == ("ppc64-relocation-overflow", message)


def test_unknown_and_out_of_range() -> None:
    # R_PPC64_NONE and R_PPC64_ADDR16_HA: "Unknown ADD relocation"
    for r_type in (0, 6):
        facts = ppc64.write_relocate_add(relocation_table([(0, 1, 38, 0), (8, 1, r_type, 0)]),
                                         bytearray(16), V612)  # fmt: skip
        assert (facts.stop, facts.reason) == (1, "unknown-type")
        assert ppc64.refusal(V612, "m", 2, facts) == (
            "ppc64-unknown-relocation", f"m: Unknown ADD relocation: {r_type}"
        )  # fmt: skip
    # REL32 of a value 4 GiB away
    facts = ppc64.write_relocate_add(relocation_table([(0, 1, 26, 0)]), bytearray(4), V612,
                                     symbol_value=lambda i: 1 << 33, address=0)  # fmt: skip
    assert (facts.stop, facts.reason) == (0, "overflow")
    assert ppc64.refusal(V612, "m", 2, facts)[1] == f"m: REL32 {1 << 33} out of range!"


@pytest.mark.parametrize("name", ["ppc64le", "s390x"])
def test_check_walks_the_relocations(name: str, tmp_path: Path) -> None:
    # a modelled machine: klpelf check runs the twin (no "not modelled" note, and the
    # small object's relocation types are all ones the kernel handles)
    from klpelf.arch import NOT_MODELLED_RULE
    from klpelf.klp.check import check_module
    from toolchain import TARGETS, assemble

    target = next(t for t in TARGETS if t.name == name)
    res = check_module(open_elf(assemble(target, tmp_path / f"{name}.o")))
    rules = [d.rule for d in res.diagnostics]
    assert NOT_MODELLED_RULE not in rules
    assert not [r for r in rules if r.startswith(("s390-", "ppc64-"))]


#: the ELFv2 large-code-model global entry, marked R_PPC64_ENTRY: within 2 GiB of
#: .TOC. both the kernel and ld rewrite ld r2,x(r12); add r2,r2,r12 to addis/addi
ASM_ENTRY = """
    .abiversion 2
    .text
    .globl h
h:
0:  ld 2, 16(12)
    add 2, 2, 12
    .reloc 0b, R_PPC64_ENTRY
    .localentry h, .-h
    blr
    .section .toc,"aw"
    .quad 0
"""


def test_entry_prologue_rewritten_as_ld_does(tmp_path: Path) -> None:
    linked = _linked(tmp_path, ASM_ENTRY, {".text": TEXT, ".toc": TOC})
    facts, data = twin(linked, ".text", V612)
    assert facts.stop is None and facts.types == [118]
    assert data == linked.section(".text")
    r2 = TOC + 0x8000
    want = (0x3C4C_0000 | ((r2 - TEXT + 0x8000) >> 16), 0x3842_0000 | ((r2 - TEXT) & 0xFFFF))
    assert (int.from_bytes(data[0:4], "little"), int.from_bytes(data[4:8], "little")) == want
    # .TOC. more than 2 GiB away: the prologue stays as it is
    far = dataclasses.replace(linked, sections={".text": TEXT, ".toc": TOC + (1 << 32)})
    _, kept = twin(far, ".text", V612)
    assert kept == bytes(open_elf(linked.obj).section_by_name(".text").data)  # type: ignore[union-attr]


@pytest.mark.parametrize("release", ["5.10", "6.1", "6.6", "6.12", "7.2"])
def test_check_predicts_the_dmesg_line(release: str, tmp_path: Path) -> None:
    # module_64.c's pr_fmt is KBUILD_MODNAME ": ", module_64.o's basename; the message
    # carries the module's name itself (R_PPC64_TPREL16, 69: no case in the switch)
    from toolchain import check_refused

    got = check_refused("ppc64le", "R_PPC64_TPREL16", release, tmp_path / "m.ko")
    assert got == ("refuse", 8, "module_64: m: Unknown ADD relocation: 69")


def test_rel24_out_of_range(tmp_path: Path) -> None:
    # bl g with .text.g 64 MiB away: "REL24 <value> out of range!"
    far = {**SECTIONS, ".text.g": TEXT + (64 << 20)}
    linked = dataclasses.replace(_linked(tmp_path), sections=far)
    facts, _ = twin(linked, ".text", V612)
    assert facts.reason == "overflow" and facts.types[facts.stop or 0] == 10
    assert ppc64.refusal(V612, "m", 2, facts) == (
        "ppc64-relocation-overflow", f"m: REL24 {(64 << 20) + 8 - 8} out of range!"
    )  # fmt: skip
    for release in (V510, V61, V612):
        assert ppc64.ARCH.refusal_dmesg_prefix(release, facts) == "module_64: "


@pytest.mark.corpus
@pytest.mark.slow
@pytest.mark.parametrize(("arch", "machine"), [("ppc64el", EM.PPC64), ("s390x", EM.S390)])
def test_debian_modules_walk_through(arch: str, machine: int) -> None:
    # Debian's modules load on Debian's kernels: the twin walks every relocation section
    # of each without stopping (no type the kernel refuses; on ppc64 every call through
    # a stub has its nop, which becomes ld r2,24(r1))
    from corpus.test_corpus import _modules

    twin_of = arch_for(machine)
    assert twin_of is not None
    restored = 0
    paths = _modules(arch)
    for path in paths[:: max(len(paths) // 150, 1)]:
        elf = open_elf(path)
        for sec in elf.sections_of_type(SHT.RELA):
            target = sec.info_section
            if target is None or target.sh_type == SHT.NOBITS:
                continue
            data = bytearray(target.data)
            facts = twin_of.write_relocate_add(elf.relocations_as_rela(sec), data, V61)
            assert facts.stop is None, (path, sec.name, facts.reason)
            if machine == EM.PPC64:
                before = bytes(target.data)
                ld_toc = ppc64.PPC_INST_LD_TOC.to_bytes(4, "little")
                restored += sum(
                    data[i : i + 4] == ld_toc and before[i : i + 4] != ld_toc
                    for i in range(0, len(data) - 3, 4)
                )
    assert machine != EM.PPC64 or restored > 1000


def test_stubs_size(tmp_path: Path) -> None:
    # ASM_STUB: REL24 to ext_fn+0 (twice), ext_fn+8 and (b) ext_fn+0 again: two distinct
    # (symbol, addend) pairs, plus the terminating slot and the two ftrace stubs
    elf = open_elf(_linked(tmp_path, ASM_STUB, {".text": TEXT, ".toc": TOC, ".stubs": STUBS}).obj)
    assert ppc64.stubs_size(elf) == (1 + 2 + 2) * 40
    assert ppc64.stubs_size(elf, ftrace_stubs=0) == 3 * 40


def _reloads(tmp_path: Path, release: KernelRelease, bases: list[int], *,
             livepatch: bool = False) -> tuple[list[WriteFacts], ppc64.ModuleStubs]:  # fmt: skip
    """ASM_STUB's .text walked once per base over one module's stubs, ext_fn at the
    base each time: klp_module_coming() applying a klp relocation section again at the
    new addresses of a module loaded again (the calls' nops as clear_relocate_add()
    leaves them).  ``livepatch``: the section flagged SHF_RELA_LIVEPATCH."""
    linked = _linked(tmp_path, ASM_STUB, {".text": TEXT, ".toc": TOC, ".stubs": STUBS})
    elf = open_elf(linked.obj)
    text = elf.section_by_name(".text")
    assert text is not None
    rela = next(s for s in elf.relocation_sections if s.sh_info == text.index)
    if livepatch:
        rela.sh_flags |= SHF.RELA_LIVEPATCH
    layout = ModuleLayout(elf, {s.index: linked.sections[s.name] for s in elf
                                if s.name in linked.sections})  # fmt: skip

    def ext_fn_at(base: int) -> Callable[[int], int]:
        return lambda index: base  # every entry's symbol is ext_fn

    walks = [ppc64.write_relocate_add(elf.relocations(rela), bytearray(text.data), release,
                                      symbol_value=ext_fn_at(base), address=TEXT,
                                      layout=layout) for base in bases]  # fmt: skip
    return walks, ppc64.module_stubs(layout, release)


#: ext_fn's address at each load of its module, all within REL24 range of .stubs
_BASES = [TEXT + 0x80_0000, TEXT + 0x90_0000, TEXT + 0xA0_0000]


def test_stubs_run_out_when_a_section_is_applied_again(tmp_path: Path) -> None:
    # get_stubs_size(): ext_fn+0 and ext_fn+8 (two pairs), two ftrace stubs, and up to
    # 6.12 the terminator: five slots.  Each load takes two new stubs (new addresses,
    # stubs never freed), ext_fn+8 first (relacmp() order): the third takes the fifth
    # slot for ext_fn+8 and finds none for ext_fn+0 at the first of its three entries
    # in lib/sort.c's order: stub_for_addr() returns 0 after its WARN_ON, -ENOENT
    walks, state = _reloads(tmp_path, V612, _BASES)
    assert state.num_stubs == 5 and not state.stub_count
    first = _first_ext_fn(V612)
    assert [(f.stop, f.reason) for f in walks] == [(None, None), (None, None), (first, "no-stub")]
    assert state.targets == [_BASES[0] + 8, _BASES[0], _BASES[1] + 8, _BASES[1], _BASES[2] + 8]
    arch = ppc64.ARCH
    assert not arch.refusal_is_logged(walks[2]) and arch.refusal_is_logged(walks[0])
    assert arch.refusal_errno is not None and arch.refusal_errno(walks[2]) == 2  # -ENOENT
    rule, text = arch.refusal(V612, "livepatch_x", 3, walks[2])
    assert rule == "ppc64-no-stub"
    assert isinstance(text, str) and text.startswith(
        "R_PPC_REL24 (10) of module livepatch_x is refused silently: apply_relocate_add() "
        "returns -ENOENT (errno 2) without a message (stub_for_addr() found no free slot"
    )
    assert "WARN_ON prints a stack trace" in text


def test_stubs_past_the_count_in_7_2(tmp_path: Path) -> None:
    # 7.2: no terminator (four slots), the scan stops at me->arch.stub_count: the third
    # load's ext_fn+8 is made in slot 4, past .stubs, unchecked; the next lookup
    # (ext_fn+0) scans to i = 4 >= num_stubs: WARN_ON, 0
    v72 = KernelRelease(7, 2)
    assert ppc64.stubs_size(open_elf(_linked(tmp_path / "s", ASM_STUB, {
        ".text": TEXT, ".toc": TOC, ".stubs": STUBS}).obj), release=v72) == 4 * 40  # fmt: skip
    walks, state = _reloads(tmp_path, v72, _BASES)
    assert state.num_stubs == 4 and state.stub_count
    first = _first_ext_fn(v72)
    assert [(f.stop, f.reason) for f in walks] == [(None, None), (None, None), (first, "no-stub")]
    assert len(state.targets) == 5


def test_ftrace_stubs_are_taken_before_the_first_klp_section(tmp_path: Path) -> None:
    # module_finalize_ftrace() makes the two trampolines' stubs after the module's own
    # relocations, before klp_init_patch() applies any klp section: the klp section's
    # stubs start at slot 2, and the second load already runs out (2 + 2 + 1 of 5)
    walks, state = _reloads(tmp_path, V612, _BASES[:2], livepatch=True)
    assert state.targets[:4] == [None, None, _BASES[0] + 8, _BASES[0]]
    assert walks[0].values is not None and walks[0].values[0] == STUBS + 3 * 40 - TEXT
    first = _first_ext_fn(V612)
    assert [(f.stop, f.reason) for f in walks] == [(None, None), (first, "no-stub")]


def _first_ext_fn(release: KernelRelease) -> int:
    """Which of ASM_STUB's ext_fn+0 entries (0, 1 and 3: equal keys) lib/sort.c's
    heapsort leaves first, relacmp() ordering entry 2 (ext_fn+8) before them."""
    keys = [-1, -1, -2, -1]  # ascending in relacmp()'s order: equal keys tie
    order = heapsort_order(keys, double=double_pop(release))
    assert order[0] == 2
    return order[1]
