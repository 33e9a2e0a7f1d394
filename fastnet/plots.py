"""PNG plots of a training run and a model: learning curves, confusion matrix, feature maps.

matplotlib is an optional extra (``plot``), imported only when a function here is called.
Figures are drawn on matplotlib's Agg canvas directly, never through pyplot, so nothing opens a
window, the caller's pyplot backend and figure list are left alone, and no figure
outlives its call. Each PNG is written atomically: into a temporary file in the target folder
(created if missing), then renamed over ``path``, so no reader ever sees half a file.

Image sizes are fixed by the data, not by the text in the figure, so files from different runs
line up: each function gives its size in inches, times ``dpi`` pixels per inch.
Arrays may be NumPy arrays or anything with a ``.numpy()`` method (a fastnet Tensor).
"""

from __future__ import annotations

import math
import numbers
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .extras import install_hint
from .metrics import _as_numpy

__all__ = ["plot_training_curves", "plot_confusion_matrix", "plot_feature_maps"]

_SPLITS = ("train", "val", "valid", "validation", "test")
_METRIC_NAMES = {"acc": "accuracy"}
_PANEL_TITLES = {"loss": "Loss", "accuracy": "Accuracy"}


def _png_path(path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ValueError(f"plots are written as PNG: path must end in .png, got {str(target)!r}")
    return target


def _check_dpi(dpi: float) -> None:
    if not (isinstance(dpi, numbers.Real) and math.isfinite(dpi) and dpi > 0):
        raise ValueError(f"dpi must be a positive number, got {dpi!r}")


def _new_figure(width_inches: float, height_inches: float, dpi: float) -> Any:
    """A matplotlib Figure on an Agg canvas, laid out so that labels do not overlap."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(f"fastnet's plots need matplotlib: {install_hint('plot')}") from error
    figure = Figure(figsize=(width_inches, height_inches), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _write_png(figure: Any, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A name of our own, opened with "x" (fails if it exists) and under the user's umask,
    # unlike tempfile's owner-only files, so the PNG ends with the permissions of any other.
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as file:
            figure.savefig(file, format="png", dpi=figure.dpi)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def _split_key(key: str) -> tuple[str, str]:
    """("train", "loss") from "train_loss"; a key without a known split is its own metric."""
    split, _, metric = key.partition("_")
    if split in _SPLITS and metric:
        return split, _METRIC_NAMES.get(metric, metric)
    return key, _METRIC_NAMES.get(key, key)


def _series(name: str, values: Any) -> np.ndarray:
    series = _as_numpy(values)
    if series.ndim != 1 or series.size == 0 or not np.issubdtype(series.dtype, np.number):
        raise ValueError(
            f"{name} must be a non-empty list of numbers, one per epoch, "
            f"got shape {series.shape} of dtype {series.dtype}"
        )
    return series.astype(np.float64)


def _epoch_axis(axes: Any, epochs: int, start: float = 0.5) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.set_xlabel("epoch")
    axes.set_xlim(start, epochs + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.grid(alpha=0.3)


def _draw_learning_rate(axes: Any, rates: np.ndarray, epochs: int) -> None:
    """The learning rate against the epoch: n values spread evenly over the epochs, so one per
    epoch lands on each epoch and one per step draws the schedule within each epoch."""
    positions = np.arange(1, rates.size + 1) * epochs / rates.size
    marker = "o" if rates.size <= 30 else None
    axes.plot(positions, rates, color="C3", marker=marker, markersize=4)
    axes.set_title("Learning rate")
    axes.set_ylabel("learning rate")
    _epoch_axis(axes, epochs, start=0.0)
    positive = rates[np.isfinite(rates) & (rates > 0)]
    if positive.size == rates.size and positive.max() > 10 * positive.min():
        axes.set_yscale("log")  # a decayed schedule spans decades: each one stays readable


def plot_training_curves(
    history: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    lr: Sequence[float] | None = None,
    dpi: float = 100,
) -> Path:
    """Learning curves, one panel per metric, one line per split; returns the PNG's path.

    ``history`` maps keys like "train_loss", "test_loss", "train_acc", "test_acc" (also "val_",
    "valid_", "validation_" prefixes) to one value per epoch. Keys sharing a metric share a
    panel, and each split keeps its colour in every panel. Accuracies (fractions, as training
    records them) are drawn in percent. Any other metric gets a panel of its own.

    The learning rate gets a last panel (log scale when it spans more than a factor of 10): from
    ``lr``, any number of values spread evenly over the epochs (one per epoch, or one per step
    to show a schedule within each epoch), or from a "lr" key of ``history``, one per epoch;
    not from both. The image is 5 × 4 inches per panel, panels side by side.
    """
    target = _png_path(path)
    _check_dpi(dpi)
    if not isinstance(history, Mapping) or not history:
        raise ValueError("history must be a non-empty dict of per-epoch value lists")
    panels: dict[str, list[tuple[str, np.ndarray]]] = {}
    for key, values in history.items():
        split, metric = _split_key(str(key))
        panels.setdefault(metric, []).append((split, _series(f"history[{key!r}]", values)))
    epochs = max(series.size for lines in panels.values() for _, series in lines)
    rates = panels.pop("lr", [])
    if lr is not None:
        if rates:
            raise ValueError("give the learning rate once: as lr= or as history['lr'], not both")
        rates = [("lr", _series("lr", lr))]
    if len(rates) > 1:
        raise ValueError(f"history holds {len(rates)} learning-rate series; give one")

    figure = _new_figure(5.0 * (len(panels) + len(rates)), 4.0, dpi)
    colours: dict[str, str] = {}
    axes_row = figure.subplots(1, len(panels) + len(rates), squeeze=False)[0]
    for axes, (metric, lines) in zip(axes_row[: len(panels)], panels.items(), strict=True):
        percent = metric == "accuracy"
        for split, series in lines:
            colour = colours.setdefault(split, f"C{len(colours)}")
            epoch_numbers = np.arange(1, series.size + 1)
            marker = "o" if series.size <= 30 else None
            shown = 100 * series if percent else series
            axes.plot(epoch_numbers, shown, color=colour, marker=marker, markersize=4, label=split)
        axes.set_title(_PANEL_TITLES.get(metric, metric) + (" (%)" if percent else ""))
        axes.set_ylabel(f"{metric} (%)" if percent else metric)
        _epoch_axis(axes, epochs)
        if [split for split, _ in lines] != [metric]:  # a lone line of its own needs no legend
            axes.legend()
    if rates:
        _draw_learning_rate(axes_row[-1], rates[0][1], epochs)
    return _write_png(figure, target)


def _visible_blues() -> Any:
    """matplotlib's Blues without its near-white end, so that the smallest non-zero cell is
    still clearly blue; masked (zero) cells are white."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    colours = ListedColormap(colormaps["Blues"](np.linspace(0.25, 1.0, 256)), name="fastnet_blues")
    return colours.with_extremes(bad="white")


def _log_colour_scale(values: np.ndarray, upper: float) -> Any:
    """A log colour norm from the smallest non-zero value to ``upper``, so one error among a
    thousand correct answers still gets a colour of its own (zero cells are masked: white)."""
    from matplotlib.colors import LogNorm

    positive = values[values > 0]
    lowest = positive.min() if positive.size else upper
    return LogNorm(vmin=min(lowest, upper / 10), vmax=upper)


def plot_confusion_matrix(
    cm: Any,
    path: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    normalize: bool = True,
    *,
    dpi: float = 100,
) -> Path:
    """A heatmap of a (C, C) confusion matrix (rows true, columns predicted); returns the path.

    The cells are coloured on a log scale, so that a handful of errors stand out even at 99%
    accuracy: with ``normalize`` by the share of the true class (each row divided by its sum:
    the diagonal is the per-class recall), otherwise by the count. Cells that are zero stay
    white. For up to 30 classes the counts are written in the cells: on the diagonal, and in
    every off-diagonal cell that is not zero (the errors). The title gives the overall accuracy.
    The image is max(5, 0.6·C + 2.5) × max(4, 0.6·C + 1.5) inches.
    """
    target = _png_path(path)
    _check_dpi(dpi)
    matrix = _as_numpy(cm)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"cm must be a non-empty square (C, C) matrix, got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.number) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"cm must hold finite numbers, got dtype {matrix.dtype}")
    if np.any(matrix < 0):
        raise ValueError("cm must hold counts, but it has negative entries")
    num_classes = matrix.shape[0]
    if class_names is None:
        class_names = [str(index) for index in range(num_classes)]
    elif len(class_names) != num_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names for a {num_classes}-class confusion matrix"
        )

    counts = matrix.astype(np.float64)
    if normalize:
        row_sums = counts.sum(axis=1, keepdims=True)
        colours = np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)
        upper, colour_label = 1.0, "share of the true class (log scale)"
    else:
        colours, upper, colour_label = counts, max(counts.max(), 1.0), "count (log scale)"
    cell_format = "{:,.0f}" if np.all(counts == np.round(counts)) else "{:.3g}"

    figure = _new_figure(max(5.0, 0.6 * num_classes + 2.5), max(4.0, 0.6 * num_classes + 1.5), dpi)
    from matplotlib.ticker import PercentFormatter

    axes = figure.subplots()
    norm = _log_colour_scale(colours, upper)
    image = axes.imshow(np.ma.masked_equal(colours, 0.0), cmap=_visible_blues(), norm=norm)
    figure.colorbar(
        image,
        ax=axes,
        label=colour_label,
        shrink=0.9,
        format=PercentFormatter(1.0, decimals=None) if normalize else None,
    )
    ticks = np.arange(num_classes)
    long_names = max(len(str(name)) for name in class_names) > 3
    axes.set_xticks(
        ticks,
        [str(name) for name in class_names],
        rotation=45 if long_names else 0,
        ha="right" if long_names else "center",
        rotation_mode="anchor",
    )
    axes.set_yticks(ticks, [str(name) for name in class_names])
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    correct, total = np.trace(counts), counts.sum()
    title = "Confusion matrix"
    if total > 0:
        title += f": {cell_format.format(correct)} of {cell_format.format(total)} correct"
        title += f" ({100 * correct / total:.2f}%)"
    axes.set_title(title, fontsize=11)
    if num_classes <= 30:
        font_size = 10 if num_classes <= 10 else 7
        for (row, column), count in np.ndenumerate(counts):
            if row != column and count == 0:
                continue  # blank, so the errors are the only numbers off the diagonal
            dark = count > 0 and norm(colours[row, column]) > 0.6
            axes.text(
                column,
                row,
                cell_format.format(count),
                ha="center",
                va="center",
                fontsize=font_size,
                color="white" if dark else "black",
            )
    return _write_png(figure, target)


