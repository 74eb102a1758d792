"""``klpelf apply``: the bytes the kernel writes into a livepatch module, offline.

:func:`apply` resolves every livepatch symbol (``klp_find_object_symbol()``), places
the module's sections as the module loader would (:mod:`klpelf.klp.layout`, or at the
caller's addresses) and runs the machine's ``apply_relocate_add()`` twin
(:mod:`klpelf.arch`) over the relocation sections in the kernel's order: at load
(``apply_relocations()``: every SHT_RELA section and the ``vmlinux`` klp sections, in
index order, v5.8+), then the klp sections of each module object that is present
(``klp_init_object_loaded()`` / ``klp_module_coming()``).  Every value a klp
relocation writes is reported; the section bytes after all of it are kept for
``-o DIR``.  Ordinary undefined symbols resolve as ``simplify_symbols()`` would,
to the kernel symbol of that name in the sources (vmlinux first).

The result gives the ``klpelf.apply/2`` schema (docs/json.md) and the text table.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from klpelf._record import FrozenRecord
from klpelf.arch import (
    Arch,
    Message,
    WriteFacts,
    arch_for,
    message_lines,
    not_modelled_message,
)
from klpelf.elf.arrays import use_vector
from klpelf.elf.constants import SHF, SHN, SHT
from klpelf.elf.file import ElfFile, Section
from klpelf.errors import KlpError, OutputError, UnsupportedElfError
from klpelf.klp.layout import (
    PlacedSection,
    place,
    section_bytes,
    symbol_value_arrays,
    symbol_values,
)
from klpelf.klp.module import KlpRelaSection, klp_module
from klpelf.operations import ModuleSource, naming, open_module
from klpelf.release import DEFAULT_VERSION, KernelRelease
from klpelf.symbols.sources import KernelSymbols

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from klpelf.arch._vector import VectorWrites
    from klpelf.elf.relocs import RelocationTable
    from klpelf.elf.symbols import SymbolTable

    SymbolColumns = tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]
    from klpelf.operations.schemas import ApplyJson, ApplyModuleJson

__all__ = [
    "SCHEMA",
    "AppliedModule",
    "Hazard",
    "Refusal",
    "SectionBytes",
    "Write",
    "WriteLog",
    "apply",
    "apply_document",
    "section_file_name",
    "write_sections",
]

SCHEMA: Literal["klpelf.apply/2"] = "klpelf.apply/2"


class Write(NamedTuple):
    """One value a klp relocation writes."""

    #: the object of the klp section (``vmlinux`` or a module name)
    object: str
    #: the relocation section and the index of the entry in it
    rela_section: str
    entry: int
    #: the target section and the place's offset in it
    section: str
    offset: int
    #: the type's ABI name (``R_X86_64_PC32``), or its number when the table has no name
    type: str
    symbol: str
    #: the value written; None when the symbol's address is not known
    value: int | None
    #: the place's address in the kernel
    address: int


class Refusal(NamedTuple):
    """Where the kernel's ``apply_relocate_add()`` stops, with the kernel's message."""

    object: str
    rela_section: str
    entry: int
    rule: str
    #: the kernel's message, or its lines when it prints several (x86's overflow)
    message: Message


class Hazard(NamedTuple):
    """What the kernel does wrong applying a klp section it accepts: klpelf's
    prediction of a kernel bug (arm64: a late PLT slot oopses), not a kernel message."""

    object: str
    rela_section: str
    entry: int
    rule: str
    message: str


class AppliedModule(FrozenRecord):
    """What :func:`apply` found for one module."""

    _fields = ("path", "name", "machine", "release", "sections", "writes", "refusals",
               "skipped", "contents", "assumed", "hazards")  # fmt: skip
    __slots__ = ("_log", "_writes", "assumed", "contents", "hazards", "machine", "name",
                 "path", "refusals", "release", "sections", "skipped")  # fmt: skip

    def __init__(self, path: str, name: str, machine: str, release: KernelRelease, *,
                 sections: list[PlacedSection], writes: list[Write] | WriteLog,
                 refusals: list[Refusal], skipped: list[str],
                 contents: SectionBytes, assumed: bool = False,
                 hazards: list[Hazard] | None = None) -> None:  # fmt: skip
        self.path: Final = path
        self.name: Final = name
        self.machine: Final = machine
        self.release: Final = release
        #: every section the loader allocates, with its address
        self.sections: Final = sections
        # the writes as the walk logged them, made into Write tuples on first use:
        # 300,000 of them take longer to build than the walk takes
        self._log: Final = writes if isinstance(writes, WriteLog) else WriteLog(writes)
        self._writes: list[Write] | None = None
        #: the relocation sections where the kernel stops
        self.refusals: Final = refusals
        #: objects with klp sections that are not applied (not present in the sources)
        self.skipped: Final = skipped
        #: section index -> its bytes after every relocation applied
        self.contents: Final = contents
        #: no section address was given: every address is klpelf's placement
        self.assumed: Final = assumed
        #: what the kernel does wrong in sections it applies (klpelf's predictions)
        self.hazards: Final = hazards if hazards is not None else []

    @property
    def writes(self) -> list[Write]:
        """Every value written by a klp relocation, in the order the kernel writes."""
        if self._writes is None:
            object.__setattr__(self, "_writes", self._log.writes())
        assert self._writes is not None
        return self._writes

    @property
    def write_count(self) -> int:
        """``len(writes)``, without building them."""
        return len(self._log)

    def to_json(self) -> ApplyModuleJson:
        """The module as one ``Module`` object of the ``klpelf.apply/2`` schema."""
        return {
            "path": self.path, "name": self.name, "machine": self.machine,
            "kernel_release": str(self.release),
            "sections": [{"index": s.index, "name": s.name, "region": s.region,
                          "offset": s.offset, "size": s.size, "address": f"{s.address:#x}"}
                         for s in self.sections],
            "writes": [{"object": w.object, "rela_section": w.rela_section, "entry": w.entry,
                        "section": w.section, "offset": w.offset, "type": w.type,
                        "symbol": w.symbol,
                        "value": None if w.value is None else f"{w.value:#x}",
                        "address": f"{w.address:#x}"}
                       for w in self.writes],
            "refusals": [{"object": r.object, "rela_section": r.rela_section,
                          "entry": r.entry, "rule": r.rule,
                          "message": "\n".join(message_lines(r.message))}
                         for r in self.refusals],
            "hazards": [{"object": h.object, "rela_section": h.rela_section,
                         "entry": h.entry, "rule": h.rule, "message": h.message}
                        for h in self.hazards],
            "skipped_objects": self.skipped,
            "addresses_assumed": self.assumed,
        }  # fmt: skip

    def to_text(self, *, summary: bool = False) -> str:
        """The table ``klpelf apply`` prints (no final newline); with ``summary``, only
        the lines around it (the module, errors, notes, the count)."""
        lines = [f"{self.path}: module {self.name}, {self.machine}, kernel {self.release}"]
        if not summary and self.write_count:
            lines += _table(self.writes)
        # one line per line of the kernel's message (x86's overflow prints two)
        lines += [f"  error: {r.rela_section} entry {r.entry}: {line}"
                  for r in self.refusals for line in message_lines(r.message)]  # fmt: skip
        lines += [f"  error: {h.rela_section} entry {h.entry}: {h.message}"
                  for h in self.hazards]  # fmt: skip
        lines += [f"  note: {o}: not in the kernel symbols given, its klp relocations are "
                  "applied when it loads" for o in self.skipped]  # fmt: skip
        if self.assumed and self.sections:
            start = min(s.address for s in self.sections)
            lines.append(f"  note: no --base: the sections are placed from {start:#x} "
                         "(klpelf's assumption, not the kernel's addresses)")  # fmt: skip
        lines.append(f"  {self.write_count} values written by klp relocations")
        return "\n".join(lines)


def _table(writes: Sequence[Write]) -> list[str]:
    """The rows of the table of ``writes``, head first, columns padded to the widest."""
    head = ("OBJECT", "SECTION", "OFFSET", "TYPE", "SYMBOL", "VALUE")
    cols = [
        [w.object for w in writes], [w.section for w in writes],
        [f"{w.offset:#x}" for w in writes], [w.type for w in writes],
        [w.symbol for w in writes],
        ["?" if w.value is None else f"{w.value:#x}" for w in writes],
    ]  # fmt: skip
    widths = [max(len(h), *map(len, set(c))) for h, c in zip(head, cols, strict=True)]
    # the last column is not padded (lines end without spaces)
    fmt = "  " + "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    return [fmt.format(*head).rstrip()] + [fmt.format(*r).rstrip() for r in zip(*cols, strict=True)]


class SectionBytes(Mapping[int, bytearray]):
    """Section index -> its bytes after every relocation applied, for the sections the
    loader places.  A section is copied from the file when first asked for (every
    relocation target is): a livepatch module's klp relocation sections are placed
    (SHF_ALLOC) but never written, 3.4 MB of the 7 MB of the 300,000-relocation bench."""

    def __init__(self, elf: ElfFile, indices: Iterable[int]) -> None:
        self._elf = elf
        self._indices = list(indices)
        self._placed = frozenset(self._indices)
        self._copies: dict[int, bytearray] = {}

    def __getitem__(self, index: int) -> bytearray:
        copy = self._copies.get(index)
        if copy is None:
            if index not in self._placed:
                raise KeyError(index)
            copy = self._copies[index] = section_bytes(self._elf, index)
        return copy

    def __contains__(self, index: object) -> bool:
        return index in self._placed

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)

    def raw(self, index: int) -> bytes | bytearray | memoryview:
        """The bytes of ``index`` without copying a section nothing wrote."""
        copy = self._copies.get(index)
        if copy is not None:
            return copy
        if index not in self._placed:
            raise KeyError(index)
        s = self._elf.sections[index]
        return bytes(s.sh_size) if s.sh_type == SHT.NOBITS else s.data


def _type_name(arch: Arch, r_type: int) -> str:
    t = arch.relocation_types.get(r_type)
    return t.name if t is not None else str(r_type)


class _VectorBlock(NamedTuple):
    """The writes of one klp section applied whole (:mod:`klpelf.arch._vector`)."""

    objname: str
    rela_section: str
    section: str
    address: int
    written: VectorWrites
    #: the entries that wrote (width > 0)
    written_count: int


class WriteLog:
    """The writes of an apply as the walk found them: :class:`Write` lists from the
    entry-by-entry walk, numpy columns from the vector one; :meth:`writes` makes the
    one list of :class:`Write`, in order."""

    __slots__ = ("_arch", "_blocks", "_count", "_symtab")

    def __init__(self, writes: list[Write] | None = None, *, arch: Arch | None = None,
                 symtab: SymbolTable | None = None) -> None:  # fmt: skip
        self._blocks: list[list[Write] | _VectorBlock] = [writes] if writes else []
        self._count = len(writes) if writes else 0
        self._arch, self._symtab = arch, symtab

    def __len__(self) -> int:
        return self._count

    def add(self, block: list[Write] | _VectorBlock) -> None:
        self._blocks.append(block)
        self._count += block.written_count if isinstance(block, _VectorBlock) else len(block)

    def writes(self) -> list[Write]:
        out: list[Write] = []
        for b in self._blocks:
            out += self._made(b) if isinstance(b, _VectorBlock) else b
        return out

    def _made(self, b: _VectorBlock) -> list[Write]:
        import numpy as np

        assert self._arch is not None and self._symtab is not None
        w, names, arch = b.written, self._symtab.names(), self._arch
        live = np.flatnonzero(w.widths)
        offsets = w.entries.offsets[live].tolist()
        types = w.entries.types[live].tolist()
        type_names = {t: _type_name(arch, t) for t in set(types)}
        n = len(names)
        syms = [names[s] if s < n else f"#{s}" for s in w.entries.syms[live].tolist()]
        base, obj, rela, sec = b.address, b.objname, b.rela_section, b.section
        return [Write(obj, rela, i, sec, off, type_names[t], sym, v, base + off)
                for i, off, t, sym, v in zip(live.tolist(), offsets, types, syms,
                                             w.values[live].tolist(), strict=True)]  # fmt: skip


class _Walk:
    """The state of one apply: the bytes of every placed section, and what was found."""

    def __init__(self, elf: ElfFile, arch: Arch, release: KernelRelease, name: str, *,
                 addresses: Mapping[int, int], values: list[int | None] | None = None,
                 columns: SymbolColumns | None = None,
                 assumed: bool = False) -> None:  # fmt: skip
        """``values`` (:func:`~klpelf.klp.layout.symbol_values`) or ``columns`` (the
        same as arrays, :func:`~klpelf.klp.layout.symbol_value_arrays`): the other is
        made from it when needed."""
        from klpelf.arch import ModuleLayout

        self.elf, self.arch, self.release, self.name = elf, arch, release, name
        self.addresses = addresses
        self._values = values
        self._columns = columns
        self.contents = SectionBytes(elf, addresses)
        tab = elf.symtab
        assert tab is not None
        self.log = WriteLog(arch=arch, symtab=tab)
        self.refusals: list[Refusal] = []
        self.hazards: list[Hazard] = []
        #: the addresses are klpelf's placement (no --base)
        self.assumed = assumed
        self.layout = ModuleLayout(elf, addresses)

    def section(self, sec: Section, objname: str | None) -> bool:
        """Apply relocation section ``sec`` (``objname``: of a klp section, whose
        writes are reported); False where the kernel stops."""
        target = sec.info_section
        if target is None or target.index not in self.contents:
            return True
        relocs = self.elf.relocations_as_rela(sec)
        place = self.contents[target.index]
        base = self.addresses[target.index]
        if self.arch.vector_relocate_add is not None and relocs.vector:
            written = self._vector(relocs, place, base)
            if written is not None:
                if objname is not None:
                    count = int((written.widths > 0).sum())
                    self.log.add(_VectorBlock(objname, sec.name, target.name, base, written,
                                              count))  # fmt: skip
                return True
        before = bytes(place)
        value: Callable[[int], int | None] = self._value
        facts = self.arch.write_relocate_add(relocs, place, self.release, symbol_value=value,
                                             address=base, layout=self.layout)  # fmt: skip
        if objname is not None:
            tab = self.elf.symtab
            assert tab is not None
            names, syms = tab.names(), relocs.syms()
            vals = facts.values or [None] * len(facts)
            self.log.add([
                Write(objname, sec.name, i, target.name, facts.offsets[i],
                      _type_name(self.arch, facts.types[i]),
                      names[syms[i]] if syms[i] < len(names) else f"#{syms[i]}", vals[i],
                      base + facts.offsets[i])
                for i in range(len(facts)) if facts.widths[i] and i != facts.stop
            ])  # fmt: skip
            self._hazards(sec, objname, facts)
        if facts.stop is None:
            return True
        place[:] = before  # the kernel stops: what this section wrote stays unknown here
        rule, message = self.arch.refusal(self.release, self.name, sec.index, facts)
        self.refusals.append(Refusal(objname or "", sec.name, facts.stop, rule, message))
        return False

    def _hazards(self, sec: Section, objname: str, facts: WriteFacts) -> None:
        # applied after the module is formed: a module object's section, or vmlinux's
        # before v5.8 (applied at enable then)
        late = objname != "vmlinux" or not self.release.vmlinux_relocs_at_load
        if late and self.arch.late_hazards is not None:
            for entry, rule, message in self.arch.late_hazards(self.name, objname, facts,
                                                               self.assumed):  # fmt: skip
                self.hazards.append(Hazard(objname, sec.name, entry, rule, message))

    def _vector(self, relocs: RelocationTable, place: bytearray,
                address: int) -> VectorWrites | None:  # fmt: skip
        from klpelf.arch._vector import entries, symbol_columns

        twin = self.arch.vector_relocate_add
        assert twin is not None
        if self._columns is None:
            assert self._values is not None
            self._columns = symbol_columns(self._values)
        cols = entries(relocs, *self._columns)
        return twin(relocs, place, self.release, entries=cols, address=address,
                    layout=self.layout)  # fmt: skip

    @property
    def values(self) -> list[int | None]:
        """st_value of every symbol (None: unknown), as the entry-by-entry twin takes it."""
        if self._values is None:
            assert self._columns is not None
            vals, known = self._columns
            self._values = [v if k else None for v, k in
                            zip(vals[:-1].tolist(), known[:-1].tolist(), strict=True)]  # fmt: skip
        return self._values

    def _value(self, i: int) -> int | None:
        values = self.values
        return values[i] if 0 <= i < len(values) else None


def apply(module: ModuleSource, kernel: KernelSymbols, *,
          objects: Sequence[str] | None = None, bases: Mapping[str, int] | None = None,
          version: KernelRelease | None = None) -> AppliedModule:  # fmt: skip
    """Apply the relocations of ``module`` as the kernel would, against ``kernel``.

    :param objects: the module objects whose klp relocations are applied (``vmlinux``
        always is); default: every object the sources know.
    :param bases: section name -> address (``/sys/module/<name>/sections/``); the other
        regions are placed by :func:`klpelf.klp.layout.place`.
    :param version: the kernel release whose rules apply; default: the vermagic's.
    :raises KlpError: the module cannot be read, or its machine is not modelled.
    """
    elf = open_module(module)
    with naming(elf.path):
        arch = arch_for(elf.machine)
        if arch is None:
            raise UnsupportedElfError(not_modelled_message(elf.machine_name))
        if elf.symtab is None:
            raise KlpError("module has no symbols (stripped?)")
        if version is None:
            mi = elf.modinfo
            version = _release_of(mi.get("vermagic") if mi else None)
        mod = klp_module(elf, ksym_name_len=version.ksym_name_len)
        placed = place(elf, bases)
        addresses = {s.index: s.address for s in placed}
        if arch.vector_relocate_add is not None and use_vector(elf):
            columns = symbol_value_arrays(elf, kernel, version, addresses, module=mod)
            walk = _Walk(elf, arch, version, mod.name, addresses=addresses, columns=columns,
                         assumed=not bases)  # fmt: skip
        else:
            values = symbol_values(elf, kernel, version, addresses, module=mod)
            walk = _Walk(elf, arch, version, mod.name, addresses=addresses, values=values,
                         assumed=not bases)  # fmt: skip
        skipped = _apply_all(walk, mod.sections, kernel, objects)
        if arch.write_tables is not None:
            arch.write_tables(walk.layout, walk.contents)
    return AppliedModule(elf.path or "", mod.name, elf.machine_name, version, sections=placed,
                         writes=walk.log, refusals=walk.refusals, skipped=skipped,
                         contents=walk.contents, assumed=not bases,
                         hazards=walk.hazards)  # fmt: skip


def _apply_all(walk: _Walk, klp_sections: Sequence[KlpRelaSection], kernel: KernelSymbols,
               objects: Sequence[str] | None) -> list[str]:  # fmt: skip
    """The kernel's order: load, then each module object present; the objects skipped."""
    elf, release = walk.elf, walk.release
    klp = {k.section.index: k for k in klp_sections}
    later: dict[str, list[Section]] = {}
    for sec in elf.sections[1:]:
        if sec.sh_flags & SHF.RELA_LIVEPATCH:
            k = klp.get(sec.index)
            objname = k.objname if k is not None else None
            if objname is None:
                continue
            if objname == "vmlinux" and release.vmlinux_relocs_at_load:
                if not walk.section(sec, objname):
                    return []  # the module is refused at load
            else:
                later.setdefault(objname, []).append(sec)
        elif sec.sh_type == SHT.RELA and sec.sh_entsize and not walk.section(sec, None):
            return []
    skipped = []
    # vmlinux first (before 5.8), then the modules in section order
    for objname, secs in sorted(later.items(), key=lambda kv: kv[0] != "vmlinux"):
        present = objname == "vmlinux" or (
            objname in objects if objects is not None else kernel.has_object(objname)
        )
        if not present:
            skipped.append(objname)
            continue
        for sec in secs:
            if not walk.section(sec, objname) and objname == "vmlinux":
                break
    return skipped


