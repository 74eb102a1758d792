"""``klpelf convert``: turn a module built by kbuild into a livepatch module, in one call.

:func:`convert` runs every step the command runs, in its order: refuse to write over
the input; read it; in automatic mode (kernel symbols given) parse the ``--sympos``
choices, read the sources, plan which undefined symbols become livepatch symbols and
rename them (:mod:`klpelf.klp.autoconvert`); then annotation mode
(:func:`klpelf.klp.convert.convert_annotations`) and the atomic write.  Its result,
:class:`ConvertedModule`, says what changed and gives the lines ``klpelf convert``
prints (convert has no JSON form).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, TypeAlias

from klpelf._record import FrozenRecord
from klpelf.elf.constants import SHN
from klpelf.elf.file import ElfFile
from klpelf.elf.writer import save_elf
from klpelf.errors import KlpFormatError, OutputError, UsageError
from klpelf.klp.convert import ConvertReport, convert_annotations
from klpelf.operations import ModuleSource, module_path, naming, open_module
from klpelf.text import join_lines

if TYPE_CHECKING:
    from klpelf.klp.autoconvert import SymposChoice
    from klpelf.symbols.sources import KernelSymbols

__all__ = ["ConvertedModule", "KernelSources", "convert"]

#: the target kernel's symbols: source paths (kallsyms, System.map, vmlinux, module
#: tree, Module.symvers; ``--kernel`` and ``--symvers``), or symbols already read
KernelSources: TypeAlias = "Sequence[str | os.PathLike[str]] | KernelSymbols"


class ConvertedModule(FrozenRecord):
    """What :func:`convert` changed."""

    _fields = ("elf", "output", "symbols", "sections", "modinfo_added", "signature_dropped",
               "warnings")  # fmt: skip
    __slots__ = _fields

    def __init__(self, elf: ElfFile, output: str | None, symbols: list[tuple[int, str, str]],
                 sections: dict[str, int], *, modinfo_added: bool,
                 signature_dropped: bool, warnings: Sequence[str] = ()) -> None:  # fmt: skip
        #: the converted module (the model; written to ``output`` when there is one)
        self.elf: Final = elf
        #: where it was written, or None
        self.output: Final = output
        #: (symbol index, name in the input, livepatch symbol name), in symbol-table order
        self.symbols: Final = symbols
        #: klp relocation section name -> relocations moved into it
        self.sections: Final = sections
        #: ``livepatch=Y`` was added to .modinfo
        self.modinfo_added: Final = modinfo_added
        #: the input's module signature was dropped (sign the output again)
        self.signature_dropped: Final = signature_dropped
        #: what the user should know (``klpelf convert`` prints them on stderr): the
        #: dropped signature and how to sign again, undefined symbols left as they are
        #: without kernel symbols, a plain object left without .modinfo
        self.warnings: Final = tuple(warnings)

    def to_text(self) -> str:
        """The lines ``klpelf convert`` prints, one per change ("" when nothing changed)."""
        out = self.output or self.elf.path or ""
        lines = [
            f"{out}: livepatch symbol {new}" + (f" (was {old})" if old != new else "")
            for _, old, new in self.symbols
        ]
        lines += [f"{out}: {name}: {n} relocation{'s' if n != 1 else ''}"
                  for name, n in self.sections.items()]  # fmt: skip
        if self.modinfo_added:
            lines.append(f"{out}: modinfo livepatch=Y added")
        return join_lines(lines)


def _refuse_input_as_output(source: str | None, output: str) -> None:
    try:
        same = os.path.exists(output) and source is not None and os.path.samefile(source, output)
    except OSError:
        same = False  # the input cannot be read: opening it says why
    if same:
        raise OutputError("output is the input file (refusing to overwrite it)", path=output)


def _sources(kernel: KernelSources) -> list[str] | KernelSymbols | None:
    # None: annotation mode only
    if isinstance(kernel, (str, os.PathLike)):
        return [os.fspath(kernel)]
    if isinstance(kernel, Sequence):
        return [os.fspath(k) for k in kernel] or None
    return kernel


def convert(
    source: ModuleSource,
    output: str | os.PathLike[str] | None = None,
    *,
    kernel: KernelSources = (),
    sympos: Sequence[str | SymposChoice] = (),
) -> ConvertedModule:
    """Convert ``source`` (a path or an ElfFile) into a livepatch module.

    Annotation mode always: undefined symbols named ``.klp.sym.<obj>.<sym>,<pos>`` (or
    klp-convert's ``.klp.sym.rela.``) become livepatch symbols and their relocations
    move to ``.klp.rela.<obj>.<section>`` sections.  Automatic mode with ``kernel``:
    also every undefined symbol the kernel has but does not export, and every symbol
    a module exports.  The input file is never modified.

    :param output: write the result there, atomically (replacing a file that is not
        the input); None: only the returned model is converted.
    :param kernel: automatic mode: the target kernel's symbols and Module.symvers.
    :param sympos: automatic mode: ``OBJ:SYMBOL=N`` or ``OBJ:SYMBOL=FILE`` choices
        (``--sympos``) for ambiguous names.
    :raises KlpError: the input or a source cannot be read, a symbol cannot be placed,
        or ``output`` is the input (:class:`~klpelf.errors.OutputError`); the message
        names the file.
    :raises UsageError: ``sympos`` without ``kernel``, or a malformed choice.
    """
    path = module_path(source)
    if output is not None:
        output = os.fspath(output)
        _refuse_input_as_output(path, output)
    elf = open_module(source)
    was: dict[int, str] = {}
    with naming(path):
        sources = _sources(kernel)
        if sources is not None:
            from klpelf.klp.autoconvert import SymposChoice, apply_plan, plan_klp_symbols

            choices = [c if isinstance(c, SymposChoice) else SymposChoice.parse(c) for c in sympos]
            if isinstance(sources, list):
                from klpelf.symbols.sources import load_sources

                ks = load_sources(sources)
            else:
                ks = sources
            plan = plan_klp_symbols(elf, ks, choices)
            tab = elf.symtab
            if tab is not None:
                was = {i: tab.name(i) for i in plan}
            apply_plan(elf, plan)
        elif sympos:
            raise UsageError("--sympos needs --kernel or --symvers")
        plain = _plain_undefined(elf) if sources is None else []
        report = convert_annotations(elf)
        if plain and not _has_livepatch_symbols(elf):
            # annotated modules mean the other undefined symbols to be exported; here
            # nothing says which are not, and the output would be loaded as it is
            raise KlpFormatError(f"nothing to convert: the module has {_needs_kernel(plain)}")
        warnings = _warnings(report, output)
        if output is not None:
            save_elf(elf, output, overwrite=True)
    symbols = [(i, was.get(i, renamed), new) for i, renamed, new in report.symbols]
    return ConvertedModule(elf, output, symbols, report.sections,
                           modinfo_added=report.modinfo_added,
                           signature_dropped=report.signature_dropped,
                           warnings=warnings)  # fmt: skip


def _plain_undefined(elf: ElfFile) -> list[str]:
    from klpelf.klp.autoconvert import plain_undefined

    tab = elf.symtab
    return [tab.name(i) for i in plain_undefined(elf)] if tab is not None else []


def _has_livepatch_symbols(elf: ElfFile) -> bool:
    tab = elf.symtab
    return tab is not None and bool(tab.indices_where_shndx(SHN.LIVEPATCH))


def _needs_kernel(plain: list[str]) -> str:
    shown = ", ".join(plain[:5]) + (f", ... ({len(plain)} in all)" if len(plain) > 5 else "")
    return (f"no .klp.sym. annotations, and without the target kernel's "
            f"symbols klpelf cannot tell which of its undefined symbols ({shown}) the kernel "
            "does not export; give them: --kernel /proc/kallsyms|System.map|vmlinux|"
            "/lib/modules/RELEASE and --symvers Module.symvers (found by itself in "
            "/lib/modules/RELEASE/build), or annotate the symbols in the source "
            "(.klp.sym.<obj>.<sym>,<pos>, see samples/klp_sample); a livepatch that uses "
            "only exported symbols needs no convert")  # fmt: skip


#: how kbuild signs a module (scripts/sign-file.c: [-dp] <hash algo> <key> <x509> <module>)
_SIGN = ("scripts/sign-file sha512 certs/signing_key.pem certs/signing_key.x509 {out} "
         "(in the kernel build tree, with the key the target kernel trusts)")  # fmt: skip


def _warnings(report: ConvertReport, output: str | None) -> list[str]:
    out: list[str] = []
    if report.signature_dropped:
        target = output or "OUTPUT"
        out.append("the module signature was dropped (a signature covers the bytes convert "
                   f"changes); sign the output again: {_SIGN.format(out=target)}")  # fmt: skip
    if report.not_a_module:
        out.append("not a kernel module (no .gnu.linkonce.this_module): a .modinfo section "
                   "was added for livepatch=Y; the kernel loads only a module that kbuild "
                   "linked (modpost adds struct module)")  # fmt: skip
    return out
