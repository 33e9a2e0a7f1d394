"""model.summary (fastnet.nn.summary): parameter totals equal the model's, output shapes equal
an actual forward pass, FLOPs follow the documented formulas, and the model is left as it was."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastnet as fn
import fastnet.nn as nn
from fastnet import models
from fastnet.nn import summary as summary_module


def rows_by_name(result):
    return {row.name: row for row in result.rows}


@pytest.mark.parametrize(
    "name, kwargs, shape",
    [
        ("cnn", {}, (2, 1, 28, 28)),
        ("resnet8", {"width": 4}, (1, 3, 32, 32)),
        ("vit", {"dim": 32, "depth": 2, "heads": 4}, (3, 1, 28, 28)),
    ],
)
def test_ready_models_summarise_with_the_models_own_totals(name, kwargs, shape):
    model = models.create(name, **kwargs)
    model.features.requires_grad_(False)  # a frozen trunk: trainable and not both appear
    result = model.summary(shape)
    assert result.total_params == sum(p.numel() for p in model.parameters())
    assert result.trainable_params == sum(p.numel() for p in model.head.parameters())
    assert result.non_trainable_params == sum(p.numel() for p in model.features.parameters())
    assert [row.name for row in result.rows] == [name for name, _ in model.named_modules()]
    assert result.rows[0].output_shape == (shape[0], 10)
    assert result.total_flops == sum(row.flops for row in result.rows) > 0
    text = str(result)
    assert f"Total params: {result.total_params:,}" in text
    assert f"Total FLOPs: {result.total_flops:,}" in text
    assert len(text.splitlines()) == len(result.rows) + 5  # header, rules, totals


def test_output_shapes_are_those_of_an_actual_forward_pass(rng):
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, stride=2, padding=1),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(5 * 3 * 4, 7),
    )
    x = fn.tensor(rng.standard_normal((4, 3, 11, 15)).astype(np.float32))
    rows = rows_by_name(model.summary(x.shape))
    model.eval()
    with fn.no_grad():
        for index, layer in enumerate(model):
            x = layer(x)
            assert rows[str(index)].output_shape == x.shape, index
    assert rows[""].output_shape == x.shape == (4, 7)


def test_linear_flops_follow_the_formula():
    with_bias, without = nn.Linear(7, 5), nn.Linear(7, 5, bias=False)
    rows = 3 * 4  # every leading position of a (3, 4, 7) input is a row
    assert with_bias.summary((3, 4, 7)).total_flops == 2 * rows * 7 * 5 + rows * 5
    assert without.summary((3, 4, 7)).total_flops == 2 * rows * 7 * 5


@pytest.mark.parametrize(
    "in_channels, out_channels, kernel, stride, padding, dilation, groups, bias",
    [
        (3, 8, 3, 1, 1, 1, 1, True),
        (6, 4, (3, 2), 2, 1, 2, 2, True),  # groups and dilation
        (4, 8, 3, 1, 0, 1, 4, False),  # depthwise with a channel multiplier of 2
    ],
)
def test_conv2d_flops_follow_the_formula(
    in_channels, out_channels, kernel, stride, padding, dilation, groups, bias
):
    layer = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, groups, bias)
    batch, height, width = 2, 11, 9
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    out_h = (height + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    outputs = batch * out_channels * out_h * out_w
    expected = 2 * outputs * (in_channels // groups) * kh * kw + (outputs if bias else 0)
    result = layer.summary((batch, in_channels, height, width))
    assert result.rows[0].output_shape == (batch, out_channels, out_h, out_w)
    assert result.total_flops == expected


def test_conv_transpose_flops_scatter_each_input_element():
    layer = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
    result = layer.summary((2, 4, 5, 5))
    inputs, outputs = 2 * 4 * 5 * 5, math.prod(result.rows[0].output_shape)
    assert result.total_flops == 2 * inputs * (6 // 2) * 9 + outputs


def test_cross_attention_flops_tell_queries_from_keys():
    batch, queries, keys, width, heads = 2, 3, 7, 8, 2
    attention = nn.MultiheadAttention(width, heads)  # (T, B, E): sequence first
    result = attention.summary(
        [(queries, batch, width), (keys, batch, width), (keys, batch, width)]
    )
    rows = rows_by_name(result)
    projections = 2 * batch * (queries + 2 * keys) * width * width
    projection_bias = batch * (queries + 2 * keys) * width
    pairs = batch * queries * keys
    expected = projections + projection_bias + 4 * pairs * width + 5 * pairs * heads
    assert rows[""].flops == expected
    assert rows["out_proj"].flops == 2 * batch * queries * width * width + batch * queries * width
    assert rows[""].output_shape == [(queries, batch, width), (batch, queries, keys)]


def test_a_shared_layer_counts_its_parameters_once_and_its_flops_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 4)
            self.alias = self.layer  # the same module under a second name

        def forward(self, x):
            return self.alias(self.layer(x))

    model = Twice()
    result = model.summary((1, 4))
    assert result.total_params == model.num_parameters() == 20
    assert [row.name for row in result.rows] == ["", "layer"]
    assert result.rows[1].calls == 2 and result.total_flops == 2 * (2 * 16 + 4)


def test_the_model_is_left_as_it_was(rng):
    model = models.create("resnet8", width=2)
    model.train()
    model.head.eval()  # a mixed mode must come back mixed
    before = model.state_dict()
    fn.manual_seed(3)
    expected_draw = fn.randn(3).numpy()
    fn.manual_seed(3)
    model.summary((2, 3, 32, 32))
    assert fn.randn(3).numpy().tolist() == expected_draw.tolist()  # fastnet's RNG untouched
    assert model.training and model.features.training and not model.head.training
    assert not any("forward" in vars(module) for module in model.modules())
    after = model.state_dict()  # BatchNorm's running statistics included
    assert all(np.array_equal(before[key], after[key]) for key in before)


def test_a_failing_forward_names_the_shape_and_removes_the_hooks():
    model = models.create("cnn")
    with pytest.raises(ValueError, match=r"input of shape \(1, 28, 28\) \(batch dimension first\)"):
        model.summary((1, 28, 28))  # the batch dimension forgotten
    assert not any("forward" in vars(module) for module in model.modules())


@pytest.mark.parametrize("shape", [(), (0, 3), (2, -1), "1x28", 28, (2.0, 3), [(1, 4), ()], None])
def test_bad_input_shapes_are_refused(shape):
    with pytest.raises(ValueError, match="input_shape must be a shape of positive ints"):
        nn.Linear(4, 2).summary(shape)


def test_a_device_other_than_the_models_is_refused(monkeypatch):
    class Elsewhere:
        name = "cuda"

    monkeypatch.setattr(summary_module, "get_device", lambda device: Elsewhere())
    with pytest.raises(ValueError, match="parameters are on cpu, not on cuda"):
        nn.Linear(4, 2).summary((1, 4), device="cuda")


def test_register_flops_counts_a_new_layer_type(monkeypatch):
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    monkeypatch.setitem(summary_module._FLOP_COUNTERS, Square, lambda m, a, k, out: out.numel())
    assert nn.Sequential(Square(), nn.ReLU()).summary((3, 5)).total_flops == 15
    with pytest.raises(TypeError, match="not a Module subclass"):
        summary_module.register_flops(int, lambda *_: 0)


def test_a_lora_linear_counts_its_base_and_adapter_products_until_merged():
    from fastnet.finetune import LoRALinear

    layer = LoRALinear(nn.Linear(8, 16), rank=2)
    base = 2 * 3 * 8 * 16 + 3 * 16  # (3, 8) @ (8, 16) and the bias
    adapter = 2 * 3 * 2 * (8 + 16) + 3 * 16  # x·Aᵀ, (x·Aᵀ)·Bᵀ and the scaled add
    assert nn.Sequential(layer).summary((3, 8)).total_flops == base + adapter
    layer.merge()
    assert nn.Sequential(layer).summary((3, 8)).total_flops == base


def test_pool_flops_count_the_whole_window():
    """An int kernel_size is a square window for a 2-D pool (k² per output) and a run for 1-D."""
    outputs_2d = 2 * 3 * 4 * 5  # (2, 3, 8, 10) pooled by 2
    assert nn.MaxPool2d(2).summary((2, 3, 8, 10)).total_flops == outputs_2d * 4
    assert nn.AvgPool2d((2, 3)).summary((2, 3, 8, 9)).total_flops == 2 * 3 * 4 * 3 * 6
    assert nn.MaxPool1d(3).summary((2, 4, 12)).total_flops == 2 * 4 * 4 * 3
