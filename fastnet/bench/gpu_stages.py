"""The stages of ``gpu_check`` (see :mod:`fastnet.bench.gpu_check`), each run in a process of
its own with ``NUMBA_ENABLE_CUDASIM`` set for it: 1 under ``--simulate``, 0 on a GPU.

* ``environment``: the device (name, compute capability, memory) and the versions (driver, CUDA
  runtime, CuPy, numba-cuda); on a GPU, refuses to go on where ``fastnet bench`` would refuse.
* ``tests``: the tests that run CUDA kernels (``-k cuda``), on the device; pass/fail counts.
* ``train``: the MNIST CNN trained by :func:`fastnet.train.run`, what ``fastnet train --device
  cuda`` runs, after a one-step warm-up on a slice (so compiling is not counted as training):
  test accuracy, images/s and training seconds per epoch, and the training seconds until the test
  accuracy first reached 99% (known at the end of each epoch, so an upper bound).
* ``bench``: every kernel family's bench cases on the device against its ceilings (a large
  cuBLAS GEMM, a large device copy), and the tiled matmul against cuBLAS at 4096³.
* ``launch``: host microseconds per :func:`fastnet.kernels._cuda.launch` (a trivial kernel, and
  a matmul's launch with three CuPy arrays), the launches of one MNIST CNN training step
  (``launches.count``) and, where PyTorch with CUDA is importable, every kernel the GPU ran in
  that step, CuPy's included (CUPTI through ``torch.profiler``).
* ``nccl``: the NCCL backend of ``fastnet.distributed`` on one rank, checked against NumPy
  (:mod:`fastnet.bench.gpu_nccl`; under ``--simulate``, on the tests' stand-ins).

Under ``--simulate`` the same code runs in Numba's CUDA simulator at tiny sizes (a one-block
matmul, a linear classifier of 8×8 crops instead of the CNN, whose ~30 blocks of 256 threads take
the simulator 90 s a step): it proves the stages run; its numbers say nothing about a GPU.

Each stage takes the parsed options and ``record(update)``, which saves its results so far (the
orchestrator keeps them if the stage is killed), and returns ``"ok"`` or ``"failed"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numba
import numpy as np
from numba import cuda

from ..backend import CPU, Device, get_device, get_num_threads
from ..kernels import _cuda
from ..kernels._contract import FLOAT32_BYTES, OURS, Case, CaseInfo, Implementation
from .cases import case_specs
from .command import machine
from .gpu_nccl import nccl
from .harness import (
    Timing,
    build_and_verify,
    cuda_refusal,
    make_row,
    measure_ceilings,
    optional_torch,
    time_cuda,
    verify,
)

Record = Callable[[dict], None]
CHECKOUT = Path(__file__).resolve().parents[2]

# pytest arguments: on a GPU every test that runs CUDA kernels (the kernel tests' cuda variants
# and the layers, models and training on the cuda device; ~290 tests, most of their time spent
# compiling kernels); in the simulator a handful of fast ones.
GPU_TESTS = ("tests", "-k", "cuda", "-m", "not slow")
SIMULATED_TESTS = (
    "tests/kernels/test_launch.py",
    "tests/kernels/test_activation.py",
    "-k",
    "cuda or launch",
)
GPU_TEST_TIMEOUT_S = 120  # per test, where pytest-timeout is installed
# conv2d_train's cases run three implementations of tile GEMMs: minutes in the simulator (tests
# skip it there too)
SIMULATOR_SKIPPED_CASES = ("conv2d_train",)
CUBLAS_SIDE = {False: 4096, True: 16}  # the matmul raced against cuBLAS: n×n @ n×n


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    """The model a stage trains: the MNIST CNN on a GPU; simulated, a linear classifier of 8×8
    crops (two one-block GEMMs a step: a block of the tiled matmul takes the simulator ~0.5 s)."""

    model: str
    kwargs: dict
    side: int
    batch_size: int


def training_setup(options: argparse.Namespace) -> TrainingSetup:
    if options.simulate:
        return TrainingSetup("mlp", {"in_features": 64, "hidden": (), "classes": 10}, 8, 8)
    return TrainingSetup(
        "cnn", {"channels": 1, "image_size": 28, "classes": 10}, 28, options.batch_size
    )


def synchronize(device: Device) -> None:
    """Wait for the GPU's current stream (nothing to wait for in the simulator)."""
    if device.xp is not np:
        device.xp.cuda.get_current_stream().synchronize()


