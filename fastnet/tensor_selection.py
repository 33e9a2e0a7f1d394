"""The selection methods of :class:`~fastnet.tensor.Tensor`: where, masked_fill, clamp, maximum,
minimum, gather, scatter, index_select, masked_select, nonzero, tril and triu, with PyTorch's
signatures, promotion and errors, and the module-level functions ``fastnet.where``,
``fastnet.clamp``, ... over them.

:class:`Selection` is a mixin of Tensor, in a module of its own so that tensor.py stays one
concern. It checks arguments and promotes dtypes; the Functions of
:mod:`fastnet.selection_ops` compute values and gradients. In-place variants (``masked_fill_``,
``clamp_``, ``scatter_``, ``scatter_add_``) compute out of place and write the result under
Tensor's in-place rules (refused inside a graph, the version bumped otherwise).

An index for gather/scatter is an int64 (or int32) tensor with as many dimensions as the input
(a 0-d tensor counts as 1-d); its entries must lie in ``[0, size)`` along ``dim`` (as PyTorch
checks: a negative index never wraps around). The check trusts the value range an index tensor
made from host data recorded before its upload (:meth:`Selection._index_range`); without one it
reads the range from the device, in one counted transfer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .autograd import _check_devices
from .backend import Device
from .dtypes import CATEGORY, scalar_dtype
from .selection_ops import Clamp, Gather, Maximum, Scatter, Where
from .tensor_ops import GetItem
from .tensor_reductions import _normalize_axes

if TYPE_CHECKING:
    from .tensor import Tensor

__all__ = [
    "Selection",
    "argwhere",
    "clamp",
    "clip",
    "gather",
    "index_select",
    "masked_fill",
    "masked_select",
    "maximum",
    "minimum",
    "nonzero",
    "scatter",
    "scatter_add",
    "tril",
    "triu",
    "where",
]

_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
_BOOL = np.dtype(np.bool_)
_LEGACY_MASK = np.dtype(np.uint8)  # where() still takes PyTorch's old uint8 masks


def is_host_data(data: Any, device: Device) -> bool:
    """Whether array-like ``data`` is on the host. NumPy arrays are, even in the simulator where
    they double as the device's: a Tensor made from one is an upload there too."""
    return device.xp is np or not isinstance(data, device.xp.ndarray)


def host_range(array: np.ndarray) -> tuple[int, int] | None:
    """(min, max) of a host integer array as Python ints; None for other dtypes or no values."""
    if array.dtype.kind not in "iu" or array.size == 0:
        return None
    return int(array.min()), int(array.max())


