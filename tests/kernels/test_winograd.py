"""Winograd F(2x2, 3x3) transforms against their float64 references, on the CPU and in CUDA.

Three layers of checks, each independent of the next:

* the references themselves: the whole pipeline (weights, input tiles, 16 products, output
  tiles) equals the direct sliding-window convolution of conv.py, and each ``_grad`` reference
  is the adjoint of its forward (<T a, b> == <a, T* b>), which is what makes it the gradient;
* every kernel (CPU serial, CPU parallel, CUDA) against its reference, outputs and tile buffers
  poisoned with NaN (``poisoned_outputs`` in conftest.py) so an entry never written fails;
* the CPU's spaced tile buffers, and the errors.

Tolerances: each transformed entry is a sum of at most 16 terms with coefficients ±1 or ±1/2, so
float32 rounding stays below 16 * 2**-24 ≈ 1e-6 of the largest term; 1e-5 of the largest output
catches a single missing, doubled or wrongly signed term (an error of order 1e-1). Float64: 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import conv, winograd
from fastnet.kernels.winograd import (
    POSITIONS,
    reference_input,
    reference_input_grad,
    reference_output,
    reference_output_grad,
    reference_weights,
    reference_weights_grad,
    tile_geometry,
)
from numerics import TOLERANCE, relative_error

# (x shape (N, C, H, W), output channels, padding): odd sides (a clipped last tile row and
# column), no padding, padding 2, unequal padding, a plane smaller than one tile, and a row of 14
# tiles (the CPU's vector groups of 8 and 4, then single tiles, the last one clipped)
CASES = [
    ((2, 3, 7, 9), 5, 1),
    ((1, 2, 5, 27), 3, 1),
    ((1, 2, 6, 6), 4, 0),
    ((3, 4, 5, 8), 2, (1, 2)),
    ((2, 3, 4, 5), 3, 2),
    ((1, 2, 1, 2), 3, 1),
]
# the simulator: a block or two of 256 threads a launch
CUDA_CASES = [((2, 3, 5, 7), 2, 1), ((1, 2, 4, 4), 3, (0, 2))]
VARIANTS = ("cpu", "cuda")


def case_id(case):
    shape, out_channels, padding = case
    return f"x{'x'.join(map(str, shape))}-k{out_channels}-p{padding}"


def kernel(name, variant):
    return getattr(winograd, f"winograd_{name}_{variant}")


def output_shape(case):
    (batch, _, height, width), out_channels, padding = case
    geometry = tile_geometry(height, width, padding)
    return batch, out_channels, geometry.out_h, geometry.out_w


def tile_count(case):
    (batch, _, height, width), _, padding = case
    geometry = tile_geometry(height, width, padding)
    return batch * geometry.tiles_h * geometry.tiles_w


# --- the references ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_reference_pipeline_is_the_direct_convolution(rng, case):
    shape, out_channels, padding = case
    x = rng.standard_normal(shape)
    weight, bias = (
        rng.standard_normal((out_channels, shape[1], 3, 3)),
        rng.standard_normal(out_channels),
    )
    products = np.matmul(reference_weights(weight), reference_input(x, padding))
    y = reference_output(products, bias, output_shape(case))
    expected = conv.reference_conv2d(x, weight, bias, 1, padding)
    assert y.shape == expected.shape
    assert relative_error(y, expected) <= 1e-12


def test_tile_geometry():
    assert tile_geometry(14, 14, 1) == (1, 1, 14, 14, 7, 7)
    assert tile_geometry(7, 9, 0) == (0, 0, 5, 7, 3, 4)
    assert tile_geometry(5, 8, (1, 2)) == (1, 2, 5, 10, 3, 5)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_each_reference_gradient_is_the_adjoint_of_its_transform(rng, case):
    shape, out_channels, padding = case
    x, weight = rng.standard_normal(shape), rng.standard_normal((out_channels, shape[1], 3, 3))
    y_shape, count = output_shape(case), tile_count(case)

    v, dv = reference_input(x, padding), rng.standard_normal((POSITIONS, shape[1], count))
    assert abs(
        np.vdot(v, dv) - np.vdot(x, reference_input_grad(dv, shape, padding))
    ) <= 1e-12 * np.sum(np.abs(v * dv))

    u, du = reference_weights(weight), rng.standard_normal((POSITIONS, out_channels, shape[1]))
    assert abs(np.vdot(u, du) - np.vdot(weight, reference_weights_grad(du))) <= 1e-12 * np.sum(
        np.abs(u * du)
    )

    m, dy = rng.standard_normal((POSITIONS, out_channels, count)), rng.standard_normal(y_shape)
    y = reference_output(m, None, y_shape)
    assert abs(np.vdot(y, dy) - np.vdot(m, reference_output_grad(dy))) <= 1e-12 * np.sum(
        np.abs(y * dy)
    )


# --- the kernels ---------------------------------------------------------------------------------


def as_tiles_buffer(values, variant):
    tiles = getattr(winograd, f"winograd_tiles_{variant}")(*values.shape[1:], values.dtype, values)
    tiles[...] = values
    return tiles


def kernel_cases():
    """(variant, driver, case, dtype): the CPU's serial driver in float32 and float64, its parallel
    driver in float32 (the same jitted bodies; each extra specialisation of a parallel driver costs
    seconds of compilation); the CUDA kernels on the simulator's tiny cases, float32."""
    for driver, dtypes in (("serial", (np.float32, np.float64)), ("parallel", (np.float32,))):
        for case in CASES:
            for dtype in dtypes:
                yield pytest.param(
                    "cpu",
                    driver,
                    case,
                    dtype,
                    id=f"cpu-{driver}-{case_id(case)}-{np.dtype(dtype).name}",
                )
    for case in CUDA_CASES:
        yield pytest.param("cuda", "grid", case, np.float32, id=f"cuda-{case_id(case)}-float32")


