"""conv2d_relu_max_pool2d (a convolution, the ReLU and a 2x2 max-pool after it as one op) and
where the layers use it: Sequential's Conv2d → ReLU → MaxPool2d(2) stages (the MNIST CNN's). The
same values and gradients as the three ops in a row, bit for bit on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet import functional as F
from fastnet import models, nn
from fastnet.functional.conv import Conv2dReLUMaxPool, Conv2dWinogradReLUMaxPool
from fastnet.gradcheck import gradcheck
from numerics import relative_error


def _tensor(values, device="cpu", dtype=np.float32, grad=True):
    return fastnet.tensor(values, dtype=dtype, requires_grad=grad, device=device)


def _run(op, x, weight, bias, upstream, **window):
    operands = [t for t in (x, weight, bias) if t is not None]
    for tensor in operands:
        tensor.grad = None
    out = op(x, weight, bias, **window)
    out.backward(fastnet.tensor(upstream, device=x.device))
    return [out.numpy()] + [tensor.grad.numpy() for tensor in operands]


def _plain(x, weight, bias, **window):
    return F.max_pool2d(F.relu(F.conv2d(x, weight, bias, **window)), 2)


# (x shape, output channels, kernel, window arguments): the Winograd path (16 input channels, 3x3,
# stride 1), im2col (few channels, a stride, a 5x5 kernel, "same" padding), odd output sides
CASES = [
    ((3, 16, 9, 8), 5, 3, {"padding": 1}),
    ((4, 2, 11, 10), 3, 3, {"stride": 2}),
    ((2, 3, 9, 9), 4, 5, {"padding": "same"}),
    ((5, 1, 7, 7), 6, 3, {"padding": 1, "dilation": 2}),
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: "x".join(map(str, case[0])))
def test_the_fused_op_is_the_three_ops_bit_for_bit(rng, case, bias):
    shape, out_channels, kernel, window = case
    x = _tensor(rng.standard_normal(shape))
    weight = _tensor(rng.standard_normal((out_channels, shape[1], kernel, kernel)) * 0.3)
    b = _tensor(rng.standard_normal(out_channels)) if bias else None
    upstream = rng.standard_normal(_plain(x, weight, b, **window).shape).astype(np.float32)
    expected = _run(_plain, x, weight, b, upstream, **window)
    got = _run(F.conv2d_relu_max_pool2d, x, weight, b, upstream, **window)
    assert (expected[0] == 0).any() and (expected[0] > 0).any()  # both sides of the ReLU
    for value, reference in zip(got, expected, strict=True):
        np.testing.assert_array_equal(value, reference)


def test_the_fused_op_records_one_node_of_the_kernel_that_pools(rng):
    x = _tensor(rng.standard_normal((2, 16, 6, 6)))
    winograd = F.conv2d_relu_max_pool2d(x, _tensor(rng.standard_normal((4, 16, 3, 3))), padding=1)
    assert isinstance(winograd._ctx, Conv2dWinogradReLUMaxPool)
    im2col = F.conv2d_relu_max_pool2d(x, _tensor(rng.standard_normal((4, 16, 2, 2))))
    assert isinstance(im2col._ctx, Conv2dReLUMaxPool)
    assert winograd.shape == (2, 4, 3, 3) and im2col.shape == (2, 4, 2, 2)


def test_the_fused_op_gradients_match_finite_differences(rng):
    x = _tensor(rng.standard_normal((2, 2, 5, 6)), dtype=np.float64)
    weight = _tensor(rng.standard_normal((3, 2, 3, 3)), dtype=np.float64)
    bias = _tensor(rng.standard_normal(3), dtype=np.float64)
    assert gradcheck(
        lambda x, w, b: F.conv2d_relu_max_pool2d(x, w, b, padding=1), [x, weight, bias]
    )


@pytest.mark.parametrize(
    "weight_shape, options",
    [
        ((4, 1, 3, 3), {"groups": 4, "padding": 1}),  # depthwise
        ((4, 2, 3, 3), {"groups": 2, "padding": 1}),  # groups with a bias
    ],
    ids=["depthwise", "groups-and-bias"],
)
def test_what_the_kernels_do_not_pool_runs_as_three_ops(rng, weight_shape, options):
    x = _tensor(rng.standard_normal((3, 4, 7, 6)))
    weight = _tensor(rng.standard_normal(weight_shape))
    bias = _tensor(rng.standard_normal(4))
    upstream = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    got = _run(F.conv2d_relu_max_pool2d, x, weight, bias, upstream, **options)
    expected = _run(_plain, x, weight, bias, upstream, **options)
    for value, reference in zip(got, expected, strict=True):
        np.testing.assert_array_equal(value, reference)


def test_unbatched_input_and_errors_as_the_three_ops(rng):
    weight = _tensor(rng.standard_normal((3, 2, 3, 3)))
    x = _tensor(rng.standard_normal((2, 8, 8)))
    got = F.conv2d_relu_max_pool2d(x, weight, padding=1)
    np.testing.assert_array_equal(got.numpy(), _plain(x, weight, None, padding=1).numpy())
    assert got.shape == (3, 4, 4)
    tiny = _tensor(rng.standard_normal((1, 2, 3, 3)))  # a 1x1 output: no 2x2 window fits
    with pytest.raises(ValueError) as fused_error:
        F.conv2d_relu_max_pool2d(tiny, weight)
    with pytest.raises(ValueError) as plain_error:
        _plain(tiny, weight, None)
    assert str(fused_error.value) == str(plain_error.value)
    with pytest.raises(ValueError, match="has 3 channels but weight"):
        F.conv2d_relu_max_pool2d(_tensor(rng.standard_normal((1, 3, 6, 6))), weight)


def test_the_simulated_cuda_device_gives_the_cpu_values(rng):
    shape, weight_shape = (2, 16, 6, 7), (3, 16, 3, 3)
    values = [rng.standard_normal(shape), rng.standard_normal(weight_shape), rng.standard_normal(3)]
    upstream = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    results = []
    for device in ("cpu", "cuda"):
        x, weight, bias = (_tensor(v, device) for v in values)
        results.append(_run(F.conv2d_relu_max_pool2d, x, weight, bias, upstream, padding=1))
    for got, expected in zip(results[1], results[0], strict=True):
        assert relative_error(got, expected) < 1e-5


def _stage(*extra: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), *extra)


def _step(model, x, upstream):
    model.zero_grad()
    out = model(x)
    out.backward(fastnet.tensor(upstream))
    return [out.numpy()] + [p.grad.numpy() for p in model.parameters()]


def test_sequential_runs_conv_relu_pool_as_one_op(rng):
    fused, plain = _stage(nn.Flatten()), _stage(nn.Flatten())
    plain.load_state_dict(fused.state_dict())
    plain[1].forward = plain[1].forward  # an instance forward (a hook) keeps the three apart
    x = fastnet.tensor(rng.standard_normal((4, 2, 9, 8)).astype(np.float32))
    upstream = rng.standard_normal((4, 3 * 4 * 4)).astype(np.float32)
    for got, expected in zip(_step(fused, x, upstream), _step(plain, x, upstream), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert isinstance(fused[:3](x)._ctx, Conv2dReLUMaxPool)
    assert not isinstance(plain[:3](x)._ctx, Conv2dReLUMaxPool)


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool2d(3),
        nn.MaxPool2d(2, stride=1),
        nn.MaxPool2d(2, padding=1),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.MaxPool2d(2, return_indices=True),
    ],
    ids=["kernel-3", "stride-1", "padded", "ceil-mode", "indices"],
)
def test_sequential_fuses_only_the_2x2_stride_2_pool(rng, pool):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), pool)
    x = fastnet.tensor(rng.standard_normal((2, 2, 7, 7)).astype(np.float32))
    out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    assert not isinstance(out._ctx, Conv2dReLUMaxPool)
    expected = pool(F.relu(model[0](x)))
    expected = expected[0] if isinstance(expected, tuple) else expected
    np.testing.assert_array_equal(out.numpy(), expected.numpy())


def test_sequential_keeps_subclasses_apart(rng):
    class Shifted(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) - 1.0

    fastnet.manual_seed(3)
    model = nn.Sequential(Shifted(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    x = fastnet.tensor(rng.standard_normal((2, 2, 6, 6)).astype(np.float32))
    expected = F.max_pool2d(F.relu(model[0](x)), 2)
    np.testing.assert_array_equal(model(x).numpy(), expected.numpy())


@pytest.mark.parametrize("threads", [1, 2])
def test_the_mnist_cnn_step_is_unchanged_by_the_fusion(rng, monkeypatch, threads):
    """The model the fusion is for: loss and every gradient the same bits fused and not."""
    from fastnet.nn import containers

    before = fastnet.get_num_threads()
    fastnet.set_num_threads(min(threads, fastnet.backend.numba.config.NUMBA_NUM_THREADS))
    try:
        x = fastnet.tensor(rng.standard_normal((9, 1, 28, 28)).astype(np.float32))
        y = fastnet.tensor(rng.integers(0, 10, 9))
        results = []
        for fuse in (True, False):
            if not fuse:
                monkeypatch.setattr(containers, "_conv_relu_pool_fuses", lambda *modules: False)
            fastnet.manual_seed(1)
            model = models.mnist_cnn()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            results.append([loss.numpy()] + [p.grad.numpy() for p in model.parameters()])
    finally:
        fastnet.set_num_threads(before)
    for got, expected in zip(*results, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_the_optimized_mnist_cnn_pools_in_the_kernel_with_the_same_values(rng, monkeypatch):
    """optimize_for_inference leaves ConvReLU2d, Identity, MaxPool2d: Sequential runs the three
    as the fused op, and the logits are the unfused model's bits."""
    from fastnet.inference import optimize_for_inference
    from fastnet.nn import containers

    fastnet.manual_seed(5)
    model = models.mnist_cnn().eval()
    x = fastnet.tensor(rng.standard_normal((3, 1, 28, 28)).astype(np.float32))
    optimized = optimize_for_inference(model, x)
    assert [type(m) for m in optimized.features] == [
        nn.ConvReLU2d, nn.Identity, nn.MaxPool2d
    ] * 2  # fmt: skip
    calls = []
    fused_op = F.conv2d_relu_max_pool2d
    monkeypatch.setattr(F, "conv2d_relu_max_pool2d", lambda *a: calls.append(1) or fused_op(*a))
    with fastnet.no_grad():
        fused = optimized(x).numpy()
        assert len(calls) == 2
        monkeypatch.setattr(containers, "_conv_relu_then_pool", lambda *modules: False)
        plain = optimized(x).numpy()
        assert len(calls) == 2
    np.testing.assert_array_equal(fused, plain)
    np.testing.assert_array_equal(fused, model(x).numpy())


