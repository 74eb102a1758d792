"""``klpelf diff`` end to end on a real kernel-style module built by kbuild.

tests/unit/diff_cases/kbuild/klpdiff_demo.c is built against the host's kernel headers
(Debian's linux-headers-amd64, installed by .ci/run) with ``KCFLAGS=-ffunction-sections
-fdata-sections``, as the original and as three fixes: a changed message, lines moved
(WARN_ON's __bug_table line), a changed function that uses the module's static key.
The objects carry what kbuild and objtool add (__mcount_loc, __bug_table, __jump_table,
.return_sites, .orc_unwind/.orc_unwind_ip, .discard.*); the original's .ko and the
headers' Module.symvers are the target's symbols.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from klpelf.operations.diff import DiffResult, diff
from toolchain import readelf_clean, relocations

SOURCE = Path(__file__).parent / "diff_cases" / "kbuild"
NAME = "klpdiff_demo"
FIXES = {
    "message": ('pr_info("klpdiff_demo: %d\\n", r);', 'pr_info("klpdiff_demo: result %d\\n", r);'),
    "lines": ("#include <linux/bug.h>\n", "#include <linux/bug.h>\n\n/*\n * moved\n */\n"),
    "keyed": ("return x + 1;", "return x + 2;"),
    "debug": ('pr_debug("klpdiff_demo: step %d\\n", x);',
              'pr_debug("klpdiff_demo: step %d!\\n", x);'),
}  # fmt: skip


def _skip(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the headers are part of the CI machine)")
    pytest.skip(reason)


def _kbuild() -> str:
    headers = sorted(glob.glob("/lib/modules/*/build/Module.symvers"))
    if not headers or shutil.which("make") is None or shutil.which("gcc") is None:
        _skip("needs make, gcc and kernel headers (Debian: linux-headers-amd64)")
    return str(Path(headers[-1]).parent)


def _make(build: str, d: Path, target: str) -> None:
    r = subprocess.run(["make", "-s", "-C", build, f"M={d}", target,
                        "KCFLAGS=-ffunction-sections -fdata-sections"],
                       capture_output=True, text=True, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Directory of the original's objects and of each fix's.

    Every build runs in one source directory, the fix written over the original, as a
    fix is built in its tree: ``__FILE__`` (kbuild passes the source's path) is the
    same in both builds, as it is in a kernel tree.
    """
    build = _kbuild()
    root = tmp_path_factory.mktemp("kbuild")
    text = (SOURCE / f"{NAME}.c").read_text()
    work = root / "src"
    work.mkdir()
    shutil.copy(SOURCE / "Kbuild", work)
    out = {}
    for what in ("orig", *FIXES):
        src = text
        if what in FIXES:
            old, new = FIXES[what]
            assert old in src
            src = src.replace(old, new)
        (work / f"{NAME}.c").write_text(src)
        _make(build, work, "modules" if what == "orig" else f"{NAME}.o")
        d = root / what
        d.mkdir()
        for f in (f"{NAME}.o", f"{NAME}.ko"):
            if (work / f).exists() and (what == "orig" or f.endswith(".o")):
                shutil.copy(work / f, d / f)
        out[what] = d
    out["symvers"] = Path(build) / "Module.symvers"
    return out


def _diff(builds: dict[str, Path], fix: str, tmp: Path) -> tuple[DiffResult, Path]:
    o = builds["orig"]
    out = tmp / f"{fix}.o"
    done = diff(o / f"{NAME}.o", builds[fix] / f"{NAME}.o", out, objname=NAME,
                kernel=[o / f"{NAME}.ko", builds["symvers"]])  # fmt: skip
    return done, out


