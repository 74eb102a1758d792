"""Kernel symbol sources, detected by content, combined into one :class:`KernelSymbols`.

A source is any of:

* a ``/proc/kallsyms`` dump: vmlinux lines and ``[module]`` lines (addresses zeroed by
  ``kptr_restrict`` are fine: the line order is then the kernel's order);
* a ``System.map``;
* a vmlinux ELF file (its ``.symtab``; STT_FILE symbols give source-file hints);
* a module file, ``.ko`` or compressed (``.ko.xz``, ``.ko.zst``, ``.ko.gz``);
* a module tree such as ``/lib/modules/<release>``;
* a ``Module.symvers`` (who exports what);
* ``/sys/kernel/tracing/available_filter_functions`` (or ``..._addrs``): which
  functions have an ftrace location (:mod:`klpelf.symbols.ftrace`).

The kind is read from the content, never from the name; ``KIND:PATH`` (``kallsyms:``,
``system.map:``, ``vmlinux:``, ``module:``, ``modules:``, ``symvers:``, ``ftrace:``) forces it.
Which source answers for an object: for vmlinux, kallsyms, else System.map, else the
vmlinux ELF (which still adds source files and sections to the others' answers); for
a module, a kallsyms dump that lists it (it is loaded), else a module file given by
path, else a module tree.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from klpelf.elf.constants import ET
from klpelf.elf.reader import read_elf
from klpelf.errors import InputError, KlpError, SymbolSourceError
from klpelf.io import Buffer, read_input
from klpelf.symbols.candidate import Candidate
from klpelf.symbols.ftrace import FilterFunctions, looks_like_filter_functions
from klpelf.symbols.modtree import ModuleTree, is_module_tree, normalize
from klpelf.symbols.symtext import (
    PSEUDO_MODULES,
    ScannedSymbolText,
    SymbolTextKind,
    is_ignored_symbol,
    open_symbol_text,
)
from klpelf.symbols.symvers import Export, looks_like_symvers, parse_symvers

if TYPE_CHECKING:
    from klpelf.symbols.elfsyms import ModuleFile, VmlinuxElf
    from klpelf.symbols.kallsyms import SymbolText

    Text = SymbolText | ScannedSymbolText

__all__ = ["KernelSymbols", "load_sources"]

_FORCED = {
    "kallsyms": "kallsyms", "system.map": "System.map", "vmlinux": "vmlinux",
    "module": "module", "modules": "modules", "symvers": "symvers", "ftrace": "ftrace",
}  # fmt: skip

_NOT_A_SOURCE = (
    "not a kernel symbol source (expected /proc/kallsyms, System.map, Module.symvers, "
    "available_filter_functions, a vmlinux or module ELF file, or a module directory)"
)


# Debian's linux-image packages ship /boot/System.map-<release> as this one line; the
# real map is in linux-image-<release>-dbg (/usr/lib/debug/boot/System.map-<release>).
_DEBIAN_PLACEHOLDER = b"The real System.map is in the linux-image-"


def _placeholder_message(path: str) -> str:
    base = os.path.basename(path)
    release = base.removeprefix("System.map-") if base.startswith("System.map-") else "RELEASE"
    return (f"Debian's placeholder System.map, with no symbols: the real one is in package "
            f"linux-image-{release}-dbg (/usr/lib/debug/boot/System.map-{release}); on the "
            "running kernel /proc/kallsyms (as root) has them too")  # fmt: skip


class KernelSymbols:
    """The symbols of one kernel: vmlinux and modules, from one or more sources.

    Build it with :func:`load_sources` or :meth:`running`.
    """

    def __init__(self, *, kallsyms_all: bool = True) -> None:
        #: CONFIG_KALLSYMS_ALL (LIVEPATCH selects it): without it, module kallsyms keep text only
        self.kallsyms_all = kallsyms_all
        self.texts: list[Text] = []
        self.vmlinux_elf: VmlinuxElf | None = None
        self.modules: dict[str, ModuleFile] = {}
        self.trees: list[ModuleTree] = []
        self.exports: dict[str, Export] = {}
        #: the target's available_filter_functions, when given
        self.ftrace: FilterFunctions | None = None
        #: the kernel running here, with no source named by the user
        self.is_running = False
        self._release: str | None = None
        self._parts: list[str] = []
        self._vmlinux_of: tuple[int, Text | None] | None = None

    # --- what was loaded --------------------------------------------------------------

    @property
    def description(self) -> str:
        """What the sources are, in one line."""
        what = "; ".join(self._parts) or "no sources"
        if self.is_running:
            return f"running kernel {self.release}: {what}"
        return what

    @property
    def release(self) -> str | None:
        """The kernel release, when a source says it: the running kernel, the vmlinux
        banner, a module tree's or a module's vermagic."""
        if self._release:
            return self._release
        if self.vmlinux_elf is not None and self.vmlinux_elf.release:
            return self.vmlinux_elf.release
        for tree in self.trees:
            rel = tree.release()
            if rel:
                return rel
        for mod in self.modules.values():
            if mod.release:
                return mod.release
        return None

    @property
    def vermagic(self) -> str | None:
        """The target kernel's vermagic (VERMAGIC_STRING, what check_modinfo() compares
        a module's with), when a source has it: a module of a module tree, else a
        module given by path."""
        for tree in self.trees:
            magic = tree.vermagic()
            if magic:
                return magic
        for mod in self.modules.values():
            if mod.vermagic:
                return mod.vermagic
        return None

    @property
    def zeroed(self) -> bool:
        """vmlinux addresses come from a kallsyms dump whose addresses are all zero."""
        text = self._vmlinux_text()
        return text is not None and text.zeroed

    def _vmlinux_text(self) -> Text | None:
        # asked at every vmlinux lookup: kept until a source is added
        if self._vmlinux_of is not None and self._vmlinux_of[0] == len(self.texts):
            return self._vmlinux_of[1]
        texts = [t for t in self.texts if t.has_vmlinux]
        found = next((t for kind in ("kallsyms", "System.map") for t in texts if t.kind == kind),
                     None)  # fmt: skip
        self._vmlinux_of = (len(self.texts), found)
        return found

    def has_vmlinux(self) -> bool:
        return self._vmlinux_text() is not None or self.vmlinux_elf is not None

    def loaded_module(self, objname: str) -> Text | None:
        """The kallsyms dump that lists module ``objname`` (exact name, as the kernel
        compares ``mod->name``), or None."""
        if objname in PSEUDO_MODULES:
            return None
        for t in self.texts:
            if t.kind == "kallsyms" and t.has_module(objname):
                return t
        return None

    def module_file(self, objname: str) -> ModuleFile | None:
        """The module file for ``objname``: one given by path, else from a module tree
        ('-' and '_' alike, as modprobe finds it)."""
        key = normalize(objname)
        for name, mod in self.modules.items():
            if normalize(name) == key:
                return mod
        for tree in self.trees:
            found = tree.load(objname)
            if found is not None:
                return found
        return None

    def is_builtin(self, objname: str) -> bool:
        """``modules.builtin`` of a module tree lists ``objname``: it is part of vmlinux."""
        return any(tree.is_builtin(objname) for tree in self.trees)

    def has_object(self, objname: str) -> bool:
        """Whether the sources know object ``objname``: vmlinux, or a module."""
        if objname == "vmlinux":
            return self.has_vmlinux()
        if self.loaded_module(objname) is not None:
            return True
        key = normalize(objname)
        if any(normalize(n) == key for n in self.modules):
            return True
        return any(tree.find(objname) is not None for tree in self.trees)

    # --- candidates -------------------------------------------------------------------

    def modules_defining(self, name: str) -> list[tuple[str, list[Candidate]]]:
        """The modules (given by path, or in a module tree) whose kallsyms would have a
        symbol ``name``, with its candidates: for a name that is in no export table and
        not in vmlinux, so local to a module.  Reads only the files whose bytes hold
        the name."""
        found: list[tuple[str, list[Candidate]]] = []
        seen: set[str] = set()
        for mod in self.modules.values():
            seen.add(normalize(mod.name))
            cands = [c for c in mod.matches(name) if c.position is not None]
            if cands:
                found.append((mod.name, cands))
        needle = name.encode("utf-8", "surrogateescape") + b"\0"
        for tree in self.trees:
            for key in tree.containing(needle):
                if key in seen:
                    continue
                seen.add(key)
                with contextlib.suppress(KlpError):
                    in_tree = tree.load(key)
                    if in_tree is not None:
                        cands = [c for c in in_tree.matches(name) if c.position is not None]
                        if cands:
                            found.append((in_tree.name, cands))
        return found

    def prefetch(self, names: Iterable[str]) -> None:
        """Look many names up at once (one vectorised search per kallsyms/System.map)."""
        wanted = list(names)
        for text in self.texts:
            text.prefetch(wanted)

    def vmlinux_matches(self, name: str) -> list[Candidate]:
        """The vmlinux kallsyms entries named ``name``, in the kernel's walk order."""
        text = self._vmlinux_text()
        if text is None:
            return self.vmlinux_elf.matches(name) if self.vmlinux_elf is not None else []
        found = _text_matches(text, name, None)
        if self.vmlinux_elf is not None:
            found = _with_hints(found, self.vmlinux_elf.matches(name))
        return found

    def vmlinux_lone_values(self, names: Sequence[str]) -> list[int | bool | None] | None:
        """Per name, for a parsed kallsyms or System.map with one line of the name:
        the one candidate's address (:meth:`vmlinux_matches` gives that one
        candidate), None when it has no address (0, or zeroed) or no candidate
        (no line, a module's line, a System.map line kallsyms leaves out); True when
        the name has several lines (ask :meth:`vmlinux_matches`).  None for other
        sources.  Every name in one pass (:meth:`SymbolText.lone_rows`), no
        :class:`Candidate` made."""
        text = self._vmlinux_text()
        if text is None or isinstance(text, ScannedSymbolText) or self.vmlinux_elf is not None:
            return None
        import numpy as np

        rows = text.lone_rows(names)
        lone = [r for r in rows if r >= 0]
        at = np.array(lone, dtype=np.intp)
        fields = iter(zip(text.address[at].tolist(), text.module[at].tolist(),
                          text.type[at].tolist(), strict=True))  # fmt: skip
        zeroed, system_map = text.zeroed, text.kind == "System.map"
        out: list[int | bool | None] = []
        for name, row in zip(names, rows, strict=True):
            if row < 0:
                out.append(True if row == -2 else None)
                continue
            address, module, type_ = next(fields)
            ignored = system_map and is_ignored_symbol(name, chr(type_))
            out.append(None if module != -1 or zeroed or not address or ignored else address)
        return out

    def loaded_module_matches(self, text: Text, objname: str, name: str) -> list[Candidate]:
        """The kallsyms lines of loaded module ``objname`` named ``name``, in its symtab order."""
        found = _text_matches(text, name, objname)
        mod = None
        with contextlib.suppress(KlpError):
            mod = self.module_file(objname)
        if mod is not None:
            found = _with_hints(found, [c for c in mod.matches(name) if c.position is not None])
        return found

    # --- constructors -----------------------------------------------------------------

    @classmethod
    def running(
        cls,
        *,
        kallsyms: str = "/proc/kallsyms",
        modules: str = "/lib/modules",
        kallsyms_all: bool = True,
    ) -> KernelSymbols:
        """The running kernel: ``/proc/kallsyms`` and ``/lib/modules/$(uname -r)``."""
        release = os.uname().release
        tree = os.path.join(modules, release)
        paths = [kallsyms] + ([tree] if os.path.isdir(tree) else [])
        ks = load_sources(paths, kallsyms_all=kallsyms_all)
        ks.is_running = True
        ks._release = release
        if not os.path.isdir(tree):
            ks._parts.append(f"no module tree {tree}")
        return ks

    def _add(self, spec: str) -> None:
        kind, path = _split_kind(spec)
        if kind in ("modules", None) and os.path.isdir(path):
            if kind is None and not is_module_tree(path):
                raise SymbolSourceError("directory has no modules.dep, modules.order or "
                                        "module files", path=path)  # fmt: skip
            tree = ModuleTree(path, kallsyms_all=self.kallsyms_all)
            self.trees.append(tree)
            how = f" ({tree.index_file})" if tree.index_file else ""
            self._parts.append(f"{path}: module tree, {len(tree)} modules{how}")
            return
        data = _read(path)
        if kind in ("vmlinux", "module") or (kind is None and data[:4] == b"\x7fELF"):
            self._add_elf(path, data, kind)
        elif kind == "symvers" or (kind is None and looks_like_symvers(bytes(data[:4096]))):
            exports = parse_symvers(bytes(data).decode("utf-8", "surrogateescape"), path)
            for name, e in exports.items():
                self.exports.setdefault(name, e)
            self._parts.append(f"{path}: Module.symvers, {len(exports)} exports")
        elif kind == "ftrace" or (kind is None and looks_like_filter_functions(bytes(data[:4096]))):
            ff = FilterFunctions(data, path)
            if self.ftrace is None:
                self.ftrace = ff
            self._parts.append(f"{path}: available_filter_functions, {len(ff)} functions")
        elif kind in ("kallsyms", "System.map", None):
            self._add_text(path, data, kind)  # type: ignore[arg-type]
        else:
            raise SymbolSourceError(f"a {kind} source must be a directory", path=path)

    def _add_elf(self, path: str, data: Buffer, kind: str | None) -> None:
        from klpelf.symbols.elfsyms import ModuleFile, VmlinuxElf

        elf = read_elf(data, path=path)
        if kind == "module" or (kind is None and elf.header.e_type == ET.REL):
            mod = ModuleFile(elf, kallsyms_all=self.kallsyms_all)
            self.modules.setdefault(mod.name, mod)
            self._parts.append(f"{path}: module {mod.name}")
        elif kind == "vmlinux" or elf.header.e_type in (ET.EXEC, ET.DYN):
            vm = VmlinuxElf(elf)
            if self.vmlinux_elf is None:
                self.vmlinux_elf = vm
            rel = f" {vm.release}" if vm.release else ""
            self._parts.append(f"{path}: vmlinux{rel}, {len(vm)} symbols")
        else:
            raise SymbolSourceError(f"ELF type {elf.header.e_type} is neither a module "
                                    "(ET_REL) nor a vmlinux (ET_EXEC)", path=path)  # fmt: skip

    def _add_text(self, path: str, data: Buffer, kind: SymbolTextKind | None) -> None:
        if len(data) < 4096 and _DEBIAN_PLACEHOLDER in bytes(data):
            raise SymbolSourceError(_placeholder_message(path), path=path)
        try:
            text = open_symbol_text(data, path, kind=kind)
        except SymbolSourceError as e:
            if kind is None and e.lineno == 1:
                raise SymbolSourceError(_NOT_A_SOURCE, path=path) from None
            raise
        self.texts.append(text)
        if isinstance(text, ScannedSymbolText):
            # counting lines would cost as much as the lookups
            info = f"{path}: {text.kind}, {len(data) / (1 << 20):.1f} MiB, read by name"
        else:
            info = f"{path}: {text.kind}, {text.vmlinux_count} vmlinux symbols"
            if text.kind == "kallsyms":
                mods = [m for m in text.modules if m not in PSEUDO_MODULES]
                info += f", {len(mods)} modules"
        if text.zeroed:
            info += " (addresses hidden: kptr_restrict; ranked by line order)"
        self._parts.append(info)


