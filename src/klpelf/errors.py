"""The one exception hierarchy of klpelf.

Every failure that input can cause is a :class:`KlpError`; anything else is a bug.
``str(err)`` is the problem, prefixed with the file when the error knows it, so the
CLI prints exactly one line per error.  Where the kernel has the same check, the
message is the kernel's own text.
"""

from __future__ import annotations


class KlpError(Exception):
    """Base of every error klpelf raises on bad input.  Never raised directly."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def with_path(self, path: str) -> KlpError:
        """Attach the file name if the error does not carry one yet; returns self."""
        if self.path is None:
            self.path = path
        return self


class ElfError(KlpError, ValueError):
    """The input is not a usable ELF object."""

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None) -> None:
        super().__init__(message, path=path)
        self.offset = offset


class ElfFormatError(ElfError):
    """Malformed ELF: truncated, bad magic, out-of-range index or size, and the like."""


class UnsupportedElfError(ElfError):
    """Well-formed ELF that klpelf does not handle (for example an unknown ELF class)."""


class ElfEditError(KlpError, ValueError):
    """An edit of the ELF model that would produce a broken object."""


class KlpFormatError(KlpError, ValueError):
    """Content that violates Documentation/livepatch/module-elf-format.rst."""


class InputError(KlpError, OSError):
    """A path that cannot be read: missing, a directory, unreadable, bad compression."""


class SymbolSourceError(KlpError, ValueError):
    """A kernel symbol source that cannot be used: a malformed kallsyms, System.map or
    Module.symvers line, or a path that is none of the formats klpelf reads.

    ``lineno`` (1-based) names the offending line of a text source.
    """

    def __init__(self, message: str, *, path: str | None = None, lineno: int | None = None) -> None:
        super().__init__(message, path=path)
        self.lineno = lineno

    def __str__(self) -> str:
        if self.path and self.lineno is not None:
            return f"{self.path}:{self.lineno}: {self.message}"
        return super().__str__()


class UsageError(KlpError, ValueError):
    """An argument that is not valid (an option's value, a parameter of the library):
    the CLI prints the one line and exits with status 2."""


class SymbolLookupError(KlpError, LookupError):
    """A livepatch symbol that klp_find_object_symbol() would not resolve.

    ``str(err)`` is the kernel's message (without the ``livepatch: `` prefix).
    """

    def __init__(self, message: str, *, objname: str, name: str, sympos: int) -> None:
        super().__init__(message)
        self.objname = objname
        self.name = name
        self.sympos = sympos


class SymbolNotFoundError(SymbolLookupError):
    """``symbol '%s' not found in symbol table``"""


class AmbiguousSymbolError(SymbolLookupError):
    """``unresolvable ambiguity for symbol '%s' in object '%s'``"""


class SymbolPositionError(SymbolLookupError):
    """``symbol position %lu for symbol '%s' in object '%s' not found``"""
