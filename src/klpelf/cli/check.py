"""``klpelf check``: predict what the kernel will do with a livepatch module."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from klpelf.cli._common import error
from klpelf.errors import KlpError

if TYPE_CHECKING:
    from klpelf.klp.check import CheckResult, Diagnostic
    from klpelf.symbols.sources import KernelSymbols


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
    from klpelf.elf.reader import open_elf
    from klpelf.klp.check import Diagnostic, check_module
    from klpelf.release import KernelRelease

    version = None
    if args.kernel_release:
        try:
            version = KernelRelease.parse(args.kernel_release)
        except ValueError:
            print(f"klpelf: error: not a kernel release: {args.kernel_release!r}", file=sys.stderr)
            return 2
    ks: KernelSymbols | None = None
    unresolved: str | None = None
    if args.kernel or not args.static:
        # only then: --static does not import the symbol sources and the resolver
        from klpelf.symbols.resolve import release_mismatch
        from klpelf.symbols.sources import KernelSymbols, load_sources
    if args.kernel:
        try:
            ks = load_sources(args.kernel)
        except KlpError as e:
            print(f"klpelf: {e}", file=sys.stderr)
            return 1
    elif not args.static:
        try:
            ks = KernelSymbols.running()
        except KlpError as e:
            unresolved = f"symbols not resolved: the running kernel's symbols: {e}"
    status = 0
    docs: list[dict[str, Any]] = []
    for path in args.modules:
        try:
            elf = open_elf(path)
            notes: list[str] = []
            use = ks
            if ks is not None:
                mi = elf.modinfo
                mismatch = release_mismatch(ks, mi.get("vermagic") if mi else None)
                source = ks.description
                if mismatch and not args.kernel:
                    use = None
                    notes.append(f"symbols not resolved: {mismatch} ({source}; use --kernel)")
                else:
                    notes.append(f"symbols resolved against {source}")
                    if mismatch:
                        notes.append(mismatch)
            elif unresolved:
                notes.append(unresolved)
            res = check_module(elf, version=version, kernel=use)
            res.diagnostics[:0] = [Diagnostic("note", "kernel-symbols", n) for n in notes]
        except KlpError as e:
            error(e, path)
            status = 1
            continue
        if res.errors or (args.strict and res.warnings):
            status = 1
        if args.json:
            docs.append(_json(res))
        else:
            _print(res)
    if args.json:
        import json  # lazily: a run without --json does not pay for it

        json.dump({"schema": "klpelf.check/1", "modules": docs}, sys.stdout, indent=2)
        print()
    return status


def _where(res: CheckResult, d: Diagnostic) -> str:
    loc = res.path
    if d.section is not None:
        loc += f": {d.section.name}[{d.section.index}]"
        if d.relocation is not None:
            loc += f" entry {d.relocation}"
    elif d.symbol is not None:
        loc += f": symbol[{d.symbol[0]}]"
    return loc


_WHEN = {
    "load": "when the module loads",
    "enable": "in klp_enable_patch() (the module's init)",
    "target-load": "when the patched module loads",
    "runtime": "",
    "never": "",
}


def _print(res: CheckResult) -> None:
    for d in res.diagnostics:
        print(f"{_where(res, d)}: {d.severity}: {d.message}")
    first = res.first_kernel_error
    kernel = f"Linux {res.version} ({res.version_source})"
    if first is not None:
        print(
            f"{res.path}: {kernel} would refuse the module {_WHEN[first.when]} "
            f"(errno {first.errno}): {first.dmesg_prefix}{first.message}"
        )
    else:
        later = [d for d in res.diagnostics if d.kernel and d.when == "target-load"]
        note = ""
        if later:
            note = f"; it would refuse to load the patched module: {later[0].message}"
        print(f"{res.path}: {kernel} would load the module{note}")
    print(f"{res.path}: {len(res.errors)} errors, {len(res.warnings)} warnings")


def _json(res: CheckResult) -> dict[str, Any]:
    first = res.first_kernel_error
    return {
        "path": res.path,
        "module": res.module,
        "kernel_release": str(res.version),
        "release_source": res.version_source,
        "verdict": res.kernel_verdict,
        "kernel_message": f"{first.dmesg_prefix}{first.message}"
        if first and first.logged
        else None,
        "errno": first.errno if first else None,
        "errors": len(res.errors),
        "warnings": len(res.warnings),
        "diagnostics": [
            {
                "severity": d.severity,
                "rule": d.rule,
                "message": d.message,
                "dmesg": f"{d.dmesg_prefix}{d.message}" if d.kernel and d.logged else None,
                "section": {"index": d.section.index, "name": d.section.name}
                if d.section
                else None,
                "symbol": {"index": d.symbol[0], "name": d.symbol[1]} if d.symbol else None,
                "relocation": d.relocation,
                "when": d.when,
                "kernel": d.kernel,
                "errno": d.errno,
            }
            for d in res.diagnostics
        ],
    }
