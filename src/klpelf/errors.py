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


class OutputError(KlpError, OSError):
    """An output path that must not or cannot be written (for example: the input itself)."""


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

    The subclass says which of the kernel's three failures it is; ``str(err)`` is the
    kernel's message for it (without the ``livepatch: `` prefix), made from the
    fields.  Equal (and hashed) by class and fields, so results that carry one compare
    as values.
    """

    def __init__(self, *, objname: str, name: str, sympos: int) -> None:
        super().__init__(self.kernel_message(objname, name, sympos))
        self.objname = objname
        self.name = name
        self.sympos = sympos

    @staticmethod
    def kernel_message(objname: str, name: str, sympos: int) -> str:
        """The kernel's pr_err() text for this failure (kernel/livepatch/core.c)."""
        raise NotImplementedError

    def _key(self) -> tuple[object, ...]:
        return (type(self), self.objname, self.name, self.sympos, self.path)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SymbolLookupError):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class SymbolNotFoundError(SymbolLookupError):
    """``symbol '%s' not found in symbol table``: no symbol of that name (or address 0)."""

    @staticmethod
    def kernel_message(objname: str, name: str, sympos: int) -> str:
        return f"symbol '{name}' not found in symbol table"


class AmbiguousSymbolError(SymbolLookupError):
    """``unresolvable ambiguity for symbol '%s' in object '%s'``: sympos 0, several symbols.

    The kernel passes ``objname``, which is NULL for vmlinux: printk shows ``(null)``.
    """

    @staticmethod
    def kernel_message(objname: str, name: str, sympos: int) -> str:
        shown = "(null)" if objname == "vmlinux" else objname
        return f"unresolvable ambiguity for symbol '{name}' in object '{shown}'"


class SymbolPositionError(SymbolLookupError):
    """``symbol position %lu for symbol '%s' in object '%s' not found``: fewer symbols
    than sympos.  Here the kernel prints ``klp_is_module(obj) ? obj->name : "vmlinux"``.
    """

    @staticmethod
    def kernel_message(objname: str, name: str, sympos: int) -> str:
        return f"symbol position {sympos} for symbol '{name}' in object '{objname}' not found"
