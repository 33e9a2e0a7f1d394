"""PyTorch's top-level functions that mirror a Tensor method: ``fastnet.matmul(a, b)`` is
``a @ b``, ``fastnet.sin(x)`` is ``x.sin()``, ``fastnet.split(x, 2, dim=1)`` is
``x.split(2, dim=1)``, and so on for the elementwise math, arithmetic, comparisons, shape ops,
softmax and norms. Each refuses a non-tensor input (a NumPy array has methods of several of these
names with other semantics) and otherwise calls the method, so the semantics and gradients live in
one place. Also the conversions ``from_numpy`` (shares the array's memory and keeps its dtype),
``as_tensor`` (no copy where none is needed) and the test ``is_tensor``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .autograd import not_a_tensor
from .backend import Device, get_device
from .tensor import Tensor, cat

__all__ = [
    "abs", "absolute", "acos", "acosh", "add", "all", "allclose", "any", "as_tensor", "asin",
    "asinh", "atan", "atanh", "bmm", "broadcast_shapes", "broadcast_tensors", "broadcast_to",
    "ceil", "chunk", "clone", "concat", "concatenate", "cos", "cosh",
    "count_nonzero", "div", "divide", "dot", "eq", "equal", "erf", "erfc", "exp", "exp2", "expm1",
    "flatten", "flip", "floor", "floor_divide", "fmod", "frac", "from_numpy", "ge", "greater",
    "greater_equal", "gt", "hstack", "is_floating_point", "is_tensor", "isclose", "isfinite",
    "isinf", "isnan", "le", "less", "less_equal", "log", "log10", "log1p", "log2", "log_softmax",
    "logical_and", "logical_not", "logical_or", "logical_xor", "lt", "matmul", "mm", "movedim",
    "moveaxis", "mul", "mv", "outer", "multiply", "narrow", "ne", "neg", "negative", "norm",
    "not_equal",
    "numel", "permute", "pow", "reciprocal", "relu", "remainder", "reshape", "round", "rsqrt",
    "sigmoid", "sign", "sin", "sinh", "softmax", "split", "sqrt", "square", "squeeze", "sub",
    "subtract", "swapaxes", "swapdims", "t", "tan", "tanh", "tensor_argument", "transpose",
    "true_divide", "trunc", "unbind", "unsqueeze", "vstack",
]  # fmt: skip


def tensor_argument(op: str, value: Any) -> Tensor:
    """``value`` when it is a Tensor; a TypeError naming ``op`` otherwise (a NumPy array, a
    list)."""
    if not isinstance(value, Tensor):
        raise not_a_tensor(op, value)
    return value


def _mirror(name: str, method: str | None = None) -> Callable[..., Any]:
    """``fastnet.<name>(input, *args, **kwargs)``: ``input.<method>(*args, **kwargs)``."""
    method = method or name

    def function(input: Tensor, *args: Any, **kwargs: Any) -> Any:
        return getattr(tensor_argument(name, input), method)(*args, **kwargs)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"``input.{method}(...)``: see ``fastnet.Tensor.{method}``."
    return function


# ----------------------------------------------------------------- elementwise math
abs, absolute, neg, negative = _mirror("abs"), _mirror("absolute"), _mirror("neg"), _mirror("neg")
exp, exp2, expm1 = _mirror("exp"), _mirror("exp2"), _mirror("expm1")
log, log2, log10, log1p = _mirror("log"), _mirror("log2"), _mirror("log10"), _mirror("log1p")
sqrt, rsqrt, square = _mirror("sqrt"), _mirror("rsqrt"), _mirror("square")
reciprocal, sign, frac = _mirror("reciprocal"), _mirror("sign"), _mirror("frac")
floor, ceil, trunc, round = _mirror("floor"), _mirror("ceil"), _mirror("trunc"), _mirror("round")
sin, cos, tan = _mirror("sin"), _mirror("cos"), _mirror("tan")
sinh, cosh = _mirror("sinh"), _mirror("cosh")
asin, acos, atan = _mirror("asin"), _mirror("acos"), _mirror("atan")
asinh, acosh, atanh = _mirror("asinh"), _mirror("acosh"), _mirror("atanh")
erf, erfc = _mirror("erf"), _mirror("erfc")
sigmoid, tanh, relu = _mirror("sigmoid"), _mirror("tanh"), _mirror("relu")
isnan, isinf, isfinite = _mirror("isnan"), _mirror("isinf"), _mirror("isfinite")

# ----------------------------------------------------------------- arithmetic, comparisons
add, sub, subtract = _mirror("add"), _mirror("sub"), _mirror("sub")
mul, multiply = _mirror("mul"), _mirror("mul")
div, divide, true_divide = _mirror("div"), _mirror("div"), _mirror("true_divide")
floor_divide, remainder, fmod = _mirror("floor_divide"), _mirror("remainder"), _mirror("fmod")
eq, ne, not_equal = _mirror("eq"), _mirror("ne"), _mirror("ne")
lt, le, gt, ge = _mirror("lt"), _mirror("le"), _mirror("gt"), _mirror("ge")
less, less_equal, greater, greater_equal = lt, le, gt, ge
isclose, allclose, equal = _mirror("isclose"), _mirror("allclose"), _mirror("equal")
logical_and, logical_or = _mirror("logical_and"), _mirror("logical_or")
logical_xor, logical_not = _mirror("logical_xor"), _mirror("logical_not")


def pow(input: Any, exponent: Any) -> Tensor:
    """``input ** exponent``; either may be a number, not both."""
    if isinstance(input, Tensor):
        return input**exponent
    return input ** tensor_argument("pow", exponent)


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """The matrix product with PyTorch's semantics (1-D operands, broadcast batch axes)."""
    return tensor_argument("matmul", input) @ tensor_argument("matmul", other)