def apply_document(
    applied: Sequence[AppliedModule], failed: Sequence[tuple[str, str]] = ()
) -> ApplyJson:
    """The ``klpelf apply --json`` document of several modules; ``failed``: the files
    that could not be read or applied, as (path, error)."""
    return {"schema": SCHEMA, "modules": [a.to_json() for a in applied],
            "failed": [{"path": path, "error": error} for path, error in failed]}  # fmt: skip


def section_file_name(name: str) -> str:
    """The file of section ``name`` under ``-o DIR``: ``<name>.bin`` ("/" becomes "_")."""
    return name.replace("/", "_") + ".bin"


def write_sections(applied: AppliedModule, directory: str | os.PathLike[str]) -> list[str]:
    """Write every placed section's bytes after the relocations as
    ``directory/<section name>.bin`` (each atomically); the paths written.

    :raises OutputError: the directory cannot be made or a file cannot be written.
    """
    from klpelf.io import write_atomic

    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{os.fspath(directory)}: {e.strerror}") from None
    out = []
    for s in applied.sections:
        path = os.path.join(directory, section_file_name(s.name))
        write_atomic(path, applied.contents.raw(s.index), overwrite=True)
        out.append(path)
    return out


class Flattened(NamedTuple):
    """What :func:`flatten` did."""

    output: str
    #: livepatch symbols made absolute at their kernel address (the rest left undefined)
    resolved: int
    unresolved: int
    #: klp relocation sections folded into the target's one relocation section
    merged: int


