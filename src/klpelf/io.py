"""Reading input files (plain, or compressed as kmod accepts them) and writing outputs atomically.

Plain files are memory-mapped, so a 19 MB module costs no copy until a table is
decoded.  Compressed modules (.ko.xz, .ko.zst, .ko.gz) are recognised by their magic
bytes, not by their name, as kmod's ``kmod_file_open()`` does, and are decompressed
in memory with a hard cap so that a decompression bomb cannot exhaust memory.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
from collections.abc import Iterable

from klpelf.errors import InputError

#: What the reader accepts: bytes, or a read-only memory map of a file.
Buffer = bytes | bytearray | memoryview | mmap.mmap

#: Largest decompressed module accepted.  The biggest module of a Debian kernel
#: (amdgpu.ko) is about 20 MiB; a vmlinux with symbols is a few hundred MiB.
MAX_DECOMPRESSED = 1 << 30

_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def compression_of(head: bytes) -> str | None:
    """Name the compression format of data starting with ``head``, or None."""
    if head.startswith(_XZ_MAGIC):
        return "xz"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    return None


def read_input(path: str | os.PathLike[str]) -> Buffer:
    """Return the (decompressed) contents of ``path`` as a read-only buffer.

    :raises InputError: the path is missing, not a regular file, unreadable, or its
        compressed contents are corrupt or larger than :data:`MAX_DECOMPRESSED`.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY)
    except OSError as e:
        raise InputError(e.strerror or str(e), path=name) from e
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputError("is a directory", path=name)
        if not stat.S_ISREG(st.st_mode):
            # A pipe or character device: read it whole, bounded.
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(MAX_DECOMPRESSED + 1)
            if len(data) > MAX_DECOMPRESSED:
                raise InputError("input is larger than 1 GiB", path=name)
            return _maybe_decompress(data, name)
        if st.st_size == 0:
            return b""
        try:
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise InputError(e.strerror or str(e), path=name) from e
        if compression_of(mm[:8]) is None:
            return mm
        data = mm[:]
        mm.close()
        return _maybe_decompress(data, name)
    except InputError:
        raise
    except OSError as e:
        raise InputError(e.strerror or str(e), path=name) from e
    finally:
        os.close(fd)


def _maybe_decompress(data: bytes, name: str) -> bytes:
    kind = compression_of(data[:8])
    if kind is None:
        return data
    try:
        if kind == "xz":
            import lzma

            out = lzma.LZMADecompressor().decompress(data, MAX_DECOMPRESSED + 1)
        elif kind == "gzip":
            import zlib

            d = zlib.decompressobj(wbits=31)
            out = d.decompress(data, MAX_DECOMPRESSED + 1)
        else:
            out = _unzstd(data)
    except InputError as e:
        raise e.with_path(name) from None
    except Exception as e:  # each codec raises its own error type on corrupt input
        raise InputError(f"corrupt {kind} data: {e}", path=name) from e
    if len(out) > MAX_DECOMPRESSED:
        raise InputError(f"{kind} data decompresses to more than 1 GiB", path=name)
    return out


def _unzstd(data: bytes) -> bytes:
    try:
        import zstandard
    except ImportError as e:
        raise InputError("zstd-compressed input needs the 'zstandard' package") from e
    reader = zstandard.ZstdDecompressor().stream_reader(data)
    out = reader.read(MAX_DECOMPRESSED + 1)
    chunks = [out]
    while out and sum(map(len, chunks)) <= MAX_DECOMPRESSED:
        out = reader.read(MAX_DECOMPRESSED + 1)
        chunks.append(out)
    return b"".join(chunks)


#: One piece of an output file: bytes, or (source fd, offset, length) to copy from an
#: open input file inside the kernel (copy_file_range), without passing through Python.
Piece = Buffer | tuple[int, int, int]


def write_atomic(
    path: str | os.PathLike[str], data: Buffer | Iterable[Piece], *, overwrite: bool = False
) -> None:
    """Write ``data`` (bytes, or pieces in order) to ``path`` atomically.

    The bytes go to a temporary file in the same directory, which is then renamed.

    A reader of ``path`` sees either the old file or the whole new one, never a torn
    write.  An existing file is replaced only with ``overwrite=True``; klpelf never
    overwrites the file a user gave as input unless asked to.  The new file gets
    the mode of the file it replaces, or 0644 less the umask.

    :raises InputError: the file exists and ``overwrite`` is false, or the write failed.
    """
    import tempfile  # only writers pay for it

    target = os.fspath(path)
    if not overwrite and os.path.lexists(target):
        raise InputError("output file exists (refusing to overwrite it)", path=target)
    try:
        mode = os.stat(target).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o644 & ~umask
    directory, base = os.path.split(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes | bytearray | memoryview | mmap.mmap):
                f.write(data)
            else:
                for piece in data:
                    if isinstance(piece, tuple):
                        f.flush()
                        _copy_range(f.fileno(), *piece)
                    else:
                        f.write(piece)
            # No fsync: like ld and objcopy, the output is regenerable and the input
            # is never touched; fsync of a 20 MB module doubled convert's time.
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise InputError(e.strerror or str(e), path=target) from e
        raise


def _copy_range(dst: int, src: int, offset: int, count: int) -> None:
    # copy_file_range(2) moves the bytes inside the kernel (or shares extents on
    # filesystems that can); it may copy less than asked, so loop.
    pos = os.lseek(dst, 0, os.SEEK_CUR)
    while count > 0:
        n = os.copy_file_range(src, dst, count, offset, pos)
        if n <= 0:
            raise OSError(f"copy_file_range copied {n} bytes")
        offset, pos, count = offset + n, pos + n, count - n
    os.lseek(dst, pos, os.SEEK_SET)
