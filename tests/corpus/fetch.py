#!/usr/bin/env python3
"""Fetch the real-kernel-module test corpus: Debian bookworm kernel image packages.

Usage: python tests/corpus/fetch.py [--refresh]

The corpus directory is ``$KLPELF_CORPUS`` (default ``~/.cache/klpelf/corpus``).  For
each Debian architecture in ``ARCHES`` it holds the extracted
``linux-image-<abi>-<flavour>`` package, pruned to what the tests read::

    $KLPELF_CORPUS/<debian-arch>/lib/modules/<release>/kernel/**/*.ko
    $KLPELF_CORPUS/<debian-arch>/lib/modules/<release>/modules.{order,builtin,builtin.modinfo}
    $KLPELF_CORPUS/<debian-arch>/boot/System.map-<release>
    $KLPELF_CORPUS/<debian-arch>/boot/config-<release>
    $KLPELF_CORPUS/manifest.json

``manifest.json`` maps each Debian architecture to ``{"package", "version", "release",
"modules_dir", "system_map", "config"}`` (the three paths are absolute).

The image package's own ``boot/System.map-*`` is a one-line placeholder; the real one
(all symbols, locals included) is the first file of ``linux-image-<abi>-<flavour>-dbg``
(~0.9 GB download, 5.5 GB unpacked), so that package is downloaded too and only its
``System.map`` is streamed out; the rest is never unpacked and the .deb is deleted.

bookworm ships its modules uncompressed (plain ``.ko``), each with an appended module
signature (``~Module signature appended~``), on all four architectures.

The script is idempotent: once every architecture is present it only re-reads the small
per-architecture stamps, rewrites the manifest if the corpus moved, and exits (well under
a second).  ``--refresh`` fetches again (the archive's current kernel may have changed).
Any failure ends the run with exit status 1 and one ``fetch.py: error: ...`` line.

How the packages are fetched
----------------------------
apt runs with a private configuration: its own lists, cache and (empty) dpkg status
under ``$KLPELF_CORPUS/.work``, its own sources file, and ``APT::Architectures`` set to the
four architectures.  Nothing on the machine changes: no ``dpkg --add-architecture`` (which
would make every later system ``apt-get update`` fetch three more architectures' indexes,
and a broken foreign index would then break the system's updates), and the system's
package lists are neither needed nor touched, so the script also works before the first
system ``apt-get update``.  The rest of the system's apt configuration (proxy, validity
checks, compression) is inherited, so it reaches the archive exactly as ``apt-get`` does.

The private sources file keeps only the system's ``deb`` entries for suite ``bookworm``,
component ``main``: the point release, not ``bookworm-security`` or ``bookworm-updates``.
That is deliberate.  The point release holds one kernel version for all four
architectures (checked at the time of writing: 6.1.176-1, ABI 6.1.0-50), and it changes
rarely.  ``bookworm-security`` (now LTS) has no s390x at all, and its ppc64el index was
served stale (size mismatch: apt drops the whole suite), so mixing it in gave different
kernels per architecture, or none.  The meta-package ``linux-image-<flavour>`` of the point
release names the ABI package (for amd64 and arm64 that is the signed image; the
``-unsigned`` twin holds the same modules).  Old point releases leave the archive, so the
version cannot be pinned; the manifest records what was fetched.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
COMPONENT = "main"

#: Debian architecture -> kernel flavour (``linux-image-<flavour>`` is the meta-package).
ARCHES: dict[str, str] = {
    "amd64": "amd64",
    "arm64": "arm64",
    "ppc64el": "powerpc64le",
    "s390x": "s390x",
}

STAMP = ".klpelf-corpus.json"
#: Bumped when the extracted content changes, so that older corpora are fetched again.
STAMP_FORMAT = 2
MANIFEST = "manifest.json"
PROG = "fetch.py"


class FetchError(Exception):
    """A failure reported to the user as one line."""


@dataclass(frozen=True)
class Entry:
    """What was fetched for one architecture."""

    package: str
    version: str
    release: str

    def manifest(self, arch_dir: Path) -> dict[str, str]:
        return {
            "package": self.package,
            "version": self.version,
            "release": self.release,
            "modules_dir": str(arch_dir / "lib" / "modules" / self.release),
            "system_map": str(arch_dir / "boot" / f"System.map-{self.release}"),
            "config": str(arch_dir / "boot" / f"config-{self.release}"),
        }


def corpus_dir() -> Path:
    return Path(os.environ.get("KLPELF_CORPUS") or "~/.cache/klpelf/corpus").expanduser()


def note(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- cache check


def read_stamp(arch_dir: Path) -> Entry | None:
    """The entry of a complete extracted architecture, or None if it is missing/broken."""
    try:
        raw = json.loads((arch_dir / STAMP).read_text())
        if raw["format"] != STAMP_FORMAT:
            return None
        entry = Entry(str(raw["package"]), str(raw["version"]), str(raw["release"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    paths = entry.manifest(arch_dir)
    ok = Path(paths["modules_dir"], "kernel").is_dir() and Path(paths["system_map"]).is_file()
    return entry if ok else None


def write_manifest(corpus: Path, entries: dict[str, Entry]) -> None:
    data = {arch: entries[arch].manifest(corpus / arch) for arch in ARCHES if arch in entries}
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    path = corpus / MANIFEST
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    tmp = path.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def present(corpus: Path) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for arch in ARCHES:
        entry = read_stamp(corpus / arch)
        if entry is not None:
            entries[arch] = entry
    return entries


# ------------------------------------------------------------------------ running tools


def run(cmd: Sequence[str], *, cwd: Path | None = None, what: str | None = None) -> str:
    """Run ``cmd``, returning its stdout; on failure raise FetchError with its best line."""
    try:
        proc = subprocess.run(
            list(cmd),
            cwd=cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except OSError as exc:
        raise FetchError(f"cannot run {cmd[0]}: {exc.strerror}") from exc
    # apt-get update exits 0 when it cannot reach the archive ("W: Failed to fetch") and
    # 0 or 100 when an index is bad ("E: ..."): both are failures here, since a failed
    # index silently drops its whole suite and the next step would only say "not found".
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith(("E:", "W: Failed to fetch"))]
    if proc.returncode != 0 or errors:
        lines = errors or [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        detail = lines[0].strip() if lines else f"exit status {proc.returncode}"
        raise FetchError(f"{what or ' '.join(cmd[:2])} failed: {detail}")
    return proc.stdout


# ---------------------------------------------------------------- private apt configuration


def _deb822_paragraphs(text: str) -> Iterator[dict[str, list[str]]]:
    """Paragraphs of a deb822 file as {lower-case field: [first line, continuation...]}."""
    para: dict[str, list[str]] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if para:
                yield para
            para, key = {}, ""
        elif line[0] in " \t" and key:
            para[key].append(line)
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            para[key] = [value.strip()]


def _source_files() -> list[Path]:
    out = run(
        ["apt-config", "shell", "SL", "Dir::Etc::SourceList/f", "SP", "Dir::Etc::SourceParts/d"],
        what="apt-config",
    )
    found = dict(re.findall(r"^(SL|SP)='(.*)'$", out, re.MULTILINE))
    files = [Path(found["SL"])] if "SL" in found else []
    if "SP" in found and Path(found["SP"]).is_dir():
        parts = Path(found["SP"])
        files += sorted([*parts.glob("*.list"), *parts.glob("*.sources")])
    return [f for f in files if f.is_file()]


def bookworm_sources() -> str:
    """A deb822 sources file with the system's ``deb <uri> bookworm main`` entries only."""
    seen: set[str] = set()
    out: list[str] = []

    def add(uri: str, signed_by: list[str]) -> None:
        if uri in seen:
            return
        seen.add(uri)
        out.append(f"Types: deb\nURIs: {uri}\nSuites: {SUITE}\nComponents: {COMPONENT}\n")
        if signed_by:
            out[-1] += "Signed-By: " + "\n".join(signed_by) + "\n"

    for path in _source_files():
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for para in _deb822_paragraphs(text):
                if para.get("enabled", ["yes"])[0].lower() == "no":
                    continue
                if "deb" not in " ".join(para.get("types", [])).split():
                    continue
                if SUITE not in " ".join(para.get("suites", [])).split():
                    continue
                if COMPONENT not in " ".join(para.get("components", [])).split():
                    continue
                for uri in " ".join(para.get("uris", [])).split():
                    add(uri, para.get("signed-by", []))
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
                if (
                    not m
                    or m.group(3) != SUITE
                    or COMPONENT not in m.group(4).split("#")[0].split()
                ):
                    continue
                opts = dict(o.split("=", 1) for o in (m.group(1) or "").split() if "=" in o)
                add(m.group(2), [opts["signed-by"]] if "signed-by" in opts else [])
    if not out:
        raise FetchError(f"no 'deb ... {SUITE} {COMPONENT}' source in the apt configuration")
    return "\n".join(out)


