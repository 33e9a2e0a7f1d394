"""im2col / col2im (dense and dilated) against the float64 references, on the CPU and in CUDA
(simulator or GPU); the dilated references against PyTorch's unfold, fold and conv2d.

im2col only copies, so it must equal the reference exactly, in float32 as in float64.
col2im sums at most KH*KW = 15 entries per pixel, in another order than the reference: the float32
rounding error is below 15 * 2**-24 ≈ 1e-6 of the largest term, so 1e-5 of the largest output
leaves room yet catches a single missing or doubled term (an error of order 1e-1). The conv check
goes through a float32 GEMM with K = C*KH*KW <= 45 products: the same bound, 45 * 2**-24 ≈ 3e-6.
Float64 runs at 1e-12.

Every output the module allocates starts as NaN (``poisoned_outputs``), so an element the kernel
never writes cannot pass by holding a stale, equal value.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

import fastnet
from fastnet.kernels._geometry import conv_output_shape
from fastnet.kernels.conv import (
    col2im_cpu,
    col2im_cuda,
    im2col_cpu,
    im2col_cuda,
    reference_col2im,
    reference_conv2d,
    reference_im2col,
)
from numerics import TOLERANCE, relative_error

# (x shape (N, C, H, W), kernel_hw, stride, padding)
CASES = [
    ((2, 3, 11, 7), (3, 5), 1, 0),
    ((2, 3, 11, 7), (3, 5), 2, 1),
    ((1, 3, 11, 7), (3, 5), (2, 1), 2),
    ((2, 3, 8, 9), 3, 2, (0, 2)),
    ((3, 2, 6, 5), 2, 2, 0),
    ((1, 2, 5, 6), 1, 1, 3),  # padding wider than the kernel: whole rows of cols are zero
    # 3-wide kernels at stride 1, with 0, 1 and 2 columns of padding
    ((2, 3, 7, 6), 3, 1, 1),
    ((1, 2, 5, 9), 3, (2, 1), (1, 0)),
    ((2, 2, 6, 5), (2, 3), 1, 2),
    ((1, 1, 4, 2), 3, 1, 1),  # narrower than the kernel: no pixel takes all three terms
]
# Tiny shapes for the simulator: 1-4 blocks of 256 threads a launch.
CUDA_CASES = [
    ((1, 3, 11, 7), (3, 5), 2, 1),  # cols 45 x 18: two blocks, grid-stride
    ((2, 2, 5, 6), 3, 1, (1, 2)),
]


def case_id(case):
    shape, kernel, stride, padding = case
    return f"x{'x'.join(map(str, shape))}-k{kernel}-s{stride}-p{padding}"


# --- references and shapes -----------------------------------------------------------------------


def test_conv_output_shape():
    assert conv_output_shape(11, 7, (3, 5), 1, 0) == (9, 3)
    assert conv_output_shape(11, 7, (3, 5), 2, 1) == (6, 3)
    assert conv_output_shape(11, 7, 3, (2, 1), (0, 2)) == (5, 9)
    assert conv_output_shape(4, 4, 4, 3, 0) == (1, 1)


@pytest.mark.parametrize("stride", [(True, 1), (1.0, 1), 1.0, (np.int64(2), 1)])
def test_a_remembered_geometry_does_not_stand_in_for_arguments_that_only_compare_equal(stride):
    # (1, 1) and (2, 1) are remembered first; True == 1 and 1.0 == 1 must still be refused,
    # and a NumPy integer still accepted, as when nothing was remembered
    assert conv_output_shape(11, 7, 3, (1, 1), 0) == (9, 5)
    assert conv_output_shape(11, 7, 3, (2, 1), 0) == (5, 5)
    if isinstance(stride, tuple) and isinstance(stride[0], np.integer):
        assert conv_output_shape(11, 7, 3, stride, 0) == (5, 5)
        return
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints"):
        conv_output_shape(11, 7, 3, stride, 0)


def test_reference_im2col_on_a_hand_example():
    """One row per kernel offset (i, j), one column per window position."""
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1 2 3] [4 5 6] [7 8 9]]
    np.testing.assert_array_equal(
        reference_im2col(x, 2, 1, 0), [[1, 2, 4, 5], [2, 3, 5, 6], [4, 5, 7, 8], [5, 6, 8, 9]]
    )
    # Padding 1, stride 2: the four corners, each with its zero-padded neighbourhood; the window
    # at the top left sees only x[0, 0] = 1, at its offset (1, 1).
    np.testing.assert_array_equal(
        reference_im2col(x, 2, 2, 1), [[0, 0, 0, 5], [0, 0, 4, 6], [0, 2, 0, 8], [1, 3, 7, 9]]
    )
    two_images = np.stack([x[0], 10 * x[0]])
    np.testing.assert_array_equal(
        reference_im2col(two_images, 3, 1, 0), [[v, 10 * v] for v in range(1, 10)]
    )


def test_reference_conv2d_on_a_hand_example():
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    ones, picker = np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2))
    picker[0, 0, 1, 0] = 1.0  # picks the bottom-left pixel of each window
    np.testing.assert_array_equal(
        reference_conv2d(x, ones, np.array([0.5]), 1, 0), [[[[12.5, 16.5], [24.5, 28.5]]]]
    )
    np.testing.assert_array_equal(
        reference_conv2d(x, picker, None, 1, 1),
        [[[[0, 1, 2, 3], [0, 4, 5, 6], [0, 7, 8, 9], [0, 0, 0, 0]]]],
    )


# --- CPU ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_im2col_cpu_equals_reference(rng, case, dtype):
    shape, kernel, stride, padding = case
    x = rng.standard_normal(shape).astype(dtype)
    cols = im2col_cpu(x, kernel, stride, padding)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, reference_im2col(x, kernel, stride, padding))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_col2im_cpu_matches_reference(rng, case, dtype):
    shape, kernel, stride, padding = case
    oh, ow = conv_output_shape(shape[2], shape[3], kernel, stride, padding)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    cols = rng.standard_normal((shape[1] * kh * kw, shape[0] * oh * ow)).astype(dtype)
    dx = col2im_cpu(cols, shape, kernel, stride, padding)
    assert dx.shape == shape and dx.dtype == dtype
    assert (
        relative_error(dx, reference_col2im(cols, shape, kernel, stride, padding))
        <= TOLERANCE[dtype]
    )


@pytest.mark.parametrize(
    "im2col, col2im, case",
    [
        pytest.param(reference_im2col, reference_col2im, case, id=f"reference-{case_id(case)}")
        for case in CASES
    ]
    + [pytest.param(im2col_cpu, col2im_cpu, case, id=f"cpu-{case_id(case)}") for case in CASES]
    + [
        pytest.param(im2col_cuda, col2im_cuda, case, id=f"cuda-{case_id(case)}")
        for case in CUDA_CASES
    ],
)
def test_adjoint_in_float64(rng, im2col, col2im, case):
    """<im2col(x), g> == <x, col2im(g)>: what makes col2im the gradient of im2col."""
    shape, kernel, stride, padding = case
    x = rng.standard_normal(shape)
    cols = im2col(x, kernel, stride, padding)
    g = rng.standard_normal(cols.shape)
    dx = col2im(g, shape, kernel, stride, padding)
    assert abs(np.vdot(cols, g) - np.vdot(x, dx)) <= 1e-12 * np.sum(np.abs(cols * g))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conv_through_im2col_matches_direct_convolution(rng, case, dtype):
    shape, kernel, stride, padding = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((4, shape[1], kh, kw)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    oh, ow = conv_output_shape(shape[2], shape[3], kernel, stride, padding)
    y = w.reshape(4, -1) @ im2col_cpu(x, kernel, stride, padding) + b[:, None]
    y = y.reshape(4, shape[0], oh, ow).transpose(1, 0, 2, 3)
    assert relative_error(y, reference_conv2d(x, w, b, stride, padding)) <= TOLERANCE[dtype]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cpu_parallel_and_serial_kernels_agree_bitwise(force_driver, rng, case):
    """The CPU policy runs small work serially, large in parallel: the two drivers of one body give
    the same bits."""
    shape, kernel, stride, padding = case
    x = rng.standard_normal(shape).astype(np.float32)
    force_driver("serial")
    serial_cols = im2col_cpu(x, kernel, stride, padding)
    g = rng.standard_normal(serial_cols.shape).astype(np.float32)
    serial_dx = col2im_cpu(g, shape, kernel, stride, padding)
    force_driver("parallel")
    np.testing.assert_array_equal(im2col_cpu(x, kernel, stride, padding), serial_cols)
    np.testing.assert_array_equal(col2im_cpu(g, shape, kernel, stride, padding), serial_dx)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
def test_col2im_cpu_is_bitwise_the_same_on_one_and_two_threads(force_driver, rng):
    """The planes are split between threads; each pixel's sum must not depend on the split."""
    force_driver("parallel")
    shape, kernel, stride, padding = (3, 5, 9, 8), 3, 1, 1
    cols = rng.standard_normal((5 * 9, 3 * 9 * 8)).astype(np.float32)
    results, threads_before = [], fastnet.get_num_threads()
    try:
        for threads in (1, 2):
            fastnet.set_num_threads(threads)
            results.append(col2im_cpu(cols, shape, kernel, stride, padding))
    finally:
        fastnet.set_num_threads(threads_before)
    np.testing.assert_array_equal(results[0], results[1])
    assert (
        relative_error(results[0], reference_col2im(cols, shape, kernel, stride, padding)) <= 1e-5
    )