def load_sources(paths: Sequence[str], *, kallsyms_all: bool = True) -> KernelSymbols:
    """Read every source in ``paths`` (kind detected by content) into one KernelSymbols.

    :param kallsyms_all: CONFIG_KALLSYMS_ALL of the target kernel (module kallsyms keep
        only text symbols without it); every livepatch-capable kernel has it.
    :raises SymbolSourceError: malformed input (naming the file and line), or a path
        that is no known source.
    :raises InputError: a path that cannot be read.
    :raises ElfError: a malformed ELF file.
    """
    ks = KernelSymbols(kallsyms_all=kallsyms_all)
    for spec in paths:
        ks._add(spec)
    if not ks.exports:
        # /lib/modules/<release>/build is the headers' tree, with the kernel's Module.symvers
        for tree in ks.trees:
            symvers = os.path.join(tree.root, "build", "Module.symvers")
            if os.path.isfile(symvers):
                ks._add(f"symvers:{symvers}")
                break
    return ks


def _split_kind(spec: str) -> tuple[str | None, str]:
    kind, sep, rest = spec.partition(":")
    if sep and kind.lower() in _FORCED and not os.path.exists(spec):
        return _FORCED[kind.lower()], rest
    return None, spec


def _read(path: str) -> Buffer:
    data = read_input(path)
    if not len(data):
        # /proc files report size 0 and cannot be mapped: read them
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise InputError(e.strerror or str(e), path=path) from e
    if not len(data):
        raise SymbolSourceError("empty file", path=path)
    return data


