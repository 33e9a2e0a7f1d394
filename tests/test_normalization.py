"""Batch norm and average pooling: values against NumPy references written here from the
definitions, gradients against finite differences (float64), the layers' PyTorch behaviour
(running statistics, train/eval, frozen statistics), the cuda device against the cpu, errors."""

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet import nn
from fastnet.backend import cuda_is_available
from fastnet.gradcheck import gradcheck
from numerics import relative_error

needs_cuda = pytest.mark.skipif(
    not cuda_is_available(), reason="needs the cuda device (GPU or simulator)"
)


def leaf(array):
    return fn.tensor(array, dtype=np.float64, requires_grad=True)


def reference_batch_norm(
    x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5
):
    """(y, new running mean, new running var) in float64, straight from the definitions."""
    x = x.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        count = x.size // x.shape[1]
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var = (1 - momentum) * running_var + momentum * var * count / (count - 1)
    else:
        mean, var = running_mean, running_var
    xhat = (x - mean.reshape(per_channel)) / np.sqrt(var.reshape(per_channel) + eps)
    return xhat * weight.reshape(per_channel) + bias.reshape(per_channel), running_mean, running_var


def channel_inputs(rng, shape):
    """x far from zero mean (the statistics must not cancel), weight, bias, running stats."""
    channels = shape[1]
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    weight, bias = rng.uniform(0.5, 1.5, channels), rng.standard_normal(channels)
    running_mean, running_var = rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)
    return x, weight, bias, running_mean, running_var


# ===================================================================== functional batch norm
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 5, 7), (1, 2, 3, 3), (6, 4, 9)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_reference_and_updates_running_statistics(shape, training, rng):
    x, weight, bias, running_mean, running_var = channel_inputs(rng, shape)
    mean_buffer, var_buffer = fn.tensor(running_mean), fn.tensor(running_var)
    y = F.batch_norm(
        fn.tensor(x),
        mean_buffer,
        var_buffer,
        fn.tensor(weight),
        fn.tensor(bias),
        training=training,
        momentum=0.3,
    )
    expected, new_mean, new_var = reference_batch_norm(
        x, weight, bias, running_mean, running_var, training, 0.3
    )
    assert y.dtype == np.float32 and relative_error(y.numpy(), expected) < 1e-5
    np.testing.assert_allclose(mean_buffer.numpy(), new_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var_buffer.numpy(), new_var, rtol=1e-5)
    if not training:  # eval reads the running statistics and leaves them alone
        np.testing.assert_array_equal(mean_buffer.numpy(), running_mean.astype(np.float32))


def test_batch_norm_without_running_statistics_or_affine(rng):
    x = rng.standard_normal((6, 3, 4, 4))
    y = F.batch_norm(fn.tensor(x, dtype=np.float64), None, None, training=True).numpy()
    expected, _, _ = reference_batch_norm(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), True)
    assert relative_error(y, expected) < 1e-12


@pytest.mark.parametrize(
    "shape,training,affine",
    [
        ((3, 2, 3, 2), True, "both"),
        ((5, 3), True, "both"),
        ((3, 2, 4), True, "weight"),
        ((3, 2, 3, 3), False, "both"),
        ((3, 2, 3, 3), True, "none"),
        ((2, 3, 2, 2), False, "bias"),
    ],
)
def test_batch_norm_gradients(shape, training, affine, rng):
    x, weight, bias, running_mean, running_var = channel_inputs(rng, shape)
    has_weight, has_bias = affine in ("both", "weight"), affine in ("both", "bias")
    inputs = [leaf(x)] + [leaf(weight)] * has_weight + [leaf(bias)] * has_bias

    def op(x, *affine):
        given = iter(affine)
        weight, bias = next(given) if has_weight else None, next(given) if has_bias else None
        # fresh running statistics per call: a training call updates them, and gradcheck calls often
        running = (
            fn.tensor(running_mean, dtype=np.float64),
            fn.tensor(running_var, dtype=np.float64),
        )
        return F.batch_norm(x, *running, weight, bias, training=training)

    assert gradcheck(op, inputs)


