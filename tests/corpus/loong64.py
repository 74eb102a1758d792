"""Debian's loong64 kernel modules, from sid (bookworm and trixie have no loong64).

``python -m corpus.loong64`` (PYTHONPATH=tests; .ci/run does it) fetches, once, the
modules package of sid's ``linux-image-loong64`` (``linux-modules-<release>``, ~70 MB)
through a private apt configuration for the loong64 architecture (the kernel
harness's, tests/kernel/klpvm/debian.py, under ``$KLPELF_KERNEL_CACHE/apt/sid-loong64``),
and extracts it under ``$KLPELF_CORPUS/loong64/`` (a temporary name renamed when
complete, under a file lock).  :func:`modules_dir` gives the extracted
``lib/modules/<release>``, or None.  sid moves on: a cached corpus stays as it was
fetched; ``--refresh`` fetches the current one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from kernel.klpvm.debian import (
    PrepareError,
    PrivateApt,
    _depends,
    _locked,
    _remove_tree,
    _run,
    cache_root,
)

ARCH, SUITE, META = "loong64", "sid", "linux-image-loong64"
STAMP = ".klpelf-loong64.json"


class ArchApt(PrivateApt):
    """:class:`PrivateApt` for one foreign architecture only."""

    def __init__(self, suite: str, arch: str) -> None:
        super().__init__(suite, cache_root() / "apt" / f"{suite}-{arch}")
        self.arch = arch

    def options(self) -> list[str]:
        return [*super().options(), "-o", f"APT::Architectures={self.arch}",
                "-o", f"APT::Architecture={self.arch}"]  # fmt: skip


def corpus_root() -> Path:
    env = os.environ.get("KLPELF_CORPUS")
    return (Path(env) if env else Path.home() / ".cache" / "klpelf" / "corpus") / ARCH


def modules_dir() -> Path | None:
    """``lib/modules/<release>`` of the fetched package, or None when not fetched."""
    root = corpus_root()
    try:
        release = json.loads((root / STAMP).read_text())["release"]
    except (OSError, ValueError, KeyError):
        return None
    path = root / "lib" / "modules" / release
    return path if (path / "kernel").is_dir() else None


def fetch(*, refresh: bool = False) -> Path:
    """Fetch and extract the modules package (see the module doc); its modules dir."""
    found = modules_dir()
    if found is not None and not refresh:
        return found
    root = corpus_root()
    root.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root.parent / f"{ARCH}.lock"):
        found = modules_dir()
        if found is not None and not refresh:
            return found
        apt = ArchApt(SUITE, ARCH)
        meta = apt.show(META)
        if meta is None:
            raise PrepareError(f"{META} is not in Debian {SUITE} for {ARCH}")
        image = next((a[0] for a in _depends(meta) if a[0].startswith("linux-image-")), None)
        fields = None if image is None else apt.show(image)
        if image is None or fields is None:
            raise PrepareError(f"{META} names no linux-image-<release> package in {SUITE}")
        release = image.removeprefix("linux-image-")
        # 7.2+: the modules are their own package; before, in the image package
        names = [a[0] for a in _depends(fields) if a[0] == f"linux-modules-{release}"]
        package = names[0] if names else image
        pkg = apt.show(package)
        assert pkg is not None
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{ARCH}."))
        try:
            debs = apt.download({package: pkg["Version"]}, tmp / "download")
            stage = tmp / "stage"
            _run(["dpkg-deb", "-x", str(debs[package]), str(stage)], f"dpkg-deb -x {package}")
            for lib in (stage / "usr" / "lib", stage / "lib"):
                if (lib / "modules" / release / "kernel").is_dir():
                    break
            else:
                raise PrepareError(f"{package}: no lib/modules/{release}/kernel in it")
            out = tmp / "out"
            (out / "lib").mkdir(parents=True)
            (lib / "modules").rename(out / "lib" / "modules")
            stamp = {"package": package, "version": pkg["Version"], "release": release}
            (out / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
            _remove_tree(root)
            out.rename(root)
        finally:
            _remove_tree(tmp)
    found = modules_dir()
    assert found is not None
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corpus.loong64", description=__doc__.split("\n")[0])
    parser.add_argument("--refresh", action="store_true", help="fetch sid's current package")
    args = parser.parse_args(argv)
    try:
        print(fetch(refresh=args.refresh))
    except PrepareError as e:
        print(f"corpus.loong64: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
