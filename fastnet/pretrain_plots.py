"""Pictures of what self-supervised pretraining learned, as PNG files.

* :func:`embedding_map`: the feature vectors of N images projected to 2-D (PCA, or t-SNE when
  scikit-learn is installed and asked for), one dot per image coloured by its class: classes
  that form separate clouds are what a linear probe or a kNN classifier can tell apart.
* :func:`retrievals`: for a few query images, their k nearest gallery images by cosine
  similarity of the features, one row per query.
* :func:`reconstruction_grid`: three rows, the inputs, what the autoencoder saw (masked or
  corrupted) and what it rebuilt.

The NumPy helpers behind them, :func:`principal_components` and :func:`nearest_neighbours`, are
public too. Images are (N, C, H, W) channel-first arrays (or Tensors), normalised or not: with
the normalisation's ``mean`` and ``std`` they are mapped back to [0, 1] exactly; without, each
image (each column of the reconstruction grid) is stretched from its own range to [0, 1].
matplotlib is optional, as for :mod:`fastnet.plots`, whose conventions these follow: Agg canvas,
never pyplot, atomic writes, a size in inches fixed by the data (pixels = inches · ``dpi``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import _as_numpy
from .plots import _check_dpi, _hide_axes, _new_figure, _png_path, _write_png

__all__ = [
    "principal_components",
    "nearest_neighbours",
    "embedding_map",
    "retrievals",
    "reconstruction_grid",
]

_CELL = 1.0  # inches per image in the image grids


def _features(x: Any, name: str) -> np.ndarray:
    array = _as_numpy(x)
    if array.ndim != 2 or array.shape[0] == 0 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be feature vectors (N, D), got shape {array.shape}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds inf or NaN")
    return array


def _images(x: Any, name: str, count: int | None = None) -> np.ndarray:
    array = _as_numpy(x)
    if array.ndim != 4 or array.shape[1] not in (1, 3) or 0 in array.shape:
        raise ValueError(f"{name} must be images (N, 1 or 3, H, W), got shape {array.shape}")
    if count is not None and array.shape[0] != count:
        raise ValueError(f"{name} holds {array.shape[0]} images where {count} were expected")
    return array.astype(np.float64)


def principal_components(features: Any, count: int = 2) -> np.ndarray:
    """The coordinates (N, count) of the centred ``features`` (N, D) along their ``count``
    directions of largest variance (PCA by SVD), the first column the largest. Each direction's
    sign is fixed (its largest loading positive) so that one input always gives one picture."""
    data = _features(features, "features")
    if not 1 <= count <= min(data.shape):
        raise ValueError(f"count must be in [1, {min(data.shape)}] for shape {data.shape}")
    centred = data - data.mean(axis=0)
    left, singular, right = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(right[np.arange(count), np.abs(right[:count]).argmax(axis=1)])
    return left[:, :count] * singular[:count] * signs


def nearest_neighbours(query: Any, gallery: Any, k: int) -> np.ndarray:
    """Indices (Q, k) of the ``k`` gallery rows most cosine-similar to each query row, the most
    similar first (ties broken by the lower index)."""
    q, g = _features(query, "query features"), _features(gallery, "gallery features")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features {q.shape} and gallery features {g.shape} differ in D")
    if not 1 <= k <= g.shape[0]:
        raise ValueError(f"k must be in [1, {g.shape[0]}] (the gallery's size), got {k}")
    unit = [x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in (q, g)]
    similarity = unit[0] @ unit[1].T
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def _two_dimensional(features: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
    """2-D coordinates and the name of the method that made them."""
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            return principal_components(features), "PCA (t-SNE needs scikit-learn)"
        perplexity = min(30.0, max(1.0, (features.shape[0] - 1) / 3))
        tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
        return tsne.fit_transform(features), "t-SNE"
    return principal_components(features), "PCA"


def embedding_map(
    features: Any,
    labels: Any,
    path: str | os.PathLike[str],
    method: str = "pca",
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    seed: int = 0,
    dpi: float = 100,
) -> Path:
    """A scatter plot of ``features`` (N, D) in 2-D, each point coloured by its class in
    ``labels`` (N,); returns the PNG's path.

    ``method`` "pca" projects on the two principal components; "tsne" uses scikit-learn's
    t-SNE (seeded by ``seed``) when it is installed, else PCA, and the title says which ran.
    Size: 6.5 × 6 inches."""
    target = _png_path(path)
    _check_dpi(dpi)
    if method not in ("pca", "tsne"):
        raise ValueError(f'method must be "pca" or "tsne", got {method!r}')
    data = _features(features, "features")
    classes = _as_numpy(labels)
    if classes.shape != (data.shape[0],) or not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(
            f"labels must be {data.shape[0]} integer classes (N,), got shape {classes.shape} "
            f"of dtype {classes.dtype}"
        )
    if class_names is not None and not 0 <= classes.min() <= classes.max() < len(class_names):
        raise ValueError(
            f"labels span {classes.min()}..{classes.max()}: {len(class_names)} class_names "
            f"cannot name them"
        )
    points, used = _two_dimensional(data, method, seed)
    present = np.unique(classes)
    figure = _new_figure(6.5, 6.0, dpi)  # first: it raises the install hint without matplotlib
    from matplotlib import colormaps

    colour_map = colormaps["tab10" if present.size <= 10 else "tab20"]
    axes = figure.subplots()
    for position, label in enumerate(present):
        chosen = classes == label
        name = class_names[label] if class_names is not None else str(label)
        axes.scatter(
            points[chosen, 0],
            points[chosen, 1],
            s=8,
            alpha=0.7,
            color=colour_map(position % colour_map.N),
            label=name,
        )
    axes.legend(markerscale=2, fontsize=8, loc="best", title="class")
    axes.set_title(title or f"{data.shape[0]} embeddings ({data.shape[1]}-D), {used}")
    axes.set_xticks([])
    axes.set_yticks([])
    return _write_png(figure, target)


def _for_display(
    images: np.ndarray,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """(N, C, H, W) → (N, H, W) or (N, H, W, 3) in [0, 1]: de-normalised by ``mean`` and ``std``
    (one value per channel) when given, else stretched from the range of the matching image of
    ``reference`` (itself by default)."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (the data's normalisation), or neither")
    if mean is not None:
        shape = (1, -1, 1, 1)
        shown = images * np.reshape(std, shape) + np.reshape(mean, shape)
    else:
        source = images if reference is None else reference
        low = source.min(axis=(1, 2, 3), keepdims=True)
        span = source.max(axis=(1, 2, 3), keepdims=True) - low
        shown = (images - low) / np.where(span > 0, span, 1.0)
    shown = np.clip(shown, 0.0, 1.0)
    return shown[:, 0] if shown.shape[1] == 1 else np.moveaxis(shown, 1, -1)


