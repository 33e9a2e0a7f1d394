"""PyTorch's tensor semantics (issue 14 defects): max/min and their gradients' dtype, dim=/keepdim=,
type promotion, pow's gradient where the calculus has no value, elementwise comparisons, 0-d and
zero-size tensors. Each compared with PyTorch (float64 references where a gradient changes)."""

import numpy as np
import pytest
import torch

import fastnet as fn
from fastnet.gradcheck import gradcheck
from numerics import assert_close


def leaf(values, dtype=np.float64):
    return fn.tensor(values, dtype=dtype, requires_grad=True)


def torch_leaf(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype, requires_grad=True)


# ===================================================================== 1. max / min
@pytest.mark.parametrize("reduce", ["max", "min"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_min_gradients_keep_the_input_dtype(rng, reduce, dtype):
    x = leaf(rng.standard_normal((3, 5)), dtype)
    getattr(x, reduce)().backward()
    assert x.grad.dtype == dtype
    x.grad = None
    getattr(x, reduce)(axis=1).sum().backward()  # the old NumPy spelling too
    assert x.grad.dtype == dtype


def test_max_after_a_linear_layer_backpropagates(rng):
    layer = fn.nn.Linear(7, 5)
    x = fn.tensor(rng.standard_normal((3, 7)))
    layer(x).max().backward()
    assert layer.weight.grad.dtype == np.float32 and layer.bias.grad.dtype == np.float32
    reference = torch.nn.Linear(7, 5)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(layer.weight.numpy()))
        reference.bias.copy_(torch.from_numpy(layer.bias.numpy()))
    reference(torch.from_numpy(x.numpy())).max().backward()
    assert_close(layer.weight.grad.numpy(), reference.weight.grad.numpy(), np.float32)


@pytest.mark.parametrize("reduce", ["max", "min"])
@pytest.mark.parametrize("dim, keepdim", [(0, False), (1, True), (-1, False), (2, True)])
def test_max_min_dim_return_values_and_indices_as_pytorch(rng, reduce, dim, keepdim):
    values = rng.standard_normal((4, 3, 5))
    values[1, 2, :2] = values[1, 2, 3]  # ties: the gradient goes to the returned index alone
    x, expected_x = leaf(values), torch_leaf(values)
    got = getattr(x, reduce)(dim, keepdim=keepdim)
    expected = getattr(expected_x, reduce)(dim=dim, keepdim=keepdim)
    assert isinstance(got, tuple) and got.values is got[0] and got.indices is got[1]
    np.testing.assert_array_equal(got.values.numpy(), expected.values.detach().numpy())
    np.testing.assert_array_equal(got.indices.numpy(), expected.indices.numpy())
    assert got.indices.dtype == np.int64
    weights = rng.uniform(0.5, 1.5, got.values.shape)
    (got.values * fn.tensor(weights, dtype=np.float64)).sum().backward()
    (expected.values * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), expected_x.grad.numpy())
    _, positional = getattr(x, reduce)(dim)  # `_, pred = out.max(1)`
    np.testing.assert_array_equal(positional.numpy(), expected.indices.numpy().squeeze())


@pytest.mark.parametrize("reduce", ["max", "min", "amax", "amin"])
def test_full_reductions_split_ties_as_pytorch(reduce):
    values = [[1.0, 3.0, 3.0], [-2.0, -2.0, 1.0]]
    x, expected_x = leaf(values), torch_leaf(values)
    getattr(x, reduce)().backward()
    getattr(expected_x, reduce)().backward()
    np.testing.assert_array_equal(x.grad.numpy(), expected_x.grad.numpy())


@pytest.mark.parametrize("reduce", ["max", "min"])
def test_max_min_dim_gradcheck(rng, reduce):
    x = leaf(rng.standard_normal((3, 4, 5)))
    assert gradcheck(lambda t: getattr(t, reduce)(1).values, [x])
    assert gradcheck(lambda t: getattr(t, "a" + reduce)((0, 2), keepdim=True), [x])


@pytest.mark.parametrize("op", ["sum", "mean"])
@pytest.mark.parametrize("dim", [0, -1, (0, 2), None])
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_mean_take_dim_and_keepdim_with_axis_as_alias(rng, op, dim, keepdim):
    values = rng.standard_normal((3, 4, 5))
    every = (0, 1, 2) if dim is None else dim  # torch spells all dims out with keepdim
    expected = getattr(torch.from_numpy(values), op)(every, keepdim=keepdim)
    x = fn.tensor(values, dtype=np.float64)
    by_dim = getattr(x, op)(dim=dim, keepdim=keepdim)
    by_axis = getattr(x, op)(axis=dim, keepdims=keepdim)
    assert_close(by_dim.numpy(), expected.numpy(), np.float64)
    assert_close(by_axis.numpy(), expected.numpy(), np.float64)
    with pytest.raises(TypeError, match="dim or axis"):
        getattr(x, op)(0, axis=0)


