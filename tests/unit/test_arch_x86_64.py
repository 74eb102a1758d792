"""arch/: the registry, the x86_64 relocation table and the twin of its apply_relocate_add()."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from klpelf.arch import (
    NOT_MODELLED_RULE,
    RelocationWrite,
    WriteFacts,
    arch_for,
    not_modelled_message,
)
from klpelf.arch import x86_64 as x86
from klpelf.cli import main
from klpelf.elf.constants import EM
from klpelf.elf.reader import open_elf
from klpelf.klp.check import check_module
from klpelf.release import KernelRelease
from reloc_entries import relocation_table
from toolchain import MODULE_STRUCT, TARGETS, assemble

if TYPE_CHECKING:
    pass

V510, V61, V63, V619 = (KernelRelease(5, 10), KernelRelease(6, 1), KernelRelease(6, 3),
                        KernelRelease(6, 19))  # fmt: skip
R_64, R_PC32, R_PLT32, R_32, R_32S, R_PC64 = 1, 2, 4, 10, 11, 24


def _apply(
    entries: list[tuple[int, int, int, int]],
    data: bytes | bytearray,
    release: KernelRelease = V619,
    *,
    values: dict[int, int] | None = None,
    address: int | None = None,
    keep: bool = True,
) -> tuple[WriteFacts, bytearray]:
    place = bytearray(data)
    relocs = relocation_table(entries)
    symbol_value = values.get if values is not None else None
    facts = x86.write_relocate_add(
        relocs, place, release, symbol_value=symbol_value, address=address, keep=keep
    )
    return facts, place


# --- the registry ---------------------------------------------------------------------


def test_registry() -> None:
    arch = arch_for(EM.X86_64)
    assert arch is not None and arch.name == "x86_64" and arch.machine == EM.X86_64
    assert arch.byteorder == "little" and arch.none_type == 0
    assert arch.relocation_types is x86.RELOCATION_TYPES
    for machine in (EM.NONE,):
        assert arch_for(machine) is None
    assert not_modelled_message("aarch64") == "relocations for aarch64 are not modelled"


# --- the table --------------------------------------------------------------------------


def test_table_names_widths_formulas() -> None:
    t = x86.RELOCATION_TYPES
    assert {n: (r.name, r.width) for n, r in t.items()} == {
        0: ("R_X86_64_NONE", 0), 1: ("R_X86_64_64", 8), 2: ("R_X86_64_PC32", 4),
        4: ("R_X86_64_PLT32", 4), 10: ("R_X86_64_32", 4), 11: ("R_X86_64_32S", 4),
        24: ("R_X86_64_PC64", 8), 42: ("R_X86_64_REX_GOTPCRELX", 4),
    }  # fmt: skip
    s, a, p = 0xFFFFFFFF_C0001000, 0x10, 0xFFFFFFFF_C0000000
    for n in (R_64, R_32, R_32S):
        compute = t[n].compute
        assert t[n].formula == "S + A"
        assert compute is not None and compute(s, a, p) == s + a
    for n in (R_PC32, R_PLT32, R_PC64):
        compute = t[n].compute
        assert t[n].formula in ("S + A - P", "L + A - P") and compute is not None
        assert compute(s, a, p) == 0x1010
        assert compute(p, -4, s) == (p - 4 - s) % (1 << 64)  # negative wraps to u64
    assert t[0].compute is None and not t[42].modelled


def test_range_checks() -> None:
    t = x86.RELOCATION_TYPES
    fits32, fits32s = t[R_32].in_range, t[R_32S].in_range
    assert fits32 is not None and fits32s is not None
    assert fits32(0) and fits32(0xFFFF_FFFF) and not fits32(0x1_0000_0000)
    assert not fits32(0xFFFFFFFF_FFFFFFFF)  # -1 as u64
    assert fits32s(0x7FFF_FFFF) and not fits32s(0x8000_0000)
    assert fits32s(0xFFFFFFFF_80000000) and not fits32s(0xFFFFFFFF_7FFFFFFF)
    assert t[R_32].range_check == "val == (u32)val"
    assert all(t[n].in_range is None for n in (R_64, R_PC32, R_PLT32, R_PC64))


# --- the twin of __write_relocate_add() --------------------------------------------------


def test_clean_walk_marks_every_place() -> None:
    facts, after = _apply([(0, 1, R_PC32, 0), (8, 1, R_64, 0), (4, 0, 0, 0)], bytes(24))
    assert facts.stop is None and facts.reason is None and len(facts) == 3
    assert [f.width for f in facts] == [4, 8, 0]
    assert facts[0] == RelocationWrite(0, R_PC32, True, 0, 4, None, None, False)
    assert after == b"\1" * 4 + bytes(4) + b"\1" * 8 + bytes(8)


def test_nonzero_target() -> None:
    data = bytearray(16)
    data[9] = 0xCC
    facts, _ = _apply([(0, 1, R_PC32, 0), (8, 1, R_PC32, 0), (12, 1, R_PC32, 0)], data)
    assert (facts.stop, facts.reason, len(facts)) == (1, "nonzero", 2)
    assert facts[1].nonzero and not facts[0].nonzero
    rule, message = x86.refusal(V619, "m", 7, facts)
    assert rule == "x86-nonzero-target"
    assert "nonzero for sec 7, idx 1, type 2," in message


def test_two_entries_on_one_place() -> None:
    # the second finds the first's bytes, also when it only overlaps them
    for second in (0, 2, 7):
        facts, _ = _apply([(0, 1, R_64, 0), (16, 1, R_32, 0), (second, 1, R_PC32, 0)], bytes(24))
        assert (facts.stop, facts.reason) == (2, "nonzero"), second
    facts, _ = _apply([(0, 1, R_64, 0), (8, 1, R_PC32, 0)], bytes(16))
    assert facts.stop is None  # adjacent, not overlapping


def test_unknown_type_stops_the_walk() -> None:
    data = bytearray(16)
    data[12] = 1  # never reached
    facts, after = _apply([(0, 1, R_PC32, 0), (4, 1, 9, 0), (12, 1, R_PC32, 0)], data)
    assert (facts.stop, facts.reason, len(facts)) == (1, "unknown-type", 2)
    assert not facts[1].known and facts[1].width == 0
    assert x86.refusal(V61, "m", 3, facts) == (
        "x86-unknown-relocation", "m: Unknown rela relocation: 9"
    )  # fmt: skip
    assert after[:4] == b"\1" * 4  # the first was written before the walk stopped


def test_past_the_end() -> None:
    # a place past the end is not checked; the bytes inside a straddling one are
    data = bytearray(10)
    facts, after = _apply([(8, 1, R_64, 0), (100, 1, R_64, 0), (6, 1, R_PC32, 0)], data)
    assert (facts.stop, facts.reason) == (2, "nonzero")  # 8..9 were written by entry 0
    facts, after = _apply([(8, 1, R_64, 0), (100, 1, R_64, 0)], data)
    assert facts.stop is None and after == bytes(8) + b"\1\1"
    assert facts[1].width == 8 and not facts[1].nonzero


def test_values_and_overflow() -> None:
    values = {1: 0xFFFFFFFF_C0001000, 2: 0x1_0000_0000}
    addr = 0xFFFFFFFF_C0000000
    facts, after = _apply(
        [(0, 1, R_PC32, 4), (8, 1, R_64, 0), (16, 3, R_64, 0)],
        bytes(24),
        values=values,
        address=addr,
    )
    assert facts.stop is None
    assert facts.values == [0x1004, values[1], None]  # symbol 3's value is not known
    assert facts.overflow == [False, False, None]
    assert after[:4] == (0x1004).to_bytes(4, "little")
    assert after[8:16] == values[1].to_bytes(8, "little")
    assert after[16:] == b"\1" * 8  # unknown value: a nonzero mark
    # R_X86_64_32 of a value above 4 GiB overflows
    facts, _ = _apply([(0, 1, R_PC32, 0), (8, 2, R_32, 0)], bytes(16), values=values, address=addr)
    assert (facts.stop, facts.reason, facts[1].overflow) == (1, "overflow", True)
    rule, message = x86.refusal(V619, "m", 5, facts)
    assert rule == "x86-relocation-overflow"
    # two pr_err() calls, two lines; before v6.19 the first names neither sec nor idx
    assert message == (
        "overflow in relocation type 10 val 100000000 sec 5 idx 1",
        "`m' likely not compiled with -mcmodel=kernel",
    )
    assert x86.refusal(V61, "m", 5, facts)[1] == (
        "overflow in relocation type 10 val 100000000",
        "`m' likely not compiled with -mcmodel=kernel",
    )


def test_overflow_or_nonzero_first() -> None:
    # both at one entry: v6.3+ checks the range first, v5.8..v6.2 the place first
    big = {2: 1 << 40}
    data = b"\0" * 8 + b"\xcc" + b"\0" * 7
    assert _apply([(8, 2, R_32, 0)], data, V63, values=big, address=0)[0].reason == "overflow"
    assert _apply([(8, 2, R_32, 0)], data, V510, values=big, address=0)[0].reason == "nonzero"
    assert _apply([(8, 2, R_32, 0)], bytes(16), V510, values=big, address=0)[0].reason == "overflow"


def test_messages_per_release() -> None:
    assert x86.nonzero_message(V510, 3, 4, 2).startswith(
        "x86/modules: Skipping invalid relocation target, existing value is nonzero for type 2"
    )
    assert x86.nonzero_message(V63, 3, 4, 2) == (
        "x86/modules: Invalid relocation target, existing value is nonzero for type 2, "
        "loc <loc>, val <val>"
    )
    assert "for sec 3, idx 4, type 2," in x86.nonzero_message(V619, 3, 4, 2)


def test_bulk_proof_and_entry_walk_agree() -> None:
    # the walk proves the usual case at once; whatever the entries, the result is the
    # one of walking them one by one
    rng = random.Random(11)
    for _ in range(400):
        n = rng.randrange(1, 64)
        data = bytearray(n)
        for _ in range(rng.randrange(3)):
            data[rng.randrange(n)] = 1
        types = [0, R_64, R_PC32, R_32S, R_PC64, 42] + ([9] if rng.random() < 0.1 else [])
        offs = sorted(rng.sample(range(n + 8), min(rng.randrange(1, 8), n + 8)))
        if rng.random() < 0.3:
            rng.shuffle(offs)
        entries = [(o, 1, rng.choice(types), 0) for o in offs]
        facts, after = _apply(entries, data, keep=True)
        ref = bytearray(data)
        widths = [x86._WIDTH.get(t, -1) for _, _, t, _ in entries]
        limit = widths.index(-1) if -1 in widths else len(widths)
        stop = x86._write_entries(ref, [e[0] for e in entries], widths, None, range(limit))
        if stop is None and limit < len(entries):
            assert (facts.stop, facts.reason) == (limit, "unknown-type")
        else:
            assert facts.stop == stop and facts.reason == ("nonzero" if stop is not None else None)
        if facts.stop is None:
            assert after == ref


# --- a machine without an arch file: one note ------------------------------------------------


@pytest.mark.parametrize("name", ["i386"])
def test_not_modelled_note(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = next(t for t in TARGETS if t.name == name)
    obj = assemble(target, tmp_path / f"{name}.o", target.asm + MODULE_STRUCT)
    elf = open_elf(obj)
    res = check_module(elf)
    notes = [d for d in res.diagnostics if d.rule == NOT_MODELLED_RULE]
    assert len(notes) == 1
    assert notes[0].severity == "note"
    assert notes[0].message == f"relocations for {elf.machine_name} are not modelled"
    main(["check", str(obj)])
    assert f"note: relocations for {elf.machine_name} are not modelled" in capsys.readouterr().out
    main(["check", "--json", str(obj)])
    doc = json.loads(capsys.readouterr().out)
    rules = [d["rule"] for d in doc["modules"][0]["diagnostics"]]
    assert rules.count(NOT_MODELLED_RULE) == 1


def test_x86_64_gets_no_note(tmp_path: Path) -> None:
    obj = assemble(TARGETS[0], tmp_path / "x86_64.o")
    res = check_module(open_elf(obj))
    assert NOT_MODELLED_RULE not in [d.rule for d in res.diagnostics]
