"""Every case's verdict and kernel messages, and the patched code's effect, on a real kernel.

The VM run (one boot for all cases) happens once per kernel release in the ``suite``
fixture (conftest.py); the expected verdicts are data: tests/kernel/expected/.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from kernel.conftest import require
from kernel.klpvm.build import AUTO_MODULES
from kernel.klpvm.cases import (
    ACPI_PARAM,
    BOOT_CMDLINE,
    CASES_BY_NAME,
    CaseResult,
    expected_for,
    messages_match,
)
from kernel.klpvm.mutate import LONG_NAME
from kernel.klpvm.suite import SuiteResult, kallsyms_path
from klpelf.elf.constants import SHN
from klpelf.elf.reader import open_elf
from klpelf.klp.check import check_module

pytestmark = pytest.mark.kernel


def _errno_name(n: int | None) -> str:
    if n is None:
        return "did not run"
    if n == 0:
        return "0 (loaded)"
    return f"{n} ({errno.errorcode.get(n, '?')})"


def _case(suite: SuiteResult, name: str) -> CaseResult:
    require(suite)
    res = suite.cases.get(name)
    if res is None or not res.ran:
        pytest.fail(f"case {name} did not run to the end on {suite.spec.release}")
    return res


def test_vm_run(suite: SuiteResult) -> None:
    """The VM booted, ran every case and powered off by itself."""
    assert suite.error is None, suite.error
    missing = [c for c in CASES_BY_NAME if c not in suite.cases or not suite.cases[c].ran]
    assert not missing, f"cases that did not run to the end: {missing}"
    boots = ", ".join(f"{b.seconds:.1f} s" for b in suite.boots)
    if suite.kallsyms_boot is not None:
        boots += f" (+ {suite.kallsyms_boot.seconds:.1f} s dumping kallsyms for klpelf convert)"
    print(
        f"{suite.spec.release}: build {suite.build_seconds:.1f} s, boots {boots}, "
        f"total {suite.total_seconds:.1f} s"
    )


def test_kallsyms_dumped(suite: SuiteResult) -> None:
    """The VM's /proc/kallsyms, with real addresses, is saved for the other tests."""
    require(suite)
    text = suite.kallsyms.read_text()
    lines = text.splitlines()
    assert len(lines) > 10000
    names: dict[str, list[int]] = {}
    for line in lines:
        addr, _, name = line.split(" ", 2)
        names.setdefault(name, []).append(int(addr, 16))
    assert names["cmdline_proc_show"][0] != 0, "addresses are hidden (kptr_restrict)"
    assert len(names["max_cstate"]) == 2, "the sympos case needs two max_cstate in vmlinux"
    assert kallsyms_path(suite.spec.release).read_text() == text
    mods = kallsyms_path(suite.spec.release, "kallsyms.modules").read_text()
    assert re.search(r" klpt_target_secret\t\[klpt_target\]$", mods, re.M)


def test_verdict(suite: SuiteResult, case_name: str) -> None:
    """The kernel's verdict (finit_module errno) and messages equal the expected data."""
    res = _case(suite, case_name)
    case = res.case
    setup = res.setup_failures()
    assert not setup, f"case {case_name}: a setup step failed: {setup}; log: {res.dmesg}"
    series = suite.spec.series
    expected = expected_for(series).get(case_name)
    observed = "\n".join(f"    {m}" for m in res.messages) or "    (none)"
    if expected is None:
        pytest.fail(
            f"no expected verdict for case {case_name} on Linux {series}: add it to "
            f"tests/kernel/expected/{series}.json (KLPELF_KERNEL_UPDATE=1 writes it). "
            f"Observed: errno {_errno_name(res.errno)}, messages:\n{observed}"
        )
    problems = []
    if res.errno != expected.errno:
        problems.append(
            f"  errno: expected {_errno_name(expected.errno)}, observed {_errno_name(res.errno)}"
        )
    if not messages_match(expected.messages, res.messages):
        exp = "\n".join(f"    {m}" for m in expected.messages) or "    (none)"
        problems.append(f"  messages expected:\n{exp}\n  messages observed:\n{observed}")
    if problems:
        pytest.fail(
            f"case {case_name} ({case.doc}) on {suite.spec.release} disagrees with "
            f"expected/{expected.source}:\n" + "\n".join(problems),
            pytrace=False,
        )


