"""What ``klpelf check`` reports: diagnostics and the result of one module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

from klpelf._record import Record
from klpelf.elf.file import Section
from klpelf.release import KernelRelease

Severity = Literal["error", "warning", "note"]
#: when the kernel meets the problem: loading the livepatch module, its init
#: (klp_enable_patch), loading a patched module later, or only when patched code runs
When = Literal["load", "enable", "target-load", "runtime", "never"]

#: sections whose klp relocations for a module object cannot be applied safely:
#: the loader has processed them (jump labels, static calls, alternatives,
#: paravirt) before livepatch writes the relocations.  klp-build refuses them.
UNSAFE_LATE_SECTIONS = (
    "__jump_table",
    ".static_call_sites",
    ".altinstructions",
    ".parainstructions",
)


class Diagnostic(NamedTuple):
    """One finding of :func:`klpelf.check_module`: a rule the kernel enforces
    (``kernel`` True: the kernel refuses with ``errno`` at ``when``, printing
    ``dmesg_prefix + message``) or one of klpelf's own (the kernel accepts, then
    misbehaves), located by section, symbol and relocation entry where it has a place.
    """

    severity: Severity
    #: a short stable identifier of the rule, for --json consumers and tests
    rule: str
    #: the kernel's message text where the kernel has the same check (no prefix); its
    #: first line when the kernel prints several (see ``more``)
    message: str
    section: Section | None = None
    symbol: tuple[int, str] | None = None
    relocation: int | None = None
    when: When = "never"
    #: the kernel refuses (errno) at ``when``; False: klpelf's own finding
    kernel: bool = False
    errno: int | None = None
    #: what dmesg puts before the message ("livepatch: ", "module: ", "<mod>: ")
    dmesg_prefix: str = ""
    #: the kernel logs the message (False: it refuses silently, e.g. 5.10's ELF checks)
    logged: bool = True
    #: the lines the kernel prints after ``message``, each with the same prefix
    #: (x86's overflow: label has two pr_err() calls)
    more: tuple[str, ...] = ()

    @property
    def lines(self) -> list[str]:
        """The message's lines: ``message``, then ``more``."""
        return [self.message, *self.more]

    @property
    def dmesg(self) -> list[str]:
        """The lines the kernel logs for this finding, each with its prefix, as dmesg
        shows them; empty for klpelf's own findings and silent refusals."""
        if not (self.kernel and self.logged):
            return []
        return [self.dmesg_prefix + line for line in self.lines]


#: (objname, name, sympos) -> (error message or None, address or None)
Resolver = Callable[[str, str, int], tuple[str | None, int | None]]


class CheckResult(Record):
    """What :func:`klpelf.check_module` found in one module: every diagnostic in the
    kernel's order, for the release it judged (``version``, taken from
    ``version_source``: the command line, the module's vermagic or the default), and
    the kernel's verdict on loading it (:attr:`kernel_verdict`).
    """

    _fields = ("path", "module", "version", "version_source", "diagnostics")
    __slots__ = (*_fields, "vermagic", "release_mismatch")

    def __init__(self, path: str, module: str, version: KernelRelease, version_source: str,
                 diagnostics: list[Diagnostic] | None = None) -> None:  # fmt: skip
        self.path, self.module = path, module
        self.version, self.version_source = version, version_source
        self.diagnostics = diagnostics if diagnostics is not None else []
        #: the module's vermagic (None: it has none)
        self.vermagic: str | None = None
        #: how the release judged differs from the one the module was built for
        self.release_mismatch: str | None = None

    @property
    def first_kernel_error(self) -> Diagnostic | None:
        """The error the kernel reports when it refuses the livepatch module itself."""
        for d in self.diagnostics:
            if d.kernel and d.severity == "error" and d.when in ("load", "enable"):
                return d
        return None

    @property
    def kernel_verdict(self) -> Literal["accept", "refuse"]:
        return "refuse" if self.first_kernel_error is not None else "accept"

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]
