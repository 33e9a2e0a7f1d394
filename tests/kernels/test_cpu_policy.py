"""The CPU execution policy (kernels/_cpu.py): one kernel body, a serial and a parallel driver, and
the rule that picks between them; and the conv workspace's chunking of a batch."""

from __future__ import annotations

import importlib

import numba
import numpy as np
import pytest
from numba.core.caching import FunctionCache

import fastnet
from fastnet.kernels import _cpu, activation, conv
from fastnet.kernels._contract import family_module_names
from fastnet.kernels._cpu import CpuKernel


def cpu_kernels():
    """(name, kernel) of every CpuKernel in the package's public modules."""
    for module_name in family_module_names():
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if isinstance(value, CpuKernel):
                yield f"{module_name.rsplit('.', 1)[1]}.{name}", value


@pytest.fixture
def threads():
    """threads(n): run with n threads for fastnet's kernels; the count is restored afterwards."""
    before = fastnet.get_num_threads()
    yield fastnet.set_num_threads
    fastnet.set_num_threads(before)


def test_the_two_drivers_give_identical_results(rng):
    x = rng.standard_normal(10_001).astype(np.float32)
    outputs = [np.full_like(x, np.nan) for _ in range(2)]
    activation._relu_forward_kernel_cpu.serial(x, outputs[0])
    activation._relu_forward_kernel_cpu.parallel(x, outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[1])

    image = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    cols = [np.full((4 * 9, 3 * 9 * 8), np.nan, np.float32) for _ in range(2)]
    geometry = (3, 3, 1, 1, 1, 1, 9, 8, 1, 1)  # the last two: no dilation
    conv._im2col_kernel_cpu.serial(image, cols[0], *geometry)
    conv._im2col_kernel_cpu.parallel(image, cols[1], *geometry)
    np.testing.assert_array_equal(cols[0], cols[1])
    assert not np.isnan(cols[0]).any()


def test_parallel_never_pays_on_one_thread(threads):
    threads(1)
    assert not _cpu.parallel_pays(_cpu.PARALLEL_MIN_ELEMENTS)
    assert not _cpu.parallel_pays(1 << 40)
    kernel = activation._relu_forward_kernel_cpu
    assert kernel.driver(1 << 40) is kernel.serial


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
def test_parallel_pays_from_the_threshold_on_two_threads(threads):
    threads(2)
    assert not _cpu.parallel_pays(_cpu.PARALLEL_MIN_ELEMENTS - 1)
    assert _cpu.parallel_pays(_cpu.PARALLEL_MIN_ELEMENTS)
    kernel = activation._relu_forward_kernel_cpu
    assert kernel.driver(_cpu.PARALLEL_MIN_ELEMENTS - 1) is kernel.serial
    assert kernel.driver(_cpu.PARALLEL_MIN_ELEMENTS) is kernel.parallel


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
def test_the_threshold_is_read_at_the_call(threads, monkeypatch):
    """Tests force a driver through the policy: the threshold is looked up on every call."""
    threads(2)
    monkeypatch.setattr(_cpu, "PARALLEL_MIN_ELEMENTS", 10)
    assert _cpu.parallel_pays(10) and not _cpu.parallel_pays(9)


@pytest.mark.parametrize("name, kernel", list(cpu_kernels()))
def test_the_drivers_have_their_own_cache_identities(name, kernel):
    """Numba's on-disk cache keys a function by its qualified name: the serial and the parallel
    driver must differ in it, or one would load the other's machine code."""
    serial, parallel = kernel.serial, kernel.parallel
    assert serial.py_func.__qualname__ != parallel.py_func.__qualname__, name
    for driver in (serial, parallel):  # cache=True: compiled once, then loaded from disk
        assert isinstance(driver._cache, FunctionCache), name
    assert not serial.targetoptions.get("parallel") and parallel.targetoptions.get("parallel"), name


def test_every_family_of_this_change_uses_the_policy():
    names = {name.split(".")[0] for name, _ in cpu_kernels()}
    assert {"activation", "conv", "pool", "winograd"} <= names
    for module in ("activation", "conv", "pool", "winograd"):
        assert not hasattr(
            importlib.import_module(f"fastnet.kernels.{module}"), "PARALLEL_MIN_ELEMENTS"
        )


def test_images_per_chunk():
    assert _cpu.images_per_chunk(1000, 10_000) == 10
    assert _cpu.images_per_chunk(1001, 10_000) == 9
    assert _cpu.images_per_chunk(20_000, 10_000) == 1  # an image larger than the workspace
    assert _cpu.images_per_chunk(0, 10_000) == 10_000  # an empty image: no division by zero
    assert _cpu.images_per_chunk(1 << 19) == _cpu.CONV_WORKSPACE_BYTES >> 19


def test_the_cpu_device_has_the_policy_workspace():
    assert fastnet.backend.CPU.conv_workspace_bytes == _cpu.CONV_WORKSPACE_BYTES
    assert fastnet.backend.CPU.winograd_workspace_bytes == _cpu.WINOGRAD_WORKSPACE_BYTES


def test_scratch_is_kept_per_key_and_per_thread():
    import threading

    built = []

    def build(shape=(3, 5)):
        built.append(np.empty(shape, np.float32))
        return built[-1]

    first = _cpu.scratch(("test_scratch", 3, 5), build)
    assert _cpu.scratch(("test_scratch", 3, 5), build) is first and len(built) == 1
    other = _cpu.scratch(("test_scratch", 5, 3), lambda: build((5, 3)))
    assert other is not first and len(built) == 2
    elsewhere = []
    worker = threading.Thread(
        target=lambda: elsewhere.append(_cpu.scratch(("test_scratch", 3, 5), build))
    )
    worker.start()
    worker.join()
    assert elsewhere[0] is not first and len(built) == 3  # another thread, its own array


def test_scratch_builds_large_arrays_afresh_and_bounds_what_it_keeps(monkeypatch):
    monkeypatch.setattr(_cpu, "SCRATCH_LIMIT_BYTES", 4096)
    big = _cpu.scratch(("test_scratch_big",), lambda: np.empty(2048, np.uint8))
    assert _cpu.scratch(("test_scratch_big",), lambda: np.empty(2048, np.uint8)) is not big
    kept = [
        _cpu.scratch(("test_scratch_small", i), lambda: np.empty(1024, np.uint8)) for i in range(6)
    ]
    cached = _cpu._scratch.arrays
    assert sum(array.nbytes for array in cached.values()) <= 4096
    assert ("test_scratch_small", 5) in cached and ("test_scratch_small", 0) not in cached
    assert _cpu.scratch(("test_scratch_small", 5), lambda: np.empty(1024, np.uint8)) is kept[5]


def test_a_convolution_chunk_stays_below_the_parallel_threshold():
    """The policy's two numbers fit together: a workspace chunk's float32 entries (its im2col
    columns) take the serial driver, inside runs that the threads already share out."""
    chunk_floats = _cpu.CONV_WORKSPACE_BYTES // np.dtype(np.float32).itemsize
    assert chunk_floats < _cpu.PARALLEL_MIN_ELEMENTS
