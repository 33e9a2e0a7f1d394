"""The Python side of a CUDA kernel launch: what each ``*_cuda`` launcher costs before the GPU
does any work (argument checks, output allocation, grid sizing, the launch call itself).

It runs in Numba's CUDA simulator (no GPU needed), with each family's ``launch`` replaced by a
call that only counts: what remains is exactly the launcher code that runs on a real GPU before
Numba's own dispatch (which adds its argument typing and the driver call on top; see
kernels/_cuda.py for how the launch path avoids synchronisations and rebuilt objects).

    python benchmarks/launch_overhead.py
"""

from __future__ import annotations

import functools
import os
import sys
import timeit

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np

from fastnet.kernels import conv, matmul, norm, optim, pool, softmax, softmax_xent


def cases(rng: np.random.Generator) -> list[tuple[str, object, tuple, dict]]:
    x = rng.standard_normal((64, 32, 14, 14)).astype(np.float32)
    cols = conv.im2col_cpu(x, (3, 3), (1, 1), (1, 1))
    logits = rng.standard_normal((256, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 256)
    param = rng.standard_normal(100_000).astype(np.float32)
    rows = rng.standard_normal((512, 128)).astype(np.float32)
    pooled, argmax = pool.maxpool2d_forward_cpu(x, (2, 2), (2, 2), (0, 0))
    return [
        ("matmul 512x128 @ 128x128", matmul.matmul_cuda, (rows, rows[:128]), {}),
        ("im2col 64x32x14x14 3x3", conv.im2col_cuda, (x, (3, 3), (1, 1), (1, 1)), {}),
        ("col2im 64x32x14x14 3x3", conv.col2im_cuda, (cols, x.shape, (3, 3), (1, 1), (1, 1)), {}),
        ("maxpool2d forward", pool.maxpool2d_forward_cuda, (x, (2, 2), (2, 2), (0, 0)), {}),
        (
            "maxpool2d backward",
            pool.maxpool2d_backward_cuda,
            (pooled, argmax, x.shape, (2, 2), (2, 2), (0, 0)),
            {},
        ),
        ("softmax_xent 256x10", softmax_xent.softmax_xent_cuda, (logits, labels), {}),
        (
            "adam_step 100k",
            optim.adam_step_cuda,
            (param, param.copy(), param.copy(), param.copy()),
            dict(
                step=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=True
            ),
        ),
        ("softmax forward 512x128", softmax.softmax_forward_cuda, (rows,), {}),
        (
            "layernorm forward 512x128",
            norm.layernorm_forward_cuda,
            (rows, rows[0].copy(), rows[1].copy()),
            {},
        ),
    ]


def main() -> int:
    launches = []

    def counted_launch(kernel, blocks, threads, *args):
        launches.append(kernel)

    for module in (conv, matmul, norm, optim, pool, softmax, softmax_xent):
        module.launch = counted_launch
    print(f"{'launcher':<28} {'launches':>8} {'µs per call':>12}")
    for name, launcher, args, kwargs in cases(np.random.default_rng(0)):
        launches.clear()
        launcher(*args, **kwargs)
        per_call = len(launches)
        calls = 2000
        call = functools.partial(launcher, *args, **kwargs)
        seconds = min(timeit.repeat(call, number=calls, repeat=5)) / calls
        print(f"{name:<28} {per_call:>8} {seconds * 1e6:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
