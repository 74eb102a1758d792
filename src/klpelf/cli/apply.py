"""``klpelf apply``: the bytes the kernel writes into a livepatch module, offline."""

from __future__ import annotations

import argparse

from klpelf.cli._common import (
    MODULE_HELP,
    add_common,
    add_kernel_option,
    failed_file,
    open_modules,
    print_json,
    stdin_path,
)
from klpelf.errors import KlpError, UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "apply",
        allow_abbrev=False,
        help="apply a livepatch module's relocations as the kernel would",
        description="Resolve every livepatch symbol against the kernel symbol sources, lay "
        "out the module's sections as the module loader would (or at the --base addresses, "
        "as /sys/module/<name>/sections/ lists them), and run the architecture's "
        "apply_relocate_add() over the relocation sections in the kernel's order: at load "
        "(ordinary sections and the vmlinux klp sections), then the klp sections of each "
        "module object present. Prints each value a klp relocation writes. With -o DIR, "
        "writes each laid-out section's bytes after every relocation as DIR/<section>.bin. "
        "Exit status 1 when the kernel would stop at a relocation.",
    )
    p.add_argument("modules", nargs="+", metavar="MODULE", help=MODULE_HELP)
    add_kernel_option(p, "the target kernel's symbols (at least one)")
    p.add_argument("--object", action="append", metavar="OBJ", dest="objects",
                   help="apply the klp relocations of module object OBJ (repeatable; "
                   "default: every object the sources know; vmlinux always)")  # fmt: skip
    p.add_argument(
        "--base",
        action="append",
        metavar="SECTION=ADDRESS",
        default=[],
        help="the address of a section in the kernel (hex; repeatable)",
    )
    p.add_argument(
        "--kernel-release",
        metavar="RELEASE",
        help="the target kernel's release (default: the module's vermagic)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="write each laid-out section's bytes as DIR/<section name>.bin "
        "(with --flatten: the flattened module)",
    )
    p.add_argument(
        "--flatten",
        action="store_true",
        help="write to -o a module binutils reads: livepatch symbols absolute at "
        "their kernel addresses under their kernel names, one relocation section "
        "per target, no SHN_LIVEPATCH (for objdump -dr and gdb, not for loading)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON output (schema klpelf.apply/2)")
    out.add_argument("--summary", action="store_true",
                     help="print the summary lines, not each value written (with -o DIR: "
                     "the bytes only)")  # fmt: skip
    add_common(p)
    p.set_defaults(func=run)


def _bases(specs: list[str]) -> dict[str, int]:
    out = {}
    for spec in specs:
        name, sep, address = spec.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = int(address, 16)
        except ValueError:
            raise UsageError(f"--base {spec}: expected SECTION=ADDRESS (hex)") from None
    return out


def run(args: argparse.Namespace) -> int:
    from klpelf.operations.apply import AppliedModule, apply, apply_document, write_sections
    from klpelf.operations.check import parse_release
    from klpelf.operations.resolve import resolve_kernel

    bases = _bases(args.base)
    version = parse_release(args.kernel_release) if args.kernel_release else None
    if not args.kernel:
        raise UsageError("apply needs the kernel's symbols: -k/--kernel SOURCE")
    if args.flatten and not args.output:
        raise UsageError("--flatten needs -o OUT.ko")
    failed: list[tuple[str, str]] = []
    opened = open_modules(args.modules, failed)
    if args.output and len(opened) + len(failed) > 1:
        raise UsageError("-o writes the sections (or --flatten's module) of one MODULE only")
    status = 1 if failed else 0
    applied: list[AppliedModule] = []
    if not opened:  # the kernel's symbols are not read for nothing
        if args.json:
            print_json(apply_document(applied, failed))
        return status
    ks = resolve_kernel([stdin_path(k) for k in args.kernel])
    if args.flatten:
        from klpelf.operations.apply import flatten

        for elf in opened:
            done = flatten(elf, ks, args.output, version=version)
            print(f"{done.output}: {done.resolved} livepatch symbols absolute, {done.unresolved} "
                  f"left undefined, {done.merged} klp relocation sections merged")  # fmt: skip
        return status
    for elf in opened:
        path = elf.path or ""
        try:
            res = apply(elf, ks, objects=args.objects, bases=bases, version=version)
            if args.output:
                write_sections(res, args.output)
        except UsageError:
            raise  # an option that names no section of the module: exit 2
        except KlpError as e:
            failed_file(e, path, failed)
            status = 1
            continue
        if res.refusals:
            status = 1
        if args.json:
            applied.append(res)
        else:
            print(res.to_text(summary=args.summary))
    if args.json:
        print_json(apply_document(applied, failed))
    return status
