"""Where the module loader puts a module's sections: the twin of ``layout_sections()``
and ``move_module()`` (kernel/module/main.c).

``layout_and_allocate()`` first drops SHF_ALLOC from the sections the loader keeps
out of the module's memory (``rewrite_section_headers()``: ``__versions`` and
``.modinfo``; the per-cpu section ``.data..percpu``, allocated on its own) and marks
``.data..ro_after_init`` and ``__jump_table`` SHF_RO_AFTER_INIT
(``module_mark_ro_after_init()`` in v6.x, inline before).  ``layout_sections()`` then
walks five flag masks, each over all sections in index order, first for the core
sections then for the init ones (a name starting ``.init``, ``module_init_section()``;
``.exit`` sections stay core with CONFIG_MODULE_UNLOAD, as every distribution kernel
has it):

=====  ==========================  =====================  =========  ==============
m      required                    excluded               core       init
=====  ==========================  =====================  =========  ==============
0      SHF_EXECINSTR | SHF_ALLOC   (ARCH_SHF_SMALL)       text       init_text
1      SHF_ALLOC                   SHF_WRITE              rodata     init_rodata
2      SHF_RO_AFTER_INIT | ALLOC                          ro_after   (none)
3      SHF_WRITE | SHF_ALLOC                              data       init_data
4      ARCH_SHF_SMALL | SHF_ALLOC                         data       init_data
=====  ==========================  =====================  =========  ==============

A section is taken by the first mask it matches; its offset in its region is the
region's size so far aligned to sh_addralign (``module_get_offset_and_type()``,
``module_get_offset()`` before v6.4).  ARCH_SHF_SMALL is 0 on every architecture
klpelf models (ia64 had it).  In v6.4+ each region is allocated on its own
(``mod->mem[type]``); before, the core regions were one allocation with each region
page-aligned (``strict_align()``, CONFIG_STRICT_MODULE_RWX) and the init ones another.
The kernel's addresses are not knowable offline: :func:`place` puts the regions one
after another, page-aligned, from an assumed base, unless the caller gives section
addresses (``/sys/module/<name>/sections/<section>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from klpelf.arch import SectionFrob, arch_for
from klpelf.elf.constants import EM, SHF, SHN, SHT
from klpelf.elf.file import ElfFile
from klpelf.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from klpelf.klp.module import KlpModule
    from klpelf.release import KernelRelease
    from klpelf.symbols.sources import KernelSymbols

#: the regions in the order of ``enum mod_mem_type`` (include/linux/module.h, v6.4+)
REGIONS = ("text", "data", "rodata", "ro_after_init", "init_text", "init_data", "init_rodata")

#: the order :func:`place` puts them in: that of the one core and the one init allocation
#: before v6.4 (``core_layout``: text, ro, ro_after_init, data; then ``init_layout``)
PLACEMENT = ("text", "rodata", "ro_after_init", "data", "init_text", "init_rodata", "init_data")

#: (required flags, excluded flags, core region, init region) of layout_sections()
_MASKS: tuple[tuple[int, int, str, str | None], ...] = (
    (SHF.EXECINSTR | SHF.ALLOC, 0, "text", "init_text"),
    (SHF.ALLOC, SHF.WRITE, "rodata", "init_rodata"),
    (SHF.RO_AFTER_INIT | SHF.ALLOC, 0, "ro_after_init", None),
    (SHF.WRITE | SHF.ALLOC, 0, "data", "init_data"),
    (SHF.ALLOC, 0, "data", "init_data"),  # ARCH_SHF_SMALL | SHF_ALLOC, ARCH_SHF_SMALL = 0
)

#: the sections rewrite_section_headers() and layout_and_allocate() take SHF_ALLOC from
NOT_ALLOCATED = frozenset({"__versions", ".modinfo", ".data..percpu"})
#: the sections module_mark_ro_after_init() marks SHF_RO_AFTER_INIT
RO_AFTER_INIT = frozenset({".data..ro_after_init", "__jump_table"})

#: where :func:`place` starts without addresses from the caller: x86_64's
#: MODULES_VADDR without KASLR (arch/x86/include/asm/pgtable_64_types.h); an assumption
DEFAULT_BASE = 0xFFFF_FFFF_A000_0000

#: e_machine -> the start of the area modules are loaded in, for the machines where it
#: is fixed whatever KASLR does, so that a range a twin judges at :func:`place`'s
#: addresses is the one the kernel judges: x86_64 loads modules in
#: [MODULES_VADDR, MODULES_END) and the kernel's text is in the top 2 GiB too.  Other
#: machines place modules relative to the kernel's own (randomised) address (arm64,
#: s390x, loongarch64) or far from it through stubs (ppc64): ``check --kernel`` does
#: not judge their ranges at assumed addresses (``apply --base`` does, at real ones).
MODULE_AREA: dict[int, int] = {EM.X86_64: DEFAULT_BASE}
PAGE_SIZE = 4096


class PlacedSection(NamedTuple):
    """One section as the module loader placed it."""

    #: the section's index
    index: int  # type: ignore[assignment]  # a field: hides tuple.index()
    name: str
    #: the region (``mod->mem[type]``): one of :data:`REGIONS`
    region: str
    #: offset in the region (what the loader keeps in sh_entsize)
    offset: int
    size: int
    #: the section's address (sh_addr after ``move_module()``)
    address: int


def _align(value: int, align: int) -> int:
    return (value + align - 1) // align * align if align > 1 else value


def frobbed(elf: ElfFile) -> Mapping[int, SectionFrob]:
    """The sections the machine's ``module_frob_arch_sections()`` changes, as it
    leaves them (arch/: ``Arch.frob_sections``)."""
    arch = arch_for(elf.machine)
    return {} if arch is None or arch.frob_sections is None else arch.frob_sections(elf)


def section_size(elf: ElfFile, index: int,
                 frob: Mapping[int, SectionFrob] | None = None) -> tuple[int, int]:  # fmt: skip
    """(sh_size, sh_addralign) of section ``index`` as the loader lays it out."""
    f = (frobbed(elf) if frob is None else frob).get(index)
    s = elf.sections[index]
    return (s.sh_size, s.sh_addralign) if f is None else (f.sh_size, f.sh_addralign)


def layout_sections(elf: ElfFile) -> list[tuple[int, str, int]]:
    """``layout_sections()``: (section index, region, offset) of every section the
    loader allocates, in the order the loader lays them out."""
    frob = frobbed(elf)
    flags = {}
    for s in elf.sections[1:]:
        f = frob[s.index].sh_flags if s.index in frob else s.sh_flags
        if s.name in NOT_ALLOCATED:
            f &= ~SHF.ALLOC
        if s.name in RO_AFTER_INIT:
            f |= SHF.RO_AFTER_INIT
        flags[s.index] = f
    sizes = dict.fromkeys(REGIONS, 0)
    out: list[tuple[int, str, int]] = []
    taken: set[int] = set()
    for init in (False, True):
        for required, excluded, core, init_region in _MASKS:
            region = init_region if init else core
            for s in elf.sections[1:]:
                f = flags[s.index]
                if (f & required) != required or f & excluded or s.index in taken:
                    continue
                if s.name.startswith(".init") != init or region is None:
                    continue
                taken.add(s.index)
                size, align = section_size(elf, s.index, frob)
                offset = _align(sizes[region], align or 1)
                sizes[region] = offset + size
                out.append((s.index, region, offset))
    return out


def place(elf: ElfFile, bases: Mapping[str, int] | None = None, *,
          base: int = DEFAULT_BASE) -> list[PlacedSection]:  # fmt: skip
    """The sections of :func:`layout_sections` at addresses.

    ``bases``: section name -> address, as ``/sys/module/<name>/sections/`` lists
    them; a region with a section named there starts at that address less the
    section's offset (its other sections follow the loader's layout), a section named
    there keeps its address; the other regions come one after another, page-aligned,
    from ``base``.

    :raises UsageError: ``bases`` names a section the loader does not allocate.
    """
    laid = layout_sections(elf)
    given = dict(bases or {})
    by_name = {elf.sections[i].name: (region, offset) for i, region, offset in laid}
    for name in given:
        if name not in by_name:
            raise UsageError(f"--base {name}: the module loader does not allocate a section "
                             "of that name")  # fmt: skip
    starts: dict[str, int] = {}
    for name, address in given.items():
        region, offset = by_name[name]
        starts.setdefault(region, address - offset)
    frob = frobbed(elf)
    sizes = {i: section_size(elf, i, frob)[0] for i, _, _ in laid}
    ends = dict.fromkeys(REGIONS, 0)
    for i, region, offset in laid:
        ends[region] = max(ends[region], offset + sizes[i])
    at = base
    for region in PLACEMENT:
        if region not in starts:  # an empty region takes no room (only empty sections)
            starts[region] = at
            at = _align(at + ends[region], PAGE_SIZE)
    placed = []
    for i, region, offset in laid:
        s = elf.sections[i]
        address = given.get(s.name, starts[region] + offset)
        placed.append(PlacedSection(i, s.name, region, offset, sizes[i], address))
    return placed


def section_bytes(elf: ElfFile, index: int) -> bytearray:
    """The bytes the loader copies for section ``index``: the file's, zeros for NOBITS."""
    s = elf.sections[index]
    f = frobbed(elf).get(index)
    if f is not None and f.sh_type == SHT.NOBITS:
        return bytearray(f.sh_size)
    return bytearray(s.sh_size) if s.sh_type == SHT.NOBITS else bytearray(s.data)


