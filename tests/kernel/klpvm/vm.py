"""Boot a Debian kernel under qemu with a busybox initramfs, run a script, bring back files.

One boot runs a whole script.  The way in is the initramfs: a cached base archive per
kernel (static busybox, the virtio modules, the static loader ``klpt_mod``, ``/init``)
plus a per-run archive (``/klpt/run.sh``, its files).  The way out is a second, empty
virtio disk: ``/init`` runs the script, which writes everything under ``/out``, then
writes ``tar -cf /dev/vda -C /out .`` and powers the machine off; the host reads the tar
stream back from the raw image.  Progress lines (``KLPT: ...``) and the kernel's warnings
go to the serial console, which is kept as ``console.log`` and shown when a boot fails.

Before anything else ``/init`` saves ``/proc/kallsyms`` (kptr_restrict lifted) as
``/out/kallsyms``: vmlinux symbols only, since no module is loaded yet.

Bounds: a guest watchdog (after ``watchdog`` seconds it writes what there is and powers
off; 30 s later it forces the power-off through sysrq), ``panic=-1`` with ``-no-reboot``
(a panic ends qemu at once), and a host-side timeout that kills qemu.

Everything is a parameter of :class:`KernelSpec`, so the same code boots any release
whose image, modules and headers are at hand; its :class:`Machine` says how to boot and
build for its architecture (x86_64's ``pc``, or arm64's ``virt``: tests/kernel/klpvm/lanes.py).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kernel.klpvm.cpio import Entry, with_parents, write_newc

HERE = Path(__file__).resolve().parent
LOADER_SOURCE = HERE.parent / "guest" / "klpt_mod.c"
#: the modules the guest needs for its output disk (dependencies come from modules.dep)
VIRTIO_MODULES = ("virtio_pci", "virtio_blk")
BUSYBOX = Path("/bin/busybox")
QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class Machine:
    """How to boot one architecture's kernels under qemu and build for them."""

    name: str
    qemu: str
    #: the Debian package of ``qemu``
    qemu_package: str
    #: the machine (``{accel}``: tcg or kvm) and CPU options
    qemu_args: tuple[str, ...]
    #: the output disk (``{disk}``: its path)
    disk_args: tuple[str, ...]
    console: str
    #: a static busybox of the architecture, and where it comes from
    busybox: Path
    busybox_hint: str
    #: the C compiler of the guest loader (``-static``) and the static libc it needs
    cc: str
    libc: Path
    libc_package: str
    #: make options of kbuild (ARCH=, CROSS_COMPILE=)
    kbuild_args: tuple[str, ...] = ()
    #: the modules the guest loads for its output disk (none: built in)
    virtio_modules: tuple[str, ...] = VIRTIO_MODULES


X86_64 = Machine(
    "x86_64", QEMU, "qemu-system-x86", ("-machine", "pc,accel={accel}"),
    ("-drive", "file={disk},format=raw,if=virtio"), "ttyS0",
    BUSYBOX, "apt-get install busybox-static",
    "gcc", Path("/usr/lib/x86_64-linux-gnu/libc.a"), "libc6-dev",
)  # fmt: skip


