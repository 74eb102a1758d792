"""The harness's own pieces, without a VM: initramfs archive, messages, mutations, script."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from kernel.klpvm import cases, lanes, suite
from kernel.klpvm.build import auto_options
from kernel.klpvm.cases import (
    CASES,
    CASES_BY_NAME,
    CaseResult,
    StepResult,
    guest_script,
    message_pattern,
    messages_match,
    relevant_messages,
    write_expected_matrix,
)
from kernel.klpvm.cpio import Entry, with_parents, write_newc
from kernel.klpvm.debian import (
    MATRIX,
    PrepareError,
    _control_fields,
    _depends,
    chroot_command,
    default_kernels,
    matrix_kernel,
    series_of,
)
from kernel.klpvm.matrix import MatrixReport
from kernel.klpvm.mutate import LONG_NAME, MUTATIONS, make_variant
from kernel.klpvm.vm import BootResult, KernelSpec
from kernel.test_check_agreement import matches_kernel, quotes_kernel
from klpelf.elf.constants import SHF, SHN
from klpelf.elf.reader import open_elf
from klpelf.release import KernelRelease
from toolchain import readelf

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "klp_sample" / "klp_sample_lp.ko"


def _read_newc(data: bytes) -> list[tuple[str, int, bytes]]:
    out: list[tuple[str, int, bytes]] = []
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        body = data[pos : pos + size]
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out.append((name, mode, body))


def test_newc_archive() -> None:
    entries = with_parents(
        [
            Entry("bin/busybox", b"\x7fELF...", 0o755),
            Entry("bin/sh", symlink="busybox"),
            Entry("klpt/mods/a.ko", b"abc"),
            Entry("proc", None),
        ]
    )
    back = _read_newc(write_newc(entries))
    names = [n for n, _, _ in back]
    assert names == ["bin", "bin/busybox", "bin/sh", "klpt", "klpt/mods", "klpt/mods/a.ko", "proc"]
    by = {n: (m, b) for n, m, b in back}
    assert stat.S_ISDIR(by["klpt/mods"][0])
    assert stat.S_ISLNK(by["bin/sh"][0]) and by["bin/sh"][1] == b"busybox"
    assert by["bin/busybox"] == (stat.S_IFREG | 0o755, b"\x7fELF...")


def test_relevant_messages_and_patterns() -> None:
    dmesg = [
        "klpt_a: loading out-of-tree module taints kernel.",
        "livepatch: symbol 'x' not found in symbol table",
        "virtio_blk virtio0: [vda] 524288 512-byte logical blocks",
        "module: x86/modules: Skipping invalid relocation target, existing value is nonzero "
        "for type 2, loc 00000000deadbeef, val ffffffffc023f3bc",
        "module: x86/modules: Skipping invalid relocation target, existing value is nonzero "
        "for type 2, loc (____ptrval____), val ffffffff83317004",
    ]
    got = relevant_messages(dmesg)
    assert got == [
        "livepatch: symbol 'x' not found in symbol table",
        "module: x86/modules: Skipping invalid relocation target, existing value is nonzero "
        "for type 2, loc <ptr>, val <module address>",
        "module: x86/modules: Skipping invalid relocation target, existing value is nonzero "
        "for type 2, loc <ptr>, val ffffffff83317004",
    ]
    expected = [
        got[0],
        got[1].replace("<module address>", "<hex>"),
        got[2].replace("ff", "<hex>", 1),
    ]
    assert not message_pattern(expected[2]).fullmatch(got[1])
    assert messages_match([got[0], *expected[1:]], got)
    assert not messages_match(got[:2], got)


def test_loader_messages_and_release_pattern() -> None:
    # the module loader's lines without a module name (a plain object) are relevant;
    # <release> stands for a kernel release (the host's 6.1 moves with Debian's bumps)
    dmesg = [
        "(missing .modinfo section or name field): No module found in object",
        "module (missing .modinfo section or name field): Exactly one "
        ".gnu.linkonce.this_module section must exist.",
        "klpt_v: version magic '6.1.0-57-amd64 SMP modversions ' should be "
        "'6.1.0-57-amd64 SMP mod_unload modversions '",
    ]
    assert relevant_messages(dmesg) == dmesg
    pat = message_pattern("klpt_v: version magic '<release> SMP modversions ' should be "
                          "'<release> SMP mod_unload modversions '")  # fmt: skip
    assert pat.fullmatch(dmesg[2])
    assert not pat.fullmatch(dmesg[2].replace("SMP mod_unload", "SMP"))


def test_check_message_matching() -> None:
    kernel = relevant_messages(
        [
            "livepatch: symbol seq_printf is not marked as a livepatch symbol",
            "module: x86/modules: Skipping invalid relocation target, existing value is "
            "nonzero for type 2, loc 00000000deadbeef, val ffffffff83317004",
            "klpt_sym_undef: Unknown symbol .klp.sym.vmlinux.total_forks,0 (err -2)",
        ]
    )
    assert matches_kernel("symbol seq_printf is not marked as a livepatch symbol", kernel)
    assert matches_kernel(
        "x86/modules: Skipping invalid relocation target, existing value is nonzero for "
        "type 2, loc <loc>, val <val>",
        kernel,
    )
    assert matches_kernel(
        "x86/modules: Skipping invalid relocation target, existing value is nonzero for "
        "type 2, loc <loc>, val ffffffff83317004",
        kernel,
    )
    assert not matches_kernel(
        "x86/modules: Skipping invalid relocation target, existing value is nonzero for "
        "type 2, loc <loc>, val ffffffff83317000",
        kernel,
    )
    assert matches_kernel("Unknown symbol .klp.sym.vmlinux.total_forks,0 (err -2)", kernel)
    assert not matches_kernel("symbol seq_puts is not marked as a livepatch symbol", kernel)


def test_guest_script_runs_every_step() -> None:
    script = guest_script(list(CASES))
    for case in CASES:
        assert f"case_begin {case.name}\n" in script
    assert script.count("step_") - script.count("step_() {") >= sum(len(c.steps) for c in CASES)
    assert "step_load klpt_sec_not_flagged" in script.split("case_begin")[-1]


# The vmlinux-based mutations apply to the checked-in sample (it has total_forks,0,
# max_cstate,1/2 and seq_printf calls too); klpt_late-based ones need a kbuild.
@pytest.mark.parametrize(
    "case", [c for c, m in MUTATIONS.items() if m.base == "klpt_vmlinux"], ids=str
)
def test_mutation_applies(case: str, tmp_path: Path) -> None:
    out = make_variant(SAMPLE, tmp_path / f"klpt_{case}.ko", f"klpt_{case}", MUTATIONS[case])
    res = readelf(out, "-a")
    if case == "ok_klp_sec_rel":
        # readelf reads an SHT_REL section as Elf_Rel; the kernel, as Elf_Rela
        assert "invalid sh_entsize of 18" in res.stderr, res.stderr
    else:
        assert res.returncode == 0 and "Error" not in res.stderr, res.stderr
    elf = open_elf(out)
    assert elf.modinfo is not None and elf.modinfo.get("name") == f"klpt_{case}"
    this = elf.section_by_name(".gnu.linkonce.this_module")
    assert this is not None and bytes(this.data[24:80]).rstrip(b"\0") == f"klpt_{case}".encode()
    base = open_elf(SAMPLE)
    tab, btab = elf.symtab, base.symtab
    assert tab is not None and btab is not None
    klp = [s for s in elf.sections if s.sh_flags & SHF.RELA_LIVEPATCH]
    changed = (
        tab.names() != btab.names()
        or [s.st_shndx for s in tab] != [s.st_shndx for s in btab]
        or [(s.name, s.sh_type, s.sh_flags, s.sh_size) for s in elf.sections]
        != [(s.name, s.sh_type, s.sh_flags, s.sh_size) for s in base.sections]
        or bytes(elf.section_by_name(".text").data)  # type: ignore[union-attr]
        != bytes(base.section_by_name(".text").data)  # type: ignore[union-attr]
        or elf.modinfo.get("livepatch") != "Y"
    )
    assert changed, f"{case}: nothing but the name changed"
    assert all(s.st_shndx in (SHN.LIVEPATCH, SHN.UNDEF) for s in tab if s.name.startswith(".klp"))
    assert klp or case == "sec_not_flagged"


# --- the kernel matrix (klpvm/debian.py, cases.write_expected_matrix, klpvm/matrix.py) ---


def test_control_fields_and_depends() -> None:
    text = (
        "Package: linux-headers-6.12.117+deb13-amd64\n"
        "Version: 6.12.117-1\n"
        "Depends: linux-base (>= 4.12~), linux-headers-6.12.117+deb13-common (= 6.12.117-1),\n"
        " linux-image-6.12.117+deb13-amd64 (= 6.12.117-1) | linux-image-6.12.117+deb13-amd64-"
        "unsigned (= 6.12.117-1), gcc-14:amd64\n"
        "Description: x\n"
        "\n"
        "Package: other\n"
    )
    f = _control_fields(text)
    assert f["Version"] == "6.12.117-1" and "Package: other" not in f["Description"]
    assert _depends(f) == [
        ["linux-base"],
        ["linux-headers-6.12.117+deb13-common"],
        ["linux-image-6.12.117+deb13-amd64", "linux-image-6.12.117+deb13-amd64-unsigned"],
        ["gcc-14"],
    ]


def test_matrix_names() -> None:
    releases = ("5.10.0-32-amd64", "6.12.117+deb13-amd64", "7.2.13+deb14-amd64")
    assert [series_of(r) for r in releases] == ["5.10", "6.12", "7.2"]
    assert [k.series for k in MATRIX] == default_kernels() == ["5.10", "6.1", "6.12", "7.2"]
    k = matrix_kernel("6.12")
    assert k is not None and k.suite == "trixie" and k.release == "6.12.117+deb13-amd64"
    other = matrix_kernel("6.12.107+deb13-amd64")
    assert other is not None and (other.suite, other.release) == ("trixie", "6.12.107+deb13-amd64")
    host = matrix_kernel("6.1")
    assert host is not None and host.on_host
    assert matrix_kernel("4.19") is None
    for k in MATRIX:
        if k.release is not None:
            assert KernelSpec(k.release, Path("v"), Path("m"), Path("b")).series == k.series


def test_chroot_command_mounts_proc_privately() -> None:
    cmd = chroot_command(Path("/c"), ["make", "-C", "/usr/src/x", "M=/tmp/y", "modules"])
    assert cmd[:5] == ["unshare", "--mount", "--propagation", "private", "--fork"]
    script = cmd[cmd.index("-c") + 1]
    assert 'mount -t proc proc "$0/proc"' in script and 'exec chroot "$0" "$@"' in script
    assert cmd[cmd.index("-c") + 2] == "/c"
    assert cmd[-5:] == ["make", "-C", "/usr/src/x", "M=/tmp/y", "modules"]
    assert "env" in cmd and "-i" in cmd


def test_spec_in_chroot() -> None:
    build = Path("/usr/src/linux-headers-7.2.13+deb14-amd64")
    k = Path("/k")
    spec = KernelSpec("7.2.13+deb14-amd64", k / "vmlinuz", k / "modules", build, chroot=Path("/c"))
    assert spec.host_build_dir == Path("/c/usr/src/linux-headers-7.2.13+deb14-amd64")
    assert spec.series == "7.2" and spec.version_key[:2] == (7, 2)


def test_auto_options() -> None:
    spec = KernelSpec("6.1.0-56-amd64", Path("/v"), Path("/m"), Path("/b"), chroot=Path("/c"))
    assert auto_options(spec, Path("/k/kallsyms"), ("vmlinux:max_cstate=1",)) == [
        "--kernel",
        "kallsyms:/k/kallsyms",
        "--symvers",
        "/c/b/Module.symvers",
        "--sympos",
        "vmlinux:max_cstate=1",
    ]


def test_convert_kallsyms_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached kallsyms serves only the vmlinuz whose boot wrote it; else one boot
    dumps it (and refreshes the cache)."""
    monkeypatch.setenv("KLPELF_VM_CACHE", str(tmp_path / "cache"))
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(b"kernel 1")
    spec = KernelSpec("6.1.0-56-amd64", vmlinuz, tmp_path, tmp_path)
    boots: list[str] = []

    def fake_boot(spec: KernelSpec, workdir: Path, script: str, **kw: object) -> BootResult:
        boots.append(script)
        (workdir / "out").mkdir(parents=True)
        (workdir / "out" / "kallsyms").write_text(f"ffffffff81000000 T boot{len(boots)}\n")
        return BootResult(workdir / "out", "", 1.0)

    monkeypatch.setattr(suite, "boot", fake_boot)
    path, b = suite.convert_kallsyms(spec, tmp_path / "w1")
    assert b is not None and len(boots) == 1 and "\ncase_begin " not in boots[0]
    assert path.read_text().endswith("boot1\n")
    path, b = suite.convert_kallsyms(spec, tmp_path / "w2")
    assert b is None and len(boots) == 1 and path.read_text().endswith("boot1\n")
    assert path.parent == tmp_path / "w2"
    vmlinuz.write_bytes(b"kernel 2")  # rebuilt under the same release name
    path, b = suite.convert_kallsyms(spec, tmp_path / "w3")
    assert b is not None and path.read_text().endswith("boot2\n")


