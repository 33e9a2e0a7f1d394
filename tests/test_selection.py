"""The selection ops (fastnet/tensor_selection.py, fastnet/selection_ops.py) against PyTorch:
where, masked_fill, clamp/clip, maximum/minimum, gather, scatter, scatter_add, tril/triu. Forward
values and dtypes, gradients (a random weighting of the output, so every element counts), float64
finite-difference checks, the in-place variants and the errors PyTorch raises."""

import numpy as np
import pytest

import fastnet as fn
from fastnet.gradcheck import gradcheck
from numerics import assert_close

torch = pytest.importorskip("torch")


# ===================================================================== helpers
def assert_matches(got, expected, what, tolerance=None):
    """Same shape and dtype; equal values (relative error for floats, where one is non-zero)."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype}, expected {expected.dtype}"
    if expected.dtype.kind == "f" and expected.size and np.abs(expected).max() > 0:
        assert_close(got, expected, got.dtype, tolerance, what)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=what)


def parity(rng, fast_op, torch_op, *inputs, grad=(), tolerance=None):
    """Run both ops on the same inputs (NumPy arrays become tensors of their dtype; anything else
    passes as is); compare the outputs, then the gradients of the inputs listed in ``grad``
    (within ``tolerance``, where a gradient is summed in a lower precision than its dtype's)."""
    inputs = [np.asarray(v) if isinstance(v, np.generic) else v for v in inputs]
    fast = [
        fn.tensor(v, dtype=v.dtype, requires_grad=i in grad) if isinstance(v, np.ndarray) else v
        for i, v in enumerate(inputs)
    ]
    ref = [
        torch.tensor(v, requires_grad=i in grad) if isinstance(v, np.ndarray) else v
        for i, v in enumerate(inputs)
    ]
    got, expected = fast_op(*fast), torch_op(*ref)
    assert_matches(got.numpy(), expected.detach().numpy(), "forward")
    if grad:
        weights = np.asarray(rng.uniform(0.5, 1.5, expected.shape))
        (got * fn.tensor(weights, dtype=got.dtype)).sum().backward()
        (expected * torch.tensor(weights, dtype=expected.dtype)).sum().backward()
        for i in grad:
            what = f"gradient of input {i}"
            assert_matches(fast[i].grad.numpy(), ref[i].grad.numpy(), what, tolerance)
    return got


def normal(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def nonzero_ints(rng, shape, dtype=np.int64):
    return (rng.integers(1, 5, shape) * rng.choice([-1, 1], shape)).astype(dtype)


def leaf(array):
    return fn.tensor(array, dtype=np.float64, requires_grad=True)


# ===================================================================== where
WHERE_SHAPES = [
    ((3, 4), (3, 4), (3, 4)),
    ((3, 1), (1, 5), (5,)),
    ((2, 3, 5), (3, 5), ()),
    ((), (4,), (2, 1)),
    ((0, 3), (3,), (1, 3)),
]


@pytest.mark.parametrize("shapes", WHERE_SHAPES)
def test_where_matches_pytorch_with_broadcasting(rng, shapes):
    condition = rng.random(shapes[0]) > 0.5
    a, b = normal(rng, shapes[1]), normal(rng, shapes[2])
    parity(rng, fn.where, torch.where, condition, a, b, grad=(1, 2))


@pytest.mark.parametrize(
    "a, b",
    [(np.float32, 1.5), (2.5, np.float64), (np.int64, 0.5), (np.int32, 7), (3, 0), (1.0, 0)],
)
def test_where_promotes_tensors_and_numbers_as_pytorch(rng, a, b):
    condition = rng.random((3, 4)) > 0.5

    def operand(spec):
        if isinstance(spec, type):
            floating = np.dtype(spec).kind == "f"
            return normal(rng, (3, 4), spec) if floating else nonzero_ints(rng, (3, 4), spec)
        return spec

    parity(rng, fn.where, torch.where, condition, operand(a), operand(b))


def test_where_promotion_of_0d_tensors_and_mixed_dtypes(rng):
    condition = rng.random((2, 3)) > 0.5
    x = normal(rng, (2, 3))
    parity(rng, fn.where, torch.where, condition, x, np.array(2.0), grad=(1,))
    parity(rng, fn.where, torch.where, condition, x, normal(rng, (2, 3), np.float64), grad=(1, 2))
    parity(rng, fn.where, torch.where, condition, nonzero_ints(rng, (3,)), x, grad=(2,))


def test_where_method_and_condition_only_form(rng):
    condition = rng.random((3, 4)) > 0.5
    x, other = normal(rng, (3, 4)), normal(rng, (4,))
    parity(rng, lambda c, a, b: a.where(c, b), lambda c, a, b: a.where(c, b), condition, x, other)
    got = fn.where(fn.tensor(condition))
    expected = torch.where(torch.tensor(condition))
    assert len(got) == len(expected) == 2
    for g, e in zip(got, expected, strict=True):
        assert_matches(g.numpy(), e.numpy(), "indices")
    (only,) = fn.where(fn.tensor(np.array(True)))
    assert only.tolist() == [0]


def test_where_gradcheck(rng):
    condition = fn.tensor(rng.random((3, 1)) > 0.5)
    a, b = leaf(rng.standard_normal((3, 4))), leaf(rng.standard_normal((4,)))
    assert gradcheck(lambda x, y: fn.where(condition, x, y), [a, b])


def test_where_errors(rng):
    x = fn.tensor(normal(rng, (3, 4)))
    with pytest.raises(RuntimeError, match="boolean"):
        fn.where(x, x, x)
    legacy = fn.where((x > 0).to(dtype=np.uint8), x, 0.0)  # PyTorch still takes uint8 masks
    np.testing.assert_array_equal(legacy.numpy(), fn.where(x > 0, x, 0.0).numpy())
    with pytest.raises(TypeError, match="Tensor"):
        fn.where(True, x, 0.0)
    with pytest.raises(RuntimeError, match=r"where: shapes .*\(3, 4\) and \(5,\)"):
        fn.where(x > 0, x, fn.tensor(normal(rng, (5,))))
    with pytest.raises(TypeError, match="both"):
        fn.where(x > 0, x)


# ===================================================================== masked_fill
@pytest.mark.parametrize(
    "x_shape, mask_shape",
    [
        ((3, 4), (3, 4)),
        ((3, 4), (4,)),
        ((2, 3, 5), (3, 1)),
        ((4,), (2, 4)),
        ((), ()),
        ((0, 2), (2,)),
    ],
)
def test_masked_fill_matches_pytorch(rng, x_shape, mask_shape):
    x, mask = normal(rng, x_shape), rng.random(mask_shape) > 0.5
    parity(rng, lambda a, m: a.masked_fill(m, -1.5), lambda a, m: a.masked_fill(m, -1.5), x, mask)
    parity(
        rng, lambda a, m: a.masked_fill(m, 3), lambda a, m: a.masked_fill(m, 3), x, mask, grad=(0,)
    )
    value = np.array(0.75, dtype=np.float32)
    parity(rng, fn.masked_fill, torch.masked_fill, x, mask, value, grad=(0, 2))


def test_masked_fill_keeps_the_dtype_and_converts_the_value_as_pytorch(rng):
    mask = rng.random((3, 4)) > 0.5
    ints, bools = nonzero_ints(rng, (3, 4)), rng.random((3, 4)) > 0.5
    for x, value in [(ints, 1.5), (ints, -2.7), (ints, True), (bools, 0.5), (ints, np.array(2.5))]:
        parity(rng, fn.masked_fill, torch.masked_fill, x, mask, value)
    small = np.arange(1, 5, dtype=np.uint8)
    parity(rng, fn.masked_fill, torch.masked_fill, small, mask[0], -1)  # wraps, as C and PyTorch
    x = normal(rng, (3, 4))
    # a float64 value of a float32 tensor: its gradient is a float32 sum
    f32 = 1e-6
    parity(
        rng, fn.masked_fill, torch.masked_fill, x, mask, np.array(2.0), grad=(0, 2), tolerance=f32
    )


def test_masked_fill_gradcheck(rng):
    mask = fn.tensor(rng.random((2, 3)) > 0.5)
    x, value = leaf(rng.standard_normal((4, 2, 3))), leaf(np.array(0.3))
    assert gradcheck(lambda a, v: a.masked_fill(mask, v), [x, value])


def test_masked_fill_errors(rng):
    x = fn.tensor(normal(rng, (3, 4)))
    mask = x > 0
    with pytest.raises(RuntimeError, match="boolean"):
        x.masked_fill(mask.to(dtype=np.uint8), 1.0)
    with pytest.raises(RuntimeError, match="0-dimensional value tensor"):
        x.masked_fill(mask, fn.tensor([1.0]))
    with pytest.raises(RuntimeError, match=r"masked_fill: shapes .*\(2,\)"):
        x.masked_fill(fn.tensor(np.array([True, False])), 1.0)
    ints = fn.tensor(nonzero_ints(rng, (3, 4)))
    for value in (float("inf"), 1e30):
        with pytest.raises(RuntimeError, match="without overflow"):
            ints.masked_fill(mask, value)
    with pytest.raises(RuntimeError, match="without overflow"):
        ints.to(dtype=np.int32).masked_fill(mask, 2**40)
    with pytest.raises(RuntimeError, match="without overflow"):
        x.masked_fill(mask, 1e300)


def test_masked_fill_in_place_follows_the_in_place_rules(rng):
    values = normal(rng, (3, 4))
    mask = rng.random((4,)) > 0.5
    x = fn.tensor(values)
    version = x._version
    assert x.masked_fill_(fn.tensor(mask), 2.0) is x
    assert x._version > version
    assert_matches(
        x.numpy(), torch.tensor(values).masked_fill_(torch.tensor(mask), 2.0), "in place"
    )
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        fn.tensor(normal(rng, (4,))).masked_fill_(fn.tensor(rng.random((3, 4)) > 0.5), 1.0)
    weight = fn.tensor(values, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        weight.masked_fill_(fn.tensor(mask), 0.0)
    with pytest.raises(RuntimeError, match="in-place write"):
        (weight * 2).masked_fill_(fn.tensor(mask), 0.0)
    with fn.no_grad():
        weight.masked_fill_(fn.tensor(mask), 0.0)
    # a tensor an op saved, changed in place: backward raises instead of being wrong
    saved = fn.tensor(values)
    product = weight * saved
    saved.masked_fill_(fn.tensor(mask), 5.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        product.sum().backward()


def test_a_mask_changed_after_the_op_does_not_change_the_gradient(rng):
    x = fn.tensor(normal(rng, (5,)), requires_grad=True)
    mask = fn.tensor(np.array([True, False, True, False, False]))
    out = x.masked_fill(mask, 0.0)
    mask.fill_(False)  # PyTorch raises here at backward; we kept the mask the op used
    out.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0, 1.0, 1.0]


# ===================================================================== clamp
def bounded(rng, shape, dtype=np.float32):
    """Values with some exactly at the bounds -0.5 and 0.5, where the gradient convention shows."""
    values = normal(rng, shape, dtype)
    values.flat[::4] = 0.5
    values.flat[1::7] = -0.5
    return values


@pytest.mark.parametrize(
    "low, high", [(-0.5, 0.5), (-0.5, None), (None, 0.5), (0.5, -0.5), (-1, 1), (0.5, 0.5)]
)
def test_clamp_with_numbers_matches_pytorch(rng, low, high):
    x = bounded(rng, (3, 5, 7))
    parity(rng, lambda a: a.clamp(low, high), lambda a: a.clamp(low, high), x, grad=(0,))
    parity(rng, lambda a: fn.clip(a, min=low, max=high), lambda a: a.clip(low, high), x, grad=(0,))


@pytest.mark.parametrize(
    "x_shape, low_shape, high_shape",
    [((3, 4), (3, 4), (3, 4)), ((3, 4), (4,), (3, 1)), ((5,), (2, 5), ()), ((0, 3), (3,), (3,))],
)
def test_clamp_with_tensor_bounds_matches_pytorch(rng, x_shape, low_shape, high_shape):
    x = bounded(rng, x_shape)
    low = np.full(low_shape, -0.5, np.float32) + rng.choice([0.0, 0.0, -1.0, 1.5], low_shape)
    high = np.full(high_shape, 0.5, np.float32) + rng.choice([0.0, 0.0, 1.0, -1.5], high_shape)
    low, high = low.astype(np.float32), high.astype(np.float32)

    # PyTorch's own backward fails when the bounds broadcast x to a larger shape: expand x first
    def expanded(a, *bounds):
        return a.expand(torch.broadcast_shapes(a.shape, *(b.shape for b in bounds)))

    both = lambda a, b, c: torch.clamp(expanded(a, b, c), b, c)  # noqa: E731
    parity(rng, fn.clamp, both, x, low, high, grad=(0, 1, 2))
    parity(rng, fn.clamp, lambda a, b: torch.clamp(expanded(a, b), b), x, low, grad=(0, 1))
    ours, theirs = (lambda a, b: a.clamp_min(b)), (lambda a, b: expanded(a, b).clamp_min(b))
    parity(rng, ours, theirs, x, low, grad=(0, 1))
    ours, theirs = (lambda a, b: a.clamp(max=b)), (lambda a, b: expanded(a, b).clamp(max=b))
    parity(rng, ours, theirs, x, high, grad=(0, 1))
    ours, theirs = (lambda a, b: a.clamp_max(b)), (lambda a, b: expanded(a, b).clamp_max(b))
    parity(rng, ours, theirs, x, high, grad=(0, 1))


def test_clamp_dtypes_follow_pytorch(rng):
    ints = nonzero_ints(rng, (3, 4))
    for low, high in [(-1, 2), (-1.5, None), (None, 2.5), (True, None)]:
        clamp = lambda a, low=low, high=high: a.clamp(low, high)  # noqa: E731
        parity(rng, clamp, clamp, ints)
    parity(rng, lambda a: a.clamp(-1, 1), lambda a: a.clamp(-1, 1), rng.random((4,)) > 0.5)
    x = bounded(rng, (3, 4))
    parity(rng, fn.clamp, torch.clamp, x, np.array(-0.5), np.array(0.5), grad=(0,))  # 0-d f64
    parity(rng, fn.clamp, torch.clamp, x, np.full(4, -0.5), np.full(4, 0.5), grad=(0, 1, 2))
    parity(
        rng, fn.clamp, torch.clamp, ints, np.full(4, -0.5, np.float32), np.full(4, 0.5, np.float32)
    )


def test_clamp_propagates_nan(rng):
    x = fn.tensor(np.array([np.nan, 2.0, -2.0], np.float32), requires_grad=True)
    out = x.clamp(-1, 1)
    assert np.isnan(out.numpy()[0]) and out.tolist()[1:] == [1.0, -1.0]
    out.sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]  # as PyTorch: NaN >= min is False


def test_clamp_gradcheck(rng):
    x = leaf(rng.choice([-1.0, 1.0], (3, 4)) * rng.uniform(0.1, 2.0, (3, 4)))
    low = leaf(np.full((4,), -0.5) + rng.uniform(-0.05, 0.05, 4))
    high = leaf(np.full((3, 1), 0.5) + rng.uniform(-0.05, 0.05, (3, 1)))
    assert gradcheck(lambda a, b, c: a.clamp(b, c), [x, low, high])
    assert gradcheck(lambda a: a.clamp(-0.5, 0.5), [x])
    assert gradcheck(lambda a, b: a.clamp(min=b), [x, low])


def test_clamp_errors_and_in_place(rng):
    values = bounded(rng, (3, 4))
    x = fn.tensor(values)
    with pytest.raises(RuntimeError, match="at least one of 'min' or 'max'"):
        x.clamp()
    with pytest.raises(TypeError, match="both be tensors or both be numbers"):
        x.clamp(-1.0, fn.tensor([1.0]))
    with pytest.raises(RuntimeError, match=r"clamp: shapes .*\(2,\)"):
        x.clamp(fn.tensor([0.0, 1.0]))
    with pytest.raises(RuntimeError, match="can't be cast"):
        fn.tensor(nonzero_ints(rng, (3,))).clamp_(0.5)
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        fn.tensor(normal(rng, (3,))).clamp_(fn.tensor(normal(rng, (2, 3))))
    assert x.clamp_(-0.25, 0.25) is x and x._version == 1
    assert_matches(x.numpy(), torch.tensor(values).clamp_(-0.25, 0.25).numpy(), "clamp_")
    assert x.clip_(max=fn.tensor(np.full(4, 0.1, np.float64))) is x and x.dtype == np.float32
    assert x.numpy().max() == np.float32(0.1)


# ===================================================================== maximum, minimum
@pytest.mark.parametrize("op", ["maximum", "minimum"])
@pytest.mark.parametrize(
    "shapes", [((3, 4), (3, 4)), ((3, 1), (5,)), ((2, 3, 5), ()), ((), ()), ((0, 4), (4,))]
)
def test_maximum_minimum_match_pytorch_and_split_ties(rng, op, shapes):
    # values from a small set: many ties between the operands
    a = rng.choice([-2.0, -1.0, 1.0, 2.0], shapes[0]).astype(np.float32)
    b = rng.choice([-2.0, -1.0, 1.0, 2.0], shapes[1]).astype(np.float32)
    parity(rng, getattr(fn, op), getattr(torch, op), a, b, grad=(0, 1))
    method = lambda x, y: getattr(x, op)(y)  # noqa: E731
    parity(rng, method, method, normal(rng, shapes[0]), normal(rng, shapes[1]), grad=(0, 1))


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_promote_and_propagate_nan(rng, op):
    ints, floats = nonzero_ints(rng, (3, 4)), normal(rng, (4,))
    parity(rng, getattr(fn, op), getattr(torch, op), ints, floats, grad=(1,))
    parity(rng, getattr(fn, op), getattr(torch, op), ints, nonzero_ints(rng, (4,), np.int32))
    parity(rng, getattr(fn, op), getattr(torch, op), floats, np.array(0.5), grad=(0, 1))
    bools = rng.random((2, 3)) > 0.5
    parity(rng, getattr(fn, op), getattr(torch, op), bools, ~bools)
    a = np.array([np.nan, 1.0, 2.0], np.float32)
    b = np.array([1.0, np.nan, 2.0], np.float32)
    got = getattr(fn, op)(fn.tensor(a, requires_grad=True), fn.tensor(b))
    np.testing.assert_array_equal(got.numpy(), getattr(torch, op)(torch.tensor(a), torch.tensor(b)))


def test_maximum_minimum_gradcheck_and_errors(rng):
    a, b = leaf(rng.standard_normal((3, 4))), leaf(rng.standard_normal((4,)))
    assert gradcheck(fn.maximum, [a, b])
    assert gradcheck(fn.minimum, [a, b])
    with pytest.raises(TypeError, match="two tensors"):
        fn.maximum(a, 1.0)
    with pytest.raises(RuntimeError, match=r"minimum: shapes \(3, 4\) and \(5,\)"):
        a.minimum(fn.tensor(np.ones(5)))


# ===================================================================== tril, triu
@pytest.mark.parametrize("op", ["tril", "triu"])
@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (2, 5, 3), (2, 1, 3, 4), (0, 3), (2, 0, 4)])
@pytest.mark.parametrize("diagonal", [0, 1, -2, 7])
def test_tril_triu_match_pytorch(rng, op, shape, diagonal):
    method = lambda x: getattr(x, op)(diagonal)  # noqa: E731
    parity(rng, method, method, normal(rng, shape), grad=(0,))
    module = lambda x: getattr(fn, op)(x, diagonal=diagonal)  # noqa: E731
    parity(rng, module, lambda x: getattr(torch, op)(x, diagonal=diagonal), normal(rng, shape))


