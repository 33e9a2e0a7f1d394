"""Tensor and the reverse-mode autograd engine.

A :class:`Tensor` wraps one array of its device (NumPy on ``cpu``, CuPy on ``cuda``), a dtype
(float32 unless asked otherwise), ``requires_grad``, ``grad``, and the :class:`Function` node
that made it. Each differentiable op is a small ``Function`` subclass whose ``forward`` and
``backward`` sit next to each other and work on raw arrays of the device:

    forward(*arrays, **params) -> output array         (saves what backward needs on self)
    backward(grad_output) -> one gradient per input     (None where no gradient flows)

``Tensor.backward()`` orders the graph topologically once, walks it in reverse, accumulates each
gradient, reduces broadcast gradients back to their input's shape (:func:`unbroadcast`), stores
the results in the leaves' ``.grad`` and frees the graph. :func:`no_grad` turns recording off.
The ops of the neural-network layers (convolution, pooling, losses, ...) live in
``fastnet.functional``; the ones here are the elementwise, reduction and shape ops of a tensor.
"""
from __future__ import annotations

import operator
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from .backend import Device, get_device, to_numpy

DEFAULT_DTYPE = np.float32
_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextmanager
def no_grad() -> Iterator[None]:
    """Within this block, ops record no graph (evaluation, optimizer updates)."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


@contextmanager
def enable_grad() -> Iterator[None]:
    previous = is_grad_enabled()
    _state.grad_enabled = True
    try:
        yield
    finally:
        _state.grad_enabled = previous


def unbroadcast(grad: Any, shape: tuple) -> Any:
    """Sum ``grad`` over the axes that broadcasting added or stretched to reach its shape."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _check_devices(op: str, tensors: Sequence["Tensor"]) -> Device:
    device = tensors[0].device
    for other in tensors[1:]:
        if other.device is not device:
            raise RuntimeError(
                f"{op}: tensors are on different devices: {device} and {other.device}; "
                f"move one with .to()"
            )
    return device


class Function:
    """One differentiable op. Subclasses define ``forward`` and ``backward`` over arrays."""

    device: Device
    inputs: tuple["Tensor", ...]

    def forward(self, *arrays: Any, **params: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad: Any) -> tuple:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs: "Tensor", **params: Any) -> "Tensor":
        fn = cls()
        fn.device = _check_devices(cls.__name__.lower(), inputs)
        data = fn.forward(*(t.data for t in inputs), **params)
        out = Tensor._wrap(data, fn.device)
        # requires_grad first: it is an attribute, grad mode a thread-local lookup
        if any([t.requires_grad for t in inputs]) and is_grad_enabled():
            fn.inputs = inputs
            out.requires_grad = True
            out._ctx = fn
        return out


def _dtype_of(dtype: Any) -> np.dtype:
    if isinstance(dtype, str) and dtype in ("float", "double", "long", "int"):
        dtype = {"float": np.float32, "double": np.float64, "long": np.int64, "int": np.int32}[dtype]
    return np.dtype(dtype)


