"""cumsum, cumprod, sort, argsort and topk against PyTorch (forward and backward, float32 and
float64, odd shapes, negative dims, ties, NaN, zeros for cumprod, 0-d and zero-size tensors), with
float64 finite-difference gradient checks and PyTorch's errors."""

import numpy as np
import pytest

import fastnet as fn
from fastnet.gradcheck import gradcheck
from numerics import assert_close

torch = pytest.importorskip("torch")

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def leaves(values, dtype=np.float64):
    x = fn.tensor(values, dtype=dtype, requires_grad=True)
    return x, torch.tensor(x.numpy(), requires_grad=True)


def weighted_backward(rng, got, expected, dtype):
    """Backpropagate sum(output · w) through both, w random and shared."""
    weights = rng.uniform(0.5, 1.5, expected.shape)
    (got * fn.tensor(weights, dtype=dtype)).sum().backward()
    (expected * torch.tensor(weights, dtype=TORCH_DTYPE[dtype])).sum().backward()


def assert_parity(rng, values, op, dtype):
    x, expected_x = leaves(values, dtype)
    got, expected = op(x), op(expected_x)
    assert got.dtype == dtype
    assert_close(got.numpy(), expected.detach().numpy(), dtype)
    weighted_backward(rng, got, expected, dtype)
    assert x.grad.dtype == dtype
    assert_close(x.grad.numpy(), expected_x.grad.numpy(), dtype, what="gradient")


