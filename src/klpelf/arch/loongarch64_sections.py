"""loongarch64: the module GOT and PLT of ``arch/loongarch/kernel/module-sections.c``
(and ``asm/module.h``), which :mod:`klpelf.arch.loongarch64`'s B26, GOT_PC_* and
SOP_PUSH_PLT_PCREL go through.

Module GOT and PLT (module-sections.c): the module carries ``.got``, ``.plt`` and
``.plt.idx`` (asm/module.lds.h); ``module_frob_arch_sections()`` sizes them from the
distinct (r_info, r_addend) GOT_PC_HI20 and B26/SOP_PUSH_PLT_PCREL entries of the
sections with an executable target (klp sections included).  An entry is looked up
by its value (S + A), else the next one is taken: a GOT entry holds the value, a PLT
entry is ``lu12i.w $t1, v[31:12]; lu32i.d $t1, v[51:32]; lu52i.d $t1, $t1, v[63:52];
jirl $zero, $t1, v[11:0]`` (16 bytes).  A GOT entry past the count is "%s: module
contains bad GOT relocation" (-EINVAL).  The entries used so far are kept in
``layout.arch_state["loongarch64"]`` across the sections of one module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from klpelf.arch import ModuleLayout, SectionFrob
from klpelf.elf.constants import SHF, SHT

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile
    from klpelf.release import KernelRelease

PLT_ENTRY_SIZE, GOT_ENTRY_SIZE = 16, 8
R_LARCH_SOP_PUSH_PLT_PCREL, R_LARCH_B26, R_LARCH_GOT_PC_HI20 = 29, 66, 75


def plt_entry(val: int) -> bytes:
    """emit_plt_entry(): ``lu12i.w $t1, v[31:12]; lu32i.d $t1, v[51:32];
    lu52i.d $t1, $t1, v[63:52]; jirl $zero, $t1, v[11:0]``.

    ADDR_IMM() sign-extends each field, so larch_insn_gen_lu12iw/lu32id/lu52id() find
    it in range; larch_insn_gen_jirl() refuses an offset that is not 4-aligned (a
    target with v[1:0] set) with a warning and INSN_BREAK, and encodes offs16 = v[11:2].
    """
    t1, brk = 13, 0x002A0000
    lu12iw = 0x0A << 25 | ((val >> 12) & 0xFFFFF) << 5 | t1
    lu32id = 0x0B << 25 | ((val >> 32) & 0xFFFFF) << 5 | t1
    lu52id = 0x0C << 22 | ((val >> 52) & 0xFFF) << 10 | t1 << 5 | t1
    low = val & 0xFFF
    jirl = brk if low & 3 else 0x13 << 26 | (low >> 2) << 10 | t1 << 5
    return b"".join(x.to_bytes(4, "little") for x in (lu12iw, lu32id, lu52id, jirl))


# --- the module GOT and PLT -------------------------------------------------------------


class ModuleTables:
    """``mod->arch.got``, ``plt`` and ``plt_idx``: addresses, counts from
    ``module_frob_arch_sections()`` and the entries emitted so far (by value)."""

    __slots__ = ("got", "got_max", "got_values", "plt", "plt_max", "plt_values")

    def __init__(self, got: int | None, plt: int | None, got_max: int, plt_max: int) -> None:
        self.got, self.plt = got, plt
        self.got_max, self.plt_max = got_max, plt_max
        self.got_values: list[int] = []
        self.plt_values: list[int] = []

    def emit_got(self, val: int) -> int | None:
        """module_emit_got_entry(): the entry's address; 0 past the count (bad GOT);
        None when the .got's address is not known."""
        if self.got is None:
            return None
        if val in self.got_values:
            return self.got + GOT_ENTRY_SIZE * self.got_values.index(val)
        self.got_values.append(val)
        if len(self.got_values) > self.got_max:
            return 0
        return self.got + GOT_ENTRY_SIZE * (len(self.got_values) - 1)

    def emit_plt(self, val: int) -> int | None:
        """module_emit_plt_entry(): the entry's address (None: .plt not known)."""
        if self.plt is None:
            return None
        if val not in self.plt_values:
            self.plt_values.append(val)
        return self.plt + PLT_ENTRY_SIZE * self.plt_values.index(val)


