"""Depthwise 2-D convolution (conv2d with groups == in channels), forward and both adjoints.

Math. For x of shape (N, C, H, W) and weights w of shape (C·M, 1, KH, KW), with M >= 1 the
channel multiplier (output channel c·M + m filters input channel c alone), a stride (SH, SW),
zero padding (PH, PW) and a dilation (DH, DW), with OH, OW as in :mod:`._geometry`:

    y[n, c·M+m, oh, ow] = Σ_{i<KH, j<KW} w[c·M+m, 0, i, j] · x[n, c, ih, iw],
    ih = oh·SH - PH + i·DH,  iw = ow·SW - PW + j·DW

(x is zero in the padding). Its two adjoints, the gradients for x and for w given dy:

    dx[n, c, h, w]     = Σ_{m, i, j, oh, ow: ih=h, iw=w} w[c·M+m, 0, i, j] · dy[n, c·M+m, oh, ow]
    dw[c·M+m, 0, i, j] = Σ_{n, oh, ow} dy[n, c·M+m, oh, ow] · x[n, c, ih, iw]

so that <y(x), g> == <x, dx(g)> and <y(w), g> == <w, dw(g)> for every g. The bias is the
functional layer's (its gradient is a sum of dy over n, oh, ow). Unlike im2col and a GEMM, which
copies every pixel KH·KW times to multiply it by one scalar each, these kernels read x and dy once
(the CPU kernels through a cached copy of one plane at a time): a depthwise layer is a stencil,
bound by memory traffic, not by arithmetic.

Buffers: x and dx (N, C, H, W); y and dy (N, C·M, OH, OW); w and dw (C·M, 1, KH, KW) (PyTorch's
layout for conv2d with groups=C); all of one dtype, float32 or float64. ``stride``, ``padding``
and ``dilation`` (default 1) are each an int or an (h, w) pair; the backward ops take x's shape
(dx) or the kernel's (KH, KW) (dw).

Variants, simplest first:

* ``reference_depthwise_conv2d_*``: float64 NumPy, one tap (i, j) at a time: the tap's strided
  window of the zero-padded input, shape (N, C, OH, OW), times the tap's weight per channel
  (forward), the weighted dy added back onto that window (dx), or dotted with dy (dw).
* ``*_cpu``: Numba, over each plane split into its stride phases: phase (a, b) of the zero-padded
  plane (Hp, Wp) = (H + 2·PH, W + 2·PW) is P_ab[r, q] = padded[r·SH + a, q·SW + b], of
  ceil(Hp/SH) x ceil(Wp/SW) = R x Q entries (at stride 1 the padded plane itself). Tap (i, j)
  reads phase (i·DH mod SH, j·DW mod SW) shifted by (i·DH div SH, j·DW div SW), so over an output
  laid out as OH rows of Q columns (the columns past OW are computed and dropped) each tap is ONE
  contiguous loop of OH·Q multiply-adds, which LLVM vectorises: y_ext += w[i, j]·P[tap offset + ·],
  then y = y_ext[:, :OW]. Row by row the runs are OW long (31 or 32 for a 3x3 on 32 columns), too
  short for LLVM's 32-wide vector body, and ran 5x slower. dx is the adjoint: dy laid out as
  y_ext (zero past OW), each tap added onto the phases of dx, then the phases written back as the
  plane. dw sums dy_ext·P shifted, per tap, into per-position partial sums (an elementwise, vector
  loop), added up at the end in float64. Forward and dx are parallel over the N·C input planes
  (each task owns the planes it writes: race-free, and each pixel sums its terms in a fixed
  (m, i, j) order), dw over the C·M output channels (each task owns its taps: race-free and
  deterministic whatever the thread count); each runs serial or parallel as the CPU policy
  (``_cpu.parallel_pays``) decides. Non-finite inputs: dw multiplies the dropped columns' pixels by
  dy_ext's zeros, so an inf or NaN pixel there makes dw NaN (as the output itself then is).
* ``*_cuda``: forward one thread per output element and dx one thread per input pixel gathering
  the dy entries that read it (no atomics, deterministic); both grid-stride loops, consecutive
  threads on consecutive columns (coalesced). dw: one thread block per weight tap (a grid-stride
  loop over the C·M·KH·KW taps), whose threads each sum a strided share of the N·OH·OW products
  and merge them by the tree reduction of :mod:`._reduce`. Why a block per tap: every tap is a
  long reduction (N·OH·OW terms, e.g. 32768) but there are few taps (C·M·KH·KW, hundreds to a few
  thousand), so one thread per tap would leave the GPU idle; atomics onto dw would be
  non-deterministic and contend on KH·KW addresses per channel; a block per tap is race-free, and
  its fixed tree gives the same bits on every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numba
import numpy as np
from numba import cuda, prange, uint64
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
from ._geometry import IntPair, WindowGeometry, inside_range, int_pair, window_geometry
from ._reduce import MAX_BLOCK_THREADS, block_reduce_pair, reduction_threads

THREADS_PER_BLOCK = 256

# The geometry the kernels take, besides the shapes of their arrays: stride, padding, dilation.
Window = tuple[int, int, int, int, int, int]


def _window(geometry: WindowGeometry, dilation: IntPair) -> Window:
    dilation_h, dilation_w = int_pair(dilation, "dilation", 1)
    return (*geometry[2:6], dilation_h, dilation_w)


def _check_weights(w: Any, channels: int, dtype: Any, op: str) -> None:
    """ValueError/TypeError unless w is (C·M, 1, KH, KW) of ``dtype`` for C = ``channels``."""
    if w.ndim != 4 or w.shape[1] != 1 or w.shape[0] % max(channels, 1) or w.shape[0] < channels:
        raise ValueError(
            f"{op} expects w of shape (C*M, 1, KH, KW) with C = {channels} input channels, got "
            f"{tuple(w.shape)}"
        )
    if w.dtype != dtype:
        raise TypeError(f"{op} expects w of dtype {dtype} (as the input), got {w.dtype}")


def _check_grad(dy: Any, expected: tuple, what: str, op: str) -> None:
    if tuple(dy.shape) != expected:
        raise ValueError(f"{op} expects dy of shape {expected} for {what}, got {tuple(dy.shape)}")


def _check_four_d(shape: Sequence[int], name: str, op: str) -> None:
    if len(shape) != 4:
        raise ValueError(f"{op} expects {name} of 4 dimensions (N, C, H, W), got {tuple(shape)}")


def _forward_arguments(x: Any, w: Any, stride: IntPair, padding: IntPair, dilation: IntPair):
    op = "depthwise_conv2d_forward"
    check_float_dtype(x, "x", op)
    _check_four_d(x.shape, "x", op)
    _check_weights(w, x.shape[1], x.dtype, op)
    geometry = window_geometry(x.shape, w.shape[2:], stride, padding, op, dilation)
    xp = array_module(x)
    out_shape = (x.shape[0], w.shape[0], geometry.out_h, geometry.out_w)
    weights = xp.ascontiguousarray(w).reshape(w.shape[0], *w.shape[2:])
    return xp.ascontiguousarray(x), weights, _window(geometry, dilation), out_shape


def _input_grad_arguments(
    dy: Any, w: Any, x_shape: Sequence[int], stride: IntPair, padding: IntPair, dilation: IntPair
):
    op = "depthwise_conv2d_backward_input"
    x_shape = as_shape(x_shape, op)
    _check_four_d(x_shape, "x_shape", op)
    check_float_dtype(dy, "dy", op)
    _check_weights(w, x_shape[1], dy.dtype, op)
    geometry = window_geometry(x_shape, w.shape[2:], stride, padding, op, dilation)
    expected = (x_shape[0], w.shape[0], geometry.out_h, geometry.out_w)
    _check_grad(dy, expected, f"x_shape {x_shape} and w {tuple(w.shape)}", op)
    xp = array_module(dy)
    weights = xp.ascontiguousarray(w).reshape(w.shape[0], *w.shape[2:])
    return xp.ascontiguousarray(dy), weights, x_shape, _window(geometry, dilation)


def _weight_grad_arguments(
    dy: Any, x: Any, kernel_hw: IntPair, stride: IntPair, padding: IntPair, dilation: IntPair
):
    op = "depthwise_conv2d_backward_weight"
    check_float_dtype(x, "x", op)
    check_float_dtype(dy, "dy", op)
    _check_four_d(x.shape, "x", op)
    geometry = window_geometry(x.shape, kernel_hw, stride, padding, op, dilation)
    if dy.ndim != 4 or dy.shape[1] % max(x.shape[1], 1) or dy.shape[1] < x.shape[1]:
        raise ValueError(
            f"{op} expects dy of shape (N, C*M, OH, OW) with C = {x.shape[1]}, got "
            f"{tuple(dy.shape)}"
        )
    expected = (x.shape[0], dy.shape[1], geometry.out_h, geometry.out_w)
    _check_grad(dy, expected, f"x of shape {tuple(x.shape)}", op)
    if dy.dtype != x.dtype:
        raise TypeError(f"{op} expects dy of dtype {x.dtype} (as x), got {dy.dtype}")
    xp = array_module(x)
    dw_shape = (dy.shape[1], 1, geometry.kernel_h, geometry.kernel_w)
    return xp.ascontiguousarray(dy), xp.ascontiguousarray(x), dw_shape, _window(geometry, dilation)


# ---------------------------------------------------------------------------------------------
# References (float64)


def _tap_windows(padded: np.ndarray, window: Window, kernel_hw: tuple, out_hw: tuple):
    """((i, j), view) for every tap: padded[:, :, i·DH + oh·SH, j·DW + ow·SW] as (N, C, OH, OW)."""
    stride_h, stride_w, _, _, dilation_h, dilation_w = window
    out_h, out_w = out_hw
    for i in range(kernel_hw[0]):
        for j in range(kernel_hw[1]):
            rows = slice(i * dilation_h, i * dilation_h + stride_h * (out_h - 1) + 1, stride_h)
            columns = slice(j * dilation_w, j * dilation_w + stride_w * (out_w - 1) + 1, stride_w)
            yield (i, j), padded[:, :, rows, columns]


def _padded(x_shape: Sequence[int], window: Window) -> np.ndarray:
    _, _, pad_h, pad_w, _, _ = window
    return np.zeros((*x_shape[:2], x_shape[2] + 2 * pad_h, x_shape[3] + 2 * pad_w))


def _by_input_channel(array: np.ndarray, channels: int) -> np.ndarray:
    """(N, C·M, ...) as (N, C, M, ...): output channel c·M + m at [:, c, m]."""
    return array.reshape(array.shape[0], channels, -1, *array.shape[2:])


def reference_depthwise_conv2d_forward(
    x: np.ndarray, w: np.ndarray, stride: IntPair, padding: IntPair, dilation: IntPair = 1
) -> np.ndarray:
    """y (N, C·M, OH, OW) in float64: each tap's strided window of the padded input, weighted."""
    _, _, window, out_shape = _forward_arguments(x, w, stride, padding, dilation)
    batch, channels, height, width = x.shape
    padded = _padded(x.shape, window)
    padded[:, :, window[2] : window[2] + height, window[3] : window[3] + width] = x
    weights = np.asarray(w, np.float64).reshape(channels, -1, *w.shape[2:])  # (C, M, KH, KW)
    y = np.zeros(out_shape)
    by_channel = _by_input_channel(y, channels)
    for (i, j), tap in _tap_windows(padded, window, w.shape[2:], out_shape[2:]):
        by_channel += tap[:, :, None] * weights[None, :, :, i, j, None, None]
    return y


