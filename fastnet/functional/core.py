"""The core differentiable ops: linear, convolution, pooling, losses, activations, dropout.

Each op is a :class:`~fastnet.tensor.Function` with its forward and backward side by side; the
heavy ones call the device's kernels:

* ``linear``: y = x·Wᵀ + b through the matmul kernel (A·Bᵀ form); backward dX = dY·W,
  dW = dYᵀ·X (Aᵀ·B form), db = Σ dY.
* ``conv2d``: im2col and GEMMs a chunk of images at a time. x (N, C, H, W), w (OC, C, KH, KW),
  w2 = w as (OC, C·KH·KW); for the n images of a chunk, cols (C·KH·KW, n·OH·OW), and on the CPU
  y[i] = w2·cols_i (OC, OH·OW) per image, written straight into y NCHW (on a GPU one GEMM
  w2·cols for the batch). A bias rides in the GEMMs: w2 gets b as a last column and cols a last
  row of ones, so y = [w2 b]·[cols; 1]. Backward, per chunk, with dY2 = dY as (OC, n·OH·OW):
  dWᵀ += cols·dY2ᵀ (cols recomputed, with the ones row when the bias needs a gradient: the
  product's last row is then db = Σ dY; per image Σ cols_i·dY_iᵀ when there is no dX to compute,
  which spares the copy of dY into dY2), dcols = w2ᵀ·dY2, dX = col2im(dcols). The chunk is as
  many images as the device's conv workspace holds (on the CPU, 1 MB for the L2 cache; on a GPU,
  the whole batch).
* ``conv2d`` with a 3x3 kernel at stride 1 over ``WINOGRAD_MIN_CHANNELS`` or more input
  channels: Winograd F(2x2, 3x3) (:class:`Conv2dWinograd`), 16 GEMMs of 2.25x fewer FLOPs in
  all between the transforms of kernels/winograd.py, in chunks sized the same way.
* ``max_pool2d``: the pool kernel returns the output and the argmax that routes the gradient.
* ``cross_entropy``: the fused softmax + cross-entropy kernel returns the row losses and the
  logits' gradient in one pass; backward only scales that gradient.
"""
from __future__ import annotations

import math
from typing import Any, Union

import numpy as np

from .. import random as fn_random
from ..backend import conv_output_shape
from ..tensor import Function, Tensor

Pair = Union[int, tuple[int, int]]

__all__ = ["Pair", "linear", "conv2d", "max_pool2d", "cross_entropy", "mse_loss", "l1_loss", "relu", "tanh",
           "sigmoid", "leaky_relu", "gelu", "log_softmax", "softmax", "dropout", "flatten"]


