"""The cross lanes: livepatch modules on real kernels of other machines, built here
(arm64 so far).

Debian enables CONFIG_LIVEPATCH only in its amd64 kernels; its arm64 and ppc64el
kernels have HAVE_LIVEPATCH with LIVEPATCH off (arm64 has HAVE_LIVEPATCH since v6.17,
fd1e0fd71f65 "arm64: Implement HAVE_LIVEPATCH").  So each lane (:data:`LANES`) builds
one from Debian's own sources: the ``linux-source-7.2`` package of sid (:data:`SOURCE`),
configured with ``make allnoconfig`` and the lane's fragment (``<lane>.config``:
qemu's machine, LIVEPATCH and what it needs), compiled with
Debian's cross compiler, and booted under qemu (TCG) with the harness's busybox
initramfs (a static busybox from Debian's ``busybox-static`` of the architecture).

Filling a lane's cache takes long on a small machine (a kernel build), so the tests
never do it; they run when the cache is there and skip otherwise:

    PYTHONPATH=tests .venv/bin/python -m kernel.klpvm.lanes --fill arm64   # build, cache
    PYTHONPATH=tests .venv/bin/python -m kernel.klpvm.lanes arm64          # run, print

The cache entry is ``<cache>/kernels-<lane>/<release>/`` (``$KLPELF_KERNEL_CACHE``,
default ``~/.cache/klpelf``): the kernel image, ``System.map``, ``config``,
``busybox``, ``build/`` (the configured and built source tree, object files removed:
what ``make -C build M=...`` needs), ``build.json`` (what was built, how long it took)
and ``.complete``, holding the key of the source version and the config fragment: a
changed fragment makes the entry stale, and the lane skips until it is filled again.
Written under a temporary name and renamed when complete, under a file lock.

The cases (``Lane.cases``) run in one boot, in order; cases/<lane>/ has the modules.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from kernel.klpvm.build import BuildError, convert, kbuild
from kernel.klpvm.cases import (
    KALLSYMS,
    Case,
    CaseResult,
    guest_script,
    load,
    modules_needed,
    parse_case,
    read,
    section_lists,
    sections,
)
from kernel.klpvm.debian import PrepareError, PrivateApt, _locked, _remove_tree, _run, cache_root
from kernel.klpvm.vm import BootResult, KernelSpec, Machine, VmError, boot

HERE = Path(__file__).resolve().parent
#: the Debian suite, source package and version the kernels are built from
SUITE = "sid"
SOURCE = "linux-source-7.2"
SOURCE_VERSION = "7.2.13-1"
#: where the guests' static busybox comes from (the package of the host's suite)
BUSYBOX_SUITE = "bookworm"
#: the kernel command line after console=, nokaslr, panic=-1 (vm.boot)
BOOT_CMDLINE = "loglevel=4"
CMDLINE = "/proc/cmdline"


@dataclass(frozen=True)
class Lane:
    """One architecture's kernel, how to build and boot it, and its cases."""

    name: str
    #: the Debian architecture (busybox-static's)
    debian_arch: str
    #: ``make kernelrelease`` with the fragment's CONFIG_LOCALVERSION
    release: str
    #: the Debian package of the cross compiler (``vm.cc``)
    gcc_package: str
    #: the make targets, and the image qemu boots (path in the tree)
    targets: tuple[str, ...]
    image: str
    #: how qemu boots it and kbuild builds for it (:meth:`machine` adds the cache
    #: entry's busybox)
    vm: Machine
    #: kbuild output -> converted with ``klpelf convert`` (annotation mode), or copied
    livepatch_modules: tuple[str, ...]
    plain_modules: tuple[str, ...]
    cases: tuple[Case, ...]

    @property
    def config(self) -> Path:
        """The config fragment: ``klpvm/<lane>.config``."""
        return HERE / f"{self.name}.config"

    @property
    def fill_command(self) -> str:
        return f"PYTHONPATH=tests .venv/bin/python -m kernel.klpvm.lanes --fill {self.name}"

    def options(self) -> list[str]:
        """The fragment's option lines (``CONFIG_X=...``, ``# CONFIG_X is not set``)."""
        return [line for line in self.config.read_text().splitlines()
                if line.startswith("CONFIG_") or line.endswith(" is not set")]  # fmt: skip

    def key(self) -> str:
        """Identifies what the cache entry was built from (the fragment's comments aside)."""
        doc = json.dumps([SOURCE, SOURCE_VERSION, self.release, self.options()])
        return hashlib.sha256(doc.encode()).hexdigest()[:16]

    def kernel_dir(self) -> Path:
        return cache_root() / f"kernels-{self.name}" / self.release

    def machine(self, kdir: Path) -> Machine:
        """The qemu machine with the busybox of the cache entry."""
        hint = f"fill the {self.name} cache: {self.fill_command}"
        return replace(self.vm, busybox=kdir / "busybox", busybox_hint=hint)

    def cached_spec(self) -> KernelSpec | None:
        """The cached kernel, or None when the entry is missing or stale (:meth:`key`)."""
        kdir = self.kernel_dir()
        try:
            if (kdir / ".complete").read_text().strip() != self.key():
                return None
        except FileNotFoundError:
            return None
        image = kdir / PurePosixPath(self.image).name
        return KernelSpec(self.release, image, kdir, kdir / "build", machine=self.machine(kdir))

    def missing_reason(self) -> str:
        kdir = self.kernel_dir()
        state = (f"is stale ({self.config.name} or the source changed)" if kdir.exists()
                 else "is not there")  # fmt: skip
        return f"the {self.name} kernel cache {kdir} {state}; fill it with `{self.fill_command}`"