def test_batch_norm_errors_name_the_shapes(rng):
    x = fn.tensor(rng.standard_normal((4, 3, 2, 2)))
    with pytest.raises(
        ValueError,
        match=r"running_mean of shape \(4,\) does not match input of shape \(4, 3, 2, 2\)",
    ):
        F.batch_norm(x, fn.tensor(np.zeros(4)), fn.tensor(np.ones(4)), training=True)
    with pytest.raises(ValueError, match=r"weight of shape \(2,\) .* \(4, 3, 2, 2\)"):
        F.batch_norm(x, None, None, fn.tensor(np.ones(2)), training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(fn.tensor(rng.standard_normal((1, 3))), None, None, training=True)
    with pytest.raises(ValueError, match=r"\(N, C\) or \(N, C, \*spatial\)"):
        F.batch_norm(fn.tensor(rng.standard_normal(5)), None, None, training=True)


@needs_cuda
def test_batch_norm_devices_must_match(rng):
    x = fn.tensor(rng.standard_normal((4, 3)), device="cuda")
    with pytest.raises(RuntimeError, match="input is on cuda but running_mean on cpu"):
        F.batch_norm(x, fn.tensor(np.zeros(3)), fn.tensor(np.ones(3)), training=True)


# ===================================================================== BatchNorm layers
def test_batchnorm_layer_has_pytorch_state():
    layer = nn.BatchNorm2d(3)
    state = layer.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    np.testing.assert_array_equal(state["weight"], np.ones(3, np.float32))
    np.testing.assert_array_equal(state["bias"], np.zeros(3, np.float32))
    np.testing.assert_array_equal(state["running_var"], np.ones(3, np.float32))
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"] == 0
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    layer(fn.tensor(np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)))
    layer.reset_running_stats()
    assert all(np.array_equal(value, state[name]) for name, value in layer.state_dict().items())
    bare = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    assert bare.state_dict() == {} and bare.weight is None and bare.running_mean is None


def test_batchnorm_layer_train_then_eval_follows_reference(rng):
    layer = nn.BatchNorm2d(3, momentum=0.2)
    running_mean, running_var = np.zeros(3), np.ones(3)
    for _ in range(3):
        x = (1.0 + rng.standard_normal((4, 3, 5, 5))).astype(np.float32)
        y = layer(fn.tensor(x)).numpy()
        expected, running_mean, running_var = reference_batch_norm(
            x, np.ones(3), np.zeros(3), running_mean, running_var, True, 0.2
        )
        assert relative_error(y, expected) < 1e-5
    assert layer.num_batches_tracked.item() == 3
    np.testing.assert_allclose(layer.running_mean.numpy(), running_mean, rtol=1e-5)
    np.testing.assert_allclose(layer.running_var.numpy(), running_var, rtol=1e-5)
    layer.eval()
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    expected, _, _ = reference_batch_norm(
        x, np.ones(3), np.zeros(3), running_mean, running_var, False
    )
    assert relative_error(layer(fn.tensor(x)).numpy(), expected) < 1e-5
    assert layer.num_batches_tracked.item() == 3


def test_batchnorm_momentum_none_is_the_cumulative_average(rng):
    layer = nn.BatchNorm1d(4, momentum=None)
    batches = [rng.standard_normal((8, 4)).astype(np.float32) for _ in range(3)]
    for x in batches:
        layer(fn.tensor(x))
    expected_mean = np.mean([x.astype(np.float64).mean(axis=0) for x in batches], axis=0)
    np.testing.assert_allclose(layer.running_mean.numpy(), expected_mean, rtol=1e-5, atol=1e-7)


def test_batchnorm_without_running_statistics_uses_the_batch_in_eval(rng):
    layer = nn.BatchNorm1d(3, track_running_stats=False).eval()
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    expected, _, _ = reference_batch_norm(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), True)
    assert relative_error(layer(fn.tensor(x)).numpy(), expected) < 1e-5


def test_frozen_statistics_normalise_like_eval_and_stay_put_through_train(rng):
    layer = nn.BatchNorm2d(2)
    layer(fn.tensor(rng.standard_normal((4, 2, 3, 3)).astype(np.float32)))
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    layer.freeze_statistics = True
    layer.train()  # a training loop calls this every epoch: the flag must survive it
    x = fn.tensor(rng.standard_normal((4, 2, 3, 3)).astype(np.float32))
    frozen = layer(x)
    frozen.sum().backward()
    after = layer.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    layer.eval()
    np.testing.assert_array_equal(frozen.numpy(), layer(x).numpy())
    assert (
        layer.weight.grad is not None and layer.bias.grad is not None
    )  # the affine part still trains
    assert "freeze_statistics=True" in repr(layer)


