#!/usr/bin/env python3
"""Benchmark klpelf's ELF reader and writer against readelf, pyelftools and objcopy.

Usage::

    .venv/bin/python bench/bench_elf.py [--repeat N] [--modules N] [--corpus DIR] [--json FILE]

Every competitor is measured in the same run, interleaved: each round runs every
measurement once (the order rotates from round to round), ``--repeat`` rounds are
run after one untimed warm-up round, and the median of each measurement is reported.
Cases (see bench/README.md):

(a) amdgpu.ko, full parse: sections, symbols with their names, every relocation
    section, and .modinfo.  klpelf in-process (numpy, klpelf and pyelftools are
    already imported; the file is in the page cache) and as a whole ``python -c``
    process (interpreter start-up and the numpy import included), each against
    ``readelf -W -S -s -r`` (a subprocess, output to /dev/null) and against pyelftools
    doing the same work in-process.  Also the peak RSS of the whole-process parse and
    of a baseline child that only imports numpy and klpelf.
(b) the first N amd64 modules of the corpus (sorted path order): klpelf parses them
    all in one process, against one readelf process given all N files.
(c) ``klpelf show`` of the sample livepatch module, whole process (console script),
    and where its start-up goes (``python -X importtime``).
(d) amdgpu.ko round trip (read, write_elf, write to a temporary file) against
    ``objcopy IN OUT``; and the same with one section renamed (the writer's layout
    path) against ``objcopy --rename-section``.

Fairness details: before every measurement the outputs are deleted, a scratch file
as large as amdgpu.ko is written and deleted (on a VM a large write after a pause in
writing is much slower than one right after a file was freed), and gc.collect() runs.
Child pythons get a private bytecode cache (PYTHONPYCACHEPREFIX, filled in the warm-up
round) as an installed klpelf has .pyc files.  Peak RSS is ru_maxrss from
getrusage(RUSAGE_CHILDREN) in a small fresh ``python -I -S`` that runs the measured
process as its only child.  The run reports how much CPU other processes used during
it, and warns when the machine was busy.

The corpus is ``--corpus``, else ``$KLPELF_CORPUS``, else ``~/.cache/klpelf/corpus``
(made by tests/corpus/fetch.py).  Without amdgpu.ko the script stops with one line.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Imported before anything is timed: the in-process figures exclude these imports
# (the whole-process figures include them).
import numpy as np

import klpelf
import klpelf.elf.modinfo
import klpelf.elf.relocs
import klpelf.elf.symbols
from klpelf.elf.reader import open_elf
from klpelf.elf.writer import write_elf

PROG = "bench_elf.py"
REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "klp_sample" / "klp_sample_lp.ko"
AMDGPU = Path("drivers/gpu/drm/amd/amdgpu/amdgpu.ko")
RENAME_FROM, RENAME_TO = ".comment", ".comment.bench"

# --- what each competitor does ----------------------------------------------------

# The whole-process parse: the same steps as klpelf_parse() below, for each argument.
PARSE_CODE = """\
import sys
from klpelf.elf.reader import open_elf
for path in sys.argv[1:]:
    elf = open_elf(path)
    elf.decode_all()
    symtab = elf.symtab
    if symtab is not None:
        symtab.names()
    for sec in elf.relocation_sections:
        elf.relocations(sec)
    modinfo = elf.modinfo
    if modinfo is not None:
        modinfo.get("vermagic")
"""

# The RSS baseline: everything the parse process imports, and no parse.
BASELINE_CODE = """\
import numpy
import klpelf.elf.reader, klpelf.elf.symbols, klpelf.elf.relocs, klpelf.elf.modinfo
"""

# The whole-process round trip: the same steps as klpelf_roundtrip(path, out, False).
ROUNDTRIP_CODE = """\
import sys
from klpelf.elf.reader import open_elf
from klpelf.elf.writer import write_elf
data = write_elf(open_elf(sys.argv[1]))
with open(sys.argv[2], "wb") as f:
    f.write(data)
