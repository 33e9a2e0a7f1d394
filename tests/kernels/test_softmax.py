"""Row softmax (attention weights) against the float64 reference, and the reference against
finite differences and hand-built masks.

Float32 tolerance: every output is one float32 exp (of a score minus the row max, computed in
float64 on the CPU and float32 on the GPU) times one reciprocal of a sum, so it sits within a few
float32 ulps of the reference: 2e-6 relative to the largest output. The backward adds one dot
product of at most 1000 terms (float64 on the CPU, a float32 tree on the GPU): same bound,
``FLOAT32_TOLERANCE``, tighter than the shared one. Float64 runs at the shared 1e-12.

CUDA tests run in Numba's simulator (see conftest): one block per row, so at most 4 rows; C=37
runs 32 threads looping twice over the columns, C=300 runs 128 threads (a 4-warp reduction) and
C=1100 the largest block (256 threads, 5 columns each).
"""

from __future__ import annotations

import numpy as np
import pytest

import numerics
from fastnet.kernels import _cuda
from fastnet.kernels._reduce import reduction_threads
from fastnet.kernels.softmax import (
    reference_softmax_backward,
    reference_softmax_forward,
    softmax_backward_cpu,
    softmax_backward_cuda,
    softmax_forward_cpu,
    softmax_forward_cuda,
)
from numerics import relative_error

# Tighter than the shared float32 bound: see the module docstring.
FLOAT32_TOLERANCE = 2e-6
CPU = (softmax_forward_cpu, softmax_backward_cpu)
CUDA = (softmax_forward_cuda, softmax_backward_cuda)
DEVICES = pytest.mark.parametrize("device", [CPU, CUDA], ids=["cpu", "cuda"])


def assert_close(got, ref, dtype):
    numerics.assert_close(got, ref, dtype, FLOAT32_TOLERANCE if dtype == np.float32 else None)


def numerical_gradient(loss, x, step=1e-6):
    """Central differences of the scalar loss(x) at every element of x (float64)."""
    basis = np.eye(x.size).reshape(x.size, *x.shape) * step
    return np.array([(loss(x + e) - loss(x - e)) / (2 * step) for e in basis]).reshape(x.shape)


def random_mask(rng, shape, hidden_fraction=0.3):
    """Additive mask: -inf at random places, small finite biases elsewhere."""
    mask = 0.5 * rng.standard_normal(shape)
    mask[rng.random(shape) < hidden_fraction] = -np.inf
    return mask


# --- the reference ---------------------------------------------------------------------------


def test_reference_on_a_hand_computed_row():
    y = reference_softmax_forward(np.array([[0.0, np.log(3.0)], [5.0, 5.0]]))
    np.testing.assert_allclose(y, [[0.25, 0.75], [0.5, 0.5]], rtol=1e-15)


def test_reference_backward_matches_finite_differences(rng):
    x = 3 * rng.standard_normal((3, 7))
    mask = random_mask(rng, (3, 7))
    dy = rng.standard_normal((3, 7))
    numeric = numerical_gradient(lambda v: np.sum(reference_softmax_forward(v, mask) * dy), x)
    analytic = reference_softmax_backward(reference_softmax_forward(x, mask), dy)
    assert relative_error(analytic, numeric) < 1e-8


def test_reference_causal_limit_is_the_shifted_lower_triangle(rng):
    queries, keys = 3, 5
    x = rng.standard_normal((2 * queries, keys))
    hidden = np.triu(np.full((queries, keys), -np.inf), k=keys - queries + 1)  # key c > q + (S - T)
    expected = reference_softmax_forward(x, np.tile(hidden, (2, 1)))
    assert np.array_equal(reference_softmax_forward(x, causal_query_len=queries), expected)
    assert np.all(expected[np.tile(np.isinf(hidden), (2, 1))] == 0)


# --- forward -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(13, 24), (13, 1000), (1, 5)])
def test_cpu_forward_matches_reference(rng, dtype, shape):
    x = (4 * rng.standard_normal(shape)).astype(dtype)
    assert_close(softmax_forward_cpu(x), reference_softmax_forward(x), dtype)


