"""Nearest and bilinear resampling, forward and backward, against the float64 references, on the
CPU and in CUDA.

The nearest forward only copies, so it must equal the reference exactly; its backward sums at most
a few dy per pixel. Bilinear sums four products per output (forward) or a few per input
(backward) in another order than the reference's matrix products, and computes its taps in the
dtype of x as PyTorch does: in float32 that is ~1e-7 of the largest term, inside the 1e-5 of
``numerics.TOLERANCE``; a tap routed to the wrong pixel errs by ~1e-1. Float64 at 1e-12.

Every output the module allocates starts as NaN (``poisoned_outputs`` in conftest.py), so an
element the kernel never writes cannot pass by holding a stale, equal value.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import resample
from fastnet.kernels.resample import (
    bilinear2d_backward_cpu,
    bilinear2d_backward_cuda,
    bilinear2d_forward_cpu,
    bilinear2d_forward_cuda,
    linear_taps,
    nearest2d_backward_cpu,
    nearest2d_backward_cuda,
    nearest2d_forward_cpu,
    nearest2d_forward_cuda,
    nearest_sources,
    reference_bilinear2d_backward,
    reference_bilinear2d_forward,
    reference_nearest2d_backward,
    reference_nearest2d_forward,
)
from numerics import TOLERANCE, assert_close

OPS = {
    ("nearest", "cpu"): (nearest2d_forward_cpu, nearest2d_backward_cpu),
    ("nearest", "cuda"): (nearest2d_forward_cuda, nearest2d_backward_cuda),
    ("bilinear", "cpu"): (bilinear2d_forward_cpu, bilinear2d_backward_cpu),
    ("bilinear", "cuda"): (bilinear2d_forward_cuda, bilinear2d_backward_cuda),
}
REFERENCES = {
    "nearest": (reference_nearest2d_forward, reference_nearest2d_backward),
    "bilinear": (reference_bilinear2d_forward, reference_bilinear2d_backward),
}
# (mode, option): option is nearest's ``exact`` or bilinear's ``align_corners``
MODES = [("nearest", False), ("nearest", True), ("bilinear", False), ("bilinear", True)]

# (x shape, out_hw, scale_factors)
CASES = [
    ((2, 3, 5, 7), (10, 14), None),  # 2x up: nearest's exact halving
    ((2, 3, 5, 7), (13, 9), None),  # odd up
    ((1, 2, 9, 11), (4, 5), None),  # down
    ((2, 2, 6, 5), (6, 11), None),  # one axis copied (PyTorch's O = S rule), one up
    ((1, 3, 7, 4), (17, 2), (2.5, 0.6)),  # scale factors: the index rule uses 1 / scale
    ((2, 1, 4, 6), (8, 6), (2.1, 1.1)),  # O = 2S and O = S with scale factors other than 2, 1
    ((1, 2, 1, 6), (3, 1), None),  # single row and column, both ways
]
# Tiny shapes for the simulator: one or two blocks of 256 threads.
CUDA_CASES = [((1, 2, 5, 7), (9, 4), None), ((1, 1, 6, 4), (13, 9), (2.2, 2.4))]


def case_id(case):
    shape, out_hw, scales = case
    return f"x{'x'.join(map(str, shape))}-to{out_hw[0]}x{out_hw[1]}-s{scales}"


def variant_cases():
    return [pytest.param("cpu", case, id=f"cpu-{case_id(case)}") for case in CASES] + [
        pytest.param("cuda", case, id=f"cuda-{case_id(case)}") for case in CUDA_CASES
    ]


MODE_IDS = {
    ("nearest", False): "nearest",
    ("nearest", True): "nearest-exact",
    ("bilinear", False): "bilinear",
    ("bilinear", True): "bilinear-corners",
}


def mode_id(mode):
    return MODE_IDS[mode]


def forward(variant, mode, x, out_hw, scales):
    name, option = mode
    if name == "nearest":
        return OPS[name, variant][0](x, out_hw, scales, option)
    return OPS[name, variant][0](x, out_hw, option, scales)


def backward(variant, mode, dy, x_shape, scales):
    name, option = mode
    if name == "nearest":
        return OPS[name, variant][1](dy, x_shape, scales, option)
    return OPS[name, variant][1](dy, x_shape, option, scales)


def reference(mode, which, *args, scales):
    name, option = mode
    function = REFERENCES[name][which]
    return function(*args, scales, option) if name == "nearest" else function(*args, option, scales)


# --- index rules and references ------------------------------------------------------------------


def test_nearest_sources_follow_pytorch_by_hand():
    # 5 -> 3: scale 5/3 in float32; floor(o * scale)
    np.testing.assert_array_equal(nearest_sources(5, 3, None, False), [0, 1, 3])
    # 3 -> 7 with scale factor 7/3 given: scale = 3/7; nearest-exact uses pixel centres
    np.testing.assert_array_equal(nearest_sources(3, 7, 7 / 3, False), [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(nearest_sources(3, 7, 7 / 3, True), [0, 0, 1, 1, 1, 2, 2])
    # O = 2S halves exactly, whatever the scale factor that gave it (PyTorch's CPU rule)
    np.testing.assert_array_equal(nearest_sources(4, 8, 2.1, False), [0, 0, 1, 1, 2, 2, 3, 3])


def test_linear_taps_by_hand():
    first, second, fraction = linear_taps(2, 4, False, None, np.float64)
    # half-pixel centres: sources max(0.5 (o + 0.5) - 0.5, 0) = 0, 0.25, 0.75, 1.25
    np.testing.assert_array_equal(first, [0, 0, 0, 1])
    np.testing.assert_array_equal(second, [1, 1, 1, 1])
    np.testing.assert_allclose(fraction, [0, 0.25, 0.75, 0.25])
    first, second, fraction = linear_taps(3, 5, True, None, np.float64)
    # corners aligned: sources o * 2 / 4
    np.testing.assert_array_equal(first, [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(second, [1, 1, 2, 2, 2])
    np.testing.assert_allclose(fraction, [0, 0.5, 0, 0.5, 0])


@pytest.mark.parametrize("mode", MODES, ids=mode_id)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_reference_backward_is_the_adjoint_of_the_reference_forward(rng, mode, case):
    """<R x, g> == <x, Rᵀ g> for random x and g."""
    shape, out_hw, scales = case
    x = rng.standard_normal(shape)
    g = rng.standard_normal((*shape[:2], *out_hw))
    y = reference(mode, 0, x, out_hw, scales=scales)
    dx = reference(mode, 1, g, shape, scales=scales)
    assert np.isclose(np.vdot(y, g), np.vdot(x, dx), rtol=1e-12)


def test_reference_bilinear_keeps_constants_and_corners(rng):
    x = np.full((1, 1, 4, 5), 3.0)
    for corners in (False, True):
        np.testing.assert_allclose(reference_bilinear2d_forward(x, (7, 3), corners), 3.0)
    x = rng.standard_normal((1, 1, 4, 5))
    y = reference_bilinear2d_forward(x, (7, 9), True)
    np.testing.assert_allclose(y[0, 0, ::6, ::8], x[0, 0, ::3, ::4])


# --- kernels against the references --------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES, ids=mode_id)
@pytest.mark.parametrize("variant, case", variant_cases())
def test_forward_and_backward_match_the_reference(rng, variant, case, mode, dtype):
    shape, out_hw, scales = case
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal((*shape[:2], *out_hw)).astype(dtype)
    y = forward(variant, mode, x, out_hw, scales)
    expected = reference(mode, 0, x, out_hw, scales=scales)
    if mode[0] == "nearest":
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, expected)
    else:
        assert_close(y, expected, dtype)
    dx = backward(variant, mode, dy, shape, scales)
    assert_close(dx, reference(mode, 1, dy, shape, scales=scales), dtype, what="dx")


@pytest.mark.parametrize("mode", MODES, ids=mode_id)
@pytest.mark.parametrize("variant, case", variant_cases())
def test_kernels_are_adjoint(rng, variant, case, mode):
    """<R(x), g> == <x, Rᵀ(g)>, in float64 through the kernels themselves."""
    shape, out_hw, scales = case
    x = rng.standard_normal(shape)
    g = rng.standard_normal((*shape[:2], *out_hw))
    y = forward(variant, mode, x, out_hw, scales)
    dx = backward(variant, mode, g, shape, scales)
    assert abs(np.vdot(y, g) - np.vdot(x, dx)) <= TOLERANCE[np.float64] * np.abs(y * g).sum()


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_nearest_copies_nan_and_infinity(variant):
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)
    x[0, 0, 1, 2], x[0, 0, 2, 3] = np.nan, -np.inf
    y = forward(variant, ("nearest", False), x, (6, 8), None)
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(2, axis=3))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cpu_serial_and_parallel_drivers_agree_bitwise(force_driver, rng, case):
    shape, out_hw, scales = case
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal((*shape[:2], *out_hw)).astype(np.float32)
    for mode in MODES:
        results = []
        for driver in ("serial", "parallel"):
            force_driver(driver)
            results.append(
                (
                    forward("cpu", mode, x, out_hw, scales),
                    backward("cpu", mode, dy, shape, scales),
                )
            )
        for serial, parallel in zip(*results, strict=True):
            np.testing.assert_array_equal(serial, parallel)


def test_cpu_accepts_non_contiguous_input(rng):
    x = rng.standard_normal((2, 3, 5, 14))[..., ::2]
    for mode in MODES:
        assert_close(
            forward("cpu", mode, x, (7, 3), None),
            reference(mode, 0, x, (7, 3), scales=None),
            np.float64,
        )


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_empty_batch(variant):
    for mode in MODES:
        y = forward(variant, mode, np.ones((0, 3, 4, 5), np.float32), (7, 9), None)
        assert y.shape == (0, 3, 7, 9)
        assert backward(variant, mode, y, (0, 3, 4, 5), None).shape == (0, 3, 4, 5)


def test_tables_are_cached_per_geometry():
    resample._axis_tables.cache_clear()
    x = np.ones((1, 1, 5, 7), np.float32)
    for _ in range(3):
        nearest2d_forward_cpu(x, (9, 9))
    info = resample._axis_tables.cache_info()
    assert info.misses == 2 and info.hits == 4  # rows and columns, built once


# --- errors (one validation serves both variants) -------------------------------------------------


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_rejects_bad_arguments(variant):
    x = np.ones((1, 2, 4, 5), np.float32)
    with pytest.raises(TypeError, match="nearest2d_forward expects x of dtype float32 or float64"):
        forward(variant, ("nearest", False), x.astype(np.int32), (2, 2), None)
    with pytest.raises(
        ValueError, match=r"expects a 4-D input \(N, C, H, W\), got shape \(2, 4, 5\)"
    ):
        forward(variant, ("bilinear", False), x[0], (2, 2), None)
    with pytest.raises(ValueError, match=r"sizes must be positive, got input \(4, 5\) and output"):
        forward(variant, ("bilinear", True), x, (0, 2), None)
    with pytest.raises(ValueError, match=r"expects positive scale factors, got \(2.0, -1.0\)"):
        forward(variant, ("nearest", True), x, (8, 2), (2.0, -1.0))
    with pytest.raises(ValueError, match=r"got dy \(1, 3, 8, 10\) and x_shape \(1, 2, 4, 5\)"):
        backward(variant, ("bilinear", False), np.ones((1, 3, 8, 10)), x.shape, None)