def _pair(value: Any, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 0 for v in pair):
        raise ValueError(f"{name} must be a non-negative int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


# ===================================================================== linear
class Linear(Function):
    def forward(self, x, weight, *bias):
        if weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: input of shape {tuple(x.shape)} does not match weight of shape "
                             f"{tuple(weight.shape)} (expected input (..., {weight.shape[-1]}))")
        xp = self.device.xp
        self.x2d = xp.ascontiguousarray(x.reshape(-1, x.shape[-1]))
        self.weight, self.lead = weight, x.shape[:-1]
        out = self.device.matmul(self.x2d, weight, False, True)
        if bias:
            out += bias[0]
        return out.reshape(self.lead + (weight.shape[0],))

    def backward(self, grad):
        grad2d = self.device.xp.ascontiguousarray(grad.reshape(-1, grad.shape[-1]))
        grad_x = grad_w = None
        if self.inputs[0].requires_grad:
            grad_x = self.device.matmul(grad2d, self.weight, False, False).reshape(self.lead + (self.weight.shape[1],))
        if self.inputs[1].requires_grad:
            grad_w = self.device.matmul(grad2d, self.x2d, True, False)
        grad_b = grad2d.sum(axis=0) if len(self.inputs) == 3 else None
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x·Wᵀ + b, with W of shape (out_features, in_features) as in PyTorch."""
    return Linear.apply(x, weight, *([bias] if bias is not None else []))


# ===================================================================== convolution
def conv_image_chunks(device: Any, batch: int, columns: int, out_channels: int, plane: int,
                      itemsize: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of images whose working set fits the device's conv workspace: per image
    its im2col columns (``columns`` = C·KH·KW rows of ``plane`` = OH·OW) and its output planes.

    On the CPU the columns of a few images stay in the core's L2 cache between im2col and the
    GEMM that reads them, instead of one batch-sized buffer making a round trip through DRAM; the
    backward pass recomputes them rather than keeping them. The split depends on shapes only, so
    results do not depend on the thread count."""
    workspace = device.conv_workspace_bytes
    bytes_per_image = max((columns + out_channels) * plane * itemsize, 1)
    per_chunk = batch if workspace is None else max(1, workspace // bytes_per_image)
    return [(start, min(start + per_chunk, batch)) for start in range(0, batch, per_chunk)] or [(0, 0)]


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
        raise ValueError(f"conv2d: input of shape {tuple(x.shape)} has {x.shape[1]} channels but weight "
                         f"of shape {tuple(weight.shape)} expects (out, {x.shape[1]}, kh, kw)")


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
        self.chunks = conv_image_chunks(device, n, self.w2.shape[1], out_channels, oh * ow, x.itemsize)
        # Without a workspace limit (GPU) the batch is one chunk and each step one GEMM; with one
        # (CPU), GEMMs per image on the cached columns, which BLAS reads as strided views.
        self.per_image = device.conv_workspace_bytes is not None
        y = device.empty((n, out_channels, oh * ow), x.dtype)
        for start, stop in self.chunks:
            cols, images = self._columns(start, stop, ones_row=bool(bias)), stop - start
            if not self.per_image:
                # The whole batch at once (GPU): one GEMM, (OC, N·OH·OW), seen as NCHW planes.
                y[start:stop] = device.matmul(weights, cols).reshape(out_channels, images, -1).transpose(1, 0, 2)
            else:
                # Cached columns (CPU): one GEMM per image, each written straight into its NCHW planes.
                device.matmul(xp.broadcast_to(weights, (images, *weights.shape)), _per_image(cols, images),
                              out=y[start:stop])
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
        grad = xp.ascontiguousarray(grad).reshape(n, out_channels, -1)
        need_x, need_w = self.inputs[0].requires_grad, self.inputs[1].requires_grad
        need_b = len(self.inputs) == 3 and self.inputs[2].requires_grad
        # With the ones row in the columns, the weight GEMM's last row is Σ dY: the bias gradient.
        ones_row = need_w and need_b
        grad_x = device.empty(self.x.shape, self.x.dtype) if need_x else None
        grad_w = grad_b = None
        for start, stop in self.chunks:
            images, grad_planes = stop - start, grad[start:stop]  # (images, OC, OH·OW)
            # (OC, images·OH·OW): the chunk's output gradient in the layout of one GEMM
            grad_chunk = None
            if need_x or not self.per_image:
                grad_chunk = xp.ascontiguousarray(grad_planes.transpose(1, 0, 2)).reshape(out_channels, -1)
            if need_w:
                # dWᵀ = cols·dY2ᵀ (C·KH·KW [+1], OC): BLAS runs this form faster than dY2·colsᵀ
                cols = self._columns(start, stop, ones_row)
                if grad_chunk is not None:
                    chunk_w = device.matmul(cols, grad_chunk, False, True)
                else:
                    # A first layer (no input gradient) on the CPU: per-image GEMMs over views, no
                    # copy of the output gradient at all (a first layer's is its largest).
                    chunk_w = device.matmul(_per_image(cols, images), grad_planes, False, True).sum(axis=0)
                grad_w = _accumulate(grad_w, chunk_w)
            elif need_b:
                grad_b = _accumulate(grad_b, grad_planes.sum(axis=(0, 2)))
            if need_x:
                device.col2im(device.matmul(self.w2, grad_chunk, True, False), grad_x[start:stop].shape,
                              self.kernel_hw, self.stride, self.padding, out=grad_x[start:stop])
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
        self.chunks = conv_image_chunks(device, n, WINOGRAD_POSITIONS * channels, WINOGRAD_POSITIONS * out_channels,
                                        self.tiles_per_image, x.itemsize)
        self.workspace: dict[tuple[str, int], Any] = {}
        self.u = device.winograd_weights(weight)  # (16, OC, C)
        y = device.empty((n, out_channels, oh, ow), x.dtype)
        for start, stop in self.chunks:
            v = device.winograd_input(self.x[start:stop], padding, out=self._tiles("input", channels, stop - start))
            m = device.matmul(self.u, v, out=self._tiles("output", out_channels, stop - start))
            device.winograd_output(m, bias[0] if bias else None, y[start:stop].shape, out=y[start:stop])
        return y

    def _tiles(self, side: str, rows: int, images: int) -> Any:
        """The tile buffer of ``side`` ("input": V and dV, "output": M and dM) for ``images``
        images, made once a layer and reused by every chunk, so each chunk writes into lines the
        cache already holds (no page faults either way; reuse measured 4-7% faster on conv2)."""
        buffer = self.workspace.get((side, images))
        if buffer is None:
            buffer = self.workspace[side, images] = self.device.winograd_tiles(
                rows, images * self.tiles_per_image, self.x.dtype, self.x)
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
            grad_m = device.winograd_output_grad(grad[start:stop], out=self._tiles("output", out_channels, images))
            if need_b:  # Σ dY, a row sum of one tile matrix instead of a pass over dY
                grad_b = _accumulate(grad_b, grad_m[WINOGRAD_SUM_POSITION].sum(axis=1))
            if need_w:  # dU[ξ] += dM[ξ]·V[ξ]ᵀ
                v = device.winograd_input(self.x[start:stop], self.padding, out=self._tiles("input", channels, images))
                if grad_u is None:
                    grad_u = device.matmul(grad_m, v, False, True)
                else:
                    term = device.matmul(grad_m, v, False, True, out=term)
                    grad_u += term
            if need_x:  # dV[ξ] = U[ξ]ᵀ·dM[ξ], into V's buffer (V is used up by then)
                grad_v = device.matmul(self.u, grad_m, True, False, out=self._tiles("input", channels, images))
                device.winograd_input_grad(grad_v, grad_x[start:stop].shape, self.padding, out=grad_x[start:stop])
        self.workspace.clear()
        grad_w = device.winograd_weights_grad(grad_u) if need_w else None
        return grad_x, grad_w, grad_b


# Winograd takes over 3x3 stride-1 convolutions with at least this many input channels. Its 16
# GEMMs a chunk have the input channels as their inner dimension (the forward) or their output
# width (the weight gradient), where im2col's GEMMs have 9x that. Forward + backward on one core,
# as a multiple of im2col's speed (`fastnet bench --only conv2d_train` and a sweep of channels):
# 3 channels 0.39x, 8 0.99x, 16 1.18-1.25x (ResNet-20's first stage), 32 1.20-1.39x (MNIST's
# conv2, ResNet-20's second), 64 1.40-1.51x.
WINOGRAD_MIN_CHANNELS = 16


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Pair = 1, padding: Pair = 0) -> Tensor:
    """2-D cross-correlation (PyTorch's conv2d): x (N, C, H, W), weight (OC, C, KH, KW).

    A 3x3 kernel at stride 1 over at least ``WINOGRAD_MIN_CHANNELS`` input channels runs as
    Winograd F(2x2, 3x3), 2.25x fewer multiplications; any other through im2col and GEMMs."""
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    operands = (x, weight, *([bias] if bias is not None else []))
    if (stride == (1, 1) and weight.ndim == 4 and tuple(weight.shape[2:]) == (3, 3) and x.ndim == 4
            and x.shape[1] >= WINOGRAD_MIN_CHANNELS):
        return Conv2dWinograd.apply(*operands, padding=padding)
    return Conv2d.apply(*operands, stride=stride, padding=padding)


