"""From what size a CPU kernel's parallel driver beats its serial one: the measurement behind
``kernels/_cpu.py``'s ``PARALLEL_MIN_ELEMENTS``.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/parallel_threshold.py \\
        [--threads 2] [--min-log2 12] [--max-log2 24] [--rounds 5] [--only TEXT]

Each kernel is called through its public op (argument checks and allocation included, as a layer
calls it) with the CPU policy forced to the serial and then to the parallel driver, at sizes of
about 2^12 to 2^24 elements: the work size the policy is asked about (cols for im2col and col2im,
tile entries for Winograd, the input for ReLU, max-pool and the optimizer step, the logits for the
softmaxes). Per kernel it prints the best time per call of each driver and the smallest size from
which the parallel driver is faster at every larger size too. A kernel whose family has no
``CpuKernel`` (not converted to the policy) is skipped.

Then the calls conv2d makes on the CPU, one workspace chunk of images at a time
(``_cpu.images_per_chunk``), timed the same way: whether the parallel drivers would pay there.

A script, not a test: timings are for reading. The machine should be otherwise idle; repeat runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import fastnet
from fastnet.backend import CPU
from fastnet.kernels import _cpu
from fastnet.kernels._cpu import CpuKernel

Call = Callable[[], Any]
# A kernel at about n elements: (the call, the elements it works on, the shape it ran).
Maker = Callable[[int], tuple[Call, int, str]]


def _random(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32)


@contextlib.contextmanager
def forced(driver: str) -> Iterator[None]:
    """Every CpuKernel call takes ``driver`` ("serial" or "parallel") whatever its size."""
    policy = _cpu.parallel_pays
    _cpu.parallel_pays = lambda elements: driver == "parallel"
    try:
        yield
    finally:
        _cpu.parallel_pays = policy


def uses_policy(family_module: str) -> bool:
    module = importlib.import_module(f"fastnet.kernels.{family_module}")
    return any(isinstance(value, CpuKernel) for value in vars(module).values())


def best_seconds(call: Call, rounds: int, budget: float = 0.02) -> float:
    """The best time per call over ``rounds`` rounds of enough calls to fill ``budget`` seconds."""
    call()
    start = time.perf_counter()
    call()
    calls = max(1, int(budget / max(time.perf_counter() - start, 1e-7)))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def compare(call: Call, rounds: int) -> tuple[float, float]:
    """(serial, parallel) best seconds per call, the two drivers' rounds interleaved."""
    serial = parallel = float("inf")
    for _ in range(rounds):
        with forced("serial"):
            serial = min(serial, best_seconds(call, 1))
        with forced("parallel"):
            parallel = min(parallel, best_seconds(call, 1))
    return serial, parallel


# ----------------------------------------------------------------------------- the kernels
def _planes(n: int, per_plane: int, max_channels: int = 16) -> tuple[int, int]:
    """(N, C) with about n / per_plane planes in all."""
    planes = max(1, round(n / per_plane))
    channels = min(planes, max_channels)
    return max(1, round(planes / channels)), channels


def relu_forward(n: int) -> tuple[Call, int, str]:
    x = _random((n,))
    return (lambda: CPU.relu_forward(x)), n, f"{n}"


def im2col(n: int) -> tuple[Call, int, str]:
    batch, channels = _planes(n, 9 * 16 * 16)
    x = _random((batch, channels, 16, 16))
    return (lambda: CPU.im2col(x, 3, 1, 1)), batch * channels * 9 * 256, f"{x.shape} k3p1"


def col2im(n: int) -> tuple[Call, int, str]:
    batch, channels = _planes(n, 9 * 16 * 16)
    shape = (batch, channels, 16, 16)
    cols = _random((channels * 9, batch * 256))
    return (lambda: CPU.col2im(cols, shape, 3, 1, 1)), cols.size, f"{shape} k3p1"


def winograd_input(n: int) -> tuple[Call, int, str]:
    batch, channels = _planes(n, 16 * 8 * 8)
    x = _random((batch, channels, 16, 16))
    tiles = CPU.winograd_tiles(channels, batch * 64, np.float32, x)
    return (lambda: CPU.winograd_input(x, 1, out=tiles)), tiles.size, f"{x.shape} p1"


