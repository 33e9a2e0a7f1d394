"""conv2d's forward-only plans (fastnet/functional/conv_caches.py, ``FORWARD_PLANS``): a call that
records no graph takes the kernel call its signature's first call worked out, with the same bits
as the general path; it reads the tensors' values on every call, is never taken when a graph is
recorded, and leaves every error to the general path."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
import fastnet.functional as F
from fastnet.functional import conv as conv_module
from fastnet.functional import conv_caches
from fastnet.functional.conv_caches import FORWARD_PLANS
from numerics import relative_error

# (x shape, weight shape, window): Winograd (3x3, stride 1, >= 16 channels) and im2col cases,
# odd sizes, with groups, a stride, a dilation
CASES = {
    "winograd": ((2, 16, 7, 9), (5, 16, 3, 3), {"padding": 1}),
    "im2col-stride": ((3, 3, 9, 8), (7, 3, 3, 3), {"stride": 2, "padding": (1, 0)}),
    "im2col-groups": ((1, 4, 6, 7), (6, 2, 2, 3), {"groups": 2, "dilation": (2, 1)}),
    "im2col-1x1": ((2, 5, 5, 5), (3, 5, 1, 1), {"stride": 2}),
}


def _operands(case, bias=True, seed=0):
    x_shape, w_shape, window = CASES[case]
    rng = np.random.default_rng(seed)
    x, weight = (
        fastnet.Tensor(rng.standard_normal(shape, dtype=np.float32)) for shape in (x_shape, w_shape)
    )
    b = fastnet.Tensor(rng.standard_normal(w_shape[0], dtype=np.float32)) if bias else None
    return x, weight, b, window


def _general(x, weight, bias, window, relu):
    """The call with no plan to take (signature None: the general path every time)."""
    saved = FORWARD_PLANS.signature
    FORWARD_PLANS.signature = lambda *arguments: None
    try:
        with fastnet.no_grad():
            return (F.conv2d_relu if relu else F.conv2d)(x, weight, bias, **window).numpy()
    finally:
        FORWARD_PLANS.signature = saved


@pytest.fixture(autouse=True)
def _empty_table():
    FORWARD_PLANS.clear()
    yield
    FORWARD_PLANS.clear()


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_repeated_call_takes_its_plan_with_the_general_paths_bits(case, bias, relu, monkeypatch):
    x, weight, b, window = _operands(case, bias)
    conv = F.conv2d_relu if relu else F.conv2d
    with fastnet.no_grad():
        first = conv(x, weight, b, **window)
    assert len(FORWARD_PLANS) == 1
    expected = _general(x, weight, b, window, relu)
    np.testing.assert_array_equal(first.numpy(), expected)

    def refuse(*arguments, **params):
        raise AssertionError("the general path ran for a planned signature")

    for op in ("Conv2d", "Conv2dReLU", "Conv2dWinograd", "Conv2dWinogradReLU"):
        monkeypatch.setattr(getattr(conv_module, op), "apply", refuse)
    with fastnet.no_grad():
        planned = conv(x, weight, b, **window)
    assert not planned.requires_grad and planned.grad_fn is None
    np.testing.assert_array_equal(planned.numpy(), expected)
    if relu:
        assert (planned.numpy() >= 0).all() and (expected < 0).sum() == 0


@pytest.mark.parametrize("case", ["winograd", "im2col-stride"])
def test_a_plan_reads_every_calls_values(case):
    """New input values, a raw write into the weight's array and the bias's: the plan's output
    follows each, as the general path's does."""
    x, weight, b, window = _operands(case)
    with fastnet.no_grad():
        F.conv2d(x, weight, b, **window)
    rng = np.random.default_rng(7)
    x.data[...] = rng.standard_normal(x.shape, dtype=np.float32)
    weight.data[0] = rng.standard_normal(weight.shape[1:], dtype=np.float32)
    b.data[-1] = 3.5
    with fastnet.no_grad():
        planned = F.conv2d(x, weight, b, **window).numpy()
    fresh = [fastnet.Tensor(t.numpy().copy()) for t in (x, weight, b)]
    np.testing.assert_array_equal(planned, _general(*fresh, window, relu=False))
    reference = _float64_conv(*(t.numpy() for t in fresh), window)
    assert relative_error(planned, reference) < 1e-5


