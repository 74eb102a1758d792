"""Byte layouts of the ELF records, one set per (ELF class, byte order).

Headers are decoded with :mod:`struct` (a handful per file); symbol and relocation
tables on demand (:mod:`klpelf.elf.arrays`): a column at a time into lists for a
file under 50,000 records (no numpy import, which costs more than such a file's
whole check), into numpy structured arrays above, without a Python object per
record.  Field names and order are the gABI's (Elf64_Ehdr, Elf64_Shdr, Elf64_Sym,
Elf64_Rela ...).
"""

from __future__ import annotations

import struct
from functools import cache
from typing import NamedTuple

from klpelf.elf.constants import ELFCLASS

EI_NIDENT = 16

EHDR_FIELDS = (
    "e_type", "e_machine", "e_version", "e_entry", "e_phoff", "e_shoff", "e_flags",
    "e_ehsize", "e_phentsize", "e_phnum", "e_shentsize", "e_shnum", "e_shstrndx",
)  # fmt: skip
SHDR_FIELDS = (
    "sh_name", "sh_type", "sh_flags", "sh_addr", "sh_offset", "sh_size",
    "sh_link", "sh_info", "sh_addralign", "sh_entsize",
)  # fmt: skip


class Layout(NamedTuple):
    """Record codecs and sizes for one ELF class and byte order."""

    elfclass: int
    byteorder: str  # "<" or ">", as struct and numpy spell it
    ehdr: struct.Struct  # after e_ident
    shdr: struct.Struct
    sym_size: int
    rel_size: int
    rela_size: int

    @property
    def is64(self) -> bool:
        return self.elfclass == ELFCLASS.CLASS64

    @property
    def ehdr_size(self) -> int:
        return EI_NIDENT + self.ehdr.size

    @property
    def word_align(self) -> int:
        return 8 if self.is64 else 4

    def r_sym_shift(self) -> int:
        """ELF64_R_SYM is r_info >> 32; ELF32_R_SYM is r_info >> 8."""
        return 32 if self.is64 else 8


@cache
def layout_for(elfclass: int, byteorder: str) -> Layout:
    if elfclass == ELFCLASS.CLASS64:
        return Layout(
            elfclass, byteorder,
            ehdr=struct.Struct(byteorder + "HHIQQQIHHHHHH"),
            shdr=struct.Struct(byteorder + "IIQQQQIIQQ"),
            sym_size=24, rel_size=16, rela_size=24,
        )  # fmt: skip
    return Layout(
        elfclass, byteorder,
        ehdr=struct.Struct(byteorder + "HHIIIIIHHHHHH"),
        shdr=struct.Struct(byteorder + "IIIIIIIIII"),
        sym_size=16, rel_size=8, rela_size=12,
    )  # fmt: skip
