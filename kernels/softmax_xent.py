"""Fused softmax + cross-entropy: row losses and the gradient of their mean, in one pass.

Math, for logits ``z`` (B, C), integer labels ``y`` (B,) and label smoothing ε in [0, 1):

* target distribution of row b:  q_c = (1 - ε)·[c = y_b] + ε / C
* row loss:  L_b = -Σ_c q_c · log softmax(z_b)_c
           = log Σ_c exp(z_bc - M_b) - (1 - ε)·(z_{b,y_b} - M_b) - ε·(mean_c z_bc - M_b),
  with M_b = max_c z_bc, so that no exponential overflows (logits of magnitude 1e4 are fine)
* gradient of the mean loss (1/B)·Σ_b L_b:  dz_bc = (softmax(z_b)_c - q_c) / B

Buffers: ``logits`` (B, C) float32 or float64; ``labels`` (B,) any integer dtype (made int64
for the GPU), each in [0, C); outputs ``row_losses`` (B,) and ``dlogits`` (B, C) in the logits'
dtype. Exponentials are taken in the logits' dtype; the sums over a row are accumulated in
float64 (on the CPU, wide rows sum in the logits' dtype over runs of ``SUM_RUN`` columns inside
the exp loop, and the runs in float64: a float64 sum there would halve the exp's vector width).

Variants, simplest first:

* ``reference_softmax_xent``: float64 NumPy through the explicit target matrix and log-softmax.
* ``softmax_xent_cpu``: Numba, in blocks of rows (of about ``BLOCK_ELEMENTS`` logits), serially or
  with blocks in parallel as ``_cpu.parallel_pays`` decides. Per row a max pass and a pass storing
  exp(z - M) in ``dlogits`` and summing it; rows narrower than ``WIDE_ROW`` store z - M instead and
  take their exp in one loop over the whole block, long enough to vectorise, then a pass for their
  sums. Then per row a pass that scales the exponentials into the gradient. The exp is
  ``_fastmath.fast_exp`` (a polynomial LLVM vectorises; ``math.exp`` is a libm call it cannot) and
  the max ``_fastmath.maxnum``; the loops compile with reassociation allowed, but not "nnan"/"ninf":
  a NaN or inf logit makes its row NaN, as in the reference.
* ``softmax_xent_cuda``: one block per row (blocks stride over rows when B exceeds the grid).
  Each thread walks its columns once, keeping an online (running max, sum of exponentials,
  sum of logits); one shared-memory tree merges the threads' triples; then every thread writes
  the gradient of its columns and thread 0 the row loss, in the same launch. The block has
  32 to 256 threads (a power of two, the fewest covering C), so small C runs as a warp per row.
  The merge uses shared memory (5 KB for float32) rather than warp shuffles, which Numba's
  simulator does not implement.

Label range: both variants check every label before computing anything, with one min/max
reduction: on the CPU in the jitted driver itself (which then returns the range for the caller to
raise on, and computes nothing when a label is out of range); on the GPU on the host before the
launch, which costs one device-to-host copy of two integers (a wait for the stream) per call. It
buys an exception at the faulty call, naming the label, instead of an error flag that could only
be read, and raised, at some later synchronisation. The CPU's two outputs are views of one
allocation.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np
from numba import cuda, prange
from numba.extending import register_jitable

from ._checks import check_float_dtype
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
from ._cuda import array_module, empty, launch, stride_grid
from ._fastmath import VECTORISING_FASTMATH, fast_exp, maxnum, zero_of

MAX_THREADS = 256


def _checked_inputs(logits: Any, labels: Any, label_smoothing: float) -> tuple[Any, Any]:
    """Validate all but the labels' range; return C-contiguous logits and labels."""
    xp = array_module(logits)
    if array_module(labels) is not xp:
        raise TypeError(
            f"labels is a {type(labels).__name__} but logits is a {type(logits).__name__}"
        )
    check_float_dtype(logits, "logits", "softmax_xent")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (batch, classes), got shape {logits.shape}")
    batch, classes = logits.shape
    if labels.shape != (batch,):
        raise ValueError(
            f"labels shape {labels.shape} does not match logits shape {logits.shape}: "
            f"expected ({batch},)"
        )
    if batch == 0 or classes == 0:
        raise ValueError(f"logits shape {logits.shape} needs at least one row and one class")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return xp.ascontiguousarray(logits), xp.ascontiguousarray(labels)


def _check_label_range(lowest: int, highest: int, classes: int) -> None:
    if lowest < 0 or highest >= classes:
        bad = lowest if lowest < 0 else highest
        raise ValueError(
            f"label {bad} is outside [0, {classes}) for logits with C={classes} classes"
        )