def _displayable_image(image: Any) -> tuple[np.ndarray, str | None]:
    """(H, W) or (H, W, 3|4) in display range, and the colour map for a one-channel image.

    Accepts (H, W), (H, W, 1|3|4) and channel-first (1|3|4, H, W). Values outside [0, 1] (a
    normalised input, or 0-255 floats) are rescaled to [0, 1]; uint8 is shown as it is.
    """
    array = _as_numpy(image)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or 0 in array.shape:
        raise ValueError(
            "image must be (H, W), (H, W, 1|3|4) or (1|3|4, H, W), "
            f"got shape {_as_numpy(image).shape}"
        )
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        low, high = array.min(), array.max()
        if low < 0.0 or high > 1.0:
            array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return array, ("gray" if array.ndim == 2 else None)


def _feature_map_stack(name: Any, activations: Any) -> np.ndarray:
    array = _as_numpy(activations)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(
            f"layer {name!r}: activations must be (C, H, W) (or (1, C, H, W)), "
            f"got shape {_as_numpy(activations).shape}"
        )
    return array.astype(np.float64)


def _hide_axes(axes: Any) -> None:
    axes.set_xticks([])
    axes.set_yticks([])


def plot_feature_maps(
    layers: Sequence[tuple[str, Any]],
    path: str | os.PathLike[str],
    image: Any = None,
    *,
    max_channels: int = 16,
    true_label: str | None = None,
    predicted_label: str | None = None,
    dpi: float = 100,
) -> Path:
    """One input image followed through a model, layer by layer; returns the PNG's path.

    ``layers`` lists (name, activations) pairs in forward order, each activations array (C, H, W)
    for one image (a leading batch axis of 1 is dropped). The figure shows ``image`` first
    (see below), then for each layer a titled block of its first ``max_channels`` channels, eight
    to a row, each channel scaled to its own range (viridis: dark low, yellow high).
    ``image`` may be (H, W), (H, W, 3) or channel-first (1|3, H, W).
    ``true_label`` and ``predicted_label`` (either or both) make the figure's title, in red
    with "wrong" when both are given and differ.

    Size: 1.1 inches per column of channels (min(8, most channels shown) columns, at least
    4 inches wide); in height, 0.4 inches for the title when there is one, 2.4 inches for the
    input image, and per layer 0.45 inches of title plus 1.1 inches per row of channels.
    """
    target = _png_path(path)
    _check_dpi(dpi)
    if not isinstance(max_channels, numbers.Integral) or max_channels < 1:
        raise ValueError(f"max_channels must be a positive integer, got {max_channels!r}")
    if len(layers) == 0:
        raise ValueError("layers must list at least one (name, activations) pair")
    stacks = []
    for entry in layers:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ValueError(
                f"each layer must be a (name, activations) pair, got {type(entry).__name__} "
                f"{str(entry)[:60]}"
            )
        name, activations = entry
        stacks.append((name, _feature_map_stack(name, activations)))
    shown_image = None if image is None else _displayable_image(image)

    columns = min(8, max(min(stack.shape[0], max_channels) for _, stack in stacks))
    cell, title_height, image_height = 1.1, 0.45, 2.4
    block_rows = [math.ceil(min(stack.shape[0], max_channels) / columns) for _, stack in stacks]
    heights = [rows * cell + title_height for rows in block_rows]
    if shown_image is not None:
        heights.insert(0, image_height)
    labels = [
        f"{role} {label}"
        for role, label in (("true", true_label), ("predicted", predicted_label))
        if label is not None
    ]
    title_line = 0.4 if labels else 0.0
    figure = _new_figure(max(4.0, columns * cell), sum(heights) + title_line, dpi)
    if labels:
        wrong = true_label is not None and predicted_label is not None
        wrong = wrong and str(true_label) != str(predicted_label)
        figure.suptitle(
            ", ".join(labels) + (" (wrong)" if wrong else ""),
            fontsize=12,
            color="tab:red" if wrong else "black",
        )
    blocks = list(figure.subfigures(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0])

    if shown_image is not None:
        pixels, colour_map = shown_image
        axes = blocks.pop(0).subplots()
        axes.imshow(pixels, cmap=colour_map, interpolation="nearest")
        axes.set_title(f"input ({pixels.shape[0]}×{pixels.shape[1]})", fontsize=11)
        _hide_axes(axes)

    for block, rows, (name, stack) in zip(blocks, block_rows, stacks, strict=True):
        channels, height, width = stack.shape
        shown = min(channels, max_channels)
        subtitle = f"{name}: {channels} channels, {height}×{width}"
        if shown < channels:
            subtitle += f" (first {shown} shown)"
        block.suptitle(subtitle, fontsize=11)
        for index, axes in enumerate(block.subplots(rows, columns, squeeze=False).ravel()):
            if index < shown:
                axes.imshow(stack[index], cmap="viridis", interpolation="nearest")
                axes.set_title(str(index), fontsize=7, pad=2)
                _hide_axes(axes)
            else:
                axes.set_axis_off()
    return _write_png(figure, target)
