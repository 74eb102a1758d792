"""`klpelf convert --kernel/--symvers`: automatic mode on a gcc-built object."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_convert import MODULE_TAIL

from klpelf.cli import main
from klpelf.elf.constants import SHF, SHN
from klpelf.elf.reader import open_elf
from klpelf.errors import UsageError
from klpelf.klp.autoconvert import SymposChoice
from klpelf.klp.check import check_module, kernel_resolver
from klpelf.release import KernelRelease
from klpelf.symbols.sources import load_sources

SOURCE = r"""
extern unsigned long total_forks;     /* vmlinux, not exported, unique */
extern int max_cstate;                /* vmlinux, not exported, twice */
extern int ext4_exported_fn(int);     /* exported by the ext4 module */
extern int printk(const char *, ...); /* exported by vmlinux */

int livepatch_show(int x)
{
    printk("%lu %d\n", total_forks, max_cstate);
    return ext4_exported_fn(x);
}
"""

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81100000 T printk
ffffffff82b9f2a0 d max_cstate
ffffffff82c42c6c d max_cstate
ffffffff83f83070 B total_forks
ffffffffc0100000 t ext4_exported_fn\t[ext4]
"""

SYMVERS = """\
0x12345678\tprintk\tvmlinux\tEXPORT_SYMBOL\t
0x9abcdef0\text4_exported_fn\tfs/ext4/ext4\tEXPORT_SYMBOL_GPL\t
"""


@pytest.fixture
def built(tmp_path: Path) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    (tmp_path / "lp.c").write_text(SOURCE + MODULE_TAIL)
    obj = tmp_path / "lp.o"
    subprocess.run(
        ["gcc", "-O2", "-ffreestanding", "-mcmodel=kernel", "-fno-pic", "-c", "-o", str(obj),
         str(tmp_path / "lp.c")], check=True,
    )  # fmt: skip
    (tmp_path / "kallsyms").write_text(KALLSYMS)
    (tmp_path / "Module.symvers").write_text(SYMVERS)
    return tmp_path


