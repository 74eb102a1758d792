"""``klpelf show``: a module's livepatch content."""

from __future__ import annotations

import argparse
import sys

from klpelf.cli._common import error
from klpelf.errors import KlpError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "show",
        allow_abbrev=False,
        help="show a module's livepatch content",
        description="Show the module name, vermagic and livepatch flag, and per patched object "
        "its livepatch symbols and klp relocation sections.",
    )
    p.add_argument("modules", nargs="+", metavar="MODULE", help=".ko file (xz/zstd/gzip too)")
    p.add_argument("-r", "--relocs", action="store_true", help="list every klp relocation")
    p.add_argument("--json", action="store_true", help="JSON output (schema klpelf.show/1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from klpelf.operations.show import ShownModule, show, show_document

    status = 0
    shown: list[ShownModule] = []
    for i, path in enumerate(args.modules):
        try:
            m = show(path, relocs=args.relocs)
        except KlpError as e:
            error(e, path)
            status = 1
            continue
        if args.json:
            shown.append(m)
        else:
            if i:
                print()
            print(m.to_text())
    if args.json:
        import json  # lazily: a run without --json does not pay for it

        json.dump(show_document(shown), sys.stdout, indent=2)
        print()
    return status
