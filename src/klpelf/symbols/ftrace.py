"""Which functions have an ftrace location: what ``klp_patch_func()`` needs of every
replaced function (kernel/livepatch/patch.c).

Three sources can tell:

* the target's ``/sys/kernel/tracing/available_filter_functions`` (one ``name`` or
  ``name [module]`` line per ftrace record, named by kallsyms;
  kernel/trace/ftrace.c ``t_show()``) or ``available_filter_functions_addrs`` (v6.5+:
  ``address name [module]``): :class:`FilterFunctions`;
* a module file's ``__mcount_loc`` (x86 ``-mrecord-mcount``, s390, ppc64) or
  ``__patchable_function_entries`` (arm64, loongarch ``-fpatchable-function-entry``):
  one relocation per call site, :func:`module_call_sites`;
* a vmlinux ELF's ``__mcount_loc`` (the addresses themselves, between
  ``__start_mcount_loc`` and ``__stop_mcount_loc``): :func:`vmlinux_call_sites`.

Each answers True (the function has a location), False (it has none) or None (this
source cannot tell), and never guesses: a name listed fewer times than kallsyms has
functions of that name leaves the question open unless addresses settle it.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from typing import TYPE_CHECKING

from klpelf.elf.constants import SHN, SHT
from klpelf.errors import SymbolSourceError
from klpelf.io import Buffer

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile
    from klpelf.symbols.candidate import Candidate
    from klpelf.symbols.elfsyms import ModuleFile, VmlinuxElf

__all__ = [
    "MCOUNT_SECTIONS",
    "FilterFunctions",
    "looks_like_filter_functions",
    "module_call_sites",
    "vmlinux_call_sites",
]

#: the sections that list a module's call sites, as kernel/module/main.c
#: find_module_sections() reads them (FTRACE_CALLSITE_SECTION, include/linux/ftrace.h)
MCOUNT_SECTIONS = ("__mcount_loc", "__patchable_function_entries")

# ftrace_process_locs() of v6.x names the records it could not place this way
_INVALID = b"__ftrace_invalid_address__"

#: what a symbol name in the file looks like (C identifiers, compiler suffixes)
_NAME = re.compile(rb"[\w.$@]+")

#: kallsyms letters of functions: only text has ftrace records
_TEXT_TYPES = frozenset("tTwW")


def _is_hex(word: bytes) -> bool:
    return bool(word) and all(c in b"0123456789abcdefABCDEF" for c in word)


def _split(line: bytes) -> tuple[int | None, bytes, str | None] | None:
    # (address or None, name, module or None); None: not a line of either file
    words = line.split()
    address = None
    if len(words) >= 2 and _is_hex(words[0]) and not words[1].startswith(b"["):
        if len(words[1]) == 1 and len(words) >= 3:
            return None  # "ADDRESS TYPE NAME": kallsyms or System.map
        address = int(words[0], 16)
        words = words[1:]
    if len(words) == 1:
        return address, words[0], None
    if len(words) == 2 and words[1].startswith(b"[") and words[1].endswith(b"]"):
        return address, words[0], words[1][1:-1].decode("utf-8", "surrogateescape")
    return None


def looks_like_filter_functions(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) is an ``available_filter_functions``
    or ``available_filter_functions_addrs`` listing: its first lines are ``name``,
    ``name [module]``, or those after an address (never ``ADDRESS TYPE NAME``)."""
    lines = [ln for ln in head.split(b"\n")[:8] if ln.strip()]
    if len(head) >= 4096 and len(lines) > 1:
        lines = lines[:-1]  # the last may be cut
    if not lines or len(lines[0]) > 1024:
        return False
    splits = [_split(ln) for ln in lines]
    return all(p is not None and _NAME.fullmatch(p[1]) for p in splits)


