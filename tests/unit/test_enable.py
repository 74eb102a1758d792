"""klpelf.klp.enable: klp_enable_patch() of the decoded patch, rule by rule in the
kernel's order, with the kernel's messages (kernel/livepatch/core.c, patch.c, state.c)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from klpelf.cli import main
from klpelf.elf.reader import open_elf
from klpelf.klp.check import CheckResult, check_module
from klpelf.klp.enable import LoadedPatch, klp_is_patch_compatible
from klpelf.klp.patch import KlpPatch, KlpState, decode_patches
from klpelf.release import KernelRelease
from klpelf.symbols.ftrace import FilterFunctions, looks_like_filter_functions
from klpelf.symbols.sources import load_sources
from toolchain import MODULE_STRUCT, TARGETS, assemble

X86 = TARGETS[0]


def _patch_source(
    funcs: Sequence[tuple[str, str | None, int]],
    *,
    module_funcs: Sequence[tuple[str, str | None, int]] | None = None,
    states: list[tuple[int, int]] = (),  # type: ignore[assignment]
    replace: bool = False,
    name: str = "lp",
    vermagic: str = "6.1.0-56-amd64 SMP preempt mod_unload modversions",
) -> str:
    """A livepatch module as a hand-written one lays it out: klp_func arrays (old_name,
    new_func, old_sympos and 5 internal words), klp_objects (vmlinux, and klpt_target
    when module_funcs), states, klp_patch; and its .modinfo."""
    strings, text, data = [], [], []
    news: dict[str, str] = {}

    def func_array(label: str, fs: Sequence[tuple[str, str | None, int]]) -> None:
        data.append(f"    .type {label},@object\n{label}:")
        for i, (old, new, pos) in enumerate(fs):
            s = f"s_{label}_{i}"
            strings.append(f'{s}: .string "{old}"')
            if new is not None and new not in news:
                news[new] = new
                text.append(f"    .type {new},@function\n{new}: ret\n    .size {new}, 1")
            data.append(f"    .quad {s}, {new or 0}, {pos}, 0, 0, 0, 0, 0")
        data.append("    .zero 64")
        data.append(f"    .size {label}, {64 * (len(fs) + 1)}")

    func_array("funcs_vm", funcs)
    objs = ["    .quad 0, funcs_vm, 0, 0, 0, 0, 0, 0, 0, 0"]
    if module_funcs is not None:
        func_array("funcs_mod", module_funcs)
        strings.append('s_mod: .string "klpt_target"')
        objs.append("    .quad s_mod, funcs_mod, 0, 0, 0, 0, 0, 0, 0, 0")
    n = len(objs) + 1
    data += ["    .type objs,@object", "objs:", *objs, "    .zero 80", f"    .size objs, {80 * n}"]
    data += ["    .type states,@object", "states:"]
    for sid, ver in states:
        data += [f"    .quad {sid}", f"    .long {ver}, 0", "    .quad 0"]
    data += ["    .zero 24", f"    .size states, {24 * (len(states) + 1)}"]
    data += ["    .type patch,@object", "patch:", "    .quad __this_module, objs, states",
             f"    .byte {int(replace)}", "    .zero 39", "    .size patch, 64"]  # fmt: skip
    modinfo = f"livepatch=Y\\0name={name}\\0vermagic={vermagic}\\0"
    return "\n".join([
        "    .text", *text,
        '    .section .rodata.str1.1,"aMS",@progbits,1', *strings,
        "    .data", *data,
        '    .section .modinfo,"a"', f'    .ascii "{modinfo}"', "",
    ])  # fmt: skip


KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81001000 t cmdline_proc_show
ffffffff81002000 t dup_fn
ffffffff81003000 t dup_fn
ffffffff81004000 T notrace_fn
ffffffff81005000 D some_data
"""

AFF = "cmdline_proc_show\ndup_fn\ndup_fn\n"

