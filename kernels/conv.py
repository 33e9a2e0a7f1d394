"""im2col and col2im: 2-D convolution as a matrix product, and its adjoint.

Math. For an input x of shape (N, C, H, W), a kernel KH x KW, stride (SH, SW) and zero padding
(PH, PW), the output plane is

    OH = (H + 2*PH - KH) // SH + 1,        OW = (W + 2*PW - KW) // SW + 1

and im2col lays every receptive field out as one row:

    cols[(n*OH + oh)*OW + ow, (c*KH + i)*KW + j] = x[n, c, oh*SH - PH + i, ow*SW - PW + j]

(zero where the index falls in the padding). A convolution with weights w (OC, C, KH, KW) is
then ``cols @ w.reshape(OC, -1).T``, of shape (N*OH*OW, OC), i.e. NHWC, moved to NCHW by the
caller. col2im is the adjoint of im2col, the map the backward pass needs for dx:

    dx[n, c, h, w] = sum of cols[row, col] over every (row, col) that im2col read from x[n, c, h, w]

so that <im2col(x), g> == <x, col2im(g)> for every x and g.

Buffers: x and dx (N, C, H, W); cols (N*OH*OW, C*KH*KW); all C-contiguous, float32 or float64,
cols of the same dtype as x. ``kernel_hw``, ``stride`` and ``padding`` are each an int or an
(h, w) pair.

Variants, simplest first:

* ``reference_im2col`` / ``reference_col2im``: float64 NumPy, one strided slice per kernel
  offset (i, j). ``reference_conv2d``: a direct sliding-window sum, a different algorithm, against
  which im2col-then-matmul is checked.
* ``im2col_cpu`` / ``col2im_cpu``: Numba. A window that lies inside the image moves through a
  table of C*KH*KW offsets (one gather or scatter of a whole contiguous cols row, no bounds
  tests); a window touching the padding goes segment by segment. im2col is parallel over the
  N*OH output rows. col2im is a scatter, parallel over images (split into channel groups when there
  are fewer images than threads): each task owns its planes, so it is race-free, and each pixel
  sums its terms in cols-row order however the work is split, so dx is deterministic.
* ``im2col_cuda`` / ``col2im_cuda``: one thread per element of cols (im2col), and one thread per
  input pixel gathering the cols entries that came from it (col2im: no atomics, deterministic);
  both grid-stride loops.
"""
from __future__ import annotations

import math
import operator
from typing import Any, NamedTuple, Sequence

import numba
import numpy as np
from numba import cuda, njit, prange

from ._cuda import KernelSpec, array_module, empty, launch, stride_grid

THREADS_PER_BLOCK = 256
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

IntPair = int | tuple[int, int]


class WindowGeometry(NamedTuple):
    """A sliding window over an (H, W) plane and the (OH, OW) grid of its positions."""

    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    out_h: int
    out_w: int