"""


def klpelf_parse(path: str) -> tuple[int, int, int]:
    """Parse ``path`` fully; return (sections, symbols, relocations)."""
    elf = open_elf(path)
    elf.decode_all()
    nsyms = 0
    symtab = elf.symtab
    if symtab is not None:
        nsyms = len(symtab.names())
    nrels = 0
    for sec in elf.relocation_sections:
        nrels += len(elf.relocations(sec))
    modinfo = elf.modinfo
    if modinfo is not None:
        modinfo.get("vermagic")
    return len(elf.sections), nsyms, nrels


def pyelftools_parse(path: str) -> tuple[int, int, int]:
    """The same work with pyelftools; return (sections, symbols, relocations)."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection
    from elftools.elf.sections import SymbolTableSection

    nsecs = nsyms = nrels = 0
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            nsecs += 1
            _ = sec.name, sec["sh_type"], sec["sh_offset"], sec["sh_size"]
            if isinstance(sec, SymbolTableSection):
                for sym in sec.iter_symbols():
                    _ = sym.name, sym["st_value"], sym["st_info"], sym["st_shndx"]
                    nsyms += 1
            elif isinstance(sec, RelocationSection):
                for rel in sec.iter_relocations():
                    _ = rel["r_offset"], rel["r_info"]
                    nrels += 1
        modinfo = elf.get_section_by_name(".modinfo")
        if modinfo is not None:
            _ = [e.partition(b"=") for e in modinfo.data().split(b"\0") if e]
    return nsecs, nsyms, nrels


def klpelf_roundtrip(path: str, out: str, rename: bool) -> bytes | bytearray:
    """Read ``path``, optionally rename one section, write it to ``out``; return the bytes."""
    elf = open_elf(path)
    if rename:
        sec = elf.section_by_name(RENAME_FROM)
        if sec is None:
            raise BenchError(f"{path}: no {RENAME_FROM} section to rename")
        elf.rename_section(sec, RENAME_TO)
    data = write_elf(elf)
    with open(out, "wb") as f:
        f.write(data)
    return data


# --- measuring --------------------------------------------------------------------


class BenchError(Exception):
    """A problem that ends the run with one line."""


def run_child(argv: Sequence[str], env: dict[str, str]) -> bytes:
    """Run ``argv`` with stdout to /dev/null; return its stderr (raise if it fails)."""
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                       check=False)  # fmt: skip
    if p.returncode != 0:
        msg = p.stderr.decode(errors="replace").strip().splitlines()
        raise BenchError(
            f"{Path(argv[0]).name} exited with status {p.returncode}"
            + (f": {msg[-1]}" if msg else "")
        )
    return p.stderr


def time_child(argv: Sequence[str], env: dict[str, str]) -> Callable[[], float]:
    """A measurement: the wall time of ``argv``, from spawn to exit."""

    def run() -> float:
        t0 = time.perf_counter()
        run_child(argv, env)
        return time.perf_counter() - t0

    return run


