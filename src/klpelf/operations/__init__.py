"""The verbs of klpelf, as functions: what the command line runs and library users call.

One module per verb (:mod:`~klpelf.operations.show`, :mod:`~klpelf.operations.check`,
:mod:`~klpelf.operations.resolve`, :mod:`~klpelf.operations.convert`).  Each takes a
path or an :class:`~klpelf.elf.file.ElfFile` and the options, and returns a typed
result that produces the verb's JSON form (its schema in docs/json.md; the
TypedDicts of every schema are in :mod:`~klpelf.operations.schemas`, and only there)
and its text form.  The CLI (:mod:`klpelf.cli`) parses arguments, calls the verb,
prints and picks the exit status, and nothing more.

Every failure is a :class:`~klpelf.errors.KlpError` whose message names the file.

Layering: ``cli -> operations -> {klp, symbols, arch} -> elf -> base``; this package
is the only one above klp/ and symbols/ that combines them (a livepatch module's
symbols resolved against kernel symbols).

This package module itself holds what every verb does with its MODULE argument: open
it, and name the file in errors (here rather than in a module of their own, which
would cost every command one more import).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeAlias

from klpelf.elf.file import ElfFile
from klpelf.elf.reader import open_elf
from klpelf.errors import KlpError, UsageError

#: a module to work on: a path (plain or xz/zstd/gzip-compressed) or an ElfFile already open
ModuleSource: TypeAlias = "str | os.PathLike[str] | ElfFile"


@contextmanager
def naming(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Attach ``path`` to a :class:`KlpError` raised inside that names no file yet
    (a :class:`UsageError` is about an argument, not the file: it is left alone)."""
    try:
        yield
    except KlpError as e:
        if path is not None and not isinstance(e, UsageError):
            e.with_path(os.fspath(path))
        raise


def open_module(module: ModuleSource) -> ElfFile:
    """``module`` as an :class:`ElfFile`: opened when it is a path."""
    if isinstance(module, ElfFile):
        return module
    with naming(module):
        return open_elf(module)


def module_path(module: ModuleSource) -> str | None:
    """The file ``module`` names or was read from (None for an ElfFile made in memory)."""
    return module.path if isinstance(module, ElfFile) else os.fspath(module)
