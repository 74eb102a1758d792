"""arch/s390x.py: the twin of arch/s390/kernel/module.c apply_rela(), against GNU ld for
s390x and, where the kernel differs from ld (its GOT, its PLT), against its formula."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from klpelf.arch import ModuleLayout, arch_for
from klpelf.arch import s390x as s390
from klpelf.elf.constants import EM
from klpelf.release import KernelRelease
from ld_oracle import Linked, cross, link, twin
from reloc_entries import relocation_table

if TYPE_CHECKING:
    from klpelf.arch import WriteFacts

V54, V510, V61, V612 = (KernelRelease(5, 4), KernelRelease(5, 10), KernelRelease(6, 1),
                        KernelRelease(6, 12))  # fmt: skip

TEXT = 0x3FF_8000_0000
DATA = TEXT + 0x10_0000
SYMBOLS = {
    "ext_near": TEXT + 0x100_0000,  # PC32DBL range (+-4 GiB)
    "ext_n16": TEXT + 0x4000,  # PC16DBL range (+-64 KiB)
    "ext_data": TEXT - 0x200_0000,
    "ext_d20": 0xFFFF_FFFF_FFFF_EDCC,  # -0x1234: the signed 20-bit displacement
    "ext_12": 0x123,
    "ext_20": 0x7_FFFF,
    "ext_8": 0x7F,
    "ext_16": 0xBEEF,
    "ext_32": 0xDEAD_BEEF,
    "ext_far": 0x0123_4567_89AB_CDEF,
}

#: every type ld and the kernel compute alike: the direct ones, the PC-relative ones, and
#: PLT16DBL/PLT32DBL to a symbol in range (the kernel then branches to the symbol, not
#: its PLT entry; a static ld link has no PLT)
ASM_SAME = """
    .text
f:  brasl %r14, ext_near
    brasl %r14, ext_near@PLT
    larl %r1, ext_data
    bras %r14, ext_n16
    bras %r14, ext_n16@PLT
    lg %r1, ext_d20(%r2)
0:  .reloc 0b, R_390_12, ext_12
    .short 0xa000
1:  .reloc 1b, R_390_20, ext_20
    .long 0x500000ff
2:  .reloc 2b, R_390_8, ext_8
    .byte 0
    .byte 0
3:  .reloc 3b, R_390_16, ext_16
    .short 0
4:  .reloc 4b, R_390_PC16, ext_n16
    .short 0
    .long ext_near - .
    .long ext_32
    .quad ext_far
    .quad ext_far - .
    .section .data.t,"aw"
    .quad f + 6
    .long f - .
"""

#: the kernel's own GOT and PLT: a static ld link resolves PLT32 to the symbol and makes
#: its own .got (or relaxes the lgrl), so these are checked against apply_rela()'s formula
ASM_KERNEL = """
    .text
f:  brasl %r14, ext_far@PLT
    lgrl %r1, ext_data@GOTENT
    lgrl %r2, ext_data@GOTENT
    brasl %r14, ext_near@PLT
    brasl %r14, ext_n16@PLT
    lgrl %r3, ext_32@GOTENT
0:  .reloc 0b, R_390_PLT32, ext_near
    .long 0
