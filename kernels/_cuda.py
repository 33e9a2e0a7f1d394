"""CUDA plumbing shared by every kernel family: one launch path, one way to allocate.

A process either simulates CUDA (``NUMBA_ENABLE_CUDASIM=1`` set before ``numba.cuda`` is first
imported: kernels run in Numba's simulator over NumPy arrays, one Python thread per CUDA thread)
or runs on a real GPU over CuPy arrays. The launchers in the family modules never ask which:
they allocate with :func:`empty` and launch with :func:`launch`.

Launch path on a GPU, and why:

* Kernels are compiled once per machine, not at every start: :data:`cuda_kernel` and
  :data:`device_function` are ``cuda.jit`` with ``cache=True`` (the cache sits beside each
  module, or under ``NUMBA_CACHE_DIR``).
* Kernels run on CuPy's *current* stream, so they order correctly with the CuPy elementwise ops
  around them without any device synchronisation. The Numba stream object wrapping a CuPy stream
  is built once per stream pointer and cached, and so is each configured launch
  (``kernel[blocks, threads, stream]``): building one costs Python time on every launch, and
  Numba warns at each build whose grid has under 128 blocks. Our small grids are deliberate
  (a grid-stride loop, a small layer), so that warning is silenced for our launches only.
* Each CuPy argument is handed to Numba as a device-array view built without synchronising
  (by default Numba would synchronise on every array argument of every launch, which serialises
  the GPU with the Python thread; ordering is already guaranteed by launching on the same
  stream). The view is only a pointer and a layout, so it is built once per (pointer, shape,
  strides, dtype) and reused (:func:`_kernel_argument`): an array CuPy's pool hands out again at
  the same address with the same layout is the same view. The view holds no reference to the
  CuPy array: memory freed to CuPy's pool is reused in stream order, as without the cache.
* Large host outputs (NumPy: the CPU, and the simulator) are recycled by a buffer cache instead
  of being faulted in afresh each step (:class:`_HostBufferCache`); CuPy pools device memory.
* Grids of grid-stride kernels are capped (:func:`stride_grid`), so the simulator can run them with
  a few blocks and a GPU is not flooded with tiny blocks.
* Every launch is checked against CUDA's grid and block limits (``gridDim.y`` and ``.z`` at most
  65,535, 1,024 threads a block), in the simulator too, which enforces none of them. A kernel
  whose natural grid could pass a limit folds it into another dimension (matmul's tiles all go
  in x; one block per row: :func:`row_grid`).
"""

from __future__ import annotations

import math
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numba import cuda
from numba.core.errors import NumbaPerformanceWarning

try:  # CuPy is optional: absent on CPU-only installs, present without a GPU on some.
    import cupy as _cupy
except ImportError:  # pragma: no cover - depends on the install
    _cupy = None


# The decorators every family uses: compiled code is cached on disk like the CPU kernels'.
cuda_kernel = cuda.jit(cache=True)
device_function = cuda.jit(device=True, cache=True)


def simulating() -> bool:
    """True when Numba's CUDA simulator stands in for a GPU in this process."""
    try:
        from numba.cuda.core import config  # numba-cuda
    except ImportError:  # pragma: no cover - numba's own, deprecated numba.cuda
        from numba import config
    return bool(config.ENABLE_CUDASIM)


def simulate_shared_arrays(allocate: Callable[[Any, Any], Any] = np.empty) -> None:
    """Give every thread of a simulated block the same ``cuda.shared.array`` (made by
    ``allocate(shape, dtype)``; the tests pass one that poisons it with NaN).

    The simulator keys a block's static shared arrays by the calling line and creates one on a
    thread's first call: look up, create, store. A thread switch between its look-up and its
    store lets two threads of one block each create "the" array, and the block then reduces over
    memory half its threads never wrote (NaN or garbage, now and then, more often on a busy
    machine: it made ``gpu_check --simulate``'s training stage fail). Here the store is one
    ``dict.setdefault``, atomic under the GIL, so the first array stored is everyone's. The
    replacement is written out, not wrapped: a wrapper would become the calling line that keys
    every allocation. A GPU is unaffected."""
    from numba.core import types
    from numba.cuda.simulator.kernelapi import FakeCUDAShared
    from numba.np import numpy_support

    def array(self: Any, shape: Any, dtype: Any, alignment: Any = None) -> Any:
        if alignment is not None:
            raise RuntimeError("Array alignment is not supported in cudasim")
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        if shape == 0:  # dynamic shared memory: one buffer that every such request shares
            count = self._dynshared_size // np.dtype(dtype).itemsize
            return np.frombuffer(self._dynshared.data, dtype=dtype, count=count)
        caller = sys._getframe(1)  # the kernel's line, as the simulator keys it
        key = (caller.f_code.co_filename, caller.f_lineno)
        allocated = self._allocations.get(key)
        if allocated is None:
            allocated = self._allocations.setdefault(key, allocate(shape, dtype))
        return allocated

    FakeCUDAShared.array = array


