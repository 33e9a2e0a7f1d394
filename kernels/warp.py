"""A batched affine warp: each image resampled through its own 2x3 matrix, bilinearly, with zero
outside the image (what a random resized crop, rotation, shear, translation and flip become when
they are folded into one matrix per image).

Math. For image b of the batch, output pixel (y, x) reads the input at

    (u, v) = A_b @ (x, y, 1),   i.e.  u = A_b[0, 0] x + A_b[0, 1] y + A_b[0, 2]
                                      v = A_b[1, 0] x + A_b[1, 1] y + A_b[1, 2]

    out[b, c, y, x] = (1 - fy) ((1 - fx) p(v0, u0) + fx p(v0, u0 + 1))
                    +      fy  ((1 - fx) p(v0 + 1, u0) + fx p(v0 + 1, u0 + 1))

with u0 = floor(u), fx = u - u0 (v0 and fy likewise) and p(row, column) = images[b, c, row, column]
inside the image and 0 outside it (torch's ``grid_sample`` with ``padding_mode="zeros"``).

Pixel-centre convention: the centre of pixel (row i, column j) sits at the point (x = j, y = i),
in the output and in the input alike, so the identity matrix copies every image exactly, the
matrix ((1, 0, dx), (0, 1, dy)) shifts by whole pixels, and ((-1, 0, W - 1), (0, 1, 0)) mirrors
left-right. A caller thinking in pixel edges (a crop of [left, left + w) resized to W columns)
maps output column x to ``left + (x + 0.5) w / W - 0.5``. The interpolation is continuous in
(u, v), zero padding included, so matrices that differ by a rounding give outputs that differ by
about as much.

Arithmetic: the coordinates and weights are float32, each product and sum rounded in turn (the
CPU kernel and the simulator agree to the bit; a GPU may fuse a multiply and an add).

Buffers: images (B, C, H, W) float32; matrices (B, 2, 3) float32; out (B, C, H_out, W_out)
float32, ``out_hw`` = (H_out, W_out). Forward only: augmentation needs no gradient.

Bounds. Matrices are checked to be finite on the host when they are NumPy arrays (the CPU, the
simulator); on a GPU that check would copy them back, so callers draw them finite. The kernels
never read outside the image whatever the matrix: a coordinate far outside, or NaN, gives 0.

Variants, simplest first:

* ``reference_affine_warp``: float64 NumPy, one output pixel at a time in Python loops.
* ``affine_warp_cpu``: Numba over the B*H_out output rows (each pixel's source computed once
  for all its channels), serial or parallel as the CPU policy (``_cpu.parallel_pays``) decides
  for the size of the batch.
* ``affine_warp_cuda``: a grid-stride loop with one output per iteration, consecutive threads on
  consecutive columns (coalesced writes; neighbouring reads for near-identity matrices).
"""

from __future__ import annotations

import math
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
OP = "affine_warp"


# ---------------------------------------------------------------------------------------------
# Arguments


def _arguments(images: Any, matrices: Any, out_hw: Sequence[int]) -> tuple[Any, Any, tuple]:
    """images and matrices C-contiguous, and out_hw as a pair, after the checks (see the module
    docstring); errors name the op and the argument."""
    for name, array, ndim, layout in (
        ("images", images, 4, "(B, C, H, W)"),
        ("matrices", matrices, 3, "(B, 2, 3)"),
    ):
        if getattr(array, "ndim", None) != ndim or array.dtype != np.float32:
            raise TypeError(
                f"{OP} expects {name} as a float32 {layout} array, got "
                f"{getattr(array, 'dtype', type(array).__name__)} {getattr(array, 'shape', '')}"
            )
    xp = array_module(images)
    if array_module(matrices) is not xp:
        raise TypeError(
            f"{OP}: matrices is a {type(matrices).__name__} but images is a {type(images).__name__}"
        )
    if tuple(matrices.shape) != (images.shape[0], 2, 3):
        raise ValueError(
            f"{OP} expects one (2, 3) matrix per image: matrices {tuple(matrices.shape)} for "
            f"images {tuple(images.shape)}"
        )
    out_hw = as_shape(out_hw, OP)
    if len(out_hw) != 2 or min(out_hw) < 1:
        raise ValueError(f"{OP} expects out_hw as a positive (H_out, W_out) pair, got {out_hw}")
    if xp is np and not np.all(np.isfinite(matrices)):
        bad = int(np.flatnonzero(~np.isfinite(matrices).all(axis=(1, 2)))[0])
        raise ValueError(f"{OP}: matrices[{bad}] is not finite: {matrices[bad].tolist()}")
    return xp.ascontiguousarray(images), xp.ascontiguousarray(matrices), out_hw


# ---------------------------------------------------------------------------------------------
# Reference (float64): every output pixel in Python loops, its four taps read one by one


