"""``klpelf resolve``: will a livepatch module's symbols resolve on a kernel?"""

from __future__ import annotations

import argparse
import sys

from klpelf.cli._common import error
from klpelf.errors import KlpError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "resolve",
        allow_abbrev=False,
        help="resolve a livepatch module's symbols against a kernel",
        description="Resolve every .klp.sym.<obj>.<sym>,<pos> symbol as the kernel's "
        "klp_find_object_symbol() would, against the kernel symbol sources given (kind "
        "detected by content: /proc/kallsyms dump, System.map, vmlinux, module .ko, module "
        "directory such as /lib/modules/<release>, Module.symvers; KIND:PATH forces a kind). "
        "Without --kernel, the running kernel (/proc/kallsyms and /lib/modules/$(uname -r)), "
        "as modinfo and modprobe do. For an ambiguous or wrong sympos every candidate is "
        "listed with its position. Exit status 1 when a symbol does not resolve (symbols of "
        "modules that are not loaded do not count) or the module was built for another "
        "release.",
    )
    p.add_argument("modules", nargs="+", metavar="MODULE", help="livepatch module (.ko)")
    p.add_argument("-k", "--kernel", action="append", metavar="SOURCE", default=[],
                   help="kernel symbol source (repeatable)")  # fmt: skip
    p.add_argument("--no-kallsyms-all", dest="kallsyms_all", action="store_false",
                   help="the kernel lacks CONFIG_KALLSYMS_ALL: module kallsyms keep text "
                   "symbols only (every livepatch-capable kernel has it)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="JSON output (schema klpelf.resolve/1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from klpelf.elf.reader import open_elf
    from klpelf.klp.module import klp_module
    from klpelf.symbols.report import ModuleJson, kernel_json, module_report, render_text
    from klpelf.symbols.sources import KernelSymbols, load_sources

    try:
        if args.kernel:
            ks = load_sources(args.kernel, kallsyms_all=args.kallsyms_all)
        else:
            ks = KernelSymbols.running(kallsyms_all=args.kallsyms_all)
    except KlpError as e:
        print(f"klpelf: {e}", file=sys.stderr)
        return 1
    status = 0
    reports: list[ModuleJson] = []
    for path in args.modules:
        try:
            rep = module_report(path, klp_module(open_elf(path)), ks)
        except KlpError as e:
            error(e, path)
            status = 1
            continue
        reports.append(rep)
        if rep["verdict"] != "ok":
            status = 1
    if args.json:
        doc = {"schema": "klpelf.resolve/1", "kernel": kernel_json(ks), "modules": reports}
        import json  # lazily: a run without --json does not pay for it

        json.dump(doc, sys.stdout, indent=2)
        print()
        return status
    if ks.is_running:
        print("kernel: no --kernel given: the running kernel, as modinfo and modprobe default to")
    print(f"kernel: {ks.description}")
    for rep in reports:
        print(render_text(rep))
    return status
