"""The JSON schemas of klpelf's output, as TypedDicts: one set per schema of docs/json.md.

``klpelf.show/2`` (:class:`ShowJson`), ``klpelf.check/2`` (:class:`CheckJson`),
``klpelf.resolve/2`` (:class:`ResolveJson`) and ``klpelf.apply/2`` (:class:`ApplyJson`),
key for key as docs/json.md documents them (tests/unit/test_api.py compares the two).  A
schema only grows by new keys.

For the type checker: the verbs import this module under ``TYPE_CHECKING`` only, so
that a command does not pay for building these classes; at run time the JSON forms
are plain dicts (import this module to use the types at run time).
"""

from __future__ import annotations

from typing import Literal, TypedDict

from klpelf.klp.diagnostics import Severity, When

# --- klpelf.show/2 ---------------------------------------------------------------------


class ShowSymbolJson(TypedDict):
    index: int
    name: str
    objname: str | None
    symbol: str | None
    sympos: int | None
    bind: str
    type: str
    shndx: str
    error: str | None
    detail: str | None


class RelocJson(TypedDict):
    #: r_offset and r_addend as hex strings ("-0x4"), as every 64-bit value (show/2)
    offset: str
    type: str
    r_type: int
    symbol_index: int
    symbol: str
    addend: str | None


class SectionRefJson(TypedDict):
    index: int
    name: str


class RelaSectionJson(TypedDict):
    index: int
    name: str
    objname: str | None
    target: SectionRefJson | None
    flags: str
    sh_flags: str
    sh_type: int
    relocations: int
    error: str | None
    detail: str | None
    entries: list[RelocJson] | None


class ObjectJson(TypedDict):
    objname: str
    symbols: list[ShowSymbolJson]
    relocation_sections: list[RelaSectionJson]


class OddityJson(TypedDict):
    kind: str
    what: str
    note: str


class NewFuncJson(TypedDict):
    name: str
    size: str


class PatchFuncJson(TypedDict):
    old_name: str | None
    old_sympos: int
    new_func: NewFuncJson | None
    where: str


class PatchObjectJson(TypedDict):
    name: str | None
    objname: str
    funcs: list[PatchFuncJson]
    callbacks: dict[str, str]


class PatchStateJson(TypedDict):
    id: str
    version: int


class PatchJson(TypedDict):
    style: str
    where: str
    objects: list[PatchObjectJson]
    states: list[PatchStateJson] | None
    replace: bool | None
    notes: list[str]


class ShowModuleJson(TypedDict):
    path: str
    name: str
    #: it has .gnu.linkonce.this_module (struct module): a plain object has not
    is_module: bool
    machine: str
    elfclass: int
    byteorder: str
    vermagic: str | None
    livepatch: str | None
    signed: bool
    objects: list[ObjectJson]
    #: livepatch symbols and klp sections whose names the kernel would not parse
    unparsed_symbols: list[ShowSymbolJson]
    unparsed_sections: list[RelaSectionJson]
    oddities: list[OddityJson]
    #: what the module patches, decoded from its data (klp_patch, kpatch, klp-build)
    patches: list[PatchJson]


class ShowJson(TypedDict):
    """The whole output of ``klpelf show --json``."""

    schema: Literal["klpelf.show/2"]
    modules: list[ShowModuleJson]
    failed: list[FailedJson]


# --- klpelf.check/2 --------------------------------------------------------------------


class RefJson(TypedDict):
    """A section or a symbol: its index and name."""

    index: int
    name: str


class DiagnosticJson(TypedDict):
    severity: Severity
    rule: str
    message: str
    dmesg: str | None
    section: RefJson | None
    symbol: RefJson | None
    relocation: int | None
    when: When
    kernel: bool
    errno: int | None


class CheckResultJson(TypedDict):
    path: str
    #: the module name (``module`` in klpelf.check/1; ``name`` as in show and resolve)
    name: str
    kernel_release: str
    release_source: str
    verdict: Literal["accept", "refuse"]
    kernel_message: str | None
    errno: int | None
    #: the module's vermagic, null without one
    vermagic: str | None
    #: how the release judged (or the target's full release) differs from the vermagic's
    release_mismatch: str | None
    errors: int
    warnings: int
    diagnostics: list[DiagnosticJson]


class FailedJson(TypedDict):
    """A MODULE argument that could not be read: every schema's ``failed`` list."""

    path: str
    error: str


