"""2-D convolution: ``conv2d``, by im2col and GEMMs or by Winograd F(2x2, 3x3).

* im2col (:class:`Conv2d`), a chunk of images at a time. x (N, C, H, W), w (OC, C, KH, KW),
  w2 = w as (OC, C·KH·KW); for the n images of a chunk, cols (C·KH·KW, n·OH·OW), and on the CPU
  y[i] = w2·cols_i (OC, OH·OW) per image, written straight into y NCHW (on a GPU one GEMM
  w2·cols for the batch). A bias rides in the GEMMs: w2 gets b as a last column and cols a last
  row of ones, so y = [w2 b]·[cols; 1]. Backward, per chunk, with dY2 = dY as (OC, n·OH·OW):
  dWᵀ += cols·dY2ᵀ (cols recomputed, with the ones row when the bias needs a gradient: the
  product's last row is then db = Σ dY; per image Σ cols_i·dY_iᵀ when there is no dX to compute,
  which spares the copy of dY into dY2), dcols = w2ᵀ·dY2, dX = col2im(dcols). The chunk is as
  many images as the device's conv workspace holds (on the CPU a workspace sized for the L2
  cache; on a GPU, the whole batch).
* Winograd (:class:`Conv2dWinograd`), for a 3x3 kernel at stride 1 over
  ``WINOGRAD_MIN_CHANNELS`` or more input channels: 16 GEMMs of 2.25x fewer FLOPs in all
  between the transforms of kernels/winograd.py, in chunks sized the same way.
"""

from __future__ import annotations

from typing import Any

from ..backend import conv_output_shape, images_per_chunk
from ..tensor import Function, Tensor
from .arguments import Pair, to_pair

__all__ = ["Conv2d", "Conv2dWinograd", "WINOGRAD_MIN_CHANNELS", "conv2d", "conv_image_chunks"]


def conv_image_chunks(
    device: Any, batch: int, columns: int, out_channels: int, plane: int, itemsize: int
) -> list[tuple[int, int]]:
    """[start, stop) ranges of images whose working set fits the device's conv workspace: per
    image its im2col columns (``columns`` = C·KH·KW rows of ``plane`` = OH·OW) and its output
    planes.

    On the CPU the columns of a few images stay in the core's L2 cache between im2col and the
    GEMM that reads them, instead of one batch-sized buffer making a round trip through DRAM; the
    backward pass recomputes them rather than keeping them. The split depends on shapes only, so
    results do not depend on the thread count."""
    bytes_per_image = (columns + out_channels) * plane * itemsize
    per_chunk = max(1, min(batch, images_per_chunk(bytes_per_image, device.conv_workspace_bytes)))
    chunks = [(start, min(start + per_chunk, batch)) for start in range(0, batch, per_chunk)]
    return chunks or [(0, 0)]


def _per_image(cols: Any, images: int) -> Any:
    """cols (C·KH·KW, images·OH·OW) as (images, C·KH·KW, OH·OW): image i's columns are the block
    cols[:, i·OH·OW:(i+1)·OH·OW], a strided view that BLAS reads as it is."""
    return cols.reshape(cols.shape[0], images, -1).transpose(1, 0, 2)


def _accumulate(total: Any, term: Any) -> Any:
    if total is None:
        return term
    total += term
    return total


def _check_conv_shapes(x: Any, weight: Any) -> None:
    if x.ndim != 4:
        raise ValueError(f"conv2d: input must be (N, C, H, W), got shape {tuple(x.shape)}")
    if weight.ndim != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"conv2d: input of shape {tuple(x.shape)} has {x.shape[1]} channels "
            f"but weight of shape {tuple(weight.shape)} expects "
            f"(out, {x.shape[1]}, kh, kw)"
        )


