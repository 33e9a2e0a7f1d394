"""A convolution's output pooled while it is still in cache: the 2x2, stride-2 max-pool of a plane
and its gradient, with the ReLU that Conv2d → ReLU → MaxPool2d(2) puts before the pool, defined
once for the convolutions that take ``pool=True`` (kernels/conv.py's im2col, kernels/winograd.py).

Math, for a plane s (OH, OW) of the convolution's output and its pooled plane p (PH, PW) =
(OH // 2, OW // 2) (PyTorch's floor rule: an odd last row or column is in no window):

    p[i, j]     = relu(max of s[2i : 2i + 2, 2j : 2j + 2])    (relu only when asked)
    where[i, j] = h·OW + w of that maximum, the first in row-major window order (equal maxima go
                  to the earliest; a NaN counts as the maximum, the first NaN wins), or -1 when
                  the ReLU passes no gradient there (the maximum is not > 0, a NaN included)
    ds[h, w]    = dp[i, j] where where[i, j] = h·OW + w, else 0

which is kernels/pool.py's max-pool (its argmax, ties and NaNs) and then kernels/_relu.py's ReLU
(max(v, 0), a NaN kept; gradient dp·[p > 0]), bit for bit: relu and max commute, so the ReLU
after the pool is the ReLU before it, on a quarter of the values.

Buffers: the CPU helpers work on one plane, flat and C-contiguous: s and ds (OH·OW,), p, dp and
where (PH·PW,), where int32. The CUDA kernels (for the device that pools after the convolution
rather than inside it) take whole tensors: y and dy (N, C, OH, OW), pooled, its gradient and where
(N, C, PH, PW).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import cuda, uint64
from numba.extending import register_jitable

from ._checks import output_gradient
from ._contract import KernelSpec
from ._cuda import array_module, cuda_kernel, empty, launch, stride_grid
from ._relu import relu_value

WHERE_DTYPE = np.dtype(np.int32)
NO_GRADIENT = -1  # where[i, j] of a window whose ReLU passes no gradient
THREADS_PER_BLOCK = 256


def pooled_shape(op: str, y_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(N, C, PH, PW) of a convolution's output (N, C, OH, OW) pooled 2x2 at stride 2; a
    ValueError when a side is under 2 (no window fits, as PyTorch's max_pool2d refuses)."""
    batch, channels, out_h, out_w = y_shape
    if out_h < 2 or out_w < 2:
        raise ValueError(
            f"{op}: a 2x2 max-pool needs an output of at least 2x2, the convolution gives "
            f"{out_h}x{out_w}"
        )
    return batch, channels, out_h // 2, out_w // 2


