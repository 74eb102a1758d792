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

from collections.abc import Callable
from typing import TYPE_CHECKING

from klpelf.arch import Arch, RelocType, StopReason, WriteFacts
from klpelf.elf.constants import EM

if TYPE_CHECKING:
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
        # handled as PC32 since v4.16: the kernel has no PLT (L = S)
        RelocType(4, "R_X86_64_PLT32", 4, "L + A - P (L = S)", _s_a_p),
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
#: what a written place holds when the value is not known: only zero or not matters
_MARK = {4: b"\1" * 4, 8: b"\1" * 8}


def write_relocate_add(
    relocs: RelocationTable,
    target: bytearray,
    release: KernelRelease,
    *,
    symbol_value: Callable[[int], int | None] | None = None,
    address: int | None = None,
) -> WriteFacts:
    """The twin of ``__write_relocate_add(..., apply=true)`` (arch/x86/kernel/module.c)
    for one section: see :class:`klpelf.arch.WriteRelocateAdd`.

    Bytes of a place past the end of ``target`` are neither checked nor written (the
    kernel writes whatever memory follows the section).
    """
    offsets, types = relocs.offsets(), relocs.types()
    n = len(target)
    widths: list[int] = []
    nonzero: list[bool] = []
    known_values = symbol_value is not None and address is not None
    values: list[int | None] | None = [] if known_values else None
    overflow: list[bool | None] | None = [] if known_values else None
    syms = relocs.syms() if known_values else []
    addends = (relocs.addends() or [0] * len(types)) if known_values else []
    overflow_first = release.at_least(6, 3)  # the v6.3 rewrite checks the range first
    width_of = _WIDTH.get
    stop: int | None = None
    reason: StopReason | None = None
    for i, (off, r_type) in enumerate(zip(offsets, types, strict=True)):
        width = width_of(r_type, -1)
        if width <= 0:  # NONE, a type not modelled, or unknown (the walk stops)
            widths.append(0)
            nonzero.append(False)
            if values is not None and overflow is not None:
                values.append(None)
                overflow.append(None)
            if width < 0:
                stop, reason = i, "unknown-type"
                break
            continue
        end = off + width
        inside = width if end <= n else max(n - off, 0)
        widths.append(width)
        nz = inside > 0 and target[off : off + inside] != _ZEROS[width][:inside]
        nonzero.append(nz)
        value: int | None = None
        over = False
        if values is not None and overflow is not None:
            s = symbol_value(syms[i]) if symbol_value is not None else None
            if s is not None and address is not None:
                row = RELOCATION_TYPES[r_type]
                assert row.compute is not None
                value = row.compute(s, addends[i], address + off)
                over = row.in_range is not None and not row.in_range(value)
            values.append(value)
            overflow.append(over if value is not None else None)
        if over and (overflow_first or not nz):
            stop, reason = i, "overflow"
            break
        if nz:
            stop, reason = i, "nonzero"
            break
        if inside:
            if value is None:
                target[off : off + inside] = _MARK[width][:inside]
            else:
                target[off : off + inside] = value.to_bytes(8, "little")[:inside]
    return WriteFacts(offsets[: len(widths)], types[: len(widths)], widths, nonzero,
                      values=values, overflow=overflow, stop=stop, reason=reason)  # fmt: skip


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
                     value: int | None) -> str:  # fmt: skip
    """The kernel's two lines for a 32/32S value out of range (joined with "; ")."""
    val = "<val>" if value is None else f"{value:x}"
    first = f"overflow in relocation type {r_type} val {val}"
    if release.at_least(6, 19):
        first += f" sec {sec} idx {idx}"
    return f"{first}; `{module}' likely not compiled with -mcmodel=kernel"


def refusal(release: KernelRelease, module: str, sec: int, facts: WriteFacts) -> tuple[str, str]:
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
)