@pytest.mark.parametrize("col2im", [col2im_cpu, col2im_cuda], ids=["cpu", "cuda"])
def test_col2im_writes_into_out(rng, col2im):
    """``out`` is filled completely (it starts as NaN) and nothing around it is touched."""
    shape, kernel, stride, padding = (2, 2, 5, 6), 3, 1, (1, 2)
    cols = rng.standard_normal(
        reference_im2col(np.empty(shape), kernel, stride, padding).shape
    ).astype(np.float32)
    batch = np.full((4, *shape[1:]), np.nan, np.float32)
    returned = col2im(cols, shape, kernel, stride, padding, out=batch[1:3])
    assert np.shares_memory(returned, batch)
    assert (
        relative_error(batch[1:3], reference_col2im(cols, shape, kernel, stride, padding)) <= 1e-5
    )
    assert np.isnan(batch[0]).all() and np.isnan(batch[3]).all()


@pytest.mark.parametrize("col2im", [col2im_cpu, col2im_cuda], ids=["cpu", "cuda"])
def test_col2im_rejects_a_wrong_out(col2im):
    cols = np.ones((45, 18), np.float32)
    with pytest.raises(
        ValueError,
        match=r"col2im expects out as a C-contiguous float32 ndarray of shape "
        r"\(1, 3, 11, 7\), got a C-contiguous float64 ndarray "
        r"of shape \(1, 3, 11, 7\)",
    ):
        col2im(cols, (1, 3, 11, 7), (3, 5), 2, 1, out=np.empty((1, 3, 11, 7)))
    with pytest.raises(
        ValueError, match=r"got a non-contiguous float32 ndarray of shape \(1, 3, 11, 7\)"
    ):
        col2im(
            cols, (1, 3, 11, 7), (3, 5), 2, 1, out=np.empty((1, 3, 11, 14), np.float32)[..., ::2]
        )


