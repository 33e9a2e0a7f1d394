"""A tensor that several ops consumed gets the sum of their gradients, and the ReLUs add the two
last ones inside their own backward pass (``Function.backward_of_sum``): a residual block's output
feeds the next block's convolution and its shortcut. The fused sum must give the bits that adding
first and then running the plain backward gives, on every ReLU op, on both devices, and in a whole
ResNet block; three or more gradients add in arrival order."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet.autograd import Function
from fastnet.backend import get_device
from fastnet.functional.activations import AddReLU, ReLUAfter
from fastnet.models.resnet import BasicBlock
from fastnet.tensor_ops import ReLU, relu_grad_of_sum

RELU_FUNCTIONS = (ReLU, AddReLU, ReLUAfter)


@pytest.fixture
def summing_first(monkeypatch):
    """Turn the ReLUs' fused sum off: the default backward_of_sum adds, then runs backward."""

    def turn_off():
        for cls in RELU_FUNCTIONS:
            monkeypatch.setattr(cls, "backward_of_sum", Function.backward_of_sum)

    return turn_off


def gradients(build, inputs, weights):
    """Gradients of sum_k (weights[k] * outputs[k]).sum() for the outputs build(*inputs) gives:
    every output is consumed by one multiply, so a tensor feeding several of them sums several
    gradients."""
    leaves = [fn.tensor(array, requires_grad=True) for array in inputs]
    outputs = build(*leaves)
    loss = sum(((out * fn.tensor(w)).sum() for out, w in zip(outputs, weights, strict=True)))
    loss.backward()
    return [leaf.grad.numpy() for leaf in leaves]


def two_consumers_of_relu(x):
    y = x.relu()
    return y, y


def two_consumers_of_add_relu(a, b):
    y = F.add_relu(a, b)
    return y, y * 1.5


def two_consumers_of_linear_relu(x, weight, bias):
    y = F.linear_relu(x, weight, bias)
    return y, y.exp()


def two_consumers_of_conv2d_relu(x, weight):
    y = F.conv2d_relu(x, weight, padding=1)
    return y, y


CASES = {
    "relu": (two_consumers_of_relu, [(4, 7, 5)], [(4, 7, 5), (4, 7, 5)]),
    "add_relu": (two_consumers_of_add_relu, [(3, 11), (3, 11)], [(3, 11), (3, 11)]),
    "linear_relu": (two_consumers_of_linear_relu, [(5, 6), (9, 6), (9,)], [(5, 9), (5, 9)]),
    "conv2d_relu": (
        two_consumers_of_conv2d_relu,
        [(2, 16, 6, 5), (16, 16, 3, 3)],  # 16 channels: the Winograd path
        [(2, 16, 6, 5), (2, 16, 6, 5)],
    ),
}


@pytest.fixture
def fused_calls(monkeypatch):
    """How many times the cpu device's relu_backward was handed two gradients."""
    device = get_device("cpu")
    plain = device.relu_backward
    calls = []

    def spy(dy, y, dy_other=None):
        calls.append(dy_other is not None)
        return plain(dy, y, dy_other=dy_other)

    monkeypatch.setattr(device, "relu_backward", spy)
    return calls


@pytest.mark.parametrize("case", CASES)
def test_the_fused_sum_gives_the_bits_of_adding_first(rng, summing_first, fused_calls, case):
    build, input_shapes, weight_shapes = CASES[case]
    inputs = [rng.standard_normal(shape).astype(np.float32) for shape in input_shapes]
    weights = [rng.standard_normal(shape).astype(np.float32) for shape in weight_shapes]
    fused = gradients(build, inputs, weights)
    assert fused_calls == [True]
    summing_first()
    added = gradients(build, inputs, weights)
    assert fused_calls == [True, False]
    for got, expected in zip(fused, added, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_relu_consumed_twice_against_float64(rng):
    """d/dx of sum(a·relu(x)) + sum(b·relu(x)) = (a + b)·[x > 0]."""
    x, a, b = (rng.standard_normal((6, 9)) for _ in range(3))
    (grad,) = gradients(two_consumers_of_relu, [x.astype(np.float32)], [a, b])
    expected = np.where(x.astype(np.float32) > 0, a.astype(np.float32) + b.astype(np.float32), 0)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)
    assert np.all(grad[x <= 0] == 0) and np.any(grad != 0)


def test_three_and_four_consumers_add_in_arrival_order(rng):
    """The walk keeps two gradients apart; a third adds the first two: against float64 the sum of
    four gradients stays within float32's rounding of three additions."""
    x = rng.standard_normal((5, 8))
    weights = [rng.standard_normal((5, 8)) for _ in range(4)]
    (grad,) = gradients(lambda t: [t.relu()] * 4, [x.astype(np.float32)], weights)
    expected = np.where(x > 0, sum(w.astype(np.float32).astype(np.float64) for w in weights), 0)
    np.testing.assert_allclose(grad, expected, rtol=4e-7, atol=4e-7)
    leaf = fn.tensor(x, requires_grad=True)  # a leaf consumed three times
    (leaf * 2 + leaf * 3 + leaf.exp()).sum().backward()
    np.testing.assert_allclose(leaf.grad.numpy(), 5 + np.exp(x.astype(np.float32)), rtol=1e-6)


def test_two_dtypes_are_added_first_as_numpy_promotes(rng):
    device = get_device("cpu")
    out = device.relu_forward(rng.standard_normal(7).astype(np.float32))
    first = rng.standard_normal(7).astype(np.float32)
    second = rng.standard_normal(7)  # float64
    got = relu_grad_of_sum(device, first, second, out.astype(np.float64))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, np.where(out > 0, first + second, 0))


def test_a_resnet_block_gives_the_bits_of_adding_first(rng, summing_first, fused_calls):
    """Two blocks in a row: the second block's input (the first's add_relu output) feeds its
    conv1 and its identity shortcut."""
    fn.manual_seed(3)
    blocks = fn.nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
    x = rng.standard_normal((3, 16, 7, 6)).astype(np.float32)
    weight = rng.standard_normal((3, 16, 7, 6)).astype(np.float32)

    def run():
        blocks.zero_grad()
        leaf = fn.tensor(x, requires_grad=True)
        (blocks(leaf) * fn.tensor(weight)).sum().backward()
        return [leaf.grad.numpy(), *(p.grad.numpy() for p in blocks.parameters())]

    fused = run()
    assert fused_calls.count(True) == 1  # the first block's output, the second block's input
    summing_first()
    for got, expected in zip(fused, run(), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_the_fused_sum_on_the_cuda_device_matches_the_cpu(rng):
    x = rng.standard_normal((4, 33)).astype(np.float32)
    weights = [rng.standard_normal((4, 33)).astype(np.float32) for _ in range(2)]
    expected = gradients(two_consumers_of_add_relu, [x, -x[::-1].copy()], weights)
    leaves = [fn.tensor(array, requires_grad=True, device="cuda") for array in (x, -x[::-1].copy())]
    outputs = two_consumers_of_add_relu(*leaves)
    loss = sum(
        (out * fn.tensor(w, device="cuda")).sum() for out, w in zip(outputs, weights, strict=True)
    )
    loss.backward()
    for leaf, want in zip(leaves, expected, strict=True):
        np.testing.assert_array_equal(leaf.grad.numpy(), want)
