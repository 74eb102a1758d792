"""Kernel symbol sources from ELF and directories: modules, vmlinux, module trees, Module.symvers.

Modules and vmlinux are built with the system assembler and linker (x86_64): each
source file of a module is one ``.o`` with its STT_FILE symbol, and ``ld -r`` joins
them as kbuild does, so a module can hold several local symbols of one name.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from klpelf.errors import InputError, SymbolSourceError
from klpelf.symbols.modtree import ModuleTree
from klpelf.symbols.sources import KernelSymbols, load_sources
from klpelf.symbols.symvers import parse_symvers

# helper: .text (a.c), .init.text (c.c), .text (b.c); dupdata: .data, .rodata;
# abs_dup: SHN_ABS 0x1234, 0, 0x10; entry exported (a __ksymtab_entry exists)
MODULE_SOURCES = {
    "a.c": """
    .text
helper: ret
    .globl entry
entry: call helper
    ret
    .section .data,"aw"
dupdata: .long 1
    .set abs_dup, 0x1234
    .section .modinfo,"a"
    .string "name=NAME"
    .string "vermagic=6.1.0-test SMP mod_unload "
""",
    "c.c": """
    .section .init.text,"ax",@progbits
helper: ret
    .set abs_dup, 0
""",
    "b.c": """
    .text
    .byte 0x90
helper: ret
    .section .rodata,"a"
dupdata: .long 2
    .set abs_dup, 0x10
    .globl __ksymtab_entry
__ksymtab_entry: .quad 0
""",
}

# dup_fn: local in x.c (.text) and y.c (.text), plus a weak and a global at one address
VMLINUX_SOURCES = {
    "x.c": """
    .text
    .globl _start
_start: ret
dup_fn: ret
    .globl same_addr
    .weak same_addr_w
same_addr:
same_addr_w: ret
    .section .rodata,"a"
    .string "Linux version 6.1.0-test (builder@host) (gcc) #1 SMP"
    .section .data,"aw"
    .globl kallsyms_names
kallsyms_names: .long 0
""",
    "y.c": """
    .text
    nop
