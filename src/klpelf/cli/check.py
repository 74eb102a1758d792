"""``klpelf check``: predict what the kernel will do with a livepatch module."""

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
from klpelf.release import NEWEST_MODELLED, OLDEST_MODELLED


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
    p.add_argument("modules", nargs="+", metavar="MODULE", help=MODULE_HELP)
    p.add_argument(
        "--kernel-release",
        metavar="R",
        help=f"the target kernel's release (e.g. 6.1.0-56-amd64; {OLDEST_MODELLED} to "
        f"{NEWEST_MODELLED}): its limits and "
        "message wording, and the vermagic's first word is compared with it; default: the "
        "module's vermagic",
    )
    add_kernel_option(p, "the target kernel's symbols; default: the running kernel's, when "
                      "it is the release the module was built for")  # fmt: skip
    p.add_argument("--loaded", action="append", default=[], metavar="LP.ko",
                   help="a livepatch module already enabled on the target (repeat for "
                   "several, in the order they were loaded): its states decide whether "
                   "the kernel accepts this patch")  # fmt: skip
    p.add_argument("--static", action="store_true", help="do not resolve symbols in any kernel")
    p.add_argument("--json", action="store_true", help="JSON output (schema klpelf.check/2)")
    p.add_argument("--strict", action="store_true", help="warnings also exit 1")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from klpelf.cli._common import stdin_path
    from klpelf.operations.check import (
        CheckedModule,
        check,
        check_document,
        check_kernel,
        loaded_patches,
        parse_release,
    )

    # a usage error (exit 2) before any file is read; check() parses it again and keeps
    # a full release (6.1.0-56-amd64) to compare the vermagic with
    version = args.kernel_release
    if version is not None:
        parse_release(version)
    failed: list[tuple[str, str]] = []
    opened = open_modules(args.modules, failed)
    status = 1 if failed else 0
    # the kernel's symbols are not read for nothing
    kernel = check_kernel([stdin_path(k) for k in args.kernel] if opened else [],
                          static=args.static or not opened)  # fmt: skip
    checked: list[CheckedModule] = []
    try:
        loaded = loaded_patches(args.loaded)
    except KlpError as e:
        failed_file(e, e.path or "", failed)
        opened, status = [], 1
    for elf in opened:
        path = elf.path or ""
        try:
            res = check(elf, version=version, kernel=kernel, loaded=loaded)
        except KlpError as e:
            failed_file(e, path, failed)
            status = 1
            continue
        if res.failed(strict=args.strict):
            status = 1
        if args.json:
            checked.append(res)
        else:
            print(res.to_text())
    if args.json:
        print_json(check_document(checked, failed))
    return status