def _outputs(logits: Any) -> tuple[Any, Any]:
    """Uninitialised ``row_losses`` (B,) and ``dlogits`` (B, C) beside ``logits``: two views of
    one allocation (one allocation fewer a call, which shows on small batches: re-measure with
    ``fastnet bench --only softmax_xent``)."""
    batch, classes = logits.shape
    both = empty(batch * (classes + 1), logits.dtype, like=logits)
    return both[batch * classes :], both[: batch * classes].reshape(batch, classes)


def reference_softmax_xent(
    logits: Any, labels: Any, label_smoothing: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Row losses and the gradient of their mean, in float64, from the explicit target matrix."""
    z = np.array(logits, dtype=np.float64)
    batch, classes = z.shape
    shifted = z - z.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    target = np.full((batch, classes), label_smoothing / classes)
    target[np.arange(batch), np.asarray(labels)] += 1.0 - label_smoothing
    row_losses = -(target * log_probs).sum(axis=1)
    return row_losses, (np.exp(log_probs) - target) / batch


@register_jitable
def _gradient_terms(logits, label_smoothing):
    """The two row-independent terms of the gradient, in the logits' dtype:
    dz_c = exp(z_c - M) * prob_scale - smooth_term - [c = label] * target_term."""
    batch, classes = logits.shape
    as_dtype = logits.dtype.type
    return as_dtype(label_smoothing / (classes * batch)), as_dtype((1.0 - label_smoothing) / batch)


# error_model="numpy": Python's ZeroDivisionError checks on its divisions cost the CPU kernel
# a quarter of its time on short rows, and sum_exp >= 1 can never be zero.
@register_jitable(error_model="numpy")
def _row_loss_and_scale(logits, row, label, row_max, sum_exp, sum_logits, label_smoothing):
    """The row's loss and its prob_scale (in the logits' dtype), from its max and its two sums."""
    batch, classes = logits.shape
    loss = (
        math.log(sum_exp)
        - (1.0 - label_smoothing) * (logits[row, label] - row_max)
        - label_smoothing * (sum_logits / classes - row_max)
    )
    return loss, logits.dtype.type(1.0 / (sum_exp * batch))


# --------------------------------------------------------------------------- CPU

# Rows go in blocks of about this many logits, so that a block's logits and gradient stay in L1
# across its passes, and blocks are the unit of parallel work.
BLOCK_ELEMENTS = 2048
# Rows narrower than this are too short for a vector loop of their own: their exp waits for one
# loop over the whole block.
WIDE_ROW = 64
# A wide row's exponentials are summed in runs of this many columns, in the logits' dtype: with
# 8 lanes unrolled 4 times, each lane adds 8 terms before the run's sum joins a float64 total.
SUM_RUN = 256


@register_jitable
def _rows_per_block(classes):
    return max(1, BLOCK_ELEMENTS // classes)


@register_jitable(fastmath=VECTORISING_FASTMATH)
def _softmax_xent_block(logits, labels, label_smoothing, block, row_losses, dlogits):
    """The rows of one block, in passes over dlogits: per row its max M (kept in row_losses until
    the loss replaces it) and exp(z - M), or for narrow rows z - M and then one exp loop over the
    whole block; then per row the sums, the loss and the gradient."""
    batch, classes = logits.shape
    smooth_term, target_term = _gradient_terms(logits, label_smoothing)
    first = block * _rows_per_block(classes)
    last = min(first + _rows_per_block(classes), batch)
    wide_sums = np.empty(last - first)
    for row in range(first, last):
        z = logits[row]
        out = dlogits[row]
        row_max = z[0]
        for col in range(1, classes):
            row_max = maxnum(row_max, z[col])
        if classes >= WIDE_ROW:
            # The sum rides in the exp loop in the logits' dtype (a float64 sum would halve the
            # loop's vector width), over runs of SUM_RUN columns whose sums join a float64
            # total: each lane adds a few terms only, however wide the row. (Slices, not a
            # min()-bounded range: LLVM vectorises only the first.)
            sum_exp = 0.0
            for start in range(0, classes, SUM_RUN):
                run_z, run_out = z[start : start + SUM_RUN], out[start : start + SUM_RUN]
                run_sum = zero_of(out)
                for col in range(run_z.size):
                    value = fast_exp(run_z[col] - row_max)
                    run_out[col] = value
                    run_sum += value
                sum_exp += run_sum
            wide_sums[row - first] = sum_exp
        else:
            for col in range(classes):
                out[col] = z[col] - row_max
        row_losses[row] = row_max
    if classes < WIDE_ROW:
        exps = dlogits.reshape(dlogits.size)[first * classes : last * classes]
        for index in range(exps.size):
            exps[index] = fast_exp(exps[index])
    for row in range(first, last):
        z = logits[row]
        gradient = dlogits[row]
        if classes >= WIDE_ROW:
            sum_exp = wide_sums[row - first]
        else:
            sum_exp = 0.0
            for col in range(classes):
                sum_exp += gradient[col]
        sum_logits = 0.0
        if label_smoothing != 0.0:  # only the smoothing term needs the mean logit
            for col in range(classes):
                sum_logits += z[col]
        label = labels[row]
        row_losses[row], prob_scale = _row_loss_and_scale(
            logits, row, label, row_losses[row], sum_exp, sum_logits, label_smoothing
        )
        for col in range(classes):
            gradient[col] = gradient[col] * prob_scale - smooth_term
        gradient[label] -= target_term


@register_jitable
def _label_range_and_blocks(logits, labels):
    """(lowest label, highest label, blocks to compute): no blocks when a label is out of range."""
    lowest = highest = labels[0]
    for label in labels:
        lowest = min(lowest, label)
        highest = max(highest, label)
    valid = lowest >= 0 and highest < logits.shape[1]
    return lowest, highest, -(-logits.shape[0] // _rows_per_block(logits.shape[1])) if valid else 0


# The driver checks the labels first (one jitted call a step, not two) and computes nothing
# when one is out of range: the caller raises on the (lowest, highest) it returns.
@cpu_kernel
def _softmax_xent_blocks(logits, labels, label_smoothing, row_losses, dlogits):
    lowest, highest, blocks = _label_range_and_blocks(logits, labels)
    for block in prange(blocks):
        _softmax_xent_block(logits, labels, label_smoothing, block, row_losses, dlogits)
    return lowest, highest


def softmax_xent_cpu(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Row losses (B,) and the gradient of their mean w.r.t. ``logits`` (B, C)."""
    logits, labels = _checked_inputs(logits, labels, label_smoothing)
    row_losses, dlogits = _outputs(logits)
    label_range = _softmax_xent_blocks(
        logits.size, logits, labels, float(label_smoothing), row_losses, dlogits
    )
    _check_label_range(*label_range, logits.shape[1])
    return row_losses, dlogits