@pytest.mark.parametrize("op", ["tril", "triu"])
def test_tril_triu_of_ints_bools_and_infinities(rng, op):
    for values in (nonzero_ints(rng, (3, 4)), rng.random((4, 3)) > 0.5):
        parity(rng, lambda x: getattr(x, op)(), lambda x: getattr(x, op)(), values)
    inf = np.full((3, 3), np.inf, np.float32)
    expected = getattr(torch.tensor(inf), op)().numpy()
    np.testing.assert_array_equal(getattr(fn.tensor(inf), op)().numpy(), expected)


def test_tril_triu_gradcheck_and_errors(rng):
    x = leaf(rng.standard_normal((2, 3, 4)))
    assert gradcheck(lambda a: a.tril(-1), [x])
    assert gradcheck(lambda a: a.triu(1), [x])
    for shape in [(3,), ()]:
        with pytest.raises(RuntimeError, match="at least 2 dimensions"):
            fn.tensor(normal(rng, shape)).tril()


# ===================================================================== gather
def random_index(rng, index_shape, size):
    return rng.integers(0, size, index_shape).astype(np.int64)


GATHER_CASES = [
    ((3, 4), 1, (3, 2)),
    ((3, 4), 0, (5, 4)),  # longer than the input along dim: repeated picks
    ((3, 4), -1, (2, 6)),
    ((2, 3, 5), 1, (2, 4, 3)),  # shorter than the input outside dim
    ((2, 3, 5), -3, (1, 3, 5)),
    ((7,), 0, (9,)),
    ((), 0, ()),
    ((4,), -1, ()),
    ((), 0, (3,)),
    ((3, 4), 1, (0, 2)),
    ((0, 3), 0, (0, 3)),
]


