"""Fused NT-Xent (SimCLR's normalised temperature-scaled cross-entropy): the row kernels around
the two GEMMs of the loss and its gradient.

Math, for embeddings z (R, D) with R = 2N rows, rows i and i + N the two views of one image,
temperature T and p(i) = (i + N) mod R the positive of row i:

* normalisation:  n_i = max(‖z_i‖, ε) with ε = 1e-12 (PyTorch's F.normalize),  u_i = z_i / n_i
* similarities:   C = U Uᵀ (R, R), the cosines; the logits are S = C / T
* row losses:     l_i = −S_{i,p(i)} + log Σ_{k≠i} exp(S_ik)
* its gradient:   with P_ik = softmax over k ≠ i of S_i· (P_ii = 0),
                  G = (P − onehot(p)) / T, G_ii = 0, so that ∂l_i/∂C_ik = G_ik
* weighted loss L = Σ_i w_i·l_i (w_i = 1/R for the mean, 1 for the sum, the upstream gradient of
  each row for "none"): ∂L/∂U = M U with M = diag(w) G + Gᵀ diag(w) (symmetric),
  M_ij = w_i·G_ij + w_j·G_ji
* through the normalisation:  ∂L/∂z_i = (∂L/∂u_i − u_i (u_i·∂L/∂u_i)) / n_i  when ‖z_i‖ ≥ ε,
  and (∂L/∂u_i) / ε when the norm was clamped (the clamp passes no gradient to the norm).

The two GEMMs (C = U Uᵀ and M U) are the matmul family's (the device's ``matmul``: BLAS on the
CPU, the tiled kernel on a GPU); no family imports another, so the functional layer
(``fastnet.functional.contrastive``) runs the sequence, and nothing larger than C is ever held:

    units = ntxent_normalize(z)                       U (R, D)
    C = matmul(units, units, False, True)             C (R, R)
    row_losses = ntxent_rows(C, 1/T)                  l (R,); C is overwritten with G
    M = ntxent_symmetrise(G, w or None, out=G)        in place when w is uniform (its scale
                                                      then goes to the last kernel)
    dunits = matmul(M, units)                         ∂L/∂U (R, D)
    dz = ntxent_normalize_backward(z, dunits, scale)  ∂L/∂z (R, D)

Buffers (one float dtype throughout, float32 or float64): ``z``, ``units``, ``dunits``, ``dz``
(R, D); ``similarity`` (R, R), C-contiguous (it is overwritten in place); ``row_losses`` (R,);
``row_weights`` (R,) or None (all 1); ``out`` (R, R), which may be ``gradient`` itself; ``scale``
(1,), a device array so the upstream gradient never travels to the host.

Variants, simplest first:

* ``reference_*``: float64 NumPy, straight from the definitions: the log-softmax with the
  diagonal masked to −inf, the explicit target matrix, the explicit Jacobian of each row's
  normalisation. :func:`reference_nt_xent` is the whole loss and the gradient of the row losses'
  sum, the specification the sequence above is tested against.
* ``*_cpu``: Numba, one body over the rows, serial or parallel as ``_cpu.parallel_pays``
  decides; per row plain loops LLVM vectorises (the exp is ``_fastmath.fast_exp``, sums of
  squares and exponentials accumulate in float64). The symmetrisation goes over 32 × 32 tile
  pairs (I, J ≥ I), one tile row I an iteration, staging each pair in two local tiles and
  transposing there: walking a column of the matrix itself (a power-of-two row stride) evicts
  its own cache lines and took 3.5 times as long at 2N = 512.
* ``*_cuda``: the row kernels run one block per row in a ``row_grid``, 32-256 threads striding
  over the row and merging through ``_reduce.block_reduce_pair`` (the rows kernel keeps an online
  (max, sum of exp) per thread, one exp per logit, and reads its positive before the barrier,
  because the same launch overwrites the row). The symmetrisation is a tiled transpose: a block
  of 32 × 8 threads stages the 32 × 32 tile (I, J) and its mirror (J, I) in shared memory (rows
  padded to 33 words: no bank conflicts) and writes both, so reads and writes coalesce and in
  place is safe; blocks below the diagonal return at once.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np
from numba import cuda, prange

from ._checks import check_float_matrix
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
from ._cuda import array_module, block_row, check_out, cuda_kernel, empty, launch, row_grid
from ._fastmath import VECTORISING_FASTMATH, fast_exp, maxnum
from ._reduce import MAX_BLOCK_THREADS, block_reduce_pair, merge_softmax_partials, reduction_threads

EPS = 1e-12  # the smallest norm divided by, as torch.nn.functional.normalize
TILE = 32  # the symmetrisation's tile: 32 × 32 entries
TILE_THREADS = (TILE, 8)  # a warp along a tile row, 8 rows at a time
PADDED_TILE = TILE + 1  # a staged tile row's words: column reads then hit 32 different banks

# --------------------------------------------------------------------------- checks


def _check_embeddings(z: Any, op: str) -> None:
    check_float_matrix(z, "z", op)
    if z.shape[0] < 2 or z.shape[0] % 2:
        raise ValueError(
            f"{op}: z must hold 2N rows, N >= 1 (rows i and i + N are two views of one image), "
            f"got shape {tuple(z.shape)}"
        )


def _check_pair_matrix(matrix: Any, name: str, op: str) -> None:
    """A square (R, R) float matrix with R = 2N >= 2, C-contiguous (kernels write it in place)."""
    check_float_matrix(matrix, name, op)
    rows = matrix.shape[0]
    if matrix.shape != (rows, rows) or rows < 2 or rows % 2:
        raise ValueError(
            f"{op}: {name} must be square (2N, 2N) with N >= 1, got shape {tuple(matrix.shape)}"
        )
    if not matrix.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous (it is updated in place)")


def _check_temperature(inverse_temperature: float, op: str) -> float:
    inverse_temperature = float(inverse_temperature)
    if not (inverse_temperature > 0 and math.isfinite(inverse_temperature)):
        raise ValueError(
            f"{op}: the inverse temperature 1/T must be positive and finite, got "
            f"{inverse_temperature}"
        )
    return inverse_temperature


def _check_like(array: Any, name: str, like: Any, shape: tuple, op: str) -> Any:
    """``array``, C-contiguous, after checking its module, dtype and shape against ``like``."""
    xp = array_module(like)
    if array_module(array) is not xp:
        raise TypeError(f"{op}: {name} is a {type(array).__name__} but not a {xp.__name__} array")
    if tuple(array.shape) != shape or array.dtype != like.dtype:
        raise ValueError(
            f"{op}: {name} must be {like.dtype} of shape {shape}, got {array.dtype} of shape "
            f"{tuple(array.shape)}"
        )
    return xp.ascontiguousarray(array)


def _symmetrise_arguments(gradient: Any, row_weights: Any, out: Any) -> tuple[Any, bool, Any]:
    """(row weights or a one-element stand-in the kernels never read, weighted, out)."""
    op = "ntxent_symmetrise"
    _check_pair_matrix(gradient, "gradient", op)
    rows = gradient.shape[0]
    out = (
        empty(gradient.shape, gradient.dtype, like=gradient)
        if out is None
        else check_out(op, out, gradient.shape, gradient.dtype, gradient)
    )
    if row_weights is None:
        return gradient.reshape(-1)[:1], False, out
    return _check_like(row_weights, "row_weights", gradient, (rows,), op), True, out


def _normalize_backward_arguments(z: Any, dunits: Any, scale: Any) -> tuple[Any, Any, Any]:
    op = "ntxent_normalize_backward"
    _check_embeddings(z, op)
    z = array_module(z).ascontiguousarray(z)
    return (
        z,
        _check_like(dunits, "dunits", z, z.shape, op),
        _check_like(scale, "scale", z, (1,), op),
    )


# --------------------------------------------------------------------------- float64 references


def reference_ntxent_normalize(z: Any) -> np.ndarray:
    """u_i = z_i / max(‖z_i‖, ε) in float64."""
    z = np.asarray(z, np.float64)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), EPS)


def reference_ntxent_rows(similarity: Any, inverse_temperature: float) -> tuple[Any, Any]:
    """(row losses l (R,), G (R, R)) from the cosines C, by a log-softmax with the diagonal
    masked to −inf and the explicit one-hot target."""
    logits = np.asarray(similarity, np.float64) * inverse_temperature
    rows = logits.shape[0]
    np.fill_diagonal(logits, -np.inf)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    target = np.roll(np.eye(rows), rows // 2, axis=1)  # target[i, (i + N) mod R] = 1
    row_losses = -log_probs[target > 0]  # one positive a row, in row order
    return row_losses, (np.exp(log_probs) - target) * inverse_temperature


def reference_ntxent_symmetrise(gradient: Any, row_weights: Any = None) -> np.ndarray:
    """M = diag(w) G + (diag(w) G)ᵀ in float64 (w = 1 without weights)."""
    weighted = np.asarray(gradient, np.float64)
    if row_weights is not None:
        weighted = weighted * np.asarray(row_weights, np.float64)[:, None]
    return weighted + weighted.T


def reference_ntxent_normalize_backward(z: Any, dunits: Any, scale: Any) -> np.ndarray:
    """scale·Jᵢᵀ ∂L/∂u_i per row, with each row's explicit Jacobian J = ∂u/∂z: (I − u uᵀ)/‖z‖,
    or I/ε where the norm was clamped."""
    z = np.asarray(z, np.float64)
    dunits = np.asarray(dunits, np.float64)
    dz = np.empty_like(z)
    for row in range(z.shape[0]):
        norm = np.linalg.norm(z[row])
        if norm >= EPS:
            unit = z[row] / norm
            jacobian = (np.eye(z.shape[1]) - np.outer(unit, unit)) / norm
        else:
            jacobian = np.eye(z.shape[1]) / EPS
        dz[row] = jacobian.T @ dunits[row]
    return float(np.asarray(scale).reshape(-1)[0]) * dz


def reference_nt_xent(z: Any, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(row losses (R,), ∂(Σ_i l_i)/∂z (R, D)) in float64: the whole loss, composed of the
    references above with NumPy's products."""
    units = reference_ntxent_normalize(z)
    row_losses, gradient = reference_ntxent_rows(units @ units.T, 1.0 / temperature)
    dunits = reference_ntxent_symmetrise(gradient) @ units
    return row_losses, reference_ntxent_normalize_backward(z, dunits, np.ones(1))


