#!/usr/bin/env python3
"""Benchmark ``klpelf apply`` against GNU ld on a module with 300,000 relocations, in one run.

Usage::

    .venv/bin/python bench/bench_apply.py [--arch x86_64] [--relocations 300000] [--repeat N]

The input comes from bench/gen_apply.py (run here when it is missing): an object
assembled by ``as``, and the livepatch module ``klpelf convert`` makes of it.  The job
is the same for both tools: every relocation applied at fixed addresses, each
section's bytes written.

* GNU ld links the object (``-static -nostdlib``, a linker script giving each
  section its own output section, ``--section-start`` for each, ``--defsym`` for
  every kernel symbol) into an executable;
* ``klpelf apply MODULE --kernel KALLSYMS --base SECTION=ADDRESS... -o DIR
  --summary`` resolves the same symbols from a kallsyms, places the sections at the
  same addresses, applies every relocation (ordinary and klp) and writes each
  section as DIR/<section>.bin.

Before timing, the script checks that klpelf's bytes are ld's (read back with
``objcopy -O binary -j SECTION``).  Then, interleaved over ``--repeat`` rounds after
a warm-up round (the order rotated each round, outputs deleted before each run):

(a) the whole process: the ``klpelf`` console script against ``ld``, wall and CPU
    time (children's rusage); ``python -c pass``, ``python -c 'import numpy'`` and
    ``klpelf --version`` for what a process costs before any work;
(b) in-process (imports done, files in the page cache): the job from the kallsyms
    and module paths to the files written (``resolve_kernel``, ``apply``,
    ``write_sections``), against ld's whole process;
(c) where (b)'s time goes: reading the module and its klp view, symbol resolution,
    layout, the relocation walk, writing DIR; and what the job does not need: the
    per-write report (:class:`Write` tuples), the text table, the JSON document;
    and the entry-by-entry walk alone (the vector twin off), for scale.

Medians are reported, and the least CPU time of the rounds; the target is judged
on the median CPU time (process time of the benchmark, rusage of a child), the
steadier figure on a shared machine, where wall time also counts the time other
processes held the CPU.
klpelf's bytecode is compiled first (``compileall``), as ``pip install`` does.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy  # imported before anything is timed

import klpelf
from klpelf.arch import Arch, arch_for
from klpelf.elf.constants import SHT
from klpelf.klp.layout import place, symbol_value_arrays
from klpelf.klp.module import klp_module
from klpelf.operations import apply as apply_op
from klpelf.operations import open_module
from klpelf.operations.apply import AppliedModule, apply, write_sections
from klpelf.operations.resolve import resolve_kernel
from klpelf.release import KernelRelease

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
KLPELF = str(VENV_BIN / "klpelf")


def _load_gen() -> object:
    spec = importlib.util.spec_from_file_location("gen_apply", HERE / "gen_apply.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _process(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU time of one run of ``cmd`` (output to /dev/null)."""
    c, t = _children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t, _children_cpu() - c


def _inproc(fn: Callable[[], object]) -> tuple[float, float]:
    gc.collect()
    c, t = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def _ld_command(spec: dict[str, object], workdir: Path) -> list[str]:
    sections = spec["sections"]
    symbols = spec["symbols"]
    ld = spec["ld"]
    assert isinstance(sections, dict) and isinstance(symbols, dict) and isinstance(ld, list)
    script = workdir / "sections.ld"
    script.write_text("SECTIONS {\n" + "".join(f"  {s} : {{ *({s}) }}\n" for s in sections) + "}\n")
    cmd = [*ld, "-static", "-nostdlib", "--entry=0", "-o", str(workdir / "ld.exe")]
    cmd += ["-T", str(script)]
    cmd += [f"--section-start={s}={a:#x}" for s, a in sections.items()]
    cmd += [f"--defsym={s}={v:#x}" for s, v in symbols.items()]
    return [*cmd, str(spec["object"])]


