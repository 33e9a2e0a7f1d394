"""im2col and col2im: 2-D convolution as a matrix product, and its adjoint.

Math. For an input x of shape (N, C, H, W), a kernel KH x KW whose taps are (DH, DW) apart
(the dilation; 1 for a dense kernel), stride (SH, SW) and zero padding (PH, PW), the output plane
is

    OH = (H + 2*PH - DH*(KH - 1) - 1) // SH + 1,    OW = (W + 2*PW - DW*(KW - 1) - 1) // SW + 1

and im2col lays every receptive field out as one column (the layout of Caffe's and PyTorch's
``unfold``, with the images side by side):

    cols[(c*KH + i)*KW + j, (n*OH + oh)*OW + ow] = x[n, c, oh*SH - PH + i*DH, ow*SW - PW + j*DW]

(zero where the index falls in the padding). A convolution with weights w (OC, C, KH, KW) is
then ``w.reshape(OC, -1) @ cols``, of shape (OC, N*OH*OW): each image's output plane is a
contiguous run of OH*OW values. col2im is the adjoint of im2col, the map the backward pass needs
for dx:

    dx[n, c, h, w] = sum of cols[row, col] over every (row, col) that im2col read from x[n, c, h, w]

so that <im2col(x), g> == <x, col2im(g)> for every x and g.

Why this layout: for a fixed kernel offset (c, i, j) and a fixed output row (n, oh), the OW
entries of cols are consecutive, and (for stride 1, at any dilation) so are the pixels they come
from. Both kernels therefore move whole runs of OW floats, read and written contiguously, where
the transposed layout (one row per receptive field) moves runs of KW floats (3, for a 3x3 kernel).

Buffers: x and dx (N, C, H, W); cols (C*KH*KW, N*OH*OW); all C-contiguous, float32 or float64,
cols of the same dtype as x. ``kernel_hw``, ``stride``, ``padding`` and ``dilation`` (default 1)
are each an int or an (h, w) pair. Each writes into ``out`` when given: col2im into a slice of a
larger batch's dx, im2col into the first rows of a larger matrix (conv2d appends a row of ones for
the bias).

Variants, simplest first:

* ``reference_im2col`` / ``reference_col2im``: float64 NumPy, one strided slice per kernel
  offset (i, j). ``reference_conv2d``: a direct sliding-window sum (with dilation and groups), a
  different algorithm, against which im2col-then-matmul is checked.
* ``im2col_cpu`` / ``col2im_cpu``: Numba. im2col is parallel over the rows of cols (kernel
  offsets): each row is written front to back, one run of OW values per output row (for stride
  1 with OW == W, one contiguous run per image), with the padded ends zeroed and no bounds test
  inside a run (the dilation only moves where each kernel offset's runs start). col2im is
  parallel over the N*C planes of dx: each task owns its plane, so it is race-free, and each
  pixel sums its terms in kernel-offset order however the work is split, so dx is deterministic.
  With a stride along the rows (SW > 1), more kernel taps than the SH*SW stride phases and at
  least "same" padding, both take stride phases instead of those runs gathered (scattered) with
  stride SW: a task takes a chunk of images (as many as conv2d's CPU workspace holds the columns
  of), splits it a channel at a time into phases (pixels (t*SH + rh, u*SW + rw), each image's
  phase an OH x OW plane), and then every kernel offset reads one phase at stride 1, so its row
  of cols is one contiguous copy for the whole chunk, the entries over the padding zeroed after
  (col2im: one contiguous sum into the phases, the padding's entries summed as zeros, then the
  phases woven back into dx, each pixel's sum still in kernel-offset order, to the same bits).
  Both run serial or parallel as the CPU policy (``_cpu.parallel_pays``) decides for the size of
  cols.
* ``im2col_cuda`` / ``col2im_cuda``: one thread per element of cols (im2col: consecutive threads
  write consecutive columns), and one thread per input pixel gathering the cols entries that came
  from it (col2im: no atomics, deterministic); both grid-stride loops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numba
import numpy as np
from numba import cuda, njit, prange, uint64
from numba.extending import register_jitable

from . import _pool2x2
from ._blas import gemm
from ._checks import (
    as_shape,
    bias_or_zeros,
    check_float_dtype,
    check_planned,
    chunks_of,
    output_gradient,
    planned_arrays,
)
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
from ._cpu import (
    CONV_WORKSPACE_BYTES,
    chunk_groups,
    chunk_range,
    cpu_kernel,
    images_per_chunk,
)
from ._cuda import array_module, check_out, cuda_kernel, empty, launch, stride_grid
from ._geometry import (
    IntPair,
    WindowGeometry,
    conv_output_shape,
    inside_range,
    int_pair,
    window_geometry,
)
from ._relu import relu_span

THREADS_PER_BLOCK = 256


def _im2col_arguments(
    x: Any, kernel_hw: IntPair, stride: IntPair, padding: IntPair, dilation: IntPair, out: Any
):
    check_float_dtype(x, "x", "im2col")
    geometry = window_geometry(x.shape, kernel_hw, stride, padding, "im2col", dilation)
    batch, channels = x.shape[:2]
    cols_shape = (
        channels * geometry.kernel_h * geometry.kernel_w,
        batch * geometry.out_h * geometry.out_w,
    )
    cols = (
        empty(cols_shape, x.dtype, like=x)
        if out is None
        else check_out("im2col", out, cols_shape, x.dtype, x)
    )
    return array_module(x).ascontiguousarray(x), geometry, int_pair(dilation, "dilation", 1), cols


def _col2im_arguments(
    cols: Any,
    x_shape: Sequence[int],
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair,
    out: Any,
):
    x_shape = as_shape(x_shape, "col2im")
    geometry = window_geometry(x_shape, kernel_hw, stride, padding, "col2im", dilation)
    check_float_dtype(cols, "cols", "col2im")
    batch, channels = x_shape[:2]
    expected = (
        channels * geometry.kernel_h * geometry.kernel_w,
        batch * geometry.out_h * geometry.out_w,
    )
    if tuple(cols.shape) != expected:
        raise ValueError(
            f"col2im expects cols of shape {expected} for x_shape {x_shape}, kernel "
            f"{geometry.kernel_h}x{geometry.kernel_w}, got {tuple(cols.shape)}"
        )
    out = (
        empty(x_shape, cols.dtype, like=cols)
        if out is None
        else check_out("col2im", out, x_shape, cols.dtype, cols)
    )
    return (
        array_module(cols).ascontiguousarray(cols),
        out,
        geometry,
        int_pair(dilation, "dilation", 1),
    )


# ---------------------------------------------------------------------------------------------
# References (float64)


def reference_im2col(
    x: np.ndarray, kernel_hw: IntPair, stride: IntPair, padding: IntPair, dilation: IntPair = 1
) -> np.ndarray:
    """im2col in float64: one strided slice of the zero-padded input per kernel offset (i, j)."""
    geometry = window_geometry(x.shape, kernel_hw, stride, padding, "reference_im2col", dilation)
    kh, kw, sh, sw, ph, pw, oh, ow = geometry
    dh, dw = int_pair(dilation, "dilation", 1)
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    batch, channels = x.shape[:2]
    patches = np.empty((channels, kh, kw, batch, oh, ow))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * oh, sh)
            patches[:, i, j] = padded[:, :, rows, j * dw : j * dw + sw * ow : sw].transpose(
                1, 0, 2, 3
            )
    return patches.reshape(channels * kh * kw, batch * oh * ow)


def reference_col2im(
    cols: np.ndarray,
    x_shape: Sequence[int],
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
) -> np.ndarray:
    """col2im in float64: add each kernel offset's slice of cols back onto the padded input."""
    batch, channels, height, width = x_shape
    kh, kw, sh, sw, ph, pw, oh, ow = window_geometry(
        x_shape, kernel_hw, stride, padding, "reference_col2im", dilation
    )
    dh, dw = int_pair(dilation, "dilation", 1)
    patches = np.asarray(cols, np.float64).reshape(channels, kh, kw, batch, oh, ow)
    padded = np.zeros((batch, channels, height + 2 * ph, width + 2 * pw))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * oh, sh)
            padded[:, :, rows, j * dw : j * dw + sw * ow : sw] += patches[:, i, j].transpose(
                1, 0, 2, 3
            )
    return padded[:, :, ph : ph + height, pw : pw + width]


