"""Test-session setup that must happen before anything imports ``numba.cuda``.

* Without a GPU, the ``cuda`` device and every CUDA kernel run in Numba's CUDA simulator:
  ``NUMBA_ENABLE_CUDASIM=1`` is set here unless the caller chose already.
* In the simulator, new shared and local arrays are filled with NaN (or an absurd integer),
  so a kernel that reads shared memory before a ``syncthreads()`` made it valid produces NaN
  instead of passing by luck.
* With a GPU (``nvidia-smi -L`` works, or ``NUMBA_ENABLE_CUDASIM=0``) the CUDA tests run real
  kernels on CuPy arrays (tests/kernels/conftest.py uploads the kernel tests' NumPy arrays): the
  session stops at once, with the command that fixes it, when CuPy cannot reach the GPU.
* The PTX compile checks cannot run in a simulating process; they run in a subprocess
  (see tests/kernels/test_ptx.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# the real datasets beside the checkout (../shared/data; see its README)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _gpu_present() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _gpu_present():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

SIMULATING = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _why_cupy_cannot_run() -> str | None:
    """What stops CuPy from running kernels on this machine's GPU and what to do, or None."""
    install = "install the cuda extra: bash scripts/setup.sh dev,cuda"
    try:
        import cupy
    except ImportError:
        return f"CuPy is not installed: {install} (bash scripts/test.sh does it on a GPU host)"
    try:
        if cupy.is_available():
            return None
    except Exception as error:  # noqa: BLE001 - any driver error: report it as it is
        return f"cupy.is_available() raised {error!r}: check the driver (nvidia-smi)"
    return (
        "cupy.is_available() is False (CuPy sees no usable GPU): check the driver (nvidia-smi) "
        f"and {install}"
    )


def pytest_configure(config: pytest.Config) -> None:
    # Without CuPy every CUDA test would fail on its own; one message says why and what to run.
    problem = None if SIMULATING else _why_cupy_cannot_run()
    if problem is not None:
        raise pytest.UsageError(
            "the CUDA tests run on the GPU here (nvidia-smi lists one, or NUMBA_ENABLE_CUDASIM "
            f"is not 1), but {problem}; or run the CUDA kernels in Numba's simulator: "
            "NUMBA_ENABLE_CUDASIM=1"
        )


def _poisoned(shape, dtype):
    array = np.empty(shape, dtype)
    if np.issubdtype(array.dtype, np.floating):
        array.fill(np.nan)
    else:
        array.fill(np.iinfo(array.dtype).max // 3)
    return array


def _install_shared_memory_poison() -> None:
    """Make the simulator hand out NaN-filled shared and local arrays: shared ones through
    fastnet's own thread-safe replacement of the simulator's (``simulate_shared_arrays``), local
    ones here."""
    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    from fastnet.kernels._cuda import simulate_shared_arrays

    def local_array(self, shape, dtype, alignment=None):
        if alignment is not None:
            raise RuntimeError("Array alignment is not supported in cudasim")
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        return _poisoned(shape, dtype)

    simulate_shared_arrays(_poisoned)
    kernelapi.FakeCUDALocal.array = local_array


if SIMULATING:
    # Each syncthreads() in the simulator waits about one thread-switch interval per thread.
    sys.setswitchinterval(2e-4)
    _install_shared_memory_poison()


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A fresh generator per test, seeded from the test's name so failures reproduce."""
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets of ../shared/data (see its README)."""
    assert (SHARED_DATA / "mnist").is_dir(), f"the shared datasets are missing: {SHARED_DATA}"
    return SHARED_DATA
