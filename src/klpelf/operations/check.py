"""``klpelf check``: predict what the kernel does with a livepatch module, as data and text.

:func:`check` is the verb: :func:`klpelf.klp.check.check_module` over the module,
with the kernel symbols chosen as the command line chooses them
(:func:`check_kernel`) and a note saying what they were.  Its result,
:class:`CheckedModule`, gives one ``Result`` of the ``klpelf.check/2`` schema
(docs/json.md; :class:`~klpelf.operations.schemas.CheckJson`) and the lines ``klpelf check``
prints.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Literal

from klpelf._record import FrozenRecord
from klpelf.errors import KlpError, UsageError
from klpelf.klp.check import CheckResult, Diagnostic, check_module
from klpelf.operations import ModuleSource, naming, open_module
from klpelf.release import NEWEST_MODELLED, OLDEST_MODELLED, KernelRelease, modelled
from klpelf.text import join_lines

if TYPE_CHECKING:
    from klpelf.klp.enable import LoadedPatch
    from klpelf.operations.schemas import CheckJson, CheckResultJson, DiagnosticJson
    from klpelf.symbols.sources import KernelSymbols

__all__ = [
    "SCHEMA",
    "CheckedModule",
    "KernelChoice",
    "check",
    "check_document",
    "check_kernel",
    "loaded_patches",
    "parse_release",
]

SCHEMA: Literal["klpelf.check/2"] = "klpelf.check/2"


# A release as `uname -r` prints it: major.minor, then nothing or a separator and the rest
# (6.1.0-56-amd64, 6.12.117+deb13-amd64, 7.2, 5.10.0-rc1).  KernelRelease.parse() takes
# any string starting with major.minor, as a vermagic does; an argument gets no such leeway.
_RELEASE_ARG = r"\d+\.\d+(?:[-+.~_]\S*)?"  # compiled on first use (re caches it)


def parse_release(text: str) -> KernelRelease:
    """The kernel release an argument names (``--kernel-release``).

    :raises UsageError: ``text`` is not a kernel release (``banana``, ``2.6x``), or
        names one whose rules klpelf does not model (before 4.5, after the newest
        modelled, :data:`klpelf.release.NEWEST_MODELLED`).
    """
    if re.fullmatch(_RELEASE_ARG, text) is None:
        raise UsageError(f"not a kernel release: {text!r}")
    release = KernelRelease.parse(text)
    if not modelled(release):
        raise UsageError(f"kernel release {text!r} is not modelled: klpelf knows the rules "
                         f"of Linux {OLDEST_MODELLED} to {NEWEST_MODELLED}")  # fmt: skip
    return release


def _full_release(text: str) -> str | None:
    # a release as `uname -r` prints it, the vermagic's first word: more than major.minor
    return text if re.fullmatch(r"\d+\.\d+[-+.~_]\S+", text) else None


class KernelChoice(FrozenRecord):
    """The kernel symbols :func:`check` resolves livepatch symbols against."""

    _fields = ("symbols", "given", "unavailable")
    __slots__ = _fields

    def __init__(self, symbols: KernelSymbols | None, given: bool = True,
                 unavailable: str | None = None) -> None:  # fmt: skip
        #: None: symbols are not resolved
        self.symbols: Final = symbols
        #: named by the caller (``--kernel``): used even when their release is not the
        #: one the module was built for (the running kernel's are then not used)
        self.given: Final = given
        #: why there are no symbols: the running kernel's could not be read
        self.unavailable: Final = unavailable


def check_kernel(sources: Sequence[str] = (), *, static: bool = False) -> KernelChoice:
    """Choose the kernel symbols as ``klpelf check`` does.

    ``sources`` (``--kernel``) when given; else, unless ``static``, the running
    kernel's, whose absence is a note rather than an error.

    :raises KlpError: a source in ``sources`` cannot be read.
    """
    if sources and static:
        raise UsageError("--static resolves no symbols: it cannot be given with --kernel")
    if sources:
        from klpelf.symbols.sources import load_sources

        return KernelChoice(load_sources(sources))
    if static:
        return KernelChoice(None)
    # only here: --static does not import the symbol sources and the resolver
    from klpelf.symbols.sources import KernelSymbols

    try:
        return KernelChoice(KernelSymbols.running(), given=False)
    except KlpError as e:
        why = f"symbols not resolved: the running kernel's symbols: {e}"
        return KernelChoice(None, given=False, unavailable=why)


def not_resolved_warning(ks: KernelSymbols, mismatch: str) -> str:
    """What check and resolve both say when the running kernel (no ``--kernel``) is
    not the release the module was built for: its symbols are not used."""
    return (f"symbols not resolved: {mismatch} ({ks.description}); give the target "
            "kernel's symbols with --kernel")  # fmt: skip


def _kernel_notes(
    kernel: KernelChoice, vermagic: str | None
) -> tuple[KernelSymbols | None, list[Diagnostic]]:
    # the symbols to use for a module built for `vermagic`, and the notes that say so
    ks = kernel.symbols
    if ks is None:
        why = [kernel.unavailable] if kernel.unavailable else []
        return None, [Diagnostic("note", "kernel-symbols", n) for n in why]
    from klpelf.symbols.resolve import release_mismatch

    mismatch = release_mismatch(ks, vermagic)
    if mismatch and not kernel.given:
        # a warning, as resolve says it: --strict makes both exit 1
        return None, [Diagnostic("warning", "kernel-symbols", not_resolved_warning(ks, mismatch))]
    notes = [f"symbols resolved against {ks.description}"]
    if mismatch:
        notes.append(mismatch)
    return ks, [Diagnostic("note", "kernel-symbols", n) for n in notes]


def check(
    module: ModuleSource,
    *,
    version: KernelRelease | str | None = None,
    kernel: KernelChoice | KernelSymbols | None = None,
    loaded: Sequence[LoadedPatch] = (),
) -> CheckedModule:
    """Check ``module`` (a path or an ElfFile) as the kernel would load and enable it.

    :param version: the target kernel's release (a :class:`KernelRelease`, or a string
        read by :func:`parse_release`: a full one, ``6.1.0-56-amd64``, is also what the
        vermagic is compared with); default: the module's vermagic.
    :param kernel: the target kernel's symbols (a :class:`KernelSymbols`, or the
        :class:`KernelChoice` of :func:`check_kernel`); every livepatch symbol is then
        resolved, and a ``kernel-symbols`` note says against what.  Default: not
        resolved.
    :param loaded: the livepatches already enabled on the target (``--loaded``, read
        by :func:`loaded_patches`): their states and the new patch's ``replace``
        decide klp_is_patch_compatible().
    :raises KlpError: the module cannot be read (the message names the file).
    :raises UsageError: ``version`` is not a kernel release.
    """
    target_release = None
    if isinstance(version, str):
        target_release = _full_release(version)
        version = parse_release(version)
    if kernel is None or not isinstance(kernel, KernelChoice):
        kernel = KernelChoice(kernel)
    elf = open_module(module)
    with naming(elf.path):
        mi = elf.modinfo
        use, notes = _kernel_notes(kernel, mi.get("vermagic") if mi else None)
        res = check_module(elf, version=version, kernel=use, loaded_patches=list(loaded),
                           target_release=target_release)  # fmt: skip
    res.diagnostics[:0] = notes
    return CheckedModule(res)


def loaded_patches(modules: Sequence[ModuleSource]) -> list[LoadedPatch]:
    """The decoded patches of livepatch modules already enabled on the target.

    :raises KlpError: a module that cannot be read, or in which no patch is decoded
        (the message names the file).
    """
    from klpelf.elf.modinfo import module_name
    from klpelf.klp.enable import LoadedPatch
    from klpelf.klp.patch import decode_patches

    out = []
    for m in modules:
        elf = open_module(m)
        patches = decode_patches(elf)
        if len(patches) != 1:
            raise KlpError(f"--loaded: {len(patches)} livepatches decoded in the module, "
                           "expected one", path=elf.path)  # fmt: skip
        out.append(LoadedPatch(module_name(elf), patches[0]))
    return out


def check_document(checked: Sequence[CheckedModule],
                   failed: Sequence[tuple[str, str]] = ()) -> CheckJson:  # fmt: skip
    """The ``klpelf check --json`` document of several modules; ``failed``: (path,
    error) of the files that could not be checked."""
    return {"schema": SCHEMA, "modules": [c.to_json() for c in checked],
            "failed": [{"path": p, "error": e} for p, e in failed]}  # fmt: skip


_WHEN = {
    "load": "when the module loads",
    "enable": "in klp_enable_patch() (the module's init)",
    "target-load": "when the patched module loads",
    "runtime": "",
    "never": "",
}


def _where(res: CheckResult, d: Diagnostic) -> str:
    loc = res.path
    if d.section is not None:
        loc += f": {d.section.name}[{d.section.index}]"
        if d.relocation is not None:
            loc += f" entry {d.relocation}"
    elif d.symbol is not None:
        loc += f": symbol[{d.symbol[0]}]"
    return loc


def _diagnostic_json(d: Diagnostic) -> DiagnosticJson:
    return {
        "severity": d.severity, "rule": d.rule, "message": "\n".join(d.lines),
        "dmesg": "\n".join(d.dmesg) or None,
        "section": {"index": d.section.index, "name": d.section.name} if d.section else None,
        "symbol": {"index": d.symbol[0], "name": d.symbol[1]} if d.symbol else None,
        "relocation": d.relocation, "when": d.when, "kernel": d.kernel, "errno": d.errno,
    }  # fmt: skip


class CheckedModule(FrozenRecord):
    """What ``klpelf check`` says about one module."""

    _fields = ("result",)
    __slots__ = _fields

    def __init__(self, result: CheckResult) -> None:
        #: every diagnostic, the kernel's in the kernel's order, then klpelf's own
        self.result: Final = result

    def failed(self, *, strict: bool = False) -> bool:
        """The kernel would refuse the module or it has errors (``strict``: or warnings)."""
        res = self.result
        return bool(res.errors or (strict and res.warnings))

    def to_json(self) -> CheckResultJson:
        """The module as one ``Result`` object of the ``klpelf.check/2`` schema."""
        res = self.result
        first = res.first_kernel_error
        return {
            "path": res.path, "name": res.module, "kernel_release": str(res.version),
            "release_source": res.version_source, "verdict": res.kernel_verdict,
            "kernel_message": "\n".join(first.dmesg) or None if first else None,
            "errno": first.errno if first else None,
            "vermagic": res.vermagic, "release_mismatch": res.release_mismatch,
            "errors": len(res.errors), "warnings": len(res.warnings),
            "diagnostics": [_diagnostic_json(d) for d in res.diagnostics],
        }  # fmt: skip

    def to_text(self) -> str:
        """What ``klpelf check`` prints for the module: one line per diagnostic, the
        kernel's verdict, the counts (no final newline)."""
        res = self.result
        # one output line per line of a message (x86's overflow prints two)
        lines = [f"{_where(res, d)}: {d.severity}: {line}"
                 for d in res.diagnostics for line in d.lines]  # fmt: skip
        first = res.first_kernel_error
        why = res.version_source
        if res.release_mismatch:
            why += f"; {res.release_mismatch}"
        kernel = f"Linux {res.version} ({why})"
        if first is not None and not first.logged:
            lines.append(
                f"{res.path}: {kernel} would refuse the module {_WHEN[first.when]}, "
                f"silently (errno {first.errno}, nothing in dmesg): {first.message}"
            )
        elif first is not None:
            head, *rest = first.dmesg
            lines.append(
                f"{res.path}: {kernel} would refuse the module {_WHEN[first.when]} "
                f"(errno {first.errno}): {head}"
            )
            lines += [f"{res.path}: {line}" for line in rest]
        else:
            later = [d for d in res.diagnostics if d.kernel and d.when == "target-load"]
            note = ""
            if later:
                said = "; ".join(later[0].lines)
                note = f"; it would refuse to load the patched module: {said}"
            lines.append(f"{res.path}: {kernel} would load the module{note}")
        lines.append(f"{res.path}: {len(res.errors)} errors, {len(res.warnings)} warnings")
        return join_lines(lines)