# klpt_target.ko, linked from two files: klpt_show, klpt_twice in each (static),
# klpt_cold without a call site in __mcount_loc (notrace)
TARGET_A = """
    .text
    .type klpt_show,@function
klpt_show: call __fentry__
    ret
    .size klpt_show, 6
    .type klpt_twice,@function
klpt_twice: call __fentry__
    ret
    .size klpt_twice, 6
    .type klpt_cold,@function
klpt_cold: ret
    .size klpt_cold, 1
    .section __mcount_loc,"a"
    .quad klpt_show, klpt_twice
    .section .modinfo,"a"
    .ascii "name=klpt_target\\0vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions\\0"
"""
TARGET_B = """
    .text
    .type klpt_twice,@function
klpt_twice: call __fentry__
    ret
    .size klpt_twice, 6
    .section __mcount_loc,"a"
    .quad klpt_twice
"""


def _target(tmp_path: Path, sites: str = "__mcount_loc") -> Path:
    # sites: x86's __mcount_loc, or arm64's __patchable_function_entries (same reading)
    a = assemble(X86, tmp_path / "a.o", TARGET_A.replace("__mcount_loc", sites))
    b = assemble(X86, tmp_path / "b.o", TARGET_B.replace("__mcount_loc", sites))
    out = tmp_path / "klpt_target.ko"
    subprocess.run(["ld", "-r", "-o", str(out), str(a), str(b)], check=True)
    return out


def _module(tmp_path: Path, source: str, name: str = "lp") -> Path:
    return assemble(X86, tmp_path / f"{name}.o", source + MODULE_STRUCT)


def _check(tmp_path: Path, source: str, *, release: str = "6.1", aff: str | None = AFF,
           extra: list[str] = (), loaded_patches: list[LoadedPatch] | None = None,  # type: ignore[assignment]
           ) -> CheckResult:  # fmt: skip
    k = tmp_path / "kallsyms"
    k.write_text(KALLSYMS)
    sources = [str(k), *extra]
    if aff is not None:
        f = tmp_path / "available_filter_functions"
        f.write_text(aff)
        sources.append(str(f))
    ks = load_sources(sources)
    return check_module(open_elf(_module(tmp_path, source)), version=KernelRelease.parse(release),
                        kernel=ks, loaded_patches=loaded_patches)  # fmt: skip


def _kernel(res: CheckResult) -> list[tuple[str, str, str, int | None]]:
    return [(d.when, d.rule, d.dmesg_prefix + d.message, d.errno)
            for d in res.diagnostics if d.kernel]  # fmt: skip


def test_a_good_patch_is_accepted(tmp_path: Path) -> None:
    res = _check(tmp_path, _patch_source([("cmdline_proc_show", "new_show", 0)]))
    assert _kernel(res) == [] and res.kernel_verdict == "accept", res.diagnostics


@pytest.mark.parametrize(
    ("funcs", "message"),
    [
        ([("cmdline_proc_shw", "new_show", 0)],
         "livepatch: symbol 'cmdline_proc_shw' not found in symbol table"),
        ([("dup_fn", "new_dup", 3)],
         "livepatch: symbol position 3 for symbol 'dup_fn' in object 'vmlinux' not found"),
        ([("dup_fn", "new_dup", 0)],
         "livepatch: unresolvable ambiguity for symbol 'dup_fn' in object '(null)'"),
    ],
    ids=["not-found", "sympos", "ambiguous"],
)  # fmt: skip
def test_old_name_is_looked_up_in_vmlinux_at_enable(
    tmp_path: Path, funcs: Sequence[tuple[str, str | None, int]], message: str
) -> None:
    res = _check(tmp_path, _patch_source([("cmdline_proc_show", "new_show", 0), *funcs]))
    assert _kernel(res) == [("enable", "old-name", message, 22)]
    assert res.kernel_verdict == "refuse"


@pytest.mark.parametrize(
    ("release", "message"),
    [("6.1", "livepatch: failed to find location for function 'notrace_fn'"),
     ("5.10", "livepatch: failed to set ftrace filter for function 'notrace_fn' (-22)")],
)  # fmt: skip
def test_a_function_without_ftrace_location(tmp_path: Path, release: str, message: str) -> None:
    source = _patch_source([("cmdline_proc_show", "new_show", 0), ("notrace_fn", "new_n", 0)])
    res = _check(tmp_path, source, release=release)
    assert _kernel(res) == [("enable", "ftrace-location", message, 22)]
    (d,) = [d for d in res.diagnostics if d.kernel]
    assert d.dmesg[1:] == ["livepatch: failed to patch object 'vmlinux'",
                           "livepatch: failed to enable patch 'lp'"]  # fmt: skip
    # no source that can tell: nothing is said
    assert _kernel(_check(tmp_path, source, release=release, aff=None)) == []


