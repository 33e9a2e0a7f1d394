"""Depthwise conv2d (groups == in_channels, out_channels = M·in_channels) on the depthwise
kernels: forward and all three gradients against PyTorch, float64 gradchecks, the dispatch, and
the cuda device (the simulator without a GPU) against the CPU.

Float32 results against PyTorch's float32 by relative error: each output sums M·KH·KW ≤ 25
products, each weight gradient N·OH·OW ≤ a few hundred, in different orders: 1e-5 of the largest
value holds. Float64 at 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet.backend import cuda_is_available
from fastnet.functional.conv import Conv2d, DepthwiseConv2d
from fastnet.gradcheck import gradcheck
from numerics import assert_close

torch = pytest.importorskip("torch")

# (x shape, multiplier M, keyword arguments of conv2d besides groups): odd sizes, stride 2,
# padding, dilation, M = 1 and 2, non-square kernels.
CASES = [
    ((2, 5, 9, 7), 1, (3, 3), {"padding": 1}),
    ((3, 4, 11, 8), 2, (3, 3), {"stride": 2, "padding": 1}),
    ((2, 3, 10, 9), 1, (3, 2), {"stride": (2, 1), "padding": (2, 0), "dilation": (2, 3)}),
    ((1, 6, 7, 7), 2, (5, 5), {"padding": 2, "dilation": 1}),
    ((2, 3, 8, 9), 1, (3, 3), {"padding": "same", "dilation": 2}),
    ((2, 2, 9, 6), 3, (2, 3), {"stride": 3}),
]


def case_id(case):
    x_shape, multiplier, kernel_hw, kwargs = case
    arguments = "-".join(f"{k}{v}" for k, v in kwargs.items()).replace(" ", "")
    return f"x{'x'.join(map(str, x_shape))}-m{multiplier}-k{kernel_hw}-{arguments}"


def arrays(rng, case, dtype):
    x_shape, multiplier, kernel_hw, _ = case
    channels = x_shape[1] * multiplier
    return [
        rng.standard_normal(x_shape).astype(dtype),
        rng.standard_normal((channels, 1, *kernel_hw)).astype(dtype),
        rng.standard_normal(channels).astype(dtype),
    ]


def geometry(case):
    return {**case[3], "groups": case[0][1]}


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torch(rng, case, dtype, with_bias):
    operands = arrays(rng, case, dtype)[: 3 if with_bias else 2]
    ours = [fn.tensor(a, dtype=dtype, requires_grad=True) for a in operands]
    theirs = [torch.tensor(a, requires_grad=True) for a in operands]
    y = F.conv2d(*ours, **geometry(case))
    expected = torch.nn.functional.conv2d(*theirs, **geometry(case))
    assert isinstance(y._ctx, DepthwiseConv2d) or case[3].get("padding") == "same"
    upstream = rng.standard_normal(tuple(expected.shape)).astype(dtype)
    (y * fn.tensor(upstream, dtype=dtype)).sum().backward()
    (expected * torch.tensor(upstream)).sum().backward()
    assert y.dtype == dtype
    assert_close(y.numpy(), expected.detach().numpy(), dtype)
    for name, got, want in zip(("dx", "dW", "db"), ours, theirs, strict=False):
        assert_close(got.grad.numpy(), want.grad.numpy(), dtype, what=name)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradcheck(rng, case):
    leaves = [
        fn.tensor(a, dtype=np.float64, requires_grad=True) for a in arrays(rng, case, np.float64)
    ]
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, **geometry(case)), leaves)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, True), (False, False, True)])
def test_any_subset_of_gradients(rng, needs):
    case = CASES[1]
    operands = arrays(rng, case, np.float32)
    leaves = [fn.tensor(a, requires_grad=n) for a, n in zip(operands, needs, strict=True)]
    theirs = [torch.tensor(a, requires_grad=n) for a, n in zip(operands, needs, strict=True)]
    F.conv2d(*leaves, **geometry(case)).sum().backward()
    torch.nn.functional.conv2d(*theirs, **geometry(case)).sum().backward()
    for ours, reference, flag in zip(leaves, theirs, needs, strict=True):
        assert (ours.grad is not None) == flag
        if flag:
            assert_close(ours.grad.numpy(), reference.grad.numpy(), np.float32)


def test_dispatch_only_for_depthwise(rng):
    x = fn.tensor(rng.standard_normal((1, 4, 6, 5)), requires_grad=True)
    depthwise = fn.tensor(rng.standard_normal((8, 1, 3, 3)), requires_grad=True)
    assert isinstance(F.conv2d(x, depthwise, groups=4)._ctx, DepthwiseConv2d)
    grouped = fn.tensor(rng.standard_normal((4, 2, 3, 3)), requires_grad=True)
    assert isinstance(F.conv2d(x, grouped, groups=2)._ctx, Conv2d)
    one_channel = fn.tensor(rng.standard_normal((1, 1, 6, 5)), requires_grad=True)
    assert isinstance(F.conv2d(one_channel, depthwise[:3])._ctx, Conv2d)


def test_unbatched_input_and_empty_batch(rng):
    x, w, b = arrays(rng, CASES[1], np.float64)
    y = F.conv2d(
        *(fn.tensor(a, dtype=np.float64) for a in (x[0], w, b)), stride=2, padding=1, groups=4
    )
    expected = torch.nn.functional.conv2d(
        *(torch.tensor(a) for a in (x[0], w, b)), stride=2, padding=1, groups=4
    )
    assert_close(y.numpy(), expected.numpy(), np.float64)
    empty = fn.tensor(np.ones((0, 4, 5, 5)), requires_grad=True)
    weight, bias = fn.tensor(w, requires_grad=True), fn.tensor(b, requires_grad=True)
    y = F.conv2d(empty, weight, bias, padding=1, groups=4)
    assert y.shape == (0, 8, 5, 5)
    y.sum().backward()
    assert empty.grad.shape == (0, 4, 5, 5)
    assert not weight.grad.numpy().any() and not bias.grad.numpy().any()


@pytest.mark.parametrize(
    "x_shape, w_shape, message",
    [
        ((1, 4, 5, 5), (6, 1, 3, 3), "6 output channels, not divisible by groups=4"),
        ((1, 4, 2, 2), (4, 1, 3, 3), r"conv2d: input of shape \(1, 4, 2, 2\).*does not fit"),
    ],
)
def test_errors_name_conv2d(x_shape, w_shape, message):
    with pytest.raises(ValueError, match=message):
        F.conv2d(fn.tensor(np.ones(x_shape)), fn.tensor(np.ones(w_shape)), groups=4)
    with pytest.raises(RuntimeError):  # where PyTorch raises too
        torch.nn.functional.conv2d(torch.ones(x_shape), torch.ones(w_shape), groups=4)


def test_module_takes_the_depthwise_kernels(rng):
    layer = fn.nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4)
    x = fn.tensor(rng.standard_normal((2, 4, 7, 6)), requires_grad=True)
    y = layer(x)
    assert isinstance(y._ctx, DepthwiseConv2d)
    theirs = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(layer.weight.numpy()))
        theirs.bias.copy_(torch.tensor(layer.bias.numpy()))
    assert_close(
        y.numpy(), theirs(torch.tensor(x.numpy(), dtype=torch.float64)).detach(), np.float32
    )


@pytest.mark.skipif(not cuda_is_available(), reason="needs the cuda device (GPU or simulator)")
def test_on_cuda_matches_cpu(rng):
    case = ((1, 2, 5, 4), 2, (3, 3), {"stride": 2, "padding": 1})
    operands = arrays(rng, case, np.float32)
    results = {}
    for device in ("cpu", "cuda"):
        leaves = [fn.tensor(a, device=device, requires_grad=True) for a in operands]
        y = F.conv2d(*leaves, **geometry(case))
        assert isinstance(y._ctx, DepthwiseConv2d)
        (y * y).sum().backward()
        results[device] = [y.numpy(), *(leaf.grad.numpy() for leaf in leaves)]
    for got, expected in zip(results["cuda"], results["cpu"], strict=True):
        assert_close(got, expected, np.float32)
