"""Row softmax over the last axis, forward and backward: the attention weights of a transformer.

Math, for row r of x (R rows, C columns), an additive mask and an optional causal limit:

    z[r, c]  = x[r, c] + mask[r, c]          for c < visible(r);  -inf for c >= visible(r)
    y[r, c]  = exp(z[r, c] - max_k z[r, k]) / sum_k exp(z[r, k] - max_k z[r, k])
    dx[r, c] = y[r, c] * (dy[r, c] - sum_k y[r, k] * dy[r, k])

Without causal masking visible(r) = C. With ``causal_query_len=T`` the R rows are groups of T
queries over C keys (callers reshape scores (B, H, T, S) to (B*H*T, S)): row r is query
q = r % T and sees the keys c <= q + (C - T), so visible(r) = q + C - T + 1. The diagonal is
aligned bottom-right, the convention of a KV cache where the T queries are the last T of the C
keys; for C = T it is the plain lower-triangular mask. T must divide R and T <= C.

A row whose every column is masked (all z = -inf) gives y = 0 (not NaN), and so dx = 0: such a
query attends to nothing. Subtracting the row maximum keeps exp finite for any finite input
magnitude (1e4 included); a +inf or NaN input gives NaN in its row.

Buffers:
    x, y, dy, dx:      (R, C), float32 or float64, all of one dtype
    mask:              None, (C,) (the same for every row) or (R, C); additive, -inf allowed;
                       any float dtype, cast to x's dtype
    causal_query_len:  None, or T with T | R and 1 <= T <= C

Variants, simplest first:

* ``reference_softmax_forward`` / ``reference_softmax_backward``: float64 NumPy, whole-array
  operations for the forward and each row's explicit Jacobian diag(y) - y y^T for the backward.
* ``softmax_forward_cpu`` / ``softmax_backward_cpu``: Numba, one body over the rows, serial or
  with rows in parallel as ``_cpu.parallel_pays`` decides; per row the max, then the
  exponentials in x's dtype (``_fastmath.fast_exp``: a vectorised polynomial for float32, at
  most 1.44 ulp), their sum in float64, then the scaling.
* ``softmax_forward_cuda`` / ``softmax_backward_cuda``: one block per row (in a ``row_grid``:
  past 2³¹ - 1 rows, gridDim.x's limit, the rows continue in y), 32-256 threads (one warp for
  C <= 128), each thread striding over the columns. The forward keeps an online
  normaliser per thread (running max and sum of exp relative to it), merges them in one
  shared-memory tree reduction and writes y in a second pass: x is read twice. The backward
  reduces sum(y * dy) and writes dx.

The CUDA block reductions are ``_reduce``'s, shared with the norm kernels.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np
from numba import cuda, prange

from ._checks import check_float_matrix
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
from ._cuda import array_module, block_row, cuda_kernel, empty, launch, row_grid
from ._fastmath import VECTORISING_FASTMATH, fast_exp, maxnum
from ._reduce import MAX_BLOCK_THREADS, block_reduce_pair, merge_softmax_partials, reduction_threads

# ---------------------------------------------------------------------------------------------
# float64 references
# ---------------------------------------------------------------------------------------------


def _visible_columns(n_rows: int, n_cols: int, causal_query_len: int | None) -> np.ndarray:
    """(R, C) booleans: which columns each row sees under the causal limit."""
    if causal_query_len is None:
        return np.ones((n_rows, n_cols), dtype=bool)
    query = np.arange(n_rows)[:, None] % causal_query_len
    return np.arange(n_cols)[None, :] <= query + (n_cols - causal_query_len)


def reference_softmax_forward(
    x: np.ndarray, mask: np.ndarray | None = None, causal_query_len: int | None = None
) -> np.ndarray:
    """Masked row softmax in float64, straight from the definition (fully-masked rows give 0)."""
    scores = np.asarray(x, dtype=np.float64).copy()
    if mask is not None:
        scores = scores + np.asarray(mask, dtype=np.float64)
    scores[~_visible_columns(*scores.shape, causal_query_len)] = -np.inf
    row_max = scores.max(axis=1, keepdims=True)
    live = np.isfinite(row_max[:, 0])
    y = np.zeros_like(scores)
    weights = np.exp(scores[live] - row_max[live])
    y[live] = weights / weights.sum(axis=1, keepdims=True)
    return y


def reference_softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dx = J^T dy with each row's softmax Jacobian J = diag(y) - y y^T, in float64."""
    y = np.asarray(y, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    dx = np.empty_like(y)
    for row in range(y.shape[0]):
        jacobian = np.diag(y[row]) - np.outer(y[row], y[row])
        dx[row] = jacobian.T @ dy[row]
    return dx


# ---------------------------------------------------------------------------------------------
# argument checks shared by the CPU and CUDA entry points
# ---------------------------------------------------------------------------------------------


def _check_forward(x: Any, mask: Any, causal_query_len: int | None) -> tuple[Any, Any, int]:
    """Validated, contiguous (x, mask as (1 or R, C) in x's dtype, causal T or 0 for none)."""
    xp = array_module(x)
    check_float_matrix(x, "x", "softmax")
    n_rows, n_cols = x.shape
    if mask is None:
        mask = xp.zeros((1, n_cols), dtype=x.dtype)
    else:
        if array_module(mask) is not xp:
            raise TypeError(
                "softmax: x and mask must live on the same device (both NumPy or both CuPy)"
            )
        if not np.issubdtype(mask.dtype, np.floating):
            raise TypeError(
                f"softmax: mask must be a float array (additive, -inf to hide), got {mask.dtype}"
            )
        if tuple(mask.shape) not in ((n_cols,), (n_rows, n_cols)):
            raise ValueError(
                f"softmax: mask shape {tuple(mask.shape)} must be ({n_cols},) or {tuple(x.shape)} "
                f"for x of shape {tuple(x.shape)}"
            )
        mask = xp.ascontiguousarray(
            mask.reshape(mask.shape if mask.ndim == 2 else (1, n_cols)), dtype=x.dtype
        )
    if causal_query_len is None:
        causal_query_len = 0
    else:
        if isinstance(causal_query_len, bool) or not isinstance(
            causal_query_len, (int, np.integer)
        ):
            raise TypeError(
                f"softmax: causal_query_len must be an int or None, got {causal_query_len!r}"
            )
        if not 1 <= causal_query_len <= n_cols or n_rows % causal_query_len:
            raise ValueError(
                f"softmax: causal_query_len={causal_query_len} must divide the {n_rows} rows "
                f"and be between 1 and the {n_cols} columns"
            )
    return xp.ascontiguousarray(x), mask, int(causal_query_len)


def _check_backward(y: Any, dy: Any) -> tuple[Any, Any]:
    check_float_matrix(y, "y", "softmax backward")
    check_float_matrix(dy, "dy", "softmax backward")
    if y.shape != dy.shape or y.dtype != dy.dtype:
        raise ValueError(
            f"softmax backward: y {tuple(y.shape)} {y.dtype} and dy {tuple(dy.shape)} {dy.dtype} "
            f"must have the same shape and dtype"
        )
    if array_module(y) is not array_module(dy):
        raise TypeError(
            "softmax backward: y and dy must live on the same device (both NumPy or both CuPy)"
        )
    xp = array_module(y)
    return xp.ascontiguousarray(y), xp.ascontiguousarray(dy)


# ---------------------------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------------------------


@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _softmax_forward_rows(x, mask, causal_query_len, y):
    n_rows, n_cols = x.shape
    mask_row_step = 1 if mask.shape[0] > 1 else 0  # a (1, C) mask serves every row
    for row in prange(n_rows):
        visible = n_cols
        if causal_query_len > 0:
            visible = row % causal_query_len + n_cols - causal_query_len + 1
        mask_row = row * mask_row_step
        # Each pass a plain loop over the row, so that LLVM vectorises it: the masked input,
        # its max, the exponentials (fast_exp: a polynomial for float32), their float64 sum, the
        # scaling.
        out = y[row]
        for col in range(visible):
            out[col] = x[row, col] + mask[mask_row, col]
        row_max = out.dtype.type(-np.inf)
        for col in range(visible):
            row_max = maxnum(row_max, out[col])
        if row_max == -np.inf:
            # Fully masked: zeros, where exp(-inf - -inf) would be NaN; unless a NaN, which
            # maxnum passes over, is there to propagate.
            holds_nan = False
            for col in range(visible):
                holds_nan |= out[col] != out[col]
            if not holds_nan:
                visible = 0
        for col in range(visible):
            out[col] = fast_exp(out[col] - row_max)
        total = 0.0
        for col in range(visible):
            total += out[col]
        if visible:
            scale = out.dtype.type(1.0 / total)
            for col in range(visible):
                out[col] *= scale
        for col in range(visible, n_cols):
            out[col] = 0.0


@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _softmax_backward_rows(y, dy, dx):
    n_rows, n_cols = y.shape
    for row in prange(n_rows):
        dot = 0.0
        for col in range(n_cols):
            dot += np.float64(y[row, col]) * dy[row, col]
        for col in range(n_cols):
            dx[row, col] = y[row, col] * (dy[row, col] - dot)


def softmax_forward_cpu(
    x: np.ndarray, mask: np.ndarray | None = None, causal_query_len: int | None = None
) -> np.ndarray:
    """y = softmax(x + mask) over the last axis of x (R, C), with an optional causal limit."""
    x, mask, causal_query_len = _check_forward(x, mask, causal_query_len)
    y = empty(x.shape, x.dtype, like=x)
    _softmax_forward_rows(x.size, x, mask, causal_query_len, y)
    return y


def softmax_backward_cpu(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dx = y * (dy - sum(y * dy)) per row, from the forward's output y."""
    y, dy = _check_backward(y, dy)
    dx = empty(y.shape, y.dtype, like=y)
    _softmax_backward_rows(y.size, y, dy, dx)
    return dx


# ---------------------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------------------


@cuda_kernel
def _softmax_forward_kernel(x, mask, causal_query_len, y):
    scratch = cuda.shared.array((2, MAX_BLOCK_THREADS), x.dtype)
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    row = block_row()
    if row >= x.shape[0]:  # a block past the last row (the whole block returns)
        return
    n_cols = x.shape[1]
    visible = n_cols
    if causal_query_len > 0:
        visible = row % causal_query_len + n_cols - causal_query_len + 1
    mask_row = min(row, mask.shape[0] - 1)  # a (1, C) mask serves every row
    hidden = x.dtype.type(-math.inf)
    row_max = hidden
    row_sum = zero
    for col in range(cuda.threadIdx.x, visible, cuda.blockDim.x):
        score = x[row, col] + mask[mask_row, col]
        if score > hidden:  # a masked score is no value at all, not a value of weight 1
            row_max, row_sum = merge_softmax_partials(row_max, row_sum, score, one)
    row_max, row_sum = block_reduce_pair(scratch, row_max, row_sum, True)
    for col in range(cuda.threadIdx.x, n_cols, cuda.blockDim.x):
        if col < visible and row_sum > zero:  # row_sum is 0 only for a fully-masked row
            y[row, col] = math.exp(x[row, col] + mask[mask_row, col] - row_max) / row_sum
        else:
            y[row, col] = zero


@cuda_kernel
def _softmax_backward_kernel(y, dy, dx):
    scratch = cuda.shared.array((2, MAX_BLOCK_THREADS), y.dtype)
    row = block_row()
    if row >= y.shape[0]:  # a block past the last row (the whole block returns)
        return
    dot = y.dtype.type(0)
    for col in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
        dot += y[row, col] * dy[row, col]
    dot, _ = block_reduce_pair(scratch, dot, dot, False)
    for col in range(cuda.threadIdx.x, y.shape[1], cuda.blockDim.x):
        dx[row, col] = y[row, col] * (dy[row, col] - dot)


def softmax_forward_cuda(x: Any, mask: Any = None, causal_query_len: int | None = None) -> Any:
    """softmax_forward_cpu on the GPU (CuPy arrays) or in the simulator: one block per row."""
    x, mask, causal_query_len = _check_forward(x, mask, causal_query_len)
    y = empty(x.shape, x.dtype, like=x)
    if x.shape[0]:
        launch(
            _softmax_forward_kernel,
            row_grid(x.shape[0]),
            reduction_threads(x.shape[1]),
            x,
            mask,
            causal_query_len,
            y,
        )
    return y


def softmax_backward_cuda(y: Any, dy: Any) -> Any:
    """softmax_backward_cpu on the GPU (CuPy arrays) or in the simulator: one block per row."""
    y, dy = _check_backward(y, dy)
    dx = empty(y.shape, y.dtype, like=y)
    if y.shape[0]:
        blocks = row_grid(y.shape[0])
        launch(_softmax_backward_kernel, blocks, reduction_threads(y.shape[1]), y, dy, dx)
    return dx


def cuda_kernels() -> list[KernelSpec]:
    """Every CUDA kernel of this module, specialised for float32, at the largest block used."""
    matrix = numba.float32[:, ::1]
    return [
        KernelSpec(
            "softmax_forward",
            _softmax_forward_kernel,
            (matrix, matrix, numba.int64, matrix),
            MAX_BLOCK_THREADS,
        ),
        KernelSpec(
            "softmax_backward",
            _softmax_backward_kernel,
            (matrix, matrix, matrix),
            MAX_BLOCK_THREADS,
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Benchmark cases
# ---------------------------------------------------------------------------------------------


def plain_softmax_forward(x: Any) -> Any:
    xp = array_module(x)
    exp = xp.exp(x - x.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def plain_softmax_backward(y: Any, dy: Any) -> Any:
    return y * (dy - (y * dy).sum(axis=-1, keepdims=True))


def _softmax_case(context: BenchContext, key: str, rows: int, width: int, backward: bool) -> Case:
    """The attention weights' row softmax (no mask), forward or backward."""
    x = context.random((rows, width))
    y = context.ops.softmax_forward(x)
    dy = context.random((rows, width), 1)
    if backward:
        implementations = {
            OURS: Implementation(lambda: context.ops.softmax_backward(y, dy)),
            context.plain: Implementation(lambda: plain_softmax_backward(y, dy)),
        }
    else:
        implementations = {
            OURS: Implementation(lambda: context.ops.softmax_forward(x)),
            context.plain: Implementation(lambda: plain_softmax_forward(x)),
        }
    torch = context.torch
    if torch:
        x_torch, y_torch, dy_torch = (torch.from_numpy(a) for a in (x, y, dy))
        implementations["torch"] = Implementation(
            (lambda: torch.ops.aten._softmax_backward_data(dy_torch, y_torch, -1, torch.float32))
            if backward
            else (lambda: torch.softmax(x_torch, -1))
        )
    family, flops, arrays = ("softmax_bwd", 4.0, 3) if backward else ("softmax_fwd", 4.0, 2)
    return Case(
        CaseInfo(family, f"{key} {rows}x{width}", flops * x.size, arrays * FLOAT32_BYTES * x.size),
        implementations,
    )


def bench_cases(quick: bool) -> list[CaseSpec]:
    """The attention weights of a small transformer (batch 32, 4 heads, 64 tokens), forward and
    backward (a tiny shape with ``quick``)."""
    shapes = (("tiny", 6, 10),) if quick else (("attention.b32.h4.t64", 32 * 4 * 64, 64),)
    specs = []
    for key, rows, width in shapes:
        for backward, family in ((False, "softmax_fwd"), (True, "softmax_bwd")):
            build = functools.partial(
                _softmax_case, key=key, rows=rows, width=width, backward=backward
            )
            specs.append(CaseSpec(family, key, f"{rows}x{width}", build, (OURS, "numpy", "torch")))
    return specs


FAMILY = Family(
    name="softmax",
    module=__name__,
    ops=("softmax_forward", "softmax_backward"),
    references={
        "softmax_forward": reference_softmax_forward,
        "softmax_backward": reference_softmax_backward,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
