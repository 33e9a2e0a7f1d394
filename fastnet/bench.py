"""Benchmarks: every kernel against its peers and the machine's own ceilings, and training
throughput against PyTorch. The library behind ``fastnet bench`` and the suites in benchmarks/.

Vocabulary:

* **ceilings**: what this machine measured, with the threads pinned to the count the benchmarks
  use: a large float32 GEMM through the BLAS NumPy links (GFLOP/s; cuBLAS through CuPy on a GPU)
  and a large copy (GB/s, bytes read + bytes written). Their quotient, the *machine balance*
  (FLOP per byte), splits kernels into compute-bound and memory-bound.
* **case**: one kernel family at one realistic training shape: its FLOPs, the minimum bytes it must
  move (every input read once, every output written once), and its implementations: ``fastnet``
  (ours, through the device's kernel contract) and the peers, ``numpy`` (the plain NumPy
  formulation of the same computation; ``cupy`` on a GPU), ``torch`` (PyTorch's CPU op, when
  PyTorch is installed), ``cublas`` (for matmul on a GPU). Before anything is timed, every peer's
  result is compared with ours: a benchmark of a different computation is worthless.
* **row**: a case's timings. ``time`` is our best time per call; GFLOP/s and GB/s divide the FLOPs
  and the minimum bytes by it; ``% ceiling`` is the fraction of the GEMM ceiling for a
  compute-bound case (arithmetic intensity above the machine balance) and of the copy ceiling for
  a memory-bound one; ``vs PEER`` is the peer's time divided by ours (above 1: fastnet is faster).

Entry points: :func:`add_arguments` and :func:`run` (``fastnet bench``), :func:`main` (the same
from an argv list), :func:`case_specs`, :func:`build_and_verify`, :func:`measure_ceilings`,
:func:`pinned_threads`, :func:`rates`, :func:`make_row`, :func:`format_table` (shared with the
pytest-benchmark suites), and :func:`measure_training` / :func:`train_models` (``--train``).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numba
import numpy as np
from numba import njit, prange

from . import nn as fnn
from .functional import conv2d
from .functional.core import Conv2d, Conv2dWinograd, conv_image_chunks
from .tensor import Tensor, no_grad
from .backend import Device, conv_output_shape, get_device, get_num_threads, set_num_threads, to_numpy
from .kernels import _cuda

OURS = "fastnet"
FLOAT32_BYTES = 4
INDEX_BYTES = 4  # max-pool's argmax is int32
LABEL_BYTES = 8  # labels are int64
RELATIVE_TOLERANCE = 1e-4  # float32 results computed in different orders agree to ~1e-6


def optional_torch() -> Any:
    """The ``torch`` module, or None when PyTorch is not installed (``pip install 'fastnet[bench]'``)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


# ===================================================================== threads and ceilings
@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """fastnet (its Numba kernels and NumPy's BLAS, :func:`fastnet.set_num_threads`), every OpenMP
    runtime (threadpoolctl) and PyTorch all limited to ``threads`` within; restored after."""
    from threadpoolctl import threadpool_limits

    torch = optional_torch()
    fastnet_before = get_num_threads()
    torch_before = torch.get_num_threads() if torch else None
    set_num_threads(threads)  # validates the count
    if torch:
        torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="openmp"):
            yield
    finally:
        set_num_threads(fastnet_before)
        if torch:
            torch.set_num_threads(torch_before)


def blas_description() -> str:
    """The BLAS NumPy uses, with the kernel architecture it picked, as threadpoolctl reports it."""
    from threadpoolctl import threadpool_info

    found = [f"{info.get('internal_api')} {info.get('version')} ({info.get('architecture', '?')} kernels, "
             f"{info.get('threading_layer', '?')}, {_threads_text(info.get('num_threads', 0))})"
             for info in threadpool_info() if info.get("user_api") == "blas"]
    return "; ".join(found) or "no BLAS found by threadpoolctl"


def _threads_text(threads: int) -> str:
    return f"{threads} thread" + ("" if threads == 1 else "s")


@dataclass(frozen=True)
class Ceilings:
    """The machine's measured ceilings and how they were measured."""

    device: str
    threads: int
    gemm_gflops: float
    copy_gbs: float
    library: str

    @property
    def balance(self) -> float:
        """FLOP per byte at which a kernel turns from memory-bound to compute-bound."""
        return self.gemm_gflops / self.copy_gbs

    def describe(self) -> str:
        return (f"{self.device}, {_threads_text(self.threads)}: GEMM {self.gemm_gflops:.1f} GFLOP/s ({self.library}); "
                f"copy {self.copy_gbs:.1f} GB/s (read + write); balance {self.balance:.1f} FLOP/byte")


@njit(parallel=True, cache=True)
def _threaded_copy(source, destination):
    for index in prange(source.size):
        destination[index] = source[index]