# --- filling the cache --------------------------------------------------------------------


def fill_problems(lane: Lane) -> list[str]:
    out = []
    for tool, pkg in ((lane.vm.cc, lane.gcc_package), ("make", "make"),
                      ("bison", "bison"), ("flex", "flex"), ("bc", "bc"),
                      ("dpkg-deb", "dpkg")):  # fmt: skip
        if shutil.which(tool) is None:
            out.append(f"{tool} not found (apt-get install {pkg})")
    return out


def fill(lane: Lane, jobs: int = 2, *, log: Path | None = None) -> Path:
    """Build the lane's kernel and fill its cache entry (nothing when it is current).

    :raises PrepareError: a tool is missing, a download or the build failed.
    """
    kdir = lane.kernel_dir()
    if lane.cached_spec() is not None:
        return kdir
    problems = fill_problems(lane)
    if problems:
        raise PrepareError(f"cannot build the {lane.name} kernel: " + "; ".join(problems))
    root = kdir.parent
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{lane.release}.lock"):
        if lane.cached_spec() is not None:
            return kdir
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{lane.release}."))
        try:
            _fill_into(lane, tmp, jobs, log)
            _remove_tree(kdir)
            tmp.rename(kdir)
        finally:
            _remove_tree(tmp)
    return kdir


def _fill_into(lane: Lane, stage: Path, jobs: int, log: Path | None) -> None:
    t0 = time.monotonic()
    dl = stage / "download"
    src_apt = PrivateApt(SUITE)
    found = src_apt.show(SOURCE)
    if found is None or found["Version"] != SOURCE_VERSION:
        now = "no version" if found is None else found["Version"]
        raise PrepareError(
            f"{SOURCE} {SOURCE_VERSION} is not in Debian {SUITE} any more ({now} is): name "
            "the current one in tests/kernel/klpvm/lanes.py (SOURCE, SOURCE_VERSION and "
            "each lane's release)"
        )
    src_deb = src_apt.download({SOURCE: SOURCE_VERSION}, dl)[SOURCE]
    bb_apt = PrivateApt(BUSYBOX_SUITE, arch=lane.debian_arch)
    bb = bb_apt.show("busybox-static")
    if bb is None:
        raise PrepareError(f"busybox-static is not in Debian {BUSYBOX_SUITE} ({lane.debian_arch})")
    bb_deb = bb_apt.download({"busybox-static": bb["Version"]}, dl)["busybox-static"]
    x = stage / "x"
    _run(["dpkg-deb", "-x", str(src_deb), str(x)], f"dpkg-deb -x {src_deb.name}")
    _run(["dpkg-deb", "-x", str(bb_deb), str(x)], f"dpkg-deb -x {bb_deb.name}")
    shutil.copyfile(x / "bin" / "busybox", stage / "busybox")
    tarball = next((x / "usr" / "src").glob("linux-source-*.tar.*"))
    _run(["tar", "-xf", str(tarball), "-C", str(stage)], f"tar -xf {tarball.name}", timeout=1800)
    tree = stage / tarball.name.split(".tar")[0]
    shutil.rmtree(x)
    shutil.rmtree(dl)
    t1 = time.monotonic()
    make = ["nice", "-n", "10", "make", "-C", str(tree), *lane.vm.kbuild_args]
    _run([*make, f"KCONFIG_ALLCONFIG={lane.config}", "allnoconfig"], "make allnoconfig")
    _check_config(lane, tree / ".config")
    release = _run([*make, "-s", "kernelrelease"], "make kernelrelease").strip()
    if release != lane.release:
        raise PrepareError(f"the tree builds {release}, not {lane.release} "
                           "(tests/kernel/klpvm/lanes.py)")  # fmt: skip
    with (log or Path(os.devnull)).open("w") as f:
        res = subprocess.run([*make, f"-j{jobs}", *lane.targets], stdout=f,
                             stderr=subprocess.STDOUT, check=False)  # fmt: skip
    if res.returncode != 0:
        raise PrepareError(f"building the {lane.name} kernel failed (exit {res.returncode})"
                           + (f"; log: {log}" if log else ""))  # fmt: skip
    build_seconds = time.monotonic() - t1
    for name in ("System.map", ".config"):
        shutil.copyfile(tree / name, stage / name.lstrip("."))
    shutil.copyfile(tree / lane.image, stage / PurePosixPath(lane.image).name)
    for obj in tree.rglob("*.o"):
        obj.unlink()
    tree.rename(stage / "build")
    gcc = _run([lane.vm.cc, "--version"], "gcc --version").splitlines()[0]
    (stage / "build.json").write_text(json.dumps({
        "source": f"{SOURCE} {SOURCE_VERSION} ({SUITE})", "release": lane.release,
        "compiler": gcc, "jobs": jobs, "prepare_seconds": round(t1 - t0, 1),
        "build_seconds": round(build_seconds, 1)}, indent=2) + "\n")  # fmt: skip
    (stage / ".complete").write_text(lane.key() + "\n")
    os.chmod(stage, 0o755)


