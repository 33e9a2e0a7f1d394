"""Pooling over the last axis of x (N, C, L), or of an unbatched (C, L): max_pool1d, avg_pool1d,
adaptive_avg_pool1d, adaptive_max_pool1d.

Each is its 2-D op (:mod:`~fastnet.functional.pooling`) on x viewed as (N, C, 1, L) with a
1 × k window, and the height axis dropped after: the same kernels, PyTorch's 1-D output sizes
(a height of 1 stays 1), and the 1-D argmax (the flat h·L + w of a height-1 plane is w).
"""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor
from .pooling import adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool2d

__all__ = ["max_pool1d", "avg_pool1d", "adaptive_avg_pool1d", "adaptive_max_pool1d"]

Single = int | tuple[int]


def _single(value: Any, name: str) -> int:
    """An int, or PyTorch's one-element tuple of one."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{name} must be an int or a tuple of one int, got {value!r}")
        (value,) = value
    return int(value)


def _on_rows(op: str, pool2d: Any, x: Tensor, *args: Any, **kwargs: Any) -> Any:
    """``pool2d`` of x (N, C, L) or (C, L) as a height-1 image, the height axis dropped after."""
    if x.ndim not in (2, 3):
        raise ValueError(f"{op}: input must be (C, L) or (N, C, L), got shape {x.shape}")
    result = pool2d(x.unsqueeze(-2), *args, **kwargs)
    if isinstance(result, tuple):
        return tuple(part.squeeze(-2) for part in result)
    return result.squeeze(-2)


def max_pool1d(
    input: Tensor,
    kernel_size: Single,
    stride: Single | None = None,
    padding: Single = 0,
    dilation: Single = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Max over windows of the last axis (stride defaults to kernel_size)."""
    kernel = _single(kernel_size, "kernel_size")
    step = kernel if stride is None else _single(stride, "stride")
    return _on_rows(
        "max_pool1d",
        max_pool2d,
        input,
        (1, kernel),
        (1, step),
        (0, _single(padding, "padding")),
        (1, _single(dilation, "dilation")),
        ceil_mode,
        return_indices,
    )


def avg_pool1d(
    input: Tensor,
    kernel_size: Single,
    stride: Single | None = None,
    padding: Single = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Tensor:
    """Mean over windows of the last axis (padding counted unless ``count_include_pad=False``)."""
    kernel = _single(kernel_size, "kernel_size")
    step = kernel if stride is None else _single(stride, "stride")
    return _on_rows(
        "avg_pool1d",
        avg_pool2d,
        input,
        (1, kernel),
        (1, step),
        (0, _single(padding, "padding")),
        ceil_mode,
        count_include_pad,
    )


def adaptive_avg_pool1d(input: Tensor, output_size: Single) -> Tensor:
    """Average the last axis into ``output_size`` bins."""
    size = _single(output_size, "output_size")
    return _on_rows("adaptive_avg_pool1d", adaptive_avg_pool2d, input, (1, size))


def adaptive_max_pool1d(
    input: Tensor, output_size: Single, return_indices: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Max of the last axis over ``output_size`` bins; with ``return_indices``, their argmax."""
    size = _single(output_size, "output_size")
    return _on_rows("adaptive_max_pool1d", adaptive_max_pool2d, input, (1, size), return_indices)
