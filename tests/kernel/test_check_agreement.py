"""`klpelf check` agrees with the booted kernel, case by case.

For every case whose verdict is one module's load (``Case.module``), run
``klpelf check --json --kernel-release <release> --kernel kallsyms:<the VM's
/proc/kallsyms> --kernel symvers:<its Module.symvers> --kernel modules:<its module
tree> MODULE`` on the very file the VM loaded and compare with what the kernel
did:

* the verdict: ``accept`` when finit_module returned 0, ``refuse`` otherwise (or the
  case's ``check_verdict``); for a case whose verdict is a later event (``check_rule``:
  reloading the late-patched module), whether the check gives that rule's diagnostic;
* when refused, the first error diagnostic's message is one of the kernel's messages of
  that case (each of its lines, in order, when the kernel prints several): the
  ``livepatch: `` prefix and any other leading ``<word>: `` prefix of the dmesg line
  (``module: ``) are optional, hashed pointers are normalized, and a
  ``<placeholder>`` in the check's message (``loc <loc>``) stands for one word;
* when refused and the kernel logged nothing relevant, the first error diagnostic says
  so (``without a message``);
* the ``errno`` of the module's result, when the JSON has one, equals the kernel's.

``--kernel-release`` names the VM's release, so every case is judged by the rules and
wording of that release; the JSON must say so.  ``test_release_from_vermagic`` checks
the default (the release in the module's vermagic).  The results go to the matrix
table (tests/kernel/out/matrix.md).

Skipped only while ``klpelf check`` does not exist.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from kernel.conftest import require
from kernel.klpvm.cases import CASES_BY_NAME, Case, normalize
from kernel.klpvm.matrix import MatrixReport
from kernel.klpvm.suite import SuiteResult
from kernel.klpvm.vm import KernelSpec

pytestmark = pytest.mark.kernel

#: how `klpelf check` words a refusal the kernel does not log (e.g. a bad ELF header
#: type before Linux 5.16)
SILENT = "without a message"
_PLACEHOLDER = re.compile(r"<[^<>\s]+>")
_PREFIX = re.compile(r"^[\w/.-]+: ")


@pytest.fixture(scope="session")
def klpelf_check() -> list[str]:
    cmd = [sys.executable, "-m", "klpelf", "check"]
    res = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip("klpelf check is not implemented yet (`klpelf check --help` fails)")
    return cmd


def check_json(cmd: list[str], kallsyms: Path, module: Path, release: str | None,
               spec: KernelSpec | None = None, ftrace: Path | None = None,
               loaded: Sequence[Path] = ()) -> dict[str, Any]:  # fmt: skip
    opt = ["--kernel-release", release] if release else []
    if ftrace is not None:  # the VM's available_filter_functions
        opt += ["--kernel", f"ftrace:{ftrace}"]
    for lp in loaded:  # the livepatches enabled in the VM whose states count
        opt += ["--loaded", str(lp)]
    # the kind named: a module-free dump of 6.12+ lists kallsyms' own tables, which
    # content detection takes for System.map
    sources = ["--kernel", f"kallsyms:{kallsyms}"]
    if spec is not None:
        # what the loader's own checks need, as a user gives them: the kernel's
        # Module.symvers (exports and their CRCs) and its module tree (its vermagic)
        sources += ["--kernel", f"symvers:{spec.host_build_dir / 'Module.symvers'}",
                    "--kernel", f"modules:{spec.modules_dir}"]  # fmt: skip
    full = [*cmd, "--json", *opt, *sources, str(module)]
    res = subprocess.run(full, capture_output=True, text=True, check=False)
    try:
        doc: dict[str, Any] | None = json.loads(res.stdout)
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        pytest.fail(
            f"`{' '.join(full)}` exited {res.returncode} without JSON:\n"
            f"{res.stdout[-2000:]}{res.stderr[-2000:]}",
            pytrace=False,
        )
    assert doc.get("schema") == "klpelf.check/2", doc.get("schema")
    mods = doc["modules"]
    assert len(mods) == 1, mods
    out: dict[str, Any] = mods[0]
    return out


def check_pattern(message: str) -> re.Pattern[str]:
    """The check's message as a regex; ``<placeholder>`` matches one word, or one
    normalized value of the kernel's message (``<module address>``: since 6.3 the x86
    messages print S+A-P as ``val``, which can fall in the module area's range)."""
    parts = [re.escape(normalize(p)) for p in _PLACEHOLDER.split(message)]
    return re.compile(r"(?:<[^<>]+>|[^\s,]+)".join(parts))


