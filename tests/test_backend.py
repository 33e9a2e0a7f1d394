"""The backend: the CPU's thread pool, its buffer cache, and the transfer functions.

The thread-pool checks run in a fresh interpreter, because the pool starts (and OpenMP reads its
settings) once per process, at ``import fastnet``. The transfer checks: every host-device copy
goes through ``Device.to_host`` / ``Device.upload``, counted on the cuda device and free on the
cpu, and a Python scalar operand is uploaded once per (value, dtype) (``Device.constant``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import numpy as np
import pytest

import fastnet

# 100 small parallel Adam updates at 2 threads, each followed by a 20 ms sleep; prints the layer,
# the process's CPU time over the loop's wall time, and what OMP_WAIT_POLICY is after the import.
# The updates are as small as the CPU policy runs in parallel, so each one wakes Numba's pool.
IDLE_CPU_SCRIPT = """
import os, resource, time
import numpy as np, numba
import fastnet
from fastnet.kernels import optim
from fastnet.kernels._cpu import PARALLEL_MIN_ELEMENTS, parallel_pays
policy_after_import = os.environ.get("OMP_WAIT_POLICY")
fastnet.set_num_threads(2)
assert parallel_pays(PARALLEL_MIN_ELEMENTS)
p, g, m, v = (np.ones(PARALLEL_MIN_ELEMENTS, np.float32) for _ in range(4))
def step():
    optim.adam_step_cpu(p, g, m, v, step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                        weight_decay=0.0, decoupled=False)
step()
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(100):
    step()
    time.sleep(0.02)
