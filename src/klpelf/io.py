"""Reading input files (plain, or compressed as kmod accepts them) and writing outputs atomically.

Plain files are memory-mapped, so a 19 MB module costs no copy until a table is
decoded.  Compressed modules (.ko.xz, .ko.zst, .ko.gz) are recognised by their magic
bytes, not by their name, as kmod's ``kmod_file_open()`` does, and are decompressed
in memory with a hard cap so that a decompression bomb cannot exhaust memory.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import mmap
import os
import stat
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, Protocol

from klpelf.errors import InputError, KlpError

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


#: Bytes asked of a decompressor at a time: the output grows by this much per step, so a
#: bomb stops at the cap plus one step, and no step allocates more than this.
_STEP = 1 << 20


def _maybe_decompress(data: bytes, name: str) -> bytes | bytearray:
    kind = compression_of(data[:8])
    if kind is None:
        return data
    try:
        if kind == "xz":
            out = _unxz(data)
        elif kind == "gzip":
            out = _gunzip(data)
        else:
            out = _unzstd(data)
    except InputError as e:
        raise e.with_path(name) from None
    except Exception as e:  # each codec raises its own error type on corrupt input
        raise InputError(f"corrupt {kind} data: {e}", path=name) from e
    if len(out) > MAX_DECOMPRESSED:
        raise InputError(f"{kind} data decompresses to more than 1 GiB", path=name)
    return out


def _grow(out: bytearray, chunk: bytes) -> bool:
    """Append ``chunk``; False once the output is past the cap (stop decompressing).

    One bytearray grown in place (realloc, which glibc does with mremap for big
    blocks) keeps the peak at the output's size: a list of chunks joined at the end
    would hold every byte twice."""
    out += chunk
    return len(out) <= MAX_DECOMPRESSED


def _unxz(data: bytes) -> bytearray:
    import lzma

    # kmod and the kernel's module decompressor take one xz stream; the reader goes
    # on through concatenated streams as xz(1) does, so a file xz -d reads is read.
    out = bytearray()
    rest = data
    while rest:
        d = lzma.LZMADecompressor()
        chunk = d.decompress(rest, _STEP)
        while _grow(out, chunk) and not d.eof:
            if d.needs_input:
                raise InputError("truncated xz data")
            chunk = d.decompress(b"", _STEP)
        if len(out) > MAX_DECOMPRESSED:
            break
        rest = d.unused_data.lstrip(b"\0")  # xz allows stream padding
    return out


def _gunzip(data: bytes) -> bytearray:
    import zlib

    # A .gz may hold several members (cat a.gz b.gz): gzip -d and kmod's zlib
    # (gzread) read them all, one after the other.
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=31)
        chunk = d.decompress(rest, _STEP)
        while _grow(out, chunk) and not d.eof:
            # zlib may hold output with all input taken: stop only when a step
            # gives nothing and there is no input left
            chunk = d.decompress(d.unconsumed_tail, _STEP)
            if not chunk and not d.unconsumed_tail and not d.eof:
                raise InputError("truncated gzip data")
        if len(out) > MAX_DECOMPRESSED:
            break
        rest = d.unused_data
    return out


def _unzstd(data: bytes) -> bytearray:
    try:
        import zstandard
    except ImportError as e:
        raise InputError("zstd-compressed input needs the 'zstandard' package") from e
    # Every frame in turn (zstd -d reads concatenated frames); fixed-size reads with a
    # running total: asking for the whole cap at each read allocated 1 GiB per call,
    # and summing the chunks at each step made many tiny frames quadratic.
    if not _zstd_frames_complete(data, zstandard):
        raise InputError("truncated zstd data")
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    out = bytearray()
    while _grow(out, chunk := reader.read(_STEP)) and chunk:
        pass
    return out


_ZSTD_SKIPPABLE = range(0x184D2A50, 0x184D2A60)


def _zstd_frames_complete(data: bytes, zstandard: Any) -> bool:
    """Whether ``data`` is whole zstd frames, none cut short.

    The streaming reader returns what it decoded of a truncated frame without an
    error, so the frames are walked first (RFC 8878 section 3.1: each block's
    3-byte header gives its size, a frame may end with a 4-byte checksum); nothing is
    decompressed.
    """
    pos, n = 0, len(data)
    while pos < n:
        if n - pos < 8:
            return False
        magic = int.from_bytes(data[pos : pos + 4], "little")
        if magic in _ZSTD_SKIPPABLE:
            pos += 8 + int.from_bytes(data[pos + 4 : pos + 8], "little")
            continue
        head = data[pos : pos + 18]  # a frame header is at most 18 bytes
        try:
            checksum = zstandard.get_frame_parameters(head).has_checksum
            pos += zstandard.frame_header_size(head)
        except zstandard.ZstdError:
            return False
        while True:
            if n - pos < 3:
                return False
            header = int.from_bytes(data[pos : pos + 3], "little")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            pos += 3 + (1 if kind == 1 else size)  # an RLE block stores one byte
            if last:
                break
        pos += 4 if checksum else 0
        if pos > n:
            return False
    return True


#: One piece of an output file: bytes, or (source fd, offset, length) to copy from an
#: open input file inside the kernel (copy_file_range), without passing through Python.
Piece = Buffer | tuple[int, int, int]


#: Output names that kmod reads compressed, and how kbuild compresses modules
#: (scripts/Makefile.modinst: ``xz --check=crc32 --lzma2=dict=1MiB``, ``zstd -T0``
#: at its default level, ``gzip -n``): the kernel's own module decompressor
#: (CONFIG_MODULE_DECOMPRESS) takes the same files.
COMPRESSED_SUFFIXES = {".xz": "xz", ".zst": "zstd", ".gz": "gzip"}


def output_compression(path: str | os.PathLike[str]) -> str | None:
    """The compression an output named ``path`` gets (by its suffix), or None."""
    return COMPRESSED_SUFFIXES.get(os.path.splitext(os.fspath(path))[1])


def write_atomic(
    path: str | os.PathLike[str], data: Buffer | Iterable[Piece], *, overwrite: bool = False
) -> None:
    """Write ``data`` (bytes, or pieces in order) to ``path`` atomically.

    A reader of ``path`` sees either the old file or the whole new one, never a torn
    write: the bytes go to an unnamed file (O_TMPFILE) in the same directory, which is
    linked under a temporary name and renamed over ``path``, so a process killed
    mid-write leaves nothing behind.  Where the filesystem has no O_TMPFILE the
    temporary file is named from the start; called from the main thread, a signal
    that would end the process (SIGTERM, SIGHUP, SIGQUIT, ...; SIGINT raises
    KeyboardInterrupt) removes it first and then ends the process as the signal
    would have (SIGKILL cannot be caught).  An existing file is replaced only with
    ``overwrite=True``, and only if it is a regular file: a device, a FIFO, a
    directory or a symbolic link is never replaced nor written through.  The new
    file gets the mode of the file it replaces, or 0644 less the umask.  A name
    ending in ``.xz``, ``.zst`` or ``.gz`` gets the contents compressed as kbuild
    compresses modules.

    :raises InputError: the file exists and ``overwrite`` is false, it is not a
        regular file, its directory is missing or not writable, or the write failed.
    """
    target = os.fspath(path)
    try:
        st: os.stat_result | None = os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        st = None  # said when the output cannot be created
    except OSError as e:
        raise InputError(_strerror(e), path=target) from e
    if st is not None and stat.S_ISLNK(st.st_mode):
        # Writing through a link would replace a file the user did not name (and
        # replacing the link would lose it): neither is what `-o LINK` says.
        raise InputError(
            f"output is a symbolic link to {os.readlink(target)!r} (refusing to replace it "
            "or write through it; name the file itself)",
            path=target,
        )
    if not overwrite and st is not None:
        raise InputError("output file exists (refusing to overwrite it)", path=target)
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise InputError(
                f"output is {_file_kind(st.st_mode)}, not a regular file (refusing to replace it)",
                path=target,
            )
        mode = st.st_mode & 0o7777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o644 & ~umask
    directory = os.path.dirname(os.path.abspath(target))
    base = os.path.basename(target)
    with _SignalGuard() as guard:
        tmp: str | None = None
        try:
            with guard.held():
                fd, tmp = _create_temp(directory, base)
        except OSError as e:
            raise InputError(f"cannot create the output: {_strerror(e)}", path=target) from e
        try:
            with os.fdopen(fd, "wb") as f:
                _write_contents(f, output_compression(target), data)
                # No fsync: like ld and objcopy, the output is regenerable and the input
                # is never touched; fsync of a 20 MB module doubled convert's time.
                f.flush()
                os.fchmod(f.fileno(), mode)
                if tmp is None:
                    with guard.held():
                        tmp = _link_temp(f.fileno(), directory, base)
            with guard.held():
                if overwrite:
                    os.replace(tmp, target)
                else:
                    # link(2) refuses an existing name: no window in which a file
                    # created meanwhile is replaced
                    os.link(tmp, target)
                    os.unlink(tmp)
                tmp = None
        except BaseException as e:
            if tmp is not None:
                with guard.held(), contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(e, FileExistsError):
                raise InputError(
                    "output file exists (refusing to overwrite it)", path=target
                ) from e
            if isinstance(e, OSError) and not isinstance(e, KlpError):
                raise InputError(_strerror(e), path=target) from e
            raise


def _write_contents(f: BinaryIO, kind: str | None, data: Buffer | Iterable[Piece]) -> None:
    if kind is not None:
        _write_compressed(f, kind, _as_pieces(data))
    elif isinstance(data, bytes | bytearray | memoryview | mmap.mmap):
        f.write(data)
    else:
        for piece in data:
            if isinstance(piece, tuple):
                f.flush()
                _copy_range(f.fileno(), *piece)
            else:
                f.write(piece)


class _Signalled(BaseException):
    """A signal that would have ended the process arrived while a temporary file
    had a name: raised by :class:`_SignalGuard` so that the file is removed first."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@functools.cache