def test_argmax_argmin_take_dim(rng):
    values = rng.standard_normal((4, 6))
    x, t = fn.tensor(values), torch.from_numpy(values)
    np.testing.assert_array_equal(x.argmax(dim=1).numpy(), t.argmax(dim=1).numpy())
    np.testing.assert_array_equal(x.argmin(0, keepdim=True).numpy(), t.argmin(0, keepdim=True))
    assert x.argmax().item() == t.argmax().item()


# ===================================================================== 2. type promotion
def _ints(rng, *shape):
    return rng.integers(1, 9, shape)


CASES = {
    "int * float": lambda i, f: i * 1.5,
    "float * int": lambda i, f: 1.5 * i,
    "int ** float": lambda i, f: i**0.5,
    "float ** int": lambda i, f: 0.7**i,
    "int / int": lambda i, f: i / i,
    "int / python int": lambda i, f: i / 2,
    "python int / int": lambda i, f: 3 / i,
    "int * int": lambda i, f: i * i,
    "int ** python int": lambda i, f: i**2,
    "float32 * int tensor": lambda i, f: f * i,
    "int tensor * float32": lambda i, f: i * f,
    "float32 / int tensor": lambda i, f: f / i,
    "float32 - int tensor": lambda i, f: f - i,
    "float32 ** int tensor": lambda i, f: f**i,
    "float32 + python int": lambda i, f: f + 3,
    "float32 * python float": lambda i, f: f * 0.1,
    "bool * float": lambda i, f: (i > 4) * 1.5,
    "bool + int": lambda i, f: (i > 4) + i,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_type_promotion_follows_pytorch(rng, name):
    ints, floats = _ints(rng, 3, 4), rng.uniform(0.5, 2.0, (3, 4)).astype(np.float32)
    got = CASES[name](fn.tensor(ints), fn.tensor(floats))
    expected = CASES[name](torch.from_numpy(ints), torch.from_numpy(floats))
    assert str(got.dtype) == str(expected.dtype).removeprefix("torch.")
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)


def test_float32_with_int_tensor_trains_in_float32(rng):
    """float32 · int used to give float64, which the float32 kernels refused."""
    layer = fn.nn.Linear(4, 3)
    scale = fn.tensor(rng.integers(1, 4, (5, 4)))
    x = fn.tensor(rng.standard_normal((5, 4))) * scale / scale
    assert x.dtype == np.float32
    layer(x).sum().backward()
    assert layer.weight.grad.dtype == np.float32


def test_zero_dim_tensor_and_scalars_do_not_widen(rng):
    x = fn.tensor(rng.standard_normal(3))
    assert (x * fn.tensor(2.0, dtype=np.float64)).dtype == np.float32  # 0-d ranks below
    assert (fn.tensor(2.0, dtype=np.float64) * 1.5).dtype == np.float64
    assert (x * np.float64(2.0)).dtype == np.float32  # a NumPy scalar is a scalar


def test_gradient_flows_through_promotion(rng):
    x = leaf(rng.uniform(0.5, 2.0, 4), np.float32)
    powers = fn.tensor([1, 2, 3, 0])
    (x**powers).sum().backward()
    expected = torch_leaf(x.numpy(), torch.float32)
    (expected ** torch.tensor([1, 2, 3, 0])).sum().backward()
    assert x.grad.dtype == np.float32
    assert_close(x.grad.numpy(), expected.grad.numpy(), np.float32)


# ===================================================================== 3. pow at 0
def test_pow_zero_exponent_gradient_at_zero_is_zero():
    x = leaf([0.0, 0.0, 1.5])
    (x**0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 0.0])


def test_pow_tensor_exponent_at_zero_matches_pytorch():
    bases = [0.0, 0.0, 0.0, 2.0, -1.0, -2.0, 0.0]
    exponents = [0.0, 1.0, 2.0, 0.0, 0.0, 2.0, 0.5]
    x, y = leaf(bases), leaf(exponents)
    tx, ty = torch_leaf(bases), torch_leaf(exponents)
    (x**y).sum().backward()
    (tx**ty).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())
    np.testing.assert_array_equal(y.grad.numpy(), ty.grad.numpy())  # NaN where log(<0)


def test_pow_gradcheck_away_from_zero(rng):
    x = leaf(rng.uniform(0.5, 2.0, (3, 4)))
    y = leaf(rng.uniform(-1.5, 1.5, (3, 4)))
    assert gradcheck(lambda a, b: a**b, [x, y])
    assert gradcheck(lambda a: a**0, [x])
    assert gradcheck(lambda a: a**3, [leaf(rng.uniform(-2.0, 2.0, 5))])


