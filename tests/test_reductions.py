"""prod, var, std, logsumexp and the dim rules of every reduction, against PyTorch (forward and
backward, float32 and float64, odd shapes, negative dims, keepdim, 0-d and zero-size tensors),
with float64 finite-difference gradient checks. Scans and orderings: test_reductions_ordering.py.
"""

import warnings

import numpy as np
import pytest

import fastnet as fn
from fastnet.gradcheck import gradcheck
from numerics import assert_close

torch = pytest.importorskip("torch")

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def leaves(values, dtype=np.float64):
    """The same values as a fastnet leaf and a torch leaf (the torch one from fastnet's rounded
    values, so float32 inputs agree bit for bit)."""
    x = fn.tensor(values, dtype=dtype, requires_grad=True)
    return x, torch.tensor(x.numpy(), requires_grad=True)


def assert_parity(rng, values, op, dtype, torch_op=None):
    """``op(x)`` and its gradient (under random output weights) match torch's, in ``dtype``."""
    x, expected_x = leaves(values, dtype)
    got = op(x)
    expected = (torch_op or op)(expected_x)
    assert got.dtype == dtype
    assert_close(got.numpy(), expected.detach().numpy(), dtype)
    weights = rng.uniform(0.5, 1.5, expected.shape)
    (got * fn.tensor(weights, dtype=dtype)).sum().backward()
    (expected * torch.tensor(weights, dtype=TORCH_DTYPE[dtype])).sum().backward()
    assert x.grad.dtype == dtype
    assert_close(x.grad.numpy(), expected_x.grad.numpy(), dtype, what="gradient")


def assert_same_values(got, expected):
    """Equal values (NaN where torch has NaN, infinities of the same sign), same shape."""
    got, expected = np.asarray(got), expected.detach().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)


def signed(rng, shape):
    """Non-zero values of both signs away from 0, so products neither vanish nor explode."""
    return rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)


# ===================================================================== prod
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim, keepdim", [(None, False), (0, False), (1, True), (-1, False)])
def test_prod_matches_pytorch(rng, dtype, dim, keepdim):
    values = signed(rng, (3, 5, 4))
    if dim is None:
        assert_parity(rng, values, lambda t: t.prod(), dtype)
    else:
        assert_parity(rng, values, lambda t: t.prod(dim, keepdim=keepdim), dtype)


@pytest.mark.parametrize("dim", [None, 1, -2])
def test_prod_gradient_with_zeros_is_the_product_of_the_others(rng, dim):
    values = signed(rng, (4, 6))
    values[1, 2] = 0.0  # one zero in a row: its gradient is the product of the others
    values[2, [0, 4]] = 0.0  # two zeros in a row: every gradient of the row is 0
    values[3, 5] = 0.0
    x, expected_x = leaves(values)
    got = x.prod() if dim is None else x.prod(dim)
    expected = expected_x.prod() if dim is None else expected_x.prod(dim)
    weights = rng.uniform(0.5, 1.5, expected.shape)
    (got * fn.tensor(weights, dtype=np.float64)).sum().backward()
    (expected * torch.tensor(weights)).sum().backward()
    assert_same_values(got.numpy(), expected)
    assert np.isfinite(x.grad.numpy()).all()
    np.testing.assert_allclose(x.grad.numpy(), expected_x.grad.numpy(), rtol=1e-12, atol=0)


def test_prod_of_one_zero_over_everything_keeps_the_others(rng):
    values = signed(rng, (3, 3))
    values[1, 1] = 0.0
    x, expected_x = leaves(values)
    x.prod().backward()
    expected_x.prod().backward()
    assert x.grad.numpy()[1, 1] != 0
    np.testing.assert_allclose(x.grad.numpy(), expected_x.grad.numpy(), rtol=1e-12, atol=0)


def test_prod_dtypes_as_pytorch(rng):
    ints = fn.tensor(rng.integers(1, 4, (3, 4)).astype(np.int32))
    assert ints.prod().dtype == np.int64 and ints.prod(1).dtype == np.int64
    assert ints.prod(1).tolist() == torch.tensor(ints.numpy()).prod(1).tolist()
    assert fn.tensor([True, False]).prod().dtype == np.int64
    x = fn.tensor(signed(rng, (3, 4)))
    assert x.prod(1, dtype=fn.float64).dtype == np.float64
    assert x.prod().dtype == np.float32


def test_prod_of_nothing_is_one_and_of_a_0d_tensor_its_value():
    empty = fn.tensor(np.ones((2, 0)), requires_grad=True)
    assert empty.prod().item() == 1.0
    ones = empty.prod(1)
    assert ones.tolist() == [1.0, 1.0]
    ones.sum().backward()
    assert empty.grad.shape == (2, 0)
    assert fn.tensor(np.ones((0, 3))).prod(1).shape == (0,)
    scalar = fn.tensor(3.0, requires_grad=True)
    for dim in (0, -1):
        assert scalar.prod(dim).shape == () and scalar.prod(dim, keepdim=True).item() == 3.0
    scalar.prod(0).backward()
    assert scalar.grad.item() == 1.0


