"""What each architecture's module loader does with relocations, one file per machine.

The registry is keyed by ``e_machine``: :func:`arch_for` gives the :class:`Arch` of a
machine whose ``arch/<arch>/kernel/module.c`` klpelf models, or None.  A caller that
gets None must say so ("relocations for <machine> are not modelled", see
:func:`not_modelled_message`), never skip the relocation step in silence.

An :class:`Arch` holds:

* its relocation types as a table (:class:`RelocType`: number, ABI name, the bytes of
  the place, the ABI formula in S/A/P terms and as a function, the kernel's range
  check);
* the twin of its ``apply_relocate_add()``: :attr:`Arch.write_relocate_add` walks the
  entries of one section over a copy of the target section's bytes and returns facts
  (:class:`WriteFacts`), never diagnostics;
* the texts the kernel prints when it stops (:attr:`Arch.refusal`), per release (a
  :data:`Message`: x86's overflow prints two lines), whether it
  prints anything (:attr:`Arch.refusal_logged`), and what its files' ``pr_fmt`` puts
  before each line in dmesg (:class:`PrFmt`, once per file: a message text never
  carries the prefix).

The interface is meant for the machines to come: a place that is an instruction field
(arm64 CALL26, ppc64 REL24) is a :class:`RelocType` whose ``encode`` merges the value
into the instruction; a big-endian machine (s390x) sets ``byteorder``; a twin that
needs stubs or PLT slots keeps them in its own file.  This package imports only
``klpelf.elf`` and the base modules (errors, release, _record).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from klpelf.elf.constants import EM

if TYPE_CHECKING:
    from klpelf.arch._vector import Entries, VectorWrites
    from klpelf.elf.file import ElfFile
    from klpelf.elf.relocs import RelocationTable
    from klpelf.release import KernelRelease

#: the rule of the note a machine without an arch/ file gets
NOT_MODELLED_RULE = "relocations-not-modelled"

#: why a twin stopped where the kernel stops: an unknown type, a value out of the
#: type's range, target bytes that are not zero, (ppc64) no nop after a call through a
#: stub, (loongarch64) the relocation stack full or empty, (arm64) no PLT slot left of
#: those module_frob_arch_sections() counted, or (ppc64) no stub left in .stubs
StopReason = Literal[
    "unknown-type", "overflow", "nonzero", "expected-nop", "rela-stack", "plt-full", "no-stub"
]


class RelocType(NamedTuple):
    """One relocation type as the kernel's ``apply_relocate_add()`` handles it."""

    number: int
    #: the name in the psABI (``R_X86_64_PC32``)
    name: str
    #: bytes of the place the kernel writes; 0: nothing written or checked
    width: int
    #: the ABI formula in S (symbol value), A (addend), P (place address) terms
    formula: str
    #: the formula as a function of (S, A, P); None when nothing is computed
    compute: Callable[[int, int, int], int] | None = None
    #: the kernel's range check, as text (None: the kernel has none)
    range_check: str | None = None
    #: whether ``value`` passes the range check (None: no check)
    in_range: Callable[[int], bool] | None = None
    #: the value's bytes at the place, given the bytes there before (None: the low
    #: ``width`` bytes of the value in the file's byte order); instruction fields
    #: (arm64 CALL26, ppc64 REL24) merge the value into the instruction
    encode: Callable[[bytes, int], bytes] | None = None
    #: False: klpelf does not model what the kernel does with it (the twin neither
    #: checks nor writes the place; see the arch file)
    modelled: bool = True


class RelocationWrite(NamedTuple):
    """What the twin of ``apply_relocate_add()`` found for one entry."""

    #: the entry's index in its relocation section
    entry: int
    r_type: int
    #: the kernel knows the type (else it stops here)
    known: bool
    offset: int
    #: bytes written at ``offset`` (0: nothing written)
    width: int
    #: the value written, when the symbol's value and the section's address are known
    value: int | None
    #: the value is out of the type's range (the kernel stops here); None: unknown
    overflow: bool | None
    #: the target bytes were nonzero before the write (the kernel stops here)
    nonzero: bool


