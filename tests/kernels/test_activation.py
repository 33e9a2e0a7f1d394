"""ReLU forward and backward against the float64 references, on the CPU and in CUDA.

ReLU only selects and copies, so every output must equal the reference exactly (no tolerance).
Every output the module allocates starts as NaN (the ``poisoned_outputs`` fixture of conftest.py),
so an element the kernel never writes cannot pass by holding a stale value; the inputs are random
normals, so about half of each tensor takes each branch.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import activation
from fastnet.kernels.activation import (
    reference_relu_backward,
    reference_relu_forward,
    relu_backward_cpu,
    relu_backward_cuda,
    relu_forward_cpu,
    relu_forward_cuda,
)

FORWARD = {"cpu": relu_forward_cpu, "cuda": relu_forward_cuda}
BACKWARD = {"cpu": relu_backward_cpu, "cuda": relu_backward_cuda}
# odd sizes; the simulator walks each of its 2 blocks of 256 threads over several elements
SHAPES = [(1,), (1001,), (3, 5, 7), (2, 3, 33, 17)]


def assert_exact(got, ref, dtype):
    assert got.dtype == dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref.astype(dtype))


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_match_reference(rng, variant, dtype, shape):
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y = FORWARD[variant](x)
    assert_exact(y, reference_relu_forward(x), dtype)
    assert_exact(BACKWARD[variant](dy, y), reference_relu_backward(dy, y), dtype)


@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_cpu_serial_and_parallel_drivers_match_reference(force_driver, rng, driver):
    """The CPU policy picks a driver by size and threads: either gives the same results."""
    force_driver(driver)
    x = rng.standard_normal(100_003).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y = relu_forward_cpu(x)
    assert_exact(y, reference_relu_forward(x), np.float32)
    assert_exact(relu_backward_cpu(dy, y), reference_relu_backward(dy, y), np.float32)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_nan_propagates_forward_and_zero_is_not_positive(rng, variant):
    x = rng.standard_normal(9).astype(np.float32)
    x[[1, 4, 7]] = [np.nan, 0.0, -np.inf]
    y = FORWARD[variant](x)
    assert np.isnan(y[1]) and y[4] == 0.0 and y[7] == 0.0
    dx = BACKWARD[variant](np.ones_like(x), y)
    # no gradient through a NaN, through x = 0 (PyTorch's subgradient) or through -inf
    assert dx[1] == 0.0 and dx[4] == 0.0 and dx[7] == 0.0
    np.testing.assert_array_equal(dx, (x > 0).astype(np.float32))


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_non_contiguous_input_gives_contiguous_result(rng, variant):
    x = rng.standard_normal((6, 5)).astype(np.float32).T
    y = FORWARD[variant](x)
    assert y.shape == (5, 6) and y.flags.c_contiguous
    assert_exact(y, reference_relu_forward(x), np.float32)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_bad_arguments_are_named(rng, variant):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    with pytest.raises(
        ValueError, match=r"relu_backward: y shape \(4, 3\) does not match dy shape \(3, 4\)"
    ):
        BACKWARD[variant](x, x.T.copy())
    with pytest.raises(
        TypeError, match="relu_backward: y dtype float64 does not match dy dtype float32"
    ):
        BACKWARD[variant](x, x.astype(np.float64))
    with pytest.raises(
        TypeError, match="relu_forward: x dtype must be float32 or float64, got int32"
    ):
        FORWARD[variant](np.arange(4, dtype=np.int32))
    with pytest.raises(TypeError, match="relu_forward: x must be an array, got list"):
        FORWARD[variant]([1.0, -1.0])


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_add_relu_matches_reference(rng, variant, dtype, shape):
    """max(a + b, 0) in one pass: the sum rounds once to the dtype, as the reference's float64 sum
    rounded to it does, so the outputs are equal exactly; a NaN in either operand stays NaN."""
    a, b = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    a.reshape(-1)[0] = np.nan
    y = getattr(activation, f"add_relu_forward_{variant}")(a, b)
    assert_exact(y, activation.reference_add_relu_forward(a, b), dtype)
    assert np.isnan(y.reshape(-1)[0])


@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_add_relu_drivers_and_argument_checks(force_driver, rng, driver):
    force_driver(driver)
    a, b = (rng.standard_normal(100_003).astype(np.float32) for _ in range(2))
    assert_exact(
        activation.add_relu_forward_cpu(a, b), activation.reference_add_relu_forward(a, b), a.dtype
    )
    with pytest.raises(ValueError, match=r"add_relu_forward: b shape \(3,\) does not match"):
        activation.add_relu_forward_cpu(a, b[:3])
    with pytest.raises(TypeError, match="b dtype float64 does not match a dtype float32"):
        activation.add_relu_forward_cpu(a, b.astype(np.float64))


def test_the_in_place_relu_of_the_convolutions_is_the_rule_on_special_values():
    """kernels/_relu.relu_span (the fused ReLU of conv2d_relu), bit for bit: NaN of either sign
    kept, -inf and -0.0 to +0.0, denormals and +inf kept; only [start, stop) touched."""
    from numba import njit

    from fastnet.kernels._relu import relu_span

    span = njit(lambda y, start, stop: relu_span(y, start, stop))
    for dtype in (np.float32, np.float64):
        values = np.array(
            [np.nan, -np.nan, -np.inf, np.inf, -0.0, 0.0, -1.5, 2.5, 1e-300, -1e-300, 7.0, -7.0],
            dtype,
        )
        y = values.copy()
        span(y, 1, len(values) - 1)
        expected = values.copy()
        inner = values[1:-1]
        expected[1:-1] = np.where(np.isnan(inner) | (inner > 0), inner, 0)
        np.testing.assert_array_equal(y.view(f"u{y.itemsize}"), expected.view(f"u{y.itemsize}"))


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_of_a_sum_matches_reference(rng, variant, dtype, shape):
    """dx = (dy + dy_other)·[y > 0]: the sum of two values of the dtype rounds once, as the
    float64 reference's exact sum rounded to the dtype, and as NumPy's dy + dy_other: equal
    exactly, so the fused pass gives autograd the bits of adding first."""
    x, dy, dy_other = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    y = FORWARD[variant](x)
    dx = BACKWARD[variant](dy, y, dy_other=dy_other)
    assert_exact(dx, reference_relu_backward(dy, y, dy_other), dtype)
    assert_exact(dx, BACKWARD[variant](dy + dy_other, y), dtype)


@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_backward_of_a_sum_drivers_and_argument_checks(force_driver, rng, driver):
    force_driver(driver)
    x, dy, dy_other = (rng.standard_normal(100_003).astype(np.float32) for _ in range(3))
    x[:3] = [np.nan, 0.0, -np.inf]
    y = relu_forward_cpu(x)
    dx = relu_backward_cpu(dy, y, dy_other=dy_other)
    assert_exact(dx, reference_relu_backward(dy, y, dy_other), np.float32)
    assert dx[0] == dx[1] == dx[2] == 0.0
    with pytest.raises(ValueError, match=r"relu_backward: dy_other shape \(3,\) does not match"):
        relu_backward_cpu(dy, y, dy_other=dy_other[:3])
    with pytest.raises(TypeError, match="dy_other dtype float64 does not match dy dtype float32"):
        relu_backward_cpu(dy, y, dy_other=dy_other.astype(np.float64))