def _patched_lines(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def test_vmlinux_patch_reads_unexported_symbols(suite: SuiteResult) -> None:
    """(a) /proc/cmdline, patched, shows saved_command_line and total_forks read via klp relocs."""
    res = _case(suite, "vmlinux_patch")
    original, patched = res.output(0), res.output(2)
    assert patched.startswith("klpt_vmlinux: patched\n"), patched
    values = _patched_lines(patched)
    assert values["cmdline"] == original.rstrip("\n")
    assert int(values["total_forks"]) > 0


def test_sympos_picks_each_instance(suite: SuiteResult) -> None:
    """(c) max_cstate,1 is intel_idle's and max_cstate,2 processor_idle's: the values the
    patched code read equal each module parameter, and the boot made them differ."""
    res = _case(suite, "vmlinux_patch")
    m = re.search(r"^max_cstate intel_idle=(\d+) processor=(\d+)$", res.output(2), re.M)
    assert m, res.output(2)
    intel_idle = int(res.output(3))
    if res.steps[4].rc == 0:
        processor = int(res.output(4))
    else:
        # processor.max_cstate has mode 0 before Linux 5.12 (not in sysfs): the value
        # the VM booted with is the reference
        assert suite.spec.version_key < (5, 12), f"{ACPI_PARAM} unreadable"
        boot = re.search(r"\bprocessor\.max_cstate=(\d+)", BOOT_CMDLINE)
        assert boot
        processor = int(boot[1])
    assert intel_idle != processor
    assert (int(m[1]), int(m[2])) == (intel_idle, processor)


def test_auto_convert_reads_unexported_symbols(suite: SuiteResult) -> None:
    """klpelf convert's automatic mode: the plain externs total_forks, nr_threads and
    max_cstate (--sympos vmlinux:max_cstate=1: intel_idle's) resolve in the kernel."""
    res = _case(suite, "auto_convert")
    patched = res.output(1)
    assert patched.startswith("klpt_auto: patched\n"), patched
    values = _patched_lines(patched)
    assert int(values["total_forks"]) > 0
    assert int(values["nr_threads"]) > 0
    assert int(values["max_cstate"]) == int(res.output(2))


def _vmlinux_names(kallsyms: Path) -> list[str]:
    return [line.split()[2] for line in kallsyms.read_text().splitlines() if "\t[" not in line]


def test_auto_convert_symbols(suite: SuiteResult) -> None:
    """The automatic mode made livepatch symbols of exactly the non-exported references,
    with the positions of the kallsyms it was given, which lists the vmlinux symbols of
    the booted kernel in the booted kernel's order (the sympos the kernel resolves)."""
    require(suite)
    assert suite.modules is not None and suite.convert_kallsyms is not None
    elf = open_elf(suite.modules.modules["klpt_auto"])
    tab = elf.symtab
    assert tab is not None
    klp = sorted(s.name for s in tab if s.st_shndx == SHN.LIVEPATCH)
    assert klp == [
        ".klp.sym.vmlinux.max_cstate,1",
        ".klp.sym.vmlinux.nr_threads,0",
        ".klp.sym.vmlinux.total_forks,0",
    ]
    assert AUTO_MODULES["klpt_auto"] == ("vmlinux:max_cstate=1",)
    symvers = suite.spec.host_build_dir / "Module.symvers"
    exported = {line.split("\t")[1] for line in symvers.read_text().splitlines() if line}
    undef = {s.name for s in tab if s.st_shndx == SHN.UNDEF and s.name}
    assert undef and undef <= exported, undef - exported
    assert _vmlinux_names(suite.convert_kallsyms) == _vmlinux_names(suite.kallsyms)


def test_late_module_patch(suite: SuiteResult) -> None:
    """(b) the klp relocation into klpt_target, applied when it loaded after the patch, works."""
    res = _case(suite, "late_module_patch")
    assert res.output(2) == "klpt_late: patched secret=4242\n"
    assert "livepatch: applying patch 'klpt_late' to loading module 'klpt_target'" in res.dmesg


def test_reloaded_target_is_patched_again(suite: SuiteResult) -> None:
    """Where the kernel lets klpt_target load again under klpt_late (6.3+: the relocations
    were cleared when it unloaded), the new copy is patched: the relocation into it was
    applied once more."""
    res = _case(suite, "reload_target")
    if res.errno != 0:
        pytest.skip(f"Linux {suite.spec.series} refuses the reload (errno {res.errno})")
    assert res.output(2) == "klpt_late: patched secret=4242\n"


def test_long_symbol_name_resolves(suite: SuiteResult) -> None:
    """Where the kernel takes a 134-byte klp symbol name (6.1+: KSYM_NAME_LEN 512), the
    relocation reads the variable with that name (4343), not klpt_target_secret (4242)."""
    res = _case(suite, "sym_long_name")
    assert len(LONG_NAME) > 127
    if res.errno != 0:
        pytest.skip(f"Linux {suite.spec.series} refuses the name (errno {res.errno})")
    assert res.output(1) == "klpt_late: patched secret=4343\n"


@pytest.mark.parametrize(
    "name", ["ok_sympos1_unique", "ok_sec_suffix", "ok_modinfo_n", "ok_klp_sec_rel"]
)
def test_accepted_variants_patch(suite: SuiteResult, name: str) -> None:
    """The oddities the kernel accepts patch exactly as the original module does."""
    res = _case(suite, name)
    good = _patched_lines(_case(suite, "vmlinux_patch").output(2))
    mine = _patched_lines(res.output(1))
    assert mine.keys() == good.keys()
    assert mine["cmdline"] == good["cmdline"]
    assert mine["max_cstate intel_idle"] == good["max_cstate intel_idle"]
    assert int(mine["total_forks"]) >= int(good["total_forks"])


def test_unflagged_klp_section_oopses(suite: SuiteResult) -> None:
    """Loaded without SHF_RELA_LIVEPATCH, the relocations point at address 0: reading
    /proc/cmdline kills the reader with an oops (and the VM still brought results back)."""
    res = _case(suite, "sec_not_flagged")
    assert res.errno == 0
    assert res.steps[1].rc != 0
    assert any(line.startswith("BUG: kernel NULL pointer dereference") for line in res.dmesg)


def test_two_objects_sysfs_is_the_decode(suite: SuiteResult) -> None:
    """The patch of two objects: /sys/kernel/livepatch/klpt_objs/<object>/<function,sympos>
    lists exactly what klpelf decodes from the module (objects, old_name, old_sympos ?: 1);
    the patched code runs (the shadow variable from the pre_patch callback, klpt_dup's
    static variable through the module object's klp relocation, klpt_dup_fn,2 replaced)."""
    from klpelf.klp.patch import decode_patches

    res = _case(suite, "two_objects")
    assert res.errno == 0
    assert suite.modules is not None
    (patch,) = decode_patches(open_elf(suite.modules.modules["klpt_objs"]))
    decoded = sorted(f"{o.objname}/{f.old_name},{f.old_sympos or 1}"
                     for o in patch.objects for f in o.funcs)  # fmt: skip
    assert decoded == ["klpt_dup/klpt_dup_fn,2", "vmlinux/cmdline_proc_show,1"]
    assert sorted(res.output(4).split()) == decoded
    assert res.output(5) == "klpt_objs: shadow=7 klpt_dup_val=1\n"
    assert res.output(6) == "klpt_dup: a=1 b=42 cold=3\n"


def test_undeclared_object_section_is_never_applied(suite: SuiteResult) -> None:
    """The kernel loads a patch with a .klp.rela.klpt_dup. section and no klpt_dup object
    (klpt_dup loaded): nothing applies the section, the pointer it should write stays
    NULL, as `klpelf check`'s undeclared-object-section error says."""
    res = _case(suite, "enable_undeclared")
    assert res.errno == 0
    assert res.output(1) == (
        "klpt_e_undeclared: shadow=7 klpt_dup_val pointer never relocated (NULL)\n"
    )
    assert suite.modules is not None
    got = check_module(open_elf(suite.modules.modules["klpt_e_undeclared"]))
    never = [d.section.name for d in got.errors
             if d.rule == "undeclared-object-section" and d.section]  # fmt: skip
    assert never == [".klp.rela.klpt_dup.rodata"]


def test_replace_patch_replaces_every_livepatch(suite: SuiteResult) -> None:
    """klpt_e_replace (atomic replace, klpt_objs' state at a higher version) is accepted
    and leaves itself alone in /sys/kernel/livepatch; klpt_e_states (replace, without
    that state) was refused by klp_is_patch_compatible()."""
    res = _case(suite, "enable_replace")
    assert res.errno == 0
    assert res.output(1) == "klpt_e_replace: shadow=7 klpt_dup_val=1\n"
    assert res.output(2).split() == ["klpt_e_replace"]
    states = _case(suite, "enable_states")
    assert states.errno == errno.EINVAL
