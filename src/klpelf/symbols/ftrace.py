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
from collections.abc import Iterable
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

_LINE_FORMAT = ("expected 'NAME', 'NAME [MODULE]' or 'ADDRESS NAME [MODULE]' "
                "(available_filter_functions)")

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
    ``available_filter_functions_addrs``, counted per (module, name).

    A real file lists 40,000-70,000 records and a livepatch asks about a few names:
    they are counted together in one pass over the lines (:meth:`prefetch`).  The
    first and last lines are checked when the file is opened, and every line a lookup
    returns (as the kallsyms reader does, :mod:`klpelf.symbols.symtext`).
    """

    def __init__(self, data: Buffer, path: str) -> None:
        self.path = path
        self._data = bytes(data)
        #: (module or None for vmlinux, name) -> how many records carry that name
        self._counts: dict[tuple[str | None, str], int] = {}
        #: (module, name) -> the addresses of its records (the _addrs form only)
        self._addresses: dict[tuple[str | None, str], set[int]] = {}
        self._fetched: set[str] = set()
        self._lines: list[bytes] | None = None
        self._modules: dict[str, bool] = {}
        lines = self._data.split(b"\n", 1)[:1] + self._data.rstrip(b"\n").rsplit(b"\n", 1)[-1:]
        for lineno, line in ((1, lines[0]), (0, lines[-1])):
            if line.strip() and (_split(line) is None or len(line) > 4096):
                at = lineno or self._data.rstrip(b"\n").count(b"\n") + 1
                raise SymbolSourceError(_LINE_FORMAT, path=path, lineno=at)

    def __len__(self) -> int:
        data = self._data
        return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)

    def prefetch(self, names: Iterable[str]) -> None:
        """Count the records of every name in ``names``, in one pass over the lines."""
        wanted = {n.encode("utf-8", "surrogateescape"): n
                  for n in names if n and n not in self._fetched}  # fmt: skip
        if not wanted:
            return
        self._fetched.update(wanted.values())
        if self._lines is None:
            self._lines = self._data.split(b"\n")
        counts, addresses = self._counts, self._addresses
        for line in self._lines:
            if line in wanted:  # a bare vmlinux name: most lines
                key: tuple[str | None, str] = (None, wanted[line])
                counts[key] = counts.get(key, 0) + 1
                continue
            if b" " not in line and b"\t" not in line:
                continue
            words = line.split()
            addressed = len(words) > 1 and _is_hex(words[0]) and not words[1].startswith(b"[")
            name = words[1] if addressed else words[0]
            if name not in wanted:
                continue
            got = _split(line)
            if got is None:
                continue  # not a record line (only the ends are checked)
            address, _, mod = got
            key = (mod, wanted[name])
            counts[key] = counts.get(key, 0) + 1
            if address is not None:
                addresses.setdefault(key, set()).add(address)

    def count(self, module: str | None, name: str) -> int:
        """How many records of ``module`` (None: vmlinux) are named ``name``."""
        self.prefetch([name])
        return self._counts.get((module, name), 0)

    def lists(self, objname: str) -> bool:
        """Whether the file speaks for ``objname``: vmlinux always, a module when it
        was loaded as the file was read (it has lines)."""
        if objname == "vmlinux":
            return True
        got = self._modules.get(objname)
        if got is None:
            tag = b"[" + objname.encode("utf-8", "surrogateescape") + b"]"
            got = self._modules[objname] = re.search(
                rb"[ \t]" + re.escape(tag) + rb"[ \t]*$", self._data, re.M) is not None  # fmt: skip
        return got

    def traced(self, objname: str, name: str, chosen: Candidate,
               candidates: list[Candidate]) -> bool | None:  # fmt: skip
        """Whether the ``chosen`` one of the same-named ``candidates`` of ``objname``
        (kallsyms entries, in the kernel's walk order) has an ftrace record: False when
        no record has the name or the candidate is not text, True when every text
        candidate has one; otherwise the record addresses decide, when both sides have
        them; else None."""
        if not self.lists(objname):
            return None
        module = None if objname == "vmlinux" else objname
        count = self.count(module, name)
        if chosen.type and chosen.type not in _TEXT_TYPES and chosen.type != "?":
            return False
        if count == 0:
            return False
        functions = sum(1 for c in candidates if c.type in _TEXT_TYPES)
        if count >= functions > 0:
            return True
        addresses = self._addresses.get((module, name))
        if addresses and chosen.address:
            # the record is at the function's start, or after its endbr64/BTI
            return any(chosen.address + d in addresses for d in range(0, 17, 4))
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
