"""The differentiable selection ops behind Tensor's where, masked_fill, clamp, maximum, minimum,
gather, scatter, scatter_add, tril and triu, each a Function over raw arrays.

``B`` below is the broadcast shape of an op's operands; ``I`` the shape of an index array.

* :class:`Where`: ``out[B] = condition ? a : b``; ``da = grad`` where the condition holds, ``db``
  the rest (the engine sums both back to their shapes). masked_fill is ``Where(mask, value, x)``,
  tril/triu ``Where(triangle, x, 0)``.
* :class:`Clamp`: ``out[B] = min(max(x, low), high)``, either bound optional. PyTorch's gradients:
  ``dx = grad`` where ``low <= x <= high`` (so it passes at a bound); ``dlow = grad`` where
  ``x < low`` and ``low < high``, ``dhigh = grad`` where ``x > high`` or ``high < low`` (when the
  bounds are equal and x lies outside them, no gradient flows at all, as in PyTorch).
* :class:`Maximum`: ``out[B] = max(a, b)`` (or min): the winner gets ``grad``, a tie splits it
  evenly, a NaN (which both propagate) passes it to both.
* :class:`Gather`: ``out[I] = a[positions]``, where ``positions`` is the advanced index whose
  entry along ``dim`` is the index array and whose other entries are aranges (so, for dim 1,
  ``out[i, j] = a[i, index[i, j]]``); ``da`` scatter-adds ``grad`` at ``positions`` (a repeated
  index accumulates).
* :class:`Scatter`: ``out = a`` with ``out[positions] = src[region]`` (``region`` the leading
  ``I``-shaped block of src), or ``+=`` with ``accumulate`` (scatter_add). PyTorch's gradients:
  ``da = grad`` with the written positions zeroed (all of ``grad`` for scatter_add),
  ``dsrc[region] = grad[positions]`` and 0 outside the region.

The callers (:mod:`fastnet.tensor_selection`) check arguments and promote dtypes; these classes
assume operands of one dtype and indices in range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .autograd import Function

__all__ = ["Clamp", "Gather", "Maximum", "Scatter", "Where", "broadcast_failure", "scatter_add"]


def broadcast_failure(op: str, *arrays: Any) -> RuntimeError | None:
    """The error for operands of ``op`` whose shapes do not broadcast (PyTorch raises a
    RuntimeError); None when they do. Called only after the array library refused."""
    shapes = [tuple(a.shape) for a in arrays]
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        listed = " and ".join(str(s) for s in shapes)
        return RuntimeError(f"{op}: shapes {listed} cannot be broadcast together")
    return None


def scatter_add(target: Any, positions: tuple, values: Any) -> Any:
    """``target[positions] += values`` in place, a position picked twice receiving both values
    (NumPy's ``add.at``; CuPy's ``cupyx.scatter_add``). Returns ``target``."""
    if isinstance(target, np.ndarray):
        np.add.at(target, positions, values)
    else:
        import cupyx

        cupyx.scatter_add(target, positions, values)
    return target


class Where(Function):
    """``condition ? a : b``. The condition (input 0, a bool array) is never differentiated; its
    copy is kept, so a later in-place change to the mask cannot change the gradient."""

    saves_inputs = saves_output = False

    def forward(self, condition, a, b, op="where"):
        self.condition = condition.astype(bool)  # a copy; uint8 masks become bool
        try:
            return self.device.xp.where(self.condition, a, b)
        except ValueError:
            raise broadcast_failure(op, condition, a, b) or RuntimeError(op) from None

    def backward(self, grad):
        xp, zero = self.device.xp, grad.dtype.type(0)
        grad_a = grad_b = None
        if self.inputs[1].requires_grad:
            grad_a = xp.where(self.condition, grad, zero)
        if self.inputs[2].requires_grad:
            grad_b = xp.where(self.condition, zero, grad)
        return None, grad_a, grad_b


class Clamp(Function):
    """``min(max(x, low), high)``; the inputs are ``x`` then the bounds present (``has_low``,
    ``has_high`` say which)."""

    saves_output = False

    def forward(self, x, *bounds, has_low, has_high, op="clamp"):
        xp = self.device.xp
        self.x = x
        self.low = bounds[0] if has_low else None
        self.high = bounds[-1] if has_high else None
        try:
            out = x if self.low is None else xp.maximum(x, self.low)
            return out if self.high is None else xp.minimum(out, self.high)
        except ValueError:
            raise broadcast_failure(op, x, *bounds) or RuntimeError(op) from None

    def backward(self, grad):
        xp, zero = self.device.xp, grad.dtype.type(0)
        x, low, high = self.x, self.low, self.high
        if low is not None and high is not None:
            inside = (x >= low) & (x <= high)
            below = (x < low) & (low < high)
            above = (x > high) | (high < low)
        else:
            inside = x >= low if high is None else x <= high
            below = None if low is None else x < low
            above = None if high is None else x > high
        grads = [xp.where(inside, grad, zero)]
        for bound, beyond in ((low, below), (high, above)):
            if bound is not None:
                grads.append(xp.where(beyond, grad, zero))
        return tuple(grads)


class Maximum(Function):
    """``max(a, b)`` elementwise, or ``min(a, b)`` with ``smallest``."""

    saves_output = False

    def forward(self, a, b, smallest=False):
        self.a, self.b, self.smallest = a, b, smallest
        xp = self.device.xp
        try:
            return (xp.minimum if smallest else xp.maximum)(a, b)
        except ValueError:
            op = "minimum" if smallest else "maximum"
            raise broadcast_failure(op, a, b) or RuntimeError(op) from None

    def backward(self, grad):
        xp, zero = self.device.xp, grad.dtype.type(0)
        a, b = self.a, self.b
        shared = xp.where(a == b, grad / 2, grad)
        a_loses, b_loses = (a > b, a < b) if self.smallest else (a < b, a > b)
        grad_a = xp.where(a_loses, zero, shared) if self.inputs[0].requires_grad else None
        grad_b = xp.where(b_loses, zero, shared) if self.inputs[1].requires_grad else None
        return grad_a, grad_b


class Gather(Function):
    """``a[positions]`` (see the module docstring); ``positions`` holds its own index array."""

    saves_inputs = saves_output = False

    def forward(self, a, positions):
        self.shape, self.positions = a.shape, positions
        return a[positions]

    def backward(self, grad):
        full = self.device.xp.zeros(self.shape, dtype=grad.dtype)
        return (scatter_add(full, self.positions, grad),)


class Scatter(Function):
    """``a`` with ``src[region]`` written (or added, with ``accumulate``) at ``positions``. A
    position named twice by scatter keeps one of its values: NumPy writes in order, so the last
    one wins on the cpu; on cuda (as in PyTorch) which one is unspecified."""

    saves_inputs = saves_output = False

    def forward(self, a, src, positions, region, accumulate):
        self.positions, self.region, self.accumulate = positions, region, accumulate
        self.src_shape = src.shape
        out = a.copy()
        if accumulate:
            return scatter_add(out, positions, src[region])
        out[positions] = src[region]
        return out

    def backward(self, grad):
        grad_a = grad_src = None
        if self.inputs[0].requires_grad:
            grad_a = grad
            if not self.accumulate:
                grad_a = grad.copy()
                grad_a[self.positions] = 0
        if self.inputs[1].requires_grad:
            picked = grad[self.positions]
            if picked.shape == self.src_shape:
                grad_src = picked
            else:  # src elements outside the region were never read
                grad_src = self.device.xp.zeros(self.src_shape, dtype=grad.dtype)
                grad_src[self.region] = picked
        return grad_a, grad_src
