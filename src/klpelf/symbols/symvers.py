"""``Module.symvers``: which symbols are exported, and by which object.

modpost writes one tab-separated line per exported symbol::

    CRC  SYMBOL  MODULE  EXPORT_TYPE  NAMESPACE     (v5.8+: namespace last)
    CRC  SYMBOL  NAMESPACE  MODULE  EXPORT_TYPE     (v5.4-v5.7)
    CRC  SYMBOL  MODULE  EXPORT_TYPE                (before v5.4)

MODULE is ``vmlinux`` or the module's path without ``.ko`` (``fs/ext4/ext4``); the
object name is its base name with '-' as '_', as kbuild makes KBUILD_MODNAME.
"""

from __future__ import annotations

import os
import re
from functools import cache
from typing import NamedTuple

from klpelf.errors import SymbolSourceError
from klpelf.text import quoted


@cache
def _crc_re() -> re.Pattern[str]:
    # compiled on first use: a run whose sources are all ELF files never needs it
    return re.compile(r"0x[0-9a-fA-F]+\Z")


class Export(NamedTuple):
    name: str
    #: ``vmlinux`` or a module name
    objname: str
    #: modpost's path of the exporting object (``vmlinux``, ``fs/ext4/ext4``)
    module_path: str
    export_type: str
    namespace: str
    crc: int


def looks_like_symvers(head: bytes) -> bool:
    """Whether the first line of a file is a Module.symvers line."""
    fields = head.split(b"\n", 1)[0].split(b"\t")
    return len(fields) >= 4 and _crc_re().match(fields[0].decode("ascii", "replace")) is not None


def objname_of(module_path: str) -> str:
    if module_path == "vmlinux":
        return "vmlinux"
    return os.path.basename(module_path).replace("-", "_")


def parse_symvers(text: str, path: str) -> dict[str, Export]:
    """Parse a Module.symvers file; the first export of a name wins, as modpost does.

    :raises SymbolSourceError: a line that is not a Module.symvers line (with its number).
    """
    exports: dict[str, Export] = {}
    crc = _crc_re()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        f = line.split("\t")
        if len(f) == 5 and not f[3].startswith("EXPORT_") and f[4].startswith("EXPORT_"):
            f = [f[0], f[1], f[3], f[4], f[2]]  # v5.4-v5.7: namespace third
        if len(f) not in (4, 5) or not crc.match(f[0]) or not f[1] or not f[2]:
            raise SymbolSourceError(
                "malformed Module.symvers line (expected 'CRC<TAB>SYMBOL<TAB>MODULE<TAB>"
                f"EXPORT_TYPE[<TAB>NAMESPACE]'): {quoted(line)}",
                path=path, lineno=n,
            )  # fmt: skip
        ns = f[4] if len(f) == 5 else ""
        exports.setdefault(f[1], Export(f[1], objname_of(f[2]), f[2], f[3], ns, int(f[0], 16)))
    if not exports:
        raise SymbolSourceError("no exports (empty Module.symvers)", path=path)
    return exports
