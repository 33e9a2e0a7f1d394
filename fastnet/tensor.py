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
from .autograd import (
    Function,
    enable_grad,
    inference_mode,
    is_grad_enabled,
    no_grad,
    unbroadcast,
)
from .backend import Device, get_device
from .dtypes import CATEGORY, DEFAULT_DTYPE, promoted, scalar_dtype
from .tensor_ops import (
    Add,
    Concat,
    Div,
    GetItem,
    MatMul,
    Mul,
    Neg,
    Permute,
    Pow,
    Reshape,
    Sub,
    ToDevice,
)
from .tensor_pointwise import Pointwise
from .tensor_reductions import Reductions, ValuesIndices
from .tensor_selection import Selection, host_range, is_host_data
from .tensor_shaping import Shaping

__all__ = [
    "DEFAULT_DTYPE",
    "Function",
    "Tensor",
    "ValuesIndices",
    "cat",
    "enable_grad",
    "inference_mode",
    "is_grad_enabled",
    "no_grad",
    "result_dtype",
    "stack",
    "tensor",
    "unbroadcast",
]


_DTYPE_NAMES = {"float": np.float32, "double": np.float64, "long": np.int64, "int": np.int32}


def _dtype_of(dtype: Any) -> np.dtype:
    return np.dtype(_DTYPE_NAMES.get(dtype, dtype) if isinstance(dtype, str) else dtype)


def result_dtype(*values: Any) -> np.dtype:
    """The dtype of an op on ``values`` (tensors or Python scalars), by PyTorch's rule
    (:func:`fastnet.dtypes.promoted`): a float32 tensor stays float32 next to int tensors
    and any Python scalar, and an int tensor with a Python float gives float32."""
    operands = []
    for value in values:
        if isinstance(value, Tensor):
            operands.append((0 if value.data.ndim else 1, value.data.dtype))
        else:
            dtype = scalar_dtype(value)
            if dtype is None:
                raise TypeError(f"unsupported operand of type {type(value).__name__}")
            operands.append((2, dtype))
    return promoted(operands)


def _as_operand(value: Any, device: Device) -> Any:
    """A Tensor or a scalar; arrays and lists become tensors as ``fastnet.tensor`` makes them
    (floating data as float32)."""
    if isinstance(value, Tensor) or scalar_dtype(value) is not None:
        return value
    array = device.asarray(value)
    if array.dtype.kind == "f" and array.dtype != DEFAULT_DTYPE:
        array = array.astype(DEFAULT_DTYPE)
    return Tensor._wrap(array, device)


def _promote(a: Any, b: Any, floating: bool = False) -> tuple[Tensor, Tensor]:
    """The operands of a binary op as two tensors of the dtype :func:`result_dtype` gives
    (a floating one when ``floating``: true division). The one rule every binary op uses."""
    if isinstance(a, Tensor):
        device = a.device
        dtype = a.data.dtype
        if isinstance(b, Tensor):
            if dtype is b.data.dtype and (dtype.kind == "f" or not floating):
                return a, b  # the hot path: two tensors of one dtype
        elif dtype.kind == "f" and isinstance(b, (int, float)):
            return a, Tensor._wrap(device.constant(b, dtype), device)
    else:
        device = b.device
    a, b = _as_operand(a, device), _as_operand(b, device)
    dtype = result_dtype(a, b)
    if floating and dtype.kind not in "fc":
        dtype = np.dtype(DEFAULT_DTYPE)
    return _cast(a, dtype, device), _cast(b, dtype, device)


def _cast(value: Any, dtype: np.dtype, device: Device) -> Tensor:
    if isinstance(value, Tensor):
        return value if value.data.dtype == dtype else value.to(dtype=dtype)
    return Tensor._wrap(device.constant(value, dtype), device)


