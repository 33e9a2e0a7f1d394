"""The vectorisable exp and max of kernels/_fastmath.py against NumPy's float64 exp and max.

The exp is checked as the kernels use it: inside a jitted loop compiled with the kernels'
fastmath flags (where LLVM vectorises it), and in a plain loop, which must agree bit for bit.
Accuracy is counted in ulps of the float32 result, where that result is a normal float: at most
MAX_ULP, the bound measured over a dense sweep of [-100, 100] (1.44 ulp) with a little room.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

from fastnet.kernels import _fastmath
from fastnet.kernels._fastmath import VECTORISING_FASTMATH, fast_exp, maxnum

MAX_ULP = 1.5
FLT_MIN = np.finfo(np.float32).tiny


@njit(fastmath=VECTORISING_FASTMATH)
def _exp_vectorised(x, out):
    for index in range(x.size):
        out[index] = fast_exp(x[index])


@njit
def _exp_plain(x, out):
    for index in range(x.size):
        out[index] = fast_exp(x[index])


@njit(fastmath=VECTORISING_FASTMATH)
def _max(values):
    highest = values[0]
    for index in range(1, values.size):
        highest = maxnum(highest, values[index])
    return highest


def exp_of(x):
    out = np.full_like(x, np.nan)
    _exp_vectorised(x, out)
    return out


def ulp_error(got, x):
    """|got - exp(x)| in ulps of exp(x) rounded to float32, with exp(x) exact in float64."""
    exact = np.exp(x.astype(np.float64))
    return np.abs(got.astype(np.float64) - exact) / np.spacing(exact.astype(np.float32)).astype(
        np.float64
    )


def sweep():
    """Every float32 step of a dense grid over [-100, 100], plus both neighbours of the edges."""
    grid = np.linspace(-100.0, 100.0, 2_000_001).astype(np.float32)
    edges = np.array(
        [-87.5, -87.33654, -87.0, 88.72283, 88.7228, 88.8, 0.0, -0.0, 1e-30, -1e-30], np.float32
    )
    around = np.concatenate(
        [np.nextafter(edges, np.float32(-np.inf)), edges, np.nextafter(edges, np.float32(np.inf))]
    )
    return np.concatenate([grid, around])


def test_within_max_ulp_wherever_the_result_is_normal():
    x = sweep()
    got = exp_of(x)
    with np.errstate(over="ignore"):
        rounded = np.exp(x.astype(np.float64)).astype(np.float32)
    normal = np.isfinite(rounded) & (rounded >= FLT_MIN)
    assert ulp_error(got[normal], x[normal]).max() <= MAX_ULP


def test_overflow_gives_inf_and_underflow_gives_zero():
    x = sweep()
    got = exp_of(x)
    exact = np.exp(x.astype(np.float64))
    assert np.all(got[exact > 3.4028236e38] == np.inf)
    assert np.all(got[exact < FLT_MIN / 2] == 0.0)
    # denormal results flush to 0 (documented), or at the very edge round up to FLT_MIN
    between = (exact >= FLT_MIN / 2) & (exact < FLT_MIN)
    assert between.any() and np.all(np.abs(got[between] - exact[between]) < FLT_MIN)


def test_special_values():
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, -1e38, 1e38, 0.0], np.float32)
    got = exp_of(x)
    assert np.isnan(got[:2]).all()
    np.testing.assert_array_equal(got[2:], [np.inf, 0.0, 0.0, np.inf, 1.0])


def test_vectorised_and_plain_loops_agree_bit_for_bit(rng):
    x = (40 * rng.standard_normal(10_001)).astype(np.float32)
    plain = np.full_like(x, np.nan)
    _exp_plain(x, plain)
    np.testing.assert_array_equal(exp_of(x), plain)


def test_float64_goes_through_math_exp(rng):
    x = 30 * rng.standard_normal(1001)
    out = np.full_like(x, np.nan)
    _exp_vectorised(x, out)
    np.testing.assert_array_equal(out, [math.exp(v) for v in x])


def test_polynomial_error_on_the_reduced_interval():
    """The coefficients themselves, evaluated in float64: the 3.0e-9 of the docstring."""
    r = np.linspace(-(2.0**-10), np.log(2.0) + 2.0**-10, 100_001)
    c2, c3, c4, c5, c6 = (float(c) for c in _fastmath.POLYNOMIAL)
    approx = 1 + r + r * r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * c6))))
    assert np.max(np.abs(approx / np.exp(r) - 1)) <= 3.1e-9


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxnum_reduction_matches_numpy_and_skips_nan(rng, dtype):
    values = rng.standard_normal(1003).astype(dtype)
    assert _max(values) == values.max()
    values[[0, 500]] = np.nan
    assert _max(values[1:]) == np.nanmax(values[1:])
