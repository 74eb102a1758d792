#!/usr/bin/env python3
"""Benchmark ``klpelf check`` with the enable-time sources against ``check --kernel`` alone.

Usage::

    .venv/bin/python bench/bench_enable.py [--lines 200000] [--repeat N]

Inputs, synthesized here (deterministic, under ~/.cache/klpelf/bench, nothing
committed): a /proc/kallsyms of ``--lines`` lines (a third of them text), the
available_filter_functions of its text symbols, a Module.symvers exporting a tenth of
them, and a livepatch module (assembled with ``as``) whose ``struct klp_patch``
replaces 100 of the functions (klp_func arrays as a hand-written module lays them out).

Measured, interleaved over ``--repeat`` rounds after a warm-up round (medians), whole
process (the ``klpelf`` console script, output to /dev/null):

* baseline: ``klpelf check --kernel KALLSYMS LP.ko``;
* full: ``klpelf check --kernel KALLSYMS --kernel Module.symvers --kernel
  available_filter_functions LP.ko``: the decode, the lookups of the 100 replaced
  functions and their ftrace locations.

The ratio full / baseline is printed; the target is at most 1.5.
"""

from __future__ import annotations

import argparse
import compileall
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path.home() / ".cache/klpelf/bench"
KLPELF = str(Path(sys.executable).parent / "klpelf")
FUNCS = 100


def synthesize(lines: int) -> tuple[Path, Path, Path, Path]:
    """kallsyms, available_filter_functions, Module.symvers and the livepatch module."""
    OUT.mkdir(parents=True, exist_ok=True)
    tag = f"enable-{lines}"
    kallsyms, aff = OUT / f"{tag}.kallsyms", OUT / f"{tag}.aff"
    symvers, lp = OUT / f"{tag}.symvers", OUT / f"{tag}.ko"
    if all(p.exists() for p in (kallsyms, aff, symvers, lp)) and lp.stat().st_mtime > Path(
            __file__).stat().st_mtime:  # fmt: skip
        return kallsyms, aff, symvers, lp
    rng = random.Random(12)
    text: list[str] = []
    with kallsyms.open("w") as k:
        for i in range(lines):
            kind = "tT"[i % 2] if i % 3 == 0 else "dDbBr"[i % 5]
            name = f"sym_{i:06d}_{rng.randrange(1 << 20):05x}"
            k.write(f"{0xFFFFFFFF81000000 + 16 * i:016x} {kind} {name}\n")
            if kind in "tT":
                text.append(name)
    aff.write_text("".join(n + "\n" for n in text))
    # module_layout: what every modversions kernel's Module.symvers has (the CRC of
    # struct module's layout, check_modstruct_version())
    exported = ["module_layout", *text[::10]]
    symvers.write_text("".join(f"0x{rng.randrange(1 << 32):08x}\t{n}\tvmlinux\tEXPORT_SYMBOL\t\n"
                               for n in exported))  # fmt: skip
    chosen = rng.sample(text, FUNCS)
    strings = [f's{i}: .string "{n}"' for i, n in enumerate(chosen)]
    news = [f"    .type new{i},@function\nnew{i}: ret\n    .size new{i}, 1" for i in range(FUNCS)]
    funcs = [f"    .quad s{i}, new{i}, 0, 0, 0, 0, 0, 0" for i in range(FUNCS)]
    source = "\n".join([
        "    .text", *news,
        '    .section .rodata.str1.1,"aMS",@progbits,1', *strings,
        "    .data", "    .type funcs,@object", "funcs:", *funcs, "    .zero 64",
        f"    .size funcs, {64 * (FUNCS + 1)}",
        "    .type objs,@object", "objs:", "    .quad 0, funcs, 0, 0, 0, 0, 0, 0, 0, 0",
        "    .zero 80", "    .size objs, 160",
        "    .type patch,@object", "patch:", "    .quad __this_module, objs, 0",
        "    .zero 40", "    .size patch, 64",
        # struct module, as modpost's .mod.c defines it (its size does not matter here)
        '    .section .gnu.linkonce.this_module,"aw"', "    .globl __this_module",
        "    .type __this_module,@object", "__this_module: .zero 1024",
        "    .size __this_module, 1024",
        '    .section .modinfo,"a"',
        '    .ascii "livepatch=Y\\0name=lp100\\0vermagic=6.1.0-56-amd64 SMP preempt '
        'mod_unload modversions\\0"', "",
    ])  # fmt: skip
    s = lp.with_suffix(".s")
    s.write_text(source)
    subprocess.run(["as", "--64", "-o", str(lp), str(s)], check=True)
    return kallsyms, aff, symvers, lp


def run(cmd: list[str]) -> float:
    t = time.perf_counter()
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    took = time.perf_counter() - t
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.decode()[-500:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    kallsyms, aff, symvers, lp = synthesize(args.lines)
    # klpelf's bytecode compiled first, as pip install does (PYTHONDONTWRITEBYTECODE
    # would make every run compile it again)
    import klpelf

    compileall.compile_dir(str(Path(klpelf.__file__).parent), quiet=1)
    base = [KLPELF, "check", "--kernel", f"kallsyms:{kallsyms}", str(lp)]
    full = [KLPELF, "check", "--kernel", f"kallsyms:{kallsyms}", "--kernel", str(symvers),
            "--kernel", f"ftrace:{aff}", str(lp)]  # fmt: skip
    got = subprocess.run([*full, "--json"], capture_output=True, text=True, check=False)
    if '"verdict": "accept"' not in got.stdout:
        sys.exit(f"the full check does not accept the module:\n{got.stdout[-2000:]}")
    times: dict[str, list[float]] = {"baseline": [], "full": []}
    run(base)  # warm-up
    run(full)
    for r in range(args.repeat):
        order = [("baseline", base), ("full", full)]
        for name, cmd in order if r % 2 == 0 else reversed(order):
            times[name].append(run(cmd))
    b, f = statistics.median(times["baseline"]), statistics.median(times["full"])
    size = kallsyms.stat().st_size / 1e6
    print(f"kallsyms {args.lines} lines ({size:.1f} MB), {FUNCS} replaced functions, "
          f"{args.repeat} rounds, medians (whole process):")  # fmt: skip
    print(f"  check --kernel kallsyms                          {b * 1000:7.1f} ms")
    print(f"  check --kernel kallsyms, Module.symvers, ftrace  {f * 1000:7.1f} ms")
    print(f"  ratio {f / b:.2f} (target <= 1.5)")
    return 0 if f / b <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