def _pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """``value`` (an int or an (h, w) pair of ints) as a pair, each at least ``minimum``."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _geometry(h: int, w: int, kernel_hw: IntPair, stride: IntPair, padding: IntPair) -> WindowGeometry:
    kernel_h, kernel_w = _pair(kernel_hw, "kernel_hw", 1)
    stride_h, stride_w = _pair(stride, "stride", 1)
    pad_h, pad_w = _pair(padding, "padding", 0)
    padded_h, padded_w = h + 2 * pad_h, w + 2 * pad_w
    if kernel_h > padded_h or kernel_w > padded_w:
        raise ValueError(
            f"kernel {kernel_h}x{kernel_w} does not fit the {h}x{w} input padded by "
            f"({pad_h}, {pad_w}) to {padded_h}x{padded_w}"
        )
    out_h = (padded_h - kernel_h) // stride_h + 1
    out_w = (padded_w - kernel_w) // stride_w + 1
    return WindowGeometry(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w)


def conv_output_shape(
    h: int, w: int, kernel_hw: IntPair, stride: IntPair, padding: IntPair
) -> tuple[int, int]:
    """(OH, OW) of a window ``kernel_hw`` sliding over an h x w plane; ValueError if it does not fit."""
    geometry = _geometry(h, w, kernel_hw, stride, padding)
    return geometry.out_h, geometry.out_w


def window_geometry(
    x_shape: Sequence[int], kernel_hw: IntPair, stride: IntPair, padding: IntPair, op: str
) -> WindowGeometry:
    """Validate a 4-D (N, C, H, W) shape and window arguments for ``op``; return the geometry."""
    if len(x_shape) != 4:
        raise ValueError(f"{op} expects a 4-D input (N, C, H, W), got shape {tuple(x_shape)}")
    return _geometry(x_shape[2], x_shape[3], kernel_hw, stride, padding)


def check_float_dtype(array: Any, name: str, op: str) -> None:
    """TypeError unless ``array`` is float32 or float64 (the dtypes every kernel is built for)."""
    if array.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op} expects {name} of dtype float32 or float64, got {array.dtype}")


def as_shape(x_shape: Sequence[int], op: str) -> tuple[int, ...]:
    """``x_shape`` as a tuple of non-negative ints, or a TypeError/ValueError naming ``op``."""
    try:
        shape = tuple(operator.index(size) for size in x_shape)
    except TypeError:
        raise TypeError(f"{op} expects x_shape as a sequence of ints, got {x_shape!r}") from None
    if min(shape, default=0) < 0:
        raise ValueError(f"{op} expects a non-negative x_shape, got {shape}")
    return shape


def _im2col_arguments(x: Any, kernel_hw: IntPair, stride: IntPair, padding: IntPair):
    check_float_dtype(x, "x", "im2col")
    geometry = window_geometry(x.shape, kernel_hw, stride, padding, "im2col")
    batch, channels = x.shape[:2]
    cols_shape = (batch * geometry.out_h * geometry.out_w, channels * geometry.kernel_h * geometry.kernel_w)
    return array_module(x).ascontiguousarray(x), geometry, cols_shape


def _col2im_arguments(
    cols: Any, x_shape: Sequence[int], kernel_hw: IntPair, stride: IntPair, padding: IntPair
):
    x_shape = as_shape(x_shape, "col2im")
    geometry = window_geometry(x_shape, kernel_hw, stride, padding, "col2im")
    check_float_dtype(cols, "cols", "col2im")
    batch, channels = x_shape[:2]
    expected = (batch * geometry.out_h * geometry.out_w, channels * geometry.kernel_h * geometry.kernel_w)
    if tuple(cols.shape) != expected:
        raise ValueError(
            f"col2im expects cols of shape {expected} for x_shape {x_shape}, kernel "
            f"{geometry.kernel_h}x{geometry.kernel_w}, got {tuple(cols.shape)}"
        )
    return array_module(cols).ascontiguousarray(cols), x_shape, geometry


# ---------------------------------------------------------------------------------------------
# References (float64)


def reference_im2col(x: np.ndarray, kernel_hw: IntPair, stride: IntPair, padding: IntPair) -> np.ndarray:
    """im2col in float64: one strided slice of the zero-padded input per kernel offset (i, j)."""
    geometry = window_geometry(x.shape, kernel_hw, stride, padding, "reference_im2col")
    kh, kw, sh, sw, ph, pw, oh, ow = geometry
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    batch, channels = x.shape[:2]
    patches = np.empty((batch, channels, kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patches[:, :, i, j] = padded[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
    return patches.transpose(0, 4, 5, 1, 2, 3).reshape(batch * oh * ow, channels * kh * kw)


def reference_col2im(
    cols: np.ndarray, x_shape: Sequence[int], kernel_hw: IntPair, stride: IntPair, padding: IntPair
) -> np.ndarray:
    """col2im in float64: add each kernel offset's slice of cols back onto the padded input."""
    batch, channels, height, width = x_shape
    kh, kw, sh, sw, ph, pw, oh, ow = window_geometry(x_shape, kernel_hw, stride, padding, "reference_col2im")
    patches = np.asarray(cols, np.float64).reshape(batch, oh, ow, channels, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    padded = np.zeros((batch, channels, height + 2 * ph, width + 2 * pw))
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] += patches[:, :, i, j]
    return padded[:, :, ph : ph + height, pw : pw + width]


def reference_conv2d(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: IntPair, padding: IntPair
) -> np.ndarray:
    """Direct 2-D convolution (cross-correlation) in float64: y (N, OC, OH, OW), one window at a time."""
    out_channels, _, kh, kw = w.shape
    _, _, sh, sw, ph, pw, oh, ow = window_geometry(x.shape, (kh, kw), stride, padding, "reference_conv2d")
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    weights = np.asarray(w, np.float64)
    y = np.empty((x.shape[0], out_channels, oh, ow))
    for row in range(oh):
        for col in range(ow):
            window = padded[:, :, row * sh : row * sh + kh, col * sw : col * sw + kw]
            y[:, :, row, col] = np.einsum("nchw,ochw->no", window, weights)
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


# ---------------------------------------------------------------------------------------------
# CPU


