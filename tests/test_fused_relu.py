"""conv2d_relu and linear_relu (one op for a layer and the ReLU after it), the ConvReLU2d and
LinearReLU layers, and optimize_for_inference's fusing of Sequential pairs: the same values and
gradients as the two ops in a row, on every convolution path."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet import functional as F
from fastnet import models, nn
from fastnet.bench.infer import randomize_batch_norms
from fastnet.inference import optimize_for_inference
from numerics import relative_error

# (x shape, weight shape, conv2d keywords): Winograd (3x3, >= 16 channels), im2col with
# groups, stride and dilation, depthwise, and an unbatched input
CONVOLUTIONS = [
    ((2, 16, 7, 9), (5, 16, 3, 3), {"padding": 1}),
    ((3, 4, 9, 8), (6, 2, 3, 2), {"stride": 2, "padding": (1, 0), "dilation": (2, 1), "groups": 2}),
    ((2, 3, 8, 7), (6, 1, 3, 3), {"padding": 1, "groups": 3}),
    ((3, 6, 5), (4, 3, 3, 3), {"padding": "same"}),
]


def _tensors(rng, *shapes):
    return [
        fastnet.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
        for shape in shapes
    ]


def _values_and_gradients(op, inputs, upstream):
    for tensor in inputs:
        tensor.grad = None
    out = op(*inputs)
    out.backward(fastnet.tensor(upstream))
    return [out.numpy()] + [tensor.grad.numpy() for tensor in inputs]


def _check_fused(fused_op, plain_op, inputs, rng):
    upstream = rng.standard_normal(plain_op(*inputs).shape).astype(np.float32)
    expected = _values_and_gradients(plain_op, inputs, upstream)
    got = _values_and_gradients(fused_op, inputs, upstream)
    assert (expected[0] == 0).any() and (expected[0] > 0).any()  # both sides of the ReLU
    np.testing.assert_array_equal(got[0], expected[0])
    for fused_grad, plain_grad in zip(got[1:], expected[1:], strict=True):
        assert relative_error(fused_grad, plain_grad) < 1e-6


@pytest.mark.parametrize(("x_shape", "w_shape", "keywords"), CONVOLUTIONS)
def test_conv2d_relu_is_relu_of_conv2d_in_values_and_gradients(x_shape, w_shape, keywords):
    rng = np.random.default_rng(sum(x_shape))
    inputs = _tensors(rng, x_shape, w_shape, (w_shape[0],))
    _check_fused(
        lambda *t: F.conv2d_relu(*t, **keywords),
        lambda *t: F.relu(F.conv2d(*t, **keywords)),
        inputs,
        rng,
    )


def test_linear_relu_is_relu_of_linear_in_values_and_gradients():
    rng = np.random.default_rng(3)
    inputs = _tensors(rng, (2, 5, 7), (3, 7), (3,))
    _check_fused(F.linear_relu, lambda *t: F.relu(F.linear(*t)), inputs, rng)


def test_a_nan_stays_nan_through_the_fused_relu_as_through_relu():
    x = fastnet.tensor(np.array([[0.5, -1.0, 2.0]], np.float32))
    weight = fastnet.tensor(np.eye(3, dtype=np.float32))
    bias = fastnet.tensor(np.array([np.nan, 0.0, 0.0], np.float32))
    np.testing.assert_array_equal(F.linear_relu(x, weight, bias).numpy(), [[np.nan, 0.0, 2.0]])


def test_the_fused_output_changed_in_place_is_refused_at_backward():
    rng = np.random.default_rng(4)
    x, weight = _tensors(rng, (2, 3), (4, 3))
    out = F.linear_relu(x, weight)
    with fastnet.no_grad():  # backward reads the output: a change to it must not pass unseen
        out.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_fused_layers_hold_the_layers_own_parameters_under_the_same_names():
    conv, linear = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(5, 2)
    fused_conv, fused_linear = nn.ConvReLU2d.fuse(conv), nn.LinearReLU.fuse(linear)
    assert fused_conv.weight is conv.weight and fused_linear.bias is linear.bias
    assert list(fused_conv.state_dict()) == ["weight", "bias"]
    assert repr(fused_conv).startswith("ConvReLU2d(3, 4, kernel_size=(3, 3)")
    x = fastnet.tensor(np.random.default_rng(5).standard_normal((2, 3, 6, 6)).astype(np.float32))
    np.testing.assert_array_equal(fused_conv(x).numpy(), F.relu(conv(x)).numpy())


def test_a_fused_layer_is_built_from_its_own_layer_only():
    with pytest.raises(TypeError, match="ConvReLU2d.fuse expects a Conv2d, got Linear"):
        nn.ConvReLU2d.fuse(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="LinearReLU.fuse expects a Linear, got LinearReLU"):
        nn.LinearReLU.fuse(nn.LinearReLU(2, 2))


def _kinds(model):
    return [type(module) for module in model.modules()]


def _predict(model, x):
    with fastnet.no_grad():
        return model(fastnet.Tensor(x)).numpy()


def test_inference_fuses_each_sequential_layer_and_its_relu_and_computes_the_same():
    fastnet.manual_seed(0)
    model = models.mnist_cnn().eval()
    optimized = optimize_for_inference(model)
    kinds = _kinds(optimized)
    assert kinds.count(nn.ConvReLU2d) == 2 and kinds.count(nn.LinearReLU) == 1
    assert nn.ReLU not in kinds and nn.ReLU in _kinds(model)  # the original is left alone
    x = np.random.default_rng(6).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(_predict(optimized, x), _predict(model, x))


def test_inference_fuses_across_a_folded_batch_norm_but_not_across_other_layers():
    fastnet.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),  # fold, then fuse
        nn.Conv2d(4, 4, 3), nn.MaxPool2d(2), nn.ReLU(),  # a pool between: no fusion
        nn.Flatten(), nn.Linear(16, 3), nn.ReLU(), nn.ReLU(),  # fuses the first ReLU only
    )  # fmt: skip
    model = randomize_batch_norms(model).eval()
    optimized = optimize_for_inference(model)
    assert [type(m) for m in optimized.children()] == [
        nn.ConvReLU2d, nn.Identity, nn.Identity, nn.Conv2d, nn.MaxPool2d, nn.ReLU,
        nn.Flatten, nn.LinearReLU, nn.Identity, nn.ReLU,
    ]  # fmt: skip
    x = np.random.default_rng(7).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert relative_error(_predict(optimized, x), _predict(model, x)) < 1e-5
