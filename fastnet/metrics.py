"""Classification and regression metrics over NumPy arrays.

Every function takes NumPy arrays or anything with a ``.numpy()`` method (a fastnet Tensor) and
returns Python floats, NumPy arrays or text. Predictions come either as class indices, shape (N,)
of an integer dtype, or as scores, shape (N, C) (logits or probabilities), which become indices
by argmax; ties go to the lowest class index, as ``numpy.argmax`` does. Labels are class indices,
shape (N,), integer, each in [0, C).

Conventions:

* A confusion matrix has one row per true class and one column per predicted class
  (scikit-learn and torchmetrics order): ``cm[i, j]`` counts samples of class i predicted as j.
* A precision, recall or F1 whose denominator is zero (a class never predicted, or absent from
  the labels) is 0, as scikit-learn's ``zero_division=0``. Macro averages are the unweighted mean
  over all ``num_classes`` classes, such classes included.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "accuracy",
    "top_k_accuracy",
    "confusion_matrix",
    "precision_recall_f1",
    "classification_report",
    "mae",
    "rmse",
]


def _as_numpy(x: Any) -> np.ndarray:
    """``x`` as a NumPy array: through ``x.numpy()`` where it has one (a Tensor), else
    np.asarray."""
    numpy = getattr(x, "numpy", None)
    return np.asarray(numpy() if callable(numpy) else x)


def _class_indices(x: Any, name: str) -> np.ndarray:
    """``x`` checked to be a 1-D integer array of class indices, as int64."""
    array = _as_numpy(x)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices (N,), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _scores(x: Any, name: str) -> np.ndarray:
    """``x`` checked to be a 2-D (N, C) array of real scores with C >= 1 and no NaN."""
    array = _as_numpy(x)
    if array.ndim != 2:
        raise ValueError(f"{name} must be scores of shape (N, C), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must hold real scores, got dtype {array.dtype}")
    if array.shape[1] == 0:
        raise ValueError(f"{name} must have at least one class column, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} contain NaN (a diverged model?); no class can be ranked")
    return array


def _predicted_classes(preds_or_scores: Any) -> tuple[np.ndarray, int | None]:
    """Class indices from indices (N,) or scores (N, C), and C where scores tell it."""
    array = _as_numpy(preds_or_scores)
    if array.ndim == 2:
        return _scores(array, "preds").argmax(axis=1), array.shape[1]
    if array.ndim == 1:
        return _class_indices(array, "preds"), None
    raise ValueError(f"preds must be class indices (N,) or scores (N, C), got shape {array.shape}")


def _check_range(indices: np.ndarray, num_classes: int, name: str) -> None:
    outside = np.flatnonzero((indices < 0) | (indices >= num_classes))
    if outside.size:
        first = outside[0]
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got {indices[first]} at index {first}"
        )


def _check_same_length(preds: np.ndarray, labels: np.ndarray) -> None:
    if len(preds) != len(labels):
        raise ValueError(
            f"preds and labels differ in length: preds has {len(preds)}, labels has {len(labels)}"
        )


def _prepared(
    preds_or_scores: Any, labels: Any, num_classes: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated (predicted indices, labels, number of classes).

    The number of classes is, in order: ``num_classes`` when given (it must match the width of
    scores), the width of scores, else one more than the largest index seen (at least 1).
    """
    preds, score_width = _predicted_classes(preds_or_scores)
    labels = _class_indices(labels, "labels")
    _check_same_length(preds, labels)
    if num_classes is None:
        num_classes = score_width
    else:
        num_classes = operator.index(num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if score_width is not None and score_width != num_classes:
            raise ValueError(
                f"preds are scores for {score_width} classes but num_classes is {num_classes}"
            )
    if num_classes is None:
        num_classes = int(max(preds.max(initial=0), labels.max(initial=0))) + 1
    _check_range(preds, num_classes, "preds")
    _check_range(labels, num_classes, "labels")
    return preds, labels, num_classes


def _require_samples(count: int, what: str) -> None:
    if count == 0:
        raise ValueError(f"{what} of zero samples is undefined")


def accuracy(logits_or_preds: Any, labels: Any) -> float:
    """Fraction of samples whose predicted class equals the label.

    ``logits_or_preds`` is (N, C) scores or (N,) class indices; ``labels`` is (N,).
    """
    preds, labels, _ = _prepared(logits_or_preds, labels, None)
    _require_samples(len(labels), "accuracy")
    return float(np.mean(preds == labels))


def top_k_accuracy(logits: Any, labels: Any, k: int) -> float:
    """Fraction of samples whose label is among the ``k`` highest-scoring classes.

    ``logits`` is (N, C), ``labels`` is (N,), 1 <= k <= C. Classes are ranked by score, ties by
    lower class index first, so ``top_k_accuracy(logits, labels, 1) == accuracy(logits, labels)``.
    """
    scores = _scores(logits, "logits")
    labels = _class_indices(labels, "labels")
    _check_same_length(scores, labels)
    num_classes = scores.shape[1]
    _check_range(labels, num_classes, "labels")
    k = operator.index(k)
    if not 1 <= k <= num_classes:
        raise ValueError(f"k must lie in [1, {num_classes}] for {num_classes} classes, got {k}")
    _require_samples(len(labels), "top-k accuracy")
    label_scores = scores[np.arange(len(labels)), labels][:, None]
    ranked_above = (scores > label_scores) | (
        (scores == label_scores) & (np.arange(num_classes) < labels[:, None])
    )
    return float(np.mean(ranked_above.sum(axis=1) < k))


def confusion_matrix(preds: Any, labels: Any, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: ``cm[i, j]`` is the number of samples of true class i predicted as j.

    ``preds`` is (N,) class indices or (N, C) scores; ``labels`` is (N,); both in [0, C).
    """
    preds, labels, num_classes = _prepared(preds, labels, num_classes)
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator elementwise, 0 where the denominator is 0."""
    out = np.zeros(numerator.shape, np.float64)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def precision_recall_f1(preds: Any, labels: Any, num_classes: int) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, and their macro averages.

    Returns ``precision``, ``recall``, ``f1`` (float64 arrays (C,)), ``support`` (int64 (C,), the
    number of samples of each true class), and ``macro_precision``, ``macro_recall``,
    ``macro_f1`` (floats: unweighted means over the C classes). A ratio with a zero denominator
    is 0 (scikit-learn's ``zero_division=0``); F1 is 2·TP / (2·TP + FP + FN), which equals the
    harmonic mean of precision and recall wherever both are defined.
    """
    cm = confusion_matrix(preds, labels, num_classes)
    true_positives = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _ratio(true_positives, predicted)
    recall = _ratio(true_positives, support)
    f1 = _ratio(2 * true_positives, predicted + support)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
    }


def classification_report(preds: Any, labels: Any, class_names: Sequence[str] | None = None) -> str:
    """A text table: precision, recall, F1 and support per class, then accuracy and macro avg.

    The classes are ``class_names`` when given (one name per class index), else as many as the
    width of scores, else up to the largest index seen.
    """
    num_classes = None if class_names is None else len(class_names)
    if num_classes == 0:
        raise ValueError("class_names must name at least one class")
    preds, labels, num_classes = _prepared(preds, labels, num_classes)
    _require_samples(len(labels), "a classification report")
    if class_names is None:
        class_names = [str(index) for index in range(num_classes)]
    scores = precision_recall_f1(preds, labels, num_classes)
    total = len(labels)

    name_width = max(len("macro avg"), *(len(str(name)) for name in class_names))
    header = f"{'':>{name_width}}  " + "  ".join(
        f"{column:>9}" for column in ("precision", "recall", "f1-score", "support")
    )

    def row(name: str, cells: Sequence[float | None], support: int) -> str:
        numbers = "  ".join(" " * 9 if cell is None else f"{cell:9.3f}" for cell in cells)
        return f"{name:>{name_width}}  {numbers}  {support:9d}"

    lines = [header, ""]
    for index, name in enumerate(class_names):
        cells = [scores[key][index] for key in ("precision", "recall", "f1")]
        lines.append(row(str(name), cells, int(scores["support"][index])))
    lines.append("")
    lines.append(row("accuracy", [None, None, float(np.mean(preds == labels))], total))
    macro = [scores[key] for key in ("macro_precision", "macro_recall", "macro_f1")]
    lines.append(row("macro avg", macro, total))
    return "\n".join(lines)


def _difference(predictions: Any, targets: Any, what: str) -> np.ndarray:
    """predictions - targets in float64, after checking both have one and the same shape."""
    predictions, targets = _as_numpy(predictions), _as_numpy(targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"{what}: predictions and targets differ in shape: "
            f"{predictions.shape} vs {targets.shape}"
        )
    _require_samples(predictions.size, what)
    return predictions.astype(np.float64) - targets.astype(np.float64)


def mae(predictions: Any, targets: Any) -> float:
    """Mean absolute error, mean(|predictions - targets|), over arrays of the same shape."""
    return float(np.mean(np.abs(_difference(predictions, targets, "mae"))))


def rmse(predictions: Any, targets: Any) -> float:
    """Root mean squared error, sqrt(mean((predictions - targets)²)), over arrays of one shape."""
    return math.sqrt(np.mean(np.square(_difference(predictions, targets, "rmse"))))
