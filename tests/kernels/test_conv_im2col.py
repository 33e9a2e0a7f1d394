"""The whole im2col convolution in one call (``conv2d_im2col`` and its backward) against the
float64 direct convolution and its transpose: the CPU (serial, and parallel with each thread's own
columns), CUDA's simulator; groups, stride, padding, dilation, uneven chunks, every subset of
gradients; errors. Outputs and workspaces are poisoned (conftest.py).

Then the CPU im2col and col2im with a stride along the rows, which take stride phases where they
pay (kernels/conv.py): im2col a copy equal to the reference, col2im equal to the bit to a sum in
each pixel's kernel-offset order (the order the strided path keeps), whatever the driver and the
thread count."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import fastnet
from fastnet.kernels import conv
from fastnet.kernels._cuda import gpu_available
from fastnet.kernels._geometry import int_pair, window_geometry
from numerics import TOLERANCE, relative_error

# (x shape, output channels, kernel, stride, padding, dilation, groups, images a chunk)
CASES = [
    ((5, 3, 7, 9), 4, 3, 1, 1, 1, 1, 2),
    ((4, 4, 8, 6), 6, 3, 2, (1, 0), 1, 2, 3),
    ((3, 2, 6, 5), 4, 1, 1, 0, 1, 1, 2),
    ((2, 4, 9, 9), 4, (3, 2), 1, 2, 2, 4, 1),
    ((1, 1, 5, 5), 3, 5, 1, 0, 1, 1, 4),
    # through stride phases: odd sizes, groups, uneven chunks; stride 3, dilated
    ((5, 4, 9, 7), 6, 3, 2, 1, 1, 2, 2),
    ((3, 2, 15, 9), 4, 5, 3, 4, 2, 1, 2),
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


# --- im2col and col2im with a stride along the rows ----------------------------------------------

# (x shape, kernel, stride, padding, dilation): strides 2 and 3, odd and even sizes, padding 0 to
# 2, dilation 1 and 2, square and non-square kernels, batches of 2 and more. Most take stride
# phases; the 1x1 kernel (a tap a phase), the valid padding (phases wider than the output), the
# 3x3 kernel at stride 3 (a tap a phase) and the dilated one with padding 1 take the strided runs.
STRIDED_CASES = [
    ((2, 3, 7, 9), 3, 2, 1, 1),
    ((3, 2, 9, 7), 3, 2, 2, 1),
    ((2, 3, 15, 9), 5, 3, 2, 1),
    ((3, 2, 9, 15), (3, 5), (2, 3), (1, 2), 1),
    ((2, 2, 9, 9), 3, 2, 2, 2),
    ((2, 2, 15, 7), (1, 3), (1, 2), (0, 1), 1),
    ((2, 2, 8, 8), 3, (1, 2), 1, 1),
    ((2, 3, 7, 9), 1, 2, 0, 1),
    ((2, 3, 9, 7), 3, 2, 0, 1),
    ((2, 2, 15, 15), 3, 3, 1, 1),
    ((2, 2, 9, 9), 3, 2, 1, 2),
]
# ResNet's 3x3 stride-2 layer: im2col_cpu then splits the batch into several chunks of images
# (3 in float32, 7 in float64), each a task of the parallel driver.
CHUNKED_CASE = ((20, 16, 32, 32), 3, 2, 1, 1)


def strided_id(case):
    shape, kernel, stride, padding, dilation = case
    return f"x{'x'.join(map(str, shape))}-k{kernel}-s{stride}-p{padding}-d{dilation}"


def through_phases(case):
    shape, kernel, stride, padding, dilation = case
    geometry = window_geometry(shape, kernel, stride, padding, "test", dilation)
    return conv._phases_pay(shape[2], shape[3], *geometry)


def summed_in_kernel_offset_order(cols, x_shape, kernel, stride, padding, dilation):
    """col2im in cols' own dtype, each pixel's terms added from 0 in kernel-offset (i, j) order:
    the order the CPU kernel keeps, so its very bits."""
    batch, channels, height, width = x_shape
    kh, kw, sh, sw, ph, pw, oh, ow = window_geometry(
        x_shape, kernel, stride, padding, "test", dilation
    )
    dh, dw = int_pair(dilation, "dilation", 1)
    patches = cols.reshape(channels, kh, kw, batch, oh, ow)
    padded = np.zeros((batch, channels, height + 2 * ph, width + 2 * pw), cols.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * oh, sh)
            columns = slice(j * dw, j * dw + sw * ow, sw)
            padded[:, :, rows, columns] += patches[:, i, j].transpose(1, 0, 2, 3)
    return padded[:, :, ph : ph + height, pw : pw + width]


def test_the_strided_cases_take_both_paths():
    paths = [through_phases(case) for case in STRIDED_CASES]
    assert sum(paths) == 7 and not all(paths)
    assert through_phases(CHUNKED_CASE)
    assert all(through_phases((shape, kernel, stride, padding, dilation))
               for shape, _, kernel, stride, padding, dilation, _, _ in CASES[-2:])  # fmt: skip


def strided_operands(rng, case, dtype):
    shape, kernel, stride, padding, dilation = case
    x = rng.standard_normal(shape).astype(dtype)
    geometry = window_geometry(shape, kernel, stride, padding, "test", dilation)
    cols_shape = (shape[1] * geometry.kernel_h * geometry.kernel_w,
                  shape[0] * geometry.out_h * geometry.out_w)  # fmt: skip
    g = rng.standard_normal(cols_shape).astype(dtype)
    return x, g, (kernel, stride, padding, dilation)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [*STRIDED_CASES, CHUNKED_CASE], ids=strided_id)
def test_strided_im2col_is_the_reference_copied(rng, case, dtype):
    x, g, window = strided_operands(rng, case, dtype)
    out = np.full(g.shape, np.nan, dtype)
    assert conv.im2col_cpu(x, *window, out=out) is out
    np.testing.assert_array_equal(out, conv.reference_im2col(x, *window).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [*STRIDED_CASES, CHUNKED_CASE], ids=strided_id)
def test_strided_col2im_sums_in_kernel_offset_order(rng, case, dtype):
    x, g, window = strided_operands(rng, case, dtype)
    out = np.full(x.shape, np.nan, dtype)
    assert conv.col2im_cpu(g, x.shape, *window, out=out) is out
    assert relative_error(out, conv.reference_col2im(g, x.shape, *window)) <= TOLERANCE[dtype]
    np.testing.assert_array_equal(out, summed_in_kernel_offset_order(g, x.shape, *window))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_drivers_and_thread_counts_give_the_same_bits(force_driver, rng, dtype):
    """The parallel driver shares the chunks of images out over the threads; cols and dx must not
    depend on the split."""
    x, g, window = strided_operands(rng, CHUNKED_CASE, dtype)
    force_driver("serial")
    cols, dx = conv.im2col_cpu(x, *window), conv.col2im_cpu(g, x.shape, *window)
    force_driver("parallel")
    threads_before = fastnet.get_num_threads()
    try:
        for threads in (1, 2):
            fastnet.set_num_threads(threads)
            np.testing.assert_array_equal(conv.im2col_cpu(x, *window), cols)
            np.testing.assert_array_equal(conv.col2im_cpu(g, x.shape, *window), dx)
    finally:
        fastnet.set_num_threads(threads_before)
