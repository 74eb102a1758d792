#!/usr/bin/env python3
"""Benchmark ``klpelf diff`` against gcc compiling the translation unit it diffs.

Usage::

    .venv/bin/python bench/bench_diff.py [--repeat N] [--json FILE]

For each pair of tests/unit/diff_cases (the x86_64 ones), side by side in one run,
interleaved, after a warm-up round: gcc compiling the patched unit with the kernel's
code-generation flags (what a livepatch build pays for the unit), klpelf's diff of the
two objects in-process (every step: read, correlate, compare, select, emit, write;
imports excluded), and a whole ``klpelf diff`` process.  Medians of ``--repeat``
rounds.  The target (issue 15): klpelf diff within 0.1x of gcc's time for the unit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from klpelf.operations.diff import diff

CASES = Path(__file__).resolve().parent.parent / "tests" / "unit" / "diff_cases"
PAIRS = ("changed", "clones", "lines", "locals", "newfunc", "part", "special")
FLAGS = ["-O2", "-ffunction-sections", "-fdata-sections", "-fno-pic", "-mcmodel=kernel",
         "-mfentry", "-pg", "-mrecord-mcount", "-fno-asynchronous-unwind-tables",
         "-fno-stack-protector", "-mno-red-zone", "-fno-strict-aliasing"]  # fmt: skip


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _setup(root: Path, name: str) -> tuple[Path, Path, list[str]]:
    objs = []
    gcc: list[str] = []
    for side in ("orig", "patched"):
        d = root / name / side
        d.mkdir(parents=True)
        shutil.copy(CASES / "kernel_like.h", d)
        shutil.copy(CASES / f"{name}.{side}.c", d / f"{name}.c")
        obj = d / f"{name}.o"
        gcc = ["gcc", *FLAGS, "-c", str(d / f"{name}.c"), "-o", str(obj)]
        subprocess.run(gcc, check=True, capture_output=True)
        objs.append(obj)
    return objs[0], objs[1], gcc


def _measurements(o: Path, p: Path, gcc: list[str], out: Path, *, cmd: list[str],
                  env: dict[str, str]) -> dict[str, Callable[[], object]]:  # fmt: skip
    def run_gcc() -> object:
        return subprocess.run(gcc, check=True, capture_output=True)

    def in_process() -> object:
        return diff(o, p, out)

    def process() -> object:
        return subprocess.run(cmd, capture_output=True, env=env, check=False)

    return {"gcc": run_gcc, "in_process": in_process, "process": process}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if shutil.which("gcc") is None:
        print("bench_diff: needs gcc", file=sys.stderr)
        return 1
    root = Path(tempfile.mkdtemp(prefix="klpelf-bench-diff-"))
    try:
        units = {n: _setup(root, n) for n in PAIRS}
        out = root / "out.o"
        klpelf = [sys.executable, "-m", "klpelf", "diff"]
        # the process as an installed klpelf runs: its bytecode cached (a session may
        # set PYTHONDONTWRITEBYTECODE, and then every run compiles every module)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
        runs = {
            n: _measurements(o, p, gcc, out, cmd=[*klpelf, str(o), str(p), "-o", str(out)],
                             env=env)
            for n, (o, p, gcc) in units.items()
        }  # fmt: skip
        samples = {n: {k: list[float]() for k in r} for n, r in runs.items()}
        for rnd in range(args.repeat + 1):
            for n, r in runs.items():
                kinds = list(r)
                kinds = kinds[rnd % 3 :] + kinds[: rnd % 3]
                for k in kinds:
                    t = _timed(r[k])
                    if rnd:
                        samples[n][k].append(t)
        cc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True)
        print(f"klpelf diff vs gcc, medians of {args.repeat} rounds (python "
              f"{sys.version.split()[0]}, {cc.stdout.splitlines()[0]})")  # fmt: skip
        print(f"{'pair':10} {'gcc':>9} {'in-process':>11} {'ratio':>6} {'process':>9} {'ratio':>6}")
        report = {}
        for n, s in samples.items():
            med = {k: statistics.median(v) for k, v in s.items()}
            report[n] = {"median_s": med, "samples_s": s}
            print(f"{n:10} {med['gcc'] * 1e3:7.1f}ms {med['in_process'] * 1e3:9.1f}ms "
                  f"{med['in_process'] / med['gcc']:6.3f} {med['process'] * 1e3:7.1f}ms "
                  f"{med['process'] / med['gcc']:6.2f}")  # fmt: skip
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
