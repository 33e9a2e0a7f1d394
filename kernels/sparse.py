"""Sparse (CSR) matrix products: the forward of a pruned fully connected layer.

Math: for x (M, K) and a weight W (N, K) held in compressed sparse row (CSR) form, and a bias b::

    out[m, n] = sum_{j = indptr[n]}^{indptr[n+1]-1} values[j] * x[m, indices[j]]  + b[n]

that is out = x·Wᵀ + b, where row n of W has the nonzeros values[indptr[n]:indptr[n+1]] in the
columns indices[indptr[n]:indptr[n+1]]. The gradient with respect to x, dx = dy·W, is the same op
on W's transpose (:func:`csr_transpose`, the CSC form of W) with no bias: dx = dy·(Wᵀ)ᵀ.

Buffers: ``x`` (M, K) C-contiguous float32 or float64; ``indptr`` (N + 1,) int32 or int64, with
indptr[0] = 0, non-decreasing, indptr[N] = nnz; ``indices`` (nnz,) int32, each in [0, K) (sorted
within a row by :func:`csr_from_dense`; the kernels do not need it, and a repeated column adds);
``values`` (nnz,) of x's dtype; ``bias`` (N,) of x's dtype, or of size 0 for no bias; ``out``
(M, N) C-contiguous of x's dtype, written whole. Every call checks the shapes and dtypes, and with
``check_structure`` (the default) also indptr and indices' contents: on a GPU that reads them back
(a sync), so a caller that built the arrays itself (``SparseLinear``) checks once and passes False.

Variants, simplest first:

* ``reference_csr_matmul``: W densified in float64 and a NumPy product (a different algorithm).
* ``csr_matmul_cpu``: two Numba kernels. For a few rows (M <= ``ROW_KERNEL_MAX_ROWS``, e.g.
  batch 1) a dot product per (m, n): a gather of x[m, indices[j]] from a row of x that stays in
  L1, parallel over W's rows. For a batch, column by column: x is transposed once to xt (K, M),
  and column n of out, held contiguous in a (N, M) buffer, takes v·xt[k, :] for each nonzero
  (n, k, v): a contiguous, vectorised axpy over the batch. Parallel over W's rows; out is the
  buffer transposed. (Measured against it, at batch 256 and 90% sparsity on one core: register-
  blocked panels of 16 rows, 2-4x slower, LLVM keeping the accumulators in memory; the same loop
  chunked over M, 4x slower.)
* ``csr_matmul_cuda``: one thread per output (m, n), n fastest, in a grid-stride loop: a warp's
  threads share row m of x (cached), each streams its own row of W.

``csr_from_dense`` and ``csr_transpose`` (NumPy, not kernel ops) build the arrays.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numba
import numpy as np
from numba import cuda, prange

from ._checks import FLOAT_DTYPES
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
from ._fastmath import VECTORISING_FASTMATH, zero_of

OP = "csr_matmul"
ROW_KERNEL_MAX_ROWS = 2  # up to this many rows of x, the dot-product kernel (measured)
THREADS_PER_BLOCK = 128
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))

__all__ = [
    "csr_from_dense",
    "csr_transpose",
    "reference_csr_matmul",
    "csr_matmul_cpu",
    "csr_matmul_cuda",
]


# --------------------------------------------------------------------------- building CSR
def csr_from_dense(w: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr int64 (N+1,), indices int32 (nnz,), values (nnz,)) of the nonzeros of the 2-D
    ``w`` (N, K), row by row, columns ascending within a row."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"csr_from_dense expects a 2-D matrix, got shape {w.shape}")
    rows, columns = np.nonzero(w)  # row-major order: sorted by row, then column
    indptr = np.zeros(w.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=indptr[1:])
    return indptr, columns.astype(np.int32), np.ascontiguousarray(w[rows, columns])


def csr_transpose(
    indptr: Any, indices: Any, values: Any, columns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR arrays of Wᵀ (``columns``, N) from those of W (N, ``columns``) (NumPy, host)."""
    indptr, indices, values = (np.asarray(a) for a in (indptr, indices, values))
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    order = np.lexsort((rows, indices))  # by column of W, then row: sorted rows of Wᵀ
    t_indptr = np.zeros(columns + 1, np.int64)
    np.cumsum(np.bincount(indices, minlength=columns), out=t_indptr[1:])
    return t_indptr, rows[order].astype(np.int32), np.ascontiguousarray(values[order])


# --------------------------------------------------------------------------- checks
def _describe(array: Any) -> str:
    return f"{array.dtype} {type(array).__name__} of shape {tuple(array.shape)}"