if simulating():
    simulate_shared_arrays()


def gpu_available() -> bool:
    """True when a real CUDA GPU can run kernels (CuPy installed and a device visible)."""
    if simulating() or _cupy is None:
        return False
    try:
        return bool(_cupy.is_available())
    except Exception:  # noqa: BLE001 - any driver error means "no usable GPU"
        return False


def array_module(x: Any):
    """NumPy or CuPy, whichever owns ``x``."""
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy
    return np


# The most bytes of im2col columns and output planes a GPU convolution works on at once: the batch
# goes in chunks of as many images as fit (a whole-batch im2col of a ResNet at batch 512 would take
# gigabytes); at this size a chunk's GEMM is still large enough to fill the GPU.
CONV_WORKSPACE_BYTES = 256 << 20

# Host buffers of at least this many bytes come from a cache (see :class:`_HostBufferCache`).
CACHED_BUFFER_BYTES = 1 << 20
CACHE_LIMIT_BYTES = 1 << 30


class _HostBufferCache:
    """Large NumPy kernel outputs, recycled once no array refers to them any more.

    Why: glibc hands a large allocation back to the OS when it is freed (or trims the heap), so the
    next step's array of the same size is faulted in again page by page, and on virtual machines
    those faults cost a large part of a training step (re-measure the faults and system time a
    step with ``python benchmarks/cnn_layers.py``). CuPy's memory pool does the same job on a GPU.

    A buffer is free when the cache holds the only reference to it: every array handed out is a
    view whose ``base`` is the buffer (NumPy points each view of a view at the owner), so while
    any of them lives the buffer's reference count stays raised. The cache keeps at most
    ``CACHE_LIMIT_BYTES``; past that, allocations are plain ones.
    """

    def __init__(self) -> None:
        self._buffers: dict[int, list[np.ndarray]] = {}
        self._cached_bytes = 0
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = math.prod(shape) * dtype.itemsize
        with self._lock:
            same_size = self._buffers.setdefault(nbytes, [])
            for buffer in same_size:
                # references: the list, this loop's name and getrefcount's own argument
                if sys.getrefcount(buffer) == 3:
                    return buffer.view(dtype).reshape(shape)
            buffer = np.empty(nbytes, np.uint8)
            if self._cached_bytes + nbytes <= CACHE_LIMIT_BYTES:
                same_size.append(buffer)
                self._cached_bytes += nbytes
        return buffer.view(dtype).reshape(shape)

    def clear(self) -> None:
        """Forget every cached buffer (arrays still using one keep it alive)."""
        with self._lock:
            self._buffers.clear()
            self._cached_bytes = 0


host_buffers = _HostBufferCache()


def empty(shape: Sequence[int] | int, dtype: Any, like: Any) -> Any:
    """An uninitialised array on the same device as ``like`` (large host arrays: recycled)."""
    dtype = np.dtype(dtype)
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    # A NumPy array is asked for first: most calls, a small op's, and the ones whose overhead shows.
    if like.__class__ is not np.ndarray and array_module(like) is not np:
        return array_module(like).empty(shape, dtype=dtype)
    if math.prod(shape) * dtype.itemsize >= CACHED_BUFFER_BYTES:
        return host_buffers.empty(tuple(int(size) for size in shape), dtype)
    return np.empty(shape, dtype=dtype)


def matrices_contiguous(array: Any) -> bool:
    """True when every matrix (the last two axes) of ``array`` is C-contiguous, whatever the
    strides of the axes before them (a batch of matrices with gaps between them)."""
    itemsize = array.dtype.itemsize
    rows, columns = array.shape[-2:]
    return (columns <= 1 or array.strides[-1] == itemsize) and (
        rows <= 1 or array.strides[-2] == columns * itemsize
    )


