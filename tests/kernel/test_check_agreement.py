"""`klpelf check` agrees with the booted kernel, case by case.

For every case whose verdict is one module's load (``Case.module``), run
``klpelf check --json --kernel <the VM's /proc/kallsyms> MODULE`` on the very file the
VM loaded and compare with what the kernel did:

* the verdict: ``accept`` when finit_module returned 0, ``refuse`` otherwise (or the
  case's ``check_verdict``);
* when refused, the first error diagnostic's message is one of the kernel's messages of
  that case: the ``livepatch: `` prefix and any other leading ``<word>: `` prefix of the
  dmesg line (``module: ``) are optional, hashed pointers are normalized, and a
  ``<placeholder>`` in the check's message (``loc <loc>``) stands for one word;
* the ``errno`` of the module's result, when the JSON has one, equals the kernel's.

Skipped only while ``klpelf check`` does not exist.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kernel.conftest import require
from kernel.klpvm.cases import CASES_BY_NAME, normalize
from kernel.klpvm.suite import SuiteResult

pytestmark = pytest.mark.kernel

_PLACEHOLDER = re.compile(r"<[^<>\s]+>")
_PREFIX = re.compile(r"^[\w/.-]+: ")


@pytest.fixture(scope="session")
def klpelf_check() -> list[str]:
    cmd = [sys.executable, "-m", "klpelf", "check"]
    res = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip("klpelf check is not implemented yet (`klpelf check --help` fails)")
    return cmd


def check_json(cmd: list[str], kallsyms: Path, module: Path) -> dict[str, Any]:
    full = [*cmd, "--json", "--kernel", str(kallsyms), str(module)]
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
    assert doc.get("schema") == "klpelf.check/1", doc.get("schema")
    mods = doc["modules"]
    assert len(mods) == 1, mods
    out: dict[str, Any] = mods[0]
    return out


def check_pattern(message: str) -> re.Pattern[str]:
    """The check's message as a regex; ``<placeholder>`` matches one word."""
    parts = [re.escape(normalize(p)) for p in _PLACEHOLDER.split(message)]
    return re.compile(r"[^\s,]+".join(parts))


def matches_kernel(message: str, kernel_messages: list[str]) -> bool:
    pat = check_pattern(message)
    for line in kernel_messages:
        bare = line.removeprefix("livepatch: ")
        if pat.fullmatch(bare) or pat.fullmatch(_PREFIX.sub("", bare, count=1)):
            return True
    return False


def test_check_agrees_with_kernel(
    suite: SuiteResult, klpelf_check: list[str], checked_case: str
) -> None:
    require(suite)
    case = CASES_BY_NAME[checked_case]
    res = suite.cases[checked_case]
    assert res.ran and case.module is not None and suite.modules is not None
    module = suite.modules.modules[case.module]
    kernel_verdict = "accept" if res.errno == 0 else "refuse"
    want = case.check_verdict or kernel_verdict
    got = check_json(klpelf_check, suite.kallsyms_for(case), module)
    diags = got.get("diagnostics", [])
    shown = "\n".join(f"    {d.get('severity')}: {d.get('message')}" for d in diags) or "    (none)"
    kernel = "\n".join(f"    {m}" for m in res.messages) or "    (none)"
    context = (
        f"case {checked_case} ({case.doc}) on {suite.spec.release}:\n"
        f"  kernel: errno {res.errno}, messages:\n{kernel}\n"
        f"  klpelf check: verdict {got.get('verdict')}, diagnostics:\n{shown}"
    )
    assert got.get("verdict") == want, f"verdict: expected {want}\n{context}"
    if kernel_verdict == "refuse" and want == "refuse":
        errors = [d for d in diags if d.get("severity") == "error" and d.get("kernel") is not False]
        assert errors, f"refused without an error diagnostic\n{context}"
        assert matches_kernel(str(errors[0]["message"]), res.messages), (
            f"the first error is not the kernel's message\n{context}"
        )
        if got.get("errno") is not None:
            assert got["errno"] == res.errno, f"errno: kernel {res.errno}\n{context}"
