"""fastnet.plots: each function writes a real PNG of the documented size, atomically, and refuses
bad input with a clear error. What the figures show (texts, panels, colours, line data) is read
back from matplotlib's objects, captured as they are written; their look was checked by eye."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import matplotlib.colors
import matplotlib.figure
import matplotlib.image

import fastnet.plots
from fastnet.plots import plot_confusion_matrix, plot_feature_maps, plot_training_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HISTORY = {
    "train_loss": [2.3, 1.1, 0.7, 0.5, 0.41],
    "test_loss": [2.0, 1.2, 0.9, 0.8, 0.78],
    "train_acc": [0.3, 0.6, 0.75, 0.83, 0.86],
    "test_acc": [0.35, 0.58, 0.7, 0.76, 0.77],
}


class FakeTensor:
    def __init__(self, array):
        self.array = np.asarray(array)

    def numpy(self):
        return self.array


def read_png(path: Path) -> np.ndarray:
    """The image as (H, W, 4) floats, after checking it is a PNG with something drawn on it."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] == 4
    distinct_colours = np.unique(pixels.reshape(-1, 4).round(2), axis=0)
    assert len(distinct_colours) > 20, "the image is (nearly) blank"
    return pixels


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions write, in order (each still written as usual)."""
    figures = []
    write_png = fastnet.plots._write_png

    def keep(figure, target):
        figures.append(figure)
        return write_png(figure, target)

    monkeypatch.setattr(fastnet.plots, "_write_png", keep)
    return figures


def only_file_in(folder: Path) -> Path:
    """The folder's one file: a temporary file left beside it would be a defect."""
    files = list(folder.iterdir())
    assert len(files) == 1, files
    return files[0]


@pytest.mark.parametrize(
    "history, panels",
    [
        (HISTORY, 2),  # a loss panel and an accuracy panel
        ({"train_loss": [1.0, 0.5, 0.4]}, 1),
        ({**HISTORY, "lr": [0.1, 0.1, 0.01, 0.01, 0.001]}, 3),
    ],
)
def test_training_curves_png_is_five_by_four_inches_per_panel(tmp_path, history, panels):
    path = tmp_path / "curves.png"
    assert plot_training_curves(history, path) == path
    assert read_png(path).shape[:2] == (400, 500 * panels)
    assert only_file_in(tmp_path) == path


def test_training_curves_accept_tensors_one_epoch_a_str_path_and_dpi(tmp_path):
    history = {"train_loss": FakeTensor([0.9]), "val_acc": FakeTensor(np.array([0.5], np.float32))}
    path = plot_training_curves(history, str(tmp_path / "new" / "folder" / "one.png"), dpi=50)
    assert read_png(path).shape[:2] == (200, 500)


def test_confusion_matrix_png_size_follows_the_number_of_classes(tmp_path, rng):
    small = rng.integers(1, 50, size=(3, 3))
    path = plot_confusion_matrix(small, tmp_path / "small.png", normalize=False)
    assert read_png(path).shape[:2] == (400, 500)  # the 5 x 4 inch minimum
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    cifar = rng.integers(0, 30, size=(10, 10)) + np.diag(rng.integers(500, 900, size=10))
    cifar[4] = 0  # a class absent from the labels: its normalised row stays zeros
    path = plot_confusion_matrix(FakeTensor(cifar), tmp_path / "cifar.png", class_names=names)
    assert read_png(path).shape[:2] == (750, 850)  # (0.6·10 + 1.5) x (0.6·10 + 2.5) inches


def test_feature_maps_png_size_follows_the_layers(tmp_path, rng):
    layers = [
        ("conv1", rng.standard_normal((16, 13, 13))),  # two rows of eight channels
        ("conv2", FakeTensor(rng.standard_normal((1, 5, 6, 6)))),  # batch axis of one; one row
    ]
    image = rng.random((3, 13, 13))  # channel-first RGB
    path = plot_feature_maps(layers, tmp_path / "maps.png", image=image)
    # width 8 columns x 1.1 in; height 2.4 (input) + (2 x 1.1 + 0.45) + (1 x 1.1 + 0.45) in
    assert read_png(path).shape[:2] == (660, 880)


def test_feature_maps_without_image_and_few_channels(tmp_path, rng):
    path = plot_feature_maps([("conv", rng.standard_normal((3, 9, 7)))], tmp_path / "maps.png")
    assert read_png(path).shape[:2] == (155, 400)  # 1.1 + 0.45 in high, the 4 in minimum wide


def test_feature_maps_cap_the_channels_shown(tmp_path, rng):
    layers = [("conv", rng.standard_normal((40, 5, 5)))]
    tall = read_png(plot_feature_maps(layers, tmp_path / "a.png", max_channels=40))
    short = read_png(plot_feature_maps(layers, tmp_path / "b.png", max_channels=8))
    assert tall.shape[0] == round((5 * 1.1 + 0.45) * 100)
    assert short.shape[0] == round((1 * 1.1 + 0.45) * 100)


