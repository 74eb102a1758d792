"""x86_64: the relocations of ``arch/x86/kernel/module.c`` in the releases klpelf models.

``apply_relocate_add()`` calls ``write_relocate_add(..., apply=true)``, which calls
``__write_relocate_add()`` (v6.3+; ``__apply_relocate_add()`` in v5.8..v6.2): for
each Elf64_Rela entry, in order, ``val = S + A`` (``- P`` for the PC-relative types),
then the type's range check (``goto overflow``), then the place must hold zero bytes
(else -ENOEXEC, "existing value is nonzero"), then ``val``'s low bytes are written.
An unknown type stops the walk with "Unknown rela relocation".  Before v6.3 the zero
check came first and the 32/32S range check after the write.

See ../shared/reference/kernel-rules.md section 5.1 (versions read: v5.8-era, v6.3+,
v6.13/6.14, v6.15+, the v6.19 "Improve relocation error messages" patch).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from functools import cache
from itertools import compress, islice, repeat
from operator import add, gt
from typing import TYPE_CHECKING

from klpelf.arch import Arch, Message, ModuleLayout, PrFmt, RelocType, StopReason, WriteFacts
from klpelf.elf.constants import EM

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from klpelf.arch._vector import Entries, VectorWrites
    from klpelf.elf.relocs import RelocationTable
    from klpelf.release import KernelRelease

_U64 = (1 << 64) - 1


def _s_a(s: int, a: int, p: int) -> int:
    return (s + a) & _U64


def _s_a_p(s: int, a: int, p: int) -> int:
    return (s + a - p) & _U64


def _fits_u32(val: int) -> bool:
    # val != *(u32 *)&val
    return val <= 0xFFFF_FFFF


def _fits_s32(val: int) -> bool:
    # (s64)val != *(s32 *)&val
    return val < 0x8000_0000 or val >= _U64 + 1 - 0x8000_0000


R_X86_64_NONE = 0
R_X86_64_REX_GOTPCRELX = 42

#: the types __write_relocate_add() handles; any other is "Unknown rela relocation"
RELOCATION_TYPES: dict[int, RelocType] = {
    t.number: t
    for t in (
        RelocType(0, "R_X86_64_NONE", 0, "none"),  # continue: nothing written or checked
        RelocType(1, "R_X86_64_64", 8, "S + A", _s_a),
        # no range check: the value is cut to 32 bits (the one the v5.8 code had was
        # inside #if 0, and went with the v6.3 rewrite)
        RelocType(2, "R_X86_64_PC32", 4, "S + A - P", _s_a_p),
        # handled as PC32 since v4.16: the kernel has no PLT, L (the PLT entry) is S
        RelocType(4, "R_X86_64_PLT32", 4, "L + A - P", _s_a_p),
        RelocType(10, "R_X86_64_32", 4, "S + A", _s_a, "val == (u32)val", _fits_u32),
        RelocType(11, "R_X86_64_32S", 4, "S + A", _s_a, "(s64)val == (s32)val", _fits_s32),
        RelocType(24, "R_X86_64_PC64", 8, "S + A - P", _s_a_p),
        # v6.15+, only with CONFIG_STACKPROTECTOR and clang < 17: S must be
        # &__stack_chk_guard ("Unsupported GOTPCREL relocation"), then the place gets
        # a PC-relative pointer.  klpelf neither refuses nor checks it, in any release.
        RelocType(42, "R_X86_64_REX_GOTPCRELX", 4, "G + GOT + A - P", modelled=False),
    )
}

#: type -> bytes written, 0 for the types that write nothing klpelf checks
_WIDTH = {t.number: t.width if t.modelled else 0 for t in RELOCATION_TYPES.values()}
_ZEROS = {4: bytes(4), 8: bytes(8)}
_ZERO_PLACES = frozenset(_ZEROS.values())
#: what a written place holds when the value is not known: only zero or not matters
_MARK = {4: b"\1" * 4, 8: b"\1" * 8}


def write_relocate_add(
    relocs: RelocationTable,
    target: bytearray,
    release: KernelRelease,
    *,
    symbol_value: Callable[[int], int | None] | None = None,
    address: int | None = None,
    keep: bool = True,
    layout: ModuleLayout | None = None,
) -> WriteFacts:
    """The twin of ``__write_relocate_add(..., apply=true)`` (arch/x86/kernel/module.c)
    for one section: see :class:`klpelf.arch.WriteRelocateAdd`.  x86_64 needs no other
    section than the target: ``layout`` is accepted and not read.

    Bytes of a place past the end of ``target`` are neither checked nor written (the
    kernel writes whatever memory follows the section).
    """
    offsets, types = relocs.offsets(), relocs.types()
    width_of = _WIDTH.get
    # what does not depend on the order of the entries is computed for all at once
    # (amdgpu.ko: 320,000 entries); the walk below keeps only the order-dependent part
    widths = list(map(width_of, types, repeat(-1)))
    limit = widths.index(-1) if -1 in widths else len(widths)  # the first unknown type
    values: list[int | None] | None = None
    overflow: list[bool | None] | None = None
    if symbol_value is not None and address is not None:
        values = _values(relocs, types[:limit], symbol_value, address)
        overflow = [_overflows(t, v) for t, v in zip(types, values, strict=False)]
        if True in overflow:
            limit = overflow.index(True)
    # an entry judged after the walk (an overflow before v6.3) needs the bytes written
    stop = _write_places(target, offsets, widths, values, limit, keep=keep or limit < len(widths))
    reason: StopReason | None = "nonzero" if stop is not None else None
    if stop is None and limit < len(widths):
        stop = limit
        if widths[limit] < 0:
            reason = "unknown-type"
        # the v6.3 rewrite checks the range first; before, the zero check came first
        elif (
            release.at_least(6, 3)
            or _write_entries(target, offsets, widths, values, [limit]) is None
        ):
            reason = "overflow"
        else:
            reason = "nonzero"
    walked = len(widths) if stop is None else stop + 1
    nonzero = [False] * walked
    if reason == "nonzero":
        nonzero[-1] = True
    widths = widths[:walked]
    if reason == "unknown-type":
        widths[-1] = 0
    if values is not None and overflow is not None:
        values, overflow = values[:walked], overflow[:walked]
        values += [None] * (walked - len(values))
        overflow += [None] * (walked - len(overflow))
    return WriteFacts(offsets[:walked], types[:walked], widths, nonzero,
                      values=values, overflow=overflow, stop=stop, reason=reason)  # fmt: skip


def _write_places(target: bytearray, offsets: list[int], widths: list[int],
          values: list[int | None] | None, limit: int, *, keep: bool) -> int | None:  # fmt: skip
    """The order-dependent part: entries ``0..limit-1`` in order, each place must be
    zero (the file's bytes, or what an earlier entry wrote), then it is written.  The
    index of the first nonzero place, or None."""
    if _places_free(target, offsets, widths, values, limit, keep=keep):
        return None
    return _write_entries(target, offsets, widths, values, range(limit))


def _write_entries(target: bytearray, offsets: list[int], widths: list[int],
               values: list[int | None] | None, entries: Iterable[int]) -> int | None:  # fmt: skip
    """:func:`_write_places` entry by entry, over ``entries``."""
    n = len(target)
    for i in entries:
        width = widths[i]
        if not width:  # NONE, or a type klpelf does not model
            continue
        off = offsets[i]
        end = off + width
        zeros = _ZEROS[width]
        value = None if values is None else values[i]
        mark = _MARK[width] if value is None else value.to_bytes(8, "little")[:width]
        if end > n:  # past the end of the section: only the bytes inside count
            if off >= n:
                continue
            zeros, mark, end = zeros[: n - off], mark[: n - off], n
        if target[off:end] != zeros:
            return i
        target[off:end] = mark
    return None


def _places_free(target: bytearray, offsets: list[int], widths: list[int],
                 values: list[int | None] | None, limit: int, *, keep: bool) -> bool:  # fmt: skip
    """The usual case at once, without a Python step per entry: when the places (of
    the entries that write) come in increasing order, do not overlap, lie inside the
    section and hold zeros, no entry stops, and the bytes after the walk are the
    section's with every place written (done here unless not ``keep``).  False:
    nothing done, walk the entries one by one (:func:`_write_entries`)."""
    offs = offsets if limit == len(offsets) else offsets[:limit]
    ws = widths if limit == len(widths) else widths[:limit]
    live: Iterable[int] = range(limit)
    if 0 in ws:  # entries that write nothing (R_X86_64_NONE) do not take part
        live = list(compress(range(limit), ws))
        offs, ws = [offs[i] for i in live], [ws[i] for i in live]
    if not ws:
        return True
    ends = list(map(add, offs, ws))
    # ends[i] <= offs[i + 1] for all i: increasing, no overlap (every width is > 0)
    if ends[-1] > len(target) or any(map(gt, ends, islice(offs, 1, None))):
        return False
    data = bytes(target)
    if not set(map(data.__getitem__, map(slice, offs, ends))) <= _ZERO_PLACES:
        return False
    if not keep:
        return True
    if values is None:
        marks = list(map(_MARK.__getitem__, ws))
    else:
        marks = []
        for i, w in zip(live, ws, strict=True):
            v = values[i]
            marks.append(_MARK[w] if v is None else v.to_bytes(8, "little")[:w])
    # the writes, each a slice assignment, looped in C
    deque(map(target.__setitem__, map(slice, offs, ends), marks), maxlen=0)
    return True


def _values(
    relocs: RelocationTable,
    types: list[int],
    symbol_value: Callable[[int], int | None],
    address: int,
) -> list[int | None]:
    """``val`` of each entry (S + A, - P for the PC-relative types); None when S is not
    known or the type computes nothing."""
    syms, offsets = relocs.syms(), relocs.offsets()
    addends = relocs.addends() or [0] * len(types)
    out: list[int | None] = []
    for i, r_type in enumerate(types):
        compute = RELOCATION_TYPES[r_type].compute
        s = symbol_value(syms[i]) if compute is not None else None
        out.append(
            None if s is None or compute is None else compute(s, addends[i], address + offsets[i])
        )
    return out


def _overflows(r_type: int, value: int | None) -> bool | None:
    """Whether ``value`` fails the type's range check (None: not known)."""
    if value is None:
        return None
    check = RELOCATION_TYPES[r_type].in_range
    return check is not None and not check(value)


# --- the whole section at once -------------------------------------------------------


def _u32_ok(val: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    return val <= 0xFFFF_FFFF  # val == (u32)val


def _s32_ok(val: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    # (s64)val == (s32)val: val in [-2^31, 2^31), i.e. val + 2^31 (mod 2^64) < 2^32
    import numpy as np

    return (val + np.uint64(0x8000_0000)) <= 0xFFFF_FFFF


#: the types the vector twin computes, as RELOCATION_TYPES has them: type -> (bytes
#: written, PC-relative, the range check as a test of an array of values); the two that
#: write nothing (NONE, the unmodelled REX_GOTPCRELX) too.  An unknown type is left to
#: the entry-by-entry walk.
_Check = Callable[["npt.NDArray[np.uint64]"], "npt.NDArray[np.bool_]"]
_VECTOR: dict[int, tuple[int, bool, _Check | None]] = {
    0: (0, False, None), 1: (8, False, None), 2: (4, True, None), 4: (4, True, None),
    10: (4, False, _u32_ok), 11: (4, False, _s32_ok), 24: (8, True, None), 42: (0, False, None),
}  # fmt: skip


@cache
def _vector_tables() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """_VECTOR as lookup tables by type number: width, PC-relative, known."""
    import numpy as np

    size = max(_VECTOR) + 1
    width = np.zeros(size, dtype=np.uint8)
    pc, known = np.zeros(size, dtype=bool), np.zeros(size, dtype=bool)
    for t, (w, rel, _) in _VECTOR.items():
        width[t], pc[t], known[t] = w, rel, True
    return width, pc, known


def vector_relocate_add(
    relocs: RelocationTable,
    target: bytearray,
    release: KernelRelease,
    *,
    entries: Entries,
    address: int,
    layout: ModuleLayout | None = None,
) -> VectorWrites | None:
    """:func:`write_relocate_add` of a whole section at once when no entry can stop
    (see :mod:`klpelf.arch._vector`): ``target`` is left as the walk leaves it, or
    untouched and None when the entry-by-entry walk must decide."""
    import numpy as np

    from klpelf.arch._vector import VectorWrites, blocks, write_free

    width_of, pc_of, known_type = _vector_tables()
    n = len(entries)
    widths = np.empty(n, dtype=np.uint8)
    values = np.empty(n, dtype=np.uint64)
    at = np.uint64(address)
    checks = [(t, ok) for t, (_, _, ok) in _VECTOR.items() if ok is not None]
    unknown = ~known_type
    for sl in blocks(n):
        e = entries.block(sl)
        types = e.types
        if int(types.max()) >= len(known_type):
            return None
        index = types.view(np.intp)  # (each type is below the tables' size)
        # the types of the block, counted: an unknown one, and the checks to make
        present = np.bincount(index, minlength=len(known_type))
        if bool(present[unknown].any()):
            return None
        w = widths[sl]
        np.take(width_of, index, out=w)
        known = e.known
        if not bool(known.all()) and not bool((known | (w == 0)).all()):
            return None  # the walk writes marker bytes where S is not known
        v = values[sl]
        np.add(e.values, e.addends, out=v)
        pc = pc_of[index]
        if bool(pc.any()):
            v -= np.where(pc, e.offsets + at, np.uint64(0))
        for t, ok in checks:
            if present[t] and bool((~ok(v) & (types == t)).any()):
                return None
    if not write_free(target, entries.offsets, values, widths, "little"):
        return None
    return VectorWrites(entries, widths, values)


# --- the kernel's messages --------------------------------------------------------------


def nonzero_message(release: KernelRelease, sec: int, idx: int, r_type: int) -> str:
    """What the kernel prints when the place of entry ``idx`` of relocation section
    ``sec`` is not zero; the runtime address and value are shown as <loc> and <val>."""
    if release.at_least(6, 19):
        return (
            "x86/modules: Invalid relocation target, existing value is nonzero for "
            f"sec {sec}, idx {idx}, type {r_type}, loc <loc>, val <val>"
        )
    if release.at_least(6, 3):
        return (
            "x86/modules: Invalid relocation target, existing value is nonzero for "
            f"type {r_type}, loc <loc>, val <val>"
        )
    return (
        "x86/modules: Skipping invalid relocation target, existing value is nonzero for "
        f"type {r_type}, loc <loc>, val <val>"
    )


def unknown_message(module: str, r_type: int) -> str:
    """What the kernel prints for a type __write_relocate_add() does not handle."""
    return f"{module}: Unknown rela relocation: {r_type}"


def overflow_message(release: KernelRelease, module: str, sec: int, idx: int, r_type: int, *,
                     value: int | None) -> tuple[str, str]:  # fmt: skip
    """The kernel's two lines for a 32/32S value out of range: the
    overflow: label of __write_relocate_add() has two pr_err() calls, each line with
    the file's pr_fmt in dmesg (read in 5.10, 6.1, 6.12: "val %Lx"; 7.2, since the v6.19
    "Improve relocation error messages": "val %llx sec %u idx %d")."""
    val = "<val>" if value is None else f"{value:x}"
    first = f"overflow in relocation type {r_type} val {val}"
    if release.at_least(6, 19):
        first += f" sec {sec} idx {idx}"
    return first, f"`{module}' likely not compiled with -mcmodel=kernel"


def refusal(release: KernelRelease, module: str, sec: int,
            facts: WriteFacts) -> tuple[str, Message]:  # fmt: skip
    """The rule and the kernel's message for the entry where ``facts`` stopped."""
    assert facts.stop is not None
    idx = facts.stop
    r_type = facts.types[idx]
    if facts.reason == "unknown-type":
        return "x86-unknown-relocation", unknown_message(module, r_type)
    if facts.reason == "overflow":
        assert facts.values is not None
        message = overflow_message(release, module, sec, idx, r_type, value=facts.values[idx])
        return "x86-relocation-overflow", message
    return "x86-nonzero-target", nonzero_message(release, sec, idx, r_type)


ARCH = Arch(
    name="x86_64",
    machine=EM.X86_64,
    byteorder="little",
    relocation_types=RELOCATION_TYPES,
    none_type=R_X86_64_NONE,
    write_relocate_add=write_relocate_add,
    refusal=refusal,
    nonzero_message=nonzero_message,
    vector_relocate_add=vector_relocate_add,
    # arch/x86/kernel/module.c: #define pr_fmt(fmt) KBUILD_MODNAME ": " fmt, module.o
    # (read in 5.10, 6.1, 6.12 and 7.2; the harness's dmesg shows "module: ")
    dmesg_prefix=PrFmt("module: "),
)
