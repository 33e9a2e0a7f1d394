"""The CSR matmul against its float64 reference: both variants (CUDA in the simulator, tiny
shapes), both CPU kernels (dot products for a few rows, columns for a batch), empty and fully
dense rows, no bias, and every refusal, raised before anything is written."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import sparse
from fastnet.kernels.sparse import (
    csr_from_dense,
    csr_matmul_cpu,
    csr_matmul_cuda,
    csr_transpose,
    reference_csr_matmul,
)

VARIANTS = [csr_matmul_cpu, csr_matmul_cuda]


def pruned(rng, n, k, density, dtype=np.float32):
    """A random (n, k) weight at about ``density``, with row 0 empty and row 1 fully dense."""
    w = rng.uniform(0.5, 1.5, (n, k)) * rng.choice([-1.0, 1.0], (n, k))
    w[rng.random((n, k)) >= density] = 0.0
    w[0] = 0.0
    if n > 1:
        w[1] = rng.uniform(0.5, 1.5, k)
    return w.astype(dtype)


def arguments(rng, m, n, k, density=0.3, dtype=np.float32, bias=True, pointer=np.int64):
    w = pruned(rng, n, k, density, dtype)
    indptr, indices, values = csr_from_dense(w)
    x = rng.uniform(-1.0, 1.0, (m, k)).astype(dtype)
    b = rng.uniform(-1.0, 1.0, n if bias else 0).astype(dtype)
    out = np.full((m, n), np.nan, dtype)
    return w, [x, indptr.astype(pointer), indices, values, b, out]


def relative_error(result, expected):
    return np.abs(result - expected).max() / max(np.abs(expected).max(), 1e-30)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("m, n, k", [(1, 5, 7), (2, 3, 13), (3, 6, 9), (7, 4, 5)], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("pointer", [np.int32, np.int64])
def test_matches_reference(rng, variant, m, n, k, bias, pointer):
    w, args = arguments(rng, m, n, k, bias=bias, pointer=pointer)
    returned = variant(*args)
    assert returned is args[-1]
    expected = reference_csr_matmul(*args)
    dense = args[0].astype(np.float64) @ w.T.astype(np.float64)
    if bias:
        dense += args[4]
    np.testing.assert_allclose(expected, dense, rtol=1e-12, atol=1e-12)
    assert relative_error(returned, expected) < 1e-6
    np.testing.assert_array_equal(returned[:, 0], args[4][0] if bias else 0.0)  # an empty row


@pytest.mark.parametrize("m", [1, 2, 3, 17, 64])
@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 2e-6), (np.float64, 1e-13)])
def test_cpu_kernels_at_batch_sizes(rng, force_driver, m, dtype, tolerance):
    for driver in ("serial", "parallel"):
        force_driver(driver)
        _, args = arguments(rng, m, 37, 301, density=0.1, dtype=dtype)
        assert relative_error(csr_matmul_cpu(*args), reference_csr_matmul(*args)) < tolerance


@pytest.mark.parametrize("variant", VARIANTS)
def test_unsorted_and_repeated_columns_add(rng, variant):
    x = rng.uniform(-1.0, 1.0, (3, 4)).astype(np.float32)
    indptr = np.array([0, 3, 3, 5], np.int32)
    indices = np.array([2, 0, 2, 3, 1], np.int32)
    values = rng.uniform(0.5, 1.5, 5).astype(np.float32)
    out = np.full((3, 3), np.nan, np.float32)
    bias = np.zeros(0, np.float32)
    variant(x, indptr, indices, values, bias, out)
    expected = reference_csr_matmul(x, indptr, indices, values, bias)
    assert expected[0, 0] == pytest.approx(x[0, 2] * (values[0] + values[2]) + x[0, 0] * values[1])
    assert relative_error(out, expected) < 1e-6


@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_shapes(rng, variant):
    _, args = arguments(rng, 0, 3, 4)
    assert variant(*args).shape == (0, 3)
    x = np.ones((2, 0), np.float32)
    empty_w = (np.zeros(4, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    bias = np.arange(3, dtype=np.float32)
    out = np.full((2, 3), np.nan, np.float32)
    np.testing.assert_array_equal(variant(x, *empty_w, bias, out), np.broadcast_to(bias, (2, 3)))


def test_csr_from_dense_and_transpose(rng):
    w = pruned(rng, 6, 9, 0.4)
    indptr, indices, values = csr_from_dense(w)
    assert indptr.dtype == np.int64 and indices.dtype == np.int32 and values.dtype == np.float32
    assert indptr[-1] == np.count_nonzero(w)
    for row in range(6):
        columns = indices[indptr[row] : indptr[row + 1]]
        assert (np.diff(columns) > 0).all()
        np.testing.assert_array_equal(values[indptr[row] : indptr[row + 1]], w[row, columns])
    t = csr_transpose(indptr, indices, values, 9)
    for got, wanted in zip(t, csr_from_dense(w.T), strict=True):
        np.testing.assert_array_equal(got, wanted)
    x = rng.uniform(-1.0, 1.0, (2, 6)).astype(np.float32)
    dx = csr_matmul_cpu(x, *t, np.zeros(0, np.float32), np.empty((2, 9), np.float32))
    assert relative_error(dx, x.astype(np.float64) @ w) < 1e-6
    with pytest.raises(ValueError, match="2-D"):
        csr_from_dense(np.ones(3))


def refusals(rng):
    """(match, build) pairs: each build returns the arguments of a refused call."""
    _, good = arguments(rng, 3, 4, 6, density=0.5)
    x, indptr, indices, values, bias, out = good

    def swap(position, value):
        return lambda: [value if i == position else a for i, a in enumerate(good)]

    bad_indptr = indptr.copy()
    bad_indptr[2], bad_indptr[3] = bad_indptr[3] + 1, bad_indptr[2]
    outside = indices.copy()
    outside[-1] = 6
    negative = indices.copy()
    negative[0] = -1
    short_end = indptr.copy()
    short_end[-1] -= 1
    return [
        (TypeError, "x must be float32 or float64, got int32", swap(0, x.astype(np.int32))),
        (TypeError, "values must be float32 like x, got float64", swap(3, values.astype(float))),
        (TypeError, "bias must be float32", swap(4, bias.astype(np.float64))),
        (TypeError, "out must be float32", swap(5, out.astype(np.float64))),
        (TypeError, "indptr must be int32 or int64, got float32", swap(1, indptr.astype("f4"))),
        (TypeError, "indices must be int32, got int64", swap(2, indices.astype(np.int64))),
        (TypeError, "bias must be an array, got NoneType", swap(4, None)),
        (ValueError, "x must be a C-contiguous", swap(0, np.asfortranarray(x))),
        (ValueError, "x must be a C-contiguous", swap(0, x.reshape(-1))),
        (ValueError, r"out must be a C-contiguous \(3, N\)", swap(5, out[:2])),
        (ValueError, "indptr must have N \\+ 1 = 5 entries", swap(1, indptr[:-1])),
        (ValueError, "indices of shape .* and values of shape", swap(3, values[:-1])),
        (ValueError, r"bias must have shape \(4,\)", swap(4, bias[:3])),
        (ValueError, "indptr must be a contiguous 1-D", swap(1, indptr.reshape(1, -1))),
        (ValueError, "indptr must start at 0 and end at nnz", swap(1, short_end)),
        (ValueError, "indptr must start at 0", swap(1, indptr + 1)),
        (ValueError, "indptr must be non-decreasing", swap(1, bad_indptr)),
        (ValueError, r"indices must lie in \[0, K\) = \[0, 6\)", swap(2, outside)),
        (ValueError, r"indices must lie in \[0, K\)", swap(2, negative)),
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_refusals_name_the_op_and_argument_before_writing(rng, variant):
    for error, match, build in refusals(rng):
        args = build()
        out = args[5]
        with pytest.raises(
            error, match=f"csr_matmul: {match}" if "NoneType" not in match else match
        ):
            variant(*args)
        assert np.isnan(out).all(), match  # nothing written by a refused call


def test_structure_check_can_be_skipped(rng):
    _, args = arguments(rng, 2, 3, 4)
    args[1] = args[1].copy()
    args[1][0] = 0  # a valid pointer, checked or not
    csr_matmul_cpu(*args, check_structure=False)


def test_bench_cases_build(rng):
    from types import SimpleNamespace

    from fastnet.kernels._contract import BenchContext

    ops = SimpleNamespace(csr_matmul=csr_matmul_cpu)
    (spec,) = sparse.bench_cases(True)
    case = spec.build(BenchContext("cpu", ops, np))
    ours, plain = (impl.run() for impl in case.implementations.values())
    np.testing.assert_allclose(ours, plain, rtol=1e-5, atol=1e-5)
    assert len(sparse.bench_cases(False)) == 4
