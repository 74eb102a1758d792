"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from klpelf.errors import KlpError
from klpelf.text import terminal_line

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile

_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def error(e: KlpError, path: str) -> None:
    """Print the one line for an input problem: ``klpelf: PATH: message``."""
    print(terminal_line(f"klpelf: {e.with_path(path)}"), file=sys.stderr)


def warning(text: str) -> None:
    """Print a warning line on stderr: ``klpelf: warning: text``."""
    print(terminal_line(f"klpelf: warning: {text}"), file=sys.stderr)


#: the --kernel help text's list of source kinds (symbols/sources.py reads them)
SOURCE_KINDS = (
    "a /proc/kallsyms dump, System.map, vmlinux ELF, module .ko (xz/zstd/gzip too), "
    "module tree (/lib/modules/RELEASE, with its build/Module.symvers), Module.symvers, "
    "/sys/kernel/tracing/available_filter_functions (ftrace locations), or - for stdin; "
    "the kind is found by content, KIND:PATH forces it, KIND one of "
    "kallsyms, system.map, vmlinux, module, modules, symvers, ftrace"
)


def stdin_path(arg: str) -> str:
    """``-`` means standard input (read whole, decompressed as a file would be)."""
    return "/dev/stdin" if arg == "-" else arg


def module_arguments(args: list[str]) -> Iterator[tuple[str, KlpError | None]]:
    """The modules the MODULE arguments name, in order: ``-`` is standard input, a
    directory stands for the module files under it (recursive, sorted; .ko and
    compressed .ko), anything else is a module file.  A directory with none yields
    an error for it."""
    from klpelf.errors import InputError

    for arg in args:
        path = stdin_path(arg)
        if not os.path.isdir(path):
            yield path, None
            continue
        found = []
        for dirpath, dirs, files in os.walk(path):
            dirs.sort()
            found += [
                os.path.join(dirpath, f) for f in sorted(files) if f.endswith(_MODULE_SUFFIXES)
            ]
        if not found:
            yield path, InputError("is a directory with no module files (.ko, .ko.xz, .ko.zst, "
                                   ".ko.gz) under it", path=path)  # fmt: skip
        for f in found:
            yield f, None


def print_json(document: object) -> None:
    """Print a --json document: serialised whole, then written at once (json.dump wrote
    it a token at a time: 800,000 writes for a module of 14,000 klp sections)."""
    import json  # lazily: a run without --json does not pay for it

    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def add_common(p: argparse.ArgumentParser) -> None:
    """Options every subcommand takes, after the subcommand too (``--debug``)."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show a traceback on internal errors")  # fmt: skip


def add_kernel_option(p: argparse.ArgumentParser, help_text: str) -> None:
    """``-k/--kernel SOURCE`` (repeatable), the same in every subcommand."""
    p.add_argument("-k", "--kernel", action="append", default=[], metavar="SOURCE",
                   help=f"{help_text} (repeat for several): {SOURCE_KINDS}")  # fmt: skip


MODULE_HELP = "module file (.ko, xz/zstd/gzip too), a directory of them (recursive), or - (stdin)"


def open_modules(args: list[str], failed: list[tuple[str, str]]) -> list[ElfFile]:
    """Every module the MODULE arguments name, opened before anything else is read (a
    missing one fails before any kernel symbols load); each failure is printed and
    added to ``failed`` as (path, error)."""
    from klpelf.operations import open_module

    opened = []
    for path, problem in module_arguments(args):
        try:
            if problem is not None:
                raise problem
            opened.append(open_module(path))
        except KlpError as e:
            failed_file(e, path, failed)
    return opened


def failed_file(e: KlpError, path: str, failed: list[tuple[str, str]]) -> None:
    """Print the error for ``path`` and keep it for the JSON ``failed`` list."""
    error(e, path)
    failed.append((path, str(e.with_path(path))))
