"""Matmul kernels against the float64 einsum reference.

Float32 tolerance: each output sums at most ~70 products, so the float32 rounding error is below
K * 2**-24 ≈ 4e-6 of the largest output even in the worst case; 1e-5 leaves room but still catches
a single missing or doubled term (an error of order 1e-1). Float64 runs at 1e-12.

CUDA tests run in Numba's simulator (see conftest): tiny shapes, 1-4 blocks a launch. The tiled
kernel's output tile is 64×64, so 37×41 is one block with partial tiles in M, N and K
(29 = 16 + 13).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import matmul
from fastnet.kernels.matmul import matmul_cpu, matmul_cuda, matmul_cuda_naive, reference_matmul
from numerics import assert_close

FLAGS = [(False, False), (True, False), (False, True), (True, True)]


def operands(rng, m, n, k, trans_a, trans_b, batch=None, dtype=np.float32):
    """Random ``a``, ``b`` stored the way ``op(a) @ op(b)`` with these flags expects them."""
    lead = () if batch is None else (batch,)
    a = rng.standard_normal(lead + ((k, m) if trans_a else (m, k))).astype(dtype)
    b = rng.standard_normal(lead + ((n, k) if trans_b else (k, n))).astype(dtype)
    return a, b


def assert_matches_reference(got, a, b, trans_a, trans_b):
    """Within tolerance of the reference, with no NaN: every output written, and computed from
    no (NaN-poisoned) memory read before it was written."""
    assert_close(got, reference_matmul(a, b, trans_a, trans_b), a.dtype)


def test_reference_on_a_hand_computed_product():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[5.0, 6.0], [7.0, 8.0]])
    np.testing.assert_array_equal(reference_matmul(a, b), [[19, 22], [43, 50]])
    np.testing.assert_array_equal(reference_matmul(a, b, trans_a=True), [[26, 30], [38, 44]])
    np.testing.assert_array_equal(reference_matmul(a, b, trans_b=True), [[17, 23], [39, 53]])
    np.testing.assert_array_equal(reference_matmul(a, b, True, True), [[23, 31], [34, 46]])


# --- CPU ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [None, 1, 3])
@pytest.mark.parametrize("trans_a, trans_b", FLAGS)
def test_cpu_matches_reference(rng, trans_a, trans_b, batch, dtype):
    a, b = operands(rng, 37, 41, 29, trans_a, trans_b, batch, dtype)
    assert_matches_reference(matmul_cpu(a, b, trans_a, trans_b), a, b, trans_a, trans_b)


def test_cpu_accepts_strided_views(rng):
    a = rng.standard_normal((9, 14)).astype(np.float32)[:, ::2]  # (9, 7), not contiguous
    b = rng.standard_normal((5, 7)).astype(np.float32)
    assert_matches_reference(matmul_cpu(a, b, trans_b=True), a, b, False, True)


def test_cpu_empty_inner_dimension_gives_zeros():
    got = matmul_cpu(np.ones((3, 0), np.float32), np.ones((0, 2), np.float32))
    np.testing.assert_array_equal(got, np.zeros((3, 2), np.float32))


@pytest.mark.parametrize("variant", [matmul_cpu, matmul_cuda, matmul_cuda_naive])
@pytest.mark.parametrize("batch", [None, 3])
def test_writes_into_out(rng, variant, batch):
    """``out`` (a slice of a NaN-filled buffer, as conv2d passes) gets the whole product, and
    nothing around it changes."""
    a, b = operands(rng, 37, 41, 29, False, True, batch, np.float32)
    shape = (37, 41) if batch is None else (batch, 37, 41)
    buffer = np.full((shape[0] + 2, *shape[1:]), np.nan, np.float32)
    returned = variant(a, b, False, True, out=buffer[1:-1])
    assert np.shares_memory(returned, buffer)
    assert_matches_reference(buffer[1:-1], a, b, False, True)
    assert np.isnan(buffer[0]).all() and np.isnan(buffer[-1]).all()


@pytest.mark.parametrize("variant", [matmul_cpu, matmul_cuda])
def test_rejects_a_wrong_out(variant):
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(
        ValueError,
        match=r"matmul expects out as a C-contiguous float32 ndarray of shape \(3, 5\), "
        r"got a C-contiguous float32 ndarray of shape \(5, 3\)",
    ):
        variant(a, b, out=np.empty((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"got a C-contiguous float64 ndarray of shape \(3, 5\)"):
        variant(a, b, out=np.empty((3, 5)))


# --- errors (one validation function serves every variant) -------------------------------------

ALL_VARIANTS = [matmul_cpu, matmul_cuda, matmul_cuda_naive, reference_matmul]


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_inner_dimension_mismatch_names_both_shapes(variant):
    a, b = np.ones((3, 4), np.float32), np.ones((5, 6), np.float32)
    with pytest.raises(
        ValueError, match=r"^matmul: \(3, 4\) @ \(5, 6\): inner dimensions 4 and 5 differ$"
    ):
        variant(a, b)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_inner_dimension_mismatch_names_the_transposes(variant):
    a, b = np.ones((2, 4, 3), np.float32), np.ones((2, 6, 5), np.float32)
    with pytest.raises(
        ValueError, match=r"\(2, 4, 3\)\.T @ \(2, 6, 5\)\.T: inner dimensions 4 and 5"
    ):
        variant(a, b, trans_a=True, trans_b=True)


@pytest.mark.parametrize(
    "a_shape, b_shape, message",
    [
        ((3,), (3, 2), "must both be 2-D or both 3-D"),
        ((2, 3, 4), (4, 5), "must both be 2-D or both 3-D"),
        ((1, 2, 3, 4), (1, 2, 4, 5), "must both be 2-D or both 3-D"),
        ((2, 3, 4), (3, 4, 5), "batch sizes 2 and 3 differ"),
    ],
)
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_bad_ranks_and_batches(variant, a_shape, b_shape, message):
    with pytest.raises(ValueError, match=message):
        variant(np.ones(a_shape, np.float32), np.ones(b_shape, np.float32))


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_dtype_errors(variant):
    with pytest.raises(TypeError, match="dtypes float32 and float64 differ"):
        variant(np.ones((2, 3), np.float32), np.ones((3, 2), np.float64))
    with pytest.raises(TypeError, match="dtype int64 is not float32 or float64"):
        variant(np.ones((2, 3), np.int64), np.ones((3, 2), np.int64))
    with pytest.raises(TypeError, match="b must be an array, got list"):
        variant(np.ones((2, 3), np.float32), [[1.0, 2.0]] * 3)


# --- CUDA (simulator) --------------------------------------------------------------------------


@pytest.mark.parametrize("trans_a, trans_b", FLAGS)
def test_tiled_cuda_partial_tile_in_every_dimension(rng, trans_a, trans_b):
    a, b = operands(rng, 37, 41, 29, trans_a, trans_b)
    assert_matches_reference(matmul_cuda(a, b, trans_a, trans_b), a, b, trans_a, trans_b)


def test_tiled_cuda_several_blocks_with_partial_edge_tiles(rng):
    # 2 × 2 blocks whose right and bottom tiles hold 3 rows and 2 columns; K = 16 + 16 + 3.
    a, b = operands(rng, 67, 66, 35, False, False)
    assert_matches_reference(matmul_cuda(a, b), a, b, False, False)


def test_tiled_cuda_batched(rng):
    # The attention score shape: q @ kᵀ for 2 heads.
    a, b = operands(rng, 19, 23, 21, False, True, batch=2)
    assert_matches_reference(matmul_cuda(a, b, trans_b=True), a, b, False, True)


def test_tiled_cuda_batch_of_one_and_1x1x1(rng):
    a, b = operands(rng, 1, 1, 1, False, False, batch=1)
    assert_matches_reference(matmul_cuda(a, b), a, b, False, False)
    a, b = operands(rng, 1, 1, 1, True, True)
    assert_matches_reference(matmul_cuda(a, b, True, True), a, b, True, True)


def test_tiled_cuda_float64_and_non_contiguous_inputs(rng):
    a = rng.standard_normal((21, 30)).T  # (30, 21) Fortran-ordered view
    b = rng.standard_normal((17, 21))
    assert_matches_reference(matmul_cuda(a, b, trans_b=True), a, b, False, True)


def test_tiled_cuda_empty_inner_dimension_gives_zeros():
    got = matmul_cuda(np.ones((3, 0), np.float32), np.ones((0, 2), np.float32))
    np.testing.assert_array_equal(got, np.zeros((3, 2), np.float32))
    assert matmul_cuda(np.ones((0, 4), np.float32), np.ones((4, 2), np.float32)).shape == (0, 2)


@pytest.mark.parametrize("trans_a, trans_b", FLAGS)
def test_naive_cuda_batched(rng, trans_a, trans_b):
    a, b = operands(rng, 13, 15, 11, trans_a, trans_b, batch=2)
    assert_matches_reference(matmul_cuda_naive(a, b, trans_a, trans_b), a, b, trans_a, trans_b)


def test_cuda_kernels_lists_every_kernel():
    specs = matmul.cuda_kernels()
    assert sorted(spec.name for spec in specs) == [
        "matmul_naive",
        "matmul_tiled_nn",
        "matmul_tiled_nt",
        "matmul_tiled_tn",
        "matmul_tiled_tt",
    ]
    assert {spec.kernel for spec in specs} >= set(matmul._TILED_KERNELS.values())
