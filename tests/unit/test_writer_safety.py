"""The one writer path (klpelf.io.write_atomic, under save_elf and convert): a temporary
file in the target directory, removed on every signal klpelf can catch, never a special
file or a symbolic link replaced, the same on one filesystem and across two."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import klpelf.io as klpio
from klpelf.cli import main
from klpelf.errors import InputError
from klpelf.io import write_atomic

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "klp_sample" / "klp_sample.ko"
CONVERTED = REPO / "samples" / "klp_sample" / "klp_sample_lp.ko"
ENV = dict(os.environ, PYTHONPATH=str(REPO / "src"))

# A writer stopped half-way, in a child: its pieces print "writing" and wait.  With
# `named`, the filesystem is made to look as if it had no O_TMPFILE, so the temporary
# file has a name for the whole write (the case a signal could leave behind).
_STOPPED_WRITER = """
import os, sys, time
import klpelf.io as klpio
if {named}:
    del os.O_TMPFILE
def pieces():
    yield b"x" * 100_000
    print("writing", flush=True)
    time.sleep(60)
    yield b"y"
klpio.write_atomic({out!r}, pieces(), overwrite=True)
"""


def _stopped_writer(out: Path, *, named: bool) -> subprocess.Popen[bytes]:
    script = textwrap.dedent(_STOPPED_WRITER.format(out=str(out), named=named))
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ENV)  # fmt: skip
    assert p.stdout is not None
    assert p.stdout.readline() == b"writing\n"
    return p


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGALRM]
)
def test_a_signal_removes_the_named_temporary_file(sig: int, tmp_path: Path) -> None:
    out = tmp_path / "out.ko"
    out.write_bytes(b"the user's file")
    p = _stopped_writer(out, named=True)
    temporary = [q.name for q in tmp_path.iterdir() if q != out]
    assert len(temporary) == 1 and temporary[0].startswith(".out.ko.")  # in the target dir
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    # the process still ends by the signal (its parent sees it), with nothing left
    assert p.returncode == -sig, err
    assert [q.name for q in tmp_path.iterdir()] == ["out.ko"]
    assert out.read_bytes() == b"the user's file"


def test_interrupt_removes_the_named_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "out.ko"
    p = _stopped_writer(out, named=True)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert b"KeyboardInterrupt" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("named", [False, True])
def test_sigkill_leaves_nothing_with_o_tmpfile(named: bool, tmp_path: Path) -> None:
    # SIGKILL cannot be caught: only the unnamed file (O_TMPFILE) leaves nothing
    p = _stopped_writer(tmp_path / "out.ko", named=named)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    left = list(tmp_path.iterdir())
    assert left == [] if not named else len(left) == 1


def test_a_program_s_own_handler_is_kept(tmp_path: Path) -> None:
    # a library caller with its own SIGTERM handler gets it back, and it is not
    # replaced while writing
    seen: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:

        def pieces() -> Iterator[bytes]:
            yield b"a"
            os.kill(os.getpid(), signal.SIGTERM)
            yield b"b"

        write_atomic(tmp_path / "x", pieces())
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, old)
    assert seen == [signal.SIGTERM]
    assert (tmp_path / "x").read_bytes() == b"ab"


def test_handlers_restored_after_a_write(tmp_path: Path) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    write_atomic(tmp_path / "x", b"data")
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.parametrize("kind", ["other file", "dangling", "the same name"])
def test_symlink_output_is_refused(kind: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    real = tmp_path / "real.ko"
    real.write_bytes(b"old")
    link = tmp_path / "link.ko"
    link.symlink_to({"other file": "real.ko", "dangling": "nowhere.ko",
                     "the same name": "link.ko"}[kind])  # fmt: skip
    with pytest.raises(InputError, match="output is a symbolic link to"):
        write_atomic(link, b"new", overwrite=True)
    assert main(["convert", str(SAMPLE), "-o", str(link)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"klpelf: {link}: output is a symbolic link to '")
    assert err.count("\n") == 1
    assert link.is_symlink() and real.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.ko", "real.ko"]


def test_special_files_through_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for out, kind in ((fifo, "a FIFO"), (Path("/dev/null"), "a character device")):
        assert main(["convert", str(SAMPLE), "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert err == (f"klpelf: {out}: output is {kind}, not a regular file "
                       "(refusing to replace it)\n")  # fmt: skip
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and stat.S_ISCHR(os.lstat("/dev/null").st_mode)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_unwritable_directory() -> None:
    # as root (the tests' usual user) through setpriv: root writes anywhere
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        os.chmod(top, 0o755)
        locked = Path(top) / "locked"
        locked.mkdir(mode=0o555)
        r = subprocess.run(
            [*(as_nobody if os.getuid() == 0 else []), sys.executable, "-m", "klpelf",
             "convert", str(SAMPLE), "-o", str(locked / "x.ko")],
            check=False, capture_output=True, text=True, env=ENV,
        )  # fmt: skip
        assert (r.returncode, r.stdout) == (1, "")
        assert r.stderr == (f"klpelf: {locked / 'x.ko'}: cannot create the output: "
                            "Permission denied\n")  # fmt: skip
        assert list(locked.iterdir()) == []


def _places(tmp_path: Path) -> list[Path]:
    out = [tmp_path]
    if os.path.isdir("/dev/shm") and os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev:
        out.append(Path("/dev/shm"))
    return out


@pytest.mark.parametrize("named", [False, True])
@pytest.mark.parametrize("where", ["same filesystem", "other filesystem"])
@pytest.mark.parametrize("suffix", ["", ".xz"])
def test_convert_on_one_and_across_filesystems(
    where: str, named: bool, suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # The input on disk; the output beside it, or on a tmpfs (copy_file_range refuses
    # EXDEV there and the writer copies through memory); with an unnamed temporary
    # file or, as on filesystems without O_TMPFILE, a named one.
    places = _places(tmp_path)
    if where == "other filesystem" and len(places) == 1:
        pytest.skip("no other filesystem at /dev/shm")
    directory = places[0 if where == "same filesystem" else 1] / f"klpelf-{os.getpid()}-{named}"
    directory.mkdir(exist_ok=True)
    if named:
        monkeypatch.delattr(os, "O_TMPFILE")
    src = tmp_path / "in" / "module.ko"
    src.parent.mkdir()
    shutil.copy(SAMPLE, src)
    try:
        out = directory / f"lp.ko{suffix}"
        out.write_bytes(b"replaced")
        assert main(["convert", str(src), "-o", str(out)]) == 0
        assert bytes(klpio.read_input(out)) == CONVERTED.read_bytes()
        assert [p.name for p in directory.iterdir()] == [out.name]  # no temporary left
        assert src.read_bytes() == SAMPLE.read_bytes()
    finally:
        shutil.rmtree(directory)
    capsys.readouterr()
