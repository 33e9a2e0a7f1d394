"""GELU forward and backward against the float64 references, on the CPU and in CUDA.

float32 on the CPU goes through the erfc polynomial: every output within a few float32 ulps of
the float64 reference (relative error); float64 through libm, to float64 rounding. Outputs start
as NaN (conftest's poisoning), inputs are random normals spread over both tails, sizes are odd.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from fastnet.kernels.gelu import (
    gelu_backward_cpu,
    gelu_backward_cuda,
    gelu_forward_cpu,
    gelu_forward_cuda,
    reference_gelu_backward,
    reference_gelu_forward,
)

FORWARD = {"cpu": gelu_forward_cpu, "cuda": gelu_forward_cuda}
BACKWARD = {"cpu": gelu_backward_cpu, "cuda": gelu_backward_cuda}
SHAPES = [(1,), (1001,), (3, 5, 7), (2, 3, 33, 17)]
# relative error allowed against float64: float32 a few ulps (2^-23 = 1.2e-7), float64 a few too
RTOL = {np.float32: 4e-7, np.float64: 1e-14}


def assert_close(got, ref, dtype, scale=None):
    """got within RTOL of ref relative to |ref| (or to ``scale``, the size of the terms a result
    sums, where they cancel), except where that is too small for the dtype to hold relatively."""
    assert got.dtype == dtype and got.shape == ref.shape
    ref = ref.astype(np.float64)
    floor = np.finfo(dtype).tiny / np.finfo(dtype).eps
    size = np.abs(ref) if scale is None else scale
    error = np.abs(got.astype(np.float64) - ref) / np.maximum(size, floor)
    assert error.max() <= RTOL[dtype], f"max relative error {error.max():.3g}"


def gradient_terms(dy, x):
    """|dy| · (Φ(x) + |x|·φ(x)): what the backward's sum adds before it cancels near x = -0.75."""
    x = np.asarray(x, np.float64)
    cdf = 0.5 * np.frompyfunc(math.erfc, 1, 1)(-x / math.sqrt(2)).astype(np.float64)
    return np.abs(dy) * (cdf + np.abs(x) * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))


def spread(rng, shape, dtype):
    """Normals scaled by 3: a fair share of each tail (|x| up to about 15)."""
    return (3 * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_match_reference(rng, variant, dtype, shape):
    x, dy = spread(rng, shape, dtype), rng.standard_normal(shape).astype(dtype)
    assert_close(FORWARD[variant](x), reference_gelu_forward(x), dtype)
    dx = BACKWARD[variant](dy, x)
    assert_close(dx, reference_gelu_backward(dy, x), dtype, gradient_terms(dy, x))


def test_float32_polynomial_holds_on_a_dense_grid():
    """Every float32 step of [-16, 16] in 1/4096 (131,073 points), and the tails past it."""
    x = np.concatenate([np.arange(-65536, 65537) / 4096.0, [-30.0, -14.1, 14.1, 30.0, 3e38]])
    x = x.astype(np.float32)
    ones = np.ones_like(x)
    assert_close(gelu_forward_cpu(x), reference_gelu_forward(x), np.float32)
    dx = gelu_backward_cpu(ones, x)
    assert_close(dx, reference_gelu_backward(ones, x), np.float32, gradient_terms(ones, x))


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_edges_as_pytorch(variant, dtype):
    """NaN stays NaN, +inf gives +inf, -inf gives NaN (-inf·0), -0 and 0 give zeros, a huge
    negative input gives -0 (as the float64 product does)."""
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -3e38, 3e38, -40.0], dtype)
    y = FORWARD[variant](x)
    assert np.isnan(y[0]) and y[1] == np.inf and np.isnan(y[2])
    assert y[3] == 0 and y[4] == 0 and y[5] == 0 and y[6] == x[6] and y[7] == 0
    dx = BACKWARD[variant](np.ones_like(x), x)
    assert np.isnan(dx[0]) and dx[5] == 0 and dx[6] == 1
    np.testing.assert_allclose(dx[3:5], 0.5, rtol=RTOL[dtype])  # Φ(0), to the kernels' accuracy


@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_cpu_serial_and_parallel_drivers_match_reference(force_driver, rng, driver):
    force_driver(driver)
    x, dy = spread(rng, 100_003, np.float32), rng.standard_normal(100_003).astype(np.float32)
    assert_close(gelu_forward_cpu(x), reference_gelu_forward(x), np.float32)
    dx = gelu_backward_cpu(dy, x)
    assert_close(dx, reference_gelu_backward(dy, x), np.float32, gradient_terms(dy, x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_gives_the_same_bits_serial_and_parallel(force_driver, rng, dtype):
    """Two compilations of one body, the work really split over the threads (odd sizes put
    different elements in vector and scalar code): the same bits, so training does not depend on
    the thread count."""
    for size in (100_003, 4_099, 77):
        x, dy = spread(rng, size, dtype), rng.standard_normal(size).astype(dtype)
        results = []
        before = numba.get_num_threads()
        for driver in ("serial", "parallel"):
            force_driver(driver)
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
            try:
                results.append((gelu_forward_cpu(x), gelu_backward_cpu(dy, x)))
            finally:
                numba.set_num_threads(before)
        for serial, parallel in zip(*results, strict=True):
            np.testing.assert_array_equal(serial, parallel)


def test_backward_is_the_derivative_of_the_forward(rng):
    """Central differences of the float64 kernel against its backward."""
    x = spread(rng, 257, np.float64)
    step = 1e-6
    numeric = (gelu_forward_cpu(x + step) - gelu_forward_cpu(x - step)) / (2 * step)
    np.testing.assert_allclose(gelu_backward_cpu(np.ones_like(x), x), numeric, rtol=1e-7, atol=1e-9)


def test_reference_is_the_definition():
    """The reference itself: x·Φ(x) at points whose Φ is known."""
    x = np.array([0.0, 1.0, -1.0, 2.0])
    cdf = [0.5, 0.8413447460685429, 0.15865525393145707, 0.9772498680518208]
    np.testing.assert_allclose(reference_gelu_forward(x), x * cdf, rtol=1e-15)
    pdf = math.exp(-0.5) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(reference_gelu_backward(np.ones(1), np.ones(1)), [cdf[1] + pdf])


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_arguments_are_checked(variant):
    x = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="gelu_forward: x dtype must be float32 or float64"):
        FORWARD[variant](np.ones(4, np.int32))
    with pytest.raises(ValueError, match=r"gelu_backward: x shape \(5,\) does not match dy"):
        BACKWARD[variant](x, np.ones(5, np.float32))
    with pytest.raises(TypeError, match="gelu_backward: x dtype float64 does not match dy"):
        BACKWARD[variant](x, np.ones(4, np.float64))
