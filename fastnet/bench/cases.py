"""The benchmark cases: every kernel family's declared cases, then the cases of ops above the
kernels (a convolution through the functional layer, per-op overhead through autograd).

A case is one computation at one realistic training shape (``quick``: a tiny one, to check that
it runs): its FLOPs, the minimum bytes it must move (every input read once, every output written
once), and its implementations: ``fastnet`` (ours) and its peers, e.g. ``numpy`` (the plain array
formulation; ``cupy`` on a GPU) and ``torch`` (PyTorch's CPU op, when installed). The vocabulary
(:class:`CaseSpec`, :class:`Case`, :class:`BenchContext`) is the kernel contract's, so that a
family declares its cases in its own module (``FAMILY.bench_cases``) and :func:`case_specs` finds
them with nothing to register here.

The op-level cases:

* ``conv2d``: y (N, OC, OH, OW) = conv(x (N, C, H, W), w (OC, C, K, K)), forward with no graph,
  at the layers whose im2col and col2im the conv family times; peers: one tensordot of NumPy's
  window view, PyTorch.
* ``conv2d_train``: forward and backward (dx, dw, db) of a 3x3, stride-1, padding-1 convolution
  with a bias, by conv2d's own choice of algorithm, by each of im2col and Winograd forced, and by
  PyTorch.
* ``overhead``: one 4-float add through the tensor layer (forward, and forward + backward): what
  a framework costs per op, against NumPy's bare add and PyTorch's autograd.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import Device, conv_output_shape
from ..functional.conv import Conv2d, Conv2dWinograd, conv2d
from ..kernels import _cuda
from ..kernels._contract import (
    FLOAT32_BYTES,
    OURS,
    BenchContext,
    Case,
    CaseInfo,
    CaseSpec,
    Implementation,
    families,
)
from ..kernels.conv import BENCH_CONV_LAYERS, QUICK_BENCH_CONV_LAYERS, conv_label
from ..tensor import Tensor, no_grad
from .harness import Ceilings, MismatchError, build_and_verify, make_row, time_cpu, time_cuda

# The 3x3 layers trained by Winograd: MNIST's conv2, ResNet-20's three stages, and 8 channels
# (below WINOGRAD_MIN_CHANNELS, so im2col): (key, batch, in channels, out channels, side).
TRAIN_LAYERS = (
    ("mnist.conv2.b64", 64, 32, 64, 14),
    ("mnist.conv2.b256", 256, 32, 64, 14),
    ("c8.b128", 128, 8, 16, 32),
    ("resnet20.stage1.b128", 128, 16, 16, 32),
    ("resnet20.stage2.b128", 128, 32, 32, 16),
    ("resnet20.stage3.b128", 128, 64, 64, 8),
)
QUICK_TRAIN_LAYERS = (("tiny.c16", 2, 16, 3, 5),)


def plain_conv2d(x: Any, weight: Any, stride: int, padding: int) -> Any:
    """y (N, OC, OH, OW) as one tensordot of the window view with the weights."""
    xp = _cuda.array_module(x)
    kernel = weight.shape[-1]
    padded = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = xp.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]
    y = xp.tensordot(windows, weight, axes=([1, 4, 5], [1, 2, 3]))
    return xp.ascontiguousarray(y.transpose(0, 3, 1, 2))


def _conv2d_case(
    context: BenchContext,
    key: str,
    x_shape: tuple[int, ...],
    out_channels: int,
    kernel: int,
    stride: int,
    padding: int,
) -> Case:
    """Forward convolution through fastnet's conv2d (im2col and GEMMs a chunk of images at a
    time), with no autograd graph."""
    device, torch = context.ops, context.torch
    n, channels, height, width = x_shape
    pairs = ((kernel, kernel), (stride, stride), (padding, padding))
    out_h, out_w = conv_output_shape(height, width, *pairs)
    x = context.random(x_shape)
    weight = context.random((out_channels, channels, kernel, kernel), seed=1)
    x_tensor, weight_tensor = Tensor._wrap(x, device), Tensor._wrap(weight, device)

    def ours() -> Any:
        with no_grad():
            return conv2d(x_tensor, weight_tensor, stride=stride, padding=padding).data

    implementations = {
        OURS: Implementation(ours),
        context.plain: Implementation(lambda: plain_conv2d(x, weight, stride, padding)),
    }
    if torch:
        x_torch, weight_torch = torch.from_numpy(x), torch.from_numpy(weight)
        implementations["torch"] = Implementation(
            lambda: torch.nn.functional.conv2d(
                x_torch, weight_torch, stride=stride, padding=padding
            )
        )
    out_size = n * out_channels * out_h * out_w
    info = CaseInfo(
        "conv2d",
        f"{key} {conv_label(x_shape, kernel, stride, padding, out_channels)}",
        2.0 * out_size * channels * kernel * kernel,
        FLOAT32_BYTES * (x.size + weight.size + out_size),
    )
    return Case(info, implementations)


def _conv2d_train_case(
    context: BenchContext, key: str, x_shape: tuple[int, ...], out_channels: int
) -> Case:
    """Forward + backward of a 3x3 convolution with a bias, the way training runs it. FLOPs are
    the direct convolution's (three products of 2·OC·C·9 per output pixel), whatever the
    algorithm."""
    device, torch = context.ops, context.torch
    n, channels, height, width = x_shape
    y_shape = (n, out_channels, height, width)
    arrays = [
        context.random(x_shape),
        context.random((out_channels, channels, 3, 3), seed=1),
        context.random((out_channels,), seed=2),
    ]
    upstream = Tensor._wrap(context.random(y_shape, seed=3), device)

    def train_step(forward: Callable[..., Tensor]) -> tuple:
        leaves = [Tensor._wrap(array, device) for array in arrays]
        for leaf in leaves:
            leaf.requires_grad = True
        y = forward(*leaves)
        y.backward(upstream)
        return (y.data, *(leaf.grad.data for leaf in leaves))

    implementations = {
        OURS: Implementation(lambda: train_step(lambda *t: conv2d(*t, stride=1, padding=1))),
        "im2col": Implementation(
            lambda: train_step(lambda *t: Conv2d.apply(*t, stride=(1, 1), padding=(1, 1)))
        ),
        "winograd": Implementation(
            lambda: train_step(lambda *t: Conv2dWinograd.apply(*t, padding=(1, 1)))
        ),
    }
    if torch:
        upstream_torch = torch.from_numpy(upstream.data)

        def torch_step() -> tuple:
            leaves = [torch.from_numpy(array).requires_grad_() for array in arrays]
            y = torch.nn.functional.conv2d(*leaves, padding=1)
            y.backward(upstream_torch)
            return (y, *(leaf.grad for leaf in leaves))

        implementations["torch"] = Implementation(torch_step)
    out_size = n * out_channels * height * width
    moved = math.prod(x_shape) + out_size + arrays[1].size + out_channels
    info = CaseInfo(
        "conv2d_train",
        f"{key} {conv_label(x_shape, 3, 1, 1, out_channels)}",
        3 * 2.0 * out_size * channels * 9,
        FLOAT32_BYTES * 2 * moved,
    )
    return Case(info, implementations)


def _add_overhead_case(context: BenchContext, key: str, backward: bool) -> Case:
    """One tiny add through the tensor layer: what a framework costs per op, not the arithmetic."""
    torch = context.torch
    values = np.arange(4, dtype=np.float32)
    a, b = (
        Tensor(values + shift, device=context.variant, requires_grad=backward)
        for shift in (0.0, 1.0)
    )
    seed = Tensor(np.ones(4, np.float32), device=context.variant)

    def ours() -> Any:
        c = a + b
        if backward:
            c.backward(seed)
        return c.data

    implementations = {OURS: Implementation(ours)}
    if not backward:  # NumPy has no backward to race
        a_plain, b_plain = a.data, b.data
        implementations[context.plain] = Implementation(lambda: context.xp.add(a_plain, b_plain))
    if torch:
        a_torch, b_torch = (
            torch.tensor(values + shift, requires_grad=backward) for shift in (0.0, 1.0)
        )
        seed_torch = torch.ones(4)

        def torch_add() -> Any:
            c = a_torch + b_torch
            if backward:
                c.backward(seed_torch)
            return c

        implementations["torch"] = Implementation(torch_add)
    label = f"{key} 4 floats, " + ("forward + backward" if backward else "forward, no graph")
    info = CaseInfo("overhead", label, 4.0, FLOAT32_BYTES * 12.0, fixed_bound="latency")
    return Case(info, implementations)


def op_case_specs(quick: bool = False) -> list[CaseSpec]:
    """The cases of ops above the kernels (see the module docstring)."""
    with_plain, with_torch = (OURS, "numpy", "torch"), (OURS, "torch")
    specs = []
    for key, batch, channels, out_channels, side, kernel, stride, padding in (
        QUICK_BENCH_CONV_LAYERS if quick else BENCH_CONV_LAYERS
    ):
        x_shape = (batch, channels, side, side)
        build = functools.partial(
            _conv2d_case,
            key=key,
            x_shape=x_shape,
            out_channels=out_channels,
            kernel=kernel,
            stride=stride,
            padding=padding,
        )
        specs.append(
            CaseSpec("conv2d", key, conv_label(x_shape, kernel, stride, padding), build, with_plain)
        )
    for key, batch, channels, out_channels, side in QUICK_TRAIN_LAYERS if quick else TRAIN_LAYERS:
        x_shape = (batch, channels, side, side)
        build = functools.partial(
            _conv2d_train_case, key=key, x_shape=x_shape, out_channels=out_channels
        )
        specs.append(
            CaseSpec(
                "conv2d_train",
                key,
                conv_label(x_shape, 3, 1, 1, out_channels),
                build,
                (OURS, "im2col", "winograd", "torch"),
            )
        )
    for key, backward in (("add", False), ("add.backward", True)):
        build = functools.partial(_add_overhead_case, key=key, backward=backward)
        specs.append(
            CaseSpec("overhead", key, "4 floats", build, with_torch if backward else with_plain)
        )
    return specs


def case_specs(quick: bool = False) -> list[CaseSpec]:
    """Every case: each kernel family's (in family-name order), then :func:`op_case_specs`."""
    specs = [spec for family in families() for spec in family.bench_cases(quick)]
    return specs + op_case_specs(quick)


def run_kernels(
    device: Device,
    ceilings: Ceilings,
    quick: bool = False,
    only: str | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> tuple[list[dict], list[str]]:
    """Build, verify and time every case (those whose id contains ``only``): (rows, failures).
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
        runs = {name: implementation.run for name, implementation in case.implementations.items()}
        rows.append(make_row(case.info, timer(runs, quick=quick), ceilings))
    return rows, failures