def reference_depthwise_conv2d_backward_input(
    dy: np.ndarray,
    w: np.ndarray,
    x_shape: Sequence[int],
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
) -> np.ndarray:
    """dx (N, C, H, W) in float64: each tap's weighted dy added back onto its window."""
    dy, _, x_shape, window = _input_grad_arguments(dy, w, x_shape, stride, padding, dilation)
    batch, channels, height, width = x_shape
    padded = _padded(x_shape, window)
    weights = np.asarray(w, np.float64).reshape(channels, -1, *w.shape[2:])
    grad = _by_input_channel(np.asarray(dy, np.float64), channels)  # (N, C, M, OH, OW)
    for (i, j), tap in _tap_windows(padded, window, w.shape[2:], dy.shape[2:]):
        tap += np.einsum("ncmhw,cm->nchw", grad, weights[:, :, i, j])
    return padded[:, :, window[2] : window[2] + height, window[3] : window[3] + width]


def reference_depthwise_conv2d_backward_weight(
    dy: np.ndarray,
    x: np.ndarray,
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
) -> np.ndarray:
    """dw (C·M, 1, KH, KW) in float64: each tap's window of the padded input dotted with dy."""
    dy, x, dw_shape, window = _weight_grad_arguments(dy, x, kernel_hw, stride, padding, dilation)
    batch, channels, height, width = x.shape
    padded = _padded(x.shape, window)
    padded[:, :, window[2] : window[2] + height, window[3] : window[3] + width] = x
    grad = _by_input_channel(np.asarray(dy, np.float64), channels)
    dw = np.zeros((channels, dw_shape[0] // max(channels, 1), *dw_shape[2:]))
    for (i, j), tap in _tap_windows(padded, window, dw_shape[2:], dy.shape[2:]):
        dw[:, :, i, j] = np.einsum("ncmhw,nchw->cm", grad, tap)
    return dw.reshape(dw_shape)


# ---------------------------------------------------------------------------------------------
# CPU


@register_jitable
def _phase_shape(height, width, stride_h, stride_w, pad_h, pad_w):
    """(rows, columns) of each phase plane of the padded input: ceil((H + 2·PH) / SH) rows and one
    spare (the extended rows' last columns read a few entries past the last row), and
    ceil((W + 2·PW) / SW) columns."""
    rows = (height + 2 * pad_h + stride_h - 1) // stride_h + 1
    return rows, (width + 2 * pad_w + stride_w - 1) // stride_w


@register_jitable
def _tap_offsets(kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, rows, columns):
    """For each tap (i, j), where its phase plane's entry for output (0, 0) sits in the flat
    phases: phase (i·DH mod SH, j·DW mod SW), row i·DH div SH, column j·DW div SW."""
    offsets = np.empty(kernel_h * kernel_w, np.int64)
    for i in range(kernel_h):
        for j in range(kernel_w):
            phase = (i * dilation_h % stride_h) * stride_w + j * dilation_w % stride_w
            row, column = i * dilation_h // stride_h, j * dilation_w // stride_w
            offsets[i * kernel_w + j] = (phase * rows + row) * columns + column
    return offsets


# The loops index flat arrays with unsigned ints: Numba adds a negative-index wrap-around test to
# every signed index, which keeps LLVM from vectorising them.


@register_jitable
def _copy_run(target, first, target_step, source, start, source_step, count):
    """target[first + k·target_step] = source[start + k·source_step] for k < count; contiguous
    runs (stride 1) take a loop of their own, which LLVM turns into a vector copy."""
    at, origin = uint64(first), uint64(start)
    if target_step == 1 and source_step == 1:
        for k in range(uint64(count)):
            target[at + k] = source[origin + k]
    else:
        to, by = uint64(target_step), uint64(source_step)
        for k in range(uint64(count)):
            target[at + k * to] = source[origin + k * by]


@register_jitable
def _phase_copy(phases, pixels, image, height, width, rows, columns, geometry, into_phases):
    """Between plane ``pixels[image : image + H·W]`` and its phases (zero in the padding):
    phases[a·SW + b, r, q] = padded[r·SH + a, q·SW + b]. ``into_phases``: fill the phases (the
    padding with zeros); else write the plane from them."""
    stride_h, stride_w, pad_h, pad_w = geometry
    if into_phases:
        for k in range(uint64(phases.size)):
            phases[k] = 0
    for b in range(stride_w):
        start, stop = inside_range(b, pad_w, stride_w, width, columns)
        # padded row h + PH is row r of phase a: stepped along, no division per row
        a, r = pad_h % stride_h, pad_h // stride_h
        for h in range(height):
            phase_row = ((a * stride_w + b) * rows + r) * columns + start
            pixel = image + h * width + start * stride_w + b - pad_w
            if into_phases:
                _copy_run(phases, phase_row, 1, pixels, pixel, stride_w, stop - start)
            else:
                _copy_run(pixels, pixel, stride_w, phases, phase_row, 1, stop - start)
            a += 1
            if a == stride_h:
                a, r = 0, r + 1


@register_jitable
def _extended_copy(extended, grads, plane, out_h, out_w, columns):
    """dy's plane ``grads[plane : plane + OH·OW]`` into the first OW columns of each extended row
    (the columns past OW stay as they are: zero)."""
    for oh in range(out_h):
        _copy_run(extended, oh * columns, 1, grads, plane + oh * out_w, 1, out_w)


@register_jitable
def _add_weighted(target, first, source, start, count, weight):
    """target[first + k] += weight · source[start + k] for k < count."""
    at, origin = uint64(first), uint64(start)
    for k in range(uint64(count)):
        target[at + k] += weight * source[origin + k]


@register_jitable
def _add_products(target, first, grad, source, start, count):
    """target[first + k] += grad[k] · source[start + k] for k < count."""
    at, origin = uint64(first), uint64(start)
    for k in range(uint64(count)):
        target[at + k] += grad[k] * source[origin + k]


@register_jitable
def _layout(x_shape, y_shape, w_shape, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """What every CPU kernel derives from the shapes: (channel multiplier M, taps KH·KW, rows and
    columns of each phase plane, each tap's offset into the phase planes)."""
    height, width = x_shape[2], x_shape[3]
    kernel_h, kernel_w = w_shape[1], w_shape[2]
    rows, columns = _phase_shape(height, width, stride_h, stride_w, pad_h, pad_w)
    offsets = _tap_offsets(
        kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, rows, columns
    )
    return y_shape[1] // x_shape[1], kernel_h * kernel_w, rows, columns, offsets


# The kernels index flat arrays at computed offsets: a view (x[n, c]) inside a loop would cost an
# atomic reference-count update each time.


@cpu_kernel
def _forward_kernel_cpu(x, w, y, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    batch, channels, height, width = x.shape
    out_channels, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    multiplier, taps, rows, columns, offsets = _layout(
        x.shape, y.shape, w.shape, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w
    )
    geometry = (stride_h, stride_w, pad_h, pad_w)
    pixels, weights, outputs = x.reshape(-1), w.reshape(-1), y.reshape(-1)
    extent = out_h * columns
    for plane in prange(batch * channels):
        phases = np.empty(stride_h * stride_w * rows * columns, x.dtype)
        extended = np.empty(extent, x.dtype)
        _phase_copy(
            phases, pixels, plane * height * width, height, width, rows, columns, geometry, True
        )
        n, c = plane // channels, plane % channels
        for oc in range(c * multiplier, (c + 1) * multiplier):
            for k in range(uint64(extent)):
                extended[k] = 0
            for tap in range(taps):
                _add_weighted(extended, 0, phases, offsets[tap], extent, weights[oc * taps + tap])
            for oh in range(out_h):
                target = ((n * out_channels + oc) * out_h + oh) * out_w
                _copy_run(outputs, target, 1, extended, oh * columns, 1, out_w)


@cpu_kernel
def _input_grad_kernel_cpu(dy, w, dx, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    batch, channels, height, width = dx.shape
    out_channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    multiplier, taps, rows, columns, offsets = _layout(
        dx.shape, dy.shape, w.shape, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w
    )
    geometry = (stride_h, stride_w, pad_h, pad_w)
    grads, weights, pixels = dy.reshape(-1), w.reshape(-1), dx.reshape(-1)
    extent = out_h * columns
    # A task owns one plane of dx: race-free, and each pixel sums its terms in (m, i, j) order
    # however the planes are split between threads.
    for plane in prange(batch * channels):
        phases = np.zeros(stride_h * stride_w * rows * columns, dx.dtype)
        extended = np.zeros(extent, dx.dtype)
        n, c = plane // channels, plane % channels
        for oc in range(c * multiplier, (c + 1) * multiplier):
            _extended_copy(
                extended, grads, ((n * out_channels + oc) * out_h) * out_w, out_h, out_w, columns
            )
            for tap in range(taps):
                _add_weighted(phases, offsets[tap], extended, 0, extent, weights[oc * taps + tap])
        _phase_copy(
            phases, pixels, plane * height * width, height, width, rows, columns, geometry, False
        )


@cpu_kernel
def _weight_grad_kernel_cpu(dy, x, dw, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    batch, channels, height, width = x.shape
    out_channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    multiplier, taps, rows, columns, offsets = _layout(
        x.shape, dy.shape, dw.shape, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w
    )
    geometry = (stride_h, stride_w, pad_h, pad_w)
    kernel_w = dw.shape[2]
    grads, pixels = dy.reshape(-1), x.reshape(-1)
    extent = out_h * columns
    # A task owns one output channel's taps: race-free, and each sum runs in a fixed order.
    for oc in prange(out_channels):
        phases = np.empty(stride_h * stride_w * rows * columns, x.dtype)
        extended = np.zeros(extent, x.dtype)
        # Per tap, one partial sum per extended position: each image's products are added
        # elementwise (a vector loop), not folded into one scalar (which LLVM would not
        # vectorise without reassociating the float sum).
        partial_sums = np.zeros(taps * extent, x.dtype)
        image_channel = oc // multiplier
        for n in range(batch):
            image = (n * channels + image_channel) * height * width
            _phase_copy(phases, pixels, image, height, width, rows, columns, geometry, True)
            _extended_copy(
                extended, grads, ((n * out_channels + oc) * out_h) * out_w, out_h, out_w, columns
            )
            for tap in range(taps):
                _add_products(partial_sums, tap * extent, extended, phases, offsets[tap], extent)
        for tap in range(taps):
            total = 0.0  # in float64: a sum of OH·(OW + a few) partial sums
            for k in range(uint64(tap * extent), uint64((tap + 1) * extent)):
                total += partial_sums[k]
            dw[oc, tap // kernel_w, tap % kernel_w] = total


def depthwise_conv2d_forward_cpu(
    x: np.ndarray, w: np.ndarray, stride: IntPair, padding: IntPair, dilation: IntPair = 1
) -> np.ndarray:
    """y (N, C·M, OH, OW) of x (N, C, H, W) and w (C·M, 1, KH, KW), in x's dtype."""
    x, weights, window, out_shape = _forward_arguments(x, w, stride, padding, dilation)
    y = empty(out_shape, x.dtype, like=x)
    _forward_kernel_cpu(y.size, x, weights, y, *window)
    return y


def depthwise_conv2d_backward_input_cpu(
    dy: np.ndarray,
    w: np.ndarray,
    x_shape: Sequence[int],
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
) -> np.ndarray:
    """dx (N, C, H, W): the forward's adjoint in x, applied to dy (N, C·M, OH, OW)."""
    dy, weights, x_shape, window = _input_grad_arguments(dy, w, x_shape, stride, padding, dilation)
    dx = empty(x_shape, dy.dtype, like=dy)
    _input_grad_kernel_cpu(dy.size, dy, weights, dx, *window)
    return dx


def depthwise_conv2d_backward_weight_cpu(
    dy: np.ndarray,
    x: np.ndarray,
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
) -> np.ndarray:
    """dw (C·M, 1, KH, KW): the forward's adjoint in w, dy (N, C·M, OH, OW) against x."""
    dy, x, dw_shape, window = _weight_grad_arguments(dy, x, kernel_hw, stride, padding, dilation)
    dw = empty(dw_shape, x.dtype, like=x)
    _weight_grad_kernel_cpu(dy.size, dy, x, dw.reshape(dw_shape[0], *dw_shape[2:]), *window)
    return dw


# ---------------------------------------------------------------------------------------------
# CUDA


@cuda_kernel
def _forward_kernel_cuda(x, w, y, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_channels, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    kernel_h, kernel_w = w.shape[1], w.shape[2]
    multiplier = out_channels // channels
    # Consecutive threads compute consecutive columns: coalesced stores (and loads at stride 1).
    for index in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        plane_row, ow = index // out_w, index % out_w
        plane, oh = plane_row // out_h, plane_row % out_h
        n, oc = plane // out_channels, plane % out_channels
        c = oc // multiplier
        total = y.dtype.type(0)
        for i in range(kernel_h):
            ih = oh * stride_h - pad_h + i * dilation_h
            if 0 <= ih < height:
                for j in range(kernel_w):
                    iw = ow * stride_w - pad_w + j * dilation_w
                    if 0 <= iw < width:
                        total += w[oc, i, j] * x[n, c, ih, iw]
        y[n, oc, oh, ow] = total


@cuda_kernel
def _input_grad_kernel_cuda(dy, w, dx, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    channels, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    out_channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    kernel_h, kernel_w = w.shape[1], w.shape[2]
    multiplier = out_channels // channels
    for index in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        plane_row, col = index // width, index % width
        plane, row = plane_row // height, plane_row % height
        n, c = plane // channels, plane % channels
        total = dx.dtype.type(0)
        # Tap (i, j) of output (oh, ow) read this pixel when oh·SH - PH + i·DH == row (likewise
        # for the columns): gather those dy entries, so no two threads write one pixel.
        for i in range(kernel_h):
            oh_scaled = row + pad_h - i * dilation_h
            if oh_scaled < 0 or oh_scaled % stride_h != 0 or oh_scaled // stride_h >= out_h:
                continue
            oh = oh_scaled // stride_h
            for j in range(kernel_w):
                ow_scaled = col + pad_w - j * dilation_w
                if ow_scaled < 0 or ow_scaled % stride_w != 0 or ow_scaled // stride_w >= out_w:
                    continue
                ow = ow_scaled // stride_w
                for oc in range(c * multiplier, (c + 1) * multiplier):
                    total += w[oc, i, j] * dy[n, oc, oh, ow]
        dx[n, c, row, col] = total


@cuda_kernel
def _weight_grad_kernel_cuda(dy, x, dw, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    scratch = cuda.shared.array((2, MAX_BLOCK_THREADS), dw.dtype)
    batch, channels, height, width = x.shape
    out_channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    kernel_h, kernel_w = dw.shape[1], dw.shape[2]
    multiplier = out_channels // channels
    out_size = out_h * out_w
    taps = kernel_h * kernel_w
    # One block per tap (the whole block takes the same trip through this loop, so the barriers
    # inside block_reduce_pair are reached by every thread).
    for tap_index in range(cuda.blockIdx.x, dw.size, cuda.gridDim.x):
        oc, tap = tap_index // taps, tap_index % taps
        i, j = tap // kernel_w, tap % kernel_w
        c = oc // multiplier
        total = dw.dtype.type(0)
        for index in range(cuda.threadIdx.x, batch * out_size, cuda.blockDim.x):
            n, position = index // out_size, index % out_size
            oh, ow = position // out_w, position % out_w
            ih = oh * stride_h - pad_h + i * dilation_h
            iw = ow * stride_w - pad_w + j * dilation_w
            if 0 <= ih < height and 0 <= iw < width:
                total += dy[n, oc, oh, ow] * x[n, c, ih, iw]
        total, _ = block_reduce_pair(scratch, total, total, False)
        if cuda.threadIdx.x == 0:
            dw[oc, i, j] = total


def depthwise_conv2d_forward_cuda(
    x: Any, w: Any, stride: IntPair, padding: IntPair, dilation: IntPair = 1
) -> Any:
    """As :func:`depthwise_conv2d_forward_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    x, weights, window, out_shape = _forward_arguments(x, w, stride, padding, dilation)
    y = empty(out_shape, x.dtype, like=x)
    if y.size:
        blocks = stride_grid(y.size, THREADS_PER_BLOCK)
        launch(_forward_kernel_cuda, blocks, THREADS_PER_BLOCK, x, weights, y, *window)
    return y


def depthwise_conv2d_backward_input_cuda(
    dy: Any,
    w: Any,
    x_shape: Sequence[int],
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
) -> Any:
    """As :func:`depthwise_conv2d_backward_input_cpu`, on the GPU or in the simulator."""
    dy, weights, x_shape, window = _input_grad_arguments(dy, w, x_shape, stride, padding, dilation)
    dx = empty(x_shape, dy.dtype, like=dy)
    if dx.size:
        blocks = stride_grid(dx.size, THREADS_PER_BLOCK)
        launch(_input_grad_kernel_cuda, blocks, THREADS_PER_BLOCK, dy, weights, dx, *window)
    return dx


def depthwise_conv2d_backward_weight_cuda(
    dy: Any,
    x: Any,
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
) -> Any:
    """As :func:`depthwise_conv2d_backward_weight_cpu`, on the GPU or in the simulator."""
    dy, x, dw_shape, window = _weight_grad_arguments(dy, x, kernel_hw, stride, padding, dilation)
    if not dy.size:  # no products to sum (an empty batch): nothing to launch
        return array_module(x).zeros(dw_shape, x.dtype)
    dw = empty(dw_shape, x.dtype, like=x)
    # a grid-stride loop over the taps, one block each
    blocks = stride_grid(dw.size, 1)
    threads = reduction_threads(dy.shape[0] * dy.shape[2] * dy.shape[3])
    taps = dw.reshape(dw_shape[0], *dw_shape[2:])
    launch(_weight_grad_kernel_cuda, blocks, threads, dy, x, taps, *window)
    return dw


def cuda_kernels() -> list[KernelSpec]:
    """The CUDA kernels of this module, each with one float32 specialisation, for the PTX check."""
    window = (numba.int64,) * 6
    image, weights = numba.float32[:, :, :, ::1], numba.float32[:, :, ::1]
    return [
        KernelSpec(
            "depthwise_conv2d_forward",
            _forward_kernel_cuda,
            (image, weights, image, *window),
            THREADS_PER_BLOCK,
        ),
        KernelSpec(
            "depthwise_conv2d_backward_input",
            _input_grad_kernel_cuda,
            (image, weights, image, *window),
            THREADS_PER_BLOCK,
        ),
        KernelSpec(
            "depthwise_conv2d_backward_weight",
            _weight_grad_kernel_cuda,
            (image, image, weights, *window),
            MAX_BLOCK_THREADS,
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Benchmark cases, against PyTorch's conv2d with groups = C and its two gradients


def _torch_backward(torch: Any, dy: Any, x: Any, w: Any, stride: int, padding: int, mask: list):
    """PyTorch's conv2d backward (groups = C) for the gradients ``mask`` asks for."""
    return torch.ops.aten.convolution_backward(
        dy, x, w, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], x.shape[1], mask
    )


# Benchmark peers as a NumPy user would write them (any array module with NumPy's API: NumPy,
# CuPy): one strided slice of the padded input per tap, with the channels repeated M times.


def _plain_taps(x_shape: tuple, w: Any, stride: int, padding: int) -> tuple:
    """(padded height and width, output height and width, [(i, j, row slice, column slice)])."""
    height, width = x_shape[2] + 2 * padding, x_shape[3] + 2 * padding
    kernel = w.shape[2]
    out_h, out_w = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    taps = [
        (i, j, slice(i, i + stride * out_h, stride), slice(j, j + stride * out_w, stride))
        for i in range(kernel)
        for j in range(kernel)
    ]
    return (height, width), (out_h, out_w), taps


def plain_depthwise_forward(x: Any, w: Any, stride: int, padding: int) -> Any:
    xp = array_module(x)
    pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    repeated = xp.repeat(xp.pad(x, pad), w.shape[0] // x.shape[1], axis=1)
    _, out_hw, taps = _plain_taps(x.shape, w, stride, padding)
    y = xp.zeros((x.shape[0], w.shape[0], *out_hw), x.dtype)
    for i, j, rows, cols in taps:
        y += w[None, :, 0, i, j, None, None] * repeated[:, :, rows, cols]
    return y


def plain_depthwise_backward_input(
    dy: Any, w: Any, x_shape: tuple, stride: int, padding: int
) -> Any:
    xp = array_module(dy)
    padded_hw, _, taps = _plain_taps(x_shape, w, stride, padding)
    grad = xp.zeros((x_shape[0], w.shape[0], *padded_hw), dy.dtype)
    for i, j, rows, cols in taps:
        grad[:, :, rows, cols] += w[None, :, 0, i, j, None, None] * dy
    grad = grad.reshape(x_shape[0], x_shape[1], -1, *padded_hw).sum(axis=2)
    return grad[:, :, padding : padded_hw[0] - padding, padding : padded_hw[1] - padding]


def plain_depthwise_backward_weight(dy: Any, x: Any, w: Any, stride: int, padding: int) -> Any:
    xp = array_module(x)
    pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    repeated = xp.repeat(xp.pad(x, pad), w.shape[0] // x.shape[1], axis=1)
    _, _, taps = _plain_taps(x.shape, w, stride, padding)
    grad = xp.empty(w.shape, dy.dtype)
    for i, j, rows, cols in taps:
        grad[:, 0, i, j] = (dy * repeated[:, :, rows, cols]).sum(axis=(0, 2, 3))
    return grad


def _depthwise_case(
    context: BenchContext,
    op: str,
    key: str,
    x_shape: tuple,
    multiplier: int,
    kernel: int,
    stride: int,
    padding: int,
) -> Case:
    ops, torch = context.ops, context.torch
    batch, channels, height, width = x_shape
    x = context.random(x_shape)
    w = context.random((channels * multiplier, 1, kernel, kernel), seed=1)
    y_shape = ops.depthwise_conv2d_forward(x, w, stride, padding).shape
    dy = context.random(y_shape, seed=2)
    runs = {
        "forward": lambda: ops.depthwise_conv2d_forward(x, w, stride, padding),
        "backward_input": lambda: ops.depthwise_conv2d_backward_input(
            dy, w, x_shape, stride, padding
        ),
        "backward_weight": lambda: ops.depthwise_conv2d_backward_weight(
            dy, x, kernel, stride, padding
        ),
    }
    implementations = {
        OURS: Implementation(runs[op]),
        context.plain: Implementation(
            {
                "forward": lambda: plain_depthwise_forward(x, w, stride, padding),
                "backward_input": lambda: plain_depthwise_backward_input(
                    dy, w, x_shape, stride, padding
                ),
                "backward_weight": lambda: plain_depthwise_backward_weight(
                    dy, x, w, stride, padding
                ),
            }[op]
        ),
    }
    if torch:
        x_t, w_t, dy_t = (torch.from_numpy(a) for a in (x, w, dy))
        implementations["torch"] = Implementation(
            {
                "forward": lambda: torch.nn.functional.conv2d(
                    x_t, w_t, None, stride, padding, 1, channels
                ),
                "backward_input": lambda: _torch_backward(
                    torch, dy_t, x_t, w_t, stride, padding, [True, False, False]
                )[0],
                "backward_weight": lambda: _torch_backward(
                    torch, dy_t, x_t, w_t, stride, padding, [False, True, False]
                )[1],
            }[op]
        )
    taps = w.shape[0] * kernel * kernel
    out_size = int(np.prod(y_shape))
    label = f"{key} {'x'.join(map(str, x_shape))}->{w.shape[0]} k{kernel}s{stride}p{padding}"
    info = CaseInfo(
        f"depthwise_{op}",
        label,
        2.0 * out_size * kernel * kernel,
        FLOAT32_BYTES * (x.size + out_size + taps),
    )
    return Case(info, implementations)


# (key, x shape, channel multiplier, kernel, stride, padding): a MobileNet-style 3x3 depthwise
# layer on CIFAR-sized planes, at stride 1 and 2.
BENCH_DEPTHWISE_LAYERS = (
    ("dw.b32", (32, 64, 32, 32), 1, 3, 1, 1),
    ("dw.s2.b32", (32, 64, 32, 32), 1, 3, 2, 1),
)
QUICK_BENCH_DEPTHWISE_LAYERS = (("tiny.dw", (2, 3, 7, 6), 2, 3, 2, 1),)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """The forward and both gradients of a depthwise 3x3 layer (a tiny one with ``quick``)."""
    layers = QUICK_BENCH_DEPTHWISE_LAYERS if quick else BENCH_DEPTHWISE_LAYERS
    specs = []
    for key, x_shape, multiplier, kernel, stride, padding in layers:
        shape = f"{'x'.join(map(str, x_shape))} m{multiplier} k{kernel}s{stride}p{padding}"
        for op in ("forward", "backward_input", "backward_weight"):
            build = partial(
                _depthwise_case,
                op=op,
                key=key,
                x_shape=x_shape,
                multiplier=multiplier,
                kernel=kernel,
                stride=stride,
                padding=padding,
            )
            specs.append(CaseSpec(f"depthwise_{op}", key, shape, build, (OURS, "numpy", "torch")))
    return specs


FAMILY = Family(
    name="depthwise",
    module=__name__,
    ops=(
        "depthwise_conv2d_forward",
        "depthwise_conv2d_backward_input",
        "depthwise_conv2d_backward_weight",
    ),
    references={
        "depthwise_conv2d_forward": reference_depthwise_conv2d_forward,
        "depthwise_conv2d_backward_input": reference_depthwise_conv2d_backward_input,
        "depthwise_conv2d_backward_weight": reference_depthwise_conv2d_backward_weight,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