def _cuda_device(options: argparse.Namespace) -> Device:
    if not options.simulate:
        refusal = cuda_refusal()
        if refusal:
            raise RuntimeError(refusal)
    return get_device("cuda")


# ===================================================================== environment
def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cuda_version_text(version: int) -> str:
    """CUDA's integer versions as text: 13000 -> "13.0"."""
    return f"{version // 1000}.{version % 1000 // 10}"


def _nvidia_smi() -> dict[str, str] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    fields = ("name", "driver_version", "memory.total")
    try:
        line = subprocess.run(
            [smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
    return dict(zip(fields, (part.strip() for part in line.split(",")), strict=False))


def environment(options: argparse.Namespace, record: Record) -> str:
    import fastnet

    smi = _nvidia_smi()
    versions = {
        "fastnet": fastnet.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_cuda": _version("numba-cuda"),
        "cupy": None,
        "driver": smi and smi.get("driver_version"),
        "driver_cuda": None,
        "cuda_runtime": None,
        "numba_cuda_nvrtc": None,
    }
    device: dict[str, Any] = {"name": "Numba's CUDA simulator (no GPU)", "simulated": True}
    record({"machine": machine(), "versions": versions, "device": device, "nvidia_smi": smi})
    if options.simulate:
        return "ok"
    _cuda_device(options)  # refuses with the reason when CuPy or the GPU is missing
    import cupy

    runtime = cupy.cuda.runtime
    properties = runtime.getDeviceProperties(cupy.cuda.Device().id)
    versions.update(
        cupy=cupy.__version__,
        driver_cuda=_cuda_version_text(runtime.driverGetVersion()),
        cuda_runtime=_cuda_version_text(runtime.runtimeGetVersion()),
        numba_cuda_nvrtc=".".join(map(str, cuda.runtime.get_version())),  # what it compiles with
    )
    device = {
        "name": properties["name"].decode(),
        "compute_capability": f"{properties['major']}.{properties['minor']}",
        "memory_gib": properties["totalGlobalMem"] / 2**30,
        "multiprocessors": properties["multiProcessorCount"],
        "l2_cache_mib": properties["l2CacheSize"] / 2**20,
        "simulated": False,
    }
    record({"versions": versions, "device": device})
    return "ok"


# ===================================================================== tests
class OutcomeRecorder:
    """A pytest plugin counting outcomes as they come (with xdist too: the controller gets every
    report), recorded every few seconds so a killed run still says how far it got."""

    def __init__(self, record: Record, every_s: float = 2.0) -> None:
        self.counts = Counter(
            {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "xfailed": 0, "xpassed": 0}
        )
        self.failures: list[dict[str, str]] = []
        self._record, self._every_s, self._last = record, every_s, 0.0

    def _outcome(self, report: Any) -> str | None:
        xfail = hasattr(report, "wasxfail")
        if report.when == "call":
            if xfail:
                return "xfailed" if report.skipped else "xpassed"
            return report.outcome
        if report.failed:
            return "errors"
        return "skipped" if report.skipped else None

    def pytest_runtest_logreport(self, report: Any) -> None:
        outcome = self._outcome(report)
        if outcome is None:
            return
        self.counts[outcome] += 1
        if outcome in ("failed", "errors"):
            self._fail(report.nodeid, report.longreprtext)
        if time.monotonic() - self._last > self._every_s:
            self.save()

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.counts["errors"] += 1
            self._fail(report.nodeid, report.longreprtext)

    def _fail(self, nodeid: str, text: str) -> None:
        if len(self.failures) < 50:
            lines = [line for line in text.splitlines() if line.strip()]
            self.failures.append({"test": nodeid, "error": (lines[-1] if lines else "")[:300]})

    def save(self, **extra: Any) -> None:
        self._last = time.monotonic()
        self._record({"counts": dict(self.counts), "failures": self.failures, **extra})


def tests(options: argparse.Namespace, record: Record) -> str:
    import pytest

    if not (CHECKOUT / "tests" / "conftest.py").is_file():
        raise FileNotFoundError(
            f"no tests/ beside this fastnet ({CHECKOUT}): install it from its checkout "
            "(pip install -e) to run the tests"
        )
    arguments = list(SIMULATED_TESTS if options.simulate else GPU_TESTS)
    arguments += ["-q", "-p", "no:cacheprovider"]
    if not options.simulate:
        workers = max(1, min(8, (os.cpu_count() or 2) // 2))
        if importlib.util.find_spec("xdist"):  # compiling kernels dominates: one per core pair
            arguments += ["-n", str(workers)]
        if importlib.util.find_spec("pytest_timeout"):
            arguments += ["--timeout", str(GPU_TEST_TIMEOUT_S)]
    recorder = OutcomeRecorder(record)
    recorder.save(arguments=arguments)
    os.chdir(CHECKOUT)
    exit_code = int(pytest.main(list(arguments), plugins=[recorder]))  # pytest extends its list
    recorder.save(arguments=arguments, exit_code=exit_code)
    clean = exit_code == 0 and not (recorder.counts["failed"] or recorder.counts["errors"])
    return "ok" if clean else "failed"


# ===================================================================== train
def _mnist(options: argparse.Namespace) -> tuple[Any, Any, str]:
    """MNIST (train, test) and where it came from: ``--data-dir``, else ``FASTNET_DATA`` or the
    cache, else ../shared/data beside the checkout; downloaded only on a GPU host."""
    from .. import data
    from ..train import build_datasets

    root = options.data_dir
    shared = CHECKOUT.parent / "shared" / "data"
    if root is None and not os.environ.get("FASTNET_DATA") and (shared / "mnist").is_dir():
        root = str(shared)
    try:
        train_set, test_set = build_datasets("mnist", root, download=not options.simulate)
    except data.DatasetNotFoundError:
        if not options.simulate:
            raise
        return None, None, "synthetic (MNIST not found)"
    return train_set, test_set, str(train_set.directory)


def _simulated_sets(train_set: Any, test_set: Any) -> tuple[Any, Any]:
    """16 training and 8 test images of 8×8: MNIST's centres, every other pixel, or noise."""
    from ..data import ArrayDataset

    if train_set is None:
        rng = np.random.default_rng(0)
        return tuple(
            ArrayDataset(rng.integers(0, 256, (n, 1, 8, 8), np.uint8), rng.integers(0, 10, n))
            for n in (16, 8)
        )
    return tuple(
        ArrayDataset(full.images[:n, :, 6:22:2, 6:22:2], full.labels[:n])
        for full, n in ((train_set, 16), (test_set, 8))
    )


def train(options: argparse.Namespace, record: Record) -> str:
    from ..cli_options import TRAIN_DEFAULTS
    from ..train import run

    device = _cuda_device(options)
    setup = training_setup(options)
    train_set, test_set, source = _mnist(options)
    if options.simulate:
        train_set, test_set = _simulated_sets(train_set, test_set)
    config = {key: value for key, value in TRAIN_DEFAULTS.items() if key != "epochs"}
    config.update(
        dataset="mnist", model=setup.model, kwargs=setup.kwargs, batch_size=setup.batch_size
    )
    config["augment"] = False  # as fastnet train decides for MNIST
    record({"config": config, "epochs_planned": options.epochs, "data": source})
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        record({"log": lines})

    with tempfile.TemporaryDirectory(prefix="gpu_check-train-") as folder:
        # One step and a small evaluation first: every kernel the run uses is compiled (or
        # loaded from Numba's cache) before the clock starts.
        warm = (train_set.take(np.arange(setup.batch_size)), test_set.take(np.arange(8)))
        start = time.perf_counter()
        run(
            config,
            1,
            Path(folder) / "warm-up",
            device=device,
            datasets=warm,
            progress=False,
            log=lambda line: None,
        )
        record({"warm_up_seconds": time.perf_counter() - start})
        result = run(
            config,
            options.epochs,
            Path(folder) / "run",
            device=device,
            datasets=(train_set, test_set),
            progress=False,
            log=log,
        )
    history = result["history"]
    keys = ("epoch", "test_acc", "test_loss", "train_loss", "seconds", "images_per_second")
    epochs = [{key: history[key][index] for key in keys} for index in range(len(history["epoch"]))]
    trained, to_99 = 0.0, None
    for epoch in epochs:
        trained += epoch["seconds"]
        if to_99 is None and epoch["test_acc"] >= 0.99:
            to_99 = trained
    record(
        {
            "epochs": epochs,
            "training_seconds": trained,
            "images_per_second": len(train_set) * len(epochs) / max(trained, 1e-9),
            "final_test_acc": epochs[-1]["test_acc"],
            "seconds_to_99": to_99,
        }
    )
    return "ok"


# ===================================================================== bench
def _time_once(runs: dict[str, Callable[[], Any]]) -> dict[str, Timing]:
    """One call of each run: the simulator's "timing", which only proves the case runs."""
    timings = {}
    for name, run in runs.items():
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        timings[name] = Timing(seconds, seconds, 1, 1)
    return timings


def _cublas_case(device: Device, side: int) -> Case:
    """The tiled matmul against cuBLAS (NumPy in the simulator): n×n @ n×n, float32."""
    from ..kernels.matmul import matmul_cuda

    xp, rng = device.xp, np.random.default_rng(0)
    a, b = (xp.asarray(rng.standard_normal((side, side), dtype=np.float32)) for _ in range(2))
    ours, theirs = xp.empty((side, side), np.float32), xp.empty((side, side), np.float32)
    info = CaseInfo(
        "matmul",
        f"{side}x{side} @ {side}x{side}",
        2.0 * side**3,
        3.0 * FLOAT32_BYTES * side * side,
        fixed_bound="compute",
    )
    return Case(
        info,
        {
            OURS: Implementation(lambda: matmul_cuda(a, b, out=ours)),
            "cublas": Implementation(lambda: xp.matmul(a, b, out=theirs)),
        },
    )


def bench(options: argparse.Namespace, record: Record) -> str:
    device = _cuda_device(options)
    if options.simulate:  # the simulator cannot be timed: the CPU's quick ceilings stand in
        ceilings = dataclasses.replace(
            measure_ceilings(CPU, 1, quick=True),
            device="cuda (simulated)",
            library="stand-in: the CPU's quick ceilings (the simulator cannot be timed)",
        )
        timer = _time_once
    else:
        ceilings = measure_ceilings(device, get_num_threads())
        timer = time_cuda
    record({"ceilings": dataclasses.asdict(ceilings), "balance": ceilings.balance})
    rows: list[dict] = []
    failures: list[str] = []
    for spec in case_specs(quick=options.simulate):
        if options.simulate and spec.family in SIMULATOR_SKIPPED_CASES:
            continue
        print(f"gpu_check bench: {spec.id} ...", flush=True)
        try:
            case = build_and_verify(spec, device)
            runs = {
                name: implementation.run for name, implementation in case.implementations.items()
            }
            rows.append(make_row(case.info, timer(runs), ceilings))
        except Exception as error:  # noqa: BLE001 - a failed case is reported; the others go on
            failures.append(f"{spec.id}: {type(error).__name__}: {error}")
        record({"kernels": rows, "failures": failures})
    case = _cublas_case(device, CUBLAS_SIDE[options.simulate])
    verify(case)
    runs = {name: implementation.run for name, implementation in case.implementations.items()}
    row = make_row(case.info, timer(runs), ceilings)
    memory_bound = [
        {"case": f"{row['family']} {row['case']}", "percent_of_copy": row["percent_of_ceiling"]}
        for row in rows
        if row["bound"] == "memory"
    ]
    record(
        {
            "matmul_vs_cublas": {
                **row,
                "peer": "NumPy (simulated)" if options.simulate else "cuBLAS through CuPy",
                "percent_of_cublas": 100.0 * row["ratios"]["cublas"],
            },
            "memory_bound": memory_bound,
        }
    )
    return "failed" if failures else "ok"


# ===================================================================== launch
@_cuda.cuda_kernel
def _mark(flags):
    """The trivial kernel: one thread writes one value."""
    if cuda.grid(1) == 0:
        flags[0] = 1


def _per_launch(call: Callable[[], None], device: Device, calls: int, rounds: int) -> dict:
    """Microseconds per call: on the host (no synchronisation in the loop) and until the GPU is
    done (one synchronisation after the loop); the best of ``rounds``."""
    call()
    synchronize(device)
    host, done = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        host.append(time.perf_counter() - start)
        synchronize(device)
        done.append(time.perf_counter() - start)
    return {"calls": calls, "host_us": 1e6 * min(host) / calls, "done_us": 1e6 * min(done) / calls}


def _training_step(options: argparse.Namespace, device: Device) -> tuple[Callable[[], None], str]:
    """One training step of the stage's model (forward, loss, backward, Adam) on random data."""
    import fastnet as fn
    from fastnet import models, optim
    from fastnet.functional import cross_entropy

    setup = training_setup(options)
    fn.manual_seed(0)
    model = models.create(setup.model, **setup.kwargs).to(device)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    shape = (setup.batch_size, 1, setup.side, setup.side)
    x = fn.tensor(rng.random(shape, dtype=np.float32), device=device)
    y = fn.tensor(rng.integers(0, 10, setup.batch_size), device=device)

    def step() -> None:
        loss = cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step, f"{setup.model} {setup.kwargs}, batch {setup.batch_size}, Adam"


def _every_kernel(step: Callable[[], None], device: Device, ours: int) -> dict:
    """Every kernel the GPU ran during ``step``, CuPy's and cuBLAS's included, as CUPTI (through
    ``torch.profiler``) saw them; None with the reason where that cannot be counted honestly."""
    try:
        torch = optional_torch()
        if torch is None or not torch.cuda.is_available():
            return {"count": None, "note": "not counted: needs PyTorch with CUDA (CUPTI)"}
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as profiler:
            step()
            synchronize(device)
        names = [
            event.name
            for event in profiler.events()
            if event.device_type == torch.autograd.DeviceType.CUDA
        ]
    except Exception as error:  # noqa: BLE001 - the count is optional; the reason is reported
        return {"count": None, "note": f"not counted: torch.profiler failed: {error}"}
    kernels = [name for name in names if not name.startswith(("Memcpy", "Memset"))]
    if len(kernels) < ours:
        return {
            "count": None,
            "note": f"not counted: the profiler saw {len(kernels)} kernels, fewer than the "
            f"{ours} fastnet launched",
        }
    return {
        "count": len(kernels),
        "copies_and_sets": len(names) - len(kernels),
        "most_frequent": Counter(kernels).most_common(10),
        "note": "CUPTI through torch.profiler: every kernel on the GPU during one step",
    }


def launch(options: argparse.Namespace, record: Record) -> str:
    from ..kernels import matmul

    device = _cuda_device(options)
    xp = device.xp
    calls, rounds = (2, 1) if options.simulate else (2000, 5)
    flags = xp.zeros(1, np.int32)
    trivial = _per_launch(lambda: _cuda.launch(_mark, 1, 1, flags), device, calls, rounds)
    record({"trivial_kernel": {"kernel": "one thread writes one int32", **trivial}})
    side = 16 if options.simulate else 128
    rng = np.random.default_rng(0)
    a, b = (xp.asarray(rng.standard_normal((side, side), dtype=np.float32)) for _ in range(2))
    c = xp.empty((side, side), np.float32)
    with mock.patch.object(matmul, "launch", wraps=_cuda.launch) as spy:  # capture its arguments
        matmul.matmul_cuda(a, b, out=c)
    kernel, blocks, threads, *arguments = spy.call_args_list[0].args
    replay = _per_launch(
        lambda: _cuda.launch(kernel, blocks, threads, *arguments), device, calls, rounds
    )
    launcher = _per_launch(lambda: matmul.matmul_cuda(a, b, out=c), device, calls, rounds)
    what = f"the tiled matmul {side}^3: 3 {type(a).__module__.split('.')[0]} arrays and an int"
    record(
        {
            "typical_kernel": {"kernel": what, **replay},
            "matmul_launcher": {"call": f"matmul_cuda({side}x{side}, out=...)", **launcher},
        }
    )
    step, description = _training_step(options, device)
    step()  # compiles, allocates the optimizer state
    synchronize(device)
    before = _cuda.launches.count
    start = time.perf_counter()
    step()
    synchronize(device)
    seconds = time.perf_counter() - start
    ours = _cuda.launches.count - before
    counted = {"model": description, "launches": ours, "seconds": seconds}
    record({"training_step": counted})
    every = (
        {"count": None, "note": "not counted in the simulator"}
        if options.simulate
        else _every_kernel(step, device, ours)
    )
    record({"training_step": {**counted, "all_kernels": every}})
    return "ok"


STAGES: dict[str, Callable[[argparse.Namespace, Record], str]] = {
    "environment": environment,
    "tests": tests,
    "train": train,
    "bench": bench,
    "launch": launch,
    "nccl": nccl,
}
