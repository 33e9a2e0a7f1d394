"""Max-pool 2-D, forward and backward.

Math. For x of shape (N, C, H, W), a window KH x KW, stride (SH, SW) and padding (PH, PW)
(the padding counts as -inf: never the maximum), with OH, OW as in :mod:`._geometry`:

    y[n, c, oh, ow]      = max of x[n, c, h, w] over the window h in [oh*SH - PH, oh*SH - PH + KH),
                                                             w in [ow*SW - PW, ow*SW - PW + KW)
    argmax[n, c, oh, ow] = h*W + w of that maximum: the first one in row-major window order
                           (ties go to the earliest); a NaN counts as the maximum, so it propagates
    dx[n, c, h, w]       = sum of dy[n, c, oh, ow] over every window whose argmax is h*W + w

Windows may overlap (stride < kernel): one pixel can be the maximum of several windows, and its
gradient is the sum of theirs. Padding is at most half the kernel (as in PyTorch), so every window
holds at least one pixel of the image. With ``ceil_mode`` (PyTorch's output-size rule, see
:mod:`._geometry`) the last window of a row or column may hang past the padded edge; the cells
past it count as padding too, and the window still starts inside the image or its left padding,
so it holds a pixel as well.

Buffers: x and dx (N, C, H, W); y and dy (N, C, OH, OW), float32 or float64, all of one dtype;
argmax (N, C, OH, OW) int32. ``kernel_hw``, ``stride`` and ``padding`` are each an int or an
(h, w) pair; ``ceil_mode`` a bool (default False).

Variants, simplest first:

* ``reference_maxpool2d_forward`` / ``reference_maxpool2d_backward``: float64 NumPy, ``np.argmax``
  over each -inf-padded window, and ``np.add.at`` of dy onto the argmax positions.
* ``maxpool2d_forward_cpu`` (over the N*C*OH output rows): the windows wholly inside the
  image take a branch-free scan that counts NaNs on the side; windows touching the padding, and
  every window of a row that holds a NaN, take the clipped NaN-ordered scan the CUDA kernel uses.
  The 2x2, stride-2, unpadded case has a kernel of its own (over blocks of planes): a
  vertical pass, then a horizontal one flat over the plane, both vectorised
  (``_pool2x2.pool_plane``, which the convolutions that pool their own output share), and faster
  (``fastnet bench --only maxpool_fwd`` times it); with ``ceil_mode`` on an odd side, whose
  last window hangs past the edge, the general kernel runs instead. ``with_argmax=False`` (for a
  forward no backward follows: inference) returns (y, None), and in that 2x2 case runs a kernel
  that finds the maxima alone (no argmax to track or store: about twice as fast).
* ``maxpool2d_backward_cpu`` (over the N*C planes, each scattering its own dy: race-free, with a
  fixed summation order). The CPU kernels run serial or parallel over those loops as the CPU
  policy (``_cpu.parallel_pays``) decides for the size of x.
* ``maxpool2d_forward_cuda`` (one thread per output) and ``maxpool2d_backward_cuda`` (one thread
  per input pixel, gathering dy from the windows that cover it: no atomics, deterministic).
  Both are grid-stride loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numba
import numpy as np
from numba import cuda, prange, uint64
from numba.extending import register_jitable

from . import _pool2x2
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
from ._geometry import IntPair, WindowGeometry, window_geometry

THREADS_PER_BLOCK = 256
_INDEX_DTYPE = np.dtype(np.int32)
_INDEX_MAX = int(np.iinfo(_INDEX_DTYPE).max)
INDEX_BYTES = _INDEX_DTYPE.itemsize


def _pool_geometry(
    x_shape: Sequence[int],
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    op: str,
    ceil_mode: bool = False,
) -> WindowGeometry:
    geometry = window_geometry(x_shape, kernel_hw, stride, padding, op, ceil_mode=ceil_mode)
    if 2 * geometry.pad_h > geometry.kernel_h or 2 * geometry.pad_w > geometry.kernel_w:
        raise ValueError(
            f"{op}: padding ({geometry.pad_h}, {geometry.pad_w}) must be at most half the kernel "
            f"{geometry.kernel_h}x{geometry.kernel_w}"
        )
    if x_shape[2] * x_shape[3] > _INDEX_MAX:
        raise ValueError(
            f"{op}: a {x_shape[2]}x{x_shape[3]} plane is too large for int32 argmax indices"
        )
    return geometry


def _planes(array: Any) -> Any:
    """An (N, C, A, B) array as the (N*C, A, B) stack of its planes, as the kernels take them."""
    return array.reshape(array.shape[0] * array.shape[1], *array.shape[2:])


def _forward_arguments(
    x: Any, kernel_hw: IntPair, stride: IntPair, padding: IntPair, ceil_mode: bool
):
    check_float_dtype(x, "x", "maxpool2d_forward")
    geometry = _pool_geometry(x.shape, kernel_hw, stride, padding, "maxpool2d_forward", ceil_mode)
    out_shape = (*x.shape[:2], geometry.out_h, geometry.out_w)
    return array_module(x).ascontiguousarray(x), geometry, out_shape


def _backward_arguments(
    dy: Any,
    argmax: Any,
    x_shape: Sequence[int],
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    ceil_mode: bool,
):
    x_shape = as_shape(x_shape, "maxpool2d_backward")
    geometry = _pool_geometry(x_shape, kernel_hw, stride, padding, "maxpool2d_backward", ceil_mode)
    check_float_dtype(dy, "dy", "maxpool2d_backward")
    if argmax.dtype != _INDEX_DTYPE:
        raise TypeError(f"maxpool2d_backward expects argmax of dtype int32, got {argmax.dtype}")
    out_shape = (*x_shape[:2], geometry.out_h, geometry.out_w)
    if tuple(dy.shape) != out_shape or tuple(argmax.shape) != out_shape:
        raise ValueError(
            f"maxpool2d_backward expects dy and argmax of shape {out_shape} for x_shape {x_shape}, "
            f"got dy {tuple(dy.shape)} and argmax {tuple(argmax.shape)}"
        )
    xp = array_module(dy)
    return xp.ascontiguousarray(dy), xp.ascontiguousarray(argmax), x_shape, geometry


# ---------------------------------------------------------------------------------------------
# References (float64)


def reference_maxpool2d_forward(
    x: np.ndarray, kernel_hw: IntPair, stride: IntPair, padding: IntPair, ceil_mode: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(y, argmax) in float64: ``np.argmax`` over each window of the -inf-padded input (padded
    further on the bottom and right for the windows ``ceil_mode`` hangs past the edge)."""
    height, width = x.shape[2:]
    kh, kw, sh, sw, ph, pw, oh, ow = _pool_geometry(
        x.shape, kernel_hw, stride, padding, "reference_maxpool2d_forward", ceil_mode
    )
    padded = np.pad(
        np.asarray(x, np.float64),
        ((0, 0), (0, 0), (ph, ph + kh), (pw, pw + kw)),
        constant_values=-np.inf,
    )
    y = np.empty((*x.shape[:2], oh, ow))
    argmax = np.empty((*x.shape[:2], oh, ow), np.int32)
    for row in range(oh):
        for col in range(ow):
            window = padded[:, :, row * sh : row * sh + kh, col * sw : col * sw + kw].reshape(
                *x.shape[:2], kh * kw
            )
            offset = np.argmax(window, axis=-1)
            y[:, :, row, col] = np.take_along_axis(window, offset[..., None], axis=-1)[..., 0]
            h = row * sh - ph + offset // kw
            w = col * sw - pw + offset % kw
            argmax[:, :, row, col] = h * width + w
    return y, argmax


