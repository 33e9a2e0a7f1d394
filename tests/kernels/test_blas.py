"""The GEMM that kernels call from inside Numba (kernels/_blas.py): NumPy's own CBLAS, the adapter
for a 32-bit-integer CBLAS, and the plain loops where there is none, each against float64
products of fresh random operands, including rows of a wider buffer (a leading dimension larger
than the row) and accumulation into what ``c`` held."""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np
import pytest
from numba import njit

from fastnet.kernels import _blas
from numerics import TOLERANCE, relative_error

SHAPES = [(7, 13, 5), (1, 9, 4), (6, 1, 3), (16, 16, 16), (33, 17, 65)]


def operands(rng, m, n, k, trans_a, trans_b, dtype):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    wide = rng.standard_normal((m, n + 7)).astype(dtype)  # c: columns 3..3+n of a wider buffer
    return a, b, wide


def product(a, b, trans_a, trans_b):
    return (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)


def test_numpy_blas_was_bound():
    """NumPy's wheels ship OpenBLAS with a 64-bit-integer CBLAS: the kernels must find it, or every
    convolution would fall back to the loops."""
    assert _blas.AVAILABLE, _blas.describe()
    assert "gemm" in _blas.describe()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_gemm_matches_float64_products(rng, dtype, trans_a, trans_b, beta):
    for m, n, k in SHAPES:
        a, b, wide = operands(rng, m, n, k, trans_a, trans_b, dtype)
        c = wide[:, 3 : 3 + n]
        before, outside = c.astype(np.float64), np.delete(wide, np.s_[3 : 3 + n], axis=1)
        if beta == 0.0:
            c[...] = np.nan  # beta 0 overwrites, NaN included
        _blas.gemm(a, b, c, bool(trans_a), bool(trans_b), beta)
        expected = product(a, b, trans_a, trans_b) + beta * before
        assert relative_error(c, expected) <= TOLERANCE[dtype], (m, n, k)
        np.testing.assert_array_equal(np.delete(wide, np.s_[3 : 3 + n], axis=1), outside)


@njit(cache=True)
def _gemm_in_cache(a, b, c, trans_a):
    _blas.gemm_in_cache(a, b, c, trans_a)


# Whole 4 x 16 tiles only, tiles and both remainders, an operand narrower than one tile, Winograd
# chunk shapes (16 and 64 channels), an empty sum
IN_CACHE_SHAPES = [(16, 32, 16), (17, 35, 9), (3, 7, 5), (4, 15, 2), (64, 16, 64), (8, 16, 0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
def test_gemm_in_cache_matches_float64_products(rng, dtype, trans_a):
    """op(a) @ b into columns of a wider, NaN-poisoned buffer, from rows of wider buffers (row
    strides larger than the rows), as a Winograd chunk's tiles are laid out: every entry written,
    none outside."""
    for m, n, k in IN_CACHE_SHAPES:
        a_wide = rng.standard_normal((k, m + 3) if trans_a else (m, k + 3)).astype(dtype)
        a = a_wide[:, 1 : 1 + m] if trans_a else a_wide[:, 1 : 1 + k]
        b = rng.standard_normal((k, n + 5)).astype(dtype)[:, 2 : 2 + n]
        wide = np.full((m, n + 7), np.nan, dtype)
        c = wide[:, 3 : 3 + n]
        _gemm_in_cache(a, b, c, trans_a)
        expected = product(a, b, trans_a, False)
        if k == 0:
            np.testing.assert_array_equal(c, np.zeros((m, n)))
        else:
            assert relative_error(c, expected) <= TOLERANCE[dtype], (m, n, k)
        assert np.isnan(np.delete(wide, np.s_[3 : 3 + n], axis=1)).all()


def test_gemm_with_an_empty_sum_scales_c(rng):
    c = rng.standard_normal((3, 4)).astype(np.float32)
    before = c.copy()
    _blas.gemm(np.empty((3, 0), np.float32), np.empty((0, 4), np.float32), c, False, False, 1.0)
    np.testing.assert_array_equal(c, before)
    _blas.gemm(np.empty((3, 0), np.float32), np.empty((0, 4), np.float32), c, False, False, 0.0)
    assert not c.any()


def _call(address, kind, a, b, c, trans_a, trans_b, beta, integer=ctypes.c_int64):
    """Call a CBLAS ?gemm at ``address`` (64-bit sizes unless ``integer`` says otherwise)."""
    real = ctypes.c_float if kind == "s" else ctypes.c_double
    pointer = ctypes.c_void_p
    function = ctypes.CFUNCTYPE(
        None, *[ctypes.c_int] * 3, *[integer] * 3, real, pointer, integer, pointer, integer,
        real, pointer, integer,
    )(address)  # fmt: skip
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    size = a.itemsize
    function(
        _blas.ROW_MAJOR, _blas.TRANS if trans_a else _blas.NO_TRANS,
        _blas.TRANS if trans_b else _blas.NO_TRANS, m, n, k, 1.0, a.ctypes.data,
        a.strides[0] // size, b.ctypes.data, b.strides[0] // size, beta, c.ctypes.data,
        c.strides[0] // size,
    )  # fmt: skip


@pytest.mark.parametrize("kind, dtype", [("s", np.float32), ("d", np.float64)])
def test_the_loops_where_no_cblas_is_found(rng, kind, dtype):
    from numba import cfunc

    loops = cfunc(_blas._signature(_blas._REALS[kind], _blas.types.int64))(_blas._loop_gemm)
    for trans_a, trans_b in ((0, 0), (1, 0), (0, 1), (1, 1)):
        for m, n, k in SHAPES:
            a, b, wide = operands(rng, m, n, k, trans_a, trans_b, dtype)
            c = wide[:, 3 : 3 + n]
            before = c.astype(np.float64)
            _call(loops.address, kind, a, b, c, trans_a, trans_b, 0.5)
            expected = product(a, b, trans_a, trans_b) + 0.5 * before
            assert relative_error(c, expected) <= TOLERANCE[dtype], (trans_a, trans_b, m, n, k)


def test_the_adapter_for_a_32_bit_cblas(rng):
    """MKL and system CBLAS libraries take 32-bit sizes: the adapter narrows the kernels' 64-bit
    ones. SciPy's wheels bundle such an OpenBLAS; without SciPy there is none to try."""
    scipy = pytest.importorskip("scipy")
    site = os.path.dirname(os.path.dirname(scipy.__file__))
    libraries = glob.glob(os.path.join(site, "scipy.libs", "libscipy_openblas*"))
    if not libraries:
        pytest.skip("no 32-bit-integer OpenBLAS bundled with SciPy")
    library = ctypes.CDLL(libraries[0])
    symbol = "fastnet_test_cblas32_sgemm"
    _blas.llvm.add_symbol(symbol, ctypes.cast(library.scipy_cblas_sgemm, ctypes.c_void_p).value)
    address = _blas._narrowing("s", symbol)
    a, b, wide = operands(rng, 9, 5, 7, True, False, np.float32)
    c = wide[:, 3:8]
    before = c.astype(np.float64)
    _call(address, "s", a, b, c, True, False, 1.0)
    assert relative_error(c, product(a, b, True, False) + before) <= TOLERANCE[np.float32]
