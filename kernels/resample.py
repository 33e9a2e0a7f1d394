"""2-D resampling (PyTorch's ``interpolate``): nearest and bilinear, forward and backward.

Math. Resampling x (N, C, H, W) to y (N, C, OH, OW) is separable: each output row oh reads input
rows through an interpolation matrix R_h (OH, H), each output column through R_w (OW, W), and

    y[n, c]  = R_h · x[n, c] · R_wᵀ            dx[n, c] = R_hᵀ · dy[n, c] · R_w   (the adjoint)

Each row of R holds the taps of one output position o on an axis of input size S and output size
O (PyTorch's rules, in the arithmetic PyTorch uses, so that the indices agree to the bit):

* nearest: one tap of weight 1 at ``min(floor(o · scale), S - 1)`` computed in float32, where
  ``scale = 1 / scale_factor`` when the caller gave a scale factor, else ``S / O``; O = S copies
  and O = 2·S halves the index exactly (PyTorch's CPU special cases).
* nearest-exact: ``min(floor((o + 0.5) · scale), S - 1)`` (pixel centres; Pillow, scipy).
* bilinear, ``align_corners=False`` (half-pixel centres): ``src = max(scale · (o + 0.5) - 0.5, 0)``
  with the scale as for nearest; ``align_corners=True``: ``src = o · (S - 1) / (O - 1)`` (0 when
  O = 1), any scale factor ignored; O = S copies (``src = o``, PyTorch's CPU rule). Taps
  ``i0 = floor(src)`` and ``i1 = min(i0 + 1, S - 1)`` with weights ``1 - λ`` and
  ``λ = src - i0``, computed in the dtype of x (float32 as PyTorch does).

The kernels never build R. The forwards gather each output from its taps. R's transpose along
H is stored in compressed rows (for input row h, the output rows that read it and their weights,
merged where both taps of one output are h), so each input row of dx is owned by one thread:
the CPU backward adds the output rows listed for it, scattered along the columns through the
forward column taps (race-free); the CUDA backward has each input pixel gather from its output
rows and columns (the same table along W): no atomics, a fixed summation order.

Buffers: x and dx (N, C, H, W); y and dy (N, C, OH, OW); one dtype, float32 or float64.
``scale_factors`` is None or a pair (for H, W) of PyTorch's scale factors, each None or > 0.
Per-axis tables (a few hundred bytes) are built on the host once per geometry and cached, on
the device they are used on, so a call transfers nothing.

Variants, simplest first:

* ``reference_*``: float64 NumPy, the dense matrices R_h and R_w built one output at a time and
  multiplied (``R_h @ x @ R_wᵀ``), a different formulation from the kernels' gathers.
* ``*_cpu``: Numba, parallel over the N·C·OH output rows (forward) or N·C·H input rows
  (backward), serial or parallel as the CPU policy (``_cpu.parallel_pays``) decides for the size.
* ``*_cuda``: Numba CUDA, grid-stride loops over the outputs (forward) or the input pixels
  (backward).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import numba
import numpy as np
from numba import cuda, prange
from numba.extending import register_jitable

from ._checks import as_shape, check_float_dtype
from ._contract import (
    FLOAT32_BYTES,
    OURS,
    BenchContext,
    Case,
    CaseInfo,
    CaseSpec,
    Family,
    Implementation,
    KernelSpec,
)
from ._cpu import cpu_kernel
from ._cuda import array_module, cuda_kernel, empty, launch, stride_grid

THREADS_PER_BLOCK = 256
_INDEX = np.int32

ScaleFactors = tuple[float | None, float | None] | None


# ---------------------------------------------------------------------------------------------
# Arguments


def _scale_pair(scale_factors: ScaleFactors, op: str) -> tuple[float | None, float | None]:
    if scale_factors is None:
        return None, None
    if len(scale_factors) != 2:
        raise ValueError(
            f"{op} expects scale_factors as None or an (h, w) pair, got {scale_factors}"
        )
    pair = tuple(None if s is None else float(s) for s in scale_factors)
    if any(s is not None and not s > 0 for s in pair):
        raise ValueError(f"{op} expects positive scale factors, got {scale_factors}")
    return pair


def _check_sizes(in_hw: Sequence[int], out_hw: Sequence[int], op: str) -> None:
    if min(in_hw) < 1 or min(out_hw) < 1:
        raise ValueError(
            f"{op}: input and output sizes must be positive, got input {tuple(in_hw)} and "
            f"output {tuple(out_hw)}"
        )
    if max(*in_hw, *out_hw) > np.iinfo(_INDEX).max:
        raise ValueError(f"{op}: sides of {max(*in_hw, *out_hw)} overflow int32 indices")


def _forward_arguments(x: Any, out_hw: Sequence[int], scale_factors: ScaleFactors, op: str):
    check_float_dtype(x, "x", op)
    if x.ndim != 4:
        raise ValueError(f"{op} expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    out_hw = as_shape(out_hw, op)
    if len(out_hw) != 2:
        raise ValueError(f"{op} expects out_hw as an (OH, OW) pair, got {out_hw}")
    _check_sizes(x.shape[2:], out_hw, op)
    scales = _scale_pair(scale_factors, op)
    return array_module(x).ascontiguousarray(x), out_hw, scales


def _backward_arguments(dy: Any, x_shape: Sequence[int], scale_factors: ScaleFactors, op: str):
    check_float_dtype(dy, "dy", op)
    x_shape = as_shape(x_shape, op)
    if len(x_shape) != 4 or dy.ndim != 4 or tuple(dy.shape[:2]) != x_shape[:2]:
        raise ValueError(
            f"{op} expects dy (N, C, OH, OW) and x_shape (N, C, H, W) with the same N and C, "
            f"got dy {tuple(dy.shape)} and x_shape {x_shape}"
        )
    _check_sizes(x_shape[2:], dy.shape[2:], op)
    scales = _scale_pair(scale_factors, op)
    return array_module(dy).ascontiguousarray(dy), x_shape, scales


def _planes(array: Any) -> Any:
    """An (N, C, A, B) array as the (N*C, A, B) stack of its planes, as the kernels take them."""
    return array.reshape(array.shape[0] * array.shape[1], *array.shape[2:])


# ---------------------------------------------------------------------------------------------
# Taps: PyTorch's index rules (aten/src/ATen/native/UpSample.h), vectorised


def nearest_sources(size: int, out: int, scale_factor: float | None, exact: bool) -> np.ndarray:
    """The input position each of ``out`` outputs copies, as PyTorch's CPU kernels pick it: the
    scale in float32, ``o · scale`` in float32 (nearest) or ``(o + 0.5) · scale`` in float64
    rounded to float32 (nearest-exact), then floored."""
    if scale_factor is not None and scale_factor > 0:
        scale = np.float32(1.0 / scale_factor)
    else:
        scale = np.float32(size) / np.float32(out)
    positions = np.arange(out)
    if exact:
        source = np.floor(((positions + 0.5) * np.float64(scale)).astype(np.float32))
    elif out == size:
        return positions
    elif out == 2 * size:
        return positions >> 1
    else:
        source = np.floor(positions.astype(np.float32) * scale)
    return np.minimum(source.astype(np.int64), size - 1)


def linear_taps(
    size: int, out: int, align_corners: bool, scale_factor: float | None, dtype: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, λ) for each of ``out`` outputs: it reads ``(1 - λ)·x[i0] + λ·x[i1]``, with the
    source position computed in ``dtype`` as PyTorch computes it."""
    real = np.dtype(dtype).type
    positions = np.arange(out, dtype=real)
    if out == size:  # PyTorch copies, whatever the scale factor
        return np.arange(out), np.arange(out), np.zeros(out, real)
    if align_corners:
        scale = real(size - 1) / real(out - 1) if out > 1 else real(0)
        source = scale * positions
    else:
        if scale_factor is not None and scale_factor > 0:
            scale = real(1.0 / scale_factor)
        else:
            scale = real(size) / real(out)
        source = np.maximum(scale * (positions + real(0.5)) - real(0.5), real(0))
    first = np.minimum(source.astype(np.int64), size - 1)
    fraction = np.clip(source - first.astype(real), real(0), real(1))
    return first, np.minimum(first + 1, size - 1), fraction


