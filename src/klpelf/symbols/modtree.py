"""A module tree such as ``/lib/modules/<release>``: find a module by name, as modprobe does.

Names compare with '-' and '_' as the same character (kmod's ``modname_normalize()``).
The index is ``modules.dep`` (written by depmod: one ``path: deps`` line per module,
with the installed file name, compressed or not) when present, else
``modules.order`` (kbuild's list of built modules, names as built: ``.ko``), else a
walk of the directory, ``updates/`` first as in depmod's default search order.
``modules.builtin`` names the modules built into vmlinux.
"""

from __future__ import annotations

import mmap
import os
from typing import TYPE_CHECKING

from klpelf.elf.reader import open_elf
from klpelf.errors import KlpError, SymbolSourceError
from klpelf.text import quoted

if TYPE_CHECKING:
    from klpelf.symbols.elfsyms import ModuleFile

_SUFFIXES = ("", ".xz", ".zst", ".gz")


def normalize(name: str) -> str:
    """kmod's modname_normalize(): '-' and '_' are the same character in module names."""
    return name.replace("-", "_")


def is_module_tree(path: str) -> bool:
    """A directory with depmod or kbuild index files, or with a module file in it."""
    if any(os.path.exists(os.path.join(path, f)) for f in ("modules.dep", "modules.order")):
        return True
    for _, _, files in os.walk(path):
        if any(f.endswith((".ko", ".ko.xz", ".ko.zst", ".ko.gz")) for f in files):
            return True
    return False


class ModuleTree:
    """The modules under one directory, looked up by name and read when first asked for."""

    def __init__(self, root: str, *, kallsyms_all: bool = True) -> None:
        self.root = root
        self.kallsyms_all = kallsyms_all
        self.paths: dict[str, str] = {}
        self.index_file: str | None = None
        dep = os.path.join(root, "modules.dep")
        order = os.path.join(root, "modules.order")
        if os.path.exists(dep):
            self.index_file = "modules.dep"
            self._read_dep(dep)
        elif os.path.exists(order):
            self.index_file = "modules.order"
            self._read_order(order)
        else:
            self._walk()
        self.builtin = self._read_builtin(os.path.join(root, "modules.builtin"))
        self._loaded: dict[str, ModuleFile] = {}

    def _add(self, path: str) -> None:
        self.paths.setdefault(normalize(module_name_of(path)), path)

    def _lines(self, path: str) -> list[tuple[int, str]]:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
        except OSError as e:
            raise SymbolSourceError(e.strerror or str(e), path=path) from e

    def _read_dep(self, path: str) -> None:
        for n, line in self._lines(path):
            mod, sep, _ = line.partition(":")
            if not sep or not mod.strip():
                raise SymbolSourceError(
                    f"malformed modules.dep line (expected 'MODULE: DEPENDENCIES'): {quoted(line)}",
                    path=path, lineno=n,
                )  # fmt: skip
            mod = mod.strip()
            self._add(mod if os.path.isabs(mod) else os.path.join(self.root, mod))

    def _read_order(self, path: str) -> None:
        for _, line in self._lines(path):
            base = os.path.join(self.root, line)
            for ext in _SUFFIXES:
                if os.path.isfile(base + ext):
                    self._add(base + ext)
                    break

    def _walk(self) -> None:
        found: list[tuple[int, str]] = []
        for dirpath, dirs, files in os.walk(self.root):
            dirs.sort()
            rel = os.path.relpath(dirpath, self.root)
            rank = 0 if rel.split(os.sep)[0] == "updates" else 1
            found += [(rank, os.path.join(dirpath, f)) for f in sorted(files)
                      if f.endswith((".ko", ".ko.xz", ".ko.zst", ".ko.gz"))]  # fmt: skip
        for _, path in sorted(found, key=lambda f: f[0]):
            self._add(path)

    def _read_builtin(self, path: str) -> frozenset[str]:
        if not os.path.exists(path):
            return frozenset()
        return frozenset(normalize(module_name_of(line)) for _, line in self._lines(path))

    def __len__(self) -> int:
        return len(self.paths)

    def find(self, name: str) -> str | None:
        """The file of module ``name`` ('-' and '_' alike), or None."""
        return self.paths.get(normalize(name))

    def is_builtin(self, name: str) -> bool:
        return normalize(name) in self.builtin

    def load(self, name: str) -> ModuleFile | None:
        """Read module ``name`` (cached); None if the tree has no such module.

        :raises KlpError: the file is not a readable module (the error names the file).
        """
        key = normalize(name)
        if key in self._loaded:
            return self._loaded[key]
        path = self.paths.get(key)
        if path is None:
            return None
        from klpelf.symbols.elfsyms import ModuleFile

        mod = ModuleFile(open_elf(path), kallsyms_all=self.kallsyms_all)
        self._loaded[key] = mod
        return mod

    def containing(self, needle: bytes) -> list[str]:
        """The modules (normalized names) whose file, decompressed, holds ``needle``;
        files that cannot be read are skipped."""
        from klpelf.io import read_input

        out = []
        for key, path in self.paths.items():
            try:
                data = read_input(path)
            except KlpError:
                continue
            hay = bytes(data) if isinstance(data, memoryview) else data
            if hay.find(needle) >= 0:
                out.append(key)
            if isinstance(hay, mmap.mmap):
                hay.close()
        return out

    def release(self) -> str | None:
        """The release in the vermagic of the first module that has one, else None."""
        magic = self.vermagic()
        return magic.split()[0] if magic and magic.split() else None

    def vermagic(self) -> str | None:
        """The vermagic of the first module that has one (every module of a kernel's
        tree has the kernel's own), else None.  Files modules.dep lists but the tree
        lacks (a partial copy of a tree) are skipped; at most 8 are read."""
        tried = 0
        for name, path in self.paths.items():
            if not os.path.isfile(path):
                continue
            tried += 1
            try:
                mod = self.load(name)
            except KlpError:
                mod = None
            if mod is not None and mod.vermagic:
                return mod.vermagic
            if tried == 8:
                break
        return None


def module_name_of(path: str) -> str:
    """The module name modprobe derives from a file name: no .ko[.xz|.zst|.gz], '-' as '_'."""
    base = os.path.basename(path)
    for ext in (".xz", ".zst", ".gz"):
        base = base.removesuffix(ext)
    return base.removesuffix(".ko").replace("-", "_")
