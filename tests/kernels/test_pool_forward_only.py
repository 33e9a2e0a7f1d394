"""The max-pool forward without its argmax (``with_argmax=False``: inference, where no backward
follows): y equal to the float64 reference's, argmax None, on the CPU's values-only 2x2 kernel
and on every other path (which computes the argmax and drops it)."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import pool
from fastnet.kernels.pool import (
    maxpool2d_forward_cpu,
    maxpool2d_forward_cuda,
    reference_maxpool2d_forward,
)

FORWARD = {"cpu": maxpool2d_forward_cpu, "cuda": maxpool2d_forward_cuda}

# (x shape, kernel_hw, stride, padding, ceil_mode)
CASES = [
    ((2, 3, 8, 8), 2, 2, 0, False),  # the values-only 2x2 kernel
    ((2, 33, 5, 7), 2, 2, 0, False),  # 2x2 on odd sides: the last row and column are dropped
    ((1, 70, 3, 2), 2, 2, 0, False),  # 2x2, a single window per plane, many planes
    ((2, 3, 7, 9), 2, 2, 0, True),  # 2x2 in ceil_mode with hanging windows: the general kernel
    ((2, 3, 7, 9), 3, 2, 1, False),  # overlapping, padded: the general kernel
    ((1, 2, 7, 9), (3, 2), (1, 2), (1, 1), False),
]
CUDA_CASES = [CASES[0], CASES[4]]


def _cases():
    return [pytest.param("cpu", case, id=f"cpu-{i}") for i, case in enumerate(CASES)] + [
        pytest.param("cuda", case, id=f"cuda-{i}") for i, case in enumerate(CUDA_CASES)
    ]


def _check(variant, x, kernel, stride, padding, ceil_mode):
    y, argmax = FORWARD[variant](x, kernel, stride, padding, ceil_mode, with_argmax=False)
    ref_y, _ = reference_maxpool2d_forward(x, kernel, stride, padding, ceil_mode)
    assert argmax is None and y.dtype == x.dtype and y.shape == ref_y.shape
    np.testing.assert_array_equal(y, ref_y)  # NaNs where the reference has them
    with_argmax, _ = FORWARD[variant](x, kernel, stride, padding, ceil_mode)
    np.testing.assert_array_equal(y, with_argmax)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant, case", _cases())
def test_values_only_forward_equals_reference(rng, variant, case, dtype):
    shape, *window = case
    _check(variant, rng.standard_normal(shape).astype(dtype), *window)


@pytest.mark.parametrize("variant, case", _cases())
def test_values_only_forward_with_ties_nans_and_infinities(rng, variant, case):
    shape, *window = case
    x = rng.integers(-2, 3, shape).astype(np.float32)  # many equal maxima
    x[rng.random(shape) < 0.05] = np.nan
    x[rng.random(shape) < 0.1] = -np.inf
    x[rng.random(shape) < 0.05] = np.inf
    _check(variant, x, *window)


def test_values_only_forward_propagates_a_nan_in_any_corner(rng):
    for corner in range(4):
        x = rng.standard_normal((1, 1, 2, 2)).astype(np.float32)
        x[0, 0, corner // 2, corner % 2] = np.nan
        y, _ = maxpool2d_forward_cpu(x, 2, 2, 0, with_argmax=False)
        assert np.isnan(y).all()


def test_values_only_forward_overwrites_every_output(rng, monkeypatch):
    """y comes from the kernels' buffer cache: poisoned with NaN, every cell must be written."""
    real_empty = pool.empty

    def poisoned(shape, dtype, like=None):
        out = real_empty(shape, dtype, like=like)
        out[...] = np.nan if np.dtype(dtype).kind == "f" else -1
        return out

    monkeypatch.setattr(pool, "empty", poisoned)
    x = rng.standard_normal((3, 5, 9, 7)).astype(np.float32)
    _check("cpu", x, 2, 2, 0, False)


def test_values_only_forward_accepts_non_contiguous_input(rng):
    x = rng.standard_normal((2, 4, 8, 6)).astype(np.float32).transpose(0, 1, 3, 2)
    _check("cpu", x, 2, 2, 0, False)


def test_values_only_cpu_serial_and_parallel_drivers_agree(rng, force_driver):
    x = rng.standard_normal((4, 40, 10, 12)).astype(np.float32)
    outputs = []
    x.reshape(-1)[::7] = np.nan
    for driver in ("serial", "parallel"):
        force_driver(driver)
        outputs.append(maxpool2d_forward_cpu(x, 2, 2, 0, with_argmax=False)[0].copy())
    np.testing.assert_array_equal(*outputs)
