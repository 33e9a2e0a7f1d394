"""The shape and conversion methods of :class:`~fastnet.tensor.Tensor` that PyTorch users reach
for: squeeze, unsqueeze, expand, expand_as, broadcast_to, repeat, flip, clone, contiguous; the
transposes t, mT, swapaxes and movedim; the views narrow, select, split, chunk and unbind (each
piece a basic index of :class:`~fastnet.tensor_ops.GetItem`, whose gradient fills the piece's
place in a zero tensor of the input's shape); view_as, reshape_as, unflatten, ravel; the sizes
dim, nelement, element_size; the dtype conversions long, int, bool, half, type_as and type; and
the factories new_zeros, new_ones, new_full, new_empty and new_tensor (the tensor's dtype and
device unless told otherwise).

:class:`Shaping` is a mixin of Tensor, in a module of its own so that tensor.py stays one concern.
Its ops, as Functions over raw arrays (``x`` of shape ``S``, output ``y``):

* squeeze / unsqueeze: Tensor's reshape (a view; the gradient is reshaped back).
* :class:`Expand`: ``y = broadcast(x)`` to a shape that repeats size-1 axes and adds leading ones
  (a read-only view, no copy); the gradient is summed over the repeated axes (the engine's
  ``unbroadcast``).
* :class:`Repeat`: ``y = tile(x, r)`` of shape ``r·S`` (``S`` padded with leading 1s); the
  gradient ``dx[s] = Σ_k dy[k·S + s]``: ``dy`` viewed as ``(r0, S0, r1, S1, ...)`` summed over
  the ``r`` axes.
* :class:`Flip`: ``y = x`` reversed along some axes (a copy, as PyTorch's); ``dx = flip(dy)``.
* :class:`Clone`: ``y = x`` in new memory; ``dx = dy``.

Conversions to a floating dtype go through ``Tensor.to`` (differentiable); to an integer or bool
dtype they give a tensor outside the graph, as in PyTorch, where such tensors carry no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .autograd import Function
from .tensor_ops import GetItem
from .tensor_reductions import _normalize_axes

if TYPE_CHECKING:
    from .tensor import Tensor

__all__ = ["Clone", "Expand", "Flip", "Repeat", "Shaping"]


class Expand(Function):
    saves_inputs = saves_output = False

    def forward(self, a, shape):
        return self.device.xp.broadcast_to(a, shape)

    def backward(self, grad):
        return (grad,)  # the engine sums it over the expanded axes (unbroadcast)


class Repeat(Function):
    saves_inputs = saves_output = False

    def forward(self, a, repeats):
        self.shape = a.shape
        padded = (1,) * (len(repeats) - a.ndim) + tuple(a.shape)
        self.interleaved = tuple(n for pair in zip(repeats, padded, strict=True) for n in pair)
        return self.device.xp.tile(a, repeats)

    def backward(self, grad):
        repeat_axes = tuple(range(0, len(self.interleaved), 2))
        return (grad.reshape(self.interleaved).sum(axis=repeat_axes).reshape(self.shape),)


class Flip(Function):
    saves_inputs = saves_output = False

    def forward(self, a, axes):
        self.axes = axes
        return self.device.xp.flip(a, axis=axes).copy()

    def backward(self, grad):
        return (self.device.xp.flip(grad, axis=self.axes),)


class Clone(Function):
    saves_inputs = saves_output = False

    def forward(self, a):
        return a.copy()

    def backward(self, grad):
        return (grad,)


def _sizes(op: str, sizes: tuple) -> tuple[int, ...]:
    """Sizes given as varargs or as one sequence, checked to be ints."""
    if len(sizes) == 1 and isinstance(sizes[0], Sequence):
        sizes = tuple(sizes[0])
    for size in sizes:
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"{op}(): sizes must be ints, got {sizes!r}")
    return tuple(int(size) for size in sizes)


def _product(op: str, a: Tensor, b: Tensor, ndims: tuple[int, int]) -> Tensor:
    """``a @ b`` after checking the operands' numbers of dimensions, as PyTorch's ``op``."""
    if (a.ndim, b.ndim) != ndims:
        raise RuntimeError(
            f"{op}: expected operands of {ndims[0]} and {ndims[1]} dimensions, got shapes "
            f"{a.shape} and {b.shape}"
        )
    if op == "bmm" and a.shape[0] != b.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {a.shape} and {b.shape}")
    return a @ b


def _one_axis(op: str, dim: Any, ndim: int) -> int:
    """The non-negative axis of one ``dim`` of a tensor with at least one dimension."""
    if ndim == 0:
        raise IndexError(f"{op}(): a 0-d tensor has no dimension to take pieces from")
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{op}(): dim must be an int, got {dim!r}")
    return _normalize_axes(dim, ndim)[0]


def _dims(dims: Any, ndim: int) -> list[int]:
    """Non-negative axes, in the given order, from an int or a sequence of them."""
    dims = [dims] if isinstance(dims, (int, np.integer)) else list(dims)
    return [(_normalize_axes(d, ndim) or (0,))[0] for d in dims]


def _axes(dims: Any, ndim: int) -> tuple[int, ...]:
    """Non-negative axes from an int or a sequence of them (a 0-d tensor takes 0 or -1, which
    name no axis); out of range or named twice raises, as in PyTorch."""
    return _normalize_axes(dims, ndim) or ()


class Shaping:
    """Shape and conversion methods of Tensor (which holds ``data``, ``device`` and the shape)."""

    __slots__ = ()

    # ----------------------------------------------------------------- shape
    def squeeze(self: Tensor, dim: int | Sequence[int] | None = None) -> Tensor:
        """Drop the size-1 dimensions (all of them, or those among ``dim``: a named dimension of
        another size is left alone, as in PyTorch)."""
        if dim is None:
            axes = range(self.ndim)
        else:
            axes = _axes(dim, self.ndim)
        dropped = {axis for axis in axes if self.shape[axis] == 1}
        return self.reshape(tuple(n for axis, n in enumerate(self.shape) if axis not in dropped))

    def unsqueeze(self: Tensor, dim: int) -> Tensor:
        """Insert a size-1 dimension at ``dim``, in [-ndim - 1, ndim] (negative counts from the
        end of the result)."""
        if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"unsqueeze(): dim must be an int, got {type(dim).__name__}")
        if not -self.ndim - 1 <= dim <= self.ndim:
            raise IndexError(
                f"unsqueeze(): dim {dim} is out of range for a tensor with {self.ndim} "
                f"dimensions (expected a dim in [{-self.ndim - 1}, {self.ndim}])"
            )
        axis = dim + self.ndim + 1 if dim < 0 else dim
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def expand(self: Tensor, *sizes: Any) -> Tensor:
        """A view with size-1 dimensions repeated to ``sizes`` and new leading dimensions; -1
        keeps a dimension's size. The gradient sums back over what was repeated."""
        sizes = _sizes("expand", sizes)
        new = len(sizes) - self.ndim
        if new < 0:
            raise RuntimeError(
                f"expand(): {len(sizes)} sizes {sizes} for a tensor of shape {self.shape}: give "
                f"at least one per dimension ({self.ndim})"
            )
        shape = []
        for axis, size in enumerate(sizes):
            old = self.shape[axis - new] if axis >= new else None
            if size == -1 and old is not None:
                size = old
            elif size < 0:
                raise RuntimeError(
                    f"expand(): size {size} at dimension {axis} of {sizes} is not allowed "
                    "(-1 keeps an existing dimension's size; new leading dimensions need a size)"
                )
            elif old not in (None, 1, size):
                raise RuntimeError(
                    f"expand(): the expanded size {size} must match the existing size {old} at "
                    f"non-singleton dimension {axis} (shape {self.shape} to {sizes})"
                )
            shape.append(size)
        return Expand.apply(self, shape=tuple(shape))

    def expand_as(self: Tensor, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def broadcast_to(self: Tensor, size: Sequence[int]) -> Tensor:
        return self.expand(size)

    def view_as(self: Tensor, other: Tensor) -> Tensor:
        return self.reshape(other.shape)

    reshape_as = view_as

    def flatten(self: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        start = start_dim % self.ndim if self.ndim else 0
        end = end_dim % self.ndim if self.ndim else 0
        merged = math.prod(self.shape[start : end + 1])  # np.prod costs more than the reshape
        return self.reshape(self.shape[:start] + (merged,) + self.shape[end + 1 :])

    def ravel(self: Tensor) -> Tensor:
        return self.reshape(-1)

    def unflatten(self: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
        """Dimension ``dim`` split into ``sizes`` (one of them may be -1)."""
        (axis,) = _axes(dim, max(self.ndim, 1))
        return self.reshape(self.shape[:axis] + tuple(sizes) + self.shape[axis + 1 :])

    # ----------------------------------------------------------------- transposes
    def t(self: Tensor) -> Tensor:
        """The transpose of a matrix (a tensor of up to 2 dimensions, as PyTorch's)."""
        if self.ndim > 2:
            raise RuntimeError(
                f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}D"
            )
        return self.transpose(0, 1) if self.ndim == 2 else self

    @property
    def mT(self: Tensor) -> Tensor:
        """The last two dimensions swapped (a batch of matrices transposed)."""
        if self.ndim < 2:
            raise RuntimeError(f"mT: tensor of {self.ndim} dimensions, expected at least 2")
        return self.transpose(-2, -1)

    mH = mT  # real tensors: the conjugate transpose is the transpose

    def adjoint(self: Tensor) -> Tensor:
        return self.mT

    def swapaxes(self: Tensor, axis0: int, axis1: int) -> Tensor:
        return self.transpose(axis0, axis1)

    def swapdims(self: Tensor, dim0: int, dim1: int) -> Tensor:
        return self.transpose(dim0, dim1)

    def movedim(self: Tensor, source: Any, destination: Any) -> Tensor:
        """Dimensions ``source`` (an int or a sequence) moved to ``destination``; the others keep
        their order."""
        sources, targets = _dims(source, self.ndim), _dims(destination, self.ndim)
        if len(sources) != len(targets):
            raise RuntimeError(
                f"movedim: Invalid source or destination dims: source ({list(sources)} dims) "
                f"should contain the same number of dims as destination ({list(targets)} dims)"
            )
        if len(set(sources)) != len(sources) or len(set(targets)) != len(targets):
            raise RuntimeError(f"movedim: repeated dim in {source} or {destination}")
        rest = iter(d for d in range(self.ndim) if d not in sources)
        placed = dict(zip(targets, sources, strict=True))
        return self.permute(*[placed[d] if d in placed else next(rest) for d in range(self.ndim)])

    moveaxis = movedim

    # ----------------------------------------------------------------- pieces
    def narrow(self: Tensor, dim: int, start: int, length: int) -> Tensor:
        """The view of ``length`` entries from ``start`` (negative counts from the end) along
        ``dim``."""
        axis = _one_axis("narrow", dim, self.ndim)
        size = self.shape[axis]
        if not -size <= start <= size:
            raise IndexError(
                f"narrow(): start {start} is out of range for dim {dim} of size {size}"
            )
        start = start + size if start < 0 else start
        if length < 0 or start + length > size:
            raise RuntimeError(
                f"narrow(): start ({start}) + length ({length}) exceeds dimension size ({size})"
            )
        return self._piece(axis, slice(start, start + length))

    def select(self: Tensor, dim: int, index: int) -> Tensor:
        """The view at ``index`` of ``dim``, that dimension removed."""
        axis = _one_axis("select", dim, self.ndim)
        size = self.shape[axis]
        if not -size <= index < size:
            raise IndexError(
                f"select(): index {index} out of range for tensor of size {self.shape} at "
                f"dimension {dim}"
            )
        return self._piece(axis, index % size)

    def _piece(self: Tensor, axis: int, index: Any) -> Tensor:
        return GetItem.apply(self, index=(slice(None),) * axis + (index,))

    def split(self: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
        """Pieces along ``dim``: of ``split_size`` entries each (the last one smaller), or of
        the listed sizes (which must add up to the dimension's size)."""
        axis = _one_axis("split", dim, self.ndim)
        size = self.shape[axis]
        if isinstance(split_size_or_sections, (int, np.integer)):
            step = int(split_size_or_sections)
            if step < 0 or (step == 0 and size):
                raise RuntimeError(f"split(): split_size must be positive, got {step}")
            sizes = [min(step, size - start) for start in range(0, size, step)] or [0]
        else:
            sizes = [int(n) for n in split_size_or_sections]
            if sum(sizes) != size or any(n < 0 for n in sizes):
                raise RuntimeError(
                    f"split_with_sizes expects split_sizes to sum exactly to {size} (input "
                    f"tensor's size at dimension {dim}), but got split_sizes={sizes}"
                )
        bounds = [0, *(int(n) for n in np.cumsum(sizes))]
        return tuple(
            self._piece(axis, slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        )

    def split_with_sizes(self: Tensor, split_sizes: Sequence[int], dim: int = 0) -> tuple:
        return self.split(list(split_sizes), dim)

    def chunk(self: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        """At most ``chunks`` pieces of ``ceil(size / chunks)`` entries along ``dim``."""
        if chunks <= 0:
            raise RuntimeError(f"chunk(): chunks must be greater than 0, got {chunks}")
        size = self.shape[_one_axis("chunk", dim, self.ndim)]
        return self.split(max(-(-size // chunks), 1), dim)

    def unbind(self: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
        """The views at each index of ``dim``, that dimension removed."""
        axis = _one_axis("unbind", dim, self.ndim)
        return tuple(self._piece(axis, i) for i in range(self.shape[axis]))

    def repeat(self: Tensor, *sizes: Any) -> Tensor:
        """Tile the tensor ``sizes[i]`` times along dimension i (extra leading sizes add
        dimensions); a copy, unlike expand."""
        repeats = _sizes("repeat", sizes)
        if len(repeats) < self.ndim:
            raise RuntimeError(
                f"repeat(): {len(repeats)} repeats {repeats} for a tensor of shape {self.shape}: "
                f"give at least one per dimension ({self.ndim})"
            )
        if any(n < 0 for n in repeats):
            raise RuntimeError(f"repeat(): repeats must be non-negative, got {repeats}")
        return Repeat.apply(self, repeats=repeats)

    def flip(self: Tensor, *dims: Any) -> Tensor:
        """The values reversed along ``dims`` (an int, several, or a sequence); a copy."""
        dims = dims[0] if len(dims) == 1 else dims
        return Flip.apply(self, axes=_axes(dims, self.ndim))

    # ----------------------------------------------------------------- memory
    def clone(self: Tensor) -> Tensor:
        """A copy in new memory, tracked by autograd (the gradient passes through)."""
        return Clone.apply(self)

    def contiguous(self: Tensor) -> Tensor:
        """The tensor itself when its values are in C order, else a differentiable copy that
        is."""
        return self if self.data.flags.c_contiguous else Clone.apply(self)

    # ----------------------------------------------------------------- products
    def mm(self: Tensor, mat2: Tensor) -> Tensor:
        """The product of two matrices."""
        return _product("mm", self, mat2, (2, 2))

    def bmm(self: Tensor, mat2: Tensor) -> Tensor:
        """The products of two batches of matrices, (b, n, m) @ (b, m, p)."""
        return _product("bmm", self, mat2, (3, 3))

    def mv(self: Tensor, vec: Tensor) -> Tensor:
        return _product("mv", self, vec, (2, 1))

    def dot(self: Tensor, other: Tensor) -> Tensor:
        return _product("dot", self, other, (1, 1))

    def outer(self: Tensor, vec2: Tensor) -> Tensor:
        """``out[i, j] = self[i] · vec2[j]`` of two vectors."""
        if self.ndim != 1 or vec2.ndim != 1:
            raise RuntimeError(f"outer: expected 1-D vectors, got {self.shape} and {vec2.shape}")
        return self.reshape(-1, 1) * vec2.reshape(1, -1)

    # ----------------------------------------------------------------- sizes
    def dim(self: Tensor) -> int:
        return self.ndim

    ndimension = dim

    def nelement(self: Tensor) -> int:
        return self.numel()

    def element_size(self: Tensor) -> int:
        """Bytes per value."""
        return self.dtype.itemsize

    def is_contiguous(self: Tensor) -> bool:
        return bool(self.data.flags.c_contiguous)

    def is_floating_point(self: Tensor) -> bool:
        return self.dtype.kind == "f"

    @property
    def is_leaf(self: Tensor) -> bool:
        """Whether no recorded op made this tensor (gradients accumulate in leaves)."""
        return self._ctx is None

    @property
    def grad_fn(self: Tensor) -> Any:
        """The op that made this tensor (None for a leaf)."""
        return self._ctx

    def __int__(self: Tensor) -> int:
        return int(self.item())

    def __float__(self: Tensor) -> float:
        return float(self.item())

    def __index__(self: Tensor) -> int:
        if self.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    # ----------------------------------------------------------------- factories
    def new_zeros(self: Tensor, *size: Any, **options: Any) -> Tensor:
        from .factories import zeros

        return zeros(*size, **self._like(options))

    def new_ones(self: Tensor, *size: Any, **options: Any) -> Tensor:
        from .factories import ones

        return ones(*size, **self._like(options))

    def new_empty(self: Tensor, *size: Any, **options: Any) -> Tensor:
        from .factories import empty

        return empty(*size, **self._like(options))

    def new_full(self: Tensor, size: Sequence[int], fill_value: Any, **options: Any) -> Tensor:
        from .factories import full

        return full(size, fill_value, **self._like(options))

    def new_tensor(self: Tensor, data: Any, **options: Any) -> Tensor:
        from .tensor import tensor

        return tensor(data, **self._like(options))

    def _like(self: Tensor, options: dict) -> dict:
        """Factory keywords: this tensor's dtype and device unless ``options`` name others."""
        return {"dtype": self.dtype, "device": self.device, **options}

    # ----------------------------------------------------------------- dtype
    def type_as(self: Tensor, other: Tensor) -> Tensor:
        return self._converted(other.dtype)

    def type(self: Tensor, dtype: Any = None) -> Any:
        """The dtype's name without an argument; else this tensor converted to ``dtype``."""
        if dtype is None:
            return str(self.dtype)
        return self._converted(dtype)

    def half(self: Tensor) -> Tensor:
        return self._converted(np.float16)

    def short(self: Tensor) -> Tensor:
        return self._converted(np.int16)

    def byte(self: Tensor) -> Tensor:
        return self._converted(np.uint8)

    def char(self: Tensor) -> Tensor:
        return self._converted(np.int8)

    def long(self: Tensor) -> Tensor:
        return self._converted(np.int64)

    def int(self: Tensor) -> Tensor:
        return self._converted(np.int32)

    def bool(self: Tensor) -> Tensor:
        return self._converted(np.bool_)

    def _converted(self: Tensor, dtype: Any) -> Tensor:
        """This tensor in ``dtype`` (itself when it already is); outside the graph when
        ``dtype`` is not floating, since such a tensor carries no gradient."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        if dtype.kind == "f":
            return self.to(dtype=dtype)
        return self._wrap(self.data.astype(dtype), self.device)
