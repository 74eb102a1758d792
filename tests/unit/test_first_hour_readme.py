"""The README's first hour, followed from a fresh clone: build the sample with kbuild,
convert it, check it.

The clone is of this repository's committed HEAD; the lines that install (the venv,
apt-get) or need the target kernel (marked "on the target") are not run: klpelf is the
one under test, on PATH.  Without kernel headers (/lib/modules/*/build: Debian's
linux-headers-amd64, installed by .ci/run) the test is skipped, and fails under CI=true.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]

#: lines of the block that the test does not run: it clones and installs itself
_NOT_RUN = ("git clone", "python3 -m venv", "apt-get")


def _first_hour_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The first hour") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the first hour has no sh block"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    assert any("KBUILD_MODPOST_WARN" in p for p in section.split("```sh")[:1])
    return [
        c
        for c in lines
        if c
        and not c.startswith(_NOT_RUN)
        and "on the target" not in block.group(1).splitlines()[lines.index(c)]
    ]


def _skip(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the headers are part of the CI machine)")
    pytest.skip(reason)


def test_first_hour_from_a_fresh_clone(tmp_path: Path) -> None:
    headers = glob.glob(f"/lib/modules/{os.uname().release}/build") or glob.glob(
        "/lib/modules/*/build"
    )
    if not headers:
        _skip(
            "no kernel headers (/lib/modules/*/build; Debian: apt-get install linux-headers-amd64)"
        )
    for tool in ("git", "make", "gcc"):
        if shutil.which(tool) is None:
            _skip(f"{tool} is not installed")
    commands = _first_hour_commands()
    assert [c.split()[0] for c in commands] == ["make", "klpelf", "klpelf"], commands
    clone = tmp_path / "klpelf"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "klpelf").write_text(f'#!/bin/sh\nexec {sys.executable} -m klpelf "$@"\n')
    (bindir / "klpelf").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    (clone / "samples/klp_sample/klp_sample.ko").unlink()  # built here, not the checked-in one
    (clone / "samples/klp_sample/klp_sample_lp.ko").unlink()
    outputs = []
    for cmd in commands:
        res = subprocess.run(cmd, shell=True, cwd=clone, env=env, capture_output=True,
                             text=True, check=False)  # fmt: skip
        assert res.returncode == 0, f"{cmd}:\n{res.stdout[-3000:]}{res.stderr[-3000:]}"
        outputs.append(res.stdout + res.stderr)
    make_out, convert_out, check_out = outputs
    assert 'WARNING: modpost: ".klp.sym.vmlinux.total_forks,0"' in make_out
    assert "livepatch symbol .klp.sym.vmlinux.total_forks,0" in convert_out
    assert re.search(r"would load the module", check_out), check_out


def test_help_shows_no_internal_notes() -> None:
    import pydoc

    import klpelf

    text = pydoc.render_doc(klpelf, renderer=pydoc.TextDoc())
    doc = klpelf.__doc__ or ""
    assert "convert" in doc and "KlpError" in doc
    for internal in ("dataclasses", " ms ", "__getattr__", "import speed"):
        assert internal not in doc, internal
    assert "_EXPORTS" not in text