def reference_conv2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    groups: int = 1,
) -> np.ndarray:
    """Direct 2-D convolution (cross-correlation) in float64: y (N, OC, OH, OW), one window at a
    time; w (OC, C/groups, KH, KW), output channels [g*OC/groups, (g+1)*OC/groups) see input
    channels [g*C/groups, (g+1)*C/groups)."""
    out_channels, group_channels, kh, kw = w.shape
    _, _, sh, sw, ph, pw, oh, ow = window_geometry(
        x.shape, (kh, kw), stride, padding, "reference_conv2d", dilation
    )
    dh, dw = int_pair(dilation, "dilation", 1)
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    weights = np.asarray(w, np.float64).reshape(groups, out_channels // groups, -1, kh, kw)
    y = np.empty((x.shape[0], groups, out_channels // groups, oh, ow))
    for row in range(oh):
        for col in range(ow):
            window = padded[
                :,
                :,
                row * sh : row * sh + dh * (kh - 1) + 1 : dh,
                col * sw : col * sw + dw * (kw - 1) + 1 : dw,
            ].reshape(x.shape[0], groups, group_channels, kh, kw)
            y[:, :, :, row, col] = np.einsum("ngchw,gochw->ngo", window, weights)
    y = y.reshape(x.shape[0], out_channels, oh, ow)
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def reference_conv2d_im2col(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    groups: int = 1,
    chunk_images: int = 1,
) -> np.ndarray:
    """The direct convolution (chunking changes nothing)."""
    return reference_conv2d(x, weight, bias, stride, padding, dilation, groups)


def reference_conv2d_im2col_backward(
    dy: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    groups: int = 1,
    chunk_images: int = 1,
    need_x: bool = True,
    need_w: bool = True,
    need_b: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """dx, dweight, dbias in float64 window by window, the transpose of the direct sum: each
    output position's dy spreads back over its window (dx) and meets that window (dweight)."""
    out_channels, group_channels, kh, kw = weight.shape
    _, _, sh, sw, ph, pw, oh, ow = window_geometry(
        x.shape, (kh, kw), stride, padding, "reference_conv2d_im2col_backward", dilation
    )
    dh, dw = int_pair(dilation, "dilation", 1)
    batch = x.shape[0]
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    grad_padded = np.zeros_like(padded)
    weights = np.asarray(weight, np.float64).reshape(groups, out_channels // groups, -1, kh, kw)
    grads = np.asarray(dy, np.float64).reshape(batch, groups, out_channels // groups, oh, ow)
    dweight = np.zeros_like(weights)
    for row in range(oh):
        for col in range(ow):
            rows = slice(row * sh, row * sh + dh * (kh - 1) + 1, dh)
            cols = slice(col * sw, col * sw + dw * (kw - 1) + 1, dw)
            window = padded[:, :, rows, cols].reshape(batch, groups, group_channels, kh, kw)
            g = grads[:, :, :, row, col]  # (N, G, OC/G)
            dweight += np.einsum("ngo,ngchw->gochw", g, window)
            spread = np.einsum("ngo,gochw->ngchw", g, weights)
            grad_padded[:, :, rows, cols] += spread.reshape(batch, -1, kh, kw)
    height, width = x.shape[2:]
    dx = grad_padded[:, :, ph : ph + height, pw : pw + width]
    dbias = np.asarray(dy, np.float64).sum(axis=(0, 2, 3))
    return (
        dx if need_x else None,
        dweight.reshape(weight.shape) if need_w else None,
        dbias if need_b else None,
    )


# ---------------------------------------------------------------------------------------------
# CPU


@register_jitable
def _im2col_row(
    x,
    cols,
    col_row,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    out_h,
    out_w,
    dilation_h,
    dilation_w,
):
    """Row ``col_row`` of cols: kernel offset (c, i, j) of every output position."""
    batch, channels, height, width = x.shape
    plane_size = out_h * out_w
    pixels = x.reshape(-1)
    # Unsigned indices: Numba adds a negative-index wrap-around test to every signed index,
    # which stops LLVM from vectorising the copies.
    # Stride 1 with "same" rows (OW == W): consecutive output rows read consecutive input rows,
    # so a whole block of rows is one contiguous run; the few entries it copies from the
    # neighbouring row (where the window hangs over the left or right edge) are zeroed after.
    rows_are_contiguous = stride_w == 1 and stride_h * width == out_w
    target = cols[col_row]
    # The tap's offset in the input: kernel row i sits i*dilation_h rows below the window's top.
    i = (col_row // kernel_w) % kernel_h * dilation_h
    j = col_row % kernel_w * dilation_w
    c = col_row // (kernel_h * kernel_w)
    oh_start, oh_stop = inside_range(i, pad_h, stride_h, height, out_h)
    ow_start, ow_stop = inside_range(j, pad_w, stride_w, width, out_w)
    for n in range(batch):
        first = n * plane_size
        # Output rows whose input row lies in the padding are all zeros.
        for k in range(uint64(first), uint64(first + oh_start * out_w)):
            target[k] = 0
        for k in range(uint64(first + oh_stop * out_w), uint64(first + plane_size)):
            target[k] = 0
        if oh_start == oh_stop:
            continue
        top_left = (
            ((n * channels + c) * height + oh_start * stride_h - pad_h + i) * width + j - pad_w
        )
        if rows_are_contiguous:
            start = uint64(first + oh_start * out_w + ow_start)
            source = uint64(top_left + ow_start)
            for k in range(uint64((oh_stop - 1 - oh_start) * out_w + ow_stop - ow_start)):
                target[start + k] = pixels[source + k]
            # Where the window hangs over the left or right edge, the run copied pixels of the
            # neighbouring row: one column of zeros each (a loop down the rows, not along them).
            for ow in range(ow_start):
                for oh in range(oh_start, oh_stop):
                    target[uint64(first + oh * out_w + ow)] = 0
            for ow in range(ow_stop, out_w):
                for oh in range(oh_start, oh_stop):
                    target[uint64(first + oh * out_w + ow)] = 0
            continue
        for oh in range(oh_start, oh_stop):
            run = uint64(first + oh * out_w)
            for ow in range(uint64(ow_start)):
                target[run + ow] = 0
            for ow in range(uint64(ow_stop), uint64(out_w)):
                target[run + ow] = 0
            source = uint64(top_left + (oh - oh_start) * stride_h * width)
            for ow in range(uint64(ow_start), uint64(ow_stop)):
                target[run + ow] = pixels[source + ow * uint64(stride_w)]


@register_jitable
def _col2im_plane(
    cols,
    dx,
    plane,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    out_h,
    out_w,
    dilation_h,
    dilation_w,
):
    """Plane dx[n, c] with plane = n*C + c, summing its terms in kernel-offset (i, j) order."""
    batch, channels, height, width = dx.shape
    plane_size = out_h * out_w
    n, c = plane // channels, plane % channels
    image = dx[n, c].reshape(-1)
    image[:] = 0
    for i in range(kernel_h):
        tap_h = i * dilation_h
        oh_start, oh_stop = inside_range(tap_h, pad_h, stride_h, height, out_h)
        for j in range(kernel_w):
            tap_w = j * dilation_w
            ow_start, ow_stop = inside_range(tap_w, pad_w, stride_w, width, out_w)
            source = cols[(c * kernel_h + i) * kernel_w + j]
            for oh in range(oh_start, oh_stop):
                run = uint64(n * plane_size + oh * out_w)
                row = uint64((oh * stride_h - pad_h + tap_h) * width + tap_w - pad_w)
                for ow in range(uint64(ow_start), uint64(ow_stop)):
                    image[row + ow * uint64(stride_w)] += source[run + ow]


# Stride phases (a stride SW > 1 along the rows). Phase (rh, rw) of an (H, W) plane holds its
# pixels (t*SH + rh, u*SW + rw) at (t, u). The tap whose window offset is (a, b) =
# (i*DH - PH, j*DW - PW) reads, for output (oh, ow), pixel (oh*SH + a, ow*SW + b): phase
# (a mod SH, b mod SW) at (oh + a // SH, ow + b // SW), a read at stride 1. A chunk of images is
# split a channel at a time, each image's phase stored as an OH x OW plane (room enough where the
# padding is at least "same": ceil(H/SH) <= OH and ceil(W/SW) <= OW), phase after phase, image
# after image. Entry m = (n*OH + oh)*OW + ow of a tap's row of cols then reads phases[m + shift],
# one shift for the whole chunk: the row is one contiguous copy (col2im: one contiguous sum)
# instead of a strided gather (scatter) of OW values an output row. The entries over the padding,
# which that copy takes from a neighbouring row or image, are zeroed after.
# The split moves whole rows into row phases, then splits each row phase into columns in one flat
# loop (loops one row long are too short to vectorise well).
# A tap's row of cols is sliced from a whole row of cols (``column`` on), not from a column range
# of the 2-D cols: Numba types that as strided, and LLVM does not vectorise copies through it.


@register_jitable
def _phases_pay(height, width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w):
    """Whether im2col and col2im of H x W planes with this geometry (the kernels' 8 fields; the
    padding plays no part) go through stride phases: a stride along the rows (at stride 1 the
    runs are contiguous already), more taps than phases (else the split costs more than the
    gathers it saves, as for the 1x1 stride-2 shortcut), and phases that fit an output plane."""
    return (
        stride_w > 1
        and kernel_h * kernel_w > stride_h * stride_w
        and (height + stride_h - 1) // stride_h <= out_h
        and (width + stride_w - 1) // stride_w <= out_w
    )


@register_jitable
def _phase_tap(
    i, j, images, height, width, stride_h, stride_w, pad_h, pad_w, out_h, out_w, dilation_h,
    dilation_w,
):  # fmt: skip
    """Tap (i, j) in phase terms: its output rows [oh_start, oh_stop) and columns
    [ow_start, ow_stop) over the image, the run [first, last) of a chunk's cols row that holds
    them (empty when none), and the shift from an entry of that run to its pixel in the phases."""
    tap_h, tap_w = i * dilation_h, j * dilation_w
    oh_start, oh_stop = inside_range(tap_h, pad_h, stride_h, height, out_h)
    ow_start, ow_stop = inside_range(tap_w, pad_w, stride_w, width, out_w)
    a, b = tap_h - pad_h, tap_w - pad_w
    phase = (a % stride_h) * stride_w + b % stride_w
    shift = (phase * images * out_h + a // stride_h) * out_w + b // stride_w
    first, last = 0, 0
    if oh_start < oh_stop and ow_start < ow_stop:
        first = oh_start * out_w + ow_start
        last = ((images - 1) * out_h + oh_stop - 1) * out_w + ow_stop
    return oh_start, oh_stop, ow_start, ow_stop, first, last, shift


@register_jitable
def _zero_outside(target, images, oh_start, oh_stop, ow_start, ow_stop, out_h, out_w):
    """Zero the entries of ``images`` planes (OH x OW each, from target[0]) outside rows
    [oh_start, oh_stop) and columns [ow_start, ow_stop): where the window reads the padding."""
    plane = out_h * out_w
    for n in range(images):
        start = n * plane
        for k in range(uint64(start), uint64(start + oh_start * out_w)):
            target[k] = 0
        for k in range(uint64(start + oh_stop * out_w), uint64(start + plane)):
            target[k] = 0
    # A column at a time, down all the rows (the padding's rows again too: one loop, not two):
    # these are a column or two at most.
    for ow in range(ow_start):
        for k in range(uint64(ow), uint64(images * plane), uint64(out_w)):
            target[k] = 0
    for ow in range(ow_stop, out_w):
        for k in range(uint64(ow), uint64(images * plane), uint64(out_w)):
            target[k] = 0


@register_jitable
def _move_rows(images, c, rows, stride_h, pitch, out_h, into_rows):
    """Between channel c of a chunk of images (N, C, H, W) and its row phases in ``rows``: row h
    of image n is row h // SH of image n in row phase h mod SH, laid out [rh][n][OH][pitch]
    (pitch >= W: the entries past W, and the rows past ceil(H/SH), are left alone).
    ``into_rows``: that way; else back."""
    count, channels, height, width = images.shape
    pixels = images.reshape(-1)
    for n in range(count):
        plane = (n * channels + c) * height * width
        for rh in range(stride_h):
            first = uint64((rh * count + n) * out_h * pitch)
            for h in range(rh, height, stride_h):
                source = uint64(plane + h * width)
                if into_rows:
                    for w in range(uint64(width)):
                        rows[first + w] = pixels[source + w]
                else:
                    for w in range(uint64(width)):
                        pixels[source + w] = rows[first + w]
                first += uint64(pitch)


@register_jitable
def _move_columns(rows, phases, stride_h, stride_w, into_phases):
    """Between row phases (``rows``, flat, rows SW*OW apart) and stride phases: column phase rw
    of row phase rh (its entries rw, rw + SW, ...) is stride phase rh*SW + rw, the phases one
    after the other. ``into_phases``: that way; else back. One flat loop a phase, long enough
    for LLVM to vectorise (a loop a row is not)."""
    part = rows.size // (stride_h * stride_w)  # a phase
    if stride_w == 2:
        # The stride a constant and both phases in one loop: LLVM vectorises the loads (or
        # stores) and shuffles them apart, where a stride known only at run time stays scalar.
        for first in range(0, rows.size, 2 * part):
            run = rows[first : first + 2 * part]
            even, odd = phases[first : first + part], phases[first + part : first + 2 * part]
            if into_phases:
                for k in range(uint64(part)):
                    even[k] = run[2 * k]
                    odd[k] = run[2 * k + 1]
            else:
                for k in range(uint64(part)):
                    run[2 * k] = even[k]
                    run[2 * k + 1] = odd[k]
        return
    for first in range(0, rows.size, stride_w * part):
        run = rows[first : first + stride_w * part]
        for rw in range(stride_w):
            phase = phases[first + rw * part : first + (rw + 1) * part]
            if into_phases:
                for k in range(uint64(part)):
                    phase[k] = run[rw + k * stride_w]
            else:
                for k in range(uint64(part)):
                    run[rw + k * stride_w] = phase[k]


@register_jitable
def _im2col_phases(
    x,
    cols,
    column,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    out_h,
    out_w,
    dilation_h,
    dilation_w,
):
    """Columns [column, column + N*OH*OW) of cols for a chunk of images x, through stride
    phases: a channel's planes split into phases, then each of its KH*KW rows of cols one
    contiguous copy, the entries over the padding zeroed after (the copy filled them from the
    neighbouring row or image)."""
    images, channels, height, width = x.shape
    count = images * out_h * out_w
    phases = np.empty(stride_h * stride_w * count, x.dtype)
    rows = np.empty(stride_h * stride_w * count, x.dtype)  # the row phases
    for c in range(channels):
        _move_rows(x, c, rows, stride_h, stride_w * out_w, out_h, True)
        _move_columns(rows, phases, stride_h, stride_w, True)
        for i in range(kernel_h):
            for j in range(kernel_w):
                oh_start, oh_stop, ow_start, ow_stop, first, last, shift = _phase_tap(
                    i, j, images, height, width, stride_h, stride_w, pad_h, pad_w, out_h, out_w,
                    dilation_h, dilation_w,
                )  # fmt: skip
                target = cols[(c * kernel_h + i) * kernel_w + j, column : column + count]
                for m in range(uint64(first), uint64(last)):
                    target[m] = phases[m + uint64(shift)]
                _zero_outside(target, images, oh_start, oh_stop, ow_start, ow_stop, out_h, out_w)


@register_jitable
def _col2im_phases(
    cols,
    column,
    dx,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    out_h,
    out_w,
    dilation_h,
    dilation_w,
):
    """dx of a chunk of images from columns [column, column + N*OH*OW) of cols, through stride
    phases, the transpose of :func:`_im2col_phases`: per channel, each tap's run of cols summed
    onto the phases in one contiguous pass (where the run has entries over the padding, a copy
    of it with those zeroed), then the phases merged into dx. Adding +0.0 changes no sum (a sum
    that starts at +0.0 is never -0.0), so every pixel sums its terms in kernel-offset (i, j)
    order to the very bits of :func:`_col2im_plane`."""
    images, channels, height, width = dx.shape
    count = images * out_h * out_w
    phases = np.empty(stride_h * stride_w * count, dx.dtype)
    terms = np.empty(count, dx.dtype)
    rows = np.empty(stride_h * stride_w * count, dx.dtype)  # the row phases
    for c in range(channels):
        phases[:] = 0
        for i in range(kernel_h):
            for j in range(kernel_w):
                oh_start, oh_stop, ow_start, ow_stop, first, last, shift = _phase_tap(
                    i, j, images, height, width, stride_h, stride_w, pad_h, pad_w, out_h, out_w,
                    dilation_h, dilation_w,
                )  # fmt: skip
                source = cols[(c * kernel_h + i) * kernel_w + j, column : column + count]
                if oh_start > 0 or oh_stop < out_h or ow_start > 0 or ow_stop < out_w:
                    for m in range(uint64(first), uint64(last)):
                        terms[m] = source[m]
                    _zero_outside(terms, images, oh_start, oh_stop, ow_start, ow_stop, out_h, out_w)
                    source = terms
                for m in range(uint64(first), uint64(last)):
                    phases[m + uint64(shift)] += source[m]
        _move_columns(rows, phases, stride_h, stride_w, False)
        _move_rows(dx, c, rows, stride_h, stride_w * out_w, out_h, False)


@register_jitable
def _chunk_images(cols, plane):
    """Images a task of the standalone kernels takes through stride phases: as many as conv2d's
    CPU workspace holds the columns of (``plane`` columns an image)."""
    return max(1, CONV_WORKSPACE_BYTES // max(1, cols.shape[0] * plane * cols.itemsize))


# The kernels take the geometry's 8 fields, then the dilation ((1, 1): a dense kernel); always
# both, so that no call compiles a second specialisation with the dilation omitted.


@cpu_kernel
def _im2col_kernel_cpu(
    x,
    cols,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    out_h,
    out_w,
    dilation_h,
    dilation_w,
):
    batch, _, height, width = x.shape
    if _phases_pay(
        height, width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w
    ):
        # A task a chunk of images, each with its own phases.
        plane = out_h * out_w
        chunk = _chunk_images(cols, plane)
        for task in prange((batch + chunk - 1) // chunk):
            start, stop = task * chunk, min(batch, (task + 1) * chunk)
            _im2col_phases(
                x[start:stop], cols, start * plane, kernel_h, kernel_w, stride_h, stride_w,
                pad_h, pad_w, out_h, out_w, dilation_h, dilation_w,
            )  # fmt: skip
    else:
        for col_row in prange(cols.shape[0]):
            _im2col_row(
                x, cols, col_row, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h,
                out_w, dilation_h, dilation_w,
            )  # fmt: skip


@cpu_kernel
def _col2im_kernel_cpu(
    cols,
    dx,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    out_h,
    out_w,
    dilation_h,
    dilation_w,
):
    # A task owns one plane (or one chunk of images): no two tasks write one pixel, so dx is
    # race-free and deterministic.
    batch, _, height, width = dx.shape
    if _phases_pay(
        height, width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w
    ):
        plane_size = out_h * out_w
        chunk = _chunk_images(cols, plane_size)
        for task in prange((batch + chunk - 1) // chunk):
            start, stop = task * chunk, min(batch, (task + 1) * chunk)
            _col2im_phases(
                cols, start * plane_size, dx[start:stop], kernel_h, kernel_w, stride_h,
                stride_w, pad_h, pad_w, out_h, out_w, dilation_h, dilation_w,
            )  # fmt: skip
    else:
        for plane in prange(dx.shape[0] * dx.shape[1]):
            _col2im_plane(
                cols, dx, plane, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h,
                out_w, dilation_h, dilation_w,
            )  # fmt: skip


def im2col_cpu(
    x: np.ndarray,
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """cols (C*KH*KW, N*OH*OW) of x (N, C, H, W), same dtype as x (into ``out`` if given)."""
    x, geometry, dilation, cols = _im2col_arguments(x, kernel_hw, stride, padding, dilation, out)
    _im2col_kernel_cpu(cols.size, x, cols, *geometry, *dilation)
    return cols


def col2im_cpu(
    cols: np.ndarray,
    x_shape: Sequence[int],
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """dx (N, C, H, W): every entry of cols (C*KH*KW, N*OH*OW) summed back onto its pixel."""
    cols, dx, geometry, dilation = _col2im_arguments(
        cols, x_shape, kernel_hw, stride, padding, dilation, out
    )
    _col2im_kernel_cpu(cols.size, cols, dx, *geometry, *dilation)
    return dx


# ---------------------------------------------------------------------------------------------
# CUDA


@cuda_kernel
def _im2col_kernel_cuda(
    x,
    cols,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    out_h,
    out_w,
    dilation_h,
    dilation_w,
):
    height, width = x.shape[2], x.shape[3]
    num_cols = cols.shape[1]
    # Consecutive threads write consecutive entries of a cols row (consecutive ow): coalesced
    # stores, and for stride 1 coalesced loads too.
    for index in range(cuda.grid(1), cols.shape[0] * num_cols, cuda.gridsize(1)):
        col_row, col = index // num_cols, index % num_cols
        channel_row, j = col_row // kernel_w, col_row % kernel_w
        c, i = channel_row // kernel_h, channel_row % kernel_h
        image_row, ow = col // out_w, col % out_w
        n, oh = image_row // out_h, image_row % out_h
        ih = oh * stride_h - pad_h + i * dilation_h
        iw = ow * stride_w - pad_w + j * dilation_w
        if 0 <= ih < height and 0 <= iw < width:
            cols[col_row, col] = x[n, c, ih, iw]
        else:
            cols[col_row, col] = 0


@cuda_kernel
def _col2im_kernel_cuda(
    cols,
    dx,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    out_h,
    out_w,
    dilation_h,
    dilation_w,
):
    channels, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    for index in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        plane_row, w = index // width, index % width
        plane, h = plane_row // height, plane_row % height
        n, c = plane // channels, plane % channels
        total = dx.dtype.type(0)
        # Kernel row i read pixel row h from output row oh when
        # oh*stride_h - pad_h + i*dilation_h == h.
        for i in range(kernel_h):
            oh_scaled = h + pad_h - i * dilation_h
            if oh_scaled < 0 or oh_scaled % stride_h != 0 or oh_scaled // stride_h >= out_h:
                continue
            for j in range(kernel_w):
                ow_scaled = w + pad_w - j * dilation_w
                if ow_scaled < 0 or ow_scaled % stride_w != 0 or ow_scaled // stride_w >= out_w:
                    continue
                col = (n * out_h + oh_scaled // stride_h) * out_w + ow_scaled // stride_w
                total += cols[(c * kernel_h + i) * kernel_w + j, col]
        dx[n, c, h, w] = total


def im2col_cuda(
    x: Any,
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    out: Any = None,
) -> Any:
    """As :func:`im2col_cpu`, on the GPU (CuPy arrays) or in the simulator (NumPy arrays)."""
    x, geometry, dilation, cols = _im2col_arguments(x, kernel_hw, stride, padding, dilation, out)
    blocks = stride_grid(cols.size, THREADS_PER_BLOCK)
    launch(_im2col_kernel_cuda, blocks, THREADS_PER_BLOCK, x, cols, *geometry, *dilation)
    return cols


def col2im_cuda(
    cols: Any,
    x_shape: Sequence[int],
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    out: Any = None,
) -> Any:
    """As :func:`col2im_cpu`, on the GPU (CuPy arrays) or in the simulator (NumPy arrays)."""
    cols, dx, geometry, dilation = _col2im_arguments(
        cols, x_shape, kernel_hw, stride, padding, dilation, out
    )
    blocks = stride_grid(dx.size, THREADS_PER_BLOCK)
    launch(_col2im_kernel_cuda, blocks, THREADS_PER_BLOCK, cols, dx, *geometry, *dilation)
    return dx


# ---------------------------------------------------------------------------------------------
# The whole convolution, a chunk of images at a time: y = w · im2col(x) per image and group, and
# its gradients. CPU: one call, the chunks shared out over the threads (_cpu.chunk_groups), each
# run with its own columns and a single-threaded BLAS (_blas.gemm) per image and group; CUDA: a
# loop over the chunks, each one im2col launch and one batched product (the array module's
# matmul: a family does not call a sibling's). With relu=True (conv2d_relu), y is relu(y), the CPU
# applying it to each image's planes right after their products (kernels/_relu.py's rule). With
# pool=True (conv2d_relu_max_pool2d) y is not written: each image's planes go to the run's own
# buffer and leave it 2x2 max-pooled, with their argmax (kernels/_pool2x2.py); the backward
# unpools the pooled gradient through that argmax a chunk at a time (pool_argmax).


def _conv_arguments(
    op: str,
    x: Any,
    weight: Any,
    bias: Any,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair,
    groups: int,
    chunk_images: int,
):
    """x C-contiguous, the weight as (OC, C/G·KH·KW), bias, the geometry, the dilation pair and
    the number of chunks, after checking that they fit together."""
    check_float_dtype(x, "x", op)
    if weight.ndim != 4 or weight.dtype != x.dtype:
        raise ValueError(
            f"{op} expects a 4-D weight of x's dtype {x.dtype}, got {tuple(weight.shape)} "
            f"{weight.dtype}"
        )
    geometry = window_geometry(x.shape, tuple(weight.shape[2:]), stride, padding, op, dilation)
    out_channels = weight.shape[0]
    if groups < 1 or out_channels % groups or weight.shape[1] * groups != x.shape[1]:
        raise ValueError(
            f"{op}: weight {tuple(weight.shape)} with groups={groups} does not fit x "
            f"{tuple(x.shape)} (expected ({out_channels}, {x.shape[1]} / groups, KH, KW))"
        )
    if bias is not None:
        bias_or_zeros(op, bias, out_channels, x)  # the check (the caller keeps its own array)
    chunks = chunks_of(op, x.shape[0], chunk_images)
    xp = array_module(x)
    weights = xp.ascontiguousarray(weight).reshape(out_channels, -1)
    return (
        xp.ascontiguousarray(x),
        weights,
        geometry,
        int_pair(dilation, "dilation", 1),
        chunks,
    )


def _with_bias_column(weights: Any, bias: Any, groups: int) -> tuple[Any, bool]:
    """With one group the bias rides in the product: a last weight column against a last row of
    ones in the columns (no pass over y for it); with groups it is added to y after."""
    if bias is None or groups != 1:
        return weights, False
    return array_module(weights).concatenate([weights, bias[:, None]], axis=1), True


@register_jitable
def _image_products(weights, cols, y, image, plane, groups, ones):
    """y[image] (OC, P) = weights · image's columns, one product per group."""
    rows_g = (cols.shape[0] - ones) // groups
    out_g = weights.shape[0] // groups
    block = cols[:, image * plane : (image + 1) * plane]
    for g in range(groups):
        gemm(
            weights[g * out_g : (g + 1) * out_g],
            block[g * rows_g : (g + 1) * rows_g + ones],
            y[g * out_g : (g + 1) * out_g],
            False,
            False,
            0.0,
        )


@njit(cache=True, error_model="numpy")
def _conv_run(
    x, weights, y, cols_runs, geometry, dilation, groups, chunk_images, relu, pool, pooled, where,
    planes_runs, run,
):  # fmt: skip
    """Run ``run`` of the chunks of images: per chunk its columns, then each image's products
    (through ReLU while still in cache, with ``relu``); with ``pool``, each image's products go
    to the run's planes instead of y and leave them pooled (``_pool2x2``) into pooled and where
    (N·OC, PH·PW)."""
    batch, rows = x.shape[0], x.shape[1] * geometry[0] * geometry[1]
    plane, ones = geometry[6] * geometry[7], cols_runs.shape[1] - rows
    runs, chunks = cols_runs.shape[0], (batch + chunk_images - 1) // chunk_images
    out_channels, pooled_h, pooled_w = weights.shape[0], geometry[6] // 2, geometry[7] // 2
    pooled_h = pooled_h if pool else 0  # no pool: empty scratch
    corners = _pool2x2.window_corners(pooled_h, pooled_w, geometry[7])
    larger, below = _pool2x2.pool_scratch(pooled_h * pooled_w, x.dtype)
    first, last = chunk_range(run, runs, chunks, chunk_images, batch)
    through_phases = _phases_pay(x.shape[2], x.shape[3], *geometry)
    for start in range(first, last, chunk_images):
        stop = min(start + chunk_images, batch)
        cols, images = cols_runs[run, :, : (stop - start) * plane], x[start:stop]
        if through_phases:
            _im2col_phases(images, cols_runs[run], 0, *geometry, *dilation)
        else:
            for row in range(rows):  # whole rows of cols: typed contiguous, they vectorise
                _im2col_row(images, cols_runs[run], row, *geometry, *dilation)
        if ones:
            cols[rows] = 1
        for image in range(start, stop):
            planes = (
                planes_runs[run, : out_channels * plane].reshape(out_channels, plane)
                if pool
                else y[image]
            )
            _image_products(weights, cols, planes, image - start, plane, groups, ones)
            if pool:
                for k in range(out_channels):
                    pooled_plane = image * out_channels + k
                    _pool2x2.pool_plane(
                        planes[k], geometry[7], pooled[pooled_plane], where[pooled_plane],
                        pooled_w, relu, larger, below, corners,
                    )  # fmt: skip
            elif relu:
                relu_span(planes.reshape(-1), 0, out_channels * plane)


@njit(cache=True, error_model="numpy")
def _conv_backward_run(
    dy, x, weights, dx, dweights, db, cols_runs, grad_cols_runs, geometry, dilation, groups,
    chunk_images, need_x, need_w, need_b, pool, pooled_grad, where, grads_runs, outside, run,
):  # fmt: skip
    """Per chunk: dWᵀ[run, g] += cols·dYᵀ per image (a last row of ones in the columns gives Σ dY
    as dWᵀ's last row), else Σ dY into db[run]; grad cols = Wᵀ·dY per image, then col2im into dx.
    dweights (runs, G, C/G·KH·KW [+1], OC/G) and db (runs, OC) start zeroed. With ``pool``, a
    chunk's dY is first unpooled (``_pool2x2``) into the run's grads_runs[run] from pooled_grad
    and where (N·OC, PH·PW), counting the entries of where that name no pixel into outside[run];
    dy is then not read."""
    batch, channels = x.shape[0], x.shape[1]
    rows, out_channels = channels * geometry[0] * geometry[1], weights.shape[0]
    plane, ones = geometry[6] * geometry[7], cols_runs.shape[1] - rows if need_w else 0
    rows_g, out_g = rows // groups, out_channels // groups
    runs, chunks = dweights.shape[0], (batch + chunk_images - 1) // chunk_images
    first, last = chunk_range(run, runs, chunks, chunk_images, batch)
    through_phases = _phases_pay(x.shape[2], x.shape[3], *geometry)
    for start in range(first, last, chunk_images):
        stop = min(start + chunk_images, batch)
        count = (stop - start) * plane
        if pool:
            grads = grads_runs[run, : stop - start]
            outside[run] += _pool2x2.unpool_planes(
                pooled_grad, where, start * out_channels, grads.reshape(-1, plane)
            )
        else:
            grads = dy[start:stop]
        if need_w:
            cols, images = cols_runs[run, :, :count], x[start:stop]
            if through_phases:
                _im2col_phases(images, cols_runs[run], 0, *geometry, *dilation)
            else:
                for row in range(rows):
                    _im2col_row(images, cols_runs[run], row, *geometry, *dilation)
            if ones:
                cols[rows] = 1
            for image in range(stop - start):
                block = cols[:, image * plane : (image + 1) * plane]
                for g in range(groups):
                    gemm(
                        block[g * rows_g : (g + 1) * rows_g + ones],
                        grads[image, g * out_g : (g + 1) * out_g],
                        dweights[run, g],
                        False,
                        True,
                        1.0,
                    )
        if need_b and not ones:
            for image in range(stop - start):
                for k in range(out_channels):
                    db[run, k] += grads[image, k].sum()
        if need_x:
            grad_cols = grad_cols_runs[run, :, :count]
            for image in range(stop - start):
                block = grad_cols[:, image * plane : (image + 1) * plane]
                for g in range(groups):
                    gemm(
                        weights[g * out_g : (g + 1) * out_g],
                        grads[image, g * out_g : (g + 1) * out_g],
                        block[g * rows_g : (g + 1) * rows_g],
                        True,
                        False,
                        0.0,
                    )
            inputs = dx[start:stop]
            if through_phases:
                _col2im_phases(grad_cols_runs[run], 0, inputs, *geometry, *dilation)
            else:
                for plane_index in range((stop - start) * channels):
                    _col2im_plane(grad_cols_runs[run], inputs, plane_index, *geometry, *dilation)


# The kernels are thin loops over runs of chunks, each run one call of a jitted function both
# drivers share: the body is compiled once, not once a driver (as in kernels/winograd.py).
@cpu_kernel
def _conv_kernel_cpu(
    x, weights, y, cols_runs, geometry, dilation, groups, chunk_images, relu, pool, pooled, where,
    planes_runs,
):  # fmt: skip
    """y (N, OC, P), or with ``pool`` pooled and where; each run of chunks on one thread with its
    own columns (and planes)."""
    for run in prange(cols_runs.shape[0]):
        _conv_run(
            x, weights, y, cols_runs, geometry, dilation, groups, chunk_images, relu, pool, pooled,
            where, planes_runs, np.int64(run),
        )  # fmt: skip


@cpu_kernel
def _conv_backward_kernel_cpu(
    dy, x, weights, dx, dweights, db, cols_runs, grad_cols_runs, geometry, dilation, groups,
    chunk_images, need_x, need_w, need_b, pool, pooled_grad, where, grads_runs, outside,
):  # fmt: skip
    """dx, dWᵀ[run] and Σ dY[run] (zeroed by the caller), each run of chunks on one thread."""
    for run in prange(dweights.shape[0]):
        _conv_backward_run(
            dy, x, weights, dx, dweights, db, cols_runs, grad_cols_runs, geometry, dilation,
            groups, chunk_images, need_x, need_w, need_b, pool, pooled_grad, where, grads_runs,
            outside, np.int64(run),
        )  # fmt: skip


def conv2d_im2col_cpu(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    groups: int = 1,
    chunk_images: int = 1,
    out: np.ndarray | None = None,
    relu: bool = False,
    pool: bool = False,
) -> Any:
    """y (N, OC, OH, OW) = conv2d(x (N, C, H, W), weight (OC, C/G, KH, KW)) + bias, by im2col
    and a product per image and group, ``chunk_images`` images' columns at a time; with
    ``relu``, relu of all that. With ``pool``, (pooled, where) (N, OC, OH // 2, OW // 2): y's
    2x2 stride-2 max-pool (then the ReLU) and its argmax, each image's planes pooled while in
    cache (``kernels/_pool2x2.py``), y never written; one group only when there is a bias."""
    x, weights, geometry, dilation, chunks = _conv_arguments(
        "conv2d_im2col", x, weight, bias, stride, padding, dilation, groups, chunk_images
    )
    return _conv_cpu(
        x, weights, bias, geometry, dilation, groups, chunks, chunk_images, relu, out, pool
    )


def conv2d_im2col_plan_cpu(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    groups: int = 1,
    chunk_images: int = 1,
    relu: bool = False,
    pool: bool = False,
) -> Callable[..., Any]:
    """:func:`conv2d_im2col_cpu` for arrays shaped as these, checked once: ``run(x, weight,
    bias, out=None)`` gives y, or with ``pool`` (pooled, where). A call checks only that its
    arrays have the planned types, shapes and dtypes (else a ValueError) and reads their values;
    the other checks and the geometry were worked out here."""
    _, _, geometry, dilation_pair, chunks = _conv_arguments(
        "conv2d_im2col", x, weight, bias, stride, padding, dilation, groups, chunk_images
    )
    planned = planned_arrays(x, weight, bias)

    def run(x, weight, bias, out=None):
        check_planned("conv2d_im2col", ("x", "weight", "bias"), planned, (x, weight, bias))
        weights = np.ascontiguousarray(weight).reshape(weight.shape[0], -1)
        return _conv_cpu(
            np.ascontiguousarray(x), weights, bias, geometry, dilation_pair, groups, chunks,
            chunk_images, relu, out, pool,
        )  # fmt: skip

    return run


def _pool_arguments(op: str, bias: Any, groups: int, out: Any, y_shape: tuple) -> tuple:
    """:func:`pool_arguments`, and a bias only with one group (with groups it is added after
    the products, too late for the pool)."""
    if bias is not None and groups != 1:
        raise ValueError(f"{op}: pool=True takes a bias only with groups=1, got groups={groups}")
    return _pool2x2.pool_arguments(op, out, y_shape)


def _conv_cpu(
    x, weights, bias, geometry, dilation, groups, chunks, chunk_images, relu, out, pool=False
):
    """The convolution of checked arguments (x C-contiguous, the weight as (OC, C/G·KH·KW)):
    y, into ``out`` when given, or with ``pool`` (pooled, where); the driver and its runs follow
    the current thread count."""
    y_shape = (x.shape[0], weights.shape[0], geometry.out_h, geometry.out_w)
    pooled_dims = _pool_arguments("conv2d_im2col", bias, groups, out, y_shape) if pool else None
    weights, ones = _with_bias_column(weights, bias, groups)
    batch, out_channels, plane = x.shape[0], weights.shape[0], geometry.out_h * geometry.out_w
    if pool:
        y = np.empty((0, out_channels, plane), x.dtype)
    elif out is None:
        y = empty(y_shape, x.dtype, like=x)
    else:
        y = check_out("conv2d_im2col", out, y_shape, x.dtype, x)
    rows = weights.shape[1] * groups - (groups - 1) * ones
    driver, runs = chunk_groups(_conv_kernel_cpu, (rows + out_channels) * plane * batch, chunks)
    cols_runs = empty((runs, rows, chunk_images * plane), x.dtype, like=x)
    pooled, where = _pool2x2.pool_outputs(pooled_dims, x.dtype, x)
    planes_runs = np.empty((runs, out_channels * plane) if pool else (0, 0), x.dtype)
    driver(
        x,
        weights,
        y.reshape(y.shape[0], out_channels, plane),
        cols_runs,
        tuple(geometry),
        dilation,
        groups,
        chunk_images,
        bool(relu) and (bias is None or ones),  # else the bias comes after the products
        bool(pool),
        _pool2x2.as_planes(pooled),
        _pool2x2.as_planes(where),
        planes_runs,
    )
    if pool:
        return pooled, where
    if bias is not None and not ones:
        y += bias[:, None, None]
        if relu:
            np.maximum(y, 0, out=y)  # NaN kept, as the kernels' ReLU keeps it
    return y


def conv2d_im2col_backward_cpu(
    dy: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    groups: int = 1,
    chunk_images: int = 1,
    need_x: bool = True,
    need_w: bool = True,
    need_b: bool = True,
    pool_argmax: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(dx, dweight, dbias) of :func:`conv2d_im2col_cpu` from dy (N, OC, OH, OW), each None when
    not asked for; the columns recomputed per chunk (cheaper than keeping the batch's). With
    ``pool_argmax`` (the ``where`` of a ``pool=True`` forward), dy is the pooled output's
    gradient (N, OC, OH // 2, OW // 2), unpooled a chunk at a time while in cache."""
    x, weights, geometry, dilation, chunks = _conv_arguments(
        "conv2d_im2col_backward", x, weight, None, stride, padding, dilation, groups, chunk_images
    )
    batch, out_channels = x.shape[0], weights.shape[0]
    plane, rows = (
        geometry.out_h * geometry.out_w,
        x.shape[1] * geometry.kernel_h * geometry.kernel_w,
    )
    y_shape = (batch, out_channels, geometry.out_h, geometry.out_w)
    dy, pooled_grad, where = _pool2x2.output_gradients(
        "conv2d_im2col_backward", dy, pool_argmax, y_shape, x
    )
    ones = int(need_w and need_b and groups == 1)
    driver, runs = chunk_groups(
        _conv_backward_kernel_cpu, (rows + out_channels) * plane * batch, chunks
    )
    width = chunk_images * plane
    cols_runs = empty((runs, rows + ones, width) if need_w else (runs, 0, 0), x.dtype, like=x)
    grad_cols_runs = empty((runs, rows, width) if need_x else (runs, 0, 0), x.dtype, like=x)
    grads_runs = np.empty(
        (runs, chunk_images, out_channels, plane) if pool_argmax is not None else (0, 0, 0, 0),
        x.dtype,
    )
    outside = np.zeros(runs, np.int64)
    dx = empty(x.shape, x.dtype, like=x) if need_x else np.empty((0, 0, 0, 0), x.dtype)
    rows_g, out_g = rows // groups, out_channels // groups
    dweights = np.zeros((runs, groups, rows_g + ones, out_g), x.dtype)
    db = np.zeros((runs, out_channels), np.float64)
    driver(
        dy.reshape(dy.shape[0], out_channels, plane), x, weights, dx, dweights, db, cols_runs,
        grad_cols_runs, tuple(geometry), dilation, groups, chunk_images, need_x, need_w, need_b,
        pool_argmax is not None, pooled_grad, where, grads_runs, outside,
    )  # fmt: skip
    if pool_argmax is not None:
        _pool2x2.check_where(
            "conv2d_im2col_backward", where, where.shape, int(outside.sum()), plane
        )
    summed = dweights.sum(axis=0) if runs > 1 else dweights[0]  # (G, C/G·KH·KW [+1], OC/G)
    dweight = (
        np.ascontiguousarray(summed[:, :rows_g].transpose(0, 2, 1)).reshape(weight.shape)
        if need_w
        else None
    )
    if not need_b:
        return dx if need_x else None, dweight, None
    dbias = summed[0, rows_g].copy() if ones else db.sum(axis=0).astype(x.dtype)
    return dx if need_x else None, dweight, dbias


def _by_group(matrix: Any, groups: int) -> Any:
    """A (rows, columns) matrix as (groups, rows/groups, columns), group g's rows (a view)."""
    return matrix.reshape(groups, -1, matrix.shape[-1])


def _cuda_columns(x: Any, geometry: WindowGeometry, dilation: tuple, ones: bool) -> Any:
    """im2col of x on the device, with a last row of ones when ``ones``."""
    rows = x.shape[1] * geometry.kernel_h * geometry.kernel_w
    cols = empty((rows + ones, x.shape[0] * geometry.out_h * geometry.out_w), x.dtype, like=x)
    window = ((geometry.kernel_h, geometry.kernel_w), (geometry.stride_h, geometry.stride_w))
    padding = (geometry.pad_h, geometry.pad_w)
    im2col_cuda(x, *window, padding, dilation, out=cols[:rows])
    if ones:
        cols[rows] = 1
    return cols


def conv2d_im2col_cuda(
    x: Any,
    weight: Any,
    bias: Any,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    groups: int = 1,
    chunk_images: int = 1,
    out: Any = None,
    relu: bool = False,
    pool: bool = False,
) -> Any:
    """As :func:`conv2d_im2col_cpu`, on the GPU (CuPy arrays) or in the simulator: per chunk one
    im2col and one (batched over groups) product of the whole chunk's columns; ``relu`` as the
    array module's maximum, NaN kept, over y; ``pool`` pools y after (``_pool2x2.pool_cuda``)."""
    x, weights, geometry, dilation, _ = _conv_arguments(
        "conv2d_im2col", x, weight, bias, stride, padding, dilation, groups, chunk_images
    )
    if pool:
        y_shape = (x.shape[0], weights.shape[0], geometry.out_h, geometry.out_w)
        _pool_arguments("conv2d_im2col", bias, groups, out, y_shape)
        y = conv2d_im2col_cuda(x, weight, bias, stride, padding, dilation, groups, chunk_images)
        return _pool2x2.pool_cuda(y, relu)
    weights, ones = _with_bias_column(weights, bias, groups)
    xp, (batch, out_channels) = array_module(x), (x.shape[0], weights.shape[0])
    plane = geometry.out_h * geometry.out_w
    y_shape = (batch, out_channels, geometry.out_h, geometry.out_w)
    y = (
        empty(y_shape, x.dtype, like=x)
        if out is None
        else check_out("conv2d_im2col", out, y_shape, x.dtype, x)
    )
    y3 = y.reshape(batch, out_channels, plane)
    for start in range(0, batch, chunk_images):
        stop = min(start + chunk_images, batch)
        cols = _cuda_columns(x[start:stop], geometry, dilation, ones)
        planes = xp.matmul(_by_group(weights, groups), _by_group(cols, groups))
        y3[start:stop] = planes.reshape(out_channels, stop - start, plane).transpose(1, 0, 2)
    if bias is not None and not ones:
        y += bias[:, None, None]
    if relu:
        xp.maximum(y, 0, out=y)
    return y


def conv2d_im2col_plan_cuda(
    x: Any,
    weight: Any,
    bias: Any,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    groups: int = 1,
    chunk_images: int = 1,
    relu: bool = False,
    pool: bool = False,
) -> Callable[..., Any]:
    """As :func:`conv2d_im2col_plan_cpu`, on the GPU or in the simulator: the arguments are
    checked now, and ``run`` calls :func:`conv2d_im2col_cuda`, which checks them again (a
    launch's Python path is not what a GPU layer waits on)."""
    window = (stride, padding, dilation, groups, chunk_images)
    _conv_arguments("conv2d_im2col", x, weight, bias, *window)

    def run(x, weight, bias, out=None):
        return conv2d_im2col_cuda(x, weight, bias, *window, out, relu, pool)

    return run


def conv2d_im2col_backward_cuda(
    dy: Any,
    x: Any,
    weight: Any,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    groups: int = 1,
    chunk_images: int = 1,
    need_x: bool = True,
    need_w: bool = True,
    need_b: bool = True,
    pool_argmax: Any = None,
) -> tuple[Any, Any, Any]:
    """As :func:`conv2d_im2col_backward_cpu`, on the GPU (CuPy arrays) or in the simulator; a
    pooled dy is unpooled first (``_pool2x2.unpool_cuda``)."""
    x, weights, geometry, dilation, _ = _conv_arguments(
        "conv2d_im2col_backward", x, weight, None, stride, padding, dilation, groups, chunk_images
    )
    xp, (batch, out_channels) = array_module(x), (x.shape[0], weights.shape[0])
    plane, rows = geometry.out_h * geometry.out_w, weights.shape[1] * groups
    y_shape = (batch, out_channels, geometry.out_h, geometry.out_w)
    if pool_argmax is not None:
        dy = _pool2x2.unpool_cuda(
            *_pool2x2.pooled_gradient("conv2d_im2col_backward", dy, pool_argmax, y_shape, x)
        )
    dy3 = output_gradient("conv2d_im2col_backward", dy, y_shape, x)
    dy3 = dy3.reshape(batch, out_channels, plane)
    ones = need_w and need_b and groups == 1
    dx = empty(x.shape, x.dtype, like=x) if need_x else None
    dweights = dbias = None
    window = ((geometry.kernel_h, geometry.kernel_w), (geometry.stride_h, geometry.stride_w))
    for start in range(0, batch, chunk_images):
        stop = min(start + chunk_images, batch)
        # (OC, images·P): the chunk's output gradient in the layout of one product
        grad = xp.ascontiguousarray(dy3[start:stop].transpose(1, 0, 2)).reshape(out_channels, -1)
        if need_w:  # dWᵀ = cols·dYᵀ per group, (G, C/G·KH·KW [+1], OC/G)
            cols = _cuda_columns(x[start:stop], geometry, dilation, ones)
            term = xp.matmul(_by_group(cols, groups), _by_group(grad, groups).transpose(0, 2, 1))
            dweights = term if dweights is None else dweights + term
        if need_b and not ones:
            term = dy3[start:stop].sum(axis=(0, 2))
            dbias = term if dbias is None else dbias + term
        if need_x:
            grad_cols = xp.matmul(
                _by_group(weights, groups).transpose(0, 2, 1), _by_group(grad, groups)
            )
            col2im_cuda(
                grad_cols.reshape(rows, -1), dx[start:stop].shape, *window,
                (geometry.pad_h, geometry.pad_w), dilation, out=dx[start:stop],
            )  # fmt: skip
    if batch == 0:  # no image contributed
        dweights = xp.zeros((groups, rows // groups + ones, out_channels // groups), x.dtype)
        dbias = xp.zeros(out_channels, x.dtype)
    dweight = None
    if need_w:
        dweight = xp.ascontiguousarray(dweights[:, : rows // groups].transpose(0, 2, 1))
        dweight = dweight.reshape(weight.shape)
    if need_b and ones:
        dbias = dweights[0, rows // groups].copy()
    return dx, dweight, dbias if need_b else None


def cuda_kernels() -> list[KernelSpec]:
    """The CUDA kernels of this module, each with one float32 specialisation, for the PTX check."""
    geometry = (numba.int64,) * (len(WindowGeometry._fields) + 2)  # and the dilation (h, w)
    image, matrix = numba.float32[:, :, :, ::1], numba.float32[:, ::1]
    return [
        KernelSpec("im2col", _im2col_kernel_cuda, (image, matrix, *geometry), THREADS_PER_BLOCK),
        KernelSpec("col2im", _col2im_kernel_cuda, (matrix, image, *geometry), THREADS_PER_BLOCK),
        *_pool2x2.cuda_kernels(),  # what pool=True launches after the convolution
    ]


# ---------------------------------------------------------------------------------------------
# Benchmark cases, with the peers written as a NumPy user would write them (for any array module
# with NumPy's API: NumPy, CuPy)


def plain_im2col(x: Any, kernel: int, stride: int, padding: int, dilation: int = 1) -> Any:
    """cols (C*K*K, N*OH*OW) through a padded copy and a strided window view."""
    xp = array_module(x)
    padded = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    span = dilation * (kernel - 1) + 1
    windows = xp.lib.stride_tricks.sliding_window_view(padded, (span, span), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride, ::dilation, ::dilation]
    n, channels, out_h, out_w = windows.shape[:4]
    patch = channels * kernel * kernel
    return windows.transpose(1, 4, 5, 0, 2, 3).reshape(patch, n * out_h * out_w)


def plain_col2im(
    cols: Any, x_shape: tuple[int, ...], kernel: int, stride: int, padding: int, dilation: int = 1
) -> Any:
    """dx (N, C, H, W): each kernel offset's block of cols added onto a strided slice."""
    xp = array_module(cols)
    n, channels, height, width = x_shape
    out_h, out_w = conv_output_shape(height, width, kernel, stride, padding, dilation)
    padded = xp.zeros((n, channels, height + 2 * padding, width + 2 * padding), cols.dtype)
    blocks = cols.reshape(channels, kernel, kernel, n, out_h, out_w)
    for i in range(kernel):
        for j in range(kernel):
            rows = slice(i * dilation, i * dilation + stride * out_h, stride)
            columns = slice(j * dilation, j * dilation + stride * out_w, stride)
            padded[:, :, rows, columns] += blocks[:, i, j].transpose(1, 0, 2, 3)
    return padded[:, :, padding : padding + height, padding : padding + width]


def conv_label(
    x_shape: tuple[int, ...],
    kernel: int,
    stride: int,
    padding: int,
    out_channels: int = 0,
    dilation: int = 1,
) -> str:
    """A convolution row's shape text, e.g. ``64x32x14x14->64 k3s1p1`` (``k3s1p2d2`` dilated)."""
    out = f"->{out_channels}" if out_channels else ""
    dilated = f"d{dilation}" if dilation != 1 else ""
    return f"{'x'.join(map(str, x_shape))}{out} k{kernel}s{stride}p{padding}{dilated}"


def _im2col_case(
    context: BenchContext,
    key: str,
    x_shape: tuple,
    kernel: int,
    stride: int,
    padding: int,
    dilation: int,
) -> Case:
    ops = context.ops
    x = context.random(x_shape)
    n, channels, height, width = x_shape
    out_h, out_w = conv_output_shape(height, width, kernel, stride, padding, dilation)
    cols_size = n * out_h * out_w * channels * kernel * kernel
    implementations = {
        OURS: Implementation(lambda: ops.im2col(x, kernel, stride, padding, dilation)),
        context.plain: Implementation(lambda: plain_im2col(x, kernel, stride, padding, dilation)),
    }
    torch = context.torch
    if torch:
        x_torch = torch.from_numpy(x)
        implementations["torch"] = Implementation(  # unfold's layout is (N, C*K*K, OH*OW)
            lambda: torch.nn.functional.unfold(
                x_torch, kernel, dilation=dilation, padding=padding, stride=stride
            ),
            lambda cols: (cols.numpy().transpose(1, 0, 2).reshape(channels * kernel * kernel, -1),),
        )
    info = CaseInfo(
        "im2col",
        f"{key} {conv_label(x_shape, kernel, stride, padding, dilation=dilation)}",
        0.0,
        FLOAT32_BYTES * (x.size + cols_size),
    )
    return Case(info, implementations)


def _col2im_case(
    context: BenchContext,
    key: str,
    x_shape: tuple,
    kernel: int,
    stride: int,
    padding: int,
    dilation: int,
) -> Case:
    ops = context.ops
    n, channels, height, width = x_shape
    out_h, out_w = conv_output_shape(height, width, kernel, stride, padding, dilation)
    patch = channels * kernel * kernel
    cols = context.random((patch, n * out_h * out_w))
    implementations = {
        OURS: Implementation(lambda: ops.col2im(cols, x_shape, kernel, stride, padding, dilation)),
        context.plain: Implementation(
            lambda: plain_col2im(cols, x_shape, kernel, stride, padding, dilation)
        ),
    }
    torch = context.torch
    if torch:
        cols_torch = torch.from_numpy(
            np.ascontiguousarray(cols.reshape(patch, n, out_h * out_w).transpose(1, 0, 2))
        )
        implementations["torch"] = Implementation(
            lambda: torch.nn.functional.fold(
                cols_torch,
                (height, width),
                kernel,
                dilation=dilation,
                padding=padding,
                stride=stride,
            )
        )
    info = CaseInfo(
        "col2im",
        f"{key} {conv_label(x_shape, kernel, stride, padding, dilation=dilation)}",
        float(cols.size),
        FLOAT32_BYTES * (cols.size + n * channels * height * width),
    )
    return Case(info, implementations)


# The convolution layers benchmarked: (key, batch, in channels, out channels, image side, kernel,
# stride, padding). The conv2d rows of the bench time the same layers through the functional layer.
BENCH_CONV_LAYERS = (
    ("mnist.conv1.b64", 64, 1, 32, 28, 3, 1, 1),
    ("mnist.conv2.b64", 64, 32, 64, 14, 3, 1, 1),
    ("mnist.conv1.b256", 256, 1, 32, 28, 3, 1, 1),
    ("mnist.conv2.b256", 256, 32, 64, 14, 3, 1, 1),
    ("resnet.conv.b128", 128, 64, 64, 16, 3, 1, 1),
)
QUICK_BENCH_CONV_LAYERS = (
    ("tiny.conv", 2, 3, 4, 7, 3, 1, 1),
    ("tiny.conv.s2", 1, 2, 3, 8, 3, 2, 0),
)
# Dilated layers, timed by im2col and col2im only: (key, batch, in channels, image side, kernel,
# stride, padding, dilation).
DILATED_BENCH_LAYERS = (("dilated.conv.b64", 64, 32, 14, 3, 1, 2, 2),)
QUICK_DILATED_BENCH_LAYERS = (("tiny.conv.d2", 2, 3, 9, 3, 1, 1, 2),)
# conv2d runs im2col and col2im on as many images at a time as the CPU conv workspace holds:
# these layers are timed at that size too (the columns then stay in cache for the GEMMs).
_CHUNKED_CONV_LAYERS = ("mnist.conv2.b256", "resnet.conv.b128")


def _chunk_layer(layer: tuple) -> tuple:
    """``layer`` with its batch cut to the images conv2d's CPU workspace holds at once."""
    key, batch, channels, out_channels, side, kernel, stride, padding = layer
    out_h, out_w = conv_output_shape(side, side, kernel, stride, padding)
    bytes_per_image = (channels * kernel * kernel + out_channels) * out_h * out_w * FLOAT32_BYTES
    images = min(batch, images_per_chunk(bytes_per_image))
    return (
        f"{key.rsplit('.', 1)[0]}.chunk{images}",
        images,
        channels,
        out_channels,
        side,
        kernel,
        stride,
        padding,
    )


def bench_cases(quick: bool) -> list[CaseSpec]:
    """im2col and col2im on the MNIST CNN's and a ResNet's layers, whole batches and the chunks
    conv2d hands them on the CPU, on ResNet-20's stride-2 layer (stride phases) whole and
    chunked, and on a dilated layer (tiny layers with ``quick``)."""
    strided = (("resnet20.conv.s2.b128", 128, 16, 32, 32, 3, 2, 1),)  # timed here only
    layers = QUICK_BENCH_CONV_LAYERS if quick else BENCH_CONV_LAYERS + strided
    chunked = _CHUNKED_CONV_LAYERS + tuple(layer[0] for layer in strided)
    chunks = () if quick else tuple(_chunk_layer(layer) for layer in layers if layer[0] in chunked)
    dense = tuple(
        (key, batch, channels, side, kernel, stride, padding, 1)
        for key, batch, channels, _, side, kernel, stride, padding in layers + chunks
    )
    dilated = QUICK_DILATED_BENCH_LAYERS if quick else DILATED_BENCH_LAYERS
    specs = []
    for key, batch, channels, side, kernel, stride, padding, dilation in dense + dilated:
        x_shape = (batch, channels, side, side)
        shape = conv_label(x_shape, kernel, stride, padding, dilation=dilation)
        geometry = {
            "key": key,
            "x_shape": x_shape,
            "kernel": kernel,
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
        }
        specs += [
            CaseSpec(
                "im2col", key, shape, partial(_im2col_case, **geometry), (OURS, "numpy", "torch")
            ),
            CaseSpec(
                "col2im", key, shape, partial(_col2im_case, **geometry), (OURS, "numpy", "torch")
            ),
        ]
    return specs


FAMILY = Family(
    name="conv",
    module=__name__,
    ops=("im2col", "col2im", "conv2d_im2col", "conv2d_im2col_plan", "conv2d_im2col_backward"),
    references={
        "im2col": reference_im2col,
        "col2im": reference_col2im,
        "conv2d_im2col": reference_conv2d_im2col,
        "conv2d_im2col_backward": reference_conv2d_im2col_backward,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
