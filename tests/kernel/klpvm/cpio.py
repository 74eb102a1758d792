"""A writer for the cpio "newc" format, the format of a Linux initramfs.

The kernel unpacks the concatenation of several archives in order (later files
replace earlier ones), so the harness keeps one cached archive per kernel (busybox,
virtio modules, the loader) and writes a small second one per run (the script and the
modules under test).  Written here rather than with cpio(1) to keep the archives
byte-for-byte reproducible (fixed inode numbers, owners and times).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    """One archive member: a directory (data None), a regular file or a symlink."""

    path: str
    data: bytes | None = None
    mode: int = 0o644
    symlink: str | None = None


def _header(ino: int, mode: int, nlink: int, size: int, name: bytes) -> bytes:
    fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def write_newc(entries: list[Entry]) -> bytes:
    """The archive holding ``entries`` (parents first), with its TRAILER!!! record."""
    out = bytearray()
    for ino, e in enumerate(entries, start=1):
        name = e.path.lstrip("/").encode()
        if e.symlink is not None:
            mode, body, nlink = stat.S_IFLNK | 0o777, e.symlink.encode(), 1
        elif e.data is None:
            mode, body, nlink = stat.S_IFDIR | (e.mode or 0o755), b"", 2
        else:
            mode, body, nlink = stat.S_IFREG | e.mode, e.data, 1
        hdr = _header(ino, mode, nlink, len(body), name) + name + b"\0"
        out += hdr + _pad4(len(hdr)) + body + _pad4(len(body))
    trailer = _header(0, 0, 1, 0, b"TRAILER!!!") + b"TRAILER!!!\0"
    out += trailer + _pad4(len(trailer))
    return bytes(out)


def with_parents(entries: list[Entry]) -> list[Entry]:
    """``entries`` preceded by a directory entry for every parent not listed."""
    have = {e.path.strip("/") for e in entries}
    out: list[Entry] = []
    for e in entries:
        parts = e.path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in have:
                have.add(d)
                out.append(Entry(d, None, 0o755))
        out.append(e)
    return out
