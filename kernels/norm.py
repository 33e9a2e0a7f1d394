"""Layer normalisation and batch normalisation, forward and backward.

Layer norm normalises each row r of x (R, D) over its D values:

    mean[r]  = (1/D) sum_d x[r, d]
    var[r]   = (1/D) sum_d (x[r, d] - mean[r])^2            (biased, as PyTorch)
    rstd[r]  = 1 / sqrt(var[r] + eps)
    xhat     = (x - mean) * rstd
    y        = xhat * weight + bias                          (weight, bias: (D,))
    backward, with g = dy * weight:
    dx[r]    = rstd[r] * (g - mean_d(g) - xhat * mean_d(g * xhat))
    dweight  = sum_r dy * xhat,   dbias = sum_r dy

Batch norm normalises each channel c of x (N, C) or (N, C, *spatial) over its m = N * prod(spatial)
values, with the same formulas per channel instead of per row, and:

    training:  mean, var of the batch (biased var to normalise); then, in place,
               running_mean = (1 - momentum) * running_mean + momentum * mean
               running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)
               (unbiased batch variance for the running estimate: PyTorch's convention).
               m = 1 raises, as in PyTorch: one value has no variance.
    eval:      mean = running_mean, var = running_var (constants: the backward is affine,
               dx = weight * rstd * dy).
    backward (training): dx = weight * rstd * (dy - mean_m(dy) - xhat * mean_m(dy * xhat))

Buffers (float32 or float64, one dtype for all; vectors are contiguous 1-D):

    layer norm:  x, y, dy, dx (R, D); weight, bias, dweight, dbias (D,); mean, rstd (R,)
    batch norm:  x, y, dy, dx (N, C, ...); weight, bias, dweight, dbias, running_mean,
                 running_var, mean, rstd (C,)

``weight`` and ``bias`` may be None (no affine transform: weight 1, bias 0). The backward still
returns dweight and dbias, the gradients an affine weight and bias would get; a caller without
them ignores them. ``mean`` and ``rstd`` are returned in x's dtype and saved for the backward; in
eval mode they are running_mean and 1/sqrt(running_var + eps). ``running_mean`` and
``running_var`` may be None in training (nothing to update: PyTorch's track_running_stats=False);
eval mode needs them. ``momentum`` is a float in [0, 1] (PyTorch's cumulative average,
momentum=None, is not offered).

One pass for mean and variance: sums of the shifted values v - K and (v - K)^2, with K the first
value of the row or channel, give mean = K + S1/n and var = S2/n - (S1/n)^2. Unlike plain sums of
v and v^2 it does not cancel catastrophically when |mean| >> std (K is a sample, so |mean - K| is
of the order of std), and unlike Welford's update it is a plain sum, which vectorises on the CPU
and reduces as a tree on the GPU. The CPU accumulates in float64; the GPU in x's dtype (float64
arithmetic is slow on most GPUs), pairwise through the block's tree reduction.

Variants, simplest first:

* ``reference_*``: float64 NumPy from the definitions: two-pass mean and variance for the forward,
  each row's (channel's) explicit Jacobian of xhat for the backward.
* ``*_cpu``: Numba, one body per step over the rows (channels), serial or with rows (channels)
  in parallel as ``_cpu.parallel_pays`` decides. The layer-norm backward sums dweight and dbias
  in a fixed number of row chunks, so the result does not depend on the thread count.
* ``*_cuda``: the statistics in one block per row (layer norm) or channel (batch norm), in a
  ``row_grid`` (rows past 2³¹ - 1 continue in gridDim.y), a
  shared-memory tree reduction over its values (``_reduce``); then a grid-stride normalisation. The
  backward is one block per row or channel (a tree reduction of the two sums, then dx), plus, for
  layer norm, a column-parallel kernel for dweight and dbias (one thread a column looping over the
  rows: deterministic, no atomics).

Both norms are written once, over x viewed as (N, G, L) with statistics per group g over its
N * L values: batch norm is (N, C, prod(spatial)); layer norm is x (R, D) as (1, R, D). The affine
parameters are per group (batch norm) or per position l (layer norm).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import cuda, prange
from numba.extending import register_jitable

from ._checks import check_float_dtype, check_float_matrix
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
from ._cpu import CpuKernel, cpu_kernel
from ._cuda import array_module, block_row, cuda_kernel, empty, launch, row_grid, stride_grid
from ._fastmath import VECTORISING_FASTMATH
from ._reduce import MAX_BLOCK_THREADS, block_reduce_pair, reduction_threads
from ._relu import relu_value

# Row chunks of the CPU layer-norm backward: fixed, not the thread count, so that dweight and
# dbias are the same bits on every machine.
PARAM_GRAD_CHUNKS = 32
ELEMENTWISE_THREADS = 128


# ---------------------------------------------------------------------------------------------
# float64 references
# ---------------------------------------------------------------------------------------------


def _reference_normalise(
    values: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xhat, mean, rstd) of each row of ``values`` (groups, count), two-pass, float64."""
    mean = values.mean(axis=1)
    rstd = 1.0 / np.sqrt(((values - mean[:, None]) ** 2).mean(axis=1) + eps)
    return (values - mean[:, None]) * rstd[:, None], mean, rstd


def _reference_backward_rows(
    upstream: np.ndarray, xhat: np.ndarray, rstd: np.ndarray
) -> np.ndarray:
    """Rows of dL/dvalues = J^T upstream, with J = d xhat / d values of each row written out:
    rstd * (I - 1/n - xhat xhat^T / n)."""
    count = xhat.shape[1]
    grad = np.empty_like(upstream)
    for row in range(xhat.shape[0]):
        jacobian = rstd[row] * (
            np.eye(count) - 1.0 / count - np.outer(xhat[row], xhat[row]) / count
        )
        grad[row] = jacobian.T @ upstream[row]
    return grad


