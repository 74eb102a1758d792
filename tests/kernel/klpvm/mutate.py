"""The negative corpus (and a few accepted oddities): edits of a good converted module.

Each :class:`Mutation` takes a copy of a good livepatch module built and converted by
the harness (``klpt_vmlinux.ko`` or ``klpt_late.ko``), gives it its own module name (so
that a variant the kernel unexpectedly accepts cannot make a later load fail with
EEXIST, and the kernel's messages name the case), and breaks exactly one rule, through
the klpelf ELF model.  No bytes are edited by offset except where the rule is about
bytes (the relocation target, struct module's name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from klpelf.elf.constants import SHF, SHN, SHT
from klpelf.elf.file import ElfFile, Section
from klpelf.elf.reader import open_elf
from klpelf.elf.writer import save_elf

#: where struct module keeps char name[MODULE_NAME_LEN] on 64-bit (after `state`, `list`)
MODULE_NAME_OFFSET = 24
MODULE_NAME_LEN = 56

VMLINUX_KLP_SECTION = ".klp.rela.vmlinux.text"
#: a static variable of klpt_target.c whose name is longer than 127 bytes
LONG_NAME = (
    "klpt_target_secret_with_a_name_longer_than_the_127_bytes_that_livepatch_accepted_"
    "before_linux_6_1_raised_KSYM_NAME_LEN_from_128_to_512"
)
LATE_KLP_SECTION = ".klp.rela.klpt_target.text"


class MutationError(Exception):
    """The base module does not look as the mutation expects (the sources changed?)."""


@dataclass(frozen=True)
class Mutation:
    #: the good module it edits: "klpt_vmlinux" or "klpt_late"
    base: str
    #: what it breaks, in words
    doc: str
    edit: Callable[[ElfFile], None]


def make_variant(base_ko: Path, out: Path, modname: str, mutation: Mutation) -> Path:
    """Write ``out``: ``base_ko`` renamed to ``modname`` and edited by ``mutation``."""
    elf = open_elf(base_ko)
    rename_module(elf, modname)
    mutation.edit(elf)
    save_elf(elf, out, overwrite=True)
    return out


# --- helpers ---------------------------------------------------------------------------


def rename_module(elf: ElfFile, name: str) -> None:
    """Set the module's name: modinfo ``name=`` and struct module's ``name``."""
    raw = name.encode()
    if len(raw) >= MODULE_NAME_LEN:
        raise MutationError(f"module name {name!r} is too long")
    mi = elf.modinfo
    if mi is None:
        raise MutationError("no .modinfo")
    mi.set("name", name)
    sec = _section(elf, ".gnu.linkonce.this_module")
    data = bytearray(sec.data)
    data[MODULE_NAME_OFFSET : MODULE_NAME_OFFSET + MODULE_NAME_LEN] = raw.ljust(
        MODULE_NAME_LEN, b"\0"
    )
    sec.set_data(bytes(data))


def _section(elf: ElfFile, name: str) -> Section:
    sec = elf.section_by_name(name)
    if sec is None:
        raise MutationError(f"no section {name}")
    return sec


def _symbol(elf: ElfFile, name: str) -> int:
    tab = elf.symtab
    assert tab is not None
    try:
        return tab.names().index(name)
    except ValueError:
        raise MutationError(f"no symbol {name}") from None


def _rename_symbol(old: str, new: str) -> Callable[[ElfFile], None]:
    def edit(elf: ElfFile) -> None:
        tab = elf.symtab
        assert tab is not None
        tab.set_symbol(_symbol(elf, old), name=new)

    return edit


def _klp_section(elf: ElfFile) -> Section:
    for name in (VMLINUX_KLP_SECTION, LATE_KLP_SECTION):
        sec = elf.section_by_name(name)
        if sec is not None:
            return sec
    raise MutationError("no klp relocation section")


def _ordinary_rela(elf: ElfFile, target: Section) -> Section:
    for sec in elf.relocation_sections:
        if sec.sh_info == target.index and not sec.sh_flags & SHF.RELA_LIVEPATCH:
            return sec
    raise MutationError(f"no ordinary relocation section for {target}")


# --- the edits ---------------------------------------------------------------------------


def clear_livepatch_flag(elf: ElfFile) -> None:
    """The klp section loses SHF_RELA_LIVEPATCH: the loader applies it as ordinary relas."""
    sec = _klp_section(elf)
    sec.sh_flags &= ~SHF.RELA_LIVEPATCH
    elf.modified = True


def flag_ordinary_rela(elf: ElfFile) -> None:
    """``.rela.text`` gets SHF_RELA_LIVEPATCH: a klp section with a non-klp name."""
    sec = _section(elf, ".rela.text")
    sec.sh_flags |= SHF.RELA_LIVEPATCH
    elf.modified = True


def move_ordinary_reloc(elf: ElfFile) -> None:
    """A relocation against the exported seq_printf moves into the klp section."""
    klp = _klp_section(elf)
    rela = _ordinary_rela(elf, elf.section(klp.sh_info))
    rt = elf.relocations(rela)
    sym = _symbol(elf, "seq_printf")
    hits = np.flatnonzero(rt.sym_array == sym)
    if not len(hits):
        raise MutationError("no relocation against seq_printf")
    mask = np.zeros(len(rt), dtype=bool)
    mask[hits[0]] = True
    taken = rt.remove(mask)
    elf.relocations(klp).append(taken)


def symbol_undef(elf: ElfFile) -> None:
    """A klp symbol stays SHN_UNDEF, as before conversion."""
    tab = elf.symtab
    assert tab is not None
    tab.set_symbol(_symbol(elf, ".klp.sym.vmlinux.total_forks,0"), st_shndx=SHN.UNDEF)


def relocate_twice(elf: ElfFile) -> None:
    """The first klp relocation appears twice: the second finds nonzero bytes."""
    rt = elf.relocations(_klp_section(elf))
    rt.append(rt.array[:1].copy())


def nonzero_target(elf: ElfFile) -> None:
    """The 4 bytes a klp relocation writes are not zero in the .ko."""
    klp = _klp_section(elf)
    first = elf.relocations(klp)[0]
    text = elf.section(klp.sh_info)
    data = bytearray(text.data)
    data[first.r_offset : first.r_offset + 4] = b"\x01\x00\x00\x00"
    text.set_data(bytes(data))


def drop_livepatch_modinfo(elf: ElfFile) -> None:
    """The ``livepatch=Y`` modinfo entry is blanked (NULs in place, as the kernel skips)."""
    mi = elf.modinfo
    assert mi is not None
    sec = mi.section
    data = bytearray(sec.data)
    entries = [e for e in mi.entries if e.key == "livepatch"]
    if not entries:
        raise MutationError("no livepatch modinfo")
    for e in entries:
        data[e.offset : e.offset + e.length] = b"\0" * e.length
    sec.set_data(bytes(data))


def rename_klp_section(new: str) -> Callable[[ElfFile], None]:
    def edit(elf: ElfFile) -> None:
        elf.rename_section(_klp_section(elf), new)

    return edit


def klp_section_typed_rel(elf: ElfFile) -> None:
    """The klp section as SHT_REL, its Elf_Rela entries and sh_entsize left as they are."""
    _klp_section(elf).sh_type = SHT.REL


def livepatch_modinfo_n(elf: ElfFile) -> None:
    """``livepatch=N``: the loader checks the key only."""
    mi = elf.modinfo
    assert mi is not None
    mi.set("livepatch", "N")


def second_symtab(elf: ElfFile) -> None:
    """A second SHT_SYMTAB (the first two symbols of .symtab, linked to .strtab) at the
    end of the section header table."""
    tab = elf.symtab
    assert tab is not None
    sec = tab.section
    size = 2 * sec.sh_entsize
    elf.add_section(
        ".symtab2",
        SHT.SYMTAB,
        data=bytes(sec.data)[:size],
        sh_link=sec.sh_link,
        sh_info=1,
        sh_entsize=sec.sh_entsize,
        sh_addralign=sec.sh_addralign,
    )


#: R_X86_64_GOTPCREL: no x86_64 kernel's apply_relocate_add() handles it
UNKNOWN_RELA_TYPE = 9


def _retype_first(elf: ElfFile, sec: Section, r_type: int) -> None:
    """The first entry of relocation section ``sec`` gets type ``r_type``."""
    rt = elf.relocations(sec)
    if not len(rt):
        raise MutationError(f"empty {sec.name}")
    entries = rt.remove(np.ones(len(rt), dtype=bool))
    shift = elf.layout.r_sym_shift()
    info = int(entries["r_info"][0])
    entries["r_info"][0] = (info >> shift << shift) | r_type
    rt.append(entries)


def unknown_rela_type(elf: ElfFile) -> None:
    """The first entry of ``.rela.text`` gets type R_X86_64_GOTPCREL (9)."""
    _retype_first(elf, _section(elf, ".rela.text"), UNKNOWN_RELA_TYPE)


#: R_X86_64_32: S + A must fit 32 bits unsigned, which a kernel address never does
R_X86_64_32 = 10


def klp_overflow(elf: ElfFile) -> None:
    """The first entry of the klp section (a PC32 to a vmlinux variable) gets type
    R_X86_64_32 (10): val = S + A, a kernel address, fails ``val != (u32)val`` and the
    kernel prints its two overflow: lines."""
    _retype_first(elf, _klp_section(elf), R_X86_64_32)


#: ET_DYN
ET_DYN = 3


def not_et_rel(elf: ElfFile) -> None:
    """``e_type`` ET_DYN instead of ET_REL."""
    elf.header.e_type = ET_DYN
    elf.modified = True


def _modversion_entry(name: str, crc: int) -> bytes:
    # struct modversion_info on 64-bit: unsigned long crc, char name[56]
    return crc.to_bytes(8, "little") + name.encode().ljust(56, b"\0")


def crc_mismatch(elf: ElfFile) -> None:
    """seq_printf's CRC in ``__versions`` is not the kernel's.  A release built without
    CONFIG_MODVERSIONS (Debian's 7.2) gives its modules no ``__versions``: one is
    added, with that one wrong entry (the kernel does not look at it)."""
    sec = elf.section_by_name("__versions")
    if sec is None:
        elf.add_section("__versions", SHT.PROGBITS, sh_flags=SHF.ALLOC,
                        data=_modversion_entry("seq_printf", 0x12345678))  # fmt: skip
        return
    data = bytearray(sec.data)
    for off in range(0, len(data), 64):
        if data[off + 8 : off + 8 + 11] == b"seq_printf\0":
            crc = int.from_bytes(data[off : off + 8], "little")
            data[off : off + 8] = (crc ^ 0x5A5A5A5A).to_bytes(8, "little")
            sec.set_data(bytes(data))
            return
    raise MutationError("no __versions entry for seq_printf")


def unknown_export(elf: ElfFile) -> None:
    """The ordinary undefined seq_printf becomes klpt_no_such_export, which nothing exports."""
    _rename_symbol("seq_printf", "klpt_no_such_export")(elf)


def _vermagic(edit: Callable[[list[str]], list[str]]) -> Callable[[ElfFile], None]:
    def f(elf: ElfFile) -> None:
        mi = elf.modinfo
        magic = mi.get("vermagic") if mi is not None else None
        if mi is None or magic is None:
            raise MutationError("no vermagic")
        words = magic.split(" ")
        new = " ".join(edit(words))
        if new == magic:
            raise MutationError(f"vermagic {magic!r} unchanged")
        mi.set("vermagic", new)

    return f


#: the vermagic without its "mod_unload" word (MODULE_VERMAGIC_MODULE_UNLOAD)
vermagic_flags = _vermagic(lambda w: [x for x in w if x != "mod_unload"])
#: the vermagic's release word changed (the flags kept)
vermagic_release = _vermagic(lambda w: ["9.9.9-klpt", *w[1:]])


#: case name -> mutation.  The case names are also the module names (klpt_<case>).
MUTATIONS: dict[str, Mutation] = {
    "flag_on_ordinary_rela": Mutation(
        "klpt_vmlinux", "SHF_RELA_LIVEPATCH on .rela.text (wrong flag)", flag_ordinary_rela
    ),
    "sym_not_livepatch": Mutation(
        "klpt_vmlinux",
        "a relocation against seq_printf (not SHN_LIVEPATCH) in the klp section",
        move_ordinary_reloc,
    ),
    "sym_unknown": Mutation(
        "klpt_vmlinux",
        "klp symbol names a symbol vmlinux does not have",
        _rename_symbol(".klp.sym.vmlinux.total_forks,0", ".klp.sym.vmlinux.klpt_no_such_symbol,0"),
    ),
    "sym_ambiguous": Mutation(
        "klpt_vmlinux",
        "max_cstate (2 in vmlinux) with sympos 0",
        _rename_symbol(".klp.sym.vmlinux.max_cstate,1", ".klp.sym.vmlinux.max_cstate,0"),
    ),
    "sympos_past_last": Mutation(
        "klpt_vmlinux",
        "max_cstate with sympos 3 (there are 2)",
        _rename_symbol(".klp.sym.vmlinux.max_cstate,2", ".klp.sym.vmlinux.max_cstate,3"),
    ),
    "sym_no_sympos": Mutation(
        "klpt_vmlinux",
        "klp symbol name without ,sympos",
        _rename_symbol(".klp.sym.vmlinux.total_forks,0", ".klp.sym.vmlinux.total_forks"),
    ),
    "sec_bad_name": Mutation(
        "klpt_vmlinux",
        "klp section named .klp.rela..text (empty objname)",
        rename_klp_section(".klp.rela..text"),
    ),
    "modsec_vmlinux_sym": Mutation(
        "klpt_late",
        "module-specific klp section (.klp.rela.klpt_target.*) references a vmlinux symbol",
        _rename_symbol(
            ".klp.sym.klpt_target.klpt_target_secret,0", ".klp.sym.vmlinux.total_forks,0"
        ),
    ),
    "sym_long_name": Mutation(
        "klpt_late",
        "klp symbol naming klpt_target's variable with a 134-byte name (KSYM_NAME_LEN 128 "
        "before 6.1, 512 since)",
        _rename_symbol(
            ".klp.sym.klpt_target.klpt_target_secret,0", f".klp.sym.klpt_target.{LONG_NAME},0"
        ),
    ),
    "reloc_twice": Mutation(
        "klpt_vmlinux", "the same location relocated twice (duplicated klp rela)", relocate_twice
    ),
    "target_nonzero": Mutation(
        "klpt_vmlinux", "nonzero bytes at a klp relocation's target", nonzero_target
    ),
    "no_livepatch_modinfo": Mutation(
        "klpt_vmlinux", "no livepatch modinfo", drop_livepatch_modinfo
    ),
    "sym_undef": Mutation("klpt_vmlinux", "klp symbol left SHN_UNDEF", symbol_undef),
    "sec_not_flagged": Mutation(
        "klpt_vmlinux",
        ".klp.rela.vmlinux.text without SHF_RELA_LIVEPATCH (applied against address 0)",
        clear_livepatch_flag,
    ),
    "two_symtabs": Mutation(
        "klpt_vmlinux", "a second SHT_SYMTAB section (.symtab2, after .symtab)", second_symtab
    ),
    "unknown_rela_type": Mutation(
        "klpt_vmlinux",
        "an ordinary .rela.text entry of type R_X86_64_GOTPCREL (9)",
        unknown_rela_type,
    ),
    "klp_overflow": Mutation(
        "klpt_vmlinux", "the klp section's first entry typed R_X86_64_32 (10)", klp_overflow
    ),
    "not_et_rel": Mutation("klpt_vmlinux", "e_type ET_DYN (3), not ET_REL", not_et_rel),
    "unknown_export": Mutation(
        "klpt_vmlinux",
        "an ordinary undefined symbol nothing exports (seq_printf renamed klpt_no_such_export)",
        unknown_export,
    ),
    "crc_mismatch": Mutation(
        "klpt_vmlinux", "seq_printf's CRC in __versions is not the kernel's", crc_mismatch
    ),
    "vermagic_flags": Mutation(
        "klpt_vmlinux", "the vermagic without its mod_unload word", vermagic_flags
    ),
    "vermagic_release": Mutation(
        "klpt_vmlinux", "the vermagic's release word is 9.9.9-klpt", vermagic_release
    ),
    # accepted oddities (the kernel loads them; they patch as well as the original)
    "ok_sympos1_unique": Mutation(
        "klpt_vmlinux",
        "sympos 1 for a unique symbol (total_forks,1)",
        _rename_symbol(".klp.sym.vmlinux.total_forks,0", ".klp.sym.vmlinux.total_forks,1"),
    ),
    "ok_sec_suffix": Mutation(
        "klpt_vmlinux",
        "klp section suffix that names no section (.klp.rela.vmlinux.klpt_whatever)",
        rename_klp_section(".klp.rela.vmlinux.klpt_whatever"),
    ),
    "ok_modinfo_n": Mutation(
        "klpt_vmlinux",
        "livepatch=N in modinfo (the value is not checked)",
        livepatch_modinfo_n,
    ),
    "ok_klp_sec_rel": Mutation(
        "klpt_vmlinux",
        "klp section typed SHT_REL (SHF_RELA_LIVEPATCH decides; read as Elf_Rela)",
        klp_section_typed_rel,
    ),
}