# ===================================================================== cumsum and cumprod
@pytest.mark.parametrize("op", ["cumsum", "cumprod"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_scans_match_pytorch(rng, op, dtype, dim):
    values = rng.uniform(0.5, 1.5, (3, 5, 4)) * rng.choice([-1.0, 1.0], (3, 5, 4))
    assert_parity(rng, values, lambda t: getattr(t, op)(dim), dtype)


@pytest.mark.parametrize("zeros", [[0], [3], [6], [1, 4], [0, 6], [2, 3, 5]])
def test_cumprod_gradient_with_zeros_has_no_nan_and_matches_pytorch(rng, zeros):
    values = rng.uniform(0.5, 1.5, (2, 7)) * rng.choice([-1.0, 1.0], (2, 7))
    values[0, zeros] = 0.0
    x, expected_x = leaves(values)
    got, expected = x.cumprod(1), expected_x.cumprod(1)
    weighted_backward(rng, got, expected, np.float64)
    assert np.isfinite(x.grad.numpy()).all()
    np.testing.assert_allclose(got.numpy(), expected.detach().numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(x.grad.numpy(), expected_x.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_scan_dtypes_as_pytorch(rng):
    for dtype in (np.int32, np.uint8, np.bool_):
        values = rng.integers(0, 3, (2, 4)).astype(dtype)
        for op in ("cumsum", "cumprod"):
            got = getattr(fn.tensor(values), op)(1)
            expected = getattr(torch.tensor(values), op)(1)
            assert got.dtype == np.int64 and got.tolist() == expected.tolist()
    x = fn.tensor(rng.standard_normal((2, 3)))
    assert x.cumsum(0).dtype == np.float32
    assert x.cumsum(0, dtype=fn.float64).dtype == np.float64
    assert x.cumprod(1, dtype=fn.float64).dtype == np.float64


@pytest.mark.parametrize("op", ["cumsum", "cumprod"])
def test_scans_of_0d_and_empty_tensors(op):
    scalar = fn.tensor(3.0, requires_grad=True)
    for dim in (0, -1):
        result = getattr(scalar, op)(dim)
        assert result.shape == () and result.item() == 3.0
    getattr(scalar, op)(0).backward()
    assert scalar.grad.item() == 1.0
    empty = fn.tensor(np.ones((2, 0)), requires_grad=True)
    result = getattr(empty, op)(1)
    assert result.shape == (2, 0)
    result.sum().backward()
    assert empty.grad.shape == (2, 0)
    with pytest.raises(IndexError, match="out of range"):
        getattr(scalar, op)(1)
    with pytest.raises(TypeError, match="one int"):
        getattr(fn.tensor(np.ones((2, 3))), op)((0, 1))
    with pytest.raises(TypeError):
        getattr(scalar, op)()  # dim is required, as in PyTorch


def test_scans_gradcheck(rng):
    x = fn.tensor(rng.uniform(0.5, 1.5, (3, 4, 2)), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda t: t.cumsum(1), [x])
    assert gradcheck(lambda t: t.cumprod(-1), [x])
    assert gradcheck(lambda t: t.cumprod(0), [x])


def test_cumprod_gradcheck_beside_a_zero(rng):
    """Finite differences agree at a zero and around it (the step never crosses another)."""
    values = rng.uniform(0.5, 1.5, (2, 5))
    values[0, 2] = 0.0
    x = fn.tensor(values, dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda t: t.cumprod(1), [x])


# ===================================================================== sort and argsort
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim, descending", [(-1, False), (0, True), (1, False), (-2, True)])
def test_sort_matches_pytorch_with_ties(rng, dtype, dim, descending):
    values = rng.standard_normal((4, 5, 3))
    values[1, :3, 2] = values[1, 4, 2]  # ties: PyTorch's CPU sort keeps them in their order
    values[2, 1, :] = values[2, 1, 0]
    x, expected_x = leaves(values, dtype)
    got = x.sort(dim, descending=descending)
    expected = expected_x.sort(dim=dim, descending=descending, stable=True)
    assert isinstance(got, tuple) and got.values is got[0] and got.indices is got[1]
    assert got.indices.dtype == np.int64 and got.values.dtype == dtype
    np.testing.assert_array_equal(got.values.numpy(), expected.values.detach().numpy())
    np.testing.assert_array_equal(got.indices.numpy(), expected.indices.numpy())
    argsorted = x.argsort(dim, descending=descending)
    np.testing.assert_array_equal(argsorted.numpy(), expected.indices.numpy())
    weighted_backward(rng, got.values, expected.values, dtype)
    assert x.grad.dtype == dtype
    np.testing.assert_array_equal(x.grad.numpy(), expected_x.grad.numpy())


@pytest.mark.parametrize("descending", [False, True])
def test_sort_places_nan_and_infinities_as_pytorch(descending):
    nan, inf = float("nan"), float("inf")
    values = [3.0, 1.0, nan, 3.0, -inf, 0.0, -0.0, inf, nan, 1.0]
    got = fn.tensor(values).sort(descending=descending, stable=True)
    expected = torch.tensor(values).sort(descending=descending, stable=True)
    np.testing.assert_array_equal(got.values.numpy(), expected.values.numpy())
    np.testing.assert_array_equal(got.indices.numpy(), expected.indices.numpy())


def test_sort_of_integers_0d_and_empty_tensors():
    ints = fn.tensor([[3, 1, 2, 1]], dtype=np.int32)
    got = ints.sort(1, descending=True)
    expected = torch.tensor([[3, 1, 2, 1]], dtype=torch.int32).sort(1, descending=True)
    assert got.values.dtype == np.int32 and got.values.tolist() == expected.values.tolist()
    assert got.indices.tolist() == expected.indices.tolist()
    scalar = fn.tensor(3.0, requires_grad=True)
    values, indices = scalar.sort()
    assert values.shape == () and values.item() == 3.0 and indices.shape == ()
    assert indices.item() == 0 and indices.dtype == np.int64
    assert scalar.argsort().shape == () and scalar.argsort(0).dtype == np.int64
    values.backward()
    assert scalar.grad.item() == 1.0
    empty = fn.tensor(np.ones((2, 0)))
    assert empty.sort(1).values.shape == (2, 0) and empty.sort(1).indices.dtype == np.int64
    assert empty.argsort().shape == (2, 0)


def test_sort_refuses_bad_dims():
    x = fn.tensor(np.ones((2, 3)))
    with pytest.raises(IndexError, match="out of range"):
        x.sort(2)
    with pytest.raises(IndexError, match="out of range"):
        x.argsort(-3)
    with pytest.raises(TypeError, match="one int"):
        x.sort((0, 1))


def test_sort_gradcheck(rng):
    x = fn.tensor(rng.standard_normal((3, 4, 2)), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda t: t.sort(1).values, [x])
    assert gradcheck(lambda t: t.sort(-1, descending=True).values, [x])


# ===================================================================== topk
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "k, dim, largest", [(3, -1, True), (1, 0, False), (5, 1, True), (2, -2, False), (0, 2, True)]
)
def test_topk_matches_pytorch(rng, dtype, k, dim, largest):
    values = rng.standard_normal((4, 5, 6))  # distinct: PyTorch's order of ties is unspecified
    x, expected_x = leaves(values, dtype)
    got = x.topk(k, dim, largest=largest)
    expected = expected_x.topk(k, dim, largest=largest)
    assert isinstance(got, tuple) and got.values is got[0] and got.indices is got[1]
    assert got.values.dtype == dtype and got.indices.dtype == np.int64
    np.testing.assert_array_equal(got.values.numpy(), expected.values.detach().numpy())
    np.testing.assert_array_equal(got.indices.numpy(), expected.indices.numpy())
    weighted_backward(rng, got.values, expected.values, dtype)
    assert x.grad.dtype == dtype
    np.testing.assert_array_equal(x.grad.numpy(), expected_x.grad.numpy())


@pytest.mark.parametrize("largest", [True, False])
def test_topk_ties_pick_the_first_indices(rng, largest):
    """Deterministic ties: the values equal PyTorch's, the indices are the earliest positions."""
    values = np.array([[1.0, 2.0, 2.0, 0.0, 2.0, 2.0, 0.0, 0.0]])
    x, expected_x = leaves(values)
    got = x.topk(3, largest=largest)
    expected = expected_x.topk(3, largest=largest)
    np.testing.assert_array_equal(got.values.numpy(), expected.values.detach().numpy())
    assert got.indices.tolist() == ([[1, 2, 4]] if largest else [[3, 6, 7]])
    got.values.sum().backward()
    expected.values.sum().backward()
    assert x.grad.numpy().sum() == 3.0 and x.grad.numpy()[0, got.indices.numpy()[0]].sum() == 3.0
    assert x.grad.numpy().sum() == expected_x.grad.numpy().sum()


def test_topk_sorted_false_still_returns_the_k_extremes(rng):
    values = rng.standard_normal((3, 7))
    got = fn.tensor(values, dtype=np.float64).topk(4, sorted=False)
    expected = torch.tensor(values).topk(4, sorted=False)
    np.testing.assert_array_equal(
        np.sort(got.values.numpy(), axis=1), np.sort(expected.values.numpy(), axis=1)
    )
    np.testing.assert_array_equal(
        np.sort(got.indices.numpy(), axis=1), np.sort(expected.indices.numpy(), axis=1)
    )


def test_topk_of_0d_and_empty_tensors_as_pytorch():
    scalar = fn.tensor(3.0, requires_grad=True)
    for k in (0, 1):  # PyTorch gives a 0-d tensor's value for k 0 as well as 1
        values, indices = scalar.topk(k)
        expected = torch.tensor(3.0).topk(k)
        assert values.shape == tuple(expected.values.shape) and values.item() == 3.0
        assert indices.item() == 0 and indices.dtype == np.int64
    scalar.topk(1).values.backward()
    assert scalar.grad.item() == 1.0
    empty = fn.tensor(np.ones((2, 0)))
    values, indices = empty.topk(0)
    assert values.shape == (2, 0) and indices.shape == (2, 0) and indices.dtype == np.int64
    assert fn.tensor(np.ones((2, 3))).topk(0).values.shape == (2, 0)


def test_topk_refuses_what_pytorch_refuses():
    x = fn.tensor(np.ones((2, 3)))
    for k in (4, -1):
        with pytest.raises(RuntimeError, match="k out of range"):
            x.topk(k)
        with pytest.raises(RuntimeError):
            torch.ones(2, 3).topk(k)
    with pytest.raises(RuntimeError, match="k out of range"):
        x.topk(3, dim=0)
    with pytest.raises(RuntimeError, match="k out of range"):
        fn.tensor(3.0).topk(2)
    with pytest.raises(IndexError, match="out of range"):
        x.topk(1, dim=2)
    with pytest.raises(TypeError, match="k must be an int"):
        x.topk(1.5)


def test_topk_gradcheck(rng):
    x = fn.tensor(rng.standard_normal((3, 5, 2)), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda t: t.topk(2, 1).values, [x])
    assert gradcheck(lambda t: t.topk(3, -2, largest=False).values, [x])
