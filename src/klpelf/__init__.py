"""klpelf: read, check, resolve and write Linux kernel livepatch modules.

The entry points are attributes of this package (``__all__``; docs/api.md describes
them): the verbs of the command line as functions (:func:`show`, :func:`check`,
:func:`resolve`, :func:`convert`, from :mod:`klpelf.operations`), the ELF model's
:func:`open_elf` and :func:`save_elf`, the livepatch view :func:`klp_module`, the
checker :func:`check_module`, the kernel symbol sources, :class:`KernelRelease` and
the error types.  Every failure that input can cause is a :class:`KlpError` whose
message names the file.

Example::

    import klpelf
    done = klpelf.convert("klp_sample.ko", "klp_sample_lp.ko")
    print(klpelf.check("klp_sample_lp.ko").to_text())
"""

from __future__ import annotations

# Each name is imported on first use (module __getattr__), so that `import klpelf`
# costs nothing and the command line pays only for what it runs.  No dataclasses on
# the import path of the commands: `import dataclasses` (inspect, ast, tokenize, dis)
# and the exec behind each @dataclass cost ~17 ms of a ~65 ms `klpelf check`; records
# are typing.NamedTuple classes, or plain __slots__ classes on klpelf._record's bases.
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# The public name -> the module that defines it.  The facade names every layer; nothing
# inside the package imports it (tests/unit/test_layering.py), except for __version__.
_EXPORTS = {
    # the verbs
    "show": "klpelf.operations.show",
    "show_document": "klpelf.operations.show",
    "ShownModule": "klpelf.operations.show",
    "check": "klpelf.operations.check",
    "check_kernel": "klpelf.operations.check",
    "check_document": "klpelf.operations.check",
    "parse_release": "klpelf.operations.check",
    "CheckedModule": "klpelf.operations.check",
    "KernelChoice": "klpelf.operations.check",
    "resolve": "klpelf.operations.resolve",
    "resolve_kernel": "klpelf.operations.resolve",
    "resolve_document": "klpelf.operations.resolve",
    "ResolvedModule": "klpelf.operations.resolve",
    "convert": "klpelf.operations.convert",
    "ConvertedModule": "klpelf.operations.convert",
    "diff": "klpelf.operations.diff",
    "DiffResult": "klpelf.operations.diff",
    # the layers below
    "open_elf": "klpelf.elf.reader",
    "read_elf": "klpelf.elf.reader",
    "save_elf": "klpelf.elf.writer",
    "write_elf": "klpelf.elf.writer",
    "ElfFile": "klpelf.elf.file",
    "klp_module": "klpelf.klp.module",
    "KlpModule": "klpelf.klp.module",
    "check_module": "klpelf.klp.check",
    "CheckResult": "klpelf.klp.diagnostics",
    "Diagnostic": "klpelf.klp.diagnostics",
    "convert_annotations": "klpelf.klp.convert",
    "KernelSymbols": "klpelf.symbols.sources",
    "load_sources": "klpelf.symbols.sources",
    "klp_find_object_symbol": "klpelf.symbols.resolve",
    "Resolution": "klpelf.symbols.resolve",
    "KernelRelease": "klpelf.release",
    # the errors
    "KlpError": "klpelf.errors",
    "ElfError": "klpelf.errors",
    "ElfFormatError": "klpelf.errors",
    "UnsupportedElfError": "klpelf.errors",
    "ElfEditError": "klpelf.errors",
    "KlpFormatError": "klpelf.errors",
    "InputError": "klpelf.errors",
    "OutputError": "klpelf.errors",
    "SymbolSourceError": "klpelf.errors",
    "UsageError": "klpelf.errors",
    "SymbolLookupError": "klpelf.errors",
    "SymbolNotFoundError": "klpelf.errors",
    "AmbiguousSymbolError": "klpelf.errors",
    "SymbolPositionError": "klpelf.errors",
}

# the same names as _EXPORTS (tests/unit/test_api.py): ruff and mypy read a literal list
__all__ = [
    "AmbiguousSymbolError",
    "CheckResult",
    "CheckedModule",
    "ConvertedModule",
    "Diagnostic",
    "DiffResult",
    "ElfEditError",
    "ElfError",
    "ElfFile",
    "ElfFormatError",
    "InputError",
    "KernelChoice",
    "KernelRelease",
    "KernelSymbols",
    "KlpError",
    "KlpFormatError",
    "KlpModule",
    "OutputError",
    "Resolution",
    "ResolvedModule",
    "ShownModule",
    "SymbolLookupError",
    "SymbolNotFoundError",
    "SymbolPositionError",
    "SymbolSourceError",
    "UnsupportedElfError",
    "UsageError",
    "__version__",
    "check",
    "check_document",
    "check_kernel",
    "check_module",
    "convert",
    "convert_annotations",
    "diff",
    "klp_find_object_symbol",
    "klp_module",
    "load_sources",
    "open_elf",
    "parse_release",
    "read_elf",
    "resolve",
    "resolve_document",
    "resolve_kernel",
    "save_elf",
    "show",
    "show_document",
    "write_elf",
]

if TYPE_CHECKING:  # what mypy and editors see; at run time __getattr__ imports on demand
    from klpelf.elf.file import ElfFile
    from klpelf.elf.reader import open_elf, read_elf
    from klpelf.elf.writer import save_elf, write_elf
    from klpelf.errors import (
        AmbiguousSymbolError,
        ElfEditError,
        ElfError,
        ElfFormatError,
        InputError,
        KlpError,
        KlpFormatError,
        OutputError,
        SymbolLookupError,
        SymbolNotFoundError,
        SymbolPositionError,
        SymbolSourceError,
        UnsupportedElfError,
        UsageError,
    )
    from klpelf.klp.check import check_module
    from klpelf.klp.convert import convert_annotations
    from klpelf.klp.diagnostics import CheckResult, Diagnostic
    from klpelf.klp.module import KlpModule, klp_module
    from klpelf.operations.check import (
        CheckedModule,
        KernelChoice,
        check,
        check_document,
        check_kernel,
        parse_release,
    )
    from klpelf.operations.convert import ConvertedModule, convert
    from klpelf.operations.diff import DiffResult, diff
    from klpelf.operations.resolve import (
        ResolvedModule,
        resolve,
        resolve_document,
        resolve_kernel,
    )
    from klpelf.operations.show import ShownModule, show, show_document
    from klpelf.release import KernelRelease
    from klpelf.symbols.resolve import Resolution, klp_find_object_symbol
    from klpelf.symbols.sources import KernelSymbols, load_sources


if not TYPE_CHECKING:  # hidden from mypy, so that a misspelt name is a type error

    def __getattr__(name: str) -> object:
        """Import a public name's module on first use (PEP 562)."""
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'klpelf' has no attribute {name!r}")
        # __import__ with a fromlist returns the submodule itself (importlib costs an import)
        value = getattr(__import__(module, fromlist=[name]), name)
        globals()[name] = value  # the next access does not come here
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_EXPORTS})
