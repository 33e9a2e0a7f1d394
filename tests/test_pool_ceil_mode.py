"""max_pool2d and avg_pool2d with ceil_mode (and avg_pool2d's count_include_pad and
divisor_override, max_pool2d's return_indices) against PyTorch: forward and backward on odd
sizes where the last window hangs past the padded edge; float64 gradients against finite
differences; nn.MaxPool2d and nn.AvgPool2d; unbatched (C, H, W) input; the cuda device.

Max pooling only compares, so values and indices equal PyTorch's exactly; average pooling sums a
window in another order: float32 to 1e-5 of the largest value (``numerics.TOLERANCE``).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet import nn
from fastnet.backend import cuda_is_available
from fastnet.gradcheck import gradcheck
from numerics import TOLERANCE, relative_error

torch = pytest.importorskip("torch")

# (x shape, kernel_size, stride, padding): every one hangs a window past the padded edge
CASES = [
    ((2, 3, 7, 9), 2, None, 0),
    ((1, 2, 8, 7), 3, 2, 1),
    ((2, 2, 6, 7), (3, 2), (2, 3), (1, 0)),
    ((1, 3, 7, 6), 2, 3, 0),
    ((1, 2, 6, 7), 3, 3, 1),
]


def case_id(case):
    shape, kernel, stride, padding = case
    return f"x{'x'.join(map(str, shape))}-k{kernel}-s{stride}-p{padding}"


def fastnet_and_torch(x, dy, ours, theirs):
    """(y, dx) of ``ours`` on fastnet tensors and of ``theirs`` on torch tensors."""
    results = []
    for make, op in ((fn.tensor, ours), (torch.tensor, theirs)):
        xt = make(x, requires_grad=True)
        y = op(xt)
        y.backward(make(dy))
        results.append((y.detach().numpy(), xt.grad.numpy()))
    return results


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_max_pool2d_ceil_mode_matches_pytorch(rng, case):
    shape, kernel, stride, padding = case
    x = rng.integers(-3, 4, shape).astype(np.float32)  # ties: the first maximum wins
    expected, indices = torch.nn.functional.max_pool2d(
        torch.tensor(x), kernel, stride, padding, ceil_mode=True, return_indices=True
    )
    assert (
        expected.shape
        != torch.nn.functional.max_pool2d(torch.tensor(x), kernel, stride, padding).shape
    )
    dy = rng.standard_normal(expected.shape).astype(np.float32)
    (y, dx), (expected_y, expected_dx) = fastnet_and_torch(
        x,
        dy,
        lambda t: F.max_pool2d(t, kernel, stride, padding, ceil_mode=True),
        lambda t: torch.nn.functional.max_pool2d(t, kernel, stride, padding, ceil_mode=True),
    )
    np.testing.assert_array_equal(y, expected_y)
    assert relative_error(dx, expected_dx) <= TOLERANCE[np.float32]
    values, ours = F.max_pool2d(fn.tensor(x), kernel, stride, padding, 1, True, True)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours.numpy(), indices.numpy())
    np.testing.assert_array_equal(values.numpy(), expected_y)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("ceil_mode", [True, False])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_avg_pool2d_matches_pytorch(rng, case, ceil_mode, count_include_pad):
    shape, kernel, stride, padding = case
    x = rng.standard_normal(shape).astype(np.float32)
    options = {"ceil_mode": ceil_mode, "count_include_pad": count_include_pad}
    theirs = torch.nn.functional.avg_pool2d(torch.tensor(x), kernel, stride, padding, **options)
    dy = rng.standard_normal(theirs.shape).astype(np.float32)
    (y, dx), (expected_y, expected_dx) = fastnet_and_torch(
        x,
        dy,
        lambda t: F.avg_pool2d(t, kernel, stride, padding, **options),
        lambda t: torch.nn.functional.avg_pool2d(t, kernel, stride, padding, **options),
    )
    assert y.shape == expected_y.shape and y.dtype == np.float32
    assert relative_error(y, expected_y) <= TOLERANCE[np.float32]
    assert relative_error(dx, expected_dx) <= TOLERANCE[np.float32]


@pytest.mark.parametrize("ceil_mode", [True, False])
def test_avg_pool2d_divisor_override_matches_pytorch(rng, ceil_mode):
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    dy_shape = torch.nn.functional.avg_pool2d(
        torch.tensor(x), 3, 2, 1, ceil_mode=ceil_mode, divisor_override=5
    ).shape
    dy = rng.standard_normal(dy_shape).astype(np.float32)
    (y, dx), (expected_y, expected_dx) = fastnet_and_torch(
        x,
        dy,
        lambda t: F.avg_pool2d(t, 3, 2, 1, ceil_mode, True, 5),
        lambda t: torch.nn.functional.avg_pool2d(t, 3, 2, 1, ceil_mode, True, 5),
    )
    assert relative_error(y, expected_y) <= TOLERANCE[np.float32]
    assert relative_error(dx, expected_dx) <= TOLERANCE[np.float32]


@pytest.mark.parametrize("case", CASES[1:3], ids=case_id)
def test_gradients_in_ceil_mode(rng, case):
    shape, kernel, stride, padding = case
    # distinct values so every window has a unique maximum (finite differences are then exact)
    values = rng.permutation(np.prod(shape)).reshape(shape) / 10.0
    x = fn.tensor(values, dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda t: F.max_pool2d(t, kernel, stride, padding, ceil_mode=True), [x])
    for count_include_pad in (True, False):
        assert gradcheck(
            lambda t, include=count_include_pad: F.avg_pool2d(
                t, kernel, stride, padding, ceil_mode=True, count_include_pad=include
            ),
            [x],
        )


def test_modules_match_pytorch(rng):
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    pairs = [
        (nn.MaxPool2d(3, 2, 1, ceil_mode=True), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
        (nn.MaxPool2d(2), torch.nn.MaxPool2d(2)),
        (
            nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
            torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        ),
        (nn.AvgPool2d(2, divisor_override=3), torch.nn.AvgPool2d(2, divisor_override=3)),
    ]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        expected = theirs(torch.tensor(x)).numpy()
        assert relative_error(ours(fn.tensor(x)).numpy(), expected) <= TOLERANCE[np.float32]
    values, indices = nn.MaxPool2d(3, 2, 1, return_indices=True, ceil_mode=True)(fn.tensor(x))
    expected_values, expected_indices = torch.nn.MaxPool2d(
        3, 2, 1, return_indices=True, ceil_mode=True
    )(torch.tensor(x))
    np.testing.assert_array_equal(values.numpy(), expected_values.numpy())
    np.testing.assert_array_equal(indices.numpy(), expected_indices.numpy())


def test_unbatched_input_matches_pytorch(rng):
    x = rng.standard_normal((3, 7, 8)).astype(np.float32)
    for ours, theirs in [
        (
            lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True),
            lambda t: torch.nn.functional.max_pool2d(t, 3, 2, 1, ceil_mode=True),
        ),
        (
            lambda t: F.avg_pool2d(t, 2, ceil_mode=True),
            lambda t: torch.nn.functional.avg_pool2d(t, 2, ceil_mode=True),
        ),
        (
            lambda t: F.adaptive_avg_pool2d(t, (2, 3)),
            lambda t: torch.nn.functional.adaptive_avg_pool2d(t, (2, 3)),
        ),
    ]:
        dy = rng.standard_normal(theirs(torch.tensor(x)).shape).astype(np.float32)
        (y, dx), (expected_y, expected_dx) = fastnet_and_torch(x, dy, ours, theirs)
        assert y.shape == expected_y.shape == dy.shape
        assert relative_error(y, expected_y) <= TOLERANCE[np.float32]
        assert relative_error(dx, expected_dx) <= TOLERANCE[np.float32]
    values, indices = F.max_pool2d(fn.tensor(x), 2, return_indices=True)
    assert values.shape == indices.shape == (3, 3, 4)


@pytest.mark.skipif(not cuda_is_available(), reason="needs the cuda device (GPU or simulator)")
def test_cuda_device_matches_cpu_in_ceil_mode(rng):
    x = rng.standard_normal((1, 2, 5, 7)).astype(np.float32)
    for op in (
        lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True),
        lambda t: F.avg_pool2d(t, 2, ceil_mode=True, count_include_pad=False),
    ):
        results = []
        for device in ("cpu", "cuda"):
            xt = fn.tensor(x, device=device, requires_grad=True)
            y = op(xt)
            (y * y).sum().backward()
            results.append((y.numpy(), xt.grad.numpy()))
        for got, expected in zip(*results, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_errors():
    x = fn.tensor(np.ones((1, 1, 6, 6), np.float32))
    with pytest.raises(NotImplementedError, match=r"max_pool2d: dilation 2 is not supported"):
        F.max_pool2d(x, 3, dilation=2)
    with pytest.raises(ValueError, match="avg_pool2d: divisor_override must be a non-zero int"):
        F.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(ValueError, match=r"max_pool2d: padding \(2, 2\) must be at most half"):
        F.max_pool2d(x, 3, 1, 2, ceil_mode=True)
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\), got shape \(6, 6\)"):
        F.max_pool2d(fn.tensor(np.ones((6, 6), np.float32)), 2)
