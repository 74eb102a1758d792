"""Real-kernel tests: one VM run per kernel release, shared by every test of the session.

Which kernels: ``$KLPELF_KERNELS`` (series of the kernel matrix or releases, comma or
space separated; ``installed``: every release whose image, modules and headers are
installed), else the whole matrix of tests/kernel/klpvm/debian.py: Debian's 5.10
(bullseye), 6.1 (the host's, bookworm), 6.12 (trixie) and 7.2 (sid).  The archive
kernels are downloaded and given a debootstrap build chroot the first time (cached
under ~/.cache/klpelf).

Under ``CI=true`` nothing here skips: a missing tool or kernel, or a VM that cannot
boot, fails with the reason (and the serial console).  Elsewhere the tests skip with
the apt-get command that fixes it.

``KLPELF_KERNEL_UPDATE=1`` rewrites tests/kernel/expected/<series>.json from what the
kernels did (review the diff before committing it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from kernel.klpvm import lanes
from kernel.klpvm.cases import CASES, write_expected
from kernel.klpvm.debian import PrepareError, default_kernels, kernel_spec
from kernel.klpvm.lanes import LaneResult
from kernel.klpvm.matrix import MatrixReport
from kernel.klpvm.suite import SuiteResult, run_suite
from kernel.klpvm.vm import KernelSpec, host_problems, installed_releases

NO_KERNEL = "no-kernel"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kernel: boots a Linux kernel under qemu and loads modules into it (tests/kernel)",
    )
    config.addinivalue_line(
        "markers",
        "arm64: the arm64 lane: a kernel built from Debian's linux-source, booted under "
        "qemu-system-aarch64 (tests/kernel/klpvm/lanes.py); skipped without its cache",
    )


def kernel_releases() -> list[str]:
    env = os.environ.get("KLPELF_KERNELS", "").replace(",", " ").split()
    if env == ["installed"]:
        return installed_releases()
    return env or default_kernels()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "release" in metafunc.fixturenames:
        metafunc.parametrize("release", kernel_releases() or [NO_KERNEL], scope="session")
    if "case_name" in metafunc.fixturenames:
        metafunc.parametrize("case_name", [c.name for c in CASES])
    if "checked_case" in metafunc.fixturenames:
        # the cases whose verdict is one module's, which `klpelf check` can judge
        metafunc.parametrize("checked_case", [c.name for c in CASES if c.module is not None])


def unavailable(reason: str) -> NoReturn:
    """Fail under CI (the run must be real there), skip elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"real-kernel tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"real-kernel tests: {reason}")


@pytest.fixture(scope="session")
def suite(release: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuiteResult]:
    """Build, boot and run every case on ``release`` (once per session)."""
    if release == NO_KERNEL:
        half = [
            p
            for vmlinuz in sorted(Path("/boot").glob("vmlinuz-*"))
            for p in KernelSpec.installed(vmlinuz.name.removeprefix("vmlinuz-")).problems()
        ]
        unavailable(
            "no kernel with image, modules and headers installed "
            "(apt-get install linux-image-amd64 linux-headers-amd64, the same release; "
            "or name releases in KLPELF_KERNELS)" + "".join(f"; {p}" for p in half)
        )
    problems = host_problems()
    if problems:
        unavailable("; ".join(problems))
    try:
        spec = kernel_spec(release)
    except PrepareError as e:
        unavailable(str(e))
    problems = spec.problems()
    if problems:
        unavailable("; ".join(problems))
    workdir = Path(tmp_path_factory.mktemp(f"vm-{release}", numbered=True))
    res = run_suite(spec, workdir)
    if os.environ.get("KLPELF_KERNEL_UPDATE") and not res.error:
        write_expected(spec.series, list(res.cases.values()))
    REPORT.observe(spec.series, spec.release, res.cases)
    yield res


def lane_run(name: str, tmp_path_factory: pytest.TempPathFactory) -> LaneResult:
    """Build a cross lane's modules, boot its kernel once, run its cases.

    Skipped, under CI too, when the kernel is not in the cache: filling it is a kernel
    build (``python -m kernel.klpvm.lanes --fill <lane>``), which CI does not do.  With
    the cache there, a missing host tool fails under CI as everywhere else in tests/kernel.
    """
    lane = lanes.LANES[name]
    spec = lane.cached_spec()
    if spec is None:
        pytest.skip(f"{name} lane: {lane.missing_reason()}")
    problems = host_problems(spec.machine)
    if problems:
        unavailable("; ".join(problems))
    workdir = Path(tmp_path_factory.mktemp(f"vm-{name}", numbered=True))
    return lanes.run(lane, spec, workdir)


@pytest.fixture(scope="session")
def arm64_lane(tmp_path_factory: pytest.TempPathFactory) -> LaneResult:
    """The arm64 lane's run (tests/kernel/klpvm/lanes.py)."""
    return lane_run("arm64", tmp_path_factory)


def require_lane(lane: LaneResult) -> None:
    if lane.error:
        first = lane.error.splitlines()[0]
        pytest.fail(f"the {lane.lane.name} VM run failed ({first}):\n{lane.error}")


#: the cases x kernels table of this session (tests/kernel/klpvm/matrix.py)
REPORT = MatrixReport()


@pytest.fixture(scope="session")
def report() -> MatrixReport:
    return REPORT


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the matrix table (tests/kernel/out/matrix.md) when a kernel ran."""
    if REPORT.columns:
        path = REPORT.write()
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"kernel matrix table: {path}")


def require(suite: SuiteResult) -> None:
    """Stop a test whose data the VM run did not produce (test_vm_run shows why)."""
    if suite.error:
        first = suite.error.splitlines()[0]
        pytest.fail(f"the VM run on {suite.spec.release} failed ({first}); see test_vm_run")
