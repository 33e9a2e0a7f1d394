"""2-D convolution: ``conv2d`` (by im2col and GEMMs, by Winograd F(2x2, 3x3), or on the
depthwise kernels); its adjoint ``conv_transpose2d`` is in :mod:`.conv_transpose`.

Both take a stride S, zero padding P, a dilation D (kernel taps D apart, spanning D·(K-1) + 1
pixels) and G groups: input channels [g·C/G, (g+1)·C/G) meet only output channels
[g·OC/G, (g+1)·OC/G). im2col of all C channels gives cols whose rows for group g are one
contiguous block of C/G·KH·KW rows, so every GEMM below is one batched GEMM over the G groups
((G, OC/G, C/G·KH·KW) weights against (G, C/G·KH·KW, n·OH·OW) columns); with G = 1 it is a plain
GEMM.

* Depthwise (:class:`DepthwiseConv2d`), G = C and OC = C·M: each output channel filters one
  input channel, a stencil that im2col would copy KH·KW times to multiply by one scalar each. It
  runs on the depthwise kernels (kernels/depthwise.py): y, dX and dW directly from x and dY, and
  db = Σ dY over n, h, w.

* im2col (:class:`Conv2d`), a chunk of images at a time. x (N, C, H, W), w (OC, C/G, KH, KW),
  w2 = w as (OC, C/G·KH·KW); for the n images of a chunk, cols (C·KH·KW, n·OH·OW), and for one
  group on the CPU y[i] = w2·cols_i (OC, OH·OW) per image, written straight into y NCHW
  (otherwise one batched GEMM w2·cols per chunk). A bias of one group rides in the GEMMs: w2 gets
  b as a last column and cols a last row of ones, so y = [w2 b]·[cols; 1] (with groups it is
  added to y). Backward, per chunk, with dY2 = dY as (OC, n·OH·OW): dWᵀ += cols·dY2ᵀ (cols
  recomputed, with the ones row when the bias needs a gradient: the product's last row is then
  db = Σ dY; per image Σ cols_i·dY_iᵀ when there is no dX to compute, which spares the copy of dY
  into dY2), dcols = w2ᵀ·dY2, dX = col2im(dcols). The chunk is as many images as the device's
  conv workspace holds (on the CPU a workspace sized for the L2 cache; on a GPU, the whole batch).
* Winograd (:class:`Conv2dWinograd`), for a 3x3 kernel at stride 1, dilation 1 and one group
  over ``WINOGRAD_MIN_CHANNELS`` or more input channels: 16 GEMMs of 2.25x fewer FLOPs in all
  between the transforms of kernels/winograd.py, in chunks sized the same way.
"""

from __future__ import annotations

from typing import Any

from ..backend import conv_output_shape, images_per_chunk
from ..tensor import Function, Tensor
from .arguments import Pair, to_pair
from .shape import pad

__all__ = [
    "Conv2d",
    "Conv2dWinograd",
    "DepthwiseConv2d",
    "WINOGRAD_MIN_CHANNELS",
    "conv2d",
    "conv_image_chunks",
]


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


def _by_group(matrix: Any, groups: int) -> Any:
    """A (rows, columns) matrix as (groups, rows/groups, columns), group g's block of rows (a
    view); the matrix itself for one group, whose plain GEMM BLAS runs a little faster."""
    return matrix if groups == 1 else matrix.reshape(groups, -1, matrix.shape[-1])


def _channel_rows(xp: Any, planes: Any) -> Any:
    """(n, C, P) planes as a C-contiguous (C, n·P) matrix: the layout of a GEMM over the images
    side by side."""
    return xp.ascontiguousarray(planes.transpose(1, 0, 2)).reshape(planes.shape[1], -1)


def _accumulate(total: Any, term: Any) -> Any:
    if total is None:
        return term
    total += term
    return total


def _output_shape(op: str, x_shape: tuple, *window: Any) -> tuple[int, int]:
    """(OH, OW) of conv2d's ``window`` (kernel_hw, stride, padding[, dilation]) over x; a kernel
    that does not fit the padded input is an error naming ``op`` and x's shape."""
    try:
        return conv_output_shape(*x_shape[2:], *window)
    except ValueError as error:
        raise ValueError(f"{op}: input of shape {tuple(x_shape)}: {error}") from None