class Selection:
    """Selection methods of Tensor (which holds ``data``, ``device`` and the shape)."""

    __slots__ = ()

    # ----------------------------------------------------------------- where, masked_fill
    def where(self, condition: Tensor, other: Any) -> Tensor:
        """``self`` where ``condition`` holds, ``other`` elsewhere (``fastnet.where``)."""
        return where(condition, self, other)

    def masked_fill(self, mask: Tensor, value: Any) -> Tensor:
        """A copy with ``value`` (a number, or a 0-d tensor that may require grad) where the
        bool ``mask`` (broadcast against self) is True; the dtype stays self's."""
        _check_condition("masked_fill", mask, bool_only=True)
        return Where.apply(mask, _fill_value("masked_fill", value, self), self, op="masked_fill")

    def masked_fill_(self, mask: Tensor, value: Any) -> Tensor:
        return self._store_in_place("masked_fill_", self.masked_fill(mask, value))

    # ----------------------------------------------------------------- clamp, maximum, minimum
    def clamp(self, min: Any = None, max: Any = None) -> Tensor:
        """Each value limited to ``[min, max]`` (numbers, or tensors broadcast against self; at
        least one given). Where ``min > max`` every value becomes ``max``, as in PyTorch."""
        return _clamp("clamp", self, min, max)

    clip = clamp

    def clamp_min(self, min: Any) -> Tensor:
        return _clamp("clamp_min", self, min, None)

    def clamp_max(self, max: Any) -> Tensor:
        return _clamp("clamp_max", self, None, max)

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:
        return self._store_in_place("clamp_", _clamp("clamp_", self, min, max))

    clip_ = clamp_

    def maximum(self, other: Tensor) -> Tensor:
        """The larger of ``self`` and ``other`` elementwise (a tie splits the gradient evenly)."""
        return _extremum("maximum", self, other, smallest=False)

    def minimum(self, other: Tensor) -> Tensor:
        return _extremum("minimum", self, other, smallest=True)

    # ----------------------------------------------------------------- gather, scatter
    def gather(self, dim: int, index: Tensor, *, sparse_grad: bool = False) -> Tensor:
        """Values picked along ``dim`` by ``index`` (for dim 1: ``out[i][j] =
        self[i][index[i][j]]``), in index's shape; a repeated index accumulates its gradient."""
        if sparse_grad:
            raise NotImplementedError("gather(sparse_grad=True): fastnet has no sparse gradients")
        source = self.reshape(1) if self.ndim == 0 else self
        positions, _ = _positions("gather", source, dim, index)
        out = Gather.apply(source, positions=positions)
        return out if out.shape == index.shape else out.reshape(index.shape)

    def scatter(self, dim: int, index: Tensor, src: Any = None, value: Any = None) -> Tensor:
        """A copy with ``src`` (a tensor of self's dtype, or a number given as ``src`` or
        ``value``) written along ``dim`` at ``index`` (for dim 1: ``out[i][index[i][j]] =
        src[i][j]``). Where index names a position twice, one of the values is kept: the last
        on the cpu; on cuda which one is unspecified, as in PyTorch."""
        return _scatter("scatter", self, dim, index, src, value, accumulate=False)

    def scatter_add(self, dim: int, index: Tensor, src: Tensor) -> Tensor:
        """A copy with ``src`` added along ``dim`` at ``index`` (repeated positions add up)."""
        return _scatter("scatter_add", self, dim, index, src, None, accumulate=True)

    def scatter_(self, dim: int, index: Tensor, src: Any = None, value: Any = None) -> Tensor:
        return self._store_in_place(
            "scatter_", _scatter("scatter_", self, dim, index, src, value, False)
        )

    def scatter_add_(self, dim: int, index: Tensor, src: Tensor) -> Tensor:
        return self._store_in_place(
            "scatter_add_", _scatter("scatter_add_", self, dim, index, src, None, True)
        )

    # ----------------------------------------------------------------- index_select, nonzero
    def index_select(self, dim: int, index: Tensor) -> Tensor:
        """The entries at ``index`` (a 1-D or 0-d int tensor) along ``dim``, in that order; a
        repeated index accumulates its gradient."""
        index = _tensor_argument("index_select", index)
        if index.dtype not in _INDEX_DTYPES or index.ndim > 1:
            raise RuntimeError(
                f"index_select(): index must be a 1-D int32/int64 tensor, got {index.dtype} of "
                f"shape {index.shape}"
            )
        _check_devices("index_select", (self, index))
        source = self.reshape(1) if self.ndim == 0 else self
        (axis,) = _normalize_axes(dim, source.ndim)
        idx = index.data.reshape(-1).astype(np.int64)  # a copy: backward keeps its own
        if idx.size:
            low, high = index._index_range()
            if low < 0 or high >= source.shape[axis]:
                raise IndexError(
                    f"index_select(): index {low if low < 0 else high} is out of range for "
                    f"dimension {dim} of size {source.shape[axis]}"
                )
        out = GetItem.apply(source, index=(slice(None),) * axis + (idx,))
        return out.reshape(()) if self.ndim == 0 else out

    def masked_select(self, mask: Tensor) -> Tensor:
        """The values where the bool ``mask`` (broadcast with self) holds, as a 1-D tensor."""
        _check_condition("masked_select", mask, bool_only=True)
        try:
            shape = tuple(np.broadcast_shapes(self.shape, mask.shape))
        except ValueError:
            raise RuntimeError(
                f"masked_select: shapes {self.shape} and {mask.shape} cannot be broadcast together"
            ) from None
        shape = shape or (1,)  # a 0-d pair selects from one value
        source = self if self.shape == shape else self.expand(shape)
        picked = mask.device.xp.broadcast_to(mask.data, shape).nonzero()
        return GetItem.apply(source, index=picked)

    def nonzero(self, *, as_tuple: bool = False) -> Any:
        """The int64 indices of the non-zero values: one row (n, ndim) per value, or with
        ``as_tuple`` one 1-D tensor per dimension (a 0-d tensor counts as 1-D there)."""
        if as_tuple:
            return where(self != 0)
        found = self.device.xp.argwhere(self.data).astype(np.int64, copy=False)
        return self._wrap(found, self.device)

    def argwhere(self) -> Tensor:
        return self.nonzero()

    # ----------------------------------------------------------------- tril, triu
    def tril(self, diagonal: int = 0) -> Tensor:
        """The lower triangle of the last two dims (``j - i <= diagonal``); zeros above."""
        return _triangle("tril", self, diagonal, upper=False)

    def triu(self, diagonal: int = 0) -> Tensor:
        """The upper triangle of the last two dims (``j - i >= diagonal``); zeros below."""
        return _triangle("triu", self, diagonal, upper=True)

    # ----------------------------------------------------------------- in place
    def _index_range(self: Tensor) -> tuple[int, int]:
        """(min, max) of this non-empty integer tensor as Python ints.

        A tensor made from host integers for a device (``Tensor(labels, device="cuda")``,
        ``labels.to("cuda")``, a device data loader's labels) recorded them on the host before
        the upload, in ``_value_range``: trusted, no device read. Only construction records a
        range: op outputs have none, and an in-place write clears it (a write through a view
        of the tensor is not seen: do not record a range on a tensor whose views are written).
        Otherwise the range is read from the device in one counted transfer (free on the CPU)."""
        if self._value_range is not None:
            return self._value_range
        xp = self.device.xp
        low, high = self.device.to_host(xp.stack((self.data.min(), self.data.max()))).tolist()
        return int(low), int(high)

    def _store_in_place(self, op: str, result: Tensor) -> Tensor:
        """Write ``result`` (the op computed out of place) into self, under Tensor's in-place
        rules: ``result`` requires grad exactly when autograd would have to record the write."""
        if result.shape != self.shape:
            raise RuntimeError(
                f"{op}: output with shape {self.shape} doesn't match the broadcast shape "
                f"{result.shape}"
            )
        if CATEGORY[result.dtype.kind] > CATEGORY[self.dtype.kind]:
            raise RuntimeError(
                f"{op}: result type {result.dtype} can't be cast to the desired output type "
                f"{self.dtype} of the tensor changed in place"
            )
        self._write(op, result)
        self.data[...] = result.data
        return self


