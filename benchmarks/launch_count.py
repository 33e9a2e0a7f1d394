"""Our kernel launches, device reads and uploads per MNIST CNN training step on the cuda device,
counted in Numba's simulator without running a kernel.

    python benchmarks/launch_count.py [ROOT]      # ROOT: a checkout to import fastnet from

Every family's ``launch`` is replaced by a counter that runs nothing: which kernels a step
launches depends on the shapes only, because the host reads no value inside a step, so the counts
are those of a real GPU step (the outputs are garbage, and unread). The step is the training
loop's: forward, cross-entropy, backward, SGD with Nesterov momentum and the device-side skip flag,
at batch 64. CuPy's own elementwise kernels are not ours and are not counted here
(``scripts/gpu_check.sh`` counts every kernel on a GPU).
"""

from __future__ import annotations

import collections
import importlib
import os
import sys
import warnings

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")  # before numba.cuda is imported
if len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])

import numpy as np

import fastnet as fn
import fastnet.functional as F
from fastnet.kernels._contract import family_module_names


def main() -> None:
    warnings.simplefilter("ignore", RuntimeWarning)  # no kernel runs: the values are garbage
    launched: collections.Counter = collections.Counter()

    def count(kernel, blocks, threads, *args):
        launched[getattr(kernel, "__name__", None) or kernel.py_func.__name__] += 1

    for name in family_module_names():
        module = importlib.import_module(name)
        if hasattr(module, "launch"):
            module.launch = count
    cuda = fn.backend.get_device("cuda")
    model = fn.models.create("cnn").to("cuda")
    optimizer = fn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    rng = np.random.default_rng(0)
    images = fn.tensor(rng.standard_normal((64, 1, 28, 28)).astype(np.float32), device="cuda")
    labels = fn.tensor(rng.integers(0, 10, 64), device="cuda")
    never = cuda.xp.zeros(1, bool)
    for _ in range(2):  # the second step: after the optimizer built its buffers
        launched.clear()
        cuda.transfers.reset()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step(skip_if=never)
    print(f"fastnet from {os.path.dirname(os.path.dirname(fn.__file__))}")
    print(
        f"MNIST CNN training step, batch 64: {sum(launched.values())} launches of our kernels, "
        f"{cuda.transfers.to_host} device reads, {cuda.transfers.to_device} uploads"
    )
    for kernel, times in sorted(launched.items()):
        print(f"  {times:3d}  {kernel}")


if __name__ == "__main__":
    main()