@pytest.mark.parametrize(
    "shape, dtype",
    [((3, 37), np.float32), ((2, 300), np.float32), ((1, 1100), np.float32), ((4, 5), np.float64)],
)
def test_cuda_forward_matches_reference(rng, shape, dtype):
    x = (4 * rng.standard_normal(shape)).astype(dtype)
    assert_close(softmax_forward_cuda(x), reference_softmax_forward(x), dtype)


@DEVICES
@pytest.mark.parametrize("per_row", [True, False], ids=["mask_RC", "mask_C"])
def test_forward_with_additive_mask_and_fully_masked_row(rng, device, per_row):
    forward, _ = device
    x = (3 * rng.standard_normal((4, 37))).astype(np.float32)
    mask = random_mask(rng, (4, 37) if per_row else (37,))
    if per_row:
        mask[2] = -np.inf
    y = forward(x, mask.astype(np.float32))
    ref = reference_softmax_forward(x, mask.astype(np.float32))
    assert_close(y, ref, np.float32)
    assert np.all(y[np.broadcast_to(np.isinf(mask), y.shape)] == 0)
    if per_row:
        assert np.all(y[2] == 0), "a fully-masked row gives zeros, not NaN"
    live = np.isfinite(mask).reshape(-1, 37).any(axis=1)
    np.testing.assert_allclose(y.sum(axis=1)[np.broadcast_to(live, (4,))], 1.0, rtol=1e-6)


def test_cpu_forward_propagates_nan_rows(rng):
    """A NaN makes its own row NaN (also where it is the only unmasked value, which the max
    passes over) and leaves the other rows alone."""
    x = (3 * rng.standard_normal((5, 70))).astype(np.float32)
    mask = np.zeros((5, 70), np.float32)
    x[1, 17] = np.nan
    mask[3] = -np.inf
    mask[3, 40] = 0.0
    x[3, 40] = np.nan
    y = softmax_forward_cpu(x, mask)
    assert np.isnan(y[[1, 3]]).all()
    rows = [0, 2, 4]
    assert_close(y[rows], reference_softmax_forward(x[rows], mask[rows]), np.float32)


@DEVICES
@pytest.mark.parametrize("queries, keys", [(4, 4), (2, 7)])
def test_forward_causal(rng, device, queries, keys):
    forward, _ = device
    x = rng.standard_normal((2 * queries, keys)).astype(np.float32)
    mask = random_mask(rng, (keys,), hidden_fraction=0.0).astype(np.float32)
    y = forward(x, mask, causal_query_len=queries)
    assert_close(y, reference_softmax_forward(x, mask, queries), np.float32)
    hidden = np.tile(np.triu(np.ones((queries, keys), bool), k=keys - queries + 1), (2, 1))
    assert np.all(y[hidden] == 0) and np.all(y[~hidden] > 0)


@DEVICES
@pytest.mark.parametrize("scale, offset", [(100.0, 0.0), (1e4, 0.0), (1.0, 1e4)])
def test_forward_large_magnitudes(rng, device, scale, offset):
    forward, _ = device
    x = (scale * rng.standard_normal((3, 37)) + offset).astype(np.float32)
    assert_close(forward(x), reference_softmax_forward(x), np.float32)


@DEVICES
def test_forward_with_no_rows(device):
    forward, _ = device
    assert forward(np.empty((0, 6), np.float32)).shape == (0, 6)


