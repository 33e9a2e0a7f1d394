"""The batched affine warp against its float64 reference, on the CPU and in CUDA, and against the
images it must reproduce exactly (identity, whole-pixel shifts, the mirror).

Each output is a bilinear blend of four float32 pixels with float32 weights, the weights from
float32 coordinates: against the float64 reference it errs by a few roundings of a coordinate
times the image's slope (~1e-6 relative), inside the 1e-5 of ``numerics.TOLERANCE``; a tap read
from the wrong row, column, channel or image errs by ~1e-1. Every output the module allocates
starts as NaN (``poisoned_outputs`` in conftest.py), so an output never written fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels._cuda import simulating
from fastnet.kernels.warp import (
    affine_warp_cpu,
    affine_warp_cuda,
    plain_affine_warp,
    random_view_matrices,
    reference_affine_warp,
)
from numerics import assert_close

VARIANTS = {"cpu": affine_warp_cpu, "cuda": affine_warp_cuda}
IDENTITY = np.array([[1, 0, 0], [0, 1, 0]], np.float32)

# (images shape (B, C, H, W), out_hw); tiny for the simulator (at most 2 blocks of 256 threads)
CASES = [
    ((3, 2, 9, 11), (9, 11)),  # odd sides, output as large as the input
    ((2, 3, 7, 5), (6, 9)),  # the output larger along one side, smaller along the other
    ((5, 1, 13, 13), (13, 13)),  # MNIST-like: one channel
]


def random_images(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.5, 2.0, shape).astype(np.float32)


def random_matrices(batch: int, height: int, width: int, seed: int = 1) -> np.ndarray:
    """View-like matrices, plus one general matrix (sheared, scaled up, shifted half out)."""
    rng = np.random.default_rng(seed)
    matrices = random_view_matrices(batch, height, width, rng)
    matrices[-1] = rng.uniform(-1.3, 1.3, (2, 3)) + [[0, 0, width / 2], [0, 0, height / 2]]
    return matrices


def identities(batch: int) -> np.ndarray:
    return np.repeat(IDENTITY[None], batch, axis=0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_the_reference(variant, case):
    shape, out_hw = case
    images = random_images(shape)
    matrices = random_matrices(shape[0], *shape[2:])
    got = VARIANTS[variant](images, matrices, out_hw)
    assert_close(got, reference_affine_warp(images, matrices, out_hw), np.float32)


@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_cpu_drivers_match_the_reference(force_driver, driver):
    force_driver(driver)
    shape, out_hw = CASES[1]
    images, matrices = random_images(shape, 3), random_matrices(shape[0], *shape[2:], seed=4)
    got = affine_warp_cpu(images, matrices, out_hw)
    assert_close(got, reference_affine_warp(images, matrices, out_hw), np.float32)


def test_cpu_and_cuda_agree():
    shape, out_hw = CASES[0]
    images, matrices = random_images(shape, 5), random_matrices(shape[0], *shape[2:], seed=6)
    cpu, cuda = (
        affine_warp_cpu(images, matrices, out_hw),
        affine_warp_cuda(images, matrices, out_hw),
    )
    if simulating():  # the same float32 operations in the same order
        np.testing.assert_array_equal(cpu, cuda)
    else:  # a GPU may fuse multiply-adds in the coordinates
        assert_close(cuda, cpu, np.float32, tolerance=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_identity_copies_every_image_exactly(variant):
    images = random_images((3, 2, 9, 11), seed=7)
    np.testing.assert_array_equal(VARIANTS[variant](images, identities(3), (9, 11)), images)


@pytest.mark.parametrize("variant", VARIANTS)
def test_whole_pixel_shifts_move_the_image_and_fill_with_zeros(variant):
    images = random_images((3, 2, 9, 11), seed=8)
    shifts = [(2, -3), (-4, 1), (0, 12)]  # (dx, dy); the last moves every pixel out
    matrices = identities(3)
    matrices[:, :, 2] = shifts
    got = VARIANTS[variant](images, matrices, (9, 11))
    expected = np.zeros_like(images)
    for b, (dx, dy) in enumerate(shifts):
        padded = np.pad(images[b], ((0, 0), (20, 20), (20, 20)))
        expected[b] = padded[:, 20 + dy : 20 + dy + 9, 20 + dx : 20 + dx + 11]
    np.testing.assert_array_equal(got, expected)
    assert not got[2].any()


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_mirror_matrix_flips_left_right(variant):
    images = random_images((2, 3, 7, 5), seed=9)
    mirror = np.array([[-1, 0, 5 - 1], [0, 1, 0]], np.float32)
    got = VARIANTS[variant](images, np.stack([mirror, mirror]), (7, 5))
    np.testing.assert_array_equal(got, images[..., ::-1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_half_pixel_shifts_average_neighbours(variant):
    """u = x + 1/2: the mean of each pixel and its right neighbour; the last column half of
    itself (its right neighbour is the zero outside)."""
    images = random_images((1, 1, 5, 7), seed=10)
    matrix = IDENTITY.copy()
    matrix[0, 2] = 0.5
    got = VARIANTS[variant](images, matrix[None], (5, 7))
    expected = 0.5 * (images + np.pad(images[..., 1:], ((0, 0), (0, 0), (0, 0), (0, 1))))
    assert_close(got, expected, np.float32, tolerance=1e-7)


@pytest.mark.parametrize("variant", VARIANTS)
def test_coordinates_far_outside_read_zeros(variant):
    images = random_images((2, 1, 5, 5), seed=11)
    matrices = identities(2)
    matrices[0, 0, 2] = 1e30  # past every integer floor() could return
    matrices[1, 1, 2] = -7.0
    assert not VARIANTS[variant](images, matrices, (5, 5)).any()


def test_the_plain_peer_matches_the_reference():
    shape, out_hw = CASES[1]
    images, matrices = random_images(shape, 12), random_matrices(shape[0], *shape[2:], seed=13)
    assert_close(
        plain_affine_warp(images, matrices, out_hw),
        reference_affine_warp(images, matrices, out_hw),
        np.float32,
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_empty_batch(variant):
    got = VARIANTS[variant](
        np.empty((0, 2, 5, 5), np.float32), np.empty((0, 2, 3), np.float32), (3, 4)
    )
    assert got.shape == (0, 2, 3, 4) and got.dtype == np.float32


@pytest.mark.parametrize(
    ("images", "matrices", "out_hw", "error", "message"),
    [
        (np.ones((2, 1, 4, 4)), identities(2), (4, 4), TypeError, "float32"),
        (np.ones((2, 4, 4), np.float32), identities(2), (4, 4), TypeError, r"\(B, C, H, W\)"),
        (np.ones((2, 1, 4, 4), np.float32), identities(3), (4, 4), ValueError, "one"),
        (np.ones((2, 1, 4, 4), np.float32), identities(2), (0, 4), ValueError, "positive"),
        (np.ones((2, 1, 4, 4), np.float32), identities(2) * np.nan, (4, 4), ValueError, "finite"),
    ],
)
@pytest.mark.parametrize("variant", VARIANTS)
def test_bad_arguments_raise_naming_them(variant, images, matrices, out_hw, error, message):
    with pytest.raises(error, match=message):
        VARIANTS[variant](images, matrices, out_hw)
