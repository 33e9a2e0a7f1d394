"""Fused softmax + cross-entropy kernels against the float64 reference.

Float32 tolerance: each row loss is a log of a sum of exponentials minus two float32 differences
(the CPU sums wide rows in float32 runs of 256 columns, where each vector lane adds about 8 terms,
then the runs in float64; the GPU sums in float64), and each gradient element is one float32 exp
times one scale, so both sit within a few float32 ulps (~1e-7) of the reference relative to the
largest value; 2e-6 leaves room and still catches a wrong term (e.g. smoothing mass 0.1/C ≈ 1e-4
of a gradient of size ~1/B): ``FLOAT32_TOLERANCE``. Float64 runs at the shared 1e-12.

The CPU kernel works in blocks of rows (about 2048 logits each) and has a serial and a parallel
driver (``_cpu``'s policy picks one); rows narrower than 64 classes take their exp in one loop over
the block. The shapes below cover a single row, narrow and wide rows, several blocks with a partial
last one, both entries, and a row of 4097 classes (16 runs of 256 and one of 1).

Class weights and ``ignore_index`` (PyTorch's weighted, smoothed targets; an ignored row has
zero loss and gradient) run on both variants with and without smoothing, narrow and wide rows; the
reference itself is held to PyTorch's ``cross_entropy(reduction="none")``.

CUDA tests run in Numba's simulator (see conftest), so they use few rows: the launcher runs a
block of 32..256 threads per row and at most 2 blocks, so B=3..5 rows also exercises the loop of
blocks over rows, and C=1000 (256 threads) the loop of threads over columns.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels.softmax_xent import (
    LabelOutOfRangeError,
    reference_softmax_xent,
    softmax_xent_cpu,
    softmax_xent_cuda,
)
from numerics import assert_close, relative_error

# Tighter than the shared float32 bound: see the module docstring.
FLOAT32_TOLERANCE = 2e-6
VARIANTS = [softmax_xent_cpu, softmax_xent_cuda]


def problem(rng, batch, classes, dtype=np.float32, scale=1.0, label_dtype=np.int64):
    logits = (scale * rng.standard_normal((batch, classes))).astype(dtype)
    labels = rng.integers(0, classes, batch).astype(label_dtype)
    return logits, labels


def assert_matches_reference(kernel, logits, labels, label_smoothing=0.0, **targets):
    row_losses, dlogits = kernel(logits, labels, label_smoothing, **targets)
    ref_losses, ref_dlogits = reference_softmax_xent(logits, labels, label_smoothing, **targets)
    tolerance = FLOAT32_TOLERANCE if logits.dtype == np.float32 else None
    assert_close(row_losses, ref_losses, logits.dtype, tolerance, "row losses")
    assert_close(dlogits, ref_dlogits, logits.dtype, tolerance, "dlogits")


# --- reference -----------------------------------------------------------------------------------


def test_reference_on_hand_computed_rows():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    losses, dlogits = reference_softmax_xent(logits, np.array([0, 1]))
    np.testing.assert_allclose(losses, [np.log(2.0), np.log(4.0)])
    # softmax rows (1/2, 1/2) and (3/4, 1/4), minus the one-hot targets, over B = 2
    np.testing.assert_allclose(dlogits, [[-0.25, 0.25], [0.375, -0.375]])
    smoothed, _ = reference_softmax_xent(logits, np.array([0, 1]), label_smoothing=0.5)
    # targets (3/4, 1/4) and (1/4, 3/4)
    np.testing.assert_allclose(
        smoothed, [np.log(2.0), -(0.25 * np.log(0.75) + 0.75 * np.log(0.25))]
    )


def weighted_targets(rng, labels, classes, ignore_index=-100):
    """Class weights in [0.5, 1.5) and ``ignore_index`` on the second and last labels."""
    labels = labels.copy()
    labels[1 :: max(1, len(labels) - 2)] = ignore_index
    weight = rng.uniform(0.5, 1.5, classes)
    return labels, {"weight": weight, "ignore_index": ignore_index}


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_reference_matches_torch_with_weights_and_ignored_rows(rng, label_smoothing):
    torch = pytest.importorskip("torch")
    logits, labels = problem(rng, 6, 5, np.float64, scale=2.0)
    labels, targets = weighted_targets(rng, labels, 5)
    losses, _ = reference_softmax_xent(logits, labels, label_smoothing, **targets)
    expected = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits),
        torch.from_numpy(labels),
        torch.from_numpy(targets["weight"]),
        ignore_index=-100,
        reduction="none",
        label_smoothing=label_smoothing,
    )
    assert relative_error(losses, expected.numpy()) <= 1e-12
    assert (losses[[1, 5]] == 0).all()


@pytest.mark.parametrize("kernel", [reference_softmax_xent, softmax_xent_cpu])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_matches_finite_differences_of_the_reference_mean_loss(
    rng, kernel, label_smoothing, weighted
):
    logits, labels = problem(rng, 4, 5, np.float64, scale=2.0)
    targets = {}
    if weighted:
        labels, targets = weighted_targets(rng, labels, 5, ignore_index=3)
    _, dlogits = kernel(logits, labels, label_smoothing, **targets)
    step = 1e-6
    numeric = np.empty_like(logits)
    for index in np.ndindex(logits.shape):
        shifted = [logits.copy(), logits.copy()]
        shifted[0][index] += step
        shifted[1][index] -= step
        plus, minus = (
            reference_softmax_xent(z, labels, label_smoothing, **targets)[0].mean() for z in shifted
        )
        numeric[index] = (plus - minus) / (2 * step)
    assert relative_error(dlogits, numeric) <= 1e-7


# --- CPU -----------------------------------------------------------------------------------------


@pytest.fixture(params=["serial", "parallel"])
def cpu_entry(force_driver, request):
    """Run the CPU kernel through its serial or its parallel driver, whatever the size."""
    force_driver(request.param)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize(
    "batch, classes", [(1, 5), (37, 7), (3, 1000), (37, 100), (301, 7), (5, 63), (5, 64), (2, 4097)]
)
def test_cpu_matches_reference(rng, cpu_entry, batch, classes, label_smoothing, dtype):
    assert_matches_reference(
        softmax_xent_cpu, *problem(rng, batch, classes, dtype), label_smoothing
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("batch, classes", [(1, 5), (37, 7), (3, 1000), (301, 7), (2, 4097)])
def test_cpu_with_weights_and_ignored_rows_matches_reference(
    rng, cpu_entry, batch, classes, label_smoothing, dtype
):
    logits, labels = problem(rng, batch, classes, dtype)
    labels, targets = weighted_targets(rng, labels, classes)
    assert_matches_reference(softmax_xent_cpu, logits, labels, label_smoothing, **targets)


@pytest.mark.parametrize("label_dtype", [np.uint8, np.int32, np.int64])
def test_cpu_ignores_any_index_in_any_label_dtype(rng, label_dtype):
    """The ignored label may lie outside [0, C) (PyTorch's -100, or 255 in uint8 labels) and is
    never read as an index; an unsigned label never equals a negative ignore_index."""
    logits, labels = problem(rng, 9, 7, label_dtype=label_dtype)
    ignore_index = 100 if label_dtype == np.uint8 else -100
    labels[[0, 4]] = ignore_index
    row_losses, dlogits = softmax_xent_cpu(logits, labels, 0.1, ignore_index=ignore_index)
    assert (row_losses[[0, 4]] == 0).all() and (dlogits[[0, 4]] == 0).all()
    assert_matches_reference(softmax_xent_cpu, logits, labels, 0.1, ignore_index=ignore_index)
    unsigned = np.array([0, 1, 2], np.uint64)
    assert_matches_reference(softmax_xent_cpu, logits[:3], unsigned, 0.1, ignore_index=-1)


@pytest.mark.parametrize("kernel", VARIANTS)
def test_every_row_ignored_gives_zero_losses_and_gradient(rng, kernel):
    logits, _ = problem(rng, 3, 40)
    labels = np.full(3, -100)
    row_losses, dlogits = kernel(logits, labels, 0.1, rng.uniform(0.5, 1.5, 40), -100)
    assert (row_losses == 0).all() and (dlogits == 0).all()


def test_cpu_weights_in_another_float_dtype_are_taken_in_the_logits_dtype(rng):
    logits, labels = problem(rng, 5, 7)
    weight = rng.uniform(0.5, 1.5, 7)
    row_losses, dlogits = softmax_xent_cpu(logits, labels, 0.1, weight.astype(np.float64))
    assert row_losses.dtype == dlogits.dtype == np.float32
    ref_losses, ref_dlogits = reference_softmax_xent(logits, labels, 0.1, weight=weight)
    assert_close(row_losses, ref_losses, np.float32, FLOAT32_TOLERANCE, "row losses")
    assert_close(dlogits, ref_dlogits, np.float32, FLOAT32_TOLERANCE, "dlogits")


@pytest.mark.parametrize("classes", [7, 1000])
def test_cpu_nan_or_inf_logit_makes_only_its_row_nan(rng, cpu_entry, classes):
    logits, labels = problem(rng, 37, classes)
    logits[3, classes // 2] = np.nan
    logits[20, 0] = np.inf
    row_losses, dlogits = softmax_xent_cpu(logits, labels, 0.1)
    bad = np.zeros(37, bool)
    bad[[3, 20]] = True
    assert np.isnan(row_losses[bad]).all() and np.isnan(dlogits[bad]).all()
    assert np.isfinite(row_losses[~bad]).all() and np.isfinite(dlogits[~bad]).all()
    ref_losses, _ = reference_softmax_xent(logits[~bad], labels[~bad], 0.1)
    assert relative_error(row_losses[~bad], ref_losses) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("scale", [100.0, 1e4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_is_stable_for_huge_logits(rng, scale, dtype):
    assert_matches_reference(softmax_xent_cpu, *problem(rng, 37, 7, dtype, scale), 0.1)


@pytest.mark.parametrize("label_dtype", [np.int8, np.uint8, np.int32, np.uint64])
def test_cpu_accepts_any_integer_labels(rng, label_dtype):
    assert_matches_reference(softmax_xent_cpu, *problem(rng, 11, 7, label_dtype=label_dtype))


def test_cpu_accepts_strided_logits(rng):
    logits, labels = problem(rng, 6, 18)
    assert_matches_reference(softmax_xent_cpu, logits[:, ::3], labels % 6, 0.1)


def test_single_class_has_zero_loss_and_gradient():
    losses, dlogits = softmax_xent_cpu(np.array([[3.0], [-2.0]], np.float32), np.array([0, 0]), 0.1)
    np.testing.assert_array_equal(losses, [0.0, 0.0])
    np.testing.assert_array_equal(dlogits, [[0.0], [0.0]])


# --- CUDA (simulator) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "batch, classes, dtype, label_smoothing",
    [
        (1, 10, np.float32, 0.0),  # a warp for one row
        (5, 10, np.float32, 0.1),  # 2 blocks loop over 5 rows
        (2, 33, np.float64, 0.1),  # 64 threads, one partly idle warp
        (3, 1000, np.float32, 0.1),  # 256 threads loop over 4 column strides
    ],
)
def test_cuda_matches_reference(rng, batch, classes, dtype, label_smoothing):
    assert_matches_reference(
        softmax_xent_cuda, *problem(rng, batch, classes, dtype), label_smoothing
    )


@pytest.mark.parametrize("scale", [100.0, 1e4])
def test_cuda_is_stable_for_huge_logits(rng, scale):
    assert_matches_reference(softmax_xent_cuda, *problem(rng, 3, 40, np.float32, scale), 0.1)


@pytest.mark.parametrize(
    "batch, classes, dtype, label_smoothing",
    [
        (5, 10, np.float32, 0.0),  # 2 blocks loop over 5 rows, 2 of them ignored
        (4, 33, np.float64, 0.2),  # 64 threads, smoothing weighted per class
        (3, 1000, np.float32, 0.1),  # 256 threads loop over 4 column strides
    ],
)
def test_cuda_with_weights_and_ignored_rows_matches_reference(
    rng, batch, classes, dtype, label_smoothing
):
    logits, labels = problem(rng, batch, classes, dtype)
    labels, targets = weighted_targets(rng, labels, classes)
    assert_matches_reference(softmax_xent_cuda, logits, labels, label_smoothing, **targets)


def test_cuda_ignores_a_row_without_weights(rng):
    logits, labels = problem(rng, 3, 20)
    labels[1] = 7
    assert_matches_reference(softmax_xent_cuda, logits, labels, 0.1, ignore_index=7)


def test_cuda_label_on_the_last_column(rng):
    logits, _ = problem(rng, 2, 40)
    assert_matches_reference(softmax_xent_cuda, logits, np.array([39, 0], np.int32))


# --- errors (one validation shared by both variants) ---------------------------------------------


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("bad", [-1, 7])
def test_label_out_of_range_raises_naming_label_and_classes(rng, kernel, bad):
    logits, labels = problem(rng, 4, 7)
    labels[2] = bad
    with pytest.raises(ValueError, match=rf"label {bad} is out of bounds.*C=7"):
        kernel(logits, labels)
    # PyTorch raises IndexError here: the error is both
    with pytest.raises(IndexError):
        kernel(logits, labels, ignore_index=bad + 1)
    assert issubclass(LabelOutOfRangeError, IndexError)


def test_cuda_trusts_a_given_label_range_and_never_reads_past_a_wrong_one(rng):
    """A range the caller proved replaces the read-back of the labels (which waits for the GPU):
    a range outside [0, C) raises as the labels would; a range that lies about a label still
    cannot make the kernel read past the row: that row's loss and gradient are NaN, the others
    exact."""
    logits, labels = problem(rng, 3, 7)
    with pytest.raises(LabelOutOfRangeError, match=r"label 7 is out of bounds.*C=7"):
        softmax_xent_cuda(logits, labels, label_range=(0, 7))
    labels[1] = 9
    row_losses, dlogits = softmax_xent_cuda(logits, labels, label_range=(0, 6))
    assert np.isnan(row_losses[1]) and np.isnan(dlogits[1]).all()
    kept = [0, 2]
    expected_losses, expected_grad = reference_softmax_xent(logits[kept], labels[kept])
    assert_close(row_losses[kept], expected_losses, np.float32)
    # the reference's gradient is of the mean over its 2 rows, the kernel's over 3
    assert_close(dlogits[kept] * 3, expected_grad * 2, np.float32)


@pytest.mark.parametrize("bad", [-3, 9])
def test_cpu_entries_check_labels_before_computing(rng, cpu_entry, bad):
    """Both CPU drivers check the labels themselves, first: the error names the label."""
    logits, labels = problem(rng, 6, 9)
    labels[-1] = bad
    with pytest.raises(ValueError, match=rf"label {bad} is out of bounds: outside \[0, 9\)"):
        softmax_xent_cpu(logits, labels)


def test_cpu_names_a_huge_unsigned_label_exactly(rng):
    logits, labels = problem(rng, 4, 7, label_dtype=np.uint64)
    labels[1] = 2**63 + 5
    with pytest.raises(ValueError, match=rf"label {2**63 + 5} .*C=7"):
        softmax_xent_cpu(logits, labels)


@pytest.mark.parametrize("kernel", VARIANTS)
def test_label_shape_mismatch_names_both_shapes(rng, kernel):
    logits, labels = problem(rng, 4, 7)
    with pytest.raises(
        ValueError, match=r"labels shape \(3,\) does not match logits shape \(4, 7\)"
    ):
        kernel(logits, labels[:3])


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("label_smoothing", [-0.1, 1.5, float("nan")])
def test_label_smoothing_out_of_range_raises(rng, kernel, label_smoothing):
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got"):
        kernel(*problem(rng, 4, 7), label_smoothing)


def test_other_bad_arguments_raise(rng):
    logits, labels = problem(rng, 4, 7)
    with pytest.raises(ValueError, match=r"logits must be 2-D .*\(28,\)"):
        softmax_xent_cpu(logits.ravel(), labels)
    with pytest.raises(ValueError, match=r"\(0, 7\) needs at least one row"):
        softmax_xent_cpu(logits[:0], labels[:0])
    with pytest.raises(
        TypeError, match="softmax_xent expects logits of dtype float32 or float64, got int64"
    ):
        softmax_xent_cpu(labels[:, None].repeat(7, axis=1), labels)
    with pytest.raises(TypeError, match="labels must have an integer dtype, got float32"):
        softmax_xent_cpu(logits, labels.astype(np.float32))
    with pytest.raises(ValueError, match=r"weight must be a float vector of the 7 classes, got"):
        softmax_xent_cpu(logits, labels, weight=np.ones(6, np.float32))
    with pytest.raises(ValueError, match=r"weight must be a float vector .* got int64"):
        softmax_xent_cpu(logits, labels, weight=np.ones(7, np.int64))