def test_batchnorm_layer_input_errors(rng):
    with pytest.raises(
        ValueError, match=r"BatchNorm2d: expected input \(N, C, H, W\), got shape \(4, 3\)"
    ):
        nn.BatchNorm2d(3)(fn.tensor(rng.standard_normal((4, 3))))
    with pytest.raises(
        ValueError, match=r"BatchNorm1d\(3\): input of shape \(4, 5\) has 5 channels, expected 3"
    ):
        nn.BatchNorm1d(3)(fn.tensor(rng.standard_normal((4, 5))))
    with pytest.raises(ValueError, match="momentum must be in"):
        nn.BatchNorm1d(3, momentum=1.5)
    layer = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(fn.tensor(rng.standard_normal((1, 3))))
    assert layer.num_batches_tracked.item() == 0  # a refused batch is not counted


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_running_statistics_match_torch(momentum, rng):
    torch = pytest.importorskip("torch")
    ours, theirs = nn.BatchNorm2d(3, momentum=momentum), torch.nn.BatchNorm2d(3, momentum=momentum)
    for _ in range(3):
        x = (2.0 + rng.standard_normal((4, 3, 5, 5))).astype(np.float32)
        got = ours(fn.tensor(x)).numpy()
        expected = theirs(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name], value.numpy(), rtol=1e-5, atol=1e-6)