# ----------------------------------------------------------------- reductions, softmax, norms
all, any, count_nonzero = _mirror("all"), _mirror("any"), _mirror("count_nonzero")
softmax, log_softmax, norm = _mirror("softmax"), _mirror("log_softmax"), _mirror("norm")

# ----------------------------------------------------------------- shape
squeeze, unsqueeze, flip = _mirror("squeeze"), _mirror("unsqueeze"), _mirror("flip")
clone, reshape, flatten = _mirror("clone"), _mirror("reshape"), _mirror("flatten")
t, transpose, permute = _mirror("t"), _mirror("transpose"), _mirror("permute")
swapaxes, swapdims = _mirror("swapaxes"), _mirror("swapdims")
movedim, moveaxis = _mirror("movedim"), _mirror("movedim")
narrow, chunk, split, unbind = (
    _mirror("narrow"),
    _mirror("chunk"),
    _mirror("split"),
    _mirror("unbind"),
)
numel, is_floating_point = _mirror("numel"), _mirror("is_floating_point")
broadcast_to = _mirror("broadcast_to")
mm, bmm, mv = _mirror("mm"), _mirror("bmm"), _mirror("mv")
dot, outer = _mirror("dot"), _mirror("outer")


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    return tuple(np.broadcast_shapes(*(tuple(s) for s in shapes)))


def broadcast_tensors(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The tensors expanded to their common broadcast shape (views; gradients sum back)."""
    shape = broadcast_shapes(*(tensor_argument("broadcast_tensors", t).shape for t in tensors))
    return tuple(t.expand(shape) for t in tensors)


concat = concatenate = cat


def hstack(tensors: Sequence[Tensor]) -> Tensor:
    """Join along dimension 1 (dimension 0 for 1-D tensors)."""
    return cat(tensors, 0 if tensors and tensors[0].ndim == 1 else 1)


def vstack(tensors: Sequence[Tensor]) -> Tensor:
    """Join along dimension 0, 1-D (and 0-d) tensors taken as rows."""
    return cat([t.reshape(1, -1) if t.ndim < 2 else t for t in tensors], 0)


# ----------------------------------------------------------------- conversions
def is_tensor(obj: Any) -> bool:
    return isinstance(obj, Tensor)


def from_numpy(array: np.ndarray) -> Tensor:
    """A cpu tensor over ``array`` itself: same memory (a change to one shows in the other) and
    same dtype (float64 stays float64, unlike ``fastnet.tensor``)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy(): expected np.ndarray (got {type(array).__name__})")
    return Tensor._wrap(array, get_device("cpu"))


def as_tensor(data: Any, dtype: Any = None, device: str | Device | None = None) -> Tensor:
    """``data`` as a tensor, sharing memory where it can: a tensor is returned as is (or
    converted by ``to``); a NumPy array keeps its dtype; other data is read as
    ``fastnet.tensor`` reads it."""
    if isinstance(data, Tensor):
        return data.to(device=device, dtype=dtype)
    if isinstance(data, np.ndarray) and dtype is None:
        dtype = data.dtype
    return Tensor(data, dtype=dtype, device=device)
