"""``klpelf build``: a fix (unified diff) to a checked livepatch module.

The fix parser and its refusals on small trees; end to end on an external module
(tests/unit/diff_cases/kbuild/klpdiff_demo.c) built against the host's kernel headers
(Debian's linux-headers-amd64): the module's directory is the source tree, the
original module's .ko and the headers' Module.symvers the target.
"""

from __future__ import annotations

import difflib
import json
import shutil
from pathlib import Path

import pytest
from test_diff_kbuild import FIXES, NAME, SOURCE, _kbuild

from klpelf.cli import main
from klpelf.errors import KlpError
from klpelf.kbuild.fix import apply_to_copy, parse_fix
from klpelf.operations.build import build


def _fix(path: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True),
                                        f"a/{path}", f"b/{path}"))  # fmt: skip


def _tree(tmp: Path) -> Path:
    t = tmp / "tree"
    (t / "sub").mkdir(parents=True)
    (t / "sub" / "u.c").write_text("int f(void)\n{\n\treturn 1;\n}\n")
    (t / "sub" / "u.h").write_text("#define X 1\n")
    return t


def test_parse_and_apply_a_c_change(tmp_path: Path) -> None:
    t = _tree(tmp_path)
    text = _fix("sub/u.c", (t / "sub" / "u.c").read_text(), "int f(void)\n{\n\treturn 2;\n}\n")
    (fp,) = parse_fix("commit message\n\n" + text, str(t))
    assert fp.path == "sub/u.c"
    apply_to_copy(fp, str(t), str(tmp_path / "copy" / "u.c"))
    assert "return 2;" in (tmp_path / "copy" / "u.c").read_text()
    assert "return 1;" in (t / "sub" / "u.c").read_text()
    # -p0 paths (diff -u sub/u.c.orig sub/u.c's +++ line names the file as it is)
    (fp0,) = parse_fix(text.replace("a/sub", "sub").replace("b/sub", "sub"), str(t))
    assert fp0.path == "sub/u.c"


@pytest.mark.parametrize(("text", "message"), [
    (_fix("sub/u.h", "#define X 1\n", "#define X 2\n"),
     "sub/u.h: a header change (every unit that includes it) is not supported yet: "
     "only changes to .c files"),
    ("--- /dev/null\n+++ b/sub/n.c\n@@ -0,0 +1 @@\n+int g;\n",
     "sub/n.c: a new file is not supported yet (only changes to existing .c files)"),
    ("--- a/sub/u.c\n+++ /dev/null\n@@ -1,4 +0,0 @@\n-int f(void)\n-{\n-\treturn 1;\n-}\n",
     "sub/u.c: removing a file is not supported (only changes to existing .c files)"),
    ("--- a/sub/x.c\n+++ b/sub/x.c\n@@ -1 +1 @@\n-a\n+b\n",
     "sub/x.c: no such file in the source tree"),
    ("just words\n", "no file changed: not a unified diff (diff -u, git diff)"),
])  # fmt: skip
def test_refused_fixes(tmp_path: Path, text: str, message: str) -> None:
    t = _tree(tmp_path)
    with pytest.raises(KlpError) as e:
        parse_fix(text, str(t))
    assert str(e.value).startswith(message)


def test_a_fix_that_does_not_apply(tmp_path: Path) -> None:
    t = _tree(tmp_path)
    (fp,) = parse_fix(_fix("sub/u.c", "int f(void)\n{\n\treturn 3;\n}\n", "x\n"), str(t))
    with pytest.raises(KlpError, match=r"^sub/u.c: the fix does not apply cleanly: "):
        apply_to_copy(fp, str(t), str(tmp_path / "copy.c"))
    assert not (tmp_path / "copy.c").exists()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """The headers, the module's source directory, the original module's .ko."""
    headers = _kbuild()
    root = tmp_path_factory.mktemp("build")
    src = root / "src"
    shutil.copytree(SOURCE, src)
    from klpelf.kbuild.compile import make

    make(headers, [f"M={src}", "modules"])
    ko = root / f"{NAME}.ko"
    shutil.copy(src / f"{NAME}.ko", ko)
    return headers, src, ko


def _write_fix(tmp: Path, src: Path, fix: str) -> Path:
    text = (src / f"{NAME}.c").read_text()
    old, new = FIXES[fix]
    p = tmp / f"{fix}.patch"
    p.write_text(_fix(f"{NAME}.c", text, text.replace(old, new)))
    return p


