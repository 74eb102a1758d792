"""The cases x kernels table: what each kernel did and what ``klpelf check`` predicted.

The pytest session collects one :class:`Cell` per case and kernel (the VM run fills the
observed half, the agreement test the predicted half) and writes the table at the end
to ``tests/kernel/out/matrix.md`` (``$KLPELF_MATRIX_OUT`` elsewhere); the command line
(``python -m kernel.klpvm``) prints the same table.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from kernel.klpvm.cases import CASES, CaseResult, expected_for, messages_match

OUT = Path(__file__).resolve().parent.parent / "out" / "matrix.md"


def out_path() -> Path:
    env = os.environ.get("KLPELF_MATRIX_OUT")
    return Path(env) if env else OUT


def verdict_name(n: int | None) -> str:
    if n is None:
        return "did not run"
    if n == 0:
        return "loaded"
    return errno.errorcode.get(n, str(n))


@dataclass
class Cell:
    observed: int | None = None
    #: the kernel message the verdict turns on (the first relevant one of a refusal)
    observed_message: str = ""
    #: the observation equals expected/common.json + expected/<series>.json
    as_expected: bool | None = None
    #: `klpelf check`'s verdict ("accept" / "refuse") and its first kernel error
    predicted: str | None = None
    predicted_message: str = ""
    #: the agreement test passed
    agrees: bool | None = None


@dataclass
class Column:
    series: str
    release: str
    seconds: str = ""


@dataclass
class MatrixReport:
    columns: dict[str, Column] = field(default_factory=dict)
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def cell(self, series: str, case: str) -> Cell:
        return self.cells.setdefault((series, case), Cell())

    def observe(self, series: str, release: str, results: dict[str, CaseResult]) -> None:
        self.columns.setdefault(series, Column(series, release))
        exp = expected_for(series)
        for case in CASES:
            r = results.get(case.name)
            c = self.cell(series, case.name)
            if r is None or r.errno is None:
                continue
            c.observed = r.errno
            msgs = r.messages
            c.observed_message = _pick(msgs, r.errno)
            e = exp.get(case.name)
            c.as_expected = (
                e is not None and e.errno == r.errno and messages_match(e.messages, msgs)
            )

    def predict(self, series: str, case: str, verdict: str, message: str, agrees: bool) -> None:
        c = self.cell(series, case)
        c.predicted, c.predicted_message, c.agrees = verdict, message, agrees

    def render(self) -> str:
        cols = sorted(self.columns.values(), key=lambda c: _key(c.series))
        lines = [
            "# Real-kernel matrix",
            "",
            "Written by tests/kernel (pytest) at the end of a run.  Each cell: the kernel's "
            "verdict (finit_module errno of the case's verdict step, `loaded` for 0), then "
            "`klpelf check --kernel-release <release> --kernel <the VM's kallsyms>`'s "
            "prediction.  ✓: the kernel did what expected/ says, and the prediction agrees "
            "(verdict and message text); ✗: it does not; ?: not checked in this run.",
            "",
            "| case | " + " | ".join(f"{c.series} (`{c.release}`)" for c in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for case in CASES:
            row = [f"`{case.name}`"]
            for col in cols:
                c = self.cells.get((col.series, case.name), Cell())
                obs = f"{verdict_name(c.observed)} {_mark(c.as_expected)}"
                pred = f"{c.predicted or '-'} {_mark(c.agrees)}"
                row.append(f"{obs} / check: {pred}")
            lines.append("| " + " | ".join(row) + " |")
        lines += [
            "",
            "## Messages",
            "",
            "The kernel's message a verdict turns on, and `klpelf check`'s first kernel "
            "error (or its rule's diagnostic), where a kernel refused.",
            "",
        ]
        for case in CASES:
            shown = False
            for col in cols:
                found = self.cells.get((col.series, case.name))
                if found is None or not found.observed:
                    continue
                c = found
                if not shown:
                    lines.append(f"### `{case.name}`: {case.doc}")
                    lines.append("")
                    shown = True
                lines.append(f"* {col.series}: kernel `{c.observed_message}`")
                if c.predicted_message:
                    # a message of several kernel lines (x86's overflow) joined with "\n"
                    said = "` / `".join(c.predicted_message.split("\n"))
                    lines.append(f"  check `{said}`")
            if shown:
                lines.append("")
        return "\n".join(lines) + "\n"

    def write(self, path: Path | None = None) -> Path:
        path = path or out_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render())
        return path


def _pick(messages: list[str], errno_: int) -> str:
    """The message a refusal turns on: the first error-like one (not a transition note)."""
    if errno_ == 0:
        return ""
    for m in messages:
        if "patch '" in m and ("reverting" in m or "applying" in m):
            continue
        return m
    return messages[0] if messages else ""


def _mark(ok: bool | None) -> str:
    return "?" if ok is None else "✓" if ok else "✗"


def _key(series: str) -> tuple[int, ...]:
    return tuple(int(p) for p in series.split(".") if p.isdigit())