# --------------------------------------------------------------------------- CPU


@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _normalize_rows(z, units):
    rows, width = z.shape
    for row in prange(rows):
        squares = 0.0
        for col in range(width):
            squares += np.float64(z[row, col]) * z[row, col]
        scale = z.dtype.type(1.0 / max(math.sqrt(squares), EPS))
        for col in range(width):
            units[row, col] = z[row, col] * scale


@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _loss_rows(similarity, inverse_temperature, row_losses):
    rows = similarity.shape[0]
    half = rows // 2
    as_dtype = similarity.dtype.type
    scale = as_dtype(inverse_temperature)
    for row in prange(rows):
        # Passes over the row in place, each a loop LLVM vectorises: the logits (the own
        # similarity −inf, so its exp is 0 and G_ii = 0 falls out), their max, the exps,
        # their float64 sum, the scaling into G.
        out = similarity[row]
        positive = row + half if row < half else row - half
        for col in range(rows):
            out[col] *= scale
        out[row] = -np.inf
        row_max = as_dtype(-np.inf)
        for col in range(rows):
            row_max = maxnum(row_max, out[col])
        positive_logit = out[positive]
        for col in range(rows):
            out[col] = fast_exp(out[col] - row_max)
        total = 0.0
        for col in range(rows):
            total += out[col]
        row_losses[row] = math.log(total) + row_max - positive_logit
        probability_scale = as_dtype(inverse_temperature / total)
        for col in range(rows):
            out[col] *= probability_scale
        out[positive] -= scale


