from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests import their helpers (toolchain, readelf_oracle) as top-level modules
sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/expected/* from the output",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from the repository root (golden outputs name paths relative to it)."""
    monkeypatch.chdir(REPO)
    return REPO
