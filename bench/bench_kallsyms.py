#!/usr/bin/env python3
"""Benchmark klpelf's kallsyms reader and ``klpelf resolve`` against awk, in one run.

Usage::

    .venv/bin/python bench/bench_kallsyms.py [--arch amd64] [--lines 200000] [--repeat N]

The input is synthesized from real data by bench/gen_kallsyms.py (run first if its
output is missing): the System.map of a Debian 6.1 kernel plus the core kallsyms of
its modules, 200,000 lines, and a livepatch module with 100 livepatch symbols named
after random lines of it (with the sympos that selects them).

Measured, interleaved over ``--repeat`` rounds after a warm-up round (medians):

(a) parse and index: ``load_sources([kallsyms])`` in-process (numpy and klpelf
    already imported, the file in the page cache), then the 100 lookups.
(b) whole process: ``klpelf resolve LIVEPATCH --kernel KALLSYMS`` (console script,
    output to /dev/null) against an awk program that looks the same names up in the
    same file (``$3 in names``).  Also, for what a process costs before it reads
    kallsyms: ``python -c 'import numpy'`` and ``klpelf resolve`` with a one-line
    kallsyms; "marginal" is the median over rounds of (b) less the latter.
(c) memory: tracemalloc's peak during ``load_sources`` (numpy reports its buffers
    to tracemalloc) and the growth of peak RSS (VmHWM, which includes the file's
    pages, memory-mapped), each over the file's size.  Measured in a fresh child.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy  # noqa: F401  (imported before anything is timed)

from klpelf.symbols.sources import load_sources

HERE = Path(__file__).resolve().parent
OUT = Path.home() / ".cache/klpelf/bench"
VENV_BIN = Path(sys.executable).parent
KLPELF = str(VENV_BIN / "klpelf")

AWK = "BEGIN { while ((getline n < NAMES) > 0) want[n] = 1 } ($3 in want) { print }"

# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's size (Linux keeps
# signal->maxrss across fork and exec), VmHWM belongs to the process's own memory.
MEMORY_CHILD = """
import re, sys, tracemalloc
from klpelf.symbols.sources import load_sources
def hwm():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1))
path = sys.argv[1]
before = hwm()
ks = load_sources([path])
after = hwm()
del ks
tracemalloc.start()
ks = load_sources([path])
print((after - before) * 1024, tracemalloc.get_traced_memory()[1])
"""


def _time(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="amd64")
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    tag = f"{args.arch}-{args.lines}"
    kallsyms, lp, names = OUT / f"kallsyms-{tag}", OUT / f"livepatch-{tag}.ko", OUT / f"names-{tag}"
    if not (kallsyms.exists() and lp.exists() and names.exists()):
        gen = [sys.executable, str(HERE / "gen_kallsyms.py"), "--arch", args.arch,
               "--lines", str(args.lines)]  # fmt: skip
        if subprocess.run(gen, check=False).returncode:
            return 2
    size = kallsyms.stat().st_size
    wanted = names.read_text().split()
    with tempfile.TemporaryDirectory() as tmp:
        tiny = Path(tmp) / "kallsyms-1"
        tiny.write_text(kallsyms.open().readline())
        cases = {
            "resolve": [KLPELF, "resolve", str(lp), "--kernel", str(kallsyms)],
            "awk": ["awk", "-v", f"NAMES={names}", AWK, str(kallsyms)],
            "numpy": [str(VENV_BIN / "python"), "-c", "import numpy"],
            "resolve-1": [KLPELF, "resolve", str(lp), "--kernel", str(tiny)],
        }
        # the resolve must succeed: every symbol was made to resolve
        check = subprocess.run(cases["resolve"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            print(check.stdout[-2000:], check.stderr, file=sys.stderr)
            return 1
        times: dict[str, list[float]] = {k: [] for k in [*cases, "load", "lookup", "marginal"]}
        for round_ in range(args.repeat + 1):
            t = time.perf_counter()
            ks = load_sources([str(kallsyms)])
            t_load = time.perf_counter() - t
            t = time.perf_counter()
            text = ks.texts[0]
            found = text.index.rows_many([n.encode() for n in wanted])
            t_lookup = time.perf_counter() - t
            assert all(found)
            del ks, text
            run = {k: _time(c) for k, c in cases.items()}
            if round_:  # the first round warms caches up
                times["load"].append(t_load)
                times["lookup"].append(t_lookup)
                for k, v in run.items():
                    times[k].append(v)
                times["marginal"].append(run["resolve"] - run["resolve-1"])
        med = {k: statistics.median(v) for k, v in times.items()}
        mem = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(kallsyms)],
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    rss, peak = int(mem[0]), int(mem[1])
    mib = f"{size / 2**20:.1f} MiB"
    lines = sum(1 for _ in kallsyms.open("rb"))
    print(f"input: {kallsyms} ({lines} lines, {size} bytes); {lp.name}: {len(wanted)} names")
    print(f"median of {args.repeat} rounds; ms unless noted\n")
    rows = [
        ("(a) load_sources: parse + index", f"{med['load'] * 1e3:.1f}", "-", "-", "<= 200 ms",
         med["load"] <= 0.2),
        ("(a) 100 lookups (one rows_many)", f"{med['lookup'] * 1e3:.2f}", "-", "-", "-", None),
        ("(b) whole process: resolve vs awk", f"{med['resolve'] * 1e3:.1f}",
         f"{med['awk'] * 1e3:.1f}", f"{med['resolve'] / med['awk']:.1f}x", "<= 2x",
         med["resolve"] <= 2 * med["awk"]),
        ("(b) marginal: resolve - resolve(1-line kallsyms)", f"{med['marginal'] * 1e3:.1f}",
         f"{med['awk'] * 1e3:.1f}", f"{med['marginal'] / med['awk']:.1f}x", "(<= 2x)",
         med["marginal"] <= 2 * med["awk"]),
        ("(b) fixed cost: resolve, 1-line kallsyms", f"{med['resolve-1'] * 1e3:.1f}", "-", "-",
         "-", None),
        ("(b) fixed cost: python -c 'import numpy'", f"{med['numpy'] * 1e3:.1f}", "-", "-", "-",
         None),
        ("(c) memory: tracemalloc peak / file size", f"{peak / 2**20:.1f} MiB", mib,
         f"{peak / size:.2f}x", "<= 4x", peak <= 4 * size),
        ("(c) memory: peak RSS growth / file size", f"{rss / 2**20:.1f} MiB", mib,
         f"{rss / size:.2f}x", "<= 4x", rss <= 4 * size),
    ]  # fmt: skip
    head = ("measure", "klpelf", "awk / file", "ratio", "target", "met")
    table = [head] + [(*r[:5], "-" if r[5] is None else ("yes" if r[5] else "NO")) for r in rows]
    w = [max(len(str(r[i])) for r in table) for i in range(6)]
    for r in table:
        print("  ".join(f"{v!s:<{w[i]}}" for i, v in enumerate(r)).rstrip())
    load = os.getloadavg()[0]
    if load > 1.5:
        print(f"\nwarning: load average {load:.1f}: other processes may have skewed the times")
    return 0


if __name__ == "__main__":
    sys.exit(main())
