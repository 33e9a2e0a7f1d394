"""Activations: relu, tanh, sigmoid, leaky_relu, gelu, silu, softplus, elu, hardswish,
hardsigmoid, mish, logsigmoid, softmax, log_softmax.

* ``relu``, ``tanh``, ``sigmoid``: the Tensor's own elementwise ops (relu takes ``inplace``).
* ``ReLUAfter``: the mixin that makes an op's Function end in ReLU (``conv2d_relu``,
  ``linear_relu``: inference's fused Conv2d → ReLU and Linear → ReLU).
* ``add_relu(a, b)``: relu(a + b) in one pass (a residual block's end); dx = dy·[y > 0] for a
  and b alike. Operands of different shapes or dtypes take relu(a + b) as two ops.
* ``leaky_relu``: y = x·s with s = 1 where x > 0, else ``negative_slope``; dx = dy·s.
* ``gelu``: y = x·Φ(x) with Φ the normal CDF through erf (PyTorch's default), or the tanh
  approximation Φ(x) ≈ (1 + tanh(√(2/π)·(x + 0.044715·x³)))/2; dx = dy·(Φ(x) + x·φ(x)).
* ``silu``: y = x·σ(x); dx = dy·σ(x)·(1 + x·(1 − σ(x))).
* ``softplus(beta, threshold)``: y = softplus(β·x)/β, and y = x where β·x > threshold (PyTorch's
  linear tail); dx = dy·σ(β·x) (1 on the tail). softplus(u) = max(u, 0) + log1p(exp(−|u|)) and
  σ(u) = 1/(1 + exp(−u)) are computed in forms whose exp never overflows.
* ``elu(alpha)``: y = x where x > 0, else α·(exp(x) − 1) (expm1 of min(x, 0)); dx = dy·1 or
  dy·α·exp(x).
* ``hardsigmoid``: y = clip(x + 3, 0, 6)/6; dx = dy/6 on (−3, 3), 0 outside. ``hardswish``:
  y = x·hardsigmoid(x); dx = 0 up to −3, dy·(x/3 + 1/2) on (−3, 3), dy from 3 (PyTorch's edges).
* ``mish``: y = x·tanh(softplus(x)); dx = dy·(tanh(s) + x·σ(x)·(1 − tanh²(s))).
* ``logsigmoid``: y = −softplus(−x); dx = dy·σ(−x).
* ``inplace=True`` (relu, leaky_relu, silu, elu, hardswish, hardsigmoid, mish) writes the
  result into x when no graph is recorded; inside a graph it returns the result out of place,
  as ``x += y`` does (a leaf that requires grad raises, as in PyTorch).
* ``softmax(x, dim, mask, causal)``: y = softmax(x + mask) along ``dim`` on the device's row
  softmax kernel; backward dx = y·(dy − Σ y·dy) on its backward kernel. ``mask`` broadcasts to
  x: additive floats (−inf hides a column) or booleans, True where a column is visible (the
  convention of PyTorch's ``scaled_dot_product_attention``). ``causal=True`` hides, for query row
  q of the last two axes (T, S), every key c > q + S − T: the lower triangle when T = S, aligned
  to the bottom-right corner otherwise (the queries are the last T of the S keys, as with a KV
  cache; PyTorch's ``is_causal`` aligns top-left, which differs only when T ≠ S). A row whose
  every column is hidden gives zeros, not NaN (PyTorch gives NaN): it attends to nothing.
* ``log_softmax``: x − max − log Σ exp(x − max), composed of Tensor ops (the shift by the
  detached max cancels in the value and the gradient).
* softmax and log_softmax take PyTorch's ``dim`` (``axis`` is NumPy's spelling, kept) and
  ``dtype`` (the input is cast first) in PyTorch's positions; ``dim=None`` picks PyTorch's
  deprecated implicit axis (0 for 0-, 1- and 3-d inputs, else 1) with its warning. The default
  ``dim`` is -1, not PyTorch's None: the same axis for 1- and 2-d inputs, and no warning.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ..tensor import Function, Tensor, is_grad_enabled
from ..tensor_ops import relu_grad_of_sum

__all__ = [
    "Mask",
    "relu",
    "add_relu",
    "tanh",
    "sigmoid",
    "leaky_relu",
    "gelu",
    "silu",
    "softplus",
    "elu",
    "hardswish",
    "hardsigmoid",
    "mish",
    "logsigmoid",
    "softmax",
    "log_softmax",
]

# An attention or softmax mask: booleans (True = visible) or additive floats, broadcast to x.
Mask = Tensor | np.ndarray | None


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    if not inplace:
        return input.relu()
    return _in_place("relu", input, input.relu())


class ReLUAfter(Function):
    """Mixin over an op's Function: the op's output through ReLU in the same graph node, without
    a node, an output and the Python path of a separate relu (``conv2d_relu``, ``linear_relu``).
    Backward masks the gradient by the kept output (dy·[y > 0]), then runs the op's backward.

    An op whose kernel can apply the ReLU itself (the convolutions) reads ``relu``, True here,
    and hands it to the kernel; the separate pass is then skipped."""

    saves_output = True
    relu = True
    relu_in_kernel = False  # set by the ops that pass ``relu`` to their kernel

    def forward(self, *arrays, **params):
        out = super().forward(*arrays, **params)
        self.out = out if self.relu_in_kernel else self.device.relu_forward(out)
        return self.out

    def backward(self, grad):
        return super().backward(self.device.relu_backward(grad, self.out))

    def backward_of_sum(self, first, second):
        return super().backward(relu_grad_of_sum(self.device, first, second, self.out))


class AddReLU(Function):
    saves_inputs = False

    def forward(self, a, b):
        self.out = self.device.add_relu_forward(a, b)  # > 0 exactly where a + b > 0
        return self.out

    def backward(self, grad):
        grad_input = self.device.relu_backward(grad, self.out)
        return grad_input, grad_input

    def backward_of_sum(self, first, second):
        grad_input = relu_grad_of_sum(self.device, first, second, self.out)
        return grad_input, grad_input


def add_relu(a: Tensor, b: Tensor) -> Tensor:
    """relu(a + b), one pass over memory where the sum alone would write a whole new tensor."""
    if (
        isinstance(a, Tensor)
        and isinstance(b, Tensor)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and a.dtype.kind == "f"
    ):
        return AddReLU.apply(a, b)
    return (a + b).relu()


def tanh(input: Tensor) -> Tensor:
    return input.tanh()


def sigmoid(input: Tensor) -> Tensor:
    return input.sigmoid()


class LeakyReLU(Function):
    def forward(self, x, negative_slope):
        self.scale = self.device.xp.where(x > 0, x.dtype.type(1), x.dtype.type(negative_slope))
        return x * self.scale

    def backward(self, grad):
        return (grad * self.scale,)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    return _activation(
        "leaky_relu", LeakyReLU, input, inplace, negative_slope=float(negative_slope)
    )


class GELU(Function):
    """x·Φ(x). ``approximate='none'`` (PyTorch's default) is exact, the device's GELU kernels
    (kernels/gelu.py); ``'tanh'`` the tanh formula."""

    def forward(self, x, approximate):
        xp = self.device.xp
        self.x, self.approximate = x, approximate
        if approximate == "tanh":
            self.t = xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))
            return 0.5 * x * (1 + self.t)
        return self.device.gelu_forward(x)  # x·Φ(x) in one pass (kernels/gelu.py)

    def backward(self, grad):
        x = self.x
        if self.approximate == "tanh":
            inner_grad = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x * x)
            return (grad * (0.5 * (1 + self.t) + 0.5 * x * (1 - self.t * self.t) * inner_grad),)
        return (self.device.gelu_backward(grad, x),)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(input, approximate=approximate)


def _stable_sigmoid(xp: Any, u: Any) -> Any:
    """σ(u) through exp(−|u|), which never overflows."""
    exp = xp.exp(-xp.abs(u))
    return xp.where(u >= 0, 1 / (1 + exp), exp / (1 + exp))


def _stable_softplus(xp: Any, u: Any) -> Any:
    """log(1 + exp(u)) = max(u, 0) + log1p(exp(−|u|)), which never overflows."""
    return xp.maximum(u, 0) + xp.log1p(xp.exp(-xp.abs(u)))


class _Elementwise(Function):
    """An activation whose forward keeps dy/dx (``self.slope``) for backward."""

    saves_inputs = saves_output = False

    def backward(self, grad):
        return (grad * self.slope,)


class SiLU(_Elementwise):
    def forward(self, x):
        sigmoid = _stable_sigmoid(self.device.xp, x)
        self.slope = sigmoid * (1 + x * (1 - sigmoid))
        return x * sigmoid


class Softplus(_Elementwise):
    def forward(self, x, beta, threshold):
        xp = self.device.xp
        scaled = x * x.dtype.type(beta)
        linear = scaled > threshold
        self.slope = xp.where(linear, 1, _stable_sigmoid(xp, scaled)).astype(x.dtype, copy=False)
        return xp.where(linear, x, _stable_softplus(xp, scaled) / x.dtype.type(beta))


class ELU(_Elementwise):
    def forward(self, x, alpha):
        xp = self.device.xp
        alpha = x.dtype.type(alpha)
        negative = alpha * xp.expm1(xp.minimum(x, 0))
        positive = x > 0
        self.slope = xp.where(positive, 1, negative + alpha).astype(x.dtype, copy=False)
        return xp.where(positive, x, negative)


class Hardsigmoid(_Elementwise):
    def forward(self, x):
        xp = self.device.xp
        self.slope = xp.where((x > -3) & (x < 3), 1 / 6, 0).astype(x.dtype, copy=False)
        return xp.clip(x + 3, 0, 6) / 6


class Hardswish(_Elementwise):
    def forward(self, x):
        xp = self.device.xp
        self.slope = xp.where(x <= -3, 0, xp.where(x < 3, x / 3 + 0.5, 1)).astype(
            x.dtype, copy=False
        )
        return x * xp.clip(x + 3, 0, 6) / 6


class Mish(_Elementwise):
    def forward(self, x):
        xp = self.device.xp
        tanh_softplus = xp.tanh(_stable_softplus(xp, x))
        sigmoid = _stable_sigmoid(xp, x)
        self.slope = tanh_softplus + x * sigmoid * (1 - tanh_softplus * tanh_softplus)
        return x * tanh_softplus


class LogSigmoid(_Elementwise):
    def forward(self, x):
        xp = self.device.xp
        self.slope = _stable_sigmoid(xp, -x)
        return -_stable_softplus(xp, -x)


def _activation(op: str, function: type[Function], x: Tensor, inplace: bool, **params) -> Tensor:
    """``function`` applied to the float tensor x; with ``inplace``, PyTorch's in-place form (see
    the module docstring)."""
    if not isinstance(x, Tensor) or x.dtype.kind != "f":
        kind = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"{op}: expected a floating-point Tensor, got {kind}")
    y = function.apply(x, **params)
    return _in_place(op, x, y) if inplace else y


def _in_place(op: str, x: Tensor, y: Tensor) -> Tensor:
    """y written into x when no graph is recorded; inside a graph y itself, out of place (a leaf
    that requires grad raises, as in PyTorch)."""
    if x.requires_grad and is_grad_enabled():
        x._check_writable(f"{op}(inplace=True)")
        return y
    return x.copy_(y)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    return _activation("silu", SiLU, input, inplace)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    return _activation("softplus", Softplus, input, False, beta=beta, threshold=threshold)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    return _activation("elu", ELU, input, inplace, alpha=alpha)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    return _activation("hardsigmoid", Hardsigmoid, input, inplace)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    return _activation("hardswish", Hardswish, input, inplace)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    return _activation("mish", Mish, input, inplace)


def logsigmoid(input: Tensor) -> Tensor:
    return _activation("logsigmoid", LogSigmoid, input, False)


# ===================================================================== softmax
class Softmax(Function):
    """Row softmax over the last axis of x (..., C), viewed as (rows, C) for the kernel."""

    def forward(self, x, mask, causal_query_len):
        rows = self.device.xp.ascontiguousarray(x).reshape(int(np.prod(x.shape[:-1])), x.shape[-1])
        self.y = self.device.softmax_forward(rows, mask, causal_query_len)
        return self.y.reshape(x.shape)

    def backward(self, grad):
        grad_rows = self.device.xp.ascontiguousarray(grad).reshape(self.y.shape)
        return (self.device.softmax_backward(self.y, grad_rows).reshape(grad.shape),)


def _additive_mask(mask: Mask, x: Tensor, op: str) -> Any:
    """``mask`` as an additive array of x's dtype and device, in the kernel's layout for x viewed
    as (rows, C): (C,) when every row shares it, else (rows, C); None stays None."""
    if mask is None:
        return None
    if isinstance(mask, Tensor):
        if mask.device is not x.device:
            raise RuntimeError(f"{op}: input is on {x.device} but the mask on {mask.device}")
        mask = mask.data
    xp = x.device.xp
    mask = x.device.asarray(mask)
    if mask.dtype == np.bool_:
        mask = xp.where(mask, x.dtype.type(0), x.dtype.type(-np.inf))
    elif mask.dtype.kind != "f":
        raise TypeError(
            f"{op}: the mask must be boolean (True = visible) or float (additive), got {mask.dtype}"
        )
    try:
        np.broadcast_shapes(mask.shape, x.shape)
    except ValueError:
        raise ValueError(
            f"{op}: mask of shape {tuple(mask.shape)} does not broadcast to input of "
            f"shape {x.shape}"
        ) from None
    if mask.ndim > x.ndim:
        raise ValueError(
            f"{op}: mask of shape {tuple(mask.shape)} has more axes than input of shape {x.shape}"
        )
    columns = x.shape[-1]
    # Copies, never broadcast views: those are read-only, and the simulator writes every
    # argument back.
    if all(n == 1 for n in mask.shape[:-1]):  # one row of mask for every row of x
        return xp.array(xp.broadcast_to(mask.reshape(-1), (columns,)), dtype=x.dtype)
    return xp.array(xp.broadcast_to(mask, x.shape).reshape(-1, columns), dtype=x.dtype)


def _softmax_axis(op: str, x: Tensor, dim: int | None, axis: int | None, dtype: Any) -> Any:
    """(x cast to ``dtype``, the axis of PyTorch's ``dim`` or NumPy's ``axis``)."""
    if axis is not None:
        if dim is not None and dim != -1 and dim != axis:
            raise TypeError(f"{op}: got dim={dim} and axis={axis}; give one")
        dim = axis
    if dim is None:
        dim = 0 if x.ndim in (0, 1, 3) else 1
        warnings.warn(
            f"Implicit dimension choice for {op} has been deprecated. Change the call to "
            "include dim=X as an argument.",
            UserWarning,
            stacklevel=3,
        )
    return (x if dtype is None else x.to(dtype=dtype)), dim


def softmax(
    input: Tensor,
    dim: int | None = -1,
    _stacklevel: int = 3,
    dtype: Any = None,
    *,
    mask: Mask = None,
    causal: bool = False,
    axis: int | None = None,
) -> Tensor:
    """softmax(x + mask) along ``dim`` on the softmax kernel (see the module docstring for the
    mask conventions and ``causal``, which applies to the last two axes and needs dim -1).
    ``_stacklevel`` is PyTorch's positional placeholder; it is ignored."""
    x, axis = _softmax_axis("softmax", input, dim, axis, dtype)
    if x.ndim == 0:
        if axis not in (0, -1) or mask is not None or causal:
            raise ValueError(f"softmax: dim {axis} is out of range for a 0-d input")
        return softmax(x.reshape(1)).reshape(())
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"softmax: axis {axis} is out of range for input of shape {x.shape}")
    axis %= x.ndim
    last = x.ndim - 1
    if causal and (axis != last or x.ndim < 2):
        raise ValueError(
            f"softmax: causal=True needs axis -1 and an input (..., T, S), got axis "
            f"{axis} of shape {x.shape}"
        )
    if axis != last:  # the kernel works on rows: move the axis last and back
        if mask is not None:
            raise ValueError(
                "softmax: a mask needs axis -1 (the axis the mask's last axis indexes)"
            )
        moved = Softmax.apply(x.transpose(axis, last), mask=None, causal_query_len=None)
        return moved.transpose(axis, last)
    if isinstance(mask, Tensor) and mask.requires_grad:
        # A float mask that trains (a learned attention bias) joins the graph, so it gets its
        # gradient: the input's, summed over the axes the mask was broadcast along.
        _additive_mask(mask, x, "softmax")  # the checks a constant mask gets
        x, mask = x + mask, None
    return Softmax.apply(
        x, mask=_additive_mask(mask, x, "softmax"), causal_query_len=x.shape[-2] if causal else None
    )


def log_softmax(
    input: Tensor,
    dim: int | None = -1,
    _stacklevel: int = 3,
    dtype: Any = None,
    *,
    axis: int | None = None,
) -> Tensor:
    x, axis = _softmax_axis("log_softmax", input, dim, axis, dtype)
    if not -max(x.ndim, 1) <= axis < max(x.ndim, 1):
        raise ValueError(f"log_softmax: dim {axis} is out of range for input of shape {x.shape}")
    if x.ndim == 0:
        return x * 0.0  # log softmax of one value is 0, with a zero gradient
    shifted = x - x.max(axis=axis, keepdims=True).detach()  # the shift cancels: no gradient needed
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()
