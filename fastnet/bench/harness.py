"""The measuring harness: threads pinned alike for every framework, the machine's ceilings, the
timers, the check that every peer computes what ours does, and the rows and table of results.

A row's ``time`` is our best time per call; GFLOP/s and GB/s divide a case's FLOPs and minimum
bytes by it; ``% ceiling`` is the fraction of the GEMM ceiling for a compute-bound case
(arithmetic intensity above the machine balance) and of the copy ceiling for a memory-bound one;
``vs PEER`` is the peer's time divided by ours (above 1: fastnet is faster).
"""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

from ..backend import Device, get_num_threads, set_num_threads, to_numpy
from ..extras import install_hint
from ..kernels import _cpu, _cuda
from ..kernels._contract import FLOAT32_BYTES, OURS, BenchContext, Case, CaseInfo, CaseSpec

RELATIVE_TOLERANCE = 1e-4  # float32 results computed in different orders agree to ~1e-6


def optional_torch() -> Any:
    """The ``torch`` module, or None when PyTorch is not installed
    (the ``bench`` extra)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


# ===================================================================== threads and ceilings
@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """fastnet (its Numba kernels and NumPy's BLAS, :func:`fastnet.set_num_threads`), every OpenMP
    runtime (threadpoolctl) and PyTorch all limited to ``threads`` within; restored after."""
    from threadpoolctl import threadpool_limits

    torch = optional_torch()
    fastnet_before = get_num_threads()
    torch_before = torch.get_num_threads() if torch else None
    set_num_threads(threads)  # validates the count
    if torch:
        torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="openmp"):
            yield
    finally:
        set_num_threads(fastnet_before)
        if torch:
            torch.set_num_threads(torch_before)


# Between one framework's round and the other's: each OpenMP runtime's idle threads spin a few ms
# after their last parallel region (libgomp's default, which fastnet's pool keeps) and would take
# a core from the other framework's round at 2 threads on 2 cores.
SETTLE_SECONDS = 0.05


def settle() -> None:
    """Wait until the last round's idle threads have stopped spinning (:data:`SETTLE_SECONDS`)."""
    time.sleep(SETTLE_SECONDS)


def blas_description() -> str:
    """The BLAS NumPy uses, with the kernel architecture it picked, as threadpoolctl reports it."""
    from threadpoolctl import threadpool_info

    found = [
        f"{info.get('internal_api')} {info.get('version')} "
        f"({info.get('architecture', '?')} kernels, {info.get('threading_layer', '?')}, "
        f"{threads_text(info.get('num_threads', 0))})"
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    return "; ".join(found) or "no BLAS found by threadpoolctl"


def threads_text(threads: int) -> str:
    return f"{threads} thread" + ("" if threads == 1 else "s")


@dataclass(frozen=True)
class Ceilings:
    """The machine's measured ceilings and how they were measured."""

    device: str
    threads: int
    gemm_gflops: float
    copy_gbs: float
    library: str

    @property
    def balance(self) -> float:
        """FLOP per byte at which a kernel turns from memory-bound to compute-bound."""
        return self.gemm_gflops / self.copy_gbs

    def describe(self) -> str:
        return (
            f"{self.device}, {threads_text(self.threads)}: GEMM {self.gemm_gflops:.1f} GFLOP/s "
            f"({self.library}); copy {self.copy_gbs:.1f} GB/s (read + write); "
            f"balance {self.balance:.1f} FLOP/byte"
        )


@njit(parallel=True, cache=True)
def _threaded_copy(source, destination):
    for index in prange(source.size):
        destination[index] = source[index]


def measure_ceilings(device: Device, threads: int, quick: bool = False) -> Ceilings:
    """GEMM and copy ceilings of ``device``; call inside :func:`pinned_threads` on the CPU.

    The GEMM is float32 ``n x n @ n x n`` (n = 2048 on the CPU, 8192 on a GPU); the copy moves a
    buffer far larger than the last-level cache (128 MiB on the CPU, 1 GiB on a GPU). On the CPU
    the copy is the better of NumPy's single-threaded ``copyto`` and, with more than one thread, a
    ``threads``-wide Numba copy.
    """
    xp, on_gpu = device.xp, device.name == "cuda"
    timer = time_cuda if on_gpu else time_cpu
    side = 256 if quick else (8192 if on_gpu else 2048)
    copy_bytes = (1 << 22) if quick else ((1 << 30) if on_gpu else (1 << 27))
    rng = np.random.default_rng(0)
    a, b = (xp.asarray(rng.standard_normal((side, side), dtype=np.float32)) for _ in range(2))
    product = xp.empty((side, side), np.float32)
    # BLAS's own threads, ``threads`` of them: fastnet holds NumPy's BLAS to one thread and runs
    # its own blocks in parallel (fastnet.set_num_threads), but the ceiling is the library's best.
    with contextlib.ExitStack() as stack:
        if not on_gpu:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=threads, user_api="blas"))
        gemm = timer({"gemm": lambda: xp.matmul(a, b, out=product)}, quick=quick)["gemm"].best
        library = f"cuBLAS via CuPy on {gpu_name()}" if on_gpu else blas_description()
    source = xp.asarray(rng.standard_normal(copy_bytes // FLOAT32_BYTES, dtype=np.float32))
    destination = xp.zeros_like(source)  # zeros, not empty: no page faults inside the timing
    copies = {"copyto": lambda: xp.copyto(destination, source)}
    if not on_gpu and threads > 1:
        _cpu.parallel_pays(_cpu.PARALLEL_MIN_ELEMENTS)  # starts Numba's pool at its count
        copies["threaded"] = lambda: _threaded_copy(source, destination)
    copy = min(timing.best for timing in timer(copies, quick=quick).values())
    return Ceilings(
        device.name, threads, 2 * side**3 / gemm / 1e9, 2 * source.nbytes / copy / 1e9, library
    )


@functools.lru_cache(maxsize=2)
def _gemm_operands(side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((side, side), dtype=np.float32) for _ in range(2))
    return a, b, np.empty((side, side), np.float32)


def gemm_gflops(threads: int, quick: bool = False) -> float:
    """GFLOP/s of NumPy's BLAS on ``threads`` threads over a few float32 1024 x 1024 products
    (128 x 128, one, with ``quick``): one sample of what the machine's cores give right now, for
    a race to set its own N-thread scaling against (:func:`fastnet.bench.race.measure_training`).
    """
    from threadpoolctl import threadpool_limits

    side, calls = (128, 1) if quick else (1024, 8)
    a, b, product = _gemm_operands(side)
    with threadpool_limits(limits=threads, user_api="blas"):
        np.matmul(a, b, out=product)  # wakes the library's threads
        start = time.perf_counter()
        for _ in range(calls):
            np.matmul(a, b, out=product)
        return calls * 2 * side**3 / (time.perf_counter() - start) / 1e9


# ===================================================================== timers
@dataclass(frozen=True)
class Timing:
    """Seconds per call: the fastest round and the median round."""

    best: float
    median: float
    rounds: int
    calls_per_round: int


def time_cpu(
    runs: dict[str, Callable[[], Any]],
    quick: bool = False,
    rounds: int = 10,
    seconds_each: float = 1.0,
) -> dict[str, Timing]:
    """Time each of ``runs``: warm up (compiles, touches memory), then ``rounds`` rounds in which
    every run in turn makes enough calls to fill ``seconds_each / rounds``; a round's mean per call
    is one sample. Interleaving spreads interference from other processes over all runs alike."""
    if quick:
        rounds, seconds_each = 1, 0.0
    calls = {}
    for name, run in runs.items():
        run()
        start = time.perf_counter()
        run()
        elapsed = max(time.perf_counter() - start, 1e-7)
        calls[name] = max(1, round(seconds_each / rounds / elapsed))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                run()
            samples[name].append((time.perf_counter() - start) / calls[name])
    return {
        name: Timing(min(values), statistics.median(values), rounds, calls[name])
        for name, values in samples.items()
    }


def time_cuda(
    runs: dict[str, Callable[[], Any]], quick: bool = False, rounds: int = 30
) -> dict[str, Timing]:
    """Time each of ``runs`` on the GPU: CUDA events around every call on the current stream, after
    three warm-up calls, with the L2 cache flushed before each call (operands come from memory, as
    in training); the runs take turns, as in :func:`time_cpu`."""
    import cupy

    if quick:
        rounds = 2
    flush = cupy.empty(2 * cupy.cuda.Device().attributes["L2CacheSize"], dtype=cupy.uint8)
    for run in runs.values():
        for _ in range(3):
            run()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            flush.fill(1)
            start.record()
            run()
            stop.record()
            stop.synchronize()
            samples[name].append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return {
        name: Timing(min(values), statistics.median(values), rounds, 1)
        for name, values in samples.items()
    }


def cuda_refusal() -> str | None:
    """Why ``--device cuda`` cannot be timed here, or None when a real GPU is present."""
    if _cuda.simulating():
        return (
            "fastnet bench: refusing to time the CUDA simulator (NUMBA_ENABLE_CUDASIM=1): it "
            "runs one Python thread per CUDA thread, so its timings say nothing about a GPU. "
            "Unset NUMBA_ENABLE_CUDASIM and run on a machine with an NVIDIA GPU."
        )
    if not _cuda.gpu_available():
        return (
            "fastnet bench: no CUDA GPU found (CuPy missing or cupy.is_available() is False): "
            f"--device cuda needs an NVIDIA GPU and the cuda extra: {install_hint('cuda')}."
        )
    return None


def gpu_name() -> str:
    import cupy

    return cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()


# ===================================================================== verification
class MismatchError(AssertionError):
    """A peer (or a framework) computed something other than fastnet did."""


def host_copy(value: Any) -> np.ndarray:
    """A NumPy copy of an array of any framework (NumPy, CuPy, a PyTorch tensor)."""
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().numpy().copy()
    return np.array(to_numpy(value), copy=True)


def relative_error(got: Any, expected: Any) -> float:
    """max |got - expected| / max |expected| (exact equality required of integer arrays)."""
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        return math.inf
    if expected.dtype.kind in "iu":
        return 0.0 if np.array_equal(got, expected) else math.inf
    scale = max(float(np.max(np.abs(expected), initial=0.0)), np.finfo(np.float32).tiny)
    return float(np.max(np.abs(got.astype(np.float64) - expected), initial=0.0)) / scale


def verify(case: Case, tolerance: float = RELATIVE_TOLERANCE) -> None:
    """Run every implementation once and raise :class:`MismatchError` unless all agree with ours."""
    ours = case.implementations[OURS]
    expected = [host_copy(value) for value in ours.comparable(ours.run())]
    for name, implementation in case.implementations.items():
        if name == OURS:
            continue
        got = [host_copy(value) for value in implementation.comparable(implementation.run())]
        if len(got) != len(expected):
            raise MismatchError(
                f"{case.info.name}: {name} returned {len(got)} outputs, fastnet {len(expected)}"
            )
        for index, (mine, theirs) in enumerate(zip(expected, got, strict=True)):
            error = relative_error(theirs, mine)
            if not error <= tolerance:
                raise MismatchError(
                    f"{case.info.name}: {name} differs from fastnet in output {index} (shapes "
                    f"{theirs.shape} and {mine.shape}): relative error {error:.2e} > "
                    f"{tolerance:.0e}; refusing to time a different computation"
                )


def bench_context(device: Device) -> BenchContext:
    """What a case is built from on ``device``: PyTorch only for the CPU (its installed build)."""
    torch = optional_torch() if device.name == "cpu" else None
    return BenchContext(variant=device.name, ops=device, xp=device.xp, torch=torch)


def build_and_verify(spec: CaseSpec, device: Device) -> Case:
    """``spec``'s case on ``device``, its peers checked against ours (:func:`verify`)."""
    case = spec.build(bench_context(device))
    verify(case)
    return case


# ===================================================================== rows and the table
def rates(info: CaseInfo, seconds: float, ceilings: Ceilings) -> dict[str, Any]:
    """What ``seconds`` per call achieves: GFLOP/s, GB/s, the bound and the fraction of its
    ceiling."""
    gflops = info.flops / seconds / 1e9
    gbs = info.bytes_moved / seconds / 1e9
    intensity = info.flops / info.bytes_moved
    bound = info.fixed_bound or ("compute" if intensity >= ceilings.balance else "memory")
    ceiling = {"compute": ceilings.gemm_gflops, "memory": ceilings.copy_gbs}.get(bound)
    achieved = gflops if bound == "compute" else gbs
    return {
        "flops": info.flops,
        "min_bytes": info.bytes_moved,
        "intensity_flop_per_byte": intensity,
        "gflops": gflops,
        "gbs": gbs,
        "bound": bound,
        "percent_of_ceiling": None if ceiling is None else 100.0 * achieved / ceiling,
    }


def make_row(info: CaseInfo, timings: dict[str, Timing], ceilings: Ceilings) -> dict[str, Any]:
    """One row of the table (JSON-ready): our rates and each peer's time divided by ours."""
    ours = timings[OURS].best
    return {
        "family": info.family,
        "case": info.label,
        "seconds": {name: t.best for name, t in timings.items()},
        "median_seconds": {name: t.median for name, t in timings.items()},
        **rates(info, ours, ceilings),
        "ratios": {name: t.best / ours for name, t in timings.items() if name != OURS},
    }


def _seconds_text(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def aligned(header: Sequence[str], lines: list[list[str]]) -> str:
    """A text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    text = [" | ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True))]
    text.append("-+-".join("-" * width for width in widths))
    for line in lines:
        cells = zip(line, widths, strict=True)
        text.append(
            " | ".join(
                cell.rjust(width) if index else cell.ljust(width)
                for index, (cell, width) in enumerate(cells)
            )
        )
    return "\n".join(line.rstrip() for line in text)


def format_table(
    rows: list[dict[str, Any]], ceilings: Ceilings, failures: Sequence[str] = ()
) -> str:
    """The ceilings line and one line per row; ``vs PEER`` is the peer's time / ours (> 1: we are
    faster)."""
    peers = list(OrderedDict.fromkeys(peer for row in rows for peer in row["ratios"]))
    header = ["kernel", "time", "GFLOP/s", "GB/s", "% ceiling", "bound"]
    header += [f"vs {peer}" for peer in peers]
    lines = []
    for row in rows:
        percent = row["percent_of_ceiling"]
        lines.append(
            [
                f"{row['family']} {row['case']}",
                _seconds_text(row["seconds"][OURS]),
                f"{row['gflops']:.2f}",
                f"{row['gbs']:.2f}",
                "-" if percent is None else f"{percent:.0f}%",
                row["bound"],
            ]
            + [f"{row['ratios'][peer]:.2f}x" if peer in row["ratios"] else "" for peer in peers]
        )
    text = [f"ceilings: {ceilings.describe()}", aligned(header, lines)]
    text += [f"FAILED {failure}" for failure in failures]
    return "\n".join(text)
