"""CUDA block reductions shared by the row and group kernels (softmax, norm).

One thread block reduces one row (softmax) or one group (norm) of values. The block is 1-D,
``blockDim.x`` a power of two from 32 to :data:`MAX_BLOCK_THREADS` threads (chosen by
:func:`reduction_threads`); each thread first folds its strided share of the values into a
pair of partials, then :func:`block_reduce_pair` merges the block's pairs:

* sums: ``(Σ a, Σ b)`` over the threads' pairs ``(a, b)``, e.g. the sums of v - K and
  (v - K)² for a mean and a variance, or Σ y·dy;
* softmax normalisers: pairs ``(m, s)``, ``s = Σ exp(v - m)`` over a thread's values, merge to
  ``(M, Σ s·exp(m - M))`` with ``M`` the largest ``m`` (:func:`merge_softmax_partials`); an empty
  set is ``(-inf, 0)``.

The merge is a tree over a shared-memory scratch of shape ``(2, MAX_BLOCK_THREADS)`` in the
values' dtype, which the calling kernel allocates (``cuda.shared.array``), rather than warp
shuffles, which Numba's simulator does not implement.
"""

from __future__ import annotations

import math

from numba import cuda

from ._cuda import device_function

MAX_BLOCK_THREADS = 256
VALUES_PER_THREAD = 4


def reduction_threads(length: int) -> int:
    """Block size for a block that reduces ``length`` values: a power of two from 32 to 256,
    about VALUES_PER_THREAD values a thread so each thread's loop amortises the reduction."""
    wanted = -(-length // VALUES_PER_THREAD)
    threads = 32
    while threads < wanted and threads < MAX_BLOCK_THREADS:
        threads *= 2
    return threads


@device_function
def merge_softmax_partials(max_a, sum_a, max_b, sum_b):
    """Merge two softmax normalisers (max m, sum of exp(v - m)) of disjoint sets of values.

    An empty set is (-inf, 0): masked values must never enter as (-inf, 1).
    """
    if max_a == max_b:  # also two empty sets, where exp(-inf - -inf) would be NaN
        return max_a, sum_a + sum_b
    if max_a > max_b:
        return max_a, sum_a + sum_b * math.exp(max_b - max_a)
    return max_b, sum_b + sum_a * math.exp(max_a - max_b)


@device_function
def block_reduce_pair(scratch, first, second, merge_softmax):
    """Reduce one pair of values a thread over the whole block; every thread gets the result.

    merge_softmax False sums each component; True merges softmax normalisers with
    merge_softmax_partials. scratch: shared (2, MAX_BLOCK_THREADS) of the values' dtype.
    blockDim.x must be a power of two, and every thread of the block must call (it syncs).
    """
    thread = cuda.threadIdx.x
    scratch[0, thread] = first
    scratch[1, thread] = second
    cuda.syncthreads()
    active = cuda.blockDim.x // 2
    while active > 0:
        if thread < active:
            other_first = scratch[0, thread + active]
            other_second = scratch[1, thread + active]
            if merge_softmax:
                first, second = merge_softmax_partials(first, second, other_first, other_second)
            else:
                first += other_first
                second += other_second
            scratch[0, thread] = first
            scratch[1, thread] = second
        cuda.syncthreads()
        active //= 2
    first = scratch[0, 0]
    second = scratch[1, 0]
    cuda.syncthreads()  # so that the caller may reuse the scratch at once
    return first, second