def matches_kernel(message: str, kernel_messages: list[str]) -> bool:
    """Every line of ``message`` (the JSON joins the lines of a message the kernel
    prints in several pr_err() calls with "\\n": x86's overflow) is one of the kernel's
    messages, in order."""
    at = 0
    for want in message.split("\n"):
        pat = check_pattern(want)
        for i in range(at, len(kernel_messages)):
            bare = kernel_messages[i].removeprefix("livepatch: ")
            if pat.fullmatch(bare) or pat.fullmatch(_PREFIX.sub("", bare, count=1)):
                at = i + 1
                break
        else:
            return False
    return True


def quotes_kernel(message: str, kernel_messages: list[str]) -> bool:
    """Some ``": "``-separated tail of ``message`` is one of the kernel's messages (a
    warning that explains, then quotes what the kernel will print)."""
    parts = message.split(": ")
    return any(matches_kernel(": ".join(parts[i:]), kernel_messages) for i in range(len(parts)))


def prediction(case: Case, got: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """`klpelf check`'s verdict for ``case`` and the diagnostic that carries its message."""
    diags: list[dict[str, Any]] = got.get("diagnostics", [])
    if case.check_rule:
        hits = [d for d in diags if d.get("rule") == case.check_rule]
        return ("refuse", hits[0]) if hits else ("accept", None)
    errors = [d for d in diags if d.get("severity") == "error" and d.get("kernel") is not False]
    return str(got.get("verdict")), errors[0] if errors else None


def test_check_agrees_with_kernel(
    suite: SuiteResult, klpelf_check: list[str], checked_case: str, report: MatrixReport
) -> None:
    """`klpelf check --kernel-release <the VM's release>` predicts the kernel's verdict
    and message text, case by case."""
    require(suite)
    case = CASES_BY_NAME[checked_case]
    res = suite.cases[checked_case]
    assert res.ran and case.module is not None and suite.modules is not None
    module = suite.modules.modules[case.module]
    kernel_verdict = "accept" if res.errno == 0 else "refuse"
    want = case.check_verdict or kernel_verdict
    loaded = [suite.modules.modules[m] for m in case.loaded]
    got = check_json(klpelf_check, suite.kallsyms_for(case), module, suite.spec.release,
                     suite.spec, suite.ftrace_for(case), loaded)  # fmt: skip
    verdict, diag = prediction(case, got)
    message = str(diag["message"]) if diag else ""
    diags = got.get("diagnostics", [])
    shown = "\n".join(f"    {d.get('severity')}: {d.get('message')}" for d in diags) or "    (none)"
    kernel = "\n".join(f"    {m}" for m in res.messages) or "    (none)"
    context = (
        f"case {checked_case} ({case.doc}) on {suite.spec.release}:\n"
        f"  kernel: errno {res.errno}, messages:\n{kernel}\n"
        f"  klpelf check: verdict {verdict}, diagnostics:\n{shown}"
    )
    problems = []
    if got.get("kernel_release") != suite.spec.series:
        problems.append(f"check judged for Linux {got.get('kernel_release')}")
    if verdict != want:
        problems.append(f"verdict: expected {want}")
    if kernel_verdict == "refuse" and want == "refuse" and verdict == "refuse":
        if diag is None:
            problems.append("refused without an error diagnostic")
        elif not res.messages:
            if SILENT not in message:
                problems.append(
                    f"the kernel printed nothing; the diagnostic does not say {SILENT!r}"
                )
        elif not (matches_kernel(message, res.messages) or quotes_kernel(message, res.messages)):
            problems.append("the diagnostic is not the kernel's message")
        errno_ = diag.get("errno") if case.check_rule and diag else got.get("errno")
        if errno_ is not None and errno_ != res.errno:
            problems.append(f"errno: check {errno_}, kernel {res.errno}")
    report.predict(suite.spec.series, checked_case, verdict, message, not problems)
    assert not problems, "; ".join(problems) + "\n" + context


def test_release_from_vermagic(suite: SuiteResult, klpelf_check: list[str]) -> None:
    """Without --kernel-release, `klpelf check` takes the release from the module's
    vermagic, which kbuild wrote for this kernel."""
    require(suite)
    assert suite.modules is not None
    module = suite.modules.modules["klpt_vmlinux"]
    got = check_json(klpelf_check, suite.kallsyms, module, None)
    assert got["release_source"] == "vermagic"
    assert got["kernel_release"] == suite.spec.series
    assert got["verdict"] == "accept", got["diagnostics"]
