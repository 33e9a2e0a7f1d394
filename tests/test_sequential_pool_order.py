"""Sequential calls a 2-D max-pool before the ReLU in front of it (the same values and gradients,
a quarter of the elements for the ReLU), and keeps the written order where that could show: an
in-place ReLU, a hooked module, a pool that returns indices."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet import functional as F
from fastnet import nn
from fastnet.nn.summary import forward_hooks

POOLS = [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
    {"kernel_size": (2, 3), "stride": (1, 2)},
]


def _in_written_order(modules, x):
    for module in modules:
        x = type(module).forward(module, x)
    return x


def _values_and_gradients(run, tensors, upstream):
    for tensor in tensors:
        tensor.grad = None
    out = run()
    out.backward(fastnet.tensor(upstream))
    return [out.numpy()] + [tensor.grad.numpy() for tensor in tensors]


@pytest.mark.parametrize("pool", POOLS, ids=str)
def test_values_and_gradients_are_those_of_the_written_order(rng, pool):
    conv = nn.Conv2d(3, 4, 3, padding=1)
    conv.bias.data[1] = -6.0  # a channel of mostly negative windows: no gradient passes there
    model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(**pool), nn.Flatten())
    x = fastnet.tensor(rng.standard_normal((2, 3, 7, 9)).astype(np.float32), requires_grad=True)
    upstream = rng.standard_normal(model(x).shape).astype(np.float32)
    tensors = [x, conv.weight, conv.bias]
    got = _values_and_gradients(lambda: model(x), tensors, upstream)
    expected = _values_and_gradients(lambda: _in_written_order(model, x), tensors, upstream)
    for name, a, b in zip(("output", "x", "weight", "bias"), got, expected, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_ties_at_zero_and_nan_give_the_written_orders_gradient(rng):
    values = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    values[0, 0, :2, :2] = [[0.0, -1.0], [0.0, -2.0]]  # maximum 0, reached twice
    values[0, 1, :2, :2] = [[-3.0, -1.0], [-4.0, -2.0]]  # all negative
    values[1, 2, 2, 3] = np.nan
    x = fastnet.tensor(values, requires_grad=True)
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    upstream = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    got = _values_and_gradients(lambda: model(x), [x], upstream)
    expected = _values_and_gradients(lambda: _in_written_order(model, x), [x], upstream)
    assert np.isnan(got[0][1, 2, 1, 1])
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def _relu_input_shapes(monkeypatch):
    shapes = []
    relu = F.relu

    def recording(input, *args, **kwargs):
        shapes.append(tuple(input.shape))
        return relu(input, *args, **kwargs)

    monkeypatch.setattr(F, "relu", recording)
    return shapes


def test_the_relu_runs_on_the_pooled_maps(rng, monkeypatch):
    shapes = _relu_input_shapes(monkeypatch)
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.ReLU())
    model(fastnet.tensor(rng.standard_normal((2, 3, 8, 6)).astype(np.float32)))
    assert shapes == [(2, 3, 4, 3), (2, 3, 4, 3)]


@pytest.mark.parametrize("case", ["inplace", "indices", "hooked"])
def test_the_written_order_is_kept_where_the_order_could_show(rng, monkeypatch, case):
    shapes = _relu_input_shapes(monkeypatch)
    relu, pool = (
        nn.ReLU(inplace=case == "inplace"),
        nn.MaxPool2d(2, return_indices=case == "indices"),
    )
    model = nn.Sequential(relu, pool)
    x = fastnet.tensor(rng.standard_normal((2, 3, 8, 6)).astype(np.float32))
    if case == "hooked":
        seen = []
        with forward_hooks([("relu", relu), ("pool", pool)], lambda name, *_: seen.append(name)):
            model(x)
        assert seen == ["relu", "pool"]
    else:
        model(x)
    assert shapes == [(2, 3, 8, 6)]
