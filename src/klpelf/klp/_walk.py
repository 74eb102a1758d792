"""The rules of ``klpelf check``, walked in the kernel's order (see klp/check.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from klpelf.elf.arrays import decode_column, rel_record, use_vector
from klpelf.elf.constants import EM, ET, SHF, SHN, SHT, STB
from klpelf.elf.file import ElfFile, Section
from klpelf.klp.diagnostics import (
    UNSAFE_LATE_SECTIONS,
    Diagnostic,
    Resolver,
    Severity,
    When,
)
from klpelf.klp.module import KlpModule, KlpRelaSection, TargetObject
from klpelf.klp.names import KLP_RELA_PREFIX, KLP_SYM_PREFIX, KlpSymbolName
from klpelf.release import EINVAL, ENOENT, ENOEXEC, KernelRelease

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    U64 = npt.NDArray[np.uint64]

#: r_offset, symbol, type and addend of every entry of a relocation section
Columns = tuple[list[int], list[int], list[int], list[int]]

#: bytes written per x86_64 relocation type (arch/x86/kernel/module.c)
_X86_SIZES = {1: 8, 2: 4, 4: 4, 10: 4, 11: 4, 24: 8}
#: only handled for clang<17's stack protector (v6.15); never "unknown"
_R_X86_64_REX_GOTPCRELX = 42
_ZEROS, _ONES = bytes(8), b"\1" * 8


def _overlaps_earlier(
    start: npt.NDArray[np.int64], end: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """For each range, whether it overlaps a non-empty range earlier in the array."""
    import numpy as np

    out = np.zeros(len(start), dtype=bool)
    live = np.flatnonzero(end > start)
    if len(live) < 2:
        return out
    order = live[np.lexsort((live, start[live]))]
    s, e = start[order], end[order]
    reach = np.maximum.accumulate(e)
    if not (s[1:] < reach[:-1]).any():
        return out  # no two ranges overlap: the usual case
    # some do: decide entry by entry, in the kernel's order
    covered: list[tuple[int, int]] = []
    for i in live.tolist():
        a, b = int(start[i]), int(end[i])
        out[i] = any(a < y and x < b for x, y in covered)
        covered.append((a, b))
    return out


class Checker:
    def __init__(
        self,
        elf: ElfFile,
        mod: KlpModule,
        version: KernelRelease,
        out: list[Diagnostic],
        *,
        resolver: Resolver | None,
        loaded: Callable[[str], bool] | None,
    ) -> None:
        self.elf, self.mod, self.v = elf, mod, version
        self.resolver, self.loaded = resolver, loaded
        self.out = out
        self.klp_by_index = {k.section.index: k for k in mod.sections}
        #: target section index -> its bytes as the x86 relocations applied at load left
        #: them: a nonzero byte is nonzero in the file or written by a relocation (only
        #: zero or not matters, not the value)
        self.busy: dict[int, bytearray] = {}
        #: numpy for big modules, plain Python for the others: same diagnostics
        self.vector = use_vector(elf)
        self._columns: dict[int, Columns] = {}
        self._lp_symbols: set[int] | None = None

    def add(self, severity: Severity, rule: str, message: str, **kw: object) -> None:
        self.out.append(Diagnostic(severity, rule, message, **kw))  # type: ignore[arg-type]

    # --- the walk -------------------------------------------------------------------

    def run(self) -> None:
        if not self._elf_validity():
            return
        self._simplify_symbols()
        self._apply_relocations()
        self._enable_patch()
        self._static_rules()

    def _elf_validity(self) -> bool:
        # elf_validity_ehdr() and elf_validity_cache_index_sym(), kernel/module/main.c
        elf, name = self.elf, self.mod.name
        if elf.header.e_type != ET.REL:
            message = f"Invalid ELF header type: {elf.header.e_type} != 1"
            logged = self.v.prints_elf_header_errors
            if not logged:
                message = (
                    f"ELF header type {elf.header.e_type} is not ET_REL (1): the loader "
                    "refuses the module without a message"
                )
            self.add(
                "error",
                "elf-type",
                message,
                when="load",
                kernel=True,
                errno=ENOEXEC,
                logged=logged,
            )
            return False
        s0 = elf.sections[0] if elf.sections else None
        if s0 is None or s0.sh_type != SHT.NULL or (s0.sh_size != 0 and not elf.extended_numbering):
            t = s0.sh_type if s0 else 0
            self.add(
                "error",
                "elf-section0",
                f"ELF Spec violation: section 0 type({t})!=SH_NULL or non-zero len or addr",
                when="load",
                kernel=True,
                errno=ENOEXEC,
            )
            return False
        symtabs = len(elf.sections_of_type(SHT.SYMTAB))
        if symtabs > 1 and not self.v.requires_one_symtab:
            self.add(
                "warning",
                "elf-symtab",
                f"{symtabs} symbol tables (SHT_SYMTAB): this release uses the first; "
                "Linux 6.4+ refuses the module: "
                f"{name}: module has no symbols (stripped?)",
            )
        elif symtabs != 1:
            self.add(
                "error",
                "elf-symtab",
                f"{name}: module has no symbols (stripped?)",
                when="load",
                kernel=True,
                errno=ENOEXEC,
            )
            return False
        return True

    def _simplify_symbols(self) -> None:
        # simplify_symbols(): SHN_LIVEPATCH symbols are left alone; an undefined
        # symbol must be resolved against the kernel's exports, so a livepatch symbol
        # that was never given SHN_LIVEPATCH is "Unknown" and fails the load.
        tab = self.elf.symtab
        assert tab is not None
        names = tab.names()
        st_info = tab.column("st_info")
        for i in tab.indices_where_shndx(SHN.UNDEF):
            name = names[i]
            if i == 0 or not name.startswith(KLP_SYM_PREFIX) or st_info[i] >> 4 == STB.WEAK:
                continue
            self.add(
                "error",
                "unknown-symbol",
                f"{self.mod.name}: Unknown symbol {name} (err -2)",
                symbol=(i, name),
                when="load",
                kernel=True,
                errno=ENOENT,
            )

    def _apply_relocations(self) -> None:
        elf = self.elf
        shnum = len(elf.sections)
        for sec in elf.sections[1:]:
            info = sec.sh_info
            if info >= shnum or not elf.sections[info].is_alloc:
                continue
            if sec.sh_flags & SHF.RELA_LIVEPATCH:
                k = self.klp_by_index[sec.index]
                if k.parsed is None:
                    self._bad_section_name(k, "load")
                    return
                vmlinux_now = k.objname == "vmlinux" and self.v.vmlinux_relocs_at_load
                if vmlinux_now and not self._write_section(k, "load"):
                    return
            elif sec.sh_type == SHT.RELA and sec.sh_entsize and not self._ordinary_relocations(sec):
                return

    def _enable_patch(self) -> None:
        if any(d.kernel and d.when == "load" for d in self.out):
            return  # the module never gets to its init
        if not self.mod.is_livepatch:
            if not self._looks_like_livepatch():
                self.add(
                    "note",
                    "not-a-livepatch",
                    "no livepatch modinfo, klp sections, livepatch symbols or call to "
                    "klp_enable_patch(): not a livepatch module",
                )
                return
            self.add(
                "error",
                "not-livepatch",
                f"module {self.mod.name} is not marked as a livepatch module",
                when="enable",
                kernel=True,
                errno=EINVAL,
                dmesg_prefix="livepatch: ",
            )
            return
        # klp_write_object_relocs() parses the name of every SHF_RELA_LIVEPATCH
        # section for each object, whatever its target (the load path skipped
        # sections with a non-ALLOC target).
        for k in self.mod.sections:
            if k.has_livepatch_flag and k.parsed is None:
                self._bad_section_name(k, "enable")
                return
        for obj in self.mod.objects.values():
            if obj.is_vmlinux and self.v.vmlinux_relocs_at_load:
                continue
            when: When = "enable"
            if not obj.is_vmlinux and (self.loaded is None or not self.loaded(obj.objname)):
                when = "target-load"
            applied = True
            for k in obj.sections:
                if k.has_livepatch_flag and not self._write_section(k, when):
                    if when == "enable":
                        return
                    applied = False
            if applied and not obj.is_vmlinux:
                self._target_reload(obj)

    def _target_reload(self, obj: TargetObject) -> None:
        """Before 6.3 nothing clears an object's klp relocations when it unloads
        (clear_relocate_add(), x86_64 only): the bytes written stay in the patch
        module, and the next load of the object finds them nonzero and is refused."""
        if self.v.clears_relocations or self.elf.machine != EM.X86_64:
            return
        for k in obj.sections:
            if not k.has_livepatch_flag:
                continue
            for idx, (_, _, r_type, _) in enumerate(self._as_rela(k.section)):
                if r_type == 0:  # R_X86_64_NONE
                    continue
                kernel_text = self.v.x86_nonzero_message(k.section.index, idx, r_type)
                self.add(
                    "warning",
                    "target-reload-refused",
                    f"module {obj.objname} cannot be loaded again while this patch stays "
                    f"loaded: Linux {self.v} does not clear klp relocations when "
                    f"{obj.objname} unloads (6.3+ does), so its next load fails (errno "
                    f"{ENOEXEC}) with: {kernel_text}",
                    section=k.section,
                    relocation=idx,
                    when="target-load",
                    errno=ENOEXEC,
                    dmesg_prefix="module: ",
                )
                return

    def _looks_like_livepatch(self) -> bool:
        # klp_enable_patch() runs only if the module's init calls it: without the
        # modinfo entry, klp content or that call is what shows a livepatch module.
        tab = self.elf.symtab
        calls = tab is not None and len(tab.indices_with_prefix("klp_enable_patch")) > 0
        return bool(self.mod.sections or self.mod.symbols or calls)

    # --- klp_write_section_relocs() / klp_resolve_symbols() ---------------------------

    def _bad_section_name(self, k: KlpRelaSection, when: When) -> None:
        self.add(
            "error",
            "section-name",
            f"section {k.section.name} has an incorrectly formatted name",
            section=k.section,
            when=when,
            kernel=True,
            errno=EINVAL,
            dmesg_prefix="livepatch: ",
        )

    def _write_section(self, k: KlpRelaSection, when: When) -> bool:
        """Resolve then apply one klp section as the kernel does; False at the first error."""
        elf, sec = self.elf, k.section
        tab = elf.symtab
        assert tab is not None
        symndx = tab.section.index
        names = tab.names()
        raw_shndx = tab.column("st_shndx")
        # the kernel reads any SHF_RELA_LIVEPATCH section as Elf_Rela, whatever sh_type
        # and sh_entsize say: count = sh_size / sizeof(Elf_Rela)
        relas = self._as_rela(sec)
        sec_vmlinux = k.objname == "vmlinux"
        # at load, apply_relocations() passes the ELF string table; later (module objects
        # at enable or when they load, and every object before 5.8)
        # klp_write_object_relocs() passes the core kallsyms copy, whose names are cut
        # to KSYM_NAME_LEN - 1 bytes
        from_kallsyms = when != "load"
        common = {
            "section": sec,
            "when": when,
            "kernel": True,
            "errno": EINVAL,
            "dmesg_prefix": "livepatch: ",
        }
        for idx, (_, r_sym, _, _) in enumerate(relas):
            name = names[r_sym] if r_sym < len(names) else f"#{r_sym}"
            if from_kallsyms:
                name = self.v.kallsyms_copy(name)
            if r_sym >= len(names) or raw_shndx[r_sym] != SHN.LIVEPATCH:
                self.add(
                    "error",
                    "not-livepatch-symbol",
                    self.v.not_marked_message(name, symndx, idx),
                    symbol=(r_sym, name),
                    relocation=idx,
                    **common,
                )
                return False
            scan = KlpSymbolName.scan(name, ksym_name_len=self.v.ksym_name_len)
            if not scan.ok:
                self.add(
                    "error",
                    "symbol-name",
                    f"symbol {name} has an incorrectly formatted name",
                    symbol=(r_sym, name),
                    relocation=idx,
                    **common,
                )
                return False
            sym = scan.symbol()
            if sym.is_vmlinux and not sec_vmlinux and self.v.forbids_vmlinux_from_module_sections:
                self.add(
                    "error",
                    "vmlinux-from-module-section",
                    f"invalid access to vmlinux symbol '{sym.name}' from module-specific "
                    "livepatch relocation section",
                    symbol=(r_sym, name),
                    relocation=idx,
                    **common,
                )
                return False
            if self.resolver is not None:
                err, _ = self.resolver(sym.objname, sym.name, sym.sympos)
                if err is not None:
                    self.add(
                        "error", "resolve", err, symbol=(r_sym, name), relocation=idx, **common
                    )
                    return False
        return self._arch_apply(sec, when)

    # --- relocation entries, read as the kernel reads them ------------------------------

    def _livepatch_symbols(self) -> set[int]:
        """Indices of the SHN_LIVEPATCH symbols."""
        if self._lp_symbols is None:
            tab = self.elf.symtab
            assert tab is not None
            self._lp_symbols = set(tab.indices_where_shndx(SHN.LIVEPATCH))
        return self._lp_symbols

    def _own_table(self, sec: Section) -> bool:
        """Whether the section is an SHT_RELA of the symbol table that the kernel reads it
        as (then its relocation-table view is used; else its bytes are decoded here)."""
        elf = self.elf
        symtab = elf.symtab
        linked = symtab is not None and sec.sh_link == symtab.section.index
        return sec.sh_type == SHT.RELA and sec.sh_entsize == elf.layout.rela_size and linked

    def _rela_bytes(self, sec: Section) -> bytes:
        # the kernel reads any SHF_RELA_LIVEPATCH section as Elf_Rela, whatever sh_type
        # and sh_entsize say: count = sh_size / sizeof(Elf_Rela)
        data = bytes(sec.data)
        return data[: len(data) // self.elf.layout.rela_size * self.elf.layout.rela_size]

    def _rela_columns(self, sec: Section) -> Columns:
        """r_offset, symbol, type and addend of every entry, read as Elf_Rela."""
        cols = self._columns.get(sec.index)
        if cols is not None:
            return cols
        elf = self.elf
        if self._own_table(sec):
            tab = elf.relocations(sec)
            cols = (tab.offsets(), tab.syms(), tab.types(), tab.column("r_addend"))
        else:
            rec = rel_record(elf.layout, True)
            data = self._rela_bytes(sec)
            shift = elf.layout.r_sym_shift()
            mask = (1 << shift) - 1
            info = decode_column(data, rec, "r_info")
            cols = (
                decode_column(data, rec, "r_offset"),
                [i >> shift for i in info],
                [i & mask for i in info],
                decode_column(data, rec, "r_addend"),
            )
        self._columns[sec.index] = cols
        return cols

    def _as_rela(self, sec: Section) -> list[tuple[int, int, int, int]]:
        """(r_offset, sym, type, addend) of every entry, read as Elf_Rela."""
        return list(zip(*self._rela_columns(sec), strict=True))

    def _rela_arrays(self, sec: Section) -> tuple[U64, U64]:
        """r_offset and type of every entry, read as Elf_Rela, as numpy arrays."""
        import numpy as np

        elf = self.elf
        if self._own_table(sec):
            tab = elf.relocations(sec)
            return tab.array["r_offset"].astype(np.uint64), tab.type_array
        from klpelf.elf.arrays import rel_dtype

        arr = np.frombuffer(self._rela_bytes(sec), dtype=rel_dtype(elf.layout, True))
        info = arr["r_info"].astype(np.uint64)
        mask = np.uint64((1 << elf.layout.r_sym_shift()) - 1)
        return arr["r_offset"].astype(np.uint64), info & mask

    # --- the arch's apply_relocate_add() --------------------------------------------

    def _ordinary_relocations(self, sec: Section) -> bool:
        tab = self.elf.symtab
        assert tab is not None
        names = tab.names()
        nsyms = len(names)
        if self.vector:
            import numpy as np

            if self._own_table(sec):
                sym_arr = self.elf.relocations(sec).sym_array
            else:
                sym_arr = np.array(self._rela_columns(sec)[1], dtype=np.uint64)
            in_range = sym_arr < nsyms
            hits = np.zeros(len(sym_arr), dtype=bool)
            hits[in_range] = tab.array["st_shndx"][sym_arr[in_range]] == SHN.LIVEPATCH
            found = [(i, int(sym_arr[i])) for i in np.flatnonzero(hits).tolist()]
        else:
            syms = self._rela_columns(sec)[1]
            lp = self._livepatch_symbols()
            found = [] if lp.isdisjoint(syms) else [(i, s) for i, s in enumerate(syms) if s in lp]
        for idx, r_sym in found:
            what = (
                "a .klp.rela. section without SHF_RELA_LIVEPATCH"
                if sec.name.startswith(KLP_RELA_PREFIX)
                else "an ordinary relocation section"
            )
            self.add(
                "error",
                "livepatch-symbol-in-ordinary-relocation",
                f"relocation against livepatch symbol {names[r_sym]} in {what}: the "
                "loader applies it with the symbol's value 0 (the module loads, then "
                "crashes when the code runs)",
                section=sec,
                symbol=(r_sym, names[r_sym]),
                relocation=idx,
                when="runtime",
            )
        return self._arch_apply(sec, "load")

    def _arch_apply(self, sec: Section, when: When) -> bool:
        if self.elf.machine != EM.X86_64:
            return True
        # arch/x86/kernel/module.c __write_relocate_add(), entry by entry: an unknown
        # type fails; otherwise the bytes at the target must be zero before the write
        # (a previous relocation may have written them), else -ENOEXEC.  NONE is
        # skipped.  The first failing entry is reported.
        target = self.elf.sections[sec.sh_info]
        busy = self.busy.get(target.index)
        if busy is None:
            busy = bytearray(target.data) if target.sh_type != SHT.NOBITS else bytearray()
        record = when == "load"
        if self.vector:
            failed, after = self._x86_apply_vector(sec, busy, record)
        else:
            failed, after = self._x86_apply_scalar(sec, busy)
        if failed is None:
            if record and after is not None:
                self.busy[target.index] = after
            return True
        idx, r_type = failed
        if r_type not in _X86_SIZES and r_type not in (0, _R_X86_64_REX_GOTPCRELX):
            rule, message = (
                "x86-unknown-relocation",
                f"{self.mod.name}: Unknown rela relocation: {r_type}",
            )
        else:
            rule, message = "x86-nonzero-target", self.v.x86_nonzero_message(sec.index, idx, r_type)
        self.add(
            "error",
            rule,
            message,
            section=sec,
            relocation=idx,
            when=when,
            kernel=True,
            errno=ENOEXEC,
            dmesg_prefix="module: ",
        )
        return False

    def _x86_apply_scalar(
        self, sec: Section, busy: bytearray
    ) -> tuple[tuple[int, int] | None, bytearray]:
        """The x86 walk, entry by entry, over the target's bytes ``busy`` (see self.busy):
        (index, type) of the first failing entry or None, and the bytes after the writes."""
        offs, _, types, _ = self._rela_columns(sec)
        n = len(busy)
        after = bytearray(busy)
        size_of = _X86_SIZES.get
        for idx, (off, r_type) in enumerate(zip(offs, types, strict=True)):
            size = size_of(r_type)
            if size is None:
                if r_type not in (0, _R_X86_64_REX_GOTPCRELX):
                    return (idx, r_type), after
                continue
            end = off + size
            if end > n:  # past the end of the section: only the bytes inside are checked
                if off >= n:
                    continue
                end = n
            if after[off:end] != _ZEROS[: end - off]:
                return (idx, r_type), after
            after[off:end] = _ONES[: end - off]
        return None, after

    def _x86_apply_vector(
        self, sec: Section, busy: bytearray, record: bool
    ) -> tuple[tuple[int, int] | None, bytearray | None]:
        """_x86_apply_scalar() on whole arrays, for big modules; the bytes after the
        writes are computed only when ``record``."""
        import numpy as np

        offs, types = self._rela_arrays(sec)
        n = len(busy)
        size = np.zeros(len(types), dtype=np.int64)
        for t, width in _X86_SIZES.items():
            size[types == t] = width
        unknown = (types != 0) & (types != _R_X86_64_REX_GOTPCRELX) & (size == 0)
        start = np.minimum(offs, n).astype(np.int64)
        end = np.minimum(start + size, n)
        nonzero = np.frombuffer(busy, np.uint8) != 0
        count = np.concatenate(([0], np.cumsum(nonzero)))
        bad = (size > 0) & ((count[end] > count[start]) | _overlaps_earlier(start, end))
        failing = np.flatnonzero(bad | unknown)
        if len(failing):
            idx = int(failing[0])
            return (idx, int(types[idx])), None
        if not record:
            return None, None
        edges = np.zeros(n + 1, dtype=np.int64)
        np.add.at(edges, start, 1)
        np.add.at(edges, end, -1)
        after = nonzero | (np.cumsum(edges[:-1]) > 0)
        return None, bytearray(after.view(np.uint8).tobytes())

    # --- klpelf's own rules ------------------------------------------------------------

    def _static_rules(self) -> None:
        elf, mod = self.elf, self.mod
        tab = elf.symtab
        assert tab is not None
        if (mod.sections or mod.symbols) and mod.is_livepatch and mod.livepatch != "Y":
            self.add(
                "warning",
                "modinfo-livepatch-value",
                f"modinfo livepatch={mod.livepatch!r}: the kernel takes any value as 'Y'",
            )
        if (mod.sections or mod.symbols) and not mod.is_livepatch:
            pass  # already an error at enable
        for k in mod.sections:
            sec = k.section
            if not k.has_livepatch_flag:
                self.add(
                    "error",
                    "klp-section-without-flag",
                    f"section {sec.name} has no SHF_RELA_LIVEPATCH flag: the loader applies "
                    "it as an ordinary relocation section",
                    section=sec,
                    when="runtime",
                )
                continue
            if not sec.is_alloc:
                self.add(
                    "warning",
                    "klp-section-not-alloc",
                    f"section {sec.name} is not SHF_ALLOC: it is freed after load and never "
                    "applied later (module objects, or a reloaded target)",
                    section=sec,
                )
            if k.target is None:
                self.add(
                    "warning",
                    "klp-section-target",
                    f"section {sec.name}: sh_info {sec.sh_info} names no section; the "
                    "loader skips it",
                    section=sec,
                )
            else:
                if not k.target.is_alloc:
                    self.add(
                        "warning",
                        "klp-target-not-alloc",
                        f"section {sec.name}: target {k.target.name} is not SHF_ALLOC; the "
                        "loader silently skips the section",
                        section=sec,
                    )
                if k.parsed is not None and not k.parsed.matches_target(k.target.name):
                    self.add(
                        "warning",
                        "klp-section-suffix",
                        f"section {sec.name} relocates {k.target.name} (sh_info "
                        f"{sec.sh_info}); its name suggests another section",
                        section=sec,
                    )
                if k.objname not in (None, "vmlinux") and k.target.name.startswith(
                    UNSAFE_LATE_SECTIONS
                ):
                    self.add(
                        "warning",
                        "klp-unsafe-section",
                        f"section {sec.name}: klp relocations for module {k.objname} in "
                        f"{k.target.name} are applied after the loader processed that "
                        "section",
                        section=sec,
                    )
            if sec.sh_type != SHT.RELA or sec.sh_entsize != elf.layout.rela_size:
                self.add(
                    "warning",
                    "klp-section-type",
                    f"section {sec.name} is not SHT_RELA with sh_entsize "
                    f"{elf.layout.rela_size}; the kernel reads it as Elf_Rela anyway",
                    section=sec,
                )
            if sec.sh_link != tab.section.index:
                self.add(
                    "warning",
                    "klp-section-link",
                    f"section {sec.name}: sh_link {sec.sh_link} is not the symbol table "
                    f"({tab.section.index}); the kernel uses the symbol table anyway",
                    section=sec,
                )
            if k.parsed is not None and k.parsed.truncated:
                self.add(
                    "warning",
                    "klp-objname-too-long",
                    f"section {sec.name}: object name longer than 55 bytes; the kernel "
                    f"reads '{k.parsed.objname}' and never applies it to "
                    f"'{k.parsed.full_objname}'",
                    section=sec,
                )
        self._symbol_rules()
        for od in mod.oddities:
            self.add("warning", od.kind, f"{od.what}: {od.note}")

    def _symbol_rules(self) -> None:
        elf, mod = self.elf, self.mod
        tab = elf.symtab
        assert tab is not None
        st_info = tab.column("st_info")
        first_global = tab.first_global
        late_locals = [i for i in range(first_global, len(st_info)) if st_info[i] >> 4 == STB.LOCAL]
        for i in late_locals[:10]:
            self.add(
                "warning",
                "local-after-globals",
                f"local symbol {tab.name(i)} at index {i} after the first global "
                f"(sh_info {first_global})",
                symbol=(i, tab.name(i)),
            )
        referenced: set[int] = set()
        for sec in elf.relocation_sections if mod.symbols else ():
            if sec.sh_flags & SHF.RELA_LIVEPATCH:
                # read as the kernel reads it: Elf_Rela, whatever sh_type/sh_entsize say
                referenced.update(self._rela_columns(sec)[1])
            elif sec.sh_link == tab.section.index and sec.sh_entsize:
                referenced |= elf.relocations(sec).symbols_used()
        seen: dict[str, int] = {}
        for s in mod.symbols:
            idx, name = s.symbol.index, s.symbol.name
            if s.symbol.st_shndx == SHN.LIVEPATCH and idx not in referenced:
                self.add(
                    "warning",
                    "unreferenced-livepatch-symbol",
                    f"livepatch symbol {name} is never referenced by a relocation",
                    symbol=(idx, name),
                )
            if name in seen:
                self.add(
                    "warning",
                    "duplicate-livepatch-symbol",
                    f"livepatch symbol {name} also at index {seen[name]}",
                    symbol=(idx, name),
                )
            seen.setdefault(name, idx)
            if s.parsed is None and s.symbol.st_shndx == SHN.LIVEPATCH:
                self.add(
                    "error" if idx in referenced else "warning",
                    "symbol-name-static",
                    f"symbol {name} has an incorrectly formatted name"
                    + (f" ({s.detail})" if s.detail else ""),
                    symbol=(idx, name),
                )
