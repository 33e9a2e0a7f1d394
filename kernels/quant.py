"""int8 quantized arithmetic: quantize, dequantize, and int8 linear and convolution layers.

Math. Quantization is symmetric with zero point 0 (ONNX QuantizeLinear with an int8 zero point
of 0): a float x and its int8 code q are related by one positive ``scale``::

    quantize(x)   = clip(rint(x / scale), -128, 127)     (round half to even; x / scale in float32)
    dequantize(q) = float32(q) * float32(scale)

An int8 layer multiplies int8 activations a (scale s_a) by int8 weights w (scale s_w[n] for output
unit n) and accumulates exactly in int32::

    acc[m, n] = sum_k int32(a[m, k]) * int32(w[n, k])

so that a[m] · w[n] in floats is acc[m, n] * s_a * s_w[n]. The caller folds the two scales into
``multiplier[n] = s_a * s_w[n]``; the epilogue, picked by the dtype of ``out``, is then

    int32:   acc                                            (the raw accumulator)
    float32: y = float32(acc) * multiplier[n] + bias[n], then max(y, 0) if relu   (dequantized)
    int8:    clip(rint(y / out_scale), -128, 127)           (requantized for the next int8 layer)

|acc| <= 128 * 128 * K, so int32 cannot overflow below K = 131,072.

Buffers (all C-contiguous; scales are Python floats > 0, relu a bool):

* quantize:    x float32, any shape  -> out int8, same shape
* dequantize:  q int8, any shape     -> out float32, same shape
* linear_int8: a int8 (M, K) (a row per sample), w int8 (N, K) (a row per output unit, as
  nn.Linear's weight), multiplier float32 (N,), bias float32 (N,) -> out (M, N) int32/float32/int8
* conv2d_int8: x int8 (B, C, H, W), w int8 (Cout, C, kh, kw), multiplier and bias float32 (Cout,),
  stride, padding and pool ints (both axes; padding pads with the quantized zero, 0)
  -> out (B, Cout, Ho // pool, Wo // pool), Ho = (H + 2p - kh) // stride + 1, int32/float32/int8:
  the epilogue per output channel, then the max over pool x pool windows with stride pool
  (PyTorch's MaxPool2d(pool): rows and columns past the last whole window are dropped; pool = 1
  does not pool).

Pooling is fused and exact: every multiplier must be > 0 when pool > 1, so that the epilogue
(float32(acc) * multiplier + bias, relu, requantize) is non-decreasing in acc, and the max of the
epilogue over a window is the epilogue of the max of acc. The kernels pool the int32 sums, then
run the epilogue once per pooled output (a pool**2-th of the epilogues); the raw int32 output is
the max of acc.

Variants, simplest first:

* ``reference_*``: NumPy in int64 and float64. The convolution's is a direct sliding-window sum,
  then the epilogue, then the max over windows (pooling after the epilogue: the other order from
  the kernels); a different algorithm from the kernels' im2col + GEMM.
* ``*_cpu``: Numba. The GEMM widens int8 to int16 and runs tiles of 4 rows x 16 columns of
  int32 sums held in SIMD registers over the whole of K, two K values at a time (a pair), one
  ``vpmaddwd`` per 8 lanes (kernels/_simd.py; the operand layouts are described above
  ``_gemm_tiles``), then the epilogue along whole rows of a band of 4 rows. The linear layer
  packs w in panels of 16 rows and runs parallel over blocks of 32 rows of a. The convolution
  runs the same GEMM with the weights as the rows operand and each image's columns (im2col, one
  column of C*kh*kw values per output pixel) packed in the same panels as the linear layer's w,
  so out[b] (Cout, Ho*Wo) is the GEMM's output; with pool > 1 each band of 4 channels' sums is
  pooled, then goes through the epilogue. Images go in chunks that fit
  ``_cpu.images_per_chunk``, parallel over the images of a chunk. On an AVX2 host (``U8S8``),
  when the activations (a, x) are all >= 0 (int8 codes after a ReLU) and the weights all >= -127,
  both layers take fbgemm's u8 x s8 path instead: int8 operands in quads of K values,
  ``vpmaddubsw`` (activations unsigned) + ``vpmaddwd`` with ones + ``vpaddd`` per 8 lanes, the
  same tiles, epilogue and pooling; exact, as no pair sum reaches vpmaddubsw's saturation
  (2 * 127 * 127 < 2**15). The first layer (signed pixels) keeps the int16 pairs.
* ``*_cuda``: a shared-memory tiled int8 GEMM with int32 accumulators; the convolution is an
  im2col kernel into a workspace + the same GEMM; with pool > 1 the GEMM writes the raw int32
  sums (B, Cout, Ho, Wo) into a scratch, and a grid-stride kernel pools them and runs the
  epilogue.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numba
import numpy as np
from numba import cuda, int32, prange
from numba.extending import register_jitable

from . import _simd
from ._contract import (
    OURS,
    BenchContext,
    Case,
    CaseInfo,
    CaseSpec,
    Family,
    Implementation,
    KernelSpec,
)
from ._cpu import cpu_kernel, images_per_chunk
from ._cuda import array_module, cuda_kernel, empty, launch, stride_grid

THREADS_PER_BLOCK = 256
INT8_MIN, INT8_MAX = -128, 127

# out's dtype picks the epilogue; the kernels take it as a small int.
_EPILOGUES = {np.dtype(np.int32): 0, np.dtype(np.float32): 1, np.dtype(np.int8): 2}
RAW, DEQUANTIZE, REQUANTIZE = 0, 1, 2


# ---------------------------------------------------------------------------------------------
# Argument checks: every one runs before anything is written.


def _check_array(op: str, name: str, array: Any, dtype: Any, ndim: int | None = None) -> None:
    if not (hasattr(array, "dtype") and hasattr(array, "shape")):
        raise TypeError(f"{op}: {name} must be an array, got {type(array).__name__}")
    if array.dtype != np.dtype(dtype):
        raise TypeError(f"{op}: {name} must be {np.dtype(dtype)}, got {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {tuple(array.shape)}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous")


def _check_scale(op: str, name: str, scale: Any) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)):
        raise TypeError(f"{op}: {name} must be a Python float, got {type(scale).__name__}")
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{op}: {name} must be finite and > 0, got {scale}")
    return scale


def _check_same_device(op: str, like: Any, **arrays: Any) -> None:
    xp = array_module(like)
    for name, array in arrays.items():
        if array_module(array) is not xp:
            raise TypeError(
                f"{op}: {name} is a {type(array).__name__}, the inputs are {type(like).__name__}"
            )


def _check_elementwise(op: str, x: Any, x_name: str, x_dtype: Any, out: Any, out_dtype: Any):
    _check_array(op, x_name, x, x_dtype)
    _check_array(op, "out", out, out_dtype)
    _check_same_device(op, x, out=out)
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(
            f"{op}: out has shape {tuple(out.shape)}, {x_name} has shape {tuple(x.shape)}"
        )


def _check_epilogue(op: str, channels: int, multiplier: Any, bias: Any, relu: Any, out_scale):
    """The epilogue's arguments (checked whatever out's dtype); returns out_scale as a float."""
    for name, array in (("multiplier", multiplier), ("bias", bias)):
        _check_array(op, name, array, np.float32, 1)
        if array.shape[0] != channels:
            raise ValueError(f"{op}: {name} must have shape ({channels},), got {array.shape}")
    if not isinstance(relu, (bool, np.bool_)):
        raise TypeError(f"{op}: relu must be a bool, got {type(relu).__name__}")
    return _check_scale(op, "out_scale", out_scale)


def _check_out(op: str, out: Any, shape: tuple) -> int:
    """out's epilogue code, after checking its dtype, shape and layout."""
    if not hasattr(out, "dtype") or out.dtype not in _EPILOGUES:
        raise TypeError(
            f"{op}: out must be int32, float32 or int8, got {getattr(out, 'dtype', type(out))}"
        )
    if tuple(out.shape) != shape:
        raise ValueError(f"{op}: out must have shape {shape}, got {tuple(out.shape)}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{op}: out must be C-contiguous")
    return _EPILOGUES[out.dtype]