def _fatal_signals() -> tuple[int, ...]:
    import signal

    # The signals whose default action ends the process and that arrive from outside
    # (signal(7)); the synchronous faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL) are not
    # caught: Python cannot go on after them.  SIGPIPE and SIGXFSZ are ignored by
    # CPython (a write then fails with EPIPE/EFBIG, an OSError cleaned up as any).
    names = ("SIGHUP", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM",
             "SIGPROF", "SIGXCPU", "SIGPOLL", "SIGPWR", "SIGSTKFLT")  # fmt: skip
    # (The real-time signals end a process too, but nothing sends them to one that
    # did not ask: guarding their 33 numbers would cost every write 0.2 ms.)
    return tuple(int(getattr(signal, n)) for n in names if hasattr(signal, n))


class _SignalGuard:
    """While a temporary output file may have a name: a signal whose default action
    would end the process raises :class:`_Signalled` instead (so ``except
    BaseException`` removes the file), and leaving the guard ends the process by
    that signal, as it would have ended.  Only in the main thread (the only one
    Python runs handlers in); handlers a program installed itself are left alone.

    :meth:`held` blocks those signals across the steps that create, name or rename
    the file, so that none arrives between a system call and the line that records
    its result.
    """

    def __init__(self) -> None:
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _SignalGuard:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in _fatal_signals():
            try:
                if signal.getsignal(sig) == signal.SIG_DFL:
                    signal.signal(sig, _raise_signalled)
                    self._saved[sig] = signal.SIG_DFL
            except (OSError, ValueError):
                continue  # a signal this system does not let a program catch
        return self

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        import signal

        if not self._saved:
            yield
            return
        old = signal.pthread_sigmask(signal.SIG_BLOCK, self._saved)
        try:
            yield
        finally:
            # a signal that came meanwhile is delivered here, its handler runs next
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        import signal

        with self.held():
            for sig, handler in self._saved.items():
                signal.signal(sig, handler)
        if isinstance(exc, _Signalled):
            # the file is gone: end the process as the signal would have
            signal.raise_signal(exc.signum)


