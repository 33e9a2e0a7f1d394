"""fastnet.bench.flops: the FLOPs of a training step, held to counts written out by hand from the
layer sizes (2 FLOPs per multiply-add; backward: one more GEMM per operand that needs a gradient;
elementwise terms as many again), and ``fastnet bench --train`` showing each step against the GEMM
ceiling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastnet import models, nn
from fastnet.bench import flops as bench_flops
from fastnet.bench import pinned_threads, race
from fastnet.bench.flops import ADAM_FLOPS_PER_PARAMETER as ADAM
from fastnet.bench.flops import count_step_flops
from fastnet.bench.harness import Ceilings
from fastnet.cli import main as cli_main

LOSS = 5  # cross-entropy FLOPs per logit


def test_one_conv2d_counts_the_direct_convolution_and_only_its_weight_gradient():
    batch, channels, out_channels, side, kernel = 5, 3, 8, 9, 3
    conv = nn.Conv2d(channels, out_channels, kernel, stride=2, padding=1)
    out_side = (side + 2 * 1 - kernel) // 2 + 1  # 5
    outputs = batch * out_channels * out_side * out_side
    gemm = 2 * outputs * channels * kernel * kernel
    parameters = out_channels * channels * kernel * kernel + out_channels

    counted = count_step_flops(conv, (channels, side, side), batch)

    assert counted.forward_gemm == gemm
    assert counted.backward_gemm == gemm  # the weight gradient; the data needs no gradient
    assert counted.forward_other == outputs + LOSS * outputs  # bias, then the loss
    assert counted.backward_other == counted.forward_other
    assert counted.optimizer == ADAM * parameters
    assert counted.total == 2 * gemm + 2 * (outputs + LOSS * outputs) + ADAM * parameters
    assert counted.uncounted == []


def test_grouped_bias_free_conv2d_counts_channels_per_group():
    conv = nn.Conv2d(4, 6, (3, 1), groups=2, bias=False)
    counted = count_step_flops(conv, (4, 7, 5), 3)
    assert counted.forward_gemm == 2 * (3 * 6 * 5 * 5) * (4 // 2) * 3 * 1


def test_one_linear_counts_every_row_of_its_input():
    batch, tokens, width_in, width_out = 6, 4, 7, 5
    linear = nn.Linear(width_in, width_out)
    counted = count_step_flops(linear, (tokens, width_in), batch)
    rows = batch * tokens
    assert counted.forward_gemm == 2 * rows * width_in * width_out
    assert counted.backward_gemm == 2 * rows * width_in * width_out
    assert counted.forward_other == rows * width_out * (1 + LOSS)


def test_a_conv_batchnorm_relu_pool_linear_chain():
    batch = 4
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10),
    )
    maps = 4 * 8 * 8  # conv, batch norm and ReLU outputs per sample
    pooled = 4 * 4 * 4
    conv = 2 * maps * 1 * 3 * 3
    linear = 2 * pooled * 10
    # bias, batch norm (5 + 2 affine), ReLU, 2x2 max-pool, Linear bias, loss
    elementwise = maps + 7 * maps + maps + pooled * 4 + 10 + LOSS * 10
    parameters = (4 * 9 + 4) + (4 + 4) + (64 * 10 + 10)

    counted = count_step_flops(model, (1, 8, 8), batch, classes=10)

    assert counted.forward_gemm == batch * (conv + linear)
    # the conv's weight gradient only; the Linear's input and weight gradients
    assert counted.backward_gemm == batch * (conv + 2 * linear)
    assert counted.forward_other == batch * elementwise
    assert counted.backward_other == batch * elementwise
    assert counted.optimizer == ADAM * parameters
    assert counted.total == batch * (2 * conv + 3 * linear + 2 * elementwise) + ADAM * parameters


def test_a_residual_block_counts_each_relu_once():
    batch, channels, side = 3, 4, 6
    block = models.resnet.BasicBlock(channels, channels)
    maps = channels * side * side  # every conv, norm, ReLU and addition output per sample
    conv = 2 * maps * channels * 3 * 3
    # two batch norms (5 + 2 affine), relu1, the shortcut's addition and the last ReLU, the loss
    elementwise = 2 * 7 * maps + maps + 2 * maps + LOSS * maps
    counted = count_step_flops(block, (channels, side, side), batch)
    assert counted.forward_gemm == batch * 2 * conv
    assert counted.forward_other == batch * elementwise
    assert counted.uncounted == []


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


def test_attention_counts_projections_scores_and_weighted_values():
    batch, tokens, width, heads = 3, 6, 8, 2
    projection = 2 * tokens * width * width  # per sample, each of Q, K, V and the output
    scores = 2 * tokens * tokens * width  # Q·Kᵀ: T·T pairs of width-long dots over all heads
    weighted = 2 * tokens * tokens * width  # weights·V
    softmax = 5 * heads * tokens * tokens
    biases = 3 * tokens * width + tokens * width
    logits = tokens * width

    counted = count_step_flops(SelfAttention(width, heads), (tokens, width), batch)

    assert counted.forward_gemm == batch * (4 * projection + scores + weighted)
    # Q, K, V projections: weight gradients only (the data needs none); the rest: both operands
    assert counted.backward_gemm == batch * (3 * projection + 2 * (projection + scores + weighted))
    assert counted.forward_other == batch * (biases + softmax + LOSS * logits)
    assert counted.backward_other == counted.forward_other


def test_resnet20_forward_is_about_41_million_multiply_adds_per_image():
    def conv(side, out_channels, in_channels, kernel=3):
        return side * side * out_channels * in_channels * kernel * kernel

    multiply_adds = (
        conv(32, 16, 3)  # stem
        + 6 * conv(32, 16, 16)  # stage 1: three blocks of two
        + conv(16, 32, 16) + 5 * conv(16, 32, 32) + conv(16, 32, 16, 1)  # stage 2 + shortcut
        + conv(8, 64, 32) + 5 * conv(8, 64, 64) + conv(8, 64, 32, 1)  # stage 3 + shortcut
        + 64 * 10  # the head
    )  # fmt: skip
    counted = count_step_flops(models.create("resnet"), (3, 32, 32), 2, classes=10)
    assert counted.forward_gemm == 2 * 2 * multiply_adds
    assert 40e6 < multiply_adds < 42e6
    stem = 2 * 2 * conv(32, 16, 3)
    assert counted.backward_gemm == 2 * counted.forward_gemm - stem
    assert counted.uncounted == []


def test_race_models_are_fully_counted_and_scale_with_the_batch():
    for entry in race.train_models():
        model = entry.build()
        one = count_step_flops(model, entry.sample_shape, 1, entry.classes)
        many = count_step_flops(model, entry.sample_shape, 7, entry.classes)
        assert one.uncounted == [], entry.name
        assert many.total - many.optimizer == 7 * (one.total - one.optimizer)
        assert many.optimizer == one.optimizer


def test_counting_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten())
    model[2].eval()  # a part in eval mode keeps its own mode; the batch norm trains
    state = {name: np.array(value, copy=True) for name, value in model.state_dict().items()}
    count_step_flops(model, (1, 5, 5), 3)
    assert [m.training for m in model.modules()] == [True, True, True, False, True]
    assert all("forward" not in vars(m) for m in model.modules())
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(np.asarray(value), state[name])


def test_layers_without_a_rule_are_named_not_taken_as_free():
    class Unheard(nn.Module):
        def forward(self, x):
            return x * 2

    counted = count_step_flops(nn.Sequential(nn.Linear(3, 3), Unheard()), (3,), 2)
    assert counted.uncounted == ["Unheard"]
    with pytest.raises(ValueError, match="not 4 wide"):
        count_step_flops(nn.Linear(3, 3), (3,), 2, classes=4)


# ---------------------------------------------------------------- the --train table

TINY_CNN = race.TrainModel(
    "tiny_cnn",
    lambda: models.mnist_cnn(image_size=8, widths=(2, 4), hidden=8),
    (1, 8, 8),
    (4,),
)


def test_training_rows_carry_flops_rates_and_the_fraction_of_the_ceiling():
    pytest.importorskip("torch")
    ceilings = Ceilings("cpu", 1, 50.0, 10.0, "hand-written BLAS")
    with pinned_threads(1):
        result = race.against_ceiling(race.measure_training(TINY_CNN, 4, quick=True), ceilings)
    step = bench_flops.count_step_flops(TINY_CNN.build(), (1, 8, 8), 4, 10).total
    assert result["flops_per_step"]["total"] == step
    for name in ("fastnet", "torch"):
        gflops = step * result["samples_per_second"][name] / 4 / 1e9
        assert result["gflops"][name] == pytest.approx(gflops)
        assert result["percent_of_ceiling"][name] == pytest.approx(100 * gflops / 50.0)
    table = race.format_training_table([result], 1, ceilings=ceilings)
    assert table.splitlines()[0] == f"ceilings: {ceilings.describe()}"
    header = table.splitlines()[2]
    for column in ("GFLOP/step", "fastnet GFLOP/s (% ceiling)", "torch GFLOP/s (% ceiling)"):
        assert column in header
    percent = f"({result['percent_of_ceiling']['fastnet']:.1f}%)"
    assert percent in table.splitlines()[4]
    assert "(% ceiling)" not in race.format_training_table([result], 1)  # no ceilings given


def test_bench_train_quick_prints_the_ceiling_and_the_new_columns(tmp_path, capsys):
    pytest.importorskip("torch")
    path = tmp_path / "train.json"
    status = cli_main(
        ["bench", "--train", "--quick", "--only", "mlp", "--threads", "1", "--json", str(path)]
    )
    assert status == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("ceilings: cpu, 1 thread: GEMM ")
    assert "GFLOP/step" in printed[2] and "torch GFLOP/s (% ceiling)" in printed[2]
    report = json.loads(path.read_text())
    (row,) = report["train"]
    assert report["ceilings"]["gemm_gflops"] == row["gemm_ceiling_gflops"] > 0
    multiply_adds = 784 * 512 + 512 * 256 + 256 * 10
    assert row["flops_per_step"]["forward_gemm"] == 2 * 4 * multiply_adds
    assert set(row["percent_of_ceiling"]) == {"fastnet", "torch"}
