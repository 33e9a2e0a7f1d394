"""PyTorch's module-level reductions, scans and orderings (``fastnet.sum(x, dim)``,
``fastnet.topk(x, k)``, ...): each checks that its input is a Tensor and calls the method of the
same name (:mod:`fastnet.tensor_reductions` documents the math, the dtypes and the errors).
``fastnet.max(x, other)`` / ``fastnet.min(x, other)`` with a tensor as the second argument are
the elementwise ``maximum`` / ``minimum``, as in PyTorch.
"""

from __future__ import annotations

from typing import Any

from .tensor import Tensor
from .tensor_functions import tensor_argument
from .tensor_reductions import ValuesIndices

__all__ = [
    "amax",
    "amin",
    "argmax",
    "argmin",
    "argsort",
    "cumprod",
    "cumsum",
    "logsumexp",
    "max",
    "mean",
    "min",
    "prod",
    "std",
    "sort",
    "sum",
    "topk",
    "var",
]


def sum(input: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    return tensor_argument("sum", input).sum(dim, keepdim, dtype=dtype)


def mean(input: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    return tensor_argument("mean", input).mean(dim, keepdim, dtype=dtype)


def prod(
    input: Tensor, dim: int | None = None, keepdim: bool = False, *, dtype: Any = None
) -> Tensor:
    return tensor_argument("prod", input).prod(dim, keepdim, dtype=dtype)


def var(
    input: Tensor,
    dim: Any = None,
    unbiased: bool | None = None,
    keepdim: bool = False,
    *,
    correction: float | None = None,
) -> Tensor:
    return tensor_argument("var", input).var(dim, unbiased, keepdim, correction=correction)


def std(
    input: Tensor,
    dim: Any = None,
    unbiased: bool | None = None,
    keepdim: bool = False,
    *,
    correction: float | None = None,
) -> Tensor:
    return tensor_argument("std", input).std(dim, unbiased, keepdim, correction=correction)


def logsumexp(input: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    return tensor_argument("logsumexp", input).logsumexp(dim, keepdim)


def cumsum(input: Tensor, dim: int, *, dtype: Any = None) -> Tensor:
    return tensor_argument("cumsum", input).cumsum(dim, dtype=dtype)


def cumprod(input: Tensor, dim: int, *, dtype: Any = None) -> Tensor:
    return tensor_argument("cumprod", input).cumprod(dim, dtype=dtype)


def max(input: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
    """``max(x)``: the largest value; ``max(x, dim)``: :class:`ValuesIndices`; ``max(x, other)``
    with a tensor ``other``: the elementwise maximum."""
    if isinstance(dim, Tensor):
        return tensor_argument("max", input).maximum(dim)
    return tensor_argument("max", input).max(dim, keepdim)


def min(input: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
    """As :func:`max`, for the smallest values (``min(x, other)``: the elementwise minimum)."""
    if isinstance(dim, Tensor):
        return tensor_argument("min", input).minimum(dim)
    return tensor_argument("min", input).min(dim, keepdim)


def amax(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return tensor_argument("amax", input).amax(dim, keepdim)


def amin(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return tensor_argument("amin", input).amin(dim, keepdim)


def argmax(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return tensor_argument("argmax", input).argmax(dim, keepdim)


def argmin(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return tensor_argument("argmin", input).argmin(dim, keepdim)


def sort(
    input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False
) -> ValuesIndices:
    return tensor_argument("sort", input).sort(dim, descending, stable)


def argsort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    return tensor_argument("argsort", input).argsort(dim, descending, stable)


def topk(
    input: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True
) -> ValuesIndices:
    return tensor_argument("topk", input).topk(k, dim, largest, sorted)
