"""``klpelf diff`` on the architecture-neutral pairs of tests/unit/diff_cases built by
Debian's cross compilers (arm64, ppc64le, s390x big-endian) with each architecture's
kernel code-generation flags: the same functions change, the same things are refused,
and every output passes ``readelf -a -W`` cleanly."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from klpelf.elf.reader import open_elf
from klpelf.operations.diff import DiffResult, diff
from toolchain import readelf_clean

CASES = Path(__file__).parent / "diff_cases"
COMMON = ["-O2", "-ffunction-sections", "-fdata-sections", "-fno-asynchronous-unwind-tables",
          "-fno-unwind-tables", "-fno-stack-protector", "-fno-strict-aliasing"]  # fmt: skip
#: arch -> (gcc, flags as arch/<arch>/Makefile and the ftrace options give them)
ARCHES = {
    "aarch64": ("aarch64-linux-gnu-gcc", ["-mgeneral-regs-only", "-fpatchable-function-entry=2"]),
    "ppc64le": ("powerpc64le-linux-gnu-gcc", ["-mcmodel=medium", "-mprofile-kernel", "-pg"]),
    "s390x": ("s390x-linux-gnu-gcc", ["-fno-pic", "-pg", "-mfentry", "-mrecord-mcount",
                                      "-mnop-mcount"]),
}  # fmt: skip


def _build(arch: str, name: str, tmp: Path) -> tuple[Path, Path]:
    gcc, flags = ARCHES[arch]
    if shutil.which(gcc) is None:
        reason = f"{gcc} is not installed (Debian: gcc-{gcc.removesuffix('-gcc')})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: .ci/run installs it)")
        pytest.skip(reason)
    out = []
    for side in ("orig", "patched"):
        d = tmp / side
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(CASES / "kernel_like.h", d)
        shutil.copy(CASES / f"{name}.{side}.c", d / f"{name}.c")
        obj = tmp / f"{name}.{side}.o"
        subprocess.run([gcc, *COMMON, *flags, "-c", f"{name}.c", "-o", str(obj)], cwd=d,
                       check=True, capture_output=True)  # fmt: skip
        out.append(obj)
    return out[0], out[1]


def _diff(arch: str, name: str, tmp: Path) -> tuple[DiffResult, Path]:
    o, p = _build(arch, name, tmp)
    out = tmp / f"{name}.diff.o"
    return diff(o, p, out), out


@pytest.fixture(params=sorted(ARCHES))
def arch(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_changed_and_new_functions(arch: str, tmp_path: Path) -> None:
    done, out = _diff(arch, "changed", tmp_path)
    assert [f for f, _ in done.functions] == ["compute"]
    assert {n for n, _, _, _ in done.references} == {"counter", "helper", "shared_value"}
    readelf_clean(out)
    assert open_elf(out).machine == open_elf(tmp_path / "changed.patched.o").machine
    done, out = _diff(arch, "clones", tmp_path / "clones")
    funcs = dict(done.functions)
    assert {"entry_a", "entry_b", "first.constprop.0"} <= set(funcs)
    assert funcs["first.constprop.0"] == "new"
    # strings are compared by contents (s390x refers to them through .LC labels)
    assert "string 'small %d\\n' -> string 'too small: %d\\n'" in funcs["entry_b"]
    readelf_clean(out)


def test_renumbered_locals_and_parts(arch: str, tmp_path: Path) -> None:
    done, out = _diff(arch, "locals", tmp_path)
    assert ("count.1", "count.2") in done.renamed
    assert {f for f, _ in done.functions} == {"second_user", "third_user"}
    readelf_clean(out)
    done, out = _diff(arch, "part", tmp_path / "part")
    assert [f for f, _ in done.functions] == ["lookup.part.0"]
    readelf_clean(out)


def test_refusals(arch: str, tmp_path: Path) -> None:
    done, _ = _diff(arch, "data", tmp_path)
    # the third int's changed byte: its last on big-endian s390x
    at = "0xb" if arch == "s390x" else "0x8"
    assert done.refusals == (f"data limits changed (contents at +{at}): the kernel's copy is "
                             "in use, and a livepatch replaces functions only",)  # fmt: skip
    done, _ = _diff(arch, "init", tmp_path / "init")
    assert len(done.refusals) == 1 and done.refusals[0].startswith("function setup: init code")
