"""Pruning (fastnet.prune): exact global magnitude masks, weights held at exactly zero through
fine-tuning, the gradual schedule, the optimizer's step-post hook, and structured channel pruning
whose smaller model computes what the masked large model does."""

import numpy as np
import pytest

import fastnet as fn
from fastnet import nn, optim
from fastnet.prune import (
    Pruner,
    gradual_sparsity,
    magnitude_masks,
    mask_channels,
    prune_channels,
)


def _randomize(model, rng):
    """Fresh random values in every parameter (and BatchNorm statistics), in place."""
    for parameter in model.parameters():
        parameter.data[...] = rng.standard_normal(parameter.shape)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.data[...] = rng.standard_normal(buffer.shape)
        elif name.endswith("running_var"):
            buffer.data[...] = rng.uniform(0.5, 2.0, buffer.shape)
    return model


def _layered(rng):
    """Odd sizes, several layers, both kinds: 3·2·3·3 + 7·5 + 5·3 prunable weights."""
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(7, 5), nn.Linear(5, 3)
    )
    return _randomize(model, rng)


def _pruned(masks):
    return sum(int((m == 0).sum()) for m in masks.values())


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.33, 0.5, 0.77, 1.0])
def test_one_global_threshold_prunes_exactly_round_s_n(sparsity, rng):
    model = _layered(rng)
    masks = magnitude_masks(model, sparsity)
    assert set(masks) == {"0.weight", "3.weight", "4.weight"}  # no biases
    total = 54 + 35 + 15
    assert _pruned(masks) == round(sparsity * total)
    weights = {
        "0.weight": model[0].weight,
        "3.weight": model[3].weight,
        "4.weight": model[4].weight,
    }
    pruned = np.concatenate([np.abs(weights[k].numpy())[m == 0] for k, m in masks.items()])
    kept = np.concatenate([np.abs(weights[k].numpy())[m == 1] for k, m in masks.items()])
    if pruned.size and kept.size:  # one threshold over every layer
        assert pruned.max() <= kept.min()
    for key, mask in masks.items():
        assert mask.shape == weights[key].shape and mask.dtype == weights[key].dtype


def test_ties_are_broken_by_layer_then_position(rng):
    model = _layered(rng)
    for parameter in model.parameters():
        parameter.data[...] = 0.5
    masks = magnitude_masks(model, 0.6)  # round(0.6·104) = 62: all 54 of layer 0, 8 of layer 3
    assert _pruned(masks) == 62
    assert (masks["0.weight"] == 0).all()
    assert (masks["3.weight"].reshape(-1)[:8] == 0).all()
    assert (masks["3.weight"].reshape(-1)[8:] == 1).all() and (masks["4.weight"] == 1).all()
    assert all((masks[k] == again).all() for k, again in magnitude_masks(model, 0.6).items())


def test_masks_only_grow(rng):
    model = _layered(rng)
    first = magnitude_masks(model, 0.3)
    for parameter in (model[0].weight, model[3].weight, model[4].weight):
        parameter.data[...] = rng.standard_normal(parameter.shape) * 10  # pruned ones now large
    second = magnitude_masks(model, 0.5, masks=first)
    assert _pruned(second) == round(0.5 * 104)
    for key in first:
        assert (second[key][first[key] == 0] == 0).all()
    third = magnitude_masks(model, 0.2, masks=second)  # less than reached: masks unchanged
    assert all((third[k] == second[k]).all() for k in second)


def _small_cnn(rng):
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    ).double()
    return _randomize(model, rng)


def _loss(model, rng):
    x = fn.Tensor(rng.standard_normal((8, 1, 6, 6)), dtype="float64")
    target = fn.Tensor(rng.integers(0, 3, 8))
    return nn.CrossEntropyLoss()(model(x), target)


OPTIMIZERS = {
    "SGD-momentum-wd": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.1),
    "AdamW-wd": lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_pruned_weights_stay_exactly_zero_through_fine_tuning(name, rng):
    model = _small_cnn(rng)
    optimizer = OPTIMIZERS[name](model.parameters())
    for _ in range(2):  # state exists before pruning: it must be zeroed where pruned
        optimizer.zero_grad()
        _loss(model, rng).backward()
        optimizer.step()
    pruner = Pruner(model, optimizer)
    reached = pruner.prune(0.6)
    assert reached.overall == round(0.6 * 228) / 228  # 4·9 + 3·64 weights
    assert set(reached.layers) == {"0.weight", "3.weight"}
    weights = [model[0].weight, model[3].weight]
    masks = [pruner.masks["0.weight"], pruner.masks["3.weight"]]
    at_prune = [w.numpy().copy() for w in weights]
    for _ in range(5):
        optimizer.zero_grad()
        _loss(model, rng).backward()
        for weight, mask in zip(weights, masks, strict=True):
            grad = weight.grad.numpy()
            assert (grad[mask == 0] == 0.0).all() and (grad[mask == 1] != 0).any()
        optimizer.step()
    for weight, mask, before in zip(weights, masks, at_prune, strict=True):
        now = weight.numpy()
        assert (now[mask == 0] == 0.0).all()
        assert (now[mask == 1] != before[mask == 1]).all()
        for value in optimizer.state[id(weight)].values():
            if getattr(value, "shape", None) == weight.shape:
                assert (np.asarray(value)[mask == 0] == 0.0).all()
    assert pruner.sparsity().overall == reached.overall
    pruner.remove()  # no longer held: weight decay and momentum may move them again
    optimizer.zero_grad()
    _loss(model, rng).backward()
    optimizer.step()
    assert (model[3].weight.numpy()[masks[1] == 0] != 0).any()


