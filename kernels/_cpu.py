"""The CPU execution policy: when a kernel runs on the calling thread and when on Numba's pool.

Every CPU kernel body is written once, with ``prange`` over its independent outer loop, and
compiled twice by :func:`cpu_kernel`: a serial driver (``prange`` is then a plain ``range``) and a
parallel one over Numba's threads. A call takes the parallel driver only when it pays
(:func:`parallel_pays`): more than one thread is configured (``fastnet.set_num_threads``) and the
call touches at least :data:`PARALLEL_MIN_ELEMENTS` entries. Below that, waking the pool and
splitting the loop cost more than the other threads give back; with one thread the parallel
driver is pure overhead.

The CPU convolution's workspace is policy too: conv2d works on as many images at a time as fit
:data:`CONV_WORKSPACE_BYTES` (:func:`images_per_chunk`), so its im2col columns stay in cache between
the kernel that writes them and the GEMMs that read them. A chunk then holds less than the
threshold in float32 (unless one image alone is larger), so conv2d's im2col, col2im and
Winograd transforms run serially, and on chunks of that size serial is the faster driver.

Both are measured, serial against parallel driver per kernel and size and on conv2d's chunks, by
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/parallel_threshold.py``.

A whole convolution in one kernel call (Winograd's, im2col's) runs its chunks of images in
``groups`` runs (:func:`chunk_groups`), one per thread when parallel, each run with its own
workspace and calling a single-threaded BLAS per product (``_blas``): the chunks, not the
products inside them, are what the threads share out.
"""

from __future__ import annotations

import os
import threading
import types
from collections.abc import Callable
from typing import Any

import numba
from numba import njit
from numba.extending import register_jitable
from numba.np.ufunc import parallel as numba_parallel

from . import _blas

# 384K: above a convolution chunk's 256K floats (CONV_WORKSPACE_BYTES), whose im2col and col2im
# must stay serial inside the whole-convolution kernels' runs, and below ResNet-20's last-stage
# activations (128x64x8x8 = 512K), whose batch norm and ReLU passes gain on 2 threads within a
# training step (re-measure: benchmarks/fusion_ab.py --model resnet20 --batch 128
# --parallel-min N); the optimizer step over its 272K parameters stays serial.
PARALLEL_MIN_ELEMENTS = 3 << 17

# About half a core's L2 cache (1-2 MB on current x86 server cores): a chunk's columns and output
# planes stay cached between im2col and the GEMMs, beside the GEMMs' own packed panels.
CONV_WORKSPACE_BYTES = 1 << 20

# The Winograd convolution's V and M tiles of a chunk: small enough that its 16 products run on
# operands in L2 (512 KB a core on the AMD hosts, 1-2 MB on Intel's), where the register-tiled
# GEMM (_blas.gemm_in_cache) beats BLAS; at 1 MB its chunks spilled to L3 and lost that
# (the results log, issue 20's sixth round; benchmarks/cnn_layers.py re-measures the layers).
WINOGRAD_WORKSPACE_BYTES = 512 << 10


_threads = 1  # what fastnet.set_num_threads asked for


def _pool_running() -> bool:
    """Whether Numba's pool has started, by fastnet or by anyone (``numba.get_num_threads``
    starts it too, at every core)."""
    return numba_parallel._is_initialized


def set_threads(threads: int) -> None:
    """Record the thread count for the kernels (``fastnet.set_num_threads`` validates it); a
    running pool is resized, a pool not yet started starts at this count when first needed."""
    global _threads
    _threads = threads
    if _pool_running():
        numba.set_num_threads(threads)


def threads() -> int:
    """The thread count the kernels run with."""
    return _threads


def _start_pool() -> None:
    """Start Numba's OpenMP pool at :func:`threads` threads.

    Not at import: only when a kernel first runs on more than one thread. OpenMP libraries share
    one soname, so the first one loaded serves every later user: a process that starts Numba's
    pool before importing PyTorch gives PyTorch the system's libgomp instead of the one it ships,
    which halved its training speed at 2 threads here (``fastnet bench --train --threads 2``).

    Where NumPy's BLAS keeps a pool of its own (no ``_blas`` binding), the OpenMP threads are set
    to sleep as soon as they are idle (``OMP_WAIT_POLICY=PASSIVE``), since two spinning pools
    fight for the cores; with the binding they keep the runtime's default, spinning a moment after
    each kernel and then sleeping: put to sleep at once they pay a wake-up at every kernel, which
    cost ResNet-20's step at 2 threads about a fifth of its speed (re-measure with
    ``OMP_WAIT_POLICY=PASSIVE fastnet bench --train --only resnet20 --threads 2``).
    ``OMP_WAIT_POLICY`` is read once, when the OpenMP library loads, which is now, so it is set
    for this moment only; a policy the user set is left alone."""
    ours = "OMP_WAIT_POLICY" not in os.environ and not _blas.AVAILABLE
    if ours:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        numba.set_num_threads(_threads)  # launches the pool
    finally:
        if ours:
            del os.environ["OMP_WAIT_POLICY"]


