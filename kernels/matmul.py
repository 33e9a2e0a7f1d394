"""Matrix multiplication: ``c = op(a) @ op(b)``, plain or batched, with optional transposes.

Math: ``c[..., i, j] = sum_k op(a)[..., i, k] * op(b)[..., k, j]`` where ``op(x)`` is ``x`` or,
when its flag (``trans_a`` / ``trans_b``) is set, ``x`` with its last two axes swapped.

Buffers (M, N, K are the sizes of ``c`` and of the summed axis; B the batch size):

* ``a``: ``(M, K)``, or ``(K, M)`` with ``trans_a``; ``(B, M, K)`` / ``(B, K, M)`` when batched;
* ``b``: ``(K, N)``, or ``(N, K)`` with ``trans_b``; ``(B, ...)`` when batched;
* ``c``: ``(M, N)``, or ``(B, M, N)``; same dtype as ``a`` and ``b`` (float32 or float64); a new
  array, or ``out`` when one is given: C-contiguous, or for a batch each matrix C-contiguous
  with any stride between matrices (conv2d passes a slice of its output, and Winograd tile
  buffers whose matrices are spaced apart; see kernels/winograd.py).

Variants, simplest first:

1. :func:`reference_matmul`: the specification, float64 ``np.einsum`` with the transposes written
   into its subscripts (NumPy's own summation loop, not BLAS).
2. :func:`matmul_cpu`: NumPy's ``matmul`` on transposed *views*, which hands the strides to BLAS
   without copying. A hand-written CPU GEMM cannot beat a tuned BLAS (packing, vector
   micro-kernels, cache blocking per CPU model), so the CPU path does not pretend to.
3. :func:`matmul_cuda_naive`: one CUDA thread per output element, reading ``K`` values of each
   operand straight from global memory. Obviously right; the baseline the tiled kernel is tested
   and benchmarked against. The transposes are kernel arguments: a branch on them is uniform
   across the grid and costs next to nothing.
4. :func:`matmul_cuda`: shared-memory tiling plus register blocking. A block of 16×16 threads
   computes a 64×64 tile of ``c``; each K-step of 16 stages a 64×16 slab of ``op(a)`` and of
   ``op(b)`` in shared memory (zero-padded past the edges, so any M, N, K works), with two
   ``syncthreads()``: one before the slabs are read, one before they are overwritten. Each thread
   then accumulates a 4×4 block of outputs in registers, rows ``ty + 16 i`` and columns
   ``tx + 16 j`` (strided, so a warp reads 16 consecutive shared-memory words and writes
   16 consecutive outputs). The batch is ``blockIdx.z``.

   The transposes are compile-time constants here: one kernel per ``(trans_a, trans_b)``, built by
   one factory. They decide which axis consecutive threads walk while loading a slab (always the
   operand's contiguous axis, so global loads coalesce), and NVVM folds the index arithmetic for
   each form; a runtime flag would keep both mappings and their division/modulo in the loop.

cuBLAS (through CuPy) is the yardstick :func:`matmul_cuda` is benchmarked against; it is not used.
:func:`bench_cases` times the A·Bᵀ products of the shipped models against it and PyTorch.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np
from numba import cuda

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
from ._cuda import array_module, check_out, cuda_kernel, device_function, empty, launch

# Tiled kernel geometry. TILE is both the M and the N extent of a block's output tile, so one
# loader serves both operands.
TILE = 64
TILE_K = 16
THREADS_X = 16
THREADS_Y = 16
THREADS = THREADS_X * THREADS_Y
PER_THREAD = TILE // THREADS_X  # outputs per thread along each of M and N (4 × 4 in all)
LOADS_PER_THREAD = TILE * TILE_K // THREADS
# A warp storing a k-major slab writes 16 k-values × 2 rows; a row stride of TILE + 2 (≡ 2 mod 32
# banks) sends those 32 stores to 32 distinct shared-memory banks.
TILE_ROW_STRIDE = TILE + 2

NAIVE_THREADS = (16, 16)  # one output per thread: the block covers a 16 × 16 tile
MAX_GRID_Z = 65535


def _op_shape(shape: tuple, transposed: bool) -> str:
    return f"{tuple(shape)}{'.T' if transposed else ''}"


def _check_operands(a: Any, b: Any, trans_a: bool, trans_b: bool) -> tuple[int, int, int]:
    """Validate ``op(a) @ op(b)``; return ``(M, N, K)``."""
    for name, x in (("a", a), ("b", b)):
        if not all(hasattr(x, attribute) for attribute in ("ndim", "shape", "dtype")):
            raise TypeError(f"matmul: {name} must be an array, got {type(x).__name__}")
    if array_module(a) is not array_module(b):
        raise TypeError(f"matmul: a is a {type(a).__name__} but b is a {type(b).__name__}")

    def op() -> str:  # formatted only for an error: a conv layer calls matmul several times a chunk
        return f"{_op_shape(a.shape, trans_a)} @ {_op_shape(b.shape, trans_b)}"

    if a.ndim not in (2, 3) or b.ndim != a.ndim:
        raise ValueError(f"matmul: {op()}: operands must both be 2-D or both 3-D (batched)")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: {op()}: dtypes {a.dtype} and {b.dtype} differ")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"matmul: {op()}: dtype {a.dtype} is not float32 or float64")
    if a.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(f"matmul: {op()}: batch sizes {a.shape[0]} and {b.shape[0]} differ")
    k_a, m = (a.shape[-2], a.shape[-1]) if trans_a else (a.shape[-1], a.shape[-2])
    n, k_b = (b.shape[-2], b.shape[-1]) if trans_b else (b.shape[-1], b.shape[-2])
    if k_a != k_b:
        raise ValueError(f"matmul: {op()}: inner dimensions {k_a} and {k_b} differ")
    return m, n, k_a


def reference_matmul(
    a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False
) -> np.ndarray:
    """``op(a) @ op(b)`` in float64 by ``np.einsum`` (its own summation loop, not BLAS)."""
    _check_operands(a, b, trans_a, trans_b)
    subscripts = ("...ki" if trans_a else "...ik") + "," + ("...jk" if trans_b else "...kj")
    return np.einsum(subscripts + "->...ij", a.astype(np.float64), b.astype(np.float64))


def _out(a: Any, m: int, n: int, out: Any) -> Any:
    """``out`` checked against the product's shape, or a new array when it is None."""
    shape = (a.shape[0], m, n) if a.ndim == 3 else (m, n)
    return (
        empty(shape, a.dtype, like=a)
        if out is None
        else check_out("matmul", out, shape, a.dtype, a, per_matrix=True)
    )