class Tensor:
    """An n-dimensional array on a device, with reverse-mode autograd."""

    __slots__ = ("data", "device", "requires_grad", "grad", "_ctx", "__weakref__")
    __array_priority__ = 1000  # so ndarray <op> Tensor defers to Tensor's reflected operators

    def __init__(self, data: Any, dtype: Any = None, device: "str | Device | None" = None,
                 requires_grad: bool = False) -> None:
        if isinstance(data, Tensor):
            device = data.device if device is None else device
            data = data.data
        elif dtype is None:  # floating-point data defaults to float32, whatever its precision
            kind = data.dtype.kind if hasattr(data, "dtype") else np.asarray(data).dtype.kind
            dtype = DEFAULT_DTYPE if kind == "f" else None
        self.device = get_device(device) if device is not None else _device_of_array(data)
        self.data = self.device.asarray(data, dtype=None if dtype is None else _dtype_of(dtype))
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got {self.data.dtype}")
        self.requires_grad = requires_grad
        self.grad: Tensor | None = None
        self._ctx: Function | None = None

    @classmethod
    def _wrap(cls, data: Any, device: Device) -> "Tensor":
        """A new graph-free tensor over an existing array of ``device`` (no copy, no checks)."""
        out = cls.__new__(cls)
        out.data, out.device, out.requires_grad, out.grad, out._ctx = data, device, False, None, None
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
    def T(self) -> "Tensor":
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
            raise ValueError(f"item(): only a one-element tensor converts to a Python number, shape is {self.shape}")
        return to_numpy(self.data).reshape(()).item()

    def tolist(self) -> Any:
        return to_numpy(self.data).tolist()

    def detach(self) -> "Tensor":
        """The same values, cut from the graph (shares memory)."""
        return Tensor._wrap(self.data, self.device)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def to(self, device: "str | Device | None" = None, dtype: Any = None) -> "Tensor":
        """A copy on ``device`` and/or of ``dtype`` (``self`` when nothing changes), tracked by autograd."""
        target = self.device if device is None else get_device(device)
        if target is self.device and (dtype is None or _dtype_of(dtype) == self.dtype):
            return self
        return ToDevice.apply(self, device=target, dtype=None if dtype is None else _dtype_of(dtype))

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        return self.to("cuda")

    def float(self) -> "Tensor":
        return self.to(dtype=np.float32)

    def double(self) -> "Tensor":
        return self.to(dtype=np.float64)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        values = np.array2string(to_numpy(self.data), precision=4, separator=", ", threshold=50)
        return f"tensor({values}, dtype={self.dtype}, device='{self.device}'{grad})"

    # ----------------------------------------------------------------- autograd
    def backward(self, gradient: "Tensor | Any | None" = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``, then free the graph."""
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no graph")
        xp = self.device.xp
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward(): a gradient must be given for a non-scalar output (shape {self.shape}); "
                    f"call .sum().backward() or pass gradient="
                )
            seed = xp.ones_like(self.data)
        else:
            seed = gradient.data if isinstance(gradient, Tensor) else self.device.asarray(gradient, self.dtype)
            if tuple(seed.shape) != self.shape:
                raise ValueError(f"backward(): gradient shape {tuple(seed.shape)} does not match output shape {self.shape}")

        order = self._topological_order()
        grads: dict[int, Any] = {id(self): seed}
        stored: set[int] = set()  # arrays already handed to a leaf: a second leaf gets a copy
        for node in reversed(order):
            grad = grads.pop(id(node), None)
            if grad is None:
                continue
            fn = node._ctx
            if fn is None:  # a leaf
                if node.grad is None:
                    if id(grad) in stored or grad is seed or not grad.flags.c_contiguous or grad.base is not None:
                        grad = xp.array(grad)  # own, contiguous, writable: optimizers update from it
                    stored.add(id(grad))
                    node.grad = Tensor._wrap(grad, node.device)
                else:
                    node.grad.data += grad  # in place, as PyTorch accumulates: no new array a step
                continue
            input_grads = fn.backward(grad)
            for parent, parent_grad in zip(fn.inputs, input_grads):
                if parent_grad is None or not parent.requires_grad:
                    continue
                parent_grad = unbroadcast(parent_grad, parent.shape)
                key = id(parent)
                grads[key] = parent_grad if key not in grads else grads[key] + parent_grad
            if not retain_graph:
                node._ctx = None

    def _topological_order(self) -> list["Tensor"]:
        order: list[Tensor] = []
        visited: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:  # iterative depth-first search: deep graphs must not hit the recursion limit
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            if node._ctx is not None:
                stack.extend((p, False) for p in node._ctx.inputs if p.requires_grad and id(p) not in visited)
        return order

    # ----------------------------------------------------------------- arithmetic
    def _operand(self, other: Any) -> "Tensor":
        if isinstance(other, Tensor):
            return other
        return Tensor._wrap(self.device.xp.asarray(other, dtype=self.dtype), self.device)

    def __add__(self, other: Any) -> "Tensor":
        return Add.apply(self, self._operand(other))

    def __radd__(self, other: Any) -> "Tensor":
        return Add.apply(self._operand(other), self)

    def __sub__(self, other: Any) -> "Tensor":
        return Sub.apply(self, self._operand(other))

    def __rsub__(self, other: Any) -> "Tensor":
        return Sub.apply(self._operand(other), self)

    def __mul__(self, other: Any) -> "Tensor":
        return Mul.apply(self, self._operand(other))

    def __rmul__(self, other: Any) -> "Tensor":
        return Mul.apply(self._operand(other), self)

    def __truediv__(self, other: Any) -> "Tensor":
        return Div.apply(self, self._operand(other))

    def __rtruediv__(self, other: Any) -> "Tensor":
        return Div.apply(self._operand(other), self)

    def __pow__(self, exponent: Any) -> "Tensor":
        return Pow.apply(self, self._operand(exponent))

    def __rpow__(self, base: Any) -> "Tensor":
        return Pow.apply(self._operand(base), self)

    def __neg__(self) -> "Tensor":
        return Neg.apply(self)

    def __matmul__(self, other: "Tensor") -> "Tensor":
        return MatMul.apply(self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        return MatMul.apply(self._operand(other), self)

    # comparisons give boolean tensors outside the graph
    def _compare(self, other: Any, op: str) -> "Tensor":
        other_data = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(getattr(self.data, op)(other_data), self.device)

    def __lt__(self, other: Any) -> "Tensor":
        return self._compare(other, "__lt__")

    def __le__(self, other: Any) -> "Tensor":
        return self._compare(other, "__le__")

    def __gt__(self, other: Any) -> "Tensor":
        return self._compare(other, "__gt__")

    def __ge__(self, other: Any) -> "Tensor":
        return self._compare(other, "__ge__")

    def eq(self, other: Any) -> "Tensor":
        return self._compare(other, "__eq__")

    # ----------------------------------------------------------------- elementwise functions
    def exp(self) -> "Tensor":
        return Exp.apply(self)

    def log(self) -> "Tensor":
        return Log.apply(self)

    def tanh(self) -> "Tensor":
        return Tanh.apply(self)

    def sigmoid(self) -> "Tensor":
        return Sigmoid.apply(self)

    def relu(self) -> "Tensor":
        return ReLU.apply(self)

    def abs(self) -> "Tensor":
        return Abs.apply(self)

    def sqrt(self) -> "Tensor":
        return self ** 0.5

    # ----------------------------------------------------------------- reductions
    def sum(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return Sum.apply(self, axis=_normalize_axes(axis, self.ndim), keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        axes = _normalize_axes(axis, self.ndim)
        count = self.numel() if axes is None else int(np.prod([self.shape[a] for a in axes]))
        return Sum.apply(self, axis=axes, keepdims=keepdims) * (1.0 / max(count, 1))

    def max(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return Max.apply(self, axis=_normalize_axes(axis, self.ndim), keepdims=keepdims)

    def argmax(self, axis: int | None = None) -> "Tensor":
        return Tensor._wrap(self.data.argmax(axis=axis), self.device)

    # ----------------------------------------------------------------- shape
    def reshape(self, *shape: Any) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape=shape)

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        start = start_dim % self.ndim if self.ndim else 0
        end = end_dim % self.ndim if self.ndim else 0
        shape = self.shape[:start] + (int(np.prod(self.shape[start:end + 1])),) + self.shape[end + 1:]
        return self.reshape(shape)

    def permute(self, *axes: Any) -> "Tensor":
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if sorted(a % self.ndim for a in axes) != list(range(self.ndim)):
            raise ValueError(f"permute: {axes} is not a permutation of the {self.ndim} axes of shape {self.shape}")
        return Permute.apply(self, axes=tuple(a % self.ndim for a in axes))

    def transpose(self, dim0: int = 0, dim1: int = 1) -> "Tensor":
        axes = list(range(self.ndim))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return self.permute(*axes)

    def __getitem__(self, index: Any) -> "Tensor":
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        return GetItem.apply(self, index=index)


def _device_of_array(data: Any) -> Device:
    return get_device("cpu") if isinstance(data, (np.ndarray, np.generic, list, tuple, int, float, bool)) \
        else get_device("cuda")


def _normalize_axes(axis: Any, ndim: int) -> tuple | None:
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(a % max(ndim, 1) for a in axes))


def tensor(data: Any, dtype: Any = None, device: "str | Device | None" = None,
           requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (floats become float32 unless ``dtype`` says otherwise)."""
    if isinstance(data, Tensor):
        data = data.data
    if hasattr(data, "copy"):
        data = data.copy()
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


# ===================================================================== elementwise ops
def _broadcasting(op: str, compute: Any, a: Any, b: Any) -> Any:
    """``compute(a, b)``; when the array library cannot broadcast the shapes, an error naming the op
    and both shapes. (Checked only on failure: checking first cost more than a small op itself.)"""
    try:
        return compute(a, b)
    except ValueError:
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ValueError(f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast together") from None
        raise


class ToDevice(Function):
    def forward(self, a, device, dtype):
        self.source, self.source_dtype = self.device, a.dtype
        self.device = device  # the output lives on the target device
        data = device.asarray(to_numpy(a) if device.xp is not self.source.xp else a)
        return data.astype(dtype) if dtype is not None else data.copy() if data is a else data

    def backward(self, grad):
        back = self.source.asarray(to_numpy(grad) if self.device.xp is not self.source.xp else grad)
        return (back.astype(self.source_dtype, copy=False),)


class Add(Function):
    def forward(self, a, b):
        return _broadcasting("add", operator.add, a, b)

    def backward(self, grad):
        return grad, grad


class Sub(Function):
    def forward(self, a, b):
        return _broadcasting("sub", operator.sub, a, b)

    def backward(self, grad):
        return grad, -grad


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return _broadcasting("mul", operator.mul, a, b)

    def backward(self, grad):
        return grad * self.b, grad * self.a


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return _broadcasting("div", operator.truediv, a, b)

    def backward(self, grad):
        grad_a = grad / self.b
        return grad_a, -grad_a * self.a / self.b


class Pow(Function):
    def forward(self, base, exponent):
        self.base, self.exponent = base, exponent
        self.out = _broadcasting("pow", operator.pow, base, exponent)
        return self.out

    def backward(self, grad):
        xp = self.device.xp
        grad_base = grad * self.exponent * self.base ** (self.exponent - 1)
        grad_exponent = None
        if self.inputs[1].requires_grad:
            with np.errstate(divide="ignore", invalid="ignore"):
                log_base = xp.where(self.base > 0, xp.log(xp.where(self.base > 0, self.base, 1)), 0)
            grad_exponent = grad * self.out * log_base
        return grad_base, grad_exponent


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, grad):
        return (-grad,)


class Exp(Function):
    def forward(self, a):
        self.out = self.device.xp.exp(a)
        return self.out

    def backward(self, grad):
        return (grad * self.out,)


class Log(Function):
    def forward(self, a):
        self.a = a
        return self.device.xp.log(a)

    def backward(self, grad):
        return (grad / self.a,)


class Tanh(Function):
    def forward(self, a):
        self.out = self.device.xp.tanh(a)
        return self.out

    def backward(self, grad):
        return (grad * (1 - self.out * self.out),)


class Sigmoid(Function):
    def forward(self, a):
        xp = self.device.xp
        # the two branches avoid overflow of exp for large |a|
        e = xp.exp(-xp.abs(a))
        self.out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return self.out

    def backward(self, grad):
        return (grad * self.out * (1 - self.out),)


class ReLU(Function):
    def forward(self, a):
        self.out = self.device.relu_forward(a)  # out > 0 exactly where a > 0: no separate mask
        return self.out

    def backward(self, grad):
        return (self.device.relu_backward(grad, self.out),)


class Abs(Function):
    def forward(self, a):
        self.sign = self.device.xp.sign(a)
        return self.device.xp.abs(a)

    def backward(self, grad):
        return (grad * self.sign,)


# ===================================================================== matmul
class MatMul(Function):
    """a @ b for 2-D operands, or batched over leading axes (both operands with the same batch
    shape, or the right one 2-D). Runs on the device's matmul kernel; backward uses its
    transposed forms (dA = dC·Bᵀ, dB = Aᵀ·dC) instead of materialising transposes."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul: both operands need at least 2 dimensions, got {tuple(a.shape)} @ {tuple(b.shape)}")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(
                f"matmul: shapes {tuple(a.shape)} @ {tuple(b.shape)}: inner dimensions "
                f"{a.shape[-1]} and {b.shape[-2]} differ")
        if b.ndim > 2 and a.shape[:-2] != b.shape[:-2]:
            raise ValueError(f"matmul: batch shapes of {tuple(a.shape)} and {tuple(b.shape)} differ")
        xp = self.device.xp
        self.a, self.b = xp.ascontiguousarray(a), xp.ascontiguousarray(b)
        return self._product(self.a, self.b, False, False)

    def _product(self, a, b, trans_a, trans_b):
        """op(a) @ op(b) with any leading batch axes folded into one (or into the rows)."""
        kernel = self.device.matmul
        if b.ndim == 2:
            rows = a.reshape(-1, a.shape[-1])
            if not trans_a:
                out = kernel(rows, b, False, trans_b)
                return out.reshape(a.shape[:-1] + out.shape[-1:])
        batch = a.shape[:-2]
        a3 = a.reshape((-1,) + a.shape[-2:])
        b3 = b.reshape((-1,) + b.shape[-2:]) if b.ndim > 2 else b
        out = kernel(a3, b3, trans_a, trans_b)
        return out.reshape(batch + out.shape[-2:])

    def backward(self, grad):
        xp = self.device.xp
        grad = xp.ascontiguousarray(grad)
        grad_a = grad_b = None
        if self.inputs[0].requires_grad:
            grad_a = self._product(grad, self.b, False, True)
        if self.inputs[1].requires_grad:
            if self.b.ndim == 2:  # fold the batch into rows: dB = Σ_batch Aᵀ·dC as one GEMM
                a2 = self.a.reshape(-1, self.a.shape[-1])
                grad_b = self.device.matmul(a2, grad.reshape(-1, grad.shape[-1]), True, False)
            else:
                grad_b = self._product(self.a, grad, True, False)
        return grad_a, grad_b


# ===================================================================== reductions
class Sum(Function):
    def forward(self, a, axis, keepdims):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, grad):
        if self.axis is not None and not self.keepdims:
            grad = self.device.xp.expand_dims(grad, self.axis)
        return (self.device.xp.broadcast_to(grad, self.shape),)


class Max(Function):
    """Max over axes; the gradient is split evenly between tied maxima (as PyTorch's amax)."""

    def forward(self, a, axis, keepdims):
        self.a, self.axis, self.keepdims = a, axis, keepdims
        self.out = a.max(axis=axis, keepdims=True)
        if keepdims:
            return self.out
        return self.out.reshape(()) if axis is None else self.out.squeeze(axis=axis)

    def backward(self, grad):
        if not self.keepdims:
            grad = grad.reshape(self.out.shape)
        winners = (self.a == self.out)
        return (winners * (grad / winners.sum(axis=self.axis, keepdims=True)),)


# ===================================================================== shape ops
class Reshape(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {tuple(a.shape)} "
                             f"({a.size} elements) into {tuple(shape)}") from None

    def backward(self, grad):
        return (grad.reshape(self.shape),)


class Permute(Function):
    def forward(self, a, axes):
        self.inverse = tuple(np.argsort(axes))
        return a.transpose(axes)

    def backward(self, grad):
        return (grad.transpose(self.inverse),)


class GetItem(Function):
    def forward(self, a, index):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        return a[index]

    def backward(self, grad):
        xp = self.device.xp
        full = xp.zeros(self.shape, dtype=grad.dtype)
        if _is_basic_index(self.index):
            full[self.index] = grad  # slices pick each element at most once
        elif xp is np:
            np.add.at(full, self.index, grad)  # fancy indexing may pick an element twice
        else:
            import cupyx

            cupyx.scatter_add(full, self.index, grad)
        return (full,)


def _is_basic_index(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice)) for p in parts)


class Concat(Function):
    def forward(self, *arrays, axis):
        self.axis = axis
        self.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        return self.device.xp.concatenate(arrays, axis=axis)

    def backward(self, grad):
        return tuple(self.device.xp.split(grad, self.bounds, axis=self.axis))


def cat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Concatenate tensors along an existing axis."""
    if not tensors:
        raise ValueError("cat: needs at least one tensor")
    ndim = tensors[0].ndim
    axis = axis % ndim
    for t in tensors[1:]:
        if t.ndim != ndim or t.shape[:axis] + t.shape[axis + 1:] != tensors[0].shape[:axis] + tensors[0].shape[axis + 1:]:
            raise ValueError(f"cat: shapes {tensors[0].shape} and {t.shape} differ outside axis {axis}")
    return Concat.apply(*tensors, axis=axis)


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Stack tensors of equal shape along a new axis."""
    return cat([t.reshape(t.shape[:axis % (t.ndim + 1)] + (1,) + t.shape[axis % (t.ndim + 1):]) for t in tensors],
               axis=axis)
