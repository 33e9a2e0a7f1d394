"""Winograd F(2x2, 3x3): a 3x3, stride-1 convolution with 2.25x fewer multiplications.

Math (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015). Cut the output
into 2x2 tiles; the 4x4 input patch d under a tile and a 3x3 filter g give the tile as

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

        Bᵀ = [[1,  0, -1,  0],      G = [[ 1,    0,   0],      Aᵀ = [[1, 1,  1,  0],
              [0,  1,  1,  0],           [1/2,  1/2, 1/2],            [0, 1, -1, -1]]
              [0, -1,  1,  0],           [1/2, -1/2, 1/2],
              [0,  1,  0, -1]]           [ 0,    0,   1]]

which is exact in exact arithmetic: 16 multiplications a tile instead of 36. Summed over input
channels, the elementwise product becomes 16 independent matrix products, one per position ξ of
the 4x4 transformed tile:

    U[ξ] = (G g Gᵀ)[ξ]        (16, K, C)   weights, K output and C input channels
    V[ξ] = (Bᵀ d B)[ξ]        (16, C, T)   input tiles, T = N·TH·TW tiles
    M[ξ] = U[ξ] · V[ξ]        (16, K, T)
    y    = Aᵀ M A (+ b)       (N, K, OH, OW), or relu of that (``relu=True``: conv2d_relu's
                                              fused ReLU, applied as each plane is written)

For an input x (N, C, H, W) and zero padding (PH, PW): OH = H + 2·PH - 2, OW = W + 2·PW - 2,
TH = ceil(OH / 2), TW = ceil(OW / 2); tile t = (n·TH + i)·TW + j covers output rows 2i, 2i+1
and columns 2j, 2j+1 (clipped at the far edges when OH or OW is odd) and reads padded input rows
2i..2i+3, columns 2j..2j+3 (zero outside x).

The map (g, d) -> y is bilinear, so its gradients are the transposed maps, exactly:

    dM[ξ] = (A dY Aᵀ)[ξ]      (16, K, T)   dY's 2x2 tile, zero where the tile was clipped
    dU[ξ] = dM[ξ] · V[ξ]ᵀ     (16, K, C)   ->  dg = Gᵀ dU G, (K, C, 3, 3)
    dV[ξ] = U[ξ]ᵀ · dM[ξ]     (16, C, T)   ->  dx = Σ over tiles of B dV Bᵀ, added onto the
                                               4x4 patch each tile read (neighbours overlap by 2)

Numerics: in float32 the result differs from a direct convolution by rounding only, a few ulps
more (each transform adds at most 16 terms); the references check it to 1e-5 of the largest
output. A NaN or an inf in the input reaches exactly the outputs whose 3x3 window holds it, as in
a direct convolution (the transforms skip their zero coefficients, they do not multiply by them),
but an inf may come out as NaN where a direct convolution gives ±inf: the transforms subtract
neighbours (inf - inf).

With ``pool=True`` (``F.conv2d_relu_max_pool2d``'s kernel) y is not written: each chunk's output
planes go to a buffer of their own and leave it 2x2 max-pooled (then through the ReLU) with their
argmax (kernels/_pool2x2.py); the backward takes the pooled output's gradient and that argmax
(``pool_argmax``) and unpools dY a chunk at a time before dM.

The transforms below are this module's kernels. The products are GEMMs: on the host, M = U·V
and dV = Uᵀ·dM through ``_blas.gemm_in_cache`` (float32 in register tiles straight from the
chunk's tiles, which sit in L2: a chunk's V and M fit the device's Winograd workspace), dU = dM·Vᵀ
through BLAS (its long inner dimension amortises BLAS's packing); on a GPU, batched matmuls. All
buffers are float32 or float64, one dtype throughout; images and filters C-contiguous; tile
buffers (U, V, M and their gradients) have each of their 16 matrices C-contiguous, and on the
host the matrices are spaced apart (:func:`winograd_tiles_cpu` says why). Each transform writes
into ``out`` when given (conv2d hands it reused buffers), else allocates.

Variants, simplest first:

* ``reference_*``: float64 NumPy, each transform as the matrix products above (einsum), the
  tiles cut from a padded copy of the input; conv.reference_conv2d (a direct sliding-window sum)
  is the independent check of the whole pipeline.
* ``*_cpu``: Numba. Every transform works one (image, channel) plane at a time: the input side
  through a zero-padded copy of the plane (no bounds tests per pixel), the output side clipping
  the last tile row and column. Along a tile row, groups of 8 or 4 tiles run as vector code
  (kernels/_winograd_simd.py, bit for bit the scalar helpers' results), rows of under 4 tiles
  and what the groups leave tile by tile. A plane belongs to one task, so the overlapping adds
  of the input gradient are race-free and in a fixed order (deterministic); planes run serial or
  parallel as the CPU policy (``_cpu.parallel_pays``) decides for the number of tile entries.
* ``*_cuda``: one thread per tile for the transforms that own their tile (input tiles, output
  tiles and their transpose); the input gradient is a gather, one thread per input pixel summing
  the (up to 4) tiles that read it, in a fixed order: no atomics, deterministic. Grid-stride loops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numba
import numpy as np
from numba import cuda, njit, prange
from numba.extending import register_jitable

from . import _pool2x2
from ._blas import gemm, gemm_in_cache
from ._checks import (
    as_shape,
    bias_or_zeros,
    check_float_dtype,
    check_planned,
    chunks_of,
    output_gradient,
    planned_arrays,
)
from ._contract import Family, KernelSpec
from ._cpu import chunk_groups, chunk_range, cpu_kernel, scratch
from ._cuda import (
    array_module,
    check_out,
    cuda_kernel,
    empty,
    launch,
    matrices_contiguous,
    stride_grid,
)
from ._geometry import int_pair
from ._relu import relu_span
from ._winograd_simd import (
    input_grad_tiles_4,
    input_grad_tiles_8,
    input_tiles_4,
    input_tiles_8,
    output_grad_tiles_4,
    output_grad_tiles_8,
    output_tiles_4,
    output_tiles_8,
)

THREADS_PER_BLOCK = 256
POSITIONS = 16  # entries of a transformed 4x4 tile: the ξ axis of U, V and M

# The transform matrices, for the references (the kernels spell them out as adds).
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


class TileGeometry(NamedTuple):
    """Zero padding, output plane and tile grid of a 3x3 stride-1 convolution over one plane."""

    pad_h: int
    pad_w: int
    out_h: int
    out_w: int
    tiles_h: int
    tiles_w: int


def tile_geometry(height: int, width: int, padding: int | tuple[int, int]) -> TileGeometry:
    """The :class:`TileGeometry` of a ``height`` x ``width`` plane; ValueError if 3x3 does not
    fit."""
    pad_h, pad_w = int_pair(padding, "padding", 0)
    out_h, out_w = height + 2 * pad_h - 2, width + 2 * pad_w - 2
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"winograd: a 3x3 kernel does not fit the {height}x{width} input padded by "
            f"({pad_h}, {pad_w})"
        )
    return TileGeometry(pad_h, pad_w, out_h, out_w, (out_h + 1) // 2, (out_w + 1) // 2)


def _matrix_stride(rows: int, count: int, dtype: Any, spaced: bool) -> int:
    """Elements from one (rows, count) tile matrix to the next: packed, or spaced an odd number of
    cache lines apart (:func:`winograd_tiles_cpu` says why)."""
    if not spaced:
        return rows * count
    line = max(1, 64 // np.dtype(dtype).itemsize)  # elements in a 64-byte cache line
    stride = -(-rows * count // line) * line
    return stride + line if (stride // line) % 2 == 0 else stride


def _tiles_buffer(rows: int, count: int, dtype: Any, like: Any, spaced: bool) -> Any:
    buffer = empty((POSITIONS, _matrix_stride(rows, count, dtype, spaced)), dtype, like=like)
    return buffer[:, : rows * count].reshape(POSITIONS, rows, count)


def winograd_tiles_cpu(rows: int, count: int, dtype: Any, like: np.ndarray) -> np.ndarray:
    """An uninitialised (16, rows, count) host tile buffer (``like``: a NumPy array), each matrix
    C-contiguous, the 16 matrices spaced an odd number of cache lines apart.

    Why spaced: every transform touches all 16 matrices at once, one entry each per tile. Spaced
    a multiple of 4 KB apart (as (16, 64, 784) float32 is) all 16 streams fall in one L1 set,
    which holds 12, and evict each other: the transforms then run several times slower (time
    ``winograd_output_grad_cpu(dy, out=...)`` of 16 MNIST images' (16, 64, 14, 14) gradient into
    ``np.empty((16, 64, 784), np.float32)`` and into this buffer)."""
    return _tiles_buffer(rows, count, dtype, like, spaced=True)


def winograd_tiles_cuda(rows: int, count: int, dtype: Any, like: Any) -> Any:
    """An uninitialised C-contiguous (16, rows, count) tile buffer on ``like``'s device (a GPU, or
    the host in the simulator, which takes contiguous arrays only)."""
    return _tiles_buffer(rows, count, dtype, like, spaced=False)


def _tiles_out(op: str, out: Any, rows: int, count: int, dtype: Any, like: Any, host: bool) -> Any:
    if out is None:
        return _tiles_buffer(rows, count, dtype, like, spaced=host)
    return check_out(op, out, (POSITIONS, rows, count), dtype, like, per_matrix=host)


def _tiles_in(tiles: Any, host: bool) -> Any:
    """``tiles`` as the kernels take them: on the host each matrix C-contiguous (a spaced buffer
    is used as it is), on a GPU or in the simulator wholly C-contiguous."""
    if host and matrices_contiguous(tiles):
        return tiles
    return array_module(tiles).ascontiguousarray(tiles)


def _check_tiles(name: str, op: str, tiles: Any, rows: int, count: int) -> None:
    check_float_dtype(tiles, name, op)
    if tuple(tiles.shape) != (POSITIONS, rows, count):
        raise ValueError(
            f"{op} expects {name} of shape {(POSITIONS, rows, count)}, got {tuple(tiles.shape)}"
        )


def _out(op: str, out: Any, shape: tuple, dtype: Any, like: Any) -> Any:
    return empty(shape, dtype, like=like) if out is None else check_out(op, out, shape, dtype, like)


def _weights_arguments(weight: Any, out: Any, host: bool):
    check_float_dtype(weight, "weight", "winograd_weights")
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(
            f"winograd_weights expects weight of shape (K, C, 3, 3), got {tuple(weight.shape)}"
        )
    rows, count = weight.shape[0], weight.shape[1]
    # U is read by GEMMs, never by the transforms' 16 streams: contiguous, not spaced.
    tiles = (
        _tiles_buffer(rows, count, weight.dtype, weight, spaced=False)
        if out is None
        else _tiles_out("winograd_weights", out, rows, count, weight.dtype, weight, host)
    )
    return array_module(weight).ascontiguousarray(weight), tiles


def _weights_grad_arguments(tiles_grad: Any, out: Any, host: bool):
    check_float_dtype(tiles_grad, "tiles_grad", "winograd_weights_grad")
    if tiles_grad.ndim != 3 or tiles_grad.shape[0] != POSITIONS:
        raise ValueError(
            f"winograd_weights_grad expects tiles_grad of shape (16, K, C), got "
            f"{tuple(tiles_grad.shape)}"
        )
    shape = (tiles_grad.shape[1], tiles_grad.shape[2], 3, 3)
    return _tiles_in(tiles_grad, host), _out(
        "winograd_weights_grad", out, shape, tiles_grad.dtype, tiles_grad
    )


def _input_arguments(x: Any, padding: Any, out: Any, host: bool):
    check_float_dtype(x, "x", "winograd_input")
    if x.ndim != 4:
        raise ValueError(f"winograd_input expects x of shape (N, C, H, W), got {tuple(x.shape)}")
    geometry = tile_geometry(x.shape[2], x.shape[3], padding)
    count = x.shape[0] * geometry.tiles_h * geometry.tiles_w
    tiles = _tiles_out("winograd_input", out, x.shape[1], count, x.dtype, x, host)
    return array_module(x).ascontiguousarray(x), geometry, tiles


def _input_grad_arguments(
    tiles_grad: Any, x_shape: Sequence[int], padding: Any, out: Any, host: bool
):
    x_shape = as_shape(x_shape, "winograd_input_grad")
    if len(x_shape) != 4:
        raise ValueError(f"winograd_input_grad expects x_shape (N, C, H, W), got {x_shape}")
    geometry = tile_geometry(x_shape[2], x_shape[3], padding)
    _check_tiles(
        "tiles_grad",
        "winograd_input_grad",
        tiles_grad,
        x_shape[1],
        x_shape[0] * geometry.tiles_h * geometry.tiles_w,
    )
    dx = _out("winograd_input_grad", out, x_shape, tiles_grad.dtype, tiles_grad)
    return _tiles_in(tiles_grad, host), geometry, dx


def _output_arguments(tiles: Any, bias: Any, y_shape: Sequence[int], out: Any, host: bool):
    y_shape = as_shape(y_shape, "winograd_output")
    if len(y_shape) != 4:
        raise ValueError(f"winograd_output expects y_shape (N, K, OH, OW), got {y_shape}")
    batch, channels, out_h, out_w = y_shape
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    _check_tiles("tiles", "winograd_output", tiles, channels, batch * tiles_h * tiles_w)
    if bias is not None and (tuple(bias.shape) != (channels,) or bias.dtype != tiles.dtype):
        raise ValueError(
            f"winograd_output expects bias of shape ({channels},) and dtype {tiles.dtype}, got "
            f"{tuple(bias.shape)} {bias.dtype}"
        )
    xp = array_module(tiles)
    bias = xp.zeros(channels, tiles.dtype) if bias is None else xp.ascontiguousarray(bias)
    y = _out("winograd_output", out, y_shape, tiles.dtype, tiles)
    return _tiles_in(tiles, host), bias, y


def _output_grad_arguments(dy: Any, out: Any, host: bool):
    check_float_dtype(dy, "dy", "winograd_output_grad")
    if dy.ndim != 4:
        raise ValueError(
            f"winograd_output_grad expects dy of shape (N, K, OH, OW), got {tuple(dy.shape)}"
        )
    batch, channels, out_h, out_w = dy.shape
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    dm = _tiles_out(
        "winograd_output_grad", out, channels, batch * tiles_h * tiles_w, dy.dtype, dy, host
    )
    return array_module(dy).ascontiguousarray(dy), dm


def _conv_arguments(op: str, x: Any, tiles_weight: Any, bias: Any, padding: Any, chunk_images: int):
    """x C-contiguous, U as the kernels take it, bias (zeros when None), the tile geometry and the
    number of chunks, after checking they fit together."""
    check_float_dtype(x, "x", op)
    if x.ndim != 4:
        raise ValueError(f"{op} expects x of shape (N, C, H, W), got {tuple(x.shape)}")
    channels = x.shape[1]
    if tiles_weight.ndim != 3 or tiles_weight.shape[0] != POSITIONS:
        raise ValueError(
            f"{op} expects tiles_weight of shape (16, K, {channels}), got "
            f"{tuple(tiles_weight.shape)}"
        )
    _check_tiles("tiles_weight", op, tiles_weight, tiles_weight.shape[1], channels)
    if tiles_weight.dtype != x.dtype:
        raise ValueError(f"{op}: tiles_weight is {tiles_weight.dtype}, x is {x.dtype}")
    chunks = chunks_of(op, x.shape[0], chunk_images)
    geometry = tile_geometry(x.shape[2], x.shape[3], padding)
    xp = array_module(x)
    return (
        xp.ascontiguousarray(x),
        xp.ascontiguousarray(tiles_weight),  # one layout for the kernels (U is small)
        bias_or_zeros(op, bias, tiles_weight.shape[1], x),
        geometry,
        chunks,
    )


# ---------------------------------------------------------------------------------------------
# References (float64)


def _padded_patches(x: np.ndarray, geometry: TileGeometry) -> np.ndarray:
    """(N, C, TH, TW, 4, 4): the padded input patch under every tile (zero beyond x)."""
    pad_h, pad_w, _, _, tiles_h, tiles_w = geometry
    batch, channels, height, width = x.shape
    padded = np.zeros((batch, channels, 2 * tiles_h + 2, 2 * tiles_w + 2))
    padded[:, :, pad_h : pad_h + height, pad_w : pad_w + width] = x
    patches = np.empty((batch, channels, tiles_h, tiles_w, 4, 4))
    for r in range(4):
        for s in range(4):
            patches[..., r, s] = padded[:, :, r : r + 2 * tiles_h : 2, s : s + 2 * tiles_w : 2]
    return patches


def _as_tiles(per_tile: np.ndarray) -> np.ndarray:
    """(N, C, TH, TW, 4, 4) -> (16, C, N·TH·TW)."""
    batch, channels = per_tile.shape[:2]
    return (
        per_tile.reshape(batch, channels, -1, POSITIONS)
        .transpose(3, 1, 0, 2)
        .reshape(POSITIONS, channels, -1)
    )


def _from_tiles(tiles: np.ndarray, batch: int, tiles_h: int, tiles_w: int) -> np.ndarray:
    """(16, C, N·TH·TW) -> (N, C, TH, TW, 4, 4)."""
    channels = tiles.shape[1]
    return tiles.reshape(4, 4, channels, batch, tiles_h, tiles_w).transpose(3, 2, 4, 5, 0, 1)


def reference_weights(weight: np.ndarray) -> np.ndarray:
    """U = G g Gᵀ per (k, c), as (16, K, C)."""
    u = np.einsum("ai,kcij,bj->abkc", G, np.asarray(weight, np.float64), G)
    return u.reshape(POSITIONS, *weight.shape[:2])


def reference_weights_grad(tiles_grad: np.ndarray) -> np.ndarray:
    """dg = Gᵀ dU G per (k, c), as (K, C, 3, 3)."""
    du = np.asarray(tiles_grad, np.float64).reshape(4, 4, *tiles_grad.shape[1:])
    return np.einsum("ai,abkc,bj->kcij", G, du, G)


def reference_input(x: np.ndarray, padding: int | tuple[int, int]) -> np.ndarray:
    """V = Bᵀ d B for the padded patch d under every tile, as (16, C, N·TH·TW)."""
    geometry = tile_geometry(x.shape[2], x.shape[3], padding)
    patches = _padded_patches(np.asarray(x, np.float64), geometry)
    return _as_tiles(np.einsum("ar,nctjrs,bs->nctjab", B_T, patches, B_T))


def reference_input_grad(
    tiles_grad: np.ndarray, x_shape: Sequence[int], padding: int | tuple[int, int]
) -> np.ndarray:
    """dx: each tile's B dV Bᵀ added back onto the padded patch it came from, padding cut off."""
    batch, channels, height, width = x_shape
    pad_h, pad_w, _, _, tiles_h, tiles_w = tile_geometry(height, width, padding)
    patch_grads = np.einsum(
        "ar,nctjab,bs->nctjrs",
        B_T,
        _from_tiles(np.asarray(tiles_grad, np.float64), batch, tiles_h, tiles_w),
        B_T,
    )
    padded = np.zeros((batch, channels, 2 * tiles_h + 2, 2 * tiles_w + 2))
    for r in range(4):
        for s in range(4):
            padded[:, :, r : r + 2 * tiles_h : 2, s : s + 2 * tiles_w : 2] += patch_grads[..., r, s]
    return padded[:, :, pad_h : pad_h + height, pad_w : pad_w + width]


