"""Relocation sections (SHT_REL, SHT_RELA), decoded in bulk into numpy structured arrays.

Relocations belong to their relocation section, never to the target section: a
livepatch module has both ``.rela.text.foo`` and ``.klp.rela.vmlinux.text.foo``
for the same target, and moving entries between them is the core of producing
the format (:meth:`klpelf.elf.relocs.move_relocations`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from klpelf.elf.arrays import RecordTable, as_bytes, rel_dtype
from klpelf.elf.constants import SHT
from klpelf.errors import ElfEditError

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile, Section


@dataclass(frozen=True, slots=True)
class Relocation:
    """One relocation entry as a value; ``r_addend`` is None in an SHT_REL section."""

    r_offset: int
    r_info: int
    r_addend: int | None
    sym: int  # ELF_R_SYM(r_info)
    type: int  # ELF_R_TYPE(r_info)


class RelocationTable(RecordTable):
    """The view of one SHT_REL/SHT_RELA section."""

    def __init__(self, elf: ElfFile, section: Section) -> None:
        if section.sh_type not in (SHT.REL, SHT.RELA):
            raise elf.error("is not a relocation section", section)
        self.is_rela = section.sh_type == SHT.RELA
        super().__init__(elf, section, rel_dtype(elf.layout, self.is_rela))
        self._shift = elf.layout.r_sym_shift()
        if len(self._arr) and section.sh_link:
            # ELF_R_SYM is the high part of r_info, so the largest r_info has the
            # largest symbol index: one max() checks every entry.
            max_sym = int(self._arr["r_info"].max()) >> self._shift
            nsyms = len(elf.symbol_table(elf.section(section.sh_link)))
            if max_sym >= nsyms:
                syms = self.sym_array
                bad = int(np.argmax(syms >= nsyms))
                raise elf.error(
                    f"relocation {bad}: symbol index {int(syms[bad])} is out of range "
                    f"(the symbol table has {nsyms} entries)",
                    section,
                )

    @property
    def target(self) -> Section | None:
        """The section the relocations apply to (sh_info), if it is in range."""
        i = self.section.sh_info
        return self.elf.sections[i] if 0 < i < len(self.elf.sections) else None

    @property
    def sym_array(self) -> npt.NDArray[np.uint64]:
        """ELF_R_SYM of every entry."""
        return (self._arr["r_info"] >> self._shift).astype(np.uint64, copy=False)

    @property
    def type_array(self) -> npt.NDArray[np.uint64]:
        """ELF_R_TYPE of every entry."""
        return (self._arr["r_info"] & ((1 << self._shift) - 1)).astype(np.uint64, copy=False)

    def __getitem__(self, i: int) -> Relocation:
        r = self._arr[i]
        info = int(r["r_info"])
        addend = int(r["r_addend"]) if self.is_rela else None
        return Relocation(int(r["r_offset"]), info, addend, info >> self._shift,
                          info & ((1 << self._shift) - 1))  # fmt: skip

    def __iter__(self) -> Iterator[Relocation]:
        offs = self._arr["r_offset"].tolist()
        infos = self._arr["r_info"].tolist()
        adds = self._arr["r_addend"].tolist() if self.is_rela else [None] * len(offs)
        mask = (1 << self._shift) - 1
        for o, info, a in zip(offs, infos, adds, strict=True):
            yield Relocation(o, info, a, info >> self._shift, info & mask)

    # --- edits --------------------------------------------------------------------

    def _set(self, arr: npt.NDArray[np.void]) -> None:
        self._arr = arr
        self.section.set_pending(arr.nbytes, lambda: as_bytes(self._arr))

    def renumber_symbols(self, start: int, by: int) -> None:
        """Add ``by`` to every symbol index >= ``start`` (after a symbol was inserted)."""
        syms = self.sym_array
        move = syms >= start
        if not move.any():
            return
        arr = self._arr.copy()
        dt = arr["r_info"].dtype
        arr["r_info"][move] = arr["r_info"][move] + np.array(by << self._shift, dtype=dt)
        self._set(arr)

    def append(self, entries: npt.NDArray[np.void]) -> None:
        # np.concatenate would convert to native byte order; keep the file's
        self._set(np.concatenate([self._arr, entries], dtype=self._arr.dtype))

    def remove(self, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.void]:
        """Remove the entries selected by ``mask`` and return them (in order)."""
        taken = self._arr[mask]
        self._set(self._arr[~mask])
        return taken


def move_relocations(elf: ElfFile, src: Section, dst: Section, mask: npt.NDArray[np.bool_]) -> int:
    """Move the entries of ``src`` selected by ``mask`` to the end of ``dst``; return how many.

    Both must be relocation sections of the same kind (REL or RELA) over the same
    symbol table; the entries keep their order.
    """
    s, d = elf.relocations(src), elf.relocations(dst)
    if s.is_rela != d.is_rela:
        raise ElfEditError(f"cannot move relocations between {src} and {dst}: SHT_REL vs SHT_RELA")
    if src.sh_link != dst.sh_link:
        raise ElfEditError(
            f"cannot move relocations between {src} and {dst}: different symbol tables"
        )
    if len(mask) != len(s):
        raise ElfEditError(f"mask has {len(mask)} entries, {src} has {len(s)} relocations")
    taken = s.remove(mask)
    d.append(taken)
    return len(taken)