@njit(cache=True)
def _window_offsets(channels, height, width, kernel_h, kernel_w):
    """offsets[(c*KH + i)*KW + j] = (c*H + i)*W + j: where each column of a cols row sits in its
    (C*H*W) image, relative to the window's top-left pixel of channel 0."""
    offsets = np.empty(channels * kernel_h * kernel_w, np.int64)
    for c in range(channels):
        for i in range(kernel_h):
            for j in range(kernel_w):
                offsets[(c * kernel_h + i) * kernel_w + j] = (c * height + i) * width + j
    return offsets


@njit(parallel=True, cache=True)
def _im2col_kernel_cpu(x, cols, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w):
    batch, channels, height, width = x.shape
    offsets = _window_offsets(channels, height, width, kernel_h, kernel_w)
    images = x.reshape(batch, channels * height * width)
    for image_row in prange(batch * out_h):
        image = images[image_row // out_h]
        top = (image_row % out_h) * stride_h - pad_h
        rows_inside = top >= 0 and top + kernel_h <= height
        for ow in range(out_w):
            window = cols[image_row * out_w + ow]
            left = ow * stride_w - pad_w
            if rows_inside and left >= 0 and left + kernel_w <= width:
                # Most windows lie inside the image: one gather through the table, no bounds tests.
                corner = top * width + left
                for col in range(window.size):
                    window[col] = image[corner + offsets[col]]
                continue
            # Offsets j in [j_start, j_stop) land inside the image, the rest in the zero padding.
            j_start = min(max(0, -left), kernel_w)
            j_stop = max(min(kernel_w, width - left), j_start)
            for c in range(channels):
                for i in range(kernel_h):
                    col = (c * kernel_h + i) * kernel_w
                    ih = top + i
                    # A row in the padding copies nothing: its whole segment is zeros.
                    copy_start, copy_stop = (j_start, j_stop) if 0 <= ih < height else (0, 0)
                    pixel = (c * height + ih) * width + left
                    for j in range(copy_start):
                        window[col + j] = 0
                    for j in range(copy_start, copy_stop):
                        window[col + j] = image[pixel + j]
                    for j in range(copy_stop, kernel_w):
                        window[col + j] = 0


@njit(parallel=True, cache=True)
def _col2im_kernel_cpu(
    cols, dx, channels_per_task, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w
):
    batch, channels, height, width = dx.shape
    offsets = _window_offsets(channels, height, width, kernel_h, kernel_w)
    images = dx.reshape(batch, channels * height * width)
    plane_size, window_size = height * width, kernel_h * kernel_w
    tasks_per_image = (channels + channels_per_task - 1) // channels_per_task
    # A task owns the planes [c_start, c_stop) of one image: no two tasks write one pixel, and each
    # pixel sums its terms in the order of the cols rows whatever the split, so dx is deterministic.
    for task in prange(batch * tasks_per_image):
        n = task // tasks_per_image
        c_start = (task % tasks_per_image) * channels_per_task
        c_stop = min(c_start + channels_per_task, channels)
        image = images[n]
        image[c_start * plane_size : c_stop * plane_size] = 0
        for oh in range(out_h):
            top = oh * stride_h - pad_h
            rows_inside = top >= 0 and top + kernel_h <= height
            for ow in range(out_w):
                window = cols[(n * out_h + oh) * out_w + ow]
                left = ow * stride_w - pad_w
                if rows_inside and left >= 0 and left + kernel_w <= width:
                    corner = top * width + left
                    for col in range(c_start * window_size, c_stop * window_size):
                        image[corner + offsets[col]] += window[col]
                    continue
                for c in range(c_start, c_stop):
                    for i in range(max(0, -top), min(kernel_h, height - top)):
                        col = (c * kernel_h + i) * kernel_w
                        pixel = (c * height + top + i) * width + left
                        for j in range(max(0, -left), min(kernel_w, width - left)):
                            image[pixel + j] += window[col + j]


def im2col_cpu(x: np.ndarray, kernel_hw: IntPair, stride: IntPair, padding: IntPair) -> np.ndarray:
    """cols (N*OH*OW, C*KH*KW) of x (N, C, H, W), same dtype as x."""
    x, geometry, cols_shape = _im2col_arguments(x, kernel_hw, stride, padding)
    cols = empty(cols_shape, x.dtype, like=x)
    _im2col_kernel_cpu(x, cols, *geometry)
    return cols


def col2im_cpu(
    cols: np.ndarray, x_shape: Sequence[int], kernel_hw: IntPair, stride: IntPair, padding: IntPair
) -> np.ndarray:
    """dx (N, C, H, W): every entry of cols (N*OH*OW, C*KH*KW) summed back onto its pixel."""
    cols, x_shape, geometry = _col2im_arguments(cols, x_shape, kernel_hw, stride, padding)
    dx = empty(x_shape, cols.dtype, like=cols)
    batch, channels = x_shape[:2]
    # One task per image or, with fewer images than threads, per group of an image's channels.
    tasks_per_image = max(1, min(channels, math.ceil(numba.get_num_threads() / max(batch, 1))))
    channels_per_task = max(1, math.ceil(channels / tasks_per_image))
    _col2im_kernel_cpu(cols, dx, channels_per_task, *geometry)
    return dx


# ---------------------------------------------------------------------------------------------
# CUDA


@cuda.jit
def _im2col_kernel_cuda(x, cols, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w):
    height, width = x.shape[2], x.shape[3]
    num_cols = cols.shape[1]
    # Consecutive threads write consecutive entries of a cols row: coalesced stores.
    for index in range(cuda.grid(1), cols.shape[0] * num_cols, cuda.gridsize(1)):
        row, col = index // num_cols, index % num_cols
        image_row, ow = row // out_w, row % out_w
        n, oh = image_row // out_h, image_row % out_h
        channel_row, j = col // kernel_w, col % kernel_w
        c, i = channel_row // kernel_h, channel_row % kernel_h
        ih = oh * stride_h - pad_h + i
        iw = ow * stride_w - pad_w + j
        if 0 <= ih < height and 0 <= iw < width:
            cols[row, col] = x[n, c, ih, iw]
        else:
            cols[row, col] = 0


@cuda.jit
def _col2im_kernel_cuda(cols, dx, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w):
    channels, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    for index in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        plane_row, w = index // width, index % width
        plane, h = plane_row // height, plane_row % height
        n, c = plane // channels, plane % channels
        total = dx.dtype.type(0)
        # Kernel row i read pixel row h from output row oh when oh*stride_h - pad_h + i == h.
        for i in range(kernel_h):
            oh_scaled = h + pad_h - i
            if oh_scaled < 0 or oh_scaled % stride_h != 0 or oh_scaled // stride_h >= out_h:
                continue
            for j in range(kernel_w):
                ow_scaled = w + pad_w - j
                if ow_scaled < 0 or ow_scaled % stride_w != 0 or ow_scaled // stride_w >= out_w:
                    continue
                row = (n * out_h + oh_scaled // stride_h) * out_w + ow_scaled // stride_w
                total += cols[row, (c * kernel_h + i) * kernel_w + j]
        dx[n, c, h, w] = total


def im2col_cuda(x: Any, kernel_hw: IntPair, stride: IntPair, padding: IntPair) -> Any:
    """As :func:`im2col_cpu`, on the GPU (CuPy arrays) or in the simulator (NumPy arrays)."""
    x, geometry, cols_shape = _im2col_arguments(x, kernel_hw, stride, padding)
    cols = empty(cols_shape, x.dtype, like=x)
    blocks = stride_grid(cols_shape[0] * cols_shape[1], THREADS_PER_BLOCK)
    launch(_im2col_kernel_cuda, blocks, THREADS_PER_BLOCK, x, cols, *geometry)
    return cols


def col2im_cuda(cols: Any, x_shape: Sequence[int], kernel_hw: IntPair, stride: IntPair, padding: IntPair) -> Any:
    """As :func:`col2im_cpu`, on the GPU (CuPy arrays) or in the simulator (NumPy arrays)."""
    cols, x_shape, geometry = _col2im_arguments(cols, x_shape, kernel_hw, stride, padding)
    dx = empty(x_shape, cols.dtype, like=cols)
    blocks = stride_grid(int(np.prod(x_shape)), THREADS_PER_BLOCK)
    launch(_col2im_kernel_cuda, blocks, THREADS_PER_BLOCK, cols, dx, *geometry)
    return dx


def cuda_kernels() -> list[KernelSpec]:
    """The CUDA kernels of this module, each with one float32 specialisation, for the PTX check."""
    geometry = (numba.int64,) * len(WindowGeometry._fields)
    image, matrix = numba.float32[:, :, :, ::1], numba.float32[:, ::1]
    return [
        KernelSpec("im2col", _im2col_kernel_cuda, (image, matrix, *geometry), THREADS_PER_BLOCK),
        KernelSpec("col2im", _col2im_kernel_cuda, (matrix, image, *geometry), THREADS_PER_BLOCK),
    ]
