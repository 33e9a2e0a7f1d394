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
* split-K workspace (:func:`matmul_cuda_split_k` only): ``(B·S, M, N)`` partial products, one
  per slice of K, in the operands' dtype (float32 partials for float32, float64 for float64);
  matrix ``b·S + s`` holds product ``b``'s slice ``s``.

Variants, simplest first:

1. :func:`reference_matmul`: the specification, float64 ``np.einsum`` with the transposes written
   into its subscripts (NumPy's own summation loop, not BLAS).
2. :func:`matmul_cpu`: NumPy's ``matmul`` on transposed *views*, which hands the strides to BLAS
   without copying. A hand-written CPU GEMM cannot beat a tuned BLAS (packing, vector
   micro-kernels, cache blocking per CPU model), so the CPU path does not pretend to. On more
   than one thread a large product runs as blocks of rows (or of columns, whichever side is
   longer), one per thread of Numba's pool, each block a single-threaded call into the same BLAS
   (``kernels/_blas.py``): fastnet's one pool of threads, BLAS's own kept at one.
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
   16 consecutive outputs). The grid is 1-D, one block per tile of every matrix, decoded in the
   kernel (:func:`_tile_of_block`): ``gridDim.y`` and ``.z`` stop at 65,535, so a Linear over
   more than 4.2M rows or a batch of more than 65,535 matrices would not launch there.

   The transposes are compile-time constants here: one kernel per ``(trans_a, trans_b)``, built by
   one factory. They decide which axis consecutive threads walk while loading a slab (always the
   operand's contiguous axis, so global loads coalesce), and NVVM folds the index arithmetic for
   each form; a runtime flag would keep both mappings and their division/modulo in the loop.
5. :func:`matmul_cuda_split_k`: the same tiled kernel over a slice of K per block: S slices of
   ``k_slice`` values (whole 16-value slab steps), each block writing its partial tile into the
   workspace, then :func:`_sum_slices`, a grid-stride kernel, adds each output's S partials left
   to right into ``c``. No atomics: the order is fixed, so results are equal bit for bit from
   run to run. Why: a skinny GEMM (conv1's weight gradient, M = 10, N = 32, K = 784 per image)
   is one 64 × 64 output tile, so the plain kernel runs it on one block of one SM.

   The choice (:func:`split_k_slices`, made by :func:`matmul_cuda` on every call): split when
   the output has fewer than ``SPLIT_BELOW_TILES`` = 2 × ``NOMINAL_SM_COUNT`` tiles (counting
   every matrix of a batch) and K holds at least two slices of ``MIN_SLICE_K``; then
   ``S = min(ceil(SPLIT_BELOW_TILES / tiles), K // MIN_SLICE_K)``, which brings the blocks to
   about ``SPLIT_BELOW_TILES`` with no slice under ``MIN_SLICE_K`` values. The workspace is then
   at most about ``(SPLIT_BELOW_TILES + tiles) × 64 × 64`` values (a few MB).

cuBLAS (through CuPy) is the yardstick :func:`matmul_cuda` is benchmarked against; it is not used.
:func:`bench_cases` times the A·Bᵀ products of the shipped models against it and PyTorch.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np
from numba import cuda

from . import _cpu
from ._blas import gemm
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
from ._cuda import (
    array_module,
    check_out,
    cuda_kernel,
    device_function,
    empty,
    launch,
    stride_grid,
)

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

# Split-K choice (see :func:`split_k_slices`). An output of fewer tiles than SPLIT_BELOW_TILES
# leaves SMs idle; 132 is an H100's SM count, and the rule needs only its order of magnitude.
NOMINAL_SM_COUNT = 132
SPLIT_BELOW_TILES = 2 * NOMINAL_SM_COUNT
# The shortest K a slice gets: 16 slab steps, enough that staging and storing a partial tile
# (64 × 64 values written, then read again by the sum) stay small beside the slice's FMAs.
MIN_SLICE_K = 256
SUM_THREADS = 256  # the slice-summing kernel is elementwise: a grid-stride loop


def _op_shape(shape: tuple, transposed: bool) -> str:
    return f"{tuple(shape)}{'.T' if transposed else ''}"


def _check_operands(a: Any, b: Any, trans_a: bool, trans_b: bool) -> tuple[int, int, int]:
    """Validate ``op(a) @ op(b)``; return ``(M, N, K)``."""
    if not a.__class__ is b.__class__ is np.ndarray:  # two host arrays: nothing more to ask
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
    m, n, k = _check_operands(a, b, trans_a, trans_b)
    batch = a.shape[0] if a.ndim == 3 else 1
    if _cpu.parallel_pays(batch * m * n * k):
        c = _out(a, m, n, out)
        flat = (lambda x: x) if a.ndim == 3 else (lambda x: x[None])
        a, b = (x if _rows_contiguous(x) else np.ascontiguousarray(x) for x in (a, b))
        split_rows = m >= n
        blocks = min(_cpu.threads(), m if split_rows else n)
        _matmul_blocks_cpu(flat(a), flat(b), flat(c), trans_a, trans_b, split_rows, blocks)
        return c
    return np.matmul(
        np.swapaxes(a, -1, -2) if trans_a else a,
        np.swapaxes(b, -1, -2) if trans_b else b,
        out=None if out is None else _out(a, m, n, out),
    )


def _rows_contiguous(x: np.ndarray) -> bool:
    """True when BLAS can read every matrix of ``x`` as it is: contiguous rows, each row starting
    at least a row's length after the one before (no broadcast or reversed axes)."""
    size, (rows, columns) = x.itemsize, x.shape[-2:]
    return (
        (columns <= 1 or x.strides[-1] == size)
        and (rows <= 1 or x.strides[-2] >= columns * size)
        and min(x.strides, default=0) >= 0
    )


@numba.njit(cache=True, parallel=True)
def _matmul_blocks_cpu(a, b, c, trans_a, trans_b, split_rows, blocks):
    """c[i] = op(a[i]) @ op(b[i]) for every matrix i, each cut into ``blocks`` blocks of rows
    (``split_rows``) or of columns, one BLAS call a block, the blocks spread over the threads."""
    extent = c.shape[1] if split_rows else c.shape[2]
    for unit in numba.prange(c.shape[0] * blocks):
        i, block = unit // blocks, unit % blocks
        lo, hi = block * extent // blocks, (block + 1) * extent // blocks
        if split_rows:  # rows lo:hi of op(a) and of c
            part = a[i][:, lo:hi] if trans_a else a[i][lo:hi]
            gemm(part, b[i], c[i][lo:hi], trans_a, trans_b, 0.0)
        else:  # columns lo:hi of op(b) and of c
            part = b[i][lo:hi] if trans_b else b[i][:, lo:hi]
            gemm(a[i], part, c[i][:, lo:hi], trans_a, trans_b, 0.0)


@device_function
def _load_slab(slab, source, batch, outer0, k0, outer_size, k_end, k_contiguous, thread):
    """Stage ``slab[kk, o] = op(source)[outer0 + o, k0 + kk]`` (zero past the edges: outer indices
    from ``outer_size`` on, k from ``k_end`` on, the end of the block's K slice).

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
        if outer < outer_size and k < k_end:
            slab[kk, o] = source[batch, outer, k] if k_contiguous else source[batch, k, outer]
        else:
            slab[kk, o] = 0


@device_function
def _tile_of_block(tile_size, m, n):
    """``(matrix, row0, col0)``: the first row and column of the ``tile_size`` × ``tile_size``
    output tile this block computes, and which matrix of ``c`` it is in.

    Every tile of every matrix is one block of a 1-D grid, column tiles fastest, then row tiles,
    then matrices: the order a (columns, rows, matrices) 3-D grid runs in, without its 65,535
    limit on y and z (a Linear over millions of rows, a batch of more than 65,535 products).
    Unsigned 32-bit arithmetic: a block index is below 2³¹, and 64-bit division would cost the
    tiled kernel 24 registers a thread on sm_80 (120 instead of 96).
    """
    col_tiles = numba.uint32((n + tile_size - 1) // tile_size)
    row_tiles = numba.uint32((m + tile_size - 1) // tile_size)
    block = numba.uint32(cuda.blockIdx.x)
    tiles_per_matrix = col_tiles * row_tiles  # below 2³¹, or the grid would be refused
    return (
        block // tiles_per_matrix,
        block // col_tiles % row_tiles * tile_size,
        block % col_tiles * tile_size,
    )


def _make_tiled_kernel(trans_a: bool, trans_b: bool):
    """The tiled kernel for one ``(trans_a, trans_b)``; the flags are compile-time constants.

    ``c`` is ``(B·S, M, N)`` for ``S`` slices of K of ``k_slice`` values each (``S = 1``,
    ``k_slice >= K``: the whole product): matrix ``z`` of ``c`` is slice ``z % S`` of product
    ``z // S``.
    """

    @cuda_kernel
    def matmul_tiled(a, b, c, k_slice):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        thread = ty * THREADS_X + tx
        m = c.shape[1]
        n = c.shape[2]
        matrix, row0, col0 = _tile_of_block(TILE, m, n)
        slices = c.shape[0] // a.shape[0]
        batch = matrix // slices
        k_begin = (matrix - batch * slices) * k_slice
        k_end = min(k_begin + k_slice, a.shape[1] if trans_a else a.shape[2])

        a_slab = cuda.shared.array((TILE_K, TILE_ROW_STRIDE), a.dtype)  # [kk, i] = op(a)[i, kk]
        b_slab = cuda.shared.array((TILE_K, TILE_ROW_STRIDE), b.dtype)  # [kk, j] = op(b)[kk, j]
        acc = cuda.local.array((PER_THREAD, PER_THREAD), c.dtype)
        a_values = cuda.local.array(PER_THREAD, a.dtype)
        b_values = cuda.local.array(PER_THREAD, b.dtype)
        for i in range(PER_THREAD):
            for j in range(PER_THREAD):
                acc[i, j] = 0

        for k0 in range(k_begin, k_end, TILE_K):
            _load_slab(a_slab, a, batch, row0, k0, m, k_end, not trans_a, thread)
            _load_slab(b_slab, b, batch, col0, k0, n, k_end, trans_b, thread)
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
                    c[matrix, row, col] = acc[i, j]

    return matmul_tiled


_TILED_KERNELS = {
    (ta, tb): _make_tiled_kernel(ta, tb) for ta in (False, True) for tb in (False, True)
}


@cuda_kernel
def _sum_slices(partials, c):
    """``c[p] = partials[p·S] + partials[p·S + 1] + … + partials[p·S + S - 1]``, left to right:
    a fixed order, so the result is the same bit for bit at every run (atomics would not be)."""
    products, m, n = c.shape
    slices = partials.shape[0] // products
    for index in range(cuda.grid(1), products * m * n, cuda.gridsize(1)):
        col = index % n
        row = index // n % m
        first = index // (m * n) * slices
        total = partials[first, row, col]
        for offset in range(1, slices):
            total += partials[first + offset, row, col]
        c[index // (m * n), row, col] = total


@cuda_kernel
def _matmul_naive(a, b, c, trans_a, trans_b):
    batch, row0, col0 = _tile_of_block(cuda.blockDim.x, c.shape[1], c.shape[2])
    row = row0 + cuda.threadIdx.y
    col = col0 + cuda.threadIdx.x
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


def _batches(a: Any, b: Any, m: int, n: int, out: Any) -> tuple[Any, Any, Any]:
    """Both operands as C-contiguous batches ``(B, ., .)`` and the output ``c`` as ``(B, M, N)``
    (``out``, or a new array)."""
    xp = array_module(a)
    batched = a.ndim == 3
    a3 = xp.ascontiguousarray(a if batched else a[None])
    b3 = xp.ascontiguousarray(b if batched else b[None])
    c = _out(a, m, n, out)
    return a3, b3, c if batched else c[None]


def _tile_blocks(m: int, n: int, matrices: int, tile_size: int) -> int:
    """One block per ``tile_size`` × ``tile_size`` tile of each of ``matrices`` outputs, in the
    1-D grid :func:`_tile_of_block` decodes."""
    return -(-n // tile_size) * -(-m // tile_size) * matrices


def split_k_slices(m: int, n: int, k: int, batch: int = 1) -> int:
    """How many slices of K :func:`matmul_cuda` splits a product into (1: no split).

    Split when the output has fewer than ``SPLIT_BELOW_TILES`` 64 × 64 tiles (too few blocks for
    the GPU) and K is long: enough slices to bring the blocks to about ``SPLIT_BELOW_TILES``, none
    shorter than ``MIN_SLICE_K``.
    """
    tiles = -(-m // TILE) * -(-n // TILE) * batch
    if not 0 < tiles < SPLIT_BELOW_TILES:
        return 1
    return max(1, min(-(-SPLIT_BELOW_TILES // tiles), k // MIN_SLICE_K))


def _slice_length(k: int, slices: int) -> int:
    """K values a slice when K is cut into (at most) ``slices``: whole slab steps of TILE_K."""
    return max(TILE_K, -(-k // (slices * TILE_K)) * TILE_K)


def matmul_cuda(
    a: Any, b: Any, trans_a: bool = False, trans_b: bool = False, out: Any = None
) -> Any:
    """``op(a) @ op(b)`` by the tiled, register-blocked CUDA kernel (ours, not cuBLAS); split
    over K (:func:`matmul_cuda_split_k`) when :func:`split_k_slices` says the output is too
    small to fill the GPU."""
    m, n, k = _check_operands(a, b, trans_a, trans_b)
    slices = split_k_slices(m, n, k, a.shape[0] if a.ndim == 3 else 1)
    a3, b3, c = _batches(a, b, m, n, out)
    kernel = _TILED_KERNELS[bool(trans_a), bool(trans_b)]
    if slices > 1:
        _launch_split_k(kernel, a3, b3, c, k, slices)
    elif c.size:
        blocks = _tile_blocks(m, n, c.shape[0], TILE)
        launch(kernel, blocks, (THREADS_X, THREADS_Y), a3, b3, c, max(k, 1))
    return c if a.ndim == 3 else c[0]


def matmul_cuda_split_k(
    a: Any,
    b: Any,
    trans_a: bool = False,
    trans_b: bool = False,
    out: Any = None,
    slices: int = 2,
) -> Any:
    """``op(a) @ op(b)`` with K cut into (at most) ``slices`` slices of whole slab steps: the
    tiled kernel writes each slice's product into a workspace ``(B·S, M, N)`` of the operands'
    dtype, and :func:`_sum_slices` adds the S partials of each output in a fixed order."""
    m, n, k = _check_operands(a, b, trans_a, trans_b)
    if slices < 1:
        raise ValueError(f"matmul: split-K needs at least one slice, got {slices}")
    a3, b3, c = _batches(a, b, m, n, out)
    _launch_split_k(_TILED_KERNELS[bool(trans_a), bool(trans_b)], a3, b3, c, k, slices)
    return c if a.ndim == 3 else c[0]


def _launch_split_k(kernel, a3: Any, b3: Any, c: Any, k: int, slices: int) -> None:
    """The two launches of split-K into ``c`` (B, M, N), the operands already checked."""
    if not c.size:
        return
    k_slice = _slice_length(k, slices)
    slices = max(1, -(-k // k_slice))  # rounding k_slice up may leave fewer slices
    products, m, n = c.shape
    partials = empty((products * slices, m, n), c.dtype, like=c)
    blocks = _tile_blocks(m, n, partials.shape[0], TILE)
    launch(kernel, blocks, (THREADS_X, THREADS_Y), a3, b3, partials, k_slice)
    launch(_sum_slices, stride_grid(c.size, SUM_THREADS), SUM_THREADS, partials, c)


def matmul_cuda_naive(
    a: Any, b: Any, trans_a: bool = False, trans_b: bool = False, out: Any = None
) -> Any:
    """``op(a) @ op(b)`` with one CUDA thread per output: the baseline for the tiled kernel."""
    m, n, _ = _check_operands(a, b, trans_a, trans_b)
    a3, b3, c = _batches(a, b, m, n, out)
    if c.size:
        blocks = _tile_blocks(m, n, c.shape[0], NAIVE_THREADS[0])
        launch(_matmul_naive, blocks, NAIVE_THREADS, a3, b3, c, bool(trans_a), bool(trans_b))
    return c if a.ndim == 3 else c[0]


def cuda_kernels() -> list[KernelSpec]:
    """Every CUDA kernel of this module, specialised for float32, for the PTX compile check."""
    batch_of_matrices = numba.float32[:, :, ::1]
    operands = (batch_of_matrices,) * 3
    specs = [
        KernelSpec(
            f"matmul_tiled_{'t' if ta else 'n'}{'t' if tb else 'n'}",
            kernel,
            operands + (numba.int64,),
            (THREADS_X, THREADS_Y),
        )
        for (ta, tb), kernel in _TILED_KERNELS.items()
    ]
    specs.append(KernelSpec("matmul_sum_slices", _sum_slices, operands[:2], SUM_THREADS))
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
    """The GEMMs of MNIST's conv2 and fc1, of conv1's weight gradient (one output tile, K of
    784 per image: the skinny GEMM split-K is for) and of a ResNet convolution (tiny with
    ``quick``)."""
    shapes = (
        (("tiny", 9, 5, 7),)
        if quick
        else (
            ("mnist.conv2.b256", 256 * 14 * 14, 64, 32 * 9),
            ("mnist.fc1.b256", 256, 128, 64 * 7 * 7),
            # dWᵀ = cols · dYᵀ: cols (1·3·3 + a ones row for the bias, 64·28·28), dY (32, 64·28·28)
            ("mnist.conv1.dw.b64", 1 * 3 * 3 + 1, 32, 64 * 28 * 28),
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
