"""fastnet.functional.pad against torch.nn.functional.pad: constant padding of any number of
dimensions (negative widths crop), reflect, replicate and circular padding of the last 1, 2 or 3
dimensions; forward and backward with random weights, float64 gradchecks, and the errors."""

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet.gradcheck import gradcheck
from numerics import assert_close

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def check_parity(rng, shape, pad, dtype=np.float64, **options):
    values = rng.standard_normal(shape)
    x = fn.tensor(values, dtype=dtype, requires_grad=True)
    tx = torch.tensor(values, dtype=getattr(torch, np.dtype(dtype).name), requires_grad=True)
    out, expected = F.pad(x, pad, **options), TF.pad(tx, pad, **options)
    assert out.shape == tuple(expected.shape) and out.dtype == dtype
    np.testing.assert_array_equal(out.numpy(), expected.detach().numpy())
    weights = rng.uniform(0.5, 1.5, out.shape)
    (out * fn.tensor(weights, dtype=dtype)).sum().backward()
    (expected * torch.from_numpy(weights).to(expected.dtype)).sum().backward()
    assert x.grad.shape == shape and x.grad.dtype == dtype
    if np.any(tx.grad.numpy()):
        assert_close(x.grad.numpy(), tx.grad.numpy(), dtype, what="gradient")
    else:  # everything cropped away, or a zero-size input
        np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())


CONSTANT = [
    ((2, 3, 5), (1, 2)),
    ((2, 3, 5), (0, 3, 2, 1)),
    ((2, 3, 5), (1, 1, 2, 2, 3, 3)),
    ((2, 3, 4, 5), (1, 0, 0, 1, 2, 0, 1, 1)),
    ((5,), (2, 3)),
    ((), ()),
    ((2, 3, 5), ()),
    ((2, 3, 5), (-1, -2)),
    ((2, 3, 5), (-2, 3, 1, -1)),
    ((2, 3, 5), (2, -1, -3, 1)),
    ((2, 3, 5), (-5, 0)),
    ((2, 0, 5), (1, 1, 2, 2)),
]


@pytest.mark.parametrize("shape, pad", CONSTANT)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_matches_pytorch(rng, shape, pad, dtype):
    check_parity(rng, shape, pad, dtype)


@pytest.mark.parametrize("value", [0.0, -1.5, 3])
def test_constant_value(rng, value):
    check_parity(rng, (3, 4), (2, 1, 1, 2), value=value)
    check_parity(rng, (3, 4), (2, 1), mode="constant", value=value)


def test_constant_on_integers():
    values = np.arange(6).reshape(2, 3)
    for value in (2, 2.5, None):
        out = F.pad(fn.tensor(values), [1, 2], value=value)
        expected = TF.pad(torch.from_numpy(values), [1, 2], value=value)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out.numpy(), expected.numpy())


# (shape, pad) pairs valid for every non-constant mode (each width at most size - 1)
OTHER = [
    ((2, 5), (2, 3)),
    ((2, 3, 5), (4, 1)),
    ((2, 3, 5), (0, 2)),
    ((2, 4, 5), (1, 2, 3, 1)),
    ((1, 2, 4, 5), (2, 0, 1, 3)),
    ((3, 4, 5), (4, 4, 3, 3)),
    ((2, 3, 4, 5), (1, 2, 3, 1, 2, 0)),
    ((1, 2, 3, 4, 5), (0, 1, 1, 2, 2, 2)),
    ((0, 3, 5), (1, 2)),
]
# negative widths: PyTorch crops, then reflects/replicates (around the original positions) or
# wraps (around what is left)
NEGATIVE = [
    ((2, 5), (-1, 3)),
    ((2, 5), (3, -1)),
    ((2, 5), (-2, 2)),
    ((2, 5), (-1, -1)),
    ((1, 4, 5), (-1, 2, 1, -2)),
]


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape, pad", OTHER + NEGATIVE)
def test_other_modes_match_pytorch(rng, mode, shape, pad):
    check_parity(rng, shape, pad, mode=mode)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_other_modes_in_float32(rng, mode):
    check_parity(rng, (2, 3, 6, 5), (2, 1, 3, 2), np.float32, mode=mode)


def test_replicate_takes_widths_beyond_the_size(rng):
    check_parity(rng, (2, 3), (5, 7), mode="replicate")
    check_parity(rng, (1, 2, 3), (4, 0, 1, 6), mode="replicate")


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize(
    "shape, pad", [((2, 4), (2, 3)), ((1, 3, 4), (3, 1, 2, 2)), ((2, 4, 5), (-1, 2, 1, -2))]
)
def test_gradcheck(rng, mode, shape, pad):
    x = fn.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda t: F.pad(t, pad, mode=mode), [x])


def test_gradcheck_constant_many_dimensions(rng):
    x = fn.tensor(rng.standard_normal((2, 3, 2, 3)), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda t: F.pad(t, (1, -1, 0, 2, -1, 1, 1, 0), value=0.5), [x])


def test_pad_on_the_cuda_device(rng):
    values = rng.standard_normal((1, 2, 3, 4))
    x = fn.tensor(values, device="cuda", requires_grad=True)
    out = F.pad(x, (1, 2, 2, 1), mode="reflect")
    assert out.device == "cuda"
    out.sum().backward()
    tx = torch.tensor(values, dtype=torch.float32, requires_grad=True)
    TF.pad(tx, (1, 2, 2, 1), mode="reflect").sum().backward()
    assert_close(x.grad.numpy(), tx.grad.numpy(), np.float32)


@pytest.mark.parametrize(
    "shape, pad, options, error, message",
    [
        ((2, 3, 4), (1, 2, 3), {}, RuntimeError, "divisible by 2"),
        ((2, 3), (1, 1, 1, 1, 1, 1), {}, RuntimeError, "more than two per dimension"),
        ((2, 3, 4), (-3, -2), {}, RuntimeError, "negative size"),
        ((2, 3, 4), (1, 1), {"mode": "wrap"}, NotImplementedError, "unknown padding mode"),
        ((2, 3, 4), (1, 1), {"mode": "reflect", "value": 1.0}, RuntimeError, "value"),
        ((2, 3, 4), (4, 1), {"mode": "reflect"}, RuntimeError, "less than the size"),
        ((2, 3, 4), (5, 1), {"mode": "circular"}, RuntimeError, "more than once"),
        ((4,), (1, 1), {"mode": "reflect"}, NotImplementedError, "last 1, 2 or 3 dimensions"),
        ((3, 4), (1, 1, 1, 1), {"mode": "circular"}, NotImplementedError, "last 1, 2 or 3"),
        ((2, 3, 4), (1, 1, 1, 1, 1, 1), {"mode": "replicate"}, NotImplementedError, "last 1"),
        ((2, 3, 4), (1.5, 1), {}, TypeError, "tuple of ints"),
    ],
)
def test_errors_as_pytorch(shape, pad, options, error, message):
    with pytest.raises(error):
        TF.pad(torch.ones(shape), pad, **options)
    with pytest.raises(error, match=message):
        F.pad(fn.ones(shape), pad, **options)


def test_errors_of_fastnet_alone():
    with pytest.raises(RuntimeError, match='mode "reflect" .* dimension 1 of shape .* empty'):
        F.pad(fn.ones(2, 0, 4), (0, 0, 1, 1), mode="reflect")
    with pytest.raises(TypeError, match="pad: expected a Tensor, got numpy.ndarray"):
        F.pad(np.ones((2, 3)), (1, 1))
