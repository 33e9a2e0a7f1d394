"""The fused batch builder (gather, crop with zero padding, flip, scale, normalise) against its
float64 reference, on the CPU and in CUDA, and against the host transforms it replaces.

Each output is one float32 division and one subtraction and division away from its pixel, so
against the float64 reference it errs by a few float32 roundings (~1e-7 relative), inside the
1e-5 of ``numerics.TOLERANCE``; a pixel read from the wrong row, column, channel or image errs by
~1e-1. Against the host transforms (``fastnet.data.transforms``), which do the same float32
operations, the kernels must agree to the bit.

Every output the module allocates starts as NaN (``poisoned_outputs`` in conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.data import Compose, Normalize, RandomCrop, RandomHorizontalFlip
from fastnet.kernels import augment
from fastnet.kernels._cuda import launch, simulating
from fastnet.kernels.augment import (
    augment_batch_cpu,
    augment_batch_cuda,
    reference_augment_batch,
)
from numerics import assert_close

VARIANTS = {"cpu": augment_batch_cpu, "cuda": augment_batch_cuda}

# (store shape (N, C, H0, W0), store dtype, batch B, out_hw, padding)
CASES = [
    ((7, 3, 9, 11), np.uint8, 5, (9, 11), 2),  # CIFAR-like: same size, padded, odd sides
    ((6, 1, 13, 7), np.uint8, 9, (13, 7), 3),  # one channel, padding wider than some crops move
    ((5, 2, 8, 10), np.float32, 4, (5, 7), 0),  # float store, a smaller crop, no padding
    ((4, 3, 6, 5), np.float32, 3, (8, 9), 2),  # crop larger than the image: padding on all sides
    ((3, 2, 5, 5), np.uint8, 6, (5, 5), 0),  # the evaluation path's shape: pad 0 (draws below)
]
# Tiny shapes for the simulator: at most 2 blocks of 256 threads.
CUDA_CASES = [CASES[0], CASES[2], CASES[3]]


def case_id(case) -> str:
    shape, dtype, batch, out_hw, padding = case
    return (
        f"{np.dtype(dtype).name}{'x'.join(map(str, shape))}-b{batch}-to{out_hw[0]}x{out_hw[1]}"
        f"-pad{padding}"
    )


def make_store(shape, dtype, rng) -> np.ndarray:
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.uniform(-1.5, 2.0, shape).astype(np.float32)


def make_draws(store_shape, batch, out_hw, padding, rng):
    """Random in-range draws: index, top, left (int64), flip (bool, both values present)."""
    count, channels, height, width = store_shape
    index = rng.integers(0, count, batch)
    top = rng.integers(0, height + 2 * padding - out_hw[0] + 1, batch)
    left = rng.integers(0, width + 2 * padding - out_hw[1] + 1, batch)
    flip = rng.random(batch) < 0.5
    flip[:2] = True, False
    mean = rng.uniform(0.1, 0.6, channels).astype(np.float32)
    std = rng.uniform(0.2, 0.5, channels).astype(np.float32)
    return index, top, left, flip, mean, std


def make_case(case, seed: int = 0):
    shape, dtype, batch, out_hw, padding = case
    rng = np.random.default_rng(seed)
    store = make_store(shape, dtype, rng)
    return store, *make_draws(shape, batch, out_hw, padding, rng), out_hw, padding


def variant_cases():
    return [pytest.param("cpu", case, id=f"cpu-{case_id(case)}") for case in CASES] + [
        pytest.param("cuda", case, id=f"cuda-{case_id(case)}") for case in CUDA_CASES
    ]


@pytest.mark.parametrize(("variant", "case"), variant_cases())
def test_matches_the_reference(variant, case):
    arguments = make_case(case)
    got = VARIANTS[variant](*arguments)
    assert_close(got, reference_augment_batch(*arguments), np.float32)


@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_cpu_drivers_match_the_reference(force_driver, driver):
    force_driver(driver)
    arguments = make_case(CASES[0], seed=3)
    assert_close(augment_batch_cpu(*arguments), reference_augment_batch(*arguments), np.float32)


def test_cpu_and_cuda_agree_to_the_bit():
    arguments = make_case(CASES[0], seed=5)
    np.testing.assert_array_equal(augment_batch_cpu(*arguments), augment_batch_cuda(*arguments))


def test_an_empty_batch():
    store, *_ = make_case(CASES[0])
    empty_draw = np.empty(0, np.int64)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    for function in VARIANTS.values():
        got = function(store, empty_draw, empty_draw, empty_draw, empty_draw, mean, std, (9, 11), 2)
        assert got.shape == (0, 3, 9, 11) and got.dtype == np.float32


# ------------------------------------------------------------------ the host transforms' batch


def float_images(store: np.ndarray) -> np.ndarray:
    """What ArrayDataset.float_images does: float32, uint8 divided by 255 in float32."""
    converted = store.astype(np.float32)
    return converted / np.float32(255) if store.dtype == np.uint8 else converted


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
@pytest.mark.parametrize("case", [CASES[0], CASES[3]], ids=case_id)
def test_equals_the_host_transforms_given_their_draws(variant, case):
    """RandomCrop(size, padding), RandomHorizontalFlip() and Normalize on the host draw from one
    generator: replaying the same draws makes the kernel's batch equal theirs to the bit."""
    store, index, _, _, _, mean, std, out_hw, padding = make_case(case, seed=7)
    transform = Compose(
        [RandomCrop(out_hw, padding=padding), RandomHorizontalFlip(), Normalize(mean, std)]
    )
    expected = transform(float_images(store)[index], np.random.default_rng(11))
    replay = np.random.default_rng(11)
    rows = store.shape[2] + 2 * padding - out_hw[0] + 1
    columns = store.shape[3] + 2 * padding - out_hw[1] + 1
    top = replay.integers(0, rows, len(index))
    left = replay.integers(0, columns, len(index))
    flip = replay.random(len(index)) < 0.5
    assert flip.any() and not flip.all()
    got = VARIANTS[variant](store, index, top, left, flip, mean, std, out_hw, padding)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_the_evaluation_path_equals_normalize(variant):
    store, index, _, _, _, mean, std, out_hw, _ = make_case(CASES[4], seed=9)
    zeros = np.zeros(len(index), np.int64)
    got = VARIANTS[variant](store, index, zeros, zeros, zeros.astype(bool), mean, std, out_hw, 0)
    np.testing.assert_array_equal(got, Normalize(mean, std)(float_images(store)[index]))