def _transpose(
    sources: tuple[np.ndarray, np.ndarray], weights: tuple[np.ndarray, np.ndarray], size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R's transpose in compressed rows: (start (size + 1), target, weight), where input position
    i is read by outputs ``target[start[i]:start[i + 1]]`` (ascending) with those weights; both
    taps of one output on one input merge into one entry."""
    first, second = sources
    outputs = np.arange(first.size)
    merged = first == second
    source = np.concatenate([first, second[~merged]])
    target = np.concatenate([outputs, outputs[~merged]])
    weight = np.concatenate([weights[0] + np.where(merged, weights[1], 0), weights[1][~merged]])
    order = np.lexsort((target, source))
    start = np.searchsorted(source[order], np.arange(size + 1))
    return start.astype(_INDEX), target[order].astype(_INDEX), weight[order]


def _device_id(array: Any) -> int:
    """The GPU a CuPy array lives on (its ``cupy.cuda.Device``'s id); -1 for NumPy."""
    return -1 if array_module(array) is np else array.device.id


@functools.lru_cache(maxsize=256)
def _axis_tables(
    xp: Any, device: int, size: int, out: int, mode: tuple, scale_factor: float | None, dtype: str
) -> tuple[Any, ...]:
    """One axis's tables on one device: (taps (2, out), tap weights (2, out), start, target,
    weight); ``mode`` is ("nearest", exact) or ("bilinear", align_corners). Cached: a model
    resamples the same few geometries every step."""
    real = np.dtype(dtype)
    if mode[0] == "nearest":
        first = nearest_sources(size, out, scale_factor, exact=mode[1])
        second, fraction = first, np.zeros(out, real)
    else:
        first, second, fraction = linear_taps(size, out, mode[1], scale_factor, real)
    weights = (1 - fraction).astype(real), fraction.astype(real)
    taps = np.stack([first, second]).astype(_INDEX)
    tables = (taps, np.stack(weights), *_transpose((first, second), weights, size))
    if xp is np:
        return tables
    with xp.cuda.Device(device):
        return tuple(xp.asarray(table) for table in tables)


def _tables(like: Any, in_hw, out_hw, mode: tuple, scales) -> tuple[tuple, tuple]:
    """The row tables and the column tables for resampling ``in_hw`` to ``out_hw``."""
    xp = array_module(like)
    key = (xp, _device_id(like))
    return tuple(
        _axis_tables(*key, size, out, mode, scale, like.dtype.str)
        for size, out, scale in zip(in_hw, out_hw, scales, strict=True)
    )


# ---------------------------------------------------------------------------------------------
# References (float64): the dense interpolation matrices, one output at a time


def _reference_matrix(size: int, out: int, mode: tuple, scale_factor: float | None) -> np.ndarray:
    matrix = np.zeros((out, size))
    for o in range(out):
        if mode[0] == "nearest":
            scale = (
                np.float32(1.0 / scale_factor)
                if scale_factor
                else np.float32(size) / np.float32(out)
            )
            if mode[1]:  # exact: pixel centres
                source = math.floor(np.float32((o + 0.5) * float(scale)))
            elif out in (size, 2 * size):
                source = o * size // out
            else:
                source = math.floor(np.float32(o) * scale)
            matrix[o, min(source, size - 1)] = 1.0
            continue
        if out == size:
            source = float(o)
        elif mode[1]:  # align_corners
            source = o * (size - 1) / (out - 1) if out > 1 else 0.0
        else:
            scale = 1.0 / scale_factor if scale_factor else size / out
            source = max(scale * (o + 0.5) - 0.5, 0.0)
        low = min(math.floor(source), size - 1)
        matrix[o, low] += 1.0 - (source - low)
        matrix[o, min(low + 1, size - 1)] += source - low
    return matrix


def _reference_resample(x: np.ndarray, out_hw, mode: tuple, scale_factors) -> np.ndarray:
    (height, width), (out_h, out_w) = np.shape(x)[2:], out_hw
    scale_h, scale_w = _scale_pair(scale_factors, "reference")
    rows = _reference_matrix(height, out_h, mode, scale_h)
    columns = _reference_matrix(width, out_w, mode, scale_w)
    return rows @ np.asarray(x, np.float64) @ columns.T


def _reference_adjoint(dy: np.ndarray, x_shape, mode: tuple, scale_factors) -> np.ndarray:
    (height, width), (out_h, out_w) = tuple(x_shape)[2:], np.shape(dy)[2:]
    scale_h, scale_w = _scale_pair(scale_factors, "reference")
    rows = _reference_matrix(height, out_h, mode, scale_h)
    columns = _reference_matrix(width, out_w, mode, scale_w)
    return rows.T @ np.asarray(dy, np.float64) @ columns


def reference_nearest2d_forward(
    x: np.ndarray, out_hw: Sequence[int], scale_factors: ScaleFactors = None, exact: bool = False
) -> np.ndarray:
    """y in float64: ``R_h @ x @ R_wᵀ`` with one-hot rows."""
    return _reference_resample(x, out_hw, ("nearest", exact), scale_factors)


def reference_nearest2d_backward(
    dy: np.ndarray, x_shape: Sequence[int], scale_factors: ScaleFactors = None, exact: bool = False
) -> np.ndarray:
    """dx in float64: ``R_hᵀ @ dy @ R_w``."""
    return _reference_adjoint(dy, x_shape, ("nearest", exact), scale_factors)


def reference_bilinear2d_forward(
    x: np.ndarray,
    out_hw: Sequence[int],
    align_corners: bool = False,
    scale_factors: ScaleFactors = None,
) -> np.ndarray:
    """y in float64: ``R_h @ x @ R_wᵀ`` with two weights a row."""
    return _reference_resample(x, out_hw, ("bilinear", align_corners), scale_factors)


def reference_bilinear2d_backward(
    dy: np.ndarray,
    x_shape: Sequence[int],
    align_corners: bool = False,
    scale_factors: ScaleFactors = None,
) -> np.ndarray:
    """dx in float64: ``R_hᵀ @ dy @ R_w``."""
    return _reference_adjoint(dy, x_shape, ("bilinear", align_corners), scale_factors)


# ---------------------------------------------------------------------------------------------
# Per element, shared by the CPU and CUDA kernels


@register_jitable
def _bilinear_value(x, plane, oh, ow, row_taps, row_weights, column_taps, column_weights):
    """y[plane, oh, ow] from its four taps."""
    top, bottom = row_taps[0, oh], row_taps[1, oh]
    left, right = column_taps[0, ow], column_taps[1, ow]
    left_weight, right_weight = column_weights[0, ow], column_weights[1, ow]
    return row_weights[0, oh] * (
        left_weight * x[plane, top, left] + right_weight * x[plane, top, right]
    ) + row_weights[1, oh] * (
        left_weight * x[plane, bottom, left] + right_weight * x[plane, bottom, right]
    )


# ---------------------------------------------------------------------------------------------
# CPU: each iteration owns one row of the output it writes (race-free, fixed summation order)


@cpu_kernel
def _nearest_forward_cpu(x, y, row_taps, column_taps):
    out_h = y.shape[1]
    for plane_row in prange(y.shape[0] * out_h):
        plane, oh = plane_row // out_h, plane_row % out_h
        source, target = x[plane, row_taps[0, oh]], y[plane, oh]
        for ow in range(target.size):
            target[ow] = source[column_taps[0, ow]]


@cpu_kernel
def _bilinear_forward_cpu(x, y, row_taps, row_weights, column_taps, column_weights):
    out_h = y.shape[1]
    for plane_row in prange(y.shape[0] * out_h):
        plane, oh = plane_row // out_h, plane_row % out_h
        for ow in range(y.shape[2]):
            y[plane, oh, ow] = _bilinear_value(
                x, plane, oh, ow, row_taps, row_weights, column_taps, column_weights
            )


@cpu_kernel
def _backward_cpu(dy, dx, row_start, row_target, row_weight, column_taps, column_weights, taps):
    """Each input row (plane, h) adds up the output rows that read it (the row table), scattering
    each along the columns through the forward column taps (``taps`` of them: 1 for nearest)."""
    height = dx.shape[1]
    for plane_row in prange(dx.shape[0] * height):
        plane, h = plane_row // height, plane_row % height
        target = dx[plane, h]
        target[:] = 0
        for i in range(row_start[h], row_start[h + 1]):
            source, weight = dy[plane, row_target[i]], row_weight[i]
            for ow in range(source.size):
                gradient = weight * source[ow]
                for tap in range(taps):
                    target[column_taps[tap, ow]] += column_weights[tap, ow] * gradient


# ---------------------------------------------------------------------------------------------
# CUDA: grid-stride loops, one thread per output (forward) or input pixel (backward)


@cuda_kernel
def _nearest_forward_cuda(x, y, row_taps, column_taps):
    out_h, out_w = y.shape[1], y.shape[2]
    for output in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        plane_row, ow = output // out_w, output % out_w
        plane, oh = plane_row // out_h, plane_row % out_h
        y[plane, oh, ow] = x[plane, row_taps[0, oh], column_taps[0, ow]]


@cuda_kernel
def _bilinear_forward_cuda(x, y, row_taps, row_weights, column_taps, column_weights):
    out_h, out_w = y.shape[1], y.shape[2]
    for output in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        plane_row, ow = output // out_w, output % out_w
        plane, oh = plane_row // out_h, plane_row % out_h
        y[plane, oh, ow] = _bilinear_value(
            x, plane, oh, ow, row_taps, row_weights, column_taps, column_weights
        )


@cuda_kernel
def _backward_cuda(
    dy, dx, row_start, row_target, row_weight, column_start, column_target, column_weight
):
    height, width = dx.shape[1], dx.shape[2]
    for pixel in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        plane_row, w = pixel // width, pixel % width
        plane, h = plane_row // height, plane_row % height
        # the weighted sum of dy over the outputs that read input pixel (h, w)
        total = dx.dtype.type(0)
        for i in range(row_start[h], row_start[h + 1]):
            oh = row_target[i]
            along = dx.dtype.type(0)
            for j in range(column_start[w], column_start[w + 1]):
                along += column_weight[j] * dy[plane, oh, column_target[j]]
            total += row_weight[i] * along
        dx[plane, h, w] = total


# ---------------------------------------------------------------------------------------------
# Launchers

_KERNELS = {
    ("nearest", "cpu"): _nearest_forward_cpu,
    ("nearest", "cuda"): _nearest_forward_cuda,
    ("bilinear", "cpu"): _bilinear_forward_cpu,
    ("bilinear", "cuda"): _bilinear_forward_cuda,
    ("backward", "cpu"): _backward_cpu,
    ("backward", "cuda"): _backward_cuda,
}


def _run(kernel: str, variant: str, elements: int, *args: Any) -> None:
    """Run a kernel over ``elements`` outputs: the CPU policy's driver, or a grid-stride launch."""
    function = _KERNELS[kernel, variant]
    if variant == "cpu":
        function(elements, *args)
    else:
        launch(function, stride_grid(elements, THREADS_PER_BLOCK), THREADS_PER_BLOCK, *args)


def _forward(variant: str, x: Any, out_hw, mode: tuple, scale_factors: ScaleFactors) -> Any:
    op = f"{mode[0]}2d_forward"
    x, out_hw, scales = _forward_arguments(x, out_hw, scale_factors, op)
    rows, columns = _tables(x, x.shape[2:], out_hw, mode, scales)
    y = empty((*x.shape[:2], *out_hw), x.dtype, like=x)
    taps = (rows[0], columns[0]) if mode[0] == "nearest" else (*rows[:2], *columns[:2])
    _run(mode[0], variant, y.size, _planes(x), _planes(y), *taps)
    return y


def _backward(variant: str, dy: Any, x_shape, mode: tuple, scale_factors: ScaleFactors) -> Any:
    dy, x_shape, scales = _backward_arguments(dy, x_shape, scale_factors, f"{mode[0]}2d_backward")
    rows, columns = _tables(dy, x_shape[2:], dy.shape[2:], mode, scales)
    dx = empty(x_shape, dy.dtype, like=dy)
    if variant == "cpu":
        taps = 1 if mode[0] == "nearest" else 2
        _run("backward", variant, dx.size, _planes(dy), _planes(dx), *rows[2:], *columns[:2], taps)
    else:
        _run("backward", variant, dx.size, _planes(dy), _planes(dx), *rows[2:], *columns[2:])
    return dx


def nearest2d_forward_cpu(
    x: np.ndarray, out_hw: Sequence[int], scale_factors: ScaleFactors = None, exact: bool = False
) -> np.ndarray:
    """y (N, C, OH, OW): each output copies the input pixel PyTorch's "nearest" (or, with
    ``exact``, "nearest-exact") picks."""
    return _forward("cpu", x, out_hw, ("nearest", bool(exact)), scale_factors)


def nearest2d_backward_cpu(
    dy: np.ndarray, x_shape: Sequence[int], scale_factors: ScaleFactors = None, exact: bool = False
) -> np.ndarray:
    """dx (N, C, H, W): each input pixel's sum of dy over the outputs that copied it."""
    return _backward("cpu", dy, x_shape, ("nearest", bool(exact)), scale_factors)


def bilinear2d_forward_cpu(
    x: np.ndarray,
    out_hw: Sequence[int],
    align_corners: bool = False,
    scale_factors: ScaleFactors = None,
) -> np.ndarray:
    """y (N, C, OH, OW): bilinear interpolation of x (N, C, H, W)."""
    return _forward("cpu", x, out_hw, ("bilinear", bool(align_corners)), scale_factors)


def bilinear2d_backward_cpu(
    dy: np.ndarray,
    x_shape: Sequence[int],
    align_corners: bool = False,
    scale_factors: ScaleFactors = None,
) -> np.ndarray:
    """dx (N, C, H, W): the adjoint of :func:`bilinear2d_forward_cpu` applied to dy."""
    return _backward("cpu", dy, x_shape, ("bilinear", bool(align_corners)), scale_factors)


def nearest2d_forward_cuda(
    x: Any, out_hw: Sequence[int], scale_factors: ScaleFactors = None, exact: bool = False
) -> Any:
    """As :func:`nearest2d_forward_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    return _forward("cuda", x, out_hw, ("nearest", bool(exact)), scale_factors)


def nearest2d_backward_cuda(
    dy: Any, x_shape: Sequence[int], scale_factors: ScaleFactors = None, exact: bool = False
) -> Any:
    """As :func:`nearest2d_backward_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    return _backward("cuda", dy, x_shape, ("nearest", bool(exact)), scale_factors)


def bilinear2d_forward_cuda(
    x: Any, out_hw: Sequence[int], align_corners: bool = False, scale_factors: ScaleFactors = None
) -> Any:
    """As :func:`bilinear2d_forward_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    return _forward("cuda", x, out_hw, ("bilinear", bool(align_corners)), scale_factors)


def bilinear2d_backward_cuda(
    dy: Any, x_shape: Sequence[int], align_corners: bool = False, scale_factors: ScaleFactors = None
) -> Any:
    """As :func:`bilinear2d_backward_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    return _backward("cuda", dy, x_shape, ("bilinear", bool(align_corners)), scale_factors)


def cuda_kernels() -> list[KernelSpec]:
    """The CUDA kernels of this module, each with one float32 specialisation, for the PTX check."""
    planes, index, weight = numba.float32[:, :, ::1], numba.int32[::1], numba.float32[::1]
    taps, tap_weights = numba.int32[:, ::1], numba.float32[:, ::1]
    return [
        KernelSpec(
            "nearest2d_forward",
            _nearest_forward_cuda,
            (planes, planes, taps, taps),
            THREADS_PER_BLOCK,
        ),
        KernelSpec(
            "bilinear2d_forward",
            _bilinear_forward_cuda,
            (planes, planes, taps, tap_weights, taps, tap_weights),
            THREADS_PER_BLOCK,
        ),
        KernelSpec(
            "resample2d_backward",
            _backward_cuda,
            (planes, planes, index, index, weight, index, index, weight),
            THREADS_PER_BLOCK,
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Benchmark cases: 2x upsampling (a U-Net decoder's), with the peers written as a NumPy user
# would write them (for any array module with NumPy's API: NumPy, CuPy)


def plain_nearest_upsample2x(x: Any) -> Any:
    return x.repeat(2, axis=2).repeat(2, axis=3)


def plain_nearest_upsample2x_backward(dy: Any) -> Any:
    n, channels, out_h, out_w = dy.shape
    return dy.reshape(n, channels, out_h // 2, 2, out_w // 2, 2).sum(axis=(3, 5))


def _plain_matrices(context: BenchContext, in_hw, out_hw) -> tuple[Any, Any]:
    """The dense bilinear (half-pixel) interpolation matrices R_h, R_w, in float32."""
    return tuple(
        context.xp.asarray(_reference_matrix(size, out, ("bilinear", False), None), np.float32)
        for size, out in zip(in_hw, out_hw, strict=True)
    )


def _resample_case(context: BenchContext, key: str, x_shape: tuple, mode: str, pass_: str) -> Case:
    ops, xp, torch = context.ops, context.xp, context.torch
    n, channels, height, width = x_shape
    out_hw = (2 * height, 2 * width)
    out_shape = (n, channels, *out_hw)
    x = context.random(x_shape)
    dy = context.random(out_shape, seed=1)
    rows, columns = _plain_matrices(context, (height, width), out_hw)
    if mode == "nearest":
        ours = (
            (lambda: ops.nearest2d_forward(x, out_hw))
            if pass_ == "fwd"
            else (lambda: ops.nearest2d_backward(dy, x_shape))
        )
        plain = (
            (lambda: plain_nearest_upsample2x(x))
            if pass_ == "fwd"
            else (lambda: plain_nearest_upsample2x_backward(dy))
        )
    else:
        ours = (
            (lambda: ops.bilinear2d_forward(x, out_hw, False))
            if pass_ == "fwd"
            else (lambda: ops.bilinear2d_backward(dy, x_shape, False))
        )
        plain = (
            (lambda: xp.matmul(xp.matmul(rows, x), columns.T))
            if pass_ == "fwd"
            else (lambda: xp.matmul(xp.matmul(rows.T, dy), columns))
        )
    implementations = {OURS: Implementation(ours), context.plain: Implementation(plain)}
    if torch:
        x_torch, dy_torch = torch.from_numpy(x), torch.from_numpy(dy)
        interpolate = torch.nn.functional.interpolate
        if pass_ == "fwd":
            corners = {} if mode == "nearest" else {"align_corners": False}
            run = partial(interpolate, x_torch, size=out_hw, mode=mode, **corners)
        elif mode == "nearest":
            run = partial(
                torch.ops.aten.upsample_nearest2d_backward, dy_torch, out_hw, x_shape, None, None
            )
        else:
            run = partial(
                torch.ops.aten.upsample_bilinear2d_backward,
                dy_torch,
                out_hw,
                x_shape,
                False,
                None,
                None,
            )
        implementations["torch"] = Implementation(run)
    elements = math.prod(out_shape)
    flops_per_output = 1 if mode == "nearest" else 9  # a copy; three lerps (6 mul, 3 add)
    info = CaseInfo(
        f"resample_{mode}_{pass_}",
        f"{key} {'x'.join(map(str, x_shape))} x2",
        float(flops_per_output * elements),
        FLOAT32_BYTES * (math.prod(x_shape) + elements),
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """2x nearest and bilinear upsampling, forward and backward, on a U-Net decoder's feature
    maps (a tiny one with ``quick``)."""
    shapes = (("tiny", (2, 3, 5, 7)),) if quick else (("unet.up3.b16", (16, 128, 28, 28)),)
    return [
        CaseSpec(
            f"resample_{mode}_{pass_}",
            key,
            "x".join(map(str, x_shape)),
            partial(_resample_case, key=key, x_shape=x_shape, mode=mode, pass_=pass_),
            (OURS, "numpy", "torch"),
        )
        for key, x_shape in shapes
        for mode in ("nearest", "bilinear")
        for pass_ in ("fwd", "bwd")
    ]


FAMILY = Family(
    name="resample",
    module=__name__,
    ops=("nearest2d_forward", "nearest2d_backward", "bilinear2d_forward", "bilinear2d_backward"),
    references={
        "nearest2d_forward": reference_nearest2d_forward,
        "nearest2d_backward": reference_nearest2d_backward,
        "bilinear2d_forward": reference_bilinear2d_forward,
        "bilinear2d_backward": reference_bilinear2d_backward,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
