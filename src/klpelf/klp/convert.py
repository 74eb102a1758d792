"""Turn a built module into a livepatch module: annotated symbols become livepatch symbols.

Annotation mode, compatible with klp-convert's minimal version: an undefined symbol
named ``.klp.sym.<obj>.<sym>,<pos>`` (written with a C asm label or ``.set`` alias)
or ``.klp.sym.rela.<lp_obj>.<obj>.<sym>,<pos>`` (klp-convert's annotation) becomes
a livepatch symbol (canonical name, st_shndx SHN_LIVEPATCH, same index), and every
relocation against it in an ordinary relocation section of an SHF_ALLOC section
moves, in order, to ``.klp.rela.<obj>.<target section>``; the ``livepatch``
modinfo entry is added when missing.  Nothing else changes, so converting a
converted module changes nothing.
"""

from __future__ import annotations

from klpelf._record import Record
from klpelf.elf.constants import SHF, SHN, SHT
from klpelf.elf.file import ElfFile, Section
from klpelf.elf.relocs import move_relocations
from klpelf.errors import KlpFormatError
from klpelf.klp.check import UNSAFE_LATE_SECTIONS
from klpelf.klp.names import (
    KLP_RELA_PREFIX,
    KLP_SYM_PREFIX,
    KlpRelaSectionName,
    KlpSymbolName,
    parse_annotation_symbol,
)

#: SHF flags of a klp relocation section, as kpatch's create-klp-module and
#: objtool's klp post-link write them.
KLP_RELA_FLAGS = SHF.ALLOC | SHF.INFO_LINK | SHF.RELA_LIVEPATCH


class ConvertReport(Record):
    """What :func:`convert_annotations` changed."""

    _fields = ("symbols", "sections", "modinfo_added", "signature_dropped", "not_a_module")
    __slots__ = _fields

    def __init__(self, symbols: list[tuple[int, str, str]] | None = None,
                 sections: dict[str, int] | None = None, modinfo_added: bool = False,
                 signature_dropped: bool = False) -> None:  # fmt: skip
        #: (symbol index, old name, new name)
        self.symbols = symbols if symbols is not None else []
        #: (klp section name, relocations moved into it)
        self.sections = sections if sections is not None else {}
        self.modinfo_added, self.signature_dropped = modinfo_added, signature_dropped
        #: no .gnu.linkonce.this_module and no .modinfo: a plain object, not a module
        self.not_a_module = False

    @property
    def changed(self) -> bool:
        return bool(self.symbols or self.sections or self.modinfo_added or self.signature_dropped)


def klp_rela_section_name(objname: str, target: Section) -> str:
    """``.klp.rela.<objname>.<section>``, the section name written without its leading dot."""
    return f"{KLP_RELA_PREFIX}{objname}.{target.name.removeprefix('.')}"


def convert_annotations(elf: ElfFile) -> ConvertReport:
    """Convert ``elf`` in place (the model, not the file); see the module docstring.

    :raises KlpFormatError: a malformed annotation, or a relocation that a klp
        section cannot carry (SHT_REL: the kernel reads klp sections as Elf_Rela).
    """
    refuse_unloadable(elf)
    report = ConvertReport()
    tab = elf.symtab
    if tab is None:
        raise KlpFormatError("module has no symbols (stripped?)", path=elf.path)
    objname_of: dict[int, str] = {}
    for i in tab.indices_with_prefix(KLP_SYM_PREFIX):
        sym = tab[i]
        name = sym.name
        if sym.st_shndx == SHN.LIVEPATCH:
            continue
        if sym.st_shndx != SHN.UNDEF:
            raise KlpFormatError(
                f"symbol {name} is defined in the module; a livepatch symbol must be undefined",
                path=elf.path,
            )
        ann = parse_annotation_symbol(name)  # checked first: it also fits the kernel's form
        canon = ann.to_symbol_name() if ann is not None else KlpSymbolName.parse(name)
        new = str(canon)
        tab.set_symbol(i, name=new if new != name else None, st_shndx=SHN.LIVEPATCH)
        objname_of[i] = canon.objname
        report.symbols.append((i, name, new))

    if objname_of:
        _move_relocations(elf, objname_of, report)
    mi = elf.modinfo
    info = elf.section_by_name(".modinfo")
    if mi is None and info is not None:
        # elf.modinfo is None for an SHT_NOBITS .modinfo: adding a second one would
        # leave the kernel reading the first (find_sec), or refusing both since v6.4
        # ("Only one .modinfo section must exist.")
        raise KlpFormatError(
            f"section {info} is {_sh_type_name(info.sh_type)}, not a data section: "
            "livepatch=Y cannot be added to it",
            path=elf.path,
        )
    if mi is None:
        # a plain object (lp.o) too: its .modinfo is merged into the module's when
        # kbuild links the .ko; the caller says that it is not a module yet
        report.not_a_module = elf.section_by_name(".gnu.linkonce.this_module") is None
        elf.add_section(".modinfo", SHT.PROGBITS, sh_flags=SHF.ALLOC, data=b"livepatch=Y\0")
        report.modinfo_added = True
    elif mi.get("livepatch") is None:
        mi.set("livepatch", "Y")
        report.modinfo_added = True
    if report.changed and elf.has_module_signature:
        elf.strip_signature()
        report.signature_dropped = True
    return report


