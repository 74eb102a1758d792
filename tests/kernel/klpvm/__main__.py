"""Run the real-kernel cases outside pytest and print what each kernel did.

    PYTHONPATH=tests .venv/bin/python -m kernel.klpvm [--release R]... [--workdir DIR]
                                                       [--update-expected]

``--release`` takes a series of the kernel matrix (``5.10``, ``6.1``, ``6.12``, ``7.2``:
tests/kernel/klpvm/debian.py) or a release; default: the whole matrix.  Kernels from
Debian's archive are downloaded and given a build chroot first (cached).  The work
directory keeps the built modules (``ko/``), each boot's serial console, results
(``bootN/out/``: kallsyms, per-case steps, outputs and dmesg) and the qemu command.
"""

from __future__ import annotations

import argparse
import errno
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kernel.klpvm.cases import (
    CASES,
    expected_for,
    messages_match,
    write_expected,
    write_expected_matrix,
)
from kernel.klpvm.debian import PrepareError, default_kernels, kernel_spec
from kernel.klpvm.suite import SuiteResult, run_suite


def _table(res: SuiteResult) -> list[str]:
    exp = expected_for(res.spec.series)
    out = []
    for case in CASES:
        r = res.cases.get(case.name)
        if r is None or r.errno is None:
            out.append(f"  {case.name:24} did not run")
            continue
        name = errno.errorcode.get(r.errno, "") if r.errno else "loaded"
        e = exp.get(case.name)
        agree = (
            "no expectation"
            if e is None
            else "as expected"
            if e.errno == r.errno and messages_match(e.messages, r.messages)
            else "DIFFERS"
        )
        out.append(f"  {case.name:24} {r.errno:3} {name:7} {agree}")
        out += [f"      {m}" for m in r.messages]
        bad = r.setup_failures()
        if bad:
            out.append(f"      setup failed: {bad}")
    return out


def prepare(releases: list[str]) -> int:
    """Download and give a chroot to every kernel, in parallel (network and dpkg bound)."""
    t0 = time.monotonic()

    def one(rel: str) -> str:
        t = time.monotonic()
        try:
            spec = kernel_spec(rel)
        except PrepareError as e:
            return f"ERROR: {rel}: {e}"
        return f"{rel}: {spec.release} ready in {time.monotonic() - t:.1f} s"

    with ThreadPoolExecutor(max_workers=len(releases) or 1) as pool:
        lines = list(pool.map(one, releases))
    for line in lines:
        print(line, file=sys.stderr if line.startswith("ERROR") else sys.stdout)
    print(f"prepared in {time.monotonic() - t0:.1f} s")
    return 1 if any(line.startswith("ERROR") for line in lines) else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kernel.klpvm", description=__doc__)
    p.add_argument("--release", action="append", help="series or release (repeatable)")
    p.add_argument(
        "--prepare", action="store_true", help="only download and prepare the kernels (cache)"
    )
    p.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    p.add_argument("--update-expected", action="store_true", help="rewrite expected/<series>.json")
    args = p.parse_args(argv)
    releases = args.release or default_kernels()
    if args.prepare:
        return prepare(releases)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="klpvm-"))
    status = 0
    results: dict[str, SuiteResult] = {}
    for rel in releases:
        t0 = time.monotonic()
        try:
            spec = kernel_spec(rel)
        except PrepareError as e:
            print(f"ERROR: {rel}: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"{rel}: {spec.release} ready in {time.monotonic() - t0:.1f} s")
        res = run_suite(spec, workdir / rel)
        boots = ", ".join(f"{b.seconds:.1f} s" for b in res.boots)
        print(
            f"{rel} (expected/{spec.series}.json): build {res.build_seconds:.1f} s, "
            f"boots {boots or '-'}, total {res.total_seconds:.1f} s; work dir {workdir / rel}"
        )
        print("\n".join(_table(res)))
        if res.error:
            print(f"ERROR: {res.error}", file=sys.stderr)
            status = 1
        else:
            results[spec.series] = res
    if args.update_expected and status == 0:
        if sorted(results) == sorted(default_kernels()):
            # the whole matrix: what all agree on goes to common.json
            by_series = {s: list(results[s].cases.values()) for s in default_kernels()}
            for path in write_expected_matrix(by_series):
                print(f"wrote {path}")
        else:
            for series, res in results.items():
                print(f"wrote {write_expected(series, list(res.cases.values()))}")
    return status


if __name__ == "__main__":
    sys.exit(main())
