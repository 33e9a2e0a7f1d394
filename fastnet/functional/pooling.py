"""Pooling over the spatial axes of x (N, C, H, W): max, average, adaptive average.

* ``max_pool2d``: the pool kernel returns the output and the argmax that routes the gradient
  (dx gets each dy at the input position its window's maximum came from).
* ``avg_pool2d``: the mean of each kernel window of the zero-padded input, padding counted in the
  divisor (PyTorch's default ``count_include_pad=True``). Written as kh·kw shifted, strided slices
  of the padded input added up: O(kh·kw) array ops on whole tensors, each O(output); the backward
  adds the scaled gradient back through the same slices.
* ``adaptive_avg_pool2d``: output cell (i, j) is the mean of rows [⌊i·H/OH⌋, ⌈(i+1)·H/OH⌉) and
  columns [⌊j·W/OW⌋, ⌈(j+1)·W/OW⌉) (PyTorch's bins, overlapping when OH does not divide H).
  The mean over a box is separable, so y = P_h · x · P_wᵀ with P_h (OH, H) holding 1/bin-height
  in each row's bin (P_w likewise), and the backward is dx = P_hᵀ · dy · P_w. Output 1×1 is the
  global average pool.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..backend import conv_output_shape
from ..tensor import Function, Tensor
from .arguments import Pair, to_pair

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


def _check_images(op: str, x: Any) -> None:
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be (N, C, H, W), got shape {tuple(x.shape)}")


# ===================================================================== max pooling
class MaxPool2d(Function):
    def forward(self, x, kernel_size, stride, padding):
        _check_images("max_pool2d", x)
        self.x_shape, self.params = x.shape, (kernel_size, stride, padding)
        out, self.argmax = self.device.maxpool2d_forward(
            self.device.xp.ascontiguousarray(x), *self.params
        )
        return out

    def backward(self, grad):
        grad = self.device.xp.ascontiguousarray(grad)
        return (self.device.maxpool2d_backward(grad, self.argmax, self.x_shape, *self.params),)


def max_pool2d(
    x: Tensor, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0
) -> Tensor:
    """Max over kernel_size windows (stride defaults to kernel_size, as in PyTorch)."""
    kernel = to_pair(kernel_size, "kernel_size")
    step = kernel if stride is None else to_pair(stride, "stride")
    return MaxPool2d.apply(x, kernel_size=kernel, stride=step, padding=to_pair(padding, "padding"))


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


class AvgPool2d(Function):
    def forward(self, x, kernel_size, stride, padding):
        _check_images("avg_pool2d", x)
        xp = self.device.xp
        (ph, pw), (n, c, h, w) = padding, x.shape
        out_hw = conv_output_shape(h, w, kernel_size, stride, padding)
        self.x_shape, self.padding, self.params = x.shape, padding, (kernel_size, stride, out_hw)
        self.scale = x.dtype.type(1 / (kernel_size[0] * kernel_size[1]))
        padded = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        out = xp.zeros((n, c) + out_hw, dtype=x.dtype)
        for window in _window_slices(*self.params):
            out += padded[window]
        out *= self.scale
        return out

    def backward(self, grad):
        xp = self.device.xp
        (ph, pw), (n, c, h, w) = self.padding, self.x_shape
        grad_padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad.dtype)
        scaled = grad * self.scale
        for window in _window_slices(*self.params):
            grad_padded[window] += scaled
        return (xp.ascontiguousarray(grad_padded[:, :, ph : ph + h, pw : pw + w]),)


def avg_pool2d(
    x: Tensor, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0
) -> Tensor:
    """Mean over kernel_size windows of x (N, C, H, W) zero-padded by ``padding``; the padding
    counts in the divisor (PyTorch's default). ``stride`` defaults to ``kernel_size``."""
    kernel = to_pair(kernel_size, "kernel_size")
    pad = to_pair(padding, "padding")
    step = kernel if stride is None else to_pair(stride, "stride")
    if min(kernel) < 1 or min(step) < 1:
        raise ValueError(f"avg_pool2d: kernel_size {kernel} and stride {step} must be positive")
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"avg_pool2d: padding {pad} must be at most half the kernel size {kernel}")
    return AvgPool2d.apply(x, kernel_size=kernel, stride=step, padding=pad)


# ===================================================================== adaptive average pooling
def _bin_matrix(size: int, out_size: int, dtype: np.dtype) -> np.ndarray:
    """(out_size, size): row i averages input positions [⌊i·size/out⌋, ⌈(i+1)·size/out⌉)."""
    matrix = np.zeros((out_size, size), dtype=np.float64)
    for i in range(out_size):
        start, end = (i * size) // out_size, math.ceil((i + 1) * size / out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix.astype(dtype)


class AdaptiveAvgPool2d(Function):
    def forward(self, x, output_size):
        _check_images("adaptive_avg_pool2d", x)
        self.rows = self.device.asarray(_bin_matrix(x.shape[2], output_size[0], x.dtype))
        self.columns = self.device.asarray(_bin_matrix(x.shape[3], output_size[1], x.dtype))
        return self.device.xp.matmul(self.rows @ x, self.columns.T)

    def backward(self, grad):
        return (self.device.xp.matmul(self.rows.T @ grad, self.columns),)


def adaptive_avg_pool2d(x: Tensor, output_size: Pair) -> Tensor:
    """Average x (N, C, H, W) into an ``output_size`` grid of bins (1 → global average pool)."""
    size = to_pair(output_size, "output_size")
    if min(size) < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got {output_size!r}")
    return AdaptiveAvgPool2d.apply(x, output_size=size)