# ------------------------------------------------------------------ bounds and arguments


@pytest.mark.parametrize(
    "variant",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                not simulating(),
                reason="on a GPU the draws are device arrays, which the entry point does not read "
                "back (a synchronisation per batch): callers check them on the host",
            ),
        ),
    ],
)
@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("index", 7, r"index\[1\] = 7 is out of range: a store item must be in \[0, 6\]"),
        ("index", -1, r"index\[1\] = -1 is out of range"),
        ("top", 5, r"top\[1\] = 5 is out of range: the crop's top row .* \[0, 4\]"),
        ("left", -1, r"left\[1\] = -1 is out of range: the crop's left column .* \[0, 4\]"),
    ],
)
def test_out_of_range_draws_raise_at_the_entry_point(variant, name, value, message):
    store, index, top, left, flip, mean, std, out_hw, padding = make_case(CASES[0])
    draws = {"index": index, "top": top, "left": left}
    draws[name] = draws[name].copy()
    draws[name][1] = value
    with pytest.raises(ValueError, match=message):
        VARIANTS[variant](store, *draws.values(), flip, mean, std, out_hw, padding)


def test_the_kernels_never_read_outside_the_store():
    """Draws past every bound, handed to the kernels directly (as unchecked device arrays would
    reach them): an image outside the store comes out NaN, an offset past its range only reads
    padding. The simulator raises IndexError on a read past an array's end; negative indices
    would wrap silently, so their NaN proves they were not read."""
    store, index, top, left, flip, mean, std, out_hw, padding = make_case(CASES[0])
    index, top, left = index.copy(), top.copy(), left.copy()
    index[:2] = len(store), -1
    top[2], left[3], left[4] = 1000, -1000, 1000
    pad_values = (0 - mean) / std
    arguments = (store, index, top, left, flip, mean, std)
    cpu = np.full((len(index), 3, *out_hw), np.nan, np.float32)
    augment._augment_cpu.serial(*arguments, cpu, padding, np.float32(255))
    cuda = np.full_like(cpu, np.nan)
    launch(augment._augment_cuda, 1, 64, *arguments, cuda, padding, np.float32(255))
    for got in (cpu, cuda):
        assert np.isnan(got[:2]).all()
        np.testing.assert_array_equal(
            got[2:], np.broadcast_to(pad_values[:, None, None], got[2:].shape)
        )


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"store": np.zeros((2, 3, 4, 4), np.float64)}, TypeError, "uint8 or float32 store"),
        ({"store": np.zeros((3, 4, 4), np.uint8)}, TypeError, r"store \(N, C, H0, W0\)"),
        ({"mean": np.zeros(2, np.float32)}, ValueError, r"mean as a float32 \(3,\) array"),
        ({"std": np.ones(3, np.float64)}, ValueError, r"std as a float32 \(3,\) array"),
        ({"flip": np.zeros(4, bool)}, ValueError, "of one length"),
        ({"top": np.zeros(5, np.float32)}, ValueError, "integer"),
        ({"out_hw": (14, 11)}, ValueError, "a 14x11 crop does not fit 9x11 images padded by 2"),
        ({"padding": -1}, ValueError, "padding >= 0"),
    ],
)
def test_bad_arguments_raise(change, error, message):
    store, index, top, left, flip, mean, std, out_hw, padding = make_case(CASES[0])
    arguments = {
        "store": store,
        "index": index,
        "top": top,
        "left": left,
        "flip": flip,
        "mean": mean,
        "std": std,
        "out_hw": out_hw,
        "padding": padding,
    }
    with pytest.raises(error, match=message):
        augment_batch_cpu(**{**arguments, **change})