def test_build_end_to_end(demo: tuple[str, Path, Path], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    headers, src, ko = demo
    before = (src / f"{NAME}.c").read_text()
    fix = _write_fix(tmp_path, src, "message")
    lp, work = tmp_path / "lp.ko", tmp_path / "work"
    kernel = ["-k", str(ko), "-k", f"{headers}/Module.symvers"]
    rc = main(["build", str(fix), "--source", str(src), "--build", headers, *kernel,
               "-o", str(lp), "--name", "lp_msg", "--keep", str(work), "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert out["schema"] == "klpelf.build/1" and out["output"] == str(lp)
    (unit,) = out["units"]
    # only demo_entry: demo_step's WARN_ON names the same __FILE__ in both builds
    assert unit["file"] == f"{NAME}.c" and unit["diff"]["object"] == NAME
    assert [f["name"] for f in unit["diff"]["functions"]] == ["demo_entry"]
    assert out["check"]["verdict"] == "accept" and out["check"]["errors"] == 0
    assert (src / f"{NAME}.c").read_text() == before
    assert sorted(p.name for p in (work / "fixed").iterdir()) == [f"{NAME}.c"]
    assert main(["show", str(lp)]) == 0
    assert "demo_entry,0 -> __klpelf_new_klpdiff_demo_demo_entry" in capsys.readouterr().out
    refs = {r["name"]: r["symbol"] for r in unit["diff"]["references"]}
    assert refs["demo_count"] == ".klp.sym.klpdiff_demo.demo_count,0"
    assert main(["check", *kernel, "--kernel-release", "6.1", str(lp)]) == 0


def test_build_refusals(demo: tuple[str, Path, Path], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    headers, src, ko = demo
    args = ["--source", str(src), "--build", headers, "-k", str(ko),
            "-k", f"{headers}/Module.symvers", "-o", str(tmp_path / "lp.ko")]  # fmt: skip
    # a change the diff refuses (the module's static key): the reason, nothing written
    assert main(["build", str(_write_fix(tmp_path, src, "keyed")), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{NAME}.c: refused: demo_key: static key of module klpdiff_demo")
    # line numbers only: no function changed
    lines = _write_fix(tmp_path, src, "lines")
    assert main(["build", str(lines), *args]) == 1
    assert capsys.readouterr().err == (f"klpelf: {lines}: no function changed: "
                                       "nothing to patch\n")  # fmt: skip
    # a fix that does not compile: the compiler's error, one line
    bad = tmp_path / "bad.patch"
    text = (src / f"{NAME}.c").read_text()
    bad.write_text(_fix(f"{NAME}.c", text, text.replace("return r;", "return undeclared;")))
    assert main(["build", str(bad), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"klpelf: {NAME}.c: the fixed file does not compile: ")
    assert f"{src}/{NAME}.c:" in err and "undeclared" in err and err.count("\n") == 1
    assert not (tmp_path / "lp.ko").exists()
    # an unprepared tree
    with pytest.raises(KlpError, match="not a prepared kernel tree"):
        build(bad, src, tmp_path / "lp.ko")


def test_a_fix_to_two_units_of_one_module(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    # klpdiff_pair.ko links pair_main.o and pair_other.o, each with its own static
    # shared_name: one fix to both is one patch module, one klp_object, two klp_funcs
    headers = _kbuild()
    src = tmp_path / "src"
    shutil.copytree(SOURCE.parent / "kbuild_pair", src)
    from klpelf.kbuild.compile import make

    make(headers, [f"M={src}", "modules"])
    ko = tmp_path / "klpdiff_pair.ko"
    shutil.copy(src / "klpdiff_pair.ko", ko)
    fix = tmp_path / "pair.patch"
    parts = []
    for unit, old in (("pair_main.c", "shared_name += x;"),
                      ("pair_other.c", "shared_name -= x;")):  # fmt: skip
        text = (src / unit).read_text()
        parts.append(_fix(unit, text, text.replace(old, old.replace("= x", "= 2 * x"))))
    fix.write_text("".join(parts))
    lp = tmp_path / "lp.ko"
    assert main(["build", str(fix), "--source", str(src), "--build", headers, "-k", str(ko),
                 "-k", f"{headers}/Module.symvers", "-o", str(lp), "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "livepatch_pair"
    got = {u["file"]: (u["diff"]["object"], u["diff"]["references"][0]["symbol"])
           for u in out["units"]}  # fmt: skip
    sym = ".klp.sym.klpdiff_pair.shared_name"
    assert got == {"pair_main.c": ("klpdiff_pair", f"{sym},1"),
                   "pair_other.c": ("klpdiff_pair", f"{sym},2")}  # fmt: skip
    assert out["check"]["errors"] == 0
    assert main(["show", str(lp)]) == 0
    shown = capsys.readouterr().out
    assert "object klpdiff_pair: 2 functions" in shown


def test_a_kernel_tree_keeps_the_release_it_was_prepared_with(tmp_path: Path) -> None:
    # make KERNELRELEASE=6.1.0-57-amd64 modules_prepare writes utsrelease.h, not
    # include/config/kernel.release: every later make in the tree is given it again
    from klpelf.kbuild.compile import Tree

    gen = tmp_path / "include" / "generated"
    gen.mkdir(parents=True)
    (gen / "autoconf.h").write_text("#define CONFIG_LIVEPATCH 1\n")
    (gen / "utsrelease.h").write_text('#define UTS_RELEASE "6.1.0-57-amd64"\n')
    assert Tree(str(tmp_path)).make_args() == ["KERNELRELEASE=6.1.0-57-amd64"]
    mod = tmp_path / "mod"
    mod.mkdir()
    assert Tree(str(mod), str(tmp_path)).make_args() == [f"M={mod}"]
