"""Kernels from Debian's archive, built for with their own release's toolchain.

The kernel matrix (:data:`MATRIX`) names one Debian kernel per series.  The host's own
(bookworm: 6.1) is used as ``apt`` installed it.  Each other one is prepared once and
cached under ``$KLPELF_KERNEL_CACHE`` (default ``~/.cache/klpelf``):

``apt/<suite>/``
    a private apt configuration (sources, lists, cache, an empty dpkg status) for the
    release's suite: the machine's own apt sources and dpkg database stay untouched;
``kernels/<release>/``
    ``vmlinuz``, ``config`` and ``modules/`` (``modules.dep``, ``modules.builtin`` and
    the modules the VM needs), extracted from the image packages, and ``debs/``: the
    headers and kbuild packages;
``chroots/<release>/``
    a ``debootstrap --variant=minbase`` chroot of the suite with the compiler the
    headers depend on (gcc-10 for 5.10, gcc-14 for 6.12, gcc-16 for 7.2), ``make``,
    ``libc6-dev`` and ``libelf-dev``, in which the headers and kbuild packages are
    unpacked with ``dpkg`` at their own absolute paths (Debian's headers refer to
    their ``-common`` directory and to the kbuild tools by absolute path).

Modules are then built with ``chroot <root> make -C /usr/src/linux-headers-<release>``
in a private mount namespace with ``/proc`` mounted (objtool reads it), so no mount
outlives the command.  Each cache entry is written under a temporary name and renamed
when complete, under a file lock: sessions running at the same time share the cache.

Needs root (chroot, unshare), ``debootstrap``, ``dpkg-deb`` and the network (the
Debian archive, ``$KLPELF_DEBIAN_MIRROR``, default ``http://deb.debian.org/debian``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kernel.klpvm.vm import KernelSpec, VmError, installed_releases, virtio_modules

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
#: what every build chroot gets besides the compiler the headers depend on
BUILD_PACKAGES = ("make", "libc6-dev", "libelf-dev")
#: the chroot's own PATH and environment for commands run in it
CHROOT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "HOME=/root", "LC_ALL=C.UTF-8")  # fmt: skip


@dataclass(frozen=True)
class MatrixKernel:
    """One kernel of the matrix: a Debian suite and a release in it."""

    series: str
    suite: str
    #: the package release (``linux-image-<release>``); None: the host's installed one
    release: str | None

    @property
    def on_host(self) -> bool:
        return self.release is None


#: The kernels the real-kernel tests run on by default, oldest first.  A release leaves
#: the archive after a while (sid's quickly; a stable suite's at each point release):
#: the cache keeps a prepared one, and a cold run names the newer release here.
MATRIX: tuple[MatrixKernel, ...] = (
    MatrixKernel("5.10", "bullseye", "5.10.0-32-amd64"),
    MatrixKernel("6.1", "bookworm", None),
    MatrixKernel("6.12", "trixie", "6.12.117+deb13-amd64"),
    MatrixKernel("7.2", "sid", "7.2.13+deb14-amd64"),
)


class PrepareError(VmError):
    """A kernel of the matrix could not be downloaded, extracted or given a chroot."""


def cache_root() -> Path:
    """``$KLPELF_KERNEL_CACHE``, else ``~/.cache/klpelf``."""
    env = os.environ.get("KLPELF_KERNEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "klpelf"


def mirror() -> str:
    return os.environ.get("KLPELF_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def series_of(release: str) -> str:
    """``6.12`` for ``6.12.117+deb13-amd64``."""
    major, minor = release.split(".")[:2]
    return f"{major}.{''.join(c for c in minor if c.isdigit())}"


def host_problems() -> list[str]:
    """What the preparation of an archive kernel needs and the machine lacks."""
    out = []
    if os.geteuid() != 0:
        out.append("preparing a Debian archive kernel needs root (chroot, unshare)")
    for tool, pkg in (("debootstrap", "debootstrap"), ("dpkg-deb", "dpkg"),
                      ("unshare", "util-linux"), ("chroot", "coreutils")):  # fmt: skip
        if shutil.which(tool) is None:
            out.append(f"{tool} not found (apt-get install {pkg})")
    if not KEYRING.is_file():
        out.append(f"{KEYRING} is missing (apt-get install debian-archive-keyring)")
    return out


def _run(cmd: list[str], what: str, *, cwd: Path | None = None, timeout: float = 900) -> str:
    try:
        res = subprocess.run(
            cmd, capture_output=True, text=True, check=False, cwd=cwd, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise PrepareError(f"{what}: timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    if res.returncode != 0:
        raise PrepareError(
            f"{what} failed (exit {res.returncode}): {' '.join(cmd)}\n"
            f"{res.stdout[-3000:]}{res.stderr[-3000:]}"
        )
    return res.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


# --- a private apt ------------------------------------------------------------------------


class PrivateApt:
    """apt-get and apt-cache on one suite, with their own sources, lists and status."""

    #: lists older than this are refreshed before a package is looked up (a pinned
    #: package that is found needs no refresh at all)
    MAX_AGE = 24 * 3600

    def __init__(self, suite: str, root: Path | None = None, *, arch: str | None = None) -> None:
        self.suite = suite
        #: the Debian architecture of the packages (None: the host's)
        self.arch = arch
        self.root = root or cache_root() / "apt" / (f"{suite}-{arch}" if arch else suite)
        self._fresh = False

    def options(self) -> list[str]:
        r = self.root
        return [
            "-o", f"Dir::Etc::SourceList={r / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={r / 'lists'}",
            "-o", f"Dir::Cache={r / 'cache'}",
            "-o", f"Dir::State::status={r / 'status'}",
            "-o", "Dir::Etc::Preferences=/nonexistent",
            "-o", "Dir::Etc::PreferencesParts=/nonexistent",
            "-o", "APT::Sandbox::User=root",
            "-o", "Acquire::Languages=none",
            "-o", "Acquire::Check-Valid-Until=false",  # sid's Release can be expired
            "-o", "Debug::NoLocking=true",  # the cache entry's own lock serializes us
            *(["-o", f"APT::Architecture={self.arch}", "-o", f"APT::Architectures={self.arch}"]
              if self.arch else []),
        ]  # fmt: skip

    def _setup(self) -> None:
        for d in ("lists/partial", "cache/archives/partial"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        src = f"deb [signed-by={KEYRING}] {mirror()} {self.suite} main\n"
        path = self.root / "sources.list"
        if not path.exists() or path.read_text() != src:
            path.write_text(src)
            for f in (self.root / "lists").glob("*_Packages*"):
                f.unlink()

    def _lists_age(self) -> float:
        lists = list((self.root / "lists").glob("*_Packages*"))
        if not lists:
            return float("inf")
        return time.time() - min(f.stat().st_mtime for f in lists)

    def update(self, *, force: bool = False) -> None:
        self._setup()
        if self._fresh or (not force and self._lists_age() < self.MAX_AGE):
            return
        with _locked(self.root / "lock"):
            _run(["apt-get", *self.options(), "-q", "update"], f"apt-get update ({self.suite})")
        self._fresh = True

    def show(self, package: str) -> dict[str, str] | None:
        """The candidate version's control fields, or None when the suite has no such package."""
        self.update()
        for attempt in (0, 1):
            res = subprocess.run(
                ["apt-cache", *self.options(), "show", "--no-all-versions", package],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if res.returncode == 0 and res.stdout.strip():
                return _control_fields(res.stdout)
            if attempt == 0 and not self._fresh:
                self.update(force=True)  # a package newer than the cached lists
            else:
                break
        return None

    def download(self, packages: dict[str, str], dest: Path) -> dict[str, Path]:
        """Download ``name -> version`` into ``dest``; return ``name -> .deb``."""
        dest.mkdir(parents=True, exist_ok=True)
        _run(
            ["apt-get", *self.options(), "-q", "download",
             *(f"{n}={v}" for n, v in sorted(packages.items()))],
            f"apt-get download ({self.suite})", cwd=dest,
        )  # fmt: skip
        out = {}
        for name, version in packages.items():
            ver = version.split(":", 1)[-1]  # the epoch is %3a-quoted or absent in the name
            hits = [p for p in dest.glob(f"{name}_*.deb") if _deb_version(p) == ver]
            if not hits:
                raise PrepareError(f"apt-get download left no {name}_{ver}_*.deb in {dest}")
            out[name] = hits[0]
        return out


def _deb_version(path: Path) -> str:
    v = path.name.split("_")[1]
    return v.replace("%3a", ":").split(":", 1)[-1]


def _control_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in text.split("\n\n", 1)[0].splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _depends(fields: dict[str, str]) -> list[list[str]]:
    """Depends and Pre-Depends as clauses of alternative package names (no versions)."""
    out = []
    for field_name in ("Pre-Depends", "Depends"):
        for clause in fields.get(field_name, "").split(","):
            alts = [re.sub(r"[\s(\[:].*", "", a.strip()) for a in clause.split("|")]
            alts = [a for a in alts if a]
            if alts:
                out.append(alts)
    return out


# --- the packages of one release -----------------------------------------------------------


@dataclass
class ReleasePackages:
    """The packages of a kernel release: what to extract, what to unpack in the chroot,
    and what debootstrap installs there."""

    release: str
    suite: str
    #: name -> version: image packages (extracted on the host for the VM)
    image: dict[str, str]
    #: name -> version: headers, kbuild, compiler meta packages (unpacked in the chroot)
    headers: dict[str, str]
    #: packages of the suite the chroot needs (the compiler, make, libc6-dev, ...)
    toolchain: list[str]

    def key(self) -> str:
        """Identifies the chroot's contents."""
        doc = json.dumps([self.suite, sorted(self.headers.items()), sorted(self.toolchain)])
        return hashlib.sha256(doc.encode()).hexdigest()[:16]


def release_packages(apt: PrivateApt, release: str) -> ReleasePackages:
    """Find the image, headers and toolchain packages of ``release`` in ``apt``'s suite."""
    image_pkg = f"linux-image-{release}"
    fields = apt.show(image_pkg)
    if fields is None:
        raise PrepareError(
            f"{image_pkg} is not in Debian {apt.suite} ({mirror()}): the release left the "
            f"archive; name a current one in tests/kernel/klpvm/debian.py (MATRIX) "
            f"(apt-cache {' '.join(apt.options())} search linux-image-)"
        )
    image = {image_pkg: fields["Version"]}
    # 7.2+: linux-image-<release> is a meta package over linux-binary-, linux-modules-
    # and linux-base-<release>
    for alts in _depends(fields):
        name = alts[0]
        if name.endswith(f"-{release}") and name.startswith("linux-"):
            sub = apt.show(name)
            if sub is None:
                raise PrepareError(f"{name} (a dependency of {image_pkg}) is not in {apt.suite}")
            image[name] = sub["Version"]
    headers: dict[str, str] = {}
    toolchain: set[str] = set(BUILD_PACKAGES)
    todo = [f"linux-headers-{release}"]
    while todo:
        name = todo.pop()
        if name in headers:
            continue
        f = apt.show(name)
        if f is None:
            raise PrepareError(f"{name} is not in Debian {apt.suite} ({mirror()})")
        headers[name] = f["Version"]
        for alts in _depends(f):
            if any(a.startswith("linux-image-") for a in alts) or alts[0] == "linux-base":
                continue  # the image is not needed to build; linux-base only runs hooks
            if alts[0].startswith("linux-"):
                todo.append(alts[0])
            else:
                toolchain.add(alts[0])
    return ReleasePackages(release, apt.suite, image, headers, sorted(toolchain))


# --- kernels/<release>: the image, for the VM ---------------------------------------------


def _extract(deb: Path, dest: Path) -> None:
    _run(["dpkg-deb", "-x", str(deb), str(dest)], f"dpkg-deb -x {deb.name}")


def prepare_image(pk: ReleasePackages, apt: PrivateApt) -> Path:
    """``kernels/<release>``: vmlinuz, config, modules/ (the VM's) and debs/ (the chroot's)."""
    root = cache_root() / "kernels"
    out = root / pk.release
    if (out / ".complete").is_file():
        return out
    with _locked(root / f"{pk.release}.lock"):
        if (out / ".complete").is_file():
            return out
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{pk.release}."))
        try:
            dl = tmp / "download"
            debs = apt.download({**pk.image, **pk.headers}, dl)
            x = tmp / "x"
            for name in pk.image:
                _extract(debs[name], x)
            mods = next(
                (p for p in (x / "lib/modules" / pk.release, x / "usr/lib/modules" / pk.release)
                 if (p / "modules.dep").is_file() or (p / "modules.order").is_file()),
                None,
            )  # fmt: skip
            if mods is None:
                raise PrepareError(f"{pk.release}: no lib/modules/{pk.release} in {list(debs)}")
            vmlinuz = next(
                (p for p in (x / "boot" / f"vmlinuz-{pk.release}", mods / "vmlinuz")
                 if p.is_file()),
                None,
            )  # fmt: skip
            if vmlinuz is None:
                raise PrepareError(f"{pk.release}: no vmlinuz in {list(pk.image)}")
            if not (mods / "modules.dep").is_file():
                # 7.2's packages leave modules.dep to the postinst; depmod -b looks
                # under <base>/lib/modules
                if not (x / "lib").exists():
                    (x / "lib").symlink_to("usr/lib")
                _run(["depmod", "-b", str(x), pk.release], f"depmod {pk.release}")
            stage = tmp / "kernel"
            (stage / "modules").mkdir(parents=True)
            shutil.copyfile(vmlinuz, stage / "vmlinuz")
            for config in (x / "boot" / f"config-{pk.release}", mods / "config"):
                if config.is_file():
                    shutil.copyfile(config, stage / "config")
            for f in mods.glob("modules.*"):
                if f.is_file():
                    shutil.copyfile(f, stage / "modules" / f.name)
            probe = KernelSpec(pk.release, stage / "vmlinuz", mods, Path("/nonexistent"))
            for _, path in virtio_modules(probe):
                dst = stage / "modules" / path.relative_to(mods)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dst)
            (stage / "debs").mkdir()
            for name in pk.headers:
                shutil.move(debs[name], stage / "debs" / debs[name].name)
            (stage / "packages.json").write_text(
                json.dumps(
                    {"suite": pk.suite, "image": pk.image, "headers": pk.headers,
                     "toolchain": pk.toolchain}, indent=2,
                ) + "\n"
            )  # fmt: skip
            (stage / ".complete").write_text("")
            _remove_tree(out)
            stage.rename(out)
        finally:
            _remove_tree(tmp)
    return out


