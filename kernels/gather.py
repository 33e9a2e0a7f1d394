"""Gather many arrays into one flat buffer: the gradient gather of a multi-tensor optimizer step.

Math: for sources s_0 .. s_{n-1} (1-D, C-contiguous, one dtype) with start offsets
o_i = |s_0| + ... + |s_{i-1}|::

    out[o_i + j] = s_i[j]        for every i and 0 <= j < |s_i|

Buffers: ``sources`` a tuple of n 1-D arrays; ``offsets`` a tuple of n Python ints (o_0 = 0,
non-decreasing, passed by value: nothing to upload); ``out`` (sum |s_i|,) of the sources' dtype.

Why a kernel: CuPy's ``concatenate`` copies array by array (one launch each) unless it has more
than 8 arrays of under 2 MiB on average, so a small model's eight gradients would take eight
launches a step; this is one.

Variants, simplest first:

* ``reference_gather_flat``: NumPy, the sources concatenated.
* ``gather_flat_cpu``: ``numpy.concatenate`` into ``out`` (a memcpy per source: nothing to gain
  from a kernel on the CPU).
* ``gather_flat_cuda``: one grid-stride kernel over ``out``; each element finds its source by a
  binary search of the offsets and copies one value. The tuple of sources is a kernel argument
  (a ``UniTuple`` of arrays, indexed at run time), so each number of sources compiles once.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numba
import numpy as np
from numba import cuda, types

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
from ._cuda import array_module, cuda_kernel, launch, stride_grid

THREADS_PER_BLOCK = 256


def _checked(sources: Sequence[Any], offsets: Sequence[int], out: Any) -> tuple[Any, ...]:
    """The sources as a tuple, after checking the buffers the module docstring describes."""
    sources = tuple(sources)
    xp = array_module(out)
    if not sources:
        raise ValueError("gather_flat needs at least one source")
    if len(offsets) != len(sources):
        raise ValueError(f"gather_flat: {len(sources)} sources but {len(offsets)} offsets")
    if out.ndim != 1 or not out.flags.c_contiguous:
        raise ValueError(f"gather_flat: out must be a contiguous 1-D array, got {out.shape}")
    start = 0
    for position, (source, offset) in enumerate(zip(sources, offsets, strict=True)):
        if array_module(source) is not xp or source.dtype != out.dtype:
            raise TypeError(
                f"gather_flat: source {position} is a {source.dtype} {type(source).__name__}, "
                f"out a {out.dtype} {type(out).__name__}"
            )
        if source.ndim != 1 or not source.flags.c_contiguous:
            raise ValueError(
                f"gather_flat: source {position} must be contiguous and 1-D, got {source.shape}"
            )
        if offset != start:
            raise ValueError(
                f"gather_flat: source {position} starts at {start}, but its offset is {offset}"
            )
        start += source.size
    if start != out.size:
        raise ValueError(f"gather_flat: the sources hold {start} values, out has {out.size}")
    return sources


def reference_gather_flat(sources: Sequence[Any], offsets: Sequence[int], out: Any) -> np.ndarray:
    """The sources end to end, in float64 (``offsets`` and ``out`` only for the signature)."""
    return np.concatenate([np.asarray(source, np.float64) for source in sources])


def gather_flat_cpu(sources: Sequence[Any], offsets: Sequence[int], out: Any) -> Any:
    """``out`` holding every source end to end (see the module docstring)."""
    return np.concatenate(_checked(sources, offsets, out), out=out)


@cuda_kernel
def _gather_flat_cuda(sources, offsets, out):
    last = len(sources) - 1
    for index in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        # the last source starting at or before index (an empty source shares its start with the
        # next, which then wins)
        low, high = 0, last
        while low < high:
            middle = (low + high + 1) // 2
            if offsets[middle] <= index:
                low = middle
            else:
                high = middle - 1
        out[index] = sources[low][index - offsets[low]]


def gather_flat_cuda(sources: Sequence[Any], offsets: Sequence[int], out: Any) -> Any:
    """:func:`gather_flat_cpu` in one launch on the GPU (CuPy arrays) or in the simulator."""
    sources = _checked(sources, offsets, out)
    if out.size:
        offsets = tuple(int(offset) for offset in offsets)
        launch(
            _gather_flat_cuda,
            stride_grid(out.size, THREADS_PER_BLOCK),
            THREADS_PER_BLOCK,
            sources,
            offsets,
            out,
        )
    return out


def cuda_kernels() -> list[KernelSpec]:
    """The kernel for eight float32 sources (a small CNN's parameters), for the PTX check."""
    flat = numba.float32[::1]
    return [
        KernelSpec(
            "gather_flat",
            _gather_flat_cuda,
            (types.UniTuple(flat, 8), types.UniTuple(types.int64, 8), flat),
            THREADS_PER_BLOCK,
        )
    ]


# ---------------------------------------------------------------------------------------------
# Benchmark case: the MNIST CNN's eight gradients, against the array module's concatenate


MNIST_CNN_PARAMETER_SIZES = (288, 32, 18432, 64, 401408, 128, 1280, 10)


def _gather_case(context: BenchContext, key: str, sizes: tuple[int, ...]) -> Case:
    sources = tuple(context.random((size,), seed=seed) for seed, size in enumerate(sizes))
    offsets = tuple(int(start) for start in np.cumsum((0,) + sizes[:-1]))
    out = context.xp.empty(sum(sizes), np.float32)
    implementations = {
        OURS: Implementation(lambda: context.ops.gather_flat(sources, offsets, out)),
        context.plain: Implementation(lambda: context.xp.concatenate(sources)),
    }
    total = sum(sizes)
    info = CaseInfo(
        "gather_flat", f"{key} {len(sizes)} arrays", float(total), 2.0 * FLOAT32_BYTES * total
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    sizes = (5, 1, 7) if quick else MNIST_CNN_PARAMETER_SIZES
    key = "tiny" if quick else "mnist_cnn.grads"
    return [
        CaseSpec(
            "gather_flat",
            key,
            f"{len(sizes)}x",
            partial(_gather_case, key=key, sizes=sizes),
            (OURS, "numpy"),
        )
    ]


FAMILY = Family(
    name="gather",
    module=__name__,
    ops=("gather_flat",),
    references={"gather_flat": reference_gather_flat},
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
