"""batch_norm_relu (batch norm and the ReLU after it as one op) and where the layers use it:
Sequential's BatchNorm → ReLU pairs and the ResNet block's ``relu1(bn1(conv1(x)))``. The same
values, gradients and running statistics as the two ops in a row, in training and in eval."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet import functional as F
from fastnet import models, nn
from fastnet.functional.normalization import BatchNormReLU
from fastnet.gradcheck import gradcheck
from numerics import relative_error


def _inputs(rng, shape, device="cpu", dtype=np.float32):
    channels = shape[1]

    def tensor(values, grad=True):
        return fastnet.tensor(values, dtype=dtype, requires_grad=grad, device=device)

    x = tensor(rng.standard_normal(shape) * 2 + 0.3)
    weight = tensor(rng.standard_normal(channels))
    bias = tensor(rng.standard_normal(channels) * 0.5)
    running = [
        tensor(rng.standard_normal(channels), grad=False),
        tensor(0.5 + rng.random(channels), grad=False),
    ]
    return x, weight, bias, running


def _run(op, x, weight, bias, running, training, upstream):
    for tensor in (x, weight, bias):
        tensor.grad = None
    out = op(x, *running, weight, bias, training=training, momentum=0.3)
    out.backward(fastnet.tensor(upstream, device=x.device))
    grads = [tensor.grad.numpy() for tensor in (x, weight, bias)]
    return [out.numpy(), *grads, *(r.numpy() for r in running)]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (9, 4)])
def test_batch_norm_relu_is_relu_of_batch_norm(device, training, shape):
    rng = np.random.default_rng(sum(shape))
    x, weight, bias, running = _inputs(rng, shape, device)
    upstream = rng.standard_normal(shape).astype(np.float32)
    start = [r.numpy().copy() for r in running]
    fused = _run(F.batch_norm_relu, x, weight, bias, running, training, upstream)
    for tensor, values in zip(running, start, strict=True):
        tensor.data[...] = fastnet.tensor(values, device=device).data
    plain = _run(
        lambda *a, **k: F.relu(F.batch_norm(*a, **k)), x, weight, bias, running, training, upstream
    )
    assert (plain[0] == 0).any() and (plain[0] > 0).any()  # both sides of the ReLU
    np.testing.assert_array_equal(fused[0], plain[0])
    for got, expected in zip(fused[1:], plain[1:], strict=True):
        assert relative_error(got, expected) < 1e-5


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_batch_norm_relu_gradients_match_finite_differences(training):
    rng = np.random.default_rng(7)
    x, weight, bias, running = _inputs(rng, (3, 2, 3, 2), dtype=np.float64)
    assert gradcheck(
        lambda x, w, b: F.batch_norm_relu(x, *running, w, b, training=training, momentum=0.0),
        [x, weight, bias],
    )


def test_batch_norm_relu_without_affine_parameters():
    rng = np.random.default_rng(3)
    x, _, _, running = _inputs(rng, (5, 3, 4))
    upstream = rng.standard_normal((5, 3, 4)).astype(np.float32)
    got = F.batch_norm_relu(x, None, None, training=True)
    got.backward(fastnet.tensor(upstream))
    fused_grad, x.grad = x.grad.numpy(), None
    expected = F.relu(F.batch_norm(x, None, None, training=True))
    expected.backward(fastnet.tensor(upstream))
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert relative_error(fused_grad, x.grad.numpy()) < 1e-5


def test_batch_norm_relu_checks_its_arguments_as_batch_norm_does():
    x = fastnet.tensor(np.random.default_rng(0).standard_normal((4, 3, 2)).astype(np.float32))
    with pytest.raises(ValueError, match=r"weight of shape \(2,\) does not match input"):
        F.batch_norm_relu(x, None, None, fastnet.ones(2), training=True)


def _block_network(relu: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), relu, nn.Flatten())


def _step(model, x, upstream):
    model.zero_grad()
    out = model(x)
    out.backward(fastnet.tensor(upstream))
    return [out.numpy()] + [p.grad.numpy() for p in model.parameters()]


@pytest.mark.parametrize("inplace", [False, True])
def test_sequential_runs_batch_norm_then_relu_as_one_op(inplace):
    rng = np.random.default_rng(11)
    fused, plain = _block_network(nn.ReLU(inplace)), _block_network(nn.ReLU(inplace))
    plain.load_state_dict(fused.state_dict())
    plain[1].forward = plain[1].forward  # an instance forward (a hook) keeps the pair apart
    x = fastnet.tensor(rng.standard_normal((6, 3, 5, 5)).astype(np.float32))
    upstream = rng.standard_normal((6, 100)).astype(np.float32)
    got, expected = _step(fused, x, upstream), _step(plain, x, upstream)
    np.testing.assert_array_equal(got[0], expected[0])
    for fused_grad, plain_grad in zip(got[1:], expected[1:], strict=True):
        assert relative_error(fused_grad, plain_grad) < 1e-5
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_array_equal(
            getattr(fused[1], name).numpy(), getattr(plain[1], name).numpy()
        )
    # the fused pair leaves one node where the plain one leaves a ReLU on top of batch norm
    assert isinstance(fused[:3](x)._ctx, BatchNormReLU)
    assert not isinstance(plain[:3](x)._ctx, BatchNormReLU)


def test_sequential_keeps_subclasses_and_other_activations_apart():
    class Shifted(nn.BatchNorm2d):
        def forward(self, x):
            return super().forward(x) - 1.0

    x = fastnet.tensor(np.random.default_rng(2).standard_normal((3, 2, 4, 4)).astype(np.float32))
    shifted = nn.Sequential(Shifted(2), nn.ReLU())
    assert shifted(x).numpy().min() == 0.0
    assert np.array_equal(shifted(x).numpy(), F.relu(Shifted(2)(x)).numpy())
    leaky = nn.Sequential(nn.BatchNorm2d(2), nn.LeakyReLU(0.5))
    assert (leaky(x).numpy() < 0).any()


def test_resnet_block_fuses_its_first_batch_norm_and_relu():
    rng = np.random.default_rng(5)
    block = models.resnet.BasicBlock(4, 4)
    x = fastnet.tensor(rng.standard_normal((3, 4, 6, 6)).astype(np.float32), requires_grad=True)
    upstream = rng.standard_normal((3, 4, 6, 6)).astype(np.float32)
    state = block.state_dict()
    out = block(x)
    out.backward(fastnet.tensor(upstream))
    got = [out.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in block.parameters()]

    block.load_state_dict(state)
    block.zero_grad()
    x.grad = None
    first = block.relu1(block.bn1(block.conv1(x)))
    second = F.add_relu(block.bn2(block.conv2(first)), block.shortcut(x))
    second.backward(fastnet.tensor(upstream))
    expected = [second.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in block.parameters()]
    np.testing.assert_array_equal(got[0], expected[0])
    for fused_grad, plain_grad in zip(got[1:], expected[1:], strict=True):
        assert relative_error(fused_grad, plain_grad) < 1e-5


def test_sync_batch_norm_forward_relu_is_relu_of_its_forward():
    rng = np.random.default_rng(9)
    layer = nn.SyncBatchNorm(3)
    x = fastnet.tensor(rng.standard_normal((4, 3, 2, 2)).astype(np.float32))
    expected = F.relu(layer(x)).numpy()
    layer.running_mean.data[...] = 0
    layer.running_var.data[...] = 1
    np.testing.assert_array_equal(layer.forward_relu(x).numpy(), expected)