@pytest.mark.parametrize("variant, driver, case, dtype", list(kernel_cases()))
def test_every_transform_matches_its_reference(force_driver, rng, variant, driver, case, dtype):
    if variant == "cpu":  # the CPU policy takes the driver under test whatever the size
        force_driver(driver)
    shape, out_channels, padding = case
    channels, count, y_shape = shape[1], tile_count(case), output_shape(case)
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal((out_channels, channels, 3, 3)).astype(dtype)
    bias = rng.standard_normal(out_channels).astype(dtype)
    # the tile inputs in the variant's own buffers, as conv2d hands them (spaced on the CPU)
    m = as_tiles_buffer(
        rng.standard_normal((POSITIONS, out_channels, count)).astype(dtype), variant
    )
    dy = rng.standard_normal(y_shape).astype(dtype)
    dv = as_tiles_buffer(rng.standard_normal((POSITIONS, channels, count)).astype(dtype), variant)
    du = rng.standard_normal((POSITIONS, out_channels, channels)).astype(dtype)  # a matmul's output
    results = {
        "weights": (kernel("weights", variant)(weight), reference_weights(weight)),
        "input": (kernel("input", variant)(x, padding), reference_input(x, padding)),
        "output": (kernel("output", variant)(m, bias, y_shape), reference_output(m, bias, y_shape)),
        "output without bias": (
            kernel("output", variant)(m, None, y_shape),
            reference_output(m, None, y_shape),
        ),
        "output_grad": (kernel("output_grad", variant)(dy), reference_output_grad(dy)),
        "input_grad": (
            kernel("input_grad", variant)(dv, shape, padding),
            reference_input_grad(dv, shape, padding),
        ),
        "weights_grad": (kernel("weights_grad", variant)(du), reference_weights_grad(du)),
    }
    for name, (got, expected) in results.items():
        assert got.dtype == dtype and got.shape == expected.shape, name
        assert relative_error(got, expected) <= TOLERANCE[dtype], name


@pytest.mark.parametrize("variant", VARIANTS)
def test_input_grad_is_deterministic(force_driver, rng, variant):
    """Overlapping tiles add into one pixel in a fixed order: the same bits on every call, and on
    the CPU the same bits from the parallel driver as from the serial one."""
    shape, padding = (2, 3, 7, 5), 1
    count = tile_count((shape, 1, padding))
    dv = rng.standard_normal((POSITIONS, shape[1], count)).astype(np.float32)
    if variant == "cpu":
        force_driver("serial")
    first = kernel("input_grad", variant)(dv, shape, padding)
    np.testing.assert_array_equal(kernel("input_grad", variant)(dv, shape, padding), first)
    if variant == "cpu":
        force_driver("parallel")
        np.testing.assert_array_equal(kernel("input_grad", variant)(dv, shape, padding), first)


