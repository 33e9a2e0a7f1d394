"""Matmul kernels against the float64 einsum reference.

Float32 tolerance: each output sums at most ~70 products, so the float32 rounding error is below
K * 2**-24 ≈ 4e-6 of the largest output even in the worst case; 1e-5 leaves room but still catches
a single missing or doubled term (an error of order 1e-1). Float64 runs at 1e-12.

CUDA tests run in Numba's simulator (see conftest): tiny shapes, 1-4 blocks a launch. The tiled
kernel's output tile is 64×64, so 37×41 is one block with partial tiles in M, N and K
(29 = 16 + 13). Split-K runs on such shapes by asking for slices explicitly
(``matmul_cuda_split_k``) or by lowering the choice's thresholds; the grid caps are lowered the
same way (``_cuda.MAX_GRID_Y`` / ``_Z``) to drive the kernels' loops over row tiles and matrices.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from fastnet.kernels import _cuda, matmul
from fastnet.kernels.matmul import (
    matmul_cpu,
    matmul_cuda,
    matmul_cuda_naive,
    matmul_cuda_split_k,
    reference_matmul,
    split_k_slices,
)
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


# --- CPU, in blocks over Numba's threads ---------------------------------------------------------


@pytest.fixture
def blocks_on_two_threads(monkeypatch):
    """Every product takes the parallel path (blocks of rows or columns, one BLAS call each) on two
    threads, whatever its size."""
    import fastnet
    from fastnet.kernels import _cpu

    before = fastnet.get_num_threads()
    fastnet.set_num_threads(2)
    monkeypatch.setattr(_cpu, "parallel_pays", lambda work: True)
    yield
    fastnet.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [None, 3])
@pytest.mark.parametrize("trans_a, trans_b", FLAGS)
@pytest.mark.parametrize("m, n, k", [(37, 11, 29), (5, 41, 29), (1, 7, 3), (9, 1, 4)])
def test_cpu_blocks_match_reference(
    blocks_on_two_threads, rng, trans_a, trans_b, batch, dtype, m, n, k
):
    """Row blocks (M >= N) and column blocks (N > M), a single row or column, every transpose."""
    a, b = operands(rng, m, n, k, trans_a, trans_b, batch, dtype)
    assert_matches_reference(matmul_cpu(a, b, trans_a, trans_b), a, b, trans_a, trans_b)


def test_cpu_blocks_read_strided_and_broadcast_operands(blocks_on_two_threads, rng):
    """Rows of a wider buffer go to BLAS as they are; a column stride or a broadcast row (stride
    0) is copied first, since BLAS reads neither."""
    wide = rng.standard_normal((9, 20)).astype(np.float32)
    b = rng.standard_normal((5, 7)).astype(np.float32)
    for a in (wide[:, 3:10], wide[:, ::3][:, :7], np.broadcast_to(wide[0, :7], (9, 7))):
        assert_matches_reference(matmul_cpu(a, b, trans_b=True), a, b, False, True)


def test_cpu_blocks_write_into_out(blocks_on_two_threads, rng):
    a, b = operands(rng, 37, 41, 29, False, True, 3, np.float32)
    buffer = np.full((5, 37, 41), np.nan, np.float32)
    assert np.shares_memory(matmul_cpu(a, b, False, True, out=buffer[1:-1]), buffer)
    assert_matches_reference(buffer[1:-1], a, b, False, True)
    assert np.isnan(buffer[0]).all() and np.isnan(buffer[-1]).all()


SPLIT_IN_TWO = functools.partial(matmul_cuda_split_k, slices=2)


@pytest.mark.parametrize(
    "variant",
    [matmul_cpu, matmul_cuda, matmul_cuda_naive, SPLIT_IN_TWO],
    ids=["cpu", "cuda", "cuda_naive", "cuda_split_k"],
)
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

ALL_VARIANTS = [matmul_cpu, matmul_cuda, matmul_cuda_naive, matmul_cuda_split_k, reference_matmul]


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
        "matmul_sum_slices",
        "matmul_tiled_nn",
        "matmul_tiled_nt",
        "matmul_tiled_tn",
        "matmul_tiled_tt",
    ]
    assert {spec.kernel for spec in specs} >= {*matmul._TILED_KERNELS.values(), matmul._sum_slices}


# --- grid limits: every tile in gridDim.x, none in y or z (at most 65,535 each) ----------------


@pytest.mark.parametrize(
    "variant, batch",
    [(matmul_cuda, 2), (matmul_cuda_naive, None), (SPLIT_IN_TWO, None)],
    ids=["tiled", "naive", "split_k"],
)
def test_cuda_grid_needs_no_y_or_z(rng, monkeypatch, variant, batch):
    """With gridDim.y and .z limited to 1, products of several row tiles and matrices still run
    (67 rows: two 64-row tiles, five 16-row tiles for the naive kernel; a batch of two for the
    tiled kernel, two matrices of partials for split-K's slices of K = 16 + 7); a grid putting
    row tiles in y or matrices in z would be refused by the launch check."""
    monkeypatch.setattr(_cuda, "MAX_GRID_Y", 1)
    monkeypatch.setattr(_cuda, "MAX_GRID_Z", 1)
    a, b = operands(rng, 67, 5, 23, True, False, batch=batch)
    assert_matches_reference(variant(a, b, True, False), a, b, True, False)


# --- split-K -----------------------------------------------------------------------------------


@pytest.mark.parametrize("trans_a, trans_b", FLAGS)
def test_split_k_matches_reference(rng, trans_a, trans_b):
    # K = 45 in three slices of 16 (16 + 16 + 13): the last slice and its last slab are partial.
    a, b = operands(rng, 13, 11, 45, trans_a, trans_b)
    got = matmul_cuda_split_k(a, b, trans_a, trans_b, slices=3)
    assert_matches_reference(got, a, b, trans_a, trans_b)


def test_split_k_float64_batched(rng):
    # Two slices of 32 (32 + 5) for each of 3 matrices; float64 partials keep float64 accuracy.
    a, b = operands(rng, 9, 7, 37, False, True, batch=3, dtype=np.float64)
    got = matmul_cuda_split_k(a, b, False, True, slices=2)
    assert_matches_reference(got, a, b, False, True)


def test_split_k_more_slices_than_slab_steps_and_empty_k(rng):
    # 40 slices asked of K = 21: slices are whole slab steps, so two (16 + 5), none empty.
    a, b = operands(rng, 5, 6, 21, False, False)
    assert_matches_reference(matmul_cuda_split_k(a, b, slices=40), a, b, False, False)
    got = matmul_cuda_split_k(np.ones((3, 0), np.float32), np.ones((0, 2), np.float32), slices=4)
    np.testing.assert_array_equal(got, np.zeros((3, 2), np.float32))


def test_split_k_refuses_no_slices():
    with pytest.raises(ValueError, match="at least one slice, got 0"):
        matmul_cuda_split_k(np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), slices=0)


def test_split_k_workspace_partials_and_their_fixed_order_sum(rng, monkeypatch):
    """The workspace comes from the module's (poisoned) ``empty``, every partial is its own
    slice's product (a partial tile not written would stay NaN), and ``c`` is their sum left to
    right, bit for bit, at every run."""
    workspaces, poisoned_empty = [], matmul.empty

    def spying_empty(shape, dtype, like):
        workspaces.append(poisoned_empty(shape, dtype, like))
        return workspaces[-1]

    a, b = operands(rng, 13, 11, 45, False, False)
    with monkeypatch.context() as patch:
        patch.setattr(matmul, "empty", spying_empty)
        first = matmul_cuda_split_k(a, b, slices=3)
    (workspace,) = [w for w in workspaces if w.shape == (3, 13, 11)]
    workspace = workspace.get() if hasattr(workspace, "get") else workspace  # CuPy on a GPU
    assert workspace.dtype == np.float32
    for piece, k in enumerate((slice(0, 16), slice(16, 32), slice(32, 45))):
        assert_close(
            workspace[piece], reference_matmul(a[:, k], b[k]), np.float32, what=f"partial {piece}"
        )
    in_order = workspace[0] + workspace[1]  # float32, as the kernel adds: ((p0 + p1) + p2)
    in_order += workspace[2]
    np.testing.assert_array_equal(first, in_order)
    # the order shows: these values, added right to left, round differently somewhere
    assert not np.array_equal(first, workspace[0] + (workspace[1] + workspace[2]))
    np.testing.assert_array_equal(matmul_cuda_split_k(a, b, slices=3), first)


def test_split_k_choice_rule():
    tiles_wanted = matmul.SPLIT_BELOW_TILES
    assert tiles_wanted == 2 * matmul.NOMINAL_SM_COUNT
    # conv1's weight gradient at batch 64: one tile; K = 50176 gives 196 slices of 256.
    assert split_k_slices(10, 32, 784 * 64) == 784 * 64 // matmul.MIN_SLICE_K == 196
    # fc1 at batch 256: 4 × 2 tiles; ceil(264 / 8) = 33 slices wanted, K = 3136 holds 12.
    assert split_k_slices(256, 128, 3136) == 12
    # K too short for two slices: no split.
    assert split_k_slices(10, 32, 2 * matmul.MIN_SLICE_K - 1) == 1
    # enough tiles already (a large GEMM; or a batch of small ones): no split.
    assert split_k_slices(4096, 4096, 4096) == 1
    assert split_k_slices(10, 32, 784 * 64, batch=tiles_wanted) == 1
    # one tile short of enough: two slices.
    assert split_k_slices(64 * (tiles_wanted - 1), 64, 4096) == 2
    assert split_k_slices(0, 32, 4096) == 1  # an empty output: nothing to split


def test_matmul_cuda_takes_the_split_path_when_the_rule_says_so(rng, monkeypatch):
    a, b = operands(rng, 13, 11, 45, False, True)
    before = _cuda.launches.count
    assert_matches_reference(matmul_cuda(a, b, False, True), a, b, False, True)
    assert _cuda.launches.count - before == 1  # K = 45 is short: the plain tiled kernel
    monkeypatch.setattr(matmul, "MIN_SLICE_K", 16)  # now K = 45 holds two slices
    kernels = []
    monkeypatch.setattr(matmul, "launch", lambda kernel, *args: kernels.append(kernel))
    matmul_cuda(a, b, False, True)
    assert kernels == [matmul._TILED_KERNELS[False, True], matmul._sum_slices]
