"""ONNX export (issue 19): onnxruntime's outputs equal fastnet's within 1e-5 for the ready models
and for every layer the exporter supports; unsupported layers are refused by name; the
``fastnet export`` command end to end and its user errors."""

import json
import re
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import fastnet as fn
from fastnet import models, nn
from fastnet.cli import main
from fastnet.export import (
    TOLERANCE,
    UnsupportedLayerError,
    check_with_onnxruntime,
    export_onnx,
)
from fastnet.extras import install_hint


def trained_statistics(model: nn.Module, rng: np.random.Generator) -> nn.Module:
    """Random running statistics in every BatchNorm, so that eval mode's use of them shows."""
    for module in model.modules():
        if getattr(module, "running_mean", None) is not None:
            module.running_mean.data[...] = rng.standard_normal(module.num_features)
            module.running_var.data[...] = rng.uniform(0.5, 2.0, module.num_features)
    return model


def exported_error(model: nn.Module, shape: tuple, tmp_path, rng: np.random.Generator) -> float:
    """Export, then compare on a fresh random batch of 3 (the export traced a batch of 1, so this
    also holds the batch dimension dynamic)."""
    path = export_onnx(model, tmp_path / "model.onnx", shape)
    return check_with_onnxruntime(model, path, rng.standard_normal((3, *shape)))


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("mlp", {}, (1, 28, 28)),
        ("cnn", {}, (1, 28, 28)),
        ("resnet", {}, (3, 32, 32)),
        ("vit", {"dim": 32, "depth": 2, "heads": 4}, (1, 28, 28)),
    ],
)
def test_ready_models_match_onnxruntime(name, kwargs, shape, tmp_path):
    rng = np.random.default_rng(0)
    model = trained_statistics(models.create(name, **kwargs), rng)
    model.train()  # export switches to eval mode and back
    assert exported_error(model, shape, tmp_path, rng) < TOLERANCE
    assert model.training and all(module.training for module in model.modules())


# one or two layers each, so that no layer's error hides behind another's squashing
LAYERS = [
    (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2), (4, 13, 11)),
    (lambda: nn.Conv2d(3, 5, (3, 2), padding="same", padding_mode="reflect"), (3, 9, 7)),
    (lambda: nn.Conv2d(3, 4, 3, padding=(1, 2), padding_mode="replicate", bias=False), (3, 7, 8)),
    (lambda: nn.Conv2d(3, 4, 5, padding="valid"), (3, 9, 7)),
    (lambda: nn.Conv2d(3, 4, (3, 4), padding=(2, 1)), (3, 7, 8)),
    (lambda: nn.Conv2d(3, 4, (2, 3), padding="same", dilation=(1, 2)), (3, 7, 8)),
    (lambda: nn.BatchNorm2d(5), (5, 4, 3)),
    (lambda: nn.BatchNorm2d(5, affine=False, eps=1e-3), (5, 4, 3)),
    (lambda: nn.BatchNorm1d(7), (7,)),
    (lambda: nn.ReLU(), (6,)),
    (lambda: nn.LeakyReLU(0.2), (6,)),
    (lambda: nn.Sigmoid(), (6,)),
    (lambda: nn.Tanh(), (6,)),
    (lambda: nn.GELU(), (6,)),
    (lambda: nn.GELU(approximate="tanh"), (6,)),
    (lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 7, 6)),
    (lambda: nn.MaxPool2d((2, 3), stride=(1, 2)), (2, 9, 11)),
    (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 7, 6)),
    (lambda: nn.AvgPool2d(2, ceil_mode=True), (2, 7, 5)),
    (lambda: nn.AdaptiveAvgPool2d(1), (3, 5, 7)),
    (lambda: nn.AdaptiveAvgPool2d((2, 3)), (3, 6, 9)),
    (lambda: nn.Flatten(), (2, 3, 4)),
    (lambda: nn.Flatten(start_dim=2), (2, 3, 4)),
    (lambda: nn.Sequential(nn.Dropout(0.5), nn.Identity(), nn.Linear(5, 3)), (5,)),
    (lambda: nn.Linear(5, 3, bias=False), (4, 5)),
    (lambda: nn.LinearReLU(5, 3), (5,)),
    (lambda: nn.ConvReLU2d(3, 4, 3, padding=1, padding_mode="reflect"), (3, 7, 6)),
    (lambda: nn.LayerNorm(6), (3, 6)),
    (lambda: nn.LayerNorm((3, 6), elementwise_affine=False), (3, 6)),
    (lambda: nn.LayerNorm(6, bias=False), (6,)),
]


@pytest.mark.parametrize(("build", "shape"), LAYERS)
def test_each_layer_matches_onnxruntime(build, shape, tmp_path):
    rng = np.random.default_rng(1)
    layer = build()
    for parameter in layer.parameters():  # not the ones and zeros of a fresh norm layer
        parameter.data[...] = rng.standard_normal(parameter.shape)
    model = trained_statistics(nn.Sequential(layer), rng)
    assert exported_error(model, shape, tmp_path, rng) < TOLERANCE


def test_a_stack_of_every_layer_matches_onnxruntime(tmp_path):
    rng = np.random.default_rng(2)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=2, dilation=2, groups=3),
        nn.BatchNorm2d(6),
        nn.LeakyReLU(0.1),
        nn.Conv2d(6, 6, (3, 2), padding="same", padding_mode="reflect", bias=False),
        nn.GELU(approximate="tanh"),
        nn.Conv2d(6, 4, 3, padding=1, padding_mode="replicate"),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.AdaptiveAvgPool2d(2),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
        nn.Dropout(0.5),
        nn.Identity(),
        nn.Flatten(start_dim=2),
        nn.GELU(),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(16, 10),
        nn.BatchNorm1d(10),
        nn.ReLU(),
        nn.Linear(10, 7),
        nn.Sigmoid(),
    )
    assert exported_error(trained_statistics(model, rng), (3, 13, 11), tmp_path, rng) < TOLERANCE


