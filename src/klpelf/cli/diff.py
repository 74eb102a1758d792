"""``klpelf diff``: the object that holds what changed between two builds of one unit."""

from __future__ import annotations

import argparse
import json
import sys

from klpelf.cli._common import add_common, add_kernel_option, stdin_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diff",
        allow_abbrev=False,
        help="from two builds of one translation unit, the object that holds what changed",
        description="Compare ORIG.o and PATCHED.o (one translation unit compiled with "
        "-ffunction-sections -fdata-sections, before and after a fix) position-independently "
        "and write the changed and new functions, the new data they need and their "
        "special-section entries to OUT.o; references to the kernel's own symbols become "
        "ordinary undefined symbols (exported by vmlinux) or .klp.sym. annotations (the "
        "rest), for kbuild to link and `klpelf convert` to finish. What a livepatch cannot "
        "do (changed data, changed init code, a change no function owns) is refused, one "
        "line each, and nothing is written.",
    )
    p.add_argument("orig", metavar="ORIG.o", help="the unit built from the original source")
    p.add_argument("patched", metavar="PATCHED.o", help="the unit built with the fix")
    p.add_argument("-o", "--output", metavar="OUT.o", help="the diff object to write")
    p.add_argument("--object", default="vmlinux", metavar="vmlinux|MODULE",
                   help="the object the unit is part of (default vmlinux)")  # fmt: skip
    add_kernel_option(p, "the target kernel's symbols")
    p.add_argument("--symvers", action="append", default=[], metavar="FILE",
                   help="the target kernel's Module.symvers")  # fmt: skip
    p.add_argument(
        "--sympos",
        action="append",
        default=[],
        metavar="OBJ:SYMBOL=N|FILE",
        help="the position of an ambiguous SYMBOL, by number or source file",
    )
    p.add_argument("--module-dir", metavar="DIR",
                   help="also write the patch module's sources to DIR (Kbuild, the C of "
                   "klp_patch/klp_object/klp_func and the module init, the diff object): "
                   "make -C KERNEL_BUILD M=DIR, then klpelf convert")  # fmt: skip
    p.add_argument("--name", metavar="NAME",
                   help="the patch module's name (default livepatch_<unit>)")  # fmt: skip
    p.add_argument("--no-replace", action="store_true",
                   help="klp_patch.replace off: the patch adds to the loaded ones")  # fmt: skip
    p.add_argument("--json", action="store_true", help="JSON output (schema klpelf.diff/1)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from klpelf.errors import UsageError
    from klpelf.operations.diff import diff

    if args.module_dir is None and (args.name is not None or args.no_replace):
        raise UsageError("--name and --no-replace are for the patch module (--module-dir)")
    done = diff(stdin_path(args.orig), stdin_path(args.patched), args.output,
                objname=args.object, kernel=[*args.kernel, *args.symvers],
                sympos=args.sympos, module_dir=args.module_dir, name=args.name,
                replace=not args.no_replace)  # fmt: skip
    if args.json:
        print(json.dumps(done.to_json(), indent=2))
    else:
        for line in done.to_text().splitlines():
            print(line, file=sys.stderr if line.startswith(f"{done.patched}: refused: ")
                  else sys.stdout)  # fmt: skip
    return 1 if done.refused else 0