def check_out(
    op: str, out: Any, shape: tuple, dtype: Any, like: Any, per_matrix: bool = False
) -> Any:
    """``out``, after checking it is a C-contiguous ``dtype`` array of ``shape`` on ``like``'s
    device (with ``per_matrix``, only each matrix of it need be C-contiguous); the error names what
    is wrong."""
    contiguous = out.flags.c_contiguous or (
        per_matrix and out.ndim >= 2 and matrices_contiguous(out)
    )
    if (
        array_module(out) is not array_module(like)
        or tuple(out.shape) != shape
        or out.dtype != dtype
        or not contiguous
    ):
        wanted = "matrix-contiguous" if per_matrix and len(shape) >= 3 else "C-contiguous"
        raise ValueError(
            f"{op} expects out as a {wanted} {dtype} {type(like).__name__} of shape {shape}, "
            f"got a {wanted if contiguous else 'non-contiguous'} {out.dtype} "
            f"{type(out).__name__} of shape {tuple(out.shape)}"
        )
    return out


_streams: dict[int, Any] = {}
_configured: dict[tuple, Any] = {}
MAX_CONFIGURED_LAUNCHES = 4096  # a bound on the cache; real programs use a few hundred shapes


def _current_stream():
    pointer = _cupy.cuda.get_current_stream().ptr
    stream = _streams.get(pointer)
    if stream is None:
        stream = _streams[pointer] = (
            cuda.external_stream(pointer) if pointer else cuda.default_stream()
        )
    return stream


def _configured_launch(kernel: Callable, blocks: Any, threads: Any) -> Any:
    """``kernel[blocks, threads, stream]`` on the current stream, built once per key."""
    stream = _current_stream()
    key = (kernel, blocks, threads, stream)
    configured = _configured.get(key)
    if configured is None:
        if len(_configured) >= MAX_CONFIGURED_LAUNCHES:
            _configured.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            configured = _configured[key] = kernel[blocks, threads, stream]
    return configured


_device_views: dict[tuple, Any] = {}
MAX_DEVICE_VIEWS = 4096  # a bound on the cache: a training step uses a few hundred arrays


def _kernel_argument(value: Any) -> Any:
    """A CuPy array as the Numba device array a launch takes (cached; see the module docstring),
    inside tuples too; anything else as it is."""
    if isinstance(value, tuple):
        return tuple(_kernel_argument(item) for item in value)
    if _cupy is None or not isinstance(value, _cupy.ndarray):
        return value
    key = (value.data.ptr, value.shape, value.strides, value.dtype)
    view = _device_views.get(key)
    if view is None:
        if len(_device_views) >= MAX_DEVICE_VIEWS:
            _device_views.clear()
        view = _device_views[key] = cuda.from_cuda_array_interface(
            value.__cuda_array_interface__, owner=None, sync=False
        )
    return view


def _check_kernel_argument(kernel: Callable, position: int, argument: Any) -> None:
    """Refuse, in the simulator, what numba-cuda's real launcher refuses (None among others: the
    simulator would run it): device arrays (NumPy arrays here), integers, floats, booleans and
    tuples of these are all a kernel may take."""
    if isinstance(argument, tuple):
        for item in argument:
            _check_kernel_argument(kernel, position, item)
        return
    if not isinstance(argument, (np.ndarray, int, float, bool, np.number, np.bool_)):
        raise TypeError(
            f"{_kernel_name(kernel)}: kernel argument {position} is a "
            f"{type(argument).__name__}; a CUDA launch takes only device arrays, integers, "
            "floats, booleans and tuples of these"
        )


def _kernel_name(kernel: Callable) -> str:
    return getattr(kernel, "__name__", None) or getattr(kernel, "py_func", kernel).__name__


# CUDA's launch limits (every GPU from compute capability 3.0 on). A launch past one fails on a
# GPU and runs in the simulator, so launch() checks every launch against them in both. They are
# read at each call, so a test can lower them to drive a launcher's looping path on tiny inputs.
MAX_GRID_X = 2**31 - 1
MAX_GRID_Y = 65535
MAX_GRID_Z = 65535
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK_Z = 64  # blockDim.x and .y may reach 1024, within MAX_THREADS_PER_BLOCK


