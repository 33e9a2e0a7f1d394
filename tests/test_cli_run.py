"""The command line's run lifecycle: resume (its folder, its banner, its plan), the NaN guard,
--threads after the subcommand, help with defaults, and ``fastnet predict``'s output.

The datasets are tiny synthetic stand-ins (``fastnet.train.build_datasets`` is patched)."""

import json
import sys
import types

import numpy as np
import pytest

import fastnet as fn
from fastnet import data
from fastnet import train as train_module
from fastnet.cli import build_parser, main


def tiny_sets(*_args, **_kwargs):
    """8x8 images whose class (0-3) is the quadrant holding a bright blob."""
    rng = np.random.default_rng(7)
    labels = np.arange(96) % 4
    images = rng.uniform(0, 60, (96, 1, 8, 8))
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        images[i, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 180
    images = images.astype(np.uint8)
    return data.ArrayDataset(images[:64], labels[:64]), data.ArrayDataset(images[64:], labels[64:])


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_module, "build_datasets", tiny_sets)
    return tmp_path


TRAIN = ["train", "--model", "mlp", "--batch-size", "16", "--no-progress"]


def test_resume_writes_into_the_checkpoints_folder_and_prints_the_saved_config(workdir, capsys):
    first = [*TRAIN, "--optimizer", "sgd", "--lr", "0.05", "--schedule", "none", "--epochs", "1"]
    assert main([*first, "--out", "a"]) == 0
    capsys.readouterr()
    # no --out, and the defaults (cnn, adam, lr 0.002) of the flags must not leak in
    assert main(["train", "--resume", "a/checkpoint.safetensors", "--epochs", "2"]) == 0
    banner = capsys.readouterr().out.splitlines()[0]
    assert "resuming a/checkpoint.safetensors after epoch 1, up to epoch 2" in banner
    assert "mlp on mnist" in banner and "sgd lr 0.05" in banner and "run folder a" in banner
    assert not (workdir / "runs").exists()
    assert fn.load_checkpoint(workdir / "a" / "checkpoint.safetensors")["epoch"] == 2
    assert json.loads((workdir / "a" / "history.json").read_text())["epoch"] == [1, 2]


def test_resume_without_epochs_finishes_the_planned_schedule(workdir, capsys):
    # patience 0 stops after epoch 1 of a 3-epoch one-cycle plan, as an interrupted run would
    plan = [*TRAIN, "--epochs", "3", "--val-fraction", "0.25", "--patience", "0", "--out", "b"]
    assert main(plan) == 0
    assert fn.load_checkpoint(workdir / "b" / "checkpoint.safetensors")["epoch"] == 1
    capsys.readouterr()
    assert main(["train", "--resume", "b/checkpoint.safetensors", "--patience", "5"]) == 0
    assert "up to epoch 3" in capsys.readouterr().out
    saved = fn.load_checkpoint(workdir / "b" / "checkpoint.safetensors")
    assert saved["epoch"] == 3 and saved["config"]["epochs"] == 3
    assert saved["config"]["patience"] == 5  # the override is what the run now continues with


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_a_nan_loss_exits_1_naming_the_epoch_and_keeps_the_good_files(workdir, capsys):
    assert main([*TRAIN, "--schedule", "none", "--epochs", "1", "--out", "c"]) == 0
    good = {p.name: p.read_bytes() for p in (workdir / "c").glob("*.safetensors")}
    assert set(good) == {"checkpoint.safetensors", "model.safetensors"}
    capsys.readouterr()
    exploding = [*TRAIN, "--optimizer", "sgd", "--lr", "1e12", "--epochs", "2", "--out", "c"]
    assert main(exploding) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "loss became" in error and "epoch 1" in error and "Traceback" not in error
    assert {p.name: p.read_bytes() for p in (workdir / "c").glob("*.safetensors")} == good


def test_threads_is_accepted_before_and_after_the_subcommand():
    parser = build_parser()
    assert parser.parse_args(["train", "--threads", "2"]).threads == 2
    assert parser.parse_args(["--threads", "3", "train"]).threads == 3
    assert parser.parse_args(["--threads", "3", "bench"]).threads == 3
    assert parser.parse_args(["info"]).threads is None
    assert parser.parse_args(["eval", "x.safetensors", "--threads", "4"]).threads == 4


def test_help_shows_defaults_and_the_model_and_dataset_names(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in fn.models.names():
        assert name in text
    assert "fashion-mnist" in text and "cifar10" in text
    assert "(default: 64)" in text and "(default: 0.002)" in text and "(default: cnn)" in text
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    assert "(default: 10)" in " ".join(capsys.readouterr().out.split())


@pytest.fixture
def fake_predict(monkeypatch):
    """A stand-in for fastnet.predict, recording how the command calls it."""
    calls = []

    def predict(checkpoint, images, top_k=5, device="cpu", resize=False):
        calls.append((checkpoint, images, top_k, device, resize))
        if "bad" in checkpoint:
            raise ValueError(f"{checkpoint}: not a fastnet checkpoint")
        return [(image, [("cat", 0.714), ("dog", 0.12)][:top_k]) for image in images]

    module = types.ModuleType("fastnet.predict")
    module.predict = predict
    monkeypatch.setitem(sys.modules, "fastnet.predict", module)
    return calls


def test_predict_prints_one_line_per_image(tmp_path, capsys, fake_predict):
    for name in ("model.safetensors", "bad.safetensors", "cifar10_00_3.png", "b.png"):
        (tmp_path / name).write_bytes(b"x")
    images = [str(tmp_path / "cifar10_00_3.png"), str(tmp_path / "b.png")]
    assert main(["predict", str(tmp_path / "model.safetensors"), *images, "--top-k", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "cifar10_00_3.png: cat 0.71, dog 0.12",
        "b.png: cat 0.71, dog 0.12",
    ]
    assert fake_predict == [(str(tmp_path / "model.safetensors"), images, 2, "cpu", False)]
    assert main(["predict", str(tmp_path / "bad.safetensors"), images[0]]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"fastnet predict: error: {tmp_path / 'bad.safetensors'}: not a fastnet checkpoint"
    )
