"""Helpers shared by the subcommands."""

from __future__ import annotations

import sys

from klpelf.errors import KlpError
from klpelf.text import terminal_line


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
    "or - for stdin; the kind is found by content, KIND:PATH forces it, KIND one of "
    "kallsyms, system.map, vmlinux, module, modules, symvers"
)
