"""Automatic mode of ``klpelf convert``: decide which undefined symbols become livepatch symbols.

Given the target kernel's symbols and Module.symvers, an undefined symbol that a
relocation in an allocated section uses becomes ``.klp.sym.<obj>.<name>,<sympos>``
when the module loader could not resolve it at load time:

* it is not exported at all: the kernel has it (a static or non-exported symbol of
  vmlinux, found by name in vmlinux's kallsyms), so livepatch must resolve it;
* it is exported by a module other than vmlinux that the patch patches (its decoded
  ``struct klp_patch`` declares a ``klp_object`` for it, :mod:`klpelf.klp.patch`): a
  livepatch must not depend on that module being loaded first, so the relocation waits
  for the module (late module patching, as kpatch and klp-build do).  Livepatch applies
  the relocations of the declared objects only, so a symbol exported by a module the
  patch does not patch stays an ordinary reference: the loader resolves it, and
  modpost's ``depends=`` makes modprobe load that module first.  Without a decoded
  patch every module export waits for its module, as before the decode.

Symbols exported by vmlinux stay ordinary undefined symbols.  The sympos follows the
resolver (klp_find_object_symbol()'s order); a name with several candidates is an
error listing them, unless ``--sympos OBJ:NAME=N`` (or ``=path/to/file.c``, matched
against a vmlinux ELF's STT_FILE symbols) chooses.  The renamed symbols then go
through annotation mode (:func:`klpelf.klp.convert.convert_annotations`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from klpelf.elf.constants import SHF, SHN, STB
from klpelf.elf.file import ElfFile
from klpelf.errors import AmbiguousSymbolError, KlpError, KlpFormatError, UsageError
from klpelf.klp.names import KLP_SYM_PREFIX, KlpSymbolName
from klpelf.symbols.candidate import Candidate
from klpelf.symbols.resolve import klp_find_object_symbol
from klpelf.symbols.sources import KernelSymbols

#: a --sympos value that starts like a number: a position, never a file name
_NUMBER_LIKE = re.compile(r"[+-]?[0-9]")


class SymposChoice(NamedTuple):
    """``--sympos OBJ:NAME=N`` or ``--sympos OBJ:NAME=FILE``."""

    objname: str
    name: str
    sympos: int | None
    source_file: str | None

    @classmethod
    def parse(cls, spec: str) -> SymposChoice:
        """Read one ``--sympos`` value.

        :raises UsageError: a value that is not ``OBJ:SYMBOL=N`` or ``OBJ:SYMBOL=FILE``
            with an object and a symbol name the kernel accepts and N in 0..ULONG_MAX.
        """
        obj, sep, rest = spec.partition(":")
        name, eq, value = rest.partition("=")
        if not sep or not eq or not obj or not name or not value:
            raise UsageError(f"--sympos {spec!r}: expected OBJ:SYMBOL=N or OBJ:SYMBOL=FILE")
        number = value.strip()
        sympos = None
        if number.lstrip("+-").isdigit():
            sympos = int(number)
        elif _NUMBER_LIKE.match(number):
            # 0x3, 3rd, -1x: meant as a position, and no source file is named so
            raise UsageError(f"--sympos {spec!r}: N must be a decimal number (0 = unique)")
        try:
            # the names (and N) as a .klp.sym. name must hold them
            KlpSymbolName(obj, name, sympos if sympos is not None else 0)
        except ValueError as e:
            raise UsageError(f"--sympos {spec!r}: {e}") from None
        if sympos is not None:
            return cls(obj, name, sympos, None)
        return cls(obj, name, None, value)


def _used_undefined(elf: ElfFile) -> dict[int, str]:
    """Undefined symbols used by relocations of allocated sections -> where (for messages)."""
    tab = elf.symtab
    assert tab is not None
    undef = set(tab.indices_where_shndx(SHN.UNDEF)) - {0}
    where: dict[int, str] = {}
    for sec in elf.relocation_sections:
        if sec.sh_flags & SHF.RELA_LIVEPATCH or sec.sh_link != tab.section.index:
            continue
        target = sec.info_section
        if target is None or not target.is_alloc:
            continue
        for sym, j in sorted(elf.relocations(sec).first_indices().items()):
            if sym in undef and sym not in where:
                where[sym] = f"relocation {j} in {sec.name}"
    return where


def describe_candidates(cands: list[Candidate]) -> str:
    parts = []
    for c in cands:
        pos = c.position if c.position is not None else "?"
        addr = f"{c.address:#x}" if c.address is not None else "address unknown"
        src = f" {c.source_file}" if c.source_file else ""
        parts.append(f"{pos}: {addr} {c.type}{src}")
    return "; ".join(parts)


def plain_undefined(elf: ElfFile) -> dict[int, str]:
    """The undefined symbols automatic mode would look at: used by a relocation of an
    allocated section, not weak, not already a ``.klp.sym.`` name -> where used."""
    tab = elf.symtab
    if tab is None:
        return {}
    names = tab.names()
    binds = tab.binds()
    return {i: where for i, where in sorted(_used_undefined(elf).items())
            if names[i] and not names[i].startswith(KLP_SYM_PREFIX)
            and binds[i] != STB.WEAK}  # fmt: skip


def _klp_symbol_names(names: list[str]) -> set[str]:
    # the symbols livepatch symbols already name: a --sympos for one is not unused
    # (converting a converted module with the same arguments changes nothing)
    out = set()
    for n in names:
        if n.startswith(KLP_SYM_PREFIX):
            try:
                out.add(KlpSymbolName.parse(n).name)
            except ValueError:
                continue
    return out


def plan_klp_symbols(
    elf: ElfFile, ks: KernelSymbols, choices: list[SymposChoice] | None = None
) -> dict[int, KlpSymbolName]:
    """Which undefined symbols of ``elf`` must become livepatch symbols, and their names.

    :raises KlpFormatError: a symbol that cannot be placed (not exported and not in
        vmlinux or in one module of the sources, or ambiguous without a choice), or a
        choice the kernel would not resolve, naming the symbol and a relocation.
    :raises UsageError: a choice for a symbol the module does not use.
    """
    tab = elf.symtab
    if tab is None:
        raise KlpFormatError("module has no symbols (stripped?)", path=elf.path)
    if not ks.exports:
        raise KlpError(
            "automatic mode needs the kernel's Module.symvers (--symvers, or among --kernel) "
            "to tell exported symbols from the others",
            path=elf.path,
        )
    by_name = {c.name: c for c in choices or []}
    names = tab.names()
    used = plain_undefined(elf)
    unused = sorted(set(by_name) - {names[i] for i in used} - _klp_symbol_names(names))
    if unused:
        c = by_name[unused[0]]
        raise UsageError(f"--sympos {c.objname}:{c.name}: the module uses no undefined "
                         f"symbol {c.name}")  # fmt: skip
    plan: dict[int, KlpSymbolName] = {}
    patched = _patched_objects(elf)
    for i, where in used.items():
        name = names[i]
        choice = by_name.get(name)
        export = ks.exports.get(name)
        if choice is None and export is not None and export.objname == "vmlinux":
            continue  # resolved by the module loader, as for any module
        if choice is None and export is not None and patched is not None and (
                export.objname not in patched):  # fmt: skip
            continue  # not patched: the loader resolves it once depends= loaded the module
        ctx = f"symbol {name} ({where})"
        if choice is not None:
            plan[i] = _chosen(ks, choice, ctx)
        elif export is not None:
            # late module patching: the exporting module may load after the livepatch
            r = klp_find_object_symbol(ks, export.objname, name, 0)
            if isinstance(r.exception(), AmbiguousSymbolError):
                raise KlpFormatError(f"{ctx}: {r.error}: {describe_candidates(r.candidates)}")
            plan[i] = KlpSymbolName(export.objname, name, 0)
        else:
            plan[i] = _in_vmlinux(ks, name, ctx)
        obj = plan[i].objname
        if patched is not None and obj != "vmlinux" and obj not in patched:
            raise KlpFormatError(
                f"{ctx}: in module {obj}, which the patch does not patch (it declares no "
                f"klp_object '{obj}'): livepatch would never resolve it"
            )
    return plan


def _patched_objects(elf: ElfFile) -> set[str] | None:
    """The objects the module's one decoded patch declares; None without one."""
    from klpelf.klp.patch import decode_patches

    try:
        patches = decode_patches(elf)
    except KlpError:
        return None
    if len(patches) != 1 or not patches[0].objects:
        return None
    return {o.objname for o in patches[0].objects}