def reference_affine_warp(
    images: np.ndarray, matrices: np.ndarray, out_hw: Sequence[int]
) -> np.ndarray:
    """out (B, C, H_out, W_out) in float64."""
    images = np.asarray(images, np.float64)
    matrices = np.asarray(matrices, np.float64)
    batch, channels, height, width = images.shape
    out = np.zeros((batch, channels, *out_hw))

    def pixel(b: int, row: int, column: int) -> np.ndarray:
        inside = 0 <= row < height and 0 <= column < width
        return images[b, :, row, column] if inside else np.zeros(channels)

    for b in range(batch):
        for y in range(out_hw[0]):
            for x in range(out_hw[1]):
                u, v = matrices[b] @ (x, y, 1.0)
                column, row = math.floor(u), math.floor(v)
                fx, fy = u - column, v - row
                out[b, :, y, x] = (1 - fy) * (
                    (1 - fx) * pixel(b, row, column) + fx * pixel(b, row, column + 1)
                ) + fy * ((1 - fx) * pixel(b, row + 1, column) + fx * pixel(b, row + 1, column + 1))
    return out


# ---------------------------------------------------------------------------------------------
# One output, shared by the CPU and CUDA kernels


@register_jitable
def _tap(images, b, channel, row, column):
    """images[b, channel, row, column], or 0 outside the image."""
    if 0 <= row < images.shape[2] and 0 <= column < images.shape[3]:
        return images[b, channel, row, column]
    return np.float32(0)


@register_jitable
def _source(matrices, b, y, x):
    """(u, v) = matrices[b] @ (x, y, 1), in float32."""
    # float32 operands throughout: an int64 operand would promote the sums to float64 in Numba
    column, row = np.float32(x), np.float32(y)
    u = matrices[b, 0, 0] * column + matrices[b, 0, 1] * row + matrices[b, 0, 2]
    v = matrices[b, 1, 0] * column + matrices[b, 1, 1] * row + matrices[b, 1, 2]
    return u, v


@register_jitable
def _bilinear(images, b, channel, u, v):
    """images[b, channel] sampled at (u, v) (see the module docstring), in float32."""
    # every tap outside (NaN included): 0, before floor() meets a value no integer holds
    # (float32 bounds: comparing with an integer would convert u and v to float64)
    low, width, height = np.float32(-1), np.float32(images.shape[3]), np.float32(images.shape[2])
    if not (low < u < width and low < v < height):
        return np.float32(0)
    # int(): floor() of a float32 is a float32 on the CUDA target, an integer on the CPU
    column, row = int(math.floor(u)), int(math.floor(v))
    right = u - np.float32(column)
    below = v - np.float32(row)
    left, above = np.float32(1) - right, np.float32(1) - below
    if 0 <= column < images.shape[3] - 1 and 0 <= row < images.shape[2] - 1:
        # all four taps inside (most outputs): no bounds check per tap
        pixels = images[b, channel]
        top_left, top_right = pixels[row, column], pixels[row, column + 1]
        bottom_left, bottom_right = pixels[row + 1, column], pixels[row + 1, column + 1]
    else:
        top_left = _tap(images, b, channel, row, column)
        top_right = _tap(images, b, channel, row, column + 1)
        bottom_left = _tap(images, b, channel, row + 1, column)
        bottom_right = _tap(images, b, channel, row + 1, column + 1)
    top = left * top_left + right * top_right
    bottom = left * bottom_left + right * bottom_right
    return above * top + below * bottom


# ---------------------------------------------------------------------------------------------
# CPU: one output row of every channel per iteration, each pixel's source computed once


@cpu_kernel
def _warp_cpu(images, matrices, out):
    height = out.shape[2]
    for row in prange(out.shape[0] * height):
        b, y = row // height, row % height
        for x in range(out.shape[3]):
            u, v = _source(matrices, b, y, x)
            for channel in range(out.shape[1]):
                out[b, channel, y, x] = _bilinear(images, b, channel, u, v)


# ---------------------------------------------------------------------------------------------
# CUDA: a grid-stride loop over the outputs


@cuda_kernel
def _warp_cuda(images, matrices, out):
    channels, height, width = out.shape[1], out.shape[2], out.shape[3]
    for element in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        x, rest = element % width, element // width
        y, rest = rest % height, rest // height
        channel, b = rest % channels, rest // channels
        u, v = _source(matrices, b, y, x)
        out[b, channel, y, x] = _bilinear(images, b, channel, u, v)


# ---------------------------------------------------------------------------------------------
# Entry points


def _warp(variant: str, images: Any, matrices: Any, out_hw: Sequence[int]) -> Any:
    images, matrices, out_hw = _arguments(images, matrices, out_hw)
    out = empty((*images.shape[:2], *out_hw), np.float32, like=images)
    if variant == "cpu":
        _warp_cpu(out.size, images, matrices, out)
    elif out.size:
        launch(
            _warp_cuda,
            stride_grid(out.size, THREADS_PER_BLOCK),
            THREADS_PER_BLOCK,
            images,
            matrices,
            out,
        )
    return out


def affine_warp_cpu(images: np.ndarray, matrices: np.ndarray, out_hw: Sequence[int]) -> np.ndarray:
    """out (B, C, H_out, W_out) float32: each image sampled bilinearly at ``matrices[b] @ (x, y,
    1)`` for every output pixel (x, y), 0 outside the image (see the module docstring)."""
    return _warp("cpu", images, matrices, out_hw)


