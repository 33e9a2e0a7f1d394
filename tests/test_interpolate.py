"""fastnet.functional.interpolate and nn.Upsample against PyTorch: forward and backward, up and
down, odd sizes, size= and scale_factor= (a float and a tuple), align_corners, the 1-D modes;
float64 gradients against finite differences; the cuda device against the cpu; PyTorch's
argument errors.

Nearest copies, so its forward equals PyTorch's bit for bit (the same float32 index rule); its
backward and bilinear sum a few terms in another order than PyTorch: float32 to 1e-5 of the
largest value (``numerics.TOLERANCE``), float64 to 1e-12.
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

# (input shape, keyword arguments of interpolate besides mode and align_corners)
CASES = [
    ((2, 3, 5, 7), {"size": (10, 14)}),  # 2x up
    ((2, 3, 5, 7), {"size": (13, 9)}),  # odd up
    ((1, 2, 9, 11), {"size": (4, 5)}),  # down
    ((2, 2, 6, 5), {"size": 7}),  # an int size: both sides
    ((1, 3, 7, 4), {"scale_factor": 2.5}),
    ((2, 2, 8, 6), {"scale_factor": (0.6, 1.7)}),  # down one way, up the other
    ((1, 2, 4, 6), {"scale_factor": (2.1, 1.1)}),  # O = 2S and O = S from other factors
    ((1, 2, 5, 7), {"scale_factor": 1.5, "recompute_scale_factor": True}),
]
MODES = [
    ("nearest", None),
    ("nearest-exact", None),
    ("bilinear", False),
    ("bilinear", True),
    ("area", None),
]


def case_id(case):
    shape, arguments = case
    return f"x{'x'.join(map(str, shape))}-" + "-".join(f"{k}{v}" for k, v in arguments.items())


def mode_id(mode):
    name, corners = mode
    return name + ("-corners" if corners else "")


def run_fastnet(x, dy, mode, corners, arguments, dtype):
    xt = fn.tensor(x, dtype=dtype, requires_grad=True)
    y = F.interpolate(xt, mode=mode, align_corners=corners, **arguments)
    y.backward(fn.tensor(dy, dtype=dtype))
    return y.numpy(), xt.grad.numpy()


def run_torch(x, dy, mode, corners, arguments):
    xt = torch.tensor(x, requires_grad=True)
    y = torch.nn.functional.interpolate(xt, mode=mode, align_corners=corners, **arguments)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES, ids=mode_id)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_and_backward_match_pytorch(rng, case, mode, dtype):
    shape, arguments = case
    name, corners = mode
    x = rng.standard_normal(shape).astype(dtype)
    expected_y = torch.nn.functional.interpolate(
        torch.tensor(x), mode=name, align_corners=corners, **arguments
    ).numpy()
    dy = rng.standard_normal(expected_y.shape).astype(dtype)
    y, dx = run_fastnet(x, dy, name, corners, arguments, dtype)
    expected_y, expected_dx = run_torch(x, dy, name, corners, arguments)
    assert y.shape == expected_y.shape and y.dtype == dtype and dx.dtype == dtype
    if name.startswith("nearest"):
        np.testing.assert_array_equal(y, expected_y)
    else:
        assert relative_error(y, expected_y) <= TOLERANCE[dtype]
    assert relative_error(dx, expected_dx) <= TOLERANCE[dtype]


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "linear", "area"])
@pytest.mark.parametrize("arguments", [{"size": 11}, {"scale_factor": 0.7}, {"size": (4,)}])
def test_one_dimensional_input_matches_pytorch(rng, mode, arguments):
    x = rng.standard_normal((2, 3, 7)).astype(np.float32)
    corners = True if mode == "linear" else None
    expected_y = torch.nn.functional.interpolate(
        torch.tensor(x), mode=mode, align_corners=corners, **arguments
    ).numpy()
    dy = rng.standard_normal(expected_y.shape).astype(np.float32)
    y, dx = run_fastnet(x, dy, mode, corners, arguments, np.float32)
    expected_y, expected_dx = run_torch(x, dy, mode, corners, arguments)
    assert y.shape == expected_y.shape
    assert relative_error(y, expected_y) <= 1e-6
    assert relative_error(dx, expected_dx) <= 1e-5


@pytest.mark.parametrize("mode", MODES, ids=mode_id)
@pytest.mark.parametrize("arguments", [{"size": (7, 4)}, {"scale_factor": (1.5, 0.7)}])
def test_gradients(rng, mode, arguments):
    x = fn.tensor(rng.standard_normal((2, 2, 5, 6)), dtype=np.float64, requires_grad=True)
    name, corners = mode
    assert gradcheck(lambda t: F.interpolate(t, mode=name, align_corners=corners, **arguments), [x])


def test_upsample_module_matches_pytorch(rng):
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    pairs = [
        (nn.Upsample(scale_factor=2), torch.nn.Upsample(scale_factor=2)),
        (
            nn.Upsample(size=(7, 3), mode="bilinear"),
            torch.nn.Upsample(size=(7, 3), mode="bilinear"),
        ),
        (
            nn.Upsample(scale_factor=(1.5, 2), mode="bilinear", align_corners=True),
            torch.nn.Upsample(scale_factor=(1.5, 2), mode="bilinear", align_corners=True),
        ),
        (nn.UpsamplingNearest2d(size=9), torch.nn.UpsamplingNearest2d(size=9)),
        (nn.UpsamplingBilinear2d(scale_factor=3), torch.nn.UpsamplingBilinear2d(scale_factor=3)),
    ]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        assert ours.scale_factor == theirs.scale_factor and ours.size == theirs.size
        expected = theirs(torch.tensor(x)).numpy()
        assert relative_error(ours(fn.tensor(x)).numpy(), expected) <= 1e-6
    assert not list(nn.Upsample(scale_factor=2).parameters())


@pytest.mark.skipif(not cuda_is_available(), reason="needs the cuda device (GPU or simulator)")
@pytest.mark.parametrize("mode", MODES[:4], ids=mode_id)
def test_cuda_device_matches_cpu(rng, mode):
    name, corners = mode
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    dy = rng.standard_normal((1, 2, 7, 3)).astype(np.float32)
    results = []
    for device in ("cpu", "cuda"):
        xt = fn.tensor(x, device=device, requires_grad=True)
        y = F.interpolate(xt, size=(7, 3), mode=name, align_corners=corners)
        y.backward(fn.tensor(dy, device=device))
        results.append((y.numpy(), xt.grad.numpy()))
    for got, expected in zip(*results, strict=True):
        assert relative_error(got, expected) <= 1e-6


def errors_of(call):
    """(type, message) of the exception ``call`` raises."""
    with pytest.raises(Exception) as caught:
        call()
    return caught.type, str(caught.value)


@pytest.mark.parametrize(
    "shape, arguments, error, message",
    [
        ((1, 1, 4, 4), {}, ValueError, "either size or scale_factor should be defined"),
        (
            (1, 1, 4, 4),
            {"size": 2, "scale_factor": 2},
            ValueError,
            "only one of size or scale_factor should be defined",
        ),
        (
            (1, 1, 4, 4),
            {"size": 2, "align_corners": True},
            ValueError,
            "align_corners option can only be set with the interpolating modes",
        ),
        (
            (1, 1, 4, 4),
            {"size": (3,)},
            ValueError,
            "Input and output size must have the same number of spatial dimensions",
        ),
        (
            (1, 1, 4, 4),
            {"scale_factor": (2, 2, 2)},
            ValueError,
            "Input and scale_factor must have the same number of spatial dimensions",
        ),
        ((1, 1, 4, 4), {"size": 2.5}, TypeError, "expected size to be an int or a tuple of ints"),
        ((1, 1, 4, 4), {"scale_factor": 0.1}, RuntimeError, "sizes should be greater than 0"),
        (
            (1, 1, 4, 4),
            {"size": 2, "recompute_scale_factor": True},
            ValueError,
            "recompute_scale_factor is not meaningful with an explicit size",
        ),
        ((1, 1, 4, 4), {"size": 2, "mode": "bogus"}, NotImplementedError, "got a 4-D input"),
        ((1, 2, 4), {"size": 2, "mode": "bilinear"}, NotImplementedError, "needs 4-D input"),
        ((1, 2, 4, 4), {"size": 2, "mode": "linear"}, NotImplementedError, "needs 3-D input"),
        ((2, 4), {"size": 2}, NotImplementedError, "got a 2-D input"),
    ],
)
def test_errors_like_pytorch(shape, arguments, error, message):
    """The same exception type as PyTorch's, with a message naming the op and what was wrong."""
    x = np.ones(shape, np.float32)
    theirs, _ = errors_of(lambda: torch.nn.functional.interpolate(torch.tensor(x), **arguments))
    assert theirs is error
    with pytest.raises(error, match=message):
        F.interpolate(fn.tensor(x), **arguments)
