"""Fuzz targets: one function per part of klpelf, each taking bytes.

A target returns normally or raises :class:`klpelf.errors.KlpError` whose message is
one line; anything else (another exception, a multi-line message, output klpelf
writes that it cannot read back) is a broken promise and raises
:class:`BrokenPromiseError`.  tests/unit/test_fuzz_targets.py runs them briefly with
hypothesis (seeded from samples/); tests/fuzz/run.py runs them long with atheris
(docs/fuzzing.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from klpelf.errors import KlpError, UsageError
from klpelf.text import terminal_line

# the samples with their DWARF stripped (strip --strip-debug samples/klp_sample/*.ko) and
# the smallest module of each other architecture in the corpus (tests/corpus/fetch.py):
# a few KiB each, so that an execution reads the module rather than 250 KiB of DWARF
SEEDS = Path(__file__).resolve().parent / "seeds"

KALLSYMS = (
    b"ffffffff81000000 T _stext\nffffffff81000600 D max_cstate\n"
    b"ffffffff81000700 D total_forks\nffffffff81000800 D nr_threads\n"
    b"ffffffff81000900 d max_cstate\nffffffffc0100000 t ext4_fn\t[ext4]\n"
)
SYMVERS = b"0x12345678\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n"


class BrokenPromiseError(AssertionError):
    """The README's promise for bad input does not hold for this input."""


def _kernel() -> object:
    from klpelf.symbols.sources import KernelSymbols
    from klpelf.symbols.symtext import open_symbol_text
    from klpelf.symbols.symvers import parse_symvers

    ks = KernelSymbols()
    ks.texts.append(open_symbol_text(KALLSYMS, "kallsyms"))
    ks.exports.update(parse_symvers(SYMVERS.decode(), "Module.symvers"))
    return ks


def elf_reader(data: bytes) -> None:
    from klpelf.elf.reader import read_elf
    from klpelf.klp.module import klp_module
    from klpelf.operations.show import show_module

    show_module(klp_module(read_elf(data, path="f")), relocs=True)


def names(data: bytes) -> None:
    from klpelf.klp.autoconvert import SymposChoice
    from klpelf.klp.names import KlpRelaSectionName, KlpSymbolName, parse_annotation_symbol

    text = data.decode("utf-8", "surrogateescape")
    for parse in (KlpSymbolName.parse, KlpRelaSectionName.parse, parse_annotation_symbol,
                  SymposChoice.parse):  # fmt: skip
        try:
            parse(text)
        except (KlpError, ValueError) as e:
            # the name parsers raise ValueError (KlpFormatError is one); a ValueError that
            # is not a KlpError must still be a one-line message
            if not isinstance(e, KlpError) and "\n" in str(e):
                raise BrokenPromiseError(f"{parse.__qualname__}: multi-line message") from e


def symbol_sources(data: bytes) -> None:
    from klpelf.symbols.symtext import open_symbol_text
    from klpelf.symbols.symvers import looks_like_symvers, parse_symvers

    for kind in (None, "kallsyms", "System.map"):
        try:
            text = open_symbol_text(data, "f", kind=kind)
            text.prefetch(["max_cstate", "_stext"])
            text.matches("max_cstate")
        except KlpError:
            pass
    if looks_like_symvers(data[:4096]):
        parse_symvers(data.decode("utf-8", "surrogateescape"), "f")


def check(data: bytes) -> None:
    from klpelf.elf.reader import read_elf
    from klpelf.operations.check import check as check_verb

    checked = check_verb(read_elf(data, path="f"), version="6.1", kernel=_kernel())  # type: ignore[arg-type]
    checked.to_text()
    checked.to_json()


def resolve(data: bytes) -> None:
    from klpelf.elf.reader import read_elf
    from klpelf.operations.resolve import resolve as resolve_verb

    resolve_verb(read_elf(data, path="f"), _kernel()).to_text()  # type: ignore[arg-type]


def convert(data: bytes) -> None:
    """Convert (annotation and automatic mode), write, and read the output back: what
    klpelf writes must read back, and check without an error of the reader."""
    from klpelf.elf.reader import read_elf
    from klpelf.elf.writer import write_elf
    from klpelf.klp.check import check_module
    from klpelf.operations.convert import convert as convert_verb
    from klpelf.release import KernelRelease

    try:
        # what klpelf says of the input: a file it rejects may come out as rejected
        check_module(read_elf(data, path="in"), version=KernelRelease(6, 1))
        input_checks = True
    except KlpError:
        input_checks = False
    for kernel in ((), _kernel()):
        try:
            done = convert_verb(read_elf(data, path="f"), kernel=kernel)  # type: ignore[arg-type]
        except KlpError:
            continue
        out = write_elf(done.elf)
        try:
            again = read_elf(out, path="out")
        except KlpError as e:
            raise BrokenPromiseError(f"convert wrote a file klpelf cannot read: {e}") from e
        try:
            check_module(again, version=KernelRelease(6, 1))
        except KlpError as e:
            if input_checks:
                raise BrokenPromiseError(f"convert wrote a file klpelf rejects: {e}") from e


TARGETS: dict[str, Callable[[bytes], None]] = {
    "elf_reader": elf_reader, "names": names, "symbol_sources": symbol_sources,
    "check": check, "resolve": resolve, "convert": convert,
}  # fmt: skip


def run_one(name: str, data: bytes) -> None:
    """Run target ``name`` on ``data``; raise :class:`BrokenPromiseError` on a broken promise."""
    try:
        TARGETS[name](data)
    except BrokenPromiseError:
        raise
    except UsageError:
        pass
    except KlpError as e:
        # names from the input stay raw in the library's messages; the CLI prints every
        # line through klpelf.text.terminal_line, which escapes and cuts them
        if "\n" in terminal_line(f"klpelf: {e}") or not str(e):
            raise BrokenPromiseError(f"{name}: not one line: {str(e)[:200]!r}") from e
    except RecursionError as e:
        raise BrokenPromiseError(f"{name}: RecursionError") from e
    except Exception as e:
        raise BrokenPromiseError(f"{name}: {type(e).__name__}: {e}") from e


def seeds(name: str) -> list[bytes]:
    """The seed corpus of a target: the samples, or lines and names from them."""
    if name == "names":
        return [b".klp.sym.vmlinux.max_cstate,1", b".klp.rela.vmlinux.text",
                b".klp.sym.rela.lp.ext4.f,0", b"vmlinux:max_cstate=2"]  # fmt: skip
    if name == "symbol_sources":
        return [KALLSYMS, SYMVERS, b"ffffffff81000000 T _stext\n"]
    return [p.read_bytes() for p in sorted(SEEDS.glob("*.ko"))]
