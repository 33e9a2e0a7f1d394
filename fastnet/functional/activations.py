"""Activations: relu, tanh, sigmoid, leaky_relu, gelu, softmax, log_softmax.

* ``relu``, ``tanh``, ``sigmoid``: the Tensor's own elementwise ops.
* ``leaky_relu``: y = x·s with s = 1 where x > 0, else ``negative_slope``; dx = dy·s.
* ``gelu``: y = x·Φ(x) with Φ the normal CDF through erf (PyTorch's default), or the tanh
  approximation Φ(x) ≈ (1 + tanh(√(2/π)·(x + 0.044715·x³)))/2; dx = dy·(Φ(x) + x·φ(x)).
* ``softmax(x, axis, mask, causal)``: y = softmax(x + mask) along ``axis`` on the device's row
  softmax kernel; backward dx = y·(dy − Σ y·dy) on its backward kernel. ``mask`` broadcasts to
  x: additive floats (−inf hides a column) or booleans, True where a column is visible (the
  convention of PyTorch's ``scaled_dot_product_attention``). ``causal=True`` hides, for query row
  q of the last two axes (T, S), every key c > q + S − T: the lower triangle when T = S, aligned
  to the bottom-right corner otherwise (the queries are the last T of the S keys, as with a KV
  cache; PyTorch's ``is_causal`` aligns top-left, which differs only when T ≠ S). A row whose
  every column is hidden gives zeros, not NaN (PyTorch gives NaN): it attends to nothing.
* ``log_softmax``: x − max − log Σ exp(x − max), composed of Tensor ops (the shift by the
  detached max cancels in the value and the gradient).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..tensor import Function, Tensor

__all__ = ["Mask", "relu", "tanh", "sigmoid", "leaky_relu", "gelu", "softmax", "log_softmax"]

# An attention or softmax mask: booleans (True = visible) or additive floats, broadcast to x.
Mask = Tensor | np.ndarray | None


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
            self.t = xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))
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


def softmax(x: Tensor, axis: int = -1, mask: Mask = None, causal: bool = False) -> Tensor:
    """softmax(x + mask) along ``axis`` on the softmax kernel (see the module docstring for the
    mask conventions and ``causal``, which applies to the last two axes and needs axis -1)."""
    if x.ndim == 0:
        raise ValueError("softmax: input must have at least one axis, got a scalar")
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


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    shifted = x - x.max(axis=axis, keepdims=True).detach()  # the shift cancels: no gradient needed
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()