def _result(name: str, errno_: int, messages: list[str]) -> CaseResult:
    case = CASES_BY_NAME[name]
    steps = [StepResult(s.op, s.arg, errno_ if i == case.verdict else 0)
             for i, s in enumerate(case.steps)]  # fmt: skip
    return CaseResult(case, steps, messages)


def test_expected_matrix_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """common.json: what most series did (ties: the newest's); <series>.json: the rest."""
    monkeypatch.setattr(cases, "EXPECTED_DIR", tmp_path)
    old = "livepatch: symbol seq_printf is not marked as a livepatch symbol"
    new = "livepatch: symbol seq_printf at rela sec 48 idx 4 is not marked as a livepatch symbol"
    refused = ["livepatch: patch 'klpt_late' failed for module 'klpt_target', refusing ..."]
    results = {
        "5.10": [_result("sym_not_livepatch", 22, [old]), _result("reload_target", 8, refused)],
        "6.1": [_result("sym_not_livepatch", 22, [old]), _result("reload_target", 8, refused)],
        "6.12": [_result("sym_not_livepatch", 22, [old]), _result("reload_target", 0, [])],
        "7.2": [_result("sym_not_livepatch", 22, [new]), _result("reload_target", 0, [])],
    }
    write_expected_matrix(results)
    common = json.loads((tmp_path / "common.json").read_text())
    assert common["sym_not_livepatch"]["messages"] == [old]
    assert common["reload_target"]["errno"] == 0  # 2:2, the newest's
    files = {s: json.loads((tmp_path / f"{s}.json").read_text()) for s in results}
    assert sorted(files["5.10"]) == sorted(files["6.1"]) == ["_doc", "reload_target"]
    assert sorted(files["6.12"]) == ["_doc"]
    assert sorted(files["7.2"]) == ["_doc", "sym_not_livepatch"]
    merged = cases.expected_for("7.2")
    assert merged["sym_not_livepatch"].messages == [new]
    assert cases.expected_for("5.10")["reload_target"].errno == 8