@cpu_kernel
def _symmetrise_tiles(gradient, row_weights, weighted, out):
    rows = gradient.shape[0]
    tiles = -(-rows // TILE)
    one = gradient.dtype.type(1)
    # Iteration I takes the tile pairs (I, J ≥ I): no two iterations share an entry. Each pair is
    # staged whole in two local tiles before it is written (so ``out`` may be ``gradient``),
    # reading and writing only whole tile rows of the matrix: the transposition happens in the
    # local tiles, in L1, because walking a column of the matrix itself (a stride of a
    # power-of-two row) keeps evicting its own cache lines.
    for tile_i in prange(tiles):
        first_i = tile_i * TILE
        size_i = min(TILE, rows - first_i)
        tile = np.empty((TILE, TILE), gradient.dtype)
        mirror = np.empty((TILE, TILE), gradient.dtype)
        for tile_j in range(tile_i, tiles):
            first_j = tile_j * TILE
            size_j = min(TILE, rows - first_j)
            for a in range(size_i):  # tile[a, b] = w_i G_ij, i = I + a, j = J + b
                weight = row_weights[first_i + a] if weighted else one
                for b in range(size_j):
                    tile[a, b] = weight * gradient[first_i + a, first_j + b]
            for b in range(size_j):  # mirror[b, a] = w_j G_ji
                weight = row_weights[first_j + b] if weighted else one
                for a in range(size_i):
                    mirror[b, a] = weight * gradient[first_j + b, first_i + a]
            for a in range(size_i):
                for b in range(size_j):
                    tile[a, b] += mirror[b, a]
                    out[first_i + a, first_j + b] = tile[a, b]
            for b in range(size_j):
                for a in range(size_i):
                    out[first_j + b, first_i + a] = tile[a, b]


@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _normalize_backward_rows(z, dunits, scale, dz):
    rows, width = z.shape
    for row in prange(rows):
        squares = 0.0
        dot = 0.0
        for col in range(width):
            squares += np.float64(z[row, col]) * z[row, col]
            dot += np.float64(z[row, col]) * dunits[row, col]
        norm = math.sqrt(squares)
        if norm >= EPS:
            unit_coefficient = scale[0] / norm
            projection = unit_coefficient * dot / squares
        else:  # a clamped norm is a constant: no projection
            unit_coefficient = scale[0] / EPS
            projection = 0.0
        a = z.dtype.type(unit_coefficient)
        b = z.dtype.type(projection)
        for col in range(width):
            dz[row, col] = a * dunits[row, col] - b * z[row, col]


def ntxent_normalize_cpu(z: np.ndarray) -> np.ndarray:
    """The unit rows u_i = z_i / max(‖z_i‖, ε) of z (2N, D)."""
    _check_embeddings(z, "ntxent_normalize")
    z = np.ascontiguousarray(z)
    units = empty(z.shape, z.dtype, like=z)
    _normalize_rows(z.size, z, units)
    return units


def ntxent_rows_cpu(similarity: np.ndarray, inverse_temperature: float) -> np.ndarray:
    """The row losses l (2N,) from the cosines C = U Uᵀ; overwrites ``similarity`` with G."""
    _check_pair_matrix(similarity, "similarity", "ntxent_rows")
    inverse_temperature = _check_temperature(inverse_temperature, "ntxent_rows")
    row_losses = empty(similarity.shape[0], similarity.dtype, like=similarity)
    _loss_rows(similarity.size, similarity, inverse_temperature, row_losses)
    return row_losses


def ntxent_symmetrise_cpu(
    gradient: np.ndarray, row_weights: np.ndarray | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """M = diag(w) G + Gᵀ diag(w) (w = 1 without ``row_weights``), into ``out`` (which may be
    ``gradient``: in place) or a new array."""
    row_weights, weighted, out = _symmetrise_arguments(gradient, row_weights, out)
    _symmetrise_tiles(gradient.size, gradient, row_weights, weighted, out)
    return out


def ntxent_normalize_backward_cpu(
    z: np.ndarray, dunits: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """scale·∂L/∂z from ∂L/∂u (both (2N, D)) through u = z / max(‖z‖, ε); ``scale`` (1,)."""
    z, dunits, scale = _normalize_backward_arguments(z, dunits, scale)
    dz = empty(z.shape, z.dtype, like=z)
    _normalize_backward_rows(z.size, z, dunits, scale, dz)
    return dz


# --------------------------------------------------------------------------- CUDA


@cuda_kernel
def _normalize_kernel(z, units):
    scratch = cuda.shared.array((2, MAX_BLOCK_THREADS), z.dtype)
    row = block_row()
    if row >= z.shape[0]:  # a block past the last row (the whole block returns)
        return
    squares = z.dtype.type(0)
    for col in range(cuda.threadIdx.x, z.shape[1], cuda.blockDim.x):
        squares += z[row, col] * z[row, col]
    squares, _ = block_reduce_pair(scratch, squares, squares, False)
    scale = z.dtype.type(1) / max(math.sqrt(squares), z.dtype.type(EPS))
    for col in range(cuda.threadIdx.x, z.shape[1], cuda.blockDim.x):
        units[row, col] = z[row, col] * scale


@cuda_kernel
def _loss_rows_kernel(similarity, inverse_temperature, row_losses):
    scratch = cuda.shared.array((2, MAX_BLOCK_THREADS), similarity.dtype)
    row = block_row()
    rows = similarity.shape[0]
    if row >= rows:  # a block past the last row (the whole block returns)
        return
    as_dtype = similarity.dtype.type
    scale = as_dtype(inverse_temperature)
    half = rows // 2
    positive = row + half if row < half else row - half
    # Read before the barrier inside the reduction: after it, a thread overwrites this entry.
    positive_logit = similarity[row, positive] * scale
    running_max = as_dtype(-math.inf)
    running_sum = as_dtype(0)
    for col in range(cuda.threadIdx.x, rows, cuda.blockDim.x):
        if col != row:
            running_max, running_sum = merge_softmax_partials(
                running_max, running_sum, similarity[row, col] * scale, as_dtype(1)
            )
    row_max, row_sum = block_reduce_pair(scratch, running_max, running_sum, True)
    if cuda.threadIdx.x == 0:
        row_losses[row] = math.log(row_sum) + row_max - positive_logit
    probability_scale = scale / row_sum
    for col in range(cuda.threadIdx.x, rows, cuda.blockDim.x):
        gradient = as_dtype(0)
        if col != row:
            gradient = math.exp(similarity[row, col] * scale - row_max) * probability_scale
            if col == positive:
                gradient -= scale
        similarity[row, col] = gradient


@cuda_kernel
def _symmetrise_kernel(gradient, row_weights, weighted, out):
    # tile[a, b] = G[I + a, J + b] and mirror[a, b] = G[J + a, I + b], rows padded by one word
    tile = cuda.shared.array((TILE, PADDED_TILE), gradient.dtype)
    mirror = cuda.shared.array((TILE, PADDED_TILE), gradient.dtype)
    tile_row = cuda.blockIdx.y
    tile_col = cuda.blockIdx.x
    if tile_col < tile_row:  # below the diagonal: its mirror block writes it
        return
    rows = gradient.shape[0]
    first_i = tile_row * TILE
    first_j = tile_col * TILE
    lane = cuda.threadIdx.x
    one = gradient.dtype.type(1)
    for a in range(cuda.threadIdx.y, TILE, cuda.blockDim.y):
        if first_i + a < rows and first_j + lane < rows:
            tile[a, lane] = gradient[first_i + a, first_j + lane]
        if first_j + a < rows and first_i + lane < rows:
            mirror[a, lane] = gradient[first_j + a, first_i + lane]
    cuda.syncthreads()  # both tiles are read before either is written (in place is safe)
    for a in range(cuda.threadIdx.y, TILE, cuda.blockDim.y):
        i = first_i + a
        j = first_j + lane
        if i < rows and j < rows:  # out[i, j] = w_i G_ij + w_j G_ji
            weight_i = row_weights[i] if weighted else one
            weight_j = row_weights[j] if weighted else one
            out[i, j] = weight_i * tile[a, lane] + weight_j * mirror[lane, a]
        i = first_i + lane
        j = first_j + a
        if tile_row != tile_col and i < rows and j < rows:  # out[j, i], the same value
            weight_i = row_weights[i] if weighted else one
            weight_j = row_weights[j] if weighted else one
            out[j, i] = weight_i * tile[lane, a] + weight_j * mirror[a, lane]


@cuda_kernel
def _normalize_backward_kernel(z, dunits, scale, dz):
    scratch = cuda.shared.array((2, MAX_BLOCK_THREADS), z.dtype)
    row = block_row()
    if row >= z.shape[0]:  # a block past the last row (the whole block returns)
        return
    as_dtype = z.dtype.type
    squares = as_dtype(0)
    dot = as_dtype(0)
    for col in range(cuda.threadIdx.x, z.shape[1], cuda.blockDim.x):
        squares += z[row, col] * z[row, col]
        dot += z[row, col] * dunits[row, col]
    squares, dot = block_reduce_pair(scratch, squares, dot, False)
    norm = math.sqrt(squares)
    if norm >= as_dtype(EPS):
        unit_coefficient = scale[0] / norm
        projection = unit_coefficient * (dot / squares)
    else:  # a clamped norm is a constant: no projection
        unit_coefficient = scale[0] / as_dtype(EPS)
        projection = as_dtype(0)
    for col in range(cuda.threadIdx.x, z.shape[1], cuda.blockDim.x):
        dz[row, col] = unit_coefficient * dunits[row, col] - projection * z[row, col]


def ntxent_normalize_cuda(z: Any) -> Any:
    """:func:`ntxent_normalize_cpu` on the GPU (CuPy arrays) or in the simulator."""
    _check_embeddings(z, "ntxent_normalize")
    z = array_module(z).ascontiguousarray(z)
    units = empty(z.shape, z.dtype, like=z)
    launch(_normalize_kernel, row_grid(z.shape[0]), reduction_threads(z.shape[1]), z, units)
    return units


def ntxent_rows_cuda(similarity: Any, inverse_temperature: float) -> Any:
    """:func:`ntxent_rows_cpu` on the GPU (CuPy arrays) or in the simulator."""
    _check_pair_matrix(similarity, "similarity", "ntxent_rows")
    inverse_temperature = _check_temperature(inverse_temperature, "ntxent_rows")
    rows = similarity.shape[0]
    row_losses = empty(rows, similarity.dtype, like=similarity)
    launch(
        _loss_rows_kernel,
        row_grid(rows),
        reduction_threads(rows),
        similarity,
        inverse_temperature,
        row_losses,
    )
    return row_losses


def ntxent_symmetrise_cuda(gradient: Any, row_weights: Any = None, out: Any = None) -> Any:
    """:func:`ntxent_symmetrise_cpu` on the GPU (CuPy arrays) or in the simulator."""
    row_weights, weighted, out = _symmetrise_arguments(gradient, row_weights, out)
    tiles = -(-gradient.shape[0] // TILE)
    launch(_symmetrise_kernel, (tiles, tiles), TILE_THREADS, gradient, row_weights, weighted, out)
    return out


def ntxent_normalize_backward_cuda(z: Any, dunits: Any, scale: Any) -> Any:
    """:func:`ntxent_normalize_backward_cpu` on the GPU (CuPy arrays) or in the simulator."""
    z, dunits, scale = _normalize_backward_arguments(z, dunits, scale)
    dz = empty(z.shape, z.dtype, like=z)
    launch(
        _normalize_backward_kernel,
        row_grid(z.shape[0]),
        reduction_threads(z.shape[1]),
        z,
        dunits,
        scale,
        dz,
    )
    return dz


def cuda_kernels() -> list[KernelSpec]:
    """Every CUDA kernel of this module, specialised for float32, at the largest block used."""
    matrix = numba.float32[:, ::1]
    vector = numba.float32[::1]
    return [
        KernelSpec("ntxent_normalize", _normalize_kernel, (matrix, matrix), MAX_BLOCK_THREADS),
        KernelSpec(
            "ntxent_rows", _loss_rows_kernel, (matrix, numba.float64, vector), MAX_BLOCK_THREADS
        ),
        KernelSpec(
            "ntxent_symmetrise",
            _symmetrise_kernel,
            (matrix, vector, numba.boolean, matrix),
            TILE_THREADS,
        ),
        KernelSpec(
            "ntxent_normalize_backward",
            _normalize_backward_kernel,
            (matrix, matrix, vector, matrix),
            MAX_BLOCK_THREADS,
        ),
    ]


# --------------------------------------------------------------------------- benchmark cases


def plain_nt_xent(z: Any, temperature: float) -> tuple[Any, Any]:
    """(mean loss, its gradient w.r.t. z) as a NumPy user writes it (any array module with
    NumPy's API): normalise, similarities, masked log-softmax, the gradient by the chain rule."""
    xp = array_module(z)
    rows = z.shape[0]
    norms = xp.maximum(xp.sqrt((z * z).sum(axis=1, keepdims=True)), EPS)
    units = z / norms
    logits = units @ units.T / temperature
    logits[xp.arange(rows), xp.arange(rows)] = -xp.inf
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    positives = (xp.arange(rows) + rows // 2) % rows
    loss = (xp.log(sums[:, 0]) - shifted[xp.arange(rows), positives]).mean()
    gradient = exp / sums
    gradient[xp.arange(rows), positives] -= 1
    gradient /= rows * temperature
    dunits = (gradient + gradient.T) @ units
    dz = (dunits - units * (units * dunits).sum(axis=1, keepdims=True)) / norms
    return loss, dz


def _nt_xent_case(context: BenchContext, key: str, rows: int, width: int) -> Case:
    """Forward and backward of the mean loss: our kernels around the device's GEMMs (the same
    sequence as fastnet.functional.nt_xent_loss), against NumPy and PyTorch."""
    temperature = 0.5
    z = context.random((rows, width))
    ops = context.ops

    def ours() -> tuple:
        units = ops.ntxent_normalize(z)
        pairs = ops.matmul(units, units, False, True)
        loss = ops.ntxent_rows(pairs, 1.0 / temperature).mean()
        ops.ntxent_symmetrise(pairs, out=pairs)
        scale = context.xp.full(1, 1.0 / rows, np.float32)
        return loss, ops.ntxent_normalize_backward(z, ops.matmul(pairs, units), scale)

    implementations = {
        OURS: Implementation(ours),
        context.plain: Implementation(lambda: plain_nt_xent(z, temperature)),
    }
    torch = context.torch
    if torch:
        z_torch = torch.from_numpy(z).requires_grad_()
        positives = (torch.arange(rows) + rows // 2) % rows
        own = torch.eye(rows, dtype=torch.bool)

        def torch_loss_and_gradient() -> tuple:
            units = torch.nn.functional.normalize(z_torch, dim=1)
            logits = (units @ units.T / temperature).masked_fill(own, float("-inf"))
            loss = torch.nn.functional.cross_entropy(logits, positives)
            return (loss, *torch.autograd.grad(loss, z_torch))

        implementations["torch"] = Implementation(torch_loss_and_gradient)
    # two GEMMs of 2·R²·D flops; about 8 flops a similarity in the row passes
    info = CaseInfo(
        "nt_xent",
        f"{key} {rows}x{width}",
        4.0 * rows * rows * width + 8.0 * rows * rows,
        FLOAT32_BYTES * (4 * rows * rows + 5 * rows * width),
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """A SimCLR batch of 256 images (2N = 512 embeddings of 128 values; tiny with ``quick``)."""
    shapes = (("tiny", 6, 5),) if quick else (("b256.d128", 512, 128),)
    return [
        CaseSpec(
            "nt_xent",
            key,
            f"{rows}x{width}",
            functools.partial(_nt_xent_case, key=key, rows=rows, width=width),
            (OURS, "numpy", "torch"),
        )
        for key, rows, width in shapes
    ]


FAMILY = Family(
    name="contrastive",
    module=__name__,
    ops=("ntxent_normalize", "ntxent_rows", "ntxent_symmetrise", "ntxent_normalize_backward"),
    references={
        "ntxent_normalize": reference_ntxent_normalize,
        "ntxent_rows": reference_ntxent_rows,
        "ntxent_symmetrise": reference_ntxent_symmetrise,
        "ntxent_normalize_backward": reference_ntxent_normalize_backward,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
