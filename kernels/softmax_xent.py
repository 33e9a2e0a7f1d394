"""Fused softmax + cross-entropy: row losses and the gradient of their mean, in one pass.

Math, for logits ``z`` (B, C), integer labels ``y`` (B,), label smoothing ε in [0, 1], optional
class weights ``w`` (C,) (w_c = 1 without them) and an optional ``ignore_index``:

* target of row b:  q_bc = α_b·[c = y_b] + β_b·w_c,  with α_b = (1 - ε)·w_{y_b} and β_b = ε / C,
  and α_b = β_b = 0 for a row whose label is ``ignore_index`` (PyTorch's weighted, smoothed
  target; without weights and ignored rows q_b is the one-hot label smoothed by ε)
* row loss:  L_b = -Σ_c q_bc · log softmax(z_b)_c
           = m_b·log Σ_c exp(z_bc - M_b) - α_b·(z_{b,y_b} - M_b) - β_b·(Σ_c w_c·z_bc - W·M_b),
  with M_b = max_c z_bc (so that no exponential overflows: logits of magnitude 1e4 are fine),
  W = Σ_c w_c and the row's target mass m_b = Σ_c q_bc = α_b + β_b·W (1 without weights)
* gradient of the mean loss (1/B)·Σ_b L_b:  dz_bc = (m_b·softmax(z_b)_c - q_bc) / B

A weighted or ignored row is so a per-row scaling of the target, and the kernel stays one pass.
PyTorch's weighted mean divides by Σ_b w_{y_b} over the kept rows instead of B: the caller
rescales.

Buffers: ``logits`` (B, C) float32 or float64; ``labels`` (B,) any integer dtype (made int64
for the GPU), each in [0, C) unless it is ``ignore_index``; ``weight`` (C,) any float dtype (taken
in the logits' dtype) or None; outputs ``row_losses`` (B,) and ``dlogits`` (B, C) in the logits'
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
  a NaN or inf logit makes its row NaN, as in the reference. Weights add a loop of their own
  (Σ_c w_c·z_c, and the w_c term of the gradient) only when the row is smoothed; an ignored row
  writes zeros.
* ``softmax_xent_cuda``: one block per row (blocks stride over rows when B exceeds the grid).
  Each thread walks its columns once, keeping an online (running max, sum of exponentials,
  sum of weighted logits Σ w_c·z_c, sum of weights); one shared-memory tree merges the threads'
  quadruples; then every thread writes the gradient of its columns and thread 0 the row loss, in
  the same launch. The block has 32 to 256 threads (a power of two, the fewest covering C), so
  small C runs as a warp per row. The merge uses shared memory (7 KB for float32) rather than warp
  shuffles, which Numba's simulator does not implement. An ignored row (the same for every thread
  of its block, so no barrier diverges) writes zeros.

Soft targets (knowledge distillation), ``soft_target_xent(z, t, T)``: for student logits ``z``
and teacher logits ``t`` (B, C) and a temperature T > 0, p_b = softmax(t_b/T), q_b = softmax(z_b/T):

* row loss:  L_b = KL(p_b ‖ q_b) = Σ_c p_bc·(log p_bc - log q_bc) (the soft-target cross-entropy
  minus the teacher's entropy), = D_b/S_p - log S_p + log S_q with a_c = (t_c - max t)/T,
  b_c = (z_c - max z)/T, S_p = Σ exp(a_c), S_q = Σ exp(b_c), D_b = Σ exp(a_c)·(a_c - b_c)
* gradient of the mean loss w.r.t. z:  dz_bc = (q_bc - p_bc) / (T·B)

(the caller scales by α·T² for Hinton's distillation loss). Variants: ``reference_soft_target_xent``
(float64 through explicit log-softmaxes), ``soft_target_xent_cpu`` (Numba, rows in ``prange``, a
max pass and two passes, all in float64: distillation rows are short, and accuracy beats width),
``soft_target_xent_cuda`` (one block of 32..256 threads per row, a shared-memory tree for the two
maxima, then one for the three float64 sums, then the gradient, in one launch). Outputs in the
student's dtype; the teacher is taken in it.

Label range: both variants check every label but ``ignore_index`` before computing anything,
with one min/max reduction: on the CPU in the jitted driver itself (which then returns the range
for the caller to raise on, and computes nothing when a label is out of range); on the GPU on the
host before the launch, which costs one device-to-host copy of two integers (a wait for the
stream) per call. It buys an exception at the faulty call, naming the label, instead of an error
flag that could only be read, and raised, at some later synchronisation
(:class:`LabelOutOfRangeError`, an IndexError as PyTorch raises and a ValueError as this kernel
always did). The CPU's two outputs are views of one allocation.
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
from ._cuda import array_module, cuda_kernel, empty, launch, stride_grid
from ._fastmath import VECTORISING_FASTMATH, fast_exp, maxnum, zero_of

MAX_THREADS = 256


class LabelOutOfRangeError(IndexError, ValueError):
    """A label outside [0, C): an index out of bounds (PyTorch's IndexError), and a bad value."""


def _checked_inputs(
    logits: Any, labels: Any, label_smoothing: float, weight: Any
) -> tuple[Any, Any, Any, bool]:
    """Validate all but the labels' range; return C-contiguous logits and labels, the weights in
    the logits' dtype and whether there are any. Without weights the kernels get a one-element
    view of the logits in their place (never read): an array argument of the right type, for no
    allocation."""
    xp = array_module(logits)
    for name, array in (("labels", labels), ("weight", weight)):
        if array is not None and array_module(array) is not xp:
            raise TypeError(
                f"{name} is a {type(array).__name__} but logits is a {type(logits).__name__}"
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
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    logits = xp.ascontiguousarray(logits)
    if weight is None:
        return logits, xp.ascontiguousarray(labels), logits.reshape(-1)[:1], False
    if weight.dtype.kind != "f" or weight.shape != (classes,):
        raise ValueError(
            f"weight must be a float vector of the {classes} classes, got {weight.dtype} of "
            f"shape {tuple(weight.shape)}"
        )
    return logits, xp.ascontiguousarray(labels), xp.ascontiguousarray(weight, logits.dtype), True


def _ignoring(ignore_index: int | None) -> tuple[int, bool]:
    """The kernels' (ignore_index, ignoring) pair: an int64 argument and whether it counts."""
    return (0, False) if ignore_index is None else (int(ignore_index), True)


def _check_label_range(lowest: int, highest: int, classes: int) -> None:
    if lowest < 0 or highest >= classes:
        bad = lowest if lowest < 0 else highest
        raise LabelOutOfRangeError(
            f"label {bad} is out of bounds: outside [0, {classes}) for logits with C={classes} "
            "classes"
        )


def _outputs(logits: Any) -> tuple[Any, Any]:
    """Uninitialised ``row_losses`` (B,) and ``dlogits`` (B, C) beside ``logits``: two views of
    one allocation (one allocation fewer a call, which shows on small batches: re-measure with
    ``fastnet bench --only softmax_xent``)."""
    batch, classes = logits.shape
    both = empty(batch * (classes + 1), logits.dtype, like=logits)
    return both[batch * classes :], both[: batch * classes].reshape(batch, classes)


def reference_softmax_xent(
    logits: Any,
    labels: Any,
    label_smoothing: float = 0.0,
    weight: Any = None,
    ignore_index: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row losses and the gradient of their mean, in float64, from the explicit target matrix."""
    z = np.array(logits, dtype=np.float64)
    batch, classes = z.shape
    labels = np.asarray(labels)
    kept = np.flatnonzero(labels != ignore_index) if ignore_index is not None else np.arange(batch)
    class_weight = np.ones(classes) if weight is None else np.asarray(weight, np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    target = np.zeros((batch, classes))
    target[kept] = label_smoothing / classes * class_weight
    target[kept, labels[kept]] += (1.0 - label_smoothing) * class_weight[labels[kept]]
    row_losses = -(target * log_probs).sum(axis=1)
    mass = target.sum(axis=1, keepdims=True)
    return row_losses, (mass * np.exp(log_probs) - target) / batch


# error_model="numpy": Python's ZeroDivisionError checks on its divisions cost the CPU kernel
# a quarter of its time on short rows, and sum_exp >= 1 can never be zero.
@register_jitable(error_model="numpy")
def _row_loss_and_scale(
    logits, row, label, row_max, sum_exp, sum_weighted_logits, alpha, beta, weight_sum
):
    """The row's loss and its prob_scale m/(S·B) (in the logits' dtype), from its max, its sums
    S = Σ exp(z - M) and Σ w·z, and its target's coefficients α and β (module docstring)."""
    batch = logits.shape[0]
    mass = alpha + beta * weight_sum
    loss = (
        mass * math.log(sum_exp)
        - alpha * (logits[row, label] - row_max)
        - beta * (sum_weighted_logits - weight_sum * row_max)
    )
    return loss, logits.dtype.type(mass / (sum_exp * batch))


@register_jitable
def _label_coefficient(label, label_smoothing, weight, weighted):
    """α = (1 - ε)·w_label of a kept row."""
    if weighted:
        return (1.0 - label_smoothing) * weight[label]
    return 1.0 - label_smoothing


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
def _softmax_xent_block(
    logits,
    labels,
    label_smoothing,
    weight,
    weighted,
    weight_sum,
    ignore_index,
    ignoring,
    block,
    row_losses,
    dlogits,
):
    """The rows of one block, in passes over dlogits: per row its max M (kept in row_losses until
    the loss replaces it) and exp(z - M), or for narrow rows z - M and then one exp loop over the
    whole block; then per row the sums, the loss and the gradient."""
    batch, classes = logits.shape
    as_dtype = logits.dtype.type
    beta = label_smoothing / classes
    smooth_term = as_dtype(beta / batch)
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
        label = labels[row]
        if ignoring and label == ignore_index:
            row_losses[row] = 0.0
            gradient[:] = 0.0
            continue
        if classes >= WIDE_ROW:
            sum_exp = wide_sums[row - first]
        else:
            sum_exp = 0.0
            for col in range(classes):
                sum_exp += gradient[col]
        sum_weighted_logits = 0.0
        if label_smoothing != 0.0:  # only the smoothing term needs Σ w·z
            if weighted:
                for col in range(classes):
                    sum_weighted_logits += weight[col] * z[col]
            else:
                for col in range(classes):
                    sum_weighted_logits += z[col]
        alpha = _label_coefficient(label, label_smoothing, weight, weighted)
        row_losses[row], prob_scale = _row_loss_and_scale(
            logits,
            row,
            label,
            row_losses[row],
            sum_exp,
            sum_weighted_logits,
            alpha,
            beta,
            weight_sum,
        )
        if weighted and label_smoothing != 0.0:
            for col in range(classes):
                gradient[col] = gradient[col] * prob_scale - smooth_term * weight[col]
        else:
            for col in range(classes):
                gradient[col] = gradient[col] * prob_scale - smooth_term
        gradient[label] -= as_dtype(alpha / batch)


@register_jitable
def _label_range_and_blocks(logits, labels, ignore_index, ignoring):
    """(lowest label, highest label, blocks to compute) over the labels that are not ignored (0
    stands for none: it is in range): no blocks when a label is out of range."""
    lowest = highest = zero_of(labels)
    for label in labels:
        if not (ignoring and label == ignore_index):
            lowest = min(lowest, label)
            highest = max(highest, label)
    valid = lowest >= 0 and highest < logits.shape[1]
    return lowest, highest, -(-logits.shape[0] // _rows_per_block(logits.shape[1])) if valid else 0


# The driver checks the labels first (one jitted call a step, not two) and computes nothing
# when one is out of range: the caller raises on the (lowest, highest) it returns.
@cpu_kernel
def _softmax_xent_blocks(
    logits, labels, label_smoothing, weight, weighted, ignore_index, ignoring, row_losses, dlogits
):
    lowest, highest, blocks = _label_range_and_blocks(logits, labels, ignore_index, ignoring)
    weight_sum = 0.0
    if weighted:
        for value in weight:
            weight_sum += value
    else:
        weight_sum = float(logits.shape[1])
    for block in prange(blocks):
        _softmax_xent_block(
            logits,
            labels,
            label_smoothing,
            weight,
            weighted,
            weight_sum,
            ignore_index,
            ignoring,
            block,
            row_losses,
            dlogits,
        )
    return lowest, highest


def softmax_xent_cpu(
    logits: np.ndarray,
    labels: np.ndarray,
    label_smoothing: float = 0.0,
    weight: np.ndarray | None = None,
    ignore_index: int | None = None,
    label_range: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row losses (B,) and the gradient of their mean w.r.t. ``logits`` (B, C).

    ``label_range``: the (lowest, highest) kept label when the caller has proven it; the CPU kernel
    finds the range in the same pass at no cost and checks that instead."""
    logits, labels, weight, weighted = _checked_inputs(logits, labels, label_smoothing, weight)
    row_losses, dlogits = _outputs(logits)
    label_range = _softmax_xent_blocks(
        logits.size,
        logits,
        labels,
        float(label_smoothing),
        weight,
        weighted,
        *_ignoring(ignore_index),
        row_losses,
        dlogits,
    )
    _check_label_range(*label_range, logits.shape[1])
    return row_losses, dlogits


# --------------------------------------------------------------------------- CUDA


@cuda_kernel
def _softmax_xent_cuda_kernel(
    logits, labels, label_smoothing, weight, weighted, ignore_index, ignoring, row_losses, dlogits
):
    # One slot per thread for the tree merge; blockDim.x is a power of two <= MAX_THREADS.
    thread_maxima = cuda.shared.array(MAX_THREADS, dtype=logits.dtype)
    thread_sums_exp = cuda.shared.array(MAX_THREADS, dtype=numba.float64)
    thread_sums_logits = cuda.shared.array(MAX_THREADS, dtype=numba.float64)
    thread_sums_weights = cuda.shared.array(MAX_THREADS, dtype=numba.float64)
    thread = cuda.threadIdx.x
    threads = cuda.blockDim.x
    batch, classes = logits.shape
    as_dtype = logits.dtype.type
    beta = label_smoothing / classes
    for row in range(cuda.blockIdx.x, batch, cuda.gridDim.x):
        label = labels[row]
        if ignoring and label == ignore_index:  # the whole block skips the row: no barrier
            if thread == 0:
                row_losses[row] = 0.0
            for col in range(thread, classes, threads):
                dlogits[row, col] = 0.0
            continue
        if label < 0 or label >= classes:  # a range proven wrong: NaN, never a stray read
            if thread == 0:
                row_losses[row] = math.nan
            for col in range(thread, classes, threads):
                dlogits[row, col] = math.nan
            continue
        # Every thread starts from the same real logit with zero mass, so a thread without
        # columns merges harmlessly and no -inf - -inf NaN can arise.
        running_max = logits[row, 0]
        sum_exp = 0.0
        sum_logits = 0.0
        sum_weights = 0.0
        for col in range(thread, classes, threads):
            z = logits[row, col]
            if z > running_max:
                sum_exp = sum_exp * math.exp(running_max - z) + 1.0
                running_max = z
            else:
                sum_exp += math.exp(z - running_max)
            if weighted:
                sum_logits += weight[col] * z
                sum_weights += weight[col]
            else:
                sum_logits += z
                sum_weights += 1.0
        thread_maxima[thread] = running_max
        thread_sums_exp[thread] = sum_exp
        thread_sums_logits[thread] = sum_logits
        thread_sums_weights[thread] = sum_weights
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
                thread_sums_weights[thread] += thread_sums_weights[thread + half]
                thread_maxima[thread] = merged
            cuda.syncthreads()
            half //= 2
        row_max = thread_maxima[0]
        alpha = _label_coefficient(label, label_smoothing, weight, weighted)
        loss, prob_scale = _row_loss_and_scale(
            logits,
            row,
            label,
            row_max,
            thread_sums_exp[0],
            thread_sums_logits[0],
            alpha,
            beta,
            thread_sums_weights[0],
        )
        if thread == 0:
            row_losses[row] = loss
        smooth_term = as_dtype(beta / batch)
        target_term = as_dtype(alpha / batch)
        for col in range(thread, classes, threads):
            gradient = math.exp(logits[row, col] - row_max) * prob_scale
            if weighted:
                gradient -= smooth_term * weight[col]
            else:
                gradient -= smooth_term
            if col == label:
                gradient -= target_term
            dlogits[row, col] = gradient
        # Slot 0 must be read by every thread before the next row overwrites it.
        cuda.syncthreads()


def _threads_for(classes: int) -> int:
    return min(MAX_THREADS, max(32, 1 << (classes - 1).bit_length()))


def softmax_xent_cuda(
    logits: Any,
    labels: Any,
    label_smoothing: float = 0.0,
    weight: Any = None,
    ignore_index: int | None = None,
    label_range: tuple[int, int] | None = None,
) -> tuple[Any, Any]:
    """:func:`softmax_xent_cpu` on the GPU (CuPy arrays), or in the simulator (NumPy arrays).

    With ``label_range`` (the kept labels' (lowest, highest), proven by the caller) the check
    needs nothing from the device; without it the range is read back, which waits for the GPU.
    A label outside [0, C) that reaches the kernel anyway gives its row a NaN loss and gradient."""
    logits, labels, weight, weighted = _checked_inputs(logits, labels, label_smoothing, weight)
    xp = array_module(logits)
    ignore_index, ignoring = _ignoring(ignore_index)
    if label_range is None and labels.size:
        checked = xp.where(labels == ignore_index, 0, labels) if ignoring else labels
        label_range = xp.stack((checked.min(), checked.max())).tolist()
    if label_range is not None:
        _check_label_range(*label_range, logits.shape[1])
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
        weight,
        weighted,
        ignore_index,
        ignoring,
        row_losses,
        dlogits,
    )
    return row_losses, dlogits


# --------------------------------------------------------------------------- soft targets


def _checked_soft_inputs(student: Any, teacher: Any, temperature: float) -> tuple[Any, Any, float]:
    """C-contiguous student logits, the teacher's in the student's dtype, and 1/T as a float."""
    xp = array_module(student)
    if array_module(teacher) is not xp:
        raise TypeError(
            f"teacher_logits is a {type(teacher).__name__} but student_logits is a "
            f"{type(student).__name__}"
        )
    check_float_dtype(student, "student_logits", "soft_target_xent")
    check_float_dtype(teacher, "teacher_logits", "soft_target_xent")
    if student.ndim != 2 or student.shape[0] == 0 or student.shape[1] == 0:
        raise ValueError(
            f"soft_target_xent: student_logits must be 2-D (batch, classes) with at least one "
            f"row and one class, got shape {tuple(student.shape)}"
        )
    if teacher.shape != student.shape:
        raise ValueError(
            f"soft_target_xent: teacher_logits shape {tuple(teacher.shape)} does not match "
            f"student_logits shape {tuple(student.shape)}"
        )
    temperature = float(temperature)
    if not (temperature > 0.0 and math.isfinite(temperature)):
        raise ValueError(f"soft_target_xent: temperature must be > 0 and finite, got {temperature}")
    return (
        xp.ascontiguousarray(student),
        xp.ascontiguousarray(teacher, dtype=student.dtype),
        1.0 / temperature,
    )


def reference_soft_target_xent(
    student_logits: Any, teacher_logits: Any, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Row losses KL(p_b ‖ q_b) and the gradient of their mean, in float64, through explicit
    log-softmaxes: p = softmax(t/T), q = softmax(z/T), dz = (q - p) / (T·B)."""
    z = np.array(student_logits, dtype=np.float64) / temperature
    t = np.array(teacher_logits, dtype=np.float64) / temperature

    def log_softmax(x: np.ndarray) -> np.ndarray:
        shifted = x - x.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    log_p, log_q = log_softmax(t), log_softmax(z)
    p = np.exp(log_p)
    row_losses = (p * (log_p - log_q)).sum(axis=1)
    return row_losses, (np.exp(log_q) - p) / (temperature * z.shape[0])


@cpu_kernel
def _soft_target_rows(student, teacher, inverse_t, row_losses, dlogits):
    batch, classes = student.shape
    scale = inverse_t / batch
    for row in prange(batch):
        z = student[row]
        t = teacher[row]
        gradient = dlogits[row]
        max_z = z[0]
        max_t = t[0]
        for col in range(1, classes):
            max_z = max(max_z, z[col])
            max_t = max(max_t, t[col])
        sum_p = 0.0
        sum_q = 0.0
        weighted = 0.0  # Σ exp(a - A)·(a - b), a = t/T and b = z/T shifted by their maxima
        for col in range(classes):
            a = (np.float64(t[col]) - max_t) * inverse_t
            b = (np.float64(z[col]) - max_z) * inverse_t
            e_p = math.exp(a)
            sum_p += e_p
            sum_q += math.exp(b)
            weighted += e_p * (a - b)
        row_losses[row] = weighted / sum_p - math.log(sum_p) + math.log(sum_q)
        p_scale = scale / sum_p
        q_scale = scale / sum_q
        for col in range(classes):
            a = (np.float64(t[col]) - max_t) * inverse_t
            b = (np.float64(z[col]) - max_z) * inverse_t
            gradient[col] = math.exp(b) * q_scale - math.exp(a) * p_scale


def soft_target_xent_cpu(
    student_logits: np.ndarray, teacher_logits: np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Row losses KL(softmax(t/T) ‖ softmax(z/T)) (B,) and the gradient of their mean w.r.t. the
    student's logits (B, C), (q - p)/(T·B), in one call; the math in float64."""
    student, teacher, inverse_t = _checked_soft_inputs(student_logits, teacher_logits, temperature)
    row_losses, dlogits = _outputs(student)
    _soft_target_rows(student.size, student, teacher, inverse_t, row_losses, dlogits)
    return row_losses, dlogits


@cuda_kernel
def _soft_target_cuda_kernel(student, teacher, inverse_t, row_losses, dlogits):
    # Maxima in the logits' dtype, then the three sums in float64, each by a shared-memory tree.
    maxima = cuda.shared.array((2, MAX_THREADS), dtype=student.dtype)
    sums = cuda.shared.array((3, MAX_THREADS), dtype=numba.float64)
    thread = cuda.threadIdx.x
    threads = cuda.blockDim.x
    batch, classes = student.shape
    scale = inverse_t / batch
    for row in range(cuda.blockIdx.x, batch, cuda.gridDim.x):
        max_z = student[row, 0]
        max_t = teacher[row, 0]
        for col in range(thread, classes, threads):
            max_z = max(max_z, student[row, col])
            max_t = max(max_t, teacher[row, col])
        maxima[0, thread] = max_z
        maxima[1, thread] = max_t
        cuda.syncthreads()
        half = threads // 2
        while half > 0:
            if thread < half:
                maxima[0, thread] = max(maxima[0, thread], maxima[0, thread + half])
                maxima[1, thread] = max(maxima[1, thread], maxima[1, thread + half])
            cuda.syncthreads()
            half //= 2
        max_z = maxima[0, 0]
        max_t = maxima[1, 0]
        sum_p = 0.0
        sum_q = 0.0
        weighted = 0.0
        for col in range(thread, classes, threads):
            a = (numba.float64(teacher[row, col]) - max_t) * inverse_t
            b = (numba.float64(student[row, col]) - max_z) * inverse_t
            e_p = math.exp(a)
            sum_p += e_p
            sum_q += math.exp(b)
            weighted += e_p * (a - b)
        sums[0, thread] = sum_p
        sums[1, thread] = sum_q
        sums[2, thread] = weighted
        cuda.syncthreads()
        half = threads // 2
        while half > 0:
            if thread < half:
                sums[0, thread] += sums[0, thread + half]
                sums[1, thread] += sums[1, thread + half]
                sums[2, thread] += sums[2, thread + half]
            cuda.syncthreads()
            half //= 2
        sum_p = sums[0, 0]
        sum_q = sums[1, 0]
        if thread == 0:
            row_losses[row] = sums[2, 0] / sum_p - math.log(sum_p) + math.log(sum_q)
        p_scale = scale / sum_p
        q_scale = scale / sum_q
        for col in range(thread, classes, threads):
            a = (numba.float64(teacher[row, col]) - max_t) * inverse_t
            b = (numba.float64(student[row, col]) - max_z) * inverse_t
            dlogits[row, col] = math.exp(b) * q_scale - math.exp(a) * p_scale
        # Slot 0 of both trees must be read by every thread before the next row overwrites it.
        cuda.syncthreads()


def soft_target_xent_cuda(
    student_logits: Any, teacher_logits: Any, temperature: float = 1.0
) -> tuple[Any, Any]:
    """:func:`soft_target_xent_cpu` on the GPU (CuPy arrays), or in the simulator (NumPy
    arrays): one block of 32 to 256 threads per row, blocks striding over the rows."""
    student, teacher, inverse_t = _checked_soft_inputs(student_logits, teacher_logits, temperature)
    row_losses, dlogits = _outputs(student)
    batch, classes = student.shape
    launch(
        _soft_target_cuda_kernel,
        stride_grid(batch, 1),
        _threads_for(classes),
        student,
        teacher,
        inverse_t,
        row_losses,
        dlogits,
    )
    return row_losses, dlogits


def cuda_kernels() -> list[KernelSpec]:
    """The CUDA kernels, specialised for float32 logits, with their largest block."""
    argtypes = (
        numba.float32[:, ::1],
        numba.int64[::1],
        numba.float64,
        numba.float32[::1],
        numba.boolean,
        numba.int64,
        numba.boolean,
        numba.float32[::1],
        numba.float32[:, ::1],
    )
    soft_argtypes = (
        numba.float32[:, ::1],
        numba.float32[:, ::1],
        numba.float64,
        numba.float32[::1],
        numba.float32[:, ::1],
    )
    return [
        KernelSpec("softmax_xent", _softmax_xent_cuda_kernel, argtypes, MAX_THREADS),
        KernelSpec("soft_target_xent", _soft_target_cuda_kernel, soft_argtypes, MAX_THREADS),
    ]


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


def _soft_target_case(context: BenchContext, key: str, batch: int, classes: int) -> Case:
    student = context.xp.asarray(context.random((batch, classes)) * 8)
    teacher = context.xp.asarray(context.random((batch, classes), seed=1) * 8)
    temperature = 4.0

    def mean_and_gradient(result: tuple) -> tuple:
        return result[0].mean(), result[1]

    def plain() -> tuple:  # two log-softmaxes, as a NumPy user writes it
        xp = context.xp
        scaled_z, scaled_t = student / temperature, teacher / temperature
        log_q = scaled_z - scaled_z.max(axis=1, keepdims=True)
        log_q -= xp.log(xp.exp(log_q).sum(axis=1, keepdims=True))
        log_p = scaled_t - scaled_t.max(axis=1, keepdims=True)
        log_p -= xp.log(xp.exp(log_p).sum(axis=1, keepdims=True))
        p = xp.exp(log_p)
        return (p * (log_p - log_q)).sum(axis=1), (xp.exp(log_q) - p) / (temperature * batch)

    implementations = {
        OURS: Implementation(
            lambda: context.ops.soft_target_xent(student, teacher, temperature), mean_and_gradient
        ),
        context.plain: Implementation(plain, mean_and_gradient),
    }
    torch = context.torch
    if torch:
        student_torch = torch.from_numpy(student).requires_grad_()
        teacher_torch = torch.from_numpy(teacher)

        def torch_loss_and_gradient() -> tuple:
            loss = torch.nn.functional.kl_div(
                torch.log_softmax(student_torch / temperature, 1),
                torch.softmax(teacher_torch / temperature, 1),
                reduction="batchmean",
            )
            return (loss, *torch.autograd.grad(loss, student_torch))

        implementations["torch"] = Implementation(torch_loss_and_gradient)
    size = batch * classes
    # per element: two maxima, two scalings, two exps, three sums, two more exps, the gradient
    info = CaseInfo(
        "soft_target_xent",
        f"{key} {batch}x{classes}",
        14.0 * size,
        FLOAT32_BYTES * (3 * size + batch),
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """MNIST's 10 classes at batch 256 and ImageNet's 1000 at batch 128 (tiny with ``quick``),
    for the hard-label and the soft-target (distillation) ops."""
    shapes = (("tiny", 5, 7),) if quick else (("b256.c10", 256, 10), ("b128.c1000", 128, 1000))
    return [
        CaseSpec(
            name,
            key,
            f"{batch}x{classes}",
            functools.partial(build, key=key, batch=batch, classes=classes),
            (OURS, "numpy", "torch"),
        )
        for name, build in (
            ("softmax_xent", _softmax_xent_case),
            ("soft_target_xent", _soft_target_case),
        )
        for key, batch, classes in shapes
    ]


FAMILY = Family(
    name="softmax_xent",
    module=__name__,
    ops=("softmax_xent", "soft_target_xent"),
    references={
        "softmax_xent": reference_softmax_xent,
        "soft_target_xent": reference_soft_target_xent,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
