"""String tables (SHT_STRTAB): read a NUL-terminated string by offset, add one.

Names are decoded as UTF-8 with ``surrogateescape``, so any byte string survives a
round trip unchanged; the kernel compares names bytewise, and so does a name
encoded back with :func:`encode_name`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from klpelf.errors import ElfEditError, ElfFormatError

if TYPE_CHECKING:
    from klpelf.elf.file import Section


def decode_name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def encode_name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class StringTable:
    """A view of one SHT_STRTAB section.

    Adding a string appends it (or reuses an existing string or string tail that
    ends with the same bytes, as linkers do), so every offset already in use stays
    valid: a rename never disturbs other names.
    """

    __slots__ = ("_added", "_data", "section")

    def __init__(self, section: Section) -> None:
        self.section = section
        self._data: bytes | bytearray = bytes(section.data)
        self._added: dict[bytes, int] = {}
        if self._data and self._data[-1] != 0:
            raise ElfFormatError(
                f"section [{section.index}] '{section.name}': string table is not NUL-terminated",
                path=section.elf.path,
            )

    def __len__(self) -> int:
        return len(self._data)

    @property
    def data(self) -> bytes | bytearray:
        return self._data

    def get_bytes(self, offset: int) -> bytes:
        data = self._data
        if offset >= len(data):
            raise ElfFormatError(
                f"section [{self.section.index}] '{self.section.name}': string offset "
                f"{offset:#x} is past the end of the table (size {len(data):#x})",
                path=self.section.elf.path,
            )
        end = data.index(0, offset)  # found: the table ends with NUL (checked above)
        return bytes(data[offset:end])

    def get(self, offset: int) -> str:
        return decode_name(self.get_bytes(offset))

    def add(self, name: str) -> int:
        """Return the offset of ``name``, appending it if no existing string ends with it."""
        raw = encode_name(name)
        if not raw:
            if not self._data:
                self._append(b"\0")
            return 0
        if 0 in raw:
            raise ElfEditError(
                f"section {self.section}: a string table entry cannot contain a NUL byte "
                f"({name!r})",
                path=self.section.elf.path,
            )
        if raw in self._added:
            return self._added[raw]
        pos = self._data.find(raw + b"\0", 1)
        if pos < 0:
            if not self._data:
                self._append(b"\0")
            pos = len(self._data)
            self._append(raw + b"\0")
        self._added[raw] = pos
        return pos

    def _append(self, raw: bytes) -> None:
        if not isinstance(self._data, bytearray):
            self._data = bytearray(self._data)
        self._data += raw
        self.section.set_data(self._data, self)
