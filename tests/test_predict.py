"""fastnet.predict end to end (issue 15): train briefly as `fastnet train` does, then classify
image files — the 20 CIFAR-10 sample PNGs, and MNIST test digits saved as PNG."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import fastnet as fn
from fastnet import data
from fastnet.predict import predict
from fastnet.train import eval_transform, run

Image = pytest.importorskip("PIL.Image")

CONFIG = {"optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0, "batch_size": 16, "seed": 3}


def quiet(*_):
    pass


def _forward(checkpoint: Path, images: np.ndarray) -> np.ndarray:
    """The trained model's own logits for float32 (N, C, H, W) images in [0, 1]."""
    from fastnet.evaluate import load_model

    model, saved = load_model(checkpoint)
    model.eval()
    with fn.no_grad():
        return model(fn.tensor(eval_transform(saved["config"])(images))).numpy()


def _check(results, paths, logits, names, k):
    assert [path for path, _ in results] == [str(p) for p in paths]
    for (_, top), row in zip(results, logits, strict=True):
        assert len(top) == k and len({name for name, _ in top}) == k
        probabilities = [p for _, p in top]
        assert all(0 < p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-9
        assert probabilities == sorted(probabilities, reverse=True)
        assert top[0][0] == names[int(np.argmax(row))]  # the model's own top-1
        expected = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        np.testing.assert_allclose(probabilities, np.sort(expected)[::-1][:k], rtol=1e-5)


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory, shared_data):
    paths = sorted((shared_data / "cifar10-sample").glob("cifar10_*.png"))
    assert len(paths) == 20
    images = np.stack([data.decode_image(path) for path in paths])
    labels = np.array([int(re.fullmatch(r"cifar10_\d+_(\d)\.png", p.name)[1]) for p in paths])
    sample = data.ArrayDataset(images, labels)
    out = tmp_path_factory.mktemp("cifar-run")
    config = dict(CONFIG, dataset="cifar10", model="mlp")
    run(config, 3, str(out), datasets=(sample, sample), progress=False, log=quiet)
    return out / "checkpoint.safetensors", paths, images


def test_predict_on_the_cifar10_sample_pngs(cifar_run):
    checkpoint, paths, images = cifar_run
    results = predict(checkpoint, paths, top_k=3)
    _check(results, paths, _forward(checkpoint, images), data.CIFAR10.class_names, 3)
    assert {name for _, top in results for name, _ in top} <= set(data.CIFAR10.class_names)


def test_the_predict_command_prints_the_models_top_classes(cifar_run, capsys):
    from fastnet.cli import main

    checkpoint, paths, images = cifar_run
    assert main(["predict", str(checkpoint), *map(str, paths), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    logits = _forward(checkpoint, images)
    assert len(lines) == len(paths)
    for line, path, row in zip(lines, paths, logits, strict=True):
        name, top = line.split(": ", 1)
        assert name == path.name and len(top.split(", ")) == 2
        assert top.split(" ")[0] == data.CIFAR10.class_names[int(np.argmax(row))]


def test_predict_on_mnist_digits_saved_as_png(tmp_path, shared_data):
    train = data.subset(data.MNIST(root=shared_data, train=True), labels_per_class=30, seed=0)
    out = tmp_path / "run"
    config = dict(CONFIG, dataset="mnist", model="cnn", batch_size=32)
    run(config, 1, str(out), datasets=(train, train.take(np.arange(20))), progress=False, log=quiet)
    test = data.MNIST(root=shared_data, train=False)
    paths = []
    for index in range(12):
        paths.append(tmp_path / f"digit_{index}.png")
        Image.fromarray(test.images[index, 0]).save(paths[-1])
    results = predict(out / "checkpoint.safetensors", [str(p) for p in paths], top_k=10)
    logits = _forward(out / "checkpoint.safetensors", test.float_images()[:12])
    _check(results, paths, logits, data.MNIST.class_names, 10)
    correct = [
        top[0][0] == str(label) for (_, top), label in zip(results, test.labels[:12], strict=True)
    ]
    assert sum(correct) >= 6  # 300 digits and one epoch already beat chance by far


def test_channels_are_converted_and_sizes_are_never_changed_silently(tmp_path, cifar_run, rng):
    checkpoint, paths, _ = cifar_run
    gray = tmp_path / "gray.png"
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(gray)
    ((_, top),) = predict(checkpoint, [gray], top_k=2)  # a grayscale image for an RGB model
    assert len(top) == 2
    big = tmp_path / "big.png"
    Image.open(paths[0]).resize((40, 36)).save(big)
    with pytest.raises(
        ValueError, match=r"big.png: the image is 40x36 pixels but the model takes 32x32"
    ):
        predict(checkpoint, [big])
    ((_, resized),) = predict(checkpoint, [big], top_k=1, resize=True)
    assert len(resized) == 1


def test_clear_errors(tmp_path, cifar_run):
    checkpoint, paths, _ = cifar_run
    with pytest.raises(FileNotFoundError, match="no image at .*missing.png"):
        predict(checkpoint, [paths[0], tmp_path / "missing.png"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(paths[0].read_bytes()[:60])
    with pytest.raises(ValueError, match="broken.png: cannot decode as an image"):
        predict(checkpoint, [broken])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png: cannot decode as an image"):
        predict(checkpoint, [text])
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        predict(tmp_path / "none.safetensors", paths)
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="top_k must be a positive int"):
            predict(checkpoint, paths, top_k=bad)
    with pytest.raises(ValueError, match="list of image paths"):
        predict(checkpoint, str(paths[0]))
    assert len(predict(checkpoint, paths[:1], top_k=50)[0][1]) == 10  # every class, no more