def test_step_post_hook_runs_after_each_step_with_its_arguments(rng):
    weight = nn.Parameter(rng.standard_normal((3, 2)))
    optimizer = optim.SGD([weight], lr=0.1)
    calls = []
    handle = optimizer.register_step_post_hook(lambda *a: calls.append((a, weight.numpy().copy())))
    weight.grad = fn.Tensor(rng.standard_normal((3, 2)))
    before = weight.numpy().copy()
    optimizer.step()
    ((arguments, seen),) = calls
    assert arguments == (optimizer, (), {})
    assert (seen != before).all()  # after the update
    flag = np.ones(1, np.bool_)
    optimizer.step(skip_if=flag)  # skipped on the device: the hook still runs

    def closure():
        return 1.5

    assert optimizer.step(closure) == 1.5
    assert calls[1][0] == (optimizer, (), {"skip_if": flag})
    assert calls[2][0] == (optimizer, (closure,), {})
    handle.remove()
    optimizer.step()
    assert len(calls) == 3


def test_gradual_schedule_is_cubic_and_clipped(rng):
    assert gradual_sparsity(0, 0.8, 100) == 0.0
    assert gradual_sparsity(50, 0.8, 100) == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert gradual_sparsity(100, 0.8, 100) == pytest.approx(0.8)
    assert gradual_sparsity(5, 0.8, 100, initial=0.2, start=10) == pytest.approx(0.2)
    assert gradual_sparsity(500, 0.8, 100, initial=0.2, start=10) == pytest.approx(0.8)
    assert gradual_sparsity(35, 0.8, 100, 0.2, 10) == pytest.approx(0.8 - 0.6 * 0.75**3)
    with pytest.raises(ValueError, match="total_steps"):
        gradual_sparsity(1, 0.5, 0)
    with pytest.raises(ValueError, match="initial sparsity"):
        gradual_sparsity(1, 0.5, 10, initial=0.6)
    pruner = Pruner(_small_cnn(rng))
    target = pruner.step(50, 0.8, 100)
    assert target == pytest.approx(0.7)
    assert pruner.sparsity().overall == round(target * 228) / 228


def _relative(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _count(model):
    return sum(int(p.data.size) for p in model.parameters())


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-12), ("float32", 1e-5)])
def test_channel_pruning_of_the_mnist_cnn_matches_the_masked_model(dtype, tolerance, rng):
    model = fn.models.create("cnn").to(dtype=dtype).eval()
    original = {k: np.array(v) for k, v in model.state_dict().items()}
    smaller, kept = prune_channels(model, 0.5)
    assert {k: len(v) for k, v in kept.items()} == {"features.0": 16, "features.3": 32}
    assert smaller.head[1].in_features == 32 * 7 * 7
    assert _count(smaller) < _count(model) * 0.6
    masked = mask_channels(model, kept).eval()
    x = fn.Tensor(rng.standard_normal((4, 1, 28, 28)), dtype=dtype)
    out = smaller.eval()(x).numpy()
    assert out.dtype == dtype
    assert _relative(out, masked(x).numpy()) < tolerance
    for key, value in model.state_dict().items():  # the original is untouched
        assert (np.asarray(value) == original[key]).all()


def test_channel_pruning_with_batchnorm_keeps_its_statistics(rng):
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.LeakyReLU(0.1),
        nn.Flatten(),
        nn.Dropout(0.0),
        nn.Linear(8 * 2 * 2, 5),
    ).double()
    _randomize(model, rng)
    smaller, kept = prune_channels(model, 0.4)
    assert [len(v) for v in kept.values()] == [4, 5]  # 6 − round(2.4), 8 − round(3.2)
    norms = np.abs(model[0].weight.numpy()).sum(axis=(1, 2, 3))
    assert set(np.argsort(-norms)[:4]) == set(kept["0"].tolist())
    assert (smaller[1].running_var.numpy() == model[1].running_var.numpy()[kept["0"]]).all()
    assert smaller[5].num_features == 5 and smaller[4].in_channels == 4
    masked = mask_channels(model, kept)
    x = fn.Tensor(rng.standard_normal((3, 3, 8, 8)), dtype="float64")
    for mode in ("eval", "train"):  # running statistics, then batch statistics
        getattr(smaller, mode)(), getattr(masked, mode)()
        assert _relative(smaller(x).numpy(), masked(x).numpy()) < 1e-12
    assert _count(smaller) < _count(model)


@pytest.mark.parametrize(
    "layers, match",
    [
        (
            lambda: [nn.Conv2d(1, 4, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(4, 2)],
            r"1 \(Sigmoid\)",
        ),
        (lambda: [nn.Conv2d(1, 4, 3), nn.Linear(1, 2)], r"1 \(Linear\)"),
        (lambda: [nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 1, groups=2)], r"1 \(Conv2d\) is grouped"),
        (lambda: [nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(6, 2)], r"2 \(Linear\) has 6"),
    ],
)
def test_channel_pruning_refuses_what_it_cannot_shrink(layers, match):
    with pytest.raises(ValueError, match=match):
        prune_channels(nn.Sequential(*layers()), 0.5)


def test_channel_pruning_refuses_other_models_and_names():
    with pytest.raises(ValueError, match="Sequential or Classifier model, got Linear"):
        prune_channels(nn.Linear(3, 2), 0.5)
    with pytest.raises(ValueError, match="fraction"):
        prune_channels(nn.Sequential(nn.Conv2d(1, 2, 1)), 1.5)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match="'2' is not a prunable Conv2d"):
        mask_channels(model, {"2": np.array([0])})
