"""Relocation sections (SHT_REL, SHT_RELA): lists of fields, or numpy structured arrays.

Relocations belong to their relocation section, never to the target section: a
livepatch module has both ``.rela.text.foo`` and ``.klp.rela.vmlinux.text.foo``
for the same target, and moving entries between them is the core of producing
the format (:meth:`klpelf.elf.relocs.move_relocations`).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterator, Sequence
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
    """The view of one SHT_REL/SHT_RELA section.

    Malformed contents raise :class:`~klpelf.errors.ElfFormatError` when the view is
    made (entry size, symbol indices); an edit that would break the object raises
    :class:`~klpelf.errors.ElfEditError`.  Indexing past the end raises IndexError,
    as any sequence does: that index comes from the caller, not from the file.
    """

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

    @property
    def r_sym_shift(self) -> int:
        """ELF_R_SYM(r_info) is ``r_info >> r_sym_shift`` (32 in ELF64, 8 in ELF32)."""
        return self._shift

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

    def _hits(
        self, symbols: Collection[int], syms: npt.NDArray[np.uint64]
    ) -> npt.NDArray[np.bool_]:
        """Per entry of ``syms`` (:attr:`sym_array`): whether it is in ``symbols``
        (one gather through a table by symbol index; no sort)."""
        import numpy as np

        # one entry past the largest wanted index, False: where larger indices clip to
        table = np.zeros(max(symbols) + 2, dtype=bool)
        table[np.fromiter(symbols, dtype=np.intp, count=len(symbols))] = True
        return np.take(table, syms, mode="clip")

    def used_among(self, symbols: Collection[int]) -> set[int]:
        """The symbols of ``symbols`` that some entry names (ELF_R_SYM)."""
        if not symbols or not len(self):
            return set()
        if self.vector:
            import numpy as np

            syms = self.sym_array
            return set(np.unique(syms[self._hits(symbols, syms)]).tolist())
        return self.symbols_used() & set(symbols)

    def indices_of_symbols(self, symbols: Collection[int]) -> list[int]:
        """Indices of the entries whose ELF_R_SYM is in ``symbols``, in order."""
        if not symbols or not len(self):
            return []
        if self.vector:
            import numpy as np

            return np.flatnonzero(self._hits(symbols, self.sym_array)).tolist()
        want = symbols if isinstance(symbols, (set, frozenset)) else set(symbols)
        shift = self._shift
        return [i for i, info in enumerate(self.column("r_info")) if info >> shift in want]

    def first_indices(self) -> dict[int, int]:
        """Symbol index -> index of the first entry that names it, for every symbol used."""
        if self.vector:
            import numpy as np

            syms, first = np.unique(self.sym_array, return_index=True)
            return dict(zip(syms.tolist(), first.tolist(), strict=True))
        shift = self._shift
        out: dict[int, int] = {}
        for i, info in enumerate(self.column("r_info")):
            out.setdefault(info >> shift, i)
        return out

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
    # Each edit has a plain-Python form (small files) and a numpy form (big files,
    # VECTOR_THRESHOLD); both leave the same bytes.

    def _set(self, arr: npt.NDArray[np.void]) -> None:
        self._arr = arr
        self._committed()

    def renumber_symbols(self, start: int, by: int) -> None:
        """Add ``by`` to every symbol index >= ``start`` (after a symbol was inserted)."""
        if self.vector:
            import numpy as np

            move = self.sym_array >= start
            if not move.any():
                return
            arr = self._arr.copy()
            dt = arr["r_info"].dtype
            arr["r_info"][move] = arr["r_info"][move] + np.array(by << self._shift, dtype=dt)
            self._set(arr)
            return
        shift = self._shift
        infos = self.column("r_info")
        moved = [(i, info) for i, info in enumerate(infos) if info >> shift >= start]
        if not moved:
            return
        size = self.record.size
        buf = bytearray(self._records()[: self._count * size])
        off, code = self.record.offsets["r_info"]
        word = struct.Struct(self.record.byteorder + code)
        for i, info in moved:
            word.pack_into(buf, i * size + off, info + (by << shift))
        self._set_buf(buf)
        self._committed()

    def take(self, indices: Sequence[int]) -> bytes:
        """Remove the entries at ``indices`` (increasing, in range) and return their
        records (the file's layout and byte order), in order."""
        if not indices:
            return b""
        if self.vector:
            import numpy as np

            mask = np.zeros(len(self), dtype=bool)
            mask[np.asarray(indices, dtype=np.intp)] = True
            arr = self._arr
            out = arr[mask].tobytes()
            self._set(arr[~mask])
            return out
        data = self._records()
        size = self.record.size
        kept: list[bytes | bytearray | memoryview] = []
        taken: list[bytes | bytearray | memoryview] = []
        prev = 0
        for i in indices:
            kept.append(data[prev * size : i * size])
            taken.append(data[i * size : (i + 1) * size])
            prev = i + 1
        kept.append(data[prev * size : self._count * size])
        self._set_buf(bytearray(b"".join(kept)))
        self._committed()
        return b"".join(taken)

    def extend(self, records: bytes | bytearray | memoryview) -> None:
        """Append ``records`` (whole records in the file's layout, as :meth:`take` returns)."""
        if len(records) % self.record.size:
            raise ElfEditError(
                f"{len(records)} bytes are not whole relocation records of "
                f"{self.record.size} bytes",
                path=self.elf.path,
            )
        if not records:
            return
        if self.vector:
            import numpy as np

            new = np.frombuffer(bytes(records), dtype=self.record.dtype())
            # np.concatenate would convert to native byte order; keep the file's
            self._set(np.concatenate([self._arr, new], dtype=self._arr.dtype))
            return
        self._set_buf(bytearray(bytes(self._records()[: self._count * self.record.size]) + records))
        self._committed()

    def append(self, entries: npt.NDArray[np.void]) -> None:
        """Append ``entries`` given as a numpy array of records (see :meth:`extend`)."""
        import numpy as np

        self.extend(as_bytes(np.asarray(entries, dtype=self.record.dtype())))

    def remove(self, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.void]:
        """Remove the entries selected by the boolean ``mask`` and return them (in order)
        as a writable numpy array of records (see :meth:`take`)."""
        import numpy as np

        taken = self.take(np.flatnonzero(mask).tolist())
        return np.frombuffer(taken, dtype=self.record.dtype()).copy()


def _selected(selection: Sequence[int] | Sequence[bool] | npt.NDArray[np.bool_], src: Section,
              count: int) -> list[int]:  # fmt: skip
    """The entry indices a selection names: a mask (bools, one per entry) or indices."""
    # a numpy array: a mask if boolean
    items: list[int] | list[bool] = (
        list(selection) if isinstance(selection, Sequence) else selection.tolist()
    )
    if items and all(isinstance(b, bool) for b in items):
        if len(items) != count:
            raise ElfEditError(f"mask has {len(items)} entries, {src} has {count} relocations")
        return [i for i, b in enumerate(items) if b]
    indices = sorted(set(items))
    if indices and (indices[0] < 0 or indices[-1] >= count):
        bad = indices[0] if indices[0] < 0 else indices[-1]
        raise ElfEditError(f"relocation index {bad} out of range: {src} has {count} relocations")
    return indices


def move_relocations(
    elf: ElfFile,
    src: Section,
    dst: Section,
    selection: Sequence[int] | Sequence[bool] | npt.NDArray[np.bool_],
) -> int:
    """Move the entries of ``src`` that ``selection`` names to the end of ``dst``; return
    how many.

    ``selection`` is a sequence of entry indices, or a mask: a sequence (or numpy
    array) of bools, one per entry of ``src``.  Both sections must be relocation
    sections of the same kind (REL or RELA) over the same symbol table; the entries
    keep their order.
    """
    s, d = elf.relocations(src), elf.relocations(dst)
    if s.is_rela != d.is_rela:
        raise ElfEditError(f"cannot move relocations between {src} and {dst}: SHT_REL vs SHT_RELA")
    if src.sh_link != dst.sh_link:
        raise ElfEditError(
            f"cannot move relocations between {src} and {dst}: different symbol tables"
        )
    indices = _selected(selection, src, len(s))
    d.extend(s.take(indices))
    return len(indices)