def symbol_values(elf: ElfFile, ks: KernelSymbols, release: KernelRelease,
                  addresses: Mapping[int, int], *,
                  module: KlpModule | None = None) -> list[int | None]:  # fmt: skip
    """st_value of every symbol once the kernel resolved it: a livepatch symbol by
    ``klp_find_object_symbol()``, an undefined one by name (``simplify_symbols()``),
    a defined one at its section's address (``addresses``: section index -> address);
    None when not known.  What the arch/ twins get as ``symbol_value``.

    ``module``: the module's :func:`~klpelf.klp.module.klp_module` view, when the
    caller has it (with ``release``'s KSYM_NAME_LEN)."""
    tab = elf.symtab
    assert tab is not None
    shndx, st_value = tab.column("st_shndx"), tab.column("st_value")
    out: list[int | None] = [None] * len(shndx)
    for i, value in _kernel_values(elf, ks, release, shndx, module).items():
        out[i] = value
    abs_, reserved, where = int(SHN.ABS), int(SHN.LORESERVE), addresses.get
    for i, (n, value) in enumerate(zip(shndx, st_value, strict=True)):
        if n and n < reserved:
            base = where(n)
            if base is not None:
                out[i] = base + value
        elif n == abs_:
            out[i] = value
    if out:
        out[0] = 0
    return out