def test_prod_refuses_what_pytorch_refuses():
    x = fn.tensor(np.ones((2, 3)))
    with pytest.raises(TypeError, match="prod.*one int"):
        x.prod((0, 1))
    with pytest.raises(IndexError, match="out of range"):
        x.prod(2)
    with pytest.raises(IndexError, match="out of range"):
        fn.tensor(3.0).prod(1)


def test_prod_gradcheck(rng):
    x = fn.tensor(signed(rng, (3, 4, 2)), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda t: t.prod(1), [x])
    assert gradcheck(lambda t: t.prod(-1, keepdim=True), [x])
    assert gradcheck(lambda t: t.prod(), [x])


# ===================================================================== var and std
@pytest.mark.parametrize("op", ["var", "std"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "dim, keepdim, correction",
    [(None, False, 1), (0, False, 0), (-1, True, 1), ((0, 2), False, 2), ([1, 2], True, 0.5)],
)
def test_var_std_match_pytorch(rng, op, dtype, dim, keepdim, correction):
    values = rng.standard_normal((4, 5, 3))

    def reduce(t):
        return getattr(t, op)(dim, keepdim=keepdim, correction=correction)

    assert_parity(rng, values, reduce, dtype)


@pytest.mark.parametrize("op", ["var", "std"])
def test_var_std_take_the_old_unbiased_argument(rng, op):
    values = rng.standard_normal((3, 6))
    x, expected = fn.tensor(values, dtype=np.float64), torch.tensor(values)
    cases = [((), {}), ((False,), {}), ((1, False), {}), ((0, True, True), {})]
    cases += [((), {"unbiased": False}), ((-1,), {"unbiased": True, "keepdim": True})]
    for args, kwargs in cases:
        got = getattr(x, op)(*args, **kwargs)
        assert_close(got.numpy(), getattr(expected, op)(*args, **kwargs).numpy(), np.float64)
    with pytest.raises(TypeError, match="unbiased or correction"):
        getattr(x, op)(0, unbiased=False, correction=1)


def test_std_gradient_where_the_std_is_zero_is_zero_as_pytorch():
    values = np.array([[2.0, 2.0, 2.0], [1.0, 3.0, 4.0]])
    for correction in (0, 1):
        x, expected_x = leaves(values)
        x.std(1, correction=correction).sum().backward()
        expected_x.std(1, correction=correction).sum().backward()
        assert (x.grad.numpy()[0] == 0).all()
        assert_close(x.grad.numpy(), expected_x.grad.numpy(), np.float64)


@pytest.mark.parametrize("op", ["var", "std"])
def test_var_std_without_degrees_of_freedom_give_nan_or_inf_as_pytorch(op):
    """One element with correction 1 is 0/0, as is an empty reduction; a correction past the
    count divides by max(0, N - correction) = 0."""
    cases = [
        (np.array([2.0]), None, 1),
        (np.array(2.0), None, 1),
        (np.array(2.0), 0, 0),
        (np.ones((2, 0)), 1, 1),
        (np.ones((0, 3)), 0, 1),
        (np.array([[2.0, 3.0, 7.0], [1.0, 1.0, 1.0]]), 1, 3),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about the degrees of freedom
        for values, dim, correction in cases:
            x, expected_x = leaves(values)
            got = getattr(x, op)(dim, correction=correction)
            expected = getattr(expected_x, op)(dim, correction=correction)
            assert_same_values(got.numpy(), expected)
            got.sum().backward()
            expected.sum().backward()
            assert_same_values(x.grad.numpy(), expected_x.grad)


def test_var_std_refuse_integers_and_repeated_dims():
    with pytest.raises(RuntimeError, match="floating-point"):
        fn.tensor([1, 2, 3]).var()
    with pytest.raises(RuntimeError, match="appears multiple times"):
        fn.tensor(np.ones((2, 3))).std((0, -2))
    with pytest.raises(IndexError, match="out of range"):
        fn.tensor(np.ones((2, 3))).var(2)


@pytest.mark.parametrize("op", ["var", "std"])
def test_var_std_gradcheck(rng, op):
    x = fn.tensor(rng.standard_normal((3, 4, 2)), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda t: getattr(t, op)((0, 2)), [x])
    assert gradcheck(lambda t: getattr(t, op)(1, keepdim=True, correction=0), [x])
    assert gradcheck(lambda t: getattr(t, op)(), [x])


# ===================================================================== logsumexp
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim, keepdim", [(0, False), (-1, True), ((0, 2), False), ((), True)])
def test_logsumexp_matches_pytorch(rng, dtype, dim, keepdim):
    values = rng.standard_normal((3, 4, 5)) * 3
    assert_parity(rng, values, lambda t: t.logsumexp(dim, keepdim=keepdim), dtype)


def test_logsumexp_is_stable_for_large_inputs(rng):
    values = rng.standard_normal((3, 7)) * 10 + np.array([[1000.0], [-1000.0], [88.0]])
    assert_parity(rng, values, lambda t: t.logsumexp(1), np.float32)


def test_logsumexp_of_infinite_rows_as_pytorch():
    inf = float("inf")
    values = np.array([[-inf, -inf, -inf], [1000.0, 1000.0, -inf], [inf, 1.0, 2.0]])
    x, expected_x = leaves(values, np.float32)
    got, expected = x.logsumexp(1), expected_x.logsumexp(1)
    assert_same_values(got.numpy(), expected)
    got.backward(np.ones(3, np.float32))
    expected.backward(torch.ones(3))
    # torch's own gradient of an all -inf row is NaN (exp(-inf - -inf)): matched, not improved
    assert_same_values(x.grad.numpy(), expected_x.grad)


def test_logsumexp_of_integers_empty_and_0d_tensors():
    ints = fn.tensor([[1, 2, 3]])
    assert ints.logsumexp(1).dtype == np.float32
    assert_close(
        ints.logsumexp(1).numpy(), torch.tensor([[1, 2, 3]]).logsumexp(1).numpy(), np.float32
    )
    assert fn.tensor(np.ones((2, 0))).logsumexp(1).tolist() == [-float("inf")] * 2
    assert fn.tensor(np.ones((0, 3))).logsumexp(1).shape == (0,)
    assert fn.tensor(3.0).logsumexp(0).item() == 3.0
    with pytest.raises(TypeError):
        fn.tensor(np.ones(3)).logsumexp()  # dim is required, as in PyTorch


def test_logsumexp_gradcheck(rng):
    x = fn.tensor(rng.standard_normal((3, 4, 2)), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda t: t.logsumexp((0, 2)), [x])
    assert gradcheck(lambda t: t.logsumexp(-2, keepdim=True), [x])


# ===================================================================== the dim rules
@pytest.mark.parametrize("op", ["sum", "mean", "amax", "amin", "var", "std", "logsumexp"])
@pytest.mark.parametrize("keepdim", [False, True])
def test_an_empty_dim_tuple_reduces_everything_as_pytorch(rng, op, keepdim):
    values = rng.standard_normal((2, 3))
    got = getattr(fn.tensor(values, dtype=np.float64), op)((), keepdim=keepdim)
    expected = getattr(torch.tensor(values), op)((0, 1), keepdim=keepdim)
    assert_close(got.numpy(), expected.numpy(), np.float64)


@pytest.mark.parametrize("op", ["sum", "mean", "amax", "var", "logsumexp"])
def test_a_repeated_dim_raises_as_pytorch(op):
    with pytest.raises(RuntimeError, match="dim 0 appears multiple times"):
        getattr(fn.tensor(np.ones((2, 3))), op)((0, -2))


def test_sum_and_mean_take_a_dtype(rng):
    ints = fn.tensor(rng.integers(0, 200, (3, 4)).astype(np.uint8))
    assert ints.sum().dtype == np.int64  # torch sums uint8 to int64, NumPy to uint64
    assert ints.sum(1).tolist() == torch.tensor(ints.numpy()).sum(1).tolist()
    x = fn.tensor(rng.standard_normal((3, 4)))
    assert x.sum(0, dtype=fn.float64).dtype == np.float64
    assert x.mean(dtype=fn.float64).dtype == np.float64


# ===================================================================== module-level functions
def test_module_level_reductions_call_the_methods(rng):
    x = fn.tensor(signed(rng, (3, 4)), dtype=np.float64)
    expected = torch.tensor(x.numpy())
    for name, args in [
        ("sum", (1,)),
        ("mean", (0, True)),
        ("prod", (1,)),
        ("var", (1,)),
        ("std", ()),
        ("logsumexp", (1,)),
        ("amax", (0,)),
        ("amin", (1,)),
        ("cumsum", (1,)),
        ("cumprod", (0,)),
        ("argsort", (1,)),
        ("argmax", (1,)),
        ("argmin", ()),
    ]:
        got, want = getattr(fn, name)(x, *args), getattr(torch, name)(expected, *args)
        if got.dtype == np.int64:
            assert got.tolist() == want.tolist()
        else:
            assert_close(got.numpy(), want.numpy(), np.float64)
    for name in ("max", "min"):
        values, indices = getattr(fn, name)(x, 1)
        expected_pair = getattr(torch, name)(expected, 1)
        assert_close(values.numpy(), expected_pair.values.numpy(), np.float64)
        assert indices.tolist() == expected_pair.indices.tolist()
        assert getattr(fn, name)(x).item() == getattr(torch, name)(expected).item()
        # with a tensor second: the elementwise maximum / minimum, as torch.max(a, b)
        other = fn.tensor(signed(rng, (3, 4)), dtype=np.float64)
        both = getattr(torch, name)(expected, torch.tensor(other.numpy())).numpy()
        assert_close(getattr(fn, name)(x, other).numpy(), both, np.float64)
    assert fn.sort(x, 0).indices.tolist() == torch.sort(expected, 0).indices.tolist()
    assert fn.topk(x, 2).indices.tolist() == torch.topk(expected, 2).indices.tolist()
    for name in ("sum", "prod", "var", "logsumexp", "topk", "sort", "max"):
        with pytest.raises(TypeError, match=f"{name}: expected a Tensor, got list"):
            getattr(fn, name)([1.0, 2.0], 0)
