"""What differs between kernel releases: limits and the wording of messages.

One place for every version-dependent fact, each with the commit or release that
changed it, so that ``klpelf check --kernel-release`` predicts the exact text a
given kernel prints.  Sources: kernel/livepatch/core.c, kernel/module/main.c and
arch/x86/kernel/module.c of the releases named (see
../shared/reference/kernel-rules.md, sections 3, 5.1 and 10).  What differs per
architecture, the x86 message texts among it, is in :mod:`klpelf.arch`.
"""

from __future__ import annotations

import re
from functools import total_ordering
from typing import Final

from klpelf._record import FrozenRecord
from klpelf.errors import UsageError

KSYM_NAME_LEN_OLD = 128
"""KSYM_NAME_LEN before v6.1: symbol names were read with ``%127[^,]``."""
KSYM_NAME_LEN = 512
"""KSYM_NAME_LEN since v6.1: symbol names are read with ``%511[^,]``."""

ENOENT, ENOEXEC, EINVAL = 2, 8, 22

_RELEASE_RE = re.compile(r"\s*(\d+)\.(\d+)")


@total_ordering
class KernelRelease(FrozenRecord):
    """A kernel release as far as livepatch behaviour goes: major and minor (ordered)."""

    _fields = ("major", "minor")
    __slots__ = _fields

    def __init__(self, major: int, minor: int) -> None:
        self.major: Final = major
        self.minor: Final = minor

    def __lt__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, KernelRelease)
        return (self.major, self.minor) < (other.major, other.minor)

    @classmethod
    def parse(cls, release: str) -> KernelRelease:
        """``6.1.0-56-amd64``, ``6.12.117+deb13-amd64``, ``7.2`` or a vermagic string."""
        m = _RELEASE_RE.match(release)
        if m is None:
            raise UsageError(f"not a kernel release: {release!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def at_least(self, major: int, minor: int) -> bool:
        return (self.major, self.minor) >= (major, minor)

    @property
    def ksym_name_len(self) -> int:
        # v6.1: KSYM_NAME_LEN 128 -> 512, and the sscanf width %127 -> %511
        return KSYM_NAME_LEN if self.at_least(6, 1) else KSYM_NAME_LEN_OLD

    def kallsyms_copy(self, name: str) -> str:
        """``name`` as the patch module's core kallsyms string table keeps it.

        add_kallsyms() (kernel/module/kallsyms.c; kernel/module.c before v5.19) copies
        every symbol name of a livepatch module with ``strlcpy(s, name, KSYM_NAME_LEN)``,
        so a longer name is cut to KSYM_NAME_LEN - 1 bytes.  klp_write_object_relocs()
        parses and prints the names from that copy (observed on Debian's 5.10: a
        134-byte symbol printed cut to 127 bytes).
        """
        raw = name.encode("utf-8", "surrogateescape")
        if len(raw) < self.ksym_name_len:
            return name
        return raw[: self.ksym_name_len - 1].decode("utf-8", "surrogateescape")

    @property
    def vmlinux_relocs_at_load(self) -> bool:
        # v5.8 (Josh Poimboeuf's series): vmlinux klp sections are applied by the
        # module loader; before, livepatch applied every section at enable time.
        return self.at_least(5, 8)

    @property
    def forbids_vmlinux_from_module_sections(self) -> bool:
        return self.at_least(5, 8)

    @property
    def prints_elf_header_errors(self) -> bool:
        # v5.16 (Shuah Khan, "module: change to print useful messages from
        # elf_validity_check()"): one pr_err per ELF header check.  Before, a bad
        # e_ident, e_type, e_machine or e_shentsize is refused with -ENOEXEC and no
        # message (observed on Debian's 5.10: ET_DYN refused, nothing logged).
        return self.at_least(5, 16)

    @property
    def requires_one_symtab(self) -> bool:
        # v6.4 (Luis Chamberlain, "module: merge remnants of setup_load_info() to elf
        # validation"): exactly one SHT_SYMTAB, else "module has no symbols".  Before,
        # setup_load_info() took the first one and ignored the others (observed:
        # Debian's 5.10 and 6.1 load a module with two; 6.12 and 7.2 refuse it).
        return self.at_least(6, 4)

    @property
    def validates_this_module(self) -> bool:
        # v6.4 (the same commit as requires_one_symtab): elf_validity_check() demands
        # exactly one .gnu.linkonce.this_module ("module %s: Exactly one ...", checked
        # before the symbol table: elf_validity_cache_index_mod() precedes _index_sym()
        # in 6.12 and 7.2); before, setup_load_info() looked for it after the symbol
        # table ("%s: No module found in object"; read in 5.10 and 6.1).
        return self.at_least(6, 4)

    def no_module_message(self, name: str | None) -> str:
        """What the loader prints for an object without .gnu.linkonce.this_module;
        ``name``: modinfo's ``name=``, None when there is none."""
        who = name or "(missing .modinfo section or name field)"
        if self.validates_this_module:
            return f"module {who}: Exactly one .gnu.linkonce.this_module section must exist."
        return f"{who}: No module found in object"

    @property
    def has_extended_modversions(self) -> bool:
        # v6.14 (Matthew Maurer, "module: Extend the modversions format"):
        # __version_ext_crcs/__version_ext_names, which check_version() relies on when
        # present (read in 7.2; absent from 6.12) [R: the release]
        return self.at_least(6, 14)

    @property
    def clears_relocations(self) -> bool:
        # v6.3: clear_relocate_add() on target unload (x86_64), so a late-patched
        # module can be unloaded and loaded again while the livepatch stays.
        return self.at_least(6, 3)

    def not_marked_message(self, symbol: str, symndx: int, idx: int) -> str:
        # v6.19 (klp-build series) added the section and entry; the %u printed as
        # "rela sec" is the symbol table's index (symndx), not the rela section's.
        if self.at_least(6, 19):
            where = f"at rela sec {symndx} idx {idx}"
            return f"symbol {symbol} {where} is not marked as a livepatch symbol"
        return f"symbol {symbol} is not marked as a livepatch symbol"


#: The oldest release klpelf models: v4.5 replaced klp_func.old_addr with old_sympos,
#: the ``,sympos`` that every livepatch symbol name carries.
OLDEST_MODELLED = KernelRelease(4, 5)
#: The newest release klpelf models: the newest of the real-kernel matrix
#: (tests/kernel, Debian's 7.2), whose behaviour the harness checks.
NEWEST_MODELLED = KernelRelease(7, 2)

#: The release assumed when neither --kernel-release nor a vermagic says one: the
#: newest modelled, so that a module without a vermagic is judged by today's rules.
DEFAULT_VERSION = NEWEST_MODELLED


def modelled(release: KernelRelease) -> bool:
    """Whether klpelf knows the rules of ``release``."""
    return OLDEST_MODELLED <= release <= NEWEST_MODELLED
