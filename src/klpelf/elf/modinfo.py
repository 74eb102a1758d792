"""The ``.modinfo`` section: NUL-separated ``key=value`` strings.

The kernel's ``get_next_modinfo()`` (kernel/module/main.c) walks the strings and
skips runs of NUL padding, and so do kmod and this view.  That is what makes the
edits safe: a replaced value that does not fit is blanked with NULs in place and
the new entry appended, so the offsets of the other entries, which symbols such as
``__UNIQUE_ID_livepatch123`` point at, never move.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from klpelf.elf.constants import SHT
from klpelf.elf.strtab import decode_name, encode_name

if TYPE_CHECKING:
    from klpelf.elf.file import ElfFile, Section


class ModinfoEntry(NamedTuple):
    offset: int
    key: str
    value: str
    #: bytes the entry occupies, NUL excluded
    length: int
    #: the key is followed by '=' (the kernel ignores entries without one)
    has_eq: bool = True


class Modinfo:
    """Read and edit the entries of a ``.modinfo`` section."""

    def __init__(self, section: Section) -> None:
        self.section = section
        self._data = bytearray(section.data)
        self._parsed: list[ModinfoEntry] | None = None

    def _parse(self) -> list[ModinfoEntry]:
        out: list[ModinfoEntry] = []
        pos = 0
        # split() keeps every byte accounted for: each part is followed by one NUL
        # (the last part, if not empty, lacks its NUL; the kernel stops at the size)
        for raw in bytes(self._data).split(b"\0"):
            if raw:
                key, sep, value = raw.partition(b"=")
                out.append(
                    ModinfoEntry(pos, decode_name(key), decode_name(value), len(raw), bool(sep))
                )
            pos += len(raw) + 1
        return out

    @property
    def entries(self) -> list[ModinfoEntry]:
        return list(self._entries)

    def get(self, key: str) -> str | None:
        """The first value for ``key``, as the kernel's get_modinfo() returns it; None if absent.

        Like the kernel, an entry counts only when the key is followed by ``=``.
        """
        if self._parsed is None:
            # one lookup does not need the whole table (amdgpu has 6,000 aliases)
            data = self._data
            needle = encode_name(key) + b"="
            pos = data.find(needle)
            while pos >= 0:
                if pos == 0 or data[pos - 1] == 0:
                    end = data.find(b"\0", pos)
                    raw = data[pos + len(needle) : end if end >= 0 else len(data)]
                    return decode_name(bytes(raw))
                pos = data.find(needle, pos + 1)
            return None
        for e in self._entries:
            if e.key == key and e.has_eq:
                return e.value
        return None

    def get_all(self, key: str) -> list[str]:
        return [e.value for e in self._entries if e.key == key and e.has_eq]

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def set(self, key: str, value: str) -> None:
        """Replace the first ``key`` entry (others with the same key are blanked), or add it."""
        raw = encode_name(f"{key}={value}")
        if self._parsed is None and self.get(key) is None:
            self._append(raw)  # a new key: nothing to replace
            self._commit()
            return
        first = True
        for e in [e for e in self._entries if e.key == key and e.has_eq]:
            if first and len(raw) <= e.length:
                self._data[e.offset : e.offset + e.length] = raw + b"\0" * (e.length - len(raw))
                first = False
                raw = b""
            else:
                self._data[e.offset : e.offset + e.length] = b"\0" * e.length
        if raw:
            self._append(raw)
        self._commit()

    def add(self, key: str, value: str) -> None:
        """Append an entry, keeping existing ones (for keys that repeat: alias, depends...)."""
        self._append(encode_name(f"{key}={value}"))
        self._commit()

    def _append(self, raw: bytes) -> None:
        # a last entry without its NUL would run into the new one ("vermagic=...livepatch=Y")
        if self._data and self._data[-1] != 0:
            self._data += b"\0"
        self._data += raw + b"\0"
        self._parsed = None

    @property
    def _entries(self) -> list[ModinfoEntry]:
        if self._parsed is None:
            self._parsed = self._parse()
        return self._parsed

    def _commit(self) -> None:
        self.section.set_data(bytes(self._data), self)
        self._parsed = None


def module_depends(elf: ElfFile) -> tuple[str, ...]:
    """The modules of modinfo ``depends=`` (modpost: the modules whose exports the
    module uses; modprobe loads them first)."""
    mi = elf.modinfo
    value = mi.get("depends") if mi is not None else None
    return tuple(d for d in (value or "").split(",") if d)


def module_name(elf: ElfFile) -> str:
    """The module's name as the loader sees it (modinfo ``name``, else struct module's)."""
    # modpost writes MODULE_INFO(name, KBUILD_MODNAME) into every module's .mod.c;
    # the loader takes the name from struct module in .gnu.linkonce.this_module,
    # whose first field after `state` and `list` is char name[MODULE_NAME_LEN].
    mi = elf.modinfo
    if mi is not None:
        name = mi.get("name")
        if name:
            return name
    sec = elf.section_by_name(".gnu.linkonce.this_module")
    if sec is not None and sec.sh_type != SHT.NOBITS:
        off = 24 if elf.is64 else 12
        raw = bytes(sec.data[off : off + 56]).split(b"\0", 1)[0]
        if raw:
            return raw.decode("utf-8", "surrogateescape")
    base = os.path.basename(elf.path or "")
    for ext in (".xz", ".zst", ".gz"):
        base = base.removesuffix(ext)
    return base.removesuffix(".ko").replace("-", "_")