@pytest.mark.parametrize("im2col", [im2col_cpu, im2col_cuda], ids=["cpu", "cuda"])
def test_im2col_writes_into_the_first_rows_of_out(rng, im2col):
    """conv2d hands im2col the first rows of a taller matrix: those are filled completely (they
    start as NaN) and the row below is not touched."""
    shape, kernel, stride, padding = (2, 2, 5, 6), 3, 2, (1, 2)
    x = rng.standard_normal(shape).astype(np.float32)
    expected = reference_im2col(x, kernel, stride, padding)
    matrix = np.full((expected.shape[0] + 1, expected.shape[1]), np.nan, np.float32)
    returned = im2col(x, kernel, stride, padding, out=matrix[:-1])
    assert np.shares_memory(returned, matrix)
    np.testing.assert_array_equal(matrix[:-1], expected)
    assert np.isnan(matrix[-1]).all()


@pytest.mark.parametrize("im2col", [im2col_cpu, im2col_cuda], ids=["cpu", "cuda"])
def test_im2col_rejects_a_wrong_out(im2col):
    x = np.ones((1, 3, 11, 7), np.float32)
    with pytest.raises(
        ValueError,
        match=r"im2col expects out as a C-contiguous float32 ndarray of shape "
        r"\(45, 18\), got a C-contiguous float32 ndarray of shape \(45, 17\)",
    ):
        im2col(x, (3, 5), 2, 1, out=np.empty((45, 17), np.float32))
    with pytest.raises(
        ValueError, match=r"got a non-contiguous float32 ndarray of shape \(45, 18\)"
    ):
        im2col(x, (3, 5), 2, 1, out=np.empty((45, 36), np.float32)[:, ::2])