def _float64_conv(x, weight, bias, window):
    """conv2d by a direct sum over the window in float64 (groups, stride, padding, dilation)."""
    stride = np.broadcast_to(window.get("stride", 1), 2)
    padding = np.broadcast_to(window.get("padding", 0), 2)
    dilation = np.broadcast_to(window.get("dilation", 1), 2)
    groups = window.get("groups", 1)
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    n, channels, h, w = x.shape
    out_channels, per_group, kh, kw = weight.shape
    oh = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, out_channels, oh, ow)) + bias[:, None, None]
    for k in range(out_channels):
        group = k // (out_channels // groups)
        for c in range(per_group):
            for i in range(kh):
                for j in range(kw):
                    rows = slice(i * dilation[0], i * dilation[0] + stride[0] * oh, stride[0])
                    cols = slice(j * dilation[1], j * dilation[1] + stride[1] * ow, stride[1])
                    y[:, k] += weight[k, c, i, j] * x[:, group * per_group + c, rows, cols]
    return y


def test_a_call_that_records_a_graph_never_takes_a_plan():
    x, weight, b, window = _operands("winograd")
    with fastnet.no_grad():
        F.conv2d(x, weight, b, **window)
    weight.requires_grad = True
    y = F.conv2d(x, weight, b, **window)
    assert y.requires_grad and y.grad_fn is not None
    y.sum().backward()
    assert weight.grad is not None and np.isfinite(weight.grad.numpy()).all()
    x.requires_grad, weight.requires_grad = True, False  # the input's gradient: no plan either
    y = F.conv2d(x, weight, b, **window)
    assert y.requires_grad
    with fastnet.no_grad():  # grad mode off: the plan again, whatever requires a gradient
        np.testing.assert_array_equal(F.conv2d(x, weight, b, **window).numpy(), y.numpy())


def test_errors_come_from_the_general_path_and_leave_no_plan():
    x, weight, b, window = _operands("im2col-stride")
    wrong = fastnet.Tensor(np.ones((2, 4, 9, 8), np.float32))  # 4 channels, the weight wants 3
    for _ in range(2):
        with fastnet.no_grad(), pytest.raises(ValueError, match="channels"):
            F.conv2d(wrong, weight, b, **window)
    small = fastnet.Tensor(np.ones((1, 3, 1, 1), np.float32))
    with fastnet.no_grad(), pytest.raises(ValueError, match="conv2d"):
        F.conv2d(small, weight, b, stride=2)
    with fastnet.no_grad(), pytest.raises(TypeError, match="Tensor"):
        F.conv2d(x.numpy(), weight, b, **window)
    assert len(FORWARD_PLANS) == 0


def test_each_signature_has_its_own_plan_and_odd_arguments_take_the_general_path():
    x, weight, b, window = _operands("winograd")
    with fastnet.no_grad():
        F.conv2d(x, weight, b, **window)
        first = F.conv2d(x[:1], weight, b, **window)  # another batch
        F.conv2d(x, weight, None, **window)  # no bias
        F.conv2d_relu(x, weight, b, **window)  # fused ReLU
        assert len(FORWARD_PLANS) == 4
        listed = F.conv2d(x, weight, b, padding=[1, 1])  # a list: not hashable, not planned
        same = F.conv2d(x, weight, b, padding="same")  # a string: the general path
        unbatched = F.conv2d(x[0], weight, b, **window)  # planned as its batch of 1
    assert len(FORWARD_PLANS) == 4
    np.testing.assert_array_equal(listed.numpy(), same.numpy())
    np.testing.assert_array_equal(unbatched.numpy(), first.numpy()[0])