@pytest.mark.parametrize("shape, dim, index_shape", GATHER_CASES)
def test_gather_matches_pytorch(rng, shape, dim, index_shape):
    size = shape[dim] if shape else 1
    x, index = normal(rng, shape), random_index(rng, index_shape, max(size, 1))
    parity(rng, lambda a, i: a.gather(dim, i), lambda a, i: a.gather(dim, i), x, index, grad=(0,))
    module = lambda a, i: fn.gather(a, dim, i)  # noqa: E731
    parity(rng, module, lambda a, i: torch.gather(a, dim, i), x, index, grad=(0,))


def test_gather_of_ints_with_int32_index_and_an_empty_index_of_any_shape(rng):
    x = nonzero_ints(rng, (3, 4))
    gather = lambda a, i: a.gather(1, i)  # noqa: E731
    parity(rng, gather, gather, x, random_index(rng, (3, 5), 4).astype(np.int32))
    parity(rng, gather, gather, normal(rng, (3, 4)), np.zeros((0,), np.int64), grad=(0,))


def test_gather_accumulates_the_gradient_of_repeated_indices():
    x = fn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x.gather(0, fn.tensor([1, 1, 0, 1])).sum().backward()
    assert x.grad.tolist() == [1.0, 3.0, 0.0]


def test_gather_gradcheck(rng):
    x = leaf(rng.standard_normal((3, 4, 2)))
    index = fn.tensor(random_index(rng, (2, 6, 2), 4))
    assert gradcheck(lambda a: a.gather(1, index), [x])


