"""``klpelf convert``: turn a built module into a livepatch module."""

from __future__ import annotations

import argparse

from klpelf.cli._common import add_common, add_kernel_option, stdin_path, warning


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "convert",
        allow_abbrev=False,
        help="turn a built module into a livepatch module",
        description="Annotation mode: undefined symbols named .klp.sym.<obj>.<sym>,<pos> (or "
        "klp-convert's .klp.sym.rela.<lp_obj>.<obj>.<sym>,<pos>) become livepatch symbols, and "
        "their relocations move to .klp.rela.<obj>.<section> sections. Automatic mode (with "
        "--kernel/--symvers): also every undefined symbol the target kernel has but does not "
        "export, and every symbol exported by a module (late module patching). The input is "
        "never modified; the output is written atomically.",
    )
    p.add_argument("input", metavar="INPUT", help="module built by kbuild, or - (stdin)")
    p.add_argument("-o", "--output", metavar="OUTPUT", help="livepatch module to write")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="say what would change; write nothing (no -o needed)")  # fmt: skip
    add_kernel_option(p, "automatic mode: the target kernel's symbols")
    p.add_argument(
        "--symvers",
        action="append",
        default=[],
        metavar="FILE",
        help="automatic mode: the target kernel's Module.symvers",
    )
    p.add_argument(
        "--sympos",
        action="append",
        default=[],
        metavar="OBJ:SYMBOL=N|FILE",
        help="automatic mode: the object and position of SYMBOL, by number or by source file",
    )
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from klpelf.errors import UsageError
    from klpelf.operations.convert import convert

    if args.output is None and not args.dry_run:
        raise UsageError("convert needs -o OUTPUT (or --dry-run)")
    if args.output is not None and args.dry_run:
        raise UsageError("--dry-run writes nothing: -o OUTPUT is not used with it")
    # a KlpError names the file; cli.main() prints it (exit 1, 2 for a UsageError)
    done = convert(stdin_path(args.input), args.output,
                   kernel=[stdin_path(k) for k in [*args.kernel, *args.symvers]],
                   sympos=args.sympos)  # fmt: skip
    for w in done.warnings:
        warning(f"{args.output or args.input}: {w}")
    text = done.to_text()
    if text:
        print(text.replace(f"{args.input}: ", f"{args.input}: would change: ")
              if args.dry_run else text)  # fmt: skip
    return 0
