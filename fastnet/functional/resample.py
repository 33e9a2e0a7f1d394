"""Resampling: ``interpolate``, PyTorch's ``torch.nn.functional.interpolate``.

x (N, C, H, W) becomes y (N, C, OH, OW) through per-axis interpolation matrices,
y = R_h · x · R_wᵀ for every plane, and the gradient is the adjoint dx = R_hᵀ · dy · R_w (the
resample kernels, ``fastnet.kernels.resample``, hold the index rules and never build R):

* ``nearest``: each output copies input ``min(floor(o · scale), S - 1)``, PyTorch's legacy rule;
  ``nearest-exact``: ``min(floor((o + 0.5) · scale), S - 1)``, pixel centres.
* ``bilinear`` (4-D) and ``linear`` (3-D): two taps an axis; ``align_corners=False`` maps
  pixel centres (source ``(o + 0.5) · scale - 0.5``, clamped at 0), ``True`` maps the corner
  pixels onto each other (source ``o · (S - 1) / (O - 1)``).
* ``area``: the adaptive average pool to the output size.

The output size is ``size``, or ``floor(S · scale_factor)``; with a scale factor the index rule
uses ``scale = 1 / scale_factor`` (unless ``recompute_scale_factor``), otherwise S / O, as in
PyTorch. A 3-D input (N, C, L) resamples one axis, as a 4-D one of height 1.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from ..tensor import Function, Tensor
from .pooling import adaptive_avg_pool2d

__all__ = ["interpolate"]

# The modes fastnet resamples, and the input dimensions each takes (PyTorch's; its 5-D modes and
# bicubic are not implemented)
_DIMENSIONS = {
    "nearest": (3, 4),
    "nearest-exact": (3, 4),
    "area": (3, 4),
    "linear": (3,),
    "bilinear": (4,),
}
_MODES = " | ".join(_DIMENSIONS)


class UpsampleNearest2d(Function):
    saves_inputs = saves_output = False  # the backward reads only dy

    def forward(self, x, out_hw, scale_factors, exact):
        self.x_shape, self.params = x.shape, (scale_factors, exact)
        return self.device.nearest2d_forward(x, out_hw, scale_factors, exact)

    def backward(self, grad):
        return (self.device.nearest2d_backward(grad, self.x_shape, *self.params),)


class UpsampleBilinear2d(Function):
    saves_inputs = saves_output = False  # the backward reads only dy

    def forward(self, x, out_hw, align_corners, scale_factors):
        self.x_shape, self.params = x.shape, (align_corners, scale_factors)
        return self.device.bilinear2d_forward(x, out_hw, align_corners, scale_factors)

    def backward(self, grad):
        return (self.device.bilinear2d_backward(grad, self.x_shape, *self.params),)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _per_axis(value: Any, axes: int, name: str, shape: Sequence[int]) -> list:
    """``value`` (one number or a sequence of one per spatial axis) as a list of ``axes``."""
    if not isinstance(value, (list, tuple)):
        return [value] * axes
    if len(value) != axes:
        raise ValueError(
            f"Input and {name} must have the same number of spatial dimensions, but got input "
            f"with spatial dimensions of {list(shape[2:])} and {name} of {tuple(value)}. Please "
            "provide input tensor in (N, C, d1, d2, ...,dK) format"
        )
    return list(value)


def _output_geometry(
    shape: Sequence[int],
    size: Any,
    scale_factor: Any,
    recompute_scale_factor: bool | None,
) -> tuple[list[int], list[float | None]]:
    """(output size, the scale factors the index rule uses) per spatial axis, by PyTorch's
    argument rules."""
    axes = len(shape) - 2
    if size is not None and scale_factor is not None:
        raise ValueError("interpolate: only one of size or scale_factor should be defined")
    if size is None and scale_factor is None:
        raise ValueError("interpolate: either size or scale_factor should be defined")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError(
                "interpolate: recompute_scale_factor is not meaningful with an explicit size."
            )
        out = _per_axis(size, axes, "output size", shape)
        if not all(_is_int(side) for side in out):
            raise TypeError(
                f"interpolate: expected size to be an int or a tuple of ints, got {size!r}"
            )
        scales: list[float | None] = [None] * axes
    else:
        scales = [float(s) for s in _per_axis(scale_factor, axes, "scale_factor", shape)]
        out = [
            math.floor(float(side) * scale) for side, scale in zip(shape[2:], scales, strict=True)
        ]
        if recompute_scale_factor:
            scales = [None] * axes
    out = [int(side) for side in out]
    if min(shape[2:], default=1) < 1 or min(out, default=1) < 1:
        raise RuntimeError(
            f"interpolate: input and output sizes should be greater than 0, but got input "
            f"{tuple(shape[2:])} and output {tuple(out)}"
        )
    return out, scales


def interpolate(
    input: Tensor,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Tensor:
    """Resample ``input`` (N, C, H, W), or (N, C, L) for the 1-D modes, to ``size`` or by
    ``scale_factor`` (exactly one), with PyTorch's modes, index rules and errors: "nearest",
    "nearest-exact", "bilinear" (4-D), "linear" (3-D), "area"."""
    if mode in ("nearest", "nearest-exact", "area"):
        if align_corners is not None:
            raise ValueError(
                "interpolate: align_corners option can only be set with the interpolating "
                "modes: linear | bilinear | bicubic | trilinear"
            )
    elif align_corners is None:
        align_corners = False
    out, scales = _output_geometry(input.shape, size, scale_factor, recompute_scale_factor)
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    if input.ndim not in _DIMENSIONS.get(mode, ()):
        if mode in ("linear", "bilinear") and input.ndim in (3, 4, 5):
            raise NotImplementedError(
                f"interpolate: got {input.ndim}-D input, but {mode} mode needs "
                f"{_DIMENSIONS[mode][0]}-D input"
            )
        raise NotImplementedError(
            f"interpolate: fastnet resamples 3-D and 4-D inputs with the modes {_MODES} "
            f"(got a {input.ndim}-D input and mode {mode!r})"
        )
    if input.ndim == 3:  # one axis: as an image of height 1
        image = input.reshape(*input.shape[:2], 1, input.shape[2])
        return _resample(image, [1, *out], [None, *scales], mode, align_corners).reshape(
            *input.shape[:2], out[0]
        )
    return _resample(input, out, scales, mode, align_corners)


def _resample(
    x: Tensor, out: list[int], scales: list, mode: str, align_corners: bool | None
) -> Tensor:
    if mode == "area":
        return adaptive_avg_pool2d(x, tuple(out))
    if mode in ("nearest", "nearest-exact"):
        return UpsampleNearest2d.apply(
            x, out_hw=tuple(out), scale_factors=tuple(scales), exact=mode == "nearest-exact"
        )
    return UpsampleBilinear2d.apply(
        x, out_hw=tuple(out), align_corners=bool(align_corners), scale_factors=tuple(scales)
    )
