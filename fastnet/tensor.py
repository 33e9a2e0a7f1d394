"""Tensor: one array of a device with reverse-mode autograd, and its user-facing constructors.

A :class:`Tensor` wraps one array of its device (NumPy on ``cpu``, CuPy on ``cuda``), a dtype
(float32 unless asked otherwise), ``requires_grad``, ``grad``, and the
:class:`~fastnet.autograd.Function` node that made it. Its operators and methods apply the ops of
:mod:`fastnet.tensor_ops` (elementwise, matmul, reduction and shape ops); ``Tensor.backward()``
checks its arguments and hands the graph to :func:`fastnet.autograd.backward`. The ops of the
neural-network layers (convolution, pooling, losses, ...) live in ``fastnet.functional``.

Layering, bottom to top: ``autograd`` (engine) <- ``tensor_ops`` (Functions) <- ``tensor``. The
engine's public names are re-exported here, so ``from fastnet.tensor import Function, no_grad``
keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import autograd
from .autograd import Function, enable_grad, is_grad_enabled, no_grad, unbroadcast
from .backend import Device, get_device, to_numpy
from .tensor_ops import (
    Abs,
    Add,
    Concat,
    Div,
    Exp,
    GetItem,
    Log,
    MatMul,
    Max,
    Mul,
    Neg,
    Permute,
    Pow,
    ReLU,
    Reshape,
    Sigmoid,
    Sub,
    Sum,
    Tanh,
    ToDevice,
)

__all__ = [
    "DEFAULT_DTYPE",
    "Function",
    "Tensor",
    "cat",
    "enable_grad",
    "is_grad_enabled",
    "no_grad",
    "stack",
    "tensor",
    "unbroadcast",
]

DEFAULT_DTYPE = np.float32


def _dtype_of(dtype: Any) -> np.dtype:
    if isinstance(dtype, str) and dtype in ("float", "double", "long", "int"):
        dtype = {"float": np.float32, "double": np.float64, "long": np.int64, "int": np.int32}[
            dtype
        ]
    return np.dtype(dtype)


class Tensor:
    """An n-dimensional array on a device, with reverse-mode autograd."""

    __slots__ = ("data", "device", "requires_grad", "grad", "_ctx", "__weakref__")
    __array_priority__ = 1000  # so ndarray <op> Tensor defers to Tensor's reflected operators

    def __init__(
        self,
        data: Any,
        dtype: Any = None,
        device: str | Device | None = None,
        requires_grad: bool = False,
    ) -> None:
        if isinstance(data, Tensor):
            device = data.device if device is None else device
            data = data.data
        elif dtype is None:  # floating-point data defaults to float32, whatever its precision
            kind = data.dtype.kind if hasattr(data, "dtype") else np.asarray(data).dtype.kind
            dtype = DEFAULT_DTYPE if kind == "f" else None
        self.device = get_device(device) if device is not None else _device_of_array(data)
        self.data = self.device.asarray(data, dtype=None if dtype is None else _dtype_of(dtype))
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(
                f"only floating-point tensors can require gradients, got {self.data.dtype}"
            )
        self.requires_grad = requires_grad
        self.grad: Tensor | None = None
        self._ctx: Function | None = None

    @staticmethod
    def _wrap(data: Any, device: Device) -> Tensor:
        """A new graph-free tensor over an existing array of ``device`` (no copy, no checks).
        A plain Tensor even when called on a Parameter: op outputs and gradients are not
        parameters."""
        out = Tensor.__new__(Tensor)
        out.data, out.device, out.requires_grad, out.grad, out._ctx = (
            data,
            device,
            False,
            None,
            None,
        )
        return out

    # ----------------------------------------------------------------- properties, conversion
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def T(self) -> Tensor:
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self) -> int:
        return self.shape[0]

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU; shares memory on the CPU)."""
        if self.requires_grad:
            return to_numpy(self.data).copy()
        return to_numpy(self.data)

    def item(self) -> Any:
        if self.data.size != 1:
            raise ValueError(
                "item(): only a one-element tensor converts to a Python number, "
                f"shape is {self.shape}"
            )
        return to_numpy(self.data).reshape(()).item()

    def tolist(self) -> Any:
        return to_numpy(self.data).tolist()

    def detach(self) -> Tensor:
        """The same values, cut from the graph (shares memory)."""
        return Tensor._wrap(self.data, self.device)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def to(self, device: str | Device | None = None, dtype: Any = None) -> Tensor:
        """A copy on ``device`` and/or of ``dtype`` (``self`` when nothing changes), tracked by
        autograd."""
        target = self.device if device is None else get_device(device)
        if target is self.device and (dtype is None or _dtype_of(dtype) == self.dtype):
            return self
        return ToDevice.apply(
            self, device=target, dtype=None if dtype is None else _dtype_of(dtype)
        )

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self) -> Tensor:
        return self.to("cuda")

    def float(self) -> Tensor:
        return self.to(dtype=np.float32)

    def double(self) -> Tensor:
        return self.to(dtype=np.float64)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        values = np.array2string(to_numpy(self.data), precision=4, separator=", ", threshold=50)
        return f"tensor({values}, dtype={self.dtype}, device='{self.device}'{grad})"

    # ----------------------------------------------------------------- autograd
    def backward(self, gradient: Tensor | Any | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``, then free the graph."""
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no graph")
        xp = self.device.xp
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    "backward(): a gradient must be given for a non-scalar output "
                    f"(shape {self.shape}); call .sum().backward() or pass gradient="
                )
            seed = xp.ones_like(self.data)
        else:
            if isinstance(gradient, Tensor):
                seed = gradient.data
            else:
                seed = self.device.asarray(gradient, self.dtype)
            if tuple(seed.shape) != self.shape:
                raise ValueError(
                    f"backward(): gradient shape {tuple(seed.shape)} does not match output shape "
                    f"{self.shape}"
                )

        autograd.backward(self, seed, retain_graph)

    # ----------------------------------------------------------------- arithmetic
    def _operand(self, other: Any) -> Tensor:
        if isinstance(other, Tensor):
            return other
        return Tensor._wrap(self.device.xp.asarray(other, dtype=self.dtype), self.device)

    def __add__(self, other: Any) -> Tensor:
        return Add.apply(self, self._operand(other))

    def __radd__(self, other: Any) -> Tensor:
        return Add.apply(self._operand(other), self)

    def __sub__(self, other: Any) -> Tensor:
        return Sub.apply(self, self._operand(other))

    def __rsub__(self, other: Any) -> Tensor:
        return Sub.apply(self._operand(other), self)

    def __mul__(self, other: Any) -> Tensor:
        return Mul.apply(self, self._operand(other))

    def __rmul__(self, other: Any) -> Tensor:
        return Mul.apply(self._operand(other), self)

    def __truediv__(self, other: Any) -> Tensor:
        return Div.apply(self, self._operand(other))

    def __rtruediv__(self, other: Any) -> Tensor:
        return Div.apply(self._operand(other), self)

    def __pow__(self, exponent: Any) -> Tensor:
        return Pow.apply(self, self._operand(exponent))

    def __rpow__(self, base: Any) -> Tensor:
        return Pow.apply(self._operand(base), self)

    def __neg__(self) -> Tensor:
        return Neg.apply(self)

    def __matmul__(self, other: Tensor) -> Tensor:
        return MatMul.apply(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return MatMul.apply(self._operand(other), self)

    # comparisons give boolean tensors outside the graph
    def _compare(self, other: Any, op: str) -> Tensor:
        other_data = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(getattr(self.data, op)(other_data), self.device)

    def __lt__(self, other: Any) -> Tensor:
        return self._compare(other, "__lt__")

    def __le__(self, other: Any) -> Tensor:
        return self._compare(other, "__le__")

    def __gt__(self, other: Any) -> Tensor:
        return self._compare(other, "__gt__")

    def __ge__(self, other: Any) -> Tensor:
        return self._compare(other, "__ge__")

    def eq(self, other: Any) -> Tensor:
        return self._compare(other, "__eq__")

    # ----------------------------------------------------------------- elementwise functions
    def exp(self) -> Tensor:
        return Exp.apply(self)

    def log(self) -> Tensor:
        return Log.apply(self)

    def tanh(self) -> Tensor:
        return Tanh.apply(self)

    def sigmoid(self) -> Tensor:
        return Sigmoid.apply(self)

    def relu(self) -> Tensor:
        return ReLU.apply(self)

    def abs(self) -> Tensor:
        return Abs.apply(self)

    def sqrt(self) -> Tensor:
        return self**0.5

    # ----------------------------------------------------------------- reductions
    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return Sum.apply(self, axis=_normalize_axes(axis, self.ndim), keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        axes = _normalize_axes(axis, self.ndim)
        count = self.numel() if axes is None else int(np.prod([self.shape[a] for a in axes]))
        return Sum.apply(self, axis=axes, keepdims=keepdims) * (1.0 / max(count, 1))

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return Max.apply(self, axis=_normalize_axes(axis, self.ndim), keepdims=keepdims)

    def argmax(self, axis: int | None = None) -> Tensor:
        return Tensor._wrap(self.data.argmax(axis=axis), self.device)

    # ----------------------------------------------------------------- shape
    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape=shape)

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        start = start_dim % self.ndim if self.ndim else 0
        end = end_dim % self.ndim if self.ndim else 0
        shape = (
            self.shape[:start]
            + (int(np.prod(self.shape[start : end + 1])),)
            + self.shape[end + 1 :]
        )
        return self.reshape(shape)

    def permute(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if sorted(a % self.ndim for a in axes) != list(range(self.ndim)):
            raise ValueError(
                f"permute: {axes} is not a permutation of the {self.ndim} axes of shape "
                f"{self.shape}"
            )
        return Permute.apply(self, axes=tuple(a % self.ndim for a in axes))

    def transpose(self, dim0: int = 0, dim1: int = 1) -> Tensor:
        axes = list(range(self.ndim))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return self.permute(*axes)

    def __getitem__(self, index: Any) -> Tensor:
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        return GetItem.apply(self, index=index)


def _device_of_array(data: Any) -> Device:
    return (
        get_device("cpu")
        if isinstance(data, (np.ndarray, np.generic, list, tuple, int, float, bool))
        else get_device("cuda")
    )


def _normalize_axes(axis: Any, ndim: int) -> tuple | None:
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(a % max(ndim, 1) for a in axes))


def tensor(
    data: Any, dtype: Any = None, device: str | Device | None = None, requires_grad: bool = False
) -> Tensor:
    """A new tensor holding a copy of ``data`` (floats become float32 unless ``dtype`` says
    otherwise)."""
    if isinstance(data, Tensor):
        data = data.data
    if hasattr(data, "copy"):
        data = data.copy()
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def cat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Concatenate tensors along an existing axis."""
    if not tensors:
        raise ValueError("cat: needs at least one tensor")
    ndim = tensors[0].ndim
    axis = axis % ndim
    for t in tensors[1:]:
        if t.ndim != ndim or _without(t.shape, axis) != _without(tensors[0].shape, axis):
            raise ValueError(
                f"cat: shapes {tensors[0].shape} and {t.shape} differ outside axis {axis}"
            )
    return Concat.apply(*tensors, axis=axis)


def _without(shape: tuple, axis: int) -> tuple:
    return shape[:axis] + shape[axis + 1 :]


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Stack tensors of equal shape along a new axis."""
    return cat(
        [
            t.reshape(t.shape[: axis % (t.ndim + 1)] + (1,) + t.shape[axis % (t.ndim + 1) :])
            for t in tensors
        ],
        axis=axis,
    )