# Reports getrusage(RUSAGE_CHILDREN).ru_maxrss after running its arguments as its only
# child.  The peak RSS has to be read in a small, fresh process: Linux carries the
# parent's high-water RSS over fork/vfork + exec into the child's ru_maxrss, so a
# child of this (large) benchmark process would report at least this process's peak,
# and RUSAGE_CHILDREN here would keep the largest child of the whole run anyway.
RSS_CODE = """\
import os, resource, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ,
                     file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def rss_child(argv: Sequence[str], env: dict[str, str]) -> Callable[[], float]:
    """A measurement: the peak RSS (KiB) of ``argv``, the only child of a fresh python -I -S."""

    def run() -> float:
        p = subprocess.run([sys.executable, "-I", "-S", "-c", RSS_CODE, *argv],
                           capture_output=True, text=True, env=env, check=False)  # fmt: skip
        try:
            code, kib = map(int, p.stdout.split())
        except ValueError:
            raise BenchError(f"peak RSS of {Path(argv[0]).name}: {p.stderr.strip()}") from None
        if p.returncode or code:
            raise BenchError(f"{Path(argv[0]).name} exited with status {code}")
        return float(kib)

    return run


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)  # seconds (KiB for peak RSS)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def median_mib(self) -> float:
        return statistics.median(self.values) / 1024


def run_rounds(
    measurements: dict[str, Callable[[], float]], repeat: int, before: Callable[[], None]
) -> dict[str, Samples]:
    """One untimed warm-up round, then ``repeat`` interleaved rounds (order rotated)."""
    names = list(measurements)
    results = {name: Samples() for name in names}
    for rnd in range(repeat + 1):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            before()
            gc.collect()
            got = measurements[name]()
            if rnd:
                results[name].values.append(got)
        print(f"  round {rnd}/{repeat}{' (warm-up)' if rnd == 0 else ''} done", file=sys.stderr)
    return results


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """A measurement: the in-process wall time of ``fn()``."""

    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return run


# --- reporting --------------------------------------------------------------------


def fmt_time(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def fmt_ratio(r: float) -> str:
    return f"{r:.3f}x" if r < 0.1 else f"{r:.2f}x"


@dataclass
class Row:
    case: str
    klpelf: str
    other: str
    ratio: str
    target: str
    verdict: str
    data: dict[str, Any]


def ratio_row(
    case: str,
    mine: float,
    other_name: str,
    other: float,
    *,
    target: float | None = None,
    label: str = "",
) -> Row:
    r = mine / other
    verdict = "-" if target is None else ("ok" if r <= target else "MISSED")
    return Row(
        case, label + fmt_time(mine), f"{other_name} {fmt_time(other)}", fmt_ratio(r),
        "-" if target is None else f"<= {target:g}x", verdict,
        {"seconds": mine, "other": other_name, "other_seconds": other, "ratio": r,
         "target_ratio": target, "verdict": verdict},
    )  # fmt: skip


def print_table(rows: list[Row]) -> None:
    head = ("case", "klpelf", "other tool", "ratio", "target", "verdict")
    cells = [head] + [(r.case, r.klpelf, r.other, r.ratio, r.target, r.verdict) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    for n, c in enumerate(cells):
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


@dataclass(frozen=True)
class ImportCost:
    module: str
    level: int  # 0: imported by the script or the runtime itself
    self_ms: float
    cumulative_ms: float


def parse_importtime(stderr: bytes) -> list[tuple[int, int, int, str]]:
    """(self_us, cumulative_us, level, module) for every line of -X importtime output."""
    out = []
    for line in stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cum_us, name = line[len("import time:") :].split("|", 2)
        level = (len(name) - len(name.lstrip()) - 1) // 2
        out.append((int(self_us), int(cum_us), level, name.strip()))
    return out


def median_importtime(runs: list[list[tuple[int, int, int, str]]]) -> list[ImportCost]:
    """Per module (in first-run order), the median self and cumulative time over ``runs``."""
    seen: dict[str, tuple[int, list[int], list[int]]] = {}
    for run in runs:
        for self_us, cum_us, level, name in run:
            entry = seen.setdefault(name, (level, [], []))
            entry[1].append(self_us)
            entry[2].append(cum_us)
    return [
        ImportCost(name, level, statistics.median(s) / 1e3, statistics.median(c) / 1e3)
        for name, (level, s, c) in seen.items()
    ]


# --- setup ------------------------------------------------------------------------


def find_kernel_dir(corpus: Path) -> Path | None:
    """The amd64 ``lib/modules/<release>/kernel`` directory of the corpus."""
    try:
        manifest = json.loads((corpus / "manifest.json").read_text())
        kdir = Path(manifest["amd64"]["modules_dir"]) / "kernel"
        if kdir.is_dir():
            return kdir
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for kdir in sorted((corpus / "amd64" / "lib" / "modules").glob("*/kernel")):
        return kdir
    return None


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU time all processes have used, CPU time this process and its children used).

    From /proc/stat (user, nice, system, irq, softirq and steal of all CPUs) and
    os.times(); None where /proc/stat is not available.
    """
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if first[0] != "cpu" or len(first) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first[1:9])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "?"
    return out.splitlines()[0].strip() if out else "?"