def count_max_entries(elf: ElfFile) -> tuple[int, int]:
    """(GOT, PLT) entries module_frob_arch_sections() reserves: per SHT_RELA section
    with an executable target (klp ones too), its distinct (r_info, r_addend)
    GOT_PC_HI20 and B26/SOP_PUSH_PLT_PCREL entries (duplicates across sections count
    again)."""
    gots = plts = 0
    for sec in elf.sections_of_type(SHT.RELA):
        target = sec.info_section
        if target is None or not target.sh_flags & SHF.EXECINSTR:
            continue
        relocs = elf.relocations_as_rela(sec)
        syms, types = relocs.syms(), relocs.types()
        addends = relocs.addends() or [0] * len(types)
        seen = set(zip(syms, types, addends, strict=True))
        gots += sum(1 for _, t, _ in seen if t == R_LARCH_GOT_PC_HI20)
        plts += sum(1 for _, t, _ in seen if t in (R_LARCH_B26, R_LARCH_SOP_PUSH_PLT_PCREL))
    return gots, plts


#: L1_CACHE_BYTES (CONFIG_L1_CACHE_SHIFT 6), the alignment of .got, .plt and .plt.idx
L1_CACHE_BYTES = 64
#: NR_FTRACE_PLTS (asm/ftrace.h): the .ftrace_trampoline's entries
NR_FTRACE_PLTS = 1


def frob_refusal(release: KernelRelease, elf: ElfFile, module: str) -> tuple[str, str] | None:
    """module_frob_arch_sections()'s refusal: the placeholders of asm/module.lds.h
    missing (.got since 59b3d4a9b0cc, v6.1; .plt and .plt.idx since v5.19)."""
    needed = [(".plt", "PLT"), (".plt.idx", "PLT.IDX")]
    if release.at_least(6, 1):
        needed.insert(0, (".got", "GOT"))
    for name, what in needed:
        if elf.section_by_name(name) is None:
            return "loongarch-module-sections", f"{module}: module {what} section(s) missing"
    return None


def frob_sections(elf: ElfFile) -> dict[int, SectionFrob]:
    """module_frob_arch_sections(): .got, .plt, .plt.idx (and .ftrace_trampoline)
    become NOBITS of the counted size, aligned to a cache line, before the layout."""
    gots, plts = count_max_entries(elf)
    sizes = {".got": (SHF.ALLOC, (gots + 1) * GOT_ENTRY_SIZE, L1_CACHE_BYTES),
             ".plt": (SHF.ALLOC | SHF.EXECINSTR, (plts + 1) * PLT_ENTRY_SIZE, L1_CACHE_BYTES),
             ".plt.idx": (SHF.ALLOC, (plts + 1) * 8, L1_CACHE_BYTES),
             ".ftrace_trampoline": (SHF.ALLOC | SHF.EXECINSTR, NR_FTRACE_PLTS * PLT_ENTRY_SIZE,
                                    4)}  # fmt: skip
    out = {}
    for name, (flags, size, align) in sizes.items():
        sec = elf.section_by_name(name)
        if sec is not None:
            out[sec.index] = SectionFrob(SHT.NOBITS, flags, size, align)
    return out


def module_tables(layout: ModuleLayout) -> ModuleTables:
    """The GOT and PLT state of ``layout``'s module, created on first use."""
    state = layout.arch_state.get("loongarch64")
    if not isinstance(state, ModuleTables):
        elf = layout.elf

        def address(name: str) -> int | None:
            s = elf.section_by_name(name)
            return None if s is None else layout.addresses.get(s.index)

        gots, plts = count_max_entries(elf)
        state = ModuleTables(address(".got"), address(".plt"), gots, plts)
        layout.arch_state["loongarch64"] = state
    return state


def write_tables(layout: ModuleLayout, contents: Mapping[int, bytearray]) -> None:
    """The GOT entries (the values), PLT entries (:func:`plt_entry`) and .plt.idx
    entries (the values) emitted so far, into the bytes of .got, .plt and .plt.idx."""
    state = layout.arch_state.get("loongarch64")
    if not isinstance(state, ModuleTables):
        return
    elf = layout.elf
    tables = ((".got", [v.to_bytes(8, "little") for v in state.got_values]),
              (".plt", [plt_entry(v) for v in state.plt_values]),
              (".plt.idx", [v.to_bytes(8, "little") for v in state.plt_values]))  # fmt: skip
    for name, entries in tables:
        sec = elf.section_by_name(name)
        data = None if sec is None else contents.get(sec.index)
        if data is not None:
            blob = b"".join(entries)[: len(data)]
            data[: len(blob)] = blob