@pytest.mark.parametrize("middle", [None, nn.Identity()], ids=["pair", "identity"])
def test_sequential_fuses_conv_relu_2d_and_the_pool(rng, middle):
    fastnet.manual_seed(2)
    conv = nn.ConvReLU2d(2, 3, 3, padding=1)
    layers = [conv, nn.MaxPool2d(2)] if middle is None else [conv, middle, nn.MaxPool2d(2)]
    model = nn.Sequential(*layers)
    x = fastnet.tensor(rng.standard_normal((2, 2, 7, 6)).astype(np.float32), requires_grad=True)
    out = model(x)
    assert isinstance(out._ctx, Conv2dReLUMaxPool)
    expected = F.max_pool2d(F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1)), 2)
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    upstream = fastnet.tensor(rng.standard_normal(out.shape).astype(np.float32))
    out.backward(upstream)
    fused_grad, x.grad = x.grad.numpy(), None
    expected.backward(upstream)
    np.testing.assert_array_equal(fused_grad, x.grad.numpy())


def test_a_hooked_identity_or_another_middle_layer_keeps_them_apart(rng):
    x = fastnet.tensor(rng.standard_normal((2, 2, 6, 6)).astype(np.float32))
    hooked = nn.Identity()
    hooked.forward = hooked.forward
    for middle in (hooked, nn.Dropout(0.0)):
        model = nn.Sequential(nn.ConvReLU2d(2, 3, 3, padding=1), middle, nn.MaxPool2d(2))
        out = model(x)
        assert not isinstance(out._ctx, Conv2dReLUMaxPool)
        np.testing.assert_array_equal(out.numpy(), F.max_pool2d(model[0](x), 2).numpy())