def flatten(module: ModuleSource, kernel: KernelSymbols, output: str | os.PathLike[str], *,
            version: KernelRelease | None = None) -> Flattened:  # fmt: skip
    """Write a copy of ``module`` that binutils reads (binutils bug 24456): every
    livepatch symbol renamed to its kernel name and made SHN_ABS at its resolved
    address (left undefined when it does not resolve), every klp relocation section's
    entries moved into the one relocation section of its target (the klp section
    becomes that section when the target has no other; an emptied one becomes an empty
    SHT_PROGBITS section, so no index moves).  ``objdump -dr`` then names each call and
    load by its kernel symbol.  The output is for reading, not for loading.

    :raises KlpError: the module cannot be read, or ``output`` is the input.
    """
    from klpelf.elf.reader import open_elf
    from klpelf.elf.writer import save_elf

    src = module if isinstance(module, ElfFile) else None
    path = src.path if src is not None else os.fspath(module)  # type: ignore[arg-type]
    if path is not None and os.path.exists(output) and os.path.samefile(path, output):
        raise OutputError("output is the input file (refusing to overwrite it)",
                          path=os.fspath(output))  # fmt: skip
    elf = src if src is not None else open_elf(path)  # type: ignore[arg-type]
    with naming(elf.path):
        tab = elf.symtab
        if tab is None:
            raise KlpError("module has no symbols (stripped?)")
        mod = klp_module(elf)
        if version is None:
            version = _release_of(mod.vermagic)
        values = symbol_values(elf, kernel, version, {})
        resolved = unresolved = 0
        shndx = tab.column("st_shndx")
        for s in mod.symbols:
            i, p = s.symbol.index, s.parsed
            if p is None or shndx[i] != SHN.LIVEPATCH:
                continue
            value = values[i]
            if value is None:
                tab.set_symbol(i, name=p.name, st_shndx=SHN.UNDEF, st_value=0)
                unresolved += 1
            else:
                tab.set_symbol(i, name=p.name, st_shndx=SHN.ABS, st_value=value)
                resolved += 1
        merged = _merge_klp_sections(elf)
        save_elf(elf, output, overwrite=True)
    return Flattened(os.fspath(output), resolved, unresolved, merged)