@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_cpu_serial_and_parallel_drivers_match_reference(force_driver, rng, driver):
    """The CPU policy picks a driver by size and threads: either gives the same results."""
    force_driver(driver)
    x = (4 * rng.standard_normal((12, 37))).astype(np.float32)
    mask = random_mask(rng, (37,)).astype(np.float32)
    y = softmax_forward_cpu(x, mask, causal_query_len=3)
    assert_close(y, reference_softmax_forward(x, mask, causal_query_len=3), np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    assert_close(softmax_backward_cpu(y, dy), reference_softmax_backward(y, dy), np.float32)


# --- backward ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(13, 24), (13, 1000), (1, 5)])
def test_cpu_backward_matches_reference(rng, dtype, shape):
    y = reference_softmax_forward(4 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    assert_close(softmax_backward_cpu(y, dy), reference_softmax_backward(y, dy), dtype)


@pytest.mark.parametrize(
    "shape, dtype", [((3, 37), np.float32), ((2, 300), np.float32), ((4, 5), np.float64)]
)
def test_cuda_backward_matches_reference(rng, shape, dtype):
    y = reference_softmax_forward(4 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    assert_close(softmax_backward_cuda(y, dy), reference_softmax_backward(y, dy), dtype)


def test_cuda_rows_past_the_grid_x_limit_continue_in_y(rng, monkeypatch):
    """gridDim.x stops at 2³¹ - 1 blocks; lowered to 2 here, 5 rows take a grid of 2 × 3 blocks
    (the last block has no row), and every row, causal mask included, is computed once."""
    monkeypatch.setattr(_cuda, "MAX_GRID_X", 2)
    x = (4 * rng.standard_normal((5, 7))).astype(np.float32)
    mask = random_mask(rng, (5, 7)).astype(np.float32)
    got = softmax_forward_cuda(x, mask, causal_query_len=5)
    assert_close(got, reference_softmax_forward(x, mask, causal_query_len=5), np.float32)
    dy = rng.standard_normal((5, 7)).astype(np.float32)
    assert_close(softmax_backward_cuda(got, dy), reference_softmax_backward(got, dy), np.float32)


@DEVICES
def test_float64_forward_and_backward_match_finite_differences(rng, device):
    """The gradient-check path of the tensor layer: the kernels themselves, in float64."""
    forward, backward = device
    x = 3 * rng.standard_normal((4, 6))
    mask = random_mask(rng, (4, 6))
    mask[1] = -np.inf
    dy = rng.standard_normal((4, 6))
    numeric = numerical_gradient(lambda v: np.sum(reference_softmax_forward(v, mask, 2) * dy), x)
    dx = backward(forward(x, mask, causal_query_len=2), dy)
    assert relative_error(dx, numeric) < 1e-8
    assert np.all(dx[1] == 0)


# --- launch shape and errors -------------------------------------------------------------------


def test_reduction_threads():
    assert [reduction_threads(n) for n in (1, 128, 129, 300, 1024, 10**6)] == [
        32,
        32,
        64,
        128,
        256,
        256,
    ]


@DEVICES
def test_forward_rejects_bad_arguments(device):
    forward, _ = device
    x = np.ones((6, 4), np.float32)
    with pytest.raises(ValueError, match=r"must be 2-D .* got shape \(2, 3, 4\)"):
        forward(np.ones((2, 3, 4), np.float32))
    with pytest.raises(TypeError, match="float32 or float64, got int64"):
        forward(np.ones((6, 4), np.int64))
    with pytest.raises(ValueError, match=r"mask shape \(6, 3\) must be \(4,\) or \(6, 4\)"):
        forward(x, np.zeros((6, 3), np.float32))
    with pytest.raises(TypeError, match="mask must be a float array"):
        forward(x, np.zeros(4, bool))
    with pytest.raises(ValueError, match="causal_query_len=4 must divide the 6 rows"):
        forward(x, causal_query_len=4)
    with pytest.raises(ValueError, match="causal_query_len=6 .* between 1 and the 4 columns"):
        forward(x, causal_query_len=6)
    with pytest.raises(TypeError, match="causal_query_len must be an int"):
        forward(x, causal_query_len=True)


@DEVICES
def test_backward_rejects_mismatched_arguments(device):
    _, backward = device
    y = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"y \(3, 4\) float32 and dy \(3, 5\) float32"):
        backward(y, np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"dy \(3, 4\) float64 must have the same shape and dtype"):
        backward(y, np.ones((3, 4), np.float64))
