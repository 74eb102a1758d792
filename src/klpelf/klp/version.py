"""The twin of kernel/module/version.c: modversions and vermagic, as the loader checks them.

A module built for a CONFIG_MODVERSIONS kernel carries ``__versions``: one
``struct modversion_info { unsigned long crc; char name[64 - sizeof(unsigned long)]; }``
per symbol it uses (include/linux/module.h, the same in 5.10, 6.1, 6.12 and 7.2), and
since v6.14 [R] possibly ``__version_ext_crcs`` (u32 each) with ``__version_ext_names``
(NUL-separated), which check_version() relies on when present (read in 7.2).
:func:`check_version` compares one symbol's entry with the kernel's CRC;
:func:`same_magic` is the vermagic comparison of check_modinfo().
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from klpelf.elf.constants import SHT

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile
    from klpelf.klp.load import LoadState

#: sizeof(struct modversion_info): unsigned long + char[64 - sizeof(unsigned long)]
MODVERSION_INFO_SIZE = 64


def module_versions(elf: ElfFile) -> dict[str, int] | None:
    """``__versions`` as name -> CRC (the first entry of a name: check_version() stops
    at it); None when the module has no such section (``info->index.vers`` 0)."""
    sec = elf.section_by_name("__versions")
    if sec is None:
        return None
    data = bytes(sec.data) if sec.sh_type != SHT.NOBITS else b""
    word = 8 if elf.is64 else 4
    order: Literal["little", "big"] = "little" if elf.byteorder == "little" else "big"
    out: dict[str, int] = {}
    for off in range(0, len(data) - MODVERSION_INFO_SIZE + 1, MODVERSION_INFO_SIZE):
        crc = int.from_bytes(data[off : off + word], order)
        raw = data[off + word : off + MODVERSION_INFO_SIZE].split(b"\0", 1)[0]
        out.setdefault(raw.decode("utf-8", "surrogateescape"), crc)
    return out


def extended_versions(elf: ElfFile) -> dict[str, int] | None:
    """``__version_ext_crcs`` + ``__version_ext_names`` as name -> CRC; None without them."""
    crcs, names = (
        elf.section_by_name("__version_ext_crcs"),
        elf.section_by_name("__version_ext_names"),
    )
    if crcs is None or names is None:
        return None
    order: Literal["little", "big"] = "little" if elf.byteorder == "little" else "big"
    raw = bytes(crcs.data)
    values = [int.from_bytes(raw[i : i + 4], order) for i in range(0, len(raw) - 3, 4)]
    out: dict[str, int] = {}
    for crc, name in zip(values, bytes(names.data).split(b"\0"), strict=False):
        out.setdefault(name.decode("utf-8", "surrogateescape"), crc)
    return out


def same_magic(amagic: str, bmagic: str, has_crcs: bool) -> bool:
    """Mirrors ``same_magic()``: with CRCs (the module has ``__versions`` and the kernel
    CONFIG_MODVERSIONS) the first word, the kernel release, is not compared."""
    if has_crcs:
        amagic = amagic[len(amagic.split(" ", 1)[0]) :]
        bmagic = bmagic[len(bmagic.split(" ", 1)[0]) :]
    return amagic == bmagic


def check_version(state: LoadState, symname: str, crc: int | None, *, errno: int,
                  symbol: tuple[int, str] | None = None) -> bool:  # fmt: skip
    """Mirrors ``check_version()`` for a kernel with CONFIG_MODVERSIONS, whose export of
    ``symname`` has a CRC (``crc``; None: no source says its value, so only whether
    the module has an entry for it is judged).  False where the kernel fails the
    symbol, with its message; ``errno``: what the caller returns then (ENOEXEC from
    check_modstruct_version(), EINVAL from resolve_symbol())."""
    elf, v, name = state.elf, state.release, state.mod.name
    ext = extended_versions(elf) if v.has_extended_modversions else None
    if ext is not None:
        theirs = ext.get(symname)
        if theirs is None or crc is None or theirs == crc:
            return True  # an entry missing: pr_warn_once, then accepted
        return _disagrees(state, symname, errno, symbol)
    versions = module_versions(elf)
    if versions is None:
        # try_to_force_load(): CONFIG_MODULE_FORCE_LOAD (Debian's 5.10-7.2 have it)
        # accepts, tainting; without it -ENOEXEC, no message
        if not state.warned_no_versions:
            state.warned_no_versions = True
            state.add("warning", "no-versions",
                      f"no __versions section: a CONFIG_MODVERSIONS kernel loads the module "
                      f"only with CONFIG_MODULE_FORCE_LOAD, tainting it ({name}: {symname}: "
                      "kernel tainted.); without, it refuses the module (errno 8) without "
                      "a message")  # fmt: skip
        return True
    theirs = versions.get(symname)
    if theirs is None:
        state.add("error", "no-symbol-version", f"{name}: no symbol version for {symname}",
                  symbol=symbol, when="load", kernel=True, errno=errno)  # fmt: skip
        return False
    if crc is None or theirs == crc:
        return True
    return _disagrees(state, symname, errno, symbol)


def _disagrees(state: LoadState, symname: str, errno: int,
               symbol: tuple[int, str] | None) -> bool:  # fmt: skip
    state.add("error", "symbol-version",
              f"{state.mod.name}: disagrees about version of symbol {symname}",
              symbol=symbol, when="load", kernel=True, errno=errno)  # fmt: skip
    return False
