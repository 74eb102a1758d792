"""klpelf apply: the module loader's layout, the relocations applied in the kernel's order,
the values reported and the bytes written, with GNU ld as the oracle of the bytes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from klpelf.cli import main
from klpelf.elf.constants import SHF, SHN, SHT
from klpelf.elf.reader import open_elf
from klpelf.klp.layout import DEFAULT_BASE, PAGE_SIZE, layout_sections, place
from klpelf.operations.apply import apply, section_file_name
from klpelf.release import KernelRelease
from klpelf.symbols.sources import load_sources
from ld_oracle import cross, link
from toolchain import MODULE_STRUCT, TARGETS, assemble

TEXT, RODATA, DATA = 0xFFFF_FFFF_A000_1000, 0xFFFF_FFFF_A000_2000, 0xFFFF_FFFF_A000_3000
FOO, FOO_VAR, BAR = 0xFFFF_FFFF_8100_1000, 0xFFFF_FFFF_8200_0000, 0xFFFF_FFFF_8100_2000

# calls and loads of two vmlinux symbols (livepatch symbols after convert), a call to an
# exported one (an ordinary relocation) and local references
PATCH = (
    """
    .text
    .globl f
f:  call ".klp.sym.vmlinux.foo,0"
    movq ".klp.sym.vmlinux.foo_var,0"(%rip), %rax
    call bar
    leaq msg(%rip), %rdi
    ret
    .section .data.ptrs,"aw"
    .quad ".klp.sym.vmlinux.foo,0"
    .quad f + 8
    .section .rodata.str1.1,"aMS",@progbits,1
msg: .string "hello"
"""
    + MODULE_STRUCT
)

KALLSYMS = f"{FOO:x} T foo\n{FOO_VAR:x} D foo_var\n{BAR:x} T bar\n"


def _module(tmp: Path, asm: str = PATCH, name: str = "lp") -> tuple[Path, Path]:
    """The object as assembled and the livepatch module convert makes of it."""
    obj = assemble(TARGETS[0], tmp / f"{name}.o", asm)
    ko = tmp / f"{name}.ko"
    assert main(["convert", "-o", str(ko), str(obj)]) == 0
    return obj, ko


def _kallsyms(tmp: Path, extra: str = "") -> Path:
    p = tmp / "kallsyms"
    p.write_text(KALLSYMS + extra)
    return p


# --- layout_sections() ------------------------------------------------------------------

LAYOUT = """
    .text
    .p2align 4
    ret
    .section .init.text,"ax"
    ret
    .section .exit.text,"ax"
    ret
    .section .rodata,"a"
    .long 1
    .section .data,"aw"
    .byte 1
    .section .data.x,"aw"
    .p2align 3
    .quad 2
    .section .data..ro_after_init,"aw"
    .long 3
    .section __jump_table,"aw"
    .quad 4
    .section .bss,"aw",@nobits
    .zero 64
    .section .init.data,"aw"
    .long 5
    .section .init.rodata,"a"
    .long 6
    .section __versions,"a"
    .long 7
    .section .modinfo,"a"
    .string "license=GPL"
    .section .data..percpu,"aw"
    .long 8
