"""fastnet.pretrain_plots: each picture is a real PNG of its documented size; PCA recovers the
structure of a low-rank set; nearest neighbours by cosine similarity; t-SNE is used when
scikit-learn is there and PCA stands in when it is not; what a grid shows is read back from the
figure as it is written."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import matplotlib.image

import fastnet as fn
import fastnet.pretrain_plots
from fastnet.pretrain_plots import (
    embedding_map,
    nearest_neighbours,
    principal_components,
    reconstruction_grid,
    retrievals,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(height, width) of a PNG with something drawn on it."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]).round(2), axis=0)) > 20
    return pixels.shape[:2]


@pytest.fixture
def drawn(monkeypatch):
    """The figures the functions write, in order (each still written)."""
    figures = []
    write_png = fastnet.pretrain_plots._write_png

    def keep(figure, target):
        figures.append(figure)
        return write_png(figure, target)

    monkeypatch.setattr(fastnet.pretrain_plots, "_write_png", keep)
    return figures


def test_pca_recovers_a_plane_hidden_in_many_dimensions(rng):
    """Points on a 2-D plane of a 40-D space (plus a little noise): the two components span
    the plane (the true coordinates are a linear function of them, nearly exactly), ordered
    by variance, and the result does not depend on the rows' order."""
    plane = rng.standard_normal((2, 40))
    coordinates = rng.standard_normal((301, 2)) * [5.0, 2.0]
    features = (
        coordinates @ plane + rng.standard_normal(40) * 3 + 1e-3 * rng.standard_normal((301, 40))
    )
    found = principal_components(features)
    assert found.shape == (301, 2)
    assert abs(found.mean(axis=0)).max() < 1e-9
    fit, residual, *_ = np.linalg.lstsq(np.c_[found, np.ones(301)], coordinates, rcond=None)
    assert residual.max() / (coordinates**2).sum(axis=0).min() < 1e-5
    assert found[:, 0].var() > found[:, 1].var()
    shuffled = rng.permutation(301)
    assert np.allclose(principal_components(features[shuffled]), found[shuffled])
    with pytest.raises(ValueError, match="count must be"):
        principal_components(features, 41)


def test_nearest_neighbours_by_cosine_similarity(rng):
    gallery = rng.standard_normal((23, 7))
    query = gallery[[4, 17]] * [[3.0], [0.2]]  # scaled copies: cosine similarity 1
    found = nearest_neighbours(fn.tensor(query), gallery, 5)
    assert found.shape == (2, 5) and found[:, 0].tolist() == [4, 17]
    unit = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    expected = np.argsort(-(unit[[4, 17]] @ unit.T), axis=1)[:, :5]
    assert np.array_equal(found, expected)
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(query, gallery, 24)


def test_embedding_map_writes_its_size_and_colours_each_class(tmp_path, rng, drawn):
    labels = rng.integers(0, 10, 200)
    features = rng.standard_normal((200, 16)) + 3 * np.eye(16)[labels]
    path = embedding_map(fn.tensor(features.astype(np.float32)), labels, tmp_path / "map.png")
    assert path == tmp_path / "map.png"
    assert png_size(path) == (600, 650)  # 6.5 × 6 inches
    axes = drawn[0].axes[0]
    assert len(axes.collections) == len(np.unique(labels))
    assert "PCA" in axes.get_title()
    names = [f"digit {d}" for d in range(10)]
    embedding_map(features, labels, tmp_path / "named.png", class_names=names, dpi=50)
    assert png_size(tmp_path / "named.png") == (300, 325)
    legend = [text.get_text() for text in drawn[1].axes[0].get_legend().get_texts()]
    assert legend == [names[d] for d in np.unique(labels)]
    with pytest.raises(ValueError, match="cannot name them"):
        embedding_map(features, labels, tmp_path / "bad.png", class_names=names[:9])