def cache_root() -> Path:
    """``$KLPELF_VM_CACHE``, else ``~/.cache/klpelf/vm``."""
    env = os.environ.get("KLPELF_VM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "klpelf" / "vm"


class VmError(Exception):
    """The VM could not be prepared, did not boot, or brought nothing back."""

    def __init__(self, message: str, console: str = "") -> None:
        self.console = console
        if console:
            tail = "\n".join(console.splitlines()[-80:])
            message = f"{message}\n--- serial console (last 80 lines) ---\n{tail}"
        super().__init__(message)


@dataclass(frozen=True)
class KernelSpec:
    """A kernel release and where its pieces are."""

    release: str
    vmlinuz: Path
    #: /lib/modules/<release>: kernel/**.ko*, modules.dep
    modules_dir: Path
    #: the kbuild tree of the headers package (/lib/modules/<release>/build); inside
    #: ``chroot`` when there is one
    build_dir: Path
    #: a root directory with the release's own compiler and kbuild tools, in which
    #: ``make -C build_dir`` runs (tests/kernel/klpvm/debian.py); None: the host's
    chroot: Path | None = None
    machine: Machine = X86_64

    @classmethod
    def installed(cls, release: str) -> KernelSpec:
        """The release as Debian's linux-image-* and linux-headers-* packages install it."""
        mods = Path("/lib/modules") / release
        return cls(release, Path("/boot") / f"vmlinuz-{release}", mods, mods / "build")

    @property
    def series(self) -> str:
        """``6.1`` for ``6.1.0-56-amd64``: the key of the expected-verdict files."""
        major, minor = self.release.split(".")[:2]
        return f"{major}.{''.join(c for c in minor if c.isdigit())}"

    @property
    def version_key(self) -> tuple[int, ...]:
        return _version_key(self.release)

    def problems(self) -> list[str]:
        """What is missing to build modules for and boot this kernel (empty: all there)."""
        out = []
        if not self.vmlinuz.is_file():
            out.append(f"{self.vmlinuz} is missing (apt-get install linux-image-{self.release})")
        if self.machine.virtio_modules and not (self.modules_dir / "modules.dep").is_file():
            out.append(f"{self.modules_dir}/modules.dep is missing (the image package's modules)")
        if not (self.host_build_dir / "Makefile").is_file():
            pkg = f"linux-headers-{self.release}"
            out.append(f"{self.host_build_dir} has no kbuild tree (apt-get install {pkg})")
        return out

    @property
    def host_build_dir(self) -> Path:
        """``build_dir`` as the host sees it."""
        if self.chroot is None:
            return self.build_dir
        return self.chroot / self.build_dir.relative_to("/")


def installed_releases() -> list[str]:
    """Releases with an installed image, modules and headers, oldest first."""
    out = []
    for vmlinuz in Path("/boot").glob("vmlinuz-*"):
        rel = vmlinuz.name.removeprefix("vmlinuz-")
        if not KernelSpec.installed(rel).problems():
            out.append(rel)
    return sorted(out, key=_version_key)


def _version_key(release: str) -> tuple[int, ...]:
    nums = []
    for part in release.replace("-", ".").split("."):
        digits = "".join(c for c in part if c.isdigit())
        nums.append(int(digits) if digits else 0)
    return tuple(nums)


def host_problems(machine: Machine = X86_64) -> list[str]:
    """Host tools the harness needs that are missing, each with the Debian package."""
    out = []
    if shutil.which(machine.qemu) is None:
        out.append(f"{machine.qemu} not found (apt-get install {machine.qemu_package})")
    if not machine.busybox.is_file() or not _is_static(machine.busybox):
        out.append(f"{machine.busybox} is missing or not static ({machine.busybox_hint})")
    if shutil.which(machine.cc) is None or shutil.which("make") is None:
        out.append(f"{machine.cc} or make not found (apt-get install gcc make)")
    elif not machine.libc.is_file():
        out.append(f"no static libc for the guest loader (apt-get install {machine.libc_package})")
    return out


def _is_static(path: Path) -> bool:
    """True if the ELF executable has no PT_INTERP program header (no dynamic loader)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    for i in range(phnum):
        p_type = int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        if p_type == 3:  # PT_INTERP
            return False
    return True


# --- the cached base initramfs ----------------------------------------------------------

INIT = r"""#!/bin/busybox sh
# /init of the klpelf test VM (tests/kernel/klpvm/vm.py).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /out /tmp
. /klpt/config
say() { echo "KLPT: $*" > /dev/console; }

finish() {
    if [ -b /dev/vda ]; then
        say "writing results"
        tar -cf /dev/vda -C /out . && sync
    else
        say "no /dev/vda: results lost"
    fi
    say "poweroff"
    poweroff -f
}

# guest watchdog: save what there is, power off; force it through sysrq if that hangs
(
    sleep "$KLPT_WATCHDOG"
    say "WATCHDOG: the run did not finish in ${KLPT_WATCHDOG}s"
    echo "watchdog fired after ${KLPT_WATCHDOG}s" > /out/WATCHDOG
    (sleep 30; echo o > /proc/sysrq-trigger) &
    timeout 20 sh -c 'tar -cf /dev/vda -C /out . && sync'
    poweroff -f
) &

echo 1 > /proc/sys/kernel/sysrq
echo 0 > /proc/sys/kernel/kptr_restrict
cat /proc/kallsyms > /out/kallsyms
uname -r > /out/release
cat /proc/cmdline > /out/cmdline
say "booted $(cat /out/release), $(wc -l < /out/kallsyms) kallsyms lines"

for m in $(cat /lib/klpt/virtio.order); do
    /bin/klpt_mod load "/lib/klpt/$m.ko" || say "loading $m failed: errno $?"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
dmesg -c > /out/dmesg.boot

cd /klpt
sh /klpt/run.sh > /out/run.log 2>&1
echo $? > /out/run.rc
say "run.sh exited $(cat /out/run.rc)"
cd /
finish
"""


def _decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        import gzip

        return gzip.decompress(data)
    if path.suffix == ".zst":
        import zstandard

        out: bytes = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        return out
    return data


def virtio_modules(spec: KernelSpec) -> list[tuple[str, Path]]:
    """(name, file) of the virtio modules and their dependencies, in load order.

    Modules built into the kernel (modules.builtin) are not listed.
    """
    deps: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    if not spec.machine.virtio_modules:
        return []
    for line in (spec.modules_dir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        name = _modname(mod)
        paths[name] = mod
        deps[name] = [_modname(d) for d in rest.split()]
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for d in deps.get(name, []):
            visit(d)
        order.append(name)

    for name in spec.machine.virtio_modules:
        if name in paths:
            visit(name)
    return [(n, spec.modules_dir / paths[n]) for n in order]


def _modname(path: str) -> str:
    base = PurePosixPath(path).name
    for ext in (".xz", ".gz", ".zst"):
        base = base.removesuffix(ext)
    return base.removesuffix(".ko").replace("-", "_")


def build_loader(cache: Path | None = None, machine: Machine = X86_64) -> Path:
    """Compile guest/klpt_mod.c with ``gcc -static`` (cached by the source's hash)."""
    src = LOADER_SOURCE.read_bytes()
    cache = cache or cache_root()
    arch = "" if machine is X86_64 else f"{machine.name}-"
    out = cache / f"klpt_mod-{arch}{hashlib.sha256(src).hexdigest()[:16]}"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmpdir:
        tmp = Path(tmpdir) / "klpt_mod"
        res = subprocess.run(
            [machine.cc, "-static", "-O2", "-Wall", "-o", str(tmp), str(LOADER_SOURCE)],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise VmError(f"building the guest loader failed:\n{res.stderr}")
        tmp.replace(out)
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` through a unique temporary file and a rename: sessions running at
    the same time share the cache, and a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def base_initramfs(spec: KernelSpec, cache: Path | None = None) -> Path:
    """The cached base archive for ``spec``: busybox, /init, the loader, virtio modules."""
    cache = cache or cache_root()
    machine = spec.machine
    loader = build_loader(cache, machine)
    mods = virtio_modules(spec)
    missing = sorted(set(machine.virtio_modules) - {n for n, _ in mods})
    builtin = spec.modules_dir / "modules.builtin"
    if missing and builtin.is_file():
        names = {_modname(x) for x in builtin.read_text().split()}
        missing = [m for m in missing if m not in names]
    if missing:
        raise VmError(f"{spec.release}: modules {missing} are neither in modules.dep nor built in")
    h = hashlib.sha256()
    for p in (machine.busybox, loader, *(p for _, p in mods)):
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    h.update(INIT.encode())
    out = cache / spec.release / f"base-{h.hexdigest()[:16]}.cpio"
    if out.is_file():
        return out
    entries = [
        Entry("bin/busybox", machine.busybox.read_bytes(), 0o755),
        Entry("bin/sh", symlink="busybox"),
        Entry("bin/klpt_mod", loader.read_bytes(), 0o755),
        Entry("init", INIT.encode(), 0o755),
        Entry("lib/klpt/virtio.order", "".join(f"{n}\n" for n, _ in mods).encode()),
        *(Entry(f"lib/klpt/{n}.ko", _decompress(p)) for n, p in mods),
        Entry("proc", None), Entry("sys", None), Entry("dev", None),
    ]  # fmt: skip
    write_atomic(out, write_newc(with_parents(entries)))
    return out


# --- one boot ----------------------------------------------------------------------------


@dataclass
class BootResult:
    """What one boot brought back."""

    #: where the guest's /out was extracted
    out_dir: Path
    console: str
    seconds: float
    #: the guest watchdog fired (the run did not finish)
    watchdog: bool = False
    files: list[str] = field(default_factory=list)


def boot(
    spec: KernelSpec,
    workdir: Path,
    run_script: str,
    files: dict[str, bytes] | None = None,
    *,
    cmdline: str = "",
    watchdog: int = 150,
    timeout: float | None = None,
    memory_mib: int = 1024,
) -> BootResult:
    """Boot ``spec``, run ``run_script`` as /klpt/run.sh (cwd /klpt), return its /out.

    ``files`` maps paths under /klpt to their contents.  The full kernel command line
    is ``console=<the machine's> nokaslr panic=-1 <cmdline>``.  ``timeout`` (host side) defaults
    to the watchdog plus 60 s.

    :raises VmError: with the serial console's tail when the guest brought nothing back.
    """
    machine = spec.machine
    problems = host_problems(machine) + spec.problems()
    if problems:
        raise VmError("cannot boot the test VM:\n  " + "\n  ".join(problems))
    workdir.mkdir(parents=True, exist_ok=True)
    base = base_initramfs(spec)
    config = f"KLPT_WATCHDOG={int(watchdog)}\n"
    run_entries = [
        Entry("klpt/config", config.encode()),
        Entry("klpt/run.sh", run_script.encode(), 0o755),
        *(Entry(f"klpt/{p}", data) for p, data in sorted((files or {}).items())),
    ]
    initrd = workdir / "initrd.cpio"
    with initrd.open("wb") as f:
        f.write(base.read_bytes())
        f.write(write_newc(with_parents(run_entries)))
    disk = workdir / "out.img"
    with disk.open("wb") as f:
        f.truncate(256 << 20)  # sparse; the tar stream needs ~15 MiB (kallsyms)
    console = workdir / "console.log"
    console.unlink(missing_ok=True)
    accel = os.environ.get("KLPELF_VM_ACCEL", "tcg")
    extra = os.environ.get("KLPELF_VM_APPEND", "")  # e.g. loglevel=7 to debug a boot
    append = " ".join([f"console={machine.console}", "nokaslr", "panic=-1", cmdline, extra])
    cmd = [
        machine.qemu, "-nodefaults", "-no-user-config",
        *(a.format(accel=accel) for a in machine.qemu_args),
        "-m", str(memory_mib), "-smp", "1", "-display", "none", "-no-reboot",
        "-kernel", str(spec.vmlinuz), "-initrd", str(initrd), "-append", append.strip(),
        "-serial", f"file:{console}",
        *(a.format(disk=disk) for a in machine.disk_args),
    ]  # fmt: skip
    (workdir / "qemu.cmd").write_text(" ".join(cmd) + "\n")
    limit = timeout if timeout is not None else watchdog + 60
    t0 = time.monotonic()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        raise VmError(
            f"{spec.release}: qemu killed after {limit:.0f} s (host timeout)", _read(console)
        ) from None
    seconds = time.monotonic() - t0
    log = _read(console)
    if res.returncode != 0:
        raise VmError(f"{spec.release}: qemu exited {res.returncode}: {res.stderr.strip()}", log)
    out_dir = workdir / "out"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    names = _extract_tar(disk, out_dir, log, spec.release)
    disk.unlink()
    initrd.unlink()
    return BootResult(out_dir, log, seconds, (out_dir / "WATCHDOG").exists(), names)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _extract_tar(disk: Path, dest: Path, console: str, release: str) -> list[str]:
    """Extract the guest's tar stream: regular files and directories, paths checked."""
    raw = disk.read_bytes()
    if not raw[:512].strip(b"\0"):
        raise VmError(f"{release}: the guest wrote no results (output disk empty)", console)
    names = []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for m in tar:
                rel = PurePosixPath(m.name)
                if rel.is_absolute() or ".." in rel.parts:
                    raise VmError(f"{release}: unsafe path in the guest's tar: {m.name}")
                target = dest.joinpath(*rel.parts) if rel.parts and rel.parts != (".",) else dest
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif m.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fobj = tar.extractfile(m)
                    assert fobj is not None
                    target.write_bytes(fobj.read())
                    names.append(str(PurePosixPath(*rel.parts)))
    except tarfile.TarError as e:
        raise VmError(f"{release}: cannot read the guest's results: {e}", console) from None
    return names