def test_cpu_accepts_non_contiguous_inputs(rng):
    x = rng.standard_normal((2, 3, 11, 14)).astype(np.float32)[:, :, :, ::2]
    np.testing.assert_array_equal(im2col_cpu(x, 3, 1, 1), reference_im2col(x, 3, 1, 1))
    cols = rng.standard_normal((2 * 77, 27)).T.astype(np.float32)  # (27, 2*11*7) in Fortran order
    shape = (2, 3, 11, 7)
    assert (
        relative_error(col2im_cpu(cols, shape, 3, 1, 1), reference_col2im(cols, shape, 3, 1, 1))
        <= 1e-5
    )


@pytest.mark.parametrize(
    "im2col, col2im", [(im2col_cpu, col2im_cpu), (im2col_cuda, col2im_cuda)], ids=["cpu", "cuda"]
)
def test_empty_batch(im2col, col2im):
    cols = im2col(np.ones((0, 3, 5, 5), np.float32), 3, 1, 1)
    assert cols.shape == (27, 0)
    assert col2im(cols, (0, 3, 5, 5), 3, 1, 1).shape == (0, 3, 5, 5)


# --- CUDA (simulator) ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CUDA_CASES, ids=case_id)
def test_im2col_cuda_equals_reference(rng, case):
    shape, kernel, stride, padding = case
    x = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(
        im2col_cuda(x, kernel, stride, padding), reference_im2col(x, kernel, stride, padding)
    )


@pytest.mark.parametrize("case", CUDA_CASES, ids=case_id)
def test_col2im_cuda_matches_reference(rng, case):
    shape, kernel, stride, padding = case
    cols_shape = reference_im2col(np.empty(shape), kernel, stride, padding).shape
    cols = rng.standard_normal(cols_shape).astype(np.float32)
    dx = col2im_cuda(cols, shape, kernel, stride, padding)
    assert dx.shape == shape and dx.dtype == np.float32
    assert relative_error(dx, reference_col2im(cols, shape, kernel, stride, padding)) <= 1e-5


# --- errors (one validation serves both variants) -------------------------------------------------


@pytest.mark.parametrize("im2col", [im2col_cpu, im2col_cuda])
@pytest.mark.parametrize(
    "shape, kernel, stride, padding, error, message",
    [
        (
            (3, 11, 7),
            3,
            1,
            0,
            ValueError,
            r"im2col expects a 4-D input \(N, C, H, W\), got shape \(3, 11, 7\)",
        ),
        (
            (1, 3, 4, 7),
            (5, 3),
            1,
            0,
            ValueError,
            r"kernel 5x3 does not fit the 4x7 input padded by \(0, 0\) to 4x7",
        ),
        (
            (1, 3, 4, 7),
            (3, 10),
            1,
            1,
            ValueError,
            r"kernel 3x10 does not fit the 4x7 input padded by \(1, 1\) to 6x9",
        ),
        ((1, 3, 4, 7), 3, 0, 0, ValueError, r"stride must be >= 1, got 0"),
        ((1, 3, 4, 7), 3, 1, (1, -1), ValueError, r"padding must be >= 0, got \(1, -1\)"),
        (
            (1, 3, 4, 7),
            (3,),
            1,
            0,
            TypeError,
            r"kernel_hw must be an int or a pair of ints, got \(3,\)",
        ),
        ((1, 3, 4, 7), 3, 1.5, 0, TypeError, r"stride must be an int or a pair of ints, got 1.5"),
    ],
)
def test_im2col_rejects_bad_arguments(im2col, shape, kernel, stride, padding, error, message):
    with pytest.raises(error, match=message):
        im2col(np.ones(shape, np.float32), kernel, stride, padding)


@pytest.mark.parametrize("im2col", [im2col_cpu, im2col_cuda])
def test_im2col_rejects_integer_input(im2col):
    with pytest.raises(TypeError, match="im2col expects x of dtype float32 or float64, got int64"):
        im2col(np.ones((1, 1, 3, 3), np.int64), 2, 1, 0)