def _check(x, indptr, indices, values, bias, out, check_structure: bool) -> bool:
    """Validate every argument (module docstring); returns whether there is a bias."""
    arrays = {"x": x, "indptr": indptr, "indices": indices, "values": values, "bias": bias}
    arrays["out"] = out
    for name, array in arrays.items():
        if not (hasattr(array, "shape") and hasattr(array, "dtype")):
            raise TypeError(f"{OP}: {name} must be an array, got {type(array).__name__}")
    xp = array_module(x)
    for name, array in arrays.items():
        if array_module(array) is not xp:
            raise TypeError(
                f"{OP}: {name} is a {type(array).__name__} but x is a {type(x).__name__}"
            )
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{OP}: x must be float32 or float64, got {x.dtype}")
    for name in ("values", "bias", "out"):
        if arrays[name].dtype != x.dtype:
            raise TypeError(f"{OP}: {name} must be {x.dtype} like x, got {arrays[name].dtype}")
    if indptr.dtype not in INDEX_DTYPES:
        raise TypeError(f"{OP}: indptr must be int32 or int64, got {indptr.dtype}")
    if indices.dtype != np.int32:
        raise TypeError(f"{OP}: indices must be int32, got {indices.dtype}")
    if x.ndim != 2 or not x.flags.c_contiguous:
        raise ValueError(f"{OP}: x must be a C-contiguous (M, K) matrix, got {_describe(x)}")
    if out.ndim != 2 or not out.flags.c_contiguous or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"{OP}: out must be a C-contiguous ({x.shape[0]}, N) matrix for x of shape "
            f"{tuple(x.shape)}, got {_describe(out)}"
        )
    rows = out.shape[1]
    for name, array in (("indptr", indptr), ("indices", indices), ("values", values)):
        if array.ndim != 1 or not array.flags.c_contiguous:
            raise ValueError(f"{OP}: {name} must be a contiguous 1-D array, got {_describe(array)}")
    if indptr.shape[0] != rows + 1:
        raise ValueError(
            f"{OP}: indptr must have N + 1 = {rows + 1} entries for out of shape "
            f"{tuple(out.shape)}, got {indptr.shape[0]}"
        )
    if indices.shape != values.shape:
        raise ValueError(
            f"{OP}: indices of shape {tuple(indices.shape)} and values of shape "
            f"{tuple(values.shape)} must match"
        )
    if bias.shape not in ((rows,), (0,)):
        raise ValueError(
            f"{OP}: bias must have shape ({rows},) (or (0,): no bias), got {tuple(bias.shape)}"
        )
    if check_structure:
        _check_structure(xp, indptr, indices, x.shape[1])
    return bias.shape[0] == rows and rows > 0


def _check_structure(xp, indptr, indices, columns: int) -> None:
    nnz = indices.shape[0]
    # one read-back of four numbers (a single sync on a GPU)
    summary = xp.stack(
        [
            indptr[0].astype(xp.int64),
            indptr[-1].astype(xp.int64),
            xp.any(indptr[1:] < indptr[:-1]).astype(xp.int64),
            (xp.any((indices < 0) | (indices >= columns)) if nnz else xp.zeros((), bool)).astype(
                xp.int64
            ),
        ]
    )
    first, last, decreasing, outside = (
        int(v) for v in (summary.get() if xp is not np else summary)
    )
    if first != 0 or last != nnz:
        raise ValueError(
            f"{OP}: indptr must start at 0 and end at nnz = {nnz} (the length of indices), "
            f"got {first} and {last}"
        )
    if decreasing:
        raise ValueError(f"{OP}: indptr must be non-decreasing")
    if outside:
        raise ValueError(f"{OP}: indices must lie in [0, K) = [0, {columns}) for x's K")


# --------------------------------------------------------------------------- reference
def reference_csr_matmul(x, indptr, indices, values, bias, out=None, **_: Any) -> np.ndarray:
    """x·Wᵀ + b in float64, with W densified (repeated columns add)."""
    x, indptr, indices, values, bias = (np.asarray(a) for a in (x, indptr, indices, values, bias))
    rows = indptr.size - 1
    dense = np.zeros((rows, x.shape[1]))
    row_of = np.repeat(np.arange(rows), np.diff(indptr))
    np.add.at(dense, (row_of, indices), values.astype(np.float64))
    y = x.astype(np.float64) @ dense.T
    return y + bias.astype(np.float64) if bias.size else y


# --------------------------------------------------------------------------- CPU
@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _csr_rows(x, indptr, indices, values, bias, has_bias, out):
    """A dot product per output, parallel over W's rows (few rows of x)."""
    for n in prange(out.shape[1]):
        start, end = indptr[n], indptr[n + 1]
        for m in range(x.shape[0]):
            total = zero_of(out)
            for j in range(start, end):
                total += values[j] * x[m, indices[j]]
            out[m, n] = total + bias[n] if has_bias else total


@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _csr_columns(x, indptr, indices, values, bias, has_bias, out):
    """Column by column of out over a transposed x (module docstring), parallel over W's rows."""
    xt = np.ascontiguousarray(x.T)
    m_total = x.shape[0]
    columns = np.empty((out.shape[1], m_total), x.dtype)
    for n in prange(out.shape[1]):
        column = columns[n]
        start = bias[n] if has_bias else zero_of(out)
        for m in range(m_total):
            column[m] = start
        for j in range(indptr[n], indptr[n + 1]):
            v = values[j]
            k = indices[j]
            for m in range(m_total):
                column[m] += v * xt[k, m]
    out[:] = columns.T


