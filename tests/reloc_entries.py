"""A stand-in for the list accessors of a RelocationTable that the arch/ twins read."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from klpelf.elf.relocs import RelocationTable


class Relocs:
    """Entries given as (r_offset, sym, type, addend)."""

    def __init__(self, entries: list[tuple[int, int, int, int]]) -> None:
        self.entries = entries

    def offsets(self) -> list[int]:
        return [e[0] for e in self.entries]

    def syms(self) -> list[int]:
        return [e[1] for e in self.entries]

    def types(self) -> list[int]:
        return [e[2] for e in self.entries]

    def addends(self) -> list[int]:
        return [e[3] for e in self.entries]


def relocation_table(entries: list[tuple[int, int, int, int]]) -> RelocationTable:
    """``entries`` as the RelocationTable a twin takes."""
    return cast("RelocationTable", Relocs(entries))