@pytest.mark.parametrize("col2im", [col2im_cpu, col2im_cuda])
def test_col2im_rejects_bad_arguments(col2im):
    with pytest.raises(
        ValueError,
        match=r"expects cols of shape \(45, 18\) for x_shape \(1, 3, 11, 7\), "
        r"kernel 3x5, got \(18, 45\)",
    ):
        col2im(np.ones((18, 45), np.float32), (1, 3, 11, 7), (3, 5), 2, 1)
    with pytest.raises(
        ValueError, match=r"col2im expects a 4-D input \(N, C, H, W\), got shape \(3, 11, 7\)"
    ):
        col2im(np.ones((45, 18), np.float32), (3, 11, 7), (3, 5), 2, 1)
    with pytest.raises(
        TypeError, match="col2im expects cols of dtype float32 or float64, got float16"
    ):
        col2im(np.ones((45, 18), np.float16), (1, 3, 11, 7), (3, 5), 2, 1)
    with pytest.raises(
        TypeError, match=r"col2im expects x_shape as a sequence of ints, got \(1, 3, 11.0, 7\)"
    ):
        col2im(np.ones((45, 18), np.float32), (1, 3, 11.0, 7), (3, 5), 2, 1)


# --- dilation ------------------------------------------------------------------------------------

# (x shape (N, C, H, W), kernel_hw, stride, padding, dilation)
DILATED_CASES = [
    ((2, 3, 11, 9), 3, 1, 2, 2),  # stride 1 with OW == W: the contiguous-rows path
    ((2, 3, 11, 9), 3, 1, 0, 2),
    ((1, 2, 12, 10), (3, 2), 2, 1, (3, 2)),
    ((2, 2, 9, 13), (2, 3), (1, 2), (3, 0), (1, 4)),
    ((1, 2, 7, 8), 3, 1, 3, 3),  # the dilated window spans the whole padded plane
]
DILATED_CUDA_CASES = [
    ((1, 2, 9, 8), 3, 1, 2, 2),
    ((1, 2, 10, 7), (3, 2), 2, 1, (2, 3)),
]


def dilated_id(case):
    *geometry, dilation = case
    return f"{case_id(tuple(geometry))}-d{dilation}"


def test_dilated_conv_output_shape():
    # OH = (H + 2P - D(K-1) - 1) // S + 1
    assert conv_output_shape(11, 9, 3, 1, 2, 2) == (11, 9)
    assert conv_output_shape(12, 10, (3, 2), 2, 1, (3, 2)) == (4, 5)


@pytest.mark.parametrize("case", DILATED_CASES, ids=dilated_id)
def test_dilated_references_match_torch(rng, case):
    """The dilated references against PyTorch's unfold, fold and conv2d (grouped for conv2d)."""
    torch = pytest.importorskip("torch")
    shape, kernel, stride, padding, dilation = case
    geometry = {"kernel_size": kernel, "dilation": dilation, "padding": padding, "stride": stride}
    x = rng.standard_normal(shape)
    unfolded = torch.nn.functional.unfold(torch.from_numpy(x), **geometry).numpy()
    cols = reference_im2col(x, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(cols, unfolded.transpose(1, 0, 2).reshape(cols.shape))
    g = rng.standard_normal(cols.shape)
    folded = torch.nn.functional.fold(
        torch.from_numpy(
            np.ascontiguousarray(g.reshape(g.shape[0], shape[0], -1).transpose(1, 0, 2))
        ),
        shape[2:],
        **geometry,
    ).numpy()
    assert relative_error(
        reference_col2im(g, shape, kernel, stride, padding, dilation), folded
    ) <= (1e-12)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    w = rng.standard_normal((2 * shape[1], 1, kh, kw))  # depthwise, 2 outputs per channel
    b = rng.standard_normal(2 * shape[1])
    expected = torch.nn.functional.conv2d(
        *map(torch.from_numpy, (x, w, b)), stride, padding, dilation, groups=shape[1]
    ).numpy()
    got = reference_conv2d(x, w, b, stride, padding, dilation, groups=shape[1])
    assert relative_error(got, expected) <= 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DILATED_CASES, ids=dilated_id)
def test_dilated_im2col_and_col2im_cpu_match_references(rng, case, dtype):
    shape, kernel, stride, padding, dilation = case
    x = rng.standard_normal(shape).astype(dtype)
    cols = im2col_cpu(x, kernel, stride, padding, dilation)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, reference_im2col(x, kernel, stride, padding, dilation))
    g = rng.standard_normal(cols.shape).astype(dtype)
    dx = col2im_cpu(g, shape, kernel, stride, padding, dilation)
    assert dx.shape == shape and dx.dtype == dtype
    expected = reference_col2im(g, shape, kernel, stride, padding, dilation)
    assert relative_error(dx, expected) <= TOLERANCE[dtype]


