"""The ``klpelf`` command line.  This package is the only place that prints or exits.

One module per subcommand (``register()`` adds its parser; ``run()`` does the work and
returns the exit status); this module holds the error funnel.

Exit status: 0 success, 1 a problem with an input (one line per problem, naming the
file), 2 a usage error.  A traceback means a bug; ``--debug`` shows it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, cast

from klpelf import __version__
from klpelf.cli import apply, build, check, convert, diff, resolve, show
from klpelf.errors import KlpError, UsageError
from klpelf.text import terminal_line

#: the subcommand modules; each has register(subparsers), which sets args.func
COMMANDS = (show, check, convert, resolve, apply, diff, build)


def _terminal_columns() -> int:
    # shutil.get_terminal_size().columns: $COLUMNS, else the width of stdout's terminal, else 80
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    out = sys.__stdout__
    if columns <= 0 and out is not None:
        try:
            columns = os.get_terminal_size(out.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, given the width argparse would compute.

    argparse makes a formatter for every add_argument() and, to find the terminal
    width, imports shutil (with bz2, lzma and zlib): 2.5 ms of every run.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_columns() - 2)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser with :class:`_HelpFormatter`; subcommand parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="klpelf",
        allow_abbrev=False,
        description="Read, check and write Linux kernel livepatch modules (klp ELF format).",
    )
    p.add_argument("--version", action="version", version=f"klpelf {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="a traceback on internal errors (here or after COMMAND)")  # fmt: skip
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        p.add_subparsers(dest="command", metavar="COMMAND", required=True),
    )

    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as e:
        print(terminal_line(f"klpelf: error: {e}"), file=sys.stderr)
        return 2
    except KlpError as e:
        print(terminal_line(f"klpelf: {e}"), file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `klpelf show ... | head`: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(
            terminal_line(f"klpelf: internal error: {type(e).__name__}: {e} (rerun with --debug)"),
            file=sys.stderr,
        )
        return 1