def _linear_arguments(a, w, multiplier, bias, relu, out_scale, out) -> tuple[int, float]:
    op = "linear_int8"
    _check_array(op, "a", a, np.int8, 2)
    _check_array(op, "w", w, np.int8, 2)
    if a.shape[1] != w.shape[1]:
        raise ValueError(
            f"{op}: a (M, K) and w (N, K) disagree on K: a {tuple(a.shape)}, w {tuple(w.shape)}"
        )
    _check_same_device(op, a, w=w, multiplier=multiplier, bias=bias, out=out)
    out_scale = _check_epilogue(op, w.shape[0], multiplier, bias, relu, out_scale)
    mode = _check_out(op, out, (a.shape[0], w.shape[0]))
    return mode, out_scale


def _conv_arguments(x, w, multiplier, bias, relu, out_scale, stride, padding, pool, out):
    op = "conv2d_int8"
    _check_array(op, "x", x, np.int8, 4)
    _check_array(op, "w", w, np.int8, 4)
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"{op}: x (B, C, H, W) and w (Cout, C, kh, kw) disagree on C: "
            f"x {tuple(x.shape)}, w {tuple(w.shape)}"
        )
    for name, value, minimum in (("stride", stride, 1), ("padding", padding, 0), ("pool", pool, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"{op}: {name} must be at least {minimum}, got {value}")
    _check_same_device(op, x, w=w, multiplier=multiplier, bias=bias, out=out)
    out_scale = _check_epilogue(op, w.shape[0], multiplier, bias, relu, out_scale)
    batch, _, height, width = x.shape
    kernel_h, kernel_w = w.shape[2:]
    out_h = (height + 2 * padding - kernel_h) // stride + 1
    out_w = (width + 2 * padding - kernel_w) // stride + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"{op}: a {kernel_h}x{kernel_w} kernel does not fit a {height}x{width} input "
            f"padded by {padding}"
        )
    if out_h // pool < 1 or out_w // pool < 1:
        raise ValueError(f"{op}: pool {pool} does not fit the convolution's {out_h}x{out_w} output")
    # pooling before the epilogue is exact only for an epilogue non-decreasing in acc
    if pool > 1 and not bool((multiplier > 0).all()):
        raise ValueError(
            f"{op}: multiplier must be > 0 with pool > 1 (the kernels pool the int32 "
            "accumulators before the epilogue, which needs the epilogue non-decreasing)"
        )
    mode = _check_out(op, out, (batch, w.shape[0], out_h // pool, out_w // pool))
    return mode, out_scale, int(stride), int(padding), int(pool), out_h, out_w


# ---------------------------------------------------------------------------------------------
# References (int64 and float64)


def reference_quantize(x: Any, scale: float, out: Any = None) -> np.ndarray:
    """clip(rint(x / scale), -128, 127) in float64, as int64."""
    q = np.rint(np.asarray(x, np.float64) / float(scale))
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int64)


def reference_dequantize(q: Any, scale: float, out: Any = None) -> np.ndarray:
    """q * float32(scale) in float64 (the product of an int8 and a float32 is exact in float64)."""
    return np.asarray(q, np.float64) * float(np.float32(scale))


def _reference_epilogue(acc, multiplier, bias, relu, out_scale, out_dtype, channel_axis):
    """acc (int64) through the epilogue out's dtype picks, in float64."""
    if np.dtype(out_dtype) == np.int32:
        return acc
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    y = acc * np.asarray(multiplier, np.float64).reshape(shape)
    y = y + np.asarray(bias, np.float64).reshape(shape)
    if relu:
        y = np.maximum(y, 0.0)
    if np.dtype(out_dtype) == np.float32:
        return y
    return np.clip(np.rint(y / float(out_scale)), INT8_MIN, INT8_MAX).astype(np.int64)


def reference_linear_int8(a, w, multiplier, bias, relu, out_scale, out) -> np.ndarray:
    """The int64 accumulator a @ w.T through the epilogue of out's dtype (int64 for int32 and
    int8 outputs, float64 for float32)."""
    acc = np.asarray(a, np.int64) @ np.asarray(w, np.int64).T
    return _reference_epilogue(acc, multiplier, bias, relu, out_scale, out.dtype, 1)


def reference_conv2d_int8(
    x, w, multiplier, bias, relu, out_scale, stride, padding, pool, out
) -> np.ndarray:
    """Direct sliding-window convolution in int64, one output position at a time, then the
    epilogue of out's dtype per output channel, then the max over each pool x pool window (after
    the epilogue: the kernels pool before it)."""
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)
    kernel_h, kernel_w = w.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h = (padded.shape[2] - kernel_h) // stride + 1
    out_w = (padded.shape[3] - kernel_w) // stride + 1
    acc = np.empty((x.shape[0], w.shape[0], out_h, out_w), np.int64)
    for row in range(out_h):
        for col in range(out_w):
            top, left = row * stride, col * stride
            window = padded[:, :, top : top + kernel_h, left : left + kernel_w]
            acc[:, :, row, col] = np.einsum("bchw,ochw->bo", window, w)
    y = _reference_epilogue(acc, multiplier, bias, relu, out_scale, out.dtype, 1)
    pooled_h, pooled_w = out_h // pool, out_w // pool
    result = np.full((x.shape[0], w.shape[0], pooled_h, pooled_w), -np.inf)
    for i in range(pool):
        for j in range(pool):
            result = np.maximum(
                result, y[:, :, i : pooled_h * pool : pool, j : pooled_w * pool : pool]
            )
    return result.astype(y.dtype)


# ---------------------------------------------------------------------------------------------
# CPU


@cpu_kernel
def _quantize_kernel_cpu(x, scale, out):
    # float32 division, as ONNX QuantizeLinear: x / scale, not x * (1 / scale)
    for i in prange(x.size):
        q = np.rint(x[i] / scale)
        out[i] = min(max(q, np.float32(INT8_MIN)), np.float32(INT8_MAX))


