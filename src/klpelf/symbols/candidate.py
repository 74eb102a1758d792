"""One kernel symbol that a livepatch symbol's name matches: a candidate for its sympos."""

from __future__ import annotations

from typing import NamedTuple


class Candidate(NamedTuple):
    """A same-named symbol of the target object, in the order the kernel walks them.

    ``position`` is the 1-based sympos that selects it: the rank among same-named
    kallsyms entries in ascending address order for vmlinux, the rank in the module's
    symbol-table order for a module whose table is LIVE (core symbols, after its
    init).  ``coming_position`` is the rank while the module is COMING (its full
    symbol table, when a livepatch is applied as the module loads); for vmlinux the
    two are equal.  Either is None when the symbol is not in that table.
    """

    position: int | None
    #: None when unknown: addresses zeroed in kallsyms (kptr_restrict), or a module
    #: that is not loaded (its symbols get addresses when it is)
    address: int | None
    #: the kallsyms / nm type letter
    type: str
    #: the section the symbol is defined in (ELF sources only)
    section: str | None = None
    #: the source file, from the STT_FILE symbol before it (ELF sources only)
    source_file: str | None = None
    #: offset in its section (module files: st_value before the module is loaded)
    offset: int | None = None
    coming_position: int | None = None

    def location(self) -> str:
        """``section+0xoffset``, the section, or '' (for display)."""
        if self.section is None:
            return ""
        if self.offset is None:
            return self.section
        return f"{self.section}+{self.offset:#x}"
