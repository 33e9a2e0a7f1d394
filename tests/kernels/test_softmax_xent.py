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

CUDA tests run in Numba's simulator (see conftest), so they use few rows: the launcher runs a
block of 32..256 threads per row and at most 2 blocks, so B=3..5 rows also exercises the loop of
blocks over rows, and C=1000 (256 threads) the loop of threads over columns.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels.softmax_xent import reference_softmax_xent, softmax_xent_cpu, softmax_xent_cuda
from numerics import assert_close, relative_error

# Tighter than the shared float32 bound: see the module docstring.
FLOAT32_TOLERANCE = 2e-6
VARIANTS = [softmax_xent_cpu, softmax_xent_cuda]


def problem(rng, batch, classes, dtype=np.float32, scale=1.0, label_dtype=np.int64):
    logits = (scale * rng.standard_normal((batch, classes))).astype(dtype)
    labels = rng.integers(0, classes, batch).astype(label_dtype)
    return logits, labels


def assert_matches_reference(kernel, logits, labels, label_smoothing=0.0):
    row_losses, dlogits = kernel(logits, labels, label_smoothing)
    ref_losses, ref_dlogits = reference_softmax_xent(logits, labels, label_smoothing)
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


@pytest.mark.parametrize("kernel", [reference_softmax_xent, softmax_xent_cpu])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_gradient_matches_finite_differences_of_the_reference_mean_loss(
    rng, kernel, label_smoothing
):
    logits, labels = problem(rng, 3, 5, np.float64, scale=2.0)
    _, dlogits = kernel(logits, labels, label_smoothing)
    step = 1e-6
    numeric = np.empty_like(logits)
    for index in np.ndindex(logits.shape):
        shifted = [logits.copy(), logits.copy()]
        shifted[0][index] += step
        shifted[1][index] -= step
        plus, minus = (
            reference_softmax_xent(z, labels, label_smoothing)[0].mean() for z in shifted
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


def test_cuda_label_on_the_last_column(rng):
    logits, _ = problem(rng, 2, 40)
    assert_matches_reference(softmax_xent_cuda, logits, np.array([39, 0], np.int32))


# --- errors (one validation shared by both variants) ---------------------------------------------


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("bad", [-1, 7])
def test_label_out_of_range_raises_naming_label_and_classes(rng, kernel, bad):
    logits, labels = problem(rng, 4, 7)
    labels[2] = bad
    with pytest.raises(ValueError, match=rf"label {bad} .*C=7"):
        kernel(logits, labels)


@pytest.mark.parametrize("bad", [-3, 9])
def test_cpu_entries_check_labels_before_computing(rng, cpu_entry, bad):
    """Both CPU drivers check the labels themselves, first: the error names the label."""
    logits, labels = problem(rng, 6, 9)
    labels[-1] = bad
    with pytest.raises(ValueError, match=rf"label {bad} is outside \[0, 9\)"):
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
@pytest.mark.parametrize("label_smoothing", [-0.1, 1.0, float("nan")])
def test_label_smoothing_out_of_range_raises(rng, kernel, label_smoothing):
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got"):
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