def test_the_table_keeps_the_last_signatures(monkeypatch):
    monkeypatch.setattr(conv_caches, "MAX_PLANS", 3)
    x, weight, b, window = _operands("im2col-1x1")
    with fastnet.no_grad():
        for size in range(1, 6):
            F.conv2d(x[..., :size, :size], weight, b, **window)
    assert len(FORWARD_PLANS) == 3
    kept = [key[3] for key in FORWARD_PLANS._plans]
    assert kept == [(2, 5, size, size) for size in (3, 4, 5)]


def test_on_the_cuda_device_a_plan_gives_what_the_cpu_gives():
    for case in ("winograd", "im2col-groups"):
        x, weight, b, window = _operands(case)
        on_cpu = _general(x, weight, b, window, relu=True)
        operands = [t.to("cuda") for t in (x, weight, b)]
        with fastnet.no_grad():
            F.conv2d_relu(*operands, **window)
            planned = F.conv2d_relu(*operands, **window)
        assert planned.device == "cuda"
        assert relative_error(planned.numpy(), on_cpu) < 1e-5
        mixed = (operands[0], weight, b)  # x on the cuda device, the weight on the cpu
        for _ in range(2):
            with fastnet.no_grad(), pytest.raises(RuntimeError, match="devices"):
                F.conv2d(*mixed, **window)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", ["winograd", "im2col-stride", "im2col-1x1"])
def test_the_pooling_op_takes_a_plan_with_the_three_ops_bits(case, bias, monkeypatch):
    """conv2d_relu_max_pool2d with no graph: a plan of the pooling kernel, giving the pooled
    values (no argmax) of max_pool2d(relu(conv2d(...)), 2)."""
    x, weight, b, window = _operands(case, bias)
    with fastnet.no_grad():
        first = F.conv2d_relu_max_pool2d(x, weight, b, **window)
        expected = F.max_pool2d(F.relu(F.conv2d(x, weight, b, **window)), 2).numpy()
    assert len(FORWARD_PLANS) == 2  # the pooling op's signature and conv2d's own
    np.testing.assert_array_equal(first.numpy(), expected)

    def refuse(*arguments, **params):
        raise AssertionError("the general path ran for a planned signature")

    for op in ("Conv2dReLUMaxPool", "Conv2dWinogradReLUMaxPool"):
        monkeypatch.setattr(getattr(conv_module, op), "apply", refuse)
    with fastnet.no_grad():
        planned = F.conv2d_relu_max_pool2d(x, weight, b, **window)
    assert planned.grad_fn is None and planned.shape == expected.shape
    np.testing.assert_array_equal(planned.numpy(), expected)


def test_a_pooling_call_the_kernels_refuse_leaves_no_plan_of_its_own():
    """A bias with groups runs as the three ops; only conv2d's calls keep plans (the last entry
    of a signature is ``pool``)."""
    x, weight, b, window = _operands("im2col-groups")
    with fastnet.no_grad():
        got = F.conv2d_relu_max_pool2d(x, weight, b, **window)
        expected = F.max_pool2d(F.relu(F.conv2d(x, weight, b, **window)), 2)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert len(FORWARD_PLANS) and not any(key[-1] for key in FORWARD_PLANS._plans)


def test_on_the_cuda_device_a_pooling_plan_gives_what_the_cpu_gives():
    for case in ("winograd", "im2col-stride"):
        x, weight, b, window = _operands(case)
        with fastnet.no_grad():
            on_cpu = F.max_pool2d(F.relu(F.conv2d(x, weight, b, **window)), 2).numpy()
            operands = [t.to("cuda") for t in (x, weight, b)]
            F.conv2d_relu_max_pool2d(*operands, **window)
            planned = F.conv2d_relu_max_pool2d(*operands, **window)
        assert planned.device == "cuda"
        assert relative_error(planned.numpy(), on_cpu) < 1e-5
