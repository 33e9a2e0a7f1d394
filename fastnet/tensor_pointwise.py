"""The elementwise methods of :class:`~fastnet.tensor.Tensor`: the math functions (exp, log, sin,
sqrt, erf, floor, ...), the arithmetic methods with PyTorch's keywords (``add(other, alpha=)``,
``div(other, rounding_mode=)``, floor division and remainder with PyTorch's sign conventions),
their in-place forms (``add_``, ``exp_``, ...), comparisons, logical and bitwise ops, and the
softmax and norm methods.

:class:`Pointwise` is a mixin of Tensor, in a module of its own so that tensor.py stays one
concern. Dtypes follow PyTorch: a math function of an integer or bool tensor gives float32 (the
float one of the integer, since ints carry no gradient), while abs, neg, sign, square and the
rounding functions keep integers integral. The Functions live in :mod:`fastnet.tensor_ops`
(exp, log, tanh, sigmoid, relu, abs, neg) and :mod:`fastnet.pointwise_ops` (the rest).

In-place methods change the tensor's values and bump its version (so backward through an op
that saved it raises). They are not recorded by autograd: while grad mode is on and the tensor
or an operand requires a gradient they raise, as ``copy_`` and ``masked_fill_`` do; write
``x = x.add(y)`` there instead (``x += y`` does this by itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .autograd import is_grad_enabled
from .dtypes import DEFAULT_DTYPE
from .pointwise_ops import UNARY, Remainder, RoundingDiv
from .tensor_ops import Abs, Add, Div, Exp, Log, Mul, Neg, Pow, ReLU, Sigmoid, Sub, Tanh

if TYPE_CHECKING:
    from .tensor import Tensor

__all__ = ["Pointwise"]

_KEEP_INTEGERS = frozenset({"sign", "floor", "ceil", "round", "trunc", "square"})
_ROUNDING_MODES = (None, "floor", "trunc")


class Pointwise:
    """Elementwise methods of Tensor (which holds ``data``, ``device`` and the shape)."""

    __slots__ = ()

    # ----------------------------------------------------------------- unary math
    def _unary(self: Tensor, name: str) -> Tensor:
        if self.dtype.kind == "f":
            return UNARY[name].apply(self)
        if name in _KEEP_INTEGERS:  # ints carry no gradient: plain arrays suffice
            data = self.data * self.data if name == "square" else self.data.copy()
            return self._wrap(self.device.xp.sign(data) if name == "sign" else data, self.device)
        return UNARY[name].apply(self.to(dtype=DEFAULT_DTYPE))

    def _floating(self: Tensor) -> Tensor:
        return self if self.dtype.kind == "f" else self.to(dtype=DEFAULT_DTYPE)

    def exp(self: Tensor) -> Tensor:
        return Exp.apply(self._floating())

    def log(self: Tensor) -> Tensor:
        return Log.apply(self._floating())

    def tanh(self: Tensor) -> Tensor:
        return Tanh.apply(self._floating())

    def sigmoid(self: Tensor) -> Tensor:
        return Sigmoid.apply(self._floating())

    def relu(self: Tensor) -> Tensor:
        if self.dtype.kind != "f":
            return self._wrap(self.device.xp.maximum(self.data, 0), self.device)
        return ReLU.apply(self)

    def abs(self: Tensor) -> Tensor:
        return Abs.apply(self)

    def neg(self: Tensor) -> Tensor:
        return Neg.apply(self)

    def sqrt(self: Tensor) -> Tensor:
        return self._unary("sqrt")

    def rsqrt(self: Tensor) -> Tensor:
        return self._unary("rsqrt")

    def square(self: Tensor) -> Tensor:
        return self._unary("square")

    def reciprocal(self: Tensor) -> Tensor:
        return self._unary("reciprocal")

    def exp2(self: Tensor) -> Tensor:
        return self._unary("exp2")

    def expm1(self: Tensor) -> Tensor:
        return self._unary("expm1")

    def log2(self: Tensor) -> Tensor:
        return self._unary("log2")

    def log10(self: Tensor) -> Tensor:
        return self._unary("log10")

    def log1p(self: Tensor) -> Tensor:
        return self._unary("log1p")

    def sin(self: Tensor) -> Tensor:
        return self._unary("sin")

    def cos(self: Tensor) -> Tensor:
        return self._unary("cos")

    def tan(self: Tensor) -> Tensor:
        return self._unary("tan")

    def sinh(self: Tensor) -> Tensor:
        return self._unary("sinh")

    def cosh(self: Tensor) -> Tensor:
        return self._unary("cosh")

    def asin(self: Tensor) -> Tensor:
        return self._unary("asin")

    def acos(self: Tensor) -> Tensor:
        return self._unary("acos")

    def atan(self: Tensor) -> Tensor:
        return self._unary("atan")

    def asinh(self: Tensor) -> Tensor:
        return self._unary("asinh")

    def acosh(self: Tensor) -> Tensor:
        return self._unary("acosh")

    def atanh(self: Tensor) -> Tensor:
        return self._unary("atanh")

    def erf(self: Tensor) -> Tensor:
        return self._unary("erf")

    def erfc(self: Tensor) -> Tensor:
        return self._unary("erfc")

    def sign(self: Tensor) -> Tensor:
        """-1, 0 or 1 by the sign of each value; a zero gradient (as PyTorch's)."""
        return self._unary("sign")

    def floor(self: Tensor) -> Tensor:
        return self._unary("floor")

    def ceil(self: Tensor) -> Tensor:
        return self._unary("ceil")

    def trunc(self: Tensor) -> Tensor:
        return self._unary("trunc")

    def frac(self: Tensor) -> Tensor:
        """``x - trunc(x)`` (the sign of x); the gradient passes through."""
        return self._unary("frac")

    def round(self: Tensor, *, decimals: int = 0) -> Tensor:
        """Each value rounded half to even (to ``decimals`` places, as ``round(x·10^d)/10^d``);
        a zero gradient."""
        if decimals == 0:
            return self._unary("round")
        scale = 10.0**decimals
        return (self * scale)._unary("round") / scale

    negative, absolute, fix, arccos, arcsin, arctan = neg, abs, trunc, acos, asin, atan
    arccosh, arcsinh, arctanh = acosh, asinh, atanh

    def __abs__(self: Tensor) -> Tensor:
        return self.abs()

    def __pos__(self: Tensor) -> Tensor:
        return self

    def isnan(self: Tensor) -> Tensor:
        return self._wrap(self.device.xp.isnan(self.data), self.device)

    def isinf(self: Tensor) -> Tensor:
        return self._wrap(self.device.xp.isinf(self.data), self.device)

    def isfinite(self: Tensor) -> Tensor:
        return self._wrap(self.device.xp.isfinite(self.data), self.device)

    # ----------------------------------------------------------------- binary arithmetic
    def add(self: Tensor, other: Any, *, alpha: Any = 1) -> Tensor:
        """``self + alpha · other``."""
        return self + (other if alpha == 1 else other * alpha)

    def sub(self: Tensor, other: Any, *, alpha: Any = 1) -> Tensor:
        """``self - alpha · other``."""
        return self - (other if alpha == 1 else other * alpha)

    subtract = sub

    def mul(self: Tensor, other: Any) -> Tensor:
        return self * other

    multiply = mul

    def div(self: Tensor, other: Any, *, rounding_mode: str | None = None) -> Tensor:
        """True division, or rounded toward −∞ (``"floor"``) or 0 (``"trunc"``); a rounded
        quotient of integers stays integral and its gradient is zero, as in PyTorch."""
        if rounding_mode not in _ROUNDING_MODES:
            raise ValueError(
                f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found "
                f"{rounding_mode!r}"
            )
        if rounding_mode is None:
            return self / other
        from .tensor import _promote

        return RoundingDiv.apply(*_promote(self, other), mode=rounding_mode)

    divide = div

    def true_divide(self: Tensor, other: Any) -> Tensor:
        return self / other

    def floor_divide(self: Tensor, other: Any) -> Tensor:
        return self.div(other, rounding_mode="floor")

    def __floordiv__(self: Tensor, other: Any) -> Tensor:
        return self.div(other, rounding_mode="floor")

    def __rfloordiv__(self: Tensor, other: Any) -> Tensor:
        from .tensor import _promote

        return RoundingDiv.apply(*_promote(other, self), mode="floor")

    def remainder(self: Tensor, other: Any) -> Tensor:
        """``self - other · floor(self / other)``: the result takes the sign of ``other``."""
        from .tensor import _promote

        return Remainder.apply(*_promote(self, other), truncated=False)

    def fmod(self: Tensor, other: Any) -> Tensor:
        """``self - other · trunc(self / other)``: the result takes the sign of ``self``."""
        from .tensor import _promote

        return Remainder.apply(*_promote(self, other), truncated=True)

    __mod__ = remainder

    def __rmod__(self: Tensor, other: Any) -> Tensor:
        from .tensor import _promote

        return Remainder.apply(*_promote(other, self), truncated=False)

    def pow(self: Tensor, exponent: Any) -> Tensor:
        return self**exponent

    def lerp(self: Tensor, end: Any, weight: Any) -> Tensor:
        """``self + weight · (end - self)``."""
        return self + weight * (end - self)

    def addcmul(self: Tensor, tensor1: Tensor, tensor2: Tensor, *, value: Any = 1) -> Tensor:
        return self + value * tensor1 * tensor2

    def addcdiv(self: Tensor, tensor1: Tensor, tensor2: Tensor, *, value: Any = 1) -> Tensor:
        return self + value * tensor1 / tensor2

    # ----------------------------------------------------------------- in place
    def _check_in_place(self: Tensor, op: str, *operands: Any) -> None:
        """Refuse an in-place method autograd would have to record (see the module docstring)."""
        from .tensor import Tensor

        if is_grad_enabled() and (
            self.requires_grad or any(isinstance(o, Tensor) and o.requires_grad for o in operands)
        ):
            self._check_writable(op)
            raise RuntimeError(
                f"{op}: an in-place change of a tensor of the autograd graph is not recorded; "
                f"write x = x.{op.rstrip('_')}(...) instead, or change it under fastnet.no_grad()"
            )

    def add_(self: Tensor, other: Any, *, alpha: Any = 1) -> Tensor:
        self._check_in_place("add_", other)
        return self._in_place(other if alpha == 1 else other * alpha, "add_", Add, "add")

    def sub_(self: Tensor, other: Any, *, alpha: Any = 1) -> Tensor:
        self._check_in_place("sub_", other)
        return self._in_place(other if alpha == 1 else other * alpha, "sub_", Sub, "subtract")

    def mul_(self: Tensor, other: Any) -> Tensor:
        self._check_in_place("mul_", other)
        return self._in_place(other, "mul_", Mul, "multiply")

    def div_(self: Tensor, other: Any, *, rounding_mode: str | None = None) -> Tensor:
        self._check_in_place("div_", other)
        if rounding_mode is None:
            return self._in_place(other, "div_", Div, "true_divide")
        return self._store_in_place("div_", self.div(other, rounding_mode=rounding_mode))

    def pow_(self: Tensor, exponent: Any) -> Tensor:
        self._check_in_place("pow_", exponent)
        return self._in_place(exponent, "pow_", Pow, "power")

    def _unary_(self: Tensor, op: str, result: Any) -> Tensor:
        self._check_in_place(op)
        return self._store_in_place(op, result(self))

    def neg_(self: Tensor) -> Tensor:
        return self._unary_("neg_", Pointwise.neg)

    def abs_(self: Tensor) -> Tensor:
        return self._unary_("abs_", Pointwise.abs)

    def exp_(self: Tensor) -> Tensor:
        return self._unary_("exp_", Pointwise.exp)

    def log_(self: Tensor) -> Tensor:
        return self._unary_("log_", Pointwise.log)

    def sqrt_(self: Tensor) -> Tensor:
        return self._unary_("sqrt_", Pointwise.sqrt)

    def tanh_(self: Tensor) -> Tensor:
        return self._unary_("tanh_", Pointwise.tanh)

    def sigmoid_(self: Tensor) -> Tensor:
        return self._unary_("sigmoid_", Pointwise.sigmoid)

    def relu_(self: Tensor) -> Tensor:
        return self._unary_("relu_", Pointwise.relu)

    def floor_(self: Tensor) -> Tensor:
        return self._unary_("floor_", Pointwise.floor)

    def ceil_(self: Tensor) -> Tensor:
        return self._unary_("ceil_", Pointwise.ceil)

    def round_(self: Tensor, *, decimals: int = 0) -> Tensor:
        return self._unary_("round_", lambda x: x.round(decimals=decimals))

    def trunc_(self: Tensor) -> Tensor:
        return self._unary_("trunc_", Pointwise.trunc)

    def reciprocal_(self: Tensor) -> Tensor:
        return self._unary_("reciprocal_", Pointwise.reciprocal)

    def square_(self: Tensor) -> Tensor:
        return self._unary_("square_", Pointwise.square)

    # ----------------------------------------------------------------- comparisons, logic
    def lt(self: Tensor, other: Any) -> Tensor:
        return self._compare(other, "__lt__")

    def le(self: Tensor, other: Any) -> Tensor:
        return self._compare(other, "__le__")

    def gt(self: Tensor, other: Any) -> Tensor:
        return self._compare(other, "__gt__")

    def ge(self: Tensor, other: Any) -> Tensor:
        return self._compare(other, "__ge__")

    less, less_equal, greater, greater_equal = lt, le, gt, ge

    def not_equal(self: Tensor, other: Any) -> Tensor:
        return self._compare(other, "__ne__")

    def isclose(
        self: Tensor,
        other: Tensor,
        rtol: float = 1e-05,
        atol: float = 1e-08,
        equal_nan: bool = False,
    ) -> Tensor:
        """``|self - other| <= atol + rtol · |other|`` elementwise (a bool tensor)."""
        from .tensor import _promote

        a, b = _promote(self, other)
        close = self.device.xp.isclose(a.data, b.data, rtol=rtol, atol=atol, equal_nan=equal_nan)
        return self._wrap(close, self.device)

    def allclose(
        self: Tensor,
        other: Tensor,
        rtol: float = 1e-05,
        atol: float = 1e-08,
        equal_nan: bool = False,
    ) -> bool:
        return bool(self.isclose(other, rtol, atol, equal_nan).all())

    def equal(self: Tensor, other: Tensor) -> bool:
        """Whether both tensors have the same shape and values."""
        return self.shape == other.shape and bool((self == other).all())

    def _logical(self: Tensor, other: Any, ufunc: str) -> Tensor:
        from .tensor import Tensor

        if not isinstance(other, Tensor):
            other = self._wrap(self.device.asarray(other), self.device)
        return self._wrap(getattr(self.device.xp, ufunc)(self.data, other.data), self.device)

    def logical_and(self: Tensor, other: Tensor) -> Tensor:
        return self._logical(other, "logical_and")

    def logical_or(self: Tensor, other: Tensor) -> Tensor:
        return self._logical(other, "logical_or")

    def logical_xor(self: Tensor, other: Tensor) -> Tensor:
        return self._logical(other, "logical_xor")

    def logical_not(self: Tensor) -> Tensor:
        return self._wrap(self.device.xp.logical_not(self.data), self.device)

    def _bitwise(self: Tensor, other: Any, ufunc: str) -> Tensor:
        if self.dtype.kind == "f" or getattr(other, "dtype", np.dtype(bool)).kind == "f":
            raise TypeError(f"{ufunc}: only integer and bool tensors, got {self.dtype}")
        from .tensor import _promote

        a, b = _promote(self, other)
        return self._wrap(getattr(self.device.xp, ufunc)(a.data, b.data), self.device)

    def __and__(self: Tensor, other: Any) -> Tensor:
        return self._bitwise(other, "bitwise_and")

    def __or__(self: Tensor, other: Any) -> Tensor:
        return self._bitwise(other, "bitwise_or")

    def __xor__(self: Tensor, other: Any) -> Tensor:
        return self._bitwise(other, "bitwise_xor")

    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__
    bitwise_and, bitwise_or, bitwise_xor = __and__, __or__, __xor__

    def __invert__(self: Tensor) -> Tensor:
        if self.dtype.kind == "f":
            raise TypeError(f"bitwise_not: only integer and bool tensors, got {self.dtype}")
        return self._wrap(self.device.xp.invert(self.data), self.device)

    bitwise_not = __invert__

    # ----------------------------------------------------------------- softmax, norms
    def softmax(self: Tensor, dim: int, dtype: Any = None) -> Tensor:
        from .functional import softmax

        return softmax(self, dim, dtype=dtype)

    def log_softmax(self: Tensor, dim: int, dtype: Any = None) -> Tensor:
        from .functional import log_softmax

        return log_softmax(self, dim, dtype=dtype)

    def norm(
        self: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None
    ) -> Tensor:
        """The vector p-norm over ``dim`` (all values for None); ``"fro"`` is the 2-norm (see
        :func:`fastnet.linalg.vector_norm`)."""
        from .linalg import vector_norm

        if p == "nuc":
            raise NotImplementedError("norm(p='nuc'): fastnet has no matrix decompositions")
        return vector_norm(self, 2 if p == "fro" else p, dim, keepdim, dtype=dtype)

    def dist(self: Tensor, other: Tensor, p: float = 2) -> Tensor:
        return (self - other).norm(p)
