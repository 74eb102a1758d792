"""The long fuzz run: one target of tests/fuzz/targets.py under atheris (libFuzzer).

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/run.py TARGET [-runs=1000000] [-rss_limit_mb=200] [-timeout=1]

Seeds come from samples/ (written to a corpus directory under /tmp the first time);
an input that breaks a promise is saved by libFuzzer (crash-<sha1>) and belongs in
tests/fuzz/regressions/TARGET/ as a regression test.  docs/fuzzing.md has the figures.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
with atheris.instrument_imports():
    import klpelf.elf.reader
    import klpelf.klp.check
    import klpelf.operations.check
    import klpelf.operations.convert
    import klpelf.operations.resolve
    import klpelf.symbols.sources  # noqa: F401
from fuzz.targets import TARGETS, run_one, seeds


def main() -> None:
    name = sys.argv[1]
    corpus = Path(tempfile.gettempdir()) / f"klpelf-fuzz-{name}"
    if not corpus.exists():
        corpus.mkdir()
        for i, data in enumerate(seeds(name)):
            (corpus / f"seed{i}").write_bytes(data)
    if name not in TARGETS:
        raise SystemExit(f"unknown target {name}; one of {', '.join(TARGETS)}")
    atheris.Setup([sys.argv[0], *sys.argv[2:], str(corpus)], lambda data: run_one(name, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
