"""A training batch built from an image store in one pass: gather, random crop with zero padding,
horizontal flip, scaling and per-channel normalisation.

Math. From an image store (N, C, H0, W0), the batch of B images of C x H x W is

    out[b, c, y, x] = (pixel(store[index[b], c], y + top[b] - P, x') / D - mean[c]) / std[c]
    x' = (W - 1 - x) + left[b] - P   when flip[b],   else   x + left[b] - P

where ``pixel`` is 0 outside the H0 x W0 image (zero padding by P on every side before
normalisation, as torchvision's ``RandomCrop(padding=P)`` then ``Normalize`` does), D is 255 for
a uint8 store and 1 for a float32 one, and (top, left) is the corner of the crop in the padded
image: top in [0, H0 + 2P - H], left in [0, W0 + 2P - W]. The flip mirrors the cropped window,
as ``RandomHorizontalFlip`` after ``RandomCrop`` does. The evaluation batch is the same with
P = 0, zero offsets and no flips.

The scaling divides by D instead of multiplying by 1/D, in float32, and the normalisation is a
float32 subtraction then division: the host transforms' own arithmetic
(``fastnet.data.transforms``), so the kernels reproduce them to the bit given the same draws.

Buffers: store (N, C, H0, W0) uint8 or float32; index (B,) integer (the store item of each batch
image); top and left (B,) integer; flip (B,) bool or integer (non-zero mirrors); mean and std
(C,) float32; out (B, C, H, W) float32. ``out_hw`` is (H, W); ``padding`` is P >= 0.

Bounds. The entry points check every index and offset on the host when the arrays are NumPy
(the CPU device, the simulator) and raise a ValueError naming the first bad one. On a GPU that
check would copy the draws back every batch, so callers check their draws on the host before
uploading them (``fastnet.data.DeviceDataLoader`` draws them in range). The kernels never read
outside the store whatever they are given: an offset past the range only reads more padding, and
an index outside [0, N) makes that image's outputs NaN.

Variants, simplest first:

* ``reference_augment_batch``: float64 NumPy, one image at a time: ``np.pad``, a slice,
  ``[..., ::-1]`` for the flip, then the normalisation.
* ``augment_batch_cpu``: Numba over the B*C*H output rows, serial or parallel as the CPU policy
  (``_cpu.parallel_pays``) decides for the size of the batch.
* ``augment_batch_cuda``: a grid-stride loop with one output per iteration, consecutive threads on
  consecutive columns (coalesced writes, and reads along one image row).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numba
import numpy as np
from numba import cuda, prange
from numba.extending import register_jitable

from ._checks import as_shape
from ._contract import (
    FLOAT32_BYTES,
    OURS,
    BenchContext,
    Case,
    CaseInfo,
    CaseSpec,
    Family,
    Implementation,
    KernelSpec,
)
from ._cpu import cpu_kernel
from ._cuda import array_module, cuda_kernel, empty, launch, stride_grid

THREADS_PER_BLOCK = 256
STORE_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))
OP = "augment_batch"


def _divisor(store_dtype: np.dtype) -> np.float32:
    """D: uint8 pixels are scaled to [0, 1], float pixels are used as they are."""
    return np.float32(255 if store_dtype == np.uint8 else 1)


# ---------------------------------------------------------------------------------------------
# Arguments


def _check_values(name: str, values: np.ndarray, high: int, meaning: str) -> None:
    """ValueError naming the first entry of ``values`` outside [0, high]."""
    bad = np.flatnonzero((values < 0) | (values > high))
    if bad.size:
        first = int(bad[0])
        raise ValueError(
            f"{OP}: {name}[{first}] = {int(values[first])} is out of range: {meaning} must be "
            f"in [0, {high}] ({bad.size} of {values.size} entries are out of range)"
        )


def _arguments(store, index, top, left, flip, mean, std, out_hw, padding):
    """The checked arguments, C-contiguous: (store, index, top, left, flip, mean, std, out_hw,
    padding). Values are checked when the arrays are on the host (see the module docstring)."""
    if getattr(store, "ndim", None) != 4 or store.dtype not in STORE_DTYPES:
        raise TypeError(
            f"{OP} expects a uint8 or float32 store (N, C, H0, W0), got "
            f"{getattr(store, 'dtype', type(store).__name__)} {getattr(store, 'shape', '')}"
        )
    xp = array_module(store)
    count, channels, image_h, image_w = store.shape
    draws = {"index": index, "top": top, "left": left, "flip": flip}
    batch = len(index)
    for name, array in draws.items():
        if array_module(array) is not xp:
            raise TypeError(
                f"{OP}: {name} is a {type(array).__name__} but store is a {type(store).__name__}"
            )
        if array.ndim != 1 or len(array) != batch or array.dtype.kind not in "iub":
            raise ValueError(
                f"{OP} expects index, top, left and flip as integer (B,) arrays of one length "
                f"(flip may be bool), got {name} {array.dtype} {tuple(array.shape)} for "
                f"B = {batch}"
            )
    for name, array in (("mean", mean), ("std", std)):
        if array_module(array) is not xp or array.shape != (channels,) or array.dtype != np.float32:
            raise ValueError(
                f"{OP} expects {name} as a float32 ({channels},) array beside the store, got "
                f"{type(array).__name__} {array.dtype} {tuple(array.shape)}"
            )
    out_hw = as_shape(out_hw, OP)
    padding = int(padding)
    if len(out_hw) != 2 or min(out_hw) < 1 or padding < 0:
        raise ValueError(
            f"{OP} expects out_hw as a positive (H, W) pair and padding >= 0, got {out_hw} "
            f"and {padding}"
        )
    spare_h, spare_w = image_h + 2 * padding - out_hw[0], image_w + 2 * padding - out_hw[1]
    if min(spare_h, spare_w) < 0:
        raise ValueError(
            f"{OP}: a {out_hw[0]}x{out_hw[1]} crop does not fit {image_h}x{image_w} images "
            f"padded by {padding}"
        )
    if xp is np:
        _check_values("index", index, count - 1, "a store item")
        _check_values("top", top, spare_h, "the crop's top row in the padded image")
        _check_values("left", left, spare_w, "the crop's left column in the padded image")
    contiguous = [xp.ascontiguousarray(a) for a in (store, index, top, left, flip, mean, std)]
    return (*contiguous, out_hw, padding)


# ---------------------------------------------------------------------------------------------
# Reference (float64): np.pad, a slice and a reversed view, one image at a time


def reference_augment_batch(
    store: np.ndarray,
    index: np.ndarray,
    top: np.ndarray,
    left: np.ndarray,
    flip: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    out_hw: Sequence[int],
    padding: int,
) -> np.ndarray:
    """The batch (B, C, H, W) in float64."""
    store = np.asarray(store)
    scale = 1.0 / 255.0 if store.dtype == np.uint8 else 1.0
    height, width = out_hw
    channel_shape = (-1, 1, 1)
    mean64 = np.asarray(mean, np.float64).reshape(channel_shape)
    std64 = np.asarray(std, np.float64).reshape(channel_shape)
    images = []
    for item, row, column, mirrored in zip(index, top, left, flip, strict=True):
        image = store[item].astype(np.float64) * scale
        padded = np.pad(image, ((0, 0), (padding, padding), (padding, padding)))
        crop = padded[:, row : row + height, column : column + width]
        if mirrored:
            crop = crop[:, :, ::-1]
        images.append((crop - mean64) / std64)
    return np.stack(images) if images else np.empty((0, len(mean64), height, width))


# ---------------------------------------------------------------------------------------------
# One value, shared by the CPU and CUDA kernels: the host transforms' arithmetic, in float32


@register_jitable
def _normalised(pixel, divisor, mean, std, channel):
    """A stored pixel (0 for padding) scaled and normalised for ``channel``."""
    return (np.float32(pixel) / divisor - mean[channel]) / std[channel]


# ---------------------------------------------------------------------------------------------
# CPU: one output row per iteration, in three runs of columns (padding, image, padding) so that
# the image's run has no branch per pixel (the compiler vectorises it)


@cpu_kernel
def _augment_cpu(store, index, top, left, flip, mean, std, out, padding, divisor):
    count, channels, image_h, image_w = store.shape
    height, width = out.shape[2], out.shape[3]
    for row in prange(out.shape[0] * channels * height):
        b, y = row // (channels * height), row % height
        channel = (row // height) % channels
        image, source_y, target = index[b], y + top[b] - padding, out[b, channel, y]
        if image < 0 or image >= count:  # never read outside the store
            target[:] = np.nan
            continue
        pad = _normalised(0, divisor, mean, std, channel)
        if source_y < 0 or source_y >= image_h:
            target[:] = pad
            continue
        source = store[image, channel, source_y]
        # crop column j reads source column j + shift; those inside the image are [first, last)
        shift = left[b] - padding
        first = min(max(-shift, 0), width)
        last = max(first, min(image_w - shift, width))
        if flip[b]:  # output column x shows crop column width - 1 - x
            target[: width - last] = pad
            for x in range(width - last, width - first):
                target[x] = _normalised(source[width - 1 - x + shift], divisor, mean, std, channel)
            target[width - first :] = pad
        else:
            target[:first] = pad
            for x in range(first, last):
                target[x] = _normalised(source[x + shift], divisor, mean, std, channel)
            target[last:] = pad


# ---------------------------------------------------------------------------------------------
# CUDA: a grid-stride loop over the outputs


@cuda_kernel
def _augment_cuda(store, index, top, left, flip, mean, std, out, padding, divisor):
    channels, height, width = out.shape[1], out.shape[2], out.shape[3]
    for element in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        x, rest = element % width, element // width
        y, rest = rest % height, rest // height
        channel, b = rest % channels, rest // channels
        image = index[b]
        if image < 0 or image >= store.shape[0]:  # never read outside the store
            out[b, channel, y, x] = np.nan
            continue
        source_y = y + top[b] - padding
        source_x = (width - 1 - x if flip[b] else x) + left[b] - padding
        pixel = store.dtype.type(0)
        if 0 <= source_y < store.shape[2] and 0 <= source_x < store.shape[3]:
            pixel = store[image, channel, source_y, source_x]
        out[b, channel, y, x] = _normalised(pixel, divisor, mean, std, channel)


# ---------------------------------------------------------------------------------------------
# Entry points


def _augment(variant: str, store, index, top, left, flip, mean, std, out_hw, padding) -> Any:
    store, index, top, left, flip, mean, std, out_hw, padding = _arguments(
        store, index, top, left, flip, mean, std, out_hw, padding
    )
    out = empty((len(index), store.shape[1], *out_hw), np.float32, like=store)
    arguments = (store, index, top, left, flip, mean, std, out, padding, _divisor(store.dtype))
    if variant == "cpu":
        _augment_cpu(out.size, *arguments)
    elif out.size:
        launch(
            _augment_cuda, stride_grid(out.size, THREADS_PER_BLOCK), THREADS_PER_BLOCK, *arguments
        )
    return out


def augment_batch_cpu(
    store: np.ndarray,
    index: np.ndarray,
    top: np.ndarray,
    left: np.ndarray,
    flip: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    out_hw: Sequence[int],
    padding: int,
) -> np.ndarray:
    """The float32 batch (B, C, H, W): store items ``index`` cropped at (top, left) of the image
    zero-padded by ``padding``, mirrored where ``flip``, scaled and normalised (see the module
    docstring)."""
    return _augment("cpu", store, index, top, left, flip, mean, std, out_hw, padding)


def augment_batch_cuda(
    store: Any,
    index: Any,
    top: Any,
    left: Any,
    flip: Any,
    mean: Any,
    std: Any,
    out_hw: Sequence[int],
    padding: int,
) -> Any:
    """As :func:`augment_batch_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    return _augment("cuda", store, index, top, left, flip, mean, std, out_hw, padding)


def cuda_kernels() -> list[KernelSpec]:
    """The CUDA kernel with a uint8 store and int64 draws (what DeviceDataLoader launches)."""
    draws, channel = numba.int64[::1], numba.float32[::1]
    return [
        KernelSpec(
            OP,
            _augment_cuda,
            (
                numba.uint8[:, :, :, ::1],
                draws,
                draws,
                draws,
                draws,
                channel,
                channel,
                numba.float32[:, :, :, ::1],
                numba.int64,
                numba.float32,
            ),
            THREADS_PER_BLOCK,
        )
    ]


# ---------------------------------------------------------------------------------------------
# Benchmark cases: a training batch of CIFAR-10 (crop with padding 4 and flips) and of MNIST
# (crop with padding 2), against the host path written as a NumPy user would (for any array
# module with NumPy's API): the store converted to float once, then gather, pad, crop by fancy
# indexing, flip, normalise.


def plain_augment_batch(float_store, index, top, left, flip, mean, std, out_hw, padding) -> Any:
    xp = array_module(float_store)
    height, width = out_hw
    batch = float_store[index]
    pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    padded = xp.pad(batch, pad) if padding else batch
    rows = top[:, None] + xp.arange(height)
    columns = left[:, None] + xp.arange(width)
    columns = xp.where(flip[:, None], columns[:, ::-1], columns)
    images = xp.arange(len(index))[:, None, None, None]
    channels = xp.arange(batch.shape[1])[None, :, None, None]
    crop = padded[images, channels, rows[:, None, :, None], columns[:, None, None, :]]
    return (crop - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)


def _augment_case(
    context: BenchContext, key: str, store_shape: tuple, batch: int, padding: int, flips: bool
) -> Case:
    xp, ops = context.xp, context.ops
    rng = np.random.default_rng(0)
    count, channels, height, width = store_shape
    host_store = rng.integers(0, 256, store_shape, dtype=np.uint8)
    store = xp.asarray(host_store)
    float_store = xp.asarray(host_store.astype(np.float32) / np.float32(255))
    spare = 2 * padding
    index = xp.asarray(rng.integers(0, count, batch))
    top = xp.asarray(rng.integers(0, spare + 1, batch))
    left = xp.asarray(rng.integers(0, spare + 1, batch))
    flip = xp.asarray(rng.random(batch) < (0.5 if flips else 0.0))
    mean = xp.asarray(rng.uniform(0.1, 0.6, channels).astype(np.float32))
    std = xp.asarray(rng.uniform(0.2, 0.4, channels).astype(np.float32))
    arguments = (index, top, left, flip, mean, std, (height, width), padding)
    implementations = {
        OURS: Implementation(lambda: ops.augment_batch(store, *arguments)),
        context.plain: Implementation(lambda: plain_augment_batch(float_store, *arguments)),
    }
    elements = batch * channels * height * width
    info = CaseInfo(
        "augment_batch",
        f"{key} {batch}x{channels}x{height}x{width} pad{padding}{' flip' if flips else ''}",
        float(3 * elements),  # scale, subtract, divide
        float(elements * (1 + FLOAT32_BYTES)),  # uint8 pixels in, float32 out
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """A CIFAR-10 batch (padding 4, flips) and an MNIST batch (padding 2), gathered from a store
    of a few thousand images (a tiny one with ``quick``)."""
    shapes = (
        (("tiny", (7, 3, 9, 9), 5, 2, True),)
        if quick
        else (
            ("cifar10.b128", (4096, 3, 32, 32), 128, 4, True),
            ("mnist.b128", (4096, 1, 28, 28), 128, 2, False),
        )
    )
    return [
        CaseSpec(
            "augment_batch",
            key,
            f"{batch}x{'x'.join(map(str, store_shape[1:]))}",
            partial(
                _augment_case,
                key=key,
                store_shape=store_shape,
                batch=batch,
                padding=padding,
                flips=flips,
            ),
            (OURS, "numpy"),
        )
        for key, store_shape, batch, padding, flips in shapes
    ]


FAMILY = Family(
    name="augment",
    module=__name__,
    ops=(OP,),
    references={OP: reference_augment_batch},
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