def winograd_output(n: int) -> tuple[Call, int, str]:
    batch, channels = _planes(n, 16 * 8 * 8)
    tiles = CPU.winograd_tiles(channels, batch * 64, np.float32, np.empty(0, np.float32))
    tiles[...] = _random(tiles.shape)
    shape = (batch, channels, 16, 16)
    return (lambda: CPU.winograd_output(tiles, None, shape)), tiles.size, f"{shape}"


def maxpool_forward(n: int) -> tuple[Call, int, str]:
    batch, channels = _planes(n, 28 * 28, 32)
    x = _random((batch, channels, 28, 28))
    return (lambda: CPU.maxpool2d_forward(x, 2, 2, 0)), x.size, f"{x.shape} 2x2"


def maxpool_backward(n: int) -> tuple[Call, int, str]:
    batch, channels = _planes(n, 28 * 28, 32)
    shape = (batch, channels, 28, 28)
    _, argmax = CPU.maxpool2d_forward(_random(shape), 2, 2, 0)
    dy = _random(argmax.shape, 1)
    return (
        (lambda: CPU.maxpool2d_backward(dy, argmax, shape, 2, 2, 0)),
        batch * channels * 784,
        f"{shape} 2x2",
    )


def adam_step(n: int) -> tuple[Call, int, str]:
    param, grad, exp_avg, exp_avg_sq = (_random((n,), seed) for seed in range(4))
    exp_avg_sq = np.abs(exp_avg_sq)
    options = {
        "lr": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "decoupled": False,
    }
    return (lambda: CPU.adam_step(param, grad, exp_avg, exp_avg_sq, step=1, **options)), n, f"{n}"