def csr_matmul_cpu(x, indptr, indices, values, bias, out, check_structure: bool = True) -> Any:
    """``out`` = x·Wᵀ + b for W in CSR (module docstring)."""
    has_bias = _check(x, indptr, indices, values, bias, out, check_structure)
    if out.size == 0:
        return out
    if x.shape[1] == 0:
        out[...] = bias if has_bias else 0
        return out
    kernel = _csr_rows if x.shape[0] <= ROW_KERNEL_MAX_ROWS else _csr_columns
    kernel(indices.shape[0] * x.shape[0], x, indptr, indices, values, bias, has_bias, out)
    return out


# --------------------------------------------------------------------------- CUDA
@cuda_kernel
def _csr_matmul_kernel(x, indptr, indices, values, bias, has_bias, out):
    n_total = out.shape[1]
    for index in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        m = index // n_total
        n = index - m * n_total
        total = x.dtype.type(0)
        for j in range(indptr[n], indptr[n + 1]):
            total += values[j] * x[m, indices[j]]
        if has_bias:
            total += bias[n]
        out[m, n] = total


def csr_matmul_cuda(x, indptr, indices, values, bias, out, check_structure: bool = True) -> Any:
    """:func:`csr_matmul_cpu` on the GPU (CuPy arrays) or in the simulator."""
    has_bias = _check(x, indptr, indices, values, bias, out, check_structure)
    if out.size:
        if bias.shape[0] == 0:  # a kernel argument must be an array of the right type anyway
            bias = empty(1, x.dtype, like=x)
        launch(
            _csr_matmul_kernel,
            stride_grid(out.size, THREADS_PER_BLOCK),
            THREADS_PER_BLOCK,
            x,
            indptr,
            indices,
            values,
            bias,
            bool(has_bias),
            out,
        )
    return out


def cuda_kernels() -> list[KernelSpec]:
    """The kernel for float32 with int32 and int64 row pointers, for the PTX check."""
    flat, matrix = numba.float32[::1], numba.float32[:, ::1]
    return [
        KernelSpec(
            f"csr_matmul_{name}",
            _csr_matmul_kernel,
            (matrix, pointer, numba.int32[::1], flat, flat, numba.boolean, matrix),
            THREADS_PER_BLOCK,
        )
        for name, pointer in (("i32", numba.int32[::1]), ("i64", numba.int64[::1]))
    ]


# --------------------------------------------------------------------------- benchmark cases
def _random_csr(rows: int, columns: int, density: float, seed: int):
    rng = np.random.default_rng(seed)
    w = rng.uniform(-1.0, 1.0, (rows, columns)).astype(np.float32)
    w[rng.random((rows, columns)) >= density] = 0.0
    return w, csr_from_dense(w)


def _csr_case(context: BenchContext, key: str, m: int, n: int, k: int, density: float) -> Case:
    """out (M, N) = x (M, K)·Wᵀ + b with W at ``density``, against the dense product."""
    xp = context.xp
    x = context.random((m, k))
    w_host, arrays = _random_csr(n, k, density, seed=1)
    indptr, indices, values = (xp.asarray(a) for a in arrays)
    bias = context.random((n,), seed=2)
    w = xp.asarray(w_host)
    out = xp.empty((m, n), np.float32)
    implementations = {
        OURS: Implementation(
            lambda: context.ops.csr_matmul(x, indptr, indices, values, bias, out, False)
        ),
        context.plain: Implementation(lambda: x @ w.T + bias),
    }
    nnz = int(arrays[2].size)
    info = CaseInfo(
        "csr_matmul",
        f"{key} {m}x{k}@({n}x{k} {density:.0%} dense)T",
        2.0 * m * nnz,
        FLOAT32_BYTES * (m * k + 2 * nnz + m * n) + 8 * (n + 1),
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """The MNIST CNN's fc1 (3136 -> 128) and the MLP's 784 -> 512 at 90% sparsity, batch 256 and
    1 (tiny with ``quick``)."""
    shapes = (
        (("tiny", 5, 7, 9),)
        if quick
        else (
            ("mnist_cnn.fc1.b256", 256, 128, 3136),
            ("mnist_cnn.fc1.b1", 1, 128, 3136),
            ("mlp.fc1.b256", 256, 512, 784),
            ("mlp.fc1.b1", 1, 512, 784),
        )
    )
    return [
        CaseSpec(
            "csr_matmul",
            key,
            f"{m}x{k}@({n}x{k})T",
            partial(_csr_case, key=key, m=m, n=n, k=k, density=0.1),
            (OURS, "numpy"),
        )
        for key, m, n, k in shapes
    ]


FAMILY = Family(
    name="sparse",
    module=__name__,
    ops=("csr_matmul",),
    references={"csr_matmul": reference_csr_matmul},
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