def _as_float64(*arrays: Any) -> list[Any]:
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def reference_layernorm_forward(
    x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, mean, rstd) of layer norm over the last axis of x (R, D), in float64."""
    x, weight, bias = _as_float64(x, weight, bias)
    xhat, mean, rstd = _reference_normalise(x, eps)
    y = xhat * (1.0 if weight is None else weight) + (0.0 if bias is None else bias)
    return y, mean, rstd


def reference_layernorm_backward(
    dy: np.ndarray, x: np.ndarray, weight: np.ndarray | None, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dweight, dbias) of layer norm in float64, recomputing the statistics from x."""
    dy, x, weight = _as_float64(dy, x, weight)
    xhat, _, rstd = _reference_normalise(x, eps)
    dx = _reference_backward_rows(dy * (1.0 if weight is None else weight), xhat, rstd)
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def _channels_as_rows(x: np.ndarray) -> np.ndarray:
    """(N, C, ...) -> (C, N * prod(...)): each channel's values as one row."""
    return np.moveaxis(x.reshape(x.shape[0], x.shape[1], -1), 1, 0).reshape(x.shape[1], -1)


def _rows_as_channels(rows: np.ndarray, shape: tuple) -> np.ndarray:
    """Inverse of _channels_as_rows for an x of ``shape``."""
    per_channel = rows.reshape(shape[1], shape[0], -1)
    return np.moveaxis(per_channel, 0, 1).reshape(shape)


def reference_batchnorm_forward(
    x: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    relu: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(y, mean, rstd, new running_mean, new running_var) of batch norm, in float64; with
    ``relu``, y = relu(batch norm).

    Pure: the running statistics are returned updated, not changed in place.
    """
    x, weight, bias, running_mean, running_var = _as_float64(
        x, weight, bias, running_mean, running_var
    )
    channels = x.shape[1]
    rows = _channels_as_rows(x)
    if training:
        xhat, mean, rstd = _reference_normalise(rows, eps)
        if running_mean is not None:
            count = rows.shape[1]
            unbiased_var = ((rows - mean[:, None]) ** 2).sum(axis=1) / (count - 1)
            running_mean = (1 - momentum) * running_mean + momentum * mean
            running_var = (1 - momentum) * running_var + momentum * unbiased_var
    else:
        mean, rstd = running_mean.copy(), 1.0 / np.sqrt(running_var + eps)
        xhat = (rows - mean[:, None]) * rstd[:, None]
    scale = np.ones(channels) if weight is None else weight
    shift = np.zeros(channels) if bias is None else bias
    y = _rows_as_channels(xhat * scale[:, None] + shift[:, None], x.shape)
    return np.maximum(y, 0) if relu else y, mean, rstd, running_mean, running_var


def reference_batchnorm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray | None,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    *,
    training: bool,
    eps: float = 1e-5,
    bias: np.ndarray | None = None,
    relu: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dweight, dbias) of batch norm in float64. Training recomputes the batch statistics
    from x; eval treats the running statistics as constants (and needs them). With ``relu``, dy
    is the gradient of relu(batch norm) (``bias`` then shifts the values the ReLU saw)."""
    dy, x, weight, running_mean, running_var = _as_float64(dy, x, weight, running_mean, running_var)
    scale = np.ones(x.shape[1]) if weight is None else weight
    rows, dy_rows = _channels_as_rows(x), _channels_as_rows(dy)
    if training:
        xhat, _, rstd = _reference_normalise(rows, eps)
    else:
        rstd = 1.0 / np.sqrt(running_var + eps)
        xhat = (rows - running_mean[:, None]) * rstd[:, None]
    if relu:
        shift = np.zeros(x.shape[1]) if bias is None else np.asarray(bias, np.float64)
        dy_rows = np.where(xhat * scale[:, None] + shift[:, None] > 0, dy_rows, 0.0)
    upstream = dy_rows * scale[:, None]
    if training:
        grad_rows = _reference_backward_rows(upstream, xhat, rstd)
    else:
        grad_rows = upstream * rstd[:, None]
    return _rows_as_channels(grad_rows, x.shape), (dy_rows * xhat).sum(axis=1), dy_rows.sum(axis=1)


# ---------------------------------------------------------------------------------------------
# argument checks shared by the CPU and CUDA entry points
# ---------------------------------------------------------------------------------------------


def _check_vector(op: str, name: str, vector: Any, length: int, x: Any) -> Any:
    """``vector`` as a contiguous (length,) array of x's dtype and device; None stays None."""
    if vector is None:
        return None
    if array_module(vector) is not array_module(x):
        raise TypeError(
            f"{op}: {name} and x must live on the same device (both NumPy or both CuPy)"
        )
    if vector.dtype != x.dtype:
        raise TypeError(f"{op}: {name} dtype {vector.dtype} must match x's dtype {x.dtype}")
    if tuple(vector.shape) != (length,):
        raise ValueError(
            f"{op}: {name} shape {tuple(vector.shape)} must be ({length},) "
            f"for x of shape {tuple(x.shape)}"
        )
    return array_module(x).ascontiguousarray(vector)


def _check_same_as_x(op: str, dy: Any, x: Any) -> Any:
    if array_module(dy) is not array_module(x):
        raise TypeError(f"{op}: dy and x must live on the same device (both NumPy or both CuPy)")
    if dy.shape != x.shape or dy.dtype != x.dtype:
        raise ValueError(
            f"{op}: dy {tuple(dy.shape)} {dy.dtype} must have the shape and dtype of x "
            f"{tuple(x.shape)} {x.dtype}"
        )
    return array_module(x).ascontiguousarray(dy)


def _check_scalar(op: str, name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{op}: {name}={value} must be between {low} and {high}")


def _parameter_or_constant(
    op: str, name: str, vector: Any, length: int, x: Any, constant: float
) -> Any:
    """Checked weight or bias; None becomes the identity's constant (weight 1, bias 0)."""
    vector = _check_vector(op, name, vector, length, x)
    return array_module(x).full(length, constant, dtype=x.dtype) if vector is None else vector


def _check_layernorm_input(op: str, x: Any) -> Any:
    check_float_matrix(x, "x", op)
    if x.shape[1] == 0:
        raise ValueError(f"{op}: x of shape {tuple(x.shape)} has no values to normalise over")
    return array_module(x).ascontiguousarray(x)


def _as_channels(op: str, x: Any, training: bool) -> Any:
    """x (N, C, ...) as a contiguous (N, C, L) view, checked."""
    check_float_dtype(x, "x", op)
    if x.ndim < 2:
        raise ValueError(f"{op}: x must be (N, C) or (N, C, *spatial), got shape {tuple(x.shape)}")
    if training and x.size <= x.shape[1]:
        raise ValueError(
            f"{op}: Expected more than 1 value per channel when training, "
            f"got input shape {tuple(x.shape)}"
        )
    return (
        array_module(x).ascontiguousarray(x).reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))
    )


