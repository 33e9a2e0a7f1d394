"""fastnet.distill (distill, the ``fastnet distill`` command) and fastnet.model_table
(compare_models, format_table, save_csv), on tiny random data in seconds."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest

import fastnet as fn
from fastnet import distill as distill_module
from fastnet import models
from fastnet.cli_options import UsageError
from fastnet.data import ArrayDataset
from fastnet.distill import add_arguments, distill, run
from fastnet.export import load_model_file
from fastnet.model_table import COLUMNS, compare_models, format_table, save_csv


def tiny_sets(count=96, test=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count + test)
    images = rng.integers(0, 60, (count + test, 1, 28, 28)).astype(np.uint8)
    for index, label in enumerate(labels):  # a learnable signal: a bright row per class
        images[index, 0, 2 * label + 4, :] = 255
    return (
        ArrayDataset(images[:count], labels[:count]),
        ArrayDataset(images[count:], labels[count:]),
    )


def state(model):
    return {name: value.copy() for name, value in model.state_dict().items()}


def test_distill_trains_the_student_and_leaves_the_teacher_alone():
    train_set, test_set = tiny_sets()
    fn.manual_seed(0)
    teacher = models.create("cnn")
    teacher.train()
    before = state(teacher)
    student = models.create("small-cnn")
    start = state(student)
    history = distill(
        teacher,
        student,
        train_set,
        test_set,
        epochs=1,
        batch_size=32,
        progress=False,
        log=lambda line: None,
    )
    assert len(history["test_acc"]) == 1 and 0.0 <= history["test_acc"][0] <= 1.0
    assert np.isfinite(history["train_loss"][0])
    after = state(teacher)
    assert all(np.array_equal(before[name], after[name]) for name in before)
    assert not teacher.training, "the teacher runs in eval mode"
    assert any(not np.array_equal(start[name], value) for name, value in state(student).items())


def test_alpha_zero_is_the_baseline_step_for_step():
    """Same seed, batches, optimizer and schedule: with α = 0 the teacher changes nothing."""
    train_set, test_set = tiny_sets()
    results = []
    for teacher in (models.create("cnn"), None):
        fn.manual_seed(3)
        student = models.create("dw-cnn")
        history = distill(
            teacher,
            student,
            train_set,
            test_set,
            epochs=1,
            batch_size=32,
            alpha=0.0,
            seed=5,
            progress=False,
            log=lambda line: None,
        )
        results.append((history["train_loss"], state(student)))
    (loss_a, weights_a), (loss_b, weights_b) = results
    assert loss_a == loss_b
    assert all(np.array_equal(weights_a[name], weights_b[name]) for name in weights_a)


def test_distill_rejects_bad_settings():
    train_set, test_set = tiny_sets()
    student = models.create("small-cnn")
    with pytest.raises(ValueError, match="alpha"):
        distill(None, student, train_set, test_set, alpha=1.5, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        distill(None, student, train_set, test_set, temperature=0.0, progress=False)


def test_compare_models_rows(tmp_path):
    _, test_set = tiny_sets(test=300)
    model = models.create("small-cnn")
    path = fn.save(model.state_dict(), tmp_path / "m.safetensors")

    def constant(x):  # a callable row: always class 3, as an array
        out = np.zeros((x.shape[0], 10), np.float32)
        out[:, 3] = 1
        return out

    results = compare_models(
        [("small", model, path), ("constant", constant, None)],
        test_set,
        "cpu",
        min_seconds=0.01,
        latency_runs=3,
    )
    small, fixed = results
    assert list(small) == list(COLUMNS)
    assert small["file_bytes"] == path.stat().st_size and small["parameters"] == 9098
    assert fixed["file_bytes"] is None and fixed["parameters"] is None
    assert fixed["test_accuracy"] == pytest.approx(np.mean(test_set.labels == 3))
    assert small["images_per_second"] > 0 and small["latency_ms"] > 0
    text = format_table(results)
    assert "img/s @256" in text and "constant" in text and "9,098" in text
    written = save_csv(results, tmp_path / "t" / "table.csv")
    rows = list(csv.DictReader(open(written)))
    assert [row["model"] for row in rows] == ["small", "constant"]
    assert rows[1]["parameters"] == ""


def teacher_file(tmp_path):
    fn.manual_seed(1)
    teacher = models.create("cnn", channels=1, image_size=28, classes=10)
    folder = tmp_path / "teacher"
    folder.mkdir()
    path = fn.save(teacher.state_dict(), folder / "model.safetensors")
    config = {
        "model": "cnn",
        "kwargs": {"channels": 1, "image_size": 28, "classes": 10},
        "dataset": "fashion-mnist",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return path


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_command_writes_the_student_and_the_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(distill_module, "build_datasets", lambda name, data_dir: tiny_sets())
    out = tmp_path / "out"
    args = parse(
        "--teacher",
        str(teacher_file(tmp_path)),
        "--student",
        "dw-cnn",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--baseline",
        "--no-progress",
    )
    assert run(args) == 0
    printed = capsys.readouterr().out
    for name in ("teacher", "student-distilled", "student-alone", "latency @1"):
        assert name in printed
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert [row["model"] for row in rows] == ["teacher", "student-distilled", "student-alone"]
    assert int(rows[1]["parameters"]) * 10 <= int(rows[0]["parameters"])
    for folder in (out, out / "alone"):
        model, config = load_model_file(folder / "model.safetensors")
        assert config["model"] == "dw-cnn" and model.num_parameters() == int(rows[1]["parameters"])
        from fastnet.evaluate import load_model

        checkpointed, _ = load_model(folder / "checkpoint.safetensors")
        assert checkpointed.num_parameters() == model.num_parameters()
    assert json.loads((out / "config.json").read_text())["distill"]["with_teacher"] is True
    assert set(json.loads((out / "history.json").read_text())) == {
        "student-distilled",
        "student-alone",
    }


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--alpha", "1.5"], "--alpha"),
        (["--temperature", "0"], "--temperature"),
        (["--epochs", "0"], "--epochs"),
    ],
)
def test_command_user_errors(tmp_path, extra, match):
    args = parse("--teacher", str(teacher_file(tmp_path)), *extra)
    with pytest.raises(UsageError, match=match):
        run(args)


def test_command_missing_or_bad_teacher(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        run(parse("--teacher", str(tmp_path / "missing.safetensors")))
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    fn.save(models.create("cnn").state_dict(), lonely / "model.safetensors")
    with pytest.raises(UsageError, match="config.json"):
        run(parse("--teacher", str(lonely / "model.safetensors")))


def test_the_command_line_runs_it_with_widths_and_augmentation(tmp_path, monkeypatch, capsys):
    from fastnet.cli import main

    monkeypatch.setattr(distill_module, "build_datasets", lambda name, data_dir: tiny_sets())
    out = tmp_path / "out"
    teacher = str(teacher_file(tmp_path))
    options = ["--epochs", "1", "--batch-size", "32", "--no-progress", "--out", str(out)]
    assert main(["distill", "--teacher", teacher, "--widths", "4,6", "--augment", *options]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["kwargs"]["widths"] == [4, 6] and config["distill"]["augment"] is True
    model, _ = load_model_file(out / "model.safetensors")
    assert [m.out_channels for m in model.modules() if isinstance(m, fn.nn.Conv2d)] == [4, 6]
    capsys.readouterr()
    for argv, message in (
        (["--widths", "4,x"], "expected positive integers"),
        (["--student", "mlp", "--widths", "4"], "takes no widths"),
    ):
        assert main(["distill", "--teacher", teacher, *argv, *options]) == 2
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1