def pool_arguments(op: str, out: Any, y_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The pooled shape of a convolution asked for ``pool=True``, after refusing an ``out`` (it
    is y's, and there is no y)."""
    if out is not None:
        raise ValueError(f"{op}: pool=True writes no y, so it takes no out")
    return pooled_shape(op, y_shape)


def as_planes(array: Any) -> Any:
    """An (N, C, A, B) array as (N·C, A·B): one row a plane."""
    return array.reshape(array.shape[0] * array.shape[1], array.shape[2] * array.shape[3])


def pool_outputs(shape: tuple | None, dtype: Any, like: Any) -> tuple[Any, Any]:
    """pooled and where of ``shape``, or empty (0, 0, 0, 0) stand-ins when not pooling."""
    if shape is None:
        return np.empty((0, 0, 0, 0), dtype), np.empty((0, 0, 0, 0), WHERE_DTYPE)
    return empty(shape, dtype, like=like), empty(shape, WHERE_DTYPE, like=like)


def pooled_gradient(op: str, dy: Any, where: Any, y_shape: tuple, x: Any) -> tuple:
    """(dy, where, y_shape): a pooled output's gradient and its where, checked against the
    pooled shape of y_shape (N, C, OH, OW) and made C-contiguous."""
    shape = pooled_shape(op, y_shape)
    dy = output_gradient(op, dy, shape, x)
    check_where(op, where, shape, 0, 0)
    return dy, array_module(where).ascontiguousarray(where), y_shape


def output_gradients(op: str, dy: Any, where: Any, y_shape: tuple, x: Any) -> tuple:
    """(dy, pooled_grad, where) for a CPU backward kernel: without ``where`` (None), dy checked
    against y's shape and empty stand-ins; with it, the pooled gradient and where as (N·C,
    PH·PW) planes (:func:`pooled_gradient`), dy an empty (0, C, OH, OW) stand-in."""
    if where is None:
        dy = output_gradient(op, dy, y_shape, x)
        return dy, np.empty((0, 0), x.dtype), np.empty((0, 0), WHERE_DTYPE)
    pooled_grad, where, _ = pooled_gradient(op, dy, where, y_shape, x)
    return np.empty((0, *y_shape[1:]), x.dtype), as_planes(pooled_grad), as_planes(where)


@register_jitable
def first_max(best, best_at, value, at):
    """The running maximum of a window after ``value`` (found ``at``): strictly greater replaces
    it (equal maxima keep the first), a NaN replaces a number, and a NaN best stays. The max-pool
    rule, here once for every kernel that scans a window (kernels/pool.py's too)."""
    if best == best and (value > best or value != value):
        return value, at
    return best, best_at


@register_jitable
def _window(top_left, top_right, bottom_left, bottom_right, corner, out_w, relu, zero):
    """(pooled value, where) of one 2x2 window, its pixels in row-major order, its top-left pixel
    at ``corner`` (h·OW + w) of a plane with rows ``out_w`` long: NaN-ordered, then the ReLU
    (``zero`` the 0 of the values' dtype)."""
    best, offset = first_max(top_left, 0, top_right, 1)
    best, offset = first_max(best, offset, bottom_left, out_w)
    best, offset = first_max(best, offset, bottom_right, out_w + 1)
    if relu and not best > zero:
        return relu_value(best, zero), NO_GRADIENT
    return best, corner + offset


@register_jitable
def window_corners(pooled_h, pooled_w, out_w):
    """Each window's top-left pixel in its plane, h·OW + w, (PH·PW,) int32: what
    :func:`pool_plane` adds its winner's offset to."""
    corners = np.empty(pooled_h * pooled_w, np.int32)
    for window in range(corners.size):
        corners[window] = 2 * (window // pooled_w) * out_w + 2 * (window % pooled_w)
    return corners


@register_jitable
def pool_scratch(pooled_size, dtype):
    """The two rows :func:`pool_plane` works in, for planes of ``pooled_size`` windows."""
    return np.empty(2 * pooled_size, dtype), np.empty(2 * pooled_size, np.int32)


@register_jitable
def pool_plane(source, out_w, pooled, where, pooled_w, relu, larger, below, corners):
    """pooled and where (PH·PW,) of the plane source (OH·OW,) whose rows are ``out_w`` long, in
    two passes that LLVM vectorises (a window-by-window scan does not vectorise across rows of a
    few windows, and its branches mispredict on every other window of random data):

    1. Vertical: for each row pair and column, the larger of top and bottom (the bottom only if
       strictly larger) into ``larger``, and OW into ``below`` where it is the bottom, else 0:
       contiguous loads.
    2. Horizontal, flat over the plane: window g is the pair (2g, 2g+1) of pass 1's rows (they
       are 2·PW long), one loop with stride-2 loads. The right column wins if strictly larger,
       or on a tie when its winner is a top pixel and the left's a bottom one: exactly the first
       maximum in row-major window order (a, b / c, d: b comes before c).

    A plane holding a NaN is redone by the NaN-ordered scan (:func:`_scan_plane`). ``larger`` and
    ``below`` are :func:`pool_scratch`'s, ``corners`` :func:`window_corners`'."""
    zero = source.dtype.type(0)
    row = 2 * pooled_w
    nans = 0
    for i in range(pooled.size // pooled_w):
        top = source[2 * i * out_w : 2 * i * out_w + row]
        bottom = source[(2 * i + 1) * out_w : (2 * i + 1) * out_w + row]
        row_larger, row_below = larger[i * row : (i + 1) * row], below[i * row : (i + 1) * row]
        for j in range(row):
            upper, lower = top[j], bottom[j]
            nans += (upper != upper) | (lower != lower)
            bottom_wins = lower > upper
            row_larger[j] = lower if bottom_wins else upper
            row_below[j] = out_w if bottom_wins else 0
    for window in range(uint64(pooled.size)):
        left = window + window
        right = left + uint64(1)
        left_value, right_value = larger[left], larger[right]
        left_below, right_below = below[left], below[right]
        right_wins = (right_value > left_value) | (
            (right_value == left_value) & (left_below > right_below)
        )
        value = right_value if right_wins else left_value
        index = corners[window] + (right_below + 1 if right_wins else left_below)
        if relu:
            pooled[window] = relu_value(value, zero)
            where[window] = index if value > zero else NO_GRADIENT
        else:
            pooled[window] = value
            where[window] = index
    if nans:
        _scan_plane(source, out_w, pooled, where, pooled_w, relu)


@register_jitable
def _scan_plane(source, out_w, pooled, where, pooled_w, relu):
    """:func:`pool_plane` window by window, NaN-ordered: for planes that hold a NaN."""
    zero = source.dtype.type(0)
    for i in range(pooled.size // pooled_w):
        for j in range(pooled_w):
            corner = 2 * i * out_w + 2 * j
            pooled[i * pooled_w + j], where[i * pooled_w + j] = _window(
                source[corner], source[corner + 1], source[corner + out_w],
                source[corner + out_w + 1], corner, out_w, relu, zero,
            )  # fmt: skip


@register_jitable
def unpool_plane(grad_pooled, where, grad):
    """grad (OH·OW,) = 0 but grad[where[k]] = grad_pooled[k] (the windows do not overlap); gives
    how many entries of where are neither NO_GRADIENT nor inside the plane (skipped)."""
    grad[:] = 0
    outside = 0
    for k in range(where.size):
        index = where[k]
        if 0 <= index < grad.size:
            grad[index] = grad_pooled[k]
        elif index != NO_GRADIENT:
            outside += 1
    return outside


@register_jitable
def unpool_planes(grad_pooled, where, first, grads):
    """grads (P, OH·OW), planes first .. first + P - 1 of the pooled gradient and where (N·C,
    PH·PW) unpooled (:func:`unpool_plane`); gives the count of entries of where that name no
    pixel."""
    outside = 0
    for plane in range(grads.shape[0]):
        outside += unpool_plane(grad_pooled[first + plane], where[first + plane], grads[plane])
    return outside


def check_where(op: str, where: Any, shape: tuple[int, ...], outside: int, plane: int) -> None:
    """A ValueError when ``where`` is not an int32 array of ``shape`` (before the kernel), or when
    the kernel counted ``outside`` entries that name no pixel of the ``plane``-pixel planes."""
    if where.dtype != WHERE_DTYPE or tuple(where.shape) != tuple(shape):
        raise ValueError(
            f"{op} expects pool_argmax as an int32 array of shape {tuple(shape)}, got "
            f"{where.dtype} of shape {tuple(where.shape)}"
        )
    if outside:
        raise ValueError(
            f"{op}: {outside} pool_argmax entries are neither -1 nor inside the {plane}-pixel plane"
        )


# ---------------------------------------------------------------------------------------------
# CUDA: the pool and its gradient over whole tensors, after (before) the device's convolution


@cuda_kernel
def _pool_kernel_cuda(y, pooled, where, relu):
    pooled_h, pooled_w = pooled.shape[2], pooled.shape[3]
    out_w = y.shape[3]
    zero = y.dtype.type(0)
    for output in range(cuda.grid(1), pooled.size, cuda.gridsize(1)):
        plane, rest = output // (pooled_h * pooled_w), output % (pooled_h * pooled_w)
        n, c = plane // pooled.shape[1], plane % pooled.shape[1]
        top, left = 2 * (rest // pooled_w), 2 * (rest % pooled_w)
        pooled[n, c, top // 2, left // 2], where[n, c, top // 2, left // 2] = _window(
            y[n, c, top, left], y[n, c, top, left + 1], y[n, c, top + 1, left],
            y[n, c, top + 1, left + 1], top * out_w + left, out_w, relu, zero,
        )  # fmt: skip


@cuda_kernel
def _unpool_kernel_cuda(grad_pooled, where, grad):
    out_h, out_w = grad.shape[2], grad.shape[3]
    pooled_h, pooled_w = where.shape[2], where.shape[3]
    for pixel in range(cuda.grid(1), grad.size, cuda.gridsize(1)):
        plane, rest = pixel // (out_h * out_w), pixel % (out_h * out_w)
        n, c = plane // grad.shape[1], plane % grad.shape[1]
        h, w = rest // out_w, rest % out_w
        i, j = h // 2, w // 2
        value = grad.dtype.type(0)
        if i < pooled_h and j < pooled_w and where[n, c, i, j] == rest:
            value = grad_pooled[n, c, i, j]
        grad[n, c, h, w] = value


def pool_cuda(y: Any, relu: bool) -> tuple[Any, Any]:
    """(pooled, where) of the device array y (N, C, OH, OW), by one thread per pooled value."""
    shape = pooled_shape("pool", tuple(y.shape))
    pooled = empty(shape, y.dtype, like=y)
    where = empty(shape, WHERE_DTYPE, like=y)
    blocks = stride_grid(pooled.size, THREADS_PER_BLOCK)
    launch(_pool_kernel_cuda, blocks, THREADS_PER_BLOCK, y, pooled, where, bool(relu))
    return pooled, where


def unpool_cuda(grad_pooled: Any, where: Any, y_shape: tuple[int, ...]) -> Any:
    """The gradient (N, C, OH, OW) of the convolution's output, by one thread per pixel (each
    reads its window's where: no atomics); entries of where outside the plane route nothing."""
    grad = empty(y_shape, grad_pooled.dtype, like=grad_pooled)
    blocks = stride_grid(grad.size, THREADS_PER_BLOCK)
    launch(_unpool_kernel_cuda, blocks, THREADS_PER_BLOCK, grad_pooled, where, grad)
    return grad


def cuda_kernels() -> list[KernelSpec]:
    """The two kernels with one float32 specialisation each, for the PTX check (kernels/conv.py's
    family lists them; kernels/winograd.py launches them too)."""
    values, indices = numba.float32[:, :, :, ::1], numba.int32[:, :, :, ::1]
    return [
        KernelSpec(
            "pool2x2_relu",
            _pool_kernel_cuda,
            (values, values, indices, numba.boolean),
            THREADS_PER_BLOCK,
        ),
        KernelSpec("unpool2x2", _unpool_kernel_cuda, (values, indices, values), THREADS_PER_BLOCK),
    ]