class CheckJson(TypedDict):
    """The whole output of ``klpelf check --json``."""

    schema: Literal["klpelf.check/2"]
    modules: list[CheckResultJson]
    failed: list[FailedJson]


# --- klpelf.resolve/2 ------------------------------------------------------------------


class CandidateJson(TypedDict):
    position: int | None
    coming_position: int | None
    #: a hex string ("0xffffffff81000000"): JSON numbers above 2**53 are rounded by jq
    address: str | None
    type: str
    section: str | None
    offset: int | None
    source_file: str | None
    chosen: bool
    coming_chosen: bool


class ResolveSymbolJson(TypedDict):
    index: int
    #: the full .klp.sym. name, and the parsed symbol name, as in show (swapped in /1)
    name: str
    objname: str | None
    symbol: str | None
    sympos: int | None
    ok: bool
    not_loaded: bool
    address: str | None
    error: str | None
    note: str | None
    coming_differs: bool
    coming_ok: bool | None
    coming_error: str | None
    source: str | None
    candidates: list[CandidateJson]


Verdict = Literal["ok", "fail", "no-verdict"]


class ResolveModuleJson(TypedDict):
    path: str
    name: str
    vermagic: str | None
    release_mismatch: str | None
    #: the sources do not say which release they are, so it could not be compared
    release_note: str | None
    verdict: Verdict
    symbols: list[ResolveSymbolJson]


class KernelJson(TypedDict):
    description: str
    release: str | None
    running: bool


class ResolveJson(TypedDict):
    """The whole output of ``klpelf resolve --json``."""

    schema: Literal["klpelf.resolve/2"]
    kernel: KernelJson
    modules: list[ResolveModuleJson]
    failed: list[FailedJson]


# --- klpelf.apply/2 ----------------------------------------------------------------------


class PlacedSectionJson(TypedDict):
    index: int
    name: str
    region: str
    offset: int
    size: int
    #: hex strings from apply/2 on, as every address
    address: str


class WriteJson(TypedDict):
    object: str
    rela_section: str
    entry: int
    section: str
    offset: int
    type: str
    symbol: str
    value: str | None
    address: str


class RefusalJson(TypedDict):
    object: str
    rela_section: str
    entry: int
    rule: str
    message: str


class HazardJson(TypedDict):
    object: str
    rela_section: str
    entry: int
    rule: str
    message: str


class ApplyModuleJson(TypedDict):
    path: str
    name: str
    machine: str
    kernel_release: str
    sections: list[PlacedSectionJson]
    writes: list[WriteJson]
    refusals: list[RefusalJson]
    hazards: list[HazardJson]
    skipped_objects: list[str]
    addresses_assumed: bool


class ApplyJson(TypedDict):
    """The whole output of ``klpelf apply --json``."""

    schema: Literal["klpelf.apply/2"]
    modules: list[ApplyModuleJson]
    failed: list[FailedJson]


# --- klpelf.diff/1 -----------------------------------------------------------------------


class DiffItemJson(TypedDict):
    name: str
    why: str


class RenamedJson(TypedDict):
    orig: str
    patched: str


class DiffReferenceJson(TypedDict):
    name: str
    symbol: str
    kind: Literal["exported", "klp"]
    note: str | None


class DiffExternJson(TypedDict):
    name: str
    symbol: str


class DiffKlpFuncJson(TypedDict):
    old_name: str
    sympos: int
    symbol: str


class DiffJson(TypedDict):
    """The whole output of ``klpelf diff --json``."""

    schema: Literal["klpelf.diff/1"]
    orig: str
    patched: str
    output: str | None
    object: str
    functions: list[DiffItemJson]
    data: list[DiffItemJson]
    line_only: list[str]
    removed: list[str]
    renamed: list[RenamedJson]
    references: list[DiffReferenceJson]
    externs: list[DiffExternJson]
    entries: dict[str, int]
    notes: list[str]
    refusals: list[str]
    klp_funcs: list[DiffKlpFuncJson]
    module_dir: str | None


class BuildUnitJson(TypedDict):
    """One unit the fix touches: the .c file in the tree and its diff."""

    file: str
    diff: DiffJson


class BuildJson(TypedDict):
    """The whole output of ``klpelf build --json``."""

    schema: Literal["klpelf.build/1"]
    fix: str
    output: str | None
    name: str
    units: list[BuildUnitJson]
    check: CheckResultJson | None