# --------------------------------------------------------------------------- CUDA


@cuda.jit
def _softmax_xent_cuda_kernel(logits, labels, label_smoothing, row_losses, dlogits):
    # One slot per thread for the tree merge; blockDim.x is a power of two <= MAX_THREADS.
    thread_maxima = cuda.shared.array(MAX_THREADS, dtype=logits.dtype)
    thread_sums_exp = cuda.shared.array(MAX_THREADS, dtype=numba.float64)
    thread_sums_logits = cuda.shared.array(MAX_THREADS, dtype=numba.float64)
    thread = cuda.threadIdx.x
    threads = cuda.blockDim.x
    batch, classes = logits.shape
    for row in range(cuda.blockIdx.x, batch, cuda.gridDim.x):
        # Every thread starts from the same real logit with zero mass, so a thread without
        # columns merges harmlessly and no -inf - -inf NaN can arise.
        running_max = logits[row, 0]
        sum_exp = 0.0
        sum_logits = 0.0
        for col in range(thread, classes, threads):
            z = logits[row, col]
            if z > running_max:
                sum_exp = sum_exp * math.exp(running_max - z) + 1.0
                running_max = z
            else:
                sum_exp += math.exp(z - running_max)
            sum_logits += z
        thread_maxima[thread] = running_max
        thread_sums_exp[thread] = sum_exp
        thread_sums_logits[thread] = sum_logits
        cuda.syncthreads()
        half = threads // 2
        while half > 0:
            if thread < half:
                mine = thread_maxima[thread]
                other = thread_maxima[thread + half]
                merged = max(mine, other)
                thread_sums_exp[thread] = thread_sums_exp[thread] * math.exp(
                    mine - merged
                ) + thread_sums_exp[thread + half] * math.exp(other - merged)
                thread_sums_logits[thread] += thread_sums_logits[thread + half]
                thread_maxima[thread] = merged
            cuda.syncthreads()
            half //= 2
        row_max = thread_maxima[0]
        label = labels[row]
        smooth_term, target_term = _gradient_terms(logits, label_smoothing)
        loss, prob_scale = _row_loss_and_scale(
            logits, row, label, row_max, thread_sums_exp[0], thread_sums_logits[0], label_smoothing
        )
        if thread == 0:
            row_losses[row] = loss
        for col in range(thread, classes, threads):
            gradient = math.exp(logits[row, col] - row_max) * prob_scale - smooth_term
            if col == label:
                gradient -= target_term
            dlogits[row, col] = gradient
        # Slot 0 must be read by every thread before the next row overwrites it.
        cuda.syncthreads()