def _check_config(lane: Lane, config: Path) -> None:
    """Every option the fragment sets must be in the result (allnoconfig drops one whose
    dependencies are off, silently)."""
    have = set(config.read_text().splitlines())
    lost = [line for line in lane.options() if line not in have]
    if lost:
        raise PrepareError(f"allnoconfig with {lane.config.name} did not keep: {', '.join(lost)}")


# --- the lanes ------------------------------------------------------------------------------

A64_TARGET_PROC = "/proc/klpt_a64_target"

ARM64 = Lane(
    name="arm64", debian_arch="arm64", release="7.2.13-klpt-arm64",
    gcc_package="gcc-aarch64-linux-gnu",
    targets=("Image", "modules"), image="arch/arm64/boot/Image",
    vm=Machine(
        "arm64", "qemu-system-aarch64", "qemu-system-arm",
        ("-machine", "virt,accel={accel}", "-cpu", "cortex-a57"),
        ("-drive", "file={disk},format=raw,if=none,id=out",
         "-device", "virtio-blk-device,drive=out"),
        "ttyAMA0", Path("busybox"), "", "aarch64-linux-gnu-gcc",
        Path("/usr/aarch64-linux-gnu/lib/libc.a"), "libc6-dev-arm64-cross",
        ("ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"), (),
    ),
    livepatch_modules=("klpt_a64_near", "klpt_a64_far", "klpt_a64_far_late"),
    plain_modules=("klpt_a64_target",),
    cases=(
        Case(
            "vmlinux_patch",
            "klpt_a64_near (within branch range of the kernel): its vmlinux klp relocations "
            "(ADRP/LDR of saved_command_line and total_forks, a CALL26 to nr_processes) at "
            "load",
            (read(CMDLINE), load("klpt_a64_near"), read(CMDLINE), sections("klpt_a64_near")),
            1, "klpt_a64_near",
        ),
        Case(
            "plt_patch",
            "klpt_a64_far (126 MiB of text: loaded ~2 GiB below the kernel): its CALL26 to "
            "nr_processes goes through a slot of its .plt",
            (load("klpt_a64_far"), read(CMDLINE), sections("klpt_a64_far")),
            0, "klpt_a64_far",
        ),
        Case(
            "late_module_patch",
            "klpt_a64_target loads after klpt_a64_near: the near patch's "
            ".klp.rela.klpt_a64_target.text (a CALL26 and an ADRP/LDR) is applied then",
            (load("klpt_a64_target"), read(A64_TARGET_PROC), KALLSYMS,
             sections("klpt_a64_near")),
            0, "klpt_a64_near",
        ),
        Case(
            "late_plt_patch",
            "klpt_a64_far_late (far) patches the loaded klpt_a64_target: its CALL26 to "
            "klpt_target_value needs a PLT slot, which module_emit_plt_entry() stores into "
            "the .plt the loader already made read-only: the kernel oopses (7.2).  LAST.",
            (load("klpt_a64_far_late"), read(A64_TARGET_PROC, may_fail=True), KALLSYMS,
             sections("klpt_a64_far_late")),
            0, "klpt_a64_far_late",
        ),
    ),
)  # fmt: skip