def softmax_forward(n: int) -> tuple[Call, int, str]:
    x = _random((max(1, n // 64), 64))
    return (lambda: CPU.softmax_forward(x)), x.size, f"{x.shape}"


def softmax_xent(n: int) -> tuple[Call, int, str]:
    logits = _random((max(1, n // 1000), 1000))
    labels = np.random.default_rng(1).integers(0, 1000, logits.shape[0])
    return (lambda: CPU.softmax_xent(logits, labels)), logits.size, f"{logits.shape}"


# (name, the family module whose CpuKernels it runs, the maker)
KERNELS: tuple[tuple[str, str, Maker], ...] = (
    ("relu_forward", "activation", relu_forward),
    ("im2col", "conv", im2col),
    ("col2im", "conv", col2im),
    ("winograd_input", "winograd", winograd_input),
    ("winograd_output", "winograd", winograd_output),
    ("maxpool_forward", "pool", maxpool_forward),
    ("maxpool_backward", "pool", maxpool_backward),
    ("adam_step", "optim", adam_step),
    ("softmax_forward", "softmax", softmax_forward),
    ("softmax_xent", "softmax_xent", softmax_xent),
)


def crossover(rows: list[tuple[int, float, float]]) -> int | None:
    """The smallest size from which the parallel driver is faster at every measured size."""
    found = None
    for elements, serial, parallel in reversed(rows):
        if parallel >= serial:
            break
        found = elements
    return found


def threshold_table(args: argparse.Namespace) -> None:
    print(
        f"{'kernel':18s} {'elements':>10s} {'serial us':>11s} {'parallel us':>12s} "
        f"{'speed-up':>8s}  shape"
    )
    summary = []
    for name, family, make in KERNELS:
        if args.only and args.only not in name:
            continue
        if not uses_policy(family):
            print(f"{name:18s} skipped: {family} has no CpuKernel")
            continue
        rows = []
        for log2 in range(args.min_log2, args.max_log2 + 1):
            call, elements, shape = make(1 << log2)
            serial, parallel = compare(call, args.rounds)
            rows.append((elements, serial, parallel))
            print(
                f"{name:18s} {elements:10d} {serial * 1e6:11.1f} {parallel * 1e6:12.1f} "
                f"{serial / parallel:8.2f}  {shape}",
                flush=True,
            )
        summary.append((name, crossover(rows)))
    print("\nparallel faster from (elements; at every larger size too):")
    for name, elements in summary:
        text = (
            "never, in the sizes measured"
            if elements is None
            else f"{elements} (2^{np.log2(elements):.1f})"
        )
        print(f"  {name:18s} {text}")


# ----------------------------------------------------------------------------- conv2d's chunks
# (key, in channels, out channels, image side): 3x3 stride-1 "same" layers of the shipped models.
CONV_LAYERS = (
    ("mnist.conv1", 1, 32, 28),
    ("mnist.conv2", 32, 64, 14),
    ("resnet.conv", 64, 64, 16),
    ("resnet20.stage1", 16, 16, 32),
)
WINOGRAD_POSITIONS = 16


def chunk_calls() -> Iterator[tuple[str, int, Call]]:
    """(label, elements, call) of every kernel call conv2d makes on one workspace chunk."""
    for key, channels, out_channels, side in CONV_LAYERS:
        plane = side * side
        images = _cpu.images_per_chunk((channels * 9 + out_channels) * plane * 4)
        x = _random((images, channels, side, side))
        cols = CPU.im2col(x, 3, 1, 1)
        label = f"{key} chunk of {images}"
        yield f"im2col {label}", cols.size, lambda x=x: CPU.im2col(x, 3, 1, 1)
        yield (
            f"col2im {label}",
            cols.size,
            lambda cols=cols, shape=x.shape: CPU.col2im(cols, shape, 3, 1, 1),
        )
        if channels < 16:  # conv2d takes Winograd from 16 input channels
            continue
        tiles_per_image = ((side + 1) // 2) ** 2
        images = _cpu.images_per_chunk(
            WINOGRAD_POSITIONS * (channels + out_channels) * tiles_per_image * 4
        )
        x = _random((images, channels, side, side))
        v = CPU.winograd_tiles(channels, images * tiles_per_image, np.float32, x)
        m = CPU.winograd_tiles(out_channels, images * tiles_per_image, np.float32, x)
        m[...] = _random(m.shape)
        y_shape = (images, out_channels, side, side)
        dy = _random(y_shape)
        label = f"{key} chunk of {images}"
        yield f"winograd_input {label}", v.size, lambda x=x, v=v: CPU.winograd_input(x, 1, out=v)
        yield (
            f"winograd_output {label}",
            m.size,
            lambda m=m, y_shape=y_shape: CPU.winograd_output(m, None, y_shape),
        )
        yield (
            f"winograd_output_grad {label}",
            m.size,
            lambda dy=dy, m=m: CPU.winograd_output_grad(dy, out=m),
        )
        yield (
            f"winograd_input_grad {label}",
            v.size,
            lambda v=v, shape=x.shape: CPU.winograd_input_grad(v, shape, 1),
        )


def chunk_table(args: argparse.Namespace) -> None:
    print(f"\nconv2d's calls on one {_cpu.CONV_WORKSPACE_BYTES}-byte workspace chunk:")
    print(f"{'call':46s} {'elements':>9s} {'serial us':>10s} {'parallel us':>12s} {'speed-up':>8s}")
    for label, elements, call in chunk_calls():
        if args.only and args.only not in label:
            continue
        serial, parallel = compare(call, args.rounds)
        print(
            f"{label:46s} {elements:9d} {serial * 1e6:10.1f} {parallel * 1e6:12.1f} "
            f"{serial / parallel:8.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-log2", type=int, default=12)
    parser.add_argument("--max-log2", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", metavar="TEXT", help="only the kernels whose name contains TEXT")
    parser.add_argument("--no-chunks", action="store_true", help="skip conv2d's chunk-sized calls")
    args = parser.parse_args()
    fastnet.set_num_threads(args.threads)
    print(f"{args.threads} threads; PARALLEL_MIN_ELEMENTS = {_cpu.PARALLEL_MIN_ELEMENTS}")
    threshold_table(args)
    if not args.no_chunks:
        chunk_table(args)


if __name__ == "__main__":
    main()
