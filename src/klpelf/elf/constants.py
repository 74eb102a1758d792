"""ELF constants, named as in the ELF gABI and <elf.h>, plus the Linux livepatch ones.

Short enum class names make ``SHF.RELA_LIVEPATCH`` grep like ``SHF_RELA_LIVEPATCH``.
The livepatch values come from include/uapi/linux/elf.h (added in v4.7 by
"Elf: add livepatch-specific Elf constants").  Unknown values stay plain ``int``
wherever the reader meets them: these enums name values, they never reject them.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

ELFMAG = b"\x7fELF"


class ELFCLASS(IntEnum):
    NONE = 0
    CLASS32 = 1
    CLASS64 = 2


class ELFDATA(IntEnum):
    NONE = 0
    LSB = 1  # ELFDATA2LSB
    MSB = 2  # ELFDATA2MSB


class ET(IntEnum):
    NONE = 0
    REL = 1
    EXEC = 2
    DYN = 3
    CORE = 4


class EM(IntEnum):
    """e_machine values for the architectures klpelf names (and a few neighbours)."""

    NONE = 0
    I386 = 3
    PPC = 20
    PPC64 = 21
    S390 = 22
    ARM = 40
    X86_64 = 62
    AARCH64 = 183
    RISCV = 243
    LOONGARCH = 258


class SHT(IntEnum):
    NULL = 0
    PROGBITS = 1
    SYMTAB = 2
    STRTAB = 3
    RELA = 4
    HASH = 5
    DYNAMIC = 6
    NOTE = 7
    NOBITS = 8
    REL = 9
    SHLIB = 10
    DYNSYM = 11
    INIT_ARRAY = 14
    FINI_ARRAY = 15
    PREINIT_ARRAY = 16
    GROUP = 17
    SYMTAB_SHNDX = 18
    RELR = 19
    GNU_ATTRIBUTES = 0x6FFFFFF5
    GNU_HASH = 0x6FFFFFF6
    GNU_LIBLIST = 0x6FFFFFF7
    GNU_verdef = 0x6FFFFFFD
    GNU_verneed = 0x6FFFFFFE
    GNU_versym = 0x6FFFFFFF
    X86_64_UNWIND = 0x70000001  # also ARM_EXIDX's value on ARM


class SHF(IntFlag):
    WRITE = 0x1
    ALLOC = 0x2
    EXECINSTR = 0x4
    MERGE = 0x10
    STRINGS = 0x20
    INFO_LINK = 0x40
    LINK_ORDER = 0x80
    OS_NONCONFORMING = 0x100
    GROUP = 0x200
    TLS = 0x400
    COMPRESSED = 0x800
    # include/uapi/linux/elf.h: "the section holds livepatch relocations"
    RELA_LIVEPATCH = 0x00100000
    RO_AFTER_INIT = 0x00200000
    GNU_RETAIN = 0x00200000
    EXCLUDE = 0x80000000


class SHN(IntEnum):
    UNDEF = 0
    LORESERVE = 0xFF00
    # include/uapi/linux/elf.h: symbols resolved by livepatch, ignored by the loader
    LIVEPATCH = 0xFF20
    ABS = 0xFFF1
    COMMON = 0xFFF2
    XINDEX = 0xFFFF


class STB(IntEnum):
    LOCAL = 0
    GLOBAL = 1
    WEAK = 2
    GNU_UNIQUE = 10


class STT(IntEnum):
    NOTYPE = 0
    OBJECT = 1
    FUNC = 2
    SECTION = 3
    FILE = 4
    COMMON = 5
    TLS = 6
    GNU_IFUNC = 10


class STV(IntEnum):
    DEFAULT = 0
    INTERNAL = 1
    HIDDEN = 2
    PROTECTED = 3
