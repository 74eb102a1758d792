"""What every verb does with its MODULE argument: open it, and name it in errors."""

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
