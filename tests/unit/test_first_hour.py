"""`klpelf convert` as a new user meets it: what it says when it cannot do the job.

Issue 13, "The first hour": a module with plain undefined symbols and no kernel
symbols, --sympos values the kernel would refuse, a signed input, a plain object,
--dry-run, a module tree that answers a module-local symbol and brings its own
Module.symvers, and Debian's placeholder System.map.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_autoconvert import KALLSYMS, SOURCE, SYMVERS
from test_symbols_sources import _objects

from klpelf.cli import main
from klpelf.elf.constants import SHN
from klpelf.elf.reader import open_elf

SAMPLE = Path(__file__).parents[2] / "samples" / "klp_sample" / "klp_sample.ko"


@pytest.fixture
def lp(tmp_path: Path) -> Path:
    """lp.o (gcc): total_forks (vmlinux, unique), max_cstate (vmlinux, twice),
    ext4_exported_fn (exported by ext4), printk (exported by vmlinux)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    (tmp_path / "lp.c").write_text(SOURCE)
    obj = tmp_path / "lp.o"
    subprocess.run(
        ["gcc", "-O2", "-ffreestanding", "-mcmodel=kernel", "-fno-pic", "-c", "-o", str(obj),
         str(tmp_path / "lp.c")], check=True,
    )  # fmt: skip
    (tmp_path / "kallsyms").write_text(KALLSYMS)
    (tmp_path / "Module.symvers").write_text(SYMVERS)
    return obj


def _auto(lp: Path, *more: str) -> list[str]:
    d = lp.parent
    return ["convert", str(lp), "-k", str(d / "kallsyms"), "--symvers",
            str(d / "Module.symvers"), *more]  # fmt: skip


