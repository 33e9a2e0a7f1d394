"""2-D transposed convolution, ``conv_transpose2d`` (:class:`ConvTranspose2d`): the adjoint of
conv2d's im2col path (:mod:`.conv`, whose docstring defines the stride S, padding P, dilation D
and G groups), with weight (C, OC/G, KH, KW) = w2 (C, OC/G·KH·KW) mapping x (N, C, H, W) to
y (N, OC, OH, OW),
OH = (H-1)·S - 2P + D·(KH-1) + output_padding + 1: per chunk X2 = x as (C, n·H·W),
cols = w2ᵀ·X2 (OC·KH·KW, n·H·W), y = col2im(cols) (+ b). Backward: dcols = im2col(dY),
dX = w2·dcols, dW += X2·dcolsᵀ, db = Σ dY. The conv that maps (OH, OW) back has an (H, W)
output plane, or a larger one when output_padding >= S (allowed below D): x is then padded with
zero rows and columns at the far side to fit it.
"""

from __future__ import annotations

from typing import Any

from ..backend import conv_output_shape
from ..tensor import Function, Tensor
from .arguments import Pair, to_pair
from .conv import (
    _accumulate,
    _by_group,
    _channel_rows,
    _check_conv_shapes,
    _pad_far_side,
    _window_arguments,
    conv_image_chunks,
)

__all__ = ["ConvTranspose2d", "conv_transpose2d", "conv_transpose_output_shape"]


def conv_transpose_output_shape(
    h: int,
    w: int,
    kernel_hw: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    output_padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """(OH, OW) = (H-1)·S - 2P + D·(K-1) + output_padding + 1 of conv_transpose2d over an h x w
    plane; ValueError where PyTorch raises (output_padding neither below the stride nor below the
    dilation, or an output of no pixels)."""
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation, strict=True)):
        raise ValueError(
            f"conv_transpose2d: output_padding must be smaller than either stride or dilation, "
            f"got output_padding={output_padding}, stride={stride}, dilation={dilation}"
        )
    out = tuple(
        (size - 1) * s - 2 * p + d * (k - 1) + o + 1
        for size, k, s, p, o, d in zip(
            (h, w), kernel_hw, stride, padding, output_padding, dilation, strict=True
        )
    )
    if min(out) < 1:
        raise ValueError(
            f"conv_transpose2d: input of {h}x{w} pixels gives an output of {out[0]}x{out[1]}: "
            f"too small"
        )
    return out


