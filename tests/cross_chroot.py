"""Cross toolchains the host's Debian lacks, run from a cached chroot of a newer suite.

bookworm packages no loongarch64 binutils or gcc; trixie has
``binutils-loongarch64-linux-gnu`` (2.44) and ``gcc-loongarch64-linux-gnu`` (14), which
need trixie's glibc.  :func:`toolchain_root` prepares once, under
``~/.cache/klpelf/chroots/cross-<name>-<suite>`` (``$KLPELF_KERNEL_CACHE``), a
``debootstrap --variant=minbase`` chroot of the suite with those packages, the way the
kernel harness prepares its build chroots (tests/kernel/klpvm/debian.py: its private
apt, the shared debootstrap package cache, a temporary name renamed when complete, a
file lock, so concurrent sessions share the cache).  :func:`chroot_argv` runs a
command in it with a host directory bind-mounted as its working directory, in a
private mount namespace, so no mount outlives the command.

Needs root (chroot, unshare) and, the first time, debootstrap and the Debian archive.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kernel.klpvm.debian import (
    CHROOT_ENV,
    PrepareError,
    _locked,
    _remove_tree,
    cache_root,
    debootstrap,
    host_problems,
)

__all__ = ["TOOLCHAINS", "ChrootToolchain", "PrepareError", "chroot_argv", "toolchain_root"]

#: where the host's working directory appears inside the chroot
WORKDIR = "/klpelf-work"


@dataclass(frozen=True)
class ChrootToolchain:
    """A cross toolchain taken from another Debian suite."""

    name: str
    suite: str
    packages: tuple[str, ...]

    @property
    def root(self) -> Path:
        return cache_root() / "chroots" / f"cross-{self.name}-{self.suite}"

    def key(self) -> str:
        return " ".join((self.suite, *sorted(self.packages)))


TOOLCHAINS: dict[str, ChrootToolchain] = {
    "loongarch64": ChrootToolchain(
        "loongarch64", "trixie", ("binutils-loongarch64-linux-gnu", "gcc-loongarch64-linux-gnu")
    ),
}


def ready(tc: ChrootToolchain) -> bool:
    stamp = tc.root / ".klpelf-chroot"
    return stamp.is_file() and stamp.read_text().strip() == tc.key()


def toolchain_root(tc: ChrootToolchain) -> Path:
    """The chroot of ``tc``, prepared (a minute or two cold) when it is not cached.

    :raises PrepareError: when it cannot be prepared (not root, no debootstrap, no archive).
    """
    if ready(tc):
        return tc.root
    problems = host_problems()
    if problems:
        raise PrepareError(f"cannot prepare the {tc.name} toolchain chroot: " + "; ".join(problems))
    parent = tc.root.parent
    with _locked(parent / f"{tc.root.name}.lock"):
        if ready(tc):
            return tc.root
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{tc.root.name}."))
        try:
            debootstrap(tc.suite, tmp, tc.packages)
            # what the toolchain does not need: apt's and dpkg's caches, docs
            for junk in ("var/cache/apt/archives", "usr/share/doc", "usr/share/man"):
                _remove_tree(tmp / junk)
            (tmp / WORKDIR.lstrip("/")).mkdir()
            (tmp / "proc").mkdir(exist_ok=True)
            (tmp / ".klpelf-chroot").write_text(tc.key() + "\n")
            os.chmod(tmp, 0o755)
            _remove_tree(tc.root)
            tmp.rename(tc.root)
        finally:
            _remove_tree(tmp)
    return tc.root


def chroot_argv(root: Path, workdir: Path, argv: list[str]) -> list[str]:
    """``argv`` run in ``root`` from ``workdir`` (bind-mounted at :data:`WORKDIR`), in a
    private mount namespace, with a clean environment; paths in ``argv`` are relative
    to ``workdir``."""
    script = (
        'mount --bind "$1" "$0/klpelf-work" && mount -t proc proc "$0/proc" && '
        'shift && exec chroot "$0" "$@"'
    )
    inner = ["sh", "-c", f'cd {WORKDIR} && exec "$@"', "sh", *argv]
    return ["unshare", "--mount", "--propagation", "private", "--fork", "--",
            "sh", "-c", script, str(root), str(workdir.resolve()),
            "env", "-i", *CHROOT_ENV, *inner]  # fmt: skip


def which(root: Path, tool: str) -> bool:
    """Whether ``tool`` is in the chroot's /usr/bin."""
    return shutil.which(tool, path=str(root / "usr" / "bin")) is not None


def main(argv: list[str] | None = None) -> int:
    """``python -m cross_chroot [NAME...]`` (PYTHONPATH=tests): prepare the chroots."""
    import sys

    names = (argv if argv is not None else sys.argv[1:]) or sorted(TOOLCHAINS)
    for name in names:
        if name not in TOOLCHAINS:
            print(f"cross_chroot: error: no toolchain {name!r} ({', '.join(TOOLCHAINS)})",
                  file=sys.stderr)  # fmt: skip
            return 2
        try:
            print(toolchain_root(TOOLCHAINS[name]))
        except PrepareError as e:
            print(f"cross_chroot: error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