def reference_maxpool2d_backward(
    dy: np.ndarray,
    argmax: np.ndarray,
    x_shape: Sequence[int],
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    ceil_mode: bool = False,
) -> np.ndarray:
    """dx in float64: ``np.add.at`` of every dy onto the pixel its argmax names."""
    dy, argmax, x_shape, geometry = _backward_arguments(
        dy, argmax, x_shape, kernel_hw, stride, padding, ceil_mode
    )
    batch, channels, height, width = x_shape
    dx = np.zeros((batch * channels, height * width))
    planes = np.repeat(np.arange(batch * channels), geometry.out_h * geometry.out_w)
    np.add.at(dx, (planes, argmax.reshape(-1)), np.asarray(dy, np.float64).reshape(-1))
    return dx.reshape(x_shape)


# ---------------------------------------------------------------------------------------------
# Shared by the CPU and CUDA forward kernels


@register_jitable
def _window_argmax(x, plane, top, left, kernel_h, kernel_w):
    """(h*W + w, value) of the first maximum of x[plane] over the window clipped to the image."""
    height, width = x.shape[1], x.shape[2]
    h_start, h_stop = max(top, 0), min(top + kernel_h, height)
    w_start, w_stop = max(left, 0), min(left + kernel_w, width)
    best, best_at = x[plane, h_start, w_start], h_start * width + w_start
    for h in range(h_start, h_stop):
        for w in range(w_start, w_stop):
            best, best_at = _pool2x2.first_max(best, best_at, x[plane, h, w], h * width + w)
    return best_at, best


