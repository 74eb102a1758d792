"""Corrupted livepatch modules through every tool: a KlpError (one line) or a result, never a crash.

Random bytes of the shipped sample (before and after convert) are changed, mostly in
the section header table, and the result goes through show, check and convert with
a write: any exception other than KlpError is a bug.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path

from klpelf.elf.reader import read_elf
from klpelf.elf.writer import write_elf
from klpelf.errors import KlpError
from klpelf.klp.check import check_module
from klpelf.klp.convert import convert_annotations
from klpelf.klp.module import klp_module
from klpelf.operations.show import show_module
from klpelf.release import KernelRelease

SAMPLES = Path(__file__).resolve().parents[2] / "samples/klp_sample"


def _through_every_tool(data: bytes) -> None:
    try:
        check_module(read_elf(data, path="f"), version=KernelRelease(6, 1))
        elf = read_elf(data, path="f")
        elf.decode_all()
        show_module(klp_module(elf), relocs=True)
        elf = read_elf(data, path="f")
        convert_annotations(elf)
        write_elf(elf)
    except KlpError:
        pass


def corrupted(good: bytes, rng: random.Random, count: int) -> Iterator[bytes]:
    """``count`` copies of ``good`` with 1 to 4 random bytes changed, 70% of them in
    the section header table (and what follows it)."""
    (shoff,) = struct.unpack_from("<Q", good, 0x28)
    for _ in range(count):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            near_headers = rng.random() < 0.7
            off = (
                shoff + rng.randrange(len(good) - shoff)
                if near_headers
                else rng.randrange(len(good))
            )
            b[off] = rng.randrange(256)
        yield bytes(b)


def test_corrupted_modules_never_crash() -> None:
    rng = random.Random(20261125)
    for name in ("klp_sample_lp.ko", "klp_sample.ko"):
        for data in corrupted((SAMPLES / name).read_bytes(), rng, 600):
            _through_every_tool(data)
