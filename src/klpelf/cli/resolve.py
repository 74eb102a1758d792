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
    from klpelf.operations.resolve import (
        ResolvedModule,
        kernel_text,
        resolve,
        resolve_document,
        resolve_kernel,
    )

    ks = resolve_kernel(args.kernel, kallsyms_all=args.kallsyms_all)
    status = 0
    resolved: list[ResolvedModule] = []
    for path in args.modules:
        try:
            rep = resolve(path, ks)
        except KlpError as e:
            error(e, path)
            status = 1
            continue
        resolved.append(rep)
        if rep.verdict != "ok":
            status = 1
    if args.json:
        import json  # lazily: a run without --json does not pay for it

        json.dump(resolve_document(ks, resolved), sys.stdout, indent=2)
        print()
        return status
    print(kernel_text(ks))
    for rep in resolved:
        print(rep.to_text())
    return status