def test_matrix_table() -> None:
    rep = MatrixReport()
    rep.observe("6.1", "6.1.0-56-amd64", {"sym_unknown": _result(
        "sym_unknown", 22, ["livepatch: symbol 'klpt_no_such_symbol' not found in symbol table"]
    )})  # fmt: skip
    rep.predict("6.1", "sym_unknown", "refuse", "symbol 'x' not found in symbol table", True)
    text = rep.render()
    assert "| `sym_unknown` | EINVAL ✓ / check: refuse ✓ |" in text
    assert "| `vmlinux_patch` | did not run ? / check: - ? |" in text
    assert "kernel `livepatch: symbol 'klpt_no_such_symbol' not found in symbol table`" in text


def test_check_quoting_the_kernel() -> None:
    kernel = [
        "livepatch: reverting patch 'klpt_late' on unloading module 'klpt_target'",
        "module: x86/modules: Skipping invalid relocation target, existing value is nonzero "
        "for type 2, loc <ptr>, val <module address>",
    ]
    warning = (
        "module klpt_target cannot be loaded again while this patch stays loaded: Linux 6.1 "
        "does not clear klp relocations when klpt_target unloads (6.3+ does), so its next "
        "load fails (errno 8) with: module: x86/modules: Skipping invalid relocation target, "
        "existing value is nonzero for type 2, loc <loc>, val <val>"
    )
    assert quotes_kernel(warning, kernel)
    assert not quotes_kernel(warning.replace("type 2", "type 4"), kernel)