LANES = {lane.name: lane for lane in (ARM64,)}


@dataclass
class LaneResult:
    lane: Lane
    spec: KernelSpec
    workdir: Path
    modules: dict[str, Path] = field(default_factory=dict)
    boot: BootResult | None = None
    cases: dict[str, CaseResult] = field(default_factory=dict)
    error: str | None = None
    build_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def kallsyms(self) -> Path:
        """/proc/kallsyms before any module was loaded."""
        assert self.boot is not None
        return self.boot.out_dir / "kallsyms"


def build_modules(lane: Lane, spec: KernelSpec, workdir: Path) -> dict[str, Path]:
    """kbuild cases/<lane> against the cached tree, convert the livepatch modules."""
    src = kbuild(spec, workdir / "kbuild", lane.name)
    ko = workdir / "ko"
    ko.mkdir(parents=True, exist_ok=True)
    mods = {}
    for name in lane.livepatch_modules:
        mods[name] = ko / f"{name}.ko"
        convert(src / f"{name}.ko", mods[name])
    for name in lane.plain_modules:
        mods[name] = ko / f"{name}.ko"
        shutil.copyfile(src / f"{name}.ko", mods[name])
    return mods


def run(lane: Lane, spec: KernelSpec, workdir: Path) -> LaneResult:
    """Build the modules, boot once, run the lane's cases; errors are recorded, not raised."""
    t0 = time.monotonic()
    res = LaneResult(lane, spec, workdir)
    try:
        res.modules = build_modules(lane, spec, workdir)
    except BuildError as e:
        res.error = f"building the {lane.name} test modules failed: {e}"
        return res
    res.build_seconds = time.monotonic() - t0
    group = list(lane.cases)
    files = {f"mods/{m}.ko": res.modules[m].read_bytes() for m in modules_needed(group)}
    files.update(section_lists(group, res.modules))
    try:
        res.boot = boot(spec, workdir / "boot0", guest_script(group), files,
                        cmdline=BOOT_CMDLINE)  # fmt: skip
    except VmError as e:
        res.error = str(e)
        return res
    for case in group:
        res.cases[case.name] = parse_case(case, res.boot.out_dir / "cases" / case.name)
    if res.boot.watchdog:
        res.error = "the guest watchdog fired: the run did not finish"
    res.total_seconds = time.monotonic() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kernel.klpvm.lanes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("lane", choices=sorted(LANES), help="the lane")
    p.add_argument("--fill", action="store_true", help="build the kernel into the cache")
    p.add_argument("-j", "--jobs", type=int, default=2, help="make -j (default 2)")
    p.add_argument("--workdir", type=Path, help="keep the run here (default: a temp dir)")
    args = p.parse_args(argv)
    lane = LANES[args.lane]
    if args.fill:
        t0 = time.monotonic()
        log = Path(tempfile.mkstemp(prefix=f"klpelf-{lane.name}-build-", suffix=".log")[1])
        try:
            kdir = fill(lane, args.jobs, log=log)
        except PrepareError as e:
            print(f"ERROR: {e}", file=sys.stderr)
            return 1
        print(f"{kdir}: ready in {time.monotonic() - t0:.0f} s (build log {log})")
        print((kdir / "build.json").read_text(), end="")
        return 0
    spec = lane.cached_spec()
    if spec is None:
        print(f"ERROR: {lane.missing_reason()}", file=sys.stderr)
        return 1
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"klpvm-{lane.name}-"))
    res = run(lane, spec, workdir)
    boot_s = f"{res.boot.seconds:.1f} s" if res.boot else "-"
    print(f"{spec.release}: build {res.build_seconds:.1f} s, boot {boot_s}, "
          f"total {res.total_seconds:.1f} s; work dir {workdir}")  # fmt: skip
    for name, r in res.cases.items():
        print(f"  {name:20} steps {[(s.op, s.arg, s.rc) for s in r.steps]}")
        for line in r.messages:
            print(f"      {line}")
    if res.error:
        print(f"ERROR: {res.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
