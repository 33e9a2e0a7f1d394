"""Sliding blocks and sub-pixel rearrangements: ``unfold``, ``fold``, ``pixel_shuffle``,
``pixel_unshuffle``.

* ``unfold(x, kernel_size, dilation, padding, stride)``: x (N, C, H, W) → (N, C·kh·kw, L), column
  l holding the l-th receptive field (L = OH·OW, the convolution's output size), rows ordered
  (c, i, j) as PyTorch's. It is the device's im2col, whose (C·kh·kw, N·L) layout is transposed
  to batch-first; its backward is the adjoint, col2im (overlapping blocks add).
* ``fold(cols, output_size, kernel_size, dilation, padding, stride)``: the adjoint, (N, C·kh·kw,
  L) → (N, C, H, W) with (H, W) = ``output_size``, summing the values blocks place on the same
  pixel: col2im; its backward is im2col. Unbatched inputs ((C, H, W) for unfold, (C·kh·kw, L)
  for fold) go through as a batch of one.
* ``pixel_shuffle(x, r)``: (*, C·r², H, W) → (*, C, H·r, W·r), y[c, h·r + i, w·r + j] =
  x[c·r² + i·r + j, h, w]; ``pixel_unshuffle`` its inverse. Reshapes and a permute, so their
  gradients are those ops'.
"""

from __future__ import annotations

from typing import Any

from ..backend import conv_output_shape
from ..tensor import Function, Tensor
from .arguments import Pair, to_pair

__all__ = ["unfold", "fold", "pixel_shuffle", "pixel_unshuffle"]


class Unfold(Function):
    saves_inputs = saves_output = False  # backward needs only the shapes

    def forward(self, x, window):
        xp = self.device.xp
        self.x_shape, self.window = x.shape, window
        cols = self.device.im2col(xp.ascontiguousarray(x), *window)
        blocks = cols.reshape(cols.shape[0], x.shape[0], -1)
        return xp.ascontiguousarray(blocks.transpose(1, 0, 2))

    def backward(self, grad):
        return (self.device.col2im(_cols_of(self.device.xp, grad), self.x_shape, *self.window),)


class Fold(Function):
    saves_inputs = saves_output = False

    def forward(self, blocks, image_shape, window):
        self.window = window
        return self.device.col2im(_cols_of(self.device.xp, blocks), image_shape, *window)

    def backward(self, grad):
        xp = self.device.xp
        cols = self.device.im2col(xp.ascontiguousarray(grad), *self.window)
        blocks = cols.reshape(cols.shape[0], grad.shape[0], -1)
        return (xp.ascontiguousarray(blocks.transpose(1, 0, 2)),)


def _cols_of(xp: Any, blocks: Any) -> Any:
    """(N, R, L) blocks as the kernels' (R, N·L) columns."""
    return xp.ascontiguousarray(blocks.transpose(1, 0, 2)).reshape(blocks.shape[1], -1)


def _window(
    kernel_size: Pair, dilation: Pair, padding: Pair, stride: Pair
) -> tuple[tuple[int, int], ...]:
    """The (kernel, stride, padding, dilation) the im2col kernels take, each an (h, w) pair."""
    kernel, step = to_pair(kernel_size, "kernel_size"), to_pair(stride, "stride")
    spacing = to_pair(dilation, "dilation")
    if min(kernel) < 1 or min(step) < 1 or min(spacing) < 1:
        raise ValueError(
            f"kernel_size {kernel}, stride {step} and dilation {spacing} must be positive"
        )
    return kernel, step, to_pair(padding, "padding"), spacing


def _batched(op: str, x: Tensor, batched_ndim: int, run: Any) -> Tensor:
    if x.ndim == batched_ndim:
        return run(x)
    if x.ndim == batched_ndim - 1:
        return run(x.unsqueeze(0)).squeeze(0)
    raise ValueError(
        f"{op}: expected a {batched_ndim - 1}-D (unbatched) or {batched_ndim}-D (batched) input, "
        f"got shape {x.shape}"
    )


def unfold(
    input: Tensor, kernel_size: Pair, dilation: Pair = 1, padding: Pair = 0, stride: Pair = 1
) -> Tensor:
    """The sliding (kh, kw) blocks of x (N, C, H, W) as columns: (N, C·kh·kw, L)."""
    window = _window(kernel_size, dilation, padding, stride)
    return _batched("unfold", input, 4, lambda x: Unfold.apply(x, window=window))


def fold(
    input: Tensor,
    output_size: Pair,
    kernel_size: Pair,
    dilation: Pair = 1,
    padding: Pair = 0,
    stride: Pair = 1,
) -> Tensor:
    """Columns (N, C·kh·kw, L) summed back into an image (N, C, *output_size)."""
    window = _window(kernel_size, dilation, padding, stride)
    (kh, kw), size = window[0], to_pair(output_size, "output_size")

    def run(blocks: Tensor) -> Tensor:
        batch, rows, length = blocks.shape
        if rows % (kh * kw):
            raise RuntimeError(
                f"fold: expected size of input's dimension 1 to be divisible by the product of "
                f"kernel_size, but got input.size(1)={rows} and kernel_size=({kh}, {kw})"
            )
        blocks_hw = conv_output_shape(*size, window[0], window[1], window[2], window[3])
        if blocks_hw[0] * blocks_hw[1] != length:
            raise RuntimeError(
                f"fold: given output_size={size}, kernel_size=({kh}, {kw}), dilation="
                f"{window[3]}, padding={window[2]}, stride={window[1]}, expected size of input's "
                f"dimension 2 to match the calculated number of sliding blocks "
                f"{blocks_hw[0]} * {blocks_hw[1]} = {blocks_hw[0] * blocks_hw[1]}, but got "
                f"input.size(2)={length}"
            )
        image_shape = (batch, rows // (kh * kw)) + size
        return Fold.apply(blocks, image_shape=image_shape, window=window)

    return _batched("fold", input, 3, run)


def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:
    """(*, C·r², H, W) → (*, C, H·r, W·r)."""
    r = int(upscale_factor)
    if input.ndim < 3 or r < 1 or input.shape[-3] % (r * r):
        raise RuntimeError(
            f"pixel_shuffle expects an input (*, C·r², H, W) with r = upscale_factor = {r} and "
            f"its channels divisible by r² = {r * r}, got shape {input.shape}"
        )
    *lead, channels, h, w = input.shape
    lead, n = tuple(lead), len(lead)
    blocks = input.reshape(*lead, channels // (r * r), r, r, h, w)
    # (*, C, r, r, H, W) → (*, C, H, r, W, r)
    axes = tuple(range(n)) + (n, n + 3, n + 1, n + 4, n + 2)
    return blocks.permute(*axes).reshape(*lead, channels // (r * r), h * r, w * r)


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:
    """(*, C, H·r, W·r) → (*, C·r², H, W), the inverse of pixel_shuffle."""
    r = int(downscale_factor)
    if input.ndim < 3 or r < 1 or input.shape[-2] % r or input.shape[-1] % r:
        raise RuntimeError(
            f"pixel_unshuffle expects an input (*, C, H·r, W·r) with r = downscale_factor = "
            f"{r} dividing its height and width, got shape {input.shape}"
        )
    *lead, channels, height, width = input.shape
    lead, n = tuple(lead), len(lead)
    blocks = input.reshape(*lead, channels, height // r, r, width // r, r)
    # (*, C, H, r, W, r) → (*, C, r, r, H, W)
    axes = tuple(range(n)) + (n, n + 2, n + 4, n + 1, n + 3)
    return blocks.permute(*axes).reshape(*lead, channels * r * r, height // r, width // r)
