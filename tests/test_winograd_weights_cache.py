"""conv2d's cache of the Winograd weight tiles U: used when the weight takes no gradient, never
stale whatever changes the weight (Tensor in-place ops, raw writes into ``.data``, a new array,
an optimizer step), bypassed while a weight is being trained, dropped with its weight."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import fastnet
import fastnet.functional as F
from fastnet import nn
from fastnet.functional import conv as conv_module
from fastnet.functional.conv_caches import WINOGRAD_WEIGHTS_CACHE, _winograd_tiles
from numerics import relative_error

CHANNELS = 16  # WINOGRAD_MIN_CHANNELS: the smallest convolution that runs as Winograd


def _layer(seed=0):
    fastnet.manual_seed(seed)
    return nn.Conv2d(CHANNELS, CHANNELS + 3, 3, padding=1)


def _x(seed=1, batch=2):
    rng = np.random.default_rng(seed)
    return fastnet.Tensor(rng.standard_normal((batch, CHANNELS, 7, 6), dtype=np.float32))


def _reference(layer, x):
    """The same convolution through im2col (no Winograd, no cache): a fresh copy of the weight."""
    weight = fastnet.Tensor(layer.weight.numpy().copy())
    bias = fastnet.Tensor(layer.bias.numpy().copy())
    with fastnet.no_grad():
        return conv_module.Conv2d.apply(
            x, weight, bias, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1
        ).numpy()


def _output(layer, x):
    with fastnet.no_grad():
        return layer(x).numpy()


def _check(layer, x):
    assert relative_error(_output(layer, x), _reference(layer, x)) < 1e-5


def test_tiles_are_computed_once_under_no_grad(monkeypatch):
    layer, x = _layer(), _x()
    calls = []
    device = layer.weight.device
    original = device.winograd_weights

    def counting(weight):
        calls.append(1)
        return original(weight)

    monkeypatch.setattr(device, "winograd_weights", counting)
    for _ in range(3):
        _check(layer, x)
    assert len(calls) == 1
    with fastnet.no_grad():
        assert _winograd_tiles(layer.weight) is _winograd_tiles(layer.weight)


@pytest.mark.parametrize(
    "change",
    [
        "raw_data_write",
        "raw_data_element",
        "add_",
        "setitem",
        "copy_",
        "new_array",
        "new_parameter",
        "load_state_dict",
    ],
)
def test_changing_the_weight_in_place_invalidates_the_tiles(change):
    layer, x = _layer(), _x()
    _check(layer, x)  # fills the cache
    with fastnet.no_grad():
        stale = _winograd_tiles(layer.weight)
        assert stale is not None and _winograd_tiles(layer.weight) is stale
    rng = np.random.default_rng(7)
    values = rng.standard_normal(layer.weight.shape).astype(np.float32)
    with fastnet.no_grad():
        if change == "raw_data_write":  # bypasses the version counter
            layer.weight.data[...] = values
        elif change == "raw_data_element":  # one value of one filter
            layer.weight.data[3, 5, 1, 2] += 0.5
        elif change == "add_":
            layer.weight.add_(fastnet.Tensor(values))
        elif change == "setitem":
            layer.weight[0] = fastnet.Tensor(values[0])
        elif change == "copy_":
            layer.weight.copy_(fastnet.Tensor(values))
        elif change == "new_array":
            layer.weight.data = values
        elif change == "new_parameter":
            layer.weight = nn.Parameter(fastnet.Tensor(values))
        else:
            state = layer.state_dict()
            state["weight"] = fastnet.Tensor(values)
            layer.load_state_dict(state)
    with fastnet.no_grad():
        assert _winograd_tiles(layer.weight) is not stale
    _check(layer, x)


def test_an_optimizer_step_between_evaluations_invalidates_the_tiles():
    layer, x = _layer(), _x()
    optimizer = fastnet.optim.SGD(layer.parameters(), lr=0.5)
    _check(layer, x)
    loss = (layer(x) ** 2).mean()  # grad mode on, the weight trains: no cache
    loss.backward()
    optimizer.step()
    _check(layer, x)


def test_a_weight_being_trained_bypasses_the_cache():
    layer = _layer()
    assert _winograd_tiles(layer.weight) is None  # grad mode on, weight requires grad
    with fastnet.no_grad():
        assert _winograd_tiles(layer.weight) is not None
    layer.weight.requires_grad_(False)
    assert _winograd_tiles(layer.weight) is not None


def test_gradients_through_a_frozen_weight_use_the_cached_tiles_correctly():
    layer, x = _layer().requires_grad_(False), _x()
    _check(layer, x)
    x.requires_grad_(True)
    layer(x).sum().backward()
    expected = fastnet.Tensor(x.numpy().copy(), requires_grad=True)
    weight = fastnet.Tensor(layer.weight.numpy().copy())
    conv_module.Conv2d.apply(
        expected,
        weight,
        fastnet.Tensor(layer.bias.numpy().copy()),
        stride=(1, 1),
        padding=(1, 1),
        dilation=(1, 1),
        groups=1,
    ).sum().backward()
    assert relative_error(x.grad.numpy(), expected.grad.numpy()) < 1e-5


def test_nan_weights_are_cached_bitwise():
    layer = _layer()
    with fastnet.no_grad():
        layer.weight.data[0, 0, 0, 0] = np.nan
    with fastnet.no_grad():
        first = _winograd_tiles(layer.weight)
        assert _winograd_tiles(layer.weight) is first  # NaN bits equal NaN bits
        layer.weight.data[0, 0, 0, 0] = 0.0
        assert _winograd_tiles(layer.weight) is not first
        first = _winograd_tiles(layer.weight)
        layer.weight.data[0, 0, 0, 0] = -0.0  # equal as floats, not as bits
        assert _winograd_tiles(layer.weight) is not first


def test_entries_are_dropped_with_their_weight():
    layer = _layer()
    key = id(layer.weight)
    with fastnet.no_grad():
        _winograd_tiles(layer.weight)
    assert key in WINOGRAD_WEIGHTS_CACHE._entries
    del layer
    gc.collect()
    assert key not in WINOGRAD_WEIGHTS_CACHE._entries


def test_the_functional_conv_caches_a_plain_weight_and_still_validates_input():
    weight = fastnet.Tensor(np.random.default_rng(3).standard_normal((4, CHANNELS, 3, 3)))
    weight = weight.float()
    x = _x()
    with fastnet.no_grad():
        first = F.conv2d(x, weight, padding=1).numpy()
        second = F.conv2d(x, weight, padding=1).numpy()
        np.testing.assert_array_equal(first, second)
        with pytest.raises(ValueError, match="channels"):
            F.conv2d(_x().reshape(2, CHANNELS // 2, 14, 6), weight, padding=1)
        with pytest.raises(ValueError, match="conv2d"):
            F.conv2d(x, weight, padding=(1, 1), stride=(0, 1))
        with pytest.raises(TypeError, match="Tensor"):
            F.conv2d(x, weight.numpy(), padding=1)
