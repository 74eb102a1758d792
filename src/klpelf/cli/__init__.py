"""The ``klpelf`` command line.  This package is the only place that prints or exits.

One module per subcommand (``register()`` adds its parser; ``run()`` does the work and
returns the exit status); this module holds the error funnel.

Exit status: 0 success, 1 a problem with an input (one line per problem, naming the
file), 2 a usage error.  A traceback means a bug; ``--debug`` shows it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from klpelf import __version__
from klpelf.cli import check, convert, resolve, show
from klpelf.errors import KlpError

#: the subcommand modules; each has register(subparsers), which sets args.func
COMMANDS = (show, check, convert, resolve)


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="klpelf",
        allow_abbrev=False,
        description="Read, check and write Linux kernel livepatch modules (klp ELF format).",
    )
    p.add_argument("--version", action="version", version=f"klpelf {__version__}")
    p.add_argument("--debug", action="store_true", help="show a traceback on internal errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KlpError as e:
        print(f"klpelf: {e}", file=sys.stderr)
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
            f"klpelf: internal error: {type(e).__name__}: {e} (rerun with --debug)", file=sys.stderr
        )
        return 1