def _check_running(
    op: str, running_mean: Any, running_var: Any, channels: int, x: Any, training: bool
) -> tuple[Any, Any]:
    """The running statistics, checked for an in-place update; None when there are none."""
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: give both running_mean and running_var, or neither")
    if running_mean is None:
        if not training:
            raise ValueError(f"{op}: eval mode (training=False) needs running_mean and running_var")
        return None, None
    checked = []
    for name, stats in (("running_mean", running_mean), ("running_var", running_var)):
        contiguous = _check_vector(op, name, stats, channels, x)
        if contiguous is not stats:
            raise ValueError(f"{op}: {name} must be a contiguous array: it is updated in place")
        checked.append(stats)
    return checked[0], checked[1]


# ---------------------------------------------------------------------------------------------
# CPU kernels, on the (N, G, L) view
# ---------------------------------------------------------------------------------------------


@register_jitable
def _store_statistics(
    group, shift, total, total_sq, count, eps, momentum, mean, rstd, running_mean, running_var
):
    """Mean and rstd of one group from the sums of (v - shift) and (v - shift)^2 over count
    values; also blends them into the running statistics when those are not empty."""
    one = mean.dtype.type(1)
    shifted_mean = total / count
    variance = total_sq / count - shifted_mean * shifted_mean
    variance = max(variance, variance - variance)  # rounding can leave a zero variance below 0
    mean[group] = shift + shifted_mean
    rstd[group] = one / math.sqrt(variance + eps)
    if running_mean.shape[0]:
        running_mean[group] = (one - momentum) * running_mean[group] + momentum * (
            shift + shifted_mean
        )
        unbiased_variance = variance * count / (count - one)
        running_var[group] = (one - momentum) * running_var[group] + momentum * unbiased_variance


@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _group_statistics_cpu(x, eps, momentum, mean, rstd, running_mean, running_var):
    batch, groups, length = x.shape
    for group in prange(groups):
        shift = np.float64(x[0, group, 0])
        total = 0.0
        total_sq = 0.0
        for sample in range(batch):
            for position in range(length):
                centred = x[sample, group, position] - shift
                total += centred
                total_sq += centred * centred
        count = np.float64(batch * length)
        _store_statistics(
            group,
            shift,
            total,
            total_sq,
            count,
            eps,
            momentum,
            mean,
            rstd,
            running_mean,
            running_var,
        )


@register_jitable
def _normalised(value, mean, factor, shift):
    """y = (x - mean)·factor + shift, factor = rstd·weight: the forward's value, and the one the
    fused ReLU's backward recomputes for its mask. One expression in one place, with factor worked
    out before it, so that both kernels round it alike (with "contract", into the same fma)."""
    return (value - mean) * factor + shift


@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _normalise_cpu(x, mean, rstd, weight, bias, affine_per_group, relu, y):
    batch, groups, length = x.shape
    zero = y.dtype.type(0)
    for group in prange(groups):
        for sample in range(batch):
            for position in range(length):
                scale = weight[group] if affine_per_group else weight[position]
                shift = bias[group] if affine_per_group else bias[position]
                value = _normalised(
                    x[sample, group, position], mean[group], rstd[group] * scale, shift
                )
                y[sample, group, position] = relu_value(value, zero) if relu else value


@register_jitable
def _passes_relu(relu, x, mean, factor, shift):
    """Whether the fused ReLU let x's value through (y > 0, y recomputed as the forward made it);
    always, without ``relu``."""
    return not relu or _normalised(x, mean, factor, shift) > 0


