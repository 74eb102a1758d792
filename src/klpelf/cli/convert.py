"""``klpelf convert``: turn a built module into a livepatch module."""

from __future__ import annotations

import argparse
import os
import sys

from klpelf.cli._common import error
from klpelf.errors import KlpError


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
    p.add_argument("input", metavar="INPUT", help="module built by kbuild")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="livepatch module")
    p.add_argument(
        "--kernel",
        action="append",
        default=[],
        metavar="SOURCE",
        help="automatic mode: the target kernel's symbols (kallsyms, System.map, vmlinux, "
        "module tree, Module.symvers; repeat for several)",
    )
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from klpelf.elf.reader import open_elf
    from klpelf.elf.writer import save_elf
    from klpelf.klp.convert import convert_annotations

    try:
        if os.path.exists(args.output) and os.path.samefile(args.input, args.output):
            print(
                f"klpelf: {args.output}: output is the input file (refusing to overwrite it)",
                file=sys.stderr,
            )
            return 1
        elf = open_elf(args.input)
        was: dict[int, str] = {}
        if args.kernel or args.symvers:
            from klpelf.klp.autoconvert import SymposChoice, apply_plan, plan_klp_symbols
            from klpelf.symbols.sources import load_sources

            choices = [SymposChoice.parse(c) for c in args.sympos]
            ks = load_sources([*args.kernel, *args.symvers])
            plan = plan_klp_symbols(elf, ks, choices)
            tab = elf.symtab
            if tab is not None:
                was = {i: tab.name(i) for i in plan}
            apply_plan(elf, plan)
        elif args.sympos:
            print("klpelf: error: --sympos needs --kernel or --symvers", file=sys.stderr)
            return 2
        report = convert_annotations(elf)
        save_elf(elf, args.output, overwrite=True)
    except KlpError as e:
        error(e, args.input)
        return 1
    for i, renamed, new in report.symbols:
        old = was.get(i, renamed)
        print(f"{args.output}: livepatch symbol {new}" + (f" (was {old})" if old != new else ""))
    for name, n in report.sections.items():
        print(f"{args.output}: {name}: {n} relocation{'s' if n != 1 else ''}")
    if report.modinfo_added:
        print(f"{args.output}: modinfo livepatch=Y added")
    if report.signature_dropped:
        print(f"{args.output}: module signature dropped (sign the output again)")
    return 0
