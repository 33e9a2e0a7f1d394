"""Batch normalisation and average pooling.

* ``batch_norm``: per channel c of x (N, C) or (N, C, *spatial), over its m = N·prod(spatial)
  values, y = (x − mean)·rstd·weight + bias with rstd = 1/√(var + eps). In training the batch's
  mean and biased variance normalise, and the running statistics (when given) are blended in
  place: running ← (1 − momentum)·running + momentum·batch, with the unbiased variance
  (PyTorch's convention). In eval the running statistics normalise; they are constants, so the
  backward is the affine map dx = weight·rstd·dy. Both run on the device's batch-norm kernels.
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
from typing import Any, Iterator

import numpy as np

from ..backend import conv_output_shape
from ..tensor import Function, Tensor
from .core import Pair, _pair

__all__ = ["batch_norm", "avg_pool2d", "adaptive_avg_pool2d"]


# ===================================================================== batch norm
class BatchNorm(Function):
    def forward(self, x, *affine, running_mean, running_var, has_weight, has_bias, training, momentum, eps):
        weight = affine[0] if has_weight else None
        bias = affine[-1] if has_bias else None
        self.x = self.device.xp.ascontiguousarray(x)
        self.weight, self.training, self.has_weight, self.has_bias = weight, training, has_weight, has_bias
        y, self.mean, self.rstd = self.device.batchnorm_forward(
            self.x, weight, bias, running_mean, running_var, training=training, momentum=momentum, eps=eps)
        return y

    def backward(self, grad):
        grad_x, grad_weight, grad_bias = self.device.batchnorm_backward(
            grad, self.x, self.weight, self.mean, self.rstd, training=self.training)
        return (grad_x,) + ((grad_weight,) if self.has_weight else ()) + ((grad_bias,) if self.has_bias else ())


def _check_channel_vector(name: str, vector: Tensor | None, x: Tensor) -> Any:
    """The array of a per-channel (C,) tensor after checking its shape and device; None stays None."""
    if vector is None:
        return None
    if vector.device is not x.device:
        raise RuntimeError(f"batch_norm: input is on {x.device} but {name} on {vector.device}")
    if vector.shape != (x.shape[1],):
        raise ValueError(f"batch_norm: {name} of shape {vector.shape} does not match input of shape {x.shape} "
                         f"(expected ({x.shape[1]},), one value per channel)")
    return vector.data


def batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Batch normalisation of x (N, C) or (N, C, *spatial) per channel (PyTorch's F.batch_norm).

    ``training=True`` normalises with the batch statistics and, when ``running_mean`` and
    ``running_var`` are given, updates them in place; ``training=False`` normalises with them.
    """
    if x.ndim < 2:
        raise ValueError(f"batch_norm: input must be (N, C) or (N, C, *spatial), got shape {x.shape}")
    running = [_check_channel_vector(name, stats, x)
               for name, stats in (("running_mean", running_mean), ("running_var", running_var))]
    for name, parameter in (("weight", weight), ("bias", bias)):
        _check_channel_vector(name, parameter, x)
    affine = [p for p in (weight, bias) if p is not None]
    return BatchNorm.apply(x, *affine, running_mean=running[0], running_var=running[1],
                           has_weight=weight is not None, has_bias=bias is not None, training=bool(training),
                           momentum=float(momentum), eps=float(eps))


# ===================================================================== average pooling
def _window_slices(kernel: tuple[int, int], stride: tuple[int, int],
                   out_hw: tuple[int, int]) -> Iterator[tuple[slice, ...]]:
    """For each offset (a, b) in the kernel, the slice of the padded input that holds the value
    at window offset (a, b) of every output position."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    for a in range(kh):
        for b in range(kw):
            yield (slice(None), slice(None), slice(a, a + sh * (oh - 1) + 1, sh), slice(b, b + sw * (ow - 1) + 1, sw))


class AvgPool2d(Function):
    def forward(self, x, kernel_size, stride, padding):
        if x.ndim != 4:
            raise ValueError(f"avg_pool2d: input must be (N, C, H, W), got shape {tuple(x.shape)}")
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
        return (xp.ascontiguousarray(grad_padded[:, :, ph:ph + h, pw:pw + w]),)


def avg_pool2d(x: Tensor, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0) -> Tensor:
    """Mean over kernel_size windows of x (N, C, H, W) zero-padded by ``padding``; the padding
    counts in the divisor (PyTorch's default). ``stride`` defaults to ``kernel_size``."""
    kernel = _pair(kernel_size, "kernel_size")
    pad = _pair(padding, "padding")
    step = kernel if stride is None else _pair(stride, "stride")
    if min(kernel) < 1 or min(step) < 1:
        raise ValueError(f"avg_pool2d: kernel_size {kernel} and stride {step} must be positive")
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"avg_pool2d: padding {pad} must be at most half the kernel size {kernel}")
    return AvgPool2d.apply(x, kernel_size=kernel, stride=step, padding=pad)


def _bin_matrix(size: int, out_size: int, dtype: np.dtype) -> np.ndarray:
    """(out_size, size): row i averages input positions [⌊i·size/out⌋, ⌈(i+1)·size/out⌉)."""
    matrix = np.zeros((out_size, size), dtype=np.float64)
    for i in range(out_size):
        start, end = (i * size) // out_size, math.ceil((i + 1) * size / out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix.astype(dtype)


class AdaptiveAvgPool2d(Function):
    def forward(self, x, output_size):
        if x.ndim != 4:
            raise ValueError(f"adaptive_avg_pool2d: input must be (N, C, H, W), got shape {tuple(x.shape)}")
        self.rows = self.device.asarray(_bin_matrix(x.shape[2], output_size[0], x.dtype))
        self.columns = self.device.asarray(_bin_matrix(x.shape[3], output_size[1], x.dtype))
        return self.device.xp.matmul(self.rows @ x, self.columns.T)

    def backward(self, grad):
        return (self.device.xp.matmul(self.rows.T @ grad, self.columns),)


def adaptive_avg_pool2d(x: Tensor, output_size: Pair) -> Tensor:
    """Average x (N, C, H, W) into an ``output_size`` grid of bins (1 → global average pool)."""
    size = _pair(output_size, "output_size")
    if min(size) < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got {output_size!r}")
    return AdaptiveAvgPool2d.apply(x, output_size=size)
