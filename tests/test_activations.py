"""The activations of fastnet.functional.activations added for PyTorch parity (silu, softplus,
elu, hardswish, hardsigmoid, mish, logsigmoid; softmax/log_softmax's ``dim``) and their modules:
values and gradients against PyTorch, huge inputs without warnings or NaN, PyTorch's edges
(hardswish at ±3, softplus's threshold), float64 gradient checks, ``inplace``, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet import nn
from fastnet.gradcheck import gradcheck
from numerics import relative_error

torch = pytest.importorskip("torch")
TF = torch.nn.functional

# (name, fastnet keyword arguments = PyTorch's)
ACTIVATIONS = [
    ("silu", {}),
    ("softplus", {}),
    ("softplus", {"beta": 2.0, "threshold": 3.0}),
    ("softplus", {"beta": 0.5, "threshold": 1000.0}),  # a threshold past exp's overflow
    ("elu", {}),
    ("elu", {"alpha": 0.3}),
    ("hardswish", {}),
    ("hardsigmoid", {}),
    ("mish", {}),
    ("logsigmoid", {}),
]
IDS = [f"{name}{options or ''}" for name, options in ACTIVATIONS]


def assert_close(got, expected, tolerance):
    if not expected.any():  # an all-zero gradient: no scale to be relative to
        np.testing.assert_array_equal(got, expected)
    else:
        assert relative_error(got, expected) <= tolerance


def assert_matches_torch(name, options, values, tolerance=1e-6):
    """Values and gradients against PyTorch in float64 (which, unlike ours, overflows in float32
    for softplus with a threshold past exp's range)."""
    x = fn.tensor(values, dtype=values.dtype, requires_grad=True)
    t = torch.tensor(values.astype(np.float64), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings
        y = getattr(F, name)(x, **options)
    expected = getattr(TF, name)(t, **options)
    assert y.shape == tuple(expected.shape) and y.dtype == values.dtype
    got = y.numpy()
    assert np.isfinite(got).all()
    assert_close(got, expected.detach().numpy(), tolerance)
    seed = np.random.default_rng(3).uniform(0.5, 1.5, values.shape)
    y.backward(fn.tensor(seed, dtype=values.dtype))
    expected.backward(torch.tensor(seed))
    assert np.isfinite(x.grad.numpy()).all()
    assert_close(x.grad.numpy(), t.grad.numpy(), tolerance)


@pytest.mark.parametrize("name, options", ACTIVATIONS, ids=IDS)
def test_activation_matches_torch(rng, name, options):
    assert_matches_torch(name, options, (rng.standard_normal((5, 7, 3)) * 4).astype(np.float32))


@pytest.mark.parametrize("name, options", ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_is_safe_for_huge_inputs(name, options, dtype):
    values = np.array([-1e4, -300.0, -90.0, -20.5, 20.5, 90.0, 300.0, 1e4], dtype)
    assert_matches_torch(name, options, values)


@pytest.mark.parametrize("name, options", ACTIVATIONS, ids=IDS)
def test_activation_edges_match_torch(name, options):
    """The points where a piecewise activation switches (PyTorch's one-sided choices there)."""
    values = np.array([-3.0, -1.5, -0.5, 0.5, 1.5, 3.0, 6.0, 20.0, 40.0], np.float32)
    assert_matches_torch(name, options, values)


@pytest.mark.parametrize("name, options", ACTIVATIONS, ids=IDS)
def test_activation_gradients(rng, name, options):
    values = rng.standard_normal((3, 4)) * 2
    values[np.abs(np.abs(values) - 3) < 1e-3] += 0.01  # away from hardswish's kinks
    x = fn.tensor(values, dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda x: getattr(F, name)(x, **options), [x])


def test_activations_work_on_zero_d_and_empty_tensors():
    for name, options in ACTIVATIONS:
        assert_matches_torch(name, options, np.array(0.7, np.float32))
        assert getattr(F, name)(fn.tensor(np.zeros((0, 3), np.float32)), **options).shape == (0, 3)


@pytest.mark.parametrize("name", ["silu", "elu", "hardswish", "hardsigmoid", "mish"])
def test_inplace(rng, name):
    values = rng.standard_normal((2, 3)).astype(np.float32)
    expected = getattr(TF, name)(torch.tensor(values)).numpy()
    # outside a graph: x itself is changed and returned
    x = fn.tensor(values)
    assert getattr(F, name)(x, inplace=True) is x
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6)
    assert x._version == 1
    # a leaf that requires grad refuses, as PyTorch
    leaf = fn.tensor(values, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        getattr(F, name)(leaf, inplace=True)
    # inside a graph: the result, with the right gradient
    hidden = leaf * 1.0
    y = getattr(F, name)(hidden, inplace=True)
    y.sum().backward()
    t = torch.tensor(values, requires_grad=True)
    getattr(TF, name)(t * 1.0, inplace=True).sum().backward()
    assert relative_error(leaf.grad.numpy(), t.grad.numpy()) <= 1e-6


def test_integer_input_raises():
    with pytest.raises(TypeError, match="silu: expected a floating-point Tensor, got int64"):
        F.silu(fn.tensor(np.array([1, 2])))


# --- softmax and log_softmax: PyTorch's dim ------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, -1, 2])
def test_softmax_dim_matches_torch(rng, name, dim):
    values = rng.standard_normal((3, 4, 5)).astype(np.float32)
    assert_matches_torch(name, {"dim": dim}, values)
    x = fn.tensor(values)
    got = getattr(F, name)(x, dim, dtype=np.float64)
    assert got.dtype == np.float64
    expected = getattr(TF, name)(torch.tensor(values), dim, dtype=torch.float64).numpy()
    assert relative_error(got.numpy(), expected) <= 1e-6


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_implicit_dim_warns_as_torch(rng, name):
    values = rng.standard_normal((2, 3, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        got = getattr(F, name)(fn.tensor(values), None)
    expected = getattr(TF, name)(torch.tensor(values), dim=0)  # 3-d: PyTorch picks dim 0
    assert relative_error(got.numpy(), expected.numpy()) <= 1e-6


def test_softmax_of_a_zero_d_tensor():
    x = fn.tensor(np.float32(2.5), requires_grad=True)
    assert F.softmax(x, 0).item() == 1.0
    y = F.log_softmax(x, -1)
    assert y.shape == () and y.item() == 0.0
    y.backward()
    assert x.grad.item() == 0.0


# --- modules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ours, theirs, text",
    [
        (nn.SiLU(), torch.nn.SiLU(), "SiLU()"),
        (nn.SiLU(inplace=True), torch.nn.SiLU(inplace=True), "SiLU(inplace=True)"),
        (nn.Softplus(2.0, 5.0), torch.nn.Softplus(2.0, 5.0), "Softplus(beta=2.0, threshold=5.0)"),
        (nn.ELU(), torch.nn.ELU(), "ELU(alpha=1.0)"),
        (nn.ELU(0.5, True), torch.nn.ELU(0.5, True), "ELU(alpha=0.5, inplace=True)"),
        (nn.Hardswish(), torch.nn.Hardswish(), "Hardswish()"),
        (nn.Hardsigmoid(True), torch.nn.Hardsigmoid(True), "Hardsigmoid()"),
        (nn.Mish(), torch.nn.Mish(), "Mish()"),
        (nn.LogSigmoid(), torch.nn.LogSigmoid(), "LogSigmoid()"),
        (nn.Softmax(dim=1), torch.nn.Softmax(dim=1), "Softmax(dim=1)"),
        (nn.LogSoftmax(-1), torch.nn.LogSoftmax(-1), "LogSoftmax(dim=-1)"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_activation_modules_match_torch(rng, ours, theirs, text):
    values = rng.standard_normal((4, 6)).astype(np.float32) * 3
    x = fn.tensor(values, requires_grad=True)
    t = torch.tensor(values, requires_grad=True)
    # through a non-leaf, so inplace modules work in a graph as in PyTorch
    y, expected = ours(x * 1.0), theirs(t * 1.0)
    assert relative_error(y.numpy(), expected.detach().numpy()) <= 1e-6
    seed = rng.uniform(0.5, 1.5, values.shape).astype(np.float32)  # softmax rows sum to 1
    y.backward(fn.tensor(seed))
    expected.backward(torch.tensor(seed))
    assert relative_error(x.grad.numpy(), t.grad.numpy()) <= 1e-5
    assert repr(ours) == repr(theirs) == text
    assert list(ours.state_dict()) == []


def test_add_relu_is_relu_of_the_sum_with_its_gradients(rng):
    a, b = (
        fn.tensor(rng.standard_normal((3, 4, 5, 7)), dtype=fn.float64, requires_grad=True)
        for _ in range(2)
    )
    y = F.add_relu(a, b)
    expected = (a + b).relu()
    np.testing.assert_array_equal(y.numpy(), expected.numpy())
    upstream = fn.tensor(rng.standard_normal(y.shape))
    (y * upstream).sum().backward()
    mask = (a.numpy() + b.numpy()) > 0
    np.testing.assert_array_equal(a.grad.numpy(), upstream.numpy() * mask)
    np.testing.assert_array_equal(b.grad.numpy(), upstream.numpy() * mask)
    assert gradcheck(F.add_relu, [a, b])


def test_add_relu_of_broadcast_operands_takes_the_two_ops(rng):
    a = fn.tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    b = fn.tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True)
    y = F.add_relu(a, b)
    np.testing.assert_array_equal(y.numpy(), np.maximum(a.numpy() + b.numpy(), 0))
    y.sum().backward()
    assert b.grad.shape == (3,)
    np.testing.assert_array_equal(b.grad.numpy(), ((a.numpy() + b.numpy()) > 0).sum(axis=0))
