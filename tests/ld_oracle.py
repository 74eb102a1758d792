"""GNU ld of another architecture as an oracle for the arch/ twins of apply_relocate_add().

The same relocations, applied twice at the same addresses, must give the same bytes:

* :func:`link` assembles a few lines with the cross ``as`` (Debian's
  binutils-<triple>), then links the object with the cross GNU ld into a static
  executable (not ``-r``): every section named in ``sections`` an output section of
  its own (a two-line linker script) at its address (``--section-start``), every
  undefined symbol at its value (``--defsym``).  The
  result's section bytes are read back with the cross ``objcopy``, so neither side
  of the comparison goes through klpelf's reader;
* :func:`twin` hands the object's relocation section of one target section to
  klpelf's twin (:func:`klpelf.arch.arch_for`) with the same addresses: symbol
  values as the module loader's ``simplify_symbols()`` leaves them (a defined
  symbol at its section's address plus st_value, an undefined one at the value
  given to ld), the target at its address, a :class:`~klpelf.arch.ModuleLayout`
  with every section named in ``sections``.

The kernel deliberately differs from ld in places (module PLTs and stubs instead
of ld's, its own GOT, the TOC pointer of the module's .toc): a test documents each
such case and checks the twin against the kernel's formula there instead.

Missing cross binutils skip the test with the package to install, and fail it
under ``CI=true`` (.ci/run installs them).  loongarch64's come from a cached trixie
chroot (tests/cross_chroot.py; bookworm has none), which .ci/run prepares and the
tools run in, on the same files (the working directory is bind-mounted).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from klpelf.arch import ModuleLayout, WriteFacts, arch_for
from klpelf.elf.constants import SHN
from klpelf.elf.reader import open_elf
from klpelf.release import KernelRelease

__all__ = ["CROSS", "Cross", "Linked", "cross", "link", "twin"]


@dataclass(frozen=True)
class Cross:
    """One architecture's cross binutils."""

    name: str
    #: the tools' prefix (``s390x-linux-gnu-``)
    prefix: str
    #: the Debian package that has them
    package: str
    as_flags: tuple[str, ...] = ()
    #: ld's emulation (``-m``)
    emulation: str = ""
    #: the tools run in this chroot toolchain (tests/cross_chroot.py), not the host's
    chroot: str | None = None

    def tool(self, name: str) -> str:
        return self.prefix + name

    def root(self) -> Path | None:
        """The prepared chroot of a chroot toolchain (None: not prepared)."""
        if self.chroot is None:
            return None
        from cross_chroot import TOOLCHAINS, ready

        tc = TOOLCHAINS[self.chroot]
        return tc.root if ready(tc) else None

    def missing(self) -> list[str]:
        """The tools of this architecture that are not on PATH (or in its chroot)."""
        tools = ("as", "ld", "objcopy")
        if self.chroot is not None:
            root = self.root()
            if root is None:
                return list(tools)
            bindir = str(root / "usr" / "bin")
            return [t for t in tools if shutil.which(self.tool(t), path=bindir) is None]
        return [t for t in tools if shutil.which(self.tool(t)) is None]

    def run(self, cmd: Sequence[str], cwd: Path) -> None:
        """``cmd`` (paths relative to ``cwd``) on the host or in the chroot."""
        argv = list(cmd)
        root = self.root()
        if root is not None:
            from cross_chroot import chroot_argv

            argv = chroot_argv(root, cwd, argv)
        _run(argv, cwd)


CROSS: dict[str, Cross] = {
    c.name: c
    for c in (
        Cross("x86_64", "", "binutils", ("--64",), "elf_x86_64"),
        Cross("s390x", "s390x-linux-gnu-", "binutils-s390x-linux-gnu", ("-m64",), "elf64_s390"),
        Cross(
            "ppc64le",
            "powerpc64le-linux-gnu-",
            "binutils-powerpc64le-linux-gnu",
            ("-a64", "-mlittle"),
            "elf64lppc",
        ),
        Cross("aarch64", "aarch64-linux-gnu-", "binutils-aarch64-linux-gnu", (), "aarch64linux"),
        Cross("loongarch64", "loongarch64-linux-gnu-",
              "binutils-loongarch64-linux-gnu (trixie): .ci/run prepares the chroot, or "
              "PYTHONPATH=tests python -m cross_chroot loongarch64",
              ("-mabi=lp64d", "-mno-relax"), "elf64loongarch", chroot="loongarch64"),
    )
}


