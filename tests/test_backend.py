"""The CPU backend's thread pool: started at import with OpenMP's idle threads asleep.

Each check runs in a fresh interpreter, because the pool starts (and OpenMP reads its settings)
once per process, at ``import fastnet``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import numpy as np
import pytest

# 200 small parallel Adam updates at 2 threads, each followed by a 2 ms sleep; prints the layer,
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
for _ in range(200):
    step()
    time.sleep(0.002)
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
    sleeping ones cost only the updates, well below 1. A loaded machine lowers the ratio, never
    raises it. IDLE_CPU_SCRIPT prints the ratio (run it with ``python -c``)."""
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
