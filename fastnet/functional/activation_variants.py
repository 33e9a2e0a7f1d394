"""More of PyTorch's activations: the clipping and shrinking ones, the ELU family's SELU and
CELU, PReLU, GLU and softmin.

Each elementwise one keeps dy/dx for its backward, where PyTorch's edges are: the gradient at a
breakpoint is the one PyTorch's backward gives there.

* ``hardtanh(min_val, max_val)``: y = clip(x, min_val, max_val); dx = dy on (min_val, max_val),
  0 outside and at the ends. ``relu6`` is hardtanh(0, 6).
* ``threshold(threshold, value)``: y = x where x > threshold, else ``value``; dx = dy where
  x > threshold.
* ``hardshrink(lambd)``: y = x where |x| > λ, else 0; ``softshrink(lambd)``: y = x − λ·sign(x)
  where |x| > λ, else 0; both dx = dy where |x| > λ.
* ``selu``: y = scale·elu(x, α) with PyTorch's constants; dx = dy·scale·(1 or α·exp(x)).
* ``celu(alpha)``: y = max(0, x) + min(0, α·(exp(x/α) − 1)); dx = dy·(1 or exp(x/α)).
* ``softsign``: y = x/(1 + |x|); dx = dy/(1 + |x|)². ``tanhshrink``: y = x − tanh(x);
  dx = dy·tanh²(x).
* ``prelu(weight)``: y = x where x > 0, else w·x, with w one value or one per channel (axis 1);
  dx = dy·(1 or w), dw = Σ dy·x over x ≤ 0 (the engine sums the broadcast axes).
* ``glu(dim)``: a·σ(b) for a, b the two halves of x along ``dim``, composed of Tensor ops.
* ``softmin(dim)``: softmax(−x) along ``dim``.

``inplace=True`` has the meaning it has in :mod:`~fastnet.functional.activations`.
"""

from __future__ import annotations

from typing import Any

from ..tensor import Function, Tensor
from .activations import _activation, _Elementwise, _softmax_axis, softmax

__all__ = [
    "hardtanh",
    "relu6",
    "threshold",
    "hardshrink",
    "softshrink",
    "selu",
    "celu",
    "softsign",
    "tanhshrink",
    "prelu",
    "glu",
    "softmin",
]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


class HardTanh(_Elementwise):
    def forward(self, x, min_val, max_val):
        xp = self.device.xp
        self.slope = ((x > min_val) & (x < max_val)).astype(x.dtype)
        return xp.clip(x, x.dtype.type(min_val), x.dtype.type(max_val))


class Threshold(_Elementwise):
    def forward(self, x, threshold, value):
        passed = x > threshold
        self.slope = passed.astype(x.dtype)
        return self.device.xp.where(passed, x, x.dtype.type(value))


class HardShrink(_Elementwise):
    def forward(self, x, lambd):
        self.slope = (self.device.xp.abs(x) > lambd).astype(x.dtype)
        return x * self.slope


class SoftShrink(_Elementwise):
    def forward(self, x, lambd):
        xp = self.device.xp
        self.slope = (xp.abs(x) > lambd).astype(x.dtype)
        return (x - xp.sign(x) * x.dtype.type(lambd)) * self.slope


class CELU(_Elementwise):
    """scale·(x where x > 0, else α·(exp(x/inner) − 1)): celu is scale 1 and inner α, selu
    PyTorch's scale and α with inner 1."""

    def forward(self, x, alpha, scale, inner):
        xp = self.device.xp
        positive = x > 0
        exp = xp.exp(xp.minimum(x, 0) / x.dtype.type(inner))
        self.slope = xp.where(positive, 1, exp * (alpha / inner)).astype(x.dtype, copy=False)
        self.slope *= x.dtype.type(scale)
        negative = (exp - 1) * x.dtype.type(alpha)
        return xp.where(positive, x, negative) * x.dtype.type(scale)


class Softsign(_Elementwise):
    def forward(self, x):
        denominator = 1 + self.device.xp.abs(x)
        self.slope = 1 / (denominator * denominator)
        return x / denominator


class TanhShrink(_Elementwise):
    def forward(self, x):
        tanh = self.device.xp.tanh(x)
        self.slope = tanh * tanh
        return x - tanh


def hardtanh(
    input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False
) -> Tensor:
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val {min_val} cannot be greater than max_val {max_val}")
    return _activation(
        "hardtanh", HardTanh, input, inplace, min_val=float(min_val), max_val=float(max_val)
    )


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    return _activation("relu6", HardTanh, input, inplace, min_val=0.0, max_val=6.0)


def threshold(input: Tensor, threshold: float, value: float, inplace: bool = False) -> Tensor:
    return _activation(
        "threshold", Threshold, input, inplace, threshold=float(threshold), value=float(value)
    )


def hardshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    return _activation("hardshrink", HardShrink, input, False, lambd=float(lambd))


def softshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    if lambd < 0:
        raise RuntimeError(f"softshrink: lambda must be greater or equal to 0, but found {lambd}")
    return _activation("softshrink", SoftShrink, input, False, lambd=float(lambd))


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    return _activation("selu", CELU, input, inplace, alpha=SELU_ALPHA, scale=SELU_SCALE, inner=1.0)


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    if alpha == 0:
        raise ValueError("celu: alpha must not be 0 (it divides x)")
    return _activation(
        "celu", CELU, input, inplace, alpha=float(alpha), scale=1.0, inner=float(alpha)
    )


def softsign(input: Tensor) -> Tensor:
    return _activation("softsign", Softsign, input, False)


def tanhshrink(input: Tensor) -> Tensor:
    return _activation("tanhshrink", TanhShrink, input, False)


class PReLU(Function):
    def forward(self, x, weight):
        self.x, self.weight = x, weight
        return self.device.xp.where(x > 0, x, weight * x)

    def backward(self, grad):
        xp, x = self.device.xp, self.x
        positive = x > 0
        grad_x = grad * xp.where(positive, x.dtype.type(1), self.weight)
        return grad_x, xp.where(positive, x.dtype.type(0), grad * x)


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """y = x where x > 0, else weight·x; ``weight`` holds one value, or one per channel (axis 1
    of an input with two axes or more)."""
    channels = input.shape[1] if input.ndim >= 2 else 1
    if weight.numel() not in (1, channels):
        raise RuntimeError(
            f"prelu: mismatch of parameter numbers and input channel size: weight of shape "
            f"{weight.shape} for input of shape {input.shape} (expected 1 or {channels})"
        )
    if weight.numel() == 1:
        weight = weight.reshape(())
    else:  # one value per channel, broadcast along axis 1
        weight = weight.reshape((channels,) + (1,) * (input.ndim - 2))
    return PReLU.apply(input, weight)


def glu(input: Tensor, dim: int = -1) -> Tensor:
    """a·σ(b) for the halves a, b of ``input`` along ``dim``."""
    if input.ndim == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    if not -input.ndim <= dim < input.ndim:
        raise IndexError(f"glu: dim {dim} is out of range for input of shape {input.shape}")
    axis = dim % input.ndim
    size = input.shape[axis]
    if size % 2:
        raise RuntimeError(f"Halving dimension must be even, but dimension {axis} is size {size}")
    lead = (slice(None),) * axis
    return input[lead + (slice(0, size // 2),)] * input[lead + (slice(size // 2, size),)].sigmoid()


def softmin(input: Tensor, dim: int | None = -1, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """softmax(−input) along ``dim`` (default -1; see softmax)."""
    x, axis = _softmax_axis("softmin", input, dim, None, dtype)
    return softmax(-x, axis)
