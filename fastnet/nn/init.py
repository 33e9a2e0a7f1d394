"""Weight initialisers, drawn on the CPU from fastnet's seeded generator (then moved).

The layers use PyTorch's defaults: Linear and Conv2d weights ``kaiming_uniform_(a=√5)``, i.e.
U(-1/√fan_in, 1/√fan_in), and biases U(-1/√fan_in, 1/√fan_in).
"""

from __future__ import annotations

import math

import numpy as np

from .. import random as fn_random
from ..tensor import Tensor


def fan_in_and_fan_out(shape: tuple) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight: (out, in) for Linear, (out, in, kh, kw) for Conv2d."""
    if len(shape) < 2:
        raise ValueError(
            f"fan in and fan out need a weight with at least 2 dimensions, got shape {shape}"
        )
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fill(tensor: Tensor, values: np.ndarray) -> Tensor:
    tensor.data = tensor.device.asarray(values.astype(tensor.dtype))
    return tensor


def uniform_(tensor: Tensor, low: float = 0.0, high: float = 1.0) -> Tensor:
    return _fill(tensor, fn_random.generator().uniform(low, high, tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    return _fill(tensor, fn_random.generator().normal(mean, std, tensor.shape))


def trunc_normal_(tensor: Tensor, std: float = 0.02, bound: float = 2.0) -> Tensor:
    """Normal(0, std) redrawn outside ±bound·std (the usual ViT initialisation)."""
    values = fn_random.generator().normal(0.0, 1.0, tensor.shape)
    outside = np.abs(values) > bound
    while outside.any():
        values[outside] = fn_random.generator().normal(0.0, 1.0, int(outside.sum()))
        outside = np.abs(values) > bound
    return _fill(tensor, values * std)


def constant_(tensor: Tensor, value: float) -> Tensor:
    return _fill(tensor, np.full(tensor.shape, value))


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, nonlinearity: str = "leaky_relu") -> Tensor:
    """U(-b, b) with b = gain·√(3 / fan_in), gain = √(2 / (1 + a²)) for (leaky) ReLU."""
    fan_in, _ = fan_in_and_fan_out(tensor.shape)
    gain = math.sqrt(2.0 / (1 + a * a)) if nonlinearity in ("leaky_relu", "relu") else 1.0
    bound = gain * math.sqrt(3.0 / fan_in)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor: Tensor, a: float = 0.0) -> Tensor:
    fan_in, _ = fan_in_and_fan_out(tensor.shape)
    return normal_(tensor, 0.0, math.sqrt(2.0 / (1 + a * a)) / math.sqrt(fan_in))


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = fan_in_and_fan_out(tensor.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)