@cpu_kernel
def _dequantize_kernel_cpu(q, scale, out):
    for i in prange(q.size):
        out[i] = np.float32(q[i]) * scale


def quantize_cpu(x: np.ndarray, scale: float, out: np.ndarray) -> np.ndarray:
    """out (int8) = clip(rint(x / scale), -128, 127) for x float32 of any shape."""
    _check_elementwise("quantize", x, "x", np.float32, out, np.int8)
    scale = _check_scale("quantize", "scale", scale)
    if x.size:
        _quantize_kernel_cpu(x.size, x.reshape(-1), np.float32(scale), out.reshape(-1))
    return out


def dequantize_cpu(q: np.ndarray, scale: float, out: np.ndarray) -> np.ndarray:
    """out (float32) = float32(q) * float32(scale) for q int8 of any shape."""
    _check_elementwise("dequantize", q, "q", np.int8, out, np.float32)
    scale = _check_scale("dequantize", "scale", scale)
    if q.size:
        _dequantize_kernel_cpu(q.size, q.reshape(-1), np.float32(scale), out.reshape(-1))
    return out


# The int8 GEMM on the CPU: out[m, n] = epilogue(sum_k a[m, k] * b[n, k]) in tiles of TILE_M rows
# of a x TILE_N rows of b, each tile's TILE_M * TILE_N int32 sums kept in SIMD registers over the
# whole loop over K (kernels/_simd.py: vpmaddwd on AVX2). The operands are widened to int16 and
# laid out so a pair of K values (k = 2p, 2p + 1) is adjacent:
#
# * a's rows ("rows" operand): int16 rows of 2 * k2 values, k2 = ceil(K / 2), the last one 0 for
#   an odd K. The linear layer widens TILE_M rows of a at a time into a small per-task scratch; the
#   convolution widens its weights once per call.
# * b ("pairs" operand): for each pair p, the TILE_N columns' pairs, interleaved:
#   b16[p * stride + 2j + h] = b[n0 + j, 2p + h]. Both layers lay b out in panels of TILE_N
#   columns ((panels, k2, TILE_N, 2), stride 2 * TILE_N), each tile's reads contiguous: the linear
#   layer packs w once per call; the convolution's im2col writes each image's columns (pixels)
#   straight in that layout.
#
# Tails: rows past M and columns past N are computed on padding (zeros or stale scratch) and not
# stored.

TILE_M, TILE_N = 4, _simd.COLS


