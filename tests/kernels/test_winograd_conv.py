"""The whole Winograd convolution in one call (``winograd_conv2d`` and its backward) against the
float64 references, on the CPU (serial, and parallel with each thread's own tile buffers) and in
CUDA's simulator; the references against the direct convolution; errors.

Tolerances as in test_winograd.py (the transforms' rounding), outputs poisoned (conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import conv, winograd
from fastnet.kernels._cuda import gpu_available
from fastnet.kernels.winograd import reference_conv2d, reference_conv2d_backward
from numerics import TOLERANCE, relative_error

# (x shape (N, C, H, W), output channels, padding, images a chunk): uneven last chunks, odd sides,
# unequal padding, a plane smaller than a tile, one chunk for the whole batch
CASES = [
    ((5, 3, 7, 9), 4, 1, 2),
    ((3, 2, 17, 18), 4, 1, 2),
    ((4, 2, 6, 5), 3, (0, 2), 3),
    ((3, 4, 1, 2), 2, 1, 1),
    ((2, 3, 4, 4), 5, 0, 8),
    # the host's register-tiled products (4 rows x 16 tiles): with rows and tiles left over for
    # BLAS both ways (K = 7, C = 6, 60 tiles a chunk), and in whole tiles only (16 a chunk)
    ((3, 6, 9, 11), 7, 1, 2),
    ((2, 8, 8, 8), 8, 1, 1),
]
CUDA_CASES = [((3, 2, 4, 5), 2, 1, 2)]


def case_id(case):
    shape, out_channels, padding, chunk = case
    return f"x{'x'.join(map(str, shape))}-k{out_channels}-p{padding}-chunk{chunk}"


def operands(rng, case, dtype):
    shape, out_channels, padding, chunk = case
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal((out_channels, shape[1], 3, 3)).astype(dtype)
    bias = rng.standard_normal(out_channels).astype(dtype)
    return x, weight, bias, padding, chunk


def runs():
    """Every case through the serial driver in both dtypes; through the parallel one in float32
    (the same body, compiled again: each parallel compile costs ~20 s of a fresh CI run)."""
    for case in CASES:
        for dtype, drivers in ((np.float32, ("serial", "parallel")), (np.float64, ("serial",))):
            for driver in drivers:
                name = f"cpu-{driver}-{case_id(case)}-{np.dtype(dtype).name}"
                yield pytest.param("cpu", driver, case, dtype, id=name)
    for case in CUDA_CASES:
        yield pytest.param("cuda", "grid", case, np.float32, id=f"cuda-{case_id(case)}")


@pytest.mark.parametrize("variant, driver, case, dtype", list(runs()))
def test_forward_and_backward_match_the_references(
    force_driver, two_threads, rng, variant, driver, case, dtype
):
    if variant == "cpu":  # parallel: the chunks split over two threads, each with its own tiles
        force_driver(driver)
    x, weight, bias, padding, chunk = operands(rng, case, dtype)
    conv2d = getattr(winograd, f"winograd_conv2d_{variant}")
    backward = getattr(winograd, f"winograd_conv2d_backward_{variant}")
    u = getattr(winograd, f"winograd_weights_{variant}")(weight)
    y = conv2d(x, u, bias, padding, chunk)
    expected = reference_conv2d(x, u, bias, padding, chunk)
    assert y.dtype == dtype and y.shape == expected.shape
    assert relative_error(y, expected) <= TOLERANCE[dtype]
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = backward(dy, x, u, padding, chunk)
    for name, value, reference in zip(
        ("dx", "dU", "db"), got, reference_conv2d_backward(dy, x, u, padding, chunk), strict=True
    ):
        assert value.dtype == dtype and value.shape == reference.shape, name
        assert relative_error(value, reference) <= TOLERANCE[dtype], name


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_reference_is_the_direct_convolution(rng, case):
    x, weight, bias, padding, chunk = operands(rng, case, np.float64)
    u = winograd.reference_weights(weight)
    direct = conv.reference_conv2d(x, weight, bias, 1, padding)
    assert relative_error(reference_conv2d(x, u, bias, padding, chunk), direct) <= 1e-12


def test_gradients_not_asked_for_are_none_and_the_rest_unchanged(rng):
    x, weight, _, padding, chunk = operands(rng, CASES[0], np.float32)
    u = winograd.winograd_weights_cpu(weight)
    dy = rng.standard_normal(winograd.winograd_conv2d_cpu(x, u, None, padding, chunk).shape)
    dy = dy.astype(np.float32)
    full = winograd.winograd_conv2d_backward_cpu(dy, x, u, padding, chunk)
    for need in ((True, False, False), (False, True, False), (False, False, True)):
        got = winograd.winograd_conv2d_backward_cpu(dy, x, u, padding, chunk, *need)
        for wanted, value, expected in zip(need, got, full, strict=True):
            if wanted:
                np.testing.assert_array_equal(value, expected)
            else:
                assert value is None


def test_more_threads_than_chunks(force_driver, two_threads, rng):
    """One image, one chunk, two threads: the second thread has nothing to do and adds nothing."""
    force_driver("parallel")
    x, weight, bias, padding, chunk = operands(rng, ((1, 3, 6, 6), 2, 1, 4), np.float32)
    u = winograd.winograd_weights_cpu(weight)
    y = winograd.winograd_conv2d_cpu(x, u, bias, padding, chunk)
    assert relative_error(y, reference_conv2d(x, u, bias, padding, chunk)) <= 1e-5
    dy = rng.standard_normal(y.shape).astype(np.float32)
    got = winograd.winograd_conv2d_backward_cpu(dy, x, u, padding, chunk)
    expected = reference_conv2d_backward(dy, x, u, padding, chunk)
    for value, reference in zip(got, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5


def test_written_into_a_slice_of_a_larger_output(rng):
    x, weight, bias, padding, chunk = operands(rng, CASES[0], np.float32)
    u = winograd.winograd_weights_cpu(weight)
    expected = reference_conv2d(x, u, bias, padding, chunk)
    big = np.full((7, *expected.shape[1:]), np.nan, np.float32)
    assert winograd.winograd_conv2d_cpu(x, u, bias, padding, chunk, out=big[1:6]).base is big
    assert relative_error(big[1:6], expected) <= 1e-5
    assert np.isnan(big[[0, 6]]).all()


@pytest.mark.parametrize("variant", ("cpu", "cuda"))
def test_bad_arguments_name_what_is_wrong(variant):
    conv2d = getattr(winograd, f"winograd_conv2d_{variant}")
    backward = getattr(winograd, f"winograd_conv2d_backward_{variant}")
    x = np.ones((2, 3, 5, 5), np.float32)
    u = np.ones((16, 4, 3), np.float32)
    with pytest.raises(ValueError, match="chunk_images must be positive"):
        conv2d(x, u, None, 1, 0)
    with pytest.raises(TypeError, match="chunk_images must be an int"):
        conv2d(x, u, None, 1, True)
    with pytest.raises(ValueError, match=r"tiles_weight of shape \(16, 4, 3\)"):
        conv2d(x, np.ones((16, 4, 2), np.float32), None, 1, 1)
    with pytest.raises(ValueError, match="tiles_weight is float64"):
        conv2d(x, u.astype(np.float64), None, 1, 1)
    with pytest.raises(ValueError, match=r"bias of shape \(4,\)"):
        conv2d(x, u, np.ones(3, np.float32), 1, 1)
    with pytest.raises(ValueError, match=r"dy of shape \(2, 4, 5, 5\)"):
        backward(np.ones((2, 4, 5, 4), np.float32), x, u, 1, 1)
    with pytest.raises(ValueError, match="does not fit"):
        conv2d(np.ones((1, 3, 1, 1), np.float32), u, None, 0, 1)


@pytest.mark.parametrize(
    "variant, driver, case",
    [("cpu", "serial", CASES[0]), ("cpu", "parallel", CASES[1]), ("cpu", "serial", CASES[2])]
    + [("cuda", "grid", CUDA_CASES[0])],
    ids=lambda value: case_id(value) if isinstance(value, tuple) else value,
)
def test_relu_is_the_rule_over_the_plain_output(
    force_driver, two_threads, rng, variant, driver, case
):
    """relu=True: bit for bit the ReLU rule (NaN kept) over relu=False's output, each plane
    clamped as it is written; a NaN input included."""
    if variant == "cpu":
        force_driver(driver)
    x, weight, bias, padding, chunk = operands(rng, case, np.float32)
    x[-1, 0, 1, 1] = np.nan
    u = getattr(winograd, f"winograd_weights_{variant}")(weight)
    conv2d = getattr(winograd, f"winograd_conv2d_{variant}")
    plain = conv2d(x, u, bias, padding, chunk)
    fused = conv2d(x, u, bias, padding, chunk, relu=True)
    assert np.isnan(plain).any() and (plain < 0).any() and (plain > 0).any()
    expected = np.where(np.isnan(plain) | (plain > 0), plain, 0).astype(plain.dtype)
    np.testing.assert_array_equal(fused, expected)


@pytest.mark.parametrize("variant", ("cpu", "cuda"))
@pytest.mark.parametrize("with_bias", (True, False))
def test_a_plan_gives_the_wrappers_bits_and_reads_every_calls_values(rng, variant, with_bias):
    if variant == "cuda" and gpu_available():
        pytest.skip(
            "run() takes device arrays, which these host-array tests do not make on a GPU "
            "(tests/test_conv_plans.py runs the plans on the cuda device)"
        )
    x, weight, bias, padding, chunk = operands(
        rng, CASES[0] if variant == "cpu" else CUDA_CASES[0], np.float32
    )
    bias = bias if with_bias else None
    weights = getattr(winograd, f"winograd_weights_{variant}")
    conv2d = getattr(winograd, f"winograd_conv2d_{variant}")
    u = weights(weight)
    plan = getattr(winograd, f"winograd_conv2d_plan_{variant}")(x, u, bias, padding, chunk, True)
    for _ in range(2):
        expected = conv2d(x, u, bias, padding, chunk, relu=True)
        np.testing.assert_array_equal(plan(x, u, bias), expected)
        out = np.full(expected.shape, np.nan, np.float32)
        assert plan(x, u, bias, out) is out
        np.testing.assert_array_equal(out, expected)
        x = rng.standard_normal(x.shape).astype(np.float32)  # the next call's values
        u = weights(rng.standard_normal(weight.shape).astype(np.float32))
        bias = None if bias is None else rng.standard_normal(bias.shape).astype(np.float32)
    transposed = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(
        plan(transposed, u, bias), conv2d(x, u, bias, padding, chunk, relu=True)
    )


def test_a_plan_refuses_arrays_it_was_not_made_for(rng):
    x, weight, bias, padding, chunk = operands(rng, CASES[0], np.float32)
    u = winograd.winograd_weights_cpu(weight)
    plan = winograd.winograd_conv2d_plan_cpu(x, u, bias, padding, chunk)
    with pytest.raises(
        ValueError, match=r"planned for x \(5, 3, 7, 9\).*called with x \(4, 3, 7, 9\)"
    ):
        plan(x[:4], u, bias)
    with pytest.raises(ValueError, match="called with .*float64"):
        plan(x.astype(np.float64), u, bias)
    with pytest.raises(ValueError, match="bias None"):
        plan(x, u, None)
    with pytest.raises(ValueError, match="tiles_weight of shape"):  # planning checks it all
        winograd.winograd_conv2d_plan_cpu(x, u[:, :, :2], bias, padding, chunk)