def row_grid(rows: int) -> tuple[int, int]:
    """The grid of a kernel with one block per row (or group) and more rows than ``gridDim.x``
    holds: x up to its limit, y as many times as needed; the kernel finds its row with
    :func:`block_row` and a block past the last row returns at once. (A loop over rows inside
    the kernel would do too, but costs the reduction kernels 8 to 24 registers a thread.)"""
    return min(rows, MAX_GRID_X), -(-rows // MAX_GRID_X)


@device_function
def block_row():
    """The row of this block in a :func:`row_grid`."""
    return cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x


def _check_launch_shape(kernel: Callable, blocks: int | tuple, threads: int | tuple) -> None:
    """Refuse a grid or a block that a GPU would refuse; a few comparisons on every launch."""
    grid = blocks if isinstance(blocks, tuple) else (blocks,)
    block = threads if isinstance(threads, tuple) else (threads,)
    if len(grid) <= 3 and len(block) <= 3:
        grid_x, grid_y, grid_z = grid + (1,) * (3 - len(grid))
        block_x, block_y, block_z = block + (1,) * (3 - len(block))
        if (
            0 < grid_x <= MAX_GRID_X
            and 0 < grid_y <= MAX_GRID_Y
            and 0 < grid_z <= MAX_GRID_Z
            and block_x > 0
            and block_y > 0
            and 0 < block_z <= MAX_BLOCK_Z
            and block_x * block_y * block_z <= MAX_THREADS_PER_BLOCK
        ):
            return
    raise ValueError(
        f"{_kernel_name(kernel)}: a launch of grid {blocks}, block {threads} is past CUDA's "
        f"launch limits: {_launch_limits_broken(grid, block)}"
    )


def _launch_limits_broken(grid: tuple, block: tuple) -> str:
    """Which limits a launch breaks, in words (for the error only)."""
    if len(grid) > 3 or len(block) > 3:
        return "a grid and a block have at most 3 dimensions"
    broken = [
        f"{kind}Dim.{axis} = {size} must be at least 1"
        for kind, sizes in (("grid", grid), ("block", block))
        for axis, size in zip("xyz", sizes, strict=False)
        if size < 1
    ]
    broken += [
        f"gridDim.{axis} = {size} > {limit}"
        for axis, size, limit in zip(
            "xyz", grid, (MAX_GRID_X, MAX_GRID_Y, MAX_GRID_Z), strict=False
        )
        if size > limit
    ]
    if len(block) == 3 and block[2] > MAX_BLOCK_Z:
        broken.append(f"blockDim.z = {block[2]} > {MAX_BLOCK_Z}")
    if math.prod(block) > MAX_THREADS_PER_BLOCK:
        broken.append(f"{math.prod(block)} threads a block > {MAX_THREADS_PER_BLOCK}")
    return "; ".join(broken)


class LaunchCounter:
    """How many kernels :func:`launch` has started in this process (``launches.count``), so a
    test or a benchmark can count the launches of a training step."""

    def __init__(self) -> None:
        self.count = 0


launches = LaunchCounter()


def launch(kernel: Callable, blocks: int | tuple, threads: int | tuple, *args: Any) -> None:
    """Launch ``kernel[blocks, threads]`` on the current stream (CuPy's on a GPU), after checking
    the grid and the block against CUDA's limits (a ValueError names the kernel and the limit)."""
    _check_launch_shape(kernel, blocks, threads)
    launches.count += 1
    if simulating():
        for position, argument in enumerate(args):
            _check_kernel_argument(kernel, position, argument)
        # the simulator copies every array argument back after the launch, which fails for
        # read-only views (np.broadcast_to): hand it a writable copy instead
        kernel[blocks, threads](
            *(
                np.array(a) if isinstance(a, np.ndarray) and not a.flags.writeable else a
                for a in args
            )
        )
        return
    _configured_launch(kernel, blocks, threads)(*(_kernel_argument(a) for a in args))


# Simulator tests launch a handful of blocks; a GPU gets enough blocks to fill every SM a few times.
MAX_STRIDE_BLOCKS_SIMULATOR = 2
MAX_STRIDE_BLOCKS_GPU = 1024


def stride_grid(n: int, threads: int) -> int:
    """Blocks for a grid-stride loop over ``n`` elements with ``threads`` threads a block."""
    cap = MAX_STRIDE_BLOCKS_SIMULATOR if simulating() else MAX_STRIDE_BLOCKS_GPU
    return max(1, min(cap, (n + threads - 1) // threads))
