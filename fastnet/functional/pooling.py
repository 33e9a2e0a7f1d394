"""Pooling over the spatial axes of x (N, C, H, W), or of an unbatched (C, H, W): max, average,
adaptive average.

Window geometry is PyTorch's: ``kernel_size``, ``stride`` (default: the kernel), ``padding``
(at most half the kernel) and ``ceil_mode``, under which OH = ceil((H + 2·pad - k) / stride) + 1
(less one when that last window would start in the bottom padding): the last window may hang
past the padded edge, and the cells past it are not part of the window.

* ``max_pool2d``: the pool kernel returns the output and the argmax that routes the gradient
  (dx gets each dy at the input position its window's maximum came from); ``return_indices``
  also returns that argmax, as PyTorch's flat h·W + w of each plane, int64. When the op will not
  be recorded (no_grad, or an input that requires no gradient) and no indices are asked for, the
  kernel skips the argmax (its forward-only path).
* ``avg_pool2d``: the sum over each window of the zero-padded input divided by the window's size,
  as PyTorch counts it: with ``count_include_pad`` (the default) the window clipped to the padded
  edge (so the padding counts, and the cells ``ceil_mode`` hangs past it do not), without it the
  window clipped to the image; ``divisor_override`` replaces either. The divisor of window
  (i, j) is a row count times a column count, a (OH, OW) map unless every window has the full
  kh·kw. Written as kh·kw shifted, strided slices of the padded input added up: O(kh·kw) array
  ops on whole tensors, each O(output); the backward adds the scaled gradient back through the
  same slices.
* ``adaptive_avg_pool2d``: output cell (i, j) is the mean of rows [⌊i·H/OH⌋, ⌈(i+1)·H/OH⌉) and
  columns [⌊j·W/OW⌋, ⌈(j+1)·W/OW⌉) (PyTorch's bins, overlapping when OH does not divide H).
  The mean over a box is separable, so y = P_h · x · P_wᵀ with P_h (OH, H) holding 1/bin-height
  in each row's bin (P_w likewise), and the backward is dx = P_hᵀ · dy · P_w. Output 1×1 is the
  global average pool.
* ``adaptive_max_pool2d``: the max over the same bins. When they tile the input (OH divides H,
  OW divides W) it is max_pool2d with a kernel and stride of H/OH × W/OW; otherwise each bin's
  argmax is found outside the graph and the output is a gather of x at those positions, so the
  gradient routes back through the gather.
* ``output_size`` of the adaptive pools: an int, or a pair in which None keeps the input's size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..autograd import is_grad_enabled
from ..backend import conv_output_shape
from ..tensor import Function, Tensor
from .arguments import Pair, to_pair

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"]


def _check_images(op: str, x: Any) -> None:
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{op}: input must be (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}"
        )


def _per_image(op: str, pool: Callable[[Tensor], Any], x: Tensor) -> Any:
    """``pool`` of a batch; an unbatched (C, H, W) input goes through as a batch of one."""
    _check_images(op, x)
    if x.ndim == 4:
        return pool(x)
    result = pool(x.unsqueeze(0))
    if isinstance(result, tuple):
        return tuple(part.squeeze(0) for part in result)
    return result.squeeze(0)


def _window_arguments(
    op: str, kernel_size: Pair, stride: Pair | None, padding: Pair
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    kernel = to_pair(kernel_size, "kernel_size")
    pad = to_pair(padding, "padding")
    step = kernel if stride is None else to_pair(stride, "stride")
    if min(kernel) < 1 or min(step) < 1:
        raise ValueError(f"{op}: kernel_size {kernel} and stride {step} must be positive")
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {pad} must be at most half the kernel size {kernel}")
    return kernel, step, pad


# ===================================================================== max pooling
def _records(x: Any) -> bool:
    """Whether an op on ``x`` alone goes on the autograd graph (as ``Function.apply`` decides):
    x requires a gradient and grad mode is on. A non-tensor answers True: apply raises on it."""
    return getattr(x, "requires_grad", True) is not False and is_grad_enabled()


class MaxPool2d(Function):
    def forward(self, x, kernel_size, stride, padding, ceil_mode, indices, with_argmax=True):
        self.x_shape, self.params = x.shape, (kernel_size, stride, padding, ceil_mode)
        # without_argmax: no backward will run (max_pool2d knows the op is not recorded)
        out, self.argmax = self.device.maxpool2d_forward(
            self.device.xp.ascontiguousarray(x), *self.params, with_argmax=with_argmax
        )
        if indices is not None:  # return_indices: the caller collects the argmax
            indices.append(self.argmax)
        return out

    def backward(self, grad):
        grad = self.device.xp.ascontiguousarray(grad)
        return (self.device.maxpool2d_backward(grad, self.argmax, self.x_shape, *self.params),)


def max_pool2d(
    input: Tensor,
    kernel_size: Pair,
    stride: Pair | None = None,
    padding: Pair = 0,
    dilation: Pair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Max over kernel_size windows (stride defaults to kernel_size, as in PyTorch); with
    ``return_indices``, (output, indices) where indices (int64) holds each maximum's flat
    position h·W + w in its plane."""
    kernel, step, pad = _window_arguments("max_pool2d", kernel_size, stride, padding)
    if to_pair(dilation, "dilation") != (1, 1):
        raise NotImplementedError(f"max_pool2d: dilation {dilation!r} is not supported (only 1)")

    def pool(images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        indices: list | None = [] if return_indices else None
        out = MaxPool2d.apply(
            images,
            kernel_size=kernel,
            stride=step,
            padding=pad,
            ceil_mode=bool(ceil_mode),
            indices=indices,
            # the argmax only routes the gradient: skip it when the op will not be recorded
            with_argmax=return_indices or _records(images),
        )
        if indices is None:
            return out
        return out, Tensor._wrap(indices[0].astype(np.int64), out.device)

    return _per_image("max_pool2d", pool, input)


# ===================================================================== average pooling
def _window_slices(
    kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]
) -> Iterator[tuple[slice, ...]]:
    """For each offset (a, b) in the kernel, the slice of the padded input that holds the value
    at window offset (a, b) of every output position."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    for a in range(kh):
        for b in range(kw):
            yield (
                slice(None),
                slice(None),
                slice(a, a + sh * (oh - 1) + 1, sh),
                slice(b, b + sw * (ow - 1) + 1, sw),
            )


def _window_counts(
    size: int, out: int, kernel: int, stride: int, pad: int, count_include_pad: bool
) -> np.ndarray:
    """How many cells each of the ``out`` windows along one axis averages (PyTorch's rule)."""
    starts = np.arange(out) * stride - pad
    ends = np.minimum(starts + kernel, size + pad)
    if count_include_pad:
        return ends - starts
    return np.minimum(ends, size) - np.maximum(starts, 0)


class AvgPool2d(Function):
    saves_inputs = saves_output = False  # backward reads neither

    def forward(self, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor):
        xp = self.device.xp
        (kh, kw), (sh, sw), (ph, pw), (n, c, h, w) = kernel_size, stride, padding, x.shape
        out_hw = conv_output_shape(h, w, kernel_size, stride, padding, ceil_mode=ceil_mode)
        # ceil_mode's last window may reach past the padded edge: zeros there add nothing
        extra = ((out_hw[0] - 1) * sh + kh - h - 2 * ph, (out_hw[1] - 1) * sw + kw - w - 2 * pw)
        self.pads = ((ph, ph + max(extra[0], 0)), (pw, pw + max(extra[1], 0)))
        self.x_shape, self.params = x.shape, (kernel_size, stride, out_hw)
        if divisor is None:
            rows = _window_counts(h, out_hw[0], kh, sh, ph, count_include_pad)
            columns = _window_counts(w, out_hw[1], kw, sw, pw, count_include_pad)
            divisor = np.outer(rows, columns)
            if (divisor == kh * kw).all():
                divisor = kh * kw
        if np.ndim(divisor):
            self.scale = self.device.asarray(1 / divisor, dtype=x.dtype)
        else:
            self.scale = x.dtype.type(1 / divisor)
        padded = xp.pad(x, ((0, 0), (0, 0), *self.pads)) if any(sum(self.pads, ())) else x
        out = xp.zeros((n, c) + out_hw, dtype=x.dtype)
        for window in _window_slices(*self.params):
            out += padded[window]
        out *= self.scale
        return out

    def backward(self, grad):
        xp = self.device.xp
        ((top, bottom), (left, right)), (n, c, h, w) = self.pads, self.x_shape
        grad_padded = xp.zeros((n, c, h + top + bottom, w + left + right), dtype=grad.dtype)
        scaled = grad * self.scale
        for window in _window_slices(*self.params):
            grad_padded[window] += scaled
        return (xp.ascontiguousarray(grad_padded[:, :, top : top + h, left : left + w]),)


def avg_pool2d(
    input: Tensor,
    kernel_size: Pair,
    stride: Pair | None = None,
    padding: Pair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """Mean over kernel_size windows of x (N, C, H, W) zero-padded by ``padding``; the padding
    counts in the divisor unless ``count_include_pad=False``, and ``divisor_override`` replaces
    the divisor (PyTorch's rules). ``stride`` defaults to ``kernel_size``."""
    kernel, step, pad = _window_arguments("avg_pool2d", kernel_size, stride, padding)
    if divisor_override is not None and (
        int(divisor_override) != divisor_override or divisor_override == 0
    ):
        raise ValueError(
            f"avg_pool2d: divisor_override must be a non-zero int, got {divisor_override!r}"
        )
    return _per_image(
        "avg_pool2d",
        lambda images: AvgPool2d.apply(
            images,
            kernel_size=kernel,
            stride=step,
            padding=pad,
            ceil_mode=bool(ceil_mode),
            count_include_pad=bool(count_include_pad),
            divisor=divisor_override,
        ),
        input,
    )


# ===================================================================== adaptive average pooling
@functools.lru_cache(maxsize=64)
def _bin_matrix(size: int, out_size: int, dtype: np.dtype) -> np.ndarray:
    """(out_size, size): row i averages input positions [⌊i·size/out⌋, ⌈(i+1)·size/out⌉).
    Cached, so read-only."""
    matrix = np.zeros((out_size, size), dtype=np.float64)
    for i in range(out_size):
        start, end = (i * size) // out_size, math.ceil((i + 1) * size / out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    matrix = matrix.astype(dtype)
    matrix.flags.writeable = False
    return matrix


class AdaptiveAvgPool2d(Function):
    """Each bin's mean: y = R·x·Cᵀ with the bin matrices R (OH, H) and C (OW, W); the global pool
    (1x1 bins) as one matrix-vector product of the (·, H·W) planes with 1/(H·W)."""

    def forward(self, x, output_size):
        _check_images("adaptive_avg_pool2d", x)
        if x.dtype.kind != "f":  # a bin's mean of integers (PyTorch refuses them too)
            raise TypeError(f"adaptive_avg_pool2d: input must be floating point, got {x.dtype}")
        self.x_shape, (h, w), xp = x.shape, x.shape[-2:], self.device.xp
        if output_size == (1, 1):
            if h * w == 0:  # the mean of nothing, as PyTorch gives it
                return xp.full((*x.shape[:-2], 1, 1), np.nan, x.dtype)
            planes = xp.ascontiguousarray(x).reshape(-1, h * w)
            mean = planes @ xp.full(h * w, 1 / (h * w), x.dtype)
            return mean.reshape(*x.shape[:-2], 1, 1)
        self.rows = self.device.asarray(_bin_matrix(h, output_size[0], x.dtype))
        self.columns = self.device.asarray(_bin_matrix(w, output_size[1], x.dtype))
        return xp.matmul(self.rows @ x, self.columns.T)

    def backward(self, grad):
        xp, (h, w) = self.device.xp, self.x_shape[-2:]
        if grad.shape[-2:] == (1, 1):
            if h * w == 0:
                return (xp.zeros(self.x_shape, grad.dtype),)
            return (xp.broadcast_to(grad * grad.dtype.type(1 / (h * w)), self.x_shape).copy(),)
        return (xp.matmul(self.rows.T @ grad, self.columns),)


def _adaptive_size(op: str, output_size: Any, x: Tensor) -> tuple[int, int]:
    """PyTorch's ``output_size``: an int, or a pair whose None keeps the input's size."""
    _check_images(op, x)
    if not isinstance(output_size, (int, np.integer)):
        output_size = tuple(
            x.shape[-2 + axis] if size is None else size for axis, size in enumerate(output_size)
        )
    size = to_pair(output_size, "output_size")
    if min(size) < 1:
        raise ValueError(f"{op}: output_size must be positive, got {output_size!r}")
    return size


def adaptive_avg_pool2d(input: Tensor, output_size: Pair | tuple[int | None, int | None]) -> Tensor:
    """Average x (N, C, H, W) or (C, H, W) into an ``output_size`` grid of bins (1 → global
    average pool; None keeps that axis)."""
    size = _adaptive_size("adaptive_avg_pool2d", output_size, input)
    return AdaptiveAvgPool2d.apply(input, output_size=size)


# ===================================================================== adaptive max pooling
def _bin_bounds(size: int, out_size: int) -> list[tuple[int, int]]:
    """[start, end) of each of the ``out_size`` bins over ``size`` positions (PyTorch's)."""
    return [((i * size) // out_size, math.ceil((i + 1) * size / out_size)) for i in range(out_size)]


def _adaptive_argmax(xp: Any, images: Any, size: tuple[int, int]) -> Any:
    """int64 (N, C, OH, OW): the flat h·W + w of each bin's maximum (the first, in row-major
    order, among equals; a NaN wins, as in PyTorch)."""
    (n, c, h, w), (oh, ow) = images.shape, size
    indices = xp.empty((n, c, oh, ow), dtype=np.int64)
    for i, (top, bottom) in enumerate(_bin_bounds(h, oh)):
        for j, (left, right) in enumerate(_bin_bounds(w, ow)):
            window = images[:, :, top:bottom, left:right].reshape(n, c, -1)
            flat = xp.argmax(xp.where(xp.isnan(window), xp.inf, window), axis=2)
            indices[:, :, i, j] = (top + flat // (right - left)) * w + left + flat % (right - left)
    return indices


def adaptive_max_pool2d(
    input: Tensor,
    output_size: Pair | tuple[int | None, int | None],
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Max of x (N, C, H, W) or (C, H, W) over an ``output_size`` grid of bins (PyTorch's
    bins, as adaptive_avg_pool2d's); with ``return_indices``, (output, indices) with PyTorch's
    flat h·W + w positions. Bins that tile the input exactly go through the max-pool kernel;
    others gather each bin's argmax, so the gradient flows to it."""
    size = _adaptive_size("adaptive_max_pool2d", output_size, input)

    def pool(images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        (n, c, h, w), (oh, ow) = images.shape, size
        if h % oh == 0 and w % ow == 0 and n * c:
            window = (h // oh, w // ow)
            return max_pool2d(images, window, window, return_indices=return_indices)
        indices = Tensor._wrap(_adaptive_argmax(images.device.xp, images.data, size), images.device)
        out = images.reshape(n, c, h * w).gather(2, indices.reshape(n, c, oh * ow))
        out = out.reshape(n, c, oh, ow)
        return (out, indices) if return_indices else out

    return _per_image("adaptive_max_pool2d", pool, input)
