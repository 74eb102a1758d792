"""``klpelf check``: predict what the kernel will do with a livepatch module."""

from __future__ import annotations

import argparse
import sys

from klpelf.cli._common import error
from klpelf.errors import KlpError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        allow_abbrev=False,
        help="predict whether the kernel accepts a livepatch module, and why not",
        description="Check a livepatch module rule by rule as the kernel will, in the kernel's "
        "order and with the kernel's message text. Exit status 1 when the kernel would refuse "
        "the module or when the module is broken in a way the kernel does not catch (errors); "
        "warnings alone exit 0 unless --strict.",
    )
    p.add_argument("modules", nargs="+", metavar="MODULE", help=".ko file (xz/zstd/gzip too)")
    p.add_argument(
        "--kernel-release",
        metavar="R",
        help="the target kernel's release (e.g. 6.1.0-56-amd64): its limits and message "
        "wording; default: the module's vermagic",
    )
    p.add_argument(
        "--kernel",
        action="append",
        metavar="SOURCE",
        help="the target kernel's symbols (repeat for several): /proc/kallsyms dump, "
        "System.map, vmlinux, "
        "module .ko files or a module tree, Module.symvers (kind found by content); "
        "default: the running kernel",
    )
    p.add_argument("--static", action="store_true", help="do not resolve symbols in any kernel")
    p.add_argument("--json", action="store_true", help="JSON output (schema klpelf.check/1)")
    p.add_argument("--strict", action="store_true", help="warnings also exit 1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from klpelf.operations.check import (
        CheckedModule,
        check,
        check_document,
        check_kernel,
        parse_release,
    )

    version = parse_release(args.kernel_release) if args.kernel_release is not None else None
    kernel = check_kernel(args.kernel or (), static=args.static)
    status = 0
    checked: list[CheckedModule] = []
    for path in args.modules:
        try:
            res = check(path, version=version, kernel=kernel)
        except KlpError as e:
            error(e, path)
            status = 1
            continue
        if res.failed(strict=args.strict):
            status = 1
        if args.json:
            checked.append(res)
        else:
            print(res.to_text())
    if args.json:
        import json  # lazily: a run without --json does not pay for it

        json.dump(check_document(checked), sys.stdout, indent=2)
        print()
    return status