def _merge_klp_sections(elf: ElfFile) -> int:
    """One relocation section per target: the klp sections' entries moved into it."""
    by_target: dict[int, Section] = {}
    for sec in elf.sections[1:]:
        if sec.sh_type == SHT.RELA and not sec.sh_flags & SHF.RELA_LIVEPATCH:
            by_target.setdefault(sec.sh_info, sec)
    merged = 0
    for sec in elf.sections[1:]:
        if not sec.sh_flags & SHF.RELA_LIVEPATCH or sec.sh_type != SHT.RELA:
            continue
        target = sec.info_section
        home = by_target.get(sec.sh_info)
        if home is None:
            # the klp section becomes the target's relocation section
            sec.sh_flags &= ~(SHF.RELA_LIVEPATCH | SHF.ALLOC)
            if target is not None:
                elf.rename_section(sec, ".rela" + target.name)
            by_target[sec.sh_info] = sec
            elf.modified = True
            continue
        klp_relocs = elf.relocations(sec)
        records = klp_relocs.take(range(len(klp_relocs)))
        elf.relocations(home).extend(records)
        sec.sh_type, sec.sh_flags, sec.sh_link, sec.sh_info = SHT.PROGBITS, 0, 0, 0
        sec.sh_entsize = 0
        sec.set_data(b"")
        merged += 1
    return merged


def _release_of(vermagic: str | None) -> KernelRelease:
    """The release of a module's vermagic, else klpelf's default."""
    with contextlib.suppress(ValueError):
        if vermagic:
            return KernelRelease.parse(vermagic)
    return DEFAULT_VERSION
