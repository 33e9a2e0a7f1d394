"""fastnet.metrics against numbers worked out by hand, and against plain loops (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnet import metrics
from fastnet.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    mae,
    precision_recall_f1,
    rmse,
    top_k_accuracy,
)

# Ten samples of three classes, chosen so that precision and recall differ in every class.
#   true 0: predicted 0, 0, 1        -> row [2, 1, 0]
#   true 1: predicted 1, 1, 1, 0     -> row [1, 3, 0]
#   true 2: predicted 2, 1, 1        -> row [0, 2, 1]
LABELS = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
PREDS = np.array([0, 0, 1, 1, 1, 1, 0, 2, 1, 1])
CM = np.array([[2, 1, 0], [1, 3, 0], [0, 2, 1]])
# true positives [2, 3, 1]; predicted per class (column sums) [3, 6, 1]; support [3, 4, 3]
PRECISION = [2 / 3, 3 / 6, 1 / 1]
RECALL = [2 / 3, 3 / 4, 1 / 3]
F1 = [4 / 6, 6 / 10, 2 / 4]  # 2·TP / (predicted + support)


class FakeTensor:
    """Stands for a fastnet Tensor: only ``.numpy()`` is used."""

    def __init__(self, array):
        self.array = np.asarray(array)

    def numpy(self):
        return self.array


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(PREDS, LABELS, 3)
    assert cm.dtype == np.int64 and cm.shape == (3, 3)
    np.testing.assert_array_equal(cm, CM)


def test_accuracy_by_hand_from_indices_scores_and_tensors():
    assert accuracy(PREDS, LABELS) == pytest.approx(0.6)
    scores = np.eye(3)[PREDS] * 2.0 - 0.5  # argmax of each row is PREDS
    assert accuracy(scores, LABELS) == pytest.approx(0.6)
    assert accuracy(FakeTensor(PREDS), FakeTensor(LABELS)) == pytest.approx(0.6)


def test_precision_recall_f1_by_hand():
    result = precision_recall_f1(PREDS, LABELS, 3)
    np.testing.assert_allclose(result["precision"], PRECISION)
    np.testing.assert_allclose(result["recall"], RECALL)
    np.testing.assert_allclose(result["f1"], F1)
    np.testing.assert_array_equal(result["support"], [3, 4, 3])
    assert result["macro_precision"] == pytest.approx(13 / 18)  # (2/3 + 1/2 + 1) / 3
    assert result["macro_recall"] == pytest.approx(7 / 12)  # (2/3 + 3/4 + 1/3) / 3
    assert result["macro_f1"] == pytest.approx(53 / 90)  # (2/3 + 3/5 + 1/2) / 3


def test_zero_denominators_give_zero_and_count_in_macro_average():
    # Class 3 is neither predicted nor present; class 2 is present but never predicted.
    preds = np.array([0, 1, 1, 0])
    labels = np.array([0, 1, 2, 2])
    result = precision_recall_f1(preds, labels, 4)
    np.testing.assert_allclose(result["precision"], [1 / 2, 1 / 2, 0, 0])
    np.testing.assert_allclose(result["recall"], [1, 1, 0, 0])
    np.testing.assert_allclose(result["f1"], [2 / 3, 2 / 3, 0, 0])
    assert result["macro_precision"] == pytest.approx(1 / 4)
    assert result["macro_recall"] == pytest.approx(1 / 2)
    assert result["macro_f1"] == pytest.approx(1 / 3)


def test_top_k_accuracy_by_hand_with_a_tie():
    logits = np.array(
        [
            [0.1, 0.7, 0.2],  # label 2 ranks second
            [0.5, 0.3, 0.2],  # label 0 ranks first
            [0.2, 0.3, 0.5],  # label 0 ranks third
            [0.4, 0.4, 0.2],  # label 1 ties class 0, which ranks first: label 1 ranks second
        ]
    )
    labels = np.array([2, 0, 0, 1])
    assert top_k_accuracy(logits, labels, 1) == pytest.approx(1 / 4)
    assert top_k_accuracy(logits, labels, 2) == pytest.approx(3 / 4)
    assert top_k_accuracy(logits, labels, 3) == pytest.approx(1.0)
    assert accuracy(logits, labels) == pytest.approx(1 / 4)


def test_classification_report_by_hand():
    report = classification_report(PREDS, LABELS, class_names=["cat", "dog", "bird"])
    expected = "\n".join(
        [
            "           precision     recall   f1-score    support",
            "",
            "      cat      0.667      0.667      0.667          3",
            "      dog      0.500      0.750      0.600          4",
            "     bird      1.000      0.333      0.500          3",
            "",
            " accuracy                            0.600         10",
            "macro avg      0.722      0.583      0.589         10",
        ]
    )
    assert report == expected


def test_classification_report_names_classes_by_index_without_names():
    lines = classification_report(PREDS, LABELS).splitlines()
    assert [line.split()[0] for line in lines[2:5]] == ["0", "1", "2"]


def test_mae_and_rmse_by_hand():
    predictions = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    targets = np.array([1.0, 0.0, 3.0, 8.0], np.float32)  # differences 0, 2, 0, -4
    assert mae(predictions, targets) == pytest.approx(1.5)
    assert rmse(predictions, targets) == pytest.approx(math.sqrt(5.0))
    assert rmse(FakeTensor(predictions.reshape(2, 2)), targets.reshape(2, 2)) == pytest.approx(
        math.sqrt(5.0)
    )


def test_as_numpy_prefers_the_numpy_method():
    array = np.arange(3)
    assert metrics._as_numpy(FakeTensor(array)) is array
    np.testing.assert_array_equal(metrics._as_numpy([1, 2]), [1, 2])


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: accuracy([0, 1, 2], [0, 1]), ValueError, "preds has 3, labels has 2"),
        (
            lambda: confusion_matrix([0, 1], [0, 3], 3),
            ValueError,
            r"labels must lie in \[0, 3\), got 3 at index 1",
        ),
        (
            lambda: confusion_matrix([-1, 1], [0, 1], 3),
            ValueError,
            r"preds must lie in \[0, 3\), got -1 at index 0",
        ),
        (
            lambda: confusion_matrix([0, 1], [0, 1], 0),
            ValueError,
            "num_classes must be at least 1, got 0",
        ),
        (
            lambda: confusion_matrix(np.zeros((2, 4)), [0, 1], 3),
            ValueError,
            "scores for 4 classes but num_classes is 3",
        ),
        (
            lambda: accuracy([0.0, 1.0], [0, 1]),
            TypeError,
            "preds must hold integer class indices, got dtype float64",
        ),
        (
            lambda: accuracy([0, 1], [[0, 1]]),
            ValueError,
            r"labels must be 1-D class indices \(N,\), got shape \(1, 2\)",
        ),
        (
            lambda: accuracy(np.zeros((2, 2, 2)), [0, 1]),
            ValueError,
            r"preds must be class indices \(N,\) or scores \(N, C\)",
        ),
        (lambda: accuracy(np.array([[np.nan, 1.0]]), [0]), ValueError, "contain NaN"),
        (
            lambda: accuracy(np.array([], np.int64), np.array([], np.int64)),
            ValueError,
            "accuracy of zero samples",
        ),
        (
            lambda: top_k_accuracy(np.zeros((2, 3)), [0, 1], 4),
            ValueError,
            r"k must lie in \[1, 3\] for 3 classes, got 4",
        ),
        (
            lambda: top_k_accuracy(np.zeros((2, 3)), [0, 1], 0),
            ValueError,
            r"k must lie in \[1, 3\]",
        ),
        (
            lambda: top_k_accuracy(np.zeros((2, 3)), [0, 5], 1),
            ValueError,
            r"labels must lie in \[0, 3\), got 5",
        ),
        (
            lambda: top_k_accuracy(np.zeros(3), [0, 1, 2], 1),
            ValueError,
            r"logits must be scores of shape \(N, C\), got shape \(3,\)",
        ),
        (
            lambda: classification_report([0, 1], [0, 2], ["a", "b"]),
            ValueError,
            r"labels must lie in \[0, 2\)",
        ),
        (
            lambda: mae(np.zeros(3), np.zeros((3, 1))),
            ValueError,
            r"mae: predictions and targets differ in shape: \(3,\) vs \(3, 1\)",
        ),
        (lambda: rmse([], []), ValueError, "rmse of zero samples"),
    ],
)
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---- property tests against plain loops -------------------------------------------------------


def loop_confusion_matrix(preds, labels, num_classes):
    cm = [[0] * num_classes for _ in range(num_classes)]
    for predicted, true in zip(preds, labels, strict=True):
        cm[true][predicted] += 1
    return np.array(cm)


def loop_precision_recall_f1(preds, labels, num_classes):
    """Per class, from counted TP/FP/FN, with F1 as the harmonic mean of P and R."""
    rows = []
    for c in range(num_classes):
        tp = sum(p == c and t == c for p, t in zip(preds, labels, strict=True))
        fp = sum(p == c and t != c for p, t in zip(preds, labels, strict=True))
        fn = sum(p != c and t == c for p, t in zip(preds, labels, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append((precision, recall, f1, tp + fn))
    return np.array(rows)


@st.composite
def predictions_and_labels(draw, min_size=0):
    num_classes = draw(st.integers(1, 6))
    size = draw(st.integers(min_size, 40))
    indices = st.lists(st.integers(0, num_classes - 1), min_size=size, max_size=size)
    return np.array(draw(indices), np.int64), np.array(draw(indices), np.int64), num_classes


@settings(max_examples=150, deadline=None)
@given(predictions_and_labels())
def test_confusion_matrix_and_scores_match_loops(case):
    preds, labels, num_classes = case
    np.testing.assert_array_equal(
        confusion_matrix(preds, labels, num_classes),
        loop_confusion_matrix(preds, labels, num_classes),
    )
    result = precision_recall_f1(preds, labels, num_classes)
    expected = loop_precision_recall_f1(preds, labels, num_classes)
    for column, key in enumerate(("precision", "recall", "f1", "support")):
        np.testing.assert_allclose(result[key], expected[:, column], rtol=1e-12, atol=0)
    for column, key in enumerate(("macro_precision", "macro_recall", "macro_f1")):
        assert result[key] == pytest.approx(expected[:, column].mean(), rel=1e-12, abs=1e-15)


@settings(max_examples=150, deadline=None)
@given(predictions_and_labels(min_size=1))
def test_accuracy_matches_loop(case):
    preds, labels, _ = case
    correct = sum(int(p == t) for p, t in zip(preds, labels, strict=True))
    assert accuracy(preds, labels) == pytest.approx(correct / len(labels), rel=1e-12)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_top_k_accuracy_matches_sorting_loop(data):
    num_classes = data.draw(st.integers(1, 6))
    size = data.draw(st.integers(1, 20))
    # Scores from a few small integers, so that ties are common.
    scores = np.array(
        data.draw(
            st.lists(st.integers(-2, 2), min_size=size * num_classes, max_size=size * num_classes)
        ),
        np.float32,
    ).reshape(size, num_classes)
    labels = np.array(
        data.draw(st.lists(st.integers(0, num_classes - 1), min_size=size, max_size=size))
    )
    k = data.draw(st.integers(1, num_classes))
    hits = 0
    for row, label in zip(scores, labels, strict=True):
        ranking = sorted(range(num_classes), key=lambda c: (-row[c], c))
        hits += label in ranking[:k]
    assert top_k_accuracy(scores, labels, k) == pytest.approx(hits / size, rel=1e-12)
    if k == 1:
        assert top_k_accuracy(scores, labels, 1) == accuracy(scores, labels)