after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
print(numba.threading_layer(), cpu / wall, policy_after_import)
"""


def run_script(**env_changes: str) -> tuple[str, float, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")
    }
    env.update(env_changes)
    out = subprocess.run(
        [sys.executable, "-c", IDLE_CPU_SCRIPT], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], float(out[1]), out[2]


@pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 cores for a second kernel thread"
)
def test_idle_kernel_threads_sleep_and_the_environment_is_left_as_it_was():
    """Spinning OpenMP threads burn a core through every sleep (CPU/wall above 1, with ACTIVE);
    threads that spin a moment after each kernel and then sleep (the runtime's default, which
    fastnet keeps) cost the updates and a few ms of spinning each, well below 1 over 20 ms pauses.
    A loaded machine lowers the ratio, never raises it. IDLE_CPU_SCRIPT prints the ratio (run it
    with ``python -c``)."""
    layer, cpu_per_wall, policy = run_script()
    if layer != "omp":
        pytest.skip(f"Numba runs its {layer} threading layer here, not OpenMP")
    assert policy == "None", (
        "OMP_WAIT_POLICY must not outlive the pool's start (PyTorch would read it)"
    )
    assert cpu_per_wall < 0.8, (
        f"kernel threads used {cpu_per_wall:.2f} s of CPU a second while idle"
    )


@pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 cores for a second kernel thread"
)
def test_a_wait_policy_the_user_set_is_kept():
    """ACTIVE (spin without end) also shows that the measurement above tells spinning from
    sleeping."""
    layer, cpu_per_wall, policy = run_script(OMP_WAIT_POLICY="ACTIVE")
    assert policy == "ACTIVE"
    if os.getloadavg()[0] > 1.0:  # other work (a parallel test run) takes the spinner's core
        pytest.skip("the machine is busy: a spinning thread gets less than a core")
    if layer == "omp":
        assert cpu_per_wall > 0.8, (
            f"spinning threads measured only {cpu_per_wall:.2f} s of CPU a second"
        )


def test_device_empty_recycles_large_host_buffers_and_not_small_ones():
    from fastnet.backend import CPU
    from fastnet.kernels._cuda import CACHED_BUFFER_BYTES

    large = CPU.empty((CACHED_BUFFER_BYTES // 4 + 3,), np.float32)
    address = large.ctypes.data
    del large
    again = CPU.empty((CACHED_BUFFER_BYTES // 4 + 3,), np.float32)
    assert (
        again.ctypes.data == address and again.dtype == np.float32
    )  # the same memory, not faulted in anew
    kept = CPU.empty((CACHED_BUFFER_BYTES // 4 + 3,), np.float32)
    assert kept.ctypes.data != again.ctypes.data  # in use: never handed out twice
    small = CPU.empty((3, 5), np.float64)
    assert small.shape == (3, 5) and small.dtype == np.float64 and small.base is None


needs_cuda = pytest.mark.skipif(
    not fastnet.backend.cuda_is_available(), reason="needs the cuda device (GPU or simulator)"
)


def test_cpu_transfers_are_free_views_and_not_counted(rng):
    from fastnet.backend import CPU

    values = rng.standard_normal((3, 5))
    assert CPU.to_host(values) is values
    assert CPU.upload(values) is values  # already a C-contiguous host array: nothing to copy
    assert CPU.to_host(np.float32(2.5)).shape == ()
    assert CPU.transfers.to_host == CPU.transfers.to_device == 0


@needs_cuda
def test_cuda_transfers_copy_and_count(rng):
    cuda = fastnet.backend.get_device("cuda")
    cuda.transfers.reset()
    host = rng.standard_normal((3, 5)).astype(np.float32)
    on_device = cuda.upload(host)
    assert cuda.transfers.to_device == 1 and cuda.transfers.to_host == 0
    back = cuda.to_host(on_device)
    assert cuda.transfers.to_host == 1
    np.testing.assert_array_equal(back, host)
    back[0, 0] = np.nan  # copies both ways (on a GPU they must be), even in the simulator
    host[0, 1] = np.nan
    assert not np.isnan(cuda.to_host(on_device)).any()
    cuda.asarray(on_device)  # an array of the device: converted there, no transfer
    cuda.asarray([1.5, 2.5])  # a list is host data: uploaded
    assert (cuda.transfers.to_host, cuda.transfers.to_device) == (2, 2)
    cuda.transfers.reset()
    assert (cuda.transfers.to_host, cuda.transfers.to_device) == (0, 0)


@needs_cuda
def test_a_scalar_constant_is_uploaded_once_per_value_and_dtype(monkeypatch):
    cuda = fastnet.backend.get_device("cuda")
    monkeypatch.setattr(cuda, "_constants", {})  # none cached by earlier tests
    cuda.transfers.reset()
    two = cuda.constant(2.0, np.float32)
    assert cuda.constant(2.0, np.float32) is two and cuda.constant(2, np.float32) is not two
    assert cuda.constant(2.0, np.float64) is not two
    assert two.shape == () and two.dtype == np.float32 and float(cuda.to_host(two)) == 2.0
    assert cuda.transfers.to_device == 3
    # keyed by the bits: -0.0 keeps its sign (1/x tells them apart), every NaN is one entry
    negative_zero = cuda.to_host(cuda.constant(-0.0, np.float32))
    assert np.signbit(negative_zero) and not np.signbit(
        cuda.to_host(cuda.constant(0.0, np.float32))
    )
    assert cuda.constant(float("nan"), np.float32) is cuda.constant(float("nan"), np.float32)
    if isinstance(two, np.ndarray):  # the simulator: a shared constant refuses writes
        with pytest.raises(ValueError, match="read-only"):
            two[...] = 3.0


@needs_cuda
def test_the_constant_cache_is_bounded(monkeypatch):
    from fastnet import backend

    cuda = backend.get_device("cuda")
    monkeypatch.setattr(backend, "MAX_CONSTANTS", 4)
    monkeypatch.setattr(cuda, "_constants", {})
    first = cuda.constant(0.5, np.float32)
    for value in range(1, 5):
        cuda.constant(value + 0.5, np.float32)
    assert len(cuda._constants) == 4  # the oldest, 0.5, made room
    assert cuda.constant(0.5, np.float32) is not first
    assert float(cuda.to_host(cuda.constant(4.5, np.float32))) == 4.5
