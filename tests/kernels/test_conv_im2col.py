"""The whole im2col convolution in one call (``conv2d_im2col`` and its backward) against the
float64 direct convolution and its transpose: the CPU (serial, and parallel with each thread's own
columns), CUDA's simulator; groups, stride, padding, dilation, uneven chunks, every subset of
gradients; errors. Outputs and workspaces are poisoned (conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import conv
from fastnet.kernels._cuda import gpu_available
from numerics import TOLERANCE, relative_error

# (x shape, output channels, kernel, stride, padding, dilation, groups, images a chunk)
CASES = [
    ((5, 3, 7, 9), 4, 3, 1, 1, 1, 1, 2),
    ((4, 4, 8, 6), 6, 3, 2, (1, 0), 1, 2, 3),
    ((3, 2, 6, 5), 4, 1, 1, 0, 1, 1, 2),
    ((2, 4, 9, 9), 4, (3, 2), 1, 2, 2, 4, 1),
    ((1, 1, 5, 5), 3, 5, 1, 0, 1, 1, 4),
]
CUDA_CASES = [CASES[0], CASES[1]]


def case_id(case):
    shape, out_channels, kernel, stride, padding, dilation, groups, chunk = case
    return (
        f"x{'x'.join(map(str, shape))}-k{out_channels}-w{kernel}-s{stride}-p{padding}"
        f"-d{dilation}-g{groups}-chunk{chunk}"
    )


def operands(rng, case, dtype):
    shape, out_channels, kernel, stride, padding, dilation, groups, chunk = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((out_channels, shape[1] // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(out_channels).astype(dtype)
    return x, w, b, (stride, padding, dilation, groups, chunk)


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
def test_forward_and_every_subset_of_gradients(
    force_driver, two_threads, rng, variant, driver, case, dtype
):
    if variant == "cpu":
        force_driver(driver)
    x, w, b, window = operands(rng, case, dtype)
    forward = getattr(conv, f"conv2d_im2col_{variant}")
    backward = getattr(conv, f"conv2d_im2col_backward_{variant}")
    for bias in (b, None):
        y = forward(x, w, bias, *window)
        expected = conv.reference_conv2d_im2col(x, w, bias, *window)
        assert y.dtype == dtype and y.shape == expected.shape
        assert relative_error(y, expected) <= TOLERANCE[dtype]
    dy = rng.standard_normal(y.shape).astype(dtype)
    references = conv.reference_conv2d_im2col_backward(dy, x, w, *window)
    for need in ((True, True, True), (True, False, False), (False, True, False),
                 (False, False, True), (False, True, True)):  # fmt: skip
        got = backward(dy, x, w, *window, *need)
        rows = zip(("dx", "dw", "db"), need, got, references, strict=True)
        for name, wanted, value, reference in rows:
            if not wanted:
                assert value is None, (name, need)
                continue
            assert value.dtype == dtype and value.shape == reference.shape, (name, need)
            assert relative_error(value, reference) <= TOLERANCE[dtype], (name, need)


def test_the_backward_reference_is_the_adjoint_of_the_forward(rng):
    """<conv(x, w), dy> = <x, dx> = <w, dw>: the reference gradients are the transposes."""
    for case in CASES:
        x, w, _, window = operands(rng, case, np.float64)
        y = conv.reference_conv2d_im2col(x, w, None, *window)
        dy = rng.standard_normal(y.shape)
        dx, dw, db = conv.reference_conv2d_im2col_backward(dy, x, w, *window)
        assert np.isclose(np.vdot(y, dy), np.vdot(x, dx), rtol=1e-12)
        assert np.isclose(np.vdot(y, dy), np.vdot(w, dw), rtol=1e-12)
        np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_each_image_alone_whatever_the_chunk(rng):
    """Outputs and input gradients are per image: the same bits from any chunk size."""
    x, w, b, (stride, padding, dilation, groups, _) = operands(rng, CASES[0], np.float32)
    window = (stride, padding, dilation, groups)
    dy = rng.standard_normal(conv.conv2d_im2col_cpu(x, w, b, *window, 1).shape)
    dy = dy.astype(np.float32)
    first = conv.conv2d_im2col_cpu(x, w, b, *window, 1)
    first_dx = conv.conv2d_im2col_backward_cpu(dy, x, w, *window, 1)[0]
    for chunk in (2, 3, 5):
        np.testing.assert_array_equal(conv.conv2d_im2col_cpu(x, w, b, *window, chunk), first)
        dx = conv.conv2d_im2col_backward_cpu(dy, x, w, *window, chunk)[0]
        np.testing.assert_array_equal(dx, first_dx)


def test_written_into_a_slice_of_a_larger_output(rng):
    x, w, b, window = operands(rng, CASES[0], np.float32)
    expected = conv.reference_conv2d_im2col(x, w, b, *window)
    big = np.full((7, *expected.shape[1:]), np.nan, np.float32)
    conv.conv2d_im2col_cpu(x, w, b, *window, out=big[1:6])
    assert relative_error(big[1:6], expected) <= TOLERANCE[np.float32]
    assert np.isnan(big[[0, 6]]).all()


@pytest.mark.parametrize("variant", ("cpu", "cuda"))
def test_an_empty_batch(variant):
    x, w = np.ones((0, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32)
    y = getattr(conv, f"conv2d_im2col_{variant}")(x, w, np.ones(3, np.float32), 1, 1)
    assert y.shape == (0, 3, 5, 5)
    dx, dw, db = getattr(conv, f"conv2d_im2col_backward_{variant}")(y, x, w, 1, 1)
    assert dx.shape == x.shape and not dw.any() and not db.any() and dw.shape == w.shape


@pytest.mark.parametrize("variant", ("cpu", "cuda"))
def test_bad_arguments_name_what_is_wrong(variant):
    forward = getattr(conv, f"conv2d_im2col_{variant}")
    backward = getattr(conv, f"conv2d_im2col_backward_{variant}")
    x, w = np.ones((2, 4, 5, 5), np.float32), np.ones((6, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="groups=1 does not fit"):
        forward(x, w, None, 1, 1)
    with pytest.raises(ValueError, match="4-D weight of x's dtype float32"):
        forward(x, w.astype(np.float64), None, 1, 1, 1, 2)
    with pytest.raises(ValueError, match=r"bias of shape \(6,\)"):
        forward(x, w, np.ones(5, np.float32), 1, 1, 1, 2)
    with pytest.raises(ValueError, match="chunk_images must be positive"):
        forward(x, w, None, 1, 1, 1, 2, 0)
    with pytest.raises(TypeError, match="chunk_images must be an int"):
        forward(x, w, None, 1, 1, 1, 2, 2.0)
    with pytest.raises(ValueError, match=r"dy of shape \(2, 6, 5, 5\)"):
        backward(np.ones((2, 6, 5, 4), np.float32), x, w, 1, 1, 1, 2)


def _relu_rule(y):
    return np.where(np.isnan(y) | (y > 0), y, 0).astype(y.dtype)


@pytest.mark.parametrize(
    "variant, driver, case",
    [("cpu", "serial", CASES[0]), ("cpu", "parallel", CASES[0]), ("cpu", "serial", CASES[1])]
    + [("cuda", "grid", CASES[0]), ("cuda", "grid", CASES[1])],
    ids=lambda value: case_id(value) if isinstance(value, tuple) else value,
)
@pytest.mark.parametrize("with_bias", (True, False))
def test_relu_is_the_rule_over_the_plain_output(
    force_driver, two_threads, rng, variant, driver, case, with_bias
):
    """relu=True: bit for bit the ReLU rule (NaN kept) over relu=False's output, the bias inside
    the products (one group) or added after (groups), a NaN input included."""
    if variant == "cpu":
        force_driver(driver)
    x, w, b, window = operands(rng, case, np.float32)
    x[0, 0, 2, 3] = np.nan
    bias = b if with_bias else None
    conv2d = getattr(conv, f"conv2d_im2col_{variant}")
    plain = conv2d(x, w, bias, *window)
    fused = conv2d(x, w, bias, *window, relu=True)
    assert np.isnan(plain).any() and (plain < 0).any() and (plain > 0).any()
    np.testing.assert_array_equal(fused, _relu_rule(plain))


@pytest.mark.parametrize("variant", ("cpu", "cuda"))
@pytest.mark.parametrize("with_bias", (True, False))
def test_a_plan_gives_the_wrappers_bits_and_reads_every_calls_values(rng, variant, with_bias):
    if variant == "cuda" and gpu_available():
        pytest.skip(
            "run() takes device arrays, which these host-array tests do not make on a GPU "
            "(tests/test_conv_plans.py runs the plans on the cuda device)"
        )
    x, weight, bias, window = operands(
        rng, CASES[1] if variant == "cpu" else CUDA_CASES[0], np.float32
    )
    bias = bias if with_bias else None
    conv2d = getattr(conv, f"conv2d_im2col_{variant}")
    plan = getattr(conv, f"conv2d_im2col_plan_{variant}")(x, weight, bias, *window, relu=True)
    for _ in range(2):
        expected = conv2d(x, weight, bias, *window, relu=True)
        np.testing.assert_array_equal(plan(x, weight, bias), expected)
        out = np.full(expected.shape, np.nan, np.float32)
        assert plan(x, weight, bias, out) is out
        np.testing.assert_array_equal(out, expected)
        x = rng.standard_normal(x.shape).astype(np.float32)  # the next call's values
        weight = rng.standard_normal(weight.shape).astype(np.float32)
        bias = None if bias is None else rng.standard_normal(bias.shape).astype(np.float32)


def test_a_plan_refuses_arrays_it_was_not_made_for(rng):
    x, weight, bias, window = operands(rng, CASES[1], np.float32)
    plan = conv.conv2d_im2col_plan_cpu(x, weight, bias, *window)
    with pytest.raises(ValueError, match=r"planned for x .*called with x \(1,"):
        plan(x[:1], weight, bias)
    with pytest.raises(ValueError, match="weight .*float64"):
        plan(x, weight.astype(np.float64), bias)
    with pytest.raises(ValueError, match="weight"):  # planning checks it all
        conv.conv2d_im2col_plan_cpu(x, weight[:, :1], bias, *window)