class WriteFacts:
    """The facts of one section's walk, as columns, one row per entry walked (in
    order, up to and including the one where the kernel stops).

    Columns instead of one record per entry: amdgpu.ko has 320,000 relocations.
    ``facts[i]`` gives one entry's :class:`RelocationWrite`.
    """

    __slots__ = ("nonzero", "offsets", "overflow", "reason", "stop", "types", "values", "widths")

    def __init__(self, offsets: list[int], types: list[int], widths: list[int],
                 nonzero: list[bool], *, values: list[int | None] | None = None,
                 overflow: list[bool | None] | None = None, stop: int | None = None,
                 reason: StopReason | None = None) -> None:  # fmt: skip
        self.offsets, self.types, self.widths = offsets, types, widths
        self.nonzero, self.values, self.overflow = nonzero, values, overflow
        #: index of the entry where the kernel stops (returns -ENOEXEC); None: all applied
        self.stop = stop
        self.reason = reason

    def __len__(self) -> int:
        return len(self.nonzero)

    def __getitem__(self, i: int) -> RelocationWrite:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"entry {i} was not walked (0..{n - 1})")
        i %= n
        known = not (i == self.stop and self.reason == "unknown-type")
        value = self.values[i] if self.values is not None else None
        overflow = self.overflow[i] if self.overflow is not None else None
        return RelocationWrite(i, self.types[i], known, self.offsets[i], self.widths[i],
                               value, overflow, self.nonzero[i])  # fmt: skip

    def __iter__(self) -> Iterator[RelocationWrite]:
        return (self[i] for i in range(len(self)))


class ModuleLayout:
    """Where the module loader placed a module, for twins that need more than the one
    section they write: a PC-relative type needs the place's address, an arm64 CALL26
    out of range a PLT slot, a ppc64 REL24 a stub and the TOC, s390x and loongarch64
    GOT entries.

    ``addresses``: section index -> its address in the kernel (sections the loader does
    not place are absent).  ``arch_state``: what one machine's twin keeps across the
    sections of one module (PLT slots or stubs used so far, GOT entries), created and
    read only by that machine's file; the areas themselves are the ones the machine's
    ``module_frob_arch_sections()`` reserves, which the arch file computes from ``elf``.
    """

    __slots__ = ("addresses", "arch_state", "elf")

    def __init__(self, elf: ElfFile, addresses: Mapping[int, int]) -> None:
        self.elf = elf
        self.addresses = addresses
        self.arch_state: dict[str, object] = {}


class WriteRelocateAdd(Protocol):
    """The twin of one machine's ``apply_relocate_add()`` for one relocation section.

    ``relocs``: the entries as the kernel reads them; ``target``: the bytes of the
    target section as the loader left them (the file's, then what earlier relocations
    wrote), written in place as the kernel writes them; ``symbol_value``: st_value by
    symbol index, None when unknown (an undefined or livepatch symbol before the
    kernel resolved it); ``address``: the target's sh_addr in the kernel, None when
    unknown.  Without both, values and overflows are None and a written place holds
    nonzero marker bytes (all that the nonzero rule needs).  ``keep`` False: the caller
    does not need the bytes after the walk (``target`` may be left as it was or
    written in part; the facts are the same).  ``layout``: the whole module's placement
    (:class:`ModuleLayout`), for machines whose writes need other sections (PLT, stubs,
    GOT, TOC); a machine that needs it and gets None reports values as unknown.
    """

    def __call__(self, relocs: RelocationTable, target: bytearray, release: KernelRelease, *,
                 symbol_value: Callable[[int], int | None] | None = None,
                 address: int | None = None, keep: bool = True,
                 layout: ModuleLayout | None = None) -> WriteFacts: ...  # fmt: skip


