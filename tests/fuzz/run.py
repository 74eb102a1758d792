"""The long fuzz run: one target of tests/fuzz/targets.py under atheris (libFuzzer).

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/run.py TARGET [-runs=1000000] [-rss_limit_mb=200] [-timeout=1]
    .venv/bin/python tests/fuzz/run.py TARGET INPUT...     # replay inputs

In-process and persistent: libFuzzer calls the target in this one Python process, so
an execution costs the target's work and the coverage callbacks of klpelf's own code
(only klpelf is instrumented: numpy's and the standard library's lines would slow
every execution and guide nothing).  Seeds come from tests/fuzz/seeds/ (written to a
corpus directory under /tmp the first time).  An input that breaks a promise is saved
by libFuzzer (crash-<sha1>) and belongs in tests/fuzz/regressions/TARGET/ as a
regression test.  Every 10,000 executions, at -runs and at exit, the figures docs/fuzzing.md
reports (executions, seconds, peak RSS, the slowest input and its wall and CPU time) are written
to /tmp/klpelf-fuzz-TARGET.json, and the slowest input beside it.
"""

from __future__ import annotations

import atexit
import importlib
import json
import operator
import pkgutil
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
with atheris.instrument_imports(include=["klpelf"]):
    # every module now: klpelf imports many lazily, and a module first imported after
    # this block would run uninstrumented (no coverage to guide the mutations)
    import klpelf

    for _module in pkgutil.walk_packages(klpelf.__path__, "klpelf."):
        if not _module.name.endswith(".__main__"):  # which runs the CLI
            importlib.import_module(_module.name)
from fuzz.targets import TARGETS, run_one, seeds

# Python 3.11's COMPARE_OP numbering, which atheris passes on
_COMPARE: tuple[Callable[[Any, Any], object], ...] = (
    operator.lt,
    operator.le,
    operator.eq,
    operator.ne,
    operator.gt,
    operator.ge,
)
_TRACED = frozenset({int, bool, float, str, bytes, bytearray})


def _trace_cmp(obj1: object, obj2: object, op: int, counter: int, is_const: bool) -> object:
    """atheris' comparison hook for the plain values it learns from; numpy arrays are
    compared untraced.  The native hook leaks about 50 bytes per element of an array
    comparison result (klpelf.symbols.kallsyms compares whole columns: 1 GB in 30,000
    symbol_sources executions, which -rss_limit_mb then reports as the input's)."""
    if type(obj1) in _TRACED and type(obj2) in _TRACED:
        return _native_trace_cmp[0](obj1, obj2, op, counter, is_const)
    return _COMPARE[op](obj1, obj2)


_native_trace_cmp: list[Callable[..., object]] = []


class Figures:
    """Executions, wall time, and the slowest input of one run."""

    def __init__(self, name: str, runs: int) -> None:
        tmp = Path(tempfile.gettempdir())
        self.report = tmp / f"klpelf-fuzz-{name}.json"
        self.slowest_path = tmp / f"klpelf-fuzz-{name}.slowest"
        self.start = time.monotonic()
        self.executions = 0
        self.slowest = 0.0
        self.slowest_size = 0
        self.largest = 0
        self.runs = runs
        #: the most CPU time one input took (the wall time above includes the waits of
        #: a shared machine: at a load of 9 on 2 CPUs a 3 ms input once took 4 s)
        self.slowest_cpu = 0.0

    def note(self, data: bytes, seconds: float, cpu: float) -> None:
        self.executions += 1
        self.slowest_cpu = max(self.slowest_cpu, cpu)
        self.largest = max(self.largest, len(data))
        if seconds > self.slowest:
            self.slowest, self.slowest_size = seconds, len(data)
            self.slowest_path.write_bytes(data)
        # libFuzzer ends the process with exit(3) after -runs: no Python atexit then
        if self.executions % 10_000 == 0 or self.executions == self.runs:
            self.write()

    def write(self) -> None:
        # ru_maxrss is KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.report.write_text(json.dumps({
            "executions": self.executions, "seconds": round(time.monotonic() - self.start),
            "peak_rss_mb": round(peak), "slowest_s": round(self.slowest, 4),
            "slowest_cpu_s": round(self.slowest_cpu, 4),
            "slowest_size": self.slowest_size, "largest_input": self.largest,
        }) + "\n")  # fmt: skip


def main() -> None:
    name = sys.argv[1]
    if name not in TARGETS:
        raise SystemExit(f"unknown target {name}; one of {', '.join(TARGETS)}")
    corpus = Path(tempfile.gettempdir()) / f"klpelf-fuzz-{name}"
    if not corpus.exists():
        corpus.mkdir()
        for i, data in enumerate(seeds(name)):
            (corpus / f"seed{i}").write_bytes(data)
    runs = [int(a.split("=", 1)[1]) for a in sys.argv[2:] if a.startswith("-runs=")]
    # every seed once before the clock starts: the first execution imports what the
    # target needs (numpy: over 1 s), which is not the input's time
    for data in seeds(name):
        run_one(name, data)
    figures = Figures(name, runs[-1] if runs else -1)
    atexit.register(figures.write)

    def one(data: bytes) -> None:
        if atheris._trace_cmp is not _trace_cmp:
            # instrumented code looks the hook up as an attribute of the atheris module
            # at each call; Fuzz() sets libFuzzer's, so it is wrapped once fuzzing runs
            _native_trace_cmp[:] = [atheris._trace_cmp]
            atheris._trace_cmp = _trace_cmp
        t, c = time.perf_counter(), time.process_time()
        run_one(name, data)
        figures.note(data, time.perf_counter() - t, time.process_time() - c)

    # input files or corpus directories given: run those (libFuzzer replays files once)
    given = [a for a in sys.argv[2:] if not a.startswith("-")]
    atheris.Setup([sys.argv[0], *sys.argv[2:], *([] if given else [str(corpus)])], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