def _check_bytes(spec: dict[str, object], workdir: Path, out: Path, objcopy: str) -> None:
    sections = spec["sections"]
    assert isinstance(sections, dict)
    for name in sections:
        ld_bin = workdir / f"ld{name}.bin"
        subprocess.run([objcopy, "-O", "binary", "-j", name, str(workdir / "ld.exe"),
                        str(ld_bin)], check=True)  # fmt: skip
        mine = (out / f"{name}.bin").read_bytes()
        if ld_bin.read_bytes() != mine:
            raise SystemExit(f"bench_apply: {name}: klpelf's bytes are not ld's")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="x86_64")
    p.add_argument("--relocations", type=int, default=300_000)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--json", type=Path, help="write every sample to this file")
    args = p.parse_args()
    gen = _load_gen()
    spec_path = gen.OUT / f"apply-{args.arch}-{args.relocations}.json"  # type: ignore[attr-defined]
    if not spec_path.exists():
        gen.generate(args.arch, args.relocations)  # type: ignore[attr-defined]
    spec = json.loads(spec_path.read_text())
    ko, kallsyms, sections = spec["module"], spec["kallsyms"], spec["sections"]
    ld = spec["ld"]
    objcopy = ld[0].removesuffix("ld") + "objcopy"
    if shutil.which(ld[0]) is None:
        print(f"bench_apply: {ld[0]} not found", file=sys.stderr)
        return 2
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(klpelf.__file__)],
                   stdout=subprocess.DEVNULL, check=True)  # fmt: skip
    py = str(VENV_BIN / "python")
    bases = [a for s, v in sections.items() for a in ("--base", f"{s}={v:x}")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out_proc, out_in = work / "proc", work / "inproc"
        ld_cmd = _ld_command(spec, work)
        klpelf_cmd = [KLPELF, "apply", ko, "-k", kallsyms, *bases, "-o", str(out_proc),
                      "--summary"]  # fmt: skip
        subprocess.run(ld_cmd, check=True)
        subprocess.run(klpelf_cmd, check=True, stdout=subprocess.DEVNULL)
        _check_bytes(spec, work, out_proc, objcopy)

        def job() -> AppliedModule:
            ks = resolve_kernel([kallsyms])
            res = apply(ko, ks, bases=sections)
            write_sections(res, out_in)
            return res

        res = job()
        _check_bytes(spec, work, out_in, objcopy)
        module = open_module(ko)
        relocations = sum(len(module.relocations_as_rela(s)) for s in module.sections
                          if s.sh_type == SHT.RELA)  # fmt: skip
        parts = _parts(ko, kallsyms, sections, out_in)

        def scalar() -> None:
            def walk_only(machine: int) -> Arch | None:
                a = arch_for(machine)
                return a._replace(vector_relocate_add=None) if a is not None else None

            setattr(apply_op, "arch_for", walk_only)  # noqa: B010 (a module's global)
            try:
                apply(ko, resolve_kernel([kallsyms]), bases=sections)
            finally:
                setattr(apply_op, "arch_for", arch_for)  # noqa: B010

        cases: dict[str, Callable[[], tuple[float, float]]] = {
            "ld": lambda: _process(ld_cmd),
            "klpelf": lambda: _process(klpelf_cmd),
            "python": lambda: _process([py, "-c", "pass"]),
            "numpy": lambda: _process([py, "-c", "import numpy"]),
            "klpelf --version": lambda: _process([KLPELF, "--version"]),
            "in-process": lambda: _inproc(job),
            **{k: (lambda f=f: _inproc(f)) for k, f in parts.items()},  # type: ignore[misc]
            "walk only (no vector twin)": lambda: _inproc(scalar),
        }
        wall: dict[str, list[float]] = {k: [] for k in cases}
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        names = list(cases)
        for r in range(args.repeat + 1):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                for d in (out_proc, out_in):
                    shutil.rmtree(d, ignore_errors=True)
                (work / "ld.exe").unlink(missing_ok=True)
                w, c = cases[name]()
                if r:
                    wall[name].append(w)
                    cpu[name].append(c)
    med_w = {k: statistics.median(v) for k, v in wall.items()}
    med_c = {k: statistics.median(v) for k, v in cpu.items()}
    if args.json:
        args.json.write_text(json.dumps({"wall": wall, "cpu": cpu}, indent=1))
    print(f"input: {ko} ({relocations} relocations, {res.write_count} of them klp writes), "
          f"{args.arch}; median of {args.repeat} rounds")  # fmt: skip
    ld_version = subprocess.run([ld[0], "--version"], capture_output=True, text=True,
                                check=True).stdout.splitlines()[0]  # fmt: skip
    print(f"{sys.version.split()[0]}, numpy {numpy.__version__}, {ld_version}")
    print()
    min_c = {k: min(v) for k, v in cpu.items()}
    head = ("measure", "wall ms", "cpu ms", "cpu min", "ld wall", "ld cpu", "ld min",
            "ratio wall", "ratio cpu", "ratio min", "target")  # fmt: skip
    rows: list[tuple[str, ...]] = [head]

    def row(label: str, key: str, target: float | None = None) -> None:
        rw, rc = med_w[key] / med_w["ld"], med_c[key] / med_c["ld"]
        rm = min_c[key] / min_c["ld"]
        verdict = "" if target is None else f"<= {target:g}x " + (
            "ok" if rc <= target else "MISSED")  # fmt: skip
        rows.append((label, f"{med_w[key] * 1e3:.1f}", f"{med_c[key] * 1e3:.1f}",
                     f"{min_c[key] * 1e3:.1f}", f"{med_w['ld'] * 1e3:.1f}",
                     f"{med_c['ld'] * 1e3:.1f}", f"{min_c['ld'] * 1e3:.1f}",
                     f"{rw:.2f}x", f"{rc:.2f}x", f"{rm:.2f}x", verdict))  # fmt: skip

    def plain(label: str, key: str) -> None:
        rows.append((label, f"{med_w[key] * 1e3:.1f}", f"{med_c[key] * 1e3:.1f}",
                     f"{min_c[key] * 1e3:.1f}", "", "", "", "", "", "", ""))  # fmt: skip

    row("(a) whole process: klpelf apply -o DIR --summary", "klpelf")
    plain("(a) fixed cost: python -c pass", "python")
    plain("(a) fixed cost: python -c 'import numpy'", "numpy")
    plain("(a) fixed cost: klpelf --version", "klpelf --version")
    row("(b) in-process: resolve + apply + write DIR", "in-process", 0.5)
    for k in parts:
        plain(f"(c) {k}", k)
    plain("(c) the walk alone, entry by entry (no vector twin)", "walk only (no vector twin)")
    widths = [max(len(line[i]) for line in rows) for i in range(len(head))]
    for line in rows:
        print("  ".join(f"{v:<{widths[i]}}" for i, v in enumerate(line)).rstrip())
    load = os.getloadavg()[0]
    if load > 1.5:
        print(f"\nwarning: load average {load:.1f}: other processes may have skewed the wall times")
    return 0


def _parts(ko: str, kallsyms: str, sections: dict[str, int],
           out: Path) -> dict[str, Callable[[], object]]:  # fmt: skip
    """The steps of the in-process job one by one, each on its own inputs."""
    elf = open_module(ko)
    release = KernelRelease(6, 19)
    mod = klp_module(elf, ksym_name_len=release.ksym_name_len)
    placed = place(elf, sections)
    addresses = {s.index: s.address for s in placed}
    ks = resolve_kernel([kallsyms])
    columns = symbol_value_arrays(elf, ks, release, addresses, module=mod)
    arch = arch_for(elf.machine)
    assert arch is not None
    res = apply(ko, ks, bases=sections)

    def read() -> None:
        e = open_module(ko)
        klp_module(e, ksym_name_len=release.ksym_name_len)
        for s in e.sections:
            if s.sh_type == SHT.RELA:
                e.relocations_as_rela(s)

    def resolve() -> None:
        e = open_module(ko)
        m = klp_module(e, ksym_name_len=release.ksym_name_len)
        symbol_value_arrays(e, resolve_kernel([kallsyms]), release, addresses, module=m)

    def walk() -> None:
        w = apply_op._Walk(elf, arch, release, mod.name, addresses=addresses, columns=columns)
        apply_op._apply_all(w, mod.sections, ks, None)

    def report() -> None:
        apply(ko, ks, bases=sections).writes  # noqa: B018 (built on first use)

    return {
        "read: open + klp view + relocation tables (a fresh module)": read,
        "read + symbol resolution (livepatch names, kallsyms, by name)": resolve,
        "layout: place()": lambda: place(elf, sections),
        "the walk: every relocation section (vector twin)": walk,
        "write DIR": lambda: write_sections(res, out),
        "not needed: apply + the per-write report (Write tuples)": report,
        "not needed: the text table (from the report)": res.to_text,
        "not needed: the JSON document (from the report)": lambda: json.dumps(
            res.to_json(), indent=2
        ),
    }


if __name__ == "__main__":
    sys.exit(main())
