"""Max-pool forward and backward against the float64 references, on the CPU and in CUDA.

The forward pass only compares and copies, so y and argmax must equal the reference exactly (ties
included: the first maximum in row-major window order wins). The backward pass sums at most
ceil(KH/SH) * ceil(KW/SW) <= 9 values of dy per pixel, in another order than ``np.add.at``: in
float32 that is below 9 * 2**-24 ≈ 5e-7 of the largest term, so 1e-5 of the largest output leaves
room yet catches a gradient routed to the wrong pixel or dropped (an error of order 1e-1). Float64
at 1e-12.

Every output the module allocates starts as NaN (argmax as -1: ``poisoned_outputs`` in
conftest.py), so an element the kernel never writes cannot pass by holding a stale, equal value.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels.pool import (
    maxpool2d_backward_cpu,
    maxpool2d_backward_cuda,
    maxpool2d_forward_cpu,
    maxpool2d_forward_cuda,
    reference_maxpool2d_backward,
    reference_maxpool2d_forward,
)
from numerics import TOLERANCE, relative_error

FORWARD = {"cpu": maxpool2d_forward_cpu, "cuda": maxpool2d_forward_cuda}
BACKWARD = {"cpu": maxpool2d_backward_cpu, "cuda": maxpool2d_backward_cuda}

# (x shape (N, C, H, W), kernel_hw, stride, padding)
CASES = [
    ((2, 3, 8, 8), 2, 2, 0),
    ((2, 3, 7, 9), 3, 2, 1),  # overlapping windows, padded
    ((1, 2, 7, 9), (3, 2), (1, 2), (1, 1)),  # batch 1, non-square kernel and stride
    ((2, 2, 5, 6), 3, 1, 1),  # stride 1: each pixel in up to 9 windows
    ((1, 1, 4, 5), 1, 1, 0),
    ((2, 2, 3, 3), 3, 1, 1),  # one window inside the image, every other one touches the padding
    ((2, 33, 5, 7), 2, 2, 0),  # the CPU's own 2x2 kernel: odd sides, 66 planes in two tasks of 64
]
# Tiny shapes for the simulator: every launch is one or two blocks of 256 threads.
CUDA_CASES = [CASES[1], ((1, 2, 7, 9), (3, 2), (1, 2), (1, 1)), ((2, 1, 5, 6), 3, 1, 1)]


def case_id(case):
    shape, kernel, stride, padding = case
    return f"x{'x'.join(map(str, shape))}-k{kernel}-s{stride}-p{padding}"


def variant_cases(cuda_cases=CUDA_CASES):
    """(variant, case) pairs: every case on the CPU, the tiny ones in CUDA."""
    return [pytest.param("cpu", case, id=f"cpu-{case_id(case)}") for case in CASES] + [
        pytest.param("cuda", case, id=f"cuda-{case_id(case)}") for case in cuda_cases
    ]


def assert_forward_equals_reference(variant, x, kernel, stride, padding):
    y, argmax = FORWARD[variant](x, kernel, stride, padding)
    ref_y, ref_argmax = reference_maxpool2d_forward(x, kernel, stride, padding)
    assert y.dtype == x.dtype and argmax.dtype == np.int32
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(argmax, ref_argmax)
    return y, argmax


# --- references -----------------------------------------------------------------------------------


def test_reference_forward_on_a_hand_example():
    x = np.array(
        [[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 8.0, 8.0], [9.0, 0.0, 1.0, 1.0], [7.0, 9.0, 2.0, 1.0]]
    )
    y, argmax = reference_maxpool2d_forward(x[None, None], 2, 2, 0)
    np.testing.assert_array_equal(y[0, 0], [[5, 8], [9, 2]])
    np.testing.assert_array_equal(argmax[0, 0], [[1, 6], [8, 14]])  # ties: the first 8, the first 9
    # Kernel 3, stride 2, padding 1: windows start at rows/columns -1 and 1.
    y, argmax = reference_maxpool2d_forward(-x[None, None], 3, 2, 1)
    np.testing.assert_array_equal(y[0, 0], [[-1, 0], [0, 0]])
    np.testing.assert_array_equal(argmax[0, 0], [[0, 3], [9, 9]])


def test_reference_backward_on_a_hand_example():
    argmax = np.array([[[[0, 3], [9, 9]]]], np.int32)
    dy = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    dx = reference_maxpool2d_backward(dy, argmax, (1, 1, 4, 4), 3, 2, 1)
    np.testing.assert_array_equal(
        dx[0, 0], [[1, 0, 0, 2], [0, 0, 0, 0], [0, 7, 0, 0], [0, 0, 0, 0]]
    )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_reference_backward_is_the_gradient_of_the_reference_forward(rng, case):
    """Central differences of sum(dy * y(x)): exact while no argmax changes, so x's values are
    distinct and at least 0.1 apart, and the step is 1e-3."""
    shape, kernel, stride, padding = case
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.1
    y, argmax = reference_maxpool2d_forward(x, kernel, stride, padding)
    dy = rng.standard_normal(y.shape)
    step = 1e-3
    numeric = np.empty(shape)
    for index in np.ndindex(shape):
        bumped = x.copy()
        bumped[index] += step
        above = np.vdot(dy, reference_maxpool2d_forward(bumped, kernel, stride, padding)[0])
        bumped[index] -= 2 * step
        below = np.vdot(dy, reference_maxpool2d_forward(bumped, kernel, stride, padding)[0])
        numeric[index] = (above - below) / (2 * step)
    analytic = reference_maxpool2d_backward(dy, argmax, shape, kernel, stride, padding)
    np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        maxpool2d_backward_cpu(dy, argmax, shape, kernel, stride, padding), numeric, atol=1e-9
    )


# --- forward --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant, case", variant_cases(CUDA_CASES[:1]))
def test_forward_equals_reference(rng, variant, case, dtype):
    shape, kernel, stride, padding = case
    assert_forward_equals_reference(
        variant, rng.standard_normal(shape).astype(dtype), kernel, stride, padding
    )


@pytest.mark.parametrize("variant, case", variant_cases())
def test_forward_ties_go_to_the_first_maximum(rng, variant, case):
    shape, kernel, stride, padding = case
    x = rng.integers(0, 3, shape).astype(np.float32)  # many equal maxima in every window
    assert_forward_equals_reference(variant, x, kernel, stride, padding)


@pytest.mark.parametrize("variant, case", variant_cases(CUDA_CASES[:1]))
def test_forward_never_picks_the_padding(rng, variant, case):
    """Padding counts as -inf: with every pixel negative, a zero pad would win the edge windows."""
    shape, kernel, stride, padding = case
    x = -rng.uniform(1.0, 2.0, shape).astype(np.float32)
    y, argmax = assert_forward_equals_reference(variant, x, kernel, stride, padding)
    assert np.all(y < 0)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_forward_propagates_nan(rng, variant):
    x = rng.standard_normal((1, 2, 7, 9)).astype(np.float32)
    x[0, 0, 3, 4] = x[0, 1, 0, 0] = np.nan
    x[0, 1, 0, 1] = np.nan  # a second NaN in the same window: the first one is named
    y, argmax = assert_forward_equals_reference(variant, x, 3, 2, 1)
    assert np.isnan(y[0, 0, 1:3, 2]).all() and np.isnan(y[0, 1, 0, 0:2]).all()
    assert argmax[0, 1, 0, 0] == 0 and argmax[0, 0, 1, 2] == 3 * 9 + 4


@pytest.mark.parametrize("variant, case", variant_cases())
def test_forward_with_nans_and_infinities_among_ties(rng, variant, case):
    """The CPU fast path over windows inside the image counts NaNs on the side and hands a row
    holding one to the NaN-ordered scan; -inf pixels must still lose to nothing but padding."""
    shape, kernel, stride, padding = case
    x = rng.integers(0, 3, shape).astype(np.float32)
    x[rng.random(shape) < 0.05] = np.nan
    x[rng.random(shape) < 0.1] = -np.inf
    assert_forward_equals_reference(variant, x, kernel, stride, padding)


def test_forward_cpu_nan_ordering_inside_the_image(rng):
    """2x2/stride 2 on an 8x10 plane: every window lies inside the image (the CPU fast path)."""
    x = rng.standard_normal((1, 2, 8, 10)).astype(np.float32)
    x[0, 0, 2, 3] = np.nan  # the last pixel of window (1, 1)
    x[0, 0, 3, 2] = np.nan  # a later NaN in the same window: the first one is named
    x[0, 1, 4, 4] = np.nan  # the window's first pixel
    x[0, 1, 0:2, 8:10] = -np.inf  # a window of -inf: its first pixel
    y, argmax = assert_forward_equals_reference("cpu", x, 2, 2, 0)
    assert argmax[0, 0, 1, 1] == 2 * 10 + 3 and argmax[0, 1, 2, 2] == 4 * 10 + 4
    assert argmax[0, 1, 0, 4] == 8 and y[0, 1, 0, 4] == -np.inf
    assert np.isnan(y).sum() == 2


def test_forward_cpu_accepts_non_contiguous_input(rng):
    x = rng.standard_normal((2, 3, 7, 18)).astype(np.float32)[..., ::2]
    assert_forward_equals_reference("cpu", x, 3, 2, 1)


# --- backward -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant, case", variant_cases(CUDA_CASES[:1]))
def test_backward_matches_reference(rng, variant, case, dtype):
    shape, kernel, stride, padding = case
    x = rng.integers(0, 4, shape).astype(dtype)  # ties: one pixel is the argmax of several windows
    _, argmax = reference_maxpool2d_forward(x, kernel, stride, padding)
    dy = rng.standard_normal(argmax.shape).astype(dtype)
    dx = BACKWARD[variant](dy, argmax, shape, kernel, stride, padding)
    assert dx.shape == shape and dx.dtype == dtype
    assert (
        relative_error(dx, reference_maxpool2d_backward(dy, argmax, shape, kernel, stride, padding))
        <= TOLERANCE[dtype]
    )


@pytest.mark.parametrize("variant, case", variant_cases())
def test_forward_then_backward_on_distinct_values(rng, variant, case):
    shape, kernel, stride, padding = case
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32)
    _, argmax = FORWARD[variant](x, kernel, stride, padding)
    dy = rng.standard_normal(argmax.shape).astype(np.float32)
    dx = BACKWARD[variant](dy, argmax, shape, kernel, stride, padding)
    assert (
        relative_error(dx, reference_maxpool2d_backward(dy, argmax, shape, kernel, stride, padding))
        <= 1e-5
    )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cpu_serial_and_parallel_drivers_agree_bitwise(force_driver, rng, case):
    """The CPU policy picks a driver by size and threads: both give the same bits, NaNs included."""
    shape, kernel, stride, padding = case
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::7] = np.nan
    dy = rng.standard_normal(reference_maxpool2d_forward(x, kernel, stride, padding)[0].shape)
    dy = dy.astype(np.float32)
    results = []
    for driver in ("serial", "parallel"):
        force_driver(driver)
        y, argmax = maxpool2d_forward_cpu(x, kernel, stride, padding)
        dx = maxpool2d_backward_cpu(dy, argmax, shape, kernel, stride, padding)
        results.append((y, argmax, dx))
    for serial, parallel in zip(*results, strict=True):
        np.testing.assert_array_equal(serial, parallel)
    assert_forward_equals_reference("cpu", x, kernel, stride, padding)


def test_backward_cpu_rejects_argmax_outside_the_plane(rng):
    argmax = np.zeros((1, 2, 4, 4), np.int32)
    argmax[0, 1, 2, 3] = 81
    argmax[0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match=r"2 argmax entries lie outside \[0, 81\), the 9x9 plane"):
        maxpool2d_backward_cpu(np.ones((1, 2, 4, 4), np.float32), argmax, (1, 2, 9, 9), 3, 2, 0)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_empty_batch(variant):
    y, argmax = FORWARD[variant](np.ones((0, 3, 7, 9), np.float32), 3, 2, 1)
    assert y.shape == argmax.shape == (0, 3, 4, 5)
    assert BACKWARD[variant](y, argmax, (0, 3, 7, 9), 3, 2, 1).shape == (0, 3, 7, 9)


# --- errors (one validation serves both variants) -------------------------------------------------


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
@pytest.mark.parametrize(
    "shape, kernel, stride, padding, error, message",
    [
        (
            (3, 7, 9),
            2,
            2,
            0,
            ValueError,
            r"maxpool2d_forward expects a 4-D input \(N, C, H, W\), got shape \(3, 7, 9\)",
        ),
        (
            (1, 1, 7, 9),
            3,
            2,
            (1, 2),
            ValueError,
            r"padding \(1, 2\) must be at most half the kernel 3x3",
        ),
        (
            (1, 1, 1, 9),
            4,
            2,
            1,
            ValueError,
            r"kernel 4x4 does not fit the 1x9 input padded by \(1, 1\) to 3x11",
        ),
        ((1, 1, 7, 9), 3, (2, 0), 1, ValueError, r"stride must be >= 1, got \(2, 0\)"),
    ],
)
def test_forward_rejects_bad_arguments(variant, shape, kernel, stride, padding, error, message):
    with pytest.raises(error, match=message):
        FORWARD[variant](np.ones(shape, np.float32), kernel, stride, padding)
    with pytest.raises(
        TypeError, match="maxpool2d_forward expects x of dtype float32 or float64, got int32"
    ):
        FORWARD[variant](np.ones((1, 1, 4, 4), np.int32), 2, 2, 0)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_backward_rejects_bad_arguments(variant):
    backward = BACKWARD[variant]
    dy, argmax = np.ones((1, 2, 4, 5), np.float32), np.zeros((1, 2, 4, 5), np.int32)
    with pytest.raises(
        TypeError, match="maxpool2d_backward expects argmax of dtype int32, got int64"
    ):
        backward(dy, argmax.astype(np.int64), (1, 2, 7, 9), 3, 2, 1)
    with pytest.raises(
        TypeError, match="maxpool2d_backward expects dy of dtype float32 or float64, got int32"
    ):
        backward(argmax, argmax, (1, 2, 7, 9), 3, 2, 1)
    with pytest.raises(
        ValueError,
        match=r"expects dy and argmax of shape \(1, 2, 4, 5\) for x_shape \(1, 2, 7, 9\), "
        r"got dy \(1, 2, 5, 4\) and argmax \(1, 2, 4, 5\)",
    ):
        backward(dy.reshape(1, 2, 5, 4), argmax, (1, 2, 7, 9), 3, 2, 1)
    with pytest.raises(
        ValueError,
        match=r"maxpool2d_backward expects a 4-D input \(N, C, H, W\), got shape \(2, 7, 9\)",
    ):
        backward(dy, argmax, (2, 7, 9), 3, 2, 1)


# --- ceil_mode: the last window of a row or column may hang past the padded edge ----------------

# (x shape, kernel_hw, stride, padding): each has a window hanging past the padded edge in
# ceil_mode (odd sides under 2x2, a stride that does not divide the padded side)
CEIL_CASES = [
    ((2, 3, 7, 9), 2, 2, 0),  # the 2x2 shape: its own CPU kernel cannot take a hanging window
    ((1, 2, 8, 7), 3, 2, 1),
    ((2, 2, 6, 7), (3, 2), (2, 3), (1, 0)),
    ((1, 3, 7, 6), 2, 3, 0),  # stride past the kernel: rows between windows
    ((1, 2, 6, 7), 3, 3, 1),  # the last row window: one image row, one padding, one past it
]
CEIL_CUDA_CASES = CEIL_CASES[:2]


def ceil_variant_cases():
    return [pytest.param("cpu", case, id=f"cpu-{case_id(case)}") for case in CEIL_CASES] + [
        pytest.param("cuda", case, id=f"cuda-{case_id(case)}") for case in CEIL_CUDA_CASES
    ]


def test_reference_forward_in_ceil_mode_on_a_hand_example():
    x = np.arange(15.0).reshape(1, 1, 3, 5)
    y, argmax = reference_maxpool2d_forward(x, 2, 2, 0, ceil_mode=True)
    # windows start at rows 0, 2 and columns 0, 2, 4: the last row and column are clipped
    np.testing.assert_array_equal(y[0, 0], [[6, 8, 9], [11, 13, 14]])
    np.testing.assert_array_equal(argmax[0, 0], [[6, 8, 9], [11, 13, 14]])
    assert reference_maxpool2d_forward(x, 2, 2, 0)[0].shape == (1, 1, 1, 2)


@pytest.mark.parametrize("case", CEIL_CASES, ids=case_id)
def test_ceil_mode_grows_the_output_by_the_hanging_windows(case):
    shape, kernel, stride, padding = case
    floor_y, _ = reference_maxpool2d_forward(np.ones(shape), kernel, stride, padding)
    ceil_y, _ = reference_maxpool2d_forward(np.ones(shape), kernel, stride, padding, True)
    assert ceil_y.shape != floor_y.shape


@pytest.mark.parametrize("case", CEIL_CASES, ids=case_id)
def test_reference_backward_in_ceil_mode_is_the_gradient_of_the_forward(rng, case):
    shape, kernel, stride, padding = case
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.1
    y, argmax = reference_maxpool2d_forward(x, kernel, stride, padding, True)
    dy = rng.standard_normal(y.shape)
    step, numeric = 1e-3, np.empty(shape)
    for index in np.ndindex(shape):
        bumped = x.copy()
        bumped[index] += step
        above = np.vdot(dy, reference_maxpool2d_forward(bumped, kernel, stride, padding, True)[0])
        bumped[index] -= 2 * step
        below = np.vdot(dy, reference_maxpool2d_forward(bumped, kernel, stride, padding, True)[0])
        numeric[index] = (above - below) / (2 * step)
    analytic = reference_maxpool2d_backward(dy, argmax, shape, kernel, stride, padding, True)
    np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant, case", ceil_variant_cases())
def test_ceil_mode_forward_and_backward_match_the_reference(rng, variant, case, dtype):
    shape, kernel, stride, padding = case
    x = rng.integers(0, 4, shape).astype(dtype)  # ties, and all-negative windows below
    x[:, :, -1, -1] = -5  # a hanging corner window's only pixel may be a low one
    y, argmax = FORWARD[variant](x, kernel, stride, padding, True)
    ref_y, ref_argmax = reference_maxpool2d_forward(x, kernel, stride, padding, True)
    assert y.dtype == dtype and y.shape == ref_y.shape
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(argmax, ref_argmax)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = BACKWARD[variant](dy, argmax, shape, kernel, stride, padding, True)
    expected = reference_maxpool2d_backward(dy, argmax, shape, kernel, stride, padding, True)
    assert dx.shape == shape and relative_error(dx, expected) <= TOLERANCE[dtype]


@pytest.mark.parametrize("case", CEIL_CASES, ids=case_id)
def test_ceil_mode_cpu_serial_and_parallel_drivers_agree_bitwise(force_driver, rng, case):
    shape, kernel, stride, padding = case
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::5] = np.nan
    results = []
    for driver in ("serial", "parallel"):
        force_driver(driver)
        y, argmax = maxpool2d_forward_cpu(x, kernel, stride, padding, True)
        dx = maxpool2d_backward_cpu(np.ones_like(y), argmax, shape, kernel, stride, padding, True)
        results.append((y, argmax, dx))
    for serial, parallel in zip(*results, strict=True):
        np.testing.assert_array_equal(serial, parallel)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_ceil_mode_backward_checks_the_ceil_shape(variant):
    dy, argmax = np.ones((1, 1, 2, 3), np.float32), np.zeros((1, 1, 2, 3), np.int32)
    BACKWARD[variant](dy, argmax, (1, 1, 3, 5), 2, 2, 0, True)
    with pytest.raises(ValueError, match=r"expects dy and argmax of shape \(1, 1, 1, 2\)"):
        BACKWARD[variant](dy, argmax, (1, 1, 3, 5), 2, 2, 0)