def _saved_packages(kdir: Path, release: str) -> ReleasePackages:
    doc = json.loads((kdir / "packages.json").read_text())
    return ReleasePackages(release, doc["suite"], doc["image"], doc["headers"], doc["toolchain"])


# --- chroots/<release>: the build environment ----------------------------------------------


def debootstrap(suite: str, target: Path, packages: list[str] | tuple[str, ...]) -> None:
    """``debootstrap --variant=minbase`` of ``suite`` into ``target`` with ``packages``,
    its downloads kept in the shared ``debootstrap/<suite>`` cache."""
    debs_cache = cache_root() / "debootstrap" / suite
    debs_cache.mkdir(parents=True, exist_ok=True)
    # in its own mount namespace: the /proc and /sys debootstrap mounts in the target
    # cannot outlive it, whatever happens
    _run(
        ["unshare", "--mount", "--propagation", "private", "--fork", "--",
         "debootstrap", "--variant=minbase", f"--keyring={KEYRING}",
         f"--cache-dir={debs_cache}", f"--include={','.join(packages)}",
         suite, str(target), mirror()],
        f"debootstrap {suite}", timeout=1200,
    )  # fmt: skip


def chroot_command(root: Path, argv: list[str]) -> list[str]:
    """``argv`` run in the chroot ``root`` with /proc mounted, in a private mount
    namespace (the mount ends with the command), with a clean environment."""
    script = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--fork", "--",
            "sh", "-c", script, str(root), "env", "-i", *CHROOT_ENV, *argv]  # fmt: skip


