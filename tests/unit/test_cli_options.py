"""The options every command shares, and check and resolve agreeing (issue 13)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from klpelf.cli import main
from klpelf.symbols.sources import KernelSymbols

SAMPLE = Path(__file__).parents[2] / "samples" / "klp_sample" / "klp_sample_lp.ko"
KALLSYMS = (
    "ffffffff81000000 T _stext\nffffffff81000600 D max_cstate\nffffffff81000700 D total_forks\n"
    "ffffffff81000800 D nr_threads\nffffffff81000900 d max_cstate\n"
    "ffffffff81001000 t cmdline_proc_show\n"
)


@pytest.fixture
def other_running_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The running kernel is this machine's release (not the sample's 6.1.0-56-amd64);
    returns a list that counts how often its symbols were loaded."""
    k = tmp_path / "kallsyms"
    k.write_text(KALLSYMS)
    real = KernelSymbols.running.__func__  # type: ignore[attr-defined]
    loads: list[int] = []

    def fake(cls: type[KernelSymbols], *, kallsyms_all: bool = True) -> KernelSymbols:
        loads.append(1)
        return real(  # type: ignore[no-any-return]
            cls, kallsyms=str(k), modules=str(tmp_path / "none"), kallsyms_all=kallsyms_all
        )

    monkeypatch.setattr(KernelSymbols, "running", classmethod(fake))
    return loads


def test_check_and_resolve_agree_on_another_running_kernel(
    other_running_kernel: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(SAMPLE)]) == 0
    check_out = capsys.readouterr().out
    assert main(["resolve", str(SAMPLE)]) == 0
    resolve_out = capsys.readouterr().out
    assert "warning: symbols not resolved: the module was built for 6.1.0-56-amd64" in check_out
    assert "warning: the module was built for 6.1.0-56-amd64 (vermagic)" in resolve_out
    # --strict: both exit 1 on it
    assert main(["check", "--strict", str(SAMPLE)]) == 1
    assert main(["resolve", "--strict", str(SAMPLE)]) == 1


def test_missing_module_fails_before_the_kernel_loads(
    other_running_kernel: list[int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "MISSING.ko"
    assert main(["resolve", str(missing)]) == 1
    assert capsys.readouterr().err == f"klpelf: {missing}: No such file or directory\n"
    assert other_running_kernel == []


def test_options_are_the_same_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = tmp_path / "kallsyms"
    k.write_text(KALLSYMS)
    assert main(["check", "-k", str(k), str(SAMPLE), "--debug"]) == 0
    assert "symbols resolved against" in capsys.readouterr().out
    assert main(["check", "--static", "--kernel", str(k), str(SAMPLE)]) == 2
    assert "--static resolves no symbols" in capsys.readouterr().err
    for command in ("check", "resolve", "convert"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helptext = " ".join(capsys.readouterr().out.split())
        assert "kallsyms, system.map, vmlinux, module, modules, symvers" in helptext, command
        assert "-k SOURCE, --kernel SOURCE" in helptext


def test_directories_and_failed_files_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree" / "sub"
    tree.mkdir(parents=True)
    shutil.copy(SAMPLE, tree / "a.ko")
    shutil.copy(SAMPLE, tree.parent / "b.ko")
    (tree / "notes.txt").write_text("not a module")
    (tree / "junk.ko").write_bytes(b"junk")
    missing = tmp_path / "missing.ko"
    assert main(["check", "--static", "--json", str(tree.parent), str(missing)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [m["path"] for m in doc["modules"]] == [str(tree.parent / "b.ko"), str(tree / "a.ko")]
    assert [f["path"] for f in doc["failed"]] == [str(tree / "junk.ko"), str(missing)]
    assert doc["failed"][1]["error"] == f"{missing}: No such file or directory"


def test_stdin_module() -> None:
    with SAMPLE.open("rb") as f:
        res = subprocess.run([sys.executable, "-m", "klpelf", "show", "-"], stdin=f,
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("/dev/stdin: module klp_sample, x86_64 ELF64 little-endian")


def test_apply_takes_directories_stdin_and_lists_failed_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # apply as every other command: MODULE... with directories (recursive), - for
    # stdin, and the files it could not read in its JSON's failed list
    k = tmp_path / "kallsyms"
    k.write_text(KALLSYMS)
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(SAMPLE, tree / "a.ko")
    (tree / "junk.ko").write_bytes(b"junk")
    missing = tmp_path / "missing.ko"
    assert main(["apply", "--json", "-k", str(k), str(tree), str(missing)]) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["schema"] == "klpelf.apply/2"
    assert [m["path"] for m in doc["modules"]] == [str(tree / "a.ko")]
    assert [f["path"] for f in doc["failed"]] == [str(tree / "junk.ko"), str(missing)]
    assert doc["failed"][1]["error"] == f"{missing}: No such file or directory"
    assert err.splitlines()[1] == f"klpelf: {missing}: No such file or directory"
    assert all(w["address"].startswith("0xffffffff") for w in doc["modules"][0]["writes"])
    assert main(["apply", "-k", str(k), "-o", str(tmp_path / "o"), str(tree / "a.ko"),
                 str(tree / "a.ko")]) == 2  # fmt: skip
    assert "-o writes the sections" in capsys.readouterr().err
    with SAMPLE.open("rb") as f:
        res = subprocess.run([sys.executable, "-m", "klpelf", "apply", "-k", str(k), "-"],
                             stdin=f, capture_output=True, text=True, check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("/dev/stdin: module klp_sample, x86_64")