# ---------------------------------------------------------------------------------------------
# CPU


@register_jitable
def _inner_columns(width, kernel_w, stride_w, pad_w, out_w):
    """[first, stop) of the ow whose windows lie wholly inside the image's columns (maybe empty)."""
    first = min(out_w, (pad_w + stride_w - 1) // stride_w)
    return first, max(first, min(out_w, (width + pad_w - kernel_w) // stride_w + 1))


@cpu_kernel
def _forward_kernel_cpu(
    x, y, argmax, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w
):
    height, width = x.shape[1], x.shape[2]
    pixels = x.reshape(x.shape[0], height * width)
    # Each window pixel as an offset from the window's top-left corner, in row-major window order:
    # one flat loop over the window, which LLVM unrolls, instead of two nested loops of a few steps.
    offsets = np.empty(kernel_h * kernel_w, np.int64)
    for k in range(offsets.size):
        offsets[k] = (k // kernel_w) * width + k % kernel_w
    inner_first, inner_stop = _inner_columns(width, kernel_w, stride_w, pad_w, out_w)
    for plane_row in prange(x.shape[0] * out_h):
        plane, oh = plane_row // out_h, plane_row % out_h
        top = oh * stride_h - pad_h
        first, stop = (inner_first, inner_stop) if top >= 0 and top + kernel_h <= height else (0, 0)
        # Fast path over the windows wholly inside the image: a branch-free strict-greater scan
        # (compare, then select: on random data a branch here mispredicts every other pixel) that
        # counts NaNs on the side. Unsigned indices spare each load Numba's negative-index check.
        nans = 0
        for ow in range(first, stop):
            corner = top * width + ow * stride_w - pad_w
            best, best_index = pixels[plane, uint64(corner)], corner
            for k in range(offsets.size):
                index = corner + offsets[uint64(k)]
                value = pixels[plane, uint64(index)]
                nans += value != value
                better = value > best
                best = value if better else best
                best_index = index if better else best_index
            y[plane, oh, uint64(ow)] = best
            argmax[plane, oh, uint64(ow)] = best_index
        # The rare row with a NaN is redone by the NaN-ordered scan, so results stay identical.
        if nans:
            first, stop = 0, 0
        for ow in range(out_w):
            if first <= ow < stop:
                continue
            index, value = _window_argmax(x, plane, top, ow * stride_w - pad_w, kernel_h, kernel_w)
            y[plane, oh, ow] = value
            argmax[plane, oh, ow] = index


# Planes per task of the 2x2 kernel: each task allocates its scratch rows once.
PLANES_PER_TASK = 64


@cpu_kernel
def _forward_2x2_kernel_cpu(x, y, argmax):
    """The 2x2, stride-2, unpadded max-pool (most CNNs' pooling) a plane at a time through
    ``_pool2x2.pool_plane``: two passes per plane that LLVM vectorises, where the general kernel
    scans window by window (OW = 14 is too short a row to vectorise across); a plane holding a NaN
    is redone NaN-ordered, so results equal the general kernel's."""
    planes, width = x.shape[0], x.shape[2]
    out_h, out_w = y.shape[1], y.shape[2]
    out_size = out_h * out_w
    corners = _pool2x2.window_corners(out_h, out_w, width)
    for task in prange((planes + PLANES_PER_TASK - 1) // PLANES_PER_TASK):
        larger, below = _pool2x2.pool_scratch(out_size, x.dtype)
        for plane in range(task * PLANES_PER_TASK, min((task + 1) * PLANES_PER_TASK, planes)):
            _pool2x2.pool_plane(
                x[plane].reshape(-1), width, y[plane].reshape(out_size),
                argmax[plane].reshape(out_size), out_w, False, larger, below, corners,
            )  # fmt: skip


@cpu_kernel
def _forward_values_2x2_kernel_cpu(x, y):
    """The 2x2, stride-2, unpadded max-pool's y alone (``with_argmax=False``, inference): four
    loads and three compare-selects per window, no argmax to find or store. A NaN propagates (a
    NaN best stays: nothing compares greater than it; a NaN value replaces a number)."""
    out_h, out_w = y.shape[1], y.shape[2]
    for plane in prange(x.shape[0]):
        for oh in range(out_h):
            top, bottom = x[plane, 2 * oh], x[plane, 2 * oh + 1]
            row = y[plane, oh]
            for ow in range(out_w):
                best = top[2 * ow]
                value = top[2 * ow + 1]
                if value > best or value != value:
                    best = value
                value = bottom[2 * ow]
                if value > best or value != value:
                    best = value
                value = bottom[2 * ow + 1]
                if value > best or value != value:
                    best = value
                row[ow] = best


@cpu_kernel
def _backward_kernel_cpu(dy, argmax, dx, out_of_plane):
    plane_size = dx.shape[1]
    for plane in prange(dx.shape[0]):
        dx[plane] = 0
        for k in range(dy.shape[1]):
            index = argmax[plane, k]
            # A corrupt index would write outside the plane: count it for the caller to report.
            if 0 <= index < plane_size:
                dx[plane, index] += dy[plane, k]
            else:
                out_of_plane[plane] += 1


def maxpool2d_forward_cpu(
    x: np.ndarray,
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    ceil_mode: bool = False,
    with_argmax: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(y, argmax), each (N, C, OH, OW): the window maxima of x (N, C, H, W) and where they are.
    ``with_argmax=False`` (a forward that no backward will follow) gives (y, None): the 2x2,
    stride-2 unpadded case then runs a kernel that finds the maxima alone; other windows compute
    the argmax and drop it."""
    x, geometry, out_shape = _forward_arguments(x, kernel_hw, stride, padding, ceil_mode)
    y = empty(out_shape, x.dtype, like=x)
    windows_fit = 2 * geometry.out_h <= x.shape[2] and 2 * geometry.out_w <= x.shape[3]
    two_by_two = geometry[:6] == (2, 2, 2, 2, 0, 0) and windows_fit
    if not with_argmax and two_by_two:
        _forward_values_2x2_kernel_cpu(x.size, _planes(x), _planes(y))
        return y, None
    argmax = empty(out_shape, _INDEX_DTYPE, like=x)
    if two_by_two:
        _forward_2x2_kernel_cpu(x.size, _planes(x), _planes(y), _planes(argmax))
    else:
        _forward_kernel_cpu(x.size, _planes(x), _planes(y), _planes(argmax), *geometry)
    return y, (argmax if with_argmax else None)


def maxpool2d_backward_cpu(
    dy: np.ndarray,
    argmax: np.ndarray,
    x_shape: Sequence[int],
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    ceil_mode: bool = False,
) -> np.ndarray:
    """dx (N, C, H, W): each dy (N, C, OH, OW) added onto the pixel its argmax names."""
    dy, argmax, x_shape, _ = _backward_arguments(
        dy, argmax, x_shape, kernel_hw, stride, padding, ceil_mode
    )
    planes, plane_size, out_size = (
        x_shape[0] * x_shape[1],
        x_shape[2] * x_shape[3],
        dy.shape[2] * dy.shape[3],
    )
    dx = empty(x_shape, dy.dtype, like=dy)
    out_of_plane = np.zeros(planes, np.int64)
    _backward_kernel_cpu(
        dx.size,
        dy.reshape(planes, out_size),
        argmax.reshape(planes, out_size),
        dx.reshape(planes, plane_size),
        out_of_plane,
    )
    if out_of_plane.any():
        raise ValueError(
            f"maxpool2d_backward: {out_of_plane.sum()} argmax entries lie outside "
            f"[0, {plane_size}), "
            f"the {x_shape[2]}x{x_shape[3]} plane"
        )
    return dx


# ---------------------------------------------------------------------------------------------
# CUDA


@cuda_kernel
def _forward_kernel_cuda(
    x, y, argmax, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w
):
    for output in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        plane_row, ow = output // out_w, output % out_w
        plane, oh = plane_row // out_h, plane_row % out_h
        index, value = _window_argmax(
            x, plane, oh * stride_h - pad_h, ow * stride_w - pad_w, kernel_h, kernel_w
        )
        y[plane, oh, ow] = value
        argmax[plane, oh, ow] = index


@cuda_kernel
def _backward_kernel_cuda(
    dy, argmax, dx, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w
):
    height, width = dx.shape[1], dx.shape[2]
    for pixel in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        plane, index = pixel // (height * width), pixel % (height * width)
        h, w = index // width, index % width
        # Windows oh cover row h when oh*stride_h - pad_h <= h < oh*stride_h - pad_h + kernel_h.
        first_h = h + pad_h - kernel_h + 1
        first_w = w + pad_w - kernel_w + 1
        oh_start = 0 if first_h <= 0 else (first_h + stride_h - 1) // stride_h
        ow_start = 0 if first_w <= 0 else (first_w + stride_w - 1) // stride_w
        oh_stop = min(out_h, (h + pad_h) // stride_h + 1)
        ow_stop = min(out_w, (w + pad_w) // stride_w + 1)
        total = dx.dtype.type(0)
        for oh in range(oh_start, oh_stop):
            for ow in range(ow_start, ow_stop):
                if argmax[plane, oh, ow] == index:
                    total += dy[plane, oh, ow]
        dx[plane, h, w] = total


def maxpool2d_forward_cuda(
    x: Any,
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    ceil_mode: bool = False,
    with_argmax: bool = True,
) -> tuple[Any, Any]:
    """As :func:`maxpool2d_forward_cpu`, on the GPU (CuPy arrays) or in the simulator (NumPy
    arrays); ``with_argmax=False`` drops the argmax (the one kernel computes it either way)."""
    x, geometry, out_shape = _forward_arguments(x, kernel_hw, stride, padding, ceil_mode)
    y = empty(out_shape, x.dtype, like=x)
    argmax = empty(out_shape, _INDEX_DTYPE, like=x)
    blocks = stride_grid(y.size, THREADS_PER_BLOCK)
    launch(
        _forward_kernel_cuda,
        blocks,
        THREADS_PER_BLOCK,
        _planes(x),
        _planes(y),
        _planes(argmax),
        *geometry,
    )
    return y, (argmax if with_argmax else None)


def maxpool2d_backward_cuda(
    dy: Any,
    argmax: Any,
    x_shape: Sequence[int],
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    ceil_mode: bool = False,
) -> Any:
    """As :func:`maxpool2d_backward_cpu`; argmax entries outside their window are not routed."""
    dy, argmax, x_shape, geometry = _backward_arguments(
        dy, argmax, x_shape, kernel_hw, stride, padding, ceil_mode
    )
    dx = empty(x_shape, dy.dtype, like=dy)
    blocks = stride_grid(dx.size, THREADS_PER_BLOCK)
    launch(
        _backward_kernel_cuda,
        blocks,
        THREADS_PER_BLOCK,
        _planes(dy),
        _planes(argmax),
        _planes(dx),
        *geometry,
    )
    return dx


def cuda_kernels() -> list[KernelSpec]:
    """The CUDA kernels of this module, each with one float32 specialisation, for the PTX check."""
    geometry = (numba.int64,) * len(WindowGeometry._fields)
    values, indices = numba.float32[:, :, ::1], numba.int32[:, :, ::1]
    return [
        KernelSpec(
            "maxpool2d_forward",
            _forward_kernel_cuda,
            (values, values, indices, *geometry),
            THREADS_PER_BLOCK,
        ),
        KernelSpec(
            "maxpool2d_backward",
            _backward_kernel_cuda,
            (values, indices, values, *geometry),
            THREADS_PER_BLOCK,
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Benchmark cases, with the peers written as a NumPy user would write them (for any array module
# with NumPy's API: NumPy, CuPy)


def plain_maxpool_forward(x: Any, kernel: int) -> tuple[Any, Any]:
    """(y, argmax as h*W + w) of non-overlapping kernel x kernel windows (stride = kernel, no
    padding)."""
    xp = array_module(x)
    n, channels, height, width = x.shape
    out_h, out_w = height // kernel, width // kernel
    windows = (
        x[:, :, : out_h * kernel, : out_w * kernel]
        .reshape(n, channels, out_h, kernel, out_w, kernel)
        .transpose(0, 1, 2, 4, 3, 5)
        .reshape(n, channels, out_h, out_w, kernel * kernel)
    )
    offset = windows.argmax(axis=-1)
    y = xp.take_along_axis(windows, offset[..., None], axis=-1)[..., 0]
    rows = xp.arange(out_h)[:, None] * kernel + offset // kernel
    cols = xp.arange(out_w) * kernel + offset % kernel
    return y, (rows * width + cols).astype(np.int32)


def plain_maxpool_backward(dy: Any, argmax: Any, x_shape: tuple[int, ...]) -> Any:
    """dx: dy written at each argmax (an assignment suffices: the windows do not overlap)."""
    xp = array_module(dy)
    n, channels, height, width = x_shape
    planes = n * channels
    dx = xp.zeros((planes, height * width), dy.dtype)
    dx[xp.arange(planes)[:, None], argmax.reshape(planes, -1)] = dy.reshape(planes, -1)
    return dx.reshape(x_shape)


def _maxpool_forward_case(context: BenchContext, key: str, x_shape: tuple, kernel: int) -> Case:
    ops = context.ops
    x = context.random(x_shape)
    implementations = {
        OURS: Implementation(lambda: ops.maxpool2d_forward(x, kernel, kernel, 0)),
        context.plain: Implementation(lambda: plain_maxpool_forward(x, kernel)),
    }
    torch = context.torch
    if torch:
        x_torch = torch.from_numpy(x)
        implementations["torch"] = Implementation(
            lambda: torch.nn.functional.max_pool2d(x_torch, kernel, return_indices=True),
            lambda result: (result[0], result[1].numpy().astype(np.int32)),
        )
    out_size = x.size // (kernel * kernel)
    info = CaseInfo(
        "maxpool_fwd",
        f"{key} {'x'.join(map(str, x_shape))} k{kernel}s{kernel}",
        float(x.size),
        FLOAT32_BYTES * (x.size + out_size) + INDEX_BYTES * out_size,
    )
    return Case(info, implementations)


def _maxpool_backward_case(context: BenchContext, key: str, x_shape: tuple, kernel: int) -> Case:
    ops = context.ops
    x = context.random(x_shape)
    _, argmax = ops.maxpool2d_forward(x, kernel, kernel, 0)
    dy = context.random(argmax.shape, seed=1)
    implementations = {
        OURS: Implementation(
            lambda: ops.maxpool2d_backward(dy, argmax, x_shape, kernel, kernel, 0)
        ),
        context.plain: Implementation(lambda: plain_maxpool_backward(dy, argmax, x_shape)),
    }
    torch = context.torch
    if torch:
        x_torch, dy_torch = torch.from_numpy(x), torch.from_numpy(dy)
        _, indices = torch.nn.functional.max_pool2d(x_torch, kernel, return_indices=True)
        window = [kernel, kernel]
        implementations["torch"] = Implementation(
            lambda: torch.ops.aten.max_pool2d_with_indices_backward(
                dy_torch, x_torch, window, window, [0, 0], [1, 1], False, indices
            )
        )
    info = CaseInfo(
        "maxpool_bwd",
        f"{key} {'x'.join(map(str, x_shape))} k{kernel}s{kernel}",
        float(dy.size),
        FLOAT32_BYTES * (dy.size + x.size) + INDEX_BYTES * dy.size,
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """2x2 max-pool forward and backward on the MNIST CNN's pooling layers (a tiny one with
    ``quick``)."""
    pools = (
        (("tiny", (2, 3, 6, 6)),)
        if quick
        else (
            ("mnist.pool1.b64", (64, 32, 28, 28)),
            ("mnist.pool1.b256", (256, 32, 28, 28)),
            ("mnist.pool2.b256", (256, 64, 14, 14)),
        )
    )
    specs = []
    for key, x_shape in pools:
        shape = "x".join(map(str, x_shape))
        specs += [
            CaseSpec(
                "maxpool_fwd",
                key,
                shape,
                partial(_maxpool_forward_case, key=key, x_shape=x_shape, kernel=2),
                (OURS, "numpy", "torch"),
            ),
            CaseSpec(
                "maxpool_bwd",
                key,
                shape,
                partial(_maxpool_backward_case, key=key, x_shape=x_shape, kernel=2),
                (OURS, "numpy", "torch"),
            ),
        ]
    return specs


FAMILY = Family(
    name="pool",
    module=__name__,
    ops=("maxpool2d_forward", "maxpool2d_backward"),
    references={
        "maxpool2d_forward": reference_maxpool2d_forward,
        "maxpool2d_backward": reference_maxpool2d_backward,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