class Tensor(Reductions, Shaping, Selection, Pointwise, autograd.LeafHooks):
    """An n-dimensional array on a device, with reverse-mode autograd."""

    __slots__ = (
        "data",
        "device",
        "requires_grad",
        "grad",
        "_ctx",
        "_version",
        "_value_range",
        "__weakref__",
    )
    __array_priority__ = 1000  # so ndarray <op> Tensor defers to Tensor's reflected operators
    # == is elementwise, yet tensors stay hashable by identity (dicts and sets of parameters)
    __hash__ = object.__hash__

    def __init__(
        self,
        data: Any,
        dtype: Any = None,
        device: str | Device | None = None,
        requires_grad: bool = False,
    ) -> None:
        from_tensor = isinstance(data, Tensor)
        if from_tensor:
            device = data.device if device is None else device
            data = data.data
        elif dtype is None:  # floating-point data defaults to float32, whatever its precision
            kind = data.dtype.kind if hasattr(data, "dtype") else np.asarray(data).dtype.kind
            dtype = DEFAULT_DTYPE if kind == "f" else None
        self.device = get_device(device) if device is not None else _device_of_array(data)
        dtype = None if dtype is None else _dtype_of(dtype)
        self._value_range = None  # set by an upload of host integers (see Selection._index_range)
        if self.device != "cpu" and not from_tensor and is_host_data(data, self.device):
            host = np.asarray(data, dtype=dtype)
            self.data = self.device.upload(host)
            self._value_range = host_range(host)
        else:
            self.data = self.device.asarray(data, dtype=dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(
                f"only floating-point tensors can require gradients, got {self.data.dtype}"
            )
        self.requires_grad = requires_grad
        self.grad: Tensor | None = None
        self._ctx: Function | None = None
        self._version = 0  # bumped by every in-place change: backward checks what ops saved
        self._post_accumulate_grad_hooks = None  # set: the backward walk finds it at once

    @staticmethod
    def _wrap(data: Any, device: Device) -> Tensor:
        """A new graph-free tensor over an existing array of ``device`` (no copy, no checks).
        A plain Tensor even when called on a Parameter: op outputs and gradients are not
        parameters."""
        out = Tensor.__new__(Tensor)
        out.data, out.device, out.requires_grad, out.grad = data, device, False, None
        out._ctx, out._version, out._value_range = None, 0, None
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
        values = self.device.to_host(self.data)
        return values.copy() if self.requires_grad and self.device == "cpu" else values

    def item(self) -> Any:
        if self.data.size != 1:
            raise ValueError(
                "item(): only a one-element tensor converts to a Python number, "
                f"shape is {self.shape}"
            )
        return self.device.to_host(self.data).reshape(()).item()

    def tolist(self) -> Any:
        return self.device.to_host(self.data).tolist()

    def detach(self) -> Tensor:
        """The same values, cut from the graph (shares memory)."""
        return Tensor._wrap(self.data, self.device)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def to(self, *args: Any, device: str | Device | None = None, dtype: Any = None) -> Tensor:
        """A copy on ``device`` and/or of ``dtype`` (``self`` when nothing changes), as PyTorch's
        ``to(device)``, ``to(dtype)``, ``to(device, dtype)`` and ``to(other)``. Tracked by autograd
        to a floating dtype; a cast to ints or bools leaves the graph (no gradient flows there)."""
        for arg in args:  # positional: tensors, devices ("cpu", "cuda:0", Device) and dtypes
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif isinstance(arg, Device) or (
                isinstance(arg, str) and arg.startswith(("cpu", "cuda"))
            ):
                device = arg
            else:
                dtype = arg
        target = self.device if device is None else get_device(device)
        dtype = None if dtype is None else _dtype_of(dtype)
        if target is self.device and (dtype is None or dtype == self.dtype):
            return self
        source = self.detach() if dtype is not None and dtype.kind != "f" else self
        moved = ToDevice.apply(source, device=target, dtype=dtype)
        if self.device == "cpu" and target != "cpu" and moved.dtype == self.dtype:
            moved._value_range = host_range(self.data)  # an upload: see __init__
        return moved

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
        values = np.array2string(
            self.device.to_host(self.data), precision=4, separator=", ", threshold=50
        )
        return f"tensor({values}, dtype={self.dtype}, device='{self.device}'{grad})"

    # ----------------------------------------------------------------- autograd
    def backward(self, gradient: Tensor | Any | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``, then free the graph."""
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no graph")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    "backward(): a gradient must be given for a non-scalar output "
                    f"(shape {self.shape}); call .sum().backward() or pass gradient="
                )
            seed = self.device.xp.empty(self.data.shape, self.data.dtype)  # ones_like costs 3x
            seed.fill(1)
        else:
            as_tensor = isinstance(gradient, Tensor)
            seed = gradient.data if as_tensor else self.device.asarray(gradient, self.dtype)
            if seed.shape != self.data.shape and tuple(seed.shape) != self.shape:
                raise ValueError(
                    f"backward(): gradient shape {tuple(seed.shape)} does not match output shape "
                    f"{self.shape}"
                )

        autograd.backward(self, seed, retain_graph)

    # ----------------------------------------------------------------- arithmetic
    # every binary op promotes through _promote (PyTorch's rule); + - * skip it for two tensors
    # of one dtype, which it would return as they are (a call costs as much as the check)
    def __add__(self, other: Any) -> Tensor:
        if isinstance(other, Tensor) and other.data.dtype is self.data.dtype:
            return Add.apply(self, other)
        return Add.apply(*_promote(self, other))

    def __radd__(self, other: Any) -> Tensor:
        return Add.apply(*_promote(other, self))

    def __sub__(self, other: Any) -> Tensor:
        if isinstance(other, Tensor) and other.data.dtype is self.data.dtype:
            return Sub.apply(self, other)
        return Sub.apply(*_promote(self, other))

    def __rsub__(self, other: Any) -> Tensor:
        return Sub.apply(*_promote(other, self))

    def __mul__(self, other: Any) -> Tensor:
        if isinstance(other, Tensor) and other.data.dtype is self.data.dtype:
            return Mul.apply(self, other)
        return Mul.apply(*_promote(self, other))

    def __rmul__(self, other: Any) -> Tensor:
        return Mul.apply(*_promote(other, self))

    def __truediv__(self, other: Any) -> Tensor:
        return Div.apply(*_promote(self, other, floating=True))

    def __rtruediv__(self, other: Any) -> Tensor:
        return Div.apply(*_promote(other, self, floating=True))

    def __pow__(self, exponent: Any) -> Tensor:
        return Pow.apply(*_promote(self, exponent))

    def __rpow__(self, base: Any) -> Tensor:
        return Pow.apply(*_promote(base, self))

    def __neg__(self) -> Tensor:
        return Neg.apply(self)

    def __matmul__(self, other: Any) -> Tensor:
        return MatMul.apply(*_promote(self, other))

    def __rmatmul__(self, other: Any) -> Tensor:
        return MatMul.apply(*_promote(other, self))

    matmul = __matmul__

    # ----------------------------------------------------------------- in place
    # a += b changes the values in place and bumps the version, so backward through an op that
    # saved this tensor raises. Inside a graph (grad mode on and a gradient involved) it is
    # recorded out of place instead: the name is rebound to the new node, the graph stays right.
    def _in_place(self, other: Any, op: str, function: type[Function], ufunc: str) -> Tensor:
        involved = self.requires_grad or (isinstance(other, Tensor) and other.requires_grad)
        if involved and is_grad_enabled():
            self._check_writable(op)
            return function.apply(*_promote(self, other, floating=ufunc == "true_divide"))
        _, value = _promote(self, other, floating=ufunc == "true_divide")
        if CATEGORY[value.dtype.kind] > CATEGORY[self.dtype.kind]:
            raise RuntimeError(
                f"{op}: result type {value.dtype} can't be cast to the desired output type "
                f"{self.dtype} of the tensor changed in place"
            )
        autograd._check_devices(op, (self, value))
        try:
            getattr(self.device.xp, ufunc)(self.data, value.data, out=self.data, casting="unsafe")
        except ValueError as error:
            if "read-only" in str(error):  # an expand()ed view: one memory cell per many values
                raise RuntimeError(f"{op}: this tensor is a read-only view ({error})") from None
            raise ValueError(
                f"{op}: the result of shapes {self.shape} and {value.shape} does not fit the "
                f"tensor of shape {self.shape} changed in place"
            ) from None
        self._version += 1
        self._value_range = None
        return self

    def _check_writable(self, op: str) -> None:
        if self.requires_grad and self._ctx is None:
            raise RuntimeError(
                f"{op}: a leaf tensor that requires grad is being used in an in-place "
                "operation; change it under fastnet.no_grad(), or change a copy"
            )

    def __iadd__(self, other: Any) -> Tensor:
        return self._in_place(other, "add_", Add, "add")

    def __isub__(self, other: Any) -> Tensor:
        return self._in_place(other, "sub_", Sub, "subtract")

    def __imul__(self, other: Any) -> Tensor:
        return self._in_place(other, "mul_", Mul, "multiply")

    def __itruediv__(self, other: Any) -> Tensor:
        return self._in_place(other, "div_", Div, "true_divide")

    def __setitem__(self, index: Any, value: Any) -> None:
        """Assign in place (bumps the version). Not recorded by autograd: refused while grad
        mode is on and this tensor or the value requires a gradient."""
        self._write("setitem", value)
        if isinstance(value, Tensor):
            value = value.data
        self.data[_index_arrays(index)] = value

    def copy_(self, source: Any) -> Tensor:
        """Copy ``source``'s values into this tensor in place (broadcast, cast, moved across
        devices)."""
        self._write("copy_", source)
        if isinstance(source, Tensor):
            moved = source.device is not self.device
            source = self.device.upload(source.numpy()) if moved else source.data
        self.data[...] = self.device.asarray(source)
        return self

    def fill_(self, value: Any) -> Tensor:
        self._write("fill_", value)
        self.data.fill(value.item() if isinstance(value, Tensor) else value)
        return self

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def _write(self, op: str, value: Any) -> None:
        """Refuse an in-place write autograd cannot record; bump the version otherwise."""
        if is_grad_enabled():
            self._check_writable(op)
            if self.requires_grad or (isinstance(value, Tensor) and value.requires_grad):
                raise RuntimeError(
                    f"{op}: an in-place write into a tensor of the autograd graph is not "
                    "recorded; build the values out of place (cat, stack, arithmetic) or write "
                    "under fastnet.no_grad()"
                )
        self._version += 1
        self._value_range = None

    # ----------------------------------------------------------------- comparisons
    # elementwise, giving boolean tensors outside the graph (as PyTorch's)
    def _compare(self, other: Any, op: str) -> Tensor:
        if not isinstance(other, Tensor) and scalar_dtype(other) is None:
            if other is None or isinstance(other, (str, bytes)):
                return NotImplemented
        a, b = _promote(self, other)
        return Tensor._wrap(getattr(a.data, op)(b.data), a.device)

    def __lt__(self, other: Any) -> Tensor:
        return self._compare(other, "__lt__")

    def __le__(self, other: Any) -> Tensor:
        return self._compare(other, "__le__")

    def __gt__(self, other: Any) -> Tensor:
        return self._compare(other, "__gt__")

    def __ge__(self, other: Any) -> Tensor:
        return self._compare(other, "__ge__")

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, "__eq__")

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, "__ne__")

    eq, ne = __eq__, __ne__

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self.data.size} values (shape {self.shape}) "
                "is ambiguous; use .any() or .all()"
                if self.data.size
                else "the truth value of a tensor with no values is ambiguous"
            )
        return bool(self.item())

    # ----------------------------------------------------------------- shape
    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape=shape)

    view = reshape

    def permute(self, *axes: Any, dims: Any = None) -> Tensor:
        axes = axes or dims
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
        return GetItem.apply(self, index=_index_arrays(index))


def _device_of_array(data: Any) -> Device:
    return (
        get_device("cpu")
        if isinstance(data, (np.ndarray, np.generic, list, tuple, int, float, bool))
        else get_device("cuda")
    )


def _index_arrays(index: Any) -> Any:
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


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


def cat(tensors: Sequence[Tensor], dim: int = 0, *, axis: int | None = None) -> Tensor:
    """Concatenate tensors along the existing dimension ``dim`` (``axis=`` is NumPy's name for
    it), their dtypes promoted as a binary op's; as PyTorch, 1-D empty tensors are skipped."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"cat(): expected a sequence of tensors, got {type(tensors).__name__}")
    dim = _dim_alias("cat", dim, axis)
    tensors = [t for t in tensors if t.shape != (0,)] or list(tensors[:1])
    if not tensors:
        raise ValueError("cat(): expected a non-empty sequence of tensors")
    first = tensors[0]
    for position, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"cat(): expected Tensors, got {type(t).__name__} at {position}")
        if t.ndim == 0:
            raise RuntimeError(f"cat(): zero-dimensional tensor (at {position}) cannot be joined")
    if not -first.ndim <= dim < first.ndim:
        raise IndexError(
            f"cat(): dim {dim} is out of range for tensors of {first.ndim} dimensions (expected "
            f"a dim in [{-first.ndim}, {first.ndim - 1}])"
        )
    axis = dim % first.ndim
    for t in tensors[1:]:
        if t.ndim != first.ndim or _without(t.shape, axis) != _without(first.shape, axis):
            raise ValueError(f"cat(): shapes {first.shape} and {t.shape} differ outside dim {dim}")
    dtype = result_dtype(*tensors)
    return Concat.apply(*(_cast(t, dtype, t.device) for t in tensors), axis=axis)


def _dim_alias(op: str, dim: int, axis: int | None) -> int:
    if axis is None:
        return dim
    if dim not in (0, axis):
        raise TypeError(f"{op}(): pass dim or axis, not both")
    return axis


def _without(shape: tuple, axis: int) -> tuple:
    return shape[:axis] + shape[axis + 1 :]


def stack(tensors: Sequence[Tensor], dim: int = 0, *, axis: int | None = None) -> Tensor:
    """Join tensors of one shape along a new dimension ``dim`` (in [-ndim - 1, ndim])."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence) or not tensors:
        raise TypeError("stack(): expected a non-empty sequence of tensors")
    dim = _dim_alias("stack", dim, axis)
    shape = tensors[0].shape
    for t in tensors[1:]:
        if t.shape != shape:
            raise RuntimeError(
                f"stack(): expects each tensor to be equal size, got {shape} and {t.shape}"
            )
    return cat([t.unsqueeze(dim) for t in tensors], dim)
