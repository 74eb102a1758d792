"""The arm64 lane: livepatch modules on a real arm64 kernel that this harness builds.

Debian enables CONFIG_LIVEPATCH only in its amd64 kernels (arm64 has HAVE_LIVEPATCH
since v6.17, fd1e0fd71f65 "arm64: Implement HAVE_LIVEPATCH"; Debian's arm64 kernels
leave LIVEPATCH off).  So the lane builds one from Debian's own sources: the
``linux-source-7.2`` package of sid (:data:`SOURCE`), configured with ``make ARCH=arm64
allnoconfig`` and ``arm64.config`` (qemu's ``virt`` machine, LIVEPATCH and what it
needs), compiled with Debian's cross compiler (``gcc-aarch64-linux-gnu``), and booted
under ``qemu-system-aarch64`` (TCG, ``-machine virt -cpu cortex-a57``) with the
harness's busybox initramfs (a static arm64 busybox from Debian's ``busybox-static``).

Filling the cache takes long on a small machine (a kernel build), so the tests never
do it; they run when the cache is there and skip otherwise:

    PYTHONPATH=tests .venv/bin/python -m kernel.klpvm.arm64 --fill     # build, cache
    PYTHONPATH=tests .venv/bin/python -m kernel.klpvm.arm64            # run, print

The cache entry is ``<cache>/kernels-arm64/<release>/`` (``$KLPELF_KERNEL_CACHE``,
default ``~/.cache/klpelf``): ``Image``, ``System.map``, ``config``, ``busybox``,
``build/`` (the configured and built source tree, object files removed: what ``make
-C build M=...`` needs), ``build.json`` (what was built, how long it took) and
``.complete``, holding the key of the source version and the config fragment: a
changed fragment makes the entry stale, and the lane skips until it is filled again.
Written under a temporary name and renamed when complete, under a file lock.

The cases (:data:`CASES`) run in one boot, in order; cases/arm64/ has the modules.
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
from dataclasses import dataclass, field
from pathlib import Path

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
CONFIG = HERE / "arm64.config"
#: the Debian suite, source package and version the kernel is built from
SUITE = "sid"
SOURCE = "linux-source-7.2"
SOURCE_VERSION = "7.2.13-1"
#: ``make kernelrelease`` with the fragment's CONFIG_LOCALVERSION
RELEASE = "7.2.13-klpt-arm64"
#: where the guest's static busybox comes from (the package of the host's suite)
BUSYBOX_SUITE = "bookworm"
CROSS_COMPILE = "aarch64-linux-gnu-"
KBUILD_ARGS = ("ARCH=arm64", f"CROSS_COMPILE={CROSS_COMPILE}")
#: the kernel command line after console=, nokaslr, panic=-1 (vm.boot)
BOOT_CMDLINE = "loglevel=4"
FILL_COMMAND = "PYTHONPATH=tests .venv/bin/python -m kernel.klpvm.arm64 --fill"


def key() -> str:
    """Identifies what the cache entry was built from."""
    doc = json.dumps([SOURCE, SOURCE_VERSION, RELEASE, CONFIG.read_text()])
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def kernel_dir() -> Path:
    return cache_root() / "kernels-arm64" / RELEASE


def machine(kdir: Path) -> Machine:
    """qemu's virt machine; the busybox of the cache entry."""
    return Machine(
        "arm64", "qemu-system-aarch64", "qemu-system-arm",
        ("-machine", "virt,accel={accel}", "-cpu", "cortex-a57"),
        ("-drive", "file={disk},format=raw,if=none,id=out",
         "-device", "virtio-blk-device,drive=out"),
        "ttyAMA0", kdir / "busybox", f"fill the arm64 cache: {FILL_COMMAND}",
        f"{CROSS_COMPILE}gcc", Path("/usr/aarch64-linux-gnu/lib/libc.a"),
        "libc6-dev-arm64-cross", KBUILD_ARGS, (),
    )  # fmt: skip


def cached_spec() -> KernelSpec | None:
    """The cached kernel, or None when the entry is missing or stale (:func:`key`)."""
    kdir = kernel_dir()
    try:
        if (kdir / ".complete").read_text().strip() != key():
            return None
    except FileNotFoundError:
        return None
    return KernelSpec(RELEASE, kdir / "Image", kdir, kdir / "build", machine=machine(kdir))


def missing_reason() -> str:
    kdir = kernel_dir()
    state = "is stale (arm64.config or the source changed)" if kdir.exists() else "is not there"
    return f"the arm64 kernel cache {kdir} {state}; fill it with `{FILL_COMMAND}`"


