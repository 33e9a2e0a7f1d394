"""Fixtures shared by the kernel tests, and the kernel tests on a GPU host.

On a GPU host (not simulating), every CUDA entry point the tests import is wrapped here, at
import, before the test modules import it: the tests' NumPy arrays then go to the GPU and the
results come back, as the simulator's own launches do (see device_roundtrip.py).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from device_roundtrip import cupy_arrays, run_entry_points_on

from fastnet.kernels import _cpu
from fastnet.kernels._contract import family_module_names
from fastnet.kernels._cuda import array_module, gpu_available

# The simulator takes the tests' NumPy arrays as they are; a GPU gets them uploaded. (A GPU host
# where CuPy cannot run kernels never gets here: tests/conftest.py stops the session first.)
if gpu_available():
    run_entry_points_on(cupy_arrays())


def poisoned_empty(shape, dtype, like):
    """An allocation on ``like``'s device filled with NaN (floats) or -1 (integers), so an
    element a kernel never writes shows in the result instead of passing by luck."""
    dtype = np.dtype(dtype)
    return array_module(like).full(shape, np.nan if dtype.kind == "f" else -1, dtype=dtype)


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every kernel module allocates its outputs (and scratch buffers) poisoned, the private
    modules that allocate for the families too."""
    for name in [*family_module_names(), "fastnet.kernels._pool2x2"]:
        module = importlib.import_module(name)
        if hasattr(module, "empty"):
            monkeypatch.setattr(module, "empty", poisoned_empty)


@pytest.fixture
def force_driver(monkeypatch):
    """``force_driver("serial" | "parallel")``: every CPU kernel called afterwards in the test takes
    that driver, whatever the work size and the thread count."""

    def force(driver: str) -> None:
        assert driver in ("serial", "parallel"), driver
        monkeypatch.setattr(_cpu, "parallel_pays", lambda elements: driver == "parallel")

    return force


@pytest.fixture
def two_threads():
    """fastnet's kernels on two threads (fewer where Numba has fewer) within the test."""
    import fastnet

    before = fastnet.get_num_threads()
    fastnet.set_num_threads(min(2, fastnet.backend.numba.config.NUMBA_NUM_THREADS))
    yield
    fastnet.set_num_threads(before)
