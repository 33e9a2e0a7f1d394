"""The reductions of :class:`~fastnet.tensor.Tensor`: sum, mean, max, min, amax, amin, argmax and
argmin, with PyTorch's ``dim=``/``keepdim=`` (NumPy's ``axis=``/``keepdims=`` remain aliases).

:class:`Reductions` is a mixin of Tensor, in a module of its own so that tensor.py stays one
concern; it builds only on :mod:`fastnet.tensor_ops` and the tensor's own methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .tensor_ops import Max, MaxDim, Sum

if TYPE_CHECKING:
    from .tensor import Tensor

__all__ = ["Reductions", "ValuesIndices"]


class ValuesIndices(NamedTuple):
    """What ``max(dim)`` / ``min(dim)`` return, as PyTorch's: the values and their indices."""

    values: Tensor
    indices: Tensor


class Reductions:
    """The reduction methods of Tensor (which holds ``data``, ``device`` and the shape)."""

    __slots__ = ()

    # dim= and keepdim= as PyTorch; axis= and keepdims= (NumPy's spelling) remain aliases
    def sum(
        self,
        dim: Any = None,
        keepdim: bool = False,
        *,
        axis: Any = None,
        keepdims: bool | None = None,
    ) -> Tensor:
        axes, keep = _reduction_args("sum", dim, keepdim, axis, keepdims, self.ndim)
        return Sum.apply(self, axis=axes, keepdims=keep)

    def mean(
        self,
        dim: Any = None,
        keepdim: bool = False,
        *,
        axis: Any = None,
        keepdims: bool | None = None,
    ) -> Tensor:
        axes, keep = _reduction_args("mean", dim, keepdim, axis, keepdims, self.ndim)
        count = self.numel() if axes is None else int(np.prod([self.shape[a] for a in axes]))
        # the mean of nothing is NaN (0 · NaN), as in PyTorch
        return Sum.apply(self, axis=axes, keepdims=keep) * (1.0 / count if count else float("nan"))

    def max(
        self,
        dim: int | None = None,
        keepdim: bool = False,
        *,
        axis: Any = None,
        keepdims: bool | None = None,
    ) -> Any:
        """``max()``: the largest value (the gradient split between ties). ``max(dim)``:
        :class:`ValuesIndices` along ``dim``, as PyTorch. ``max(axis=...)`` (NumPy's spelling,
        kept for old callers; any axes) returns the values alone, as NumPy's max: prefer amax."""
        return self._extreme("max", dim, keepdim, axis, keepdims, smallest=False)

    def min(
        self,
        dim: int | None = None,
        keepdim: bool = False,
        *,
        axis: Any = None,
        keepdims: bool | None = None,
    ) -> Any:
        """As :meth:`max`, for the smallest values."""
        return self._extreme("min", dim, keepdim, axis, keepdims, smallest=True)

    def amax(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        """The largest values over ``dim`` (an int, a tuple, or None for all), gradient split
        evenly between ties."""
        axes, _ = _reduction_args("amax", dim, keepdim, None, None, self.ndim)
        return Max.apply(self, axis=axes, keepdims=keepdim)

    def amin(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        axes, _ = _reduction_args("amin", dim, keepdim, None, None, self.ndim)
        return Max.apply(self, axis=axes, keepdims=keepdim, smallest=True)

    def _extreme(
        self, op: str, dim: Any, keepdim: bool, axis: Any, keepdims: bool | None, smallest: bool
    ) -> Any:
        if axis is not None or keepdims is not None:  # the NumPy spelling: values alone
            if dim is not None and axis is not None:
                raise TypeError(f"{op}(): pass dim or axis, not both")
            axes, keep = _reduction_args(op, dim, keepdim, axis, keepdims, self.ndim)
            return Max.apply(self, axis=axes, keepdims=keep, smallest=smallest)
        if dim is None:
            return Max.apply(self, axis=None, keepdims=False, smallest=smallest)
        if not isinstance(dim, (int, np.integer)):
            raise TypeError(f"{op}(dim): dim must be one int, got {dim!r}; use amax/amin")
        if self.ndim == 0:  # as PyTorch: dim 0 or -1 of a 0-d tensor is the value itself
            _normalize_axes(dim, 0)
            pair = self.reshape(1)._extreme(op, 0, False, None, None, smallest)
            return ValuesIndices(pair.values, pair.indices)
        (axis_index,) = _normalize_axes(dim, self.ndim)
        if self.shape[axis_index] == 0:
            raise IndexError(
                f"{op}(): dimension {dim} of shape {self.shape} has size 0: the {op} of "
                "nothing is undefined"
            )
        picked = (self.data.argmin if smallest else self.data.argmax)(
            axis=axis_index, keepdims=True
        )
        values = MaxDim.apply(self, axis=axis_index, keepdims=keepdim, picked=picked)
        indices = picked if keepdim else picked.squeeze(axis=axis_index)
        return ValuesIndices(values, self._wrap(indices.astype(np.int64, copy=False), self.device))

    def argmax(
        self, dim: int | None = None, keepdim: bool = False, *, axis: int | None = None
    ) -> Tensor:
        return self._arg("argmax", dim, keepdim, axis)

    def argmin(
        self, dim: int | None = None, keepdim: bool = False, *, axis: int | None = None
    ) -> Tensor:
        return self._arg("argmin", dim, keepdim, axis)

    def _arg(self, op: str, dim: Any, keepdim: bool, axis: Any) -> Tensor:
        if axis is not None:
            if dim is not None:
                raise TypeError(f"{op}(): pass dim or axis, not both")
            dim = axis
        if dim is None:
            found = getattr(self.data, op)()
            found = found.reshape((1,) * self.ndim) if keepdim else found
        else:
            (index,) = _normalize_axes(dim, self.ndim) or (None,)
            data = self.data.reshape(1) if self.ndim == 0 else self.data
            found = getattr(data, op)(axis=0 if index is None else index, keepdims=keepdim)
            found = found.reshape(()) if self.ndim == 0 else found
        return self._wrap(self.device.xp.asarray(found, dtype=np.int64), self.device)


def _normalize_axes(axis: Any, ndim: int) -> tuple | None:
    """Sorted non-negative axes, or None for all. A 0-d tensor takes dim 0 or -1, as in
    PyTorch, and reduces over nothing (None: its one value)."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise IndexError(
                f"dim {a} is out of range for a tensor with {ndim} dimensions "
                f"(expected a dim in [{-max(ndim, 1)}, {max(ndim, 1) - 1}])"
            )
    if ndim == 0:
        return None
    return tuple(sorted(a % ndim for a in axes))


def _reduction_args(
    op: str, dim: Any, keepdim: bool, axis: Any, keepdims: bool | None, ndim: int
) -> tuple[tuple | None, bool]:
    """(axes, keepdim) from PyTorch's dim/keepdim or NumPy's axis/keepdims spelling."""
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{op}(): pass dim or axis, not both")
        dim = axis
    return _normalize_axes(dim, ndim), keepdim if keepdims is None else keepdims