dup_fn: ret
""",
}


def _tools() -> None:
    for tool in ("as", "ld"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: binutils)")


def _objects(tmp: Path, sources: dict[str, str]) -> list[str]:
    objs = []
    for name, body in sources.items():
        src = tmp / (name + ".s")
        src.write_text(f'    .file "{name}"\n{body}')
        obj = tmp / (name + ".o")
        subprocess.run(["as", "--64", "-o", str(obj), str(src)], check=True, capture_output=True)
        objs.append(str(obj))
    return objs


def build_module(tmp: Path, name: str = "testmod", filename: str | None = None) -> Path:
    """A module (ET_REL) as kbuild links one from several source files."""
    _tools()
    work = tmp / f"build-{name}"
    work.mkdir(exist_ok=True)
    srcs = dict(MODULE_SOURCES)
    srcs["a.c"] = srcs["a.c"].replace("NAME", name)
    out = tmp / (filename or f"{name}.ko")
    ld = ["ld", "-r", "-o", str(out), *_objects(work, srcs)]
    subprocess.run(ld, check=True, capture_output=True)
    return out


def build_vmlinux(tmp: Path) -> Path:
    _tools()
    work = tmp / "build-vmlinux"
    work.mkdir(exist_ok=True)
    out = tmp / "vmlinux"
    subprocess.run(["ld", "-o", str(out), *_objects(work, VMLINUX_SOURCES)], check=True,
                   capture_output=True)  # fmt: skip
    return out


def test_module_file_source(tmp_path: Path) -> None:
    ko = build_module(tmp_path)
    ks = load_sources([str(ko)])
    assert ks.has_object("testmod") and not ks.has_object("other")
    assert not ks.has_object("vmlinux")
    assert ks.release == "6.1.0-test"
    assert ks.description == f"{ko}: module testmod"
    mod = ks.module_file("testmod")
    assert mod is not None
    helper = mod.matches("helper")
    assert [
        (c.position, c.coming_position, c.section, c.source_file, c.offset) for c in helper
    ] == [
        (1, 1, ".text", "a.c", 0),
        (None, 2, ".init.text", "c.c", 0),
        (2, 3, ".text", "b.c", 8),
    ]
    assert [c.type for c in helper] == ["t", "t", "t"]
    absd = mod.matches("abs_dup")
    assert [(c.position, c.coming_position, c.address, c.type) for c in absd] == [
        (None, 1, 0x1234, "a"), (None, 2, 0, "a"), (None, 3, 0x10, "a"),
    ]  # fmt: skip
    (entry,) = mod.matches("entry")
    assert entry.type == "T"  # exported: upper case, as /proc/kallsyms shows it
    assert [c.type for c in mod.matches("dupdata")] == ["d", "r"]
    # the module's kallsyms once loaded: core symbols in symtab order
    names = [n for n, *_ in mod.kallsyms()]
    assert names.count("helper") == 2 and "abs_dup" not in names and "a.c" not in names
    assert [n for n, *_ in mod.kallsyms(coming=True)].count("helper") == 3


def test_module_without_kallsyms_all_keeps_text_only(tmp_path: Path) -> None:
    ks = load_sources([str(build_module(tmp_path))], kallsyms_all=False)
    mod = ks.module_file("testmod")
    assert mod is not None
    assert [c.position for c in mod.matches("dupdata")] == [None, None]
    assert [c.position for c in mod.matches("helper")] == [1, None, 2]


@pytest.mark.parametrize("compress", ["xz", "zst", "gz"])
def test_compressed_module_file(tmp_path: Path, compress: str) -> None:
    ko = build_module(tmp_path)
    raw = ko.read_bytes()
    if compress == "xz":
        data = lzma.compress(raw)
    elif compress == "gz":
        data = gzip.compress(raw)
    else:
        data = zstandard.ZstdCompressor().compress(raw)
    packed = tmp_path / f"packed.{compress}"  # the name says nothing: content decides
    packed.write_bytes(data)
    ks = load_sources([str(packed)])
    assert ks.has_object("testmod")


def test_vmlinux_elf_source(tmp_path: Path) -> None:
    vmlinux = build_vmlinux(tmp_path)
    ks = load_sources([str(vmlinux)])
    assert ks.has_object("vmlinux") and ks.release == "6.1.0-test"
    assert ks.description.startswith(f"{vmlinux}: vmlinux 6.1.0-test, ")
    dup = ks.vmlinux_matches("dup_fn")
    assert [(c.position, c.source_file, c.section) for c in dup] == [
        (1, "x.c", ".text"), (2, "y.c", ".text"),
    ]  # fmt: skip
    assert dup[0].address is not None and dup[1].address is not None
    assert dup[0].address < dup[1].address
    (same,) = ks.vmlinux_matches("same_addr")
    assert same.type == "T" and same.source_file is None  # globals follow every file's locals
    (weak,) = ks.vmlinux_matches("same_addr_w")
    assert weak.type == "W"
    assert ks.vmlinux_matches("kallsyms_names") == []  # scripts/kallsyms leaves it out


def test_vmlinux_hints_for_kallsyms(tmp_path: Path) -> None:
    vmlinux = build_vmlinux(tmp_path)
    nm = subprocess.run(["nm", "-n", str(vmlinux)], capture_output=True, text=True, check=True)
    kallsyms = tmp_path / "dump"
    kallsyms.write_text(nm.stdout)
    ks = load_sources([str(kallsyms), str(vmlinux)])
    dup = ks.vmlinux_matches("dup_fn")
    assert [c.source_file for c in dup] == ["x.c", "y.c"]


def test_stripped_vmlinux(tmp_path: Path) -> None:
    vmlinux = build_vmlinux(tmp_path)
    subprocess.run(["strip", str(vmlinux)], check=True)
    with pytest.raises(SymbolSourceError, match="no symbol table"):
        load_sources([str(vmlinux)])


def _tree(tmp: Path, index: str) -> Path:
    root = tmp / "lib/modules/6.1.0-test"
    sub = root / "kernel/fs/foo"
    sub.mkdir(parents=True)
    build_module(tmp, "snd_hda_intel", filename="snd-hda-intel.ko")
    shutil.move(tmp / "snd-hda-intel.ko", sub / "snd-hda-intel.ko")
    build_module(tmp, "nfsd")
    (sub / "nfsd.ko.xz").write_bytes(lzma.compress((tmp / "nfsd.ko").read_bytes()))
    (root / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    if index == "dep":
        (root / "modules.dep").write_text(
            "kernel/fs/foo/snd-hda-intel.ko:\nkernel/fs/foo/nfsd.ko.xz: kernel/fs/foo/x.ko\n"
        )
    elif index == "order":
        (root / "modules.order").write_text(
            "kernel/fs/foo/snd-hda-intel.ko\nkernel/fs/foo/nfsd.ko\n"
        )
    return root


@pytest.mark.parametrize("index", ["dep", "order", "walk"])
def test_module_tree(tmp_path: Path, index: str) -> None:
    root = _tree(tmp_path, index)
    ks = load_sources([str(root)])
    assert ks.has_object("snd_hda_intel") and ks.has_object("snd-hda-intel")  # as modprobe
    assert ks.has_object("nfsd") and not ks.has_object("ext4") and ks.is_builtin("ext4")
    mod = ks.module_file("snd-hda-intel")
    assert mod is not None and mod.name == "snd_hda_intel"
    nfsd = ks.module_file("nfsd")
    assert nfsd is not None and nfsd.path.endswith("nfsd.ko.xz")
    assert ks.release == "6.1.0-test"
    tree = ks.trees[0]
    assert tree.index_file == {"dep": "modules.dep", "order": "modules.order", "walk": None}[index]


def test_module_tree_malformed_dep(tmp_path: Path) -> None:
    root = tmp_path / "mods"
    root.mkdir()
    (root / "modules.dep").write_text("kernel/a.ko:\nthis line has no colon\n")
    with pytest.raises(SymbolSourceError) as exc:
        ModuleTree(str(root))
    assert str(exc.value).startswith(f"{root}/modules.dep:2: malformed modules.dep line")


def test_directory_without_modules(tmp_path: Path) -> None:
    with pytest.raises(SymbolSourceError, match=r"no modules\.dep, modules\.order or module files"):
        load_sources([str(tmp_path)])


def test_unreadable_sources(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        load_sources([str(tmp_path / "missing")])
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(SymbolSourceError, match="empty file"):
        load_sources([str(tmp_path / "empty")])


SYMVERS = """\
0x12345678\tschedule\tvmlinux\tEXPORT_SYMBOL\t
0x9abcdef0\text4_foo\tfs/ext4/ext4\tEXPORT_SYMBOL_GPL\t
0x00000001\tsnd_bar\tsound/pci/hda/snd-hda-codec\tEXPORT_SYMBOL_GPL\tSND_NS
"""


def test_module_symvers(tmp_path: Path) -> None:
    from klpelf.symbols.resolve import exported_by

    p = tmp_path / "exports"
    p.write_text(SYMVERS)
    ks = load_sources([str(p)])
    assert exported_by(ks, "schedule") == "vmlinux"
    assert exported_by(ks, "ext4_foo") == "ext4"
    assert exported_by(ks, "snd_bar") == "snd_hda_codec"
    assert exported_by(ks, "nope") is None
    assert ks.exports["snd_bar"].namespace == "SND_NS"
    assert ks.description == f"{p}: Module.symvers, 3 exports"


def test_module_symvers_old_layouts() -> None:
    old = parse_symvers("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL\n", "x")
    assert old["foo"].objname == "vmlinux"
    ns_third = parse_symvers("0x1\tfoo\tNS\tdrivers/bar\tEXPORT_SYMBOL_GPL\n", "x")
    assert (ns_third["foo"].objname, ns_third["foo"].namespace) == ("bar", "NS")


def test_module_symvers_malformed(tmp_path: Path) -> None:
    p = tmp_path / "Module.symvers"
    p.write_text(SYMVERS + "0x1\tonly-two\n")
    with pytest.raises(SymbolSourceError) as exc:
        load_sources([str(p)])
    assert str(exc.value).startswith(f"{p}:4: malformed Module.symvers line")


def test_forced_kind(tmp_path: Path) -> None:
    p = tmp_path / "System.map-6.1.0"
    p.write_text("ffffffff81000000 T schedule\nffffffff82000000 D kallsyms_names\n")
    assert load_sources([str(p)]).texts[0].kind == "System.map"
    assert load_sources([f"kallsyms:{p}"]).texts[0].kind == "kallsyms"
    q = tmp_path / "dump"
    q.write_bytes(p.read_bytes())
    assert load_sources([str(q)]).texts[0].kind == "kallsyms"
    assert load_sources([f"system.map:{q}"]).texts[0].kind == "System.map"


def test_running_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    release = os.uname().release
    root = _tree(tmp_path, "dep").parent
    (root / "6.1.0-test").rename(root / release)
    dump = tmp_path / "kallsyms"
    dump.write_text("ffffffff81000000 T schedule\nffffffffc0000000 t nfsd_open\t[nfsd]\n")
    ks = KernelSymbols.running(kallsyms=str(dump), modules=str(root))
    assert ks.is_running and ks.release == release
    assert ks.description.startswith(f"running kernel {release}: {dump}: kallsyms")
    assert ks.loaded_module("nfsd") is not None and ks.has_object("snd_hda_intel")
    ks = KernelSymbols.running(kallsyms=str(dump), modules=str(tmp_path / "none"))
    assert "no module tree" in ks.description