class Conv2d(Function):
    def forward(self, x, weight, *bias, stride, padding):
        _check_conv_shapes(x, weight)
        xp, device = self.device.xp, self.device
        n, _, h, w = x.shape
        out_channels, kernel_hw = weight.shape[0], tuple(weight.shape[2:])
        oh, ow = conv_output_shape(h, w, kernel_hw, stride, padding)
        self.x = xp.ascontiguousarray(x)
        self.kernel_hw, self.stride, self.padding, self.plane = kernel_hw, stride, padding, oh * ow
        self.w2 = weight.reshape(out_channels, -1)
        # With a bias, the GEMM adds it: the weights get the bias as a last column and the columns
        # a last row of ones (no pass over y for the bias here, none over dY for its gradient).
        weights = xp.concatenate([self.w2, bias[0][:, None]], axis=1) if bias else self.w2
        self.chunks = conv_image_chunks(
            device, n, self.w2.shape[1], out_channels, oh * ow, x.itemsize
        )
        # Without a workspace limit (GPU) the batch is one chunk and each step one GEMM; with one
        # (CPU), GEMMs per image on the cached columns, which BLAS reads as strided views.
        self.per_image = device.conv_workspace_bytes is not None
        y = device.empty((n, out_channels, oh * ow), x.dtype)
        for start, stop in self.chunks:
            if start == stop:  # an empty batch: nothing to compute
                continue
            cols, images = self._columns(start, stop, ones_row=bool(bias)), stop - start
            if not self.per_image:
                # The whole batch at once (GPU): one GEMM, (OC, N·OH·OW), seen as NCHW planes.
                planes = device.matmul(weights, cols).reshape(out_channels, images, -1)
                y[start:stop] = planes.transpose(1, 0, 2)
            else:
                # Cached columns (CPU): one GEMM per image, each written straight into its planes.
                device.matmul(
                    xp.broadcast_to(weights, (images, *weights.shape)),
                    _per_image(cols, images),
                    out=y[start:stop],
                )
        return y.reshape(n, out_channels, oh, ow)

    def _columns(self, start: int, stop: int, ones_row: bool) -> Any:
        """im2col of images [start, stop), with a last row of ones when ``ones_row``."""
        x, device = self.x[start:stop], self.device
        if not ones_row:
            return device.im2col(x, self.kernel_hw, self.stride, self.padding)
        rows = self.w2.shape[1]
        cols = device.empty((rows + 1, x.shape[0] * self.plane), x.dtype)
        device.im2col(x, self.kernel_hw, self.stride, self.padding, out=cols[:rows])
        cols[rows] = 1
        return cols

    def backward(self, grad):
        xp, device = self.device.xp, self.device
        n, out_channels = grad.shape[:2]
        grad = xp.ascontiguousarray(grad).reshape(n, out_channels, self.plane)
        need_x, need_w = self.inputs[0].requires_grad, self.inputs[1].requires_grad
        need_b = len(self.inputs) == 3 and self.inputs[2].requires_grad
        # With the ones row in the columns, the weight GEMM's last row is Σ dY: the bias gradient.
        ones_row = need_w and need_b
        grad_x = device.empty(self.x.shape, self.x.dtype) if need_x else None
        grad_w = grad_b = None
        for start, stop in self.chunks:
            if start == stop:  # an empty batch: the gradients are zeros (below)
                continue
            images, grad_planes = stop - start, grad[start:stop]  # (images, OC, OH·OW)
            # (OC, images·OH·OW): the chunk's output gradient in the layout of one GEMM
            grad_chunk = None
            if need_x or not self.per_image:
                grad_chunk = xp.ascontiguousarray(grad_planes.transpose(1, 0, 2))
                grad_chunk = grad_chunk.reshape(out_channels, -1)
            if need_w:
                # dWᵀ = cols·dY2ᵀ (C·KH·KW [+1], OC): BLAS runs this form faster than dY2·colsᵀ
                cols = self._columns(start, stop, ones_row)
                if grad_chunk is not None:
                    chunk_w = device.matmul(cols, grad_chunk, False, True)
                else:
                    # A first layer (no input gradient) on the CPU: per-image GEMMs over views, no
                    # copy of the output gradient at all (a first layer's is its largest).
                    per_image = device.matmul(_per_image(cols, images), grad_planes, False, True)
                    chunk_w = per_image.sum(axis=0)
                grad_w = _accumulate(grad_w, chunk_w)
            elif need_b:
                grad_b = _accumulate(grad_b, grad_planes.sum(axis=(0, 2)))
            if need_x:
                grad_cols = device.matmul(self.w2, grad_chunk, True, False)
                device.col2im(
                    grad_cols,
                    grad_x[start:stop].shape,
                    self.kernel_hw,
                    self.stride,
                    self.padding,
                    out=grad_x[start:stop],
                )
        if need_w and grad_w is None:  # no image contributed
            grad_w = xp.zeros((self.w2.shape[1] + ones_row, out_channels), self.x.dtype)
        if need_b and not ones_row and grad_b is None:
            grad_b = xp.zeros(out_channels, self.x.dtype)
        if need_w:
            if ones_row:
                grad_w, grad_b = grad_w[:-1], grad_w[-1].copy()
            grad_w = xp.ascontiguousarray(grad_w.T).reshape(self.inputs[1].shape)
        return grad_x, grad_w, grad_b


# Entries of a transformed 4x4 tile: each tile of each channel takes 16 values in V, M and their
# gradients (kernels/winograd.py's POSITIONS; the layers above the backend do not import kernels).
WINOGRAD_POSITIONS = 16
# dM = A·dY·Aᵀ and A's second row is (1, 1): entry (1, 1) of every transformed output-gradient tile
# is the sum of the tile's 2x2 output gradients, so row k of dM[4·1 + 1] sums to channel k's Σ dY.
WINOGRAD_SUM_POSITION = 5