def test_post_norm_relu_transformer_matches_onnxruntime(tmp_path):
    rng = np.random.default_rng(3)
    layer = nn.TransformerEncoderLayer(12, 3, 20, activation="relu", batch_first=True)
    model = nn.Sequential(
        nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(12)),
        nn.PositionalEmbedding(9, 12),
        nn.Linear(12, 5),
    )
    assert exported_error(model, (6, 12), tmp_path, rng) < TOLERANCE


class Doubled(nn.Sequential):
    """A Sequential whose forward is its own: its base class's emitter does not apply."""

    def forward(self, x):
        return 2 * super().forward(x)


@pytest.mark.parametrize(
    ("model", "named"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=1)), "Softmax"),
        (nn.Sequential(Doubled(nn.Linear(4, 4))), "Doubled"),
        (nn.Sequential(nn.BatchNorm1d(4, track_running_stats=False)), "track_running_stats"),
        (nn.Sequential(nn.Unflatten(1, (2, 2))), "Unflatten"),
    ],
)
def test_unsupported_layers_are_named(model, named, tmp_path):
    with pytest.raises(UnsupportedLayerError, match=named):
        export_onnx(model, tmp_path / "model.onnx", (4,))
    assert not (tmp_path / "model.onnx").exists()


def test_unsupported_conv_padding_mode(tmp_path):
    model = nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")
    with pytest.raises(UnsupportedLayerError, match="Conv2d with padding_mode='circular'"):
        export_onnx(model, tmp_path / "model.onnx", (2, 5, 5))


def test_without_onnx_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=re.escape(install_hint("onnx"))):
        export_onnx(nn.Linear(2, 2), tmp_path / "model.onnx", (2,))


# ===================================================================== the command line
CNN_CONFIG = {"model": "cnn", "kwargs": {"channels": 1, "image_size": 12, "classes": 4}}


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as `fastnet train` leaves it: model.safetensors and config.json."""
    model = trained_statistics(
        models.create("cnn", **CNN_CONFIG["kwargs"]), np.random.default_rng(4)
    )
    fn.save(model.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({**CNN_CONFIG, "dataset": "mnist"}))
    return tmp_path


def test_export_command_writes_a_checked_file(run_folder, capsys):
    assert main(["export", str(run_folder / "model.safetensors"), "--format", "onnx"]) == 0
    line = capsys.readouterr().out.strip()
    written = run_folder / "model.onnx"
    assert line.startswith(f"fastnet: wrote {written} (onnx, {written.stat().st_size:,} bytes)")
    error = float(line.rsplit("relative error ", 1)[1].split()[0])
    assert error < TOLERANCE


def test_export_command_takes_a_checkpoint(tmp_path, capsys):
    model = models.create("resnet8", classes=3)
    fn.save_checkpoint(
        tmp_path / "checkpoint.safetensors",
        model,
        config={"model": "resnet8", "kwargs": {"classes": 3}},
    )
    out = tmp_path / "exported" / "r8.onnx"
    argv = ["export", str(tmp_path / "checkpoint.safetensors"), "--out", str(out)]
    assert main([*argv, "--input-shape", "3,16,16"]) == 0
    assert out.is_file() and "relative error" in capsys.readouterr().out


def test_export_command_user_errors(run_folder, tmp_path, monkeypatch, capsys):
    weights = str(run_folder / "model.safetensors")
    bare = tmp_path / "bare"
    bare.mkdir()
    fn.save(models.create("cnn").state_dict(), bare / "weights.safetensors")
    monkeypatch.setitem(
        models.base._REGISTRY, "softmaxed", lambda: nn.Sequential(nn.Flatten(), nn.Softmax(dim=1))
    )
    fn.save_checkpoint(
        tmp_path / "softmaxed.safetensors",
        models.create("softmaxed"),
        config={"model": "softmaxed"},
    )
    cases = [
        ([str(tmp_path / "missing.safetensors")], "missing.safetensors: no such file"),
        ([weights, "--format", "tflite"], "invalid choice: 'tflite'"),
        ([weights, "--input-shape", "1,0,28"], "expected sizes >= 1"),
        ([weights, "--input-shape", "3,12,12"], "3 channels"),
        ([str(bare / "weights.safetensors")], "no config.json beside it"),
        ([str(tmp_path / "softmaxed.safetensors")], "does not say what images"),
        (
            [str(tmp_path / "softmaxed.safetensors"), "--input-shape", "4"],
            "no emitter for the layer Softmax",
        ),
    ]
    for argv, message in cases:
        assert main(["export", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("fastnet export: error:") and err.count("\n") == 1, err
        assert message in err, (argv, err)
    (run_folder / "config.json").write_text(json.dumps({"model": "mlp"}))  # weights do not fit
    assert main(["export", weights]) == 2
    assert "does not match the model" in capsys.readouterr().err
    assert not list(run_folder.glob("*.onnx")) and not list(tmp_path.glob("*.onnx"))


def test_an_inference_optimized_model_exports_with_its_fused_layers(tmp_path):
    from fastnet.inference import optimize_for_inference

    rng = np.random.default_rng(2)
    model = trained_statistics(models.create("cnn"), rng).eval()
    optimized = optimize_for_inference(model)
    kinds = [type(module) for module in optimized.modules()]
    assert kinds.count(nn.ConvReLU2d) == 2 and kinds.count(nn.LinearReLU) == 1
    assert exported_error(optimized, (1, 28, 28), tmp_path, rng) < TOLERANCE