def prepare_chroot(pk: ReleasePackages, kdir: Path) -> Path:
    """``chroots/<release>``: debootstrap of the suite plus the release's headers."""
    root = cache_root() / "chroots"
    out = root / pk.release
    stamp = out / ".klpelf-chroot"
    key = pk.key()
    if stamp.is_file() and stamp.read_text().strip() == key:
        return out
    with _locked(root / f"{pk.release}.lock"):
        if stamp.is_file() and stamp.read_text().strip() == key:
            return out
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{pk.release}."))
        try:
            debootstrap(pk.suite, tmp, pk.toolchain)
            inside = tmp / "tmp" / "klpelf-debs"
            inside.mkdir(parents=True)
            for deb in sorted((kdir / "debs").glob("*.deb")):
                shutil.copyfile(deb, inside / deb.name)
            # unpacked, not configured: the headers' postinst runs linux-base hooks
            # (DKMS and the like), which a build chroot does not need; the dependency on
            # the image package is deliberately left unmet
            debs = [f"/tmp/klpelf-debs/{d.name}" for d in sorted(inside.glob("*.deb"))]
            _run(
                chroot_command(tmp, ["dpkg", "--unpack", "--force-depends", *debs]),
                f"dpkg --unpack in the {pk.suite} chroot",
            )
            shutil.rmtree(inside)
            build = tmp / "usr" / "src" / f"linux-headers-{pk.release}"
            if not (build / "Makefile").is_file():
                raise PrepareError(f"{pk.release}: the headers did not land in {build}")
            (tmp / ".klpelf-chroot").write_text(key + "\n")
            (tmp / "proc").mkdir(exist_ok=True)
            os.chmod(tmp, 0o755)
            _remove_tree(out)
            tmp.rename(out)
        finally:
            _remove_tree(tmp)
    return out