def test_gather_errors(rng):
    x = fn.tensor(normal(rng, (3, 4)))
    for bad in (-1, 4):
        with pytest.raises(RuntimeError, match=f"index {bad} is out of bounds for dimension 1"):
            x.gather(1, fn.tensor([[0, bad]]))
    with pytest.raises(RuntimeError, match="int32/int64 for index"):
        x.gather(1, fn.tensor([[0.0]]))
    with pytest.raises(RuntimeError, match="int32/int64 for index"):
        x.gather(1, fn.tensor(np.array([[0]], np.uint8)))
    with pytest.raises(RuntimeError, match="as many dimensions"):
        x.gather(1, fn.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="no larger than the input of shape"):
        x.gather(0, fn.tensor(np.zeros((1, 5), np.int64)))
    with pytest.raises(IndexError, match="out of range"):
        x.gather(2, fn.tensor([[0]]))
    with pytest.raises(TypeError, match="dim must be an int"):
        x.gather(1.0, fn.tensor([[0]]))
    with pytest.raises(TypeError, match="Tensor"):
        x.gather(1, [[0]])
    with pytest.raises(RuntimeError, match="different devices"):
        x.gather(1, fn.tensor([[0]], device="cuda"))


# ===================================================================== scatter, scatter_add
def distinct_index(rng, index_shape, dim, size):
    """An index with no position repeated along ``dim`` (scatter's result is then unique)."""
    if not index_shape:
        return np.asarray(rng.integers(0, size), np.int64)
    full = list(index_shape)
    full[dim] = size
    order = np.argsort(rng.random(full), axis=dim)
    return np.take(order, np.arange(index_shape[dim]), axis=dim).astype(np.int64)


