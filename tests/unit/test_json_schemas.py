"""Every command's --json output validates against its schema (the TypedDicts of
klpelf.operations.schemas, which docs/json.md documents key for key)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from klpelf.cli import main
from klpelf.operations import schemas as j
from schema_check import problems

SAMPLES = Path(__file__).parents[2] / "samples" / "klp_sample"
KALLSYMS = (
    "ffffffff81000000 T _stext\nffffffff81000600 D max_cstate\nffffffff81000700 D total_forks\n"
    "ffffffff81000800 D nr_threads\nffffffffffffff00 d max_cstate\n"
)


@pytest.fixture
def inputs(tmp_path: Path) -> list[str]:
    """The sample (converted and not), a broken module and a missing one: every shape
    of Module, Diagnostic, Candidate and the failed list."""
    (tmp_path / "junk.ko").write_bytes(b"\x7fELF junk")
    shutil.copy(SAMPLES / "klp_sample_lp.ko", tmp_path / "lp.ko")
    return [str(SAMPLES / "klp_sample_lp.ko"), str(SAMPLES / "klp_sample.ko"),
            str(tmp_path / "junk.ko"), str(tmp_path / "missing.ko")]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "schema", "typed"),
    [
        (["show", "--json"], "klpelf.show/2", j.ShowJson),
        (["show", "-r", "--json"], "klpelf.show/2", j.ShowJson),
        (["check", "--json", "--kernel-release", "6.1"], "klpelf.check/2", j.CheckJson),
        (["check", "--json"], "klpelf.check/2", j.CheckJson),
        (["resolve", "--json"], "klpelf.resolve/2", j.ResolveJson),
    ],
)
def test_json_output_validates(
    args: list[str], schema: str, typed: type, inputs: list[str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    k = tmp_path / "kallsyms"
    k.write_text(KALLSYMS)
    kernel = ["-k", str(k)] if args[0] != "show" else []
    assert main([*args, *kernel, *inputs]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == schema
    assert problems(doc, typed) == []
    assert len(doc["failed"]) == 2 and doc["modules"]


def test_apply_json_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k = tmp_path / "kallsyms"
    k.write_text(KALLSYMS)
    assert main(["apply", "--json", "-k", str(k), str(SAMPLES / "klp_sample_lp.ko")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "klpelf.apply/2"
    assert problems(doc, j.ApplyJson) == []


def test_the_validator_finds_problems() -> None:
    bad = {"schema": "klpelf.check/2", "modules": [{"path": 1}], "extra": True}
    found = problems(bad, j.CheckJson)
    assert "$: unexpected key 'extra'" in found and "$: missing key 'failed'" in found
    assert "$.modules[0].path: 1, expected str" in found
    assert "$.modules[0]: missing key 'verdict'" in found
    assert problems({"schema": "klpelf.check/1", "modules": [], "failed": []}, j.CheckJson)
    assert problems(True, int) and not problems(None, int | None)