def _text_matches(text: Text, name: str, module: str | None) -> list[Candidate]:
    # Lines named `name` of vmlinux (module None) or of one module, in the kernel's order.
    keep = [e for e in text.matches(name) if e.module == module]
    if module is not None:
        # module lines are the module's symtab order; the walk skips SHN_UNDEF
        keep = [e for e in keep if e.type not in "Uu"]
    elif text.kind == "System.map":
        keep = [e for e in keep if not is_ignored_symbol(name, e.type)]
        # compare_symbols(): address, non-weak first, then input order
        keep.sort(key=lambda e: (e.address, e.type in "wWvV", e.order))
    elif len(keep) > 1 and not text.zeroed:  # (one line: nothing to order; most names)
        keep.sort(key=lambda e: (e.address, e.order))
    if text.zeroed:
        return [Candidate(pos, None, e.type, None, None, None, pos)
                for pos, e in enumerate(keep, 1)]  # fmt: skip
    return [Candidate(pos, e.address, e.type, None, None, None, pos)
            for pos, e in enumerate(keep, 1)]  # fmt: skip


def _with_hints(found: list[Candidate], hints: list[Candidate]) -> list[Candidate]:
    # Sections and source files from an ELF source, matched by rank, when both
    # sources list the same number of entries (the same build, then).
    if len(found) != len(hints):
        return found
    return [
        Candidate(c.position, c.address, c.type, h.section, h.source_file, h.offset,
                  c.coming_position)
        for c, h in zip(found, hints, strict=True)
    ]  # fmt: skip
