"""Fake quantization, for quantization-aware training: values rounded to an integer grid and back,
in float, with a straight-through gradient.

* ``fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max)``:
  y = (clip(rint(x·(1/s)) + z, q_min, q_max) − z)·s, rounding half to even (PyTorch's function and
  arithmetic: a float32 reciprocal of the scale, then a product). Backward, the straight-through
  estimator: dx = dy where the unclipped code rint(x/s) + z lies in [q_min, q_max], else 0 (a
  clipped value does not move with x).
* ``fake_quantize_per_channel_affine(x, scale, zero_point, axis, quant_min, quant_max)``: the
  same with one scale and zero point per index of ``axis`` (1-D tensors of x.shape[axis]).

The scales are constants here (no gradient reaches them; PyTorch's learnable-scale variants are
separate functions).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import to_numpy
from ..tensor import Function, Tensor

__all__ = ["fake_quantize_per_tensor_affine", "fake_quantize_per_channel_affine"]


class FakeQuantize(Function):
    def forward(self, x, inverse_scale, scale, zero_point, quant_min, quant_max):
        xp = self.device.xp
        codes = xp.rint(x * inverse_scale) + zero_point
        self.inside = (codes >= quant_min) & (codes <= quant_max)
        return ((xp.clip(codes, quant_min, quant_max) - zero_point) * scale).astype(x.dtype)

    def backward(self, grad):
        return (grad * self.inside,)


def fake_quantize(input: Tensor, scale: Any, quant_min: int, quant_max: int) -> Tensor:
    """The rounding with zero point 0 and ``scale`` a device array broadcasting to the input
    (one value, or one per channel), unchecked: the quantization-aware layers' path, which never
    reads a scale back to the host."""
    dtype = input.data.dtype.type
    scale = scale.astype(dtype, copy=False)
    return FakeQuantize.apply(
        input,
        inverse_scale=dtype(1.0) / scale,
        scale=scale,
        zero_point=dtype(0),
        quant_min=dtype(quant_min),
        quant_max=dtype(quant_max),
    )


def _check_range(quant_min: int, quant_max: int, op: str) -> None:
    if not quant_min <= quant_max:
        raise ValueError(f"{op}: quant_min ({quant_min}) must not exceed quant_max ({quant_max})")


def fake_quantize_per_tensor_affine(
    input: Tensor, scale: float, zero_point: int, quant_min: int, quant_max: int
) -> Tensor:
    """y = (clip(rint(x/s) + z, q_min, q_max) − z)·s with a straight-through gradient."""
    op = "fake_quantize_per_tensor_affine"
    _check_range(quant_min, quant_max, op)
    scale = float(scale)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"{op}: scale must be a positive finite number, got {scale}")
    if not zero_point == int(zero_point) or not quant_min <= zero_point <= quant_max:
        raise ValueError(
            f"{op}: zero_point ({zero_point}) must be an integer in [quant_min, quant_max]"
        )
    dtype = input.data.dtype.type
    return FakeQuantize.apply(
        input,
        inverse_scale=dtype(1.0) / dtype(scale),
        scale=dtype(scale),
        zero_point=dtype(zero_point),
        quant_min=dtype(quant_min),
        quant_max=dtype(quant_max),
    )


def fake_quantize_per_channel_affine(
    input: Tensor, scale: Any, zero_point: Any, axis: int, quant_min: int, quant_max: int
) -> Tensor:
    """The per-tensor function with scale[c] and zero_point[c] along ``axis``."""
    op = "fake_quantize_per_channel_affine"
    _check_range(quant_min, quant_max, op)
    if not -input.ndim <= axis < input.ndim:
        raise ValueError(f"{op}: axis {axis} out of range for a {input.ndim}-d input")
    axis %= input.ndim
    device, dtype = input.device, input.data.dtype
    scale = to_numpy(getattr(scale, "data", scale)).astype(np.float64)
    zero_point = to_numpy(getattr(zero_point, "data", zero_point))
    channels = input.shape[axis]
    for name, values in (("scale", scale), ("zero_point", zero_point)):
        if values.shape != (channels,):
            raise ValueError(
                f"{op}: {name} must have shape ({channels},) for axis {axis} of an input of shape "
                f"{tuple(input.shape)}, got {values.shape}"
            )
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError(f"{op}: every scale must be a positive finite number")
    if ((zero_point < quant_min) | (zero_point > quant_max)).any():
        raise ValueError(f"{op}: every zero_point must lie in [quant_min, quant_max]")
    shape = [1] * input.ndim
    shape[axis] = channels
    scale32 = scale.astype(dtype).reshape(shape)

    def upload(values: np.ndarray) -> Any:
        return device.upload(np.ascontiguousarray(values, dtype))

    return FakeQuantize.apply(
        input,
        inverse_scale=upload(dtype.type(1.0) / scale32),
        scale=upload(scale32),
        zero_point=upload(zero_point.reshape(shape)),
        quant_min=dtype.type(quant_min),
        quant_max=dtype.type(quant_max),
    )