def _show(axes: Any, pixels: np.ndarray) -> None:
    axes.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=1)
    _hide_axes(axes)


def retrievals(
    query_images: Any,
    gallery_images: Any,
    features_q: Any,
    features_g: Any,
    path: str | os.PathLike[str],
    k: int = 5,
    *,
    query_labels: Any = None,
    gallery_labels: Any = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dpi: float = 100,
) -> Path:
    """One row per query image: the query, then its ``k`` nearest gallery images by cosine
    similarity of the features (``features_q`` (Q, D) of ``query_images`` (Q, C, H, W),
    ``features_g`` (G, D) of ``gallery_images``), each titled with its similarity; returns the
    PNG's path. With both label arrays, a neighbour's title is green when its class is the
    query's and red otherwise. Size: (k + 1) inches wide, Q + 0.4 high."""
    target = _png_path(path)
    _check_dpi(dpi)
    fq, fg = _features(features_q, "features_q"), _features(features_g, "features_g")
    queries = _images(query_images, "query_images", fq.shape[0])
    gallery = _images(gallery_images, "gallery_images", fg.shape[0])
    found = nearest_neighbours(fq, fg, k)
    unit_q = fq / np.maximum(np.linalg.norm(fq, axis=1, keepdims=True), 1e-12)
    unit_g = fg / np.maximum(np.linalg.norm(fg, axis=1, keepdims=True), 1e-12)
    labelled = query_labels is not None and gallery_labels is not None
    if labelled:
        query_classes, gallery_classes = _as_numpy(query_labels), _as_numpy(gallery_labels)
        if query_classes.shape != (fq.shape[0],) or gallery_classes.shape != (fg.shape[0],):
            raise ValueError(
                f"query_labels {query_classes.shape} and gallery_labels "
                f"{gallery_classes.shape} must hold one class per image: ({fq.shape[0]},) and "
                f"({fg.shape[0]},)"
            )
    shown_q, shown_g = _for_display(queries, mean, std), _for_display(gallery, mean, std)

    count = fq.shape[0]
    figure = _new_figure((k + 1) * _CELL, count * _CELL + 0.4, dpi)
    figure.suptitle(f"{k} nearest neighbours by cosine similarity", fontsize=10)
    grid = figure.subplots(count, k + 1, squeeze=False)
    for row in range(count):
        _show(grid[row, 0], shown_q[row])
        grid[row, 0].set_title("query", fontsize=8, fontweight="bold")
        for column, index in enumerate(found[row], start=1):
            _show(grid[row, column], shown_g[index])
            colour = "black"
            if labelled:
                same = gallery_classes[index] == query_classes[row]
                colour = "tab:green" if same else "tab:red"
            similarity = float(unit_q[row] @ unit_g[index])
            grid[row, column].set_title(f"{similarity:.2f}", fontsize=8, color=colour)
    return _write_png(figure, target)


def reconstruction_grid(
    inputs: Any,
    masked: Any,
    recon: Any,
    path: str | os.PathLike[str],
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    row_names: Sequence[str] = ("input", "masked", "reconstructed"),
    dpi: float = 100,
) -> Path:
    """Three rows of N images (N, C, H, W) each: ``inputs``, ``masked`` (what the autoencoder
    saw: masked, or corrupted for a denoising autoencoder, which ``row_names`` can say) and
    ``recon`` (what it rebuilt); returns the PNG's path. Without ``mean``/``std`` each column is
    stretched by its input's range, so the three images of a column compare.
    Size: N + 1 inches wide (one for the row names), 3.4 high."""
    target = _png_path(path)
    _check_dpi(dpi)
    if len(row_names) != 3:
        raise ValueError(f"row_names must name the 3 rows, got {list(row_names)}")
    originals = _images(inputs, "inputs")
    count = originals.shape[0]
    rows = [originals, _images(masked, "masked", count), _images(recon, "recon", count)]
    figure = _new_figure((count + 1) * _CELL, 3 * _CELL + 0.4, dpi)
    grid = figure.subplots(3, count + 1, squeeze=False)
    for row, (name, images) in enumerate(zip(row_names, rows, strict=True)):
        if images.shape != originals.shape:
            raise ValueError(f"{name} images {images.shape} differ from the inputs' shape")
        grid[row, 0].axis("off")
        grid[row, 0].text(0.5, 0.5, name, ha="center", va="center", fontsize=9)
        for column, pixels in enumerate(_for_display(images, mean, std, originals), start=1):
            _show(grid[row, column], pixels)
    return _write_png(figure, target)
