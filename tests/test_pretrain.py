"""Self-supervised pretraining (fastnet.pretrain, fastnet pretrain): a tiny SimCLR run on real
MNIST images learns (its loss falls, its features classify far above chance), writes an encoder
that the classifier loads, never reads a training label; the monitors against plain NumPy; the
command's user errors."""

import json

import numpy as np
import pytest

import fastnet as fn
from fastnet import data, finetune, finetune_table, models, pretrain
from fastnet import train as train_module
from fastnet.cli import main
from fastnet.pretrain_monitors import knn_accuracy, linear_probe, warmup_cosine


@pytest.fixture(scope="module")
def mnist(shared_data):
    """512 training and 300 test images of the real MNIST."""
    root = shared_data / "mnist"
    train = data.MNIST(root=root, train=True, download=False)
    test = data.MNIST(root=root, train=False, download=False)
    return train.take(np.arange(512)), test.take(np.arange(300))


class ImagesOnly:
    """A training set whose labels must not be read."""

    def __init__(self, images):
        self.images = images

    @property
    def labels(self):
        raise AssertionError("pretraining read a training label")


def test_simclr_run_from_the_command_line(mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "build_datasets", lambda *args, **kwargs: mnist)
    out = tmp_path / "run"
    argv = ["pretrain", "--method", "simclr", "--epochs", "3", "--batch-size", "128"]
    assert main(argv + ["--lr", "2e-3", "--out", str(out), "--no-progress"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("pretrained cnn by simclr") and "linear probe" in summary

    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3]
    assert history["loss"][-1] < history["loss"][0] - 0.2  # NT-Xent of 2·128 views: ln 255 at worst
    assert history["knn_acc"][-1] > 0.6 and history["linear_probe_acc"] > 0.6  # chance: 0.1
    assert len(history["seconds"]) == 3 and history["linear_probe_images"] == 512
    for picture in ("embedding.png", "retrievals.png"):
        assert (out / picture).read_bytes().startswith(b"\x89PNG")
    config = json.loads((out / "config.json").read_text())
    assert config["pretrain"] == {
        "method": "simclr",
        "dataset": "mnist",
        "seed": 0,
        "epochs": 3,
        "batch_size": 128,
        "lr": 2e-3,
        "temperature": 0.5,
        "encoder": "trunk",
    }

    saved = fn.load_checkpoint(out / "encoder.safetensors")
    assert saved["config"] == config
    weights = fn.load(out / "encoder.safetensors")
    model = models.create(saved["config"]["model"], **saved["config"]["kwargs"])
    # the whole trunk (the CNN's hidden Linear too), no last layer, no projection head
    expected = {name for name in model.state_dict() if not name.startswith("head.3.")}
    assert set(weights) == expected
    assert set(finetune_table.load_pretrained(model, weights)) == expected
    images = fn.tensor(mnist[1].float_images()[:5])
    trained = fn.models.create("cnn", **saved["config"]["kwargs"])
    trained.load_state_dict({**trained.state_dict(), **weights})
    features = [finetune.drop_head(m)(images).numpy() for m in (model, trained)]
    assert features[0].shape == (5, 128)
    np.testing.assert_array_equal(*features)


def test_the_training_loop_reads_no_training_label(mnist):
    train, test = mnist
    result = pretrain.pretrain(
        "simclr",
        "cnn",
        ImagesOnly(train.images[:256]),
        test,
        labelled=train,  # the monitors' labelled images
        dataset="mnist",
        epochs=1,
        batch_size=128,
        progress=False,
        log=lambda line: None,
        monitor_size=100,
        probe_size=100,
        probe_epochs=1,
    )
    assert len(result["history"]["loss"]) == 1 and np.isfinite(result["history"]["loss"][0])


@pytest.mark.parametrize("method", ["denoise", "mae"])
def test_reconstruction_methods_are_dispatched_by_name(method, mnist, tmp_path):
    train, test = mnist
    result = pretrain.pretrain(
        method,
        "cnn" if method == "denoise" else "vit",
        train.take(np.arange(64)),
        test.take(np.arange(40)),
        dataset="mnist",
        epochs=1,
        batch_size=32,
        progress=False,
        log=lambda line: None,
        model_config={"dim": 16, "depth": 1, "heads": 2} if method == "mae" else None,
        probe_epochs=1,
        out=tmp_path,
    )
    assert type(result["model"]).__name__ in ("DenoisingAutoencoder", "MaskedAutoencoder")
    assert result["model"].encoder is result["encoder"]
    assert np.isfinite(result["history"]["loss"]).all()
    assert (tmp_path / "reconstructions.png").read_bytes().startswith(b"\x89PNG")
    weights = fn.load(tmp_path / "encoder.safetensors")  # the features alone: they were trained
    assert set(weights) == {f"features.{name}" for name in result["encoder"].state_dict()}


def test_method_and_model_must_match():
    with pytest.raises(ValueError, match="unknown pretraining method 'byol'"):
        pretrain.check_method("byol", "cnn")
    with pytest.raises(ValueError, match="mae masks the patch tokens of a ViT"):
        pretrain.check_method("mae", "resnet8")
    with pytest.raises(ValueError, match="denoise pretrains a convolutional model, not vit"):
        pretrain.check_method("denoise", "vit")
    for model in models.names():
        pretrain.check_method("simclr", model)
        pretrain.check_method("simclr", model, "features")
    with pytest.raises(ValueError, match="--encoder trunk is SimCLR's choice"):
        pretrain.check_method("denoise", "cnn", "trunk")
    with pytest.raises(ValueError, match="unknown encoder 'head'"):
        pretrain.pretrained_part("head", models.create("cnn"))


def test_simclr_on_the_features_alone_saves_them_alone(mnist, tmp_path):
    train, test = mnist
    result = pretrain.pretrain(
        "simclr",
        "cnn",
        train.take(np.arange(64)),
        test.take(np.arange(40)),
        dataset="mnist",
        encoder="features",
        epochs=1,
        batch_size=32,
        progress=False,
        log=lambda line: None,
        probe_epochs=1,
        out=tmp_path,
    )
    assert result["config"]["pretrain"]["encoder"] == "features"
    names = set(fn.load(tmp_path / "encoder.safetensors"))
    assert names == {f"features.{name}" for name in result["encoder"].state_dict()}
    assert result["model"].projection[1].in_features == 64 * 7 * 7  # the flattened maps


def test_weighted_knn_against_a_plain_loop(rng):
    bank = rng.standard_normal((37, 5))
    queries = rng.standard_normal((23, 5))
    bank_labels, query_labels = rng.integers(0, 4, 37), rng.integers(0, 4, 23)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(queries) @ unit(bank).T
    right = 0
    for row, label in zip(similarity, query_labels, strict=True):
        votes = np.zeros(4)
        for index in np.argsort(-row)[:7]:
            votes[bank_labels[index]] += np.exp(row[index] / 0.1)
        right += votes.argmax() == label
    found = knn_accuracy(bank, bank_labels, queries, query_labels, k=7, temperature=0.1, chunk=5)
    assert found == right / 23


def test_linear_probe_separates_separable_features(rng):
    centres = rng.standard_normal((3, 9)) * 4
    labels = rng.integers(0, 3, 301)
    features = (centres[labels] + rng.standard_normal((301, 9))).astype(np.float32)
    train, test = slice(0, 201), slice(201, None)
    accuracy = linear_probe(
        features[train], labels[train], features[test], labels[test], batch_size=16, lr=1e-2
    )
    assert accuracy > 0.95


def test_warmup_then_cosine():
    factors = [warmup_cosine(step, total=10, warmup=2) for step in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert (np.diff(factors[2:]) < 0).all()
    assert factors[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 7 / 8)))


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--method", "byol"], "invalid choice: 'byol'"),
        (["--method", "mae", "--model", "cnn"], "mae masks the patch tokens of a ViT"),
        (["--method", "denoise", "--model", "vit"], "not vit"),
        (["--method", "mae", "--model", "vit", "--temperature", "0.2"], "--temperature"),
        (["--method", "denoise", "--encoder", "trunk"], "--encoder trunk is SimCLR's choice"),
        (["--method", "simclr", "--encoder", "head"], "invalid choice: 'head'"),
        (["--method", "simclr", "--temperature", "0"], "expected a number > 0"),
        (["--method", "simclr", "--epochs", "0"], "epochs must be an integer >= 1"),
        (["--method", "simclr", "--labels-per-class", "10"], "unrecognized arguments"),
        (["--method", "simclr", "--data-dir", "nowhere"], "--data-dir nowhere: no such folder"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, fragment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", *argv]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("fastnet")  # argparse's own: "fastnet:"
    assert ": error: " in error and fragment in error
    assert not any(tmp_path.iterdir())  # nothing written


def test_an_out_folder_that_cannot_be_written(mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "build_datasets", lambda *args, **kwargs: mnist)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["pretrain", "--method", "simclr", "--out", str(blocker / "run")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "cannot write there" in error