def test_ftrace_needs_text_and_every_same_named_record(tmp_path: Path) -> None:
    # some_data is no function; dup_fn,2 is listed twice for two functions: traced
    res = _check(tmp_path, _patch_source([("dup_fn", "new_d", 2), ("some_data", "new_s", 0)]))
    missing = "livepatch: failed to find location for function 'some_data'"
    assert _kernel(res) == [("enable", "ftrace-location", missing, 22)]
    # one record for two dup_fn: the plain list cannot tell which
    res = _check(tmp_path, _patch_source([("dup_fn", "new_d", 2)]), aff="dup_fn\n")
    assert _kernel(res) == []
    # with addresses it can
    addrs = "ffffffff81002000 dup_fn\n"
    res = _check(tmp_path, _patch_source([("dup_fn", "new_d", 2)]), aff=addrs)
    assert [m for _, _, m, _ in _kernel(res)] == [
        "livepatch: failed to find location for function 'dup_fn'"
    ]
    assert _kernel(_check(tmp_path, _patch_source([("dup_fn", "new_d", 1)]), aff=addrs)) == []


def test_lookups_come_before_ftrace(tmp_path: Path) -> None:
    # klp_init_patch() looks every function up before __klp_enable_patch() registers any
    source = _patch_source([("notrace_fn", "new_n", 0), ("nope", "new_x", 0)])
    assert [r for _, r, _, _ in _kernel(_check(tmp_path, source))] == ["old-name"]


def test_duplicate_function_is_a_sysfs_clash(tmp_path: Path) -> None:
    # old_sympos 0 and 1 are both "cmdline_proc_show,1" in sysfs
    source = _patch_source([("cmdline_proc_show", "new_a", 0), ("cmdline_proc_show", "new_b", 1)])
    path = "/kernel/livepatch/lp/vmlinux/cmdline_proc_show,1"
    assert _kernel(_check(tmp_path, source)) == [
        ("enable", "sysfs-duplicate", f"sysfs: cannot create duplicate filename '{path}'", 17)
    ]


def test_silent_structure_checks(tmp_path: Path) -> None:
    res = _check(tmp_path, _patch_source([("cmdline_proc_show", None, 0)]))
    (d,) = [d for d in res.diagnostics if d.kernel]
    assert (d.rule, d.errno, d.logged) == ("func-new-func", 22, False)
    long = "f" * 128
    res = _check(tmp_path, _patch_source([(long, "new_l", 0)]), release="5.10")
    (d,) = [d for d in res.diagnostics if d.kernel]
    assert (d.rule, d.logged) == ("func-name-length", False) and "KSYM_NAME_LEN is 128" in d.message
    # 6.1's KSYM_NAME_LEN is 512: the lookup is what fails
    res = _check(tmp_path, _patch_source([(long, "new_l", 0)]), release="6.1")
    assert [r for _, r, _, _ in _kernel(res)] == ["old-name"]


@pytest.mark.parametrize("sites", ["__mcount_loc", "__patchable_function_entries"])
def test_module_object_is_judged_when_it_loads(tmp_path: Path, sites: str) -> None:
    target = _target(tmp_path, sites)
    good = [("klpt_show", "new_show", 0), ("klpt_twice", "new_twice", 2)]
    source = _patch_source([("cmdline_proc_show", "new_c", 0)], module_funcs=good)
    res = _check(tmp_path, source, extra=[str(target)])
    assert _kernel(res) == [] and res.kernel_verdict == "accept", res.diagnostics
    for funcs, rule, message in [
        ([("klpt_twice", "new_twice", 3)], "old-name",
         "livepatch: symbol position 3 for symbol 'klpt_twice' in object 'klpt_target' not found"),
        ([("klpt_cold", "new_cold", 0)], "ftrace-location",
         "livepatch: failed to find location for function 'klpt_cold'"),
    ]:  # fmt: skip
        source = _patch_source([("cmdline_proc_show", "new_c", 0)], module_funcs=funcs)
        res = _check(tmp_path, source, extra=[str(target)])
        # the livepatch loads; the target module's load is refused
        assert res.kernel_verdict == "accept"
        assert _kernel(res) == [("target-load", rule, message, 22)]
        if rule == "ftrace-location":
            (d,) = [d for d in res.diagnostics if d.kernel]
            assert d.more == ("failed to apply patch 'lp' to module 'klpt_target' (-22)",
                              "patch 'lp' failed for module 'klpt_target', refusing to load "
                              "module 'klpt_target'")  # fmt: skip
    # without the module file nothing can be said about it
    source = _patch_source([("cmdline_proc_show", "new_c", 0)], module_funcs=[("x", "new_x", 0)])
    assert _kernel(_check(tmp_path, source)) == []


