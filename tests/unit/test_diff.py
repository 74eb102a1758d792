"""``klpelf diff`` on pairs of small C units (tests/unit/diff_cases/NAME.{orig,patched}.c)
built by the host gcc with the kernel's code-generation flags; each pair covers a rule.

Both builds compile ``NAME.c`` in a directory of their own, as two builds of one
source tree do (``__FILE__`` and the STT_FILE symbol are the same).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from klpelf.cli import main
from klpelf.elf.constants import SHN, STB, STT
from klpelf.elf.reader import open_elf
from klpelf.elf.symbols import st_info
from klpelf.elf.writer import save_elf
from klpelf.errors import KlpFormatError
from klpelf.operations import schemas as j
from klpelf.operations.diff import DiffResult, diff
from schema_check import problems
from toolchain import readelf_clean, relocations

CASES = Path(__file__).parent / "diff_cases"
#: x86_64 kernel code generation (arch/x86/Makefile, scripts/Makefile.lib, CONFIG_FTRACE)
KERNEL_FLAGS = ["-O2", "-ffunction-sections", "-fdata-sections", "-fno-pic", "-mcmodel=kernel",
                "-mfentry", "-pg", "-mrecord-mcount", "-fno-asynchronous-unwind-tables",
                "-fno-stack-protector", "-mno-red-zone", "-fno-strict-aliasing"]  # fmt: skip


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None or os.uname().machine != "x86_64":
        reason = "needs the host gcc on x86_64"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: it is part of the CI machine)")
        pytest.skip(reason)
    return gcc


#: cases whose original is another case's
ORIG_OF = {"unchanged": "changed"}


def build(name: str, tmp: Path, flags: list[str] = KERNEL_FLAGS) -> tuple[Path, Path]:
    """ORIG.o and PATCHED.o of case ``name``."""
    gcc = _gcc()
    out = []
    for side in ("orig", "patched"):
        d = tmp / side
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(CASES / "kernel_like.h", d)
        src = ORIG_OF.get(name, name) if side == "orig" else name
        shutil.copy(CASES / f"{src}.{side}.c", d / f"{name}.c")
        obj = tmp / f"{name}.{side}.o"
        subprocess.run([gcc, *flags, "-c", f"{name}.c", "-o", str(obj)], cwd=d,
                       check=True, capture_output=True)  # fmt: skip
        out.append(obj)
    return out[0], out[1]


def run_diff(name: str, tmp: Path, **kw: object) -> tuple[DiffResult, Path]:
    o, p = build(name, tmp)
    out = tmp / f"{name}.diff.o"
    return diff(o, p, out, **kw), out  # type: ignore[arg-type]


def test_unchanged_unit_has_nothing(tmp_path: Path) -> None:
    done, out = run_diff("unchanged", tmp_path)
    assert done.functions == [] and done.refusals == () and done.output is None
    assert not out.exists()
    assert "no function changed" in done.to_text()


def test_changed_function_with_references(tmp_path: Path) -> None:
    done, out = run_diff("changed", tmp_path)
    assert [f for f, _ in done.functions] == ["compute"]
    assert done.functions[0][1].startswith("changed: ")
    assert "untouched" not in done.to_text() and "helper:" not in done.to_text()
    refs = {n: s for n, s, _, _ in done.references}
    # statics and globals of the unit the kernel has: livepatch symbols of vmlinux
    assert refs == {"counter": ".klp.sym.vmlinux.counter,0", "helper": ".klp.sym.vmlinux.helper,0",
                    "shared_value": ".klp.sym.vmlinux.shared_value,0"}  # fmt: skip
    readelf_clean(out)
    rel = relocations(out)
    names = {n for _, n, _ in rel[".text.compute"]}
    assert names == {"__fentry__", *refs.values()}
    # the mcount entry of the one function kept, pointing at its new section
    assert rel["__mcount_loc"] == [(0, ".text.compute", 0)]
    elf = open_elf(out)
    tab = elf.symtab
    assert tab is not None
    compute = tab[tab.names().index("compute")]
    assert elf.section(compute.shndx).name == ".text.compute"
    undef = [s.name for s in tab if s.st_shndx == SHN.UNDEF and s.name]
    assert sorted(undef) == sorted(["__fentry__", *refs.values()])


def test_line_number_changes_are_ignored(tmp_path: Path) -> None:
    done, out = run_diff("lines", tmp_path)
    # __LINE__ as report()'s immediate (may_sleep) and as __bug_table's line (checked)
    assert done.line_only == ["checked", "may_sleep"]
    assert done.functions == [] and not out.exists()


def test_clones_and_cold_parts(tmp_path: Path) -> None:
    done, out = run_diff("clones", tmp_path)
    funcs = dict(done.functions)
    # entry_a calls a new clone; its .cold part comes with it
    assert funcs["first.constprop.0"] == "new"
    assert funcs["entry_a.cold"] == "part of entry_a"
    assert funcs["entry_a"].startswith("changed: ")
    # only a string in entry_b changed: compared by contents, not by offset
    assert "string 'small %d\\n' -> string 'too small: %d\\n'" in funcs["entry_b"]
    # the unchanged constprop clones are the kernel's
    refs = {n: s for n, s, _, _ in done.references}
    assert refs["scale.constprop.0"] == ".klp.sym.vmlinux.scale.constprop.0,0"
    assert refs["adjust.constprop.0"] == ".klp.sym.vmlinux.adjust.constprop.0,0"
    text = readelf_clean(out)
    assert ".rodata.entry_b.str1.1" in text
    # three functions with an __fentry__ call (a .cold part has none)
    assert done.entries == {"__mcount_loc": 3}
    # klp_funcs replace what the kernel has: not the new clone, not the .cold part
    assert [old for old, _, _ in done.klp_funcs] == ["entry_a", "entry_b"]


def test_child_change_pulls_in_the_parent(tmp_path: Path) -> None:
    done, _ = run_diff("clones", tmp_path)
    funcs = dict(done.functions)
    # entry_b's printk is in entry_b.cold when gcc splits it, else in entry_b
    if "entry_b.cold" in funcs:
        assert funcs["entry_b"] == "its part entry_b.cold changed"


def test_new_function_and_new_data(tmp_path: Path) -> None:
    done, out = run_diff("newfunc", tmp_path)
    assert dict(done.functions) == {"clamp": "new", "total": dict(done.functions)["total"]}
    data = dict(done.data)
    assert data["calls_seen"] == "new, used by clamp"
    assert data["names"] == "new, used by total"
    # the string literals the new table points to come along
    assert data[".rodata.str1.1"] == "used by names"
    readelf_clean(out)
    rel = relocations(out)
    # new code calls new code and uses the new data directly, never through the kernel
    assert all(not n.startswith(".klp.sym.") for rs in rel.values() for _, n, _ in rs)


def test_static_locals_renumbered(tmp_path: Path) -> None:
    done, _ = run_diff("locals", tmp_path)
    # gcc numbered the statics again: first_user's count.1 is count.2 now, and is the same
    assert ("count.1", "count.2") in done.renamed and ("count.0", "count.1") in done.renamed
    funcs = dict(done.functions)
    assert set(funcs) == {"second_user", "third_user"}
    assert funcs["third_user"] == "new"
    # second_user's static is the kernel's, by the original's name
    assert [(n, s) for n, s, _, _ in done.references] == [
        ("count.0", ".klp.sym.vmlinux.count.0,0")]
    assert dict(done.data) == {"count.0": "new, used by third_user"}


def test_changed_data_is_refused(tmp_path: Path) -> None:
    done, out = run_diff("data", tmp_path)
    assert done.refusals == ("data limits changed (contents at +0x8): the kernel's "
                             "copy is in use, and a livepatch replaces functions only",)
    assert not out.exists()


def test_changed_init_code_is_refused(tmp_path: Path) -> None:
    done, out = run_diff("init", tmp_path)
    assert len(done.refusals) == 1
    assert done.refusals[0].startswith("function setup: init code changed (code at +0x")
    assert done.refusals[0].endswith("init code has run and is freed; a livepatch cannot change it")
    assert not out.exists()


def test_change_in_a_section_no_function_owns_is_refused(tmp_path: Path) -> None:
    done, _ = run_diff("orphan", tmp_path)
    assert done.refusals == ("section .klpelf_test_table changed (contents at +0x0) "
                             "and no function owns it",)  # fmt: skip


KALLSYMS = """ffffffff81000000 T _stext
ffffffff81000100 T compute
ffffffff81001000 t helper
ffffffff81002000 t helper
ffffffff81003000 d counter
ffffffff81004000 D shared_value
"""
SYMVERS = "0x00000000\t__fentry__\tvmlinux\tEXPORT_SYMBOL\t\n" \
          "0x00000000\tshared_value\tvmlinux\tEXPORT_SYMBOL_GPL\t\n"  # fmt: skip


def _kernel(tmp: Path) -> list[str]:
    (tmp / "kallsyms").write_text(KALLSYMS)
    (tmp / "Module.symvers").write_text(SYMVERS)
    return [str(tmp / "kallsyms"), str(tmp / "Module.symvers")]


def test_references_with_the_target_kernel(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path)
    o, p = build("changed", tmp_path)
    with pytest.raises(KlpFormatError, match=r"helper: 2 symbols of that name in vmlinux .*"
                       r"choose one with --sympos vmlinux:helper=N"):  # fmt: skip
        diff(o, p, tmp_path / "x.o", kernel=kernel)
    done = diff(o, p, tmp_path / "x.o", kernel=kernel, sympos=["vmlinux:helper=2"])
    refs = {n: (s, k) for n, s, k, _ in done.references}
    assert refs == {"counter": (".klp.sym.vmlinux.counter,0", "klp"),
                    "helper": (".klp.sym.vmlinux.helper,2", "klp"),
                    "shared_value": ("shared_value", "exported")}  # fmt: skip
    # the klp_func: the kernel's compute, replaced by the new code's global alias
    assert done.klp_funcs == [("compute", 0, "__klpelf_new_changed_compute")]
    rel = relocations(tmp_path / "x.o")
    assert {n for _, n, _ in rel[".text.compute"]} == {
        "__fentry__", "shared_value", ".klp.sym.vmlinux.counter,0", ".klp.sym.vmlinux.helper,2"}


def test_cli_refusal_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    o, p = build("data", tmp_path)
    assert main(["diff", str(o), str(p), "-o", str(tmp_path / "x.o")]) == 1
    err = capsys.readouterr().err
    assert err == f"{p}: refused: data limits changed (contents at +0x8): the kernel's " \
                  "copy is in use, and a livepatch replaces functions only\n"  # fmt: skip
    o, p = build("clones", tmp_path)
    assert main(["diff", "--json", str(o), str(p), "-o", str(tmp_path / "y.o")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "klpelf.diff/1"
    assert problems(doc, j.DiffJson) == []
    assert {f["name"] for f in doc["functions"]} >= {"entry_a", "entry_a.cold", "entry_b"}
    assert main(["diff", str(o), str(tmp_path / "missing.o"), "-o", str(tmp_path / "z.o")]) == 1
    assert "missing.o" in capsys.readouterr().err


def test_special_sections_keep_the_entries_of_included_functions(tmp_path: Path) -> None:
    done, out = run_diff("special", tmp_path)
    assert {f for f, _ in done.functions} == {"alt_b", "load_b", "named"}
    # one __ex_table entry (load_b's, not load_a's), one .altinstructions entry (alt_b's)
    # with the replacement code it points to; none of locked()'s .smp_locks
    assert done.entries == {"__ex_table": 1, ".altinstructions": 1, "__mcount_loc": 3}
    data = dict(done.data)
    assert data[".altinstr_replacement"] == "used by alt_b"
    # __func__ is copied, not looked up among the kernel's many __func__.N
    assert data["__func__.0"] == "read-only bytes, copied for named"
    readelf_clean(out)
    rel = relocations(out)
    assert [n for _, n, _ in rel["__ex_table"]] == [".text.load_b", ".text.load_b"]
    assert [n for _, n, _ in rel[".altinstructions"]] == [".text.alt_b", ".altinstr_replacement"]
    elf = open_elf(out)
    mi = elf.section_by_name(".modinfo")
    assert mi is not None and bytes(mi.data) == b"import_ns=KLPELF_TEST\0"


def _add_prefix_symbols(path: Path) -> None:
    # what objtool does with CONFIG_CALL_PADDING (v6.2+): __pfx_<func> over the padding
    elf = open_elf(path)
    tab = elf.symtab
    assert tab is not None
    for s in [s for s in tab if s.type == STT.FUNC and s.st_value == 16]:
        tab.add_symbol(f"__pfx_{s.name}", st_info=st_info(STB.LOCAL, STT.FUNC),
                       st_shndx=s.st_shndx, st_value=0, st_size=16)  # fmt: skip
    tmp = path.with_suffix(".pfx.o")
    save_elf(elf, tmp)
    tmp.replace(path)


def test_prefix_symbols_and_patchable_entries(tmp_path: Path) -> None:
    flags = [f for f in KERNEL_FLAGS if f not in ("-pg", "-mfentry", "-mrecord-mcount")]
    o, p = build("changed", tmp_path, [*flags, "-fpatchable-function-entry=16,16"])
    for obj in (o, p):
        _add_prefix_symbols(obj)
    out = tmp_path / "pfx.diff.o"
    done = diff(o, p, out)
    assert [f for f, _ in done.functions] == ["compute"]
    assert done.entries == {"__patchable_function_entries": 1}
    readelf_clean(out)
    elf = open_elf(out)
    tab = elf.symtab
    assert tab is not None
    by_name = {s.name: s for s in tab}
    text = elf.section(by_name["compute"].shndx)
    assert (by_name["compute"].st_value, by_name["__pfx_compute"].st_value) == (16, 0)
    assert by_name["__pfx_compute"].shndx == text.index
    # the padding comes along: the entry points at the function's first byte of padding
    pfe = elf.section_by_name("__patchable_function_entries")
    assert pfe is not None and pfe.sh_link == text.index
    assert relocations(out)["__patchable_function_entries"] == [(0, text.name, 0)]


def test_the_facade_names_the_verb() -> None:
    # the steps live in klpelf.objdiff: a subpackage named diff would replace the
    # facade's klpelf.diff function with itself once imported
    import klpelf
    import klpelf.objdiff.emit

    assert klpelf.diff is diff


def test_function_without_ftrace_location_is_refused(tmp_path: Path) -> None:
    done, out = run_diff("notrace", tmp_path)
    assert done.refusals == ("function quiet: the original has no ftrace location (notrace?): "
                             "livepatch cannot redirect it",)  # fmt: skip
    assert not out.exists()


def test_part_clone_changed_alone(tmp_path: Path) -> None:
    done, out = run_diff("part", tmp_path)
    # only the split-off slow path changed: it is replaced on its own (it has an ftrace
    # location); the callers, with the fast path inlined, are the same
    assert [f for f, _ in done.functions] == ["lookup.part.0"]
    assert [(old, pos) for old, pos, _ in done.klp_funcs] == [("lookup.part.0", 0)]
    assert {n for n, _, _, _ in done.references} == {"cache"}
    readelf_clean(out)


def test_removed_data_is_refused_when_others_may_use_it(tmp_path: Path) -> None:
    done, _ = run_diff("removed", tmp_path)
    # the global may be used by other units; the static's only user is replaced
    assert done.refusals == ("data legacy_value removed (global: other code may use it): the "
                             "kernel keeps it; a livepatch cannot remove data",)  # fmt: skip


def test_builds_with_different_flags_are_refused(tmp_path: Path) -> None:
    o, _ = build("changed", tmp_path)
    _, p = build("changed", tmp_path / "plain",
                 [f for f in KERNEL_FLAGS if f != "-ffunction-sections"])  # fmt: skip
    done = diff(o, p, tmp_path / "x.o")
    assert len(done.refusals) == 1
    assert done.refusals[0].endswith("has a section of its own in one build only: ORIG.o and "
                                     "PATCHED.o must be built with the same flags "
                                     "(-ffunction-sections -fdata-sections)")  # fmt: skip