# --- the matrix ---------------------------------------------------------------------------


def matrix_kernel(name: str) -> MatrixKernel | None:
    """The matrix entry for a series (``6.12``) or a release (``6.12.117+deb13-amd64``)."""
    for k in MATRIX:
        if name in (k.series, k.release):
            return k
    series = series_of(name) if "." in name else name
    for k in MATRIX:
        if k.series == series:
            # another release of a series the matrix knows: the same suite
            return MatrixKernel(series, k.suite, None if k.on_host else name)
    return None


def host_release(series: str) -> str | None:
    """The newest installed release of ``series`` (image, modules and headers)."""
    rels = [r for r in installed_releases() if series_of(r) == series]
    return rels[-1] if rels else None


def kernel_spec(name: str, *, prepare: bool = True) -> KernelSpec:
    """The :class:`KernelSpec` for a series or a release of the matrix, or any release
    installed on the host.  Archive kernels are downloaded and given a chroot first
    (``prepare``), or taken from the cache as they are.

    :raises PrepareError: when the kernel is neither installed nor preparable.
    """
    if re.fullmatch(r"\d+\.\d+\.\S+", name) and not KernelSpec.installed(name).problems():
        return KernelSpec.installed(name)
    k = matrix_kernel(name)
    if k is None:
        raise PrepareError(f"{name}: not installed, and not a series of the kernel matrix")
    if k.on_host:
        rel = name if re.fullmatch(r"\d+\.\d+\.\S+", name) else host_release(k.series)
        if rel is None:
            raise PrepareError(
                f"no Linux {k.series} installed on the host (apt-get install "
                "linux-image-amd64 linux-headers-amd64, the same release)"
            )
        return KernelSpec.installed(rel)
    assert k.release is not None
    kdir = cache_root() / "kernels" / k.release
    croot = cache_root() / "chroots" / k.release
    ready = (kdir / ".complete").is_file() and (croot / ".klpelf-chroot").is_file()
    if not ready:
        if not prepare:
            raise PrepareError(f"{k.release} is not prepared in {cache_root()}")
        problems = host_problems()
        if problems:
            raise PrepareError(f"cannot prepare {k.release}: " + "; ".join(problems))
        apt = PrivateApt(k.suite)
        pk = release_packages(apt, k.release)
        kdir = prepare_image(pk, apt)
        croot = prepare_chroot(_saved_packages(kdir, k.release), kdir)
    return KernelSpec(
        k.release,
        kdir / "vmlinuz",
        kdir / "modules",
        Path("/usr/src") / f"linux-headers-{k.release}",
        chroot=croot,
    )


def default_kernels() -> list[str]:
    """The series of :data:`MATRIX`."""
    return [k.series for k in MATRIX]