class ConvTranspose2d(Function):
    """conv_transpose2d: the adjoint of conv2d's im2col path (see the module docstring), onto
    ``out_hw`` planes whose conv2d output plane is exactly x's (conv_transpose2d pads x to fit)."""

    def forward(self, x, weight, *bias, stride, padding, dilation, groups, out_hw):
        _check_conv_shapes("conv_transpose2d", x, weight, groups)
        xp, device = self.device.xp, self.device
        n, in_channels, h, w = x.shape
        out_channels, kernel_hw = weight.shape[1] * groups, tuple(weight.shape[2:])
        if conv_output_shape(*out_hw, kernel_hw, stride, padding, dilation) != (h, w):
            raise ValueError(
                f"conv_transpose2d: input of shape {tuple(x.shape)} is not the conv2d output of "
                f"a {out_hw[0]}x{out_hw[1]} plane"
            )
        self.x, self.groups = xp.ascontiguousarray(x), groups
        self.window = (kernel_hw, stride, padding, dilation)
        self.w2 = weight.reshape(in_channels, -1)  # (C, OC/G·KH·KW)
        self.chunks = conv_image_chunks(
            device, n, self.w2.shape[1] * groups, in_channels, h * w, x.itemsize
        )
        y = device.empty((n, out_channels, *out_hw), x.dtype)
        for start, stop in self.chunks:
            if start == stop:  # an empty batch: nothing to compute
                continue
            cols = device.matmul(
                _by_group(self.w2, groups), self._input_rows(start, stop), True, False
            )
            device.col2im(
                cols.reshape(-1, cols.shape[-1]),
                y[start:stop].shape,
                *self.window,
                out=y[start:stop],
            )
        if bias:
            y += bias[0][:, None, None]
        return y

    def _input_rows(self, start: int, stop: int) -> Any:
        """X2 of images [start, stop): (C, n·H·W), by group."""
        planes = self.x[start:stop].reshape(stop - start, self.x.shape[1], -1)
        return _by_group(_channel_rows(self.device.xp, planes), self.groups)

    def backward(self, grad):
        xp, device, groups = self.device.xp, self.device, self.groups
        grad = xp.ascontiguousarray(grad)
        need_x, need_w = self.inputs[0].requires_grad, self.inputs[1].requires_grad
        need_b = len(self.inputs) == 3 and self.inputs[2].requires_grad
        n, in_channels, h, w = self.x.shape
        grad_x = device.empty((n, in_channels, h * w), self.x.dtype) if need_x else None
        grad_w = None
        for start, stop in self.chunks:
            if start == stop:  # an empty batch: the gradients are zeros (below)
                continue
            grad_cols = _by_group(device.im2col(grad[start:stop], *self.window), groups)
            if need_x:  # dX = w2·dcols, (C, n·H·W) back to NCHW planes
                rows = device.matmul(_by_group(self.w2, groups), grad_cols)
                grad_x[start:stop] = rows.reshape(in_channels, stop - start, -1).transpose(1, 0, 2)
            if need_w:  # dW += X2·dcolsᵀ, (C/G, OC/G·KH·KW) per group
                term = device.matmul(self._input_rows(start, stop), grad_cols, False, True)
                grad_w = _accumulate(grad_w, term)
        if need_w and grad_w is None:  # no image contributed
            grad_w = xp.zeros(self.w2.shape, self.x.dtype)
        return (
            grad_x.reshape(self.x.shape) if need_x else None,
            grad_w.reshape(self.inputs[1].shape) if need_w else None,
            grad.sum(axis=(0, 2, 3)) if need_b else None,
        )


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Pair = 1,
    padding: Pair = 0,
    output_padding: Pair = 0,
    groups: int = 1,
    dilation: Pair = 1,
) -> Tensor:
    """2-D transposed convolution (PyTorch's conv_transpose2d, the gradient of conv2d with respect
    to its input): input x (N, C, H, W), weight (C, OC/groups, KH, KW), y (N, OC, OH, OW) with
    OH = (H-1)·stride - 2·padding + dilation·(KH-1) + output_padding + 1. An unbatched x
    (C, H, W) gives y (OC, OH, OW), as in PyTorch."""
    x = input
    if x.ndim == 3:
        y = conv_transpose2d(
            x.unsqueeze(0), weight, bias, stride, padding, output_padding, groups, dilation
        )
        return y.squeeze(0)
    stride, dilation = _window_arguments("conv_transpose2d", stride, dilation, groups)
    padding, output_padding = to_pair(padding, "padding"), to_pair(output_padding, "output_padding")
    _check_conv_shapes("conv_transpose2d", x, weight, groups)
    h, w = x.shape[2:]
    kernel_hw = tuple(weight.shape[2:])
    out_hw = conv_transpose_output_shape(h, w, kernel_hw, stride, padding, output_padding, dilation)
    # With output_padding >= stride the conv mapping y back to x has a larger output plane than
    # x: the rows and columns past x's are zeros of x (they meet no weights).
    conv_h, conv_w = conv_output_shape(*out_hw, kernel_hw, stride, padding, dilation)
    x = _pad_far_side(x, conv_h - h, conv_w - w)
    return ConvTranspose2d.apply(
        *(x, weight, *([bias] if bias is not None else [])),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        out_hw=out_hw,
    )
