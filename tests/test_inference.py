"""fastnet.inference: optimize_for_inference folds every legal Conv2d → BatchNorm2d pair, computes
what the eval-mode model computes, leaves the original alone, refuses training-mode models and
records no graph."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet import models, nn
from fastnet.bench.infer import randomize_batch_norms
from fastnet.inference import fold_pairs, folded_conv_weights, optimize_for_inference
from numerics import relative_error

TOLERANCE = 1e-5  # float32 rounding of the folded weights, against the conv then the norm


def _images(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _eval_model(model, seed=0):
    fastnet.manual_seed(seed)
    return randomize_batch_norms(model, seed).eval()


def _outputs(model, x):
    with fastnet.no_grad():
        return model(fastnet.Tensor(x)).numpy()


def _count(model, kind):
    return sum(type(module) is kind for module in model.modules())


def test_randomized_statistics_are_non_trivial():
    model = _eval_model(models.create("resnet8", width=4))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor in (module.running_mean, module.weight, module.bias):
                assert np.all(tensor.numpy() != 0)
            assert np.all(module.running_var.numpy() != 1)


def test_resnet_folds_every_batch_norm_and_computes_the_same():
    model = _eval_model(models.create("resnet8", width=4))
    x = _images((3, 3, 12, 12))
    optimized = optimize_for_inference(model, x[:1])
    assert _count(model, nn.BatchNorm2d) == 9 and _count(optimized, nn.BatchNorm2d) == 0
    assert relative_error(_outputs(optimized, x), _outputs(model, x)) < TOLERANCE


def test_without_an_example_only_sequential_pairs_fold():
    model = _eval_model(models.create("resnet8", width=4))
    # the stem and the two reshaping shortcuts; the blocks' pairs need the traced data flow
    assert fold_pairs(model) == [
        ("features.conv", "features.bn"),
        ("features.layer2.0.shortcut.0", "features.layer2.0.shortcut.1"),
        ("features.layer3.0.shortcut.0", "features.layer3.0.shortcut.1"),
    ]
    x = _images((2, 3, 8, 8))
    optimized = optimize_for_inference(model)
    assert _count(optimized, nn.BatchNorm2d) == 6
    assert relative_error(_outputs(optimized, x), _outputs(model, x)) < TOLERANCE


def test_a_conv_with_a_bias_and_a_norm_without_affine_weights_fold():
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.BatchNorm2d(5, affine=False),
        nn.ReLU(),
        nn.Conv2d(5, 4, 1, stride=2, groups=1, bias=True),
        nn.BatchNorm2d(4),
    )
    model = _eval_model(model)
    x = _images((2, 3, 7, 9))
    optimized = optimize_for_inference(model)
    assert _count(optimized, nn.BatchNorm2d) == 0 and _count(optimized, nn.Identity) == 3
    assert _count(optimized, nn.ConvReLU2d) == 1  # the first conv took the ReLU after its norm
    assert relative_error(_outputs(optimized, x), _outputs(model, x)) < TOLERANCE


def test_the_original_model_is_left_untouched():
    model = _eval_model(models.create("resnet8", width=4))
    before = {name: value.copy() for name, value in model.state_dict().items()}
    optimized = optimize_for_inference(model, _images((1, 3, 8, 8)))
    after = model.state_dict()
    assert list(after) == list(before)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in optimized.parameters())
    assert _count(model, nn.BatchNorm2d) == 9
    assert all(type(module).forward is module.forward.__func__ for module in model.modules())


class _ConvOutputUsedTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class _NormNotAfterTheConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(fastnet.functional.relu(self.conv(x)))


@pytest.mark.parametrize(
    "model",
    [
        _ConvOutputUsedTwice(),
        _NormNotAfterTheConv(),
        nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.BatchNorm2d(3)),
        nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, track_running_stats=False)),
    ],
    ids=["output-used-twice", "relu-between", "sequential-relu-between", "no-running-stats"],
)
def test_illegal_folds_are_left_alone(model):
    model = _eval_model(model)
    x = _images((2, model.conv.in_channels if hasattr(model, "conv") else 2, 6, 6))
    assert fold_pairs(model, x[:1]) == []
    optimized = optimize_for_inference(model, x[:1])
    assert _count(optimized, nn.BatchNorm2d) == 1
    assert relative_error(_outputs(optimized, x), _outputs(model, x)) < TOLERANCE


def test_training_mode_models_are_refused_as_in_pytorch():
    model = models.create("resnet8", width=4)
    with pytest.raises(ValueError, match=r"training mode .*call model\.eval\(\) first"):
        optimize_for_inference(model)
    model.eval()
    model.features.bn.train()
    with pytest.raises(ValueError, match="features.bn"):
        optimize_for_inference(model)


def test_the_optimized_model_records_no_graph_even_outside_no_grad():
    model = _eval_model(models.mnist_cnn())
    out = optimize_for_inference(model)(fastnet.Tensor(_images((2, 1, 28, 28))))
    assert not out.requires_grad and out._ctx is None


def test_a_vit_has_nothing_to_fold_and_computes_the_same():
    model = _eval_model(models.ViT(image_size=8, patch_size=4, dim=16, depth=1, heads=2))
    x = _images((2, 1, 8, 8))
    assert fold_pairs(model, x[:1]) == []
    assert relative_error(_outputs(optimize_for_inference(model, x[:1]), x), _outputs(model, x)) < (
        TOLERANCE
    )


def test_folded_weights_match_the_float64_formula():
    conv, norm = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)
    _eval_model(nn.Sequential(conv, norm))
    weight, bias = folded_conv_weights(conv, norm)
    gain = norm.weight.numpy().astype(np.float64)
    scale = gain / np.sqrt(norm.running_var.numpy().astype(np.float64) + norm.eps)
    expected_bias = (conv.bias.numpy() - norm.running_mean.numpy()) * scale + norm.bias.numpy()
    np.testing.assert_allclose(weight, conv.weight.numpy() * scale[:, None, None, None], 1e-6)
    np.testing.assert_allclose(bias, expected_bias, 1e-6)
    same_weight, zero_bias = folded_conv_weights(nn.Conv2d(2, 3, 3, bias=False), None)
    assert same_weight.dtype == np.float32 and np.all(zero_bias == 0)


def test_the_blocks_first_relu_fuses_into_their_first_convolution():
    model = _eval_model(models.create("resnet8", width=4))
    x = _images((3, 3, 12, 12))
    optimized = optimize_for_inference(model, x[:1])
    blocks = [m for m in optimized.modules() if type(m) is models.resnet.BasicBlock]
    assert len(blocks) == 3
    for block in blocks:
        assert type(block.conv1) is nn.ConvReLU2d and type(block.relu1) is nn.Identity
        assert type(block.conv2) is nn.Conv2d  # its ReLU comes after the residual add
    assert relative_error(_outputs(optimized, x), _outputs(model, x)) < TOLERANCE
    # without an example, no trace: the blocks keep their ReLU modules
    assert _count(optimize_for_inference(model), nn.ReLU) == 3


class _ReLUAfter(nn.Module):
    """conv → [bn] → relu, with one thing that makes fusing the ReLU illegal."""

    def __init__(self, case: str) -> None:
        super().__init__()
        self.case = case
        self.conv, self.bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.relu = nn.ReLU(inplace=case == "in-place")

    def forward(self, x):
        y = self.bn(self.conv(x)) if self.case != "no-norm" else self.conv(x)
        if self.case == "input-read-twice":
            return self.relu(y) + y
        if self.case == "relu-called-twice":
            return self.relu(self.relu(y) - 1.0)
        if self.case == "input-returned":
            self.relu(y)  # its only reader, but y is also what the model returns
            return y
        return self.relu(y)


@pytest.mark.parametrize(
    "case, fuses",
    [
        ("plain", True),
        ("no-norm", True),
        ("input-read-twice", False),
        ("relu-called-twice", False),
        ("input-returned", False),
        ("in-place", False),
    ],
)
def test_a_relu_module_fuses_only_where_the_trace_shows_it_legal(case, fuses):
    model = _eval_model(_ReLUAfter(case))
    x = _images((2, 2, 6, 6))
    optimized = optimize_for_inference(model, x[:1])
    assert (type(optimized.conv) is nn.ConvReLU2d) == fuses
    assert (type(optimized.relu) is nn.Identity) == fuses
    assert relative_error(_outputs(optimized, x), _outputs(model, x)) < TOLERANCE