class PrivateApt:
    """apt-get/apt-cache with private lists, cache, status and sources (see module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("lists/partial", "cache/archives/partial", "sources.d", "download"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "status").touch()
        (root / "sources.d" / "klpelf-corpus.sources").write_text(bookworm_sources())
        if os.geteuid() == 0:
            # apt downloads as the unprivileged '_apt' user when it can write the target.
            with contextlib.suppress(LookupError, OSError):
                shutil.chown(root / "download", user="_apt")
        self.opts = [
            "-q",
            f"-oDir::State::Lists={root / 'lists'}",
            f"-oDir::Cache={root / 'cache'}",
            f"-oDir::State::status={root / 'status'}",
            "-oDir::Etc::SourceList=/dev/null",
            f"-oDir::Etc::SourceParts={root / 'sources.d'}",
            "-oAPT::Architectures=" + ",".join(ARCHES),
            "-oAcquire::Retries=3",
            "-oAcquire::Languages=none",
        ]

    def update(self) -> None:
        note(f"updating private package lists ({SUITE}/{COMPONENT}: {', '.join(ARCHES)})")
        run(["apt-get", *self.opts, "update"], what="apt-get update")

    def resolve(self, arch: str) -> tuple[str, str]:
        """(ABI image package, version) that ``linux-image-<flavour>:<arch>`` depends on."""
        meta = f"linux-image-{ARCHES[arch]}"
        out = run(
            ["apt-cache", *self.opts, "show", "--no-all-versions", f"{meta}:{arch}"],
            what=f"apt-cache show {meta}:{arch}",
        )
        m = re.search(r"^Depends:.*?\b(linux-image-\d[^\s,(]*)\s*\(=\s*([^)\s]+)\)", out, re.M)
        if not m:
            raise FetchError(f"{meta}:{arch} in {SUITE} depends on no linux-image-<abi> package")
        return m.group(1), m.group(2)

    def download(self, wanted: Sequence[tuple[str, str, str]]) -> list[Path]:
        """Download each (package, arch, version); returns the checked .deb files."""
        specs = [f"{pkg}:{arch}={ver}" for pkg, arch, ver in wanted]
        note("downloading " + " ".join(specs))
        dest = self.root / "download"
        run(["apt-get", *self.opts, "download", *specs], cwd=dest, what="apt-get download")
        debs = []
        for pkg, arch, ver in wanted:
            found = list(dest.glob(f"{pkg}_*_{arch}.deb"))
            if len(found) != 1:
                raise FetchError(f"apt-get download left no single {pkg}_*_{arch}.deb")
            check_deb(found[0], pkg, arch, ver)
            debs.append(found[0])
        return debs


# ------------------------------------------------------------------------- extraction


def deb_field(deb: Path, field: str) -> str:
    return run(["dpkg-deb", "-f", str(deb), field], what=f"dpkg-deb -f {deb.name}").strip()


def check_deb(deb: Path, package: str, arch: str, version: str) -> None:
    got = tuple(deb_field(deb, f) for f in ("Package", "Architecture", "Version"))
    if got != (package, arch, version):
        raise FetchError(f"{deb.name} is {':'.join(got)}, expected {package}:{arch}:{version}")


def copy_system_map(dbg: Path, release: str, dest: Path) -> None:
    """Copy ``System.map-<release>`` out of the ``-dbg`` package ``dbg`` to ``dest``.

    It is the first file of the package's data (before the 5 GB of vmlinux and module
    debug info), so the tar stream is read only that far: well under a second.
    """
    member = f"usr/lib/debug/boot/System.map-{release}"
    proc = subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(dbg)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    found = False
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                if info.isfile() and info.name.removeprefix("./") == member:
                    src = tar.extractfile(info)
                    assert src is not None
                    with src, dest.open("wb") as out:
                        shutil.copyfileobj(src, out)
                    found = True
                    break
    except tarfile.TarError as exc:
        raise FetchError(f"cannot read {dbg.name}: {exc}") from exc
    finally:
        proc.stdout.close()  # dpkg-deb stops on the broken pipe
        proc.wait()
    if not found:
        raise FetchError(f"{dbg.name} has no {member}")


def extract(deb: Path, dbg: Path, arch: str, work: Path, corpus: Path) -> Entry:
    """Extract ``deb`` into ``corpus/arch`` (replacing it), pruned; returns its entry.

    The image package's ``boot/System.map-<release>`` is a one-line placeholder ("The real
    System.map is in the linux-image-<version>-dbg package"), so it is replaced by the
    real one from ``dbg``.
    """
    package, version = deb_field(deb, "Package"), deb_field(deb, "Version")
    tmp = work / f"extract-{arch}"
    if tmp.exists():
        shutil.rmtree(tmp)
    run(["dpkg-deb", "-x", str(deb), str(tmp)], what=f"dpkg-deb -x {deb.name}")
    mod_root = tmp / "lib" / "modules"
    releases = sorted(p.name for p in mod_root.iterdir()) if mod_root.is_dir() else []
    if len(releases) != 1 or not (mod_root / releases[0] / "kernel").is_dir():
        raise FetchError(f"{deb.name} has no single lib/modules/<release>/kernel tree")
    release = releases[0]
    # Keep the modules tree, System.map and config; drop the kernel image and the docs.
    for child in tmp.iterdir():
        if child.name not in ("lib", "boot"):
            shutil.rmtree(child)
    for child in (tmp / "boot").iterdir():
        if not child.name.startswith(("System.map-", "config-")):
            child.unlink()
    copy_system_map(dbg, release, tmp / "boot" / f"System.map-{release}")
    entry = Entry(package, version, release)
    stamp = {"format": STAMP_FORMAT, **dataclasses.asdict(entry)}
    (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    dest = corpus / arch
    if dest.exists() or dest.is_symlink():
        old = work / f"old-{arch}"
        dest.rename(old)
        shutil.rmtree(old)
    tmp.rename(dest)
    return entry


# ------------------------------------------------------------------------------- main


@contextlib.contextmanager
def locked(corpus: Path) -> Iterator[None]:
    """Serialise concurrent fetches into the same corpus."""
    with (corpus / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch(corpus: Path, refresh: bool) -> dict[str, Entry]:
    entries = {} if refresh else present(corpus)
    missing = [arch for arch in ARCHES if arch not in entries]
    if not missing:
        return entries
    for tool in ("apt-get", "apt-cache", "apt-config", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise FetchError(f"{tool} not found (a Debian system with apt is needed)")
    work = corpus / ".work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    try:
        apt = PrivateApt(work / "apt")
        apt.update()
        wanted = {arch: apt.resolve(arch) for arch in missing}
        versions = {ver for _, ver in wanted.values()}
        if len(versions) > 1:
            note(f"warning: kernel versions differ between architectures: {sorted(versions)}")
        # One architecture at a time: the -dbg package is ~0.9 GB, held only until its
        # System.map is copied out.
        for arch, (pkg, ver) in wanted.items():
            image, dbg = apt.download([(pkg, arch, ver), (f"{pkg}-dbg", arch, ver)])
            entries[arch] = extract(image, dbg, arch, work, corpus)
            image.unlink()
            dbg.unlink()
            note(f"{arch}: {pkg} {ver} -> {corpus / arch}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Fetch Debian bookworm kernel modules into $KLPELF_CORPUS."
    )
    parser.add_argument(
        "--refresh", action="store_true", help="fetch again even if the corpus is complete"
    )
    args = parser.parse_args(argv)
    corpus = corpus_dir()
    try:
        entries = present(corpus)
        if not args.refresh and len(entries) == len(ARCHES):
            write_manifest(corpus, entries)
            return 0
        corpus.mkdir(parents=True, exist_ok=True)
        with locked(corpus):
            entries = fetch(corpus, args.refresh)
            write_manifest(corpus, entries)
    except FetchError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    note(f"corpus complete: {corpus / MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