"""


def test_layout_sections_order_regions_offsets(tmp_path: Path) -> None:
    elf = open_elf(assemble(TARGETS[0], tmp_path / "l.o", LAYOUT))
    laid = [(elf.sections[i].name, region, off) for i, region, off in layout_sections(elf)]
    assert laid == [
        (".text", "text", 0),
        (".exit.text", "text", 1),  # core with CONFIG_MODULE_UNLOAD
        (".rodata", "rodata", 0),
        (".data..ro_after_init", "ro_after_init", 0),  # marked SHF_RO_AFTER_INIT
        ("__jump_table", "ro_after_init", 4),
        (".data", "data", 0),
        (".bss", "data", 1),  # as makes .text, .data and .bss first: index order
        (".data.x", "data", 72),  # aligned to its sh_addralign
        (".init.text", "init_text", 0),
        (".init.rodata", "init_rodata", 0),
        (".init.data", "init_data", 0),
    ]  # __versions, .modinfo and .data..percpu are not in the module's memory
    placed = {s.name: s for s in place(elf)}
    assert placed[".text"].address == DEFAULT_BASE
    assert placed[".exit.text"].address == DEFAULT_BASE + 1
    assert placed[".rodata"].address == DEFAULT_BASE + PAGE_SIZE  # regions page-aligned
    assert placed[".bss"].size == 64
    # a --base address moves its region; a section named keeps its own address
    moved = {s.name: s.address for s in place(elf, {".data.x": 0x1000_0048})}
    assert moved[".data"] == 0x1000_0000 and moved[".bss"] == 0x1000_0001


def test_base_must_name_an_allocated_section(tmp_path: Path) -> None:
    _, ko = _module(tmp_path)
    k = _kallsyms(tmp_path)
    assert main(["apply", str(ko), "-k", str(k), "--base", ".symtab=0x1000"]) == 2
    assert main(["apply", str(ko), "-k", str(k), "--base", ".text"]) == 2
    assert main(["apply", str(ko), "-k", str(k), "--base", ".text=zz"]) == 2


# --- the values and the bytes -------------------------------------------------------------


def test_values_and_bytes_are_ld_s(tmp_path: Path) -> None:
    obj, ko = _module(tmp_path)
    ks = load_sources([str(_kallsyms(tmp_path))])
    bases = {".text": TEXT, ".rodata.str1.1": RODATA, ".data.ptrs": DATA}
    res = apply(ko, ks, bases=bases)
    assert res.refusals == [] and res.skipped == []
    got = [(w.object, w.section, w.offset, w.type, w.symbol, w.value) for w in res.writes]
    u64 = (1 << 64) - 1
    assert got == [
        ("vmlinux", ".text", 1, "R_X86_64_PLT32", ".klp.sym.vmlinux.foo,0",
         (FOO - 4 - (TEXT + 1)) & u64),
        ("vmlinux", ".text", 8, "R_X86_64_PC32", ".klp.sym.vmlinux.foo_var,0",
         (FOO_VAR - 4 - (TEXT + 8)) & u64),
        ("vmlinux", ".data.ptrs", 0, "R_X86_64_64", ".klp.sym.vmlinux.foo,0", FOO),
    ]  # fmt: skip
    # every section's bytes after all relocations (ordinary and klp) are GNU ld's, with the
    # livepatch symbols and bar defined at their kernel addresses
    symbols = {'".klp.sym.vmlinux.foo,0"': FOO, '".klp.sym.vmlinux.foo_var,0"': FOO_VAR,
               "bar": BAR}  # fmt: skip
    linked = link(cross("x86_64"), PATCH, tmp_path / "ld", sections=bases, symbols=symbols)
    elf = open_elf(ko)
    by_name = {s.name: s.index for s in res.sections}
    for name in bases:
        assert bytes(res.contents[by_name[name]]) == linked.section(name), name
    assert elf.section_by_name(".text") is not None and obj.exists()


def test_cli_text_json_and_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, ko = _module(tmp_path)
    k = _kallsyms(tmp_path)
    out = tmp_path / "out"
    args = ["apply", str(ko), "-k", str(k), "--base", f".text={TEXT:x}", "-o", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"{ko}: module lp, x86_64, kernel" in text
    assert "vmlinux  .text       0x1     R_X86_64_PLT32  .klp.sym.vmlinux.foo,0" in text
    assert "3 values written by klp relocations" in text
    written = {p.name for p in out.iterdir()}
    assert {section_file_name(n) for n in (".text", ".data.ptrs", ".rodata.str1.1")} <= written
    assert (out / ".text.bin").read_bytes()[1:5] == ((FOO - 4 - TEXT - 1) & 0xFFFF_FFFF).to_bytes(
        4, "little"
    )
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "klpelf.apply/2"
    (m,) = doc["modules"]
    assert m["name"] == "lp" and m["machine"] == "x86_64"
    assert [w["value"] for w in m["writes"]][2] == f"{FOO:#x}"
    assert m["writes"][0]["address"] == f"{TEXT + 1:#x}"
    assert {s["name"]: s["address"] for s in m["sections"]}[".text"] == f"{TEXT:#x}"


def test_module_object_applied_when_present(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asm = """
    .text
