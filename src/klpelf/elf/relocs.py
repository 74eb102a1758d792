"""Relocation sections (SHT_REL, SHT_RELA): lists of fields, or numpy structured arrays.

Relocations belong to their relocation section, never to the target section: a
livepatch module has both ``.rela.text.foo`` and ``.klp.rela.vmlinux.text.foo``
for the same target, and moving entries between them is the core of producing
the format (:meth:`klpelf.elf.relocs.move_relocations`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from klpelf.elf.arrays import RecordTable, as_bytes, rel_record
from klpelf.elf.constants import SHT
from klpelf.errors import ElfEditError, ElfFormatError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from klpelf.elf.file import ElfFile, Section


class Relocation(NamedTuple):
    """One relocation entry as a value; ``r_addend`` is None in an SHT_REL section."""

    r_offset: int
    r_info: int
    r_addend: int | None
    sym: int  # ELF_R_SYM(r_info)
    type: int  # ELF_R_TYPE(r_info)


class RelocationTable(RecordTable):
    """The view of one SHT_REL/SHT_RELA section."""

    def __init__(self, elf: ElfFile, section: Section, *, as_rela: bool = False) -> None:
        """``as_rela``: read the section's bytes as Elf_Rela whatever its sh_type and
        sh_entsize say (count = sh_size / sizeof(Elf_Rela)), symbol indices unchecked,
        as the kernel reads every SHF_RELA_LIVEPATCH section; see
        :meth:`~klpelf.elf.file.ElfFile.relocations_as_rela`."""
        if not as_rela and section.sh_type not in (SHT.REL, SHT.RELA):
            raise elf.error("is not a relocation section", section)
        self.is_rela = as_rela or section.sh_type == SHT.RELA
        self.as_rela = as_rela
        super().__init__(elf, section, rel_record(elf.layout, self.is_rela), strict=not as_rela)
        self._shift = elf.layout.r_sym_shift()
        if len(self) and section.sh_link and not as_rela:
            # ELF_R_SYM is the high part of r_info, so the largest r_info has the
            # largest symbol index: one max() checks every entry.
            nsyms = len(elf.symbol_table(elf.section(section.sh_link)))
            if self.vector:
                import numpy as np

                if int(self._arr["r_info"].max()) >> self._shift >= nsyms:
                    syms = self.sym_array
                    bad = int(np.argmax(syms >= nsyms))
                    raise self._symbol_error(bad, int(syms[bad]), nsyms)
            elif max(self.column("r_info")) >> self._shift >= nsyms:
                bad, sym = next((i, s) for i, s in enumerate(self.syms()) if s >= nsyms)
                raise self._symbol_error(bad, sym, nsyms)

    def _symbol_error(self, index: int, sym: int, nsyms: int) -> ElfFormatError:
        return self.elf.error(
            f"relocation {index}: symbol index {sym} is out of range "
            f"(the symbol table has {nsyms} entries)",
            self.section,
        )

    @property
    def target(self) -> Section | None:
        """The section the relocations apply to (sh_info), if it is in range."""
        return self.section.info_section

    def offsets(self) -> list[int]:
        """r_offset of every entry (the cached column: do not modify it)."""
        return self.column("r_offset")

    def syms(self) -> list[int]:
        """ELF_R_SYM of every entry."""
        shift = self._shift
        return [i >> shift for i in self.column("r_info")]

    def types(self) -> list[int]:
        """ELF_R_TYPE of every entry."""
        mask = (1 << self._shift) - 1
        return [i & mask for i in self.column("r_info")]

    def addends(self) -> list[int] | None:
        """r_addend of every entry (the cached column: do not modify it); None for SHT_REL."""
        return self.column("r_addend") if self.is_rela else None

    def symbols_used(self) -> set[int]:
        """The symbol indices that the entries name (ELF_R_SYM), once each."""
        if self.vector:
            import numpy as np

            return set(np.unique(self.sym_array).tolist())
        shift = self._shift
        return {i >> shift for i in self.column("r_info")}

    @property
    def sym_array(self) -> npt.NDArray[np.uint64]:
        """ELF_R_SYM of every entry."""
        import numpy as np

        return (self._arr["r_info"] >> self._shift).astype(np.uint64, copy=False)

    @property
    def type_array(self) -> npt.NDArray[np.uint64]:
        """ELF_R_TYPE of every entry."""
        import numpy as np

        return (self._arr["r_info"] & ((1 << self._shift) - 1)).astype(np.uint64, copy=False)

    def __getitem__(self, i: int) -> Relocation:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"relocation index {i} out of range (0..{n - 1})")
        r = self._row(i % n)
        info = r["r_info"]
        addend = r["r_addend"] if self.is_rela else None
        return Relocation(r["r_offset"], info, addend, info >> self._shift,
                          info & ((1 << self._shift) - 1))  # fmt: skip

    def __iter__(self) -> Iterator[Relocation]:
        offs = self.column("r_offset")
        infos = self.column("r_info")
        adds: list[int] | list[None] = self.addends() or [None] * len(offs)
        mask = (1 << self._shift) - 1
        for o, info, a in zip(offs, infos, adds, strict=True):
            yield Relocation(o, info, a, info >> self._shift, info & mask)

    # --- edits --------------------------------------------------------------------

    def _set(self, arr: npt.NDArray[np.void]) -> None:
        self._arr = arr
        self.section.set_pending(arr.nbytes, lambda: as_bytes(self._arr))

    def renumber_symbols(self, start: int, by: int) -> None:
        """Add ``by`` to every symbol index >= ``start`` (after a symbol was inserted)."""
        import numpy as np

        syms = self.sym_array
        move = syms >= start
        if not move.any():
            return
        arr = self._arr.copy()
        dt = arr["r_info"].dtype
        arr["r_info"][move] = arr["r_info"][move] + np.array(by << self._shift, dtype=dt)
        self._set(arr)

    def append(self, entries: npt.NDArray[np.void]) -> None:
        import numpy as np

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
