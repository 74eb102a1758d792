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