class VectorRelocateAdd(Protocol):
    """The twin of ``apply_relocate_add()`` for a whole section at once, with numpy, in
    the common case where no entry can stop (see :mod:`klpelf.arch._vector`).

    ``entries``: the section's columns with S of every entry; ``address``: the
    target's address.  Returns what was written, ``target`` left as
    :class:`WriteRelocateAdd` would leave it; or None, ``target`` untouched, when
    the entry-by-entry twin must walk the section (it then finds the same bytes, or
    where the kernel stops and why).
    """

    def __call__(self, relocs: RelocationTable, target: bytearray, release: KernelRelease, *,
                 entries: Entries, address: int,
                 layout: ModuleLayout | None = None) -> VectorWrites | None: ...  # fmt: skip


#: what the kernel prints for a stop: one line, or the lines of several pr_err() calls
#: in order (x86's overflow: label), each with the file's pr_fmt in dmesg.  Lines, not
#: one string with newlines: a name from the module may hold a newline itself.
Message = str | tuple[str, ...]


def message_lines(message: Message) -> tuple[str, ...]:
    """The lines of ``message``."""
    return (message,) if isinstance(message, str) else message


class SectionFrob(NamedTuple):
    """What a machine's ``module_frob_arch_sections()`` makes of one section before
    ``layout_sections()`` lays it out (the module's own .plt/.got placeholders)."""

    sh_type: int
    sh_flags: int
    sh_size: int
    sh_addralign: int


class PrFmt(NamedTuple):
    """What one kernel file's ``#define pr_fmt(fmt)`` puts before the messages of its
    ``pr_err()``/``pr_warn()`` calls in dmesg, per release.

    Without a define, ``pr_fmt(fmt)`` is ``fmt`` (include/linux/printk.h): no prefix;
    ``printk(KERN_ERR ...)`` never applies it (s390's module.c).  ``KBUILD_MODNAME``
    in a built-in object is the object's basename, ``-`` and ``,`` made ``_``
    (scripts/Makefile.lib: ``modname = basetarget``): "module" for x86's module.o,
    "module_64" for powerpc's module_64.o.  Called with a release: the prefix then.
    """

    #: the text before each message ("": the file defines no pr_fmt)
    prefix: str = ""
    #: the first release whose file defines it (None: every release klpelf models)
    since: KernelRelease | None = None

    def __call__(self, release: KernelRelease) -> str:
        return self.prefix if self.since is None or release >= self.since else ""


#: a file without ``#define pr_fmt``
NO_PR_FMT = PrFmt()