def _loaded(states: list[tuple[int, int]], replace: bool = False) -> LoadedPatch:
    kept = [KlpState(i, v) for i, v in states]
    return LoadedPatch("old", KlpPatch("klp_patch", "patch", [], kept, replace, []))


def test_states_against_the_loaded_patches(tmp_path: Path) -> None:
    msg = (
        "livepatch: Livepatch patch (lp) is not compatible with the already installed livepatches."
    )
    funcs = [("cmdline_proc_show", "new_show", 0)]
    for states, replace, old, ok in [
        ([(7, 2)], False, [(7, 1)], True),
        ([(7, 2)], False, [(7, 3)], False),  # a lower version
        ([], False, [(7, 3)], True),  # not cumulative: may leave a state alone
        ([], True, [(7, 3)], False),  # cumulative: must handle every state
        ([(7, 3)], True, [(7, 3)], True),
    ]:
        res = _check(tmp_path, _patch_source(funcs, states=states, replace=replace),
                     loaded_patches=[_loaded(old)])  # fmt: skip
        assert (_kernel(res) == []) is ok, (states, replace, old)
        if not ok:
            assert _kernel(res) == [("enable", "patch-compatible", msg, 22)]
    (p,) = decode_patches(open_elf(_module(tmp_path, _patch_source(funcs, states=[(7, 2)]))))
    assert klp_is_patch_compatible(p, [_loaded([(7, 2)]), _loaded([(8, 1)])])


def test_empty_object_is_klpelfs_warning(tmp_path: Path) -> None:
    source = _patch_source([("cmdline_proc_show", "new_show", 0)], module_funcs=[])
    res = _check(tmp_path, source)
    (d,) = [d for d in res.diagnostics if d.rule == "empty-object"]
    assert d.severity == "warning" and not d.kernel and "'klpt_target'" in d.message


def test_filter_functions_source(tmp_path: Path) -> None:
    assert looks_like_filter_functions(b"a\nb [ext4]\n")
    assert looks_like_filter_functions(b"ffffffff81000000 fa\nffffffffc0000000 fb [ext4]\n")
    assert not looks_like_filter_functions(b"ffffffff81000000 T a\n")
    assert not looks_like_filter_functions(b"0x12345678\tfoo\tvmlinux\tEXPORT_SYMBOL\n")
    assert not looks_like_filter_functions(b"\x7fELF\x02\x01")
    assert not looks_like_filter_functions(b"x" * 2000)
    ff = FilterFunctions(b"a\nb [ext4]\nb [ext4]\n__ftrace_invalid_address___64\nc\n", "f")
    ff.prefetch(["a", "b", "c", "d"])
    asked = [(None, "a"), ("ext4", "b"), (None, "b"), (None, "d"), (None, "c"), (None, "e")]
    assert [ff.count(m, n) for m, n in asked] == [1, 2, 0, 0, 1, 0]
    assert ff.lists("vmlinux") and ff.lists("ext4") and not ff.lists("xfs") and len(ff) == 5
    f = tmp_path / "aff"
    f.write_text("a\nx\nb c d\n")
    with pytest.raises(Exception, match=r"aff:3: expected 'NAME'"):
        load_sources([f"ftrace:{f}"])
    f.write_text("ffffffff81000000 T a\n")
    with pytest.raises(Exception, match=r"aff:1: expected 'NAME'"):
        load_sources([f"ftrace:{f}"])
    f.write_text(AFF)
    ks = load_sources([str(f)])
    assert ks.ftrace is not None and len(ks.ftrace) == 3
    assert "available_filter_functions, 3 functions" in ks.description


