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

A call that records no graph (inference) takes its signature's plan: the kernel call above,
worked out once by the signature's first call (:class:`_ForwardPlans`).

``conv2d_relu`` is relu(conv2d(...)) as one graph node (each class above with
:class:`~.activations.ReLUAfter`): the same values, one op's Python path and output fewer
(inference fuses Conv2d → ReLU into it: :mod:`fastnet.inference`).
"""

from __future__ import annotations

from typing import Any

from ..backend import conv_output_shape, images_per_chunk
from ..tensor import Function, Tensor
from . import activations
from .activations import ReLUAfter
from .arguments import Pair, to_pair
from .conv_caches import FORWARD_PLANS, _winograd_tiles
from .pooling import max_pool2d
from .shape import pad

__all__ = [
    "Conv2d",
    "Conv2dWinograd",
    "DepthwiseConv2d",
    "WINOGRAD_MIN_CHANNELS",
    "conv2d",
    "conv2d_relu",
    "conv2d_relu_max_pool2d",
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
    per_chunk = _images_per_chunk(device, batch, columns, out_channels, plane, itemsize)
    chunks = [(start, min(start + per_chunk, batch)) for start in range(0, batch, per_chunk)]
    return chunks or [(0, 0)]


def _images_per_chunk(
    device: Any,
    batch: int,
    columns: int,
    out_channels: int,
    plane: int,
    itemsize: int,
    workspace: int | None = None,
) -> int:
    """The images of one chunk of :func:`conv_image_chunks` (at least 1), in ``workspace`` bytes
    (the device's conv workspace by default)."""
    bytes_per_image = (columns + out_channels) * plane * itemsize
    workspace = device.conv_workspace_bytes if workspace is None else workspace
    return max(1, min(batch, images_per_chunk(bytes_per_image, workspace)))


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
    """conv2d by im2col and GEMMs (kernels/conv.py's ``conv2d_im2col``): the device runs the
    chunks of images, whose columns fit the workspace policy (:func:`conv_image_chunks`), in one
    call each way; backward recomputes a chunk's columns rather than keeping the batch's."""

    relu = False  # True in Conv2dReLU, whose kernel applies it
    pool = False  # True in Conv2dReLUMaxPool: the kernel pools its output (2x2, stride 2)

    def forward(self, x, weight, *bias, stride, padding, dilation=(1, 1), groups=1):
        self.window = (stride, padding, dilation, groups)
        self.chunk_images = _im2col_chunk_images(self.device, x, weight, *self.window)
        self.x, self.weight = self.device.xp.ascontiguousarray(x), weight
        out = self.device.conv2d_im2col(
            self.x, weight, bias[0] if bias else None, *self.window, self.chunk_images,
            relu=self.relu, pool=self.pool,
        )  # fmt: skip
        return self._pooled(out)

    def _pooled(self, out):
        """The kernel's output, keeping a pooling kernel's argmax (``where``) for backward."""
        if not self.pool:
            return out
        out, self.where = out
        return out

    @classmethod
    def plan(cls, device, x, weight, bias=None, *, stride, padding, dilation=(1, 1), groups=1):
        """forward's kernel call for arrays shaped as x, weight and bias (bias None or one),
        checked once: run(x, weight, bias) of Tensors gives the output's array and records
        nothing (:class:`_ForwardPlans`)."""
        window = (stride, padding, dilation, groups)
        chunk_images = _im2col_chunk_images(device, x, weight, *window)
        convolve = device.conv2d_im2col_plan(
            x, weight, bias, *window, chunk_images, relu=cls.relu, pool=cls.pool
        )

        def run(x, weight, bias):
            out = convolve(x.data, weight.data, None if bias is None else bias.data)
            return _planned_output(cls.pool, out)

        return run

    def backward(self, grad):
        need_x, need_w = self.inputs[0].requires_grad, self.inputs[1].requires_grad
        need_b = len(self.inputs) == 3 and self.inputs[2].requires_grad
        return self.device.conv2d_im2col_backward(
            grad, self.x, self.weight, *self.window, self.chunk_images, need_x, need_w, need_b,
            pool_argmax=self.where if self.pool else None,
        )  # fmt: skip


def _planned_output(pool: bool, out: Any) -> Any:
    """A plan's output: with ``pool``, the pooling kernel's values without their argmax (a plan
    records no graph, so no backward needs it)."""
    return out[0] if pool else out


def _im2col_chunk_images(
    device: Any, x: Any, weight: Any, stride: Any, padding: Any, dilation: Any, groups: int
) -> int:
    """The images of one chunk of Conv2d over x (N, C, H, W) and weight, after checking that
    they fit together and the window fits x."""
    _check_conv_shapes("conv2d", x, weight, groups)
    kernel_hw = tuple(weight.shape[2:])
    oh, ow = _output_shape("conv2d", x.shape, kernel_hw, stride, padding, dilation)
    columns = weight.shape[1] * groups * kernel_hw[0] * kernel_hw[1]
    return _images_per_chunk(device, x.shape[0], columns, weight.shape[0], oh * ow, x.itemsize)


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


class Conv2dWinograd(Function):
    """conv2d for a 3x3 kernel at stride 1 by Winograd F(2x2, 3x3) (kernels/winograd.py): U = the
    weights' tiles (16, OC, C), then the device's ``winograd_conv2d`` runs the chunks of images
    (input tiles V, M = U·V, output tiles) in one call; backward, ``winograd_conv2d_backward``
    gives dx, dU and Σ dY the same way, and dW = the weights' adjoint of dU. The chunk size is
    the workspace policy's (:func:`conv_image_chunks`)."""

    relu = False  # True in Conv2dWinogradReLU, whose kernel applies it
    pool = False  # True in Conv2dWinogradReLUMaxPool: the kernel pools its output
    _pooled = Conv2d._pooled

    def forward(self, x, weight, *bias, padding, tiles_weight=None):
        self.chunk_images = _winograd_chunk_images(self.device, x, weight, padding)
        self.x, self.padding = self.device.xp.ascontiguousarray(x), padding
        # U (16, OC, C): given by conv2d from its cache when the weight takes no gradient
        self.u = self.device.winograd_weights(weight) if tiles_weight is None else tiles_weight
        out = self.device.winograd_conv2d(
            self.x, self.u, bias[0] if bias else None, padding, self.chunk_images,
            relu=self.relu, pool=self.pool,
        )  # fmt: skip
        return self._pooled(out)

    @classmethod
    def plan(cls, device, x, weight, bias=None, *, padding, tiles_weight=None):
        """As :meth:`Conv2d.plan`; run(x, weight, bias) takes the weight's tiles from conv2d's
        cache (which checks the weight's values on every call) on the CPU, computes them on a
        GPU."""
        chunk_images = _winograd_chunk_images(device, x, weight, padding)
        u = device.winograd_weights(weight) if tiles_weight is None else tiles_weight
        convolve = device.winograd_conv2d_plan(
            x, u, bias, padding, chunk_images, relu=cls.relu, pool=cls.pool
        )

        def run(x, weight, bias):
            u = _winograd_tiles(weight)
            if u is None:
                u = device.winograd_weights(weight.data)
            return _planned_output(
                cls.pool, convolve(x.data, u, None if bias is None else bias.data)
            )

        return run

    def backward(self, grad):
        device = self.device
        need_x, need_w = self.inputs[0].requires_grad, self.inputs[1].requires_grad
        need_b = len(self.inputs) == 3 and self.inputs[2].requires_grad
        grad_x, grad_u, grad_b = device.winograd_conv2d_backward(
            device.xp.ascontiguousarray(grad),
            self.x,
            self.u,
            self.padding,
            self.chunk_images,
            need_x,
            need_w,
            need_b,
            pool_argmax=self.where if self.pool else None,
        )
        grad_w = device.winograd_weights_grad(grad_u) if need_w else None
        return grad_x, grad_w, grad_b


def _winograd_chunk_images(device: Any, x: Any, weight: Any, padding: tuple[int, int]) -> int:
    """The images of one chunk of Conv2dWinograd over x (N, C, H, W) and a 3x3 weight, after
    checking that they fit together and the padded x holds the window."""
    _check_conv_shapes("conv2d", x, weight)
    n, channels, h, w = x.shape
    if h + 2 * padding[0] >= 3 and w + 2 * padding[1] >= 3:
        oh, ow = h + 2 * padding[0] - 2, w + 2 * padding[1] - 2  # 3x3, stride 1
    else:
        oh, ow = _output_shape("conv2d", x.shape, 3, 1, padding)  # raises: too small
    return _images_per_chunk(
        device,
        n,
        WINOGRAD_POSITIONS * channels,
        WINOGRAD_POSITIONS * weight.shape[0],
        ((oh + 1) // 2) * ((ow + 1) // 2),
        x.itemsize,
        device.winograd_workspace_bytes,
    )


class Conv2dReLU(ReLUAfter, Conv2d):
    relu_in_kernel = True


class Conv2dWinogradReLU(ReLUAfter, Conv2dWinograd):
    relu_in_kernel = True


class DepthwiseConv2dReLU(ReLUAfter, DepthwiseConv2d):
    pass


class Conv2dReLUMaxPool(Conv2d):
    """max_pool2d(relu(conv2d(...)), 2) in one node: the kernel pools each image's output planes
    while they are in cache and keeps the argmax, with -1 where the ReLU passes no gradient;
    backward unpools the gradient through it the same way. The convolution's output is never
    written."""

    relu = pool = True


class Conv2dWinogradReLUMaxPool(Conv2dWinograd):
    """:class:`Conv2dReLUMaxPool` for the Winograd convolution."""

    relu = pool = True


# Winograd takes over 3x3 stride-1 convolutions with at least this many input channels. Its 16
# GEMMs a chunk have the input channels as their inner dimension (the forward) or their output
# width (the weight gradient), where im2col's GEMMs have 9x that: with few channels its GEMMs are
# too thin to win. Re-measure the crossover, forward + backward on one core against im2col, with
# `fastnet bench --only conv2d_train` over a sweep of channel counts.
WINOGRAD_MIN_CHANNELS = 16


def _int_pair(value: Any, smallest: int) -> tuple[int, int] | None:
    """``value`` itself when it is already a pair of plain ints ≥ ``smallest`` (what the layers
    pass); None sends it to the full normalisation and its errors."""
    if (
        value.__class__ is tuple
        and len(value) == 2
        and value[0].__class__ is int
        and value[1].__class__ is int
        and value[0] >= smallest
        and value[1] >= smallest
    ):
        return value
    return None


def _window_arguments(
    op: str, stride: Pair, dilation: Pair, groups: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """stride and dilation as pairs of positive ints; groups a positive int."""
    stride_pair, dilation_pair = _int_pair(stride, 1), _int_pair(dilation, 1)
    if stride_pair and dilation_pair and groups.__class__ is int and groups >= 1:
        return stride_pair, dilation_pair
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
    return _conv2d(input, weight, bias, stride, padding, dilation, groups, relu=False)


def conv2d_relu(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Pair = 1,
    padding: Pair | str = 0,
    dilation: Pair = 1,
    groups: int = 1,
) -> Tensor:
    """relu(conv2d(input, weight, bias, ...)) as one op: the same values and gradients."""
    return _conv2d(input, weight, bias, stride, padding, dilation, groups, relu=True)


def conv2d_relu_max_pool2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Pair = 1,
    padding: Pair | str = 0,
    dilation: Pair = 1,
    groups: int = 1,
) -> Tensor:
    """max_pool2d(relu(conv2d(input, weight, bias, ...)), 2) as one op: the same values and
    gradients, bit for bit. The im2col and Winograd convolutions pool each chunk's output while
    it is in cache (kernels/_pool2x2.py), so the convolution's output, its pass through the
    pool and the ReLU's pass are never made (the MNIST CNN's Conv2d → ReLU → MaxPool2d(2)
    stages; Sequential calls this for them). A depthwise convolution, a bias with groups, or an
    output under 2x2 run as the three ops."""
    return _conv2d(input, weight, bias, stride, padding, dilation, groups, relu=True, pool=True)


def _pools_in_kernel(
    x: Tensor, weight: Tensor, bias: Any, stride: Any, padding: Any, dilation: Any, groups: int
) -> bool:
    """Whether conv2d_relu_max_pool2d's kernels take these arguments (else it runs as three ops,
    which also raise the errors of arguments that fit none): a batch and weight conv2d accepts,
    not depthwise, no bias with groups, and an output of at least 2x2."""
    if not (isinstance(x, Tensor) and isinstance(weight, Tensor)) or x.ndim != 4:
        return False
    if weight.ndim != 4 or _is_depthwise(x, weight, groups) or (bias is not None and groups != 1):
        return False
    try:
        out_h, out_w = conv_output_shape(
            *x.shape[2:], tuple(weight.shape[2:]), stride, padding, dilation
        )
    except ValueError:
        return False
    return out_h >= 2 and out_w >= 2


def _conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Pair,
    padding: Pair | str,
    dilation: Pair,
    groups: int,
    relu: bool,
    pool: bool = False,
) -> Tensor:
    key = FORWARD_PLANS.signature(x, weight, bias, stride, padding, dilation, groups, relu, pool)
    if key is not None:
        plan = FORWARD_PLANS.get(key)
        if plan is not None:
            return Tensor._wrap(plan(x, weight, bias), x.device)
    if x.ndim == 3:
        y = _conv2d(x.unsqueeze(0), weight, bias, stride, padding, dilation, groups, relu, pool)
        return y.squeeze(0)
    stride, dilation = _window_arguments("conv2d", stride, dilation, groups)
    if not isinstance(padding, str):
        padding = _int_pair(padding, 0) or to_pair(padding, "padding")
    elif padding == "same":
        x, padding = _same_padding(x, weight, stride, dilation, groups)
    elif padding == "valid":
        padding = (0, 0)
    else:
        raise ValueError(f"conv2d: padding must be 'valid', 'same' or ints, got {padding!r}")
    operands = (x, weight, *([bias] if bias is not None else []))
    if pool and not _pools_in_kernel(x, weight, bias, stride, padding, dilation, groups):
        y = _conv2d(x, weight, bias, stride, padding, dilation, groups, relu=False)
        return max_pool2d(activations.relu(y), 2)
    if (
        stride == (1, 1)
        and dilation == (1, 1)
        and groups == 1
        and weight.ndim == 4
        and tuple(weight.shape[2:]) == (3, 3)
        and x.ndim == 4
        and x.shape[1] >= WINOGRAD_MIN_CHANNELS
    ):
        op = Conv2dWinogradReLUMaxPool if pool else Conv2dWinogradReLU if relu else Conv2dWinograd
        params = {"padding": padding, "tiles_weight": _winograd_tiles(weight)}
        y = op.apply(*operands, **params)
    elif _is_depthwise(x, weight, groups):
        depthwise = DepthwiseConv2dReLU if relu else DepthwiseConv2d
        return depthwise.apply(*operands, stride=stride, padding=padding, dilation=dilation)
    else:
        op = Conv2dReLUMaxPool if pool else Conv2dReLU if relu else Conv2d
        params = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
        y = op.apply(*operands, **params)
    if key is not None:  # the general path took the signature: the next call takes the plan
        arrays = (x.data, weight.data, None if bias is None else bias.data)
        FORWARD_PLANS.add(key, op.plan(x.device, *arrays, **params))
    return y