class Conv2dWinograd(Function):
    """conv2d for a 3x3 kernel at stride 1 by Winograd F(2x2, 3x3) (kernels/winograd.py), a chunk
    of images at a time: per chunk V = input tiles (16, C, T), M = U·V (16, OC, T) with U the
    weights' tiles (16, OC, C), y = output tiles of M. Backward, per chunk: dM = the output
    gradient's tiles, dU += dM·Vᵀ (V recomputed, cheaper than keeping it for the batch),
    dV = Uᵀ·dM, dX = input tiles' adjoint of dV, db += the row sums of dM[5]; dW = weights'
    adjoint of dU."""

    def forward(self, x, weight, *bias, padding):
        _check_conv_shapes(x, weight)
        xp, device = self.device.xp, self.device
        n, channels, h, w = x.shape
        out_channels = weight.shape[0]
        oh, ow = conv_output_shape(h, w, 3, 1, padding)
        self.x, self.padding = xp.ascontiguousarray(x), padding
        self.tiles_per_image = ((oh + 1) // 2) * ((ow + 1) // 2)
        self.chunks = conv_image_chunks(
            device,
            n,
            WINOGRAD_POSITIONS * channels,
            WINOGRAD_POSITIONS * out_channels,
            self.tiles_per_image,
            x.itemsize,
        )
        self.workspace: dict[tuple[str, int], Any] = {}
        self.u = device.winograd_weights(weight)  # (16, OC, C)
        y = device.empty((n, out_channels, oh, ow), x.dtype)
        for start, stop in self.chunks:
            images = stop - start
            v = device.winograd_input(
                self.x[start:stop], padding, out=self._tiles("input", channels, images)
            )
            m = device.matmul(self.u, v, out=self._tiles("output", out_channels, images))
            device.winograd_output(
                m, bias[0] if bias else None, y[start:stop].shape, out=y[start:stop]
            )
        return y

    def _tiles(self, side: str, rows: int, images: int) -> Any:
        """The tile buffer of ``side`` ("input": V and dV, "output": M and dM) for ``images``
        images, made once a layer and reused by every chunk, so each chunk writes into lines the
        cache already holds (re-measure against fresh buffers with
        ``fastnet bench --only conv2d_train``)."""
        buffer = self.workspace.get((side, images))
        if buffer is None:
            buffer = self.workspace[side, images] = self.device.winograd_tiles(
                rows, images * self.tiles_per_image, self.x.dtype, self.x
            )
        return buffer

    def backward(self, grad):
        xp, device = self.device.xp, self.device
        grad = xp.ascontiguousarray(grad)
        channels, out_channels = self.x.shape[1], grad.shape[1]
        need_x, need_w = self.inputs[0].requires_grad, self.inputs[1].requires_grad
        need_b = len(self.inputs) == 3 and self.inputs[2].requires_grad
        grad_x = device.empty(self.x.shape, self.x.dtype) if need_x else None
        grad_u = term = grad_b = None
        for start, stop in self.chunks:
            images = stop - start
            grad_m = device.winograd_output_grad(
                grad[start:stop], out=self._tiles("output", out_channels, images)
            )
            if need_b:  # Σ dY, a row sum of one tile matrix instead of a pass over dY
                grad_b = _accumulate(grad_b, grad_m[WINOGRAD_SUM_POSITION].sum(axis=1))
            if need_w:  # dU[ξ] += dM[ξ]·V[ξ]ᵀ
                v = device.winograd_input(
                    self.x[start:stop], self.padding, out=self._tiles("input", channels, images)
                )
                if grad_u is None:
                    grad_u = device.matmul(grad_m, v, False, True)
                else:
                    term = device.matmul(grad_m, v, False, True, out=term)
                    grad_u += term
            if need_x:  # dV[ξ] = U[ξ]ᵀ·dM[ξ], into V's buffer (V is used up by then)
                grad_v = device.matmul(
                    self.u, grad_m, True, False, out=self._tiles("input", channels, images)
                )
                device.winograd_input_grad(
                    grad_v, grad_x[start:stop].shape, self.padding, out=grad_x[start:stop]
                )
        self.workspace.clear()
        grad_w = device.winograd_weights_grad(grad_u) if need_w else None
        return grad_x, grad_w, grad_b


# Winograd takes over 3x3 stride-1 convolutions with at least this many input channels. Its 16
# GEMMs a chunk have the input channels as their inner dimension (the forward) or their output
# width (the weight gradient), where im2col's GEMMs have 9x that: with few channels its GEMMs are
# too thin to win. Re-measure the crossover, forward + backward on one core against im2col, with
# `fastnet bench --only conv2d_train` over a sweep of channel counts.
WINOGRAD_MIN_CHANNELS = 16


def conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Pair = 1, padding: Pair = 0
) -> Tensor:
    """2-D cross-correlation (PyTorch's conv2d): x (N, C, H, W), weight (OC, C, KH, KW).

    A 3x3 kernel at stride 1 over at least ``WINOGRAD_MIN_CHANNELS`` input channels runs as
    Winograd F(2x2, 3x3), 2.25x fewer multiplications; any other through im2col and GEMMs."""
    stride, padding = to_pair(stride, "stride"), to_pair(padding, "padding")
    operands = (x, weight, *([bias] if bias is not None else []))
    if (
        stride == (1, 1)
        and weight.ndim == 4
        and tuple(weight.shape[2:]) == (3, 3)
        and x.ndim == 4
        and x.shape[1] >= WINOGRAD_MIN_CHANNELS
    ):
        return Conv2dWinograd.apply(*operands, padding=padding)
    return Conv2d.apply(*operands, stride=stride, padding=padding)