SCATTER_CASES = [
    ((3, 4), 1, (3, 2), (3, 2)),
    ((3, 4), 0, (2, 4), (3, 5)),  # src larger than index: its extra elements are unused
    ((2, 5, 3), -2, (2, 3, 2), (2, 3, 2)),
    ((5,), 0, (3,), (4,)),
    ((), 0, (), ()),
    ((3, 4), 1, (0, 2), (3, 4)),
]


@pytest.mark.parametrize("shape, dim, index_shape, src_shape", SCATTER_CASES)
def test_scatter_matches_pytorch(rng, shape, dim, index_shape, src_shape):
    x, src = normal(rng, shape), normal(rng, src_shape)
    index = distinct_index(rng, index_shape, dim, shape[dim] if shape else 1)
    region = tuple(slice(0, n) for n in index_shape)
    # PyTorch's backward fails for a src larger than the index: give it the region alone
    theirs = lambda a, i, s: a.scatter(dim, i, s[region])  # noqa: E731
    parity(rng, lambda a, i, s: a.scatter(dim, i, s), theirs, x, index, src, grad=(0, 2))
    theirs = lambda a, i, s: a.scatter_add(dim, i, s[region])  # noqa: E731
    parity(rng, lambda a, i, s: fn.scatter_add(a, dim, i, s), theirs, x, index, src, grad=(0, 2))
    for ours in (
        lambda a, i: a.scatter(dim, i, -2.5),
        lambda a, i: fn.scatter(a, dim, i, value=-2.5),
    ):
        parity(rng, ours, lambda a, i: a.scatter(dim, i, value=-2.5), x, index, grad=(0,))


