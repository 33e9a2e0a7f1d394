"""pytest-benchmark suites: every CPU benchmark case at realistic training shapes, next to its peers
(plain NumPy, PyTorch when installed) measured in the same run. See benchmarks/README.md.

* ``--quick``: tiny shapes and one round, so that CI checks the suite still runs (not how fast).
* ``--threads N``: the thread count for fastnet, the BLAS and PyTorch alike (default: fastnet's,
  ``FASTNET_NUM_THREADS`` or 1).

A test that asks for ``case_implementation`` runs once per (case, implementation) of
:func:`fastnet.bench.case_specs`, grouped by case, so a new kernel family's declared cases are
timed here with nothing to add. The machine's ceilings are measured once per session; each result
carries its rates and fraction of the ceiling in ``extra_info``, and the session ends with the
same table ``fastnet bench`` prints (peer time / our time for each peer) when the benchmarks were
enabled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fastnet import bench
from fastnet.backend import CPU, get_num_threads


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick", action="store_true", help="fastnet benchmarks: tiny shapes and one round (CI)"
    )
    parser.addoption(
        "--threads", type=int, default=None, help="fastnet benchmarks: threads (default: fastnet's)"
    )


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark reads its options
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--quick"):
        config.option.benchmark_min_rounds = 1
        config.option.benchmark_max_time = "0"
        config.option.benchmark_warmup = False
    config.fastnet_timings = {}  # spec id -> (CaseInfo, {implementation: Timing})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case_implementation" not in metafunc.fixturenames:
        return
    specs = bench.case_specs(metafunc.config.getoption("--quick"))
    pairs = [(spec, name) for spec in specs for name in spec.implementations]
    metafunc.parametrize(
        "case_implementation", pairs, ids=[f"{spec.id}-{name}" for spec, name in pairs]
    )


@pytest.fixture(scope="session")
def threads(pytestconfig: pytest.Config) -> int:
    return pytestconfig.getoption("--threads") or get_num_threads()


@pytest.fixture(scope="session")
def ceilings(threads: int, pytestconfig: pytest.Config) -> Any:
    """The machine's GEMM and copy ceilings; the threads stay pinned for the whole session."""
    with bench.pinned_threads(threads):
        quick = pytestconfig.getoption("--quick")
        pytestconfig.fastnet_ceilings = bench.measure_ceilings(CPU, threads, quick=quick)
        yield pytestconfig.fastnet_ceilings


class _LatestCase:
    """The most recently built (and verified) case: tests of one case run one after another, and
    keeping only one alive bounds the memory (the largest cases hold hundreds of MB each)."""

    def __init__(self) -> None:
        self.spec: bench.CaseSpec | None = None
        self.outcome: bench.Case | Exception | None = None

    def get(self, spec: bench.CaseSpec) -> bench.Case:
        if spec is not self.spec:
            self.spec, self.outcome = spec, None  # drop the previous case's buffers first
            try:
                self.outcome = bench.build_and_verify(spec, CPU)
            except Exception as error:  # noqa: BLE001 - re-raised by every test of this case
                self.outcome = error
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.fixture(scope="session")
def latest_case() -> _LatestCase:
    return _LatestCase()


@pytest.fixture
def measure(
    benchmark: Any, ceilings: bench.Ceilings, latest_case: _LatestCase, pytestconfig: pytest.Config
) -> Callable[[tuple], None]:
    """Time one implementation of one case; record its rates in ``extra_info`` and for the
    summary."""

    def run(case_implementation: tuple[bench.CaseSpec, str]) -> None:
        spec, name = case_implementation
        case = latest_case.get(spec)
        if name not in case.implementations:
            pytest.skip(f"{name} is not available here (PyTorch not installed?)")
        benchmark.group = spec.id
        benchmark(case.implementations[name].run)
        if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
            return
        stats = benchmark.stats.stats
        benchmark.extra_info.update(bench.rates(case.info, stats.min, ceilings))
        info, timings = pytestconfig.fastnet_timings.setdefault(spec.id, (case.info, {}))
        timings[name] = bench.Timing(
            stats.min, stats.median, stats.rounds, benchmark.stats.iterations
        )

    return run


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The table of ``fastnet bench``, for the cases whose fastnet implementation was timed."""
    measured = {
        spec_id: entry
        for spec_id, entry in getattr(config, "fastnet_timings", {}).items()
        if bench.OURS in entry[1]
    }
    if not measured:
        return
    ceilings = config.fastnet_ceilings
    rows = [bench.make_row(info, timings, ceilings) for info, timings in measured.values()]
    terminalreporter.write_sep("=", "fastnet kernels vs peers (vs PEER = peer time / fastnet time)")
    terminalreporter.write_line(bench.format_table(rows, ceilings))
