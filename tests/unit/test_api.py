"""The public API: ``klpelf.__all__``, docs/api.md, the README's library example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import klpelf
from klpelf.elf.reader import open_elf
from klpelf.klp.check import check_module
from klpelf.operations import schemas as j
from klpelf.release import KernelRelease

REPO = Path(__file__).resolve().parents[2]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)


def _run_in(tmp_path: Path, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # from "the top of the source tree", without writing into it
    (tmp_path / "samples").symlink_to(REPO / "samples")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "example", "exec"), {"__name__": "example"})


def test_all_is_the_exports() -> None:
    assert set(klpelf.__all__) == {"__version__", *klpelf._EXPORTS}
    assert len(klpelf.__all__) == len(set(klpelf.__all__))


@pytest.mark.parametrize("name", [n for n in klpelf.__all__ if n != "__version__"])
def test_every_export_resolves_and_has_a_docstring(name: str) -> None:
    obj = getattr(klpelf, name)
    assert obj.__module__ == klpelf._EXPORTS[name]
    doc = (obj.__doc__ or "").strip()
    # a NamedTuple without a docstring gets "Name(field, ...)"
    assert doc and not doc.startswith(f"{name}("), f"{name} has no docstring"
    assert name in dir(klpelf)


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = klpelf.nope  # type: ignore[attr-defined]


def test_import_klpelf_loads_nothing_else() -> None:
    code = "import sys, klpelf; print(sorted(m for m in sys.modules if m.startswith('klpelf')))"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout  # fmt: skip
    assert out.strip() == "['klpelf']"


def test_docs_api_names_every_export() -> None:
    text = (REPO / "docs/api.md").read_text()
    missing = [n for n in klpelf.__all__ if n != "__version__" and f"`{n}" not in text]
    assert not missing


def test_docs_api_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _python_blocks((REPO / "docs/api.md").read_text())
    assert len(blocks) >= 5
    _run_in(tmp_path, "\n".join(blocks), monkeypatch)


def test_readme_library_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # verbatim, then what it wrote is a module that `klpelf check` accepts
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Library\n") :]
    section = section[: section.index("\n## ", 1)]
    (block,) = _python_blocks(section)
    _run_in(tmp_path, block, monkeypatch)
    for out in ("livepatch.ko", "edited.ko"):
        res = check_module(open_elf(tmp_path / out), version=KernelRelease(6, 1))
        assert res.errors == [] and res.kernel_verdict == "accept", res.diagnostics


def _keys(typed_dict: type) -> set[str]:
    return set(typing.get_type_hints(typed_dict))


@pytest.mark.parametrize(
    ("schema", "types"),
    [
        ("klpelf.show/2", [j.ShowJson, j.ShowModuleJson, j.ShowSymbolJson, j.RelaSectionJson,
                           j.RelocJson, j.ObjectJson, j.OddityJson, j.SectionRefJson,
                           j.FailedJson, j.PatchJson, j.PatchObjectJson, j.PatchFuncJson,
                           j.PatchStateJson, j.NewFuncJson]),
        ("klpelf.check/2", [j.CheckJson, j.CheckResultJson, j.DiagnosticJson, j.RefJson]),
        ("klpelf.resolve/2", [j.ResolveJson, j.ResolveModuleJson, j.ResolveSymbolJson,
                              j.CandidateJson, j.KernelJson]),
        ("klpelf.apply/2", [j.ApplyJson, j.ApplyModuleJson, j.PlacedSectionJson, j.WriteJson,
                            j.RefusalJson, j.HazardJson]),
        ("klpelf.diff/1", [j.DiffJson, j.DiffItemJson, j.RenamedJson, j.DiffReferenceJson,
                           j.DiffExternJson, j.DiffKlpFuncJson]),
        ("klpelf.build/1", [j.BuildJson, j.BuildUnitJson]),
    ],
)  # fmt: skip
def test_json_schemas_are_the_documented_ones(schema: str, types: list[type]) -> None:
    # every key of the schema's TypedDicts is documented in its section of docs/json.md
    assert {t.__name__ for t in types} <= set(j.__dict__)
    doc = (REPO / "docs/json.md").read_text()
    section = doc[doc.index(f"schema `{schema}`") :]
    section = section[: section.find("\n## ")] if "\n## " in section else section
    documented = set(re.findall(r"`(\w+)`", section)) | set(re.findall(r'"(\w+)"', section))
    missing = {t.__name__: _keys(t) - documented for t in types}
    assert not any(missing.values()), missing


def test_schemas_cover_every_typeddict() -> None:
    defined = {n for n, v in vars(j).items() if isinstance(v, type) and v.__module__ == j.__name__}
    listed = {"ShowJson", "ShowModuleJson", "ShowSymbolJson", "RelaSectionJson", "RelocJson",
              "ObjectJson", "OddityJson", "SectionRefJson", "CheckJson", "CheckResultJson",
              "DiagnosticJson", "RefJson", "ResolveJson", "ResolveModuleJson",
              "ResolveSymbolJson", "CandidateJson", "KernelJson", "ApplyJson", "FailedJson",
              "ApplyModuleJson", "PlacedSectionJson", "WriteJson", "RefusalJson", "HazardJson",
              "PatchJson", "PatchObjectJson", "PatchFuncJson", "PatchStateJson",
              "NewFuncJson", "DiffJson", "DiffItemJson", "RenamedJson", "DiffReferenceJson",
              "DiffExternJson", "DiffKlpFuncJson", "BuildJson", "BuildUnitJson"}  # fmt: skip
    assert defined == listed


def test_the_verbs_do_not_build_the_schemas_at_run_time() -> None:
    code = (
        "import sys, klpelf.operations.show, klpelf.operations.check, "
        "klpelf.operations.resolve, klpelf.operations.convert, klpelf.operations.apply; "
        "print('klpelf.operations.schemas' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout  # fmt: skip
    assert out.strip() == "False"
