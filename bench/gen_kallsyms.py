#!/usr/bin/env python3
"""Synthesize a large /proc/kallsyms from real data, for bench_kallsyms.py.

vmlinux part: the System.map of a Debian kernel from the test corpus
(~/.cache/klpelf/corpus, see tests/corpus/fetch.py), less what scripts/kallsyms
leaves out; module part: each module's core kallsyms symbols (what /proc/kallsyms
lists for a loaded module), in modules.order, as ``ADDR TYPE NAME\\t[MODULE]`` lines
with made-up load addresses, until the file has the requested number of lines.
Also writes a livepatch module whose livepatch symbols name some of those symbols.

    .venv/bin/python bench/gen_kallsyms.py [--arch amd64] [--lines 200000] [--zeroed]

Prints the paths it wrote (under ~/.cache/klpelf/bench; nothing is committed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

from klpelf.elf.constants import SHN, STB, STT
from klpelf.elf.reader import open_elf
from klpelf.elf.symbols import st_info
from klpelf.elf.writer import save_elf
from klpelf.symbols.elfsyms import ModuleFile
from klpelf.symbols.kallsyms import is_ignored_symbol

CORPUS = Path.home() / ".cache/klpelf/corpus"
OUT = Path.home() / ".cache/klpelf/bench"
REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples/klp_sample/klp_sample_lp.ko"


def vmlinux_lines(system_map: str) -> list[str]:
    out = []
    with open(system_map) as f:
        for line in f:
            addr, type_, name = line.split()
            if not is_ignored_symbol(name, type_):
                out.append(f"{addr} {type_} {name}\n")
    return out


def module_lines(modules_dir: str, budget: int) -> tuple[list[str], list[str]]:
    lines: list[str] = []
    names: list[str] = []
    base = 0xFFFFFFFFC0000000
    with open(os.path.join(modules_dir, "modules.order")) as f:
        order = [line.strip() for line in f if line.strip()]
    for rel in order:
        if len(lines) >= budget:
            break
        path = os.path.join(modules_dir, rel)
        if not os.path.exists(path):
            continue
        mod = ModuleFile(open_elf(path))
        names.append(mod.name)
        sections: dict[str | None, int] = {}
        for name, letter, sec, value in mod.kallsyms():
            if sec not in sections:
                sections[sec] = base
                base += 0x10000
            lines.append(f"{sections[sec] + value:016x} {letter} {name}\t[{mod.name}]\n")
        base = (base + 0xFFFFF) & ~0xFFFFF
    return lines[:budget], names


def _sympos(lines: list[str]) -> dict[int, int]:
    # The sympos that selects each line: 0 when its name is unique in its object, else
    # its rank (vmlinux: by address, then line; a module: line order).
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for i, line in enumerate(lines):
        f = line.split()
        obj = f[3] if len(f) > 3 else "vmlinux"
        addr = int(f[0], 16) if obj == "vmlinux" else 0
        groups.setdefault((obj, f[2]), []).append((addr, i))
    pos: dict[int, int] = {}
    for members in groups.values():
        for rank, (_, i) in enumerate(sorted(members), 1):
            pos[i] = 0 if len(members) == 1 else rank
    return pos


def livepatch_module(lines: list[str], dest: Path, count: int) -> list[str]:
    """A livepatch module with ``count`` livepatch symbols naming lines of ``lines``."""
    rng = random.Random(1)
    sympos = _sympos(lines)
    elf = open_elf(SAMPLE)
    tab = elf.symtab
    assert tab is not None
    names: set[str] = set()
    for i in rng.sample(range(len(lines)), count):
        fields = lines[i].split()
        name = fields[2]
        obj = fields[3].strip("[]") if len(fields) > 3 else "vmlinux"
        if "," in name or name in names:
            continue
        names.add(name)
        klp = f".klp.sym.{obj}.{name},{sympos[i]}"
        tab.add_symbol(klp, st_info=st_info(STB.GLOBAL, STT.NOTYPE), st_shndx=SHN.LIVEPATCH)
    save_elf(elf, dest, overwrite=True)
    return sorted(names)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="amd64")
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--symbols", type=int, default=100, help="livepatch symbols to make")
    p.add_argument("--zeroed", action="store_true", help="all addresses 0 (kptr_restrict)")
    args = p.parse_args()
    manifest = CORPUS / "manifest.json"
    if not manifest.exists():
        print(f"no corpus at {CORPUS} (run tests/corpus/fetch.py)", file=sys.stderr)
        return 2
    info = json.loads(manifest.read_text())[args.arch]
    vml = vmlinux_lines(info["system_map"])
    mods, modnames = module_lines(info["modules_dir"], max(args.lines - len(vml), 0))
    lines = (vml + mods)[: args.lines]
    if args.zeroed:
        lines = ["0" * 16 + line[16:] for line in lines]
    OUT.mkdir(parents=True, exist_ok=True)
    tag = f"{args.arch}-{args.lines}" + ("-zeroed" if args.zeroed else "")
    kallsyms = OUT / f"kallsyms-{tag}"
    kallsyms.write_text("".join(lines))
    lp = OUT / f"livepatch-{tag}.ko"
    names = livepatch_module(lines, lp, args.symbols)
    (OUT / f"names-{tag}").write_text("".join(n + "\n" for n in names))
    print(f"{kallsyms}: {len(lines)} lines ({len(vml)} vmlinux, {len(lines) - len(vml)} in "
          f"{len(modnames)} modules), {kallsyms.stat().st_size} bytes")  # fmt: skip
    print(f"{lp}: livepatch module with {len(names)} distinct symbol names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