@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _group_backward_cpu(
    dy, x, weight, bias, mean, rstd, affine_per_group, training, relu, dx, dweight, dbias
):
    batch, groups, length = x.shape
    count = batch * length
    for group in prange(groups):
        group_mean = np.float64(mean[group])
        group_rstd = np.float64(rstd[group])
        # The fused ReLU's recomputed y (batch norm only: a per-group affine map)
        zero = x.dtype.type(0)
        factor, shift = (rstd[group] * weight[group], bias[group]) if relu else (zero, zero)
        sum_upstream = 0.0
        sum_upstream_xhat = 0.0
        for sample in range(batch):
            for position in range(length):
                upstream = dy[sample, group, position] * (
                    1.0 if affine_per_group else weight[position]
                )
                if not _passes_relu(relu, x[sample, group, position], mean[group], factor, shift):
                    upstream = 0.0
                sum_upstream += upstream
                sum_upstream_xhat += (
                    upstream * (x[sample, group, position] - group_mean) * group_rstd
                )
        if affine_per_group:
            dweight[group] = sum_upstream_xhat
            dbias[group] = sum_upstream
        outer_scale = group_rstd * (weight[group] if affine_per_group else 1.0)
        mean_upstream = sum_upstream / count if training else 0.0
        mean_upstream_xhat = sum_upstream_xhat / count if training else 0.0
        for sample in range(batch):
            for position in range(length):
                upstream = dy[sample, group, position] * (
                    1.0 if affine_per_group else weight[position]
                )
                if not _passes_relu(relu, x[sample, group, position], mean[group], factor, shift):
                    upstream = 0.0
                xhat = (x[sample, group, position] - group_mean) * group_rstd
                dx[sample, group, position] = outer_scale * (
                    upstream - mean_upstream - xhat * mean_upstream_xhat
                )


