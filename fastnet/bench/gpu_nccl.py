"""``gpu_check``'s ``nccl`` stage: the NCCL backend of :mod:`fastnet.distributed` on this GPU.

One rank (MPI's ``COMM_WORLD`` in a process started without ``mpiexec`` has size 1) builds
:class:`~fastnet.distributed.nccl.NCCLCommunicator` as ``init_process_group("nccl")`` does: the
GPU from the local rank, NCCL's unique id over MPI, ``ncclCommInitRank``. Then it reduces (sum,
mean) and broadcasts random float32 and float64 arrays of odd sizes, each enqueued on a
non-blocking CuPy stream between two kernels on that stream (a scaling before, a scaling after,
then the copy to the host), and checks the values against NumPy: every rank's array is the same
here, so a sum is ``size`` times it and a mean or a broadcast leaves it as it was. On one rank
that proves the binding's calls (pointers, counts, datatypes, ops, the stream) on real NCCL and
the stream ordering the backend relies on; ranks exchanging data need a GPU each, not here.

Under ``--simulate`` the same code runs on the tests' stand-ins for CuPy and its NCCL binding
(``tests/distributed/nccl_ranks.py`` in the checkout, as the ``tests`` stage finds its tests):
the backend's code path runs, NCCL itself does not.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CHECKOUT = Path(__file__).resolve().parents[2]
STANDINS = Path("tests") / "distributed" / "nccl_ranks.py"
CASES = [
    (op, dtype, size)
    for op in ("sum", "mean", "broadcast")
    for dtype in ("float32", "float64")
    for size in (1, 4099, 1_000_003)
]
# the largest relative error of x * 2 * 3 (two roundings at most) and of a one-rank reduction
TOLERANCE = {"float32": 1e-6, "float64": 1e-14}


def _bindings(options: argparse.Namespace) -> tuple[Any, Any, str]:
    """``(cupy, nccl, what they are)``: None and None (CuPy's own) on a GPU; the tests'
    stand-ins under ``--simulate``."""
    if not options.simulate:
        return None, None, "CuPy's cupy.cuda.nccl"
    path = CHECKOUT / STANDINS
    if not path.is_file():
        raise FileNotFoundError(
            f"no {STANDINS} beside this fastnet ({CHECKOUT}): install it from its checkout "
            "(pip install -e) to run the simulated NCCL stage"
        )
    spec = importlib.util.spec_from_file_location("nccl_ranks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cupy, nccl = module.standins(device_count=1)
    return cupy, nccl, f"the stand-ins of {STANDINS} (simulated: NCCL itself did not run)"


def nccl(options: argparse.Namespace, record: Callable[[dict], None]) -> str:
    from ..distributed.nccl import NCCLCommunicator

    cupy, binding, source = _bindings(options)
    start = time.perf_counter()
    comm = NCCLCommunicator(nccl=binding, cupy=cupy)
    cupy = comm.cupy
    record(
        {
            "bindings": source,
            "communicator": comm.describe(),
            "setup_seconds": time.perf_counter() - start,
            "current_device": cupy.cuda.Device().id,
        }
    )
    rng = np.random.default_rng()
    checks: list[dict] = []
    try:
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            for op, dtype, size in CASES:
                host = (rng.uniform(0.5, 2.0, size) * rng.choice([-1.0, 1.0], size)).astype(dtype)
                device = cupy.asarray(host)
                device *= 2.0  # a kernel before the collective, on the same stream
                if op == "broadcast":
                    comm.broadcast(device, 0)
                else:
                    comm.allreduce(device, op)
                result = (device * 3.0).get()  # a kernel after it, then the copy, which waits
                expected = host.astype(np.float64) * 6.0 * (comm.size if op == "sum" else 1)
                error = float(np.max(np.abs(result - expected) / np.abs(expected)))
                checks.append(
                    {
                        "op": op,
                        "dtype": dtype,
                        "size": size,
                        "max_rel_error": error,
                        "ok": error <= TOLERANCE[dtype],
                    }
                )
                record({"checks": checks})
    finally:
        comm.close()
    ok = comm.device_id == cupy.cuda.Device().id and all(check["ok"] for check in checks)
    return "ok" if ok else "failed"
