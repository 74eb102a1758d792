"""`klpelf show` and `klpelf convert` on the shipped sample, against checked-in outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from klpelf.cli import main

EXPECTED = Path(__file__).parent / "expected"
SAMPLE = "samples/klp_sample/klp_sample_lp.ko"
SAMPLE_INPUT = "samples/klp_sample/klp_sample.ko"


def _golden(name: str, text: str, update: bool) -> None:
    path = EXPECTED / name
    if update:
        path.write_text(text)
    assert text == path.read_text(), f"output differs from {path} (run pytest --update-golden)"


@pytest.mark.parametrize(
    ("args", "golden"),
    [
        (["show", SAMPLE], "klp_sample_lp.show.txt"),
        (["show", "-r", SAMPLE], "klp_sample_lp.show-r.txt"),
        (["show", "--json", "-r", SAMPLE], "klp_sample_lp.show-r.json"),
        (["show", SAMPLE_INPUT], "klp_sample.show.txt"),
    ],
    ids=["text", "relocs", "json", "unconverted"],
)
def test_show(
    args: list[str],
    golden: str,
    repo: Path,
    update_golden: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert err == ""
    _golden(golden, out, update_golden)


def test_json_is_valid_and_complete(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "--json", SAMPLE]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "klpelf.show/2"
    (mod,) = doc["modules"]
    assert mod["livepatch"] == "Y" and mod["name"] == "klp_sample"
    (vmlinux,) = mod["objects"]
    assert vmlinux["objname"] == "vmlinux"
    assert sorted((s["symbol"], s["sympos"]) for s in vmlinux["symbols"]) == [
        ("max_cstate", 1), ("max_cstate", 2), ("nr_threads", 0), ("total_forks", 0),
    ]  # fmt: skip
    (sec,) = vmlinux["relocation_sections"]
    assert sec["flags"] == "AIo" and sec["relocations"] == 4 and sec["entries"] is None


def test_convert_reproduces_the_sample(repo: Path, tmp_path: Path) -> None:
    # The shipped converted module is exactly what convert makes from the shipped input,
    # the input is untouched, and converting again changes nothing (idempotent).
    before = Path(SAMPLE_INPUT).read_bytes()
    out = tmp_path / "lp.ko"
    assert main(["convert", SAMPLE_INPUT, "-o", str(out)]) == 0
    assert Path(SAMPLE_INPUT).read_bytes() == before
    assert out.read_bytes() == Path(SAMPLE).read_bytes()
    again = tmp_path / "lp2.ko"
    assert main(["convert", str(out), "-o", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_convert_refuses_to_overwrite_its_input(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.ko"
    shutil.copy(SAMPLE_INPUT, src)
    assert main(["convert", str(src), "-o", str(src)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert src.read_bytes() == Path(SAMPLE_INPUT).read_bytes()