def _raise_signalled(signum: int, frame: object) -> None:
    raise _Signalled(signum)


def _strerror(e: OSError) -> str:
    return e.strerror or str(e)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "a special file"


def _create_temp(directory: str, base: str) -> tuple[int, str | None]:
    """An unnamed file in ``directory`` (name None), else a named temporary file."""
    if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600), None
        except OSError as e:
            # EOPNOTSUPP / EISDIR / EINVAL: the filesystem has no O_TMPFILE
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    import tempfile  # only writers pay for it

    return tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)


def _link_temp(fd: int, directory: str, base: str) -> str:
    """Give the unnamed file ``fd`` a temporary name in ``directory``.

    linkat(fd, "", AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; linking
    /proc/self/fd/N works without it where /proc allows (some sandboxes refuse it
    with EXDEV); failing both, the bytes are copied into a named temporary file.
    """
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{os.urandom(6).hex()}.tmp")
        try:
            _linkat_empty_path(fd, tmp)
        except FileExistsError:
            continue
        except OSError:
            pass
        else:
            return tmp
        try:
            os.link(f"/proc/self/fd/{fd}", tmp, follow_symlinks=True)
        except FileExistsError:
            continue
        except OSError:
            return _copy_to_named(fd, directory, base)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", directory)


def _linkat_empty_path(fd: int, path: str) -> None:
    import ctypes  # only writers pay for it

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, at_empty_path = -100, 0x1000
    if libc.linkat(fd, b"", at_fdcwd, os.fsencode(path), at_empty_path) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)