class FilterFunctions:
    """The target kernel's ftrace records, from ``available_filter_functions`` or
    ``available_filter_functions_addrs``, counted per (module, name)."""

    def __init__(self, data: Buffer, path: str) -> None:
        self.path = path
        #: (module or None for vmlinux, name) -> how many records carry that name
        self.counts: dict[tuple[str | None, str], int] = {}
        #: the records' addresses (the _addrs form only; empty otherwise)
        self.addresses: set[int] = set()
        #: the modules with at least one line (loaded when the file was read)
        self.modules: set[str] = set()
        counts = self.counts
        lines = bytes(data).split(b"\n")
        # most lines are a bare vmlinux name: counted in one pass, decoded once each
        bare = Counter(ln for ln in lines if ln and b" " not in ln and b"\t" not in ln)
        for raw_name, n in bare.items():
            if not raw_name.startswith(_INVALID):
                counts[(None, raw_name.decode("utf-8", "surrogateescape"))] = n
        for lineno, line in enumerate(lines, 1):
            if not line.strip() or line in bare:
                continue
            got = _split(line)
            if got is None:
                raise SymbolSourceError("expected 'NAME', 'NAME [MODULE]' or 'ADDRESS NAME "
                                        "[MODULE]' (available_filter_functions)", path=path,
                                        lineno=lineno)  # fmt: skip
            address, raw, module = got
            if address is not None and address:
                self.addresses.add(address)
            if raw.startswith(_INVALID):
                continue
            if module is not None:
                self.modules.add(module)
            key = (module, raw.decode("utf-8", "surrogateescape"))
            counts[key] = counts.get(key, 0) + 1

    def __len__(self) -> int:
        return sum(self.counts.values())

    def lists(self, objname: str) -> bool:
        """Whether the file speaks for ``objname``: vmlinux always, a module when it
        was loaded as the file was read (it has lines)."""
        return objname == "vmlinux" or objname in self.modules

    def traced(self, objname: str, name: str, chosen: Candidate,
               candidates: list[Candidate]) -> bool | None:  # fmt: skip
        """Whether the ``chosen`` one of the same-named ``candidates`` of ``objname``
        (kallsyms entries, in the kernel's walk order) has an ftrace record: False when
        no record has the name or the candidate is not text, True when every text
        candidate has one; otherwise the record addresses decide, when both sides have
        them; else None."""
        if not self.lists(objname):
            return None
        count = self.counts.get((None if objname == "vmlinux" else objname, name), 0)
        if chosen.type and chosen.type not in _TEXT_TYPES and chosen.type != "?":
            return False
        if count == 0:
            return False
        functions = sum(1 for c in candidates if c.type in _TEXT_TYPES)
        if count >= functions > 0:
            return True
        if self.addresses and chosen.address:
            # the record is at the function's start, or after its endbr64/BTI
            return any(chosen.address + d in self.addresses for d in range(0, 17, 4))
        return None


def _in_range(sites: list[int], start: int, size: int, *, exact: bool) -> bool:
    if exact or size <= 0:
        i = bisect.bisect_left(sites, start)
        return i < len(sites) and sites[i] == start
    i = bisect.bisect_left(sites, start)
    return i < len(sites) and sites[i] < start + size


def module_call_sites(elf: ElfFile) -> dict[int, list[int]] | None:
    """The call sites a module's ``__mcount_loc`` / ``__patchable_function_entries``
    name: section index -> sorted offsets; None when the module has neither section
    (built without them: the file cannot tell)."""
    from klpelf.elf.pointers import location, pointers_in

    secs = [s for s in elf.sections if s.name in MCOUNT_SECTIONS]
    if not secs:
        return None
    out: dict[int, list[int]] = {}
    for sec in secs:
        for p in pointers_in(elf, sec).values():
            loc = location(elf, p)
            if loc is not None:
                out.setdefault(loc.section.index, []).append(loc.offset)
    for sites in out.values():
        sites.sort()
    return out


def module_traced(mod: ModuleFile, chosen: Candidate, *, exact: bool) -> bool | None:
    """Whether module function ``chosen`` (a candidate from ``mod.matches()``) has a
    call site in ``mod``'s call-site sections: at its start (``exact``, before
    ftrace_location() searched the function: v5.18) or anywhere inside it; None when
    the module cannot tell."""
    if chosen.section is None or chosen.offset is None:
        return None
    sites = module_call_sites(mod.elf)
    if sites is None:
        return None
    sec = mod.elf.section_by_name(chosen.section)
    if sec is None:
        return None
    size = 0
    for sym in mod.tab:
        if sym.shndx == sec.index and sym.st_value == chosen.offset and sym.st_size:
            size = sym.st_size
            break
    return _in_range(sites.get(sec.index, []), chosen.offset, size, exact=exact)


def vmlinux_call_sites(vm: VmlinuxElf) -> list[int] | None:
    """The addresses of a vmlinux ELF's ``__mcount_loc`` (sorted), None when it has
    none or only zeros (a vmlinux whose table the build left to relocations)."""
    elf = vm.elf
    sec = elf.section_by_name("__mcount_loc")
    if sec is None or sec.sh_type == SHT.NOBITS or not sec.data:
        return None
    w = 8 if elf.is64 else 4
    data = bytes(sec.data)
    sites = sorted(
        v for v in (int.from_bytes(data[i : i + w], elf.byteorder)  # type: ignore[arg-type]
                    for i in range(0, len(data) - w + 1, w)) if v
    )  # fmt: skip
    return sites or None


def vmlinux_traced(vm: VmlinuxElf, name: str, chosen: Candidate, *, exact: bool) -> bool | None:
    """Whether vmlinux function ``chosen`` (its address from ``vm``) has a call site in
    the vmlinux's ``__mcount_loc``; None when the file cannot tell."""
    if chosen.address is None:
        return None
    sites = vmlinux_call_sites(vm)
    if sites is None:
        return None
    size = 0
    for row in vm.index.rows(name.encode("utf-8", "surrogateescape")):
        sym = vm.tab[int(vm.rows[row])]
        if sym.st_value == chosen.address and sym.st_shndx != SHN.UNDEF and sym.st_size:
            size = sym.st_size
            break
    return _in_range(sites, chosen.address, size, exact=exact)
