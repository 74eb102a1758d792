"""``klpelf build``: from a source fix to a checked livepatch module."""

from __future__ import annotations

import argparse
import sys

from klpelf.cli._common import add_common, add_kernel_option, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "build",
        allow_abbrev=False,
        help="from a source fix (unified diff), a checked livepatch module",
        description="Apply FIX.patch to copies of the .c files it touches, compile each "
        "touched unit as it is and fixed with the tree's own kbuild command (only those "
        "units), diff each pair (klpelf diff), build the patch module with kbuild, "
        "convert it and check it against --kernel.  The tree must be prepared (make "
        "olddefconfig modules_prepare with the target's config); its sources are not "
        "changed.  Only changes to existing .c files are supported yet.",
    )
    p.add_argument("fix", metavar="FIX.patch",
                   help="the fix: a unified diff (git diff, diff -u)")  # fmt: skip
    p.add_argument("--source", required=True, metavar="TREE",
                   help="the source tree the fix is against: a prepared kernel tree, or "
                   "with --build an external module's directory")  # fmt: skip
    p.add_argument("--build", metavar="KERNEL_BUILD",
                   help="the prepared kernel build the --source module directory is built "
                   "against (make -C KERNEL_BUILD M=TREE), e.g. "
                   "/lib/modules/RELEASE/build")  # fmt: skip
    p.add_argument("-o", "--output", required=True, metavar="LP.ko",
                   help="the livepatch module")  # fmt: skip
    add_kernel_option(p, "the target kernel's symbols, for the diff and the check")
    p.add_argument("--sympos", action="append", default=[], metavar="OBJ:SYMBOL=N|FILE",
                   help="the position of an ambiguous SYMBOL, by number or source "
                   "file")  # fmt: skip
    p.add_argument("--name", metavar="NAME",
                   help="the patch module's name (default livepatch_<FIX's name>)")  # fmt: skip
    p.add_argument("--no-replace", action="store_true",
                   help="klp_patch.replace off: the patch adds to the loaded ones")  # fmt: skip
    p.add_argument("--kernel-release", metavar="RELEASE",
                   help="the target's release for the check (default: the module's "
                   "vermagic)")  # fmt: skip
    p.add_argument("--keep", metavar="DIR",
                   help="keep the work (fixed copies, both builds, module sources) in "
                   "DIR")  # fmt: skip
    p.add_argument("--json", action="store_true", help="JSON output (schema klpelf.build/1)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from klpelf.errors import UsageError
    from klpelf.operations.build import build

    if not args.kernel:
        raise UsageError("--kernel is required: the target's symbols (the diff and the check)")
    done = build(args.fix, args.source, args.output, build_dir=args.build, kernel=args.kernel,
                 sympos=args.sympos, name=args.name, replace=not args.no_replace,
                 kernel_release=args.kernel_release, keep=args.keep)  # fmt: skip
    if args.json:
        print_json(done.to_json())
    else:
        for line in done.to_text().splitlines():
            print(line, file=sys.stderr if ": refused: " in line else sys.stdout)
    return 1 if done.failed else 0