def _gemm_functions(_gemm_tile):
    """The GEMM drivers :func:`_gemm_tiles` and :func:`_gemm_pooled` around one tile intrinsic
    (the int16-pair tile or a u8 x s8 one, :mod:`kernels._simd`): the same loops, offsets and
    strides in the tile's elements, k2 its count of K groups."""

    @register_jitable
    def _gemm_tiles(
        a16, a_stride, m_count, b16, panel_step, b_stride, k2,
        multiplier, bias, relu, out_scale, per_row, mode, m0, out, acc,
    ):  # fmt: skip
        """out[m0 + m, n] = epilogue(sum_k a[m, k] * b[n, k]) for m < m_count and n < out.shape[1],
        a16 the rows operand (row m at m * a_stride), b16 the pairs operand (the pairs of
        columns n0 .. n0 + TILE_N - 1 at (n0 // TILE_N) * panel_step, one pair p after another
        b_stride apart), the epilogue's channel being m (``per_row``, the convolution) or n (the
        linear layer).

        One call covers many tiles, everything inline: Numba does not inline the functions it calls
        (each call also pays reference counts on its array arguments), and a per-tile or per-element
        call costs more than the tile's arithmetic. acc (int32, TILE_M rows of out.shape[1] rounded
        up to TILE_N) takes a band of TILE_M rows of tiles; the epilogue then runs along whole rows
        of the band, loops long enough for LLVM to vectorize. The int8 epilogue is
        clip(rint(y / out_scale), -128, 127) in float32: clamp, then round half to even by adding
        and subtracting 1.5 * 2**23 (exact for |y| < 2**22 in float32's round-to-nearest-even),
        inline where np.rint is a libm call."""
        n_count = out.shape[1]
        width = acc.shape[0] // TILE_M
        for m in range(0, m_count, TILE_M):
            rows = min(TILE_M, m_count - m)
            for n in range(0, n_count, TILE_N):
                _gemm_tile(
                    a16, m * a_stride, a_stride, b16, (n // TILE_N) * panel_step, b_stride, k2,
                    acc, n, width,
                )  # fmt: skip
            for i in range(rows):
                row, base = m0 + m + i, i * width
                if mode == 0:
                    for j in range(n_count):
                        out[row, j] = acc[base + j]
                elif per_row:
                    scale, shift = multiplier[m + i], bias[m + i]
                    for j in range(n_count):
                        y = np.float32(acc[base + j]) * scale + shift
                        if relu:
                            y = max(y, np.float32(0.0))
                        if mode == 2:
                            y = min(max(y / out_scale, np.float32(-256.0)), np.float32(256.0))
                            y = (y + np.float32(12582912.0)) - np.float32(12582912.0)
                            y = min(max(y, np.float32(INT8_MIN)), np.float32(INT8_MAX))
                        out[row, j] = y
                else:
                    for j in range(n_count):
                        y = np.float32(acc[base + j]) * multiplier[j] + bias[j]
                        if relu:
                            y = max(y, np.float32(0.0))
                        if mode == 2:  # as above
                            y = min(max(y / out_scale, np.float32(-256.0)), np.float32(256.0))
                            y = (y + np.float32(12582912.0)) - np.float32(12582912.0)
                            y = min(max(y, np.float32(INT8_MIN)), np.float32(INT8_MAX))
                        out[row, j] = y

    @register_jitable
    def _gemm_pooled(
        a16, a_stride, m_count, b16, panel_step, b_stride, k2,
        multiplier, bias, relu, out_scale, mode, pool, out_h, out_w, out, acc,
    ):  # fmt: skip
        """As :func:`_gemm_tiles` with the convolution's per-row epilogue, the columns being the
        out_h x out_w pixels of an image, and out (Cout, (out_h // pool) * (out_w // pool)) their
        max over pool x pool windows: each band of TILE_M rows' int32 sums (acc) is max-pooled, then
        goes through the epilogue (non-decreasing in acc, every multiplier being > 0)."""
        width = acc.shape[0] // TILE_M
        pixels = out_h * out_w
        pooled_h, pooled_w = out_h // pool, out_w // pool
        rows_max = np.empty(out_w, np.int32)
        pooled = pooled_h * pooled_w
        maxima = np.empty(pooled, np.int32)
        for m in range(0, m_count, TILE_M):
            for n in range(0, pixels, TILE_N):
                _gemm_tile(
                    a16, m * a_stride, a_stride, b16, (n // TILE_N) * panel_step, b_stride, k2,
                    acc, n, width,
                )  # fmt: skip
            for i in range(min(TILE_M, m_count - m)):
                row = m + i
                scale, shift = multiplier[row], bias[row]
                for ph in range(pooled_h):
                    # the max over the window's rows, one contiguous loop a row; then along columns
                    top = i * width + ph * pool * out_w
                    for col in range(out_w):
                        rows_max[col] = acc[np.uint64(top + col)]
                    for di in range(1, pool):
                        start = top + di * out_w
                        for col in range(out_w):
                            rows_max[col] = max(rows_max[col], acc[np.uint64(start + col)])
                    for pw in range(pooled_w):
                        best = rows_max[pw * pool]
                        for dj in range(1, pool):
                            best = max(best, rows_max[pw * pool + dj])
                        maxima[ph * pooled_w + pw] = best
                # the epilogue of _gemm_tiles along the channel's pooled plane: one loop that
                # LLVM vectorizes (inside the pooling loops above it ran 3x slower, measured)
                if mode == 0:
                    for j in range(pooled):
                        out[row, j] = maxima[j]
                else:
                    for j in range(pooled):
                        y = np.float32(maxima[j]) * scale + shift
                        if relu:
                            y = max(y, np.float32(0.0))
                        if mode == 2:
                            y = min(max(y / out_scale, np.float32(-256.0)), np.float32(256.0))
                            y = (y + np.float32(12582912.0)) - np.float32(12582912.0)
                            y = min(max(y, np.float32(INT8_MIN)), np.float32(INT8_MAX))
                        out[row, j] = y

    return _gemm_tiles, _gemm_pooled


_gemm_tiles, _gemm_pooled = _gemm_functions(_simd.gemm_int16_pairs_4x16)

# The u8 x s8 path (AVX2 only, kernels/_simd.py: vpmaddubsw + vpmaddwd with ones): int8 operands
# in quads of K values (k4 = ceil(K / 4), zero-padded), the same panels of TILE_N columns with 4
# bytes a column per quad ((panels, k4, TILE_N, 4)), rows of 4 * k4 bytes. vpmaddubsw reads one
# operand as unsigned and saturates its pair sums at 2**15 - 1, so the path is exact, and taken,
# only when the activations are >= 0 (int8 codes after a ReLU: [0, 127]) and the weights >= -127:
# |a0 * w0 + a1 * w1| <= 2 * 127 * 127 < 2**15. Otherwise (or without AVX2) the int16 pairs run.
U8S8 = _simd.HAS_AVX2
# the linear layer's activations are the rows (unsigned); the convolution's are the columns
_gemm_tiles_u8a, _ = _gemm_functions(_simd.gemm_u8s8_4x16_rows_unsigned)
_gemm_tiles_u8b, _gemm_pooled_u8b = _gemm_functions(_simd.gemm_u8s8_4x16_rows_signed)


@numba.njit(cache=True)
def _min_int8(x):
    """The minimum of a flat int8 array (127 when empty)."""
    low = np.int8(INT8_MAX)
    for value in x:
        low = min(low, value)
    return low


@numba.njit(cache=True)
def _pack_quads(b, k4):
    """b (N, K) int8 as the u8 x s8 columns operand in panels of TILE_N rows: a flat int8 array
    of (ceil(N / TILE_N), k4, TILE_N, 4), b8[((panel * k4 + q) * TILE_N + j) * 4 + h] =
    b[panel * TILE_N + j, 4q + h], 0 past N and K; and b's minimum (127 when empty)."""
    n_size, k_size = b.shape
    panels = (n_size + TILE_N - 1) // TILE_N
    packed = np.zeros(panels * k4 * TILE_N * 4, np.int8)
    low = np.int8(INT8_MAX)
    for n in range(n_size):
        panel, j = n // TILE_N, n % TILE_N
        for k in range(k_size):
            value = b[n, k]
            low = min(low, value)
            packed[((panel * k4 + k // 4) * TILE_N + j) * 4 + k % 4] = value
    return packed, low


@numba.njit(cache=True)
def _pack_pairs(b, k2):
    """b (N, K) int8 as the pairs operand in panels of TILE_N rows: a flat int16 array of
    (ceil(N / TILE_N), k2, TILE_N, 2), b16[((panel * k2 + p) * TILE_N + j) * 2 + h] =
    b[panel * TILE_N + j, 2p + h], 0 past N and K."""
    n_size, k_size = b.shape
    panels = (n_size + TILE_N - 1) // TILE_N
    packed = np.zeros(panels * k2 * TILE_N * 2, np.int16)
    for n in range(n_size):
        panel, j = n // TILE_N, n % TILE_N
        for k in range(k_size):
            packed[((panel * k2 + k // 2) * TILE_N + j) * 2 + k % 2] = b[n, k]
    return packed


def _widen_rows(a: np.ndarray, k2: int) -> np.ndarray:
    """a (M, K) int8 as the rows operand: int16 (ceil(M / TILE_M) * TILE_M, 2 * k2), zero-padded,
    flattened."""
    rows = -(-a.shape[0] // TILE_M) * TILE_M
    wide = np.zeros((rows, 2 * k2), np.int16)
    wide[: a.shape[0], : a.shape[1]] = a
    return wide.reshape(-1)


# Rows of a per parallel task of the linear layer: a multiple of the tile.
ROWS_PER_TASK = 32


@cpu_kernel
def _linear_kernel_cpu(a, packed, k2, multiplier, bias, relu, out_scale, mode, out):
    m_size, k_size = a.shape
    row_stride = 2 * k2
    panels = (out.shape[1] + TILE_N - 1) // TILE_N
    tasks = (m_size + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for task in prange(tasks):
        # the task's rows of a widened to int16; the pad past K stays 0
        rows16 = np.zeros(ROWS_PER_TASK * row_stride, np.int16)
        acc = np.empty(TILE_M * panels * TILE_N, np.int32)
        start = task * ROWS_PER_TASK
        rows = min(ROWS_PER_TASK, m_size - start)
        for i in range(rows):
            for k in range(k_size):
                rows16[i * row_stride + k] = a[start + i, k]
        _gemm_tiles(
            rows16, row_stride, rows, packed, k2 * 2 * TILE_N, 2 * TILE_N, k2,
            multiplier, bias, relu, out_scale, False, mode, start, out, acc,
        )  # fmt: skip


@cpu_kernel
def _linear_kernel_u8_cpu(a, packed, k4, multiplier, bias, relu, out_scale, mode, out):
    """:func:`_linear_kernel_cpu` on the u8 x s8 path: a's rows (>= 0) copied into int8 rows of
    4 * k4 bytes, packed from :func:`_pack_quads`."""
    m_size, k_size = a.shape
    row_stride = 4 * k4
    panels = (out.shape[1] + TILE_N - 1) // TILE_N
    tasks = (m_size + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for task in prange(tasks):
        rows8 = np.zeros(ROWS_PER_TASK * row_stride, np.int8)
        acc = np.empty(TILE_M * panels * TILE_N, np.int32)
        start = task * ROWS_PER_TASK
        rows = min(ROWS_PER_TASK, m_size - start)
        for i in range(rows):
            for k in range(k_size):
                rows8[i * row_stride + k] = a[start + i, k]
        _gemm_tiles_u8a(
            rows8, row_stride, rows, packed, k4 * 4 * TILE_N, 4 * TILE_N, k4,
            multiplier, bias, relu, out_scale, False, mode, start, out, acc,
        )  # fmt: skip


def linear_int8_cpu(
    a: np.ndarray,
    w: np.ndarray,
    multiplier: np.ndarray,
    bias: np.ndarray,
    relu: bool,
    out_scale: float,
    out: np.ndarray,
) -> np.ndarray:
    """out (M, N) = epilogue(a @ w.T) with an int32 accumulator (see the module docstring)."""
    mode, out_scale = _linear_arguments(a, w, multiplier, bias, relu, out_scale, out)
    if out.size:
        work = a.shape[0] * w.shape[0] * max(a.shape[1], 1) // 64
        if U8S8 and _min_int8(a.reshape(-1)) >= 0:
            k4 = (a.shape[1] + 3) // 4
            packed8, low = _pack_quads(w, k4)
            if low >= -INT8_MAX:
                _linear_kernel_u8_cpu(
                    work, a, packed8, k4, multiplier, bias, bool(relu), np.float32(out_scale),
                    mode, out,
                )  # fmt: skip
                return out
        k2 = (a.shape[1] + 1) // 2
        packed = _pack_pairs(w, k2)
        _linear_kernel_cpu(
            work, a, packed, k2, multiplier, bias, bool(relu), np.float32(out_scale), mode, out
        )
    return out


@register_jitable
def _im2col_pairs(x, image, cols, k_size, kernel_h, kernel_w, stride, padding, out_h, out_w, width):
    """One image's columns as the pairs operand in panels of TILE_N pixels, as :func:`_pack_pairs`
    lays out w: cols[((panel * k2 + k // 2) * TILE_N + j) * 2 + k % 2] =
    x[image, c, oh*stride - padding + i, ow*stride - padding + j] for k = (c*kh + i)*kw + j and
    every output pixel p = oh*Wo + ow = panel * TILE_N + j (0 in the padding and past K and the
    last pixel), k2 = ceil(K / 2), len(cols) = 2 * k2 * (pixels rounded up to TILE_N).

    The image is first copied into a zero-bordered flat plane per channel, followed by as many
    zeros (which the pad past K and past the last pixel read), so that value k of pixel p is
    plane[tap[k] + source[p]], tap[k] = (c*high + i)*wide + j and source[p] = (oh*wide + ow) *
    stride (tap or source the plane's size for a pad): cols is then written in order, one panel
    after another, each (panel, pair) a loop of TILE_N pixels without bounds tests. Indices are
    unsigned (Numba then skips the negative-index wraparound)."""
    channels, height = x.shape[1], x.shape[2]
    high, wide = height + 2 * padding, width + 2 * padding
    zero = channels * high * wide  # where the zeros after the image start
    plane = np.zeros(2 * zero + 1, np.int8)
    for c in range(channels):
        for row in range(height):
            target = (c * high + row + padding) * wide + padding
            for col in range(width):
                plane[np.uint64(target + col)] = x[image, c, row, col]
    k2 = (k_size + 1) // 2
    padded = cols.shape[0] // (2 * k2)
    taps = kernel_h * kernel_w
    tap = np.full(2 * k2, zero, np.int64)  # an odd K's pad reads a zero
    for k in range(k_size):
        c, t = k // taps, k % taps
        tap[k] = (c * high + t // kernel_w) * wide + t % kernel_w
    source = np.full(padded, zero, np.int64)  # past the last pixel: zeros
    for oh in range(out_h):
        for ow in range(out_w):
            source[oh * out_w + ow] = (oh * wide + ow) * stride
    for panel in range(padded // TILE_N):
        first = panel * TILE_N
        for pair in range(k2):
            tap0, tap1 = tap[2 * pair], tap[2 * pair + 1]
            target = ((panel * k2 + pair) * TILE_N) * 2
            for j in range(TILE_N):
                where = source[first + j]
                cols[np.uint64(target + 2 * j)] = plane[np.uint64(tap0 + where)]
                cols[np.uint64(target + 2 * j + 1)] = plane[np.uint64(tap1 + where)]


@cpu_kernel
def _conv_kernel_cpu(
    x, w16, k2, multiplier, bias, relu, out_scale, mode, kernel_h, kernel_w, stride, padding,
    pool, out_h, out_w, first, cols, out,
):  # fmt: skip
    """Images first .. first + len(cols) - 1, out (B, Cout, (Ho // pool) * (Wo // pool)): each
    one's receptive fields into its own slice of the workspace, then the GEMM
    out[b] (Cout, Ho*Wo) = w (Cout, K) . cols (Ho*Wo, K)ᵀ, w16 the weights as the rows operand.

    With pool > 1, :func:`_gemm_pooled`: each band of TILE_M channels' int32 sums is max-pooled
    first, then goes through the epilogue. One call per image each, as for _gemm_tiles (the
    same loops written inline in this prange body ran 2x slower, measured)."""
    out_channels = out.shape[1]
    k_size = x.shape[1] * kernel_h * kernel_w
    padded = cols.shape[1] // (2 * k2)  # pixels padded to a multiple of TILE_N
    row_stride = 2 * k2
    panel_step, b_stride = k2 * 2 * TILE_N, 2 * TILE_N  # the panels of _im2col_pairs
    for index in prange(cols.shape[0]):
        image = first + index
        column = cols[index]
        _im2col_pairs(
            x, image, column, k_size, kernel_h, kernel_w, stride, padding, out_h, out_w,
            x.shape[3],
        )  # fmt: skip
        acc = np.empty(TILE_M * padded, np.int32)
        if pool == 1:
            _gemm_tiles(
                w16, row_stride, out_channels, column, panel_step, b_stride, k2,
                multiplier, bias, relu, out_scale, True, mode, 0, out[image], acc,
            )  # fmt: skip
        else:
            _gemm_pooled(
                w16, row_stride, out_channels, column, panel_step, b_stride, k2,
                multiplier, bias, relu, out_scale, mode, pool, out_h, out_w, out[image], acc,
            )  # fmt: skip


@register_jitable
def _im2col_quads(x, image, cols, k_size, kernel_h, kernel_w, stride, padding, out_h, out_w, width):
    """:func:`_im2col_pairs` for the u8 x s8 path: int8 cols in quads, as :func:`_pack_quads`
    lays out w: cols[((panel * k4 + k // 4) * TILE_N + j) * 4 + k % 4] = value k of pixel
    p = panel * TILE_N + j (0 in the padding and past K and the last pixel), k4 = ceil(K / 4)."""
    channels, height = x.shape[1], x.shape[2]
    high, wide = height + 2 * padding, width + 2 * padding
    zero = channels * high * wide
    plane = np.zeros(2 * zero + 1, np.int8)
    for c in range(channels):
        for row in range(height):
            target = (c * high + row + padding) * wide + padding
            for col in range(width):
                plane[np.uint64(target + col)] = x[image, c, row, col]
    k4 = (k_size + 3) // 4
    padded = cols.shape[0] // (4 * k4)
    taps = kernel_h * kernel_w
    tap = np.full(4 * k4, zero, np.int64)
    for k in range(k_size):
        c, t = k // taps, k % taps
        tap[k] = (c * high + t // kernel_w) * wide + t % kernel_w
    source = np.full(padded, zero, np.int64)
    for oh in range(out_h):
        for ow in range(out_w):
            source[oh * out_w + ow] = (oh * wide + ow) * stride
    for panel in range(padded // TILE_N):
        first = panel * TILE_N
        for quad in range(k4):
            tap0, tap1 = tap[4 * quad], tap[4 * quad + 1]
            tap2, tap3 = tap[4 * quad + 2], tap[4 * quad + 3]
            target = ((panel * k4 + quad) * TILE_N) * 4
            for j in range(TILE_N):
                where = source[first + j]
                at = np.uint64(target + 4 * j)
                cols[at] = plane[np.uint64(tap0 + where)]
                cols[at + np.uint64(1)] = plane[np.uint64(tap1 + where)]
                cols[at + np.uint64(2)] = plane[np.uint64(tap2 + where)]
                cols[at + np.uint64(3)] = plane[np.uint64(tap3 + where)]


@cpu_kernel
def _conv_kernel_u8_cpu(
    x, w8, k4, multiplier, bias, relu, out_scale, mode, kernel_h, kernel_w, stride, padding,
    pool, out_h, out_w, first, cols, out,
):  # fmt: skip
    """:func:`_conv_kernel_cpu` on the u8 x s8 path: x >= 0 (the unsigned columns, im2col'd by
    :func:`_im2col_quads`), w8 the weights (>= -127) as int8 rows of 4 * k4 bytes."""
    out_channels = out.shape[1]
    k_size = x.shape[1] * kernel_h * kernel_w
    padded = cols.shape[1] // (4 * k4)
    row_stride = 4 * k4
    panel_step, b_stride = k4 * 4 * TILE_N, 4 * TILE_N
    for index in prange(cols.shape[0]):
        image = first + index
        column = cols[index]
        _im2col_quads(
            x, image, column, k_size, kernel_h, kernel_w, stride, padding, out_h, out_w,
            x.shape[3],
        )  # fmt: skip
        acc = np.empty(TILE_M * padded, np.int32)
        if pool == 1:
            _gemm_tiles_u8b(
                w8, row_stride, out_channels, column, panel_step, b_stride, k4,
                multiplier, bias, relu, out_scale, True, mode, 0, out[image], acc,
            )  # fmt: skip
        else:
            _gemm_pooled_u8b(
                w8, row_stride, out_channels, column, panel_step, b_stride, k4,
                multiplier, bias, relu, out_scale, mode, pool, out_h, out_w, out[image], acc,
            )  # fmt: skip


def conv2d_int8_cpu(
    x: np.ndarray,
    w: np.ndarray,
    multiplier: np.ndarray,
    bias: np.ndarray,
    relu: bool,
    out_scale: float,
    stride: int,
    padding: int,
    pool: int,
    out: np.ndarray,
) -> np.ndarray:
    """out (B, Cout, Ho // pool, Wo // pool) = maxpool(epilogue(x * w)) per output channel (see
    the module docstring)."""
    mode, out_scale, stride, padding, pool, out_h, out_w = _conv_arguments(
        x, w, multiplier, bias, relu, out_scale, stride, padding, pool, out
    )
    batch, out_channels = out.shape[:2]
    if out.size == 0:
        return out
    kernel_h, kernel_w = w.shape[2:]
    w2 = w.reshape(out_channels, -1)
    pixels, patch = out_h * out_w, w2.shape[1]
    padded = -(-pixels // TILE_N) * TILE_N
    relu, out_scale = bool(relu), np.float32(out_scale)
    planes = out.reshape(batch, out_channels, -1)
    if U8S8 and _min_int8(w2.reshape(-1)) >= -INT8_MAX and _min_int8(x.reshape(-1)) >= 0:
        k4 = (patch + 3) // 4
        rows = -(-out_channels // TILE_M) * TILE_M
        w8 = np.zeros((rows, 4 * k4), np.int8)
        w8[:out_channels, :patch] = w2
        chunk = min(batch, images_per_chunk(pixels * (patch + 4 * out_channels // pool**2)))
        cols8 = np.empty((chunk, padded * 4 * k4), np.int8)  # _im2col_quads writes every byte
        for first in range(0, batch, chunk):
            images = min(chunk, batch - first)
            _conv_kernel_u8_cpu(
                images * pixels * patch * out_channels // 64,
                x, w8.reshape(-1), k4, multiplier, bias, relu, out_scale, mode, kernel_h,
                kernel_w, stride, padding, pool, out_h, out_w, first, cols8[:images], planes,
            )  # fmt: skip
        return out
    k2 = (patch + 1) // 2
    w16 = _widen_rows(w2, k2)
    # As many images as keep their columns and output planes in cache between im2col and GEMM.
    chunk = min(batch, images_per_chunk(pixels * (2 * patch + 4 * out_channels // pool**2)))
    # every value, pads included, is written by _im2col_pairs
    cols = np.empty((chunk, padded * 2 * k2), np.int16)
    for first in range(0, batch, chunk):
        images = min(chunk, batch - first)
        _conv_kernel_cpu(
            images * pixels * patch * out_channels // 64,
            x, w16, k2, multiplier, bias, relu, out_scale, mode, kernel_h, kernel_w, stride,
            padding, pool, out_h, out_w, first, cols[:images], planes,
        )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# CUDA. numba-cuda (0.30) exposes no dp4a (4-way int8 dot product) intrinsic, so each thread
# accumulates int32 products of int8 values read from shared memory.

TILE = 16  # the GEMM's output tile is TILE x TILE, one thread an output; K goes TILE at a time


@cuda_kernel
def _quantize_kernel_cuda(x, scale, out):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        q = x[i] / scale  # float32, as the CPU kernel
        r = math.floor(q + np.float32(0.5))
        if r - q == np.float32(0.5) and r % 2 != 0:  # a tie goes to the even neighbour
            r -= np.float32(1.0)
        out[i] = min(max(r, np.float32(INT8_MIN)), np.float32(INT8_MAX))


@cuda_kernel
def _dequantize_kernel_cuda(q, scale, out):
    for i in range(cuda.grid(1), q.size, cuda.gridsize(1)):
        out[i] = np.float32(q[i]) * scale


@cuda_kernel
def _gemm_kernel_cuda(a, b, multiplier, bias, relu, out_scale, per_row, mode, out):
    """out[m, n] = epilogue(sum_k a[m, k] * b[n, k]): one TILE x TILE tile of out a block, both
    operands staged TILE columns of K at a time in shared memory."""
    a_tile = cuda.shared.array((TILE, TILE), numba.int8)
    b_tile = cuda.shared.array((TILE, TILE), numba.int8)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tiles_n = (out.shape[1] + TILE - 1) // TILE
    m0 = (cuda.blockIdx.x // tiles_n) * TILE
    n0 = (cuda.blockIdx.x % tiles_n) * TILE
    k_size = a.shape[1]
    acc = int32(0)
    for k0 in range(0, k_size, TILE):
        # thread (ty, tx) loads a[m0 + ty, k0 + tx] and b[n0 + ty, k0 + tx]: coalesced along K
        k = k0 + tx
        a_tile[ty, tx] = a[m0 + ty, k] if m0 + ty < a.shape[0] and k < k_size else 0
        b_tile[ty, tx] = b[n0 + ty, k] if n0 + ty < b.shape[0] and k < k_size else 0
        cuda.syncthreads()
        for kk in range(TILE):
            acc += int32(a_tile[ty, kk]) * int32(b_tile[tx, kk])
        cuda.syncthreads()
    m, n = m0 + ty, n0 + tx
    if m < out.shape[0] and n < out.shape[1]:
        if mode == 0:
            out[m, n] = acc
        else:
            channel = m if per_row else n
            y = np.float32(acc) * multiplier[channel] + bias[channel]
            if relu:
                y = max(y, np.float32(0.0))
            if mode == 2:
                q = y / out_scale
                r = math.floor(q + np.float32(0.5))
                if r - q == np.float32(0.5) and r % 2 != 0:
                    r -= np.float32(1.0)
                y = min(max(r, np.float32(INT8_MIN)), np.float32(INT8_MAX))
            out[m, n] = y


@cuda_kernel
def _im2col_kernel_cuda(x, cols, kernel_h, kernel_w, stride, padding, out_w, image):
    """cols[p, (c*kh + i)*kw + j] for one image: the CPU layout, a row of C*kh*kw values per
    output pixel p = oh*Wo + ow (0 in the padding)."""
    height, width = x.shape[2], x.shape[3]
    patch = cols.shape[1]
    taps = kernel_h * kernel_w
    for index in range(cuda.grid(1), cols.size, cuda.gridsize(1)):
        p, column = index // patch, index % patch
        c, tap = column // taps, column % taps
        ih = (p // out_w) * stride - padding + tap // kernel_w
        iw = (p % out_w) * stride - padding + tap % kernel_w
        if 0 <= ih < height and 0 <= iw < width:
            cols[p, column] = x[image, c, ih, iw]
        else:
            cols[p, column] = 0


@cuda_kernel
def _pool_epilogue_kernel_cuda(acc, multiplier, bias, relu, out_scale, pool, mode, out):
    """out[b, c, ph, pw] = epilogue(max of acc[b, c, ph*pool + i, pw*pool + j] over i, j < pool),
    acc (B, Cout, Ho, Wo) int32 the convolution's sums, out (B, Cout, Ho // pool, Wo // pool): one
    output a thread, grid-stride."""
    channels, pooled_h, pooled_w = out.shape[1], out.shape[2], out.shape[3]
    for index in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        pw = index % pooled_w
        rest = index // pooled_w
        ph = rest % pooled_h
        rest //= pooled_h
        c = rest % channels
        b = rest // channels
        best = acc[b, c, ph * pool, pw * pool]
        for i in range(pool):
            for j in range(pool):
                best = max(best, acc[b, c, ph * pool + i, pw * pool + j])
        if mode == 0:
            out[b, c, ph, pw] = best
        else:
            y = np.float32(best) * multiplier[c] + bias[c]
            if relu:
                y = max(y, np.float32(0.0))
            if mode == 2:
                q = y / out_scale
                r = math.floor(q + np.float32(0.5))
                if r - q == np.float32(0.5) and r % 2 != 0:
                    r -= np.float32(1.0)
                y = min(max(r, np.float32(INT8_MIN)), np.float32(INT8_MAX))
            out[b, c, ph, pw] = y


def quantize_cuda(x: Any, scale: float, out: Any) -> Any:
    """As :func:`quantize_cpu`, on the GPU (CuPy arrays) or in the simulator (NumPy arrays)."""
    _check_elementwise("quantize", x, "x", np.float32, out, np.int8)
    scale = _check_scale("quantize", "scale", scale)
    if x.size:
        blocks = stride_grid(x.size, THREADS_PER_BLOCK)
        launch(
            _quantize_kernel_cuda, blocks, THREADS_PER_BLOCK,
            x.reshape(-1), np.float32(scale), out.reshape(-1),
        )  # fmt: skip
    return out


def dequantize_cuda(q: Any, scale: float, out: Any) -> Any:
    """As :func:`dequantize_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    _check_elementwise("dequantize", q, "q", np.int8, out, np.float32)
    scale = _check_scale("dequantize", "scale", scale)
    if q.size:
        blocks = stride_grid(q.size, THREADS_PER_BLOCK)
        launch(
            _dequantize_kernel_cuda, blocks, THREADS_PER_BLOCK,
            q.reshape(-1), np.float32(scale), out.reshape(-1),
        )  # fmt: skip
    return out


def _launch_gemm(a, b, multiplier, bias, relu, out_scale, per_row, mode, out) -> None:
    tiles = -(-a.shape[0] // TILE) * -(-b.shape[0] // TILE)
    launch(
        _gemm_kernel_cuda, tiles, (TILE, TILE),
        a, b, multiplier, bias, bool(relu), np.float32(out_scale), per_row, mode, out,
    )  # fmt: skip


def linear_int8_cuda(
    a: Any, w: Any, multiplier: Any, bias: Any, relu: bool, out_scale: float, out: Any
) -> Any:
    """As :func:`linear_int8_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    mode, out_scale = _linear_arguments(a, w, multiplier, bias, relu, out_scale, out)
    if out.size:
        _launch_gemm(a, w, multiplier, bias, relu, out_scale, False, mode, out)
    return out


def conv2d_int8_cuda(
    x: Any,
    w: Any,
    multiplier: Any,
    bias: Any,
    relu: bool,
    out_scale: float,
    stride: int,
    padding: int,
    pool: int,
    out: Any,
) -> Any:
    """As :func:`conv2d_int8_cpu`: per image, im2col into a workspace, then the GEMM kernel with
    the weights as a, so out[b] (Cout, Ho*Wo) is the GEMM's output. With pool > 1 the GEMM writes
    the raw int32 sums into a scratch (B, Cout, Ho, Wo), and one more kernel max-pools them and
    runs the epilogue."""
    mode, out_scale, stride, padding, pool, out_h, out_w = _conv_arguments(
        x, w, multiplier, bias, relu, out_scale, stride, padding, pool, out
    )
    batch, out_channels = out.shape[:2]
    if out.size == 0:
        return out
    kernel_h, kernel_w = w.shape[2:]
    w2 = w.reshape(out_channels, -1)
    pixels = out_h * out_w
    cols = empty((pixels, w2.shape[1]), np.int8, like=x)
    sums = out if pool == 1 else empty((batch, out_channels, out_h, out_w), np.int32, like=x)
    for image in range(batch):
        launch(
            _im2col_kernel_cuda, stride_grid(cols.size, THREADS_PER_BLOCK), THREADS_PER_BLOCK,
            x, cols, kernel_h, kernel_w, stride, padding, out_w, image,
        )  # fmt: skip
        planes = sums[image].reshape(out_channels, pixels)
        _launch_gemm(
            w2, cols, multiplier, bias, relu, out_scale, True, mode if pool == 1 else RAW, planes
        )
    if pool > 1:
        launch(
            _pool_epilogue_kernel_cuda, stride_grid(out.size, THREADS_PER_BLOCK),
            THREADS_PER_BLOCK,
            sums, multiplier, bias, bool(relu), np.float32(out_scale), pool, mode, out,
        )  # fmt: skip
    return out


def cuda_kernels() -> list[KernelSpec]:
    """Every CUDA kernel of the family with int8 operands, for the PTX check."""
    flat_f, flat_q = numba.float32[::1], numba.int8[::1]
    matrix_q, vector_f = numba.int8[:, ::1], numba.float32[::1]
    epilogue = (vector_f, vector_f, numba.boolean, numba.float32, numba.boolean, numba.int64)
    ints = (numba.int64,) * 6
    pool_epilogue = (vector_f, vector_f, numba.boolean, numba.float32, numba.int64, numba.int64)
    return [
        KernelSpec(
            "quantize", _quantize_kernel_cuda, (flat_f, numba.float32, flat_q), THREADS_PER_BLOCK
        ),
        KernelSpec(
            "dequantize",
            _dequantize_kernel_cuda,
            (flat_q, numba.float32, flat_f),
            THREADS_PER_BLOCK,
        ),
        KernelSpec(
            "gemm_int8_to_int8",
            _gemm_kernel_cuda,
            (matrix_q, matrix_q, *epilogue, matrix_q),
            (TILE, TILE),
        ),
        KernelSpec(
            "gemm_int8_to_float32",
            _gemm_kernel_cuda,
            (matrix_q, matrix_q, *epilogue, numba.float32[:, ::1]),
            (TILE, TILE),
        ),
        KernelSpec(
            "pool_epilogue_int32_to_int8",
            _pool_epilogue_kernel_cuda,
            (numba.int32[:, :, :, ::1], *pool_epilogue, numba.int8[:, :, :, ::1]),
            THREADS_PER_BLOCK,
        ),
        KernelSpec(
            "pool_epilogue_int32_to_float32",
            _pool_epilogue_kernel_cuda,
            (numba.int32[:, :, :, ::1], *pool_epilogue, numba.float32[:, :, :, ::1]),
            THREADS_PER_BLOCK,
        ),
        KernelSpec(
            "im2col_int8",
            _im2col_kernel_cuda,
            (numba.int8[:, :, :, ::1], matrix_q, *ints),
            THREADS_PER_BLOCK,
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Benchmark cases: the int8 MNIST CNN's layers at batch 256, against the float32 matmul of tensors
# of the same shapes (NumPy, so OpenBLAS sgemm). Re-measure: fastnet bench --only quant


def _int8(context: BenchContext, shape: tuple, seed: int) -> Any:
    values = np.random.default_rng(seed).integers(-128, 128, shape, dtype=np.int8)
    return context.xp.asarray(values)


def _linear_case(context: BenchContext, key: str, m: int, k: int, n: int) -> Case:
    a, w = _int8(context, (m, k), 0), _int8(context, (n, k), 1)
    multiplier = context.xp.full(n, 1e-3, np.float32)
    bias = context.xp.zeros(n, np.float32)
    out = context.xp.empty((m, n), np.int8)
    a_float, w_float = a.astype(np.float32), w.astype(np.float32)
    implementations = {
        OURS: Implementation(
            lambda: context.ops.linear_int8(a, w, multiplier, bias, True, 0.05, out),
            lambda result: (),  # int8 against float32: nothing to compare
        ),
        context.plain: Implementation(lambda: a_float @ w_float.T, lambda result: ()),
    }
    info = CaseInfo(
        "linear_int8", f"{key} {m}x{k}@({n}x{k})T", 2.0 * m * n * k, m * k + n * k + m * n
    )
    return Case(info, implementations)


def _conv_case(
    context: BenchContext, key: str, batch: int, channels: int, side: int, out_channels: int
) -> Case:
    x = _int8(context, (batch, channels, side, side), 0)
    w = _int8(context, (out_channels, channels, 3, 3), 1)
    multiplier = context.xp.full(out_channels, 1e-3, np.float32)
    bias = context.xp.zeros(out_channels, np.float32)
    out = context.xp.empty((batch, out_channels, side, side), np.int8)
    # the float peer: the GEMM of a float32 convolution's weights and im2col columns
    cols = context.random((channels * 9, batch * side * side), seed=2)
    w_float = context.random((out_channels, channels * 9), seed=3)
    implementations = {
        OURS: Implementation(
            lambda: context.ops.conv2d_int8(x, w, multiplier, bias, True, 0.05, 1, 1, 1, out),
            lambda result: (),
        ),
        context.plain: Implementation(lambda: w_float @ cols, lambda result: ()),
    }
    flops = 2.0 * batch * side * side * out_channels * channels * 9
    info = CaseInfo(
        "conv2d_int8",
        f"{key} {batch}x{channels}x{side}x{side}->{out_channels} k3s1p1",
        flops,
        x.size + w.size + out.size,
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """linear_int8 and conv2d_int8 at the MNIST CNN's shapes, batch 256 (tiny with ``quick``)."""
    linears = (
        (("tiny", 5, 33, 7),)
        if quick
        else (
            ("mnist.conv2.gemm.b256", 256 * 14 * 14, 32 * 9, 64),
            ("mnist.fc1.b256", 256, 64 * 7 * 7, 128),
            ("mnist.fc2.b256", 256, 128, 10),
        )
    )
    convs = (
        (("tiny", 2, 3, 6, 4),)
        if quick
        else (("mnist.conv1.b256", 256, 1, 28, 32), ("mnist.conv2.b256", 256, 32, 14, 64))
    )
    specs = [
        CaseSpec(
            "linear_int8",
            key,
            f"{m}x{k}@({n}x{k})T",
            partial(_linear_case, key=key, m=m, k=k, n=n),
            (OURS, "numpy"),
        )
        for key, m, k, n in linears
    ]
    specs += [
        CaseSpec(
            "conv2d_int8",
            key,
            f"{batch}x{channels}x{side}x{side}->{out_channels} k3s1p1",
            partial(
                _conv_case,
                key=key,
                batch=batch,
                channels=channels,
                side=side,
                out_channels=out_channels,
            ),
            (OURS, "numpy"),
        )
        for key, batch, channels, side, out_channels in convs
    ]
    return specs


FAMILY = Family(
    name="quant",
    module=__name__,
    ops=("quantize", "dequantize", "linear_int8", "conv2d_int8"),
    references={
        "quantize": reference_quantize,
        "dequantize": reference_dequantize,
        "linear_int8": reference_linear_int8,
        "conv2d_int8": reference_conv2d_int8,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