def symbol_value_arrays(
    elf: ElfFile, ks: KernelSymbols, release: KernelRelease, addresses: Mapping[int, int], *,
    module: KlpModule | None = None,
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:  # fmt: skip
    """:func:`symbol_values` as the vector twins take them
    (:func:`klpelf.arch._vector.symbol_columns`: the values, whether each is known,
    one entry more for an index past the table), for a symbol table decoded with
    numpy: the defined symbols without a Python step each."""
    import numpy as np

    tab = elf.symtab
    assert tab is not None
    arr = tab.array
    n = len(arr)
    shndx = arr["st_shndx"].astype(np.intp)
    st_value = arr["st_value"].astype(np.uint64)
    values, known = np.zeros(n + 1, dtype=np.uint64), np.zeros(n + 1, dtype=bool)
    # a defined symbol: its section's address (a table by section index) + st_value
    size = min(max(addresses, default=0) + 1, int(SHN.LORESERVE))
    base, placed = np.zeros(size, dtype=np.uint64), np.zeros(size, dtype=bool)
    for index, address in addresses.items():
        if 0 < index < size:
            base[index], placed[index] = address, True
    defined = np.flatnonzero((shndx > 0) & (shndx < size))
    defined = defined[placed[shndx[defined]]]
    values[defined] = base[shndx[defined]] + st_value[defined]
    known[defined] = True
    absolute = np.flatnonzero(shndx == int(SHN.ABS))
    values[absolute], known[absolute] = st_value[absolute], True
    for i, value in _kernel_values(elf, ks, release, None, module).items():
        if value is not None:
            values[i], known[i] = value, True
    if n:
        values[0], known[0] = 0, True
    return values, known


def _kernel_values(elf: ElfFile, ks: KernelSymbols, release: KernelRelease,
                   shndx: list[int] | None, module: KlpModule | None, *,
                   batched: bool = True) -> dict[int, int | None]:  # fmt: skip
    """The symbols the kernel resolves: each livepatch symbol (klp_find_object_symbol()),
    each named undefined one (by name, vmlinux first); symbol index -> value.

    ``batched``: the vmlinux names with one line in a parsed kallsyms or System.map
    answered at once (:meth:`KernelSymbols.vmlinux_lone_values`); False, every name
    through its candidates (the same values: tests/unit/test_apply_vector.py)."""
    from klpelf.klp.module import klp_module
    from klpelf.symbols.resolve import klp_find_address

    tab = elf.symtab
    assert tab is not None
    mod = module
    if mod is None or mod.ksym_name_len != release.ksym_name_len:
        mod = klp_module(elf, ksym_name_len=release.ksym_name_len)
    if shndx is None:
        unnamed = [i for i in tab.indices_where_shndx(SHN.UNDEF) if i]
    else:
        unnamed = [i for i, n in enumerate(shndx) if not n and i]
    undefined = [(i, name) for i, name in zip(unnamed, tab.names_at(unnamed), strict=True) if name]
    lps = mod.livepatch_names()
    names = [*(p.name for _, p in lps if p.objname == "vmlinux"), *(name for _, name in undefined)]
    lone = ks.vmlinux_lone_values(names) if batched else None
    # the names the batch does not answer: one search per kallsyms for all of them
    ks.prefetch([*(p.name for _, p in lps if p.objname != "vmlinux"),
                 *(n for n, v in zip(names, lone or [True] * len(names), strict=True)
                   if v is True)])  # fmt: skip
    answers = iter(lone) if lone is not None else None
    out: dict[int, int | None] = {}
    for i, p in lps:
        if p.objname != "vmlinux":
            out[i] = klp_find_address(ks, p.objname, p.name, p.sympos)
            continue
        value = next(answers) if answers is not None else True
        if value is True:
            out[i] = klp_find_address(ks, "vmlinux", p.name, p.sympos)
        else:  # klp_match_callback() of one candidate: sympos 0 or 1 takes it
            out[i] = value if p.sympos <= 1 else None
    for i, name in undefined:  # simplify_symbols(): by name
        value = next(answers) if answers is not None else True
        if value is True:
            found = [c.address for c in ks.vmlinux_matches(name) if c.address]
            value = found[0] if found else None
        out[i] = value
    return out
