"""fastnet eval (fastnet.evaluate): a ResNet-8 trained here for a few steps on real MNIST images
is rebuilt from its checkpoint; the printed accuracy must equal fastnet.train.evaluate's and
the training run's own, and both plots must be written where the output says."""

import argparse
import re
import struct

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
import fastnet.plots
from fastnet import evaluate as fn_eval
from fastnet import models
from fastnet.data import DataLoader
from fastnet.train import build_datasets, eval_transform, evaluate, run

DATA = "/work/shared/data"
CONFIG = {
    "dataset": "mnist",
    "model": "resnet8",
    "optimizer": "adam",
    "lr": 1e-2,
    "batch_size": 32,
    "seed": 0,
    "kwargs": {"channels": 1, "image_size": 28, "classes": 10, "width": 2},
}


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """One epoch (two steps) over 64 MNIST training images, tested on the first 200 test images."""
    train_set, test_set = build_datasets("mnist", DATA)
    sets = train_set.take(np.arange(64)), test_set.take(np.arange(200))
    out = tmp_path_factory.mktemp("run")
    result = run(dict(CONFIG), 1, str(out), datasets=sets, progress=False, log=quiet)
    return out / "checkpoint.safetensors", sets, result["history"]


def parse(argv):
    parser = argparse.ArgumentParser()
    fn_eval.add_arguments(parser)
    return parser.parse_args(argv)


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_eval_prints_the_accuracy_of_evaluate_and_writes_both_plots(
    mnist_run, tmp_path, monkeypatch, capsys
):
    checkpoint, sets, history = mnist_run
    requested = []

    def test_split_of(name, data_dir):  # the 200-image test split stands in for the full one
        requested.append((name, data_dir))
        return sets

    monkeypatch.setattr(fn_eval.train, "build_datasets", test_split_of)
    figures = []
    write_png = fastnet.plots._write_png
    monkeypatch.setattr(
        fastnet.plots, "_write_png", lambda f, target: figures.append(f) or write_png(f, target)
    )
    plots = tmp_path / "plots"
    args = parse(
        [
            str(checkpoint),
            "--data-dir",
            DATA,
            "--show-features",
            "5",
            "--out",
            str(plots),
            "--max-channels",
            "4",
        ]
    )
    assert fn_eval.run(args) == 0
    printed = capsys.readouterr().out
    assert requested == [("mnist", DATA)]  # the dataset named in the checkpoint's config

    model = models.create(CONFIG["model"], **CONFIG["kwargs"])
    model.load_state_dict(fn.load(checkpoint))
    expected = evaluate(model, DataLoader(sets[1], batch_size=64, transform=eval_transform(CONFIG)))
    correct, total = map(
        int, re.search(r"accuracy [\d.]+% \((\d+)/(\d+) correct\)", printed).groups()
    )
    assert total == 200 and correct / total == expected["accuracy"] == history["test_acc"][-1]
    report_accuracy = float(re.search(r"^\s*accuracy\s+([\d.]+)\s+200$", printed, re.M).group(1))
    assert report_accuracy == round(expected["accuracy"], 3)
    assert "macro avg" in printed and "precision" in printed

    for name in ("confusion_matrix.png", "feature_maps_5.png"):
        assert str(plots / name) in printed
        width, height = png_size(plots / name)
        assert width > 300 and height > 300
    label = sets[1].labels[5]
    guess = re.search(
        rf"feature maps of 9 convolutions for test image 5 \(true {label}, predicted (\d)\)",
        printed,
    ).group(1)
    confusion, features = figures
    counts = [int(text.get_text()) for text in confusion.axes[0].texts]
    assert sum(counts) == 200  # every image counted in a written cell, the blank cells are 0
    diagonal = [t for t in confusion.axes[0].texts if t.get_position()[0] == t.get_position()[1]]
    assert sum(int(t.get_text()) for t in diagonal) == correct
    assert features._suptitle.get_text().startswith(f"true {label}, predicted {guess}")


def test_eval_without_matplotlib_still_reports(mnist_run, tmp_path, monkeypatch, capsys):
    checkpoint, sets, _ = mnist_run
    real_find_spec = fn_eval.importlib.util.find_spec
    monkeypatch.setattr(
        fn_eval.importlib.util,
        "find_spec",
        lambda name, *rest: None if name == "matplotlib" else real_find_spec(name, *rest),
    )
    result = fn_eval.evaluate_checkpoint(
        checkpoint, sets[1], out=tmp_path, show_features=0, log=print
    )
    assert "no plots: they need matplotlib" in capsys.readouterr().out
    assert result["files"] == [] and list(tmp_path.iterdir()) == []


def test_eval_refuses_what_it_cannot_use(mnist_run, tmp_path, capsys):
    checkpoint, sets, _ = mnist_run
    model = models.create(CONFIG["model"], **CONFIG["kwargs"])
    fn.save(model.state_dict(), tmp_path / "weights.safetensors")
    fn.save_checkpoint(
        tmp_path / "no_dataset.safetensors",
        model,
        config={"model": CONFIG["model"], "kwargs": CONFIG["kwargs"]},
    )
    cases = [
        ([str(tmp_path / "missing.safetensors")], "no checkpoint at"),
        ([str(tmp_path / "weights.safetensors")], "not a fastnet checkpoint"),
        ([str(tmp_path / "no_dataset.safetensors")], "does not say which dataset"),
        (
            [str(checkpoint), "--data-dir", DATA, "--show-features", "10000"],
            "not an index of the 10000 test images",
        ),
    ]
    for argv, message in cases:
        assert fn_eval.run(parse(argv)) == 2
        error = capsys.readouterr().err
        assert error.startswith("fastnet eval: ") and message in error, error


def test_conv_feature_maps_follow_the_forward_pass_and_leave_no_hook(rng):
    model = models.create("resnet8", width=2, classes=3)
    model.train()
    model.features.layer1.eval()  # a part frozen in eval mode stays so
    x = fn.tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    layers = fn_eval.conv_feature_maps(model, x)
    assert [name for name, _ in layers[:4]] == [
        "features.conv",
        "features.layer1.0.conv1",
        "features.layer1.0.conv2",
        "features.layer2.0.conv1",
    ]
    assert len(layers) == 9 and layers[-1][1].shape == (8, 2, 2)
    stem = model.features.conv
    np.testing.assert_allclose(
        layers[0][1], F.conv2d(x, stem.weight, padding=1).numpy()[0], rtol=1e-6
    )
    assert model.training and model.head.training and not model.features.layer1.training
    assert not any("forward" in vars(module) for module in model.modules())
