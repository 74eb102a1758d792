"""Every module of Debian's kernel packages: parse, agree with readelf, round-trip.

The corpus comes from tests/corpus/fetch.py (``bash .ci/run`` runs it).  All amd64
modules are checked, and every fourth module of arm64, ppc64el and s390x
(big-endian), in sorted path order.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from corpus.compare import compare_module

CORPUS = Path(os.environ.get("KLPELF_CORPUS", Path.home() / ".cache/klpelf/corpus"))
STRIDE = {"amd64": 1, "arm64": 4, "ppc64el": 4, "s390x": 4}


def _modules(arch: str) -> list[str]:
    manifest = CORPUS / "manifest.json"
    if not manifest.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{manifest} is missing: run tests/corpus/fetch.py")
        pytest.skip(f"no corpus at {CORPUS} (run tests/corpus/fetch.py)")
    mods = Path(json.loads(manifest.read_text())[arch]["modules_dir"])
    paths = sorted(str(p) for p in mods.rglob("*.ko*"))
    assert len(paths) > 1000, f"{arch}: only {len(paths)} modules under {mods}"
    return paths[:: STRIDE[arch]]


@pytest.mark.corpus
@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(STRIDE))
def test_corpus_agrees_with_readelf(arch: str) -> None:
    paths = _modules(arch)
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        problems = [p for res in pool.map(compare_module, paths, chunksize=16) for p in res]
    assert not problems, f"{len(problems)} differences, first ones:\n" + "\n".join(problems[:30])
