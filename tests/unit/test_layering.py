"""Imports flow one way: cli -> operations -> {klp, symbols, arch} -> elf -> base.

Every module under src/klpelf is parsed with ast and every import in it, at any depth
(module level, inside functions, under ``if TYPE_CHECKING:``), is checked against the
layers below.  A module may import its own package, and any layer below its own; of
the three middle packages, klp may import symbols and arch, symbols may import arch,
and nothing else (symbols and arch never import klp; arch never imports symbols).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "klpelf"

#: the first component under klpelf -> its layer (higher imports lower)
LAYERS: dict[str, int] = {
    "cli": 4,
    "__main__": 4,
    "operations": 3,
    "klp": 2,
    "objdiff": 2,
    "kbuild": 2,  # a fix applied to copies, units compiled by kbuild (klpelf build)
    "symbols": 2,
    "arch": 2,
    "elf": 1,
    "errors": 0,
    "io": 0,
    "release": 0,
    "_record": 0,
    "text": 0,  # escaping input text for one terminal line (arrives with issue 13)
    # the package itself, as the other modules see it: ``from klpelf import __version__``;
    # as an importer it is the public facade (test_facade_imports_only_for_types)
    "__init__": 0,
}
#: the layer whose packages are separate rooms: imports between them are allowed only
#: as PEERS lists (in the other layers, the modules of a layer are one room: the base
#: modules import each other, __main__ imports cli)
ROOMS = 2
#: imports between the packages of the ROOMS layer that are allowed (importer, imported)
PEERS = {("klp", "symbols"), ("klp", "arch"), ("symbols", "arch"), ("objdiff", "klp"),
         ("objdiff", "symbols"), ("objdiff", "arch")}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str, src: Path) -> bool:
    rel = Path(*name.split("."))
    return (src / rel).with_suffix(".py").is_file() or (src / rel / "__init__.py").is_file()


def imported_modules(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
    """(line, module) of every klpelf module that ``path`` imports, at any depth."""
    me = _module_name(path, src)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for a in node.names:
                # `from klpelf.cli import check` imports the module klpelf.cli.check
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if _is_module(sub, src) else base))
    mine = {(line, m) for line, m in out if m == "klpelf" or m.startswith("klpelf.")}
    return sorted(mine)


def _room(module: str) -> str:
    """The package (or top-level module) of ``module`` directly under klpelf."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` must not import ``imported``, or None."""
    if importer == "klpelf":
        return None  # the facade: see test_facade_imports_only_for_types
    a, b = _room(importer), _room(imported)
    for room, module in ((a, importer), (b, imported)):
        if room not in LAYERS:
            return f"{module} is in no layer: add klpelf.{room} to LAYERS in {__file__}"
    if a == b or LAYERS[b] < LAYERS[a] or (a, b) in PEERS:
        return None
    if LAYERS[a] == LAYERS[b]:
        if LAYERS[a] != ROOMS:
            return None
        return f"{a} and {b} are peers and {a} may not import {b}"
    return f"{a} (layer {LAYERS[a]}) may not import {b} (layer {LAYERS[b]})"


def test_imports_flow_one_way() -> None:
    problems = []
    for path in _modules():
        importer = _module_name(path) if path.name != "__main__.py" else "klpelf.__main__"
        for line, imported in imported_modules(path):
            why = violation(importer, imported)
            if why is not None:
                rel = path.relative_to(SRC.parent)
                problems.append(f"{rel}:{line}: imports {imported}: {why}")
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("klpelf.cli.check", "klpelf.operations.check", True),
        ("klpelf.operations.check", "klpelf.cli", False),
        ("klpelf.klp.check", "klpelf.symbols.resolve", True),
        ("klpelf.symbols.resolve", "klpelf.klp.module", False),
        ("klpelf.arch.x86_64", "klpelf.symbols.sources", False),
        ("klpelf.arch.x86_64", "klpelf.klp.names", False),
        ("klpelf.arch", "klpelf.elf.constants", True),
        ("klpelf.elf.file", "klpelf.klp.names", False),
        ("klpelf.elf.file", "klpelf.errors", True),
        ("klpelf.errors", "klpelf.elf.file", False),
        ("klpelf.io", "klpelf.errors", True),
        ("klpelf.errors", "klpelf.operations", False),
        ("klpelf.cli", "klpelf", True),
        ("klpelf.__main__", "klpelf.cli", True),
        ("klpelf.release", "klpelf._record", True),
        ("klpelf.operations.show", "klpelf.klp.module", True),
        ("klpelf.symbols.resolve", "klpelf.operations.resolve", False),
        ("klpelf.newthing", "klpelf.elf", False),
    ],
)
def test_the_rule(importer: str, imported: str, allowed: bool) -> None:
    assert (violation(importer, imported) is None) == allowed


def test_every_kind_of_import_is_seen(tmp_path: Path) -> None:
    # TYPE_CHECKING, function-local, relative and `from package import module` imports
    for d in ("klpelf", "klpelf/klp", "klpelf/symbols"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "__init__.py").write_text("")
    (tmp_path / "klpelf/klp/module.py").write_text("")
    x = tmp_path / "klpelf/symbols/x.py"
    x.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from klpelf.klp.module import KlpModule\n"
        "def f():\n    import klpelf.klp.module\n"
        "from ..klp import module\n"
        "from . import y\n"
    )
    found = imported_modules(x, tmp_path)
    assert found == [
        (3, "klpelf.klp.module"),
        (5, "klpelf.klp.module"),
        (6, "klpelf.klp.module"),
        (7, "klpelf.symbols"),
    ]
    assert all(violation("klpelf.symbols.x", m) for _, m in found[:3])


def test_facade_imports_only_for_types() -> None:
    # klpelf/__init__.py names every layer's entry points, but imports them only for
    # mypy (TYPE_CHECKING) and on first attribute access, by name: `import klpelf`
    # loads nothing else
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("klpelf") for a in node.names), node.lineno
        elif isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("klpelf") and not node.level, node.lineno
        elif isinstance(node, ast.If) and ast.unparse(node.test) == "not TYPE_CHECKING":
            # __getattr__: imports by name, on first use
            assert not any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(node))
        elif isinstance(node, ast.If):
            assert ast.unparse(node.test) == "TYPE_CHECKING", node.lineno


def test_package_modules_do_not_use_the_facade() -> None:
    # `from klpelf import check` inside the package would hide an upward import
    problems = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "klpelf" and not node.level:
                names = {a.name for a in node.names if not _is_module(f"klpelf.{a.name}", SRC)}
                if names - {"__version__"}:
                    problems.append(f"{path.relative_to(SRC)}:{node.lineno}: {sorted(names)}")
    assert not problems
