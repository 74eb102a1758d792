"""The cases run in the VM, the guest script that runs them, and what they brought back.

A case is a short list of steps (load a module, unload one, read a file, save
/proc/kallsyms), run in order in one boot with the kernel log cleared before and
saved after; its *verdict* is the errno of one designated step (0: loaded).  The
other steps set the stage and must succeed unless marked otherwise.

Cases run in the order of :data:`CASES`, sharing one kernel: the state they leave is
part of the design (``modsec_vmlinux_sym`` and ``sym_long_name`` need ``klpt_target``
loaded by ``late_module_patch``; ``reload_target`` unloads it; ``sec_not_flagged``
oopses the kernel and runs last).  Every variant has its own module name, so a variant that a
kernel accepts does not make later loads fail.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

EXPECTED_DIR = Path(__file__).resolve().parent.parent / "expected"


@dataclass(frozen=True)
class Step:
    #: "load" (module name), "unload" (module name), "read" (path), "kallsyms" (-),
    #: "disable" (livepatch module name: disable the patch, wait until it is freed),
    #: "sections" (module name: its section addresses and bytes, :func:`sections`),
    #: "ftrace" (-: save available_filter_functions), "list" (livepatch module name:
    #: its /sys/kernel/livepatch/<name>/<object>/<function,sympos> directories),
    #: "patches" (-: the livepatches in /sys/kernel/livepatch)
    op: str
    arg: str = ""
    #: a non-verdict step that may fail without making the case's setup invalid
    may_fail: bool = False
    #: a step after the verdict that must succeed when the verdict step did (the kernel
    #: loaded the module) and may fail when it did not (some kernels refuse it)
    after_accept: bool = False


def load(mod: str) -> Step:
    return Step("load", mod)


def unload(mod: str, *, after_accept: bool = False) -> Step:
    return Step("unload", mod, after_accept=after_accept)


def read(path: str, *, may_fail: bool = False, after_accept: bool = False) -> Step:
    return Step("read", path, may_fail, after_accept)


def disable(mod: str, *, after_accept: bool = False) -> Step:
    return Step("disable", mod, after_accept=after_accept)


def sections(mod: str) -> Step:
    """Save module ``mod``'s section addresses (/sys/module/<mod>/sections/) and the
    bytes there now (/proc/kcore): what the kernel wrote, for ``klpelf apply``."""
    return Step("sections", mod)


KALLSYMS = Step("kallsyms")
FTRACE = Step("ftrace")


def list_patch(mod: str) -> Step:
    """The ``<object>/<function,sympos>`` directories of livepatch ``mod`` in sysfs."""
    return Step("list", mod)


@dataclass(frozen=True)
class Case:
    name: str
    doc: str
    steps: tuple[Step, ...]
    #: index of the step whose errno is the verdict
    verdict: int
    #: the module `klpelf check` judges for the agreement test (None: not applicable)
    module: str | None
    #: the verdict `klpelf check` must give, when it is not the kernel's load verdict
    check_verdict: str | None = None
    #: the verdict is not ``module``'s load but a later event that `klpelf check`
    #: predicts with a diagnostic of this rule on ``module`` (present: refused)
    check_rule: str | None = None
    #: take /proc/kallsyms from this case's snapshot for `klpelf check --kernel`
    #: (default: the one /init saved before any module was loaded)
    kallsyms_from: str | None = None
    #: give `klpelf check` this case's available_filter_functions too (an ftrace step)
    ftrace_from: str | None = None
    #: the livepatch modules enabled when the case runs that `klpelf check --loaded`
    #: must know (their states)
    loaded: tuple[str, ...] = ()


def _negative(name: str, doc: str, *, kallsyms_from: str | None = None) -> Case:
    mod = f"klpt_{name}"
    return Case(name, doc, (load(mod),), 0, mod, kallsyms_from=kallsyms_from)


def _enable(name: str, doc: str, loaded: tuple[str, ...] = ()) -> Case:
    # a klpt_objs variant, judged with klpt_dup loaded (two_objects' snapshots)
    mod = f"klpt_e_{name}"
    return Case(f"enable_{name}", doc, (load(mod), read(CMDLINE, after_accept=True)), 0, mod,
                kallsyms_from="two_objects", ftrace_from="two_objects", loaded=loaded)  # fmt: skip


CMDLINE = "/proc/cmdline"
IDLE_PARAM = "/sys/module/intel_idle/parameters/max_cstate"
#: mode 0 (not in sysfs) before Linux 5.12; the boot parameter is the reference then
ACPI_PARAM = "/sys/module/processor/parameters/max_cstate"
#: boot parameters: distinct values for the two max_cstate variables (sympos 1 and 2)
BOOT_CMDLINE = "loglevel=4 intel_idle.max_cstate=3 processor.max_cstate=5"
TARGET_PROC = "/proc/klpt_target"
DUP_PROC = "/proc/klpt_dup"

CASES: tuple[Case, ...] = (
    Case(
        "vmlinux_patch",
        "(a)+(c) livepatch of cmdline_proc_show reading saved_command_line,0, total_forks,0, "
        "max_cstate,1 and max_cstate,2 through klp relocations",
        (
            read(CMDLINE),
            load("klpt_vmlinux"),
            read(CMDLINE),
            read(IDLE_PARAM),
            read(ACPI_PARAM, may_fail=True),
            sections("klpt_vmlinux"),
        ),
        1,
        "klpt_vmlinux",
    ),
    Case(
        "late_module_patch",
        "(b) livepatch of klpt_target loaded BEFORE it; its .klp.rela.klpt_target.text is "
        "applied when klpt_target loads",
        (
            load("klpt_late"),
            load("klpt_target"),
            read(TARGET_PROC),
            KALLSYMS,
            sections("klpt_late"),
        ),
        1,
        "klpt_late",
    ),
    Case(
        "ok_sympos1_unique",
        "accepted: sympos 1 for a unique symbol",
        (load("klpt_ok_sympos1_unique"), read(CMDLINE)),
        0,
        "klpt_ok_sympos1_unique",
    ),
    Case(
        "ok_sec_suffix",
        "accepted: the section suffix after .klp.rela.vmlinux. is never checked",
        (load("klpt_ok_sec_suffix"), read(CMDLINE)),
        0,
        "klpt_ok_sec_suffix",
    ),
    Case(
        "ok_modinfo_n",
        "accepted: livepatch=N (only the key is checked)",
        (load("klpt_ok_modinfo_n"), read(CMDLINE)),
        0,
        "klpt_ok_modinfo_n",
    ),
    Case(
        "ok_klp_sec_rel",
        "accepted: a klp section typed SHT_REL is applied as Elf_Rela (the flag decides)",
        (load("klpt_ok_klp_sec_rel"), read(CMDLINE)),
        0,
        "klpt_ok_klp_sec_rel",
    ),
    Case(
        "auto_convert",
        "klpelf convert in automatic mode (--kernel <the VM's kallsyms> --symvers "
        "<Module.symvers> --sympos vmlinux:max_cstate=1): plain externs of non-exported "
        "total_forks, nr_threads and max_cstate become klp symbols; the patched "
        "cmdline_proc_show reads them",
        (load("klpt_auto"), read(CMDLINE), read(IDLE_PARAM)),
        0,
        "klpt_auto",
    ),
    _negative("flag_on_ordinary_rela", "SHF_RELA_LIVEPATCH on .rela.text"),
    _negative("sym_not_livepatch", "non-SHN_LIVEPATCH symbol (seq_printf) in a klp section"),
    _negative("sym_unknown", "klp symbol not in vmlinux"),
    _negative("sym_ambiguous", "ambiguous name (max_cstate x2) with sympos 0"),
    _negative("sympos_past_last", "sympos 3 of 2 matches"),
    _negative("sym_no_sympos", "klp symbol name without ,sympos"),
    _negative("sec_bad_name", "klp section .klp.rela..text (empty objname)"),
    _negative(
        "modsec_vmlinux_sym",
        "module-specific klp section references a vmlinux symbol (target already loaded)",
        kallsyms_from="late_module_patch",
    ),
    Case(
        "sym_long_name",
        "klp symbol (module-specific section, klpt_target loaded) naming a 134-byte symbol: "
        "beyond the 127 bytes livepatch parsed before Linux 6.1.  When loaded, the patch "
        "is read, disabled and removed again",
        (
            load("klpt_sym_long_name"),
            read(TARGET_PROC, after_accept=True),
            disable("klpt_sym_long_name", after_accept=True),
            unload("klpt_sym_long_name", after_accept=True),
        ),
        0,
        "klpt_sym_long_name",
        kallsyms_from="late_module_patch",
    ),
    _negative("reloc_twice", "the same location relocated twice"),
    _negative("target_nonzero", "nonzero bytes at a klp relocation target"),
    _negative("no_livepatch_modinfo", "no livepatch modinfo"),
    _negative("sym_undef", "klp symbol left SHN_UNDEF"),
    _negative("two_symtabs", "a second SHT_SYMTAB section"),
    _negative("unknown_rela_type", "ordinary relocation of a type x86_64 does not handle"),
    _negative("klp_overflow", "klp relocation R_X86_64_32 of a kernel address (overflow)"),
    _negative("not_et_rel", "e_type ET_DYN"),
    _negative("unknown_export", "an ordinary undefined symbol nothing exports"),
    _negative("crc_mismatch", "seq_printf's CRC in __versions is not the kernel's"),
    _negative("vermagic_flags", "the vermagic without mod_unload"),
    _negative("vermagic_release", "the vermagic's release word is another release"),
    _negative("plain_object", "a plain object file (klpt_target.o, before modpost)"),
    Case(
        "reload_target",
        "unload the late-patched klpt_target (klpt_late stays) and load it again; when "
        "loaded, it must be patched again",
        (unload("klpt_target"), load("klpt_target"), read(TARGET_PROC, after_accept=True)),
        1,
        "klpt_late",
        check_rule="target-reload-refused",
        kallsyms_from="late_module_patch",
    ),
    Case(
        "two_objects",
        "livepatch of vmlinux (cmdline_proc_show) and of klpt_dup (its second static "
        "klpt_dup_fn, old_sympos 2), with callbacks, a shadow variable and a state; "
        "klpt_dup loaded first.  sysfs lists each object's <function,sympos>",
        (
            load("klpt_dup"),
            KALLSYMS,
            FTRACE,
            load("klpt_objs"),
            list_patch("klpt_objs"),
            read(CMDLINE),
            read(DUP_PROC),
        ),
        3,
        "klpt_objs",
        kallsyms_from="two_objects",
        ftrace_from="two_objects",
    ),
    _enable("noexist", "the vmlinux object replaces cmdline_proc_shw, which vmlinux lacks"),
    _enable("sympos", "klpt_dup_fn with old_sympos 3: klpt_dup has two"),
    _enable("ambiguous", "klpt_dup_fn with old_sympos 0: klpt_dup has two"),
    _enable("notrace", "klpt_dup_cold, notrace: no ftrace location"),
    _enable(
        "undeclared",
        "a .klp.rela.klpt_dup.rodata section in a patch that declares only vmlinux: loads; "
        "the pointer it should write stays NULL (the new cmdline_proc_show says so)",
    ),
    _enable(
        "states",
        "an atomic-replace patch without klpt_objs' state (klpt_objs loaded): "
        "klp_is_patch_compatible() refuses it",
        loaded=("klpt_objs", "klpt_e_undeclared"),
    ),
    Case(
        "enable_replace",
        "an atomic-replace patch with klpt_objs' state at version 2: replaces every "
        "livepatch loaded (/sys/kernel/livepatch then lists it alone)",
        (load("klpt_e_replace"), read(CMDLINE), Step("patches")),
        0,
        "klpt_e_replace",
        kallsyms_from="two_objects",
        ftrace_from="two_objects",
        loaded=("klpt_objs", "klpt_e_undeclared"),
    ),
    Case(
        "sec_not_flagged",
        "klp section without SHF_RELA_LIVEPATCH: the loader applies it against address 0; "
        "reading /proc/cmdline then oopses.  LAST: it leaves the kernel oopsed.",
        (load("klpt_sec_not_flagged"), read(CMDLINE, may_fail=True)),
        0,
        "klpt_sec_not_flagged",
        # the kernel loads it; whether `klpelf check` must refuse it is the check's design
        # decision (an accept prediction with a warning would be the literal kernel verdict)
        check_verdict=None,
    ),
)

CASES_BY_NAME = {c.name: c for c in CASES}


# --- the guest script ---------------------------------------------------------------------

GUEST_LIB = r"""
say() { echo "KLPT: $*" > /dev/console; }
wait_transitions() {
    i=0
    while [ $i -lt 150 ]; do
        busy=0
        for t in /sys/kernel/livepatch/*/transition; do
            [ -f "$t" ] && [ "$(cat "$t")" != 0 ] && busy=1
        done
        [ $busy = 0 ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    echo "a livepatch transition did not finish in 15 s" >> "$D/notes"
}
case_begin() {
    C=$1; D=/out/cases/$1; N=0
    mkdir -p "$D"
    dmesg -c >> /out/dmesg.between
    say "case $C"
}
record() { echo "$N $1 $2 $3" >> "$D/steps"; N=$((N + 1)); }
step_load() { /bin/klpt_mod load "/klpt/mods/$1.ko" 2>> "$D/stderr"; record load "$1" $?; }
step_unload() { /bin/klpt_mod unload "$1" 2>> "$D/stderr"; record unload "$1" $?; }
step_read() {
    # a file, never a pipe: a reader that oopses must not hang its writer
    timeout 20 cat "$1" > "$D/read$N.out" 2> "$D/read$N.err"
    record read "$1" $?
}
step_kallsyms() { cat /proc/kallsyms > "$D/kallsyms"; record kallsyms - $?; }
step_ftrace() {
    t=/sys/kernel/tracing
    [ -f $t/available_filter_functions ] || mount -t tracefs nodev $t 2>> "$D/stderr"
    cat $t/available_filter_functions > "$D/ftrace"; record ftrace - $?
}
step_list() {
    # one "object/function,sympos" line per klp_func directory
    rc=2
    for f in /sys/kernel/livepatch/$1/*/*,*; do
        [ -d "$f" ] || continue
        rc=0; o=${f%/*}; echo "${o##*/}/${f##*/}" >> "$D/read$N.out"
    done
    record list "$1" $rc
}
step_patches() {
    for p in /sys/kernel/livepatch/*; do
        [ -d "$p" ] && echo "${p##*/}" >> "$D/read$N.out"
    done
    touch "$D/read$N.out"; record patches - 0
}
step_sections() {
    # each section's address (sysfs, kptr_restrict lifted) and its bytes (/proc/kcore)
    S="$D/sections$N"; mkdir -p "$S"; rc=0
    while read -r name size; do
        addr=$(cat "/sys/module/$1/sections/$name") || { rc=2; continue; }
        echo "$name $addr" >> "$S/addresses"
        /bin/klpt_mod peek "$addr" "$size" > "$S/$name.bin" 2>> "$D/stderr" || rc=$?
    done < "/klpt/mods/$1.sections"
    record sections "$1" $rc
}
step_disable() {
    # disable the patch, then wait until it is freed and its module unreferenced
    p=/sys/kernel/livepatch/$1
    if [ -f "$p/enabled" ]; then echo 0 > "$p/enabled"; rc=$?; else rc=2; fi
    i=0
    while [ $rc = 0 ] && [ $i -lt 150 ]; do
        [ ! -d "$p" ] && [ "$(cat /sys/module/$1/refcnt 2>/dev/null)" = 0 ] && break
        sleep 0.1
        i=$((i + 1))
    done
    [ $rc = 0 ] && [ $i -ge 150 ] && rc=16
    record disable "$1" $rc
}
case_end() {
    wait_transitions
    dmesg -c > "$D/dmesg"
    cat "$D/dmesg" >> /out/dmesg.cases
    say "case $C: $(tr '\n' ';' < "$D/steps")"
}
"""


def guest_script(cases: list[Case]) -> str:
    """The shell script (busybox sh) that runs ``cases`` in order."""
    lines = [GUEST_LIB]
    for case in cases:
        lines.append(f"case_begin {case.name}")
        for step in case.steps:
            arg = f" {_sh_quote(step.arg)}" if step.arg else ""
            lines.append(f"step_{step.op}{arg}")
        lines.append("case_end")
    lines.append('say "all cases done"')
    return "\n".join(lines) + "\n"


def _sh_quote(s: str) -> str:
    if re.fullmatch(r"[\w./,=+-]+", s):
        return s
    return "'" + s.replace("'", "'\\''") + "'"


def modules_needed(cases: list[Case]) -> list[str]:
    return sorted({s.arg for c in cases for s in c.steps if s.op == "load"})


def section_lists(cases: list[Case], modules: dict[str, Path]) -> dict[str, bytes]:
    """The files a ``sections`` step reads: ``mods/<mod>.sections``, one "name size"
    line per core section the module loader allocates (klpelf.klp.layout; the init
    ones are freed once the module's init returns).  A NOBITS section holds zeros
    that no relocation writes, and is left out (arm64's 126 MiB padding), unless the
    loader resized it (arm64's .plt, where module_emit_plt_entry() writes)."""
    from klpelf.elf.constants import SHT
    from klpelf.elf.reader import open_elf
    from klpelf.klp.layout import place

    out = {}
    for mod in sorted({s.arg for c in cases for s in c.steps if s.op == "sections"}):
        elf = open_elf(modules[mod])
        placed = place(elf)
        zeros = {s.index: s.sh_size for s in elf.sections if s.sh_type == SHT.NOBITS}
        lines = [f"{p.name} {p.size}\n" for p in placed
                 if p.size and not p.region.startswith("init")
                 and zeros.get(p.index) != p.size]  # fmt: skip
        out[f"mods/{mod}.sections"] = "".join(lines).encode()
    return out


# --- results --------------------------------------------------------------------------------


@dataclass
class StepResult:
    op: str
    arg: str
    rc: int
    #: what a "read" step read (None for the others)
    output: str | None = None


@dataclass
class CaseResult:
    case: Case
    steps: list[StepResult]
    #: the kernel log of the case, timestamps stripped
    dmesg: list[str]
    notes: str = ""
    directory: Path | None = None

    @property
    def ran(self) -> bool:
        return len(self.steps) == len(self.case.steps)

    @property
    def errno(self) -> int | None:
        return self.steps[self.case.verdict].rc if self.ran else None

    @property
    def messages(self) -> list[str]:
        return relevant_messages(self.dmesg)

    def setup_failures(self) -> list[str]:
        """The non-verdict steps that failed (they must not)."""
        out = []
        accepted = self.errno == 0
        for i, (step, res) in enumerate(zip(self.case.steps, self.steps, strict=False)):
            if step.after_accept and not accepted:
                continue
            if i != self.case.verdict and not step.may_fail and res.rc != 0:
                out.append(f"step {i} ({res.op} {res.arg}) returned {res.rc}")
        return out

    def output(self, index: int) -> str:
        out = self.steps[index].output
        assert out is not None, f"step {index} of {self.case.name} is not a read"
        return out


_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\] ?")


def parse_case(case: Case, directory: Path) -> CaseResult:
    steps: list[StepResult] = []
    steps_file = directory / "steps"
    lines = steps_file.read_text().splitlines() if steps_file.exists() else []
    for line in lines:
        idx, op, arg, rc = line.split(" ", 3)
        out = None
        if op in ("read", "list", "patches"):
            f = directory / f"read{idx}.out"
            out = f.read_text(errors="replace") if f.exists() else ""
        steps.append(StepResult(op, arg, int(rc), out))
    dm = directory / "dmesg"
    dmesg = [_TIMESTAMP.sub("", x) for x in dm.read_text(errors="replace").splitlines()] if (
        dm.exists()
    ) else []  # fmt: skip
    notes = (directory / "notes").read_text() if (directory / "notes").exists() else ""
    return CaseResult(case, steps, dmesg, notes, directory)


# --- kernel messages --------------------------------------------------------------------------

#: once-per-boot notices whose case depends only on the order of the cases
NOISE = (
    "loading out-of-tree module taints kernel.",
    "module verification failed: signature and/or required key missing - tainting kernel",
    "tainting kernel with TAINT_LIVEPATCH",
)
_RELEVANT = re.compile(
    r"^(livepatch: |klpt_\w+: |module: |x86/modules: |BUG: |Oops: |WARNING: |"
    r"general protection fault|Kernel panic|Invalid ELF |ELF Spec violation|"
    r"module \(missing |\(missing \.modinfo )"
)
#: %p prints a hashed pointer (16 hex digits), or "(____ptrval____)" while the hashing
#: key is not ready yet (early, or under qemu without an entropy source)
_LOC = re.compile(r"\bloc (?:[0-9a-f]{8,16}\b|\(____ptrval____\))")
#: an address in the x86_64 module area (0xffffffffc0000000 up): where modules land
#: depends on what was loaded before, so it is not pinned
_MODULE_ADDRESS = re.compile(r"\bffffffff[c-e][0-9a-f]{7}\b")


def normalize(line: str) -> str:
    """Hashed pointers become ``<ptr>``, module-area addresses ``<module address>``."""
    line = _LOC.sub("loc <ptr>", line)
    return _MODULE_ADDRESS.sub("<module address>", line)


def relevant_messages(dmesg: list[str]) -> list[str]:
    """The lines the expected data pins: livepatch, module loader, x86 relocation, oops."""
    out = []
    for line in dmesg:
        if any(n in line for n in NOISE):
            continue
        if _RELEVANT.match(line):
            out.append(normalize(line.strip()))
    return out


#: the value x86 relocation messages print: an address (S+A, or S+A-P since 6.3) that
#: moves with every Debian ABI bump, so the expected data does not pin it (the
#: agreement test with `klpelf check` compares it exactly)
_VAL = re.compile(r"\bval (?:[0-9a-f]+\b|<module address>)")


#: a kernel release in an expected line: the host's 6.1 moves with Debian's ABI bumps
#: (its vermagic is in the vermagic_flags message)
_RELEASE = r"\d+\.\d+[\w.+~-]*"


def message_pattern(expected: str) -> re.Pattern[str]:
    """An expected line as a regex: ``<hex>`` matches any hex number (or a normalized
    module address), ``<release>`` a kernel release, the rest literally."""
    parts = [
        _RELEASE.join(re.escape(q) for q in p.split("<release>")) for p in expected.split("<hex>")
    ]
    return re.compile("(?:[0-9a-f]+|<module address>)".join(parts))


def messages_match(expected: list[str], observed: list[str]) -> bool:
    return len(expected) == len(observed) and all(
        message_pattern(e).fullmatch(o) for e, o in zip(expected, observed, strict=True)
    )


# --- expected verdicts -----------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    errno: int
    messages: list[str]
    #: the file it came from (for the failure message)
    source: str = field(default="", compare=False)


def _read_expected(path: Path) -> dict[str, Expected]:
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {
        k: Expected(int(v["errno"]), list(v["messages"]), path.name)
        for k, v in raw.items()
        if not k.startswith("_")
    }


def expected_for(series: str) -> dict[str, Expected]:
    """``expected/common.json`` overlaid with ``expected/<series>.json``."""
    out = _read_expected(EXPECTED_DIR / "common.json")
    out.update(_read_expected(EXPECTED_DIR / f"{series}.json"))
    return out


def observed_expectation(r: CaseResult) -> Expected:
    """What ``r`` observed, in the form of the expected data (``val`` as ``<hex>``)."""
    assert r.errno is not None
    return Expected(r.errno, [_VAL.sub("val <hex>", m) for m in r.messages])


def _dump(path: Path, doc_text: str, entries: dict[str, Expected]) -> None:
    doc: dict[str, object] = {"_doc": doc_text}
    for name, e in entries.items():
        doc[name] = {"errno": e.errno, "messages": e.messages}
    path.write_text(json.dumps(doc, indent=2) + "\n")


_COMMON_DOC = (
    "The baseline of the kernel matrix ({series}; tests/kernel/klpvm/debian.py), observed by "
    "this harness: for each case, what most of these kernels did (on a tie, the newest's).  "
    "case -> finit_module errno of the verdict step (0: loaded) and the kernel's relevant "
    "messages (tests/kernel/klpvm/cases.py: relevant_messages; <ptr> is a hashed pointer, "
    "<hex> any hex number).  expected/<series>.json lists where a kernel differs."
)
_SERIES_DOC = (
    "Where Linux {series} differs from common.json (the matrix's baseline), as observed: "
    "case -> finit_module errno of the verdict step (0: loaded) and the kernel's relevant "
    "messages (tests/kernel/klpvm/cases.py: relevant_messages; <ptr> is a hashed pointer, "
    "<hex> any hex number)."
)


def write_expected_matrix(results: dict[str, list[CaseResult]]) -> list[Path]:
    """Rewrite ``common.json`` and every ``<series>.json`` from a run of the whole matrix
    (``results``: series -> case results, oldest series first).

    common.json gets, for each case, the observation most series share (on a tie, the
    newest series'); each series' file gets the cases where it differs from that.
    """
    observed = {
        series: {r.case.name: observed_expectation(r) for r in rs if r.errno is not None}
        for series, rs in results.items()
    }
    common: dict[str, Expected] = {}
    for case in CASES:
        seen = [obs[case.name] for obs in observed.values() if case.name in obs]
        if seen:
            # max() keeps the first of equal counts: walk newest first
            common[case.name] = max(reversed(seen), key=seen.count)
    paths = [EXPECTED_DIR / "common.json"]
    _dump(paths[0], _COMMON_DOC.format(series=", ".join(results)), common)
    for series, obs in observed.items():
        path = EXPECTED_DIR / f"{series}.json"
        mine = {n: e for n, e in obs.items() if common.get(n) != e}
        _dump(path, _SERIES_DOC.format(series=series), mine)
        paths.append(path)
    return paths


def write_expected(series: str, results: list[CaseResult]) -> Path:
    """Record the observed verdicts in ``expected/<series>.json``: every case whose
    observation differs from ``common.json`` (the rest stays shared)."""
    common = _read_expected(EXPECTED_DIR / "common.json")
    path = EXPECTED_DIR / f"{series}.json"
    doc: dict[str, object] = {
        "_doc": f"Observed on Linux {series}: case -> finit_module errno of the verdict step "
        "(0: loaded) and the kernel's relevant messages (tests/kernel/klpvm/cases.py: "
        "relevant_messages; <ptr> is a hashed pointer, <hex> any hex number).  Cases equal "
        "on every kernel seen are in common.json.",
    }
    for r in results:
        if r.errno is None:
            continue
        mine = observed_expectation(r)
        c = common.get(r.case.name)
        if c is not None and c.errno == mine.errno and messages_match(c.messages, mine.messages):
            continue
        doc[r.case.name] = {"errno": mine.errno, "messages": mine.messages}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