def test_changed_message(builds: dict[str, Path], tmp_path: Path) -> None:
    done, out = _diff(builds, "message", tmp_path)
    assert [f for f, _ in done.functions] == ["demo_entry"]
    assert "result %d" in done.functions[0][1]
    refs = {n: (s, k, note) for n, s, k, note in done.references}
    # the module's statics, sympos checked against its .ko; vmlinux's exports stay plain
    assert refs == {
        "demo_count": (".klp.sym.klpdiff_demo.demo_count,0", "klp", None),
        "demo_lock": (".klp.sym.klpdiff_demo.demo_lock,0", "klp", None),
        "demo_step": (".klp.sym.klpdiff_demo.demo_step,0", "klp", None),
    }
    assert dict(done.externs)["mutex_lock"] == "mutex_lock"
    entries = done.entries
    assert entries["__mcount_loc"] == 1 and entries[".return_sites"] == 1
    assert entries[".orc_unwind"] == entries[".orc_unwind_ip"] > 0
    assert "__bug_table" not in entries and "__jump_table" not in entries
    readelf_clean(out)
    rel = relocations(out)
    assert all(n == ".text.demo_entry" for rs in ("__mcount_loc", ".orc_unwind_ip")
               for _, n, _ in rel[rs])  # fmt: skip


def test_moved_lines_change_nothing(builds: dict[str, Path], tmp_path: Path) -> None:
    done, out = _diff(builds, "lines", tmp_path)
    assert done.functions == [] and "demo_step" in done.line_only
    assert not out.exists()


def test_static_key_of_a_module_is_refused(builds: dict[str, Path], tmp_path: Path) -> None:
    done, out = _diff(builds, "keyed", tmp_path)
    assert done.refusals == (
        "demo_key: static key of module klpdiff_demo used in __jump_table: the kernel writes "
        "a module's klp relocations after the loader has processed __jump_table "
        "(klp_write_section_relocs)",)
    assert not out.exists()


def test_sympos_of_a_static_the_module_has_twice(tmp_path: Path) -> None:
    # klpdiff_pair.ko links pair_main.o and pair_other.o, each with its own static
    # shared_name: the module's symbol table has it twice, and the unit's file decides
    build = _kbuild()
    src = Path(__file__).parent / "diff_cases" / "kbuild_pair"
    orig, fix = tmp_path / "orig", tmp_path / "fix"
    for d in (orig, fix):
        shutil.copytree(src, d)
    for unit in ("pair_main.c", "pair_other.c"):
        text = (fix / unit).read_text()
        (fix / unit).write_text(text.replace("shared_name += x;", "shared_name += 2 * x;")
                                .replace("shared_name -= x;", "shared_name -= 2 * x;"))
    _make(build, orig, "modules")
    _make(build, fix, "pair_main.o")
    _make(build, fix, "pair_other.o")
    ko = orig / "klpdiff_pair.ko"
    got = {}
    mod = tmp_path / "lp"
    for unit in ("pair_main", "pair_other"):
        # both units into one patch module: one klp_object, two klp_funcs
        done = diff(orig / f"{unit}.o", fix / f"{unit}.o", tmp_path / f"{unit}.diff.o",
                    objname="klpdiff_pair", kernel=[ko, Path(build) / "Module.symvers"],
                    module_dir=mod, name="lp_pair")  # fmt: skip
        assert [f for f, _ in done.functions] == [f"{unit}_bump"]
        ((name, symbol, _, note),) = done.references
        assert name == "shared_name"
        got[unit] = (symbol, note)
        readelf_clean(tmp_path / f"{unit}.diff.o")
    assert got == {
        "pair_main": (".klp.sym.klpdiff_pair.shared_name,1",
                      "sympos 1 of 2: the one of pair_main.c"),
        "pair_other": (".klp.sym.klpdiff_pair.shared_name,2",
                       "sympos 2 of 2: the one of pair_other.c"),
    }  # fmt: skip
    source = (mod / "lp_pair_patch.c").read_text()
    assert source.count(".old_name = ") == 2 and source.count('.name = "klpdiff_pair"') == 1
    _make(build, mod, "modules")
    from klpelf.cli import main

    lp = tmp_path / "lp_pair.ko"
    assert main(["convert", str(mod / "lp_pair.ko"), "-o", str(lp)]) == 0
    assert main(["check", "-k", str(ko), "--kernel-release", "6.1", str(lp)]) == 0


