"""Modules: PyTorch's names, layouts and initialisations, state dicts, devices, modes."""

import math

import numpy as np
import pytest

import fastnet as fn
from fastnet import nn


def issue_model():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def test_parameter_names_and_layouts_follow_pytorch():
    shapes = {name: p.shape for name, p in issue_model().named_parameters()}
    assert shapes == {
        "0.weight": (32, 1, 3, 3),
        "0.bias": (32,),
        "3.weight": (64, 32, 3, 3),
        "3.bias": (64,),
        "7.weight": (128, 3136),
        "7.bias": (128,),
        "9.weight": (10, 128),
        "9.bias": (10,),
    }


def test_default_initialisation_bounds_are_pytorchs():
    fn.manual_seed(0)
    linear, conv = nn.Linear(300, 200), nn.Conv2d(16, 8, (3, 5))
    for layer, fan_in in ((linear, 300), (conv, 16 * 15)):
        bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=√5) gives exactly 1/√fan_in
        w, b = layer.weight.numpy(), layer.bias.numpy()
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
        assert np.abs(b).max() <= bound
        # a uniform distribution on ±bound has standard deviation bound/√3
        assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound


def test_manual_seed_makes_initialisation_reproducible():
    fn.manual_seed(7)
    a = issue_model().state_dict()
    fn.manual_seed(7)
    b = issue_model().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_forward_shapes_of_the_issue_model(rng):
    out = issue_model()(fn.tensor(rng.standard_normal((3, 1, 28, 28))))
    assert out.shape == (3, 10) and out.dtype == np.float32


def test_state_dict_round_trip(rng):
    source, target = issue_model(), issue_model()
    report = target.load_state_dict(source.state_dict())
    assert report == ([], [], [])
    x = fn.tensor(rng.standard_normal((2, 1, 28, 28)))
    np.testing.assert_array_equal(source(x).numpy(), target(x).numpy())


def test_load_state_dict_reports_and_raises_with_every_problem():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    state = model.state_dict()
    state["2.weight"] = np.zeros((5, 3), np.float32)
    state["extra.weight"] = np.zeros(1, np.float32)
    del state["0.bias"]
    with pytest.raises(
        RuntimeError,
        match=r"missing keys \['0.bias'\].*unexpected keys \['extra.weight'\]"
        r".*2.weight: model \(2, 3\) vs state \(5, 3\)",
    ):
        model.load_state_dict(state)
    before = model[2].weight.numpy().copy()
    report = model.load_state_dict(state, strict=False)
    assert report.missing_keys == ["0.bias"] and report.unexpected_keys == ["extra.weight"]
    assert report.mismatched_keys == [("2.weight", (2, 3), (5, 3))]
    np.testing.assert_array_equal(model[2].weight.numpy(), before)  # mismatched weights untouched


def test_train_eval_reaches_every_submodule():
    model = fn.models.mlp(dropout=0.5)
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_to_device_keeps_parameter_identity(rng):
    model = nn.Linear(3, 2)
    weight = model.weight
    model.to("cuda")
    assert model.weight is weight and weight.device == "cuda"
    out = model(fn.tensor(rng.standard_normal((4, 3)), device="cuda"))
    assert out.device == "cuda"
    model.to("cpu")
    assert weight.device == "cpu"


def test_module_errors_are_clear():
    class Forgetful(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(1, 1)

    with pytest.raises(RuntimeError, match="must call super"):
        Forgetful()
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(1.5)
    with pytest.raises(
        ValueError, match=r"linear: input of shape \(2, 5\) does not match weight of shape \(3, 4\)"
    ):
        nn.Linear(4, 3)(fn.tensor(np.ones((2, 5))))


def test_models_have_features_and_head():
    for model in (fn.models.mlp(), fn.models.mnist_cnn()):
        names = [n for n, _ in model.named_parameters()]
        assert any(n.startswith("features.") for n in names) and any(
            n.startswith("head.") for n in names
        )
    assert fn.models.mlp().num_parameters() == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        fn.models.create("nope")