# ===================================================================== module-level functions
def where(condition: Tensor, input: Any = None, other: Any = None) -> Any:
    """``input`` where ``condition`` (a bool tensor) holds, ``other`` elsewhere, broadcast over
    the three shapes; input and other are tensors or numbers, promoted as a binary op promotes.
    With the condition alone: the indices where it holds, one int64 tensor per dimension."""
    from .tensor import _cast, _promote, result_dtype

    _check_condition("where", condition, bool_only=False)
    if input is None and other is None:
        data = condition.data.reshape(1) if condition.ndim == 0 else condition.data
        nonzero = condition.device.xp.nonzero(data)
        return tuple(
            condition._wrap(i.astype(np.int64, copy=False), condition.device) for i in nonzero
        )
    if input is None or other is None:
        raise TypeError("where(): pass both input and other, or neither")
    if _is_tensor(input) or _is_tensor(other):
        input, other = _promote(input, other)
    else:
        dtype = result_dtype(input, other)
        input, other = (_cast(v, dtype, condition.device) for v in (input, other))
    return Where.apply(condition, input, other)


def index_select(input: Tensor, dim: int, index: Tensor) -> Tensor:
    return _tensor_argument("index_select", input).index_select(dim, index)


def masked_select(input: Tensor, mask: Tensor) -> Tensor:
    return _tensor_argument("masked_select", input).masked_select(mask)


def nonzero(input: Tensor, *, as_tuple: bool = False) -> Any:
    return _tensor_argument("nonzero", input).nonzero(as_tuple=as_tuple)


def argwhere(input: Tensor) -> Tensor:
    return _tensor_argument("argwhere", input).nonzero()


def masked_fill(input: Tensor, mask: Tensor, value: Any) -> Tensor:
    return _tensor_argument("masked_fill", input).masked_fill(mask, value)


def clamp(input: Tensor, min: Any = None, max: Any = None) -> Tensor:
    return _clamp("clamp", _tensor_argument("clamp", input), min, max)


clip = clamp


def maximum(input: Tensor, other: Tensor) -> Tensor:
    return _extremum("maximum", input, other, smallest=False)


def minimum(input: Tensor, other: Tensor) -> Tensor:
    return _extremum("minimum", input, other, smallest=True)