"""

R_PC32DBL, R_PLT32DBL, R_PLT32, R_GOTENT, R_8, R_COPY = 19, 20, 8, 26, 1, 9


def _linked(tmp_path: Path, asm: str = ASM_SAME, **symbols: int) -> Linked:
    c = cross("s390x")
    return link(c, asm, tmp_path, sections={".text": TEXT, ".data.t": DATA},
                symbols={**SYMBOLS, **symbols})  # fmt: skip


def test_registry_and_table() -> None:
    arch = arch_for(EM.S390)
    assert arch is s390.ARCH and arch.name == "s390x" and arch.byteorder == "big"
    assert arch.nonzero_message is None  # s390 writes whatever the place holds
    t = s390.RELOCATION_TYPES
    assert {n: (t[n].name, t[n].width) for n in (1, 2, 3, 57, 4, 22, 17, 19, 20, 5, 23)} == {
        1: ("R_390_8", 1), 2: ("R_390_12", 2), 3: ("R_390_16", 2), 57: ("R_390_20", 4),
        4: ("R_390_32", 4), 22: ("R_390_64", 8), 17: ("R_390_PC16DBL", 2),
        19: ("R_390_PC32DBL", 4), 20: ("R_390_PLT32DBL", 4), 5: ("R_390_PC32", 4),
        23: ("R_390_PC64", 8),
    }  # fmt: skip
    assert t[19].formula == "(S + A - P) >> 1"
    assert t[19].range_check == "apply_rela_bits(sign=1, bits=32, shift=1)"
    fits = t[19].in_range
    assert fits is not None
    assert fits(0xFFFF_FFFE) and not fits(0x1_0000_0000) and not fits(3)  # odd: refused
    assert fits((-(1 << 32)) % (1 << 64)) and not fits((-(1 << 32) - 2) % (1 << 64))
    fits8 = t[R_8].in_range
    assert fits8 is not None and fits8(0xFF) and not fits8(0x100)
    assert t[R_COPY].width == 0 and t[R_COPY].compute is None


def test_same_bytes_as_ld(tmp_path: Path) -> None:
    linked = _linked(tmp_path)
    for section in (".text", ".data.t"):
        facts, data = twin(linked, section, V612)
        assert facts.stop is None, (section, facts.reason)
        assert None not in (facts.values or [None])
        assert data == linked.section(section), section
    facts, _ = twin(linked, ".text", V612)
    assert set(facts.types) == {19, 20, 17, 18, 57, 2, 1, 3, 16, 5, 4, 22, 23}
    text = linked.section(".text")
    # the 12- and 20-bit fields merge into what is there: 0xa000 | 0x123; 0x5 B2, 0xff
    assert text[0x20:0x22] == bytes.fromhex("a123")
    assert text[0x22:0x26] == bytes.fromhex("5fff7fff")


def _kernel(tmp_path: Path, release: KernelRelease = V612, *, expoline: bool = True,
            **symbols: int) -> tuple[WriteFacts, bytes, s390.ModuleTables, Linked]:  # fmt: skip
    c = cross("s390x")
    near = {**SYMBOLS, "ext_far": SYMBOLS["ext_near"], **symbols}
    linked = link(c, ASM_KERNEL, tmp_path, sections={".text": TEXT}, symbols=near)
    # the twin gets the real far symbol: ld could not reach it with a PLT32DBL
    real = dataclasses.replace(linked, symbols={**SYMBOLS, **symbols})
    state: list[s390.ModuleTables] = []

    def prepare(layout: ModuleLayout) -> None:
        tables = s390.module_tables(layout.elf, release, expoline=expoline)
        tables.core_base = s390.core_base_of(layout, tables)
        layout.arch_state["s390x"] = tables
        state.append(tables)

    facts, data = twin(real, ".text", release, prepare=prepare)
    return facts, data, state[0], linked


def test_kernel_got_and_plt(tmp_path: Path) -> None:
    facts, data, t, _ = _kernel(tmp_path)
    # R_390_PLT32 always goes through the PLT entry (only the DBL forms may skip it) and
    # is checked unsigned (apply_rela_bits(sign=0, bits=32)): the PLT lies below the
    # place, so L + A - P is negative and the kernel refuses it
    assert (facts.stop, facts.reason, facts.types[-1]) == (6, "overflow", R_PLT32)
    # module_frob_arch_sections(): GOT slots for ext_data, ext_32; PLT entries for
    # ext_far, ext_near, ext_n16 (first use, in entry order), 22 bytes each since v5.17
    assert t.got_size == 16 and t.plt_size == 3 * 22
    # the GOT at offset 0 of the core text, the PLT after it, the expoline thunk entry,
    # then .text (sh_addralign 4) at ALIGN(16 + 66 + 22, 4) = 104
    assert t.area_size == 16 + 66 + 22
    assert t.core_base == TEXT - 104
    got, plt = TEXT - 104, TEXT - 104 + 16

    def field(off: int, n: int = 4) -> int:
        return int.from_bytes(data[off : off + n], "big", signed=True)

    # brasl ext_far@PLT: 8 GiB away, so through its PLT entry (the first)
    assert field(2) == (plt + 0 + 2 - (TEXT + 2)) >> 1
    # both lgrl @GOTENT of ext_data: the same slot (0), which holds S
    assert field(8) == (got + 0 + 2 - (TEXT + 8)) >> 1
    assert field(14) == (got + 0 + 2 - (TEXT + 14)) >> 1
    assert field(26) == (SYMBOLS["ext_n16"] + 2 - (TEXT + 26)) >> 1  # in range too
    assert facts.values is not None
    assert facts.values[6] == (plt + 22 - (TEXT + 36)) % (1 << 64)
    # brasl ext_near@PLT in range: the symbol itself, as ld does
    assert field(20) == (SYMBOLS["ext_near"] + 2 - (TEXT + 20)) >> 1
    assert field(32) == (got + 8 + 2 - (TEXT + 32)) >> 1  # ext_32's slot
    assert sorted(t.got_values.values()) == sorted([SYMBOLS["ext_data"], SYMBOLS["ext_32"]])
    assert sorted(t.plt_values.values()) == sorted(
        [SYMBOLS["ext_far"], SYMBOLS["ext_near"], SYMBOLS["ext_n16"]]
    )


@pytest.mark.parametrize(("release", "size"), [(V54, 20), (V510, 22), (V61, 22), (V612, 22)])
def test_plt_entry_size_per_release(tmp_path: Path, release: KernelRelease, size: int) -> None:
    # 20 bytes before f3b7e73b2c66 (v5.17; 5.10.96 has the backport), 22 since; without
    # expolines there is no thunk entry after the PLT
    _, data, t, _ = _kernel(tmp_path, release, expoline=False)
    assert t.entry_size == size and t.plt_size == 3 * size and t.area_size == 16 + 3 * size
    base = t.core_base
    assert base is not None and TEXT - base == (16 + 3 * size + 3) // 4 * 4
    # the first PLT entry (ext_far's) is where the first brasl goes
    assert int.from_bytes(data[2:6], "big", signed=True) == (base + 16 - (TEXT + 2) + 2) >> 1


def test_relocation_error_stops_the_walk(tmp_path: Path) -> None:
    # R_390_8 of 0x180 and a PC32DBL to an odd address: apply_rela_bits() refuses both
    linked = _linked(tmp_path)
    bad = dataclasses.replace(linked, symbols={**SYMBOLS, "ext_8": 0x180})
    facts, _ = twin(bad, ".text", V612)
    assert facts.reason == "overflow" and facts.types[facts.stop or 0] == R_8
    assert facts.values is not None and facts.values[-1] == 0x180
    assert s390.refusal(V612, "m", 3, facts) == (
        "s390-relocation-error",
        "module m: relocation error for symbol <symbol> (r_type 1, value 0x180)",
    )
    odd = dataclasses.replace(linked, symbols={**SYMBOLS, "ext_near": TEXT + 0x101})
    facts, _ = twin(odd, ".text", V612)
    assert (facts.stop, facts.reason, facts.types[0]) == (0, "overflow", R_PC32DBL)
    assert s390.error_message("m", "ext_near", 19, 0x101) == (
        "module m: relocation error for symbol ext_near (r_type 19, value 0x101)"
    )


def _walk(entries: list[tuple[int, int, int, int]], data: bytes) -> tuple[WriteFacts, bytearray]:
    place = bytearray(data)
    facts = s390.write_relocate_add(relocation_table(entries), place, V612)
    return facts, place


def test_unknown_and_shared_types_refused() -> None:
    facts, place = _walk([(0, 1, 22, 0), (8, 1, 56, 0), (12, 1, 4, 0)], bytes(16))
    assert (facts.stop, facts.reason, len(facts)) == (1, "unknown-type", 2)
    assert s390.refusal(V61, "m", 2, facts) == (
        "s390-unknown-relocation", "module m: unknown relocation: 56"
    )  # fmt: skip
    assert place[:8] == b"\xff" * 8 and place[8:] == bytes(8)  # written before the stop
    assert s390.ARCH.refusal_is_logged(facts)
    facts, _ = _walk([(0, 1, R_COPY, 0)], bytes(8))
    assert facts.reason == "unknown-type"
    _, message = s390.refusal(V61, "m", 2, facts)
    assert message.startswith("R_390_COPY (9) is refused silently: apply_rela() returns "
                              "-ENOEXEC (errno 8) without a message")  # fmt: skip
    assert not s390.ARCH.refusal_is_logged(facts)


@pytest.mark.parametrize("reloc", ["R_390_COPY", "R_390_GLOB_DAT", "R_390_JMP_SLOT",
                                   "R_390_RELATIVE"])  # fmt: skip
def test_check_predicts_no_dmesg_line_for_shared_types(reloc: str, tmp_path: Path) -> None:
    # apply_rela() returns -ENOEXEC for them before any printk(): check predicts the
    # refusal and errno 8, no kernel_message, no dmesg, and says it is silent
    from klpelf.operations.check import check
    from toolchain import TARGETS, assemble, module_source

    target = next(t for t in TARGETS if t.name == "s390x")
    text = f"g:  nop\n    .reloc g, {reloc}, ext_func"
    ko = assemble(target, tmp_path / "m.ko", module_source(text))
    checked = check(ko, version="6.12")
    doc = checked.to_json()
    assert (doc["verdict"], doc["errno"], doc["kernel_message"]) == ("refuse", 8, None)
    (err,) = [d for d in doc["diagnostics"] if d["rule"] == "s390-unknown-relocation"]
    assert (err["kernel"], err["errno"], err["dmesg"]) == (True, 8, None)
    assert "refused silently" in err["message"] and "without a message" in err["message"]
    verdict = checked.to_text().splitlines()[-2]
    assert verdict.startswith(f"{ko}: Linux 6.12 (--kernel-release) would refuse the module "
                              "when the module loads, silently (errno 8, nothing in dmesg): "
                              f"{reloc} (")  # fmt: skip


@pytest.mark.parametrize("release", ["5.10", "6.1", "6.6", "6.12", "7.2"])
def test_check_predicts_the_dmesg_line(release: str, tmp_path: Path) -> None:
    # module.c prints with printk(KERN_ERR ...), no pr_fmt: the line is the message
    # (R_390_TLS_LE64, 51, has no case in apply_rela())
    from toolchain import check_refused

    got = check_refused("s390x", "R_390_TLS_LE64", release, tmp_path / "m.ko")
    assert got == ("refuse", 8, "module m: unknown relocation: 51")
    facts, _ = _walk([(0, 1, 22, 0), (8, 1, 56, 0)], bytes(16))
    assert s390.ARCH.refusal_dmesg_prefix(KernelRelease.parse(release), facts) == ""


def test_no_zero_check_and_marks() -> None:
    # s390 has no "existing value is nonzero" rule: a written place may be written again
    facts, place = _walk([(0, 1, 4, 0), (0, 1, 4, 0), (4, 1, 2, 0)], b"\0" * 4 + b"\xa0\0")
    assert facts.stop is None and not any(f.nonzero for f in facts)
    assert facts.values is None and facts.overflow is None
    assert place == b"\xff" * 4 + b"\xaf\xff"  # the 12-bit mark keeps the high nibble
