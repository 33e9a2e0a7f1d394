"""The differentiable ops behind Tensor's methods, each a Function over raw arrays.

Elementwise arithmetic and functions (``+ - * / **``, exp, log, tanh, sigmoid, relu, abs) with
NumPy broadcasting, device moves, matmul (PyTorch's semantics, on the device's matmul kernel), the
reductions sum and max, and the shape ops reshape, permute, indexing and concatenation. Every
``forward(*arrays, **params)`` returns the output array and saves what ``backward(grad)`` needs;
``backward`` returns one gradient per input in the output's broadcast shape (the engine reduces
it to the input's shape). ``fastnet.tensor`` builds the Tensor methods on these; the ops of the
neural-network layers live in ``fastnet.functional``.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from .autograd import Function

__all__ = [
    "Abs",
    "Add",
    "Concat",
    "Div",
    "Exp",
    "GetItem",
    "Log",
    "MatMul",
    "Max",
    "MaxDim",
    "Mul",
    "Neg",
    "Permute",
    "Pow",
    "ReLU",
    "Reshape",
    "Sigmoid",
    "Sub",
    "Sum",
    "Tanh",
    "ToDevice",
]


# ===================================================================== elementwise ops
def _broadcasting(op: str, compute: Any, a: Any, b: Any) -> Any:
    """``compute(a, b)``; when the array library cannot broadcast the shapes, an error naming the op
    and both shapes. (Checked only on failure: checking first cost more than a small op itself.)"""
    try:
        return compute(a, b)
    except ValueError:
        _check_broadcast(op, a, b)
        raise


def _check_broadcast(op: str, a: Any, b: Any) -> None:
    """Raise the error naming ``op`` and both shapes when they cannot be broadcast together."""
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast together"
        ) from None


class ToDevice(Function):
    saves_inputs = saves_output = False

    def forward(self, a, device, dtype):
        self.source, self.source_dtype = self.device, a.dtype
        self.device = device  # the output lives on the target device
        data = _moved(a, self.source, device)
        return data.astype(dtype) if dtype is not None else data.copy() if data is a else data

    def backward(self, grad):
        back = _moved(grad, self.device, self.source)
        return (back.astype(self.source_dtype, copy=False),)


def _moved(array, source, target):
    """``array`` of device ``source`` on device ``target``: through the host, each side's copy
    counted (a GPU's device-to-host copy waits for its queue)."""
    return array if target is source else target.upload(source.to_host(array))


class Add(Function):
    saves_inputs = saves_output = False

    def forward(self, a, b):
        try:  # inline, not through _broadcasting: the hottest ops
            return a + b
        except ValueError:
            _check_broadcast("add", a, b)
            raise

    def backward(self, grad):
        return grad, grad


class Sub(Function):
    saves_inputs = saves_output = False

    def forward(self, a, b):
        try:  # inline, not through _broadcasting: the hottest ops
            return a - b
        except ValueError:
            _check_broadcast("sub", a, b)
            raise

    def backward(self, grad):
        return grad, -grad


class Mul(Function):
    saves_output = False

    def forward(self, a, b):
        self.a, self.b = a, b
        try:  # inline, not through _broadcasting: the hottest ops
            return a * b
        except ValueError:
            _check_broadcast("mul", a, b)
            raise

    def backward(self, grad):
        return grad * self.b, grad * self.a


class Div(Function):
    saves_output = False

    def forward(self, a, b):
        self.a, self.b = a, b
        try:  # inline, not through _broadcasting: the hottest ops
            return a / b
        except ValueError:
            _check_broadcast("div", a, b)
            raise

    def backward(self, grad):
        grad_a = grad / self.b
        return grad_a, -grad_a * self.a / self.b


class Pow(Function):
    """base ** exponent. The gradients follow PyTorch where the calculus has no value:
    d/dbase is 0 wherever the exponent is 0 (also at base 0), and d/dexponent is 0 at base 0
    with a non-negative exponent (NaN for a negative base, as log is)."""

    def forward(self, base, exponent):
        self.base, self.exponent = base, exponent
        self.out = _broadcasting("pow", operator.pow, base, exponent)
        return self.out

    def backward(self, grad):
        xp = self.device.xp
        base, exponent = self.base, self.exponent
        grad_base = grad_exponent = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.inputs[0].requires_grad:
                slope = exponent * base ** (exponent - 1)
                grad_base = grad * xp.where(exponent == 0, 0, slope).astype(grad.dtype, copy=False)
            if self.inputs[1].requires_grad:
                log_term = self.out * xp.log(base)
                grad_exponent = grad * xp.where((base == 0) & (exponent >= 0), 0, log_term).astype(
                    grad.dtype, copy=False
                )
        return grad_base, grad_exponent


class Neg(Function):
    saves_inputs = saves_output = False

    def forward(self, a):
        return -a

    def backward(self, grad):
        return (-grad,)


class Exp(Function):
    saves_inputs = False  # backward reads only the output

    def forward(self, a):
        self.out = self.device.xp.exp(a)
        return self.out

    def backward(self, grad):
        return (grad * self.out,)


class Log(Function):
    saves_output = False

    def forward(self, a):
        self.a = a
        return self.device.xp.log(a)

    def backward(self, grad):
        return (grad / self.a,)


class Tanh(Function):
    saves_inputs = False  # backward reads only the output

    def forward(self, a):
        self.out = self.device.xp.tanh(a)
        return self.out

    def backward(self, grad):
        return (grad * (1 - self.out * self.out),)


class Sigmoid(Function):
    saves_inputs = False  # backward reads only the output

    def forward(self, a):
        xp = self.device.xp
        # the two branches avoid overflow of exp for large |a|
        e = xp.exp(-xp.abs(a))
        self.out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return self.out

    def backward(self, grad):
        return (grad * self.out * (1 - self.out),)


def relu_grad_of_sum(device: Any, first: Any, second: Any, out: Any) -> Any:
    """(first + second)·[out > 0], the two gradients of a ReLU's output added in the mask's
    own pass (two dtypes are added first, as NumPy promotes them)."""
    if first.dtype != second.dtype:
        return device.relu_backward(first + second, out)
    return device.relu_backward(first, out, dy_other=second)


class ReLU(Function):
    saves_inputs = False  # backward reads only the output

    def forward(self, a):
        self.out = self.device.relu_forward(a)  # out > 0 exactly where a > 0: no separate mask
        return self.out

    def backward(self, grad):
        return (self.device.relu_backward(grad, self.out),)

    def backward_of_sum(self, first, second):
        return (relu_grad_of_sum(self.device, first, second, self.out),)


class Abs(Function):
    saves_inputs = saves_output = False  # keeps its own sign array

    def forward(self, a):
        self.sign = self.device.xp.sign(a)
        return self.device.xp.abs(a)

    def backward(self, grad):
        return (grad * self.sign,)


# ===================================================================== matmul
class MatMul(Function):
    """a @ b with PyTorch's (NumPy's) semantics, on the device's matmul kernel.

    Operands: a 1-D ``a`` (k,) is the row (1, k) and a 1-D ``b`` (k,) the column (k, 1), that
    axis dropped from the result (vector · vector is 0-d); the batch axes before the last two
    broadcast ((2, 1, 3, 4) @ (5, 4, 6) -> (2, 5, 3, 6)). The hot forms take no copy: 2-D
    operands, equal batch shapes, and any batch times a 2-D ``b`` (the batch folded into the
    rows). Other batch shapes are broadcast into contiguous copies first. Backward uses the
    kernel's transposed forms (dA = dC·Bᵀ, dB = Aᵀ·dC) instead of materialising transposes; the
    engine sums each gradient back over the batch axes its operand was broadcast along.
    Integer operands (no gradient) go through the array library's matmul: the kernel is
    float-only."""

    saves_output = False
    vector_a = vector_b = False  # whether a 1-D operand was made a matrix

    def forward(self, a, b):
        shapes = a.shape, b.shape
        vectors = a.ndim < 2 or b.ndim < 2
        if vectors:
            a, b = self._matrices(a, b)
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(
                f"matmul: shapes {shapes[0]} @ {shapes[1]}: inner dimensions "
                f"{a.shape[-1]} and {b.shape[-2]} differ"
            )
        xp = self.device.xp
        if b.ndim > 2 and a.shape[:-2] != b.shape[:-2]:
            batch = _broadcast_batch(a.shape[:-2], b.shape[:-2], shapes)
            a = xp.broadcast_to(a, batch + a.shape[-2:])
            b = xp.broadcast_to(b, batch + b.shape[-2:])
        if a.dtype.kind != "f":
            out = xp.matmul(a, b)
        else:
            self.a, self.b = xp.ascontiguousarray(a), xp.ascontiguousarray(b)
            self.empty = a.size == 0 or b.size == 0
            if self.empty:  # an empty sum is 0; the kernels take no zero-size operand
                out = xp.zeros(a.shape[:-1] + b.shape[-1:], dtype=a.dtype)
            else:
                out = self._product(self.a, self.b, False, False)
        return self._vectors_dropped(out) if vectors else out

    def _matrices(self, a, b):
        """1-D operands as a row (``a``) or a column (``b``) matrix, views of the vectors."""
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(
                f"matmul: both operands need at least 1 dimension, got shapes {a.shape} @ {b.shape}"
            )
        if a.ndim == 1:
            self.vector_a, a = True, a[None, :]
        if b.ndim == 1:
            self.vector_b, b = True, b[:, None]
        return a, b

    def _vectors_dropped(self, out):
        """The product without the axes that 1-D operands gained."""
        if self.vector_a:
            out = out[..., 0, :]
        return out[..., 0] if self.vector_b else out

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
        if self.empty:  # every product term has an empty factor: both gradients are 0
            return tuple(xp.zeros(t.shape, grad.dtype) for t in self.inputs)
        vectors = self.vector_a or self.vector_b
        if vectors:  # back to the product's matrix shape (a's axis last: grad may be a scalar)
            grad = grad[..., None] if self.vector_b else grad
            grad = grad[..., None, :] if self.vector_a else grad
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
        if vectors:  # the axes the vectors gained
            grad_a = grad_a[..., 0, :] if self.vector_a and grad_a is not None else grad_a
            grad_b = grad_b[..., 0] if self.vector_b and grad_b is not None else grad_b
        return grad_a, grad_b


def _broadcast_batch(batch_a: tuple, batch_b: tuple, shapes: tuple) -> tuple:
    """The broadcast of two batch shapes; an error naming both operands' shapes if none."""
    try:
        return tuple(np.broadcast_shapes(batch_a, batch_b))
    except ValueError:
        raise ValueError(
            f"matmul: shapes {shapes[0]} @ {shapes[1]}: batch dimensions {batch_a} and "
            f"{batch_b} cannot be broadcast together"
        ) from None


# ===================================================================== reductions
class Sum(Function):
    saves_inputs = saves_output = False

    def forward(self, a, axis, keepdims):
        self.shape, self.size, self.axis, self.keepdims = a.shape, a.size, axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, grad):
        xp = self.device.xp
        if self.axis is not None and not self.keepdims:
            grad = xp.expand_dims(grad, self.axis)
        if self.size <= _FILLED_GRAD_SIZE:  # filled: broadcast_to costs more than a small op
            out = xp.empty(self.shape, grad.dtype)
            out[...] = grad
            return (out,)
        return (xp.broadcast_to(grad, self.shape),)


