"""Finite-difference gradient checking, in float64.

``gradcheck(fn, inputs)`` compares the gradient that autograd computes for
``sum(fn(*inputs) * w)`` (w a fixed random weighting, so every output element matters) with
central differences ``(f(x + h) − f(x − h)) / 2h`` for every element of every input that requires
a gradient. Inputs must be float64 tensors: in float32 the differences drown in rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .tensor import Tensor


def numerical_gradients(
    fn: Callable[..., Tensor], inputs: Sequence[Tensor], weights: np.ndarray, step: float = 1e-6
) -> list[np.ndarray | None]:
    gradients: list[np.ndarray | None] = []
    for tensor in inputs:
        if not tensor.requires_grad:
            gradients.append(None)
            continue
        values = tensor.numpy().copy()
        gradient = np.zeros_like(values)
        for index in np.ndindex(values.shape):
            original = values[index]
            losses = []
            for delta in (step, -step):
                values[index] = original + delta
                tensor.data = tensor.device.asarray(values.copy())
                losses.append(float((fn(*inputs).numpy() * weights).sum()))
            values[index] = original
            gradient[index] = (losses[0] - losses[1]) / (2 * step)
        tensor.data = tensor.device.asarray(values)
        gradients.append(gradient)
    return gradients


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    *,
    step: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    seed: int = 0,
) -> bool:
    """Raise AssertionError naming the input and the worst element when autograd and finite
    differences disagree by more than ``atol + rtol·max|numerical|``; return True otherwise."""
    for position, tensor in enumerate(inputs):
        if tensor.requires_grad and tensor.dtype != np.float64:
            raise TypeError(f"gradcheck: input {position} is {tensor.dtype}; use float64 inputs")
    output = fn(*inputs)
    weights = np.random.default_rng(seed).uniform(0.5, 1.5, output.shape)
    for tensor in inputs:
        tensor.grad = None
    (output * Tensor(weights, dtype=np.float64, device=output.device)).sum().backward()
    numerical = numerical_gradients(fn, inputs, weights, step)
    for position, (tensor, expected) in enumerate(zip(inputs, numerical, strict=True)):
        if expected is None:
            continue
        if tensor.grad is None:
            raise AssertionError(f"gradcheck: input {position} received no gradient")
        analytic = tensor.grad.numpy()
        error = np.abs(analytic - expected)
        tolerance = atol + rtol * max(np.abs(expected).max(), 1e-12)
        if error.max() > tolerance:
            worst = np.unravel_index(error.argmax(), error.shape)
            raise AssertionError(
                f"gradcheck: input {position} (shape {tensor.shape}): autograd "
                f"{analytic[worst]:.8g} vs finite differences {expected[worst]:.8g} at {worst} "
                f"(|error| {error.max():.3g} > {tolerance:.3g})"
            )
    return True