def machine_info(tools: dict[str, str]) -> dict[str, str]:
    import elftools

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        "platform": platform.platform(),
        "cpu": f"{cpu}, {os.cpu_count()} CPUs",
        "klpelf": klpelf.__version__,
        "numpy": np.__version__,
        "pyelftools": str(getattr(elftools, "__version__", "?")),
        "readelf": first_line([tools["readelf"], "--version"]),
        "objcopy": first_line([tools["objcopy"], "--version"]),
        "klpelf git": first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="rounds per measurement (median)")
    p.add_argument("--modules", type=int, default=500, help="modules for case (b)")
    p.add_argument(
        "--corpus", type=Path,
        default=Path(os.environ.get("KLPELF_CORPUS") or "~/.cache/klpelf/corpus").expanduser(),
        help="corpus directory (default $KLPELF_CORPUS or ~/.cache/klpelf/corpus)",
    )  # fmt: skip
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers as JSON")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.modules < 1:
        p.error("--repeat and --modules must be at least 1")
    return args


# --- main -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return bench(args)
    except BenchError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1


def bench(args: argparse.Namespace) -> int:
    corpus: Path = args.corpus
    kdir = find_kernel_dir(corpus)
    amdgpu = kdir / AMDGPU if kdir else corpus / "amd64" / "lib/modules/*/kernel" / AMDGPU
    if not amdgpu.is_file():
        raise BenchError(
            f"{amdgpu}: amdgpu.ko not found (fetch the corpus with tests/corpus/fetch.py, "
            "or pass --corpus / set KLPELF_CORPUS)"
        )
    assert kdir is not None
    tools: dict[str, str] = {}
    for tool in ("readelf", "objcopy"):
        found = shutil.which(tool)
        if found is None:
            raise BenchError(f"{tool} not found on PATH (install binutils)")
        tools[tool] = found
    script = Path(sys.executable).parent / "klpelf"
    klpelf_cmd = str(script) if script.is_file() else shutil.which("klpelf")
    if klpelf_cmd is None:
        raise BenchError("the klpelf console script was not found (pip install -e .)")
    if importlib.util.find_spec("elftools") is None:
        raise BenchError("pyelftools is not installed (pip install -e '.[test]')")
    if not SAMPLE.is_file():
        raise BenchError(f"{SAMPLE}: sample livepatch module not found")

    modules = sorted(str(p) for p in kdir.rglob("*.ko"))[: args.modules]
    amd = str(amdgpu)
    py = sys.executable
    readelf = [tools["readelf"], "-W", "-S", "-s", "-r"]

    info = machine_info(tools)
    load = os.getloadavg()[0]
    info["load"] = f"{load:.2f} (1-min load average before the run)"
    cpu_start, wall_start = cpu_seconds(), time.perf_counter()
    print(f"klpelf ELF benchmark: median of {args.repeat} interleaved rounds (+1 warm-up)")
    for k, v in info.items():
        print(f"  {k + ':':12} {v}")
    mods_mb = sum(os.path.getsize(m) for m in modules) / 1e6
    print(f"  {'amdgpu.ko:':12} {amd} ({os.path.getsize(amd) / 1e6:.1f} MB)")
    print(f"  {'modules:':12} {len(modules)} .ko under {kdir} ({mods_mb:.1f} MB)")

    # sanity checks, untimed: the competitors see the same data and the writer is right
    ours, theirs = klpelf_parse(amd), pyelftools_parse(amd)
    if ours != theirs:
        raise BenchError(f"klpelf and pyelftools disagree on amdgpu.ko: {ours} vs {theirs}")
    print(f"  {'amdgpu:':12} {ours[0]} sections, {ours[1]} symbols, {ours[2]} relocations "
          "(klpelf == pyelftools)")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="klpelf-bench-") as tmp:
        out_k, out_o = os.path.join(tmp, "k.ko"), os.path.join(tmp, "x.ko")
        # Child pythons get a bytecode cache of their own (filled by the warm-up round),
        # as an installed klpelf has: PYTHONDONTWRITEBYTECODE would make every start
        # compile klpelf from source, and the source tree is not written to.
        env = dict(os.environ, LC_ALL="C", PYTHONPYCACHEPREFIX=os.path.join(tmp, "pycache"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if klpelf_roundtrip(amd, out_k, False) != Path(amd).read_bytes():
            raise BenchError("write_elf did not reproduce amdgpu.ko byte for byte")
        klpelf_roundtrip(amd, out_k, True)
        if open_elf(out_k).section_by_name(RENAME_TO) is None:
            raise BenchError(f"the renamed output has no {RENAME_TO} section")

        scratch, scratch_data = os.path.join(tmp, "scratch"), Path(amd).read_bytes()

        def clean() -> None:
            for out in (out_k, out_o):
                if os.path.exists(out):
                    os.unlink(out)
            # Every measurement starts just after a file as large as amdgpu.ko was written
            # and deleted.  Without this, on a VM a 19 MB write runs up to 10x slower after
            # a pause in writing than right after another file was freed, and the rotation
            # of the rounds would put one writer after a write and the other after none.
            with open(scratch, "wb") as fh:
                fh.write(scratch_data)
            os.unlink(scratch)

        def parse_all() -> None:
            for m in modules:
                klpelf_parse(m)

        measurements: dict[str, Callable[[], float]] = {
            "a.klpelf": timed(lambda: klpelf_parse(amd)),
            "a.klpelf_proc": time_child([py, "-c", PARSE_CODE, amd], env),
            "a.rss_parse": rss_child([py, "-c", PARSE_CODE, amd], env),
            "a.rss_baseline": rss_child([py, "-c", BASELINE_CODE], env),
            "a.rss_readelf": rss_child([*readelf, amd], env),
            "a.readelf": time_child([*readelf, amd], env),
            "a.pyelftools": timed(lambda: pyelftools_parse(amd)),
            "b.klpelf": timed(parse_all),
            "b.klpelf_proc": time_child([py, "-c", PARSE_CODE, *modules], env),
            "b.readelf": time_child([*readelf, *modules], env),
            "c.show": time_child([klpelf_cmd, "show", str(SAMPLE)], env),
            "c.python": time_child([py, "-c", "pass"], env),
            "c.python_numpy": time_child([py, "-c", "import numpy"], env),
            "d.klpelf": timed(lambda: klpelf_roundtrip(amd, out_k, False)),
            "d.klpelf_proc": time_child([py, "-c", ROUNDTRIP_CODE, amd, out_k], env),
            "d.objcopy": time_child([tools["objcopy"], amd, out_o], env),
            "d.klpelf_rename": timed(lambda: klpelf_roundtrip(amd, out_k, True)),
            "d.objcopy_rename": time_child(
                [tools["objcopy"], f"--rename-section={RENAME_FROM}={RENAME_TO}", amd, out_o],
                env,
            ),
        }
        res = run_rounds(measurements, args.repeat, clean)
        clean()
        imports = median_importtime([
            parse_importtime(
                run_child([py, "-X", "importtime", klpelf_cmd, "show", str(SAMPLE)], env)
            )
            for _ in range(args.repeat)
        ])  # fmt: skip

    med = {k: v.median for k, v in res.items()}
    rss_parse = res["a.rss_parse"].median_mib
    rss_base = res["a.rss_baseline"].median_mib
    rss_readelf = res["a.rss_readelf"].median_mib
    rss_verdict = "ok" if rss_parse <= 60 else "MISSED"
    show_verdict = "ok" if med["c.show"] <= 0.150 else "MISSED"
    n = len(modules)
    rows = [
        ratio_row("(a) amdgpu parse, in-process", med["a.klpelf"], "readelf", med["a.readelf"],
                  target=0.15),
        ratio_row("(a) amdgpu parse, whole process", med["a.klpelf_proc"], "readelf",
                  med["a.readelf"]),
        ratio_row("(a) amdgpu parse, in-process", med["a.klpelf"], "pyelftools",
                  med["a.pyelftools"]),
        ratio_row("(a) pyelftools/readelf (reference)", med["a.pyelftools"], "readelf",
                  med["a.readelf"], label="[pyelftools] "),
        Row("(a) amdgpu parse, peak RSS", f"{rss_parse:.1f} MiB",
            f"baseline {rss_base:.1f} MiB", f"parse +{rss_parse - rss_base:.1f} MiB",
            "<= 60 MiB", rss_verdict,
            {"peak_rss_mib": rss_parse, "baseline_rss_mib": rss_base,
             "parse_cost_mib": rss_parse - rss_base, "target_mib": 60,
             "verdict": rss_verdict,
             "readelf_peak_rss_mib": rss_readelf}),
        ratio_row(f"(b) {n} modules, in-process", med["b.klpelf"], "readelf",
                  med["b.readelf"], target=0.5),
        ratio_row(f"(b) {n} modules, whole process", med["b.klpelf_proc"], "readelf",
                  med["b.readelf"]),
        Row("(c) klpelf show sample, process", fmt_time(med["c.show"]), "-", "-",
            "<= 150 ms", show_verdict,
            {"seconds": med["c.show"], "target_seconds": 0.150, "verdict": show_verdict,
             "python_pass_seconds": med["c.python"],
             "python_import_numpy_seconds": med["c.python_numpy"]}),
        ratio_row("(d) amdgpu round trip, in-process", med["d.klpelf"], "objcopy",
                  med["d.objcopy"], target=0.5),
        ratio_row("(d) amdgpu round trip, whole process", med["d.klpelf_proc"], "objcopy",
                  med["d.objcopy"]),
        ratio_row("(d) amdgpu, 1 section renamed, in-proc", med["d.klpelf_rename"],
                  "objcopy --rename", med["d.objcopy_rename"]),
    ]  # fmt: skip
    print()
    print_table(rows)
    cpu_end, wall = cpu_seconds(), time.perf_counter() - wall_start
    others = None
    if cpu_start is not None and cpu_end is not None:
        # CPUs kept busy by other processes (and the hypervisor), on average
        others = max(0.0, (cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])) / wall
        info["others"] = f"{others:.2f} CPUs used by other processes during the run, on average"
    if others is not None and others > 0.2:
        print(f"\nWARNING: the machine was busy: other processes used {others:.2f} CPUs on average "
              "during the run, so the figures are noisy.")  # fmt: skip
    elif others is not None:
        print(f"\nother processes used {others:.2f} CPUs on average during the run")
    print()
    print("in-process: numpy, klpelf and pyelftools already imported, files in the page cache;")
    print("whole process: a fresh python -c, interpreter start-up and numpy import included;")
    print("child pythons use a private, warm bytecode cache (PYTHONPYCACHEPREFIX), as an")
    print("installed klpelf has .pyc files.")
    print(f"start-up floors: python -c pass {fmt_time(med['c.python'])}, "
          f"python -c 'import numpy' {fmt_time(med['c.python_numpy'])}; "
          f"readelf peak RSS on amdgpu.ko {rss_readelf:.1f} MiB")  # fmt: skip
    total_ms = sum(i.self_ms for i in imports)
    numpy_ms = next((i.cumulative_ms for i in imports if i.module == "numpy"), 0.0)
    print(
        f"klpelf show, python -X importtime (median of {args.repeat} runs): imports take "
        f"{total_ms:.1f} ms, numpy {numpy_ms:.1f} ms of them; top-level imports (cumulative):"
    )
    top = sorted((i for i in imports if i.level == 0), key=lambda i: -i.cumulative_ms)[:8]
    print("  " + ", ".join(f"{i.module} {i.cumulative_ms:.1f}" for i in top) + " (ms)")
    heavy = sorted(imports, key=lambda i: -i.self_ms)[:8]
    print("  by self time: " + ", ".join(f"{i.module} {i.self_ms:.1f}" for i in heavy) + " (ms)")

    if args.json:
        doc = {
            "machine": info,
            "repeat": args.repeat,
            "amdgpu": amd,
            "modules": n,
            "rows": [{"case": r.case, **r.data} for r in rows],
            "samples": {k: v.values for k, v in res.items()},
            "samples_unit": "seconds; KiB for the a.rss_* peak RSS samples",
            "importtime_ms": [asdict(i) for i in imports],
        }  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