# ===================================================================== pooling
class MaxPool2d(Function):
    def forward(self, x, kernel_size, stride, padding):
        if x.ndim != 4:
            raise ValueError(f"max_pool2d: input must be (N, C, H, W), got shape {tuple(x.shape)}")
        self.x_shape, self.params = x.shape, (kernel_size, stride, padding)
        out, self.argmax = self.device.maxpool2d_forward(self.device.xp.ascontiguousarray(x), *self.params)
        return out

    def backward(self, grad):
        grad = self.device.xp.ascontiguousarray(grad)
        return (self.device.maxpool2d_backward(grad, self.argmax, self.x_shape, *self.params),)


def max_pool2d(x: Tensor, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0) -> Tensor:
    """Max over kernel_size windows (stride defaults to kernel_size, as in PyTorch)."""
    kernel = _pair(kernel_size, "kernel_size")
    return MaxPool2d.apply(x, kernel_size=kernel, stride=kernel if stride is None else _pair(stride, "stride"),
                           padding=_pair(padding, "padding"))


# ===================================================================== losses
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


class CrossEntropy(Function):
    def forward(self, logits, labels, label_smoothing, reduction):
        if logits.ndim != 2:
            raise ValueError(f"cross_entropy: logits must be (batch, classes), got shape {tuple(logits.shape)}")
        xp = self.device.xp
        row_losses, self.dlogits = self.device.softmax_xent(xp.ascontiguousarray(logits), labels, label_smoothing)
        self.reduction, self.rows = reduction, logits.shape[0]
        if reduction == "none":
            return row_losses
        total = row_losses.sum(dtype=np.float64)  # accumulate in float64, report in the logits' dtype
        return xp.asarray(total / self.rows if reduction == "mean" else total, dtype=logits.dtype)

    def backward(self, grad):
        # the kernel's gradient is that of the mean loss
        if self.reduction == "mean":
            return grad * self.dlogits, None
        if self.reduction == "sum":
            return grad * (self.dlogits * self.rows), None
        return grad[:, None] * (self.dlogits * self.rows), None