def _in_vmlinux(ks: KernelSymbols, name: str, ctx: str) -> KlpSymbolName:
    if not ks.has_vmlinux():
        raise KlpError(f"{ctx}: not exported, and the sources have no vmlinux symbols")
    cands = ks.vmlinux_matches(name)
    if not cands:
        return _in_one_module(ks, name, ctx)
    if len(cands) == 1:
        return KlpSymbolName("vmlinux", name, 0)
    raise KlpFormatError(
        f"{ctx}: {len(cands)} symbols of that name in vmlinux "
        f"({describe_candidates(cands)}); choose one with --sympos vmlinux:{name}=N or "
        f"--sympos vmlinux:{name}=path/to/file.c "
        "(file names need a vmlinux ELF among --kernel)"
    )


def _in_one_module(ks: KernelSymbols, name: str, ctx: str) -> KlpSymbolName:
    # Not in vmlinux: a symbol local to a module (the livepatch patches that module),
    # found in the module files and trees among the sources.
    found = ks.modules_defining(name)
    if len(found) == 1:
        objname, cands = found[0]
        if len(cands) == 1:
            return KlpSymbolName(objname, name, 0)
        raise KlpFormatError(
            f"{ctx}: {len(cands)} symbols of that name in module {objname} "
            f"({describe_candidates(cands)}); choose one with --sympos {objname}:{name}=N"
        )
    if found:
        mods = ", ".join(m for m, _ in found[:8]) + (", ..." if len(found) > 8 else "")
        raise KlpFormatError(
            f"{ctx}: not exported, not in vmlinux, and defined in {len(found)} modules "
            f"({mods}); choose one with --sympos MODULE:{name}=N"
        )
    where = "in vmlinux or in a module of the sources" if ks.trees or ks.modules else (
        "in vmlinux; if it belongs to a module, give the module tree (--kernel "
        "/lib/modules/RELEASE) or name it")  # fmt: skip
    raise KlpFormatError(
        f"{ctx}: not exported (Module.symvers) and not {where}: --sympos MODULE:{name}=N"
    )