def _threads_for(classes: int) -> int:
    return min(MAX_THREADS, max(32, 1 << (classes - 1).bit_length()))


def softmax_xent_cuda(logits: Any, labels: Any, label_smoothing: float = 0.0) -> tuple[Any, Any]:
    """:func:`softmax_xent_cpu` on the GPU (CuPy arrays), or in the simulator (NumPy arrays)."""
    logits, labels = _checked_inputs(logits, labels, label_smoothing)
    xp = array_module(logits)
    _check_label_range(*xp.stack((labels.min(), labels.max())).tolist(), logits.shape[1])
    labels = xp.ascontiguousarray(labels, dtype=np.int64)
    row_losses, dlogits = _outputs(logits)
    batch, classes = logits.shape
    launch(
        _softmax_xent_cuda_kernel,
        stride_grid(batch, 1),
        _threads_for(classes),
        logits,
        labels,
        float(label_smoothing),
        row_losses,
        dlogits,
    )
    return row_losses, dlogits


def cuda_kernels() -> list[KernelSpec]:
    """The CUDA kernel, specialised for float32 logits, with its largest block."""
    argtypes = (
        numba.float32[:, ::1],
        numba.int64[::1],
        numba.float64,
        numba.float32[::1],
        numba.float32[:, ::1],
    )
    return [KernelSpec("softmax_xent", _softmax_xent_cuda_kernel, argtypes, MAX_THREADS)]


# --------------------------------------------------------------------------- benchmark cases

LABEL_BYTES = 8  # the benchmark's labels are int64


def plain_softmax_xent(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(row losses, d mean loss / d logits) by a max-shifted softmax, as a NumPy user writes it
    (any array module with NumPy's API)."""
    xp = array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    rows = xp.arange(len(labels))
    row_losses = xp.log(sums[:, 0]) - shifted[rows, labels]
    dlogits = exp / sums
    dlogits[rows, labels] -= 1
    dlogits /= len(labels)
    return row_losses, dlogits


def _softmax_xent_case(context: BenchContext, key: str, batch: int, classes: int) -> Case:
    logits = context.xp.asarray(context.random((batch, classes)) * 8)
    labels_host = np.random.default_rng(2).integers(0, classes, batch)
    labels = context.xp.asarray(labels_host)

    def mean_and_gradient(result: tuple) -> tuple:
        return result[0].mean(), result[1]

    implementations = {
        OURS: Implementation(lambda: context.ops.softmax_xent(logits, labels), mean_and_gradient),
        context.plain: Implementation(
            lambda: plain_softmax_xent(logits, labels), mean_and_gradient
        ),
    }
    torch = context.torch
    if torch:
        logits_torch = torch.from_numpy(logits).requires_grad_()
        labels_torch = torch.from_numpy(labels_host)

        def torch_loss_and_gradient() -> tuple:
            loss = torch.nn.functional.cross_entropy(logits_torch, labels_torch)
            return (loss, *torch.autograd.grad(loss, logits_torch))

        implementations["torch"] = Implementation(torch_loss_and_gradient)
    size = batch * classes
    # per element: max, subtract, exp, sum, scale, subtract
    info = CaseInfo(
        "softmax_xent",
        f"{key} {batch}x{classes}",
        6.0 * size,
        FLOAT32_BYTES * (2 * size + batch) + LABEL_BYTES * batch,
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """MNIST's 10 classes at batch 256 and ImageNet's 1000 at batch 128 (tiny with ``quick``)."""
    shapes = (("tiny", 5, 7),) if quick else (("b256.c10", 256, 10), ("b128.c1000", 128, 1000))
    return [
        CaseSpec(
            "softmax_xent",
            key,
            f"{batch}x{classes}",
            functools.partial(_softmax_xent_case, key=key, batch=batch, classes=classes),
            (OURS, "numpy", "torch"),
        )
        for key, batch, classes in shapes
    ]


FAMILY = Family(
    name="softmax_xent",
    module=__name__,
    ops=("softmax_xent",),
    references={
        "softmax_xent": reference_softmax_xent,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