def matmul_cpu(
    a: np.ndarray,
    b: np.ndarray,
    trans_a: bool = False,
    trans_b: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``op(a) @ op(b)`` on the CPU through NumPy's BLAS; transposes are views, never copies.
    Written into ``out`` when given.

    There is deliberately no hand-written CPU GEMM: a tuned BLAS beats anything Numba can emit.
    """
    m, n, _ = _check_operands(a, b, trans_a, trans_b)
    return np.matmul(
        np.swapaxes(a, -1, -2) if trans_a else a,
        np.swapaxes(b, -1, -2) if trans_b else b,
        out=None if out is None else _out(a, m, n, out),
    )


@device_function
def _load_slab(slab, source, batch, outer0, k0, outer_size, k_size, k_contiguous, thread):
    """Stage ``slab[kk, o] = op(source)[outer0 + o, k0 + kk]`` (zero past the edges).

    ``source[batch]`` is ``(outer, K)`` when ``k_contiguous``, else ``(K, outer)``; consecutive
    threads take consecutive elements along whichever axis is contiguous in memory, so the
    global loads coalesce either way.
    """
    for load in range(LOADS_PER_THREAD):
        element = thread + load * THREADS
        if k_contiguous:
            kk = element % TILE_K
            o = element // TILE_K
        else:
            kk = element // TILE
            o = element % TILE
        outer = outer0 + o
        k = k0 + kk
        if outer < outer_size and k < k_size:
            slab[kk, o] = source[batch, outer, k] if k_contiguous else source[batch, k, outer]
        else:
            slab[kk, o] = 0


def _make_tiled_kernel(trans_a: bool, trans_b: bool):
    """The tiled kernel for one ``(trans_a, trans_b)``; the flags are compile-time constants."""

    @cuda_kernel
    def matmul_tiled(a, b, c):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        thread = ty * THREADS_X + tx
        batch = cuda.blockIdx.z
        row0 = cuda.blockIdx.y * TILE
        col0 = cuda.blockIdx.x * TILE
        m = c.shape[1]
        n = c.shape[2]
        k_size = a.shape[1] if trans_a else a.shape[2]

        a_slab = cuda.shared.array((TILE_K, TILE_ROW_STRIDE), a.dtype)  # [kk, i] = op(a)[i, kk]
        b_slab = cuda.shared.array((TILE_K, TILE_ROW_STRIDE), b.dtype)  # [kk, j] = op(b)[kk, j]
        acc = cuda.local.array((PER_THREAD, PER_THREAD), c.dtype)
        a_values = cuda.local.array(PER_THREAD, a.dtype)
        b_values = cuda.local.array(PER_THREAD, b.dtype)
        for i in range(PER_THREAD):
            for j in range(PER_THREAD):
                acc[i, j] = 0

        for k0 in range(0, k_size, TILE_K):
            _load_slab(a_slab, a, batch, row0, k0, m, k_size, not trans_a, thread)
            _load_slab(b_slab, b, batch, col0, k0, n, k_size, trans_b, thread)
            cuda.syncthreads()
            for kk in range(TILE_K):
                for i in range(PER_THREAD):
                    a_values[i] = a_slab[kk, ty + i * THREADS_Y]
                for j in range(PER_THREAD):
                    b_values[j] = b_slab[kk, tx + j * THREADS_X]
                for i in range(PER_THREAD):
                    for j in range(PER_THREAD):
                        acc[i, j] += a_values[i] * b_values[j]
            cuda.syncthreads()

        for i in range(PER_THREAD):
            row = row0 + ty + i * THREADS_Y
            for j in range(PER_THREAD):
                col = col0 + tx + j * THREADS_X
                if row < m and col < n:
                    c[batch, row, col] = acc[i, j]

    return matmul_tiled


_TILED_KERNELS = {
    (ta, tb): _make_tiled_kernel(ta, tb) for ta in (False, True) for tb in (False, True)
}


@cuda_kernel
def _matmul_naive(a, b, c, trans_a, trans_b):
    col = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    row = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    batch = cuda.blockIdx.z
    if row >= c.shape[1] or col >= c.shape[2]:
        return
    k_size = a.shape[1] if trans_a else a.shape[2]
    total = cuda.local.array(1, c.dtype)  # a scalar of c's dtype: float32 math stays float32
    total[0] = 0
    for k in range(k_size):
        a_value = a[batch, k, row] if trans_a else a[batch, row, k]
        b_value = b[batch, col, k] if trans_b else b[batch, k, col]
        total[0] += a_value * b_value
    c[batch, row, col] = total[0]


def _launch_matmul(
    a: Any,
    b: Any,
    trans_a: bool,
    trans_b: bool,
    out: Any,
    kernel,
    block_tile: int,
    threads: tuple[int, int],
    *flags: bool,
) -> Any:
    """Validate, view both operands as C-contiguous batches, launch one block per
    ``block_tile`` × ``block_tile`` tile of each output matrix."""
    m, n, _ = _check_operands(a, b, trans_a, trans_b)
    batched = a.ndim == 3
    batch = a.shape[0] if batched else 1
    if batch > MAX_GRID_Z:
        raise ValueError(f"matmul: batch size {batch} exceeds the CUDA grid limit {MAX_GRID_Z}")
    xp = array_module(a)
    a3 = xp.ascontiguousarray(a if batched else a[None])
    b3 = xp.ascontiguousarray(b if batched else b[None])
    c = _out(a, m, n, out)
    if not batched:
        c = c[None]
    if c.size:
        blocks = (-(-n // block_tile), -(-m // block_tile), batch)
        launch(kernel, blocks, threads, a3, b3, c, *flags)
    return c if batched else c[0]


def matmul_cuda(
    a: Any, b: Any, trans_a: bool = False, trans_b: bool = False, out: Any = None
) -> Any:
    """``op(a) @ op(b)`` by the tiled, register-blocked CUDA kernel (ours, not cuBLAS)."""
    kernel = _TILED_KERNELS[bool(trans_a), bool(trans_b)]
    return _launch_matmul(a, b, trans_a, trans_b, out, kernel, TILE, (THREADS_X, THREADS_Y))


def matmul_cuda_naive(
    a: Any, b: Any, trans_a: bool = False, trans_b: bool = False, out: Any = None
) -> Any:
    """``op(a) @ op(b)`` with one CUDA thread per output: the baseline for the tiled kernel."""
    return _launch_matmul(
        a,
        b,
        trans_a,
        trans_b,
        out,
        _matmul_naive,
        NAIVE_THREADS[0],
        NAIVE_THREADS,
        bool(trans_a),
        bool(trans_b),
    )


def cuda_kernels() -> list[KernelSpec]:
    """Every CUDA kernel of this module, specialised for float32, for the PTX compile check."""
    batch_of_matrices = numba.float32[:, :, ::1]
    operands = (batch_of_matrices,) * 3
    specs = [
        KernelSpec(
            f"matmul_tiled_{'t' if ta else 'n'}{'t' if tb else 'n'}",
            kernel,
            operands,
            (THREADS_X, THREADS_Y),
        )
        for (ta, tb), kernel in _TILED_KERNELS.items()
    ]
    specs.append(
        KernelSpec(
            "matmul_naive", _matmul_naive, operands + (numba.boolean, numba.boolean), NAIVE_THREADS
        )
    )
    return specs


# --------------------------------------------------------------------------- benchmark cases


def _matmul_case(context: BenchContext, key: str, m: int, n: int, k: int) -> Case:
    """c (M, N) = a (M, K) @ b (N, K)ᵀ: the A·Bᵀ form of a Linear layer's and a convolution's
    forward."""
    a, b = context.random((m, k)), context.random((n, k), seed=1)
    implementations = {OURS: Implementation(lambda: context.ops.matmul(a, b, False, True))}
    torch = context.torch
    if torch:
        a_torch, b_torch = torch.from_numpy(a), torch.from_numpy(b)
        implementations["torch"] = Implementation(lambda: torch.matmul(a_torch, b_torch.T))
    if context.variant == "cuda":
        implementations["cublas"] = Implementation(lambda: context.xp.matmul(a, b.T))
    info = CaseInfo(
        "matmul",
        f"{key} {m}x{k}@({n}x{k})T",
        2.0 * m * n * k,
        FLOAT32_BYTES * (m * k + n * k + m * n),
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """The GEMMs of MNIST's conv2 and fc1 and of a ResNet convolution (tiny with ``quick``)."""
    shapes = (
        (("tiny", 9, 5, 7),)
        if quick
        else (
            ("mnist.conv2.b256", 256 * 14 * 14, 64, 32 * 9),
            ("mnist.fc1.b256", 256, 128, 64 * 7 * 7),
            ("resnet.conv.b128", 128 * 16 * 16, 64, 64 * 9),
        )
    )
    return [
        CaseSpec(
            "matmul",
            key,
            f"{m}x{k}@({n}x{k})T",
            functools.partial(_matmul_case, key=key, m=m, n=n, k=k),
            (OURS, "torch"),
        )
        for key, m, n, k in shapes
    ]


FAMILY = Family(
    name="matmul",
    module=__name__,
    ops=("matmul",),
    references={
        "matmul": reference_matmul,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