def _copy_to_named(fd: int, directory: str, base: str) -> str:
    import tempfile

    out, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        size = os.fstat(fd).st_size
        os.fchmod(out, stat.S_IMODE(os.fstat(fd).st_mode))
        _copy_range(out, fd, 0, size)
    except BaseException:
        os.close(out)
        os.unlink(tmp)
        raise
    os.close(out)
    return tmp


def _as_pieces(data: Buffer | Iterable[Piece]) -> Iterable[Piece]:
    if isinstance(data, bytes | bytearray | memoryview | mmap.mmap):
        return (data,)
    return data


def _read_piece(piece: Piece) -> Iterable[Buffer]:
    if not isinstance(piece, tuple):
        yield piece
        return
    src, offset, count = piece
    while count > 0:
        chunk = os.pread(src, min(count, 1 << 20), offset)
        if not chunk:
            raise OSError(errno.EIO, "the input file got shorter while it was copied")
        offset, count = offset + len(chunk), count - len(chunk)
        yield chunk


def _write_compressed(f: BinaryIO, kind: str, pieces: Iterable[Piece]) -> None:
    comp: _Compressor
    if kind == "xz":
        import lzma

        comp = lzma.LZMACompressor(
            format=lzma.FORMAT_XZ,
            check=lzma.CHECK_CRC32,
            filters=[{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 20}],
        )
    elif kind == "gzip":
        import zlib

        # wbits 31: a gzip member with no name and mtime 0, as gzip -n writes it
        comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    else:
        try:
            import zstandard
        except ImportError as e:
            raise InputError("zstd-compressed output needs the 'zstandard' package") from e
        comp = zstandard.ZstdCompressor().compressobj()
    for piece in pieces:
        for chunk in _read_piece(piece):
            f.write(comp.compress(memoryview(chunk)))
    f.write(comp.flush())


class _Compressor(Protocol):
    def compress(self, data: memoryview, /) -> bytes: ...
    def flush(self) -> bytes: ...


#: errno values of copy_file_range(2) that mean "not between these two files": other
#: filesystems (EXDEV; before 5.3 and again since 5.19 for different types), a kernel
#: or filesystem without it (ENOSYS, EOPNOTSUPP), or files it does not take (EINVAL).
_NO_COPY_RANGE = (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


def _copy_range(dst: int, src: int, offset: int, count: int) -> None:
    # copy_file_range(2) moves the bytes inside the kernel (or shares extents on
    # filesystems that can); it may copy less than asked, so loop.  Between files it
    # cannot join (an output on a tmpfs, the input on disk), copy through memory.
    pos = os.lseek(dst, 0, os.SEEK_CUR)
    while count > 0:
        try:
            n = os.copy_file_range(src, dst, count, offset, pos)
        except OSError as e:
            if e.errno not in _NO_COPY_RANGE:
                raise
            os.lseek(dst, pos, os.SEEK_SET)
            for chunk in _read_piece((src, offset, count)):
                _write_all(dst, chunk)
            return
        if n <= 0:
            raise OSError(errno.EIO, "the input file got shorter while it was copied")
        offset, pos, count = offset + n, pos + n, count - n
    os.lseek(dst, pos, os.SEEK_SET)


def _write_all(fd: int, data: Buffer) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
