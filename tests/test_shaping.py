"""Tensor's shape and conversion methods against PyTorch: squeeze, unsqueeze, expand, expand_as,
repeat, flip, clone, contiguous, long, int, bool, type_as, and the top-level squeeze, unsqueeze,
flip and clone. Forward and backward with random weights (odd shapes, negative dims, 0-d and
zero-size tensors), float64 gradchecks, and the errors PyTorch raises."""

import numpy as np
import pytest

import fastnet as fn
from fastnet.gradcheck import gradcheck
from numerics import assert_close

torch = pytest.importorskip("torch")


def both(rng, shape, dtype=np.float64):
    values = rng.standard_normal(shape)
    ours = fn.tensor(values, dtype=dtype, requires_grad=True)
    theirs = torch.tensor(values, dtype=getattr(torch, np.dtype(dtype).name), requires_grad=True)
    return ours, theirs


def check_parity(rng, shape, op, dtype=np.float64):
    """``op`` on a fastnet tensor and on a torch tensor: same values, shape, dtype and gradient
    (of a random weighting of the output)."""
    x, tx = both(rng, shape, dtype)
    out, expected = op(x), op(tx)
    assert out.shape == tuple(expected.shape)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.numpy(), expected.detach().numpy())
    weights = rng.uniform(0.5, 1.5, out.shape)
    (out * fn.tensor(weights, dtype=dtype)).sum().backward()
    (expected * torch.from_numpy(weights).to(expected.dtype)).sum().backward()
    assert x.grad.shape == shape and x.grad.dtype == dtype
    if np.any(tx.grad.numpy()):
        assert_close(x.grad.numpy(), tx.grad.numpy(), dtype, what="gradient")
    else:  # nothing flowed back (a zero-size output)
        np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())


CASES = {
    "squeeze_all": ((2, 1, 3, 1), lambda t: t.squeeze()),
    "squeeze_dim": ((2, 1, 3, 1), lambda t: t.squeeze(1)),
    "squeeze_negative": ((2, 1, 3, 1), lambda t: t.squeeze(-1)),
    "squeeze_not_one": ((2, 1, 3), lambda t: t.squeeze(0)),
    "squeeze_tuple": ((1, 2, 1, 3, 1), lambda t: t.squeeze((0, -1, 3))),
    "squeeze_keyword": ((2, 1, 3), lambda t: t.squeeze(dim=1)),
    "squeeze_0d": ((), lambda t: t.squeeze(0)),
    "squeeze_0d_all": ((), lambda t: t.squeeze()),
    "squeeze_zero_size": ((0, 1, 3), lambda t: t.squeeze()),
    "unsqueeze_front": ((2, 3), lambda t: t.unsqueeze(0)),
    "unsqueeze_end": ((2, 3), lambda t: t.unsqueeze(2)),
    "unsqueeze_negative": ((2, 3), lambda t: t.unsqueeze(-1)),
    "unsqueeze_most_negative": ((2, 3), lambda t: t.unsqueeze(-3)),
    "unsqueeze_0d": ((), lambda t: t.unsqueeze(-1)),
    "expand": ((3, 1, 5), lambda t: t.expand(3, 4, 5)),
    "expand_keep": ((3, 1, 5), lambda t: t.expand(-1, 4, -1)),
    "expand_leading": ((3, 1), lambda t: t.expand(2, 3, 7)),
    "expand_tuple": ((1, 5), lambda t: t.expand((4, 2, 5))),
    "expand_0d": ((), lambda t: t.expand(2, 3)),
    "expand_to_zero": ((3, 1), lambda t: t.expand(3, 0)),
    "expand_same": ((3, 2), lambda t: t.expand(3, 2)),
    "repeat": ((2, 3), lambda t: t.repeat(2, 3)),
    "repeat_leading": ((2, 3), lambda t: t.repeat(3, 1, 2)),
    "repeat_tuple": ((2, 1, 3), lambda t: t.repeat((1, 4, 1))),
    "repeat_0d": ((), lambda t: t.repeat(3, 2)),
    "repeat_zero": ((2, 3), lambda t: t.repeat(0, 2)),
    "flip_int": ((3, 4, 5), lambda t: t.flip(1)),
    "flip_list": ((3, 4, 5), lambda t: t.flip([0, 2])),
    "flip_varargs": ((3, 4, 5), lambda t: t.flip(0, -1)),
    "flip_empty": ((3, 4), lambda t: t.flip(())),
    "flip_0d": ((), lambda t: t.flip(0)),
    "clone": ((3, 4), lambda t: t.clone()),
    "contiguous_permuted": ((3, 4, 2), lambda t: t.permute(2, 0, 1).contiguous()),
    "expand_as": ((3, 1), lambda t: t.expand_as(t.repeat(2, 1, 4))),
    "chained": ((1, 3, 1), lambda t: t.squeeze(0).unsqueeze(0).expand(2, 3, 4).flip(1)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_pytorch(rng, name):
    shape, op = CASES[name]
    check_parity(rng, shape, op)


@pytest.mark.parametrize("name", ["squeeze_tuple", "expand", "repeat", "flip_varargs", "clone"])
def test_float32_stays_float32(rng, name):
    shape, op = CASES[name]
    check_parity(rng, shape, op, np.float32)


@pytest.mark.parametrize(
    "name",
    [
        "squeeze_tuple",
        "unsqueeze_negative",
        "expand_keep",
        "expand_leading",
        "expand_0d",
        "repeat_leading",
        "repeat_0d",
        "flip_list",
        "clone",
        "contiguous_permuted",
        "chained",
    ],
)
def test_gradcheck(rng, name):
    shape, op = CASES[name]
    x = fn.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True)
    assert gradcheck(op, [x])


def test_expand_is_a_view_and_clone_a_copy(rng):
    x = fn.tensor(rng.standard_normal((3, 1)))
    assert np.shares_memory(x.expand(3, 4).data, x.data)
    assert np.shares_memory(x.squeeze().data, x.data)
    copy = x.clone()
    assert not np.shares_memory(copy.data, x.data)
    copy.data[0, 0] = 7.0
    assert x.numpy()[0, 0] != 7.0
    assert not np.shares_memory(x.flip(0).data, x.data)  # flip copies, as PyTorch's
    assert not np.shares_memory(x.flip(()).data, x.data)


def test_contiguous_returns_self_when_contiguous(rng):
    x = fn.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    assert x.contiguous() is x
    transposed = x.T
    assert not transposed.data.flags.c_contiguous
    made = transposed.contiguous()
    assert made.data.flags.c_contiguous and made.requires_grad
    np.testing.assert_array_equal(made.numpy(), x.numpy().T)


@pytest.mark.parametrize(
    "method, dtype", [("long", np.int64), ("int", np.int32), ("bool", np.bool_)]
)
def test_integer_conversions_leave_the_graph(rng, method, dtype):
    values = rng.uniform(-3, 3, (2, 5))
    values[0, 0] = 0.0  # bool() of 0
    x = fn.tensor(values, requires_grad=True)
    out = getattr(x, method)()
    expected = getattr(torch.tensor(values, dtype=torch.float32, requires_grad=True), method)()
    assert out.dtype == dtype and not out.requires_grad and out._ctx is None
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    assert getattr(out, method)() is out  # already that dtype: itself, as PyTorch


def test_type_as(rng):
    x, tx = both(rng, (2, 3), np.float32)
    ints = fn.tensor(np.array([1, 2], dtype=np.int32))
    assert x.type_as(ints).dtype == np.int32 and not x.type_as(ints).requires_grad
    np.testing.assert_array_equal(
        x.type_as(ints).numpy(), tx.type_as(torch.tensor([1], dtype=torch.int32)).numpy()
    )
    assert x.type_as(x) is x
    doubled = x.type_as(fn.tensor(np.ones(1), dtype=np.float64))
    assert doubled.dtype == np.float64 and doubled.requires_grad
    doubled.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((2, 3), np.float32))


