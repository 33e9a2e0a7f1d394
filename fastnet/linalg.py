"""``fastnet.linalg``: the vector norms of PyTorch's ``torch.linalg``.

``vector_norm(x, ord, dim)`` over the values ``x_i`` reduced (all of them, or those along
``dim``):

* ``ord`` p (finite, non-zero): ``y = (Σ |x_i|^p)^(1/p)``, ``∂y/∂x_i = sign(x_i) |x_i|^(p−1) /
  y^(p−1)``, taken as 0 where ``y`` is 0 (PyTorch's subgradient at the origin);
* ``ord`` ±inf: ``y = max |x_i|`` (``min``), the gradient ``sign(x_i)`` split evenly between the
  values that reach it;
* ``ord`` 0: the number of non-zero values, with a zero gradient.

The result keeps the input's floating dtype (or ``dtype``); an integer input raises, as in
PyTorch. :class:`VectorNorm` saves the input and the keepdims output.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .autograd import Function
from .tensor import Tensor
from .tensor_functions import tensor_argument
from .tensor_reductions import _normalize_axes

__all__ = ["VectorNorm", "norm", "vector_norm"]


class VectorNorm(Function):
    def forward(self, a, ord, axis, keepdims):
        xp = self.device.xp
        self.a, self.ord, self.axis = a, ord, axis
        magnitude = xp.abs(a)
        if ord == math.inf:
            out = magnitude.max(axis=axis, keepdims=True)
        elif ord == -math.inf:
            out = magnitude.min(axis=axis, keepdims=True)
        elif ord == 0:
            out = (a != 0).sum(axis=axis, keepdims=True).astype(a.dtype)
        elif ord == 2:
            out = xp.sqrt((a * a).sum(axis=axis, keepdims=True))
        elif ord == 1:
            out = magnitude.sum(axis=axis, keepdims=True)
        else:
            out = (magnitude**ord).sum(axis=axis, keepdims=True) ** (1 / ord)
        self.out = out
        return out if keepdims else out.reshape(()) if axis is None else out.squeeze(axis=axis)

    def backward(self, grad):
        xp, a, out, ord = self.device.xp, self.a, self.out, self.ord
        grad = grad.reshape(out.shape)
        if ord == 0:
            return (xp.zeros_like(a),)
        sign = xp.sign(a)
        if math.isinf(ord):
            winners = (xp.abs(a) == out).astype(a.dtype)
            return (sign * winners * (grad / winners.sum(axis=self.axis, keepdims=True)),)
        if ord == 1:
            return (sign * grad,)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = xp.where(out == 0, 0, grad / out ** (ord - 1))
            return (sign * xp.abs(a) ** (ord - 1) * scale,)


def vector_norm(
    x: Tensor,
    ord: float = 2,
    dim: Any = None,
    keepdim: bool = False,
    *,
    dtype: Any = None,
) -> Tensor:
    """The ``ord``-norm of ``x`` over ``dim`` (an int, a tuple, or None for every value)."""
    x = tensor_argument("linalg.vector_norm", x)
    if x.dtype.kind != "f":
        raise RuntimeError(
            "linalg.vector_norm: Expected a floating point or complex tensor as input. Got "
            f"{x.dtype}"
        )
    if isinstance(ord, str) or not isinstance(ord, (int, float, np.number)):
        raise RuntimeError(f"linalg.vector_norm: ord must be a number, got {ord!r}")
    x = x if dtype is None else x.to(dtype=dtype)
    return VectorNorm.apply(x, ord=float(ord), axis=_normalize_axes(dim, x.ndim), keepdims=keepdim)


def norm(
    x: Tensor, ord: Any = None, dim: Any = None, keepdim: bool = False, *, dtype: Any = None
) -> Tensor:
    """The 2-norm of all values (``ord`` None or ``"fro"``), or a vector norm over ``dim``;
    matrix norms other than Frobenius are not provided."""
    if ord in (None, "fro"):
        return vector_norm(x, 2, dim, keepdim, dtype=dtype)
    if (
        isinstance(ord, str)
        or (x.ndim == 2 and dim is None)
        or (dim is not None and not isinstance(dim, (int, np.integer)) and len(dim) == 2)
    ):
        raise NotImplementedError(f"linalg.norm: matrix norm ord={ord!r} is not provided")
    return vector_norm(x, ord, dim, keepdim, dtype=dtype)
