"""Build small ELF objects for the tests with the system and cross toolchains."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from klpelf.elf.reader import open_elf


@dataclass(frozen=True)
class Target:
    name: str
    as_cmd: list[str]
    #: a few lines of assembly with calls, data references and a local, per arch
    asm: str


_COMMON = """
    .section .data.counter,"aw"
    .globl shared_counter
shared_counter: .long 0
    .section .rodata.str1.1,"aMS",@progbits,1
msg: .string "hello"
"""

TARGETS = [
    Target(
        "x86_64",
        ["as", "--64"],
        """
    .text
    .globl f
    .type f,@function
f:  call ext_func
    movq ext_var(%rip), %rax
    leaq msg(%rip), %rdi
    jmp local_fn
local_fn: ret
    .section .data.ptrs,"aw"
    .quad ext_func
    .quad local_fn + 8
"""
        + _COMMON,
    ),
    Target(
        "i386",
        ["as", "--32"],
        """
    .text
    .globl f
f:  call ext_func
    movl ext_var, %eax
    movl $msg, %eax
local_fn: ret
    .section .data.ptrs,"aw"
    .long ext_func
"""
        + _COMMON,
    ),
    Target(
        "aarch64",
        ["aarch64-linux-gnu-as"],
        """
    .text
    .globl f
f:  bl ext_func
    adrp x0, ext_var
    add x0, x0, :lo12:ext_var
    b local_fn
local_fn: ret
    .section .data.ptrs,"aw"
    .xword ext_func
"""
        + _COMMON,
    ),
    Target(
        "ppc64le",
        ["powerpc64le-linux-gnu-as", "-a64", "-mlittle"],
        """
    .text
    .globl f
f:  bl ext_func
    nop
    addis 3, 2, ext_var@toc@ha
    ld 3, ext_var@toc@l(3)
    b local_fn
local_fn: blr
    .section .data.ptrs,"aw"
    .quad ext_func
"""
        + _COMMON,
    ),
    Target(
        "s390x",
        ["s390x-linux-gnu-as", "-m64"],
        """
    .text
    .globl f
f:  brasl %r14, ext_func@PLT
    larl %r1, ext_var
    j local_fn
local_fn: br %r14
    .section .data.ptrs,"aw"
    .quad ext_func
"""
        + _COMMON,
    ),
    Target(
        "s390-31",
        ["s390x-linux-gnu-as", "-m31"],
        """
    .text
    .globl f
f:  bras %r14, local_fn
local_fn: br %r14
    .long ext_var
    .section .data.ptrs,"aw"
    .long ext_func
"""
        + _COMMON,
    ),
]


#: what modpost's <module>.mod.c adds to a module: the section of struct module (its
#: contents do not matter to klpelf), without which the loader refuses an object
MODULE_STRUCT = """
    .section .gnu.linkonce.this_module,"aw"
    .zero 64
"""


def module_source(text: str, name: str = "m") -> str:
    """Assembly of a module named ``name`` whose .text is ``text``: with .modinfo's
    name= and :data:`MODULE_STRUCT`, the loader takes it as far as its relocations."""
    return f"""
    .text
{text}
    .section .modinfo,"a"
    .string "name={name}"
""" + MODULE_STRUCT


def check_refused(name: str, reloc: str, release: str, dest: Path) -> tuple[object, ...]:
    """(verdict, errno, kernel message) of ``klpelf check --kernel-release release`` on
    a module named "m" built by GNU as for target ``name``, with one ``reloc`` in .text
    against an undefined symbol: what dmesg says when apply_relocate_add() stops."""
    from klpelf.operations.check import check

    target = next(t for t in TARGETS if t.name == name)
    text = f"g:  nop\n    .reloc g, {reloc}, ext_func"
    doc = check(assemble(target, dest, module_source(text)), version=release).to_json()
    return doc["verdict"], doc["errno"], doc["kernel_message"]


def assemble(target: Target, dest: Path, source: str | None = None) -> Path:
    """Assemble ``source`` (default: the target's sample) into ``dest``; skip if no assembler."""
    if shutil.which(target.as_cmd[0]) is None:
        pytest.skip(f"{target.as_cmd[0]} is not installed (Debian: binutils for {target.name})")
    src = dest.with_suffix(".s")
    src.write_text(source if source is not None else target.asm)
    subprocess.run([*target.as_cmd, "-o", str(dest), str(src)], check=True, capture_output=True)
    return dest


def readelf(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["readelf", "-W", *args, str(path)],
        capture_output=True,
        text=True,
        env={"LC_ALL": "C"},
        check=False,
    )


def readelf_clean(path: Path) -> str:
    """``readelf -a -W`` of ``path``, asserting it says nothing on stderr."""
    r = subprocess.run(["readelf", "-a", "-W", str(path)], capture_output=True, text=True,
                       env={"LC_ALL": "C"}, check=False)  # fmt: skip
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout


def relocations(path: Path) -> dict[str, list[tuple[int, str, int]]]:
    """Target section -> (offset, symbol name, addend), read back with klpelf."""
    elf = open_elf(path)
    elf.decode_all()
    tab = elf.symtab
    assert tab is not None
    out: dict[str, list[tuple[int, str, int]]] = {}
    for rs in elf.relocation_sections:
        target = rs.info_section
        assert target is not None
        for r in elf.relocations(rs):
            name = tab.name(r.sym) or elf.section(tab[r.sym].shndx).name
            out.setdefault(target.name, []).append((r.r_offset, name, r.r_addend or 0))
    return out