def cross(name: str) -> Cross:
    """The cross binutils of ``name``; skips the test (fails it under CI=true) when
    they are not installed."""
    c = CROSS[name]
    missing = c.missing()
    if missing:
        reason = f"{', '.join(map(c.tool, missing))} not found: install {c.package}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return c


def _run(cmd: Sequence[str], cwd: Path) -> None:
    env = {**os.environ, "LC_ALL": "C"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=cwd)
    if proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")


@dataclass
class Linked:
    """An object as assembled and the executable ld made of it."""

    cross: Cross
    obj: Path
    exe: Path
    sections: Mapping[str, int]
    symbols: Mapping[str, int]
    _bytes: dict[str, bytes] = field(default_factory=dict)

    def section(self, name: str) -> bytes:
        """The bytes of output section ``name`` as ld wrote them (read by objcopy)."""
        if name not in self._bytes:
            out = self.exe.with_name(f"{self.exe.name}{name.replace('/', '_')}.bin")
            self.cross.run([self.cross.tool("objcopy"), "-O", "binary", "-j", name,
                            self.exe.name, out.name], self.exe.parent)  # fmt: skip
            self._bytes[name] = out.read_bytes()
        return self._bytes[name]


def link(
    c: Cross,
    asm: str,
    workdir: Path,
    *,
    sections: Mapping[str, int],
    symbols: Mapping[str, int],
    ld_args: Sequence[str] = (),
    name: str = "t",
) -> Linked:
    """Assemble ``asm`` and link it at fixed addresses (see the module docstring).

    ``ld_args``: more options, e.g. ``--no-relax`` or a ppc64 ``--no-toc-optimize``,
    where ld would otherwise rewrite the instructions instead of only relocating.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    src, obj, exe = workdir / f"{name}.s", workdir / f"{name}.o", workdir / f"{name}.exe"
    src.write_text(asm)
    c.run([c.tool("as"), *c.as_flags, "-o", obj.name, src.name], workdir)
    # each section of ``sections`` its own output section of the same name (the default
    # script would merge .data.foo into .data); --section-start places them
    script = workdir / f"{name}.ld"
    script.write_text(
        "SECTIONS {\n" + "".join(f"  {sec} : {{ *({sec}) }}\n" for sec in sections) + "}\n"
    )
    cmd = [c.tool("ld"), "-m", c.emulation, "-static", "-nostdlib", "--entry=0", "-o", exe.name]
    cmd += ["-T", script.name]
    cmd += [f"--section-start={sec}={addr:#x}" for sec, addr in sections.items()]
    cmd += [f"--defsym={sym}={value:#x}" for sym, value in symbols.items()]
    c.run([*cmd, *ld_args, obj.name], workdir)
    return Linked(c, obj, exe, sections, symbols)


def twin(
    linked: Linked,
    section: str,
    release: KernelRelease,
    *,
    prepare: Callable[[ModuleLayout], None] | None = None,
) -> tuple[WriteFacts, bytes]:
    """klpelf's twin applied to the relocations of ``section`` in the object, at the
    addresses ld was given: the facts, and the section's bytes after the walk.

    ``prepare``: called with the layout before the walk, for the machine state a test
    sets (a ppc64 TOC, an s390x GOT base).
    """
    elf = open_elf(linked.obj)
    arch = arch_for(elf.machine)
    assert arch is not None, f"{elf.machine_name}: no arch/ twin"
    target = elf.section_by_name(section)
    assert target is not None, section
    rela = next(s for s in elf.relocation_sections if s.sh_info == target.index)
    relocs = elf.relocations(rela)
    addresses = {s.index: linked.sections[s.name] for s in elf if s.name in linked.sections}
    symtab = elf.symtab
    assert symtab is not None

    def symbol_value(index: int) -> int | None:
        sym = symtab[index]
        if index == 0:  # the null symbol: value 0 (a stack relocation's operand)
            return 0
        if sym.st_shndx == SHN.UNDEF:
            return linked.symbols.get(sym.name)
        if sym.st_shndx == SHN.ABS:
            return sym.st_value
        base = addresses.get(sym.shndx)
        return None if base is None else base + sym.st_value

    layout = ModuleLayout(elf, addresses)
    if prepare is not None:
        prepare(layout)
    data = bytearray(target.data)
    facts = arch.write_relocate_add(relocs, data, release, symbol_value=symbol_value,
                                    address=addresses[target.index], layout=layout)  # fmt: skip
    return facts, bytes(data)
