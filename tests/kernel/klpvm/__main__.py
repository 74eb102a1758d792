"""Run the real-kernel cases outside pytest and print what each kernel did.

    PYTHONPATH=tests .venv/bin/python -m kernel.klpvm [--release R]... [--workdir DIR]
                                                       [--update-expected]

Default releases: every installed one (image, modules and headers).  The work
directory keeps the built modules (``ko/``), each boot's serial console, results
(``bootN/out/``: kallsyms, per-case steps, outputs and dmesg) and the qemu command.
"""

from __future__ import annotations

import argparse
import errno
import sys
import tempfile
from pathlib import Path

from kernel.klpvm.cases import CASES, expected_for, messages_match, write_expected
from kernel.klpvm.suite import SuiteResult, run_suite
from kernel.klpvm.vm import KernelSpec, installed_releases


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kernel.klpvm", description=__doc__)
    p.add_argument("--release", action="append", help="kernel release (repeatable)")
    p.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    p.add_argument("--update-expected", action="store_true", help="rewrite expected/<series>.json")
    args = p.parse_args(argv)
    releases = args.release or installed_releases()
    if not releases:
        print("no installed kernel (image, modules and headers)", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="klpvm-"))
    status = 0
    for rel in releases:
        spec = KernelSpec.installed(rel)
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
        elif args.update_expected:
            print(f"wrote {write_expected(spec.series, list(res.cases.values()))}")
    return status


if __name__ == "__main__":
    sys.exit(main())
