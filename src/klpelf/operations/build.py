"""``klpelf build``: from a source fix to a checked livepatch module.

Every step runs on copies in a work directory, never on the tree's sources: the fix
is split by file and each file's part applied to a copy (:mod:`klpelf.kbuild.fix`);
each touched unit is compiled as it is and fixed, with the tree's own kbuild command
(:mod:`klpelf.kbuild.compile`); the pairs are diffed into one patch module directory
(:func:`klpelf.operations.diff.diff`), which kbuild builds (``make M=DIR modules``);
the module is converted (:func:`~klpelf.operations.convert.convert`) and checked
against the target (:func:`~klpelf.operations.check.check`).  Only the touched
units are compiled.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from klpelf._record import FrozenRecord
from klpelf.errors import InputError, KlpError
from klpelf.text import join_lines

if TYPE_CHECKING:
    from klpelf.operations.check import CheckedModule
    from klpelf.operations.diff import DiffResult
    from klpelf.operations.schemas import BuildJson

__all__ = ["BuildResult", "build"]


class BuildResult(FrozenRecord):
    """What :func:`build` did: each unit's diff, and the module's check."""

    _fields = ("fix", "output", "name", "units", "checked")
    __slots__ = _fields

    def __init__(self, fix: str, output: str | None, name: str,
                 units: list[tuple[str, DiffResult]],
                 checked: CheckedModule | None) -> None:  # fmt: skip
        self.fix: Final = fix
        #: the livepatch module written (None: a unit's diff was refused)
        self.output: Final = output
        self.name: Final = name
        #: (the .c file in the tree, its diff), in the fix's order
        self.units: Final = units
        #: the converted module checked against the target (None: refused)
        self.checked: Final = checked

    @property
    def refusals(self) -> list[str]:
        return [f"{path}: refused: {r}" for path, d in self.units for r in d.refusals]

    @property
    def failed(self) -> bool:
        return bool(self.refusals) or (self.checked is not None and self.checked.failed())

    def to_text(self) -> str:
        lines = []
        for path, d in self.units:
            lines += [f"{path}: refused: {r}" for r in d.refusals]
            lines += [f"{path}: function {f}: {why}" for f, why in d.functions]
            lines += [f"{path}: klp_func {old},{pos} ({d.objname})" for old, pos, _ in d.klp_funcs]
        if self.checked is not None:
            lines += self.checked.to_text().splitlines()
        if self.output is not None:
            lines.append(f"{self.output}: written, livepatch module {self.name}")
        return join_lines(lines)

    def to_json(self) -> BuildJson:
        return {
            "schema": "klpelf.build/1", "fix": self.fix, "output": self.output,
            "name": self.name,
            "units": [{"file": p, "diff": d.to_json()} for p, d in self.units],
            "check": self.checked.to_json() if self.checked is not None else None,
        }  # fmt: skip


def _default_name(fix: str) -> str:
    stem = re.sub(r"\W", "_", os.path.basename(fix).split(".", 1)[0])[:45]
    return "livepatch_" + (stem or "fix")


def build(fix: str | os.PathLike[str], source: str | os.PathLike[str],
          output: str | os.PathLike[str], *, build_dir: str | os.PathLike[str] | None = None,
          kernel: Sequence[str | os.PathLike[str]] = (), sympos: Sequence[str] = (),
          name: str | None = None, replace: bool = True, kernel_release: str | None = None,
          keep: str | os.PathLike[str] | None = None) -> BuildResult:  # fmt: skip
    """Make the livepatch module ``output`` from ``fix`` (a unified diff of ``source``).

    :param source: a prepared kernel tree (``make modules_prepare`` done with the
        target's config), or, with ``build_dir``, an external module's directory built
        against that prepared tree (``make -C build_dir M=source``)
    :param kernel: the target's symbol sources, for the diff and the check
    :param keep: the work directory (the copies, both builds, the module's sources);
        default a temporary one, removed at the end
    :raises KlpError: the fix does not parse or apply (only .c changes are supported
        yet), a compile or kbuild step fails, no function changed; one line each.
    """
    from klpelf.kbuild.compile import Tree, make
    from klpelf.kbuild.fix import apply_to_copy, parse_fix
    from klpelf.operations.check import check, check_kernel
    from klpelf.operations.convert import convert
    from klpelf.operations.diff import diff

    fix, out = os.fspath(fix), os.fspath(output)
    tree = Tree(os.fspath(source), os.fspath(build_dir) if build_dir is not None else None)
    try:
        with open(fix, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise InputError(e.strerror or str(e), path=fix) from None
    try:
        files = parse_fix(text, tree.source)
    except KlpError as e:
        raise e.with_path(fix) from None
    name = name or _default_name(fix)
    work = os.fspath(keep) if keep is not None else tempfile.mkdtemp(prefix="klpelf-build-")
    os.makedirs(work, exist_ok=True)
    try:
        for fp in files:
            apply_to_copy(fp, tree.source, os.path.join(work, "fixed", fp.path))
        mod = os.path.join(work, name)
        units: list[tuple[str, DiffResult]] = []
        for fp in files:
            stem = fp.path[:-2].replace("/", "__")
            orig_o = os.path.join(work, f"{stem}.orig.o")
            fixed_o = os.path.join(work, f"{stem}.fixed.o")
            unit = tree.compile_original(fp.path, orig_o)
            tree.compile_fixed(unit, os.path.join(work, "fixed", fp.path), fixed_o)
            d = diff(orig_o, fixed_o, objname=unit.objname, kernel=kernel, sympos=sympos,
                     module_dir=mod, name=name, replace=replace)  # fmt: skip
            units.append((fp.path, d))
        if any(d.refused for _, d in units):
            return BuildResult(fix, None, name, units, None)
        if not any(d.functions for _, d in units):
            raise KlpError("no function changed: nothing to patch", path=fix)
        symvers = os.path.isfile(os.path.join(tree.build, "Module.symvers"))
        # a tree with only modules_prepare done has no Module.symvers: modpost cannot
        # know vmlinux's exports, the check against --kernel does
        release = [] if tree.external else tree.make_args()
        make(tree.build, [f"M={mod}", "modules", *release,
                          *([] if symvers else ["KBUILD_MODPOST_WARN=1"])])  # fmt: skip
        convert(os.path.join(mod, f"{name}.ko"), out)
        checked = check(out, version=kernel_release,
                        kernel=check_kernel([os.fspath(k) for k in kernel]))  # fmt: skip
        return BuildResult(fix, out, name, units, checked)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