def cross_entropy(logits: Tensor, labels: Any, label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy of (batch, classes) logits against integer labels, fused in one kernel."""
    _check_reduction(reduction)
    if isinstance(labels, Tensor):
        if labels.device is not logits.device:
            raise RuntimeError(f"cross_entropy: logits are on {logits.device} but labels on {labels.device}")
        labels = labels.data
    else:
        labels = logits.device.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"cross_entropy: labels of shape {tuple(labels.shape)} do not match logits of shape "
                         f"{logits.shape} (expected ({logits.shape[0]},))")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: labels must be integers, got {labels.dtype}")
    return CrossEntropy.apply(logits, labels=labels, label_smoothing=float(label_smoothing), reduction=reduction)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    _check_reduction(reduction)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def _check_same_shape(op: str, a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{op}: input of shape {a.shape} and target of shape {b.shape} differ")


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    _check_same_shape("mse_loss", input, target)
    difference = input - target
    return _reduce(difference * difference, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    _check_same_shape("l1_loss", input, target)
    return _reduce((input - target).abs(), reduction)


# ===================================================================== activations
def relu(x: Tensor) -> Tensor:
    return x.relu()


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


class LeakyReLU(Function):
    def forward(self, x, negative_slope):
        self.scale = self.device.xp.where(x > 0, x.dtype.type(1), x.dtype.type(negative_slope))
        return x * self.scale

    def backward(self, grad):
        return (grad * self.scale,)


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    return LeakyReLU.apply(x, negative_slope=negative_slope)


class GELU(Function):
    """x·Φ(x). ``approximate='none'`` uses erf (PyTorch's default); ``'tanh'`` the tanh formula."""

    def forward(self, x, approximate):
        xp = self.device.xp
        self.x, self.approximate = x, approximate
        if approximate == "tanh":
            self.t = xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))
            return 0.5 * x * (1 + self.t)
        self.cdf = 0.5 * (1 + self.device.erf(x * x.dtype.type(1 / math.sqrt(2))))
        return x * self.cdf

    def backward(self, grad):
        xp, x = self.device.xp, self.x
        if self.approximate == "tanh":
            inner_grad = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x * x)
            return (grad * (0.5 * (1 + self.t) + 0.5 * x * (1 - self.t * self.t) * inner_grad),)
        pdf = xp.exp(-0.5 * x * x) * x.dtype.type(1 / math.sqrt(2 * math.pi))
        return (grad * (self.cdf + x * pdf),)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(x, approximate=approximate)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    shifted = x - x.max(axis=axis, keepdims=True).detach()  # the shift cancels: no gradient needed
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    return log_softmax(x, axis).exp()


# ===================================================================== regularisation
def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity in eval)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    keep = fn_random.uniform(x.shape, x.device) >= p
    scale = (keep * (1.0 / (1.0 - p))).astype(x.dtype)
    return x * Tensor._wrap(scale, x.device)


def flatten(x: Tensor, start_dim: int = 1, end_dim: int = -1) -> Tensor:
    return x.flatten(start_dim, end_dim)