def test_cli_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = _module(tmp_path, _patch_source([("cmdline_proc_show", "new_show", 0)],
                                          states=[(7, 3)], name="old"), "old")  # fmt: skip
    new = _module(tmp_path, _patch_source([("cmdline_proc_show", "new_show", 0)],
                                          states=[(7, 2)]))  # fmt: skip
    k = tmp_path / "kallsyms"
    k.write_text(KALLSYMS)
    assert main(["check", "-k", str(k), "--loaded", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert (
        "would refuse the module in klp_enable_patch() (the module's init) (errno 22): "
        "livepatch: Livepatch patch (lp) is not compatible" in out
    )
    assert main(["check", "-k", str(k), str(new)]) == 0
    capsys.readouterr()
    plain = assemble(X86, tmp_path / "plain.o")
    assert main(["check", "-k", str(k), "--loaded", str(plain), str(new)]) == 1
    assert "plain.o: --loaded: 0 livepatches decoded" in capsys.readouterr().err


VMLINUX = """
    .text
    .globl _stext, cmdline_proc_show, endbr_fn, notrace_fn
    .type _stext,@function
_stext: ret
    .size _stext, 1
    .balign 16
    .type cmdline_proc_show,@function
cmdline_proc_show: call cmdline_proc_show
    ret
    .size cmdline_proc_show, 6
    .balign 16
    .type endbr_fn,@function
endbr_fn: endbr64
endbr_site: call endbr_fn
    ret
    .size endbr_fn, 10
    .balign 16
    .type notrace_fn,@function
notrace_fn: ret
    .size notrace_fn, 1
    .section __mcount_loc,"a"
    .quad cmdline_proc_show, endbr_site
"""


def test_vmlinux_elf_mcount_loc(tmp_path: Path) -> None:
    # a linked vmlinux's __mcount_loc holds the call sites' addresses; since 5.18 the
    # site may be inside the function (after endbr64), before only at its address
    obj = assemble(X86, tmp_path / "vmlinux.o", VMLINUX)
    vmlinux = tmp_path / "vmlinux"
    subprocess.run(["ld", "-o", str(vmlinux), "-e", "_stext", "-Ttext=0xffffffff81000000",
                    str(obj)], check=True)  # fmt: skip
    ks = load_sources([str(vmlinux)])
    lp = open_elf(_module(tmp_path, _patch_source([("cmdline_proc_show", "n1", 0),
                                                   ("endbr_fn", "n2", 0)])))  # fmt: skip
    v61, v510 = KernelRelease(6, 1), KernelRelease(5, 10)
    assert _kernel(check_module(lp, version=v61, kernel=ks)) == []
    assert [m for _, _, m, _ in _kernel(check_module(lp, version=v510, kernel=ks))] == [
        "livepatch: failed to set ftrace filter for function 'endbr_fn' (-22)"
    ]
    lp = open_elf(_module(tmp_path, _patch_source([("notrace_fn", "n3", 0)])))
    assert [m for _, _, m, _ in _kernel(check_module(lp, version=v61, kernel=ks))] == [
        "livepatch: failed to find location for function 'notrace_fn'"
    ]


def test_object_without_funcs_array(tmp_path: Path) -> None:
    # klp_init_patch_early(): a named static object whose funcs is NULL
    source = _patch_source([("cmdline_proc_show", "new_show", 0)], module_funcs=[])
    source = source.replace("    .quad s_mod, funcs_mod,", "    .quad s_mod, 0,")
    (p,) = decode_patches(open_elf(_module(tmp_path, source)))
    assert [o.funcs_null for o in p.objects] == [False, True]
    res = _check(tmp_path, source)
    (d,) = [d for d in res.diagnostics if d.kernel]
    assert (d.rule, d.when, d.errno, d.logged) == ("object-funcs", "enable", 22, False)
    assert "'klpt_target'" in d.message and "without a message" in d.message
