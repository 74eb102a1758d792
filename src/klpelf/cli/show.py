"""``klpelf show``: a module's livepatch content."""

from __future__ import annotations

import argparse

from klpelf.cli._common import (
    MODULE_HELP,
    add_common,
    failed_file,
    module_arguments,
    print_json,
)
from klpelf.errors import KlpError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "show",
        allow_abbrev=False,
        help="show a module's livepatch content",
        description="Show the module name, vermagic and livepatch flag, and per patched object "
        "its livepatch symbols and klp relocation sections, and what the patch replaces "
        "(per object: old_name,sympos -> replacement, callbacks, states, replace).",
    )
    p.add_argument("modules", nargs="+", metavar="MODULE", help=MODULE_HELP)
    p.add_argument("-r", "--relocs", action="store_true", help="list every klp relocation")
    p.add_argument("--json", action="store_true", help="JSON output (schema klpelf.show/2)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from klpelf.operations.show import ShownModule, show, show_document

    status = 0
    shown: list[ShownModule] = []
    failed: list[tuple[str, str]] = []
    first = True
    for path, problem in module_arguments(args.modules):
        try:
            if problem is not None:
                raise problem
            m = show(path, relocs=args.relocs)
        except KlpError as e:
            failed_file(e, path, failed)
            status = 1
            continue
        if args.json:
            shown.append(m)
        else:
            if not first:
                print()
            first = False
            print(m.to_text())
    if args.json:
        print_json(show_document(shown, failed))
    return status
