"""Sliding-window geometry shared by the convolution, Winograd and pooling families.

A window of ``kernel_h x kernel_w`` slides over an ``H x W`` plane zero-padded by
``pad_h``/``pad_w`` on each side, in steps of ``stride_h``/``stride_w``; it stops at ``OH x OW``
positions, where ``OH = (H + 2·pad_h - kernel_h) // stride_h + 1`` (and likewise ``OW``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

IntPair = int | tuple[int, int]


class WindowGeometry(NamedTuple):
    """A sliding window over an (H, W) plane and the (OH, OW) grid of its positions."""

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


def _geometry(
    h: int, w: int, kernel_hw: IntPair, stride: IntPair, padding: IntPair
) -> WindowGeometry:
    kernel_h, kernel_w = int_pair(kernel_hw, "kernel_hw", 1)
    stride_h, stride_w = int_pair(stride, "stride", 1)
    pad_h, pad_w = int_pair(padding, "padding", 0)
    padded_h, padded_w = h + 2 * pad_h, w + 2 * pad_w
    if kernel_h > padded_h or kernel_w > padded_w:
        raise ValueError(
            f"kernel {kernel_h}x{kernel_w} does not fit the {h}x{w} input padded by "
            f"({pad_h}, {pad_w}) to {padded_h}x{padded_w}"
        )
    out_h = (padded_h - kernel_h) // stride_h + 1
    out_w = (padded_w - kernel_w) // stride_w + 1
    return WindowGeometry(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w)


def conv_output_shape(
    h: int, w: int, kernel_hw: IntPair, stride: IntPair, padding: IntPair
) -> tuple[int, int]:
    """(OH, OW) of a window ``kernel_hw`` sliding over an h x w plane; ValueError if it does not
    fit."""
    geometry = _geometry(h, w, kernel_hw, stride, padding)
    return geometry.out_h, geometry.out_w


def window_geometry(
    x_shape: Sequence[int], kernel_hw: IntPair, stride: IntPair, padding: IntPair, op: str
) -> WindowGeometry:
    """Validate a 4-D (N, C, H, W) shape and window arguments for ``op``; return the geometry."""
    if len(x_shape) != 4:
        raise ValueError(f"{op} expects a 4-D input (N, C, H, W), got shape {tuple(x_shape)}")
    return _geometry(x_shape[2], x_shape[3], kernel_hw, stride, padding)
