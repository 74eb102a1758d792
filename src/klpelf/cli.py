"""The ``klpelf`` command line.  The only module that prints or decides exit statuses.

Exit status: 0 success, 1 a problem with an input (one line per problem, naming the
file), 2 a usage error.  A traceback means a bug; ``--debug`` shows it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from klpelf import __version__
from klpelf.errors import KlpError


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="klpelf",
        description="Read, check and write Linux kernel livepatch modules (klp ELF format).",
    )
    p.add_argument("--version", action="version", version=f"klpelf {__version__}")
    p.add_argument("--debug", action="store_true", help="show a traceback on internal errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    show = sub.add_parser(
        "show",
        help="show a module's livepatch content",
        description="Show the module name, vermagic and livepatch flag, and per patched object "
        "its livepatch symbols and klp relocation sections.",
    )
    show.add_argument("modules", nargs="+", metavar="MODULE", help=".ko file (xz/zstd/gzip too)")
    show.add_argument("-r", "--relocs", action="store_true", help="list every klp relocation")
    show.add_argument("--json", action="store_true", help="JSON output (schema klpelf.show/1)")
    show.set_defaults(func=_cmd_show)

    conv = sub.add_parser(
        "convert",
        help="turn a built module into a livepatch module",
        description="Annotation mode: undefined symbols named .klp.sym.<obj>.<sym>,<pos> (or "
        "klp-convert's .klp.sym.rela.<lp_obj>.<obj>.<sym>,<pos>) become livepatch symbols, and "
        "their relocations move to .klp.rela.<obj>.<section> sections. The input is never "
        "modified; the output is written atomically.",
    )
    conv.add_argument("input", metavar="INPUT", help="module built by kbuild")
    conv.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="livepatch module")
    conv.set_defaults(func=_cmd_convert)
    return p


def _cmd_show(args: argparse.Namespace) -> int:
    from klpelf.elf.reader import open_elf
    from klpelf.klp.module import klp_module
    from klpelf.show import ModuleJson, render_text, show_module

    status = 0
    results: list[ModuleJson] = []
    for i, path in enumerate(args.modules):
        try:
            elf = open_elf(path)
            elf.decode_all()
            m = show_module(klp_module(elf), relocs=args.relocs)
        except KlpError as e:
            _error(e, path)
            status = 1
            continue
        if args.json:
            results.append(m)
        else:
            if i:
                print()
            print(render_text(m))
    if args.json:
        json.dump({"schema": "klpelf.show/1", "modules": results}, sys.stdout, indent=2)
        print()
    return status


def _cmd_convert(args: argparse.Namespace) -> int:
    import os

    from klpelf.elf.reader import open_elf
    from klpelf.elf.writer import save_elf
    from klpelf.klp.convert import convert_annotations

    try:
        if os.path.exists(args.output) and os.path.samefile(args.input, args.output):
            print(f"klpelf: {args.output}: output is the input file (refusing to overwrite it)",
                  file=sys.stderr)  # fmt: skip
            return 1
        elf = open_elf(args.input)
        report = convert_annotations(elf)
        save_elf(elf, args.output, overwrite=True)
    except KlpError as e:
        _error(e, args.input)
        return 1
    for _, old, new in report.symbols:
        print(f"{args.output}: livepatch symbol {new}" + (f" (was {old})" if old != new else ""))
    for name, n in report.sections.items():
        print(f"{args.output}: {name}: {n} relocation{'s' if n != 1 else ''}")
    if report.modinfo_added:
        print(f"{args.output}: modinfo livepatch=Y added")
    if report.signature_dropped:
        print(f"{args.output}: module signature dropped (sign the output again)")
    return 0


def _error(e: KlpError, path: str) -> None:
    print(f"klpelf: {e.with_path(path)}", file=sys.stderr)


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
