"""Sliding-window geometry shared by the convolution, Winograd and pooling families.

A window of ``kernel_h x kernel_w`` taps, ``dilation_h``/``dilation_w`` apart, slides over an
``H x W`` plane zero-padded by ``pad_h``/``pad_w`` on each side, in steps of
``stride_h``/``stride_w``. Its span is ``E = dilation_h·(kernel_h - 1) + 1`` rows (likewise
columns), and it stops at ``OH x OW`` positions, where (PyTorch's rule)

    OH = floor((H + 2·pad_h - E) / stride_h) + 1                       (ceil_mode=False)
    OH = ceil((H + 2·pad_h - E) / stride_h) + 1, less one if the last
         window would start in the right padding: (OH - 1)·stride_h >= H + pad_h   (ceil_mode)

With ``ceil_mode`` (pooling only) the last window may hang past the padded edge; the kernels clip
it there.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numba.extending import register_jitable

IntPair = int | tuple[int, int]


class WindowGeometry(NamedTuple):
    """A sliding window over an (H, W) plane and the (OH, OW) grid of its positions (the
    dilation, when there is one, is the caller's: the kernels take it as their own argument)."""

    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    out_h: int
    out_w: int


def int_pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """``value`` (an int or an (h, w) pair of ints) as a pair, each at least ``minimum``."""
    if (
        type(value) is int
    ):  # the common cases first: a conv layer validates once per chunk of images
        pair = (value, value)
    elif (
        type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int
    ):
        pair = value
    else:
        pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
        if len(pair) != 2 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair
        ):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _out_size(padded: int, span: int, stride: int, pad: int, ceil_mode: bool) -> int:
    if not ceil_mode:
        return (padded - span) // stride + 1
    out = -(-(padded - span) // stride) + 1
    if (out - 1) * stride >= padded - pad:  # the last window would start in the padding
        out -= 1
    return out


def _plain(value: Any) -> bool:
    """An int or a pair of ints, exactly: not a bool or a float, which compare equal to one."""
    return type(value) is int or (
        type(value) is tuple and len(value) == 2 and type(value[0]) is type(value[1]) is int
    )


def _geometry(
    h: int,
    w: int,
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
) -> WindowGeometry:
    arguments = (h, w, kernel_hw, stride, padding, dilation, ceil_mode)
    if (
        type(h) is type(w) is int
        and _plain(kernel_hw)
        and _plain(stride)
        and _plain(padding)
        and _plain(dilation)
        and type(ceil_mode) is bool
    ):
        # a layer asks the same question on every call: answer each shape once
        return _known_geometry(*arguments)
    return _new_geometry(*arguments)


@functools.lru_cache(maxsize=1024)
def _known_geometry(*arguments: Any) -> WindowGeometry:
    return _new_geometry(*arguments)


def _new_geometry(
    h: int,
    w: int,
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair,
    ceil_mode: bool,
) -> WindowGeometry:
    kernel_h, kernel_w = int_pair(kernel_hw, "kernel_hw", 1)
    stride_h, stride_w = int_pair(stride, "stride", 1)
    pad_h, pad_w = int_pair(padding, "padding", 0)
    dilation_h, dilation_w = int_pair(dilation, "dilation", 1)
    span_h, span_w = dilation_h * (kernel_h - 1) + 1, dilation_w * (kernel_w - 1) + 1
    padded_h, padded_w = h + 2 * pad_h, w + 2 * pad_w
    if span_h > padded_h or span_w > padded_w:
        dilated = f" dilated by ({dilation_h}, {dilation_w}) to {span_h}x{span_w}" * (
            (dilation_h, dilation_w) != (1, 1)
        )
        raise ValueError(
            f"kernel {kernel_h}x{kernel_w}{dilated} does not fit the {h}x{w} input padded by "
            f"({pad_h}, {pad_w}) to {padded_h}x{padded_w}"
        )
    out_h = _out_size(padded_h, span_h, stride_h, pad_h, ceil_mode)
    out_w = _out_size(padded_w, span_w, stride_w, pad_w, ceil_mode)
    return WindowGeometry(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w)


def conv_output_shape(
    h: int,
    w: int,
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
) -> tuple[int, int]:
    """(OH, OW) of a window ``kernel_hw`` sliding over an h x w plane; ValueError if it does not
    fit."""
    geometry = _geometry(h, w, kernel_hw, stride, padding, dilation, ceil_mode)
    return geometry.out_h, geometry.out_w


def window_geometry(
    x_shape: Sequence[int],
    kernel_hw: IntPair,
    stride: IntPair,
    padding: IntPair,
    op: str,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
) -> WindowGeometry:
    """Validate a 4-D (N, C, H, W) shape and window arguments for ``op``; return the geometry."""
    if len(x_shape) != 4:
        raise ValueError(f"{op} expects a 4-D input (N, C, H, W), got shape {tuple(x_shape)}")
    return _geometry(x_shape[2], x_shape[3], kernel_hw, stride, padding, dilation, ceil_mode)


@register_jitable
def inside_range(offset: int, pad: int, stride: int, size: int, out_size: int) -> tuple[int, int]:
    """[start, stop): the output positions o whose input index o·stride - pad + offset lies in
    [0, size), for a tap ``offset`` pixels into the window; empty (start == stop) when none do.
    Jitted helper of the CPU kernels, so they loop over the valid range with no bounds test."""
    start = min(out_size, max(0, -((offset - pad) // stride)))
    stop = max(start, min(out_size, (size - 1 + pad - offset) // stride + 1))
    return start, stop