# Up to this many values, Sum's gradient is a new array rather than a read-only broadcast view.
_FILLED_GRAD_SIZE = 4096


class Max(Function):
    """Max (or min, with ``smallest``) over axes; the gradient is split evenly between tied
    extremes (as PyTorch's amax and its full ``max()``)."""

    def forward(self, a, axis, keepdims, smallest=False):
        self.a, self.axis, self.keepdims = a, axis, keepdims
        self.out = a.min(axis=axis, keepdims=True) if smallest else a.max(axis=axis, keepdims=True)
        if keepdims:
            return self.out
        return self.out.reshape(()) if axis is None else self.out.squeeze(axis=axis)

    def backward(self, grad):
        if not self.keepdims:
            grad = grad.reshape(self.out.shape)
        winners = (self.a == self.out).astype(grad.dtype)  # the gradient keeps the input's dtype
        return (winners * (grad / winners.sum(axis=self.axis, keepdims=True)),)


class MaxDim(Function):
    """The values at ``picked`` (the argmax or argmin along ``axis``, with keepdims, which the
    caller also returns as the indices); the gradient goes to those elements alone (as
    PyTorch's ``max(dim)``, unlike amax)."""

    saves_inputs = saves_output = False  # keeps only the indices

    def forward(self, a, axis, keepdims, picked):
        self.shape, self.axis, self.keepdims, self.picked = a.shape, axis, keepdims, picked
        values = self.device.xp.take_along_axis(a, picked, axis=axis)
        return values if keepdims else values.squeeze(axis=axis)

    def backward(self, grad):
        xp = self.device.xp
        if not self.keepdims:
            grad = xp.expand_dims(grad, self.axis)
        along = [1] * len(self.shape)
        along[self.axis] = self.shape[self.axis]
        positions = xp.arange(self.shape[self.axis]).reshape(along)
        return ((positions == self.picked).astype(grad.dtype) * grad,)


# ===================================================================== shape ops
class Reshape(Function):
    saves_inputs = saves_output = False

    def forward(self, a, shape):
        self.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape a tensor of shape {tuple(a.shape)} "
                f"({a.size} elements) into {tuple(shape)}"
            ) from None

    def backward(self, grad):
        return (grad.reshape(self.shape),)


class Permute(Function):
    saves_inputs = saves_output = False

    def forward(self, a, axes):
        self.inverse = tuple(np.argsort(axes))
        return a.transpose(axes)

    def backward(self, grad):
        return (grad.transpose(self.inverse),)


class GetItem(Function):
    saves_inputs = saves_output = False

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
    saves_inputs = saves_output = False

    def forward(self, *arrays, axis):
        self.axis = axis
        self.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        return self.device.xp.concatenate(arrays, axis=axis)

    def backward(self, grad):
        return tuple(self.device.xp.split(grad, self.bounds, axis=self.axis))