# --- filling the cache --------------------------------------------------------------------


def fill_problems() -> list[str]:
    out = []
    for tool, pkg in ((f"{CROSS_COMPILE}gcc", "gcc-aarch64-linux-gnu"), ("make", "make"),
                      ("bison", "bison"), ("flex", "flex"), ("bc", "bc"),
                      ("dpkg-deb", "dpkg")):  # fmt: skip
        if shutil.which(tool) is None:
            out.append(f"{tool} not found (apt-get install {pkg})")
    return out


def fill(jobs: int = 2, *, log: Path | None = None) -> Path:
    """Build the kernel and fill the cache entry (nothing when it is current).

    :raises PrepareError: a tool is missing, a download or the build failed.
    """
    kdir = kernel_dir()
    if cached_spec() is not None:
        return kdir
    problems = fill_problems()
    if problems:
        raise PrepareError("cannot build the arm64 kernel: " + "; ".join(problems))
    root = kdir.parent
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{RELEASE}.lock"):
        if cached_spec() is not None:
            return kdir
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{RELEASE}."))
        try:
            _fill_into(tmp, jobs, log)
            _remove_tree(kdir)
            tmp.rename(kdir)
        finally:
            _remove_tree(tmp)
    return kdir


def _fill_into(stage: Path, jobs: int, log: Path | None) -> None:
    t0 = time.monotonic()
    dl = stage / "download"
    src_apt = PrivateApt(SUITE)
    found = src_apt.show(SOURCE)
    if found is None or found["Version"] != SOURCE_VERSION:
        now = "no version" if found is None else found["Version"]
        raise PrepareError(
            f"{SOURCE} {SOURCE_VERSION} is not in Debian {SUITE} any more ({now} is): name "
            "the current one in tests/kernel/klpvm/arm64.py (SOURCE, SOURCE_VERSION, RELEASE)"
        )
    src_deb = src_apt.download({SOURCE: SOURCE_VERSION}, dl)[SOURCE]
    bb_apt = PrivateApt(BUSYBOX_SUITE, arch="arm64")
    bb = bb_apt.show("busybox-static")
    if bb is None:
        raise PrepareError(f"busybox-static is not in Debian {BUSYBOX_SUITE} (arm64)")
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
    make = ["nice", "-n", "10", "make", "-C", str(tree), *KBUILD_ARGS]
    _run([*make, f"KCONFIG_ALLCONFIG={CONFIG}", "allnoconfig"], "make allnoconfig")
    _check_config(tree / ".config")
    release = _run([*make, "-s", "kernelrelease"], "make kernelrelease").strip()
    if release != RELEASE:
        raise PrepareError(f"the tree builds {release}, not {RELEASE} (kernel/klpvm/arm64.py)")
    with (log or Path(os.devnull)).open("w") as f:
        res = subprocess.run([*make, f"-j{jobs}", "Image", "modules"], stdout=f,
                             stderr=subprocess.STDOUT, check=False)  # fmt: skip
    if res.returncode != 0:
        raise PrepareError(f"building the arm64 kernel failed (exit {res.returncode})"
                           + (f"; log: {log}" if log else ""))  # fmt: skip
    build_seconds = time.monotonic() - t1
    for name in ("System.map", ".config"):
        shutil.copyfile(tree / name, stage / name.lstrip("."))
    shutil.copyfile(tree / "arch" / "arm64" / "boot" / "Image", stage / "Image")
    for obj in tree.rglob("*.o"):
        obj.unlink()
    tree.rename(stage / "build")
    gcc = _run([f"{CROSS_COMPILE}gcc", "--version"], "gcc --version").splitlines()[0]
    (stage / "build.json").write_text(json.dumps({
        "source": f"{SOURCE} {SOURCE_VERSION} ({SUITE})", "release": RELEASE,
        "compiler": gcc, "jobs": jobs, "prepare_seconds": round(t1 - t0, 1),
        "build_seconds": round(build_seconds, 1)}, indent=2) + "\n")  # fmt: skip
    (stage / ".complete").write_text(key() + "\n")
    os.chmod(stage, 0o755)


def _check_config(config: Path) -> None:
    """Every option the fragment sets must be in the result (allnoconfig drops one whose
    dependencies are off, silently)."""
    have = set(config.read_text().splitlines())
    want = [line for line in CONFIG.read_text().splitlines()
            if line.startswith("CONFIG_") or line.endswith(" is not set")]  # fmt: skip
    lost = [line for line in want if line not in have]
    if lost:
        raise PrepareError(f"allnoconfig with {CONFIG.name} did not keep: {', '.join(lost)}")