@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _column_param_grad_chunks(dy, x, mean, rstd, dweight_chunks, dbias_chunks):
    n_rows, width = x.shape
    n_chunks = dweight_chunks.shape[0]
    for chunk in prange(n_chunks):
        for row in range(chunk * n_rows // n_chunks, (chunk + 1) * n_rows // n_chunks):
            row_mean = np.float64(mean[row])
            row_rstd = np.float64(rstd[row])
            for col in range(width):
                dweight_chunks[chunk, col] += dy[row, col] * (x[row, col] - row_mean) * row_rstd
                dbias_chunks[chunk, col] += dy[row, col]


def _column_param_grads_cpu(dy, x, mean, rstd, dweight, dbias) -> None:
    """dweight = sum_r dy * xhat, dbias = sum_r dy of layer norm, by row chunks in float64."""
    chunks = min(PARAM_GRAD_CHUNKS, x.shape[0])
    dweight_chunks = np.zeros((chunks, x.shape[1]))
    dbias_chunks = np.zeros((chunks, x.shape[1]))
    _column_param_grad_chunks(x.size, dy, x, mean, rstd, dweight_chunks, dbias_chunks)
    dweight[:] = dweight_chunks.sum(axis=0)
    dbias[:] = dbias_chunks.sum(axis=0)


# ---------------------------------------------------------------------------------------------
# CUDA kernels, on the same (N, G, L) view
# ---------------------------------------------------------------------------------------------


@cuda_kernel
def _group_statistics_kernel(x, eps, momentum, mean, rstd, running_mean, running_var):
    scratch = cuda.shared.array((2, MAX_BLOCK_THREADS), x.dtype)
    batch, groups, length = x.shape
    group = block_row()
    if group >= groups:  # a block past the last group (the whole block returns)
        return
    shift = x[0, group, 0]
    total = x.dtype.type(0)
    total_sq = x.dtype.type(0)
    for index in range(cuda.threadIdx.x, batch * length, cuda.blockDim.x):
        sample = index // length
        centred = x[sample, group, index - sample * length] - shift
        total += centred
        total_sq += centred * centred
    total, total_sq = block_reduce_pair(scratch, total, total_sq, False)
    if cuda.threadIdx.x == 0:
        count = x.dtype.type(batch * length)
        _store_statistics(
            group,
            shift,
            total,
            total_sq,
            count,
            eps,
            momentum,
            mean,
            rstd,
            running_mean,
            running_var,
        )


@cuda_kernel
def _normalise_kernel(x, mean, rstd, weight, bias, affine_per_group, relu, y):
    batch, groups, length = x.shape
    zero = y.dtype.type(0)
    for index in range(cuda.grid(1), batch * groups * length, cuda.gridsize(1)):
        position = index % length
        group = index // length % groups
        sample = index // (length * groups)
        scale = weight[group] if affine_per_group else weight[position]
        shift = bias[group] if affine_per_group else bias[position]
        value = _normalised(x[sample, group, position], mean[group], rstd[group] * scale, shift)
        y[sample, group, position] = relu_value(value, zero) if relu else value


@cuda_kernel
def _group_backward_kernel(
    dy, x, weight, bias, mean, rstd, affine_per_group, training, relu, dx, dweight, dbias
):
    scratch = cuda.shared.array((2, MAX_BLOCK_THREADS), x.dtype)
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    batch, groups, length = x.shape
    group = block_row()
    if group >= groups:  # a block past the last group (the whole block returns)
        return
    group_mean = mean[group]
    group_rstd = rstd[group]
    factor, shift = (group_rstd * weight[group], bias[group]) if relu else (zero, zero)
    sum_upstream = zero
    sum_upstream_xhat = zero
    for index in range(cuda.threadIdx.x, batch * length, cuda.blockDim.x):
        sample = index // length
        position = index - sample * length
        upstream = dy[sample, group, position] * (one if affine_per_group else weight[position])
        if not _passes_relu(relu, x[sample, group, position], group_mean, factor, shift):
            upstream = zero
        sum_upstream += upstream
        sum_upstream_xhat += upstream * (x[sample, group, position] - group_mean) * group_rstd
    sum_upstream, sum_upstream_xhat = block_reduce_pair(
        scratch, sum_upstream, sum_upstream_xhat, False
    )
    if affine_per_group and cuda.threadIdx.x == 0:
        dweight[group] = sum_upstream_xhat
        dbias[group] = sum_upstream
    outer_scale = group_rstd * (weight[group] if affine_per_group else one)
    count = x.dtype.type(batch * length)
    mean_upstream = sum_upstream / count if training else zero
    mean_upstream_xhat = sum_upstream_xhat / count if training else zero
    for index in range(cuda.threadIdx.x, batch * length, cuda.blockDim.x):
        sample = index // length
        position = index - sample * length
        upstream = dy[sample, group, position] * (one if affine_per_group else weight[position])
        if not _passes_relu(relu, x[sample, group, position], group_mean, factor, shift):
            upstream = zero
        xhat = (x[sample, group, position] - group_mean) * group_rstd
        dx[sample, group, position] = outer_scale * (
            upstream - mean_upstream - xhat * mean_upstream_xhat
        )


@cuda_kernel
def _column_param_grads_kernel(dy, x, mean, rstd, dweight, dbias):
    n_rows, width = x.shape
    for col in range(cuda.grid(1), width, cuda.gridsize(1)):
        sum_dy_xhat = x.dtype.type(0)
        sum_dy = x.dtype.type(0)
        for row in range(n_rows):
            sum_dy_xhat += dy[row, col] * (x[row, col] - mean[row]) * rstd[row]
            sum_dy += dy[row, col]
        dweight[col] = sum_dy_xhat
        dbias[col] = sum_dy


def _group_threads(x3: Any) -> int:
    return reduction_threads(x3.shape[0] * x3.shape[2])


def _launch_group_statistics(x3, eps, momentum, mean, rstd, running_mean, running_var) -> None:
    if x3.shape[1]:
        launch(
            _group_statistics_kernel,
            row_grid(x3.shape[1]),
            _group_threads(x3),
            x3,
            eps,
            momentum,
            mean,
            rstd,
            running_mean,
            running_var,
        )


def _launch_normalise(x3, mean, rstd, weight, bias, affine_per_group, relu, y3) -> None:
    blocks = stride_grid(x3.size, ELEMENTWISE_THREADS)
    launch(
        _normalise_kernel,
        blocks,
        ELEMENTWISE_THREADS,
        x3,
        mean,
        rstd,
        weight,
        bias,
        affine_per_group,
        relu,
        y3,
    )


def _launch_group_backward(
    dy3, x3, weight, bias, mean, rstd, affine_per_group, training, relu, dx3, dweight, dbias
) -> None:
    if x3.shape[1]:
        launch(
            _group_backward_kernel,
            row_grid(x3.shape[1]),
            _group_threads(x3),
            dy3,
            x3,
            weight,
            bias,
            mean,
            rstd,
            affine_per_group,
            training,
            relu,
            dx3,
            dweight,
            dbias,
        )


def _launch_column_param_grads(dy, x, mean, rstd, dweight, dbias) -> None:
    blocks = stride_grid(x.shape[1], ELEMENTWISE_THREADS)
    launch(
        _column_param_grads_kernel, blocks, ELEMENTWISE_THREADS, dy, x, mean, rstd, dweight, dbias
    )


@dataclasses.dataclass(frozen=True)
class _Kernels:
    """One device's implementation of the four steps both norms are made of."""

    statistics: Callable  # (x3, eps, momentum, mean, rstd, running_mean, running_var)
    normalise: Callable  # (x3, mean, rstd, weight, bias, affine_per_group, relu, y3)
    # (dy3, x3, weight, bias, mean, rstd, affine_per_group, training, relu, dx3, dweight, dbias)
    group_backward: Callable
    column_param_grads: (
        Callable  # (dy, x, mean, rstd, dweight, dbias), layer norm's dweight and dbias
    )


def _sized_by_first(kernel: CpuKernel) -> Callable:
    """``kernel`` called with its first array's size as the work size (every step's first array
    is x or dy, of x's size)."""
    return lambda first, *rest: kernel(first.size, first, *rest)


_CPU = _Kernels(
    _sized_by_first(_group_statistics_cpu),
    _sized_by_first(_normalise_cpu),
    _sized_by_first(_group_backward_cpu),
    _column_param_grads_cpu,
)
_CUDA = _Kernels(
    _launch_group_statistics, _launch_normalise, _launch_group_backward, _launch_column_param_grads
)


# ---------------------------------------------------------------------------------------------
# The norms, written once over a device's kernels
# ---------------------------------------------------------------------------------------------


def _no_running_statistics(x: Any) -> tuple[Any, Any]:
    return empty(0, x.dtype, like=x), empty(0, x.dtype, like=x)


def _layernorm_forward(
    kernels: _Kernels, x: Any, weight: Any, bias: Any, eps: float
) -> tuple[Any, Any, Any]:
    op = "layernorm"
    x = _check_layernorm_input(op, x)
    weight = _parameter_or_constant(op, "weight", weight, x.shape[1], x, 1.0)
    bias = _parameter_or_constant(op, "bias", bias, x.shape[1], x, 0.0)
    _check_scalar(op, "eps", eps, 0.0, math.inf)
    rows = x.shape[0]
    x3 = x.reshape(1, *x.shape)
    mean, rstd, y = (
        empty(rows, x.dtype, like=x),
        empty(rows, x.dtype, like=x),
        empty(x.shape, x.dtype, like=x),
    )
    kernels.statistics(
        x3, x.dtype.type(eps), x.dtype.type(0), mean, rstd, *_no_running_statistics(x)
    )
    kernels.normalise(x3, mean, rstd, weight, bias, False, False, y.reshape(x3.shape))
    return y, mean, rstd


def _layernorm_backward(
    kernels: _Kernels, dy: Any, x: Any, weight: Any, mean: Any, rstd: Any
) -> tuple[Any, Any, Any]:
    op = "layernorm backward"
    x = _check_layernorm_input(op, x)
    dy = _check_same_as_x(op, dy, x)
    rows, width = x.shape
    weight = _parameter_or_constant(op, "weight", weight, width, x, 1.0)
    mean = _check_vector(op, "mean", mean, rows, x)
    rstd = _check_vector(op, "rstd", rstd, rows, x)
    dx, dweight, dbias = (
        empty(x.shape, x.dtype, like=x),
        empty(width, x.dtype, like=x),
        empty(width, x.dtype, like=x),
    )
    x3 = x.reshape(1, rows, width)
    kernels.group_backward(
        dy.reshape(x3.shape),
        x3,
        weight,
        weight,  # no bias: it is read only for the fused ReLU, which layer norm has not
        mean,
        rstd,
        False,
        True,
        False,
        dx.reshape(x3.shape),
        dweight,
        dbias,
    )
    kernels.column_param_grads(dy, x, mean, rstd, dweight, dbias)
    return dx, dweight, dbias


def _batchnorm_forward(
    kernels: _Kernels,
    x: Any,
    weight: Any,
    bias: Any,
    running_mean: Any,
    running_var: Any,
    training: bool,
    momentum: float,
    eps: float,
    relu: bool,
) -> tuple[Any, Any, Any]:
    op = "batchnorm"
    x3 = _as_channels(op, x, training)
    channels = x3.shape[1]
    weight = _parameter_or_constant(op, "weight", weight, channels, x, 1.0)
    bias = _parameter_or_constant(op, "bias", bias, channels, x, 0.0)
    running_mean, running_var = _check_running(op, running_mean, running_var, channels, x, training)
    _check_scalar(op, "eps", eps, 0.0, math.inf)
    _check_scalar(op, "momentum", momentum, 0.0, 1.0)
    if training:
        mean, rstd = empty(channels, x.dtype, like=x), empty(channels, x.dtype, like=x)
        running = _no_running_statistics(x) if running_mean is None else (running_mean, running_var)
        kernels.statistics(x3, x.dtype.type(eps), x.dtype.type(momentum), mean, rstd, *running)
    else:
        mean, rstd = running_mean.copy(), 1 / array_module(x).sqrt(running_var + x.dtype.type(eps))
    y3 = empty(x3.shape, x.dtype, like=x)
    kernels.normalise(x3, mean, rstd, weight, bias, True, bool(relu), y3)
    return y3.reshape(x.shape), mean, rstd


def _batchnorm_backward(
    kernels: _Kernels,
    dy: Any,
    x: Any,
    weight: Any,
    mean: Any,
    rstd: Any,
    training: bool,
    bias: Any,
    relu: bool,
) -> tuple[Any, Any, Any]:
    op = "batchnorm backward"
    x3 = _as_channels(op, x, training)
    dy3 = _check_same_as_x(op, dy, x).reshape(x3.shape)
    channels = x3.shape[1]
    weight = _parameter_or_constant(op, "weight", weight, channels, x, 1.0)
    bias = _parameter_or_constant(op, "bias", bias, channels, x, 0.0)
    mean = _check_vector(op, "mean", mean, channels, x)
    rstd = _check_vector(op, "rstd", rstd, channels, x)
    dx3 = empty(x3.shape, x.dtype, like=x)
    dweight, dbias = empty(channels, x.dtype, like=x), empty(channels, x.dtype, like=x)
    kernels.group_backward(
        dy3, x3, weight, bias, mean, rstd, True, training, bool(relu), dx3, dweight, dbias
    )
    return dx3.reshape(x.shape), dweight, dbias


# ---------------------------------------------------------------------------------------------
# Public entry points: the same signature on both devices
# ---------------------------------------------------------------------------------------------


def layernorm_forward_cpu(
    x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, mean, rstd) of layer norm over the last axis of x (R, D); weight, bias (D,) or None."""
    return _layernorm_forward(_CPU, x, weight, bias, eps)


def layernorm_backward_cpu(
    dy: np.ndarray, x: np.ndarray, weight: np.ndarray | None, mean: np.ndarray, rstd: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dweight, dbias) of layer norm, from the forward's saved mean and rstd (R,)."""
    return _layernorm_backward(_CPU, dy, x, weight, mean, rstd)


def batchnorm_forward_cpu(
    x: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    relu: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, mean, rstd) of batch norm over x (N, C, ...); updates the running statistics in place
    when training. With ``relu``, y is relu of the normalised values, in the same pass."""
    return _batchnorm_forward(
        _CPU, x, weight, bias, running_mean, running_var, training, momentum, eps, relu
    )


def batchnorm_backward_cpu(
    dy: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray | None,
    mean: np.ndarray,
    rstd: np.ndarray,
    *,
    training: bool,
    bias: np.ndarray | None = None,
    relu: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dweight, dbias) of batch norm, from the forward's mean and rstd (C,) and its mode.
    With ``relu``, dy is the gradient of the fused ReLU's output: it passes where the normalised
    value (recomputed from x, mean, rstd, weight and ``bias``) was positive."""
    return _batchnorm_backward(_CPU, dy, x, weight, mean, rstd, training, bias, relu)


def layernorm_forward_cuda(
    x: Any, weight: Any, bias: Any, eps: float = 1e-5
) -> tuple[Any, Any, Any]:
    """layernorm_forward_cpu on the GPU (CuPy arrays) or in the simulator."""
    return _layernorm_forward(_CUDA, x, weight, bias, eps)


def layernorm_backward_cuda(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any
) -> tuple[Any, Any, Any]:
    """layernorm_backward_cpu on the GPU (CuPy arrays) or in the simulator."""
    return _layernorm_backward(_CUDA, dy, x, weight, mean, rstd)


def batchnorm_forward_cuda(
    x: Any,
    weight: Any,
    bias: Any,
    running_mean: Any,
    running_var: Any,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    relu: bool = False,
) -> tuple[Any, Any, Any]:
    """batchnorm_forward_cpu on the GPU (CuPy arrays) or in the simulator."""
    return _batchnorm_forward(
        _CUDA, x, weight, bias, running_mean, running_var, training, momentum, eps, relu
    )


def batchnorm_backward_cuda(
    dy: Any,
    x: Any,
    weight: Any,
    mean: Any,
    rstd: Any,
    *,
    training: bool,
    bias: Any = None,
    relu: bool = False,
) -> tuple[Any, Any, Any]:
    """batchnorm_backward_cpu on the GPU (CuPy arrays) or in the simulator."""
    return _batchnorm_backward(_CUDA, dy, x, weight, mean, rstd, training, bias, relu)


def cuda_kernels() -> list[KernelSpec]:
    """Every CUDA kernel of this module, specialised for float32, at the largest block used."""
    grouped, vector, matrix, scalar = (
        numba.float32[:, :, ::1],
        numba.float32[::1],
        numba.float32[:, ::1],
        numba.float32,
    )
    flag = numba.boolean
    return [
        KernelSpec(
            "norm_group_statistics",
            _group_statistics_kernel,
            (grouped, scalar, scalar, vector, vector, vector, vector),
            MAX_BLOCK_THREADS,
        ),
        KernelSpec(
            "norm_normalise",
            _normalise_kernel,
            (grouped, vector, vector, vector, vector, flag, flag, grouped),
            ELEMENTWISE_THREADS,
        ),
        KernelSpec(
            "norm_group_backward",
            _group_backward_kernel,
            (
                grouped,
                grouped,
                vector,
                vector,
                vector,
                vector,
                flag,
                flag,
                flag,
                grouped,
                vector,
                vector,
            ),  # fmt: skip
            MAX_BLOCK_THREADS,
        ),
        KernelSpec(
            "norm_column_param_grads",
            _column_param_grads_kernel,
            (matrix, matrix, vector, vector, vector, vector),
            ELEMENTWISE_THREADS,
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Benchmark cases
# ---------------------------------------------------------------------------------------------


def plain_batchnorm_forward(
    x: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any, momentum: float, eps: float
) -> Any:
    """y of training-mode batch norm over (N, H, W); the running statistics updated in place."""
    xp = array_module(x)
    axes, shape = (0, 2, 3), (1, -1, 1, 1)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    count = x.size // x.shape[1]
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += (momentum * count / (count - 1)) * var
    scale = weight / xp.sqrt(var + eps)
    return x * scale.reshape(shape) + (bias - mean * scale).reshape(shape)


def plain_batchnorm_backward(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any
) -> tuple[Any, Any, Any]:
    """(dx, dweight, dbias) of training-mode batch norm from the saved mean and 1/std per
    channel."""
    axes, shape = (0, 2, 3), (1, -1, 1, 1)
    count = x.size // x.shape[1]
    xhat = (x - mean.reshape(shape)) * rstd.reshape(shape)
    dbias, dweight = dy.sum(axis=axes), (dy * xhat).sum(axis=axes)
    dx = (weight * rstd / count).reshape(shape) * (
        count * dy - dbias.reshape(shape) - xhat * dweight.reshape(shape)
    )
    return dx, dweight, dbias


def plain_layernorm_forward(x: Any, weight: Any, bias: Any, eps: float) -> Any:
    """y of layer norm over the last axis."""
    xp = array_module(x)
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) / xp.sqrt(x.var(axis=-1, keepdims=True) + eps) * weight + bias


def plain_layernorm_backward(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any
) -> tuple[Any, Any, Any]:
    """(dx, dweight, dbias) of layer norm from the saved mean and 1/std per row."""
    xhat = (x - mean[:, None]) * rstd[:, None]
    scaled = dy * weight
    dx = rstd[:, None] * (
        scaled
        - scaled.mean(axis=-1, keepdims=True)
        - xhat * (scaled * xhat).mean(axis=-1, keepdims=True)
    )
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def _batchnorm_forward_case(context: BenchContext, key: str, x_shape: tuple) -> Case:
    """Training-mode batch norm, running statistics included, each implementation with its own."""
    momentum, eps, channels, xp = 0.1, 1e-5, x_shape[1], context.xp
    x, weight, bias = (
        context.random(x_shape),
        context.random((channels,), 1) + 1,
        context.random((channels,), 2),
    )

    def running() -> tuple:
        return xp.zeros(channels, np.float32), xp.ones(channels, np.float32)

    ours_running, plain_running = running(), running()

    def ours() -> tuple:
        y, _, _ = context.ops.batchnorm_forward(
            x, weight, bias, *ours_running, training=True, momentum=momentum, eps=eps
        )
        return (y, *ours_running)

    implementations = {
        OURS: Implementation(ours),
        context.plain: Implementation(
            lambda: (
                plain_batchnorm_forward(x, weight, bias, *plain_running, momentum, eps),
                *plain_running,
            )
        ),
    }
    torch = context.torch
    if torch:
        tensors = [torch.from_numpy(array) for array in (x, weight, bias, *running())]
        implementations["torch"] = Implementation(
            lambda: (
                torch.nn.functional.batch_norm(
                    tensors[0],
                    tensors[3],
                    tensors[4],
                    tensors[1],
                    tensors[2],
                    training=True,
                    momentum=momentum,
                    eps=eps,
                ),
                tensors[3],
                tensors[4],
            )
        )
    # per element: sum, sum of squares, then subtract, scale, shift; reads x, writes y
    info = CaseInfo(
        "batchnorm_fwd",
        f"{key} {'x'.join(map(str, x_shape))}",
        5.0 * x.size,
        2.0 * FLOAT32_BYTES * x.size,
    )
    return Case(info, implementations)


def _batchnorm_backward_case(context: BenchContext, key: str, x_shape: tuple) -> Case:
    channels = x_shape[1]
    x, dy = context.random(x_shape), context.random(x_shape, 1)
    weight = context.random((channels,), 2) + 1
    _, mean, rstd = context.ops.batchnorm_forward(x, weight, None, None, None, training=True)
    implementations = {
        OURS: Implementation(
            lambda: context.ops.batchnorm_backward(dy, x, weight, mean, rstd, training=True)
        ),
        context.plain: Implementation(lambda: plain_batchnorm_backward(dy, x, weight, mean, rstd)),
    }
    torch = context.torch
    if torch:
        dy_torch, x_torch, weight_torch, mean_torch, rstd_torch = (
            torch.from_numpy(a) for a in (dy, x, weight, mean, rstd)
        )
        implementations["torch"] = Implementation(
            lambda: torch.ops.aten.native_batch_norm_backward(
                dy_torch,
                x_torch,
                weight_torch,
                None,
                None,
                mean_torch,
                rstd_torch,
                True,
                1e-5,
                [True, True, True],
            )
        )
    # per element: two sums, then xhat and the three-term dx; reads dy and x, writes dx
    info = CaseInfo(
        "batchnorm_bwd",
        f"{key} {'x'.join(map(str, x_shape))}",
        9.0 * x.size,
        3.0 * FLOAT32_BYTES * x.size,
    )
    return Case(info, implementations)


def _layernorm_forward_case(context: BenchContext, key: str, rows: int, width: int) -> Case:
    eps = 1e-5
    x, weight, bias = (
        context.random((rows, width)),
        context.random((width,), 1) + 1,
        context.random((width,), 2),
    )
    implementations = {
        OURS: Implementation(
            lambda: context.ops.layernorm_forward(x, weight, bias, eps), lambda result: result[:1]
        ),
        context.plain: Implementation(lambda: plain_layernorm_forward(x, weight, bias, eps)),
    }
    torch = context.torch
    if torch:
        x_torch, weight_torch, bias_torch = (torch.from_numpy(a) for a in (x, weight, bias))
        implementations["torch"] = Implementation(
            lambda: torch.nn.functional.layer_norm(x_torch, (width,), weight_torch, bias_torch, eps)
        )
    info = CaseInfo(
        "layernorm_fwd", f"{key} {rows}x{width}", 5.0 * x.size, 2.0 * FLOAT32_BYTES * x.size
    )
    return Case(info, implementations)


def _layernorm_backward_case(context: BenchContext, key: str, rows: int, width: int) -> Case:
    x, dy = context.random((rows, width)), context.random((rows, width), 1)
    weight = context.random((width,), 2) + 1
    _, mean, rstd = context.ops.layernorm_forward(x, weight, None)
    implementations = {
        OURS: Implementation(lambda: context.ops.layernorm_backward(dy, x, weight, mean, rstd)),
        context.plain: Implementation(lambda: plain_layernorm_backward(dy, x, weight, mean, rstd)),
    }
    torch = context.torch
    if torch:
        dy_torch, x_torch, weight_torch = (torch.from_numpy(a) for a in (dy, x, weight))
        mean_torch, rstd_torch = (torch.from_numpy(a.reshape(rows, 1)) for a in (mean, rstd))
        bias_torch = torch.zeros(width)  # unused by the gradients, but the op wants one
        implementations["torch"] = Implementation(
            lambda: torch.ops.aten.native_layer_norm_backward(
                dy_torch,
                x_torch,
                [width],
                mean_torch,
                rstd_torch,
                weight_torch,
                bias_torch,
                [True, True, True],
            )
        )
    info = CaseInfo(
        "layernorm_bwd", f"{key} {rows}x{width}", 9.0 * x.size, 3.0 * FLOAT32_BYTES * x.size
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """Batch norm at ResNet-20's first stage and layer norm at a small transformer's width, each
    forward and backward (tiny shapes with ``quick``)."""
    peers = (OURS, "numpy", "torch")
    specs = []
    for key, x_shape in (
        (("tiny", (2, 3, 5, 5)),) if quick else (("resnet20.stage1.b128", (128, 16, 32, 32)),)
    ):
        shape = "x".join(map(str, x_shape))
        specs.append(
            CaseSpec(
                "batchnorm_fwd",
                key,
                shape,
                functools.partial(_batchnorm_forward_case, key=key, x_shape=x_shape),
                peers,
            )
        )
        specs.append(
            CaseSpec(
                "batchnorm_bwd",
                key,
                shape,
                functools.partial(_batchnorm_backward_case, key=key, x_shape=x_shape),
                peers,
            )
        )
    for key, rows, width in (
        (("tiny", 6, 10),) if quick else (("transformer.b32.t64", 32 * 64, 128),)
    ):
        specs.append(
            CaseSpec(
                "layernorm_fwd",
                key,
                f"{rows}x{width}",
                functools.partial(_layernorm_forward_case, key=key, rows=rows, width=width),
                peers,
            )
        )
        specs.append(
            CaseSpec(
                "layernorm_bwd",
                key,
                f"{rows}x{width}",
                functools.partial(_layernorm_backward_case, key=key, rows=rows, width=width),
                peers,
            )
        )
    return specs


FAMILY = Family(
    name="norm",
    module=__name__,
    ops=("batchnorm_forward", "batchnorm_backward", "layernorm_forward", "layernorm_backward"),
    references={
        "batchnorm_forward": reference_batchnorm_forward,
        "batchnorm_backward": reference_batchnorm_backward,
        "layernorm_forward": reference_layernorm_forward,
        "layernorm_backward": reference_layernorm_backward,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