def test_automatic_mode(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = built / "lp.ko"
    args = ["convert", str(built / "lp.o"), "-o", str(out), "--kernel", str(built / "kallsyms"),
            "--symvers", str(built / "Module.symvers")]  # fmt: skip
    # max_cstate is ambiguous: an error listing the candidates, and no output file
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "symbol max_cstate (relocation " in err
    assert "2 symbols of that name in vmlinux" in err and "--sympos vmlinux:max_cstate=N" in err
    assert not out.exists()

    assert main([*args, "--sympos", "vmlinux:max_cstate=2"]) == 0
    printed = capsys.readouterr().out
    assert "livepatch symbol .klp.sym.vmlinux.total_forks,0 (was total_forks)" in printed
    elf = open_elf(out)
    tab = elf.symtab
    assert tab is not None
    names = tab.names()
    assert "printk" in names  # exported by vmlinux: stays an ordinary undefined symbol
    for klp in (".klp.sym.vmlinux.total_forks,0", ".klp.sym.vmlinux.max_cstate,2",
                ".klp.sym.ext4.ext4_exported_fn,0"):  # fmt: skip
        assert tab[names.index(klp)].st_shndx == SHN.LIVEPATCH
    klp_secs = sorted(s.name for s in elf.sections if s.sh_flags & SHF.RELA_LIVEPATCH)
    assert klp_secs == [".klp.rela.ext4.text", ".klp.rela.vmlinux.text"]

    # the output passes check against the same kernel
    ks = load_sources([str(built / "kallsyms"), str(built / "Module.symvers")])
    resolver, loaded = kernel_resolver(ks)
    res = check_module(elf, version=KernelRelease(6, 1), resolver=resolver, loaded=loaded)
    assert res.errors == [] and res.kernel_verdict == "accept"

    # idempotent: converting the output again changes nothing
    again = built / "again.ko"
    src_args = [
        "convert",
        str(out),
        "-o",
        str(again),
        *args[4:],
        "--sympos",
        "vmlinux:max_cstate=2",
    ]
    assert main(src_args) == 0
    assert again.read_bytes() == out.read_bytes()


def test_automatic_mode_needs_symvers(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = built / "lp.ko"
    assert main(["convert", str(built / "lp.o"), "-o", str(out), "--kernel",
                 str(built / "kallsyms")]) == 1  # fmt: skip
    assert "needs the kernel's Module.symvers" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_symbol(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (built / "kallsyms").write_text(KALLSYMS.replace("B total_forks", "B other_sym"))
    out = built / "lp.ko"
    assert main(["convert", str(built / "lp.o"), "-o", str(out), "--kernel",
                 str(built / "kallsyms"), "--symvers", str(built / "Module.symvers"),
                 "--sympos", "vmlinux:max_cstate=1"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "symbol total_forks (relocation" in err and "not in vmlinux" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("vm.linux:total_forks=1", "object name must be"),
        ("vmlinux:total_forks=-1", "sympos must be in 0.."),
        ("vmlinux:total_forks=+99999999999999999999999", "sympos must be in 0.."),
        ("vmlinux:tot,al=1", "symbol name must be"),
        ("vmlinux:total_forks", "expected OBJ:SYMBOL=N"),
        ("vmlinux=1", "expected OBJ:SYMBOL=N"),
        (":total_forks=1", "expected OBJ:SYMBOL=N"),
        ("vmlinux:=1", "expected OBJ:SYMBOL=N"),
        ("vmlinux:total_forks=", "expected OBJ:SYMBOL=N"),
    ],
)
def test_bad_sympos_is_a_usage_error(spec: str, says: str) -> None:
    with pytest.raises(UsageError, match=says) as e:
        SymposChoice.parse(spec)
    assert spec in str(e.value) and "\n" not in str(e.value)


def test_sympos_values() -> None:
    assert SymposChoice.parse("vmlinux:max_cstate=2") == ("vmlinux", "max_cstate", 2, None)
    assert SymposChoice.parse("ext4:f=fs/ext4/x.c") == ("ext4", "f", None, "fs/ext4/x.c")


# the same patch with its struct klp_patch (external fields first, as
# include/linux/livepatch.h lays them out; 5 internal words of made-up size)
PATCH = r"""
struct module { char name[56]; };  /* as modpost's .mod.c defines it, in short */
struct module __this_module __attribute__((section(".gnu.linkonce.this_module"))) = {
    .name = "lp2" };
struct klp_func { const char *old_name; void *new_func; unsigned long old_sympos;
                  long internal[5]; };
struct klp_callbacks { void *pre, *post, *pre_un, *post_un; _Bool enabled; };
struct klp_object { const char *name; struct klp_func *funcs;
                    struct klp_callbacks callbacks; long internal[3]; };
struct klp_patch { struct module *mod; struct klp_object *objs; void *states;
                   _Bool replace; long internal[4]; };
static struct klp_func vm_funcs[] = { { .old_name = "cmdline_proc_show",
                                        .new_func = livepatch_show }, { } };
static struct klp_func ext4_funcs[] = { { .old_name = "ext4_show",
                                          .new_func = livepatch_show }, { } };
struct klp_object objs[] = { { .funcs = vm_funcs },
#ifdef PATCH_EXT4
                             { .name = "ext4", .funcs = ext4_funcs },
#endif
                             { } };
struct klp_patch patch = { .mod = &__this_module, .objs = objs };
"""


@pytest.mark.parametrize("patches_ext4", [False, True])
def test_exports_of_unpatched_modules_stay_ordinary(built: Path, patches_ext4: bool) -> None:
    # livepatch applies the relocations of the objects the patch declares: an export of
    # a module it does not patch is the loader's (depends= loads that module first)
    src = built / "lp2.c"
    src.write_text(SOURCE + PATCH)
    obj = built / "lp2.o"
    subprocess.run(
        ["gcc", "-O2", "-ffreestanding", "-mcmodel=kernel", "-fno-pic", "-c", "-o", str(obj),
         *(["-DPATCH_EXT4"] if patches_ext4 else []), str(src)], check=True,
    )  # fmt: skip
    out = built / "lp2.ko"
    assert main(["convert", str(obj), "-o", str(out), "--kernel", str(built / "kallsyms"),
                 "--symvers", str(built / "Module.symvers"),
                 "--sympos", "vmlinux:max_cstate=2"]) == 0  # fmt: skip
    elf = open_elf(out)
    tab = elf.symtab
    assert tab is not None
    names = tab.names()
    klp = ".klp.sym.ext4.ext4_exported_fn,0"
    if patches_ext4:
        assert tab[names.index(klp)].st_shndx == SHN.LIVEPATCH
        assert elf.section_by_name(".klp.rela.ext4.text") is not None
    else:
        assert klp not in names and tab[names.index("ext4_exported_fn")].st_shndx == SHN.UNDEF
        assert not any(s.name.startswith(".klp.rela.ext4.") for s in elf.sections)
    assert ".klp.sym.vmlinux.total_forks,0" in names