@pytest.mark.parametrize(
    "name, op",
    [
        ("squeeze", lambda m, t: m.squeeze(t, 1)),
        ("unsqueeze", lambda m, t: m.unsqueeze(t, -1)),
        ("flip", lambda m, t: m.flip(t, [0, 2])),
        ("clone", lambda m, t: m.clone(t)),
    ],
)
def test_top_level_functions(rng, name, op):
    x, tx = both(rng, (2, 1, 3))
    out, expected = op(fn, x), op(torch, tx)
    np.testing.assert_array_equal(out.numpy(), expected.detach().numpy())
    out.sum().backward()
    expected.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())
    with pytest.raises(TypeError, match=f"{name}: expected a Tensor, got numpy.ndarray"):
        op(fn, np.ones((2, 1, 3)))


@pytest.mark.parametrize(
    "shape, op, error",
    [
        ((2, 1, 3), lambda t: t.squeeze(3), IndexError),
        ((2, 1, 3), lambda t: t.squeeze(-4), IndexError),
        ((), lambda t: t.squeeze(1), IndexError),
        ((2, 1, 3), lambda t: t.squeeze((1, 1)), RuntimeError),
        ((2, 1, 3), lambda t: t.squeeze((1, -2)), RuntimeError),
        ((2, 1, 3), lambda t: t.unsqueeze(4), IndexError),
        ((2, 1, 3), lambda t: t.unsqueeze(-5), IndexError),
        ((), lambda t: t.unsqueeze(1), IndexError),
        ((2, 1, 3), lambda t: t.expand(2, 3), RuntimeError),
        ((2, 1, 3), lambda t: t.expand(3, 1, 3), RuntimeError),
        ((2, 1, 3), lambda t: t.expand(-1, 2, 1, 3), RuntimeError),
        ((2, 1, 3), lambda t: t.expand(2, -2, 3), RuntimeError),
        ((2, 1, 3), lambda t: t.repeat(2), RuntimeError),
        ((2, 1, 3), lambda t: t.repeat(1, -1, 1), RuntimeError),
        ((2, 1, 3), lambda t: t.flip([0, 0]), RuntimeError),
        ((2, 1, 3), lambda t: t.flip(3), IndexError),
        ((), lambda t: t.flip(1), IndexError),
    ],
)
def test_errors_as_pytorch(rng, shape, op, error):
    x, tx = both(rng, shape)
    with pytest.raises(error):
        op(tx)
    with pytest.raises(error):
        op(x)


def test_error_messages_name_the_op_and_the_problem(rng):
    x = fn.tensor(rng.standard_normal((2, 1, 3)))
    with pytest.raises(IndexError, match=r"dim 3 is out of range .* \[-3, 2\]"):
        x.squeeze(3)
    with pytest.raises(IndexError, match=r"unsqueeze\(\): dim 4 .* \[-4, 3\]"):
        x.unsqueeze(4)
    with pytest.raises(RuntimeError, match=r"expand\(\): the expanded size 3 .* size 2"):
        x.expand(3, 1, 3)
    with pytest.raises(RuntimeError, match=r"repeat\(\): 1 repeats"):
        x.repeat(2)
    with pytest.raises(RuntimeError, match=r"dim 0 appears multiple times"):
        x.flip([0, 0])
    with pytest.raises(TypeError, match=r"expand\(\): sizes must be ints"):
        x.expand(2.0, 1, 3)
