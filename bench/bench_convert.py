#!/usr/bin/env python3
"""Benchmark ``klpelf convert`` against ``objcopy`` on amdgpu.ko (about 320,000 relocations).

Usage::

    .venv/bin/python bench/bench_convert.py [--repeat N] [--symbols N] [--corpus DIR]

The input is amdgpu.ko from the corpus (tests/corpus/fetch.py) with its first N
undefined symbols renamed to ``.klp.sym.vmlinux.<name>,0``, as a livepatch build
would annotate them, so that convert has real work: rename them to livepatch
symbols and move every relocation against them into ``.klp.rela.`` sections.  Both
tools read the same file and write a new one; they run interleaved, ``--repeat``
rounds after a warm-up, and the medians are compared.  klpelf runs in-process (its
imports excluded) and as a whole ``klpelf convert`` process.  The target is
klpelf in-process <= 0.5x objcopy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from klpelf.elf.constants import SHN
from klpelf.elf.reader import open_elf
from klpelf.elf.writer import save_elf
from klpelf.klp.convert import convert_annotations


def _annotate(src: Path, dst: Path, count: int) -> int:
    elf = open_elf(src)
    tab = elf.symtab
    assert tab is not None
    undef = [i for i in tab.indices_where_shndx(SHN.UNDEF) if i and tab.name(i)][:count]
    for i in undef:
        tab.set_symbol(i, name=f".klp.sym.vmlinux.{tab.name(i)},0")
    save_elf(elf, dst, overwrite=True)
    return len(undef)


def _convert(src: Path, out: Path) -> int:
    elf = open_elf(src)
    report = convert_annotations(elf)
    save_elf(elf, out, overwrite=True)
    return sum(report.sections.values())


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--symbols", type=int, default=200, help="undefined symbols to annotate")
    ap.add_argument("--corpus", type=Path, default=Path(
        os.environ.get("KLPELF_CORPUS", Path.home() / ".cache/klpelf/corpus")))  # fmt: skip
    args = ap.parse_args()
    pattern = "amd64/lib/modules/*/kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko"
    amdgpu = next(args.corpus.glob(pattern), None)
    if amdgpu is None:
        print(f"bench_convert: no amdgpu.ko under {args.corpus} (run tests/corpus/fetch.py)",
              file=sys.stderr)  # fmt: skip
        return 1
    klpelf = Path(sys.executable).with_name("klpelf")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        src = t / "amdgpu-annotated.ko"
        n = _annotate(amdgpu, src, args.symbols)
        moved = _convert(src, t / "warm.ko")
        runs: dict[str, list[float]] = {"klpelf": [], "klpelf-process": [], "objcopy": []}
        cmds: dict[str, Callable[[], object]] = {
            "klpelf": lambda: _convert(src, t / "a.ko"),
            "klpelf-process": lambda: subprocess.run(
                [str(klpelf), "convert", str(src), "-o", str(t / "b.ko")],
                check=True, stdout=subprocess.DEVNULL),
            "objcopy": lambda: subprocess.run(["objcopy", str(src), str(t / "c.ko")], check=True),
        }  # fmt: skip
        names = list(cmds)
        for r in range(args.repeat + 1):
            for name in names[r % 3 :] + names[: r % 3]:
                for old in ("a.ko", "b.ko", "c.ko"):  # both tools write a new file
                    (t / old).unlink(missing_ok=True)
                dt = _timed(cmds[name])
                if r:
                    runs[name].append(dt)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"amdgpu.ko: {n} symbols annotated, {moved} relocations moved by convert")
    print(f"{'case':<34} {'time':>9} {'objcopy':>9} {'ratio':>7}  target")
    for key, label, target in (
        ("klpelf", "klpelf convert, in-process", "<= 0.5x"),
        ("klpelf-process", "klpelf convert, whole process", "-"),
    ):
        ratio = med[key] / med["objcopy"]
        verdict = "" if target == "-" else ("ok" if ratio <= 0.5 else "MISSED")
        print(f"{label:<34} {med[key] * 1e3:7.1f}ms {med['objcopy'] * 1e3:7.1f}ms "
              f"{ratio:6.2f}x  {target} {verdict}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
