"""Write the diff object: the included entities, their special-section entries, their
references, through the model's edits and :func:`klpelf.elf.writer.new_relocatable`.

Each included entity gets a section of its own (its section's name when it had the
section to itself, else ``<section>.<name>``), with its symbol and its
``__pfx_``/``__cfi_`` symbols; each special section of the patched build keeps, in
order, the entries of the included functions.  Relocations are rewritten: to an
included entity, against the output section's symbol; to the kernel's copy, against
the reference :func:`klpelf.objdiff.refs.place` gives (by the original's name); to an
undefined symbol, against the same name, which the convert machinery then decides.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from klpelf.elf.arrays import rel_record
from klpelf.elf.constants import SHF, SHN, SHT, STB, STT
from klpelf.elf.file import ElfFile, Section
from klpelf.elf.symbols import st_info
from klpelf.elf.writer import new_relocatable
from klpelf.errors import KlpFormatError
from klpelf.klp.autoconvert import SymposChoice, apply_plan, plan_klp_symbols
from klpelf.klp.diagnostics import UNSAFE_LATE_SECTIONS
from klpelf.klp.names import KLP_SYM_PREFIX, KlpSymbolName
from klpelf.objdiff.correlate import Correlation
from klpelf.objdiff.objects import FUNCTION_PREFIXES, Entity, Reloc
from klpelf.objdiff.refs import Reference, place
from klpelf.objdiff.select import Selection
from klpelf.objdiff.special import Entry, code_bias
from klpelf.symbols.sources import KernelSymbols

__all__ = ["Emitted", "emit"]

#: what a C identifier cannot hold
_C_NAME = re.compile(r"\W")


class Emitted(NamedTuple):
    elf: ElfFile
    #: original name -> the reference the included code got
    references: dict[str, Reference]
    #: undefined symbols of the unit the included code uses -> their name in the output
    externs: dict[str, str]
    #: special section -> entries kept
    entries: dict[str, int]
    notes: list[str]
    #: the functions a klp_func replaces: (old_name, old_sympos, the new code's symbol)
    klp_funcs: list[tuple[str, int, str]]
    #: what the references make impossible (a module's static key or static call)
    refusals: list[str]


class _Out:
    def __init__(self, c: Correlation, objname: str, ks: KernelSymbols | None,
                 choices: dict[tuple[str, str], SymposChoice]) -> None:  # fmt: skip
        self.c = c
        self.p = c.patched
        self.elf = new_relocatable(c.patched.elf)
        self.objname, self.ks, self.choices = objname, ks, choices
        #: patched entity -> output section
        self.where: dict[Entity, Section] = {}
        #: output section -> its relocations (offset, type, output symbol key, addend)
        self.relocs: dict[int, list[tuple[int, int, str, int]]] = {}
        #: output symbol key -> (name, st_info, st_other, shndx, value, size)
        self.symbols: dict[str, tuple[str, int, int, int, int, int]] = {}
        self.references: dict[str, Reference] = {}
        self.externs: dict[str, str] = {}

    def section_for(self, e: Entity) -> Section:
        src = self.p.section(e.section)
        # a function cut from a shared section gets one of its own; data keeps its
        # section's name (ld -r merges them; the loader finds __dyndbg by name)
        alone = len(self.p.by_section.get(e.section, ())) == 1
        name = src.name if alone or e.kind != "func" else f"{src.name}.{e.name}"
        data = b"" if src.sh_type == SHT.NOBITS else bytes(src.data[e.start : e.end])
        sec = self.elf.add_section(
            name, src.sh_type, sh_flags=src.sh_flags & ~SHF.INFO_LINK,
            data=data if src.sh_type != SHT.NOBITS else bytes(e.end - e.start),
            sh_addralign=src.sh_addralign, sh_entsize=src.sh_entsize)  # fmt: skip
        self.where[e] = sec
        self.symbols[f"s{sec.index}"] = ("", st_info(STB.LOCAL, STT.SECTION), 0, sec.index, 0, 0)
        for s in self.p.symbols:
            if s.shndx != e.section or not e.start <= s.st_value <= e.end:
                continue
            if s.index == e.symbol or (s.name.startswith(FUNCTION_PREFIXES)
                                       and s.type in (STT.FUNC, STT.NOTYPE)):  # fmt: skip
                self.symbols[f"d{s.index}"] = (s.name, s.st_info, s.st_other, sec.index,
                                               s.st_value - e.start, s.st_size)  # fmt: skip
        return sec

    def target(self, r: Reloc, code: bool) -> tuple[str, int]:
        p = self.p
        s = p.symbols[r.sym]
        if s.shndx == SHN.UNDEF:
            key = f"u{s.name}"
            self.symbols[key] = (s.name, st_info(STB.WEAK if s.bind == STB.WEAK else STB.GLOBAL,
                                                 STT.NOTYPE), 0, SHN.UNDEF, 0, 0)  # fmt: skip
            self.externs[s.name] = s.name
            return key, r.addend
        bias = code_bias(p.elf.machine, r.type) if code else 0
        t, off = p.target(r.sym, r.addend, bias)
        if t is None:
            raise KlpFormatError(f"relocation at {p.section(s.shndx).name}: target "
                                 f"{s.name or p.section(s.shndx).name} is no function or data "
                                 "of the unit", path=p.path)  # fmt: skip
        out = self.where.get(t)
        if out is not None:
            return f"s{out.index}", off - t.start
        o = self.c.to_orig.get(t)
        if o is None:
            raise KlpFormatError(f"{t.name}: new in the patched build but not included",
                                 path=p.path)  # fmt: skip
        ref = self.references.get(o.name)
        if ref is None:
            ref = place(self.c.orig, o, self.objname, self.ks, self.choices)
            self.references[o.name] = ref
        key = f"r{ref.symbol}"
        stt = STT.FUNC if o.kind == "func" and ref.kind == "exported" else STT.NOTYPE
        self.symbols[key] = (ref.symbol, st_info(STB.GLOBAL, stt), 0, SHN.UNDEF, 0, 0)
        return key, off - t.value

    def copy_relocs(self, sec: Section, relocs: list[Reloc] | tuple[Reloc, ...], base: int,
                    code: bool, at: int = 0) -> None:  # fmt: skip
        got = self.relocs.setdefault(sec.index, [])
        for r in relocs:
            key, addend = self.target(r, code)
            got.append((r.offset - base + at, r.type, key, addend))


def emit(c: Correlation, sel: Selection, *, objname: str, ks: KernelSymbols | None,
         choices: list[SymposChoice]) -> Emitted:  # fmt: skip
    """Build the diff object of ``sel`` (see the module docstring).

    :raises KlpFormatError: a reference that cannot be placed, an ambiguous external
        symbol (a static key or static call of a module is a refusal in the result).
    """
    out = _Out(c, objname, ks, {(ch.objname, ch.name): ch for ch in choices})
    p = c.patched
    order = sorted(sel.included, key=lambda e: (e.section, e.start))
    for e in order:
        out.section_for(e)
    for e in order:
        code = e.kind == "func" or bool(p.section(e.section).sh_flags & SHF.EXECINSTR)
        out.copy_relocs(out.where[e], p.relocs_in(e.section, e.start, e.end), e.start, code)
    entries = _special(out, sel, order)
    klp_funcs = _klp_funcs(out, sel)
    _modinfo(out)
    elf = out.elf
    _write_symbols(out)
    notes: list[str] = []
    if ks is not None and ks.exports:
        plan = plan_klp_symbols(elf, ks, choices)
        apply_plan(elf, plan)
        for k in plan.values():
            out.externs[k.name] = str(k)
    elif out.externs:
        notes.append(
            "undefined symbols left as they are: without the kernel's Module.symvers "
            "(--symvers, --kernel) exported symbols cannot be told from the others"
        )
    return Emitted(elf, out.references, out.externs, entries, notes, klp_funcs,
                   _refuse_late(elf))


def _klp_funcs(out: _Out, sel: Selection) -> list[tuple[str, int, str]]:
    # Every included function the kernel has with an ftrace location (not a .cold part)
    # is replaced through a klp_func.  Its new code gets a global alias the patch module's
    # C names (a static keeps its binding: two units may both have one of that name).
    stem = _C_NAME.sub("_", os.path.splitext(out.p.file_name or "unit")[0])
    found = []
    for e in sorted(sel.replaced, key=lambda e: e.name):
        o = out.c.to_orig[e]
        if e.symbol is None:
            continue
        ref = place(out.c.orig, o, out.objname, out.ks, out.choices)
        pos = KlpSymbolName.parse(ref.symbol).sympos if ref.kind == "klp" else 0
        alias = f"__klpelf_new_{stem}_{_C_NAME.sub('_', o.name)}"
        s = out.p.symbols[e.symbol]
        sec = out.where[e]
        # st_other as the function's: ppc64's local entry point offset is there
        out.symbols[f"a{alias}"] = (alias, st_info(STB.GLOBAL, STT.FUNC), s.st_other,
                                    sec.index, s.st_value - e.start, s.st_size)  # fmt: skip
        found.append((o.name, pos, alias))
    return found


def _special(out: _Out, sel: Selection, order: list[Entity]) -> dict[str, int]:
    p = out.p
    kept: dict[int, list[tuple[Entity, Entry]]] = {}
    for e in order:
        for sec, en in sel.entries.get(e, ()) if e.kind == "func" else ():
            kept.setdefault(sec.index, []).append((e, en))
    counts: dict[str, int] = {}
    for idx in sorted(kept):
        src = p.section(idx)
        items = sorted(kept[idx], key=lambda t: t[1].start)
        data = bytearray()
        link = 0
        if src.sh_flags & SHF.LINK_ORDER:
            link = out.where[items[0][0]].index
        pieces = []
        for _, en in items:
            pieces.append((len(data), en))
            if src.sh_type != SHT.NOBITS:
                data += bytes(src.data[en.start : en.end])
            else:
                data += bytes(en.end - en.start)
        sec = out.elf.add_section(src.name, src.sh_type, sh_flags=src.sh_flags & ~SHF.INFO_LINK,
                                  data=bytes(data), sh_addralign=src.sh_addralign,
                                  sh_entsize=src.sh_entsize, sh_link=link)  # fmt: skip
        out.symbols[f"s{sec.index}"] = ("", st_info(STB.LOCAL, STT.SECTION), 0, sec.index, 0, 0)
        for at, en in pieces:
            out.copy_relocs(sec, en.relocs, en.start, False, at)
        counts[src.name] = counts.get(src.name, 0) + len(items)
    return counts


def _modinfo(out: _Out) -> None:
    # the namespaces the unit imports (MODULE_IMPORT_NS): the module needs them as well
    src = out.p.elf.section_by_name(".modinfo")
    if src is None or src.sh_type == SHT.NOBITS:
        return
    lines = [x for x in bytes(src.data).split(b"\0") if x.startswith(b"import_ns=")]
    if lines:
        out.elf.add_section(".modinfo", SHT.PROGBITS, sh_flags=SHF.ALLOC,
                            data=b"".join(x + b"\0" for x in lines), sh_addralign=1)  # fmt: skip


def _write_symbols(out: _Out) -> None:
    elf = out.elf
    tab = elf.symtab
    assert tab is not None
    index: dict[str, int] = {}
    if out.p.file_name:
        tab.add_symbol(out.p.file_name, st_info=st_info(STB.LOCAL, STT.FILE), st_shndx=SHN.ABS)
    items = sorted(
        out.symbols.items(),
        key=lambda kv: (kv[1][1] >> 4 != STB.LOCAL, kv[1][1] & 0xF != STT.SECTION),
    )
    for key, (name, info, other, shndx, value, size) in items:
        index[key] = tab.add_symbol(name, st_info=info, st_other=other, st_shndx=shndx,
                                    st_value=value, st_size=size)  # fmt: skip
    rec = rel_record(elf.layout, True)
    shift = elf.layout.r_sym_shift()
    for sidx in sorted(out.relocs):
        if not out.relocs[sidx]:
            continue
        target = elf.section(sidx)
        rs = elf.add_relocation_section(f".rela{target.name}", target, symtab=tab.section)
        elf.relocations(rs).extend(b"".join(
            rec.codec.pack(off, (index[key] << shift) | typ, add)
            for off, typ, key, add in out.relocs[sidx]))  # fmt: skip


def _refuse_late(elf: ElfFile) -> list[str]:
    # kernel/livepatch/core.c applies a module's klp relocations (klp_write_section_relocs)
    # after the loader has processed __jump_table and .static_call_sites (jump_label_add_module,
    # static_call_add_module): a static key or static call of a module is refused, as
    # objtool's klp diff refuses it
    tab = elf.symtab
    assert tab is not None
    found: dict[str, str] = {}
    for rs in elf.relocation_sections:
        target = rs.info_section
        if target is None or not target.name.startswith(UNSAFE_LATE_SECTIONS):
            continue
        for r in elf.relocations(rs):
            name = tab.name(r.sym)
            if not name.startswith(KLP_SYM_PREFIX):
                continue
            k = KlpSymbolName.parse(name)
            if k.objname != "vmlinux" and k.name not in found:
                what = ("static call" if "static_call" in target.name
                        else "static key" if "jump" in target.name else "symbol")  # fmt: skip
                found[k.name] = (
                    f"{k.name}: {what} of module {k.objname} used in {target.name}: the "
                    "kernel writes a module's klp relocations after the loader has "
                    f"processed {target.name} (klp_write_section_relocs)")  # fmt: skip
    return list(found.values())