def test_tsne_runs_when_scikit_learn_is_there_else_pca(tmp_path, rng, drawn, monkeypatch):
    labels = rng.integers(0, 3, 40)
    features = rng.standard_normal((40, 5))
    monkeypatch.setitem(sys.modules, "sklearn", None)  # not installed
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    embedding_map(features, labels, tmp_path / "fallback.png", method="tsne")
    assert "PCA (t-SNE needs scikit-learn)" in drawn[0].axes[0].get_title()

    calls = []

    class FakeTSNE:
        def __init__(self, **options):
            calls.append(options)

        def fit_transform(self, data):
            return data[:, :2] * 0 + np.arange(2)

    monkeypatch.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))
    monkeypatch.setitem(sys.modules, "sklearn.manifold", types.SimpleNamespace(TSNE=FakeTSNE))
    embedding_map(features, labels, tmp_path / "tsne.png", method="tsne", seed=7)
    assert "t-SNE" in drawn[1].axes[0].get_title()
    assert calls[0]["random_state"] == 7 and calls[0]["perplexity"] == 13.0


def test_retrievals_grid_shows_each_query_and_its_neighbours(tmp_path, rng, drawn):
    gallery_images = rng.standard_normal((30, 1, 9, 9)).astype(np.float32)
    gallery_features = rng.standard_normal((30, 8))
    gallery_labels = rng.integers(0, 4, 30)
    picked = [3, 11, 20]
    path = retrievals(
        gallery_images[picked],
        fn.tensor(gallery_images),
        gallery_features[picked],
        gallery_features,
        tmp_path / "retrievals.png",
        k=4,
        query_labels=gallery_labels[picked],
        gallery_labels=gallery_labels,
    )
    assert png_size(path) == (340, 500)  # (4 + 1) × (3 + 0.4) inches
    grid = drawn[0].axes
    assert len(grid) == 3 * 5
    # each query's nearest is itself, similarity 1.00, the same class: green
    for row in range(3):
        nearest = grid[row * 5 + 1]
        assert nearest.get_title() == "1.00" and nearest.title.get_color() == "tab:green"
        shown = nearest.get_images()[0].get_array()
        image = gallery_images[picked[row], 0]
        assert np.allclose(shown, (image - image.min()) / np.ptp(image))


def test_reconstruction_grid_rows_and_denormalisation(tmp_path, rng, drawn):
    inputs = rng.standard_normal((5, 1, 7, 7)).astype(np.float32)
    masked = inputs * (rng.random((5, 1, 7, 7)) > 0.5)
    recon = inputs + 0.1 * rng.standard_normal((5, 1, 7, 7))
    path = reconstruction_grid(inputs, fn.tensor(masked), recon, tmp_path / "grid.png")
    assert png_size(path) == (340, 600)  # (5 + 1) × 3.4 inches
    grid = drawn[0].axes
    assert [grid[row * 6].texts[0].get_text() for row in range(3)] == [
        "input",
        "masked",
        "reconstructed",
    ]
    # a column shares its input's range, so a masked 0 stays where the input puts 0
    low, span = inputs[2].min(), np.ptp(inputs[2])
    shown = grid[6 + 3].get_images()[0].get_array()
    assert np.allclose(shown, np.clip((masked[2, 0] - low) / span, 0, 1))

    mean, std = (0.1307,), (0.3081,)
    rgb = rng.standard_normal((2, 3, 4, 4))
    names = ("clean", "corrupted", "denoised")
    reconstruction_grid(
        rgb, rgb, rgb, tmp_path / "rgb.png", mean=mean * 3, std=std * 3, row_names=names, dpi=50
    )
    assert png_size(tmp_path / "rgb.png") == (170, 150)
    assert drawn[1].axes[3].texts[0].get_text() == "corrupted"
    shown = drawn[1].axes[1].get_images()[0].get_array()
    assert np.allclose(shown, np.clip(np.moveaxis(rgb[0], 0, -1) * 0.3081 + 0.1307, 0, 1))
    with pytest.raises(ValueError, match="differ from the inputs"):
        reconstruction_grid(inputs, masked[:, :, :6], recon, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="both mean and std"):
        reconstruction_grid(inputs, masked, recon, tmp_path / "bad.png", mean=mean)


def test_missing_matplotlib_names_the_plot_extra(tmp_path, rng, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"\.\[plot\]"):
        embedding_map(rng.standard_normal((5, 3)), np.arange(5), tmp_path / "map.png")