def gather(input: Tensor, dim: int, index: Tensor, *, sparse_grad: bool = False) -> Tensor:
    return _tensor_argument("gather", input).gather(dim, index, sparse_grad=sparse_grad)


def scatter(
    input: Tensor,
    dim: int,
    index: Tensor,
    src: Any = None,
    value: Any = None,
) -> Tensor:
    return _tensor_argument("scatter", input).scatter(dim, index, src, value)


def scatter_add(input: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    return _tensor_argument("scatter_add", input).scatter_add(dim, index, src)


def tril(input: Tensor, diagonal: int = 0) -> Tensor:
    return _triangle("tril", _tensor_argument("tril", input), diagonal, upper=False)


def triu(input: Tensor, diagonal: int = 0) -> Tensor:
    return _triangle("triu", _tensor_argument("triu", input), diagonal, upper=True)


# ===================================================================== argument handling
def _is_tensor(value: Any) -> bool:
    from .tensor import Tensor

    return isinstance(value, Tensor)


def _tensor_argument(op: str, value: Any) -> Tensor:
    from .tensor_functions import tensor_argument

    return tensor_argument(op, value)


def _check_condition(op: str, condition: Any, bool_only: bool) -> None:
    _tensor_argument(op, condition)
    if condition.dtype != _BOOL and (bool_only or condition.dtype != _LEGACY_MASK):
        raise RuntimeError(
            f"{op}: expected a boolean condition/mask tensor, got a tensor with dtype "
            f"{condition.dtype}"
        )


def _fill_value(op: str, value: Any, like: Tensor) -> Tensor:
    """``value`` as a 0-d tensor of ``like``'s dtype and device (a tensor value keeps its graph)."""
    if _is_tensor(value):
        if value.ndim:
            raise RuntimeError(
                f"{op} only supports a 0-dimensional value tensor, but got a tensor with "
                f"{value.ndim} dimension(s)"
            )
        return value.to(device=like.device, dtype=like.dtype)
    if scalar_dtype(value) is None or isinstance(value, complex):
        raise TypeError(f"{op}(): value must be a real number or a 0-d tensor, got {value!r}")
    converted = _converted(op, value, like.dtype)
    return like._wrap(like.device.constant(converted, like.dtype), like.device)


def _converted(op: str, value: Any, dtype: np.dtype) -> Any:
    """A number as PyTorch converts it into ``dtype``: toward zero into an integer type, a
    negative one into an unsigned type modulo 2**bits; a value the type cannot hold raises."""
    overflows = False
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lowest = -int(info.max) if dtype.kind == "u" else int(info.min)
        finite = not isinstance(value, float) or math.isfinite(value)
        overflows = not (finite and lowest <= value <= info.max)
        if not overflows:
            value = int(value) % (int(info.max) + 1) if dtype.kind == "u" else int(value)
    elif dtype.kind == "f" and math.isfinite(value):
        overflows = abs(value) > float(np.finfo(dtype).max)
    if overflows:
        raise RuntimeError(
            f"{op}: value {value!r} cannot be converted to type {dtype} without overflow"
        )
    return value


def _clamp(op: str, x: Tensor, low: Any, high: Any) -> Tensor:
    from .tensor import _cast, result_dtype

    bounds = [b for b in (low, high) if b is not None]
    if not bounds:
        raise RuntimeError(f"{op}: at least one of 'min' or 'max' must not be None")
    kinds = {_is_tensor(b) for b in bounds}
    if len(kinds) > 1:
        raise TypeError(f"{op}(): min and max must both be tensors or both be numbers")
    for bound in bounds:
        if not _is_tensor(bound) and (scalar_dtype(bound) is None or isinstance(bound, complex)):
            raise TypeError(f"{op}(): a bound must be a number or a tensor, got {bound!r}")
    dtype = result_dtype(x, *bounds)
    x, *bounds = (_cast(v, dtype, x.device) for v in (x, *bounds))
    return Clamp.apply(x, *bounds, has_low=low is not None, has_high=high is not None, op=op)


def _extremum(op: str, a: Any, b: Any, smallest: bool) -> Tensor:
    from .tensor import _promote

    for value in (a, b):
        if not _is_tensor(value):
            raise TypeError(
                f"{op}(): expected two tensors, got {type(value).__name__} (wrap a number with "
                "fastnet.tensor, or use clamp)"
            )
    return Maximum.apply(*_promote(a, b), smallest=smallest)


def _positions(op: str, source: Tensor, dim: Any, index: Any, src: Tensor | None = None) -> tuple:
    """The advanced index that picks, for each element of ``index``, its element of ``source``
    (1-d or more) along ``dim`` (see :mod:`fastnet.selection_ops`), after PyTorch's checks;
    and the region of ``src`` that index covers."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{op}(): dim must be an int, got {type(dim).__name__}")
    index = _tensor_argument(op, index)
    if index.dtype not in _INDEX_DTYPES:
        raise RuntimeError(f"{op}(): expected dtype int32/int64 for index, got {index.dtype}")
    _check_devices(op, (source, index))
    (axis,) = _normalize_axes(dim, source.ndim)
    ndim, idx = source.ndim, index.data
    if idx.size == 0:  # PyTorch checks nothing else of an empty index
        idx = idx.reshape((0,) * ndim)
    else:
        idx = idx.reshape(1) if idx.ndim == 0 else idx
        _check_index_shape(op, source.shape, axis, idx.shape, None if src is None else src.shape)
        low, high = index._index_range()
        size = source.shape[axis]
        if low < 0 or high >= size:
            raise RuntimeError(
                f"{op}(): index {low if low < 0 else high} is out of bounds for dimension {dim} "
                f"with size {size}"
            )
    xp = source.device.xp
    idx = idx.astype(np.int64)  # a copy: a later in-place change to index cannot reach backward
    positions = tuple(
        idx if d == axis else xp.arange(n).reshape([n if e == d else 1 for e in range(ndim)])
        for d, n in enumerate(idx.shape)
    )
    return positions, tuple(slice(0, n) for n in idx.shape)


def _check_index_shape(
    op: str, shape: tuple, axis: int, index_shape: tuple, src_shape: tuple | None
) -> None:
    if len(index_shape) != len(shape) or (src_shape is not None and len(src_shape) != len(shape)):
        named = "" if src_shape is None else f" and src {src_shape}"
        raise RuntimeError(
            f"{op}(): index of shape {index_shape} must have as many dimensions as the input "
            f"of shape {shape}{named}"
        )
    too_large = any(n > shape[d] for d, n in enumerate(index_shape) if d != axis)
    if src_shape is not None:
        too_large = too_large or any(n > src_shape[d] for d, n in enumerate(index_shape))
    if too_large:
        named = "" if src_shape is None else f", nor larger than src {src_shape}"
        raise RuntimeError(
            f"{op}(): index of shape {index_shape} must be no larger than the input of shape "
            f"{shape} apart from dimension {axis}{named}"
        )


def _scatter(
    op: str, x: Tensor, dim: Any, index: Any, src: Any, value: Any, accumulate: bool
) -> Tensor:
    if (src is None) == (value is None):
        raise TypeError(f"{op}(): pass src (a tensor or a number) or value, exactly one")
    src = value if src is None else src
    source = x.reshape(1) if x.ndim == 0 else x
    if _is_tensor(src):
        if src.dtype != x.dtype:
            raise RuntimeError(
                f"{op}(): expected self.dtype to be equal to src.dtype, got {x.dtype} and "
                f"{src.dtype}"
            )
        src = src.reshape(1) if src.ndim == 0 else src
        positions, region = _positions(op, source, dim, index, src)
    elif accumulate:
        raise TypeError(f"{op}(): src must be a Tensor, got {type(src).__name__}")
    else:
        positions, _ = _positions(op, source, dim, index)
        src, region = _fill_value(op, src, x), ()
    out = Scatter.apply(source, src, positions=positions, region=region, accumulate=accumulate)
    return out if x.ndim else out.reshape(())


def _triangle(op: str, x: Tensor, diagonal: int, upper: bool) -> Tensor:
    if x.ndim < 2:
        raise RuntimeError(f"{op}: input tensor must have at least 2 dimensions, got {x.shape}")
    xp = x.device.xp
    rows, cols = x.shape[-2:]
    below = xp.tri(rows, cols, diagonal - 1 if upper else diagonal, dtype=bool)
    keep = x._wrap(~below if upper else below, x.device)
    zero = x._wrap(xp.zeros((), dtype=x.dtype), x.device)
    return Where.apply(keep, x, zero, op=op)