def test_scatter_add_accumulates_repeated_indices_as_pytorch(rng):
    x, src = normal(rng, (3, 5)), normal(rng, (4, 5))
    index = random_index(rng, (4, 5), 3)  # 4 rows into 3: repeats
    add = lambda a, i, s: a.scatter_add(0, i, s)  # noqa: E731
    parity(rng, add, add, x, index, src, grad=(0, 2))


def test_scatter_with_repeated_indices_keeps_the_last_value_on_the_cpu(rng):
    x = fn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    src = fn.tensor([5.0, 7.0, 9.0], requires_grad=True)
    out = x.scatter(0, fn.tensor([1, 1, 0]), src)
    assert out.tolist() == [9.0, 7.0, 3.0]
    (out * fn.tensor([1.0, 2.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 4.0]
    assert src.grad.tolist() == [2.0, 2.0, 1.0]  # PyTorch's formula: each src gathers its grad


def test_scatter_of_ints_and_bools(rng):
    ints, index = nonzero_ints(rng, (4, 3)), distinct_index(rng, (2, 3), 0, 4)
    scatter = lambda a, i, s: a.scatter(0, i, s)  # noqa: E731
    parity(rng, scatter, scatter, ints, index, nonzero_ints(rng, (2, 3)))
    parity(rng, scatter, scatter, ints, index, 7.9)  # a float value into ints: toward zero
    parity(rng, scatter, scatter, rng.random((4, 3)) > 0.5, index, True)


def test_scatter_gradcheck(rng):
    x, src = leaf(rng.standard_normal((4, 3))), leaf(rng.standard_normal((3, 3)))
    index = fn.tensor(distinct_index(rng, (2, 3), 0, 4))
    assert gradcheck(lambda a, s: a.scatter(0, index, s), [x, src])
    repeated = fn.tensor(random_index(rng, (3, 3), 4))
    assert gradcheck(lambda a, s: a.scatter_add(0, repeated, s), [x, src])


def test_scatter_errors(rng):
    x = fn.tensor(normal(rng, (3, 4)))
    index = fn.tensor([[0, 1]])
    with pytest.raises(RuntimeError, match="self.dtype to be equal to src.dtype"):
        x.scatter(1, index, fn.tensor(np.ones((1, 2)), dtype=np.float64))
    with pytest.raises(TypeError, match="exactly one"):
        x.scatter(1, index)
    with pytest.raises(TypeError, match="exactly one"):
        x.scatter(1, index, fn.tensor(normal(rng, (1, 2))), value=1.0)
    with pytest.raises(TypeError, match="src must be a Tensor"):
        x.scatter_add(1, index, 1.0)
    with pytest.raises(RuntimeError, match="index 4 is out of bounds"):
        x.scatter(1, fn.tensor([[4]]), 1.0)
    with pytest.raises(RuntimeError, match="nor larger than src"):
        x.scatter(1, index, fn.tensor(normal(rng, (1, 1))))
    with pytest.raises(RuntimeError, match="as many dimensions"):
        x.scatter(1, index, fn.tensor(normal(rng, (2,))))
    with pytest.raises(RuntimeError, match="no larger than the input"):
        x.scatter(1, fn.tensor(np.zeros((4, 1), np.int64)), 1.0)


def test_scatter_in_place_makes_one_hot_and_follows_the_in_place_rules(rng):
    labels = np.array([2, 0, 1])
    one_hot = fn.tensor(np.zeros((3, 4), np.float32))
    assert one_hot.scatter_(1, fn.tensor(labels[:, None]), 1.0) is one_hot
    expected = torch.zeros(3, 4).scatter_(1, torch.tensor(labels[:, None]), 1.0)
    assert_matches(one_hot.numpy(), expected.numpy(), "one-hot")
    assert one_hot._version == 1
    counts = fn.tensor(np.zeros(4, np.float32))
    counts.scatter_add_(0, fn.tensor(labels), fn.tensor(np.ones(3, np.float32)))
    assert counts.tolist() == [1.0, 1.0, 1.0, 0.0]
    weight = fn.tensor(normal(rng, (3, 4)), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        weight.scatter_(1, fn.tensor(labels[:, None]), 0.0)
    with pytest.raises(RuntimeError, match="in-place write"):
        one_hot.scatter_(1, fn.tensor(labels[:, None]), weight[:, :1])


# ===================================================================== the cuda device
def test_selection_ops_run_on_the_cuda_device(rng):
    """Every op keeps its operands on the tensor's device (the simulator's, without a GPU) and
    gives the cpu's values and gradients."""
    values, mask = normal(rng, (3, 4)), rng.random((3, 4)) > 0.5
    index = random_index(rng, (3, 2), 4)
    ops = [
        lambda x, m, i: fn.where(m, x, 0.5),
        lambda x, m, i: x.masked_fill(m, fn.tensor(2.0)),  # a cpu value, as PyTorch allows
        lambda x, m, i: x.clamp(-0.5, 0.5),
        lambda x, m, i: x.clamp(fn.tensor(np.full(4, -0.5, np.float32), device=x.device)),
        lambda x, m, i: fn.maximum(x, fn.tensor(np.ones((3, 1), np.float32), device=x.device)),
        lambda x, m, i: x.gather(1, i),
        lambda x, m, i: x.scatter(1, i, 1.5).scatter_add(1, i, x[:, :2] * 2),
        lambda x, m, i: x.tril(1),
    ]
    for op in ops:
        results = []
        for device in ("cpu", "cuda"):
            x = fn.tensor(values, device=device, requires_grad=True)
            out = op(x, fn.tensor(mask, device=device), fn.tensor(index, device=device))
            assert out.device == x.device
            out.sum().backward()
            results.append((out.numpy(), x.grad.numpy()))
        for got, expected in zip(results[1], results[0], strict=True):
            np.testing.assert_array_equal(got, expected)
