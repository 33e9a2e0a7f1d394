"""The shape and selection tensor API a PyTorch user writes, against PyTorch (issue #14 audit):
cat/stack with ``dim=``, split, chunk, unbind, narrow, select, transposes, movedim, index_select,
masked_select, nonzero, view_as/reshape_as/unflatten, products and the new_* factories; values,
dtypes, gradients and float64 gradchecks."""

import numpy as np
import pytest

import fastnet as fn
from fastnet.gradcheck import gradcheck
from numerics import assert_close

torch = pytest.importorskip("torch")


def draw(rng, *shape, dtype=np.float32):
    return np.asarray(rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape), dtype)


def check(got, expected, what):
    got, expected = got.numpy(), expected.detach().numpy()
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype}, expected {expected.dtype}"
    if expected.size and expected.dtype.kind == "f" and np.abs(expected).max() > 0:
        assert_close(got, expected, got.dtype, what=what)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=what)


def outputs(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


def parity(rng, op, *arrays):
    """``op(lib, *tensors)`` (one tensor or a tuple of them) on fastnet and torch: outputs, then
    the gradients of a random weighting of every floating output."""
    ours = [fn.tensor(a, dtype=a.dtype, requires_grad=a.dtype.kind == "f") for a in arrays]
    theirs = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    got, expected = outputs(op(fn, *ours)), outputs(op(torch, *theirs))
    assert len(got) == len(expected)
    for position, (g, e) in enumerate(zip(got, expected, strict=True)):
        check(g, e, f"output {position}")
    pairs = [(g, e) for g, e in zip(got, expected, strict=True) if e.requires_grad]
    if not pairs:
        return
    weights = [rng.uniform(0.5, 1.5, e.shape) for _, e in pairs]
    sum(
        (e * torch.tensor(w, dtype=e.dtype)).sum() for (_, e), w in zip(pairs, weights, strict=True)
    ).backward()
    sum(
        (g * fn.tensor(w, dtype=g.dtype)).sum() for (g, _), w in zip(pairs, weights, strict=True)
    ).backward()
    for position, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if b.requires_grad and (a.grad is not None or b.grad is not None):
            check(a.grad, b.grad, f"gradient of input {position}")


CASES = {
    "cat dim=1": (lambda L, a, b: L.cat([a, b], dim=1), (2, 3), (2, 5)),
    "cat dim=-1": (lambda L, a, b: L.cat((a, b), dim=-1), (2, 3), (2, 5)),
    "cat positional": (lambda L, a, b: L.cat([a, b], 0), (2, 3), (4, 3)),
    "cat zero-size": (lambda L, a, b: L.cat([a, b], dim=0), (0, 3), (2, 3)),
    "concat": (lambda L, a, b: L.concat([a, b], dim=1), (2, 3), (2, 5)),
    "concatenate": (lambda L, a, b: L.concatenate([a, b], axis=1), (2, 3), (2, 5)),
    "hstack": (lambda L, a, b: L.hstack([a, b]), (2, 3), (2, 5)),
    "vstack": (lambda L, a, b: L.vstack([a, b]), (3,), (3,)),
    "stack dim=1": (lambda L, a, b: L.stack([a, b], dim=1), (2, 3), (2, 3)),
    "stack dim=-1": (lambda L, a, b: L.stack([a, b], dim=-1), (2, 3), (2, 3)),
    "stack 0-d": (lambda L, a, b: L.stack([a, b]), (), ()),
    "chunk": (lambda L, a: a.chunk(3, dim=1), (2, 7)),
    "chunk uneven": (lambda L, a: a.chunk(4), (10, 2)),
    "fastnet.chunk": (lambda L, a: L.chunk(a, 2, -1), (2, 5)),
    "split int": (lambda L, a: a.split(2, dim=1), (3, 7)),
    "split list": (lambda L, a: a.split([1, 4, 2], dim=-1), (3, 7)),
    "fastnet.split": (lambda L, a: L.split(a, 3), (7, 2)),
    "split_with_sizes": (lambda L, a: a.split_with_sizes([3, 4], 1), (3, 7)),
    "unbind": (lambda L, a: a.unbind(1), (3, 4, 2)),
    "unbind -1": (lambda L, a: L.unbind(a, dim=-1), (3, 4)),
    "t": (lambda L, a: a.t(), (3, 4)),
    "t 1-d": (lambda L, a: a.t(), (4,)),
    "mT": (lambda L, a: a.mT, (2, 3, 4)),
    "swapaxes": (lambda L, a: a.swapaxes(-1, -2), (2, 3, 4)),
    "swapdims": (lambda L, a: L.swapdims(a, 0, 2), (2, 3, 4)),
    "transpose negative": (lambda L, a: L.transpose(a, -1, 0), (2, 3, 4)),
    "permute dims=": (lambda L, a: a.permute(dims=(2, 0, 1)), (2, 3, 4)),
    "movedim": (lambda L, a: a.movedim(0, -1), (2, 3, 4)),
    "movedim tuple": (lambda L, a: L.movedim(a, (0, 1), (2, 0)), (2, 3, 4)),
    "narrow": (lambda L, a: a.narrow(-1, -3, 2), (3, 5)),
    "fastnet.narrow": (lambda L, a: L.narrow(a, 0, 1, 2), (3, 5)),
    "select": (lambda L, a: a.select(1, -1), (3, 5)),
    "view(-1)": (lambda L, a: a.view(-1), (3, 4)),
    "view(2, -1)": (lambda L, a: a.view(2, -1), (3, 4)),
    "view_as": (lambda L, a, b: a.view_as(b), (3, 4), (2, 6)),
    "reshape_as": (lambda L, a, b: a.reshape_as(b), (3, 4), (12,)),
    "unflatten": (lambda L, a: a.unflatten(-1, (3, -1)), (4, 6)),
    "ravel": (lambda L, a: a.ravel(), (3, 4)),
    "broadcast_to": (lambda L, a: L.broadcast_to(a, (2, 3, 4)), (3, 1)),
    "broadcast_tensors": (lambda L, a, b: L.broadcast_tensors(a, b), (3, 1), (4,)),
    "mm": (lambda L, a, b: a.mm(b), (3, 4), (4, 2)),
    "bmm": (lambda L, a, b: L.bmm(a, b), (2, 3, 4), (2, 4, 2)),
    "mv": (lambda L, a, b: a.mv(b), (3, 4), (4,)),
    "dot": (lambda L, a, b: L.dot(a, b), (3,), (3,)),
    "outer": (lambda L, a, b: L.outer(a, b), (3,), (4,)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shape_ops_match_torch(name):
    rng = np.random.default_rng(7)
    op, *shapes = CASES[name]
    parity(rng, op, *(draw(rng, *shape) for shape in shapes))


def test_cat_promotes_dtypes_and_skips_empty_vectors():
    rng = np.random.default_rng(7)
    a, b = draw(rng, 2, 3), np.arange(3).reshape(1, 3)
    check(
        fn.cat([fn.tensor(a), fn.tensor(b)]), torch.cat([torch.tensor(a), torch.tensor(b)]), "cat"
    )
    check(
        fn.cat([fn.tensor(a), fn.zeros(0)]), torch.cat([torch.tensor(a), torch.zeros(0)]), "empty"
    )
    with pytest.raises(IndexError):
        fn.cat([fn.tensor(a), fn.tensor(a)], dim=2)
    with pytest.raises(ValueError):
        fn.cat([fn.tensor(a), fn.ones(2, 4)], dim=0)
    with pytest.raises(TypeError):
        fn.cat(fn.tensor(a))
    with pytest.raises(RuntimeError):
        fn.stack([fn.ones(2), fn.ones(3)])


def test_piece_errors_match_torch():
    x = fn.ones(3, 7)
    with pytest.raises(RuntimeError, match="sum exactly"):
        x.split([1, 2], dim=1)
    with pytest.raises(RuntimeError, match="exceeds"):
        x.narrow(1, 5, 3)
    with pytest.raises(RuntimeError, match="<= 2 dimensions"):
        fn.ones(2, 3, 4).t()
    with pytest.raises(IndexError):
        x.select(0, 3)


@pytest.mark.parametrize(
    "op",
    [
        lambda a: fn.cat([a, a * 2], dim=-1),
        lambda a: fn.stack([a, a.exp()], dim=1),
        lambda a: a.chunk(2, dim=1)[1] * a.chunk(2, dim=1)[0].sum(),
        lambda a: a.split([1, 2], dim=0)[1],
        lambda a: fn.stack(a.unbind(1), dim=0),
        lambda a: a.narrow(1, 1, 2).movedim(0, 1),
        lambda a: a.index_select(1, fn.tensor([3, 0, 0])),
        lambda a: a.masked_select(a > 0),
    ],
)
def test_shape_and_selection_gradcheck_float64(op):
    rng = np.random.default_rng(7)
    a = fn.tensor(draw(rng, 3, 4, dtype=np.float64), dtype=fn.float64, requires_grad=True)
    assert gradcheck(op, [a])


SELECTIONS = {
    "index_select": (lambda L, a, i: a.index_select(1, i), (3, 5), np.array([4, 0, 0, 2])),
    "index_select -2": (lambda L, a, i: L.index_select(a, -2, i), (3, 5), np.array([2, 1])),
    "index_select 0-d": (lambda L, a, i: a.index_select(0, i), (3, 5), np.array(1)),
}


@pytest.mark.parametrize("name", sorted(SELECTIONS))
def test_index_select_matches_torch(name):
    rng = np.random.default_rng(7)
    op, shape, index = SELECTIONS[name]
    parity(rng, op, draw(rng, *shape), index)


def test_index_select_rejects_bad_indices():
    with pytest.raises(IndexError):
        fn.ones(3, 5).index_select(1, fn.tensor([5]))
    with pytest.raises(RuntimeError):
        fn.ones(3, 5).index_select(1, fn.tensor([1.0]))


def test_masked_select_nonzero_argwhere():
    rng = np.random.default_rng(7)
    values, mask = draw(rng, 3, 5), rng.random((3, 5)) > 0.5
    parity(rng, lambda L, a, m: a.masked_select(m), values, mask)
    parity(rng, lambda L, a, m: L.masked_select(a, m), values, mask[0])  # broadcast mask
    ints = rng.integers(-1, 2, (3, 5))
    for op in (
        lambda L, x: x.nonzero(),
        lambda L, x: L.nonzero(x),
        lambda L, x: L.argwhere(x),
        lambda L, x: x.nonzero(as_tuple=True),
        lambda L, x: x[0].nonzero(),
        lambda L, x: x[0, 0].nonzero(),
    ):
        for got, expected in zip(
            outputs(op(fn, fn.tensor(ints))), outputs(op(torch, torch.tensor(ints))), strict=True
        ):
            check(got, expected, "nonzero")


def test_new_factories_take_the_tensors_dtype_and_device():
    for dtype in (np.float32, np.float64, np.int64):
        x = fn.tensor(np.ones(3, dtype), dtype=dtype)
        y = torch.tensor(np.ones(3, dtype))
        check(x.new_zeros(2, 3), y.new_zeros(2, 3), "new_zeros")
        check(x.new_ones((2, 3)), y.new_ones((2, 3)), "new_ones")
        check(x.new_full((2,), 7), y.new_full((2,), 7), "new_full")
        check(x.new_tensor([1, 2, 3]), y.new_tensor([1, 2, 3]), "new_tensor")
        assert x.new_empty((2, 3)).shape == (2, 3) and x.new_empty(2).dtype == dtype
    assert fn.ones(2).new_zeros(2, dtype=fn.int64).dtype == np.int64
    assert fn.ones(2).new_ones(2, requires_grad=True).requires_grad