def reference_output(
    tiles: np.ndarray, bias: np.ndarray | None, y_shape: Sequence[int]
) -> np.ndarray:
    """y = Aᵀ M A (+ b) per tile, the tiles' far edges clipped to (OH, OW)."""
    batch, channels, out_h, out_w = y_shape
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    per_tile = np.einsum(
        "oa,nktjab,pb->nktjop",
        A_T,
        _from_tiles(np.asarray(tiles, np.float64), batch, tiles_h, tiles_w),
        A_T,
    )
    y = per_tile.transpose(0, 1, 2, 4, 3, 5).reshape(batch, channels, 2 * tiles_h, 2 * tiles_w)[
        :, :, :out_h, :out_w
    ]
    return y + (0 if bias is None else np.asarray(bias, np.float64)[None, :, None, None])


def reference_output_grad(dy: np.ndarray) -> np.ndarray:
    """dM = A dY Aᵀ per tile (dY zero-extended to whole tiles), as (16, K, N·TH·TW)."""
    batch, channels, out_h, out_w = dy.shape
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    whole = np.zeros((batch, channels, 2 * tiles_h, 2 * tiles_w))
    whole[:, :, :out_h, :out_w] = dy
    per_tile = whole.reshape(batch, channels, tiles_h, 2, tiles_w, 2).transpose(0, 1, 2, 4, 3, 5)
    return _as_tiles(np.einsum("oa,nktjop,pb->nktjab", A_T, per_tile, A_T))