def _check_position(ks: KernelSymbols, choice: SymposChoice, pos: int, ctx: str) -> None:
    # The kernel resolves it when the object is known to the sources: a wrong position
    # or an ambiguous 0 is refused here, with the kernel's own message, not at load.
    objname, name = choice.objname, choice.name
    if not ks.has_object(objname):
        return
    spec = f"{objname}:{name}={pos}"
    r = klp_find_object_symbol(ks, objname, name, pos)
    if r.ok or r.not_loaded:
        return
    cands = describe_candidates(r.candidates) or "none"
    raise KlpFormatError(f"{ctx}: --sympos {spec}: {r.error or r.note} (candidates: {cands})")


def _chosen(ks: KernelSymbols, choice: SymposChoice, ctx: str) -> KlpSymbolName:
    obj, name = choice.objname, choice.name
    if choice.sympos is not None:
        _check_position(ks, choice, choice.sympos, ctx)
        return KlpSymbolName(obj, name, choice.sympos)
    hint = choice.source_file or ""
    if obj == "vmlinux":
        cands = ks.vmlinux_matches(name)
    else:
        cands = klp_find_object_symbol(ks, obj, name, 0).candidates
    if cands and not any(c.source_file for c in cands):
        need = (
            "a vmlinux ELF among --kernel (kallsyms and System.map name no files)"
            if obj == "vmlinux"
            else f"the module's .ko ({obj}.ko) among --kernel"
        )
        raise UsageError(f"--sympos {obj}:{name}={hint}: source files need {need}; "
                         f"or give the position: --sympos {obj}:{name}=N")  # fmt: skip
    hits = [c for c in cands if c.source_file and c.source_file.endswith(hint)]
    if len(hits) != 1 or hits[0].position is None:
        raise KlpFormatError(
            f"{ctx}: --sympos {obj}:{name}={hint} matches {len(hits)} of "
            f"the candidates ({describe_candidates(cands) or 'none'})"
        )
    pos = hits[0].position if len(cands) > 1 else 0
    return KlpSymbolName(obj, name, pos)


def apply_plan(elf: ElfFile, plan: dict[int, KlpSymbolName]) -> None:
    """Rename the planned symbols to their ``.klp.sym.`` names (in place, same index)."""
    tab = elf.symtab
    assert tab is not None
    for i, klp in plan.items():
        tab.set_symbol(i, name=str(klp))
