"""Human-readable names of ELF values, spelled as GNU readelf spells them.

Users compare klpelf's output with ``readelf -W``; using its words (``AIo``,
``NOTYPE``, ``OS [0xff20]``) makes that comparison direct.
"""

from __future__ import annotations

from klpelf.elf.constants import EM, SHF, SHN, SHT, STB, STT

_FLAG_LETTERS = {
    SHF.WRITE: "W", SHF.ALLOC: "A", SHF.EXECINSTR: "X", SHF.MERGE: "M", SHF.STRINGS: "S",
    SHF.INFO_LINK: "I", SHF.LINK_ORDER: "L", SHF.OS_NONCONFORMING: "O", SHF.GROUP: "G",
    SHF.TLS: "T", SHF.COMPRESSED: "C", SHF.EXCLUDE: "E",
}  # fmt: skip
_SHF_MASKOS = 0x0FF00000
_SHF_MASKPROC = 0xF0000000
_SHF_GNU_RETAIN = 0x00200000
_SHF_GNU_MBIND = 0x01000000
_SHF_X86_64_LARGE = 0x10000000


def section_flags(sh_flags: int, machine: int = 0, osabi: int = 0) -> str:
    """The Flg column of ``readelf -W -S`` (bits from the lowest up, as readelf walks them)."""
    out = []
    flags = sh_flags
    while flags:
        flag = flags & -flags
        flags &= ~flag
        letter = _FLAG_LETTERS.get(SHF(flag)) if flag in SHF._value2member_map_ else None
        if letter is not None:
            out.append(letter)
        elif osabi in (0, 3) and flag == _SHF_GNU_RETAIN:
            out.append("R")
        elif osabi in (0, 3) and flag == _SHF_GNU_MBIND:
            out.append("D")
        elif flag & _SHF_MASKOS:
            out.append("o")
            flags &= ~_SHF_MASKOS
        elif flag & _SHF_MASKPROC:
            if machine == EM.X86_64 and flag == _SHF_X86_64_LARGE:
                out.append("l")
            else:
                out.append("p")
                flags &= ~_SHF_MASKPROC
        else:
            out.append("x")
    return "".join(out)


def section_type(sh_type: int) -> str:
    try:
        return SHT(sh_type).name
    except ValueError:
        return f"{sh_type:#x}"


_STT_NAMES = {STT.GNU_IFUNC: "IFUNC"}
_STB_NAMES = {STB.GNU_UNIQUE: "UNIQUE"}


def symbol_type(t: int) -> str:
    try:
        return _STT_NAMES.get(STT(t)) or STT(t).name
    except ValueError:
        return f"<unknown>: {t}"


def symbol_bind(b: int) -> str:
    try:
        return _STB_NAMES.get(STB(b)) or STB(b).name
    except ValueError:
        return f"<unknown>: {b}"


def symbol_shndx(st_shndx: int) -> str:
    """The Ndx column of ``readelf -s`` for the special values; the number otherwise."""
    if st_shndx == SHN.UNDEF:
        return "UND"
    if st_shndx == SHN.ABS:
        return "ABS"
    if st_shndx == SHN.COMMON:
        return "COM"
    if st_shndx == SHN.LIVEPATCH:
        return "LIVEPATCH"
    if st_shndx == SHN.XINDEX:
        return "XINDEX"
    return str(st_shndx)