def affine_warp_cuda(images: Any, matrices: Any, out_hw: Sequence[int]) -> Any:
    """As :func:`affine_warp_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    return _warp("cuda", images, matrices, out_hw)


def cuda_kernels() -> list[KernelSpec]:
    """The CUDA kernel, float32 (the only dtype it takes), for the PTX check."""
    return [
        KernelSpec(
            OP,
            _warp_cuda,
            (numba.float32[:, :, :, ::1], numba.float32[:, :, ::1], numba.float32[:, :, :, ::1]),
            THREADS_PER_BLOCK,
        )
    ]


# ---------------------------------------------------------------------------------------------
# Benchmark cases: a batch of augmented views of MNIST and of CIFAR-10, against the warp written
# as a NumPy user would (for any array module with NumPy's API): the coordinates of every output
# as arrays, four fancy-indexed gathers from the zero-padded images, the bilinear blend.


def plain_affine_warp(images: Any, matrices: Any, out_hw: Sequence[int]) -> Any:
    xp = array_module(images)
    batch, _, height, width = images.shape
    ys, xs = xp.meshgrid(
        xp.arange(out_hw[0], dtype=xp.float32),
        xp.arange(out_hw[1], dtype=xp.float32),
        indexing="ij",
    )
    points = xp.stack([xs, ys, xp.ones_like(xs)])  # (3, H_out, W_out)
    u, v = xp.einsum("bij,jhw->ibhw", matrices, points)  # each (B, H_out, W_out)
    # one pixel of zeros around the image holds every tap of a coordinate in (-1, W) x (-1, H);
    # coordinates further out are clipped to read only zeros
    padded = xp.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))
    u = xp.clip(u, -1.0, width) + 1.0
    v = xp.clip(v, -1.0, height) + 1.0
    column, row = xp.floor(u), xp.floor(v)
    fx, fy = (u - column)[:, None], (v - row)[:, None]
    column, row = column.astype(xp.int64), row.astype(xp.int64)
    images_index = xp.arange(batch)[:, None, None]

    def taps(r: Any, c: Any) -> Any:  # (B, C, H_out, W_out)
        r, c = xp.minimum(r, height + 1), xp.minimum(c, width + 1)
        return padded[images_index, :, r, c].transpose(0, 3, 1, 2)

    top = (1 - fx) * taps(row, column) + fx * taps(row, column + 1)
    bottom = (1 - fx) * taps(row + 1, column) + fx * taps(row + 1, column + 1)
    return (1 - fy) * top + fy * bottom


def random_view_matrices(batch: int, height: int, width: int, rng: np.random.Generator) -> Any:
    """(B, 2, 3) float32 matrices of typical views: a crop of 35-100% of the side resized to the
    image, rotated by up to 15 degrees about the centre, mirrored where a coin says so."""
    scale = rng.uniform(0.35, 1.0, batch)
    angle = np.deg2rad(rng.uniform(-15, 15, batch))
    mirror = np.where(rng.random(batch) < 0.5, -1.0, 1.0)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    linear = np.stack(
        [np.stack([cos * mirror, -sin], -1), np.stack([sin * mirror, cos], -1)], 1
    )  # (B, 2, 2)
    centre = np.array([centre_x, centre_y])
    offset = centre - linear @ centre  # the centre stays put
    return np.concatenate([linear, offset[:, :, None]], axis=2).astype(np.float32)


def _warp_case(context: BenchContext, key: str, shape: tuple) -> Case:
    xp, ops = context.xp, context.ops
    batch, channels, height, width = shape
    images = context.random(shape)
    matrices = xp.asarray(random_view_matrices(batch, height, width, np.random.default_rng(1)))
    out_hw = (height, width)
    implementations = {
        OURS: Implementation(lambda: ops.affine_warp(images, matrices, out_hw)),
        context.plain: Implementation(lambda: plain_affine_warp(images, matrices, out_hw)),
    }
    elements = batch * channels * height * width
    info = CaseInfo(
        OP,
        f"{key} {'x'.join(map(str, shape))}",
        float(21 * elements),  # coordinates 8, weights 4, the blend 9
        float(FLOAT32_BYTES * (2 * elements + 6 * batch)),  # images in, out, the matrices
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """A batch of 256 views of MNIST (1x28x28) and of CIFAR-10 (3x32x32); a tiny batch with
    ``quick``."""
    shapes = (
        (("tiny", (3, 2, 5, 7)),)
        if quick
        else (("mnist.b256", (256, 1, 28, 28)), ("cifar10.b256", (256, 3, 32, 32)))
    )
    return [
        CaseSpec(
            OP,
            key,
            "x".join(map(str, shape)),
            partial(_warp_case, key=key, shape=shape),
            (OURS, "numpy"),
        )
        for key, shape in shapes
    ]


FAMILY = Family(
    name="warp",
    module=__name__,
    ops=(OP,),
    references={OP: reference_affine_warp},
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