def _check_conv_shapes(op: str, x: Any, weight: Any, groups: int = 1) -> None:
    """x (N, C, H, W) and a 4-D weight: conv2d's (OC, C/G, KH, KW), or conv_transpose2d's
    (C, OC/G, KH, KW), its first dimension divisible by the groups."""
    transposed = op == "conv_transpose2d"
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be (N, C, H, W), got shape {tuple(x.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D, got shape {tuple(weight.shape)}")
    if weight.shape[0] % groups:
        raise ValueError(
            f"{op}: weight of shape {tuple(weight.shape)} has {weight.shape[0]} "
            f"{'input' if transposed else 'output'} channels, not divisible by groups={groups}"
        )
    expected = weight.shape[0] if transposed else weight.shape[1] * groups
    if x.shape[1] != expected:
        layout = "(in, out/groups, kh, kw)" if transposed else "(out, in/groups, kh, kw)"
        raise ValueError(
            f"{op}: input of shape {tuple(x.shape)} has {x.shape[1]} channels but weight of "
            f"shape {tuple(weight.shape)} {layout} with groups={groups} expects {expected}"
        )


class Conv2d(Function):
    def forward(self, x, weight, *bias, stride, padding, dilation=(1, 1), groups=1):
        _check_conv_shapes("conv2d", x, weight, groups)
        xp, device = self.device.xp, self.device
        n = x.shape[0]
        out_channels, kernel_hw = weight.shape[0], tuple(weight.shape[2:])
        oh, ow = _output_shape("conv2d", x.shape, kernel_hw, stride, padding, dilation)
        self.x = xp.ascontiguousarray(x)
        self.window, self.plane = (kernel_hw, stride, padding, dilation), oh * ow
        self.w2, self.groups = weight.reshape(out_channels, -1), groups
        # With a bias and one group, the GEMM adds it: the weights get the bias as a last column
        # and the columns a last row of ones (no pass over y for the bias here, none over dY for
        # its gradient). Groups would need a ones row per group: their bias is added to y.
        ones_row = bool(bias) and groups == 1
        weights = xp.concatenate([self.w2, bias[0][:, None]], axis=1) if ones_row else self.w2
        self.chunks = conv_image_chunks(
            device, n, self.w2.shape[1] * groups, out_channels, oh * ow, x.itemsize
        )
        # On a GPU each chunk is one GEMM (its workspace is large, so a chunk is many images); on
        # the CPU with one group, GEMMs per image on the cached columns, which BLAS reads as
        # strided views (per image and group they would be too small: groups take one a chunk).
        self.per_image = device.name == "cpu" and groups == 1
        y = device.empty((n, out_channels, oh * ow), x.dtype)
        for start, stop in self.chunks:
            if start == stop:  # an empty batch: nothing to compute
                continue
            cols, images = self._columns(start, stop, ones_row), stop - start
            if not self.per_image:
                # The chunk at once: (OC, n·OH·OW) in one (batched) GEMM, seen as NCHW planes.
                planes = device.matmul(_by_group(weights, groups), _by_group(cols, groups))
                y[start:stop] = planes.reshape(out_channels, images, -1).transpose(1, 0, 2)
            else:
                # Cached columns (CPU): one GEMM per image, each written straight into its planes.
                device.matmul(
                    xp.broadcast_to(weights, (images, *weights.shape)),
                    _per_image(cols, images),
                    out=y[start:stop],
                )
        if bias and not ones_row:
            y += bias[0][:, None]
        return y.reshape(n, out_channels, oh, ow)

    def _columns(self, start: int, stop: int, ones_row: bool) -> Any:
        """im2col of images [start, stop), with a last row of ones when ``ones_row``."""
        x, device = self.x[start:stop], self.device
        if not ones_row:
            return device.im2col(x, *self.window)
        rows = self.w2.shape[1]
        cols = device.empty((rows + 1, x.shape[0] * self.plane), x.dtype)
        device.im2col(x, *self.window, out=cols[:rows])
        cols[rows] = 1
        return cols

    def backward(self, grad):
        xp, device = self.device.xp, self.device
        n, out_channels = grad.shape[:2]
        groups = self.groups
        grad = xp.ascontiguousarray(grad).reshape(n, out_channels, self.plane)
        need_x, need_w = self.inputs[0].requires_grad, self.inputs[1].requires_grad
        need_b = len(self.inputs) == 3 and self.inputs[2].requires_grad
        # With the ones row in the columns, the weight GEMM's last row is Σ dY: the bias gradient.
        ones_row = need_w and need_b and groups == 1
        grad_x = device.empty(self.x.shape, self.x.dtype) if need_x else None
        grad_w = grad_b = None
        for start, stop in self.chunks:
            if start == stop:  # an empty batch: the gradients are zeros (below)
                continue
            images, grad_planes = stop - start, grad[start:stop]  # (images, OC, OH·OW)
            # (OC, images·OH·OW): the chunk's output gradient in the layout of one GEMM
            grad_chunk = None
            if need_x or not self.per_image:
                grad_chunk = _by_group(_channel_rows(xp, grad_planes), groups)
            if need_w:
                # dWᵀ = cols·dY2ᵀ (C/G·KH·KW [+1], OC/G) per group: BLAS runs this form faster
                # than dY2·colsᵀ
                cols = self._columns(start, stop, ones_row)
                if grad_chunk is not None:
                    chunk_w = device.matmul(_by_group(cols, groups), grad_chunk, False, True)
                else:
                    # A first layer (no input gradient) on the CPU: per-image GEMMs over views, no
                    # copy of the output gradient at all (a first layer's is its largest).
                    per_image = device.matmul(_per_image(cols, images), grad_planes, False, True)
                    chunk_w = per_image.sum(axis=0)
                grad_w = _accumulate(grad_w, chunk_w)
            if need_b and not ones_row:
                grad_b = _accumulate(grad_b, grad_planes.sum(axis=(0, 2)))
            if need_x:
                grad_cols = device.matmul(_by_group(self.w2, groups), grad_chunk, True, False)
                device.col2im(
                    grad_cols.reshape(-1, grad_cols.shape[-1]),
                    grad_x[start:stop].shape,
                    *self.window,
                    out=grad_x[start:stop],
                )
        rows = self.w2.shape[1] + ones_row
        if need_w and grad_w is None:  # no image contributed
            grad_w = xp.zeros((groups, rows, out_channels // groups), self.x.dtype)
        if need_b and not ones_row and grad_b is None:
            grad_b = xp.zeros(out_channels, self.x.dtype)
        if need_w:
            grad_w = grad_w.reshape(groups, rows, -1)  # (G, C/G·KH·KW [+1], OC/G)
            if ones_row:
                grad_w, grad_b = grad_w[:, :-1], grad_w[0, -1].copy()
            grad_w = xp.ascontiguousarray(grad_w.transpose(0, 2, 1)).reshape(self.inputs[1].shape)
        return grad_x, grad_w, grad_b


class DepthwiseConv2d(Function):
    """conv2d with groups == C (weight (C·M, 1, KH, KW)) on the depthwise kernels."""

    saves_output = False

    def forward(self, x, weight, *bias, stride, padding, dilation):
        _check_conv_shapes("conv2d", x, weight, x.shape[1])
        _output_shape("conv2d", x.shape, tuple(weight.shape[2:]), stride, padding, dilation)
        self.x, self.weight, self.window = x, weight, (stride, padding, dilation)
        y = self.device.depthwise_conv2d_forward(x, weight, *self.window)
        if bias:
            y += bias[0][:, None, None]
        return y

    def backward(self, grad):
        device, (x, weight) = self.device, self.inputs[:2]
        need_b = len(self.inputs) == 3 and self.inputs[2].requires_grad
        return (
            device.depthwise_conv2d_backward_input(grad, self.weight, self.x.shape, *self.window)
            if x.requires_grad
            else None,
            device.depthwise_conv2d_backward_weight(
                grad, self.x, tuple(weight.shape[2:]), *self.window
            )
            if weight.requires_grad
            else None,
            grad.sum(axis=(0, 2, 3)) if need_b else None,
        )


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
        _check_conv_shapes("conv2d", x, weight)
        xp, device = self.device.xp, self.device
        n, channels = x.shape[:2]
        out_channels = weight.shape[0]
        oh, ow = _output_shape("conv2d", x.shape, 3, 1, padding)
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


def _window_arguments(
    op: str, stride: Pair, dilation: Pair, groups: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """stride and dilation as pairs of positive ints; groups a positive int."""
    pairs = []
    for name, value in (("stride", stride), ("dilation", dilation)):
        pair = to_pair(value, name)
        if min(pair) < 1:
            raise ValueError(f"{op}: {name} must be positive, got {value!r}")
        pairs.append(pair)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    return pairs[0], pairs[1]


def _pad_far_side(x: Tensor, rows: int, columns: int) -> Tensor:
    """x (N, C, H, W) with ``rows`` zero rows below and ``columns`` zero columns to the right."""
    return pad(x, (0, columns, 0, rows)) if rows or columns else x


def _same_padding(
    x: Tensor, weight: Tensor, stride: tuple[int, int], dilation: tuple[int, int], groups: int
) -> tuple[Tensor, tuple[int, int]]:
    """x and the padding for ``padding="same"``: each side gets half of D·(K-1), and an odd one
    out goes to the far side (bottom, right) as in PyTorch."""
    if stride != (1, 1):
        raise ValueError("conv2d: padding='same' is not supported for strided convolutions")
    _check_conv_shapes("conv2d", x, weight, groups)
    spans = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:], strict=True)]
    return _pad_far_side(x, spans[0] % 2, spans[1] % 2), (spans[0] // 2, spans[1] // 2)


def _is_depthwise(x: Tensor, weight: Tensor, groups: int) -> bool:
    """groups == C > 1 and weight (C·M, 1, KH, KW): one input channel per output channel (C = 1 is
    a plain convolution, left to im2col and its GEMMs)."""
    return (
        x.ndim == 4
        and weight.ndim == 4
        and 1 < groups == x.shape[1]
        and weight.shape[1] == 1
        and weight.shape[0] % groups == 0
    )


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Pair = 1,
    padding: Pair | str = 0,
    dilation: Pair = 1,
    groups: int = 1,
) -> Tensor:
    """2-D cross-correlation (PyTorch's conv2d): input x (N, C, H, W), weight
    (OC, C/groups, KH, KW); ``padding`` an int, a pair, "valid" (none) or "same" (the output as
    large as x, stride 1).

    A 3x3 kernel at stride 1, dilation 1 and one group over at least ``WINOGRAD_MIN_CHANNELS``
    input channels runs as Winograd F(2x2, 3x3), 2.25x fewer multiplications; a depthwise one
    (groups == C > 1, OC a multiple of C) on the depthwise kernels; any other through im2col and
    GEMMs. An unbatched x (C, H, W) gives y (OC, OH, OW), as in PyTorch."""
    x = input
    if x.ndim == 3:
        return conv2d(x.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0)
    stride, dilation = _window_arguments("conv2d", stride, dilation, groups)
    if not isinstance(padding, str):
        padding = to_pair(padding, "padding")
    elif padding == "same":
        x, padding = _same_padding(x, weight, stride, dilation, groups)
    elif padding == "valid":
        padding = (0, 0)
    else:
        raise ValueError(f"conv2d: padding must be 'valid', 'same' or ints, got {padding!r}")
    operands = (x, weight, *([bias] if bias is not None else []))
    if (
        stride == (1, 1)
        and dilation == (1, 1)
        and groups == 1
        and weight.ndim == 4
        and tuple(weight.shape[2:]) == (3, 3)
        and x.ndim == 4
        and x.shape[1] >= WINOGRAD_MIN_CHANNELS
    ):
        return Conv2dWinograd.apply(*operands, padding=padding)
    if _is_depthwise(x, weight, groups):
        return DepthwiseConv2d.apply(*operands, stride=stride, padding=padding, dilation=dilation)
    return Conv2d.apply(*operands, stride=stride, padding=padding, dilation=dilation, groups=groups)