@pytest.mark.parametrize(
    "im2col, col2im, case",
    [
        pytest.param(reference_im2col, reference_col2im, case, id=f"reference-{dilated_id(case)}")
        for case in DILATED_CASES
    ]
    + [
        pytest.param(im2col_cpu, col2im_cpu, case, id=f"cpu-{dilated_id(case)}")
        for case in DILATED_CASES
    ]
    + [
        pytest.param(im2col_cuda, col2im_cuda, case, id=f"cuda-{dilated_id(case)}")
        for case in DILATED_CUDA_CASES
    ],
)
def test_dilated_adjoint_in_float64(rng, im2col, col2im, case):
    """<im2col(x), g> == <x, col2im(g)> with dilation."""
    shape, kernel, stride, padding, dilation = case
    x = rng.standard_normal(shape)
    cols = im2col(x, kernel, stride, padding, dilation)
    g = rng.standard_normal(cols.shape)
    dx = col2im(g, shape, kernel, stride, padding, dilation)
    assert abs(np.vdot(cols, g) - np.vdot(x, dx)) <= 1e-12 * np.sum(np.abs(cols * g))


@pytest.mark.parametrize("case", DILATED_CASES, ids=dilated_id)
def test_dilated_conv_through_im2col_matches_direct_convolution(rng, case):
    shape, kernel, stride, padding, dilation = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((4, shape[1], kh, kw)).astype(np.float32)
    oh, ow = conv_output_shape(shape[2], shape[3], kernel, stride, padding, dilation)
    y = w.reshape(4, -1) @ im2col_cpu(x, kernel, stride, padding, dilation)
    y = y.reshape(4, shape[0], oh, ow).transpose(1, 0, 2, 3)
    expected = reference_conv2d(x, w, None, stride, padding, dilation)
    assert relative_error(y, expected) <= TOLERANCE[np.float32]


@pytest.mark.parametrize("case", DILATED_CASES, ids=dilated_id)
def test_dilated_cpu_parallel_and_serial_kernels_agree_bitwise(force_driver, rng, case):
    shape, kernel, stride, padding, dilation = case
    x = rng.standard_normal(shape).astype(np.float32)
    force_driver("serial")
    serial_cols = im2col_cpu(x, kernel, stride, padding, dilation)
    g = rng.standard_normal(serial_cols.shape).astype(np.float32)
    serial_dx = col2im_cpu(g, shape, kernel, stride, padding, dilation)
    force_driver("parallel")
    np.testing.assert_array_equal(im2col_cpu(x, kernel, stride, padding, dilation), serial_cols)
    np.testing.assert_array_equal(
        col2im_cpu(g, shape, kernel, stride, padding, dilation), serial_dx
    )


@pytest.mark.parametrize("case", DILATED_CUDA_CASES, ids=dilated_id)
def test_dilated_im2col_and_col2im_cuda_match_references(rng, case):
    shape, kernel, stride, padding, dilation = case
    x = rng.standard_normal(shape).astype(np.float32)
    cols = im2col_cuda(x, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(cols, reference_im2col(x, kernel, stride, padding, dilation))
    g = rng.standard_normal(cols.shape).astype(np.float32)
    dx = col2im_cuda(g, shape, kernel, stride, padding, dilation)
    assert dx.shape == shape and dx.dtype == np.float32
    expected = reference_col2im(g, shape, kernel, stride, padding, dilation)
    assert relative_error(dx, expected) <= TOLERANCE[np.float32]


@pytest.mark.parametrize(
    "im2col, col2im", [(im2col_cpu, col2im_cpu), (im2col_cuda, col2im_cuda)], ids=["cpu", "cuda"]
)
def test_dilated_kernel_that_does_not_fit_is_rejected(im2col, col2im):
    with pytest.raises(
        ValueError,
        match=r"kernel 3x3 dilated by \(3, 3\) to 7x7 does not fit the 5x5 input padded by "
        r"\(0, 0\) to 5x5",
    ):
        im2col(np.ones((1, 1, 5, 5), np.float32), 3, 1, 0, 3)
    with pytest.raises(ValueError, match=r"dilation must be >= 1, got 0"):
        col2im(np.ones((9, 9), np.float32), (1, 1, 5, 5), 3, 1, 1, 0)