def refuse_unloadable(elf: ElfFile) -> None:
    """Refuse an input that no convert can make loadable, rather than write an output
    that ``klpelf check`` and ``show`` then reject: every table must read (what show
    reads), and the kernel's ELF validity checks (ELF type, section 0, the symbol
    table; :func:`klpelf.klp.load.elf_validity`) must pass.

    :raises KlpError: the first problem, as check or show would say it.
    """
    from klpelf.klp.load import LoadState, elf_validity
    from klpelf.klp.module import klp_module
    from klpelf.release import DEFAULT_VERSION

    elf.decode_all()
    state = LoadState(elf, klp_module(elf), DEFAULT_VERSION)
    # a plain object (no .gnu.linkonce.this_module) is converted: the caller says it
    # is no module yet
    if not elf_validity(state, module=False):
        problem = next(d for d in state.diagnostics if d.severity == "error")
        raise KlpFormatError(f"the kernel would refuse this module: {problem.message}",
                             path=elf.path)  # fmt: skip


def _sh_type_name(sh_type: int) -> str:
    try:
        return f"SHT_{SHT(sh_type).name}"
    except ValueError:
        return f"sh_type {sh_type:#x}"


def _move_relocations(elf: ElfFile, objname_of: dict[int, str], report: ConvertReport) -> None:
    symtab = elf.symtab
    assert symtab is not None
    existing = {s.name: s for s in elf.sections if s.sh_flags & SHF.RELA_LIVEPATCH}
    livepatch = set(objname_of)
    for sec in list(elf.relocation_sections):
        if sec.sh_flags & SHF.RELA_LIVEPATCH or sec.sh_link != symtab.section.index:
            continue
        target = sec.info_section
        if target is None or not target.is_alloc:
            continue  # the loader never applies these (apply_relocations skips them)
        rt = elf.relocations(sec)
        used = rt.used_among(livepatch)
        if not used:
            continue
        if sec.sh_type != SHT.RELA:
            raise KlpFormatError(
                f"section {sec}: SHT_REL relocations cannot become klp relocations "
                "(the kernel reads klp relocation sections as Elf_Rela)",
                path=elf.path,
            )
        objs = sorted({objname_of[i] for i in used})
        if target.name.startswith(UNSAFE_LATE_SECTIONS) and objs != ["vmlinux"]:
            # objtool's klp diff refuses these too: the loader has already processed
            # the section (jump labels, static calls, alternatives) when livepatch
            # writes a module object's relocations.
            j = rt.indices_of_symbols({i for i in used if objname_of[i] != "vmlinux"})[0]
            sym = rt[j].sym
            raise KlpFormatError(
                f"section {sec}: relocation {j} against {symtab.name(sym)}: klp "
                f"relocations for module {objname_of[sym]} cannot be applied safely in "
                f"{target.name} (the loader processes it before livepatch writes them)",
                path=elf.path,
            )
        for obj in objs:
            entries = elf.relocations(sec).indices_of_symbols(
                {i for i in used if objname_of[i] == obj}
            )
            name = klp_rela_section_name(obj, target)
            KlpRelaSectionName.parse(name)  # the kernel must be able to read it
            dst = existing.get(name)
            if dst is None:
                dst = elf.add_relocation_section(
                    name, target, symtab=symtab.section, extra_flags=SHF.ALLOC | SHF.RELA_LIVEPATCH
                )
                existing[name] = dst
            n = move_relocations(elf, sec, dst, entries)
            report.sections[name] = report.sections.get(name, 0) + n