def reference_conv2d(
    x: np.ndarray,
    tiles_weight: np.ndarray,
    bias: np.ndarray | None,
    padding: int | tuple[int, int],
    chunk_images: int,
) -> np.ndarray:
    """y = Aᵀ (U[ξ]·V[ξ]) A (+ b) over the whole batch at once (chunking changes nothing)."""
    v = reference_input(x, padding)
    m = np.einsum("pkc,pct->pkt", np.asarray(tiles_weight, np.float64), v)
    geometry = tile_geometry(x.shape[2], x.shape[3], padding)
    shape = (x.shape[0], tiles_weight.shape[1], geometry.out_h, geometry.out_w)
    return reference_output(m, bias, shape)


def reference_conv2d_backward(
    dy: np.ndarray,
    x: np.ndarray,
    tiles_weight: np.ndarray,
    padding: int | tuple[int, int],
    chunk_images: int,
    need_x: bool = True,
    need_w: bool = True,
    need_b: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """dx = the input transform's adjoint of Uᵀ·dM, dU = dM·Vᵀ, Σ dY, with dM = A dY Aᵀ."""
    u, dm = np.asarray(tiles_weight, np.float64), reference_output_grad(dy)
    dx = reference_input_grad(np.einsum("pkc,pkt->pct", u, dm), x.shape, padding)
    du = np.einsum("pkt,pct->pkc", dm, reference_input(x, padding))
    db = np.asarray(dy, np.float64).sum(axis=(0, 2, 3))
    return dx if need_x else None, du if need_w else None, db if need_b else None


# ---------------------------------------------------------------------------------------------
# The 1-D transforms, each on four (or two) scalars: shared by the CPU and CUDA kernels.


@register_jitable
def _b_t(d0, d1, d2, d3):
    """Bᵀ·d for one column (or row) of four values."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@register_jitable
def _b(v0, v1, v2, v3):
    """B·v: the adjoint of :func:`_b_t`."""
    return v0, v1 - v2 + v3, v1 + v2 - v0, -v3


@register_jitable
def _a_t(m0, m1, m2, m3):
    """Aᵀ·m: four transformed values to two outputs."""
    return m0 + m1 + m2, m1 - m2 - m3


@register_jitable
def _a(g0, g1):
    """A·g: the adjoint of :func:`_a_t`."""
    return g0, g0 + g1, g0 - g1, -g1


@register_jitable
def _g(w0, w1, w2, half):
    """G·w: three filter taps to four transformed values."""
    return w0, (w0 + w1 + w2) * half, (w0 - w1 + w2) * half, w2


@register_jitable
def _g_t(u0, u1, u2, u3, half):
    """Gᵀ·u: the adjoint of :func:`_g`."""
    return u0 + (u1 + u2) * half, (u1 - u2) * half, (u1 + u2) * half + u3


@register_jitable
def _store_row(tiles, a, channel, t, values):
    """tiles[4a .. 4a+3, channel, t] = values: row a of a transformed tile."""
    tiles[4 * a, channel, t] = values[0]
    tiles[4 * a + 1, channel, t] = values[1]
    tiles[4 * a + 2, channel, t] = values[2]
    tiles[4 * a + 3, channel, t] = values[3]


@register_jitable
def _load_row(tiles, a, channel, t):
    """Row a of the transformed tile tiles[:, channel, t], as four values."""
    return (
        tiles[4 * a, channel, t],
        tiles[4 * a + 1, channel, t],
        tiles[4 * a + 2, channel, t],
        tiles[4 * a + 3, channel, t],
    )


# Every tile helper below is spelled out with constant indices: loops over tuples with a runtime
# index are not unrolled and run the transforms markedly slower. The CPU planes and the CUDA kernels
# each clip their own tiles at the far edges: a shared helper for it, one call deeper, is not
# inlined on the CPU (and Numba's forced inlining does not compile for CUDA). Re-measure a variant
# with ``python benchmarks/parallel_threshold.py --only winograd --no-chunks --threads 1``.


@register_jitable
def _weights_one(weight, tiles, k, c):
    """U[:, k, c] = G g Gᵀ for the filter g = weight[k, c]."""
    half = weight.dtype.type(0.5)
    g = weight[k, c]
    col0 = _g(g[0, 0], g[1, 0], g[2, 0], half)
    col1 = _g(g[0, 1], g[1, 1], g[2, 1], half)
    col2 = _g(g[0, 2], g[1, 2], g[2, 2], half)
    _store_row(tiles, 0, k, c, _g(col0[0], col1[0], col2[0], half))
    _store_row(tiles, 1, k, c, _g(col0[1], col1[1], col2[1], half))
    _store_row(tiles, 2, k, c, _g(col0[2], col1[2], col2[2], half))
    _store_row(tiles, 3, k, c, _g(col0[3], col1[3], col2[3], half))


@register_jitable
def _weights_grad_one(tiles_grad, dweight, k, c):
    """dweight[k, c] = Gᵀ dU G for dU = tiles_grad[:, k, c]."""
    half = tiles_grad.dtype.type(0.5)
    u0, u1, u2, u3 = (
        _load_row(tiles_grad, 0, k, c),
        _load_row(tiles_grad, 1, k, c),
        _load_row(tiles_grad, 2, k, c),
        _load_row(tiles_grad, 3, k, c),
    )
    col0 = _g_t(u0[0], u1[0], u2[0], u3[0], half)
    col1 = _g_t(u0[1], u1[1], u2[1], u3[1], half)
    col2 = _g_t(u0[2], u1[2], u2[2], u3[2], half)
    col3 = _g_t(u0[3], u1[3], u2[3], u3[3], half)
    row0 = _g_t(col0[0], col1[0], col2[0], col3[0], half)
    row1 = _g_t(col0[1], col1[1], col2[1], col3[1], half)
    row2 = _g_t(col0[2], col1[2], col2[2], col3[2], half)
    g = dweight[k, c]
    g[0, 0], g[0, 1], g[0, 2] = row0
    g[1, 0], g[1, 1], g[1, 2] = row1
    g[2, 0], g[2, 1], g[2, 2] = row2


@register_jitable
def _input_tile(p0, p1, p2, p3, s, tiles, c, t):
    """V[:, c, t] = Bᵀ d B for the patch d = rows p0..p3, columns s..s+3."""
    col0 = _b_t(p0[s], p1[s], p2[s], p3[s])
    col1 = _b_t(p0[s + 1], p1[s + 1], p2[s + 1], p3[s + 1])
    col2 = _b_t(p0[s + 2], p1[s + 2], p2[s + 2], p3[s + 2])
    col3 = _b_t(p0[s + 3], p1[s + 3], p2[s + 3], p3[s + 3])
    _store_row(tiles, 0, c, t, _b_t(col0[0], col1[0], col2[0], col3[0]))
    _store_row(tiles, 1, c, t, _b_t(col0[1], col1[1], col2[1], col3[1]))
    _store_row(tiles, 2, c, t, _b_t(col0[2], col1[2], col2[2], col3[2]))
    _store_row(tiles, 3, c, t, _b_t(col0[3], col1[3], col2[3], col3[3]))


@register_jitable
def _output_tile(tiles, k, t):
    """Aᵀ M A for M = tiles[:, k, t]: the tile's outputs (y00, y01, y10, y11)."""
    m0, m1, m2, m3 = (
        _load_row(tiles, 0, k, t),
        _load_row(tiles, 1, k, t),
        _load_row(tiles, 2, k, t),
        _load_row(tiles, 3, k, t),
    )
    left = _a_t(
        m0[0] + m0[1] + m0[2], m1[0] + m1[1] + m1[2], m2[0] + m2[1] + m2[2], m3[0] + m3[1] + m3[2]
    )
    right = _a_t(
        m0[1] - m0[2] - m0[3], m1[1] - m1[2] - m1[3], m2[1] - m2[2] - m2[3], m3[1] - m3[2] - m3[3]
    )
    return left[0], right[0], left[1], right[1]


@register_jitable
def _output_grad_tile(g00, g01, g10, g11, tiles_grad, k, t):
    """dM[:, k, t] = A dY Aᵀ for the 2x2 output gradient [[g00, g01], [g10, g11]]."""
    col0 = _a(g00, g10)
    col1 = _a(g01, g11)
    _store_row(tiles_grad, 0, k, t, _a(col0[0], col1[0]))
    _store_row(tiles_grad, 1, k, t, _a(col0[1], col1[1]))
    _store_row(tiles_grad, 2, k, t, _a(col0[2], col1[2]))
    _store_row(tiles_grad, 3, k, t, _a(col0[3], col1[3]))


@register_jitable
def _input_grad_patch(tiles_grad, c, t):
    """B dV Bᵀ for dV = tiles_grad[:, c, t], as four rows of four."""
    v0, v1, v2, v3 = (
        _load_row(tiles_grad, 0, c, t),
        _load_row(tiles_grad, 1, c, t),
        _load_row(tiles_grad, 2, c, t),
        _load_row(tiles_grad, 3, c, t),
    )
    col0 = _b(v0[0], v1[0], v2[0], v3[0])
    col1 = _b(v0[1], v1[1], v2[1], v3[1])
    col2 = _b(v0[2], v1[2], v2[2], v3[2])
    col3 = _b(v0[3], v1[3], v2[3], v3[3])
    return (
        _b(col0[0], col1[0], col2[0], col3[0]),
        _b(col0[1], col1[1], col2[1], col3[1]),
        _b(col0[2], col1[2], col2[2], col3[2]),
        _b(col0[3], col1[3], col2[3], col3[3]),
    )


# ---------------------------------------------------------------------------------------------
# CPU: one (image, channel) plane a task. Along a tile row, groups of 8 or 4 neighbouring tiles go
# through the vector transforms of kernels/_winograd_simd.py (bit for bit the scalar helpers'
# results; :func:`_covering_groups`, :func:`_vector_spans`), the rest (rows of under 4 tiles,
# tiles clipped at the far edges, the input gradient's last few) through the scalar helpers.


@register_jitable
def _vector_spans(tiles):
    """Of ``tiles`` tiles in a row: the end of the groups of 8 and the end of the group of 4 after
    them (equal when there is none); the scalar helpers take the tiles from there."""
    eights = tiles - tiles % 8
    return eights, eights + 4 if tiles - eights >= 4 else eights


@register_jitable
def _covering_groups(tiles):
    """How a transform that only writes its own tiles (the input, the output and its gradient)
    covers a row of ``tiles`` tiles: (groups of 8, groups of 4, first tile for the scalar
    helpers). Group g of width w starts at min(g·w, tiles - w): where w does not divide the row,
    the last group overlaps the one before and computes a few tiles again, to the same values.
    The input gradient adds into its plane, so it takes :func:`_vector_spans` instead."""
    if tiles >= 8:
        return -(-tiles // 8), 0, tiles
    if tiles >= 4:
        return 0, -(-tiles // 4), tiles
    return 0, 0, 0


@register_jitable
def _elements(array, axis):
    """The stride of ``array`` along ``axis``, in elements."""
    return array.strides[axis] // array.itemsize


@register_jitable
def _input_plane(x, tiles, plane, padded, pad_h, pad_w, tiles_h, tiles_w):
    """Plane x[n, c] through ``padded``, whose border the caller zeroed (only its interior is
    written)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    n, c = plane // channels, plane % channels
    padded[pad_h : pad_h + height, pad_w : pad_w + width] = x[n, c]
    first = n * tiles_h * tiles_w
    eights, fours, scalar_from = _covering_groups(tiles_w)
    row_stride, position_stride = _elements(padded, 0), _elements(tiles, 0)
    row_of_c = c * _elements(tiles, 1) + first
    for i in range(tiles_h):
        rows, tile_row = 2 * i * row_stride, row_of_c + i * tiles_w
        for group in range(eights):
            j = min(8 * group, tiles_w - 8)
            input_tiles_8(padded, rows + 2 * j, row_stride, tiles, tile_row + j, position_stride)
        for group in range(fours):
            j = min(4 * group, tiles_w - 4)
            input_tiles_4(padded, rows + 2 * j, row_stride, tiles, tile_row + j, position_stride)
        p0, p1, p2, p3 = padded[2 * i], padded[2 * i + 1], padded[2 * i + 2], padded[2 * i + 3]
        for j in range(scalar_from, tiles_w):
            _input_tile(p0, p1, p2, p3, 2 * j, tiles, c, first + i * tiles_w + j)


@register_jitable
def _input_grad_plane(tiles_grad, dx, plane, padded, pad_h, pad_w, tiles_h, tiles_w):
    channels, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    n, c = plane // channels, plane % channels
    padded[:] = 0
    first = n * tiles_h * tiles_w
    eights, fours = _vector_spans(tiles_w)
    row_stride, position_stride = _elements(padded, 0), _elements(tiles_grad, 0)
    row_of_c = c * _elements(tiles_grad, 1) + first
    for i in range(tiles_h):
        rows, tile_row = 2 * i * row_stride, row_of_c + i * tiles_w
        for j in range(0, eights, 8):
            input_grad_tiles_8(
                tiles_grad, tile_row + j, position_stride, padded, rows + 2 * j, row_stride
            )
        if fours > eights:
            input_grad_tiles_4(
                tiles_grad, tile_row + eights, position_stride, padded, rows + 2 * eights,
                row_stride,
            )  # fmt: skip
        for j in range(fours, tiles_w):
            patch = _input_grad_patch(tiles_grad, c, first + i * tiles_w + j)
            for r in range(4):
                for s in range(4):
                    padded[2 * i + r, 2 * j + s] += patch[r][s]
    dx[n, c] = padded[pad_h : pad_h + height, pad_w : pad_w + width]


@register_jitable
def _output_plane(tiles, bias, y, plane):
    channels, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    n, k = plane // channels, plane % channels
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    first, b = n * tiles_h * tiles_w, bias[k]
    whole_w = out_w // 2  # tiles whose two columns both lie inside the plane
    eights, fours, scalar_from = _covering_groups(whole_w)
    row_stride, position_stride = _elements(y, 2), _elements(tiles, 0)
    row_of_k = k * _elements(tiles, 1) + first
    plane_start = n * _elements(y, 0) + k * _elements(y, 1)
    for i in range(tiles_h):
        row = 2 * i
        two_rows = row + 1 < out_h  # a vector group writes both rows
        rows, tile_row = plane_start + row * row_stride, row_of_k + i * tiles_w
        for group in range(eights if two_rows else 0):
            j = min(8 * group, whole_w - 8)
            output_tiles_8(tiles, tile_row + j, position_stride, b, y, rows + 2 * j, row_stride)
        for group in range(fours if two_rows else 0):
            j = min(4 * group, whole_w - 4)
            output_tiles_4(tiles, tile_row + j, position_stride, b, y, rows + 2 * j, row_stride)
        for j in range(scalar_from if two_rows else 0, tiles_w):
            y00, y01, y10, y11 = _output_tile(tiles, k, first + i * tiles_w + j)
            col = 2 * j
            y[n, k, row, col] = y00 + b
            if j < whole_w:
                y[n, k, row, col + 1] = y01 + b
            if two_rows:
                y[n, k, row + 1, col] = y10 + b
                if j < whole_w:
                    y[n, k, row + 1, col + 1] = y11 + b


@register_jitable
def _output_grad_plane(dy, tiles_grad, plane):
    channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    n, k = plane // channels, plane % channels
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    first, zero = n * tiles_h * tiles_w, dy.dtype.type(0)
    whole_w = out_w // 2  # tiles whose two columns both lie inside the plane
    eights, fours, scalar_from = _covering_groups(whole_w)
    row_stride, position_stride = _elements(dy, 2), _elements(tiles_grad, 0)
    row_of_k = k * _elements(tiles_grad, 1) + first
    plane_start = n * _elements(dy, 0) + k * _elements(dy, 1)
    for i in range(tiles_h):
        row = 2 * i
        two_rows = row + 1 < out_h  # a vector group reads both rows
        rows, tile_row = plane_start + row * row_stride, row_of_k + i * tiles_w
        for group in range(eights if two_rows else 0):
            j = min(8 * group, whole_w - 8)
            output_grad_tiles_8(
                dy, rows + 2 * j, row_stride, tiles_grad, tile_row + j, position_stride
            )
        for group in range(fours if two_rows else 0):
            j = min(4 * group, whole_w - 4)
            output_grad_tiles_4(
                dy, rows + 2 * j, row_stride, tiles_grad, tile_row + j, position_stride
            )
        for j in range(scalar_from if two_rows else 0, tiles_w):
            col = 2 * j
            g00 = dy[n, k, row, col]
            g01 = dy[n, k, row, col + 1] if col + 1 < out_w else zero
            g10 = dy[n, k, row + 1, col] if row + 1 < out_h else zero
            g11 = dy[n, k, row + 1, col + 1] if row + 1 < out_h and col + 1 < out_w else zero
            _output_grad_tile(g00, g01, g10, g11, tiles_grad, k, first + i * tiles_w + j)


@cpu_kernel
def _weights_kernel_cpu(weight, tiles):
    channels = weight.shape[1]
    for index in prange(weight.shape[0] * channels):
        _weights_one(weight, tiles, index // channels, index % channels)


@cpu_kernel
def _weights_grad_kernel_cpu(tiles_grad, dweight):
    channels = dweight.shape[1]
    for index in prange(dweight.shape[0] * channels):
        _weights_grad_one(tiles_grad, dweight, index // channels, index % channels)


@register_jitable
def _padded_plane(tiles_h, tiles_w, dtype):
    """A zeroed scratch plane as large as the padded input that the tiles cover."""
    return np.zeros((2 * tiles_h + 2, 2 * tiles_w + 2), dtype)


@register_jitable
def _gradient_plane(tiles_h, tiles_w, dtype):
    """The input gradient's scratch plane: :func:`_padded_plane` with the 14 columns of room the
    vector groups' writes past their patches take (kernels/_winograd_simd.py)."""
    return _padded_plane(tiles_h, tiles_w + 7, dtype)


# Planes per task of the input-side transforms: a task zeroes its scratch plane once, not per plane.
PLANES_PER_TASK = 16


@cpu_kernel
def _input_kernel_cpu(x, tiles, pad_h, pad_w, tiles_h, tiles_w):
    planes = x.shape[0] * x.shape[1]
    for task in prange((planes + PLANES_PER_TASK - 1) // PLANES_PER_TASK):
        padded = _padded_plane(tiles_h, tiles_w, x.dtype)
        for plane in range(task * PLANES_PER_TASK, min((task + 1) * PLANES_PER_TASK, planes)):
            _input_plane(x, tiles, plane, padded, pad_h, pad_w, tiles_h, tiles_w)


@cpu_kernel
def _input_grad_kernel_cpu(tiles_grad, dx, pad_h, pad_w, tiles_h, tiles_w):
    # A task owns its planes of dx: their overlapping adds are race-free and in a fixed order.
    planes = dx.shape[0] * dx.shape[1]
    for task in prange((planes + PLANES_PER_TASK - 1) // PLANES_PER_TASK):
        padded = _gradient_plane(tiles_h, tiles_w, dx.dtype)
        for plane in range(task * PLANES_PER_TASK, min((task + 1) * PLANES_PER_TASK, planes)):
            _input_grad_plane(tiles_grad, dx, plane, padded, pad_h, pad_w, tiles_h, tiles_w)


@cpu_kernel
def _output_kernel_cpu(tiles, bias, y):
    for plane in prange(y.shape[0] * y.shape[1]):
        _output_plane(tiles, bias, y, plane)


@cpu_kernel
def _output_grad_kernel_cpu(dy, tiles_grad):
    for plane in prange(dy.shape[0] * dy.shape[1]):
        _output_grad_plane(dy, tiles_grad, plane)


@njit(cache=True, error_model="numpy")
def _conv_run(
    x, u, bias, y, v_tiles, m_tiles, pad_h, pad_w, chunk_images, relu, pool, pooled, where,
    planes_runs, group,
):  # fmt: skip
    """Run ``group`` of the chunks: per chunk V, M = U·V (one GEMM a position), y's tiles (each
    plane through ReLU as soon as it is written, with ``relu``). With ``pool``, the tiles go to
    the group's planes_runs[group] instead of y (whose shape alone is read) and leave them pooled
    (``_pool2x2``) into pooled and where (N·K, PH·PW)."""
    batch, channels, out_channels = x.shape[0], x.shape[1], y.shape[1]
    tiles_h, tiles_w = (y.shape[2] + 1) // 2, (y.shape[3] + 1) // 2
    groups, chunks = v_tiles.shape[0], (batch + chunk_images - 1) // chunk_images
    padded = _padded_plane(tiles_h, tiles_w, x.dtype)
    pooled_h, pooled_w = y.shape[2] // 2 if pool else 0, y.shape[3] // 2  # no pool: no scratch
    corners = _pool2x2.window_corners(pooled_h, pooled_w, y.shape[3])
    larger, below = _pool2x2.pool_scratch(pooled_h * pooled_w, x.dtype)
    first, last = chunk_range(group, groups, chunks, chunk_images, batch)
    for start in range(first, last, chunk_images):
        stop = min(start + chunk_images, batch)
        count = (stop - start) * tiles_h * tiles_w
        v, m = v_tiles[group, :, :, :count], m_tiles[group, :, :, :count]
        images = x[start:stop]
        for plane in range((stop - start) * channels):
            _input_plane(images, v, plane, padded, pad_h, pad_w, tiles_h, tiles_w)
        for position in range(POSITIONS):  # M[ξ] = U[ξ]·V[ξ]
            gemm_in_cache(u[position], v[position], m[position], False)
        outputs = planes_runs[group, : stop - start] if pool else y[start:stop]
        flat, plane_size = outputs.reshape(-1), y.shape[2] * y.shape[3]
        for plane in range((stop - start) * out_channels):
            _output_plane(m, bias, outputs, plane)
            if pool:
                _pool2x2.pool_plane(
                    flat[plane * plane_size : (plane + 1) * plane_size], y.shape[3],
                    pooled[start * out_channels + plane], where[start * out_channels + plane],
                    pooled_w, relu, larger, below, corners,
                )  # fmt: skip
            elif relu:
                relu_span(flat, plane * plane_size, (plane + 1) * plane_size)


# The whole-convolution kernels are thin loops over runs of chunks, each run one call of a jitted
# function that both drivers share: the body is compiled once, not once a driver (a parallel
# compile of the whole body took ~20 s).
@cpu_kernel
def _conv_kernel_cpu(
    x, u, bias, y, v_tiles, m_tiles, pad_h, pad_w, chunk_images, relu, pool, pooled, where,
    planes_runs,
):  # fmt: skip
    """y = conv(x), or with ``pool`` pooled and where, a chunk at a time, each run of chunks on
    one thread with its own tiles (and planes)."""
    for group in prange(v_tiles.shape[0]):
        _conv_run(
            x, u, bias, y, v_tiles, m_tiles, pad_h, pad_w, chunk_images, relu, pool, pooled,
            where, planes_runs, np.int64(group),
        )  # fmt: skip


@njit(cache=True, error_model="numpy")
def _conv_backward_run(
    dy, x, u, dx, du, db, v_tiles, m_tiles, pad_h, pad_w, chunk_images, need_x, need_w, need_b,
    pool, pooled_grad, where, grads_runs, outside, group,
):  # fmt: skip
    """Run ``group`` of the chunks: dM from dy; dU[group] += dM·Vᵀ (V recomputed); Σ dY into
    db[group]; dV = Uᵀ·dM into V's tiles; dx from dV. With ``pool``, a chunk's dY is first
    unpooled (``_pool2x2``) into grads_runs[group] from pooled_grad and where (N·K, PH·PW),
    counting the entries of where that name no pixel into outside[group]; of dy only the shape
    is read."""
    batch, channels, out_channels = x.shape[0], x.shape[1], dy.shape[1]
    tiles_h, tiles_w = (dy.shape[2] + 1) // 2, (dy.shape[3] + 1) // 2
    groups, chunks = v_tiles.shape[0], (batch + chunk_images - 1) // chunk_images
    padded = _padded_plane(tiles_h, tiles_w, x.dtype)  # the input side; its border stays 0
    scratch = _gradient_plane(tiles_h, tiles_w, x.dtype)  # the input gradient's sums
    first, last = chunk_range(group, groups, chunks, chunk_images, batch)
    for start in range(first, last, chunk_images):
        stop = min(start + chunk_images, batch)
        count = (stop - start) * tiles_h * tiles_w
        v, dm = v_tiles[group, :, :, :count], m_tiles[group, :, :, :count]
        if pool:
            grads = grads_runs[group, : stop - start]
            outside[group] += _pool2x2.unpool_planes(
                pooled_grad, where, start * out_channels,
                grads.reshape(-1, dy.shape[2] * dy.shape[3]),
            )  # fmt: skip
        else:
            grads = dy[start:stop]
        for plane in range((stop - start) * out_channels):
            _output_grad_plane(grads, dm, plane)
        if need_b:  # Σ dY: row sums of dM[5] (dM = A·dY·Aᵀ, A's second row is (1, 1))
            for k in range(out_channels):
                db[group, k] += dm[5, k].sum()
        if need_w:  # dU[ξ] += dM[ξ]·V[ξ]ᵀ
            images = x[start:stop]
            for plane in range((stop - start) * channels):
                _input_plane(images, v, plane, padded, pad_h, pad_w, tiles_h, tiles_w)
            for position in range(POSITIONS):
                gemm(dm[position], v[position], du[group, position], False, True, 1.0)
        if need_x:  # dV[ξ] = U[ξ]ᵀ·dM[ξ], into V's tiles (V is used up by then)
            for position in range(POSITIONS):
                gemm_in_cache(u[position], dm[position], v[position], True)
            inputs = dx[start:stop]
            for plane in range((stop - start) * channels):
                _input_grad_plane(v, inputs, plane, scratch, pad_h, pad_w, tiles_h, tiles_w)


@cpu_kernel
def _conv_backward_kernel_cpu(
    dy, x, u, dx, du, db, v_tiles, m_tiles, pad_h, pad_w, chunk_images, need_x, need_w, need_b,
    pool, pooled_grad, where, grads_runs, outside,
):  # fmt: skip
    """dx, and each run's dU and Σ dY (du[run], db[run], zeroed by the caller), a chunk at a
    time, each run of chunks on one thread with its own tiles."""
    for group in prange(v_tiles.shape[0]):
        _conv_backward_run(
            dy, x, u, dx, du, db, v_tiles, m_tiles, pad_h, pad_w, chunk_images, need_x, need_w,
            need_b, pool, pooled_grad, where, grads_runs, outside, np.int64(group),
        )  # fmt: skip


def winograd_weights_cpu(weight: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """U (16, K, C) = G g Gᵀ of every filter of weight (K, C, 3, 3)."""
    weight, tiles = _weights_arguments(weight, out, True)
    _weights_kernel_cpu(tiles.size, weight, tiles)
    return tiles


def winograd_weights_grad_cpu(tiles_grad: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dweight (K, C, 3, 3) = Gᵀ dU G of tiles_grad dU (16, K, C): the adjoint of the weights'
    transform."""
    tiles_grad, dweight = _weights_grad_arguments(tiles_grad, out, True)
    _weights_grad_kernel_cpu(tiles_grad.size, tiles_grad, dweight)
    return dweight


def winograd_input_cpu(
    x: np.ndarray, padding: int | tuple[int, int], out: np.ndarray | None = None
) -> np.ndarray:
    """V (16, C, N·TH·TW) = Bᵀ d B of every input patch of x (N, C, H, W), zero padded by
    ``padding``."""
    x, geometry, tiles = _input_arguments(x, padding, out, True)
    _input_kernel_cpu(tiles.size, x, tiles, *geometry[:2], *geometry[4:])
    return tiles


def winograd_input_grad_cpu(
    tiles_grad: np.ndarray,
    x_shape: Sequence[int],
    padding: int | tuple[int, int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """dx (N, C, H, W) from dV (16, C, N·TH·TW): the adjoint of the input transform."""
    tiles_grad, geometry, dx = _input_grad_arguments(tiles_grad, x_shape, padding, out, True)
    _input_grad_kernel_cpu(tiles_grad.size, tiles_grad, dx, *geometry[:2], *geometry[4:])
    return dx


def winograd_output_cpu(
    tiles: np.ndarray,
    bias: np.ndarray | None,
    y_shape: Sequence[int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """y (N, K, OH, OW) = Aᵀ M A (+ bias) of M (16, K, N·TH·TW)."""
    tiles, bias, y = _output_arguments(tiles, bias, y_shape, out, True)
    _output_kernel_cpu(tiles.size, tiles, bias, y)
    return y


def winograd_output_grad_cpu(dy: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dM (16, K, N·TH·TW) = A dY Aᵀ of dy (N, K, OH, OW): the adjoint of the output transform."""
    dy, tiles_grad = _output_grad_arguments(dy, out, True)
    _output_grad_kernel_cpu(tiles_grad.size, dy, tiles_grad)
    return tiles_grad


def _group_tiles(groups: int, rows: int, count: int, dtype: Any, like: np.ndarray) -> np.ndarray:
    """Uninitialised (groups, 16, rows, count) tile buffers, one per group of chunks, with every
    one of the groups * 16 matrices C-contiguous and spaced as :func:`winograd_tiles_cpu` says."""
    stride = _matrix_stride(rows, count, dtype, spaced=True)
    if stride == rows * count:  # keep a gap: the kernels then always see one array layout
        stride += 2 * max(1, 64 // np.dtype(dtype).itemsize)
    buffer = empty((groups * POSITIONS, stride), dtype, like=like)
    return buffer[:, : rows * count].reshape(groups, POSITIONS, rows, count)


def _workspace(groups: int, channels: int, out_channels: int, count: int, x: np.ndarray):
    """V (groups, 16, C, count) and M (groups, 16, K, count), :func:`_group_tiles`' layout: this
    thread's scratch for the shape (two buffers even when C = K)."""

    def tiles(name: str, rows: int) -> np.ndarray:
        key = (name, groups, rows, count, x.dtype)
        return scratch(key, lambda: _group_tiles(groups, rows, count, x.dtype, x))

    return tiles("winograd_v", channels), tiles("winograd_m", out_channels)


def winograd_conv2d_cpu(
    x: np.ndarray,
    tiles_weight: np.ndarray,
    bias: np.ndarray | None,
    padding: int | tuple[int, int],
    chunk_images: int,
    out: np.ndarray | None = None,
    relu: bool = False,
    pool: bool = False,
) -> Any:
    """y (N, K, OH, OW) = the 3x3 stride-1 convolution of x (N, C, H, W) whose filters' tiles are
    ``tiles_weight`` U (16, K, C), plus bias, ``chunk_images`` images at a time: V, M = U·V
    (:mod:`._blas`) and y's tiles per chunk, in one call; with ``relu``, relu of all that. On
    more than one thread the chunks split into one run per thread, each with its own tiles.
    With ``pool``, (pooled, where) (N, K, OH // 2, OW // 2): y's 2x2 stride-2 max-pool (then the
    ReLU) and its argmax, each chunk's planes pooled while in cache (``kernels/_pool2x2.py``), y
    never written."""
    x, u, bias, geometry, chunks = _conv_arguments(
        "winograd_conv2d", x, tiles_weight, bias, padding, chunk_images
    )
    return _conv_cpu(x, u, bias, geometry, chunks, chunk_images, relu, out, pool)


def winograd_conv2d_plan_cpu(
    x: np.ndarray,
    tiles_weight: np.ndarray,
    bias: np.ndarray | None,
    padding: int | tuple[int, int],
    chunk_images: int,
    relu: bool = False,
    pool: bool = False,
) -> Callable[..., Any]:
    """:func:`winograd_conv2d_cpu` for arrays shaped as these, checked once: ``run(x,
    tiles_weight, bias, out=None)`` gives y, or with ``pool`` (pooled, where). A call checks
    only that its arrays have the planned types, shapes and dtypes (else a ValueError) and reads
    their values; the other checks and the geometry were worked out here. A batch-1 layer's
    Python path is then a fraction of what checking every argument costs."""
    _, _, zeros, geometry, chunks = _conv_arguments(
        "winograd_conv2d", x, tiles_weight, bias, padding, chunk_images
    )
    planned = planned_arrays(x, tiles_weight, bias)

    def run(x, tiles_weight, bias, out=None):
        arrays = (x, tiles_weight, bias)
        check_planned("winograd_conv2d", ("x", "tiles_weight", "bias"), planned, arrays)
        x, u = np.ascontiguousarray(x), np.ascontiguousarray(tiles_weight)
        biases = zeros if bias is None else np.ascontiguousarray(bias)
        return _conv_cpu(x, u, biases, geometry, chunks, chunk_images, relu, out, pool)

    return run


def _conv_cpu(x, u, bias, geometry, chunks, chunk_images, relu, out, pool=False):
    """The convolution of checked arguments (x and U C-contiguous, bias an array): y, into
    ``out`` when given, or with ``pool`` (pooled, where); the driver and its runs follow the
    current thread count."""
    batch, channels = x.shape[:2]
    out_channels, count = u.shape[1], chunk_images * geometry.tiles_h * geometry.tiles_w
    y_shape = (batch, out_channels, geometry.out_h, geometry.out_w)
    if pool:
        pooled, where = _pool2x2.pool_outputs(
            _pool2x2.pool_arguments("winograd_conv2d", out, y_shape), x.dtype, x
        )
        y = np.empty((0, *y_shape[1:]), x.dtype)
    else:
        pooled, where = _pool2x2.pool_outputs(None, x.dtype, x)
        y = _out("winograd_conv2d", out, y_shape, x.dtype, x)
    elements = POSITIONS * (channels + out_channels) * count * chunks
    driver, groups = chunk_groups(_conv_kernel_cpu, elements, chunks)
    v_tiles, m_tiles = _workspace(groups, channels, out_channels, count, x)
    planes_runs = np.empty((groups, chunk_images, *y_shape[1:]) if pool else (0,) * 5, x.dtype)
    driver(
        x, u, bias, y, v_tiles, m_tiles, geometry.pad_h, geometry.pad_w, chunk_images, bool(relu),
        bool(pool), _pool2x2.as_planes(pooled), _pool2x2.as_planes(where), planes_runs,
    )  # fmt: skip
    return (pooled, where) if pool else y


def winograd_conv2d_backward_cpu(
    dy: np.ndarray,
    x: np.ndarray,
    tiles_weight: np.ndarray,
    padding: int | tuple[int, int],
    chunk_images: int,
    need_x: bool = True,
    need_w: bool = True,
    need_b: bool = True,
    pool_argmax: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The gradients of :func:`winograd_conv2d_cpu` from dy (N, K, OH, OW): dx (N, C, H, W), dU
    (16, K, C) (``winograd_weights_grad`` turns it into the filters' gradient) and Σ dY (K,), each
    None when not asked for; in one call, chunk by chunk, V recomputed per chunk (cheaper than
    keeping the batch's). On more than one thread each thread sums its own dU and Σ dY, added up
    in a fixed order after. With ``pool_argmax`` (the ``where`` of a ``pool=True`` forward), dy
    is the pooled output's gradient (N, K, OH // 2, OW // 2), unpooled a chunk at a time."""
    x, u, _, geometry, chunks = _conv_arguments(
        "winograd_conv2d_backward", x, tiles_weight, None, padding, chunk_images
    )
    batch, channels = x.shape[:2]
    out_channels, count = u.shape[1], chunk_images * geometry.tiles_h * geometry.tiles_w
    y_shape = (batch, out_channels, geometry.out_h, geometry.out_w)
    dy, pooled_grad, where = _pool2x2.output_gradients(
        "winograd_conv2d_backward", dy, pool_argmax, y_shape, x
    )
    elements = POSITIONS * (channels + out_channels) * count * chunks
    driver, groups = chunk_groups(_conv_backward_kernel_cpu, elements, chunks)
    v_tiles, m_tiles = _workspace(groups, channels, out_channels, count, x)
    dx = empty(x.shape, x.dtype, like=x) if need_x else np.empty((0, 0, 0, 0), x.dtype)
    du = np.zeros((groups, POSITIONS, out_channels, channels), x.dtype)
    db = np.zeros((groups, out_channels), np.float64)
    pool = pool_argmax is not None
    grads_runs = np.empty((groups, chunk_images, *y_shape[1:]) if pool else (0,) * 5, x.dtype)
    outside = np.zeros(groups, np.int64)
    driver(
        dy, x, u, dx, du, db, v_tiles, m_tiles, geometry.pad_h, geometry.pad_w, chunk_images,
        need_x, need_w, need_b, pool, pooled_grad, where, grads_runs, outside,
    )  # fmt: skip
    if pool:
        plane = geometry.out_h * geometry.out_w
        _pool2x2.check_where(
            "winograd_conv2d_backward", where, where.shape, int(outside.sum()), plane
        )
    return (
        dx if need_x else None,
        du.sum(axis=0) if need_w and groups > 1 else (du[0] if need_w else None),
        db.sum(axis=0).astype(x.dtype) if need_b else None,
    )


# ---------------------------------------------------------------------------------------------
# CUDA: one thread per tile, or per input pixel for the input gradient (a gather)


@register_jitable
def _pixel(x, n, c, row, col):
    """x[n, c, row, col], or 0 where (row, col) falls in the padding."""
    if 0 <= row < x.shape[2] and 0 <= col < x.shape[3]:
        return x[n, c, row, col]
    return x.dtype.type(0)


@register_jitable
def _b_row(r):
    """Row r of B (= column r of Bᵀ): the weights of V's four rows in row r of B·V."""
    if r == 0:
        return 1, 0, 0, 0
    if r == 1:
        return 0, 1, -1, 1
    if r == 2:
        return -1, 1, 1, 0
    return 0, 0, 0, -1


@cuda_kernel
def _weights_kernel_cuda(weight, tiles):
    channels = weight.shape[1]
    for index in range(cuda.grid(1), weight.shape[0] * channels, cuda.gridsize(1)):
        _weights_one(weight, tiles, index // channels, index % channels)


@cuda_kernel
def _weights_grad_kernel_cuda(tiles_grad, dweight):
    channels = dweight.shape[1]
    for index in range(cuda.grid(1), dweight.shape[0] * channels, cuda.gridsize(1)):
        _weights_grad_one(tiles_grad, dweight, index // channels, index % channels)


@cuda_kernel
def _input_kernel_cuda(x, tiles, pad_h, pad_w, tiles_h, tiles_w):
    count = tiles.shape[2]
    patch = cuda.local.array((4, 4), x.dtype)
    # Consecutive threads take consecutive tiles of one channel: coalesced stores into V.
    for index in range(cuda.grid(1), tiles.shape[1] * count, cuda.gridsize(1)):
        c, t = index // count, index % count
        n, tile = t // (tiles_h * tiles_w), t % (tiles_h * tiles_w)
        row, col = 2 * (tile // tiles_w) - pad_h, 2 * (tile % tiles_w) - pad_w
        for r in range(4):
            for s in range(4):
                patch[r, s] = _pixel(x, n, c, row + r, col + s)
        _input_tile(patch[0], patch[1], patch[2], patch[3], 0, tiles, c, t)


@cuda_kernel
def _input_grad_kernel_cuda(tiles_grad, dx, pad_h, pad_w, tiles_h, tiles_w):
    channels, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    for index in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        plane_row, w = index // width, index % width
        plane, h = plane_row // height, plane_row % height
        n, c = plane // channels, plane % channels
        padded_h, padded_w = h + pad_h, w + pad_w
        total = dx.dtype.type(0)
        # The tiles whose 4x4 patch holds this pixel: rows i with 2i <= padded_h <= 2i + 3 (at
        # most two), the same for columns; summed in a fixed order, so dx is deterministic.
        for i in range(max(0, padded_h // 2 - 1), min(tiles_h, padded_h // 2 + 1)):
            b_r = _b_row(padded_h - 2 * i)
            for j in range(max(0, padded_w // 2 - 1), min(tiles_w, padded_w // 2 + 1)):
                b_s = _b_row(padded_w - 2 * j)
                t = (n * tiles_h + i) * tiles_w + j
                for a in range(4):
                    if b_r[a] != 0:
                        for b in range(4):
                            if b_s[b] != 0:
                                total += (b_r[a] * b_s[b]) * tiles_grad[4 * a + b, c, t]
        dx[n, c, h, w] = total


@cuda_kernel
def _output_kernel_cuda(tiles, bias, y):
    out_h, out_w = y.shape[2], y.shape[3]
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    count = tiles.shape[2]
    for index in range(cuda.grid(1), tiles.shape[1] * count, cuda.gridsize(1)):
        k, t = index // count, index % count
        n, tile = t // (tiles_h * tiles_w), t % (tiles_h * tiles_w)
        row, col = 2 * (tile // tiles_w), 2 * (tile % tiles_w)
        y00, y01, y10, y11 = _output_tile(tiles, k, t)
        b = bias[k]
        y[n, k, row, col] = y00 + b
        if col + 1 < out_w:
            y[n, k, row, col + 1] = y01 + b
        if row + 1 < out_h:
            y[n, k, row + 1, col] = y10 + b
            if col + 1 < out_w:
                y[n, k, row + 1, col + 1] = y11 + b


@cuda_kernel
def _output_grad_kernel_cuda(dy, tiles_grad):
    channels, out_h, out_w = dy.shape[1], dy.shape[2], dy.shape[3]
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    count = tiles_grad.shape[2]
    for index in range(cuda.grid(1), channels * count, cuda.gridsize(1)):
        k, t = index // count, index % count
        n, tile = t // (tiles_h * tiles_w), t % (tiles_h * tiles_w)
        row, col = 2 * (tile // tiles_w), 2 * (tile % tiles_w)
        zero = dy.dtype.type(0)
        g00 = dy[n, k, row, col]
        g01 = dy[n, k, row, col + 1] if col + 1 < out_w else zero
        g10 = dy[n, k, row + 1, col] if row + 1 < out_h else zero
        g11 = dy[n, k, row + 1, col + 1] if row + 1 < out_h and col + 1 < out_w else zero
        _output_grad_tile(g00, g01, g10, g11, tiles_grad, k, t)


def _launch_over(kernel: Any, size: int, *args: Any) -> None:
    launch(kernel, stride_grid(size, THREADS_PER_BLOCK), THREADS_PER_BLOCK, *args)


def winograd_weights_cuda(weight: Any, out: Any = None) -> Any:
    """As :func:`winograd_weights_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    weight, tiles = _weights_arguments(weight, out, False)
    _launch_over(_weights_kernel_cuda, weight.shape[0] * weight.shape[1], weight, tiles)
    return tiles


def winograd_weights_grad_cuda(tiles_grad: Any, out: Any = None) -> Any:
    """As :func:`winograd_weights_grad_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    tiles_grad, dweight = _weights_grad_arguments(tiles_grad, out, False)
    _launch_over(
        _weights_grad_kernel_cuda, tiles_grad.shape[1] * tiles_grad.shape[2], tiles_grad, dweight
    )
    return dweight


def winograd_input_cuda(x: Any, padding: int | tuple[int, int], out: Any = None) -> Any:
    """As :func:`winograd_input_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    x, geometry, tiles = _input_arguments(x, padding, out, False)
    _launch_over(
        _input_kernel_cuda, tiles.shape[1] * tiles.shape[2], x, tiles, *geometry[:2], *geometry[4:]
    )
    return tiles


def winograd_input_grad_cuda(
    tiles_grad: Any, x_shape: Sequence[int], padding: int | tuple[int, int], out: Any = None
) -> Any:
    """As :func:`winograd_input_grad_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    tiles_grad, geometry, dx = _input_grad_arguments(tiles_grad, x_shape, padding, out, False)
    _launch_over(_input_grad_kernel_cuda, dx.size, tiles_grad, dx, *geometry[:2], *geometry[4:])
    return dx


def winograd_output_cuda(tiles: Any, bias: Any, y_shape: Sequence[int], out: Any = None) -> Any:
    """As :func:`winograd_output_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    tiles, bias, y = _output_arguments(tiles, bias, y_shape, out, False)
    _launch_over(_output_kernel_cuda, tiles.shape[1] * tiles.shape[2], tiles, bias, y)
    return y


def winograd_output_grad_cuda(dy: Any, out: Any = None) -> Any:
    """As :func:`winograd_output_grad_cpu`, on the GPU (CuPy arrays) or in the simulator."""
    dy, tiles_grad = _output_grad_arguments(dy, out, False)
    _launch_over(
        _output_grad_kernel_cuda, tiles_grad.shape[1] * tiles_grad.shape[2], dy, tiles_grad
    )
    return tiles_grad


def _cuda_chunks(batch: int, chunk_images: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk_images, batch)) for start in range(0, batch, chunk_images)]


def winograd_conv2d_cuda(
    x: Any,
    tiles_weight: Any,
    bias: Any,
    padding: Any,
    chunk_images: int,
    out: Any = None,
    relu: bool = False,
    pool: bool = False,
) -> Any:
    """As :func:`winograd_conv2d_cpu`, on the GPU (CuPy arrays) or in the simulator: per chunk the
    transforms above and the 16 products through the array module's batched matmul (cuBLAS on a
    GPU; a kernel family does not call a sibling's, so not the matmul family's), the tile buffers
    reused; ``relu`` as the array module's maximum, NaN kept, over y; ``pool`` pools y after
    (``_pool2x2.pool_cuda``)."""
    x, u, bias, geometry, _ = _conv_arguments(
        "winograd_conv2d", x, tiles_weight, bias, padding, chunk_images
    )
    batch, channels = x.shape[:2]
    out_channels, per_image = u.shape[1], geometry.tiles_h * geometry.tiles_w
    y_shape = (batch, out_channels, geometry.out_h, geometry.out_w)
    if pool:
        _pool2x2.pool_arguments("winograd_conv2d", out, y_shape)
        y = winograd_conv2d_cuda(x, tiles_weight, bias, padding, chunk_images)
        return _pool2x2.pool_cuda(y, relu)
    y = _out("winograd_conv2d", out, y_shape, x.dtype, x)
    xp, buffers = array_module(x), {}
    for start, stop in _cuda_chunks(batch, chunk_images):
        count = (stop - start) * per_image
        v = winograd_input_cuda(
            x[start:stop], padding, out=_reused(buffers, "v", channels, count, x)
        )
        m = xp.matmul(u, v, out=_reused(buffers, "m", out_channels, count, x))
        winograd_output_cuda(m, bias, y[start:stop].shape, out=y[start:stop])
    if relu:
        xp.maximum(y, 0, out=y)
    return y


def winograd_conv2d_plan_cuda(
    x: Any,
    tiles_weight: Any,
    bias: Any,
    padding: Any,
    chunk_images: int,
    relu: bool = False,
    pool: bool = False,
) -> Callable[..., Any]:
    """As :func:`winograd_conv2d_plan_cpu`, on the GPU or in the simulator: the arguments are
    checked now, and ``run`` calls :func:`winograd_conv2d_cuda`, which checks them again (a
    launch's Python path is not what a GPU layer waits on)."""
    _conv_arguments("winograd_conv2d", x, tiles_weight, bias, padding, chunk_images)

    def run(x, tiles_weight, bias, out=None):
        return winograd_conv2d_cuda(x, tiles_weight, bias, padding, chunk_images, out, relu, pool)

    return run


def winograd_conv2d_backward_cuda(
    dy: Any,
    x: Any,
    tiles_weight: Any,
    padding: Any,
    chunk_images: int,
    need_x: bool = True,
    need_w: bool = True,
    need_b: bool = True,
    pool_argmax: Any = None,
) -> tuple[Any, Any, Any]:
    """As :func:`winograd_conv2d_backward_cpu`, on the GPU (CuPy arrays) or in the simulator; a
    pooled dy is unpooled first (``_pool2x2.unpool_cuda``)."""
    x, u, _, geometry, _ = _conv_arguments(
        "winograd_conv2d_backward", x, tiles_weight, None, padding, chunk_images
    )
    batch, channels = x.shape[:2]
    out_channels, per_image = u.shape[1], geometry.tiles_h * geometry.tiles_w
    y_shape = (batch, out_channels, geometry.out_h, geometry.out_w)
    if pool_argmax is not None:
        dy = _pool2x2.unpool_cuda(
            *_pool2x2.pooled_gradient("winograd_conv2d_backward", dy, pool_argmax, y_shape, x)
        )
    dy = output_gradient("winograd_conv2d_backward", dy, y_shape, x)
    xp, buffers = array_module(x), {}
    dx = empty(x.shape, x.dtype, like=x) if need_x else None
    du = xp.zeros((POSITIONS, out_channels, channels), x.dtype) if need_w else None
    db = xp.zeros(out_channels, x.dtype) if need_b else None
    for start, stop in _cuda_chunks(batch, chunk_images):
        count = (stop - start) * per_image
        dm = winograd_output_grad_cuda(
            dy[start:stop], out=_reused(buffers, "m", out_channels, count, x)
        )
        if need_b:  # Σ dY: row sums of dM[5]
            db += dm[5].sum(axis=1)
        v = _reused(buffers, "v", channels, count, x)
        if need_w:  # dU[ξ] += dM[ξ]·V[ξ]ᵀ
            winograd_input_cuda(x[start:stop], padding, out=v)
            term = _reused(buffers, "du", out_channels, channels, x)
            du += xp.matmul(dm, v.transpose(0, 2, 1), out=term)
        if need_x:  # dV[ξ] = U[ξ]ᵀ·dM[ξ], into V's buffer (V is used up by then)
            xp.matmul(u.transpose(0, 2, 1), dm, out=v)
            winograd_input_grad_cuda(v, dx[start:stop].shape, padding, out=dx[start:stop])
    return dx, du, db


def _reused(buffers: dict, name: str, rows: int, count: int, like: Any) -> Any:
    """The (16, rows, count) tile buffer ``name`` of a chunk of this size, made once a call."""
    key = (name, count)
    if key not in buffers:
        buffers[key] = winograd_tiles_cuda(rows, count, like.dtype, like)
    return buffers[key]


def cuda_kernels() -> list[KernelSpec]:
    """The CUDA kernels of this module, each with one float32 specialisation, for the PTX check."""
    image, tiles, filters = (
        numba.float32[:, :, :, ::1],
        numba.float32[:, :, ::1],
        numba.float32[:, :, :, ::1],
    )
    geometry = (numba.int64,) * 4
    return [
        KernelSpec("winograd_weights", _weights_kernel_cuda, (filters, tiles), THREADS_PER_BLOCK),
        KernelSpec(
            "winograd_weights_grad", _weights_grad_kernel_cuda, (tiles, filters), THREADS_PER_BLOCK
        ),
        KernelSpec(
            "winograd_input", _input_kernel_cuda, (image, tiles, *geometry), THREADS_PER_BLOCK
        ),
        KernelSpec(
            "winograd_input_grad",
            _input_grad_kernel_cuda,
            (tiles, image, *geometry),
            THREADS_PER_BLOCK,
        ),
        KernelSpec(
            "winograd_output",
            _output_kernel_cuda,
            (tiles, numba.float32[::1], image),
            THREADS_PER_BLOCK,
        ),
        KernelSpec(
            "winograd_output_grad", _output_grad_kernel_cuda, (image, tiles), THREADS_PER_BLOCK
        ),
    ]


FAMILY = Family(
    name="winograd",
    module=__name__,
    ops=(
        "winograd_tiles",
        "winograd_weights",
        "winograd_weights_grad",
        "winograd_input",
        "winograd_input_grad",
        "winograd_output",
        "winograd_output_grad",
        "winograd_conv2d",
        "winograd_conv2d_plan",
        "winograd_conv2d_backward",
    ),
    references={
        "winograd_weights": reference_weights,
        "winograd_weights_grad": reference_weights_grad,
        "winograd_input": reference_input,
        "winograd_input_grad": reference_input_grad,
        "winograd_output": reference_output,
        "winograd_output_grad": reference_output_grad,
        "winograd_conv2d": reference_conv2d,
        "winograd_conv2d_backward": reference_conv2d_backward,
    },
    cuda_kernels=cuda_kernels,
)
