"""Compile one translation unit as the tree's kbuild does, original and fixed.

The original is built by kbuild itself (``make -C BUILD [M=SOURCE] path/unit.o`` with
``KCFLAGS=-ffunction-sections -fdata-sections``, so that every function and datum is
its own section for the diff); kbuild records the exact command line in the unit's
``.unit.o.cmd`` (scripts/Kbuild.include, if_changed), objtool's run included.  The
fixed copy is compiled with that same command, its source, object and dependency file
redirected, and ``-ffile-prefix-map`` so that ``__FILE__`` (WARN, BUG, pr_* call
sites) names the original's path, as it does in the original build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Final

from klpelf._record import FrozenRecord
from klpelf.errors import InputError, KlpError

__all__ = ["SECTIONS_FLAGS", "Tree", "Unit", "make"]

#: one section per function and per datum: what the diff compares
SECTIONS_FLAGS = "-ffunction-sections -fdata-sections"


def _first_error(text: str) -> str:
    # gcc's first 'FILE:LINE:COL: error: ...', else make's last '*** ...' or last line
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    gcc = [ln for ln in lines if ": error: " in ln]
    other = [ln for ln in lines if "error" in ln.lower()]
    return gcc[0] if gcc else (other or lines or ["no output"])[-1]


def make(build: str, args: Sequence[str]) -> None:
    """``make -C build args``; a failure is one line: kbuild's (first) error."""
    if shutil.which("make") is None:
        raise InputError("make is not installed (Debian: apt-get install build-essential)")
    r = subprocess.run(["make", "-s", "-C", build, *args], capture_output=True, text=True,
                       check=False)  # fmt: skip
    if r.returncode != 0:
        why = _first_error(r.stderr + r.stdout)
        raise KlpError(f"make {' '.join(args)} failed in {build}: {why}")


class Unit(FrozenRecord):
    """One unit's original build: the kbuild command and the object it belongs to."""

    _fields = ("path", "command", "source_token", "object_token", "objname")
    __slots__ = _fields

    def __init__(self, path: str, command: str, source_token: str, object_token: str,
                 objname: str) -> None:  # fmt: skip
        #: the .c file relative to the source tree
        self.path: Final = path
        #: the shell command kbuild ran (from the build directory)
        self.command: Final = command
        #: the source and object as the command names them
        self.source_token: Final = source_token
        self.object_token: Final = object_token
        #: ``vmlinux`` or the module's name (KBUILD_MODNAME of a -DMODULE unit)
        self.objname: Final = objname


