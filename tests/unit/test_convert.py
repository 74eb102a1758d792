"""`klpelf convert` (annotation mode) on objects cross-compiled for each architecture."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from klpelf.cli import main
from klpelf.elf.constants import EM, SHF, SHN, SHT
from klpelf.elf.file import ElfFile
from klpelf.elf.reader import open_elf
from klpelf.klp.check import check_module
from klpelf.release import KernelRelease
from toolchain import readelf

# A livepatch-like translation unit: new code that reads non-exported vmlinux data,
# calls a non-exported function, and uses a static of a module patched late.
SOURCE = r"""
#define KLP_SYM(type, cname, sym) \
    extern type cname; asm(".set " #cname ", \"" sym "\"")
#define KLP_FN(cname, sym) \
    extern int cname(int); asm(".set " #cname ", \"" sym "\"")

KLP_SYM(unsigned long, klp_total_forks, ".klp.sym.vmlinux.total_forks,0");
KLP_SYM(int, klp_max_cstate, ".klp.sym.rela.klp_test.vmlinux.max_cstate,2");
KLP_SYM(int, klp_ext4_counter, ".klp.sym.ext4.ext4_counter,1");
KLP_FN(klp_helper, ".klp.sym.vmlinux.some_static_helper,0");
extern int printk(const char *fmt, ...);

int livepatch_show(int x)
{
    printk("%lu %d\n", klp_total_forks, klp_max_cstate);
    return klp_helper(x) + (int)klp_total_forks;
}

__attribute__((section(".text.ext4_patch")))
int livepatch_ext4(void)
{
    return klp_ext4_counter + 1;
}

unsigned long *const table[] __attribute__((section(".data.klp_table"))) = { &klp_total_forks };
"""
MODULE_TAIL = r"""
/* what kbuild's link adds to a module: struct module (modpost's <module>.mod.c) and
 * the vermagic (include/linux/vermagic.h) */
char __this_module[64] __attribute__((section(".gnu.linkonce.this_module"))) = { 1 };
const char __vermagic[] __attribute__((section(".modinfo"), aligned(1))) =
    "vermagic=6.19.0 SMP preempt mod_unload ";
"""

ARCHES = {
    "x86_64": (["gcc"], ["-mcmodel=kernel", "-fno-pic", "-mno-red-zone"], EM.X86_64),
    "aarch64": (["aarch64-linux-gnu-gcc"], ["-fno-pic", "-mgeneral-regs-only"], EM.AARCH64),
    "ppc64le": (["powerpc64le-linux-gnu-gcc"], ["-mcmodel=medium", "-mno-altivec"], EM.PPC64),
    "s390x": (["s390x-linux-gnu-gcc"], ["-fno-pic", "-msoft-float"], EM.S390),
}


def _compile(arch: str, tmp_path: Path, source: str = SOURCE) -> Path:
    cc, flags, _ = ARCHES[arch]
    if shutil.which(cc[0]) is None:
        pytest.skip(f"{cc[0]} is not installed (Debian: gcc-{cc[0].removesuffix('-gcc')})")
    src = tmp_path / "lp.c"
    src.write_text(source + MODULE_TAIL)
    obj = tmp_path / f"lp-{arch}.o"
    subprocess.run(
        [*cc, "-O2", "-ffreestanding", "-nostdinc", "-fno-common", *flags, "-c", "-o", str(obj),
         str(src)], check=True, capture_output=True,
    )  # fmt: skip
    return obj


def _expected_klp_sections(elf: ElfFile) -> set[str]:
    # every (object, SHF_ALLOC target) pair that a relocation against a klp name has
    tab = elf.symtab
    assert tab is not None
    names = tab.names()
    out = set()
    for sec in elf.relocation_sections:
        target = elf.sections[sec.sh_info]
        if not target.is_alloc:
            continue
        for r in elf.relocations(sec):
            name = names[r.sym]
            if name.startswith(".klp.sym.rela."):
                obj = name.split(".")[5]
            elif name.startswith(".klp.sym."):
                obj = name.split(".")[3]
            else:
                continue
            out.add(f".klp.rela.{obj}.{target.name.removeprefix('.')}")
    return out


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_convert_each_arch(arch: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    obj = _compile(arch, tmp_path)
    before = obj.read_bytes()
    src_elf = open_elf(obj)
    src_names = src_elf.symtab.names()  # type: ignore[union-attr]
    out = tmp_path / "lp.ko"
    assert main(["convert", str(obj), "-o", str(out)]) == 0
    assert obj.read_bytes() == before
    res = readelf(out, "-a")
    assert res.returncode == 0 and res.stderr == "", res.stderr

    elf = open_elf(out)
    assert elf.machine == ARCHES[arch][2]
    tab = elf.symtab
    assert tab is not None
    names = tab.names()
    # indices are stable: only the klp names changed, in place
    assert len(names) == len(src_names)
    renamed = {i for i, (a, b) in enumerate(zip(src_names, names, strict=True)) if a != b}
    assert {src_names[i] for i in renamed} == {".klp.sym.rela.klp_test.vmlinux.max_cstate,2"}
    klp = {i for i, n in enumerate(names) if n.startswith(".klp.sym.")}
    assert {names[i] for i in klp} == {
        ".klp.sym.vmlinux.total_forks,0", ".klp.sym.vmlinux.max_cstate,2",
        ".klp.sym.ext4.ext4_counter,1", ".klp.sym.vmlinux.some_static_helper,0",
    }  # fmt: skip
    assert all(tab[i].st_shndx == SHN.LIVEPATCH for i in klp)

    lay = elf.layout
    klp_secs = {s.name: s for s in elf.sections if s.sh_flags & SHF.RELA_LIVEPATCH}
    assert set(klp_secs) == _expected_klp_sections(src_elf)
    if arch != "ppc64le":  # ppc64 reaches data through .toc entries
        assert set(klp_secs) == {
            ".klp.rela.vmlinux.text", ".klp.rela.ext4.text.ext4_patch",
            ".klp.rela.vmlinux.data.klp_table",
        }  # fmt: skip
    for s in klp_secs.values():
        assert s.sh_type == SHT.RELA
        assert s.sh_flags == SHF.ALLOC | SHF.INFO_LINK | SHF.RELA_LIVEPATCH
        assert (s.sh_entsize, s.sh_addralign, s.sh_link) == (lay.rela_size, 8, tab.section.index)
        assert elf.sections[s.sh_info].name == "." + s.name.split(".", 4)[4]
    # no relocation against a livepatch symbol is left in an ordinary section
    for s in elf.relocation_sections:
        if s.sh_flags & SHF.RELA_LIVEPATCH or not elf.sections[s.sh_info].is_alloc:
            continue
        assert not set(elf.relocations(s).sym_array.tolist()) & klp, s.name
    ext4 = [k for name, k in klp_secs.items() if name.startswith(".klp.rela.ext4.")]
    assert {names[r.sym] for k in ext4 for r in elf.relocations(k)} == {
        ".klp.sym.ext4.ext4_counter,1"
    }

    result = check_module(elf, version=KernelRelease(6, 19))
    assert result.errors == [] and result.kernel_verdict == "accept"
    assert [d.rule for d in result.warnings] == []

    # idempotent and deterministic
    again = tmp_path / "again.ko"
    assert main(["convert", str(out), "-o", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()
    third = tmp_path / "third.ko"
    assert main(["convert", str(obj), "-o", str(third)]) == 0
    assert third.read_bytes() == out.read_bytes()


def test_loongarch_relocations_are_moved_as_they_are(tmp_path: Path) -> None:
    # Debian 12 has no LoongArch toolchain: relabel the x86_64 object as EM_LOONGARCH
    # (convert never interprets relocation types, it only moves entries), so the
    # ELF64 little-endian path is exercised with LoongArch's machine number.
    obj = _compile("x86_64", tmp_path)
    data = bytearray(obj.read_bytes())
    struct.pack_into("<H", data, 18, EM.LOONGARCH)
    la = tmp_path / "la.o"
    la.write_bytes(bytes(data))
    out = tmp_path / "la.ko"
    assert main(["convert", str(la), "-o", str(out)]) == 0
    elf = open_elf(out)
    assert elf.machine == EM.LOONGARCH
    assert elf.section_by_name(".klp.rela.vmlinux.text") is not None
    res = readelf(out, "-r")
    assert "R_LARCH_" in res.stdout


def test_unsafe_section_for_a_module_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = SOURCE + (
        '\nKLP_SYM(int, klp_key, ".klp.sym.ext4.some_key,0");\n'
        'int *const jt[] __attribute__((section("__jump_table"))) = { &klp_key };\n'
    )
    obj = _compile("x86_64", tmp_path, src)
    out = tmp_path / "lp.ko"
    assert main(["convert", str(obj), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "__jump_table" in err and ".klp.sym.ext4.some_key,0" in err
    assert not out.exists()


def test_malformed_annotation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = SOURCE + '\nKLP_SYM(int, klp_bad, ".klp.sym.vmlinux.no_position");\n'
    src += "int use_bad(void) { return klp_bad; }\n"
    obj = _compile("x86_64", tmp_path, src)
    out = tmp_path / "lp.ko"
    assert main(["convert", str(obj), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "symbol .klp.sym.vmlinux.no_position has an incorrectly formatted name" in err
    assert not out.exists()