def measure_ceilings(device: Device, threads: int, quick: bool = False) -> Ceilings:
    """GEMM and copy ceilings of ``device``; call inside :func:`pinned_threads` on the CPU.

    The GEMM is float32 ``n x n @ n x n`` (n = 2048 on the CPU, 8192 on a GPU); the copy moves a
    buffer far larger than the last-level cache (128 MiB on the CPU, 1 GiB on a GPU). On the CPU
    the copy is the better of NumPy's single-threaded ``copyto`` and a ``threads``-wide Numba copy.
    """
    xp, on_gpu = device.xp, device.name == "cuda"
    timer = time_cuda if on_gpu else time_cpu
    side = 256 if quick else (8192 if on_gpu else 2048)
    copy_bytes = (1 << 22) if quick else ((1 << 30) if on_gpu else (1 << 27))
    rng = np.random.default_rng(0)
    a, b = (xp.asarray(rng.standard_normal((side, side), dtype=np.float32)) for _ in range(2))
    product = xp.empty((side, side), np.float32)
    gemm = timer({"gemm": lambda: xp.matmul(a, b, out=product)}, quick=quick)["gemm"].best
    source = xp.asarray(rng.standard_normal(copy_bytes // FLOAT32_BYTES, dtype=np.float32))
    destination = xp.zeros_like(source)  # zeros, not empty: no page faults inside the timing
    copies = {"copyto": lambda: xp.copyto(destination, source)}
    if not on_gpu:
        copies["threaded"] = lambda: _threaded_copy(source, destination)
    copy = min(timing.best for timing in timer(copies, quick=quick).values())
    library = f"cuBLAS via CuPy on {_gpu_name()}" if on_gpu else blas_description()
    return Ceilings(device.name, threads, 2 * side**3 / gemm / 1e9, 2 * source.nbytes / copy / 1e9, library)


# ===================================================================== timers
@dataclass(frozen=True)
class Timing:
    """Seconds per call: the fastest round and the median round."""

    best: float
    median: float
    rounds: int
    calls_per_round: int


def time_cpu(runs: dict[str, Callable[[], Any]], quick: bool = False, rounds: int = 10,
             seconds_each: float = 1.0) -> dict[str, Timing]:
    """Time each of ``runs``: warm up (compiles, touches memory), then ``rounds`` rounds in which
    every run in turn makes enough calls to fill ``seconds_each / rounds``; a round's mean per call
    is one sample. Interleaving spreads interference from other processes over all runs alike."""
    if quick:
        rounds, seconds_each = 1, 0.0
    calls = {}
    for name, run in runs.items():
        run()
        start = time.perf_counter()
        run()
        calls[name] = max(1, round(seconds_each / rounds / max(time.perf_counter() - start, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                run()
            samples[name].append((time.perf_counter() - start) / calls[name])
    return {name: Timing(min(values), statistics.median(values), rounds, calls[name]) for name, values in samples.items()}


def time_cuda(runs: dict[str, Callable[[], Any]], quick: bool = False, rounds: int = 30) -> dict[str, Timing]:
    """Time each of ``runs`` on the GPU: CUDA events around every call on the current stream, after
    three warm-up calls, with the L2 cache flushed before each call (operands come from memory, as
    in training); the runs take turns, as in :func:`time_cpu`."""
    import cupy

    if quick:
        rounds = 2
    flush = cupy.empty(2 * cupy.cuda.Device().attributes["L2CacheSize"], dtype=cupy.uint8)
    for run in runs.values():
        for _ in range(3):
            run()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            flush.fill(1)
            start.record()
            run()
            stop.record()
            stop.synchronize()
            samples[name].append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return {name: Timing(min(values), statistics.median(values), rounds, 1) for name, values in samples.items()}


def cuda_refusal() -> str | None:
    """Why ``--device cuda`` cannot be timed here, or None when a real GPU is present."""
    if _cuda.simulating():
        return ("fastnet bench: refusing to time the CUDA simulator (NUMBA_ENABLE_CUDASIM=1): it runs one Python "
                "thread per CUDA thread, so its timings say nothing about a GPU. Unset NUMBA_ENABLE_CUDASIM and run "
                "on a machine with an NVIDIA GPU.")
    if not _cuda.gpu_available():
        return ("fastnet bench: no CUDA GPU found (CuPy missing or cupy.is_available() is False): "
                "--device cuda needs an NVIDIA GPU and 'pip install fastnet[cuda]'.")
    return None


def _gpu_name() -> str:
    import cupy

    return cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()


# ===================================================================== cases
@dataclass(frozen=True)
class CaseInfo:
    """What a row needs to know about its case: the work and the traffic."""

    family: str
    label: str
    flops: float
    bytes_moved: float
    fixed_bound: str | None = None  # e.g. "latency" for per-op overhead; else from intensity

    @property
    def name(self) -> str:
        return f"{self.family} {self.label}"


@dataclass
class Implementation:
    """One way to compute a case; ``comparable`` maps its result to NumPy arrays laid out as ours."""

    run: Callable[[], Any]
    comparable: Callable[[Any], Sequence[Any]] = lambda result: result if isinstance(result, tuple) else (result,)


@dataclass
class Case:
    info: CaseInfo
    implementations: dict[str, Implementation]  # OURS first


@dataclass(frozen=True)
class CaseSpec:
    """A case before its buffers exist: ``build(device)`` allocates them."""

    family: str
    key: str  # short, no spaces: used in pytest ids
    shape: str
    build: Callable[[Device], Case]
    implementations: tuple[str, ...]  # the names on the CPU, OURS first

    @property
    def id(self) -> str:
        return f"{self.family}-{self.key}"


class MismatchError(AssertionError):
    """A peer (or a framework) computed something other than fastnet did."""


def _host_copy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().numpy().copy()
    return np.array(to_numpy(value), copy=True)


def relative_error(got: Any, expected: Any) -> float:
    """max |got - expected| / max |expected| (exact equality required of integer arrays)."""
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        return math.inf
    if expected.dtype.kind in "iu":
        return 0.0 if np.array_equal(got, expected) else math.inf
    scale = max(float(np.max(np.abs(expected), initial=0.0)), np.finfo(np.float32).tiny)
    return float(np.max(np.abs(got.astype(np.float64) - expected), initial=0.0)) / scale


def verify(case: Case, tolerance: float = RELATIVE_TOLERANCE) -> None:
    """Run every implementation once and raise :class:`MismatchError` unless all agree with ours."""
    ours = case.implementations[OURS]
    expected = [_host_copy(value) for value in ours.comparable(ours.run())]
    for name, implementation in case.implementations.items():
        if name == OURS:
            continue
        got = [_host_copy(value) for value in implementation.comparable(implementation.run())]
        if len(got) != len(expected):
            raise MismatchError(f"{case.info.name}: {name} returned {len(got)} outputs, fastnet {len(expected)}")
        for index, (mine, theirs) in enumerate(zip(expected, got)):
            error = relative_error(theirs, mine)
            if not error <= tolerance:
                raise MismatchError(f"{case.info.name}: {name} differs from fastnet in output {index} "
                                    f"(shapes {theirs.shape} and {mine.shape}): relative error {error:.2e} > "
                                    f"{tolerance:.0e}; refusing to time a different computation")


def build_and_verify(spec: CaseSpec, device: Device) -> Case:
    case = spec.build(device)
    verify(case)
    return case


def _torch_for(device: Device) -> Any:
    """PyTorch for a CPU case (the installed build is the CPU one), else None."""
    return optional_torch() if device.name == "cpu" else None


def _plain_name(device: Device) -> str:
    return device.xp.__name__  # "numpy", or "cupy" for the same formulation on a GPU


def _random(device: Device, shape: tuple[int, ...], seed: int = 0) -> Any:
    return device.xp.asarray(np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32))


def _square(value: int) -> tuple[int, int]:
    return value, value


# --------------------------------------------------------------------- plain NumPy formulations
# Written as a NumPy user would write them, for any array module with NumPy's API (NumPy, CuPy).
def plain_im2col(x: Any, kernel: int, stride: int, padding: int) -> Any:
    """cols (C*K*K, N*OH*OW) through a padded copy and a strided window view."""
    xp = _cuda.array_module(x)
    padded = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = xp.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    n, channels, out_h, out_w = windows.shape[:4]
    return windows.transpose(1, 4, 5, 0, 2, 3).reshape(channels * kernel * kernel, n * out_h * out_w)


def plain_col2im(cols: Any, x_shape: tuple[int, ...], kernel: int, stride: int, padding: int) -> Any:
    """dx (N, C, H, W): each kernel offset's block of cols added onto a strided slice."""
    xp = _cuda.array_module(cols)
    n, channels, height, width = x_shape
    out_h, out_w = conv_output_shape(height, width, _square(kernel), _square(stride), _square(padding))
    padded = xp.zeros((n, channels, height + 2 * padding, width + 2 * padding), cols.dtype)
    blocks = cols.reshape(channels, kernel, kernel, n, out_h, out_w)
    for i in range(kernel):
        for j in range(kernel):
            padded[:, :, i:i + stride * out_h:stride, j:j + stride * out_w:stride] += blocks[:, i, j].transpose(1, 0, 2, 3)
    return padded[:, :, padding:padding + height, padding:padding + width]


def plain_conv2d(x: Any, weight: Any, stride: int, padding: int) -> Any:
    """y (N, OC, OH, OW) as one tensordot of the window view with the weights."""
    xp = _cuda.array_module(x)
    kernel = weight.shape[-1]
    padded = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = xp.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return xp.ascontiguousarray(xp.tensordot(windows, weight, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2))


def plain_softmax_xent(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(row losses, d mean loss / d logits) by a max-shifted softmax."""
    xp = _cuda.array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    rows = xp.arange(len(labels))
    row_losses = xp.log(sums[:, 0]) - shifted[rows, labels]
    dlogits = exp / sums
    dlogits[rows, labels] -= 1
    dlogits /= len(labels)
    return row_losses, dlogits


def plain_adam_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, step: int,
                    lr: float, beta1: float, beta2: float, eps: float) -> None:
    """Adam in place, one array expression per line of the algorithm."""
    xp = _cuda.array_module(param)
    exp_avg *= beta1
    exp_avg += (1 - beta1) * grad
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    param -= (lr / (1 - beta1**step)) * exp_avg / (xp.sqrt(exp_avg_sq / (1 - beta2**step)) + eps)


def plain_sgd_momentum_step(param: Any, grad: Any, buffer: Any, first_step: bool, lr: float, momentum: float) -> None:
    """SGD with momentum in place (PyTorch's: the buffer starts as the first gradient)."""
    if first_step:
        buffer[...] = grad
    else:
        buffer *= momentum
        buffer += grad
    param -= lr * buffer


def plain_maxpool_forward(x: Any, kernel: int) -> tuple[Any, Any]:
    """(y, argmax as h*W + w) of non-overlapping kernel x kernel windows (stride = kernel, no padding)."""
    xp = _cuda.array_module(x)
    n, channels, height, width = x.shape
    out_h, out_w = height // kernel, width // kernel
    windows = (x[:, :, :out_h * kernel, :out_w * kernel].reshape(n, channels, out_h, kernel, out_w, kernel)
               .transpose(0, 1, 2, 4, 3, 5).reshape(n, channels, out_h, out_w, kernel * kernel))
    offset = windows.argmax(axis=-1)
    y = xp.take_along_axis(windows, offset[..., None], axis=-1)[..., 0]
    rows = xp.arange(out_h)[:, None] * kernel + offset // kernel
    cols = xp.arange(out_w) * kernel + offset % kernel
    return y, (rows * width + cols).astype(np.int32)


def plain_maxpool_backward(dy: Any, argmax: Any, x_shape: tuple[int, ...]) -> Any:
    """dx: dy written at each argmax (an assignment suffices: the windows do not overlap)."""
    xp = _cuda.array_module(dy)
    n, channels, height, width = x_shape
    planes = n * channels
    dx = xp.zeros((planes, height * width), dy.dtype)
    dx[xp.arange(planes)[:, None], argmax.reshape(planes, -1)] = dy.reshape(planes, -1)
    return dx.reshape(x_shape)


def plain_batchnorm_forward(x: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any,
                            momentum: float, eps: float) -> Any:
    """y of training-mode batch norm over (N, H, W); the running statistics updated in place."""
    xp = _cuda.array_module(x)
    axes, shape = (0, 2, 3), (1, -1, 1, 1)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    count = x.size // x.shape[1]
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += (momentum * count / (count - 1)) * var
    scale = weight / xp.sqrt(var + eps)
    return x * scale.reshape(shape) + (bias - mean * scale).reshape(shape)


def plain_batchnorm_backward(dy: Any, x: Any, weight: Any, mean: Any, rstd: Any) -> tuple[Any, Any, Any]:
    """(dx, dweight, dbias) of training-mode batch norm from the saved mean and 1/std per channel."""
    axes, shape = (0, 2, 3), (1, -1, 1, 1)
    count = x.size // x.shape[1]
    xhat = (x - mean.reshape(shape)) * rstd.reshape(shape)
    dbias, dweight = dy.sum(axis=axes), (dy * xhat).sum(axis=axes)
    dx = (weight * rstd / count).reshape(shape) * (count * dy - dbias.reshape(shape) - xhat * dweight.reshape(shape))
    return dx, dweight, dbias


def plain_layernorm_forward(x: Any, weight: Any, bias: Any, eps: float) -> Any:
    """y of layer norm over the last axis."""
    xp = _cuda.array_module(x)
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) / xp.sqrt(x.var(axis=-1, keepdims=True) + eps) * weight + bias


def plain_layernorm_backward(dy: Any, x: Any, weight: Any, mean: Any, rstd: Any) -> tuple[Any, Any, Any]:
    """(dx, dweight, dbias) of layer norm from the saved mean and 1/std per row."""
    xhat = (x - mean[:, None]) * rstd[:, None]
    scaled = dy * weight
    dx = rstd[:, None] * (scaled - scaled.mean(axis=-1, keepdims=True)
                          - xhat * (scaled * xhat).mean(axis=-1, keepdims=True))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def plain_softmax_forward(x: Any) -> Any:
    xp = _cuda.array_module(x)
    exp = xp.exp(x - x.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def plain_softmax_backward(y: Any, dy: Any) -> Any:
    return y * (dy - (y * dy).sum(axis=-1, keepdims=True))


# --------------------------------------------------------------------- case builders
def _conv_label(x_shape: tuple[int, ...], kernel: int, stride: int, padding: int, out_channels: int = 0) -> str:
    out = f"->{out_channels}" if out_channels else ""
    return f"{'x'.join(map(str, x_shape))}{out} k{kernel}s{stride}p{padding}"


def _im2col_case(device: Device, key: str, x_shape: tuple, kernel: int, stride: int, padding: int) -> Case:
    x = _random(device, x_shape)
    n, channels, height, width = x_shape
    out_h, out_w = conv_output_shape(height, width, _square(kernel), _square(stride), _square(padding))
    cols_size = n * out_h * out_w * channels * kernel * kernel
    implementations = {
        OURS: Implementation(lambda: device.im2col(x, kernel, stride, padding)),
        _plain_name(device): Implementation(lambda: plain_im2col(x, kernel, stride, padding)),
    }
    torch = _torch_for(device)
    if torch:
        x_torch = torch.from_numpy(x)
        implementations["torch"] = Implementation(  # unfold's layout is (N, C*K*K, OH*OW): each image apart
            lambda: torch.nn.functional.unfold(x_torch, kernel, padding=padding, stride=stride),
            lambda cols: (cols.numpy().transpose(1, 0, 2).reshape(channels * kernel * kernel, -1),))
    info = CaseInfo("im2col", f"{key} {_conv_label(x_shape, kernel, stride, padding)}", 0.0,
                    FLOAT32_BYTES * (x.size + cols_size))
    return Case(info, implementations)


def _col2im_case(device: Device, key: str, x_shape: tuple, kernel: int, stride: int, padding: int) -> Case:
    n, channels, height, width = x_shape
    out_h, out_w = conv_output_shape(height, width, _square(kernel), _square(stride), _square(padding))
    patch = channels * kernel * kernel
    cols = _random(device, (patch, n * out_h * out_w))
    implementations = {
        OURS: Implementation(lambda: device.col2im(cols, x_shape, kernel, stride, padding)),
        _plain_name(device): Implementation(lambda: plain_col2im(cols, x_shape, kernel, stride, padding)),
    }
    torch = _torch_for(device)
    if torch:
        cols_torch = torch.from_numpy(np.ascontiguousarray(cols.reshape(patch, n, out_h * out_w).transpose(1, 0, 2)))
        implementations["torch"] = Implementation(
            lambda: torch.nn.functional.fold(cols_torch, (height, width), kernel, padding=padding, stride=stride))
    info = CaseInfo("col2im", f"{key} {_conv_label(x_shape, kernel, stride, padding)}", float(cols.size),
                    FLOAT32_BYTES * (cols.size + n * channels * height * width))
    return Case(info, implementations)


def _conv2d_case(device: Device, key: str, x_shape: tuple, out_channels: int, kernel: int, stride: int,
                 padding: int) -> Case:
    """Forward convolution through fastnet's conv2d (im2col and GEMMs a chunk of images at a time),
    with no autograd graph."""
    n, channels, height, width = x_shape
    out_h, out_w = conv_output_shape(height, width, _square(kernel), _square(stride), _square(padding))
    x = _random(device, x_shape)
    weight = _random(device, (out_channels, channels, kernel, kernel), seed=1)
    x_tensor, weight_tensor = Tensor._wrap(x, device), Tensor._wrap(weight, device)

    def ours() -> Any:
        with no_grad():
            return conv2d(x_tensor, weight_tensor, stride=stride, padding=padding).data

    implementations = {OURS: Implementation(ours),
                       _plain_name(device): Implementation(lambda: plain_conv2d(x, weight, stride, padding))}
    torch = _torch_for(device)
    if torch:
        x_torch, weight_torch = torch.from_numpy(x), torch.from_numpy(weight)
        implementations["torch"] = Implementation(
            lambda: torch.nn.functional.conv2d(x_torch, weight_torch, stride=stride, padding=padding))
    out_size = n * out_channels * out_h * out_w
    info = CaseInfo("conv2d", f"{key} {_conv_label(x_shape, kernel, stride, padding, out_channels)}",
                    2.0 * out_size * channels * kernel * kernel, FLOAT32_BYTES * (x.size + weight.size + out_size))
    return Case(info, implementations)


def _conv2d_train_case(device: Device, key: str, x_shape: tuple, out_channels: int) -> Case:
    """Forward + backward (dx, dW, db) of a 3x3, stride-1, padding-1 convolution with a bias, the
    way training runs it: ours through conv2d's own choice (Winograd from WINOGRAD_MIN_CHANNELS
    input channels, else im2col), next to each of the two forced and to PyTorch's. FLOPs are the
    direct convolution's (three products of 2·OC·C·9 per output pixel), whatever the algorithm."""
    n, channels, height, width = x_shape
    y_shape = (n, out_channels, height, width)
    arrays = [_random(device, x_shape), _random(device, (out_channels, channels, 3, 3), seed=1),
              _random(device, (out_channels,), seed=2)]
    upstream = Tensor._wrap(_random(device, y_shape, seed=3), device)

    def train_step(forward: Callable[..., Tensor]) -> tuple:
        leaves = [Tensor._wrap(array, device) for array in arrays]
        for leaf in leaves:
            leaf.requires_grad = True
        y = forward(*leaves)
        y.backward(upstream)
        return (y.data, *(leaf.grad.data for leaf in leaves))

    implementations = {
        OURS: Implementation(lambda: train_step(lambda *t: conv2d(*t, stride=1, padding=1))),
        "im2col": Implementation(lambda: train_step(lambda *t: Conv2d.apply(*t, stride=(1, 1), padding=(1, 1)))),
        "winograd": Implementation(lambda: train_step(lambda *t: Conv2dWinograd.apply(*t, padding=(1, 1)))),
    }
    torch = _torch_for(device)
    if torch:
        upstream_torch = torch.from_numpy(upstream.data)

        def torch_step() -> tuple:
            leaves = [torch.from_numpy(array).requires_grad_() for array in arrays]
            y = torch.nn.functional.conv2d(*leaves, padding=1)
            y.backward(upstream_torch)
            return (y, *(leaf.grad for leaf in leaves))

        implementations["torch"] = Implementation(torch_step)
    out_size = n * out_channels * height * width
    info = CaseInfo("conv2d_train", f"{key} {_conv_label(x_shape, 3, 1, 1, out_channels)}",
                    3 * 2.0 * out_size * channels * 9,
                    FLOAT32_BYTES * 2 * (math.prod(x_shape) + out_size + arrays[1].size + out_channels))
    return Case(info, implementations)


def _matmul_case(device: Device, key: str, m: int, n: int, k: int) -> Case:
    """c (M, N) = a (M, K) @ b (N, K)ᵀ: the A·Bᵀ form of a Linear layer's and a convolution's forward."""
    a, b = _random(device, (m, k)), _random(device, (n, k), seed=1)
    implementations = {OURS: Implementation(lambda: device.matmul(a, b, False, True))}
    torch = _torch_for(device)
    if torch:
        a_torch, b_torch = torch.from_numpy(a), torch.from_numpy(b)
        implementations["torch"] = Implementation(lambda: torch.matmul(a_torch, b_torch.T))
    if device.name == "cuda":
        implementations["cublas"] = Implementation(lambda: device.xp.matmul(a, b.T))
    info = CaseInfo("matmul", f"{key} {m}x{k}@({n}x{k})T", 2.0 * m * n * k, FLOAT32_BYTES * (m * k + n * k + m * n))
    return Case(info, implementations)


def _softmax_xent_case(device: Device, key: str, batch: int, classes: int) -> Case:
    logits = device.xp.asarray(_random(device, (batch, classes)) * 8)
    labels_host = np.random.default_rng(2).integers(0, classes, batch)
    labels = device.xp.asarray(labels_host)

    def mean_and_gradient(result: tuple) -> tuple:
        return result[0].mean(), result[1]

    implementations = {
        OURS: Implementation(lambda: device.softmax_xent(logits, labels), mean_and_gradient),
        _plain_name(device): Implementation(lambda: plain_softmax_xent(logits, labels), mean_and_gradient),
    }
    torch = _torch_for(device)
    if torch:
        logits_torch = torch.from_numpy(logits).requires_grad_()
        labels_torch = torch.from_numpy(labels_host)

        def torch_loss_and_gradient() -> tuple:
            loss = torch.nn.functional.cross_entropy(logits_torch, labels_torch)
            return (loss, *torch.autograd.grad(loss, logits_torch))

        implementations["torch"] = Implementation(torch_loss_and_gradient)
    size = batch * classes
    # per element: max, subtract, exp, sum, scale, subtract
    info = CaseInfo("softmax_xent", f"{key} {batch}x{classes}", 6.0 * size,
                    FLOAT32_BYTES * (2 * size + batch) + LABEL_BYTES * batch)
    return Case(info, implementations)


_ADAM = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def _adam_case(device: Device, key: str, size: int) -> Case:
    """Adam's first and later steps over one flat parameter, each implementation on its own copy of
    the same state (zero moments, as at the start of training)."""
    param_start, grad = _random(device, (size,)), _random(device, (size,), seed=1)
    xp = device.xp

    def fresh_state() -> list:
        return [param_start.copy(), grad, xp.zeros_like(grad), xp.zeros_like(grad)]

    ours_state, plain_state, step = fresh_state(), fresh_state(), {"ours": 0, "plain": 0}

    def ours() -> tuple:
        step["ours"] += 1
        device.adam_step(*ours_state, step=step["ours"], lr=_ADAM["lr"], beta1=_ADAM["beta1"], beta2=_ADAM["beta2"],
                         eps=_ADAM["eps"], weight_decay=0.0, decoupled=False)
        return ours_state[0], ours_state[2], ours_state[3]

    def plain() -> tuple:
        step["plain"] += 1
        plain_adam_step(*plain_state, step["plain"], **_ADAM)
        return plain_state[0], plain_state[2], plain_state[3]

    implementations = {OURS: Implementation(ours), _plain_name(device): Implementation(plain)}
    torch = _torch_for(device)
    if torch:
        for name, fused in (("torch", None), ("torch-fused", True)):
            implementations[name] = Implementation(_torch_optimizer_step(
                torch, param_start, grad, ("exp_avg", "exp_avg_sq"),
                lambda params, fused=fused: torch.optim.Adam(params, lr=_ADAM["lr"], betas=(_ADAM["beta1"], _ADAM["beta2"]),
                                                            eps=_ADAM["eps"], fused=fused)))
    # per element ~16 FLOPs; reads param, grad, m, v and writes param, m, v
    info = CaseInfo("adam", f"{key} {size:,} params", 16.0 * size, 7.0 * FLOAT32_BYTES * size)
    return Case(info, implementations)


def _sgd_case(device: Device, key: str, size: int) -> Case:
    """SGD with momentum 0.9 over one flat parameter, each implementation on its own state."""
    lr, momentum = 0.01, 0.9
    param_start, grad = _random(device, (size,)), _random(device, (size,), seed=1)
    xp = device.xp
    ours_state = [param_start.copy(), grad, xp.empty_like(grad)]
    plain_state = [param_start.copy(), grad, xp.empty_like(grad)]
    steps = {"ours": 0, "plain": 0}

    def ours() -> tuple:
        steps["ours"] += 1
        device.sgd_step(*ours_state, lr=lr, momentum=momentum, dampening=0.0, weight_decay=0.0, nesterov=False,
                        first_step=steps["ours"] == 1)
        return ours_state[0], ours_state[2]

    def plain() -> tuple:
        steps["plain"] += 1
        plain_sgd_momentum_step(*plain_state, steps["plain"] == 1, lr, momentum)
        return plain_state[0], plain_state[2]

    implementations = {OURS: Implementation(ours), _plain_name(device): Implementation(plain)}
    torch = _torch_for(device)
    if torch:
        implementations["torch"] = Implementation(_torch_optimizer_step(
            torch, param_start, grad, ("momentum_buffer",),
            lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum)))
    # per element: momentum update (2) and parameter update (2); reads param, grad, buffer, writes param, buffer
    info = CaseInfo("sgd_momentum", f"{key} {size:,} params", 4.0 * size, 5.0 * FLOAT32_BYTES * size)
    return Case(info, implementations)


def _torch_optimizer_step(torch: Any, param_start: np.ndarray, grad: np.ndarray, state_names: tuple[str, ...],
                          make_optimizer: Callable[[list], Any]) -> Callable[[], tuple]:
    """A torch optimizer's step over its own copy of the parameter; returns (param, *state)."""
    param = torch.from_numpy(param_start.copy()).requires_grad_()
    param.grad = torch.from_numpy(grad)
    optimizer = make_optimizer([param])

    def step() -> tuple:
        optimizer.step()
        return (param, *(optimizer.state[param][name] for name in state_names))

    return step


def _maxpool_forward_case(device: Device, key: str, x_shape: tuple, kernel: int) -> Case:
    x = _random(device, x_shape)

    implementations = {
        OURS: Implementation(lambda: device.maxpool2d_forward(x, kernel, kernel, 0)),
        _plain_name(device): Implementation(lambda: plain_maxpool_forward(x, kernel)),
    }
    torch = _torch_for(device)
    if torch:
        x_torch = torch.from_numpy(x)
        implementations["torch"] = Implementation(
            lambda: torch.nn.functional.max_pool2d(x_torch, kernel, return_indices=True),
            lambda result: (result[0], result[1].numpy().astype(np.int32)))
    out_size = x.size // (kernel * kernel)
    info = CaseInfo("maxpool_fwd", f"{key} {'x'.join(map(str, x_shape))} k{kernel}s{kernel}", float(x.size),
                    FLOAT32_BYTES * (x.size + out_size) + INDEX_BYTES * out_size)
    return Case(info, implementations)


def _maxpool_backward_case(device: Device, key: str, x_shape: tuple, kernel: int) -> Case:
    x = _random(device, x_shape)
    _, argmax = device.maxpool2d_forward(x, kernel, kernel, 0)
    dy = _random(device, argmax.shape, seed=1)
    implementations = {
        OURS: Implementation(lambda: device.maxpool2d_backward(dy, argmax, x_shape, kernel, kernel, 0)),
        _plain_name(device): Implementation(lambda: plain_maxpool_backward(dy, argmax, x_shape)),
    }
    torch = _torch_for(device)
    if torch:
        x_torch, dy_torch = torch.from_numpy(x), torch.from_numpy(dy)
        _, indices = torch.nn.functional.max_pool2d(x_torch, kernel, return_indices=True)
        window = [kernel, kernel]
        implementations["torch"] = Implementation(lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            dy_torch, x_torch, window, window, [0, 0], [1, 1], False, indices))
    info = CaseInfo("maxpool_bwd", f"{key} {'x'.join(map(str, x_shape))} k{kernel}s{kernel}", float(dy.size),
                    FLOAT32_BYTES * (dy.size + x.size) + INDEX_BYTES * dy.size)
    return Case(info, implementations)


def _add_overhead_case(device: Device, key: str, backward: bool) -> Case:
    """One tiny add through the tensor layer: what a framework costs per op, not the arithmetic."""

    values = np.arange(4, dtype=np.float32)
    a, b = (Tensor(values + shift, device=device.name, requires_grad=backward) for shift in (0.0, 1.0))
    seed = Tensor(np.ones(4, np.float32), device=device.name)

    def ours() -> Any:
        c = a + b
        if backward:
            c.backward(seed)
        return c.data

    implementations = {OURS: Implementation(ours)}
    if not backward:
        a_plain, b_plain = a.data, b.data
        implementations[_plain_name(device)] = Implementation(lambda: device.xp.add(a_plain, b_plain))
    torch = _torch_for(device)
    if torch:
        a_torch, b_torch = (torch.tensor(values + shift, requires_grad=backward) for shift in (0.0, 1.0))
        seed_torch = torch.ones(4)

        def torch_add() -> Any:
            c = a_torch + b_torch
            if backward:
                c.backward(seed_torch)
            return c

        implementations["torch"] = Implementation(torch_add)
    label = f"{key} 4 floats, " + ("forward + backward" if backward else "forward, no graph")
    return Case(CaseInfo("overhead", label, 4.0, FLOAT32_BYTES * 12.0, fixed_bound="latency"), implementations)


def _batchnorm_forward_case(device: Device, key: str, x_shape: tuple) -> Case:
    """Training-mode batch norm, running statistics included, each implementation with its own."""
    momentum, eps, channels, xp = 0.1, 1e-5, x_shape[1], device.xp
    x, weight, bias = _random(device, x_shape), _random(device, (channels,), 1) + 1, _random(device, (channels,), 2)

    def running() -> tuple:
        return xp.zeros(channels, np.float32), xp.ones(channels, np.float32)

    ours_running, plain_running = running(), running()

    def ours() -> tuple:
        y, _, _ = device.batchnorm_forward(x, weight, bias, *ours_running, training=True, momentum=momentum, eps=eps)
        return (y, *ours_running)

    implementations = {
        OURS: Implementation(ours),
        _plain_name(device): Implementation(
            lambda: (plain_batchnorm_forward(x, weight, bias, *plain_running, momentum, eps), *plain_running)),
    }
    torch = _torch_for(device)
    if torch:
        tensors = [torch.from_numpy(array) for array in (x, weight, bias, *running())]
        implementations["torch"] = Implementation(lambda: (torch.nn.functional.batch_norm(
            tensors[0], tensors[3], tensors[4], tensors[1], tensors[2], training=True, momentum=momentum, eps=eps),
            tensors[3], tensors[4]))
    # per element: sum, sum of squares, then subtract, scale, shift; reads x, writes y
    info = CaseInfo("batchnorm_fwd", f"{key} {'x'.join(map(str, x_shape))}", 5.0 * x.size,
                    2.0 * FLOAT32_BYTES * x.size)
    return Case(info, implementations)


def _batchnorm_backward_case(device: Device, key: str, x_shape: tuple) -> Case:
    channels = x_shape[1]
    x, dy, weight = _random(device, x_shape), _random(device, x_shape, 1), _random(device, (channels,), 2) + 1
    _, mean, rstd = device.batchnorm_forward(x, weight, None, None, None, training=True)
    implementations = {
        OURS: Implementation(lambda: device.batchnorm_backward(dy, x, weight, mean, rstd, training=True)),
        _plain_name(device): Implementation(lambda: plain_batchnorm_backward(dy, x, weight, mean, rstd)),
    }
    torch = _torch_for(device)
    if torch:
        dy_torch, x_torch, weight_torch, mean_torch, rstd_torch = (torch.from_numpy(a) for a in (dy, x, weight, mean, rstd))
        implementations["torch"] = Implementation(lambda: torch.ops.aten.native_batch_norm_backward(
            dy_torch, x_torch, weight_torch, None, None, mean_torch, rstd_torch, True, 1e-5, [True, True, True]))
    # per element: two sums, then xhat and the three-term dx; reads dy and x, writes dx
    info = CaseInfo("batchnorm_bwd", f"{key} {'x'.join(map(str, x_shape))}", 9.0 * x.size,
                    3.0 * FLOAT32_BYTES * x.size)
    return Case(info, implementations)


def _layernorm_forward_case(device: Device, key: str, rows: int, width: int) -> Case:
    eps = 1e-5
    x, weight, bias = _random(device, (rows, width)), _random(device, (width,), 1) + 1, _random(device, (width,), 2)
    implementations = {
        OURS: Implementation(lambda: device.layernorm_forward(x, weight, bias, eps), lambda result: result[:1]),
        _plain_name(device): Implementation(lambda: plain_layernorm_forward(x, weight, bias, eps)),
    }
    torch = _torch_for(device)
    if torch:
        x_torch, weight_torch, bias_torch = (torch.from_numpy(a) for a in (x, weight, bias))
        implementations["torch"] = Implementation(
            lambda: torch.nn.functional.layer_norm(x_torch, (width,), weight_torch, bias_torch, eps))
    info = CaseInfo("layernorm_fwd", f"{key} {rows}x{width}", 5.0 * x.size, 2.0 * FLOAT32_BYTES * x.size)
    return Case(info, implementations)


def _layernorm_backward_case(device: Device, key: str, rows: int, width: int) -> Case:
    x, dy, weight = _random(device, (rows, width)), _random(device, (rows, width), 1), _random(device, (width,), 2) + 1
    _, mean, rstd = device.layernorm_forward(x, weight, None)
    implementations = {
        OURS: Implementation(lambda: device.layernorm_backward(dy, x, weight, mean, rstd)),
        _plain_name(device): Implementation(lambda: plain_layernorm_backward(dy, x, weight, mean, rstd)),
    }
    torch = _torch_for(device)
    if torch:
        dy_torch, x_torch, weight_torch = (torch.from_numpy(a) for a in (dy, x, weight))
        mean_torch, rstd_torch = (torch.from_numpy(a.reshape(rows, 1)) for a in (mean, rstd))
        bias_torch = torch.zeros(width)  # unused by the gradients, but the op wants one
        implementations["torch"] = Implementation(lambda: torch.ops.aten.native_layer_norm_backward(
            dy_torch, x_torch, [width], mean_torch, rstd_torch, weight_torch, bias_torch, [True, True, True]))
    info = CaseInfo("layernorm_bwd", f"{key} {rows}x{width}", 9.0 * x.size, 3.0 * FLOAT32_BYTES * x.size)
    return Case(info, implementations)


def _softmax_case(device: Device, key: str, rows: int, width: int, backward: bool) -> Case:
    """The attention weights' row softmax (no mask), forward or backward."""
    x = _random(device, (rows, width))
    y = device.softmax_forward(x)
    dy = _random(device, (rows, width), 1)
    if backward:
        implementations = {OURS: Implementation(lambda: device.softmax_backward(y, dy)),
                           _plain_name(device): Implementation(lambda: plain_softmax_backward(y, dy))}
    else:
        implementations = {OURS: Implementation(lambda: device.softmax_forward(x)),
                           _plain_name(device): Implementation(lambda: plain_softmax_forward(x))}
    torch = _torch_for(device)
    if torch:
        x_torch, y_torch, dy_torch = (torch.from_numpy(a) for a in (x, y, dy))
        implementations["torch"] = Implementation(
            (lambda: torch.ops.aten._softmax_backward_data(dy_torch, y_torch, -1, torch.float32)) if backward
            else (lambda: torch.softmax(x_torch, -1)))
    family, flops, arrays = ("softmax_bwd", 4.0, 3) if backward else ("softmax_fwd", 4.0, 2)
    return Case(CaseInfo(family, f"{key} {rows}x{width}", flops * x.size, arrays * FLOAT32_BYTES * x.size),
                implementations)


def plain_relu_backward(dy: Any, y: Any) -> Any:
    """dx = dy · [y > 0], the mask as NumPy makes it: a boolean temporary, then a multiply."""
    return dy * (y > 0)


def _relu_case(device: Device, key: str, x_shape: tuple, backward: bool) -> Case:
    """ReLU over one activation, forward (y = max(x, 0)) or backward (dx from dy and y)."""
    xp = device.xp
    x = _random(device, x_shape)
    y = device.relu_forward(x)
    dy = _random(device, x_shape, 1)
    if backward:
        implementations = {OURS: Implementation(lambda: device.relu_backward(dy, y)),
                           _plain_name(device): Implementation(lambda: plain_relu_backward(dy, y))}
    else:
        implementations = {OURS: Implementation(lambda: device.relu_forward(x)),
                           _plain_name(device): Implementation(lambda: xp.maximum(x, x.dtype.type(0)))}
    torch = _torch_for(device)
    if torch:
        x_torch, y_torch, dy_torch = (torch.from_numpy(a) for a in (x, y, dy))
        implementations["torch"] = Implementation(
            (lambda: torch.ops.aten.threshold_backward(dy_torch, y_torch, 0)) if backward
            else (lambda: torch.relu(x_torch)))
    family, arrays = ("relu_bwd", 3) if backward else ("relu_fwd", 2)
    return Case(CaseInfo(family, f"{key} {'x'.join(map(str, x_shape))}", float(x.size),
                         arrays * FLOAT32_BYTES * x.size), implementations)


# --------------------------------------------------------------------- the list of cases
_CONV_LAYERS = (  # (key, batch, in channels, out channels, image side, kernel, stride, padding)
    ("mnist.conv1.b64", 64, 1, 32, 28, 3, 1, 1),
    ("mnist.conv2.b64", 64, 32, 64, 14, 3, 1, 1),
    ("mnist.conv1.b256", 256, 1, 32, 28, 3, 1, 1),
    ("mnist.conv2.b256", 256, 32, 64, 14, 3, 1, 1),
    ("resnet.conv.b128", 128, 64, 64, 16, 3, 1, 1),
)
_QUICK_CONV_LAYERS = (("tiny.conv", 2, 3, 4, 7, 3, 1, 1), ("tiny.conv.s2", 1, 2, 3, 8, 3, 2, 0))
# conv2d runs im2col and col2im on as many images at a time as the CPU conv workspace holds:
# these rows time them at that size too (the columns then stay in cache for the GEMMs).
_CHUNKED_CONV_LAYERS = ("mnist.conv2.b256", "resnet.conv.b128")


def _chunk_layer(layer: tuple) -> tuple:
    """``layer`` with its batch cut to the images conv2d's CPU workspace holds at once."""
    key, batch, channels, out_channels, side, kernel, stride, padding = layer
    out_h, out_w = conv_output_shape(side, side, _square(kernel), _square(stride), _square(padding))
    _, images = conv_image_chunks(get_device("cpu"), batch, channels * kernel * kernel, out_channels,
                                  out_h * out_w, FLOAT32_BYTES)[0]
    return (f"{key.rsplit('.', 1)[0]}.chunk{images}", images, channels, out_channels, side, kernel, stride, padding)


def case_specs(quick: bool = False) -> list[CaseSpec]:
    """Every case, at realistic training shapes, or at tiny ones with ``quick`` (to check they run)."""
    plain, with_torch = (OURS, "numpy", "torch"), ("torch",)
    specs: list[CaseSpec] = []

    def add(family: str, key: str, shape: str, build: Callable[[Device], Case], peers: tuple = plain[1:]) -> None:
        specs.append(CaseSpec(family, key, shape, build, (OURS, *peers)))

    layers = _QUICK_CONV_LAYERS if quick else _CONV_LAYERS
    chunks = () if quick else tuple(_chunk_layer(layer) for layer in layers if layer[0] in _CHUNKED_CONV_LAYERS)
    for layer in layers + chunks:
        key, batch, channels, out_channels, side, kernel, stride, padding = layer
        x_shape = (batch, channels, side, side)
        shape = _conv_label(x_shape, kernel, stride, padding)
        add("im2col", key, shape, functools.partial(_im2col_case, key=key, x_shape=x_shape, kernel=kernel,
                                                    stride=stride, padding=padding))
        add("col2im", key, shape, functools.partial(_col2im_case, key=key, x_shape=x_shape, kernel=kernel,
                                                    stride=stride, padding=padding))
        if layer in layers:  # the forward convolution runs chunks itself
            add("conv2d", key, shape, functools.partial(_conv2d_case, key=key, x_shape=x_shape,
                                                        out_channels=out_channels, kernel=kernel, stride=stride,
                                                        padding=padding))
    # Winograd's rows: MNIST's conv2, ResNet-20's three stages, and 8 channels (below the threshold)
    train_layers = ((("tiny.c16", 2, 16, 3, 5),) if quick else
                    (("mnist.conv2.b64", 64, 32, 64, 14), ("mnist.conv2.b256", 256, 32, 64, 14),
                     ("c8.b128", 128, 8, 16, 32), ("resnet20.stage1.b128", 128, 16, 16, 32),
                     ("resnet20.stage2.b128", 128, 32, 32, 16), ("resnet20.stage3.b128", 128, 64, 64, 8)))
    for key, batch, channels, out_channels, side in train_layers:
        x_shape = (batch, channels, side, side)
        add("conv2d_train", key, _conv_label(x_shape, 3, 1, 1, out_channels),
            functools.partial(_conv2d_train_case, key=key, x_shape=x_shape, out_channels=out_channels),
            ("im2col", "winograd", "torch"))
    matmuls = ((("tiny", 9, 5, 7),) if quick else
               (("mnist.conv2.b256", 256 * 14 * 14, 64, 32 * 9), ("mnist.fc1.b256", 256, 128, 64 * 7 * 7),
                ("resnet.conv.b128", 128 * 16 * 16, 64, 64 * 9)))
    for key, m, n, k in matmuls:
        add("matmul", key, f"{m}x{k}@({n}x{k})T", functools.partial(_matmul_case, key=key, m=m, n=n, k=k), with_torch)
    for key, batch, classes in ((("tiny", 5, 7),) if quick else (("b256.c10", 256, 10), ("b128.c1000", 128, 1000))):
        add("softmax_xent", key, f"{batch}x{classes}",
            functools.partial(_softmax_xent_case, key=key, batch=batch, classes=classes))
    for key, size in ((("tiny", 1001),) if quick else (("1M", 1_000_000), ("10M", 10_000_000))):
        add("adam", key, f"{size}", functools.partial(_adam_case, key=key, size=size), ("numpy", "torch", "torch-fused"))
        add("sgd_momentum", key, f"{size}", functools.partial(_sgd_case, key=key, size=size))
    pools = ((("tiny", (2, 3, 6, 6)),) if quick else
             (("mnist.pool1.b64", (64, 32, 28, 28)), ("mnist.pool1.b256", (256, 32, 28, 28)),
              ("mnist.pool2.b256", (256, 64, 14, 14))))
    for key, x_shape in pools:
        shape = "x".join(map(str, x_shape))
        add("maxpool_fwd", key, shape, functools.partial(_maxpool_forward_case, key=key, x_shape=x_shape, kernel=2))
        add("maxpool_bwd", key, shape, functools.partial(_maxpool_backward_case, key=key, x_shape=x_shape, kernel=2))
    for key, x_shape in (("tiny", (2, 3, 5, 5)),) if quick else (("resnet20.stage1.b128", (128, 16, 32, 32)),):
        shape = "x".join(map(str, x_shape))
        add("batchnorm_fwd", key, shape, functools.partial(_batchnorm_forward_case, key=key, x_shape=x_shape))
        add("batchnorm_bwd", key, shape, functools.partial(_batchnorm_backward_case, key=key, x_shape=x_shape))
    for key, rows, width in (("tiny", 6, 10),) if quick else (("transformer.b32.t64", 32 * 64, 128),):
        add("layernorm_fwd", key, f"{rows}x{width}",
            functools.partial(_layernorm_forward_case, key=key, rows=rows, width=width))
        add("layernorm_bwd", key, f"{rows}x{width}",
            functools.partial(_layernorm_backward_case, key=key, rows=rows, width=width))
    for key, rows, width in (("tiny", 6, 10),) if quick else (("attention.b32.h4.t64", 32 * 4 * 64, 64),):
        for backward, family in ((False, "softmax_fwd"), (True, "softmax_bwd")):
            add(family, key, f"{rows}x{width}",
                functools.partial(_softmax_case, key=key, rows=rows, width=width, backward=backward))
    for key, x_shape in ((("tiny", (2, 3, 5, 7)),) if quick else
                         (("mnist.relu1.b256", (256, 32, 28, 28)), ("mnist.fc1.b64", (64, 128)))):
        for backward, family in ((False, "relu_fwd"), (True, "relu_bwd")):
            add(family, key, "x".join(map(str, x_shape)),
                functools.partial(_relu_case, key=key, x_shape=x_shape, backward=backward))
    add("overhead", "add", "4 floats", functools.partial(_add_overhead_case, key="add", backward=False))
    add("overhead", "add.backward", "4 floats", functools.partial(_add_overhead_case, key="add.backward", backward=True),
        with_torch)
    return specs


# ===================================================================== rows and the table
def rates(info: CaseInfo, seconds: float, ceilings: Ceilings) -> dict[str, Any]:
    """What ``seconds`` per call achieves: GFLOP/s, GB/s, the bound and the fraction of its ceiling."""
    gflops = info.flops / seconds / 1e9
    gbs = info.bytes_moved / seconds / 1e9
    intensity = info.flops / info.bytes_moved
    bound = info.fixed_bound or ("compute" if intensity >= ceilings.balance else "memory")
    ceiling = {"compute": ceilings.gemm_gflops, "memory": ceilings.copy_gbs}.get(bound)
    achieved = gflops if bound == "compute" else gbs
    return {"flops": info.flops, "min_bytes": info.bytes_moved, "intensity_flop_per_byte": intensity,
            "gflops": gflops, "gbs": gbs, "bound": bound,
            "percent_of_ceiling": None if ceiling is None else 100.0 * achieved / ceiling}


def make_row(info: CaseInfo, timings: dict[str, Timing], ceilings: Ceilings) -> dict[str, Any]:
    """One row of the table (JSON-ready): our rates and each peer's time divided by ours."""
    ours = timings[OURS].best
    return {"family": info.family, "case": info.label, "seconds": {name: t.best for name, t in timings.items()},
            "median_seconds": {name: t.median for name, t in timings.items()}, **rates(info, ours, ceilings),
            "ratios": {name: t.best / ours for name, t in timings.items() if name != OURS}}


def _seconds_text(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _aligned(header: Sequence[str], lines: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    text = [" | ".join(cell.ljust(width) for cell, width in zip(header, widths))]
    text.append("-+-".join("-" * width for width in widths))
    text += [" | ".join(cell.rjust(width) if index else cell.ljust(width)
                        for index, (cell, width) in enumerate(zip(line, widths))) for line in lines]
    return "\n".join(line.rstrip() for line in text)


def format_table(rows: list[dict[str, Any]], ceilings: Ceilings, failures: Sequence[str] = ()) -> str:
    """The ceilings line and one line per row; ``vs PEER`` is the peer's time / ours (> 1: we are faster)."""
    peers = list(OrderedDict.fromkeys(peer for row in rows for peer in row["ratios"]))
    header = ["kernel", "time", "GFLOP/s", "GB/s", "% ceiling", "bound"] + [f"vs {peer}" for peer in peers]
    lines = []
    for row in rows:
        percent = row["percent_of_ceiling"]
        lines.append([f"{row['family']} {row['case']}", _seconds_text(row["seconds"][OURS]),
                      f"{row['gflops']:.2f}", f"{row['gbs']:.2f}", "-" if percent is None else f"{percent:.0f}%",
                      row["bound"]] + [f"{row['ratios'][peer]:.2f}x" if peer in row["ratios"] else "" for peer in peers])
    text = [f"ceilings: {ceilings.describe()}", _aligned(header, lines)]
    text += [f"FAILED {failure}" for failure in failures]
    return "\n".join(text)


def run_kernels(device: Device, ceilings: Ceilings, quick: bool = False, only: str | None = None,
                progress: Callable[[str], None] = lambda line: None) -> tuple[list[dict], list[str]]:
    """Build, verify and time every case (those whose name contains ``only``); (rows, failures).
    A case that disagrees with a peer, or fails to build, is a failure line, and the rest go on."""
    timer = time_cuda if device.name == "cuda" else time_cpu
    rows, failures = [], []
    for spec in case_specs(quick):
        if only and only not in spec.id:
            continue
        progress(f"{spec.id} ...")
        try:
            case = build_and_verify(spec, device)
        except MismatchError as error:
            failures.append(str(error))
            continue
        except Exception as error:  # noqa: BLE001 - reported as FAILED (exit status 1), not hidden
            failures.append(f"{spec.id}: {type(error).__name__}: {error}")
            continue
        timings = timer({name: implementation.run for name, implementation in case.implementations.items()}, quick=quick)
        rows.append(make_row(case.info, timings, ceilings))
    return rows, failures


# ===================================================================== training throughput
@dataclass(frozen=True)
class TrainModel:
    """A model whose training fastnet and PyTorch race: built by fastnet, mirrored in PyTorch."""

    name: str
    build: Callable[[], Any]
    sample_shape: tuple[int, ...]
    batches: tuple[int, ...]
    classes: int = 10


class SequenceClassifier(fnn.Module):
    """One transformer encoder layer over (B, T, d_model), the mean over T, then a Linear to the
    classes: the transformer of the training race. No dropout, so both frameworks compute the same."""

    def __init__(self, d_model: int = 128, heads: int = 4, feedforward: int = 256, classes: int = 10) -> None:
        super().__init__()
        self.encoder = fnn.TransformerEncoderLayer(d_model, heads, feedforward, dropout=0.0, batch_first=True)
        self.head = fnn.Linear(d_model, classes)

    def forward(self, x: Any) -> Any:
        return self.head(self.encoder(x).mean(axis=1))


def train_models() -> list[TrainModel]:
    """The models ``--train`` races (one line each; a new layer type also needs a :data:`TORCH_EQUIVALENTS`
    entry). The CIFAR ResNet is ResNet-20; the transformer one encoder layer, d_model 128, 4 heads,
    feed-forward 256, on sequences of 64."""
    from . import models

    return [
        TrainModel("mnist_cnn", models.mnist_cnn, (1, 28, 28), (64, 256)),
        TrainModel("mlp", models.mlp, (1, 28, 28), (64, 256)),
        TrainModel("resnet20", functools.partial(models.create, "resnet"), (3, 32, 32), (128,)),
        TrainModel("transformer", SequenceClassifier, (64, 128), (32,)),
    ]


def _pair_of(value: Any) -> Any:
    return tuple(value) if isinstance(value, (tuple, list)) else value


# fastnet layer class name -> its PyTorch equivalent, built from the fastnet layer
TORCH_EQUIVALENTS: dict[str, Callable[[Any, Any], Any]] = {
    "Linear": lambda nn, m: nn.Linear(m.in_features, m.out_features, bias=m.bias is not None),
    "Conv2d": lambda nn, m: nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                      bias=m.bias is not None),
    "MaxPool2d": lambda nn, m: nn.MaxPool2d(_pair_of(m.kernel_size), _pair_of(m.stride), _pair_of(m.padding)),
    "AvgPool2d": lambda nn, m: nn.AvgPool2d(_pair_of(m.kernel_size), _pair_of(m.stride), _pair_of(m.padding)),
    "AdaptiveAvgPool2d": lambda nn, m: nn.AdaptiveAvgPool2d(_pair_of(m.output_size)),
    "BatchNorm1d": lambda nn, m: nn.BatchNorm1d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats),
    "BatchNorm2d": lambda nn, m: nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats),
    "ReLU": lambda nn, m: nn.ReLU(),
    "LeakyReLU": lambda nn, m: nn.LeakyReLU(m.negative_slope),
    "GELU": lambda nn, m: nn.GELU(approximate=m.approximate),
    "Tanh": lambda nn, m: nn.Tanh(),
    "Sigmoid": lambda nn, m: nn.Sigmoid(),
    "Identity": lambda nn, m: nn.Identity(),
    "Dropout": lambda nn, m: nn.Dropout(m.p),
    "Flatten": lambda nn, m: nn.Flatten(m.start_dim, m.end_dim),
    "LayerNorm": lambda nn, m: nn.LayerNorm(m.normalized_shape, m.eps, m.elementwise_affine, bias=m.bias is not None),
    "TransformerEncoderLayer": lambda nn, m: nn.TransformerEncoderLayer(
        m.self_attn.embed_dim, m.self_attn.num_heads, m.linear1.out_features, m.dropout.p,
        activation=_activation_name(m.activation), layer_norm_eps=m.norm1.eps, batch_first=m.self_attn.batch_first,
        norm_first=m.norm_first, bias=m.linear1.bias is not None),
}


def _activation_name(activation: Callable) -> str:
    name = getattr(activation, "__name__", repr(activation))
    if name not in ("relu", "gelu"):
        raise NotImplementedError(f"no PyTorch equivalent of the activation {name}")
    return name


@functools.lru_cache(maxsize=1)
def _torch_containers() -> dict[str, Any]:
    """PyTorch mirrors of fastnet's containers, keyed by the fastnet class name; each holds its
    children under the fastnet names, so that the two state_dicts have the same keys."""
    import torch

    class Chain(torch.nn.Module):
        """Children applied in order: fastnet's Sequential and Classifier (features → head)."""

        def __init__(self, children: dict) -> None:
            super().__init__()
            for name, child in children.items():
                self.add_module(name, child)

        def forward(self, x: Any) -> Any:
            for child in self.children():
                x = child(x)
            return x

    class BasicBlock(Chain):
        """fastnet.models.resnet.BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

        def forward(self, x: Any) -> Any:
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class SequenceClassifier(Chain):
        def forward(self, x: Any) -> Any:
            return self.head(self.encoder(x).mean(1))

    return {"Sequential": Chain, "Classifier": Chain, "BasicBlock": BasicBlock, "SequenceClassifier": SequenceClassifier}


def to_torch(module: Any) -> Any:
    """A PyTorch module computing what the fastnet ``module`` computes, with its weights copied."""
    import torch

    mirror = _torch_mirror(module, torch)
    state = {name: torch.from_numpy(np.array(value, copy=True)) for name, value in module.state_dict().items()}
    mirror.load_state_dict(state, strict=True)
    return mirror


def _torch_mirror(module: Any, torch: Any) -> Any:
    kind = type(module).__name__
    if kind in TORCH_EQUIVALENTS:
        return TORCH_EQUIVALENTS[kind](torch.nn, module)
    containers = _torch_containers()
    if kind not in containers:
        raise NotImplementedError(f"no PyTorch equivalent of fastnet's {kind}: add one to fastnet.bench.TORCH_EQUIVALENTS "
                                  f"(a layer) or to _torch_containers (a module with children)")
    return containers[kind]({name: _torch_mirror(child, torch) for name, child in module.named_children()})


@dataclass
class FirstStep:
    """Both frameworks' loss on the first batch from the same weights, and the worst relative error
    of each one's float32 gradients against PyTorch's float64 gradients from the same weights.

    The gradients are judged against float64, not against each other: in a deep network with batch
    norm (ResNet-20 at initialisation), float32 rounding alone moves some parameters' gradients by
    1e-3 to 1e-2 in either framework, in different parameters for each."""

    fastnet_loss: float
    torch_loss: float
    loss_relative_error: float
    worst_gradient: str  # fastnet's parameter farthest from float64
    fastnet_gradient_error: float
    torch_gradient_error: float

    def problems(self, loss_tolerance: float = 1e-4, gradient_tolerance: float = 1e-3,
                 float32_slack: float = 4.0) -> list[str]:
        """What is wrong: losses apart by more than ``loss_tolerance``, or fastnet's gradients farther
        from float64 than both ``gradient_tolerance`` and ``float32_slack`` times PyTorch's."""
        found = []
        if not self.loss_relative_error <= loss_tolerance:
            found.append(f"first-step losses differ: fastnet {self.fastnet_loss:.7g}, torch {self.torch_loss:.7g} "
                         f"(relative error {self.loss_relative_error:.1e} > {loss_tolerance:.0e})")
        allowed = max(gradient_tolerance, float32_slack * self.torch_gradient_error)
        if not self.fastnet_gradient_error <= allowed:
            found.append(f"first-step gradients differ: fastnet's {self.worst_gradient} is {self.fastnet_gradient_error:.1e} "
                         f"from float64 (allowed {allowed:.1e}; PyTorch's float32 worst is {self.torch_gradient_error:.1e})")
        return found


def _worst_gradient_error(named_grads: Iterator[tuple[str, Any]], reference: dict[str, np.ndarray]) -> tuple[str, float]:
    errors = {name: relative_error(_host_copy(grad), reference[name]) for name, grad in named_grads}
    worst = max(errors, key=errors.get)
    return worst, errors[worst]


def compare_first_step(model: Any, torch_model: Any, x: np.ndarray, labels: np.ndarray) -> FirstStep:
    """One forward and backward of fastnet, of PyTorch and of PyTorch in float64 on the same batch;
    the gradients (and nothing else) are cleared after."""
    import copy

    import torch

    from .functional import cross_entropy

    reference_model = copy.deepcopy(torch_model).double()
    loss = cross_entropy(model(Tensor(x)), Tensor(labels))
    loss.backward()
    torch_loss = torch.nn.functional.cross_entropy(torch_model(torch.from_numpy(x)), torch.from_numpy(labels))
    torch_loss.backward()
    torch.nn.functional.cross_entropy(reference_model(torch.from_numpy(x).double()), torch.from_numpy(labels)).backward()
    reference = {name: parameter.grad.numpy() for name, parameter in reference_model.named_parameters()}
    worst, fastnet_error = _worst_gradient_error(((n, p.grad) for n, p in model.named_parameters()), reference)
    _, torch_error = _worst_gradient_error(((n, p.grad) for n, p in torch_model.named_parameters()), reference)
    model.zero_grad()
    torch_model.zero_grad()
    return FirstStep(loss.item(), torch_loss.item(), relative_error(loss.item(), torch_loss.item()), worst,
                     fastnet_error, torch_error)


def measure_training(entry: TrainModel, batch: int, quick: bool = False, rounds: int = 3,
                     round_seconds: float = 2.0, seed: int = 0) -> dict[str, Any]:
    """Images/s of fastnet and PyTorch training ``entry`` at ``batch`` on the CPU: Adam lr 1e-3,
    the same initial weights and the same random batches of the model's input shape. Raises
    :class:`MismatchError` (before timing anything) if the first-step losses or gradients differ.

    The frameworks alternate, ``rounds`` rounds of about ``round_seconds`` each, after warm-up
    steps; the best round of each counts. Call inside :func:`pinned_threads`.
    """
    import torch

    import fastnet
    from .functional import cross_entropy

    if quick:
        rounds, round_seconds = 1, 0.0
    fastnet.manual_seed(seed)
    model = entry.build()
    torch_model = to_torch(model)
    rng = np.random.default_rng(seed)
    batches = [(rng.standard_normal((batch, *entry.sample_shape), dtype=np.float32),
                rng.integers(0, entry.classes, batch)) for _ in range(4)]
    first = compare_first_step(model, torch_model, *batches[0])
    if first.problems():
        raise MismatchError(f"{entry.name} batch {batch}: " + "; ".join(first.problems())
                            + ": refusing to report a throughput")

    fastnet_batches = [(Tensor(x), Tensor(y)) for x, y in batches]
    torch_batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
    optimizer = fastnet.optim.Adam(model.parameters(), lr=1e-3)
    torch_optimizer = torch.optim.Adam(torch_model.parameters(), lr=1e-3)

    def fastnet_step(index: int) -> None:
        x, y = fastnet_batches[index % len(fastnet_batches)]
        loss = cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def torch_step(index: int) -> None:
        x, y = torch_batches[index % len(torch_batches)]
        loss = torch.nn.functional.cross_entropy(torch_model(x), y)
        torch_optimizer.zero_grad()
        loss.backward()
        torch_optimizer.step()

    steps = {"fastnet": fastnet_step, "torch": torch_step}
    steps_per_round = {}
    for name, step in steps.items():  # warm-up: compiles kernels, allocates; the last step sizes a round
        for index in range(2):
            start = time.perf_counter()
            step(index)
        steps_per_round[name] = max(2, round(round_seconds / (time.perf_counter() - start)))
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for index in range(steps_per_round[name]):
                step(index)
            samples[name].append(batch * steps_per_round[name] / (time.perf_counter() - start))
    best = {name: max(values) for name, values in samples.items()}
    return {"model": entry.name, "batch": batch, "samples_per_second": best,
            "median_samples_per_second": {name: statistics.median(values) for name, values in samples.items()},
            "ratio": best["fastnet"] / best["torch"], "first_step": asdict(first)}


def run_training(quick: bool = False, only: str | None = None,
                 progress: Callable[[str], None] = lambda line: None) -> tuple[list[dict], list[str]]:
    """Every model of :func:`train_models` at each of its batch sizes (batch 4 with ``quick``)."""
    results, failures = [], []
    for entry in train_models():
        if only and only not in entry.name:
            continue
        for batch in (4,) if quick else entry.batches:
            progress(f"train {entry.name} batch {batch} ...")
            try:
                results.append(measure_training(entry, batch, quick=quick))
            except MismatchError as error:
                failures.append(str(error))
    return results, failures


def format_training_table(results: list[dict[str, Any]], threads: int, failures: Sequence[str] = ()) -> str:
    header = ["model", "batch", "fastnet samples/s", "torch samples/s", "fastnet/torch", "first-step loss (fastnet, torch)",
              "grad err vs float64 (fastnet, torch)"]
    lines = [[row["model"], str(row["batch"]), f"{row['samples_per_second']['fastnet']:.0f}",
              f"{row['samples_per_second']['torch']:.0f}", f"{row['ratio']:.2f}x",
              f"{row['first_step']['fastnet_loss']:.6f}, {row['first_step']['torch_loss']:.6f}",
              f"{row['first_step']['fastnet_gradient_error']:.1e}, {row['first_step']['torch_gradient_error']:.1e}"]
             for row in results]
    text = [f"training throughput on the CPU, {_threads_text(threads)} each, Adam lr 1e-3, random data:",
            _aligned(header, lines)]
    text += [f"FAILED {failure}" for failure in failures]
    return "\n".join(text)


# ===================================================================== the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastnet bench``."""
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one round: checks that every benchmark runs, not how fast")
    parser.add_argument("--json", metavar="PATH", help="also write the results (and the machine) as JSON to PATH")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="time the CPU kernels (default) or the CUDA kernels on a real GPU")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for fastnet, the BLAS and PyTorch alike (default: fastnet's, "
                             "FASTNET_NUM_THREADS or 1)")
    parser.add_argument("--only", metavar="TEXT", help="only the cases (or --train models) whose name contains TEXT")
    parser.add_argument("--train", action="store_true",
                        help="race fastnet against PyTorch training the same models on the CPU (images/s)")
    parser.add_argument("--ptx", action="store_true",
                        help="compile every CUDA kernel for sm_80/sm_90 and report registers and spills")


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + ("+modified" if dirty else "")) or "unknown"


def machine() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    torch = optional_torch()
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": _commit(),
            "platform": platform.platform(), "processor": _cpu_model(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "torch": torch.__version__ if torch else None}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(args: argparse.Namespace) -> int:
    """``fastnet bench``: print one table (kernels, or ``--train`` throughput); 1 if anything mismatched."""
    if args.ptx:
        from .kernels import ptx

        return ptx.main([])
    if args.device == "cuda":
        refusal = cuda_refusal()
        if refusal:
            print(refusal, file=sys.stderr)
            return 2
    if args.train and (args.device != "cpu" or optional_torch() is None):
        print("fastnet bench --train: races PyTorch on the CPU: needs --device cpu and PyTorch "
              "(pip install 'fastnet[bench]')", file=sys.stderr)
        return 2
    threads = args.threads or get_num_threads()
    report: dict[str, Any] = {"machine": machine()}

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with pinned_threads(threads):
        if args.train:
            results, failures = run_training(args.quick, args.only, progress)
            report["train"] = results
            print(format_training_table(results, threads, failures))
        else:
            device = get_device(args.device)
            ceilings = measure_ceilings(device, threads, args.quick)
            rows, failures = run_kernels(device, ceilings, args.quick, args.only, progress)
            report.update(ceilings=asdict(ceilings), kernels=rows)
            print(format_table(rows, ceilings, failures))
    report["failures"] = failures
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``fastnet bench`` from an argument list (used by benchmarks/train_throughput.py)."""
    parser = argparse.ArgumentParser(prog="fastnet bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


__all__ = ["add_arguments", "run", "main", "Ceilings", "measure_ceilings", "pinned_threads", "Timing", "time_cpu",
           "time_cuda", "CaseInfo", "Case", "CaseSpec", "Implementation", "MismatchError", "case_specs", "verify",
           "build_and_verify", "rates", "make_row", "format_table", "run_kernels", "TrainModel", "train_models",
           "to_torch", "compare_first_step", "measure_training", "run_training", "format_training_table",
           "TORCH_EQUIVALENTS"]


if __name__ == "__main__":
    sys.exit(main())