# --- the cases ------------------------------------------------------------------------------

#: kbuild output -> converted with ``klpelf convert`` (annotation mode)
LIVEPATCH_MODULES = ("klpt_a64_near", "klpt_a64_far", "klpt_a64_far_late")
PLAIN_MODULES = ("klpt_a64_target",)
CMDLINE = "/proc/cmdline"
TARGET_PROC = "/proc/klpt_a64_target"

CASES: tuple[Case, ...] = (
    Case(
        "vmlinux_patch",
        "klpt_a64_near (within branch range of the kernel): its vmlinux klp relocations "
        "(ADRP/LDR of saved_command_line and total_forks, a CALL26 to nr_processes) at load",
        (read(CMDLINE), load("klpt_a64_near"), read(CMDLINE), sections("klpt_a64_near")),
        1,
        "klpt_a64_near",
    ),
    Case(
        "plt_patch",
        "klpt_a64_far (126 MiB of text: loaded ~2 GiB below the kernel): its CALL26 to "
        "nr_processes goes through a slot of its .plt",
        (load("klpt_a64_far"), read(CMDLINE), sections("klpt_a64_far")),
        0,
        "klpt_a64_far",
    ),
    Case(
        "late_module_patch",
        "klpt_a64_target loads after klpt_a64_near: the near patch's "
        ".klp.rela.klpt_a64_target.text (a CALL26 and an ADRP/LDR) is applied then",
        (load("klpt_a64_target"), read(TARGET_PROC), KALLSYMS, sections("klpt_a64_near")),
        0,
        "klpt_a64_near",
    ),
    Case(
        "late_plt_patch",
        "klpt_a64_far_late (far) patches the loaded klpt_a64_target: its CALL26 to "
        "klpt_target_value needs a PLT slot, which module_emit_plt_entry() stores into "
        "the .plt the loader already made read-only: the kernel oopses (7.2).  LAST.",
        (
            load("klpt_a64_far_late"),
            read(TARGET_PROC, may_fail=True),
            KALLSYMS,
            sections("klpt_a64_far_late"),
        ),
        0,
        "klpt_a64_far_late",
    ),
)
CASES_BY_NAME = {c.name: c for c in CASES}


@dataclass
class LaneResult:
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


def build_modules(spec: KernelSpec, workdir: Path) -> dict[str, Path]:
    """kbuild cases/arm64 against the cached tree, convert the livepatch modules."""
    src = kbuild(spec, workdir / "kbuild", "arm64")
    ko = workdir / "ko"
    ko.mkdir(parents=True, exist_ok=True)
    mods = {}
    for name in LIVEPATCH_MODULES:
        mods[name] = ko / f"{name}.ko"
        convert(src / f"{name}.ko", mods[name])
    for name in PLAIN_MODULES:
        mods[name] = ko / f"{name}.ko"
        shutil.copyfile(src / f"{name}.ko", mods[name])
    return mods


def run(spec: KernelSpec, workdir: Path, cases: tuple[Case, ...] = CASES) -> LaneResult:
    """Build the modules, boot once, run ``cases``; errors are recorded, not raised."""
    t0 = time.monotonic()
    res = LaneResult(spec, workdir)
    try:
        res.modules = build_modules(spec, workdir)
    except BuildError as e:
        res.error = f"building the arm64 test modules failed: {e}"
        return res
    res.build_seconds = time.monotonic() - t0
    group = list(cases)
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
    p = argparse.ArgumentParser(prog="python -m kernel.klpvm.arm64", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--fill", action="store_true", help="build the kernel into the cache")
    p.add_argument("-j", "--jobs", type=int, default=2, help="make -j (default 2)")
    p.add_argument("--workdir", type=Path, help="keep the run here (default: a temp dir)")
    args = p.parse_args(argv)
    if args.fill:
        t0 = time.monotonic()
        log = Path(tempfile.mkstemp(prefix="klpelf-arm64-build-", suffix=".log")[1])
        try:
            kdir = fill(args.jobs, log=log)
        except PrepareError as e:
            print(f"ERROR: {e}", file=sys.stderr)
            return 1
        print(f"{kdir}: ready in {time.monotonic() - t0:.0f} s (build log {log})")
        print((kdir / "build.json").read_text(), end="")
        return 0
    spec = cached_spec()
    if spec is None:
        print(f"ERROR: {missing_reason()}", file=sys.stderr)
        return 1
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="klpvm-arm64-"))
    res = run(spec, workdir)
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
