"""Every user error of the command line: one line on stderr, exit code 2, nothing written.

Before issue #15 most of these printed a traceback, ran anyway (``--epochs 0``, ``--val-fraction
1.5``, ``--patience -1``, ``finetune --epochs 0``) or failed after training (a read-only
``--out``). The datasets are tiny synthetic stand-ins (``fastnet.train.build_datasets`` is
patched) except where the data folder itself is under test.
"""

from pathlib import Path

import numpy as np
import pytest

import fastnet as fn
from fastnet import backend, data, models
from fastnet import train as train_module
from fastnet.cli import main


def tiny_sets(*_args, **_kwargs):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (48, 1, 8, 8), dtype=np.uint8)
    labels = np.arange(48) % 4
    return data.ArrayDataset(images[:32], labels[:32]), data.ArrayDataset(images[32:], labels[32:])


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty current folder (where the default runs/ would go), with tiny datasets."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_module, "build_datasets", tiny_sets)
    return tmp_path


@pytest.fixture
def saved_run(workdir):
    """A checkpoint of an mlp run on the tiny data after epoch 1 of a 1-epoch onecycle plan."""
    fn.manual_seed(0)
    model = models.mlp(in_features=64, hidden=(8,), classes=4)
    config = {
        "dataset": "mnist",
        "model": "mlp",
        "kwargs": {"in_features": 64, "hidden": [8], "classes": 4},
        "optimizer": "adam",
        "lr": 2e-3,
        "batch_size": 8,
        "schedule": "onecycle",
        "seed": 0,
        "epochs": 1,
    }
    path = workdir / "old" / "checkpoint.safetensors"
    fn.save_checkpoint(path, model, epoch=1, config=config)
    return path


def snapshot(folder):
    """Every file (with its bytes) and folder under ``folder``."""
    return {p: p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def assert_user_error(argv, capsys, folder, *fragments):
    before = snapshot(folder)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and "error" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert captured.out == ""
    assert snapshot(folder) == before  # nothing written, no folder created


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--model", "nope"], "invalid choice: 'nope'"),
        (["train", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--batch-size", "True"], "--batch-size"),
        (["train", "--lr", "-1"], "--lr"),
        (["train", "--lr", "nan"], "--lr"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--val-fraction", "1.5"], "--val-fraction"),
        (["train", "--val-fraction", "1"], "--val-fraction"),
        (["train", "--patience", "-1"], "--patience"),
        (["train", "--labels-per-class", "-1"], "--labels-per-class"),
        (["train", "--momentum", "1"], "--momentum"),
        (["train", "--label-smoothing", "-0.1"], "--label-smoothing"),
        (["train", "--checkpoint-every", "-2"], "--checkpoint-every"),
        (["train", "--threads", "0"], "--threads"),
        (["--threads", "x", "info"], "--threads"),
        (["train", "--device", "tpu"], "--device"),
        (["train", "--keep-best"], "val_fraction"),
        (["train", "--resume", "missing.safetensors"], "missing.safetensors"),
        (["train", "--data-dir", "missing-folder"], "missing-folder"),
        (["train", "--labels-per-class", "9"], "has 8 training images"),
        (["train", "--bogus"], "--bogus"),
        (["finetune", "--from", "missing.safetensors"], "missing.safetensors"),
        (["finetune", "--from", "x", "--epochs", "0"], "--epochs"),
        (["finetune", "--from", "x", "--lr", "0"], "--lr"),
        (["finetune", "--from", "x", "--labels-per-class", "-5"], "--labels-per-class"),
        (["predict", "missing.safetensors", "a.png"], "missing.safetensors"),
        (["predict", "c.safetensors", "a.png", "--top-k", "0"], "--top-k"),
        (["predict"], "required"),
    ],
)
def test_user_errors_are_one_line_exit_2_and_write_nothing(argv, fragment, workdir, capsys):
    assert_user_error(argv, capsys, workdir, fragment)


def test_an_out_folder_that_cannot_be_written_fails_before_training(workdir, capsys):
    (workdir / "a-file").write_text("not a folder")
    assert_user_error(
        ["train", "--model", "mlp", "--out", "a-file/run"], capsys, workdir, "--out a-file/run"
    )


def test_device_cuda_without_a_gpu(workdir, capsys, monkeypatch):
    monkeypatch.setattr(backend, "cuda_is_available", lambda: False)
    assert_user_error(["train", "--device", "cuda"], capsys, workdir, "no CUDA GPU")
    assert_user_error(["finetune", "--from", "x", "--device", "cuda:0"], capsys, workdir, "GPU")


def test_a_corrupt_from_or_resume_file(workdir, capsys):
    (workdir / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    assert_user_error(["train", "--resume", "junk.safetensors"], capsys, workdir, "junk")
    assert_user_error(["finetune", "--from", "junk.safetensors"], capsys, workdir, "junk")


def test_resume_refuses_conflicting_settings_and_epochs_already_done(saved_run, workdir, capsys):
    resume = ["train", "--resume", str(saved_run)]
    assert_user_error([*resume, "--model", "cnn"], capsys, workdir, "model", "'mlp'")
    assert_user_error([*resume, "--lr", "0.5"], capsys, workdir, "lr")
    assert_user_error([*resume, "--epochs", "1"], capsys, workdir, "already at epoch 1")
    assert_user_error(resume, capsys, workdir, "already at epoch 1 of its 1 planned")
    # a finished one-cycle run is not stretched (its learning rate would jump back up)
    assert_user_error([*resume, "--epochs", "3"], capsys, workdir, "onecycle", "planned")
    main([*resume, "--epochs", "3"])  # finished: no "resume with epochs <= 1" it could not do
    assert "resume with epochs" not in capsys.readouterr().err


def test_data_dir_without_the_dataset(shared_data, workdir, capsys, monkeypatch):
    monkeypatch.undo()  # the real dataset lookup
    monkeypatch.chdir(workdir)
    images = shared_data / "cifar10-sample"  # a folder of PNGs, no MNIST files
    assert_user_error(
        ["train", "--data-dir", str(images)], capsys, workdir, "holds no mnist dataset files"
    )


def test_finetune_from_weights_of_another_architecture(workdir, capsys):
    fn.save(models.mlp(in_features=64, classes=4).state_dict(), workdir / "mlp.safetensors")
    assert_user_error(
        ["finetune", "--from", "mlp.safetensors", "--model", "cnn", "--labels-per-class", "2"],
        capsys,
        workdir,
        "--from mlp.safetensors",
    )


def test_no_hint_installs_the_unrelated_fastnet_from_pypi():
    # `pip install "fastnet[cuda]"` installs another project of that name (issue 16): every
    # hint names the checkout's own command, from one helper
    from fastnet.extras import install_hint

    root = Path(__file__).resolve().parents[1]
    sources = [
        *(root / "fastnet").rglob("*.py"),
        *(root / "benchmarks").glob("*.py"),
        root / "README.md",
        root / "benchmarks" / "README.md",
        *(root / "scripts").glob("*"),
    ]
    offenders = [str(path) for path in sources if "fastnet[" in path.read_text()]
    assert offenders == []
    assert install_hint("cuda").startswith("bash scripts/setup.sh cuda")