f:  call ".klp.sym.vmlinux.foo,0"
    call ".klp.sym.mymod.g,0"
    ret
"""
    _, ko = _module(tmp_path, asm)
    ks = load_sources([str(_kallsyms(tmp_path))])
    res = apply(ko, ks, bases={".text": TEXT})
    assert [w.object for w in res.writes] == ["vmlinux"] and res.skipped == ["mymod"]
    g = 0xFFFF_FFFF_C000_0040
    ks = load_sources([str(_kallsyms(tmp_path, f"{g:x} t g\t[mymod]\n"))])
    res = apply(ko, ks, bases={".text": TEXT})
    assert [(w.object, w.offset, w.value) for w in res.writes] == [
        ("vmlinux", 1, (FOO - 4 - TEXT - 1) & (1 << 64) - 1),
        ("mymod", 6, (g - 4 - TEXT - 6) & (1 << 64) - 1),
    ]
    # --object names the objects to apply: here none but vmlinux
    res = apply(ko, ks, bases={".text": TEXT}, objects=[])
    assert res.skipped == ["mymod"]


def test_the_kernel_s_refusal_stops_the_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the place of the klp relocation holds nonzero bytes: apply_relocate_add() refuses
    asm = """
    .text
f:  .byte 0xe8, 1, 2, 3, 4
    .reloc f + 1, R_X86_64_PLT32, ".klp.sym.vmlinux.foo,0" - 4
    ret
"""
    _, ko = _module(tmp_path, asm)
    k = _kallsyms(tmp_path)
    assert main(["apply", str(ko), "-k", str(k)]) == 1
    out = capsys.readouterr().out
    assert "error: .klp.rela.vmlinux.text entry 0: " in out
    ks = load_sources([str(k)])
    res = apply(ko, ks)
    (r,) = res.refusals
    assert r.rule == "x86-nonzero-target" and r.entry == 0 and "nonzero" in r.message
    assert res.writes == []


# --- check --kernel: the failures only an apply shows --------------------------------------

OVERFLOW = (
    """
    .text
f:  movl $".klp.sym.vmlinux.foo,0", %eax
    movq $".klp.sym.vmlinux.foo,0", %rax
    ret
"""
    + MODULE_STRUCT
)


def test_check_kernel_shows_the_overflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # R_X86_64_32 of a kernel address: val != (u32)val, the kernel stops the load; 32S fits
    _, ko = _module(tmp_path, OVERFLOW, "overflow")
    k = _kallsyms(tmp_path)
    rel = "--kernel-release"
    assert main(["check", rel, "6.19", "--static", str(ko)]) == 0  # no symbols: no value
    capsys.readouterr()
    assert main(["check", rel, "6.19", "--kernel", str(k), str(ko)]) == 1
    out = capsys.readouterr().out
    sec = open_elf(ko).section_by_name(".klp.rela.vmlinux.text")
    assert sec is not None
    first = f"overflow in relocation type 10 val {FOO:x} sec {sec.index} idx 0"
    second = "`overflow' likely not compiled with -mcmodel=kernel"
    # the kernel's two pr_err() lines: two lines of the text, each with dmesg's prefix
    # in the verdict
    where = f"{ko}: {sec.name}[{sec.index}] entry 0: error: "
    assert f"{where}{first}\n{where}{second}\n" in out
    verdict = f"(errno 8): module: {first}\n{ko}: module: {second}\n"
    assert verdict in out
    res = apply(ko, load_sources([str(k)]), version=KernelRelease(6, 19))
    assert [(r.rule, r.entry, r.message) for r in res.refusals] == [
        ("x86-relocation-overflow", 0, (first, second))
    ]
    assert main(["apply", rel, "6.19", "--kernel", str(k), str(ko)]) == 1
    shown = capsys.readouterr().out
    assert f"error: {sec.name} entry 0: {first}\n  error: {sec.name} entry 0: {second}" in shown
    # the JSON: dmesg and kernel_message hold both lines, each with its prefix
    assert main(["check", "--json", rel, "6.19", "--kernel", str(k), str(ko)]) == 1
    doc = json.loads(capsys.readouterr().out)["modules"][0]
    assert doc["kernel_message"] == f"module: {first}\nmodule: {second}"
    (err,) = [d for d in doc["diagnostics"] if d["rule"] == "x86-relocation-overflow"]
    assert (err["message"], err["dmesg"]) == (f"{first}\n{second}", doc["kernel_message"])
    # before v6.19 the first line names neither section nor entry
    assert main(["check", rel, "6.1", "--kernel", str(k), str(ko)]) == 1
    assert f"(errno 8): module: overflow in relocation type 10 val {FOO:x}\n" in (
        capsys.readouterr().out
    )


def _converted(tmp_path: Path, machine: str, asm: str) -> Path:
    """``asm`` (with the module struct) assembled for ``machine``, then converted."""
    (target,) = [t for t in TARGETS if t.name == machine]
    obj = assemble(target, tmp_path / f"{machine}.o", asm + MODULE_STRUCT)
    ko = tmp_path / f"{machine}.ko"
    assert main(["convert", "-o", str(ko), str(obj)]) == 0
    return ko


def test_check_kernel_judges_no_range_at_assumed_addresses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # s390x places modules next to the kernel's (randomised) text: at x86_64's module
    # area a PC32DBL to the kernel would seem out of range, so check does not judge it
    ko = _converted(tmp_path, "s390x", """
    .text
