"""The CPU Winograd transforms' vector groups (kernels/_winograd_simd.py) give bit for bit what the
scalar helpers give tile by tile: each transform is replayed here in plain Python, tile by tile,
through the same scalar helpers (float32 or float64 scalars, the adds in the same order), on rows
of 14, 8, 5 and 3 tiles (groups of 8, an overlapping group, groups of 4, no group, single tiles
after the groups, clipped tiles)."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import winograd
from fastnet.kernels.winograd import POSITIONS, tile_geometry

# (x shape (N, C, H, W), padding): tiles a row 14 (odd H and W: a clipped last row and column),
# 8, 5 (unequal padding), 3
CASES = [((1, 2, 5, 27), 1), ((2, 1, 16, 16), 1), ((1, 2, 9, 11), (1, 0)), ((2, 1, 7, 6), 1)]


def _padded_planes(x, geometry):
    pad_h, pad_w, _, _, tiles_h, tiles_w = geometry
    padded = np.zeros((*x.shape[:2], 2 * tiles_h + 2, 2 * tiles_w + 2), x.dtype)
    padded[:, :, pad_h : pad_h + x.shape[2], pad_w : pad_w + x.shape[3]] = x
    return padded


def _tiles(geometry, batch):
    """(n, i, j, t) of every tile of a plane of image n, t its index in the tile matrices."""
    tiles_h, tiles_w = geometry.tiles_h, geometry.tiles_w
    for n in range(batch):
        for i in range(tiles_h):
            for j in range(tiles_w):
                yield n, i, j, (n * tiles_h + i) * tiles_w + j


def scalar_input(x, padding):
    geometry = tile_geometry(x.shape[2], x.shape[3], padding)
    padded = _padded_planes(x, geometry)
    count = x.shape[0] * geometry.tiles_h * geometry.tiles_w
    tiles = np.empty((POSITIONS, x.shape[1], count), x.dtype)
    for c in range(x.shape[1]):
        for n, i, j, t in _tiles(geometry, x.shape[0]):
            rows = padded[n, c, 2 * i : 2 * i + 4]
            winograd._input_tile(*rows, 2 * j, tiles, c, t)
    return tiles


def scalar_output(tiles, bias, y_shape, geometry):
    y = np.empty(y_shape, tiles.dtype)
    out_h, out_w = y_shape[2:]
    for k in range(y_shape[1]):
        for n, i, j, t in _tiles(geometry, y_shape[0]):
            values = winograd._output_tile(tiles, k, t)
            for index, (row, col) in enumerate(
                [(2 * i, 2 * j), (2 * i, 2 * j + 1), (2 * i + 1, 2 * j), (2 * i + 1, 2 * j + 1)]
            ):
                if row < out_h and col < out_w:
                    y[n, k, row, col] = values[index] + bias[k]
    return y


def scalar_output_grad(dy, geometry):
    count = dy.shape[0] * geometry.tiles_h * geometry.tiles_w
    tiles = np.empty((POSITIONS, dy.shape[1], count), dy.dtype)
    whole = np.zeros((*dy.shape[:2], 2 * geometry.tiles_h, 2 * geometry.tiles_w), dy.dtype)
    whole[:, :, : dy.shape[2], : dy.shape[3]] = dy
    for k in range(dy.shape[1]):
        for n, i, j, t in _tiles(geometry, dy.shape[0]):
            g = whole[n, k, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            winograd._output_grad_tile(g[0, 0], g[0, 1], g[1, 0], g[1, 1], tiles, k, t)
    return tiles


def scalar_input_grad(tiles, x_shape, geometry):
    """Each tile's patch added onto the padded plane tile by tile, rows then columns of tiles."""
    sums = np.zeros((*x_shape[:2], 2 * geometry.tiles_h + 2, 2 * geometry.tiles_w + 2), tiles.dtype)
    for c in range(x_shape[1]):
        for n, i, j, t in _tiles(geometry, x_shape[0]):
            patch = winograd._input_grad_patch(tiles, c, t)
            for r in range(4):
                for s in range(4):
                    sums[n, c, 2 * i + r, 2 * j + s] += patch[r][s]
    pad_h, pad_w = geometry.pad_h, geometry.pad_w
    return sums[:, :, pad_h : pad_h + x_shape[2], pad_w : pad_w + x_shape[3]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_vector_groups_equal_the_scalar_helpers_bit_for_bit(rng, case, dtype):
    shape, padding = case
    x = rng.standard_normal(shape).astype(dtype)
    geometry = tile_geometry(shape[2], shape[3], padding)
    y_shape = (shape[0], shape[1], geometry.out_h, geometry.out_w)
    v = winograd.winograd_input_cpu(x, padding)
    np.testing.assert_array_equal(v, scalar_input(x, padding), err_msg="input")
    m = rng.standard_normal(v.shape).astype(dtype)
    bias = rng.standard_normal(shape[1]).astype(dtype)
    np.testing.assert_array_equal(
        winograd.winograd_output_cpu(m, bias, y_shape),
        scalar_output(m, bias, y_shape, geometry),
        err_msg="output",
    )
    dy = rng.standard_normal(y_shape).astype(dtype)
    np.testing.assert_array_equal(
        winograd.winograd_output_grad_cpu(dy), scalar_output_grad(dy, geometry), err_msg="dM"
    )
    np.testing.assert_array_equal(
        winograd.winograd_input_grad_cpu(m, shape, padding),
        scalar_input_grad(m, shape, geometry),
        err_msg="dx",
    )
