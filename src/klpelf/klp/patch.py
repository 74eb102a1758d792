"""What a livepatch replaces: struct klp_patch -> klp_object[] -> klp_func[], decoded
from the static module by following its relocations (:mod:`klpelf.elf.pointers`).

Three producers lay the same facts out differently:

* hand-written modules: ``struct klp_patch`` in ``.data`` (``mod`` relocated to
  ``__this_module``, ``objs`` to a ``klp_object`` array), arrays ended by the all-zero
  entry that ``klp_for_each_object_static`` / ``klp_for_each_func_static`` stop at
  (include/linux/livepatch.h);
* kpatch-built modules: ``.kpatch.funcs``, an array of ``struct kpatch_patch_func``
  that kpatch's patch hook turns into klp structures at init, and the
  ``.kpatch.callbacks.*`` sections;
* klp-build modules (v6.19+): ``struct klp_object_ext`` / ``struct klp_func_ext``
  descriptor sections (include/linux/livepatch_external.h), named ``__klp_objects`` /
  ``__klp_funcs`` in 6.19 and ``.init.klp_objects`` / ``.init.klp_funcs`` since they
  are freed after init; scripts/livepatch/init.c copies them into klp structures.

Only the external fields, which come first and are stable, are read.  Struct strides
come from the module (the array symbol's size and its sentinel, or the spacing of the
relocations), never from a per-release sizeof, since the internal fields grow with the
config.  What cannot be decoded is kept as a note with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from klpelf.elf.file import ElfFile, Section
from klpelf.elf.pointers import (
    Location,
    Pointer,
    location,
    pointers_in,
    relocations_by_target,
    string_at,
    symbol_at,
)
from klpelf.elf.symbols import Symbol
from klpelf.errors import UsageError
from klpelf.release import KernelRelease

__all__ = [
    "CALLBACKS",
    "KLP_BUILD_SECTIONS",
    "KlpFunc",
    "KlpObjectDecl",
    "KlpPatch",
    "KlpState",
    "decode_patches",
]

#: the members of struct klp_callbacks, in order
CALLBACKS = ("pre_patch", "post_patch", "pre_unpatch", "post_unpatch")

#: (objects, funcs) section names of klp-build modules: 6.19's, then the .init. ones
KLP_BUILD_SECTIONS = (("__klp_objects", "__klp_funcs"), (".init.klp_objects", ".init.klp_funcs"))

KPATCH_FUNCS = ".kpatch.funcs"
KPATCH_CALLBACKS = ".kpatch.callbacks."


class NewFunc(NamedTuple):
    """The replacement function a ``new_func`` pointer names."""

    name: str
    size: int


class KlpFunc(NamedTuple):
    """One ``struct klp_func`` (or its kpatch / klp-build form)."""

    old_name: str | None
    new_func: NewFunc | None
    old_sympos: int
    #: where the entry is: "<section>+<offset>"
    where: str


class KlpObjectDecl(NamedTuple):
    """One ``struct klp_object``: ``name`` None is vmlinux."""

    name: str | None
    funcs: list[KlpFunc]
    #: callback member -> function name, for the ones set
    callbacks: dict[str, str]
    where: str
    #: its ``funcs`` pointer is NULL (a named object: klp_enable_patch() refuses it)
    funcs_null: bool = False

    @property
    def objname(self) -> str:
        """The name the kernel uses (``klp_is_module(obj) ? obj->name : "vmlinux"``)."""
        return self.name if self.name is not None else "vmlinux"


class KlpState(NamedTuple):
    """One ``struct klp_state``: id and version."""

    id: int
    version: int


class KlpPatch(NamedTuple):
    """A decoded patch."""

    #: "klp_patch" (hand-written), "kpatch", "klp-build"
    style: str
    #: the symbol or section the patch was found at
    where: str
    objects: list[KlpObjectDecl]
    #: None when the module does not say (or the release has no states)
    states: list[KlpState] | None
    #: None when it cannot be read from the data (the note says why)
    replace: bool | None
    #: what could not be decoded, with the reason
    notes: list[str]


class _Reader:
    """Pointers and words of one module, cached per section."""

    def __init__(self, elf: ElfFile) -> None:
        self.elf = elf
        self.w = 8 if elf.is64 else 4
        self._ptrs: dict[int, dict[int, Pointer]] = {}
        self._by_target: dict[int, list[Section]] | None = None

    def ptrs(self, sec: Section) -> dict[int, Pointer]:
        got = self._ptrs.get(sec.index)
        if got is None:
            if self._by_target is None:
                self._by_target = relocations_by_target(self.elf)
            got = self._ptrs[sec.index] = pointers_in(self.elf, sec, self._by_target)
        return got

    def ptr(self, sec: Section, off: int) -> Pointer | None:
        return self.ptrs(sec).get(off)

    def word(self, sec: Section, off: int, width: int | None = None) -> int:
        n = width or self.w
        data = sec.data
        if off < 0 or off + n > len(data):
            return 0
        return int.from_bytes(bytes(data[off : off + n]), self.elf.byteorder)  # type: ignore[arg-type]

    def zero(self, sec: Section, off: int, width: int | None = None) -> bool:
        return self.ptr(sec, off) is None and self.word(sec, off, width) == 0

    def string(self, sec: Section, off: int) -> str | None:
        p = self.ptr(sec, off)
        if p is None:
            return None
        raw = string_at(self.elf, p)
        return raw.decode("utf-8", "replace") if raw is not None else None

    def func(self, sec: Section, off: int) -> NewFunc | None:
        p = self.ptr(sec, off)
        if p is None:
            return None
        sym = symbol_at(self.elf, p)
        if sym is None:
            name = p.symbol.name or f"[{p.sym}]"
            return NewFunc(f"{name}+{p.addend:#x}" if p.addend else name, 0)
        return NewFunc(sym.name, sym.st_size)

    def target(self, sec: Section, off: int) -> Location | None:
        p = self.ptr(sec, off)
        return location(self.elf, p) if p is not None else None

    def array_symbol(self, loc: Location) -> Symbol | None:
        """The data symbol that starts at ``loc`` (for its st_size)."""
        tab = self.elf.symtab
        if tab is None:
            return None
        value = loc.offset if self.elf.is_relocatable else loc.offset + loc.section.sh_addr
        for sym in tab:
            if sym.shndx == loc.section.index and sym.st_value == value and sym.st_size:
                return sym
        return None


def _callbacks(r: _Reader, sec: Section, off: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, member in enumerate(CALLBACKS):
        f = r.func(sec, off + i * r.w)
        if f is not None:
            out[member] = f.name
    return out


#: the largest entry tried for a klp array (struct klp_object and klp_func are a few
#: hundred bytes in every release)
_MAX_STRIDE = 4096


def _stride(
    r: _Reader,
    loc: Location,
    shape: tuple[int, int, int],
    sentinel: Callable[[int], bool],
) -> tuple[int | None, str | None]:
    """The stride of a sentinel-ended array at ``loc``: from its symbol's size (the one
    stride for which the first sentinel is the last entry and every pointer falls in an
    entry's first ``external`` bytes, its external fields: the internal ones are zero in
    a static initializer), else from the spacing of the relocations at ``anchor`` in
    consecutive entries."""
    minimum, external, anchor = shape
    sym = r.array_symbol(loc)
    base = loc.offset
    # a size past the section's end is no array's (and its strides would be tried one
    # by one: a fuzzed st_size of 2**32 ran for minutes)
    if sym is not None and 0 < sym.st_size <= len(loc.section.data) - base:
        size = sym.st_size
        inside = [o - base for o in r.ptrs(loc.section) if base <= o < base + size]
        fits = []
        # no klp struct is larger than a page: the strides tried stay few whatever the
        # size (each array symbol would otherwise cost a pass per word of its size)
        for s in range(-(-minimum // r.w) * r.w, min(size, _MAX_STRIDE) + 1, r.w):
            if size % s or any(o % s >= external for o in inside):
                continue
            n = size // s
            first = next((k for k in range(n) if sentinel(base + k * s)), None)
            if first == n - 1:
                fits.append(s)
        if len(fits) == 1:
            return fits[0], None
        if fits:
            return None, f"{sym.name}: strides {fits} all fit its size {size}"
    first = base + anchor
    ptrs = r.ptrs(loc.section)
    if first in ptrs:
        later = sorted(o for o in ptrs if o - first >= minimum)
        if later:
            return later[0] - first, None
    return None, "no array symbol with a size and no second entry to measure the stride"


def _entries(
    r: _Reader,
    loc: Location,
    shape: tuple[int, int, int],
    sentinel: Callable[[int], bool],
    *,
    what: str,
    notes: list[str],
) -> list[int]:
    """The offsets of a sentinel-ended array's entries before its sentinel.  ``shape``:
    (the entry's external size, where its pointers may be, the anchor pointer's offset)."""
    minimum = shape[0]
    sec = loc.section
    stride, why = _stride(r, loc, shape, sentinel)
    out: list[int] = []
    off = loc.offset
    while off + minimum <= len(sec.data) and not sentinel(off):
        out.append(off)
        if stride is None:
            notes.append(f"only the first {what} is decoded ({why})")
            return out
        off += stride
    if off + minimum > len(sec.data):
        notes.append(f"the {what} array runs off the end of {sec.name}")
    return out


def _funcs(r: _Reader, loc: Location, notes: list[str], owner: str) -> list[KlpFunc]:
    w = r.w
    sec = loc.section

    def sentinel(o: int) -> bool:  # klp_for_each_func_static's end
        return r.zero(sec, o) and r.zero(sec, o + w) and r.zero(sec, o + 2 * w)

    return [
        KlpFunc(r.string(sec, off), r.func(sec, off + w), r.word(sec, off + 2 * w),
                f"{sec.name}+{off:#x}")
        for off in _entries(r, loc, (3 * w, 3 * w, w), sentinel, what=f"klp_func of {owner}",
                            notes=notes)
    ]  # fmt: skip


def _objects(r: _Reader, loc: Location, notes: list[str]) -> list[KlpObjectDecl]:
    w = r.w
    sec = loc.section

    def sentinel(o: int) -> bool:  # klp_for_each_object_static: !funcs && !name
        return r.zero(sec, o) and r.zero(sec, o + w)

    out: list[KlpObjectDecl] = []
    # name, funcs, struct klp_callbacks (4 pointers and a bool)
    external = 6 * w + 1
    for off in _entries(r, loc, (external, external, w), sentinel, what="klp_object", notes=notes):
        name = r.string(sec, off)
        owner = f"klp_object {name or 'vmlinux'}"
        funcs_at = r.target(sec, off + w)
        funcs = _funcs(r, funcs_at, notes, owner) if funcs_at is not None else []
        if funcs_at is None and r.ptr(sec, off + w) is not None:
            notes.append(f"{owner}: funcs points outside the module")
        where = f"{sec.name}+{off:#x}"
        null = r.zero(sec, off + w)
        out.append(KlpObjectDecl(name, funcs, _callbacks(r, sec, off + 2 * w), where, null))
    return out


def _states(r: _Reader, loc: Location, notes: list[str]) -> list[KlpState]:
    sec = loc.section
    w = r.w

    def sentinel(o: int) -> bool:  # klp_for_each_state: state->id
        return r.word(sec, o) == 0

    # id and version; the fields after them (data, and callbacks in proposed
    # versions) may hold pointers anywhere
    shape = (2 * w, 1 << 62, 0)
    return [
        KlpState(r.word(sec, off), r.word(sec, off + w, 4))
        for off in _entries(r, loc, shape, sentinel, what="klp_state", notes=notes)
    ]


def _release(elf: ElfFile) -> KernelRelease | None:
    mi = elf.modinfo
    vermagic = mi.get("vermagic") if mi else None
    if not vermagic:
        return None
    try:
        return KernelRelease.parse(vermagic)
    except UsageError:
        return None


def _hand_written(r: _Reader) -> list[KlpPatch]:
    """Every struct klp_patch: mod -> __this_module, objs -> an array whose first
    entry's funcs leads to klp_funcs (a file_operations' owner is __this_module too)."""
    elf = r.elf
    w = r.w
    out: list[KlpPatch] = []
    release = _release(elf)
    for sec in elf.sections:
        if sec.is_relocation or not sec.data or sec.name.startswith(".gnu.linkonce"):
            continue
        for off, p in sorted(r.ptrs(sec).items()):
            if p.symbol.name != "__this_module":
                continue
            objs = r.target(sec, off + w)
            if objs is None or r.target(objs.section, objs.offset + w) is None:
                continue
            notes: list[str] = []
            objects = _objects(r, objs, notes)
            if not objects or not any(o.funcs for o in objects):
                continue
            # klp_patch: mod, objs, then states (v5.5+) and replace (v5.1+)
            states: list[KlpState] | None = None
            replace: bool | None
            if r.ptr(sec, off + 2 * w) is not None or release is None or release.at_least(5, 5):
                st = r.target(sec, off + 2 * w)
                states = _states(r, st, notes) if st is not None else []
                replace = r.word(sec, off + 3 * w, 1) != 0
                if release is None:
                    notes.append("no vermagic: klp_patch read with the v5.5+ layout")
            elif release.at_least(5, 1):
                replace = r.word(sec, off + 2 * w, 1) != 0
            else:
                replace = None
                notes.append(f"Linux {release} has no klp_patch.replace")
            name = _name_at(r, sec, off)
            out.append(KlpPatch("klp_patch", name, objects, states, replace, notes))
    return out


def _name_at(r: _Reader, sec: Section, off: int) -> str:
    sym = r.array_symbol(Location(sec, off))
    return sym.name if sym is not None else f"{sec.name}+{off:#x}"


def _kpatch(r: _Reader) -> list[KlpPatch]:
    elf = r.elf
    sec = elf.section_by_name(KPATCH_FUNCS)
    if sec is None:
        return []
    w = r.w
    notes: list[str] = []
    ptrs = r.ptrs(sec)
    # struct kpatch_patch_func { new_addr, new_size, old_addr, old_size, [sympos,] name,
    # objname }: three pointers per entry (new_addr, name, objname)
    n = len(ptrs) // 3
    stride = len(sec.data) // n if n and len(sec.data) % n == 0 and len(ptrs) % 3 == 0 else None
    if stride is not None and stride < 6 * w:
        # shorter than the four words and two pointers every kpatch_patch_func has
        # (a section's bytes fewer than its relocations, as only a broken file has)
        stride = None
    objects: dict[str, KlpObjectDecl] = {}
    if stride is None:
        notes.append(f"{KPATCH_FUNCS}: {len(ptrs)} pointers in {len(sec.data)} bytes "
                     "do not make whole kpatch_patch_func entries")  # fmt: skip
    else:
        for off in range(0, len(sec.data), stride):
            objname = r.string(sec, off + stride - w) or "vmlinux"
            sympos = r.word(sec, off + 4 * w) if stride >= 7 * w else 0
            f = KlpFunc(r.string(sec, off + stride - 2 * w), r.func(sec, off), sympos,
                        f"{sec.name}+{off:#x}")  # fmt: skip
            obj = objects.setdefault(
                objname, KlpObjectDecl(None if objname == "vmlinux" else objname, [], {}, "")
            )
            obj.funcs.append(f)
    for member in CALLBACKS:
        cb = elf.section_by_name(KPATCH_CALLBACKS + member)
        if cb is None:
            continue
        # struct kpatch_*_callback { callback, objname }
        for off in range(0, len(cb.data), 2 * w):
            fn = r.func(cb, off)
            objname = r.string(cb, off + w) or "vmlinux"
            obj = objects.setdefault(
                objname, KlpObjectDecl(None if objname == "vmlinux" else objname, [], {}, "")
            )
            if fn is not None:
                obj.callbacks[member] = fn.name
    notes.append("kpatch: replace is set by the patch hook at build time, not in the data")
    ordered = sorted(objects.values(), key=lambda o: (o.name is not None, o.objname))
    return [KlpPatch("kpatch", KPATCH_FUNCS, ordered, None, None, notes)]


def _points_into(r: _Reader, sec: Section, off: int, name: str) -> bool:
    at = r.target(sec, off)
    return at is not None and at.section.name == name


def _klp_build(r: _Reader) -> list[KlpPatch]:
    elf = r.elf
    w = r.w
    for objs_name, funcs_name in KLP_BUILD_SECTIONS:
        sec = elf.section_by_name(objs_name)
        if sec is None:
            continue
        notes: list[str] = []
        # struct klp_object_ext { name, funcs, callbacks (4 pointers + bool), nr_funcs }
        # (struct klp_callbacks is padded to its pointers' alignment: nr_funcs at 7 words)
        nr_at = 7 * w
        # the stride: the section's size over its entries, one funcs pointer each
        anchors = [o for o in r.ptrs(sec) if _points_into(r, sec, o, funcs_name)]
        stride = None
        if anchors and len(sec.data) % len(anchors) == 0:
            stride = len(sec.data) // len(anchors)
        objects: list[KlpObjectDecl] = []
        if stride is None:
            notes.append(f"{objs_name}: the klp_object_ext stride does not follow from "
                         f"{len(anchors)} funcs pointers in {len(sec.data)} bytes")  # fmt: skip
        else:
            for off in range(0, len(sec.data), stride):
                name = r.string(sec, off)
                nr = r.word(sec, off + nr_at, 4)
                funcs: list[KlpFunc] = []
                at = r.target(sec, off + w)
                if at is not None:
                    fsec = at.section
                    for k in range(nr):
                        o = at.offset + k * 3 * w
                        if o + 3 * w > len(fsec.data):
                            notes.append(f"{name or 'vmlinux'}: nr_funcs {nr} runs off "
                                         f"the end of {fsec.name}")  # fmt: skip
                            break
                        ext = KlpFunc(r.string(fsec, o), r.func(fsec, o + w),
                                      r.word(fsec, o + 2 * w), f"{fsec.name}+{o:#x}")  # fmt: skip
                        funcs.append(ext)
                objects.append(
                    KlpObjectDecl(
                        name, funcs, _callbacks(r, sec, off + 2 * w), f"{objs_name}+{off:#x}"
                    )
                )
        notes.append(
            "klp-build: replace is true unless the module was built with KLP_NO_REPLACE "
            "(scripts/livepatch/init.c), which the data does not show"
        )
        return [KlpPatch("klp-build", objs_name, objects, None, None, notes)]
    return []


def decode_patches(elf: ElfFile) -> list[KlpPatch]:
    """Every livepatch the module declares, in any of the three producer styles."""
    r = _Reader(elf)
    return _klp_build(r) + _kpatch(r) + _hand_written(r)
