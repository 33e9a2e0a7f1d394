"""The reductions of :class:`~fastnet.tensor.Tensor`: sum, mean, prod, var, std, logsumexp, max,
min, amax, amin, argmax, argmin, all, any and count_nonzero, with PyTorch's
``dim=``/``keepdim=`` (NumPy's
``axis=``/``keepdims=`` remain aliases for the older ones); the scans cumsum and cumprod; and the
orderings sort, argsort and topk.

:class:`Reductions` is a mixin of Tensor, in a module of its own so that tensor.py stays one
concern; it checks the arguments as PyTorch does and builds on the Functions of
:mod:`fastnet.tensor_ops` and :mod:`fastnet.reduction_ops` and on the tensor's own methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .dtypes import DEFAULT_DTYPE
from .reduction_ops import CumProd, CumSum, LogSumExp, Prod, Std, TakeAlong, Var, stable_order
from .tensor_ops import Max, MaxDim, Sum

if TYPE_CHECKING:
    from .tensor import Tensor

__all__ = ["Reductions", "ValuesIndices"]


class ValuesIndices(NamedTuple):
    """What ``max(dim)``, ``min(dim)``, ``sort`` and ``topk`` return, as PyTorch's: the values
    and their (int64) indices."""

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
        dtype: Any = None,
        axis: Any = None,
        keepdims: bool | None = None,
    ) -> Tensor:
        """The sum over ``dim`` (an int, a tuple, or None or () for all); integers and booleans
        sum to int64 unless ``dtype`` says otherwise, as in PyTorch."""
        axes, keep = _reduction_args("sum", dim, keepdim, axis, keepdims, self.ndim)
        return Sum.apply(self._accumulating(dtype), axis=axes, keepdims=keep)

    def mean(
        self,
        dim: Any = None,
        keepdim: bool = False,
        *,
        dtype: Any = None,
        axis: Any = None,
        keepdims: bool | None = None,
    ) -> Tensor:
        axes, keep = _reduction_args("mean", dim, keepdim, axis, keepdims, self.ndim)
        count = self.numel() if axes is None else int(np.prod([self.shape[a] for a in axes]))
        source = self if dtype is None else self.to(dtype=dtype)
        # the mean of nothing is NaN (0 · NaN), as in PyTorch
        return Sum.apply(source, axis=axes, keepdims=keep) * (
            1.0 / count if count else float("nan")
        )

    def prod(self, dim: int | None = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
        """The product over one ``dim``, or of every element; integers and booleans multiply to
        int64 unless ``dtype`` says otherwise. The gradient is the product of the other elements
        (exact where the input holds zeros), as PyTorch's."""
        source = self._accumulating(dtype)
        axis = None if dim is None else _one_dim("prod", dim, self.ndim)
        return Prod.apply(source, axis=axis, keepdims=keepdim and axis is not None)

    def var(
        self,
        dim: Any = None,
        unbiased: bool | None = None,
        keepdim: bool = False,
        *,
        correction: float | None = None,
    ) -> Tensor:
        """Σ (x − mean)² / max(0, N − correction) over ``dim`` (an int, a tuple, or None for
        all): ``correction=1`` (the default; ``unbiased=True``) is Bessel's, ``correction=0``
        (``unbiased=False``) the population variance. ``var(False)`` is ``var(unbiased=False)``,
        as PyTorch's one-argument form."""
        return self._spread("var", Var, dim, unbiased, keepdim, correction)

    def std(
        self,
        dim: Any = None,
        unbiased: bool | None = None,
        keepdim: bool = False,
        *,
        correction: float | None = None,
    ) -> Tensor:
        """The square root of :meth:`var` (same arguments); its gradient is 0 where it is 0."""
        return self._spread("std", Std, dim, unbiased, keepdim, correction)

    def _spread(
        self,
        op: str,
        function: type[Var],
        dim: Any,
        unbiased: bool | None,
        keepdim: bool,
        correction: float | None,
    ) -> Tensor:
        if isinstance(dim, bool):  # PyTorch's var(unbiased) form
            if unbiased is not None:
                raise TypeError(f"{op}(): unbiased given twice")
            dim, unbiased = None, dim
        if unbiased is not None and correction is not None:
            raise TypeError(f"{op}(): pass unbiased or correction, not both")
        if self.dtype.kind != "f":
            raise RuntimeError(
                f"{op}(): std and var only support floating-point tensors, got {self.dtype}"
            )
        correction = (0 if unbiased is False else 1) if correction is None else correction
        axes = _normalize_axes(dim, self.ndim)
        return function.apply(self, axis=axes, correction=correction, keepdims=keepdim)

    def logsumexp(self, dim: Any, keepdim: bool = False) -> Tensor:
        """log Σ exp(x) over ``dim`` (an int or a tuple; () for all), without overflow; integers
        give float32, as in PyTorch."""
        source = self if self.dtype.kind == "f" else self.to(dtype=DEFAULT_DTYPE)
        axes = _normalize_axes(dim, self.ndim)
        return LogSumExp.apply(source, axis=axes, keepdims=keepdim)

    def cumsum(self, dim: int, *, dtype: Any = None) -> Tensor:
        """The running sums along ``dim``; integers and booleans sum to int64 unless ``dtype``
        says otherwise."""
        return self._scan("cumsum", CumSum, dim, dtype)

    def cumprod(self, dim: int, *, dtype: Any = None) -> Tensor:
        """The running products along ``dim`` (a gradient without NaN where the input holds
        zeros, as PyTorch's)."""
        return self._scan("cumprod", CumProd, dim, dtype)

    def _scan(self, op: str, function: type, dim: int, dtype: Any) -> Tensor:
        source = self._accumulating(dtype)
        axis = _one_dim(op, dim, self.ndim)
        if axis is None:  # a 0-d tensor: the scan of its one value
            return function.apply(source.reshape(1), axis=0).reshape(())
        return function.apply(source, axis=axis)

    def _accumulating(self, dtype: Any) -> Tensor:
        """This tensor in the dtype a sum or product accumulates in: ``dtype`` if given, int64
        for integers and booleans (PyTorch's rule), its own for floats."""
        if dtype is not None:
            return self.to(dtype=dtype)
        return self.to(dtype=np.int64) if self.dtype.kind in "biu" else self

    def sort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> ValuesIndices:
        """The values sorted along ``dim`` and their int64 indices in the input. Always stable
        (equal values keep their order, so results are deterministic); NaN sorts as the largest
        value, as in PyTorch. The gradient goes back to each value's place."""
        return self._ordered("sort", dim, descending, None)

    def argsort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
        """The int64 indices that sort along ``dim`` (as :meth:`sort`'s)."""
        axis = _one_dim("argsort", dim, self.ndim)
        if axis is None:
            return self._wrap(self.device.xp.zeros((), dtype=np.int64), self.device)
        order = stable_order(self.data, axis, descending, self.device.xp)
        return self._wrap(order, self.device)

    def topk(
        self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True
    ) -> ValuesIndices:
        """The ``k`` largest (or, with ``largest=False``, smallest) values along ``dim`` and their
        int64 indices, always sorted (PyTorch leaves the order open when ``sorted=False``); ties
        go to the first index. The gradient goes to the picked elements alone."""
        size = self.shape[_one_dim("topk", dim, self.ndim)] if self.ndim else 1
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
            raise TypeError(f"topk(): k must be an int, got {k!r}")
        if not 0 <= k <= size:
            raise RuntimeError(
                f"topk(): selected index k out of range: k={k} for dim {dim} of size {size} "
                f"(shape {self.shape})"
            )
        # PyTorch returns a 0-d tensor's value itself for k 0 or 1
        return self._ordered("topk", dim, largest, k if self.ndim else None)

    def _ordered(self, op: str, dim: int, descending: bool, count: int | None) -> ValuesIndices:
        """The first ``count`` (all for None) values in sorted order along ``dim``, and their
        indices."""
        axis = _one_dim(op, dim, self.ndim)
        if axis is None:  # a 0-d tensor: its one value, at index 0
            pair = self.reshape(1)._ordered(op, 0, descending, None)
            return ValuesIndices(pair.values.reshape(()), pair.indices.reshape(()))
        order = stable_order(self.data, axis, descending, self.device.xp)
        if count is not None:
            order = order[(slice(None),) * axis + (slice(0, count),)]
        values = TakeAlong.apply(self, indices=order, axis=axis)
        return ValuesIndices(values, self._wrap(order, self.device))

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
        from .tensor import Tensor

        if isinstance(dim, Tensor):  # max(other): PyTorch's elementwise form
            return self.minimum(dim) if smallest else self.maximum(dim)
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

    def all(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        """Whether every value over ``dim`` (an int, a tuple, or None for all) is non-zero; a
        bool tensor outside the graph."""
        return self._logical_reduction("all", dim, keepdim)

    def any(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        """Whether some value over ``dim`` is non-zero (see :meth:`all`)."""
        return self._logical_reduction("any", dim, keepdim)

    def _logical_reduction(self, op: str, dim: Any, keepdim: bool) -> Tensor:
        axes = _normalize_axes(dim, self.ndim)
        found = getattr(self.data, op)(axis=axes, keepdims=keepdim and axes is not None)
        return self._wrap(self.device.xp.asarray(found), self.device)

    def count_nonzero(self, dim: Any = None) -> Tensor:
        """The number (int64) of non-zero values over ``dim``."""
        axes = _normalize_axes(dim, self.ndim)
        count = self.device.xp.count_nonzero(self.data, axis=axes)
        return self._wrap(self.device.xp.asarray(count, dtype=np.int64), self.device)

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
    """Sorted non-negative axes, or None for all (also for ``()``, as in PyTorch). A 0-d tensor
    takes dim 0 or -1, as in PyTorch, and reduces over nothing (None: its one value)."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise IndexError(
                f"dim {a} is out of range for a tensor with {ndim} dimensions "
                f"(expected a dim in [{-max(ndim, 1)}, {max(ndim, 1) - 1}])"
            )
    if ndim == 0 or not axes:
        return None
    normalized = sorted(a % ndim for a in axes)
    repeated = [a for a in set(normalized) if normalized.count(a) > 1]
    if repeated:
        raise RuntimeError(f"dim {repeated[0]} appears multiple times in the list of dims {axis}")
    return tuple(normalized)


def _one_dim(op: str, dim: Any, ndim: int) -> int | None:
    """The one non-negative axis ``dim`` names (None for a 0-d tensor's dim 0 or -1); a clear
    error for a tuple, a bool or a dim out of range."""
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}(): dim must be one int, got {dim!r}")
    axes = _normalize_axes(dim, ndim)
    return None if axes is None else axes[0]


def _reduction_args(
    op: str, dim: Any, keepdim: bool, axis: Any, keepdims: bool | None, ndim: int
) -> tuple[tuple | None, bool]:
    """(axes, keepdim) from PyTorch's dim/keepdim or NumPy's axis/keepdims spelling."""
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{op}(): pass dim or axis, not both")
        dim = axis
    return _normalize_axes(dim, ndim), keepdim if keepdims is None else keepdims