f:  brasl %r14, ".klp.sym.vmlinux.foo,0"@PLT
    larl %r1, ".klp.sym.vmlinux.foo,0"
    br %r14
""")  # fmt: skip
    k = tmp_path / "ks"
    k.write_text("000003ff81001000 T foo\n")
    capsys.readouterr()
    assert main(["check", "--kernel-release", "6.1", "--kernel", str(k), str(ko)]) == 0
    assert "relocation error" not in capsys.readouterr().out
    # apply at addresses given: values from the s390x twin
    res = apply(ko, load_sources([str(k)]), bases={".text": 0x3FF_8000_1000})
    assert [w.type for w in res.writes] == ["R_390_PLT32DBL", "R_390_PC32DBL"]
    assert res.writes[1].value == (0x3FF_8100_1000 - (0x3FF_8000_1000 + 8) + 2) & (1 << 64) - 1


def test_a_late_arm64_plt_slot_is_predicted_to_oops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # arm64 v6.17+: module_emit_plt_entry() stores a slot into .plt with a plain store;
    # for a module object's klp section (applied at enable or when the module loads) the
    # .plt is read-only by then and the kernel oopses.  vmlinux's, applied at load: safe
    ko = _converted(tmp_path, "aarch64", """
    .text
f:  bl ".klp.sym.vmlinux.foo,0"
    bl ".klp.sym.mymod.g,0"
    bl ".klp.sym.mymod.h,0"
    ret
    .section .plt,"ax"
    .space 12
    .section .init.plt,"ax"
    .space 12
