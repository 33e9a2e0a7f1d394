"""Elementwise functions of one tensor (beyond the hot ones of :mod:`fastnet.tensor_ops`), and
the rounding divisions, each a Function over raw arrays of one floating dtype.

A unary op ``y = f(x)`` (any shape; ``y`` has ``x``'s shape and dtype) has the gradient
``dx = dy · f'(x)``, where the slope is written from ``x`` or from ``y``, whichever is cheaper:

=========== ============================ =================================
op          f(x)                         f'(x)
=========== ============================ =================================
sin, cos    sin x, cos x                 cos x, −sin x
tan         tan x                        1 + y²
sinh, cosh  sinh x, cosh x               cosh x, sinh x
asin, acos  asin x, acos x               ±1/√(1 − x²)
atan        atan x                       1/(1 + x²)
asinh       asinh x                      1/√(x² + 1)
acosh       acosh x                      1/√(x² − 1)
atanh       atanh x                      1/(1 − x²)
log2, log10 log x / log b                1/(x · log b)
log1p       log(1 + x)                   1/(1 + x)
expm1       exp x − 1                    y + 1
exp2        2^x                          y · log 2
sqrt        √x                           1/(2y)   (inf at 0, as PyTorch)
rsqrt       1/√x                         −y³/2
square      x²                           2x
reciprocal  1/x                          −y²
erf, erfc   erf x, 1 − erf x             ±2/√π · exp(−x²)
frac        x − trunc x                  1
sign, floor, ceil, round, trunc          0 (piecewise constant; PyTorch's zero gradient)
=========== ============================ =================================

:class:`RoundingDiv` is ``a / b`` rounded toward −∞ (``floor``) or 0 (``trunc``), with a zero
gradient for both operands as PyTorch's ``div(rounding_mode=...)``. :class:`Remainder` is
``a − b·floor(a/b)`` (the sign of ``b``, PyTorch's ``remainder`` and ``%``) or, with
``truncated``, ``a − b·trunc(a/b)`` (the sign of ``a``, ``fmod``): ``da = dy``,
``db = −dy · floor(a/b)`` (or ``trunc``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .autograd import Function

__all__ = ["UNARY", "Remainder", "RoundingDiv", "Unary"]


class Unary(Function):
    """``y = f(x)``, ``dx = dy · slope(x, y)``; subclasses made by :func:`_unary` set ``compute``
    and ``slope`` (None: a zero gradient) and which of x and y the slope reads."""

    compute: Callable[[Any, Any, Any], Any]  # (xp, x, device) -> y
    slope: Callable[[Any, Any, Any], Any] | None  # (xp, x, y) -> dy/dx

    def forward(self, a):
        xp = self.device.xp
        with np.errstate(divide="ignore", invalid="ignore"):
            out = type(self).compute(xp, a, self.device)
        if self.saves_inputs:
            self.a = a
        if self.saves_output:
            self.out = out
        return out

    def backward(self, grad):
        slope = type(self).slope
        if slope is None:
            return (self.device.xp.zeros_like(grad),)
        a = self.a if self.saves_inputs else None
        out = self.out if self.saves_output else None
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return (grad * slope(self.device.xp, a, out),)


def _unary(name: str, compute: Callable, slope: Callable | None, reads: str) -> type[Unary]:
    """A :class:`Unary` subclass named ``name`` (errors name the op); ``reads`` is what the slope
    reads: "x", "y" or "" (so the version check watches exactly that)."""
    return type(
        name,
        (Unary,),
        {
            "compute": staticmethod(compute),
            "slope": None if slope is None else staticmethod(slope),
            "saves_inputs": reads == "x",
            "saves_output": reads == "y",
            "__doc__": f"Elementwise {name.lower()} (see the module docstring).",
        },
    )


_LN2, _LN10, _TWO_OVER_SQRT_PI = math.log(2), math.log(10), 2 / math.sqrt(math.pi)


def _erf_slope(xp, x, y):
    return _TWO_OVER_SQRT_PI * xp.exp(-x * x)


# name -> Function class; ``fastnet.tensor_pointwise`` builds the methods from this table
UNARY: dict[str, type[Unary]] = {
    cls.__name__.lower(): cls
    for cls in (
        _unary("Sin", lambda xp, x, d: xp.sin(x), lambda xp, x, y: xp.cos(x), "x"),
        _unary("Cos", lambda xp, x, d: xp.cos(x), lambda xp, x, y: -xp.sin(x), "x"),
        _unary("Tan", lambda xp, x, d: xp.tan(x), lambda xp, x, y: 1 + y * y, "y"),
        _unary("Sinh", lambda xp, x, d: xp.sinh(x), lambda xp, x, y: xp.cosh(x), "x"),
        _unary("Cosh", lambda xp, x, d: xp.cosh(x), lambda xp, x, y: xp.sinh(x), "x"),
        _unary("Asin", lambda xp, x, d: xp.arcsin(x), lambda xp, x, y: 1 / xp.sqrt(1 - x * x), "x"),
        _unary(
            "Acos", lambda xp, x, d: xp.arccos(x), lambda xp, x, y: -1 / xp.sqrt(1 - x * x), "x"
        ),
        _unary("Atan", lambda xp, x, d: xp.arctan(x), lambda xp, x, y: 1 / (1 + x * x), "x"),
        _unary(
            "Asinh", lambda xp, x, d: xp.arcsinh(x), lambda xp, x, y: 1 / xp.sqrt(x * x + 1), "x"
        ),
        _unary(
            "Acosh", lambda xp, x, d: xp.arccosh(x), lambda xp, x, y: 1 / xp.sqrt(x * x - 1), "x"
        ),
        _unary("Atanh", lambda xp, x, d: xp.arctanh(x), lambda xp, x, y: 1 / (1 - x * x), "x"),
        _unary("Log2", lambda xp, x, d: xp.log2(x), lambda xp, x, y: 1 / (x * _LN2), "x"),
        _unary("Log10", lambda xp, x, d: xp.log10(x), lambda xp, x, y: 1 / (x * _LN10), "x"),
        _unary("Log1p", lambda xp, x, d: xp.log1p(x), lambda xp, x, y: 1 / (1 + x), "x"),
        _unary("Expm1", lambda xp, x, d: xp.expm1(x), lambda xp, x, y: y + 1, "y"),
        _unary("Exp2", lambda xp, x, d: xp.exp2(x), lambda xp, x, y: y * _LN2, "y"),
        _unary("Sqrt", lambda xp, x, d: xp.sqrt(x), lambda xp, x, y: 0.5 / y, "y"),
        _unary("Rsqrt", lambda xp, x, d: 1 / xp.sqrt(x), lambda xp, x, y: -0.5 * y * y * y, "y"),
        _unary("Square", lambda xp, x, d: x * x, lambda xp, x, y: 2 * x, "x"),
        _unary("Reciprocal", lambda xp, x, d: 1 / x, lambda xp, x, y: -y * y, "y"),
        _unary("Erf", lambda xp, x, d: d.erf(x), _erf_slope, "x"),
        _unary("Erfc", lambda xp, x, d: 1 - d.erf(x), lambda xp, x, y: -_erf_slope(xp, x, y), "x"),
        _unary("Frac", lambda xp, x, d: x - xp.trunc(x), lambda xp, x, y: 1, ""),
        _unary("Sign", lambda xp, x, d: xp.sign(x), None, ""),
        _unary("Floor", lambda xp, x, d: xp.floor(x), None, ""),
        _unary("Ceil", lambda xp, x, d: xp.ceil(x), None, ""),
        _unary("Trunc", lambda xp, x, d: xp.trunc(x), None, ""),
        _unary("Round", lambda xp, x, d: xp.round(x), None, ""),
    )
}


class RoundingDiv(Function):
    """``a / b`` rounded by ``mode`` ("floor" or "trunc"); no gradient flows (zero)."""

    saves_inputs = saves_output = False

    def forward(self, a, b, mode):
        xp = self.device.xp
        with np.errstate(divide="ignore", invalid="ignore"):
            if a.dtype.kind in "iu":  # exact integer division, no float round trip
                return _integer_division(xp, a, b, mode)
            quotient = a / b
            return xp.floor(quotient) if mode == "floor" else xp.trunc(quotient)

    def backward(self, grad):
        zero = self.device.xp.zeros_like(grad)
        return zero, zero


def _integer_division(xp, a, b, mode):
    floor = xp.floor_divide(a, b)
    if mode == "floor":
        return floor
    # floor rounds down where the exact quotient is negative and inexact: one step back up
    inexact = (floor * b != a) & ((a < 0) != (b < 0))
    return floor + inexact.astype(floor.dtype)


class Remainder(Function):
    """``a − b·floor(a/b)`` (or ``trunc`` with ``truncated``: fmod)."""

    saves_output = False

    def forward(self, a, b, truncated):
        xp = self.device.xp
        self.a, self.b, self.truncated = a, b, truncated
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.fmod(a, b) if truncated else xp.remainder(a, b)

    def backward(self, grad):
        xp = self.device.xp
        grad_b = None
        if self.inputs[1].requires_grad:
            quotient = self.a / self.b
            rounded = xp.trunc(quotient) if self.truncated else xp.floor(quotient)
            grad_b = -grad * rounded
        return grad, grad_b