# ===================================================================== 4. comparisons
def test_equality_is_elementwise_and_counts(rng):
    labels = rng.integers(0, 4, 50)
    predictions = labels.copy()
    predictions[::3] = (predictions[::3] + 1) % 4
    pred, y = fn.tensor(predictions), fn.tensor(labels)
    same = pred == y
    assert isinstance(same, fn.Tensor) and same.dtype == np.bool_ and not same.requires_grad
    assert (pred == y).sum().item() == int((predictions == labels).sum())
    assert (pred != y).sum().item() == int((predictions != labels).sum())
    np.testing.assert_array_equal((pred == 2).numpy(), predictions == 2)


@pytest.mark.parametrize("op", ["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"])
def test_comparisons_match_pytorch_with_broadcasting(rng, op):
    a = rng.integers(0, 3, (3, 4)).astype(np.float32)
    b = rng.integers(0, 3, (4,))
    got = getattr(fn.tensor(a, requires_grad=True), op)(fn.tensor(b))
    expected = getattr(torch.from_numpy(a), op)(torch.from_numpy(b))
    assert got.dtype == np.bool_ and not got.requires_grad
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_tensors_stay_hashable_by_identity(rng):
    a, b = fn.tensor(rng.standard_normal(3)), fn.tensor(rng.standard_normal(3))
    assert len({a, b, a}) == 2 and {a: 1, b: 2}[b] == 2
    copy = fn.tensor(a.numpy())
    assert copy not in {a, b}


def test_truth_value_of_a_tensor():
    assert bool(fn.tensor([2.0]) == 2.0)
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(fn.tensor([1.0, 2.0]) == 1.0)


# ===================================================================== 5. 0-d and zero-size
@pytest.mark.parametrize("dim", [0, -1])
def test_reductions_of_a_zero_dim_tensor_take_dim_0(dim):
    x, t = leaf(3.5), torch_leaf(3.5)
    for op in ("sum", "mean"):
        got, expected = getattr(x, op)(dim), getattr(t, op)(dim)
        assert got.shape == tuple(expected.shape) and got.item() == expected.item()
    values, indices = x.max(dim)
    assert values.shape == () and values.item() == 3.5 and indices.item() == 0
    x.sum(dim).backward()
    assert x.grad.shape == () and x.grad.item() == 1.0
    with pytest.raises(IndexError, match="out of range"):
        x.sum(1)


def test_mean_over_an_empty_dim_is_nan():
    got = fn.tensor(np.zeros((2, 0))).mean(1)
    expected = torch.zeros(2, 0).mean(1)
    assert got.shape == tuple(expected.shape) and np.isnan(got.numpy()).all()
    assert np.isnan(fn.tensor(np.zeros(0)).mean().item())


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [
        ((3, 0), (0, 4)),
        ((0, 3), (3, 4)),
        ((3, 4), (4, 0)),
        ((2, 3, 0), (2, 0, 5)),
        ((0, 3, 4), (4, 2)),
    ],
)
def test_matmul_with_a_zero_size_dimension(rng, shape_a, shape_b):
    a_values, b_values = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    a, b = leaf(a_values, np.float32), leaf(b_values, np.float32)
    ta, tb = torch_leaf(a_values, torch.float32), torch_leaf(b_values, torch.float32)
    out, expected = a @ b, ta @ tb
    assert out.shape == tuple(expected.shape) and out.dtype == np.float32
    np.testing.assert_array_equal(out.numpy(), expected.detach().numpy())
    weights = rng.uniform(0.5, 1.5, out.shape)
    (out * fn.tensor(weights)).sum().backward()
    (expected * torch.from_numpy(weights).float()).sum().backward()
    assert a.grad.shape == shape_a and b.grad.shape == shape_b
    np.testing.assert_array_equal(a.grad.numpy(), ta.grad.numpy())
    np.testing.assert_array_equal(b.grad.numpy(), tb.grad.numpy())


def test_to_takes_pytorchs_positional_forms_and_an_int_cast_leaves_the_graph():
    x = fn.tensor(np.random.default_rng(3).standard_normal((2, 3)), requires_grad=True)
    assert x.to(fn.float64).dtype == np.float64
    assert x.to("cpu", fn.float64).dtype == np.float64
    assert x.to(fn.tensor([1], dtype=fn.long)).dtype == np.int64
    as_ints = x.to(fn.int64)
    assert as_ints.dtype == np.int64 and not as_ints.requires_grad
    y = x.to(fn.float64)
    y.sum().backward()
    assert x.grad.dtype == np.float32 and np.all(x.grad.numpy() == 1)
    assert (x @ x.T).shape == x.matmul(x.T).shape == (2, 2)


def test_writing_into_an_expanded_view_names_the_read_only_view():
    base = fn.tensor([[1.0], [2.0]]).expand(2, 3)
    with pytest.raises(RuntimeError, match="read-only"):
        base += 1.0