def test_kallsyms_copy_cuts_long_names() -> None:
    """add_kallsyms() keeps KSYM_NAME_LEN - 1 bytes of a name: 127 before 6.1, 511 since."""
    name = f".klp.sym.klpt_target.{LONG_NAME},0"
    old, new = KernelRelease.parse("5.10.0-32-amd64"), KernelRelease.parse("6.1")
    assert len(old.kallsyms_copy(name)) == 127 and name.startswith(old.kallsyms_copy(name))
    assert new.kallsyms_copy(name) == name
    assert len(new.kallsyms_copy("x" * 600)) == 511


def test_arm64_cache_entry_is_keyed_by_source_and_fragment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the lane runs only on an entry built from this source version and arm64.config
    monkeypatch.setenv("KLPELF_KERNEL_CACHE", str(tmp_path))
    lane = lanes.ARM64
    kdir = lane.kernel_dir()
    assert kdir == tmp_path / "kernels-arm64" / "7.2.13-klpt-arm64"
    assert lane.cached_spec() is None
    assert "is not there" in lane.missing_reason() and lane.fill_command in lane.missing_reason()
    kdir.mkdir(parents=True)
    (kdir / ".complete").write_text("0123456789abcdef\n")
    assert lane.cached_spec() is None and "is stale" in lane.missing_reason()
    (kdir / ".complete").write_text(lane.key() + "\n")
    spec = lane.cached_spec()
    assert spec is not None and spec.release == lane.release
    assert spec.vmlinuz == kdir / "Image" and spec.build_dir == kdir / "build"
    assert spec.machine.console == "ttyAMA0" and spec.machine.virtio_modules == ()
    assert spec.machine.libc == Path("/usr/aarch64-linux-gnu/lib/libc.a")
    assert "ARCH=arm64" in spec.machine.kbuild_args
    # nothing to load for the output disk: virtio-mmio and virtio_blk are built in
    assert spec.problems() == [f"{kdir / 'Image'} is missing (apt-get install linux-image-"
                               f"{lane.release})", f"{kdir / 'build'} has no kbuild tree "
                               f"(apt-get install linux-headers-{lane.release})"]  # fmt: skip


def test_lane_config_check_names_what_allnoconfig_dropped(tmp_path: Path) -> None:
    # allnoconfig silently drops an option whose dependencies are off (KALLSYMS_ALL
    # without DEBUG_KERNEL): the fill refuses such a result
    for lane in lanes.LANES.values():
        wanted = lane.options()
        assert "CONFIG_LIVEPATCH=y" in wanted and "CONFIG_PROC_KCORE=y" in wanted
        config = tmp_path / ".config"
        config.write_text("".join(f"{ln}\n" for ln in wanted if ln != "CONFIG_KALLSYMS_ALL=y"))
        with pytest.raises(PrepareError, match=r"did not keep: CONFIG_KALLSYMS_ALL=y$"):
            lanes._check_config(lane, config)
        config.write_text("".join(f"{ln}\n" for ln in wanted))
        lanes._check_config(lane, config)