class Arch(NamedTuple):
    """One machine's relocation code (``arch/<name>/kernel/module.c``)."""

    name: str
    machine: int
    #: "little" or "big": how values are stored at the place
    byteorder: Literal["little", "big"]
    #: relocation type number -> its row; a type not in the table is unknown to the kernel
    relocation_types: Mapping[int, RelocType]
    #: the type that does nothing (R_*_NONE)
    none_type: int
    #: the twin of apply_relocate_add(); see :class:`WriteRelocateAdd`
    write_relocate_add: WriteRelocateAdd
    #: (release, module name, relocation section index, facts) -> (rule, the kernel's
    #: message) for the entry where the walk stopped (a :data:`Message`)
    refusal: Callable[[KernelRelease, str, int, WriteFacts], tuple[str, Message]]
    #: (release, relocation section index, entry, type) -> what the kernel prints when
    #: a place to write is not zero; None: this machine does not check
    nonzero_message: Callable[[KernelRelease, int, int, int], str] | None = None
    #: the common case of a whole section at once (numpy); None: walk every section
    vector_relocate_add: VectorRelocateAdd | None = None
    #: the pr_fmt of the file of apply_relocate_add(): what dmesg shows before
    #: :attr:`refusal`'s messages (x86's module.c: "module: "); see
    #: :meth:`refusal_dmesg_prefix`
    dmesg_prefix: PrFmt = NO_PR_FMT
    #: the facts of a stop -> the pr_fmt of the file that prints its message, for a
    #: machine where some are printed by another file than apply_relocate_add()'s
    #: (loongarch's bad GOT entry, module-sections.c); None: always :attr:`dmesg_prefix`
    refusal_pr_fmt: Callable[[WriteFacts], PrFmt] | None = None
    #: the errno apply_relocate_add() returns for the stop in the facts (None: -ENOEXEC)
    refusal_errno: Callable[[WriteFacts], int] | None = None
    #: whether the kernel prints anything for the stop in the facts: False where
    #: apply_relocate_add() returns the errno without a message (s390's COPY,
    #: GLOB_DAT, JMP_SLOT and RELATIVE; loongarch's relocation stack full or empty),
    #: :attr:`refusal`'s text then being klpelf's explanation; None: always printed
    refusal_logged: Callable[[WriteFacts], bool] | None = None
    #: (layout, section index -> its bytes): write the entries of the machine's own
    #: tables (GOT, PLT) the walks emitted into their sections' bytes; None: not modelled
    write_tables: Callable[[ModuleLayout, Mapping[int, bytearray]], None] | None = None
    #: (release, module, module name) -> (rule, the kernel's message) when the
    #: machine's module_frob_arch_sections() refuses the module (-ENOEXEC), else None
    frob_refusal: Callable[[KernelRelease, ElfFile, str], tuple[str, str] | None] | None = None
    #: the pr_fmt of the file of module_frob_arch_sections(), before
    #: :attr:`frob_refusal`'s messages (loongarch's module-sections.c: none)
    frob_dmesg_prefix: PrFmt = NO_PR_FMT
    #: the module -> section index -> its header after module_frob_arch_sections();
    #: None: the machine changes no section the layout depends on (as modelled)
    frob_sections: Callable[[ElfFile], Mapping[int, SectionFrob]] | None = None
    #: (module name, object, facts, addresses assumed) -> (entry, rule, klpelf's message) for
    #: what the kernel does wrong when it applies a klp section of a module object after
    #: the module is formed (arm64: the PLT slot's store oopses); None: nothing known
    late_hazards: Callable[[str, str, WriteFacts, bool], list[tuple[int, str, str]]] | None = None

    def refusal_is_logged(self, facts: WriteFacts) -> bool:
        """Whether the kernel prints :attr:`refusal`'s message for the stop in ``facts``."""
        return self.refusal_logged is None or self.refusal_logged(facts)

    def refusal_dmesg_prefix(self, release: KernelRelease, facts: WriteFacts) -> str:
        """What dmesg shows before :attr:`refusal`'s message for the stop in ``facts``."""
        pr_fmt = self.dmesg_prefix if self.refusal_pr_fmt is None else self.refusal_pr_fmt(facts)
        return pr_fmt(release)


def silent_refusal(what: str, function: str, errno: tuple[str, int], why: str) -> str:
    """klpelf's text for a stop the kernel does not log (:attr:`Arch.refusal_logged`
    False): ``what`` is refused, ``function`` returning ``errno`` (name, number)."""
    name, number = errno
    return (f"{what} is refused silently: {function} returns -{name} (errno {number}) "
            f"without a message ({why})")  # fmt: skip


def _registry() -> dict[int, Arch]:
    from klpelf.arch import aarch64, loongarch64, ppc64, s390x, x86_64

    return {EM.X86_64: x86_64.ARCH, EM.S390: s390x.ARCH, EM.PPC64: ppc64.ARCH,
            EM.AARCH64: aarch64.ARCH, EM.LOONGARCH: loongarch64.ARCH}  # fmt: skip


_ARCHES: dict[int, Arch] | None = None


def arch_for(machine: int) -> Arch | None:
    """The :class:`Arch` of ``e_machine`` ``machine``, or None when it is not modelled."""
    global _ARCHES  # noqa: PLW0603 (built on first use: the arch files load lazily)
    if _ARCHES is None:
        _ARCHES = _registry()
    return _ARCHES.get(machine)


def not_modelled_message(machine_name: str) -> str:
    """The text of the note for a machine without an arch/ file."""
    return f"relocations for {machine_name} are not modelled"