class Tree(FrozenRecord):
    """A prepared source tree: a kernel tree (``build`` is ``source``), or an external
    module's directory built against ``build`` (``make M=source``)."""

    _fields = ("source", "build")
    __slots__ = _fields

    def __init__(self, source: str, build: str | None = None) -> None:
        self.source: Final = os.path.abspath(source)
        self.build: Final = os.path.abspath(build) if build is not None else self.source
        if not os.path.isdir(self.source):
            raise InputError("not a directory", path=source)
        if not os.path.isfile(os.path.join(self.build, "include", "generated", "autoconf.h")):
            raise InputError("not a prepared kernel tree (no include/generated/autoconf.h): "
                             "run make olddefconfig modules_prepare there with the target's "
                             "config first", path=self.build)  # fmt: skip

    @property
    def external(self) -> bool:
        return self.build != self.source

    def make_args(self) -> list[str]:
        """What every make in this tree is given besides its targets.

        An external module: ``M=``.  A kernel tree: ``KERNELRELEASE=`` the release it
        was prepared with (include/generated/utsrelease.h), because a make in the tree
        rewrites utsrelease.h from include/config/kernel.release (the Makefile's
        filechk_utsrelease.h), which ``make KERNELRELEASE=6.1.0-57-amd64
        modules_prepare`` (Debian's release, not the source's 6.1.192) leaves as it
        was: the module's vermagic would no longer be the target's.
        """
        if self.external:
            return [f"M={self.source}"]
        path = os.path.join(self.build, "include", "generated", "utsrelease.h")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                m = re.search(r'#define UTS_RELEASE "([^"]+)"', f.read())
        except OSError:
            m = None
        return [f"KERNELRELEASE={m.group(1)}"] if m else []

    def compile_original(self, path: str, out: str) -> Unit:
        """Build ``path`` (a .c file of the tree) with kbuild into the tree, copy the
        object to ``out``; return the command kbuild recorded."""
        obj = path[:-2] + ".o"
        make(self.build, [*self.make_args(), obj, f"KCFLAGS={SECTIONS_FLAGS}"])
        where = os.path.join(self.source if self.external else self.build, obj)
        cmd_file = os.path.join(os.path.dirname(where), f".{os.path.basename(where)}.cmd")
        try:
            with open(cmd_file, encoding="utf-8", errors="surrogateescape") as f:
                head = f.readline()
        except OSError as e:
            raise InputError(f"kbuild wrote no command file: {e.strerror}", path=cmd_file) from None
        m = re.match(r"cmd_(\S+) := (.*)$", head.rstrip("\n"))
        if m is None:
            raise InputError("not a kbuild command file", path=cmd_file)
        command = m.group(2)
        src = _token(command, path, cmd_file, ".c")
        objtok = _token(command, obj, cmd_file, ".o")
        shutil.copyfile(where, out)
        mod = re.search(r"-DKBUILD_MODNAME='\"(\w+)\"'", command)
        objname = mod.group(1) if mod and re.search(r"(^|\s)-DMODULE(\s|$)", command) else "vmlinux"
        return Unit(path, command, src, objtok, objname)

    def compile_fixed(self, unit: Unit, copy: str, out: str) -> None:
        """Compile ``copy`` (the fixed ``unit.path``) into ``out`` with the original's command."""
        prefix = unit.source_token[: -len(unit.path)]
        copy_root = os.path.abspath(copy)[: -len(unit.path)]
        command = _replace(unit.command, unit.source_token, copy)
        command = _replace(command, unit.object_token, out)
        dep = os.path.join(os.path.dirname(unit.object_token),
                           f".{os.path.basename(unit.object_token)}.d")  # fmt: skip
        command = _replace(command, dep, out + ".d")
        # __FILE__ as in the original; the original's directory for #include "local.h"
        original_dir = os.path.dirname(os.path.join(self.source, unit.path))
        extra = f" -ffile-prefix-map={copy_root}={prefix} -iquote {original_dir}"
        command = command.replace(f" -c -o {out} ", f"{extra} -c -o {out} ", 1)
        if extra not in command:
            raise KlpError(f"{unit.path}: kbuild's command has no '-c -o OBJECT': cannot "
                           "redirect it")  # fmt: skip
        r = subprocess.run(["sh", "-c", command], cwd=self.build, capture_output=True,
                           text=True, check=False)  # fmt: skip
        if r.returncode != 0:
            # the compiler names the copy: say the tree's file, which the user knows
            why = _first_error(r.stderr + r.stdout).replace(copy_root, prefix)
            raise KlpError(f"{unit.path}: the fixed file does not compile: {why}")


def _token(command: str, rel: str, cmd_file: str, suffix: str) -> str:
    # the file as the command names it: relative (kernel tree) or absolute (M=)
    m = re.search(r"(?:(?<=\s)|(?<=,))(\S*?" + re.escape(rel) + r")(?=\s|$)", command)
    if (
        m is None
        or not m.group(1).endswith(suffix)
        or not (m.group(1) == rel or m.group(1).endswith("/" + rel))
    ):
        raise InputError(f"names no {rel}: not the command of this unit", path=cmd_file)
    return m.group(1)


def _replace(command: str, token: str, new: str) -> str:
    return re.sub(r"(?:(?<=\s)|(?<=,))" + re.escape(token) + r"(?=\s|$|;)",
                  lambda _: new, command)  # fmt: skip
