"""A short run of every fuzz target (tests/fuzz/targets.py) with hypothesis, seeded from
samples/, and every input that ever broke a promise, replayed (tests/fuzz/regressions/).

The long run is atheris' (docs/fuzzing.md); this one takes a few seconds in CI.
"""

from __future__ import annotations

import gzip
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fuzz.targets import TARGETS, run_one, seeds

REGRESSIONS = Path(__file__).resolve().parents[1] / "fuzz" / "regressions"


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """A seed with a few bytes changed, cut or inserted (mostly near the ELF headers)."""
    data = bytearray(draw(st.sampled_from(seeds(name))))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["set", "cut", "insert"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_fuzz_run(name: str) -> None:
    @settings(max_examples=60, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(mutated(name))
    def run(data: bytes) -> None:
        run_one(name, data)

    run()


def _regressions() -> list[Path]:
    return sorted(p for p in REGRESSIONS.glob("*/*") if p.is_file())


@pytest.mark.parametrize("path", _regressions(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_regression_inputs(path: Path) -> None:
    # named by the target they broke; gzip-compressed (most are a mutated sample).  The
    # long run's limit of 1 s holds too (timeout-*: an input that once ran longer), on
    # a second run: the first may import what the target needs
    data = gzip.decompress(path.read_bytes())
    run_one(path.parent.name, data)
    start = time.perf_counter()
    run_one(path.parent.name, data)
    assert time.perf_counter() - start < 1.0


def test_seeds_pass() -> None:
    for name in TARGETS:
        for data in seeds(name):
            run_one(name, data)