@pytest.mark.parametrize("variant", VARIANTS)
def test_outputs_written_into_given_buffers(rng, variant):
    """``out=`` takes a tile buffer of the variant (spaced on the CPU) or a slice of a batch's
    output."""
    shape, out_channels, padding = (3, 2, 5, 4), 3, 1
    case = (shape, out_channels, padding)
    count, y_shape = tile_count(case), output_shape(case)
    x = rng.standard_normal(shape).astype(np.float32)
    buffer = getattr(winograd, f"winograd_tiles_{variant}")(shape[1], count, np.float32, x)
    buffer[...] = np.nan
    assert kernel("input", variant)(x, padding, out=buffer) is buffer
    assert relative_error(buffer, reference_input(x, padding)) <= TOLERANCE[np.float32]
    m = rng.standard_normal((POSITIONS, out_channels, count)).astype(np.float32)
    batch_output = np.full((5, *y_shape[1:]), np.nan, np.float32)
    kernel("output", variant)(m, None, y_shape, out=batch_output[1:4])
    assert (
        relative_error(batch_output[1:4], reference_output(m, None, y_shape))
        <= TOLERANCE[np.float32]
    )
    assert np.isnan(batch_output[[0, 4]]).all()


def test_cpu_tile_buffers_are_spaced_an_odd_number_of_cache_lines():
    for rows, count, dtype in (
        (64, 784, np.float32),
        (32, 147, np.float32),
        (3, 5, np.float64),
        (16, 256, np.float32),
    ):
        tiles = winograd.winograd_tiles_cpu(rows, count, dtype, np.empty(0))
        assert tiles.shape == (POSITIONS, rows, count)
        assert tiles.strides[1:] == (
            count * tiles.itemsize,
            tiles.itemsize,
        )  # each matrix C-contiguous
        assert tiles.strides[0] >= rows * count * tiles.itemsize
        assert tiles.strides[0] % 64 == 0 and (tiles.strides[0] // 64) % 2 == 1
    assert winograd.winograd_tiles_cuda(64, 784, np.float32, np.empty(0)).flags.c_contiguous


def test_matmul_writes_into_a_spaced_tile_buffer(rng):
    """conv2d's 16 products go straight into spaced buffers: matmul takes any stride between
    matrices."""
    from fastnet.kernels.matmul import matmul_cpu

    u = rng.standard_normal((POSITIONS, 5, 3)).astype(np.float32)
    v = winograd.winograd_tiles_cpu(3, 7, np.float32, u)
    v[...] = rng.standard_normal(v.shape)
    out = winograd.winograd_tiles_cpu(5, 7, np.float32, u)
    assert matmul_cpu(u, v, out=out) is out
    assert relative_error(out, np.matmul(u.astype(np.float64), v)) <= TOLERANCE[np.float32]
    with pytest.raises(ValueError, match="matrix-contiguous"):
        matmul_cpu(u, v, out=np.empty((POSITIONS, 7, 10), np.float32)[:, :, :5].transpose(0, 2, 1))


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_bad_arguments_name_what_is_wrong(variant):
    x = np.ones((1, 2, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"\(K, C, 3, 3\)"):
        kernel("weights", variant)(np.ones((2, 2, 5, 5), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        kernel("input", variant)(x.astype(np.int32), 1)
    with pytest.raises(ValueError, match="does not fit"):
        kernel("input", variant)(np.ones((1, 2, 1, 5), np.float32), 0)
    with pytest.raises(ValueError, match="padding"):
        kernel("input", variant)(x, -1)
    with pytest.raises(ValueError, match=r"tiles of shape \(16, 3, 9\)"):
        kernel("output", variant)(np.ones((16, 3, 8), np.float32), None, (1, 3, 5, 5))
    with pytest.raises(ValueError, match="bias of shape"):
        kernel("output", variant)(
            np.ones((16, 3, 9), np.float32), np.ones(2, np.float32), (1, 3, 5, 5)
        )
    with pytest.raises(ValueError, match=r"tiles_grad of shape \(16, 2, 9\)"):
        kernel("input_grad", variant)(np.ones((16, 2, 8), np.float32), x.shape, 1)
    with pytest.raises(ValueError, match="out as a"):
        kernel("output_grad", variant)(x, out=np.empty((16, 2, 8), np.float32))