@pytest.mark.parametrize(
    "image", [np.ones((28, 28)), np.zeros((1, 28, 28)), np.full((28, 28, 3), 200, np.uint8)]
)
def test_feature_maps_accept_grey_channel_first_and_uint8_images(tmp_path, rng, image):
    layers = [("conv", rng.standard_normal((4, 26, 26)))]
    read_png(plot_feature_maps(layers, tmp_path / "maps.png", image=image))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    path.write_bytes(b"previous plot")

    def failing_savefig(self, file, **kwargs):
        file.write(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", failing_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_training_curves(HISTORY, path)
    assert only_file_in(tmp_path) == path
    assert path.read_bytes() == b"previous plot"


def test_plots_never_load_pyplot(tmp_path):
    """Drawing on the Agg canvas directly: no GUI backend, the caller's pyplot state untouched."""
    script = (
        "import sys, numpy as np\n"
        "from fastnet.plots import plot_training_curves, plot_confusion_matrix, plot_feature_maps\n"
        f"plot_training_curves({{'train_loss': [1.0, 0.5]}}, {str(tmp_path / 'a.png')!r})\n"
        f"plot_confusion_matrix(np.eye(2), {str(tmp_path / 'b.png')!r})\n"
        f"plot_feature_maps([('c', np.ones((2, 3, 3)))], {str(tmp_path / 'c.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.iterdir())) == 3


@pytest.mark.parametrize(
    "plot",
    [
        lambda path: plot_training_curves(HISTORY, path),
        lambda path: plot_confusion_matrix(np.eye(2), path),
        lambda path: plot_feature_maps([("conv", np.ones((2, 3, 3)))], path, image=np.ones((3, 3))),
    ],
)
def test_missing_matplotlib_says_how_to_install_it(tmp_path, monkeypatch, plot):
    for module in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
        monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules makes import fail
    with pytest.raises(ImportError, match=r"bash scripts/setup\.sh plot"):
        plot(tmp_path / "plot.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: plot_training_curves({}, p), "history must be a non-empty dict"),
        (
            lambda p: plot_training_curves({"train_loss": []}, p),
            r"history\['train_loss'\] must be a non-empty list",
        ),
        (lambda p: plot_training_curves({"loss": [[1, 2]]}, p), r"got shape \(1, 2\)"),
        (
            lambda p: plot_training_curves(HISTORY, p.with_suffix(".pdf")),
            "path must end in .png, got '.*plot.pdf'",
        ),
        (lambda p: plot_training_curves(HISTORY, p, dpi=0), "dpi must be a positive number, got 0"),
        (
            lambda p: plot_confusion_matrix(np.ones((2, 3)), p),
            r"square \(C, C\) matrix, got shape \(2, 3\)",
        ),
        (lambda p: plot_confusion_matrix(np.ones((0, 0)), p), r"non-empty square"),
        (lambda p: plot_confusion_matrix(-np.eye(2), p), "negative entries"),
        (lambda p: plot_confusion_matrix(np.array([[1.0, np.nan], [0, 1]]), p), "finite numbers"),
        (
            lambda p: plot_confusion_matrix(np.eye(3), p, class_names=["a", "b"]),
            "class_names has 2 names for a 3-class",
        ),
        (lambda p: plot_feature_maps([], p), "at least one"),
        (
            lambda p: plot_feature_maps([("conv1", np.ones((4, 4)))], p),
            r"layer 'conv1': activations must be \(C, H, W\).*got shape \(4, 4\)",
        ),
        (
            lambda p: plot_feature_maps([("conv1", np.ones((2, 3, 4, 4)))], p),
            r"got shape \(2, 3, 4, 4\)",
        ),
        (lambda p: plot_feature_maps([np.ones((2, 4, 4))], p), r"\(name, activations\) pair"),
        (
            lambda p: plot_feature_maps([("c", np.ones((2, 4, 4)))], p, image=np.ones((2, 5, 5))),
            r"image must be .*got shape \(2, 5, 5\)",
        ),
        (
            lambda p: plot_feature_maps([("c", np.ones((2, 4, 4)))], p, max_channels=0),
            "max_channels must be a positive integer, got 0",
        ),
    ],
)
def test_bad_input_raises_a_clear_error_and_writes_nothing(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path / "plot.png")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- what the figures show
LOW_DPI = 20  # the content does not depend on the resolution, the drawing time does


def cell_texts(axes) -> dict[tuple[int, int], str]:
    """(row, column) → text of the numbers written in the heatmap's cells."""
    return {
        (round(text.get_position()[1]), round(text.get_position()[0])): text.get_text()
        for text in axes.texts
    }


def test_confusion_matrix_at_99_percent_shows_every_error(tmp_path, rng, drawn):
    matrix = np.diag(rng.integers(980, 1000, size=10))
    errors = {(3, 5): 1, (7, 2): 4, (0, 9): 12}
    for cell, count in errors.items():
        matrix[cell] = count
    plot_confusion_matrix(matrix, tmp_path / "cm.png", dpi=LOW_DPI)
    axes = drawn[0].axes[0]
    texts = cell_texts(axes)
    diagonal = {(i, i): f"{matrix[i, i]:,}" for i in range(10)}
    assert texts == {**diagonal, **{cell: str(count) for cell, count in errors.items()}}
    colours = axes.images[0].to_rgba(axes.images[0].get_array())
    white = np.ones(4)
    assert np.array_equal(colours[1, 2], white)  # no error there: blank
    for cell in errors:  # the rarest error still gets a colour well away from white
        assert np.abs(colours[cell] - white).max() > 0.15, cell
    correct = np.trace(matrix)
    assert axes.get_title() == (
        f"Confusion matrix: {correct:,} of {matrix.sum():,} correct "
        f"({100 * correct / matrix.sum():.2f}%)"
    )


def test_confusion_matrix_colours_by_row_share_unless_told_otherwise(tmp_path, drawn):
    matrix = np.array([[5, 5, 0], [5, 0, 995], [0, 0, 7]])  # two 5s: half a row, 0.5% of one
    plot_confusion_matrix(matrix, tmp_path / "share.png", dpi=LOW_DPI)
    plot_confusion_matrix(matrix, tmp_path / "count.png", normalize=False, dpi=LOW_DPI)
    for figure, same in zip(drawn, (False, True), strict=True):
        image = figure.axes[0].images[0]
        colours = image.to_rgba(image.get_array())
        assert np.array_equal(colours[0, 1], colours[1, 0]) == same
        assert cell_texts(figure.axes[0])[(1, 0)] == "5"  # counts written either way
    assert "share of the true class" in drawn[0].axes[1].get_ylabel()  # the colour bar
    assert cell_texts(drawn[0].axes[0])[(1, 1)] == "0"  # a class never recognised shows its 0


def test_training_curves_show_accuracy_in_percent_and_a_learning_rate_panel(tmp_path, drawn):
    per_step = np.geomspace(0.1, 1e-4, 20)  # 4 steps in each of 5 epochs
    plot_training_curves(HISTORY, tmp_path / "curves.png", lr=per_step, dpi=LOW_DPI)
    loss, accuracy, rate = drawn[0].axes
    assert [a.get_title() for a in drawn[0].axes] == ["Loss", "Accuracy (%)", "Learning rate"]
    assert accuracy.get_ylabel() == "accuracy (%)"
    lines = {line.get_label(): line.get_ydata() for line in accuracy.get_lines()}
    np.testing.assert_allclose(lines["train"], 100 * np.array(HISTORY["train_acc"]))
    np.testing.assert_allclose(lines["test"], 100 * np.array(HISTORY["test_acc"]))
    (schedule,) = rate.get_lines()
    np.testing.assert_allclose(schedule.get_xdata(), np.arange(1, 21) / 4)  # spread over epochs
    np.testing.assert_allclose(schedule.get_ydata(), per_step)
    assert rate.get_yscale() == "log" and loss.get_yscale() == "linear"
    assert all(a.get_xlabel() == "epoch" for a in drawn[0].axes)


def test_a_per_epoch_learning_rate_from_the_history_lands_on_the_epochs(tmp_path, drawn):
    history = {**HISTORY, "lr": [0.1, 0.1, 0.09, 0.08, 0.07]}  # within a factor of 10: linear
    plot_training_curves(history, tmp_path / "curves.png", dpi=LOW_DPI)
    rate = drawn[0].axes[-1]
    assert rate.get_title() == "Learning rate" and rate.get_yscale() == "linear"
    np.testing.assert_allclose(rate.get_lines()[0].get_xdata(), [1, 2, 3, 4, 5])


@pytest.mark.parametrize(
    "history, lr, message",
    [
        ({**HISTORY, "lr": [0.1] * 5}, [0.1] * 5, "give the learning rate once"),
        (HISTORY, [], "lr must be a non-empty list"),
        (HISTORY, [[0.1, 0.2]], r"lr must be .*got shape \(1, 2\)"),
    ],
)
def test_bad_learning_rates_are_refused(tmp_path, history, lr, message):
    with pytest.raises(ValueError, match=message):
        plot_training_curves(history, tmp_path / "curves.png", lr=lr)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "true_label, predicted_label, title, colour",
    [
        ("7", "1", "true 7, predicted 1 (wrong)", "tab:red"),
        ("cat", "cat", "true cat, predicted cat", "black"),
        (None, "3", "predicted 3", "black"),
    ],
)
def test_feature_maps_title_the_true_and_predicted_label(
    tmp_path, rng, drawn, true_label, predicted_label, title, colour
):
    layers = [("conv", rng.standard_normal((3, 9, 7)))]
    path = plot_feature_maps(
        layers,
        tmp_path / "maps.png",
        true_label=true_label,
        predicted_label=predicted_label,
        dpi=LOW_DPI,
    )
    heading = drawn[0]._suptitle
    assert heading.get_text() == title
    assert matplotlib.colors.same_color(heading.get_color(), colour)
    assert read_png(path).shape[:2] == (39, 80)  # 0.4 in of title above 1.1 + 0.45 in; 4 in


def test_feature_maps_without_labels_have_no_title(tmp_path, rng, drawn):
    plot_feature_maps(
        [("conv", rng.standard_normal((3, 9, 7)))], tmp_path / "maps.png", dpi=LOW_DPI
    )
    assert drawn[0]._suptitle is None