def test_plain_undefined_without_kernel_says_what_it_needs(
    lp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = lp.parent / "out.ko"
    assert main(["convert", str(lp), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"klpelf: {lp}: nothing to convert: the module has no .klp.sym. ")
    assert "(max_cstate, total_forks, printk, ext4_exported_fn)" in err
    assert "--kernel" in err and "--symvers" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("sympos", "status", "says"),
    [
        ("vmlinux:max_cstate=3", 1, "symbol position 3 for symbol 'max_cstate' in object "
         "'vmlinux' not found (candidates: 1: 0xffffffff82b9f2a0 d; 2: 0xffffffff82c42c6c d)"),
        ("vmlinux:max_cstate=0", 1, "unresolvable ambiguity for symbol 'max_cstate'"),
        ("vmlinux:not_used=1", 2, "--sympos vmlinux:not_used: the module uses no undefined "
         "symbol not_used"),
        ("vmlinux:max_cstate=0x2", 2, "N must be a decimal number"),
        ("vmlinux:max_cstate=-1", 2, "sympos must be in 0.."),
        ("vmlinux:max_cstate=drivers/idle/intel_idle.c", 2,
         "source files need a vmlinux ELF among --kernel"),
    ],
)  # fmt: skip
def test_sympos_is_checked_before_writing(
    lp: Path, capsys: pytest.CaptureFixture[str], sympos: str, status: int, says: str
) -> None:
    out = lp.parent / "out.ko"
    assert main(_auto(lp, "-o", str(out), "--sympos", sympos)) == status
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not out.exists()


def test_dry_run_writes_nothing(lp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in lp.parent.iterdir())
    assert main(_auto(lp, "--dry-run", "--sympos", "vmlinux:max_cstate=2")) == 0
    out, err = capsys.readouterr()
    assert f"{lp}: would change: livepatch symbol .klp.sym.vmlinux.max_cstate,2" in out
    assert f"{lp}: would change: .klp.rela.vmlinux.text: 2 relocations" in out
    assert sorted(p.name for p in lp.parent.iterdir()) == before
    # a plain object is not a module: said, not silently made to look like one
    assert "not a kernel module (no .gnu.linkonce.this_module): a .modinfo section" in err
    assert main(["convert", str(lp)]) == 2
    assert "convert needs -o OUTPUT (or --dry-run)" in capsys.readouterr().err


def test_plain_object_is_said_to_be_one(lp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = lp.parent / "out.o"
    assert main(_auto(lp, "-o", str(out), "--sympos", "vmlinux:max_cstate=1")) == 0
    out_text, err = capsys.readouterr()
    assert "modinfo livepatch=Y added" in out_text
    assert err == (f"klpelf: warning: {out}: not a kernel module (no .gnu.linkonce.this_module):"
                   " a .modinfo section was added for livepatch=Y; the kernel loads only a "
                   "module that kbuild linked (modpost adds struct module)\n")  # fmt: skip
    elf = open_elf(out)
    assert elf.symtab is not None and elf.symtab.indices_where_shndx(SHN.LIVEPATCH)
    # a module (struct module in .gnu.linkonce.this_module) gets no such warning
    assert main(["convert", str(SAMPLE), "-o", str(lp.parent / "s.ko")]) == 0
    assert capsys.readouterr().err == ""


def test_signed_module_warns_and_says_how_to_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = tmp_path / "signed.ko"
    signed.write_bytes(SAMPLE.read_bytes() + b"\x01\x02PKCS7...~Module signature appended~\n")
    out = tmp_path / "lp.ko"
    assert main(["convert", str(signed), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"klpelf: warning: {out}: the module signature was dropped")
    assert f"scripts/sign-file sha512 certs/signing_key.pem certs/signing_key.x509 {out}" in err
    assert not open_elf(out).has_module_signature


MYMOD = {
    "mymod.c": """
    .text
    .globl init_module
init_module: ret
    .section .data,"aw"
mymod_state: .long 1
    .section .gnu.linkonce.this_module,"aw"
    .zero 64
    .section .modinfo,"a"
    .string "name=mymod"
    .string "vermagic=6.1.0-test SMP mod_unload "
""",
}

LP_OF_MYMOD = """
    .text
    .globl patched
patched:
    movl mymod_state(%rip), %eax
    call printk
    ret
    .section .gnu.linkonce.this_module,"aw"
    .zero 64
    .section .modinfo,"a"
    .string "name=lp"
"""


def test_module_tree_answers_a_module_local_symbol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("as") is None or shutil.which("ld") is None:
        pytest.skip("binutils is not installed")
    tree = tmp_path / "lib" / "modules" / "6.1.0-test"
    (tree / "kernel").mkdir(parents=True)
    (tree / "build").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["ld", "-r", "-o", str(tree / "kernel" / "mymod.ko"),
                    *_objects(work, MYMOD)], check=True)  # fmt: skip
    (tree / "modules.dep").write_text("kernel/mymod.ko:\n")
    # the headers' Module.symvers, where /lib/modules/R/build has it
    (tree / "build" / "Module.symvers").write_text("0x1\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n")
    (tmp_path / "kallsyms").write_text("ffffffff81100000 T printk\n")
    (lp := tmp_path / "lp.ko").write_bytes(b"")
    subprocess.run(["as", "--64", "-o", str(lp), "-"], input=LP_OF_MYMOD.encode(), check=True)
    out = tmp_path / "lp_out.ko"
    assert main(["convert", str(lp), "-o", str(out), "-k", str(tmp_path / "kallsyms"),
                 "-k", str(tree)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "livepatch symbol .klp.sym.mymod.mymod_state,0 (was mymod_state)" in printed
    assert ".klp.rela.mymod.text: 1 relocation" in printed
    tab = open_elf(out).symtab
    assert tab is not None and "printk" in tab.names()  # exported by vmlinux: left alone


def test_debian_placeholder_system_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    placeholder = tmp_path / "System.map-6.1.0-57-amd64"
    placeholder.write_text(
        "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n"
    )
    assert main(["resolve", "-k", str(placeholder), str(SAMPLE.with_name("klp_sample_lp.ko"))]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"klpelf: {placeholder}: Debian's placeholder System.map, with no symbols: the real one "
        "is in package linux-image-6.1.0-57-amd64-dbg (/usr/lib/debug/boot/System.map-6.1.0-57"
        "-amd64); on the running kernel /proc/kallsyms (as root) has them too\n"
    )
