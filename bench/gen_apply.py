#!/usr/bin/env python3
"""Generate the input of bench_apply.py: a livepatch module with 300,000 relocations.

The assembler writes an object whose code calls and loads kernel symbols the way a
livepatch module does: per function, calls (PLT32 / CALL26 / PLT32DBL / REL24) and
PC-relative loads of vmlinux symbols named as livepatch symbols
(``.klp.sym.vmlinux.<name>,0``), calls of exported symbols (ordinary relocations,
resolved by name), absolute and PC-relative references to the module's own strings
and functions, and a table of pointers in ``.data.ptrs``.  ``klpelf convert`` makes
the livepatch module of it (the relocations against livepatch symbols move to
``.klp.rela.vmlinux.*``).  Also written: a kallsyms with every kernel symbol the
object names, and ``<tag>.json`` with the section addresses and symbol values GNU
ld is given (``--section-start``, ``--defsym``), the same ones klpelf is given
(``--base``, the kallsyms).

    .venv/bin/python bench/gen_apply.py [--arch x86_64] [--relocations 300000]

Prints the paths it wrote (under ~/.cache/klpelf/bench; nothing is committed).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

OUT = Path.home() / ".cache/klpelf/bench"

#: kernel symbols: functions and variables named as livepatch symbols, exported
#: functions called by name
VMLINUX_FUNCS, VMLINUX_VARS, EXPORTED = 1000, 1000, 1000
FUNC_BASE, VAR_BASE = 0xFFFF_FFFF_8100_0000, 0xFFFF_FFFF_8200_0000
EXPORT_BASE = 0xFFFF_FFFF_8180_0000
STRINGS = 100

#: where the module's sections are placed (ld's --section-start, klpelf's --base);
#: within 2 GiB of the kernel symbols, as the module area is (x86_64 -mcmodel=kernel)
SECTIONS = {
    ".text": 0xFFFF_FFFF_A000_0000,
    ".rodata.str1.1": 0xFFFF_FFFF_A100_0000,
    ".data.ptrs": 0xFFFF_FFFF_A110_0000,
}


def klp(name: str) -> str:
    return f'".klp.sym.vmlinux.{name},0"'


def _x86_64(i: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """One function of 12 relocations in .text and its 3 in .data.ptrs."""
    fn, var = f"vfn{rng.randrange(VMLINUX_FUNCS)}", f"vvar{rng.randrange(VMLINUX_VARS)}"
    fn2, var2 = f"vfn{rng.randrange(VMLINUX_FUNCS)}", f"vvar{rng.randrange(VMLINUX_VARS)}"
    ext, ext2 = f"efn{rng.randrange(EXPORTED)}", f"efn{rng.randrange(EXPORTED)}"
    msg, callee = f"msg{rng.randrange(STRINGS)}", f"f{rng.randrange(max(i, 1))}"
    text = [
        f"    .globl f{i}\n    .type f{i},@function\nf{i}:",
        f"    call {klp(fn)}",  # PLT32 (klp)
        f"    movq {klp(var)}(%rip), %rax",  # PC32 (klp)
        f"    movq ${klp(var2)}, %rbx",  # 32S (klp)
        f"    leaq {klp(fn2)}(%rip), %rsi",  # PC32 (klp)
        f"    call {ext}",  # PLT32, exported: ordinary
        f"    call {ext2}",
        f"    movq ${ext}, %rdx",  # 32S, exported
        f"    leaq {msg}(%rip), %rdi",  # PC32 to a local string
        f"    movq ${msg}, %rcx",  # 32S to a local string
        f"    call {callee}",  # PLT32 to a global function of the module
        f"    movabsq ${klp(var)}, %r8",  # 64 (klp)
        f"    movabsq ${callee}, %r9",  # 64
        "    ret",
    ]
    data = [f"    .quad {klp(fn)}", f"    .quad f{i}", f"    .long {klp(var)} - ."]
    return text, data


Function = Callable[[int, random.Random], tuple[list[str], list[str]]]
ARCHES: dict[str, tuple[list[str], list[str], Function, int]] = {
    # (as and its options, ld and its emulation, one function, relocations per function)
    "x86_64": (["as", "--64"], ["ld", "-m", "elf_x86_64"], _x86_64, 15),
}


def generate(arch: str, relocations: int, out: Path = OUT) -> dict[str, object]:
    """Write the inputs under ``out``; the spec (what ``<tag>.json`` holds)."""
    tool, ld, function, per = ARCHES[arch]
    rng = random.Random(1)
    text, data = ["    .text"], ['    .section .data.ptrs,"aw"', "    .p2align 3"]
    for i in range(-(-relocations // per)):
        t, d = function(i, rng)
        text += t
        data += d
    strings = ['    .section .rodata.str1.1,"aMS",@progbits,1']
    strings += [f'msg{i}: .string "message {i}"' for i in range(STRINGS)]
    out.mkdir(parents=True, exist_ok=True)
    tag = f"apply-{arch}-{relocations}"
    asm, obj, ko = out / f"{tag}.s", out / f"{tag}.o", out / f"{tag}.ko"
    asm.write_text("\n".join([*text, *data, *strings, ""]))
    subprocess.run([*tool, "-o", str(obj), str(asm)], check=True)
    subprocess.run([sys.executable, "-m", "klpelf", "convert", "-o", str(ko), str(obj)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    symbols: dict[str, int] = {}
    lines = []
    for n, base, letter, stride in (
        (VMLINUX_FUNCS, FUNC_BASE, "T", 0x40), (VMLINUX_VARS, VAR_BASE, "D", 0x10),
    ):  # fmt: skip
        for k in range(n):
            name = f"{'vfn' if letter == 'T' else 'vvar'}{k}"
            symbols[klp(name)] = base + k * stride
            lines.append(f"{base + k * stride:016x} {letter} {name}\n")
    for k in range(EXPORTED):
        symbols[f"efn{k}"] = EXPORT_BASE + k * 0x40
        lines.append(f"{EXPORT_BASE + k * 0x40:016x} T efn{k}\n")
    kallsyms = out / f"{tag}.kallsyms"
    kallsyms.write_text("".join(lines))
    spec: dict[str, object] = {
        "arch": arch, "object": str(obj), "module": str(ko), "kallsyms": str(kallsyms),
        "sections": SECTIONS, "symbols": symbols, "ld": ld, "relocations": relocations,
    }  # fmt: skip
    (out / f"{tag}.json").write_text(json.dumps(spec, indent=1))
    return spec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="x86_64", choices=sorted(ARCHES))
    p.add_argument("--relocations", type=int, default=300_000)
    args = p.parse_args()
    spec = generate(args.arch, args.relocations)
    for key in ("object", "module", "kallsyms"):
        print(spec[key])
    return 0


if __name__ == "__main__":
    sys.exit(main())
