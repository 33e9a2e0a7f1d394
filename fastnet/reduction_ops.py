"""The Functions behind Tensor's prod, var, std, logsumexp, cumsum, cumprod, sort and topk.

Each works on the device's arrays (``xp``: NumPy on the cpu, CuPy on cuda). ``a`` is the input,
of any shape; ``axis`` an int, a sorted tuple of ints, or None for every axis; the ``keepdims``
shape of a result is ``a``'s with each reduced axis 1. The Tensor methods
(:mod:`fastnet.tensor_reductions`) check the arguments, pick the dtype and handle 0-d tensors.

* ``Prod``: out = Π a over one axis (or all). ∂out/∂a_i = Π_{j≠i} a_j, the exclusive prefix
  product times the exclusive suffix product (two cumprods along the axis), never out / a_i: with
  one zero the gradient at the zero is the product of the others and 0 elsewhere, with two or
  more it is 0 everywhere, as PyTorch's. Saves ``a``.
* ``Var`` / ``Std``: var = Σ (a − mean)² / max(0, N − correction), N the number of reduced
  elements; std = √var. ∂var/∂a = 2 (a − mean) / max(0, N − correction), so no degrees of
  freedom left gives inf or NaN as PyTorch; ∂std/∂var = 1 / (2 std), taken as 0 where std is 0
  (PyTorch's choice). Saves the centred values (``a``'s shape) and, for std, the output.
* ``LogSumExp``: out = m + log Σ exp(a − m), m the max over the axes (0 where the max is ±inf,
  so a row of -inf gives -inf and a +inf gives +inf, as PyTorch); ∂out/∂a = exp(a − out), NaN
  for a row of -inf as in PyTorch. Saves ``a`` and the keepdims output.
* ``CumSum``: out_k = Σ_{i≤k} a_i; ∂L/∂a_i = Σ_{k≥i} g_k (a reversed cumsum).
* ``CumProd``: out_k = Π_{i≤k} a_i. ∂L/∂a_i = Σ_{k≥i} g_k out_k / a_i before the first zero z
  of the slice, 0 after it, and at z: Π_{j<z} a_j · Σ_{k≥z} g_k Π_{z<j≤k} a_j (no division by
  zero anywhere, as PyTorch's). Saves ``a`` and the output.
* ``TakeAlong``: the values at ``indices`` along one axis (sort, topk); the gradient goes back to
  the picked positions, each picked at most once. Keeps only the indices.

:func:`stable_order` gives the indices that sort along an axis, ties in their original order and
NaN as the largest value, as PyTorch's sort.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .autograd import Function

__all__ = [
    "CumProd",
    "CumSum",
    "LogSumExp",
    "Prod",
    "Std",
    "TakeAlong",
    "Var",
    "stable_order",
]


def _count(shape: tuple, axis: Any) -> int:
    """How many elements each output element reduces."""
    return int(np.prod(shape if axis is None else [shape[i] for i in axis]))


def _keepdims_shape(shape: tuple, axis: Any) -> tuple:
    axes = range(len(shape)) if axis is None else (axis,) if isinstance(axis, int) else axis
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _reduced(kept: Any, axis: Any, keepdims: bool, xp: Any) -> Any:
    """The op's output from its keepdims-shaped result: an array (NumPy makes a 0-d result a
    scalar), the reduced axes dropped unless ``keepdims``."""
    kept = xp.asarray(kept)
    if keepdims:
        return kept
    return kept.reshape(()) if axis is None else kept.squeeze(axis=axis)


def _reversed_cumsum(x: Any, axis: int, xp: Any) -> Any:
    return xp.flip(xp.cumsum(xp.flip(x, axis), axis=axis), axis)


class Prod(Function):
    saves_output = False

    def forward(self, a, axis, keepdims):
        self.a, self.axis, self.kept = a, axis, _keepdims_shape(a.shape, axis)
        return _reduced(a.prod(axis=axis, keepdims=True), axis, keepdims, self.device.xp)

    def backward(self, grad):
        xp, a = self.device.xp, self.a
        if self.axis is None:
            others = _products_of_the_others(a.reshape(-1), xp).reshape(a.shape)
        else:
            moved = xp.moveaxis(a, self.axis, -1)
            others = xp.moveaxis(_products_of_the_others(moved, xp), -1, self.axis)
        return (grad.reshape(self.kept) * others,)


def _products_of_the_others(a: Any, xp: Any) -> Any:
    """Π_{j≠i} a_j along the last axis, for each i, without dividing."""
    if a.shape[-1] == 0:
        return a
    ones = xp.ones(a.shape[:-1] + (1,), dtype=a.dtype)
    before = xp.concatenate([ones, xp.cumprod(a[..., :-1], axis=-1)], axis=-1)
    after = xp.concatenate([xp.flip(xp.cumprod(xp.flip(a[..., 1:], -1), axis=-1), -1), ones], -1)
    return before * after


class Var(Function):
    saves_inputs = saves_output = False  # keeps its own centred values

    def forward(self, a, axis, correction, keepdims):
        return _reduced(self._variance(a, axis, correction), axis, keepdims, self.device.xp)

    def _variance(self, a, axis, correction):
        """The variance in the keepdims shape; saves what backward needs."""
        count = _count(a.shape, axis)
        self.kept = _keepdims_shape(a.shape, axis)
        self.dof = max(0, count - correction)
        # an empty reduction has no centred values: any mean serves
        self.centered = a - a.sum(axis=axis, keepdims=True) / max(count, 1)
        squares = (self.centered * self.centered).sum(axis=axis, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):  # no dof left: inf or NaN
            return squares / self.dof

    def backward(self, grad):
        with np.errstate(divide="ignore", invalid="ignore"):
            return ((2 * grad.reshape(self.kept)) * self.centered / self.dof,)


class Std(Var):
    saves_output = True  # backward reads the standard deviation

    def forward(self, a, axis, correction, keepdims):
        self.out = self.device.xp.sqrt(self._variance(a, axis, correction))
        return _reduced(self.out, axis, keepdims, self.device.xp)

    def backward(self, grad):
        xp = self.device.xp
        grad = grad.reshape(self.kept)
        with np.errstate(divide="ignore", invalid="ignore"):
            grad_var = xp.where(self.out == 0, 0, grad / (2 * self.out)).astype(grad.dtype)
        return super().backward(grad_var)


class LogSumExp(Function):
    def forward(self, a, axis, keepdims):
        xp = self.device.xp
        self.a, self.kept = a, _keepdims_shape(a.shape, axis)
        if _count(a.shape, axis):
            shift = a.max(axis=axis, keepdims=True)
            shift = xp.where(xp.isinf(shift), 0, shift).astype(a.dtype, copy=False)
        else:  # the log of an empty sum: -inf
            shift = xp.zeros(self.kept, dtype=a.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.out = xp.log(xp.exp(a - shift).sum(axis=axis, keepdims=True)) + shift
        return _reduced(self.out, axis, keepdims, xp)

    def backward(self, grad):
        with np.errstate(invalid="ignore"):  # exp(-inf - -inf): NaN, as PyTorch's
            return (grad.reshape(self.kept) * self.device.xp.exp(self.a - self.out),)


class CumSum(Function):
    saves_inputs = saves_output = False

    def forward(self, a, axis):
        self.axis = axis
        return self.device.xp.cumsum(a, axis=axis)

    def backward(self, grad):
        return (_reversed_cumsum(grad, self.axis, self.device.xp),)


class CumProd(Function):
    def forward(self, a, axis):
        self.a, self.axis = a, axis
        self.out = self.device.xp.cumprod(a, axis=axis)
        return self.out

    def backward(self, grad):
        xp, axis = self.device.xp, self.axis
        if self.a.shape[axis] == 0:
            return (grad,)
        a, out, grad = (xp.moveaxis(x, axis, -1) for x in (self.a, self.out, grad))
        positions = xp.arange(a.shape[-1])
        zero = a == 0
        first_zero = xp.where(
            zero.any(axis=-1, keepdims=True), zero.argmax(axis=-1, keepdims=True), a.shape[-1]
        )
        before = positions < first_zero
        # before the first zero a_i is not 0: out_k / a_i is the product of the others
        result = xp.where(
            before, _reversed_cumsum(grad * out, -1, xp) / xp.where(before, a, 1), 0
        ).astype(grad.dtype, copy=False)
        # at the first zero: the products up to it, times the products after it (a scan)
        prefix = xp.where(before, a, 1).prod(axis=-1, keepdims=True)
        following = xp.cumprod(xp.where(positions > first_zero, a, 1), axis=-1)
        reached = xp.where(positions >= first_zero, grad * following, 0).sum(-1, keepdims=True)
        result = xp.where(positions == first_zero, prefix * reached, result)
        return (xp.moveaxis(result.astype(grad.dtype, copy=False), -1, axis),)


class TakeAlong(Function):
    saves_inputs = saves_output = False  # keeps only the indices

    def forward(self, a, indices, axis):
        self.shape, self.indices, self.axis = a.shape, indices, axis
        return self.device.xp.take_along_axis(a, indices, axis=axis)

    def backward(self, grad):
        xp = self.device.xp
        full = xp.zeros(self.shape, dtype=grad.dtype)
        # the open-mesh index of put_along_axis (which older CuPy lacks); positions are distinct
        index = [
            xp.arange(n).reshape([-1 if d == i else 1 for d in range(len(self.shape))])
            for i, n in enumerate(self.shape)
        ]
        index[self.axis] = self.indices
        full[tuple(index)] = grad
        return (full,)


def stable_order(a: Any, axis: int, descending: bool, xp: Any) -> Any:
    """The int64 indices that sort ``a`` along ``axis``, equal values in their original order
    and NaN as the largest value (as PyTorch's sort, also descending)."""
    if not descending:
        return _stable_argsort(a, axis, xp)
    # sort the reversed slice ascending and reverse the order back: descending, NaN first, and
    # ties still in their original order
    reversed_order = _stable_argsort(xp.flip(a, axis), axis, xp)
    return (a.shape[axis] - 1) - xp.flip(reversed_order, axis)


def _stable_argsort(a: Any, axis: int, xp: Any) -> Any:
    # CuPy's sort is always stable and accepts no kind=
    order = a.argsort(axis=axis, kind="stable") if xp is np else a.argsort(axis=axis)
    return order.astype(np.int64, copy=False)
