"""Helpers shared by the subcommands."""

from __future__ import annotations

import sys

from klpelf.errors import KlpError


def error(e: KlpError, path: str) -> None:
    """Print the one line for an input problem: ``klpelf: PATH: message``."""
    print(f"klpelf: {e.with_path(path)}", file=sys.stderr)