def parallel_pays(elements: int) -> bool:
    """True when a kernel call over ``elements`` entries should run on Numba's threads (starting
    the pool the first time it does)."""
    if elements < PARALLEL_MIN_ELEMENTS or _threads < 2:
        return False
    if not _pool_running():
        _start_pool()
    elif numba.get_num_threads() != _threads:  # started by someone else, at their count
        numba.set_num_threads(_threads)
    return True


class CpuKernel:
    """One kernel body compiled as a serial and a parallel driver; call it with the work size
    first: ``kernel(elements, *args)`` runs the driver :func:`parallel_pays` picks."""

    def __init__(self, function: Callable[..., Any], options: dict[str, Any]) -> None:
        # NumPy's error model (x / 0 is inf or NaN, no ZeroDivisionError) is the one Numba compiles
        # every prange body with; the serial driver takes it too, so both compute the same and the
        # checks do not keep LLVM from vectorising a division
        # (fastnet bench --only adam --threads 1).
        options = {"error_model": "numpy", **options}
        self.serial = njit(cache=True, **options)(function)
        # Numba's on-disk cache keys a function by its qualified name, not by its flags: the
        # parallel driver compiles a renamed copy so the two never load each other's machine code.
        twin = types.FunctionType(
            function.__code__,
            function.__globals__,
            function.__name__,
            function.__defaults__,
            function.__closure__,
        )
        twin.__qualname__ = f"{function.__qualname__}__parallel"
        self.parallel = njit(cache=True, parallel=True, **options)(twin)
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__

    def driver(self, elements: int) -> Any:
        """The dispatcher for a call over ``elements`` entries."""
        return self.parallel if parallel_pays(elements) else self.serial

    def __call__(self, elements: int, *args: Any) -> Any:
        return self.driver(elements)(*args)


def cpu_kernel(function: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Decorator: compile ``function`` as a :class:`CpuKernel` (``options`` go to ``njit``,
    e.g. ``fastmath=``). Use bare (``@cpu_kernel``) or with options
    (``@cpu_kernel(fastmath=...)``)."""
    if function is None:
        return lambda function: CpuKernel(function, options)
    return CpuKernel(function, options)


def images_per_chunk(bytes_per_image: int, workspace: int = CONV_WORKSPACE_BYTES) -> int:
    """How many images of ``bytes_per_image`` working set a convolution takes at a time: as many
    as fit ``workspace`` bytes, at least one."""
    return max(1, workspace // max(bytes_per_image, 1))


def chunk_groups(kernel: CpuKernel, elements: int, chunks: int) -> tuple[Any, int]:
    """The driver of ``kernel`` for a call over ``elements`` entries in ``chunks`` chunks of
    images, and how many runs of chunks it takes: one per thread when parallel, else one."""
    driver = kernel.driver(elements)
    groups = min(_threads, chunks) if driver is kernel.parallel else 1
    return driver, max(groups, 1)


# A thread keeps at most this many bytes of kernel workspace between calls (scratch()).
SCRATCH_LIMIT_BYTES = 16 << 20

_scratch = threading.local()


def scratch(key: tuple, build: Callable[[], Any]) -> Any:
    """A kernel's workspace for ``key`` (the kernel's name and the shapes that fix the layout):
    ``build()``'s array on this thread's first call with ``key``, the same array on every later
    one while it stays cached. Why: a small call's time went into working out and allocating its
    workspace (the Winograd convolution's spaced tile buffers), not into the kernel.

    The caller writes it before reading it, and neither returns it nor keeps it past the call;
    each Python thread has its own, so two threads never share one. Arrays over a quarter of
    :data:`SCRATCH_LIMIT_BYTES` are built afresh (their kernel's time dwarfs the allocation);
    past the limit, the oldest entries make room."""
    cached = getattr(_scratch, "arrays", None)
    if cached is None:
        cached = _scratch.arrays = {}
    array = cached.get(key)
    if array is not None:
        return array
    array = build()
    if array.nbytes * 4 <= SCRATCH_LIMIT_BYTES:
        while cached and sum(kept.nbytes for kept in cached.values()) + array.nbytes > (
            SCRATCH_LIMIT_BYTES
        ):
            del cached[next(iter(cached))]
        cached[key] = array
    return array


@register_jitable
def chunk_range(group, groups, chunks, chunk_images, batch):
    """Images [start, stop) of run ``group`` of ``groups``: its share of the ``chunks`` chunks of
    ``chunk_images`` images (the last chunk may be short)."""
    first, last = group * chunks // groups, (group + 1) * chunks // groups
    return first * chunk_images, min(last * chunk_images, batch)
