"""``fastnet compress`` end to end on tiny synthetic data: int8 (calibrated and QAT), unstructured
pruning with fine-tuning, channel pruning; the files and the table they leave; the int8 file's
ONNX export; the user errors (one line, exit code 2)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fastnet import compress, data, export, prune, quantize
from fastnet import train as train_module
from fastnet.cli import main


def tiny_sets(*_args, **_kwargs):
    """12x12 images whose class (0-3) is the quadrant holding a bright blob."""
    rng = np.random.default_rng(5)
    labels = np.arange(160) % 4
    images = rng.uniform(0, 60, (160, 1, 12, 12))
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        images[i, 0, 6 * r : 6 * r + 6, 6 * c : 6 * c + 6] += 180
    images = images.astype(np.uint8)
    return data.ArrayDataset(images[:128], labels[:128]), data.ArrayDataset(
        images[128:], labels[128:]
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small CNN trained for a few epochs on the tiny set; its model.safetensors."""
    folder = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "build_datasets", tiny_sets)
        code = main(
            ["train", "--model", "cnn", "--epochs", "4", "--batch-size", "16", "--lr", "0.003"]
            + ["--no-progress", "--out", str(folder)]
        )
    assert code == 0
    return folder / "model.safetensors"


@pytest.fixture(autouse=True)
def tiny_data(monkeypatch):
    monkeypatch.setattr(compress, "build_datasets", tiny_sets)


def table_of(folder):
    with open(folder / compress.TABLE_FILE) as file:
        return list(csv.DictReader(file))


def run_compress(trained, out, *options):
    return main(["compress", "--from", str(trained), "--out", str(out), *options])


def test_int8_calibrated_writes_a_quarter_size_file_and_the_table(trained, tmp_path, capsys):
    assert run_compress(trained, tmp_path, "--quantize", "int8", "--calibration", "minmax") == 0
    printed = capsys.readouterr().out
    assert "int8 (minmax)" in printed and "img/s" in printed
    path = tmp_path / compress.QUANTIZED_FILE
    assert quantize.is_quantized_file(path)
    assert path.stat().st_size <= 0.27 * trained.stat().st_size
    original, int8 = table_of(tmp_path)
    assert int(int8["file_bytes"]) == path.stat().st_size
    assert int(int8["parameters"]) == int(original["parameters"])
    assert abs(float(int8["test_accuracy"]) - float(original["test_accuracy"])) <= 0.1
    # the int8 file exports as a QDQ graph that onnxruntime runs
    pytest.importorskip("onnxruntime")
    assert main(["export", str(path)]) == 0
    assert "int8 QDQ" in capsys.readouterr().out and path.with_suffix(".onnx").is_file()


def test_int8_after_quantization_aware_training(trained, tmp_path):
    options = ("--quantize", "int8", "--qat-epochs", "1", "--batch-size", "32")
    assert run_compress(trained, tmp_path, *options) == 0
    model = quantize.load_quantized(tmp_path / compress.QUANTIZED_FILE)
    assert model.config["compression"]["calibration"] == "qat"


def test_gradual_pruning_keeps_the_pruned_weights_at_zero(trained, tmp_path):
    options = ("--prune", "0.8", "--finetune-epochs", "2", "--batch-size", "16")
    assert run_compress(trained, tmp_path, *options) == 0
    model, config = export.load_model_file(tmp_path / compress.MODEL_FILE)
    assert config["compression"] == {"prune": 0.8, "finetune_epochs": 2}
    reached = prune.sparsity(model).overall
    assert abs(reached - 0.8) < 1e-3
    original, pruned = table_of(tmp_path)
    nonzero = sum(int(np.count_nonzero(p.numpy())) for p in model.parameters())
    assert int(pruned["parameters"]) == nonzero < 0.25 * int(original["parameters"])


def test_channel_pruning_rebuilds_smaller_layers(trained, tmp_path):
    options = ("--prune-channels", "0.5", "--finetune-epochs", "1", "--batch-size", "16")
    assert run_compress(trained, tmp_path, *options) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["kwargs"]["widths"] == [16, 32]
    model, _ = export.load_model_file(tmp_path / compress.MODEL_FILE)
    original, smaller = table_of(tmp_path)
    assert int(smaller["parameters"]) == sum(p.numel() for p in model.parameters())
    assert int(smaller["parameters"]) < int(original["parameters"]) / 2


@pytest.mark.parametrize(
    "options, message",
    [
        ((), "nothing to do"),
        (("--prune", "0.5", "--qat-epochs", "1"), "--qat-epochs needs --quantize int8"),
        (("--quantize", "int8", "--finetune-epochs", "1"), "give --prune or --prune-channels"),
        (("--prune", "1.5"), "strictly between 0 and 1"),
    ],
)
def test_user_errors_are_one_line(trained, tmp_path, capsys, options, message):
    assert run_compress(trained, tmp_path / "out", *options) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1


def test_a_missing_model_file_is_a_user_error(tmp_path, capsys):
    assert (
        main(
            [
                "compress",
                "--from",
                str(tmp_path / "no.safetensors"),
                "--out",
                "x",
                "--quantize",
                "int8",
            ]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