""")  # fmt: skip
    text = 0xFFFF_8000_7A00_0000
    k = tmp_path / "ks"
    # foo and g beyond +-128 MiB of the module's text, h within
    k.write_text(f"ffff800090010000 T foo\nffff8000a0000000 t g\t[mymod]\n"
                 f"{text + 0x10000:x} t h\t[mymod]\n")  # fmt: skip
    ks = load_sources([str(k)])
    res = apply(ko, ks, bases={".text": text}, version=KernelRelease(7, 2))
    assert res.refusals == []
    (h,) = res.hazards
    where = ("mymod", ".klp.rela.mymod.text", 0, "arm64-late-plt-oops")
    assert (h.object, h.rela_section, h.entry, h.rule) == where
    assert "module_emit_plt_entry() stores the slot into the .plt of aarch64" in h.message
    assert "the kernel oopses" in h.message and "klpelf's prediction" in h.message
    # both far calls branch to a slot; the near one directly
    plt = next(s for s in res.sections if s.name == ".plt")
    calls = {w.symbol: (w.address + (w.value or 0)) & (1 << 64) - 1 for w in res.writes}
    assert calls[".klp.sym.vmlinux.foo,0"] - plt.address in (0, 12)
    assert calls[".klp.sym.mymod.g,0"] - plt.address in (0, 12)
    assert calls[".klp.sym.mymod.h,0"] == text + 0x10000
    # at klpelf's placement (no --base) it may happen; the text report says it
    assert main(["apply", "--kernel-release", "7.2", str(ko), "-k", str(k)]) == 0
    out = capsys.readouterr().out
    assert "error: .klp.rela.mymod.text entry 0: R_AARCH64_CALL26 (283) for mymod needs" in out
    assert "(at klpelf's assumed addresses): the kernel may oops" in out
    # no module object far away: nothing predicted
    k.write_text(f"ffff800090010000 T foo\n{text + 0x20000:x} t g\t[mymod]\n"
                 f"{text + 0x10000:x} t h\t[mymod]\n")  # fmt: skip
    res = apply(ko, load_sources([str(k)]), bases={".text": text}, version=KernelRelease(7, 2))
    assert res.hazards == [] and res.refusals == []


# --- --flatten: a module objdump reads ------------------------------------------------------


def _objdump(tool: str, path: Path) -> str:
    if shutil.which(tool) is None:
        reason = f"{tool} not found (binutils of the architecture)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    proc = subprocess.run([tool, "-dr", str(path)], capture_output=True, text=True, check=False,
                          env={**os.environ, "LC_ALL": "C"})  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout


def test_flatten_objdump_names_the_kernel_symbols(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, ko = _module(tmp_path)
    k = _kallsyms(tmp_path)
    flat = tmp_path / "flat.ko"
    assert main(["apply", str(ko), "-k", str(k), "--flatten", "-o", str(flat)]) == 0
    assert "2 livepatch symbols absolute, 0 left undefined" in capsys.readouterr().out
    out = _objdump("objdump", flat)
    assert "R_X86_64_PLT32\tfoo-0x4" in out and "R_X86_64_PC32\tfoo_var-0x4" in out
    assert "R_X86_64_PLT32\tbar-0x4" in out  # the ordinary relocation stays
    elf = open_elf(flat)
    tab = elf.symtab
    assert tab is not None
    assert not tab.indices_where_shndx(SHN.LIVEPATCH)
    names = tab.names()
    values = dict(zip(names, tab.column("st_value"), strict=True))
    assert values["foo"] == FOO and values["foo_var"] == FOO_VAR
    assert not [s for s in elf.sections if s.sh_flags & SHF.RELA_LIVEPATCH]
    targets = [s.sh_info for s in elf.sections if s.sh_type == SHT.RELA]
    assert len(targets) == len(set(targets))  # one relocation section per target
    # the input is never the output
    assert main(["apply", str(ko), "-k", str(k), "--flatten", "-o", str(ko)]) == 1
    assert main(["apply", str(ko), "-k", str(k), "--flatten"]) == 2


@pytest.mark.parametrize("name", ["s390x"])
def test_flatten_cross_objdump(name: str, tmp_path: Path) -> None:
    (target,) = [t for t in TARGETS if t.name == name]
    obj = assemble(target, tmp_path / "x.o", """
    .text
f:  brasl %r14, ".klp.sym.vmlinux.foo,0"@PLT
    br %r14
    .section .data.ptrs,"aw"
    .quad ".klp.sym.vmlinux.foo,0"
""")  # fmt: skip
    ko, flat = tmp_path / "x.ko", tmp_path / "flat.ko"
    assert main(["convert", "-o", str(ko), str(obj)]) == 0
    k = _kallsyms(tmp_path)
    assert main(["apply", str(ko), "-k", str(k), "--flatten", "-o", str(flat)]) == 0
    out = _objdump(f"{cross(name).prefix}objdump", flat)
    assert "R_390_PLT32DBL\tfoo+0x2" in out
