"""Who exports a symbol in the target kernel: the module loader's ``find_symbol()``.

``simplify_symbols()`` (kernel/module/main.c; kernel/module.c before v5.19) resolves
every ordinary undefined symbol of a module through ``resolve_symbol()`` ->
``find_symbol()``: vmlinux's export table first, then the export table of every loaded
module (not one still UNFORMED).  What the sources tell of those tables:

* ``Module.symvers``: the exporting object, the CRC (modversions), EXPORT_SYMBOL_GPL,
  the namespace;
* a ``/proc/kallsyms`` dump: EXPORT_SYMBOL puts a ``__ksymtab_<name>`` label on the
  entry of the export table (include/linux/export.h in 5.10 and 6.1,
  export-internal.h in 6.12 and 7.2), a local symbol that kallsyms lists for vmlinux
  and ``[module]``; which modules are loaded;
* a vmlinux ELF, module files and module trees: the same ``__ksymtab_<name>`` symbol
  in their symbol tables.

An export of a module only resolves while that module is loaded: a kallsyms dump says
whether it is, the other sources do not (``loaded`` None).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, NamedTuple

from klpelf.errors import KlpError

if TYPE_CHECKING:
    from klpelf.symbols.sources import KernelSymbols

KSYMTAB_PREFIX = "__ksymtab_"
#: a symbol every kernel exports (mm/slab_common.c, mm/slub.c: EXPORT_SYMBOL(kfree)):
#: a source without its __ksymtab_ entry does not list the export table
_PROBE = "kfree"


class KernelExport(NamedTuple):
    """One symbol of the target kernel's export tables."""

    name: str
    #: ``vmlinux`` or the exporting module
    owner: str
    #: the symbol's CRC (CONFIG_MODVERSIONS), None when no source says it
    crc: int | None = None
    #: EXPORT_SYMBOL_GPL; None when no source says
    gpl_only: bool | None = None
    #: EXPORT_SYMBOL_NS namespace ('' none); None when no source says
    namespace: str | None = None
    #: the owner module is loaded (kallsyms lists it); None: no source says
    loaded: bool | None = None


def ksymtab_names(names: list[str]) -> list[str]:
    """The ``__ksymtab_`` labels :func:`find_symbol` looks up for ``names``, for one
    :meth:`KernelSymbols.prefetch` (a large kallsyms is read once for all)."""
    return [KSYMTAB_PREFIX + n for n in (*names, _PROBE)]


def lists_vmlinux_exports(ks: KernelSymbols) -> bool:
    """Whether the sources list vmlinux's export table: Module.symvers names vmlinux
    exports, or a kallsyms / System.map / vmlinux ELF has ``__ksymtab_kfree``."""
    if any(e.objname == "vmlinux" for e in ks.exports.values()):
        return True
    return _vmlinux_ksymtab(ks, _PROBE)


def _vmlinux_ksymtab(ks: KernelSymbols, name: str) -> bool:
    label = KSYMTAB_PREFIX + name
    for text in ks.texts:
        if any(e.module is None for e in text.matches(label)):
            return True
    return ks.vmlinux_elf is not None and bool(ks.vmlinux_elf.index.rows(label.encode()))


def find_symbol(ks: KernelSymbols, name: str, depends: tuple[str, ...] = ()) -> KernelExport | None:
    """The export of ``name`` that ``find_symbol()`` would find, or None.

    vmlinux first, then modules: one that kallsyms lists as loaded, else Module.symvers'
    owner, else a module file given by path or a module of a tree named in ``depends``
    (the livepatch's ``depends=``: modprobe loads those first) that exports it.  The
    other modules of a tree are not read: Module.symvers (``build/Module.symvers``,
    read with the tree) lists the exports of every module built with the kernel.
    """
    sv = ks.exports.get(name)
    crc = sv.crc if sv is not None else None
    gpl = sv.export_type.endswith("_GPL") if sv is not None else None
    ns = sv.namespace if sv is not None else None
    if (sv is not None and sv.objname == "vmlinux") or _vmlinux_ksymtab(ks, name):
        if sv is not None and sv.objname != "vmlinux":
            crc = gpl = ns = None  # Module.symvers speaks of another export
        return KernelExport(name, "vmlinux", crc, gpl, ns, True)
    label = KSYMTAB_PREFIX + name
    for text in ks.texts:
        for e in text.matches(label):
            if e.module is not None:
                same = sv is not None and sv.objname == e.module
                return KernelExport(name, e.module, crc if same else None,
                                    gpl if same else None, ns if same else None,
                                    True)  # fmt: skip
    owner = sv.objname if sv is not None else _module_exporting(ks, label, depends)
    if owner is None:
        return None
    # asked of the owner alone: listing every loaded module would index a whole kallsyms
    is_loaded = (ks.loaded_module(owner) is not None
                 if any(t.kind == "kallsyms" for t in ks.texts) else None)  # fmt: skip
    if sv is None or sv.objname != owner:
        crc = gpl = ns = None
    return KernelExport(name, owner, crc, gpl, ns, is_loaded)


def _module_exporting(ks: KernelSymbols, label: str, depends: tuple[str, ...]) -> str | None:
    # a module file given by path, then the depends= modules of a module tree
    for mod in ks.modules.values():
        if mod.matches(label):
            return mod.name
    for dep in depends:
        for tree in ks.trees:
            with contextlib.suppress(KlpError):
                found = tree.load(dep)
                if found is not None and found.matches(label):
                    return found.name
    return None


def modversions(ks: KernelSymbols) -> bool | None:
    """Whether the target kernel has CONFIG_MODVERSIONS: its vermagic says
    ``modversions`` (MODULE_VERMAGIC_MODVERSIONS), else Module.symvers has nonzero
    CRCs; None when no source tells."""
    magic = ks.vermagic
    if magic is not None:
        return "modversions" in magic.split()
    if ks.exports:
        return any(e.crc for e in ks.exports.values())
    return None