def test_patch_module_builds_converts_and_checks(
    builds: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # diff -> the patch module's sources -> kbuild -> klpelf convert -> klpelf check
    from klpelf.cli import main

    o = builds["orig"]
    kernel = [o / f"{NAME}.ko", builds["symvers"]]
    mod = tmp_path / "lp"
    done = diff(o / f"{NAME}.o", builds["message"] / f"{NAME}.o", objname=NAME, kernel=kernel,
                module_dir=mod, name="lp_demo")  # fmt: skip
    assert done.klp_funcs == [("demo_entry", 0, "__klpelf_new_klpdiff_demo_demo_entry")]
    source = (mod / "lp_demo_patch.c").read_text()
    assert '.old_name = "demo_entry"' in source and '.name = "klpdiff_demo"' in source
    assert ".replace = true" in source
    _make(_kbuild(), mod, "modules")
    ko, lp = mod / "lp_demo.ko", tmp_path / "lp_demo.ko"
    assert main(["convert", str(ko), "-o", str(lp)]) == 0
    capsys.readouterr()
    args = ["-k", str(kernel[0]), "-k", str(kernel[1]), "--kernel-release", "6.1", str(lp)]
    assert main(["check", *args]) == 0
    assert "Linux 6.1 (--kernel-release) would load the module" in capsys.readouterr().out
    assert main(["show", str(lp)]) == 0
    shown = capsys.readouterr().out
    assert "demo_entry,0 -> __klpelf_new_klpdiff_demo_demo_entry" in shown
    assert ".klp.rela.klpdiff_demo.text.demo_entry" in shown


def test_pr_debug_descriptor_comes_with_its_function(builds: dict[str, Path],
                                                     tmp_path: Path) -> None:  # fmt: skip
    # the moved lines changed demo_step's __dyndbg descriptor (its lineno) only: no change
    done, _ = _diff(builds, "lines", tmp_path)
    assert done.refusals == () and done.functions == []
    # a new format: demo_step changes, and its descriptor (with the static key its
    # __jump_table entry names) is copied, not the module's own referred to
    done, out = _diff(builds, "debug", tmp_path)
    assert [f for f, _ in done.functions] == ["demo_step"]
    data = dict(done.data)
    (desc,) = [d for d in data if d.startswith("__UNIQUE_ID_ddebug")]
    assert data[desc] == "__dyndbg entry of demo_step, copied with it"
    assert done.entries["__jump_table"] == 1 and done.entries["__bug_table"] == 1
    readelf_clean(out)
    rel = relocations(out)
    assert all(not n.startswith(".klp.sym.") for _, n, _ in rel["__jump_table"])


def test_static_call_of_a_module_is_refused(tmp_path: Path) -> None:
    build = _kbuild()
    work = tmp_path / "src"
    shutil.copytree(Path(__file__).parent / "diff_cases" / "kbuild_static_call", work)
    _make(build, work, "klpdiff_sc.o")
    orig = tmp_path / "orig.o"
    shutil.copy(work / "klpdiff_sc.o", orig)
    text = (work / "klpdiff_sc.c").read_text()
    (work / "klpdiff_sc.c").write_text(text.replace("* 2;", "* 3;"))
    _make(build, work, "klpdiff_sc.o")
    done = diff(orig, work / "klpdiff_sc.o", tmp_path / "out.o", objname="klpdiff_sc")
    assert len(done.refusals) == 1
    assert done.refusals[0].startswith(
        "__SCK__sc_call: static call of module klpdiff_sc used in .static_call_sites")
    assert not (tmp_path / "out.o").exists()