# ===================================================================== average pooling
def reference_avg_pool2d(x, kernel, stride, padding):
    """Window sums of the zero-padded input divided by the full window size, one window at a
    time."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (padded.shape[2] - kh) // sh + 1, (padded.shape[3] - kw) // sw + 1
    out = np.empty(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = padded[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw].sum(
                axis=(2, 3)
            ) / (kh * kw)
    return out


def reference_adaptive_avg_pool2d(x, output_size):
    """PyTorch's bins: rows floor(i*H/OH) .. ceil((i+1)*H/OH), one output cell at a time."""
    (oh, ow), (h, w) = output_size, x.shape[2:]
    out = np.empty(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            rows = slice(i * h // oh, -(-(i + 1) * h // oh))
            columns = slice(j * w // ow, -(-(j + 1) * w // ow))
            out[:, :, i, j] = x[:, :, rows, columns].astype(np.float64).mean(axis=(2, 3))
    return out


AVG_POOL_CASES = [
    ((2, 2), None, (0, 0)),
    ((3, 3), (2, 2), (1, 1)),
    ((3, 2), (1, 2), (1, 0)),
    ((1, 1), (2, 3), (0, 0)),
]


@pytest.mark.parametrize("kernel,stride,padding", AVG_POOL_CASES)
def test_avg_pool2d_matches_reference(kernel, stride, padding, rng):
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    got = F.avg_pool2d(fn.tensor(x), kernel, stride, padding).numpy()
    expected = reference_avg_pool2d(x, kernel, stride or kernel, padding)
    assert got.shape == expected.shape and relative_error(got, expected) < 1e-6


@pytest.mark.parametrize("kernel,stride,padding", AVG_POOL_CASES)
def test_avg_pool2d_gradients(kernel, stride, padding, rng):
    assert gradcheck(
        lambda x: F.avg_pool2d(x, kernel, stride, padding),
        [leaf(rng.standard_normal((2, 2, 7, 6)))],
    )


def test_avg_pool2d_errors(rng):
    x = fn.tensor(rng.standard_normal((1, 1, 6, 6)))
    with pytest.raises(
        ValueError, match=r"padding \(2, 2\) must be at most half the kernel size \(3, 3\)"
    ):
        F.avg_pool2d(x, 3, 1, 2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\), got shape \(6, 6\)"):
        F.avg_pool2d(fn.tensor(rng.standard_normal((6, 6))), 2)
    with pytest.raises(ValueError, match="does not fit"):
        F.avg_pool2d(x, 7)


@pytest.mark.parametrize(
    "in_hw,out_hw", [((6, 8), (1, 1)), ((7, 5), (3, 2)), ((8, 8), (4, 4)), ((2, 3), (3, 4))]
)
def test_adaptive_avg_pool2d_matches_reference(in_hw, out_hw, rng):
    x = rng.standard_normal((2, 3) + in_hw).astype(np.float32)
    got = F.adaptive_avg_pool2d(fn.tensor(x), out_hw).numpy()
    assert got.shape == (2, 3) + out_hw
    assert relative_error(got, reference_adaptive_avg_pool2d(x, out_hw)) < 1e-6


def test_adaptive_avg_pool2d_to_one_is_the_global_mean(rng):
    x = rng.standard_normal((3, 4, 5, 6))
    got = F.adaptive_avg_pool2d(fn.tensor(x, dtype=np.float64), 1).numpy()
    np.testing.assert_allclose(got, x.mean(axis=(2, 3), keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("out_hw", [(1, 1), (3, 2), (4, 5)])
def test_adaptive_avg_pool2d_gradients(out_hw, rng):
    assert gradcheck(
        lambda x: F.adaptive_avg_pool2d(x, out_hw), [leaf(rng.standard_normal((2, 2, 7, 4)))]
    )


def test_adaptive_avg_pool2d_global_over_empty_planes_and_integers_as_in_pytorch(rng):
    x = fn.tensor(np.ones((2, 3, 0, 4), np.float32), requires_grad=True)
    y = F.adaptive_avg_pool2d(x, 1)
    assert y.shape == (2, 3, 1, 1) and np.isnan(y.numpy()).all()  # PyTorch: the mean of nothing
    y.sum().backward()
    assert x.grad.shape == (2, 3, 0, 4)
    empty_batch = F.adaptive_avg_pool2d(fn.tensor(rng.standard_normal((0, 3, 4, 4))), 1)
    assert empty_batch.shape == (0, 3, 1, 1)
    with pytest.raises(TypeError, match="floating point, got int64"):
        F.adaptive_avg_pool2d(fn.tensor(np.ones((1, 2, 3, 3), np.int64)), 1)


def test_adaptive_avg_pool2d_errors(rng):
    with pytest.raises(ValueError, match="output_size must be positive"):
        F.adaptive_avg_pool2d(fn.tensor(rng.standard_normal((1, 1, 4, 4))), (0, 2))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\), got shape \(4, 4\)"):
        F.adaptive_avg_pool2d(fn.tensor(rng.standard_normal((4, 4))), 1)


def test_pooling_layers_call_the_ops(rng):
    x = fn.tensor(rng.standard_normal((2, 3, 8, 6)).astype(np.float32))
    np.testing.assert_array_equal(
        nn.AvgPool2d(3, 2, 1)(x).numpy(), F.avg_pool2d(x, 3, 2, 1).numpy()
    )
    np.testing.assert_array_equal(
        nn.AdaptiveAvgPool2d((2, 3))(x).numpy(), F.adaptive_avg_pool2d(x, (2, 3)).numpy()
    )
    assert "kernel_size=3, stride=2, padding=1" in repr(nn.AvgPool2d(3, 2, 1))


# ===================================================================== the cuda device
@needs_cuda
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_on_cuda_matches_cpu(training, rng):
    x, weight, bias, running_mean, running_var = channel_inputs(rng, (3, 2, 3, 5))
    dy = rng.standard_normal(x.shape).astype(np.float32)
    results = {}
    for device in ("cpu", "cuda"):
        xt = fn.tensor(x, device=device, requires_grad=True)
        w = fn.tensor(weight, device=device, requires_grad=True)
        b = fn.tensor(bias, device=device, requires_grad=True)
        buffers = fn.tensor(running_mean, device=device), fn.tensor(running_var, device=device)
        y = F.batch_norm(xt, *buffers, w, b, training=training)
        y.backward(fn.tensor(dy, device=device))
        results[device] = [y.numpy(), xt.grad.numpy(), w.grad.numpy(), b.grad.numpy()] + [
            t.numpy() for t in buffers
        ]
    for got, expected in zip(results["cuda"], results["cpu"], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@needs_cuda
def test_pooling_on_cuda_matches_cpu(rng):
    x = rng.standard_normal((2, 2, 5, 7)).astype(np.float32)
    for op in (lambda t: F.avg_pool2d(t, 3, 2, 1), lambda t: F.adaptive_avg_pool2d(t, (2, 3))):
        grads = []
        for device in ("cpu", "cuda"):
            xt = fn.tensor(x, device=device, requires_grad=True)
            y = op(xt)
            (y * y).sum().backward()
            grads.append((y.numpy(), xt.grad.numpy()))
        for got, expected in zip(*grads, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
