"""``klpelf resolve``: will a livepatch module's symbols resolve on a kernel?"""

from __future__ import annotations

import argparse

from klpelf.cli._common import (
    MODULE_HELP,
    add_common,
    add_kernel_option,
    failed_file,
    open_modules,
    print_json,
)
from klpelf.errors import KlpError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "resolve",
        allow_abbrev=False,
        help="resolve a livepatch module's symbols against a kernel",
        description="Resolve every .klp.sym.<obj>.<sym>,<pos> symbol as the kernel's "
        "klp_find_object_symbol() would, against the kernel symbol sources given. "
        "Without --kernel, the running kernel (/proc/kallsyms and /lib/modules/$(uname -r)), "
        "as modinfo and modprobe do; when it is not the release the module was built for, "
        "its symbols are not used (as check does) and that is a warning. For an ambiguous "
        "or wrong sympos every candidate is listed with its position. Exit status 1 when a "
        "symbol does not resolve (symbols of modules that are not loaded do not count) or "
        "the --kernel sources are of another release than the module's; with --strict, "
        "also when the running kernel is.",
    )
    p.add_argument("modules", nargs="+", metavar="MODULE", help=MODULE_HELP)
    add_kernel_option(p, "kernel symbol source")
    p.add_argument("--no-kallsyms-all", dest="kallsyms_all", action="store_false",
                   help="the kernel lacks CONFIG_KALLSYMS_ALL: module kallsyms keep text "
                   "symbols only (every livepatch-capable kernel has it)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="JSON output (schema klpelf.resolve/2)")
    p.add_argument("--strict", action="store_true",
                   help="the running kernel of another release also exits 1")  # fmt: skip
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from klpelf.cli._common import stdin_path
    from klpelf.operations.resolve import (
        ResolvedModule,
        kernel_text,
        resolve,
        resolve_document,
        resolve_kernel,
    )

    failed: list[tuple[str, str]] = []
    opened = open_modules(args.modules, failed)
    status = 1 if failed else 0
    if not opened and not args.json:
        return status  # the kernel's symbols are not read for nothing
    ks = resolve_kernel([stdin_path(k) for k in args.kernel], kallsyms_all=args.kallsyms_all)
    resolved: list[ResolvedModule] = []
    for elf in opened:
        path = elf.path or ""
        try:
            rep = resolve(elf, ks)
        except KlpError as e:
            failed_file(e, path, failed)
            status = 1
            continue
        resolved.append(rep)
        if rep.failed(strict=args.strict):
            status = 1
    if args.json:
        print_json(resolve_document(ks, resolved, failed))
        return status
    print(kernel_text(ks))
    for rep in resolved:
        print(rep.to_text())
    return status
