"""A fix as a unified diff: the files it touches, and each one's fixed copy.

Only changes to existing ``.c`` files are supported yet: a header change needs every
unit that includes it rebuilt and diffed, a new or removed file has no original unit.
Each file's part of the diff is applied alone with Debian's ``patch`` (GNU patch) to
a copy of the file, never to the tree, and must apply exactly (no fuzz, no rejects).
"""

from __future__ import annotations

import os
import subprocess
from typing import Final

from klpelf._record import FrozenRecord
from klpelf.errors import InputError, KlpError

__all__ = ["FilePatch", "apply_to_copy", "parse_fix"]


class FilePatch(FrozenRecord):
    """One file's part of a fix: its path in the tree and its hunks' text."""

    _fields = ("path", "text")
    __slots__ = _fields

    def __init__(self, path: str, text: str) -> None:
        #: relative to the source tree (the diff's prefix stripped)
        self.path: Final = path
        #: the file's ``---``/``+++`` lines and hunks, as ``patch`` reads them
        self.text: Final = text


def _header_path(line: str) -> str:
    # '--- a/fs/proc/cmdline.c\t2026-01-01 ...': the name ends at a tab (diff -u's date)
    name = line[4:].rstrip("\n").split("\t", 1)[0].strip()
    if len(name) > 1 and name[0] == name[-1] == '"':
        name = name[1:-1]
    return name


def _strip(name: str, source: str) -> str:
    # git's a/ b/ prefixes (patch -p1), else the path as it is (-p0): whichever names a file
    # of the tree, -p1 first as `git diff` and `diff -ru a b` write it
    parts = name.split("/")
    for p in (1, 0):
        rel = "/".join(parts[p:])
        if rel and os.path.isfile(os.path.join(source, rel)):
            return rel
    return "/".join(parts[1:]) if len(parts) > 1 else name


def parse_fix(text: str, source: str) -> list[FilePatch]:
    """The files ``text`` (a unified diff) changes, relative to ``source``.

    :raises KlpError: no file changed, a file that is not an existing ``.c`` file
        (one line: what is not supported yet), a malformed header.
    """
    lines = text.splitlines(keepends=True)
    found: list[FilePatch] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(("Binary files ", "GIT binary patch")):
            raise KlpError(f"a binary change is not supported: {line.strip()}")
        if not (line.startswith("--- ") and i + 1 < len(lines)
                and lines[i + 1].startswith("+++ ")):  # fmt: skip
            i += 1
            continue
        old, new = _header_path(line), _header_path(lines[i + 1])
        j = i + 2
        while j < len(lines) and not lines[j].startswith(("--- ", "diff ")):
            if not lines[j].startswith(("@@", " ", "+", "-", "\\")) and lines[j].strip():
                break
            j += 1
        if old == "/dev/null":
            raise KlpError(f"{_strip(new, source)}: a new file is not supported yet "
                           "(only changes to existing .c files)")  # fmt: skip
        if new == "/dev/null":
            raise KlpError(f"{_strip(old, source)}: removing a file is not supported "
                           "(only changes to existing .c files)")  # fmt: skip
        path = _strip(new, source)
        if _strip(old, source) != path:
            raise KlpError(f"{path}: a renamed file is not supported (was {old})")
        if not path.endswith(".c"):
            what = (
                "a header change (every unit that includes it)"
                if path.endswith(".h")
                else "a change to a file that is not C source"
            )
            raise KlpError(f"{path}: {what} is not supported yet: only changes to .c files")
        if not os.path.isfile(os.path.join(source, path)):
            raise KlpError(f"{path}: no such file in the source tree {source}")
        if any(f.path == path for f in found):
            raise KlpError(f"{path}: changed twice in the fix")
        found.append(FilePatch(path, "".join(lines[i:j])))
        i = j
    if not found:
        raise KlpError("no file changed: not a unified diff (diff -u, git diff)")
    return found


def apply_to_copy(fp: FilePatch, source: str, copy: str) -> None:
    """Write ``source``/``fp.path`` with ``fp`` applied to ``copy``; the tree is not touched.

    :raises KlpError: ``patch`` is missing, or the change does not apply exactly
        (the first line ``patch`` gives as the reason).
    """
    os.makedirs(os.path.dirname(copy) or ".", exist_ok=True)
    cmd = ["patch", "--batch", "--silent", "--forward", "--fuzz=0", "--no-backup-if-mismatch",
           "-r", "-", "-o", copy, os.path.join(source, fp.path)]  # fmt: skip
    try:
        r = subprocess.run(cmd, input=fp.text, capture_output=True, text=True, check=False)
    except OSError as e:
        raise InputError(f"patch cannot run ({e.strerror}): install GNU patch") from None
    if r.returncode != 0:
        # patch has written what applied: no half-fixed copy is left to be compiled
        if os.path.exists(copy):
            os.unlink(copy)
        why = next((ln.strip() for ln in (r.stdout + r.stderr).splitlines() if ln.strip()),
                   f"patch exited with {r.returncode}")  # fmt: skip
        raise KlpError(f"{fp.path}: the fix does not apply cleanly: {why}")
