"""The elementwise tensor API a PyTorch user writes, against PyTorch (issue #14 audit): the math
methods and ``fastnet.*`` functions (values, dtypes, gradients, float64 gradchecks), arithmetic
methods with ``alpha=`` and ``rounding_mode=``, ``//`` and ``%`` with PyTorch's sign conventions,
in-place methods and their autograd rules, comparisons, norms, softmax methods and conversions."""

import math

import numpy as np
import pytest

import fastnet as fn
from fastnet.gradcheck import gradcheck
from numerics import assert_close

torch = pytest.importorskip("torch")

RNG_SEED = 14


def draw(rng, *shape, low=0.5, high=2.0, signed=True, dtype=np.float32):
    """Random non-zero values with |x| in [low, high) (a random sign unless ``signed`` is off)."""
    values = rng.uniform(low, high, shape)
    if signed:
        values = values * rng.choice([-1.0, 1.0], shape)
    return np.asarray(values, dtype=dtype)


def check(got, expected, what, tolerance=None):
    """Same shape and dtype as the torch tensor ``expected``; close values."""
    got, expected = got.numpy(), expected.detach().numpy()
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype}, expected {expected.dtype}"
    if expected.size and expected.dtype.kind == "f" and np.abs(expected).max() > 0:
        assert_close(got, expected, got.dtype, tolerance, what)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=what)


def parity(rng, op, *arrays, tolerance=None):
    """``op(lib, *tensors)`` on fastnet and torch: outputs, then the gradients of a random
    weighting of the output for every floating input."""
    ours = [fn.tensor(a, dtype=a.dtype, requires_grad=a.dtype.kind == "f") for a in arrays]
    theirs = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    got, expected = op(fn, *ours), op(torch, *theirs)
    check(got, expected, "output", tolerance)
    if not expected.requires_grad:
        return
    weights = rng.uniform(0.5, 1.5, expected.shape)
    (expected * torch.tensor(weights, dtype=expected.dtype)).sum().backward()
    (got * fn.tensor(weights, dtype=got.dtype)).sum().backward()
    for position, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if b.requires_grad and (a.grad is not None or b.grad is not None):
            expected_grad = torch.zeros_like(b) if b.grad is None else b.grad
            check(a.grad, expected_grad, f"gradient of input {position}", tolerance)


# every unary op with an input range where it is smooth
UNARY = {
    "sin": {}, "cos": {}, "tan": {"high": 1.2}, "sinh": {}, "cosh": {}, "exp": {}, "exp2": {},
    "expm1": {}, "log": {"signed": False}, "log2": {"signed": False},
    "log10": {"signed": False}, "log1p": {"signed": False}, "sqrt": {"signed": False},
    "rsqrt": {"signed": False}, "square": {}, "reciprocal": {}, "erf": {}, "erfc": {},
    "asin": {"low": 0.1, "high": 0.9}, "acos": {"low": 0.1, "high": 0.9}, "atan": {},
    "asinh": {}, "acosh": {"low": 1.2, "high": 3.0, "signed": False},
    "atanh": {"low": 0.1, "high": 0.9}, "abs": {}, "neg": {}, "sigmoid": {}, "tanh": {},
    "relu": {}, "sign": {}, "floor": {}, "ceil": {}, "round": {}, "trunc": {}, "frac": {},
}  # fmt: skip
PIECEWISE_CONSTANT = {"sign", "floor", "ceil", "round", "trunc"}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_methods_and_functions_match_torch(name):
    rng = np.random.default_rng(RNG_SEED)
    values = draw(rng, 3, 5, **UNARY[name]) * (3 if name in PIECEWISE_CONSTANT else 1)
    parity(rng, lambda lib, x: getattr(x, name)(), values)
    parity(rng, lambda lib, x: getattr(lib, name)(x), draw(rng, 2, 1, 3, **UNARY[name]))
    parity(rng, lambda lib, x: getattr(x, name)(), draw(rng, **UNARY[name]))  # 0-d
    parity(rng, lambda lib, x: getattr(x, name)(), draw(rng, 0, 4, **UNARY[name]))  # zero-size


@pytest.mark.parametrize("name", sorted(set(UNARY) - {"relu", "abs", "neg"}))
def test_unary_gradcheck_float64(name):
    rng = np.random.default_rng(RNG_SEED)
    x = fn.tensor(
        draw(rng, 2, 3, dtype=np.float64, **UNARY[name]), dtype=fn.float64, requires_grad=True
    )
    assert gradcheck(lambda t: getattr(t, name)(), [x])


@pytest.mark.parametrize("name", ["sqrt", "exp", "sin", "sigmoid", "log", "reciprocal", "erf"])
def test_math_of_integers_gives_float32(name):
    values = np.array([[1, 2, 3], [4, 5, 7]], dtype=np.int64)
    check(getattr(fn.tensor(values), name)(), getattr(torch.tensor(values), name)(), name)


@pytest.mark.parametrize("name", ["abs", "neg", "sign", "floor", "round", "square", "relu"])
def test_integer_preserving_ops_keep_int64(name):
    values = np.array([[1, -2, 3], [-4, 5, 0]], dtype=np.int64)
    check(getattr(fn.tensor(values), name)(), getattr(torch.tensor(values), name)(), name)


def test_round_half_even_and_decimals():
    values = np.array([0.5, 1.5, 2.5, -0.5, 1.2345, -2.71828], np.float32)
    check(fn.tensor(values).round(), torch.tensor(values).round(), "round")
    check(fn.tensor(values).round(decimals=2), torch.tensor(values).round(decimals=2), "decimals")


# ===================================================================== binary arithmetic
@pytest.mark.parametrize(
    "op",
    [
        lambda lib, a, b: a.add(b, alpha=2),
        lambda lib, a, b: a.sub(b, alpha=0.5),
        lambda lib, a, b: lib.add(a, b, alpha=3),
        lambda lib, a, b: lib.sub(a, b),
        lambda lib, a, b: a.mul(b),
        lambda lib, a, b: lib.multiply(a, b),
        lambda lib, a, b: a.div(b),
        lambda lib, a, b: lib.divide(a, b),
        lambda lib, a, b: a.true_divide(b),
        lambda lib, a, b: a.div(b, rounding_mode="floor"),
        lambda lib, a, b: a.div(b, rounding_mode="trunc"),
        lambda lib, a, b: a % b,
        lambda lib, a, b: a.remainder(b),
        lambda lib, a, b: a.fmod(b),
        lambda lib, a, b: lib.fmod(a, b),
        lambda lib, a, b: a.abs().pow(b),
        lambda lib, a, b: lib.pow(a, 2),
        lambda lib, a, b: a.lerp(b, 0.3),
        lambda lib, a, b: a.addcmul(b, b, value=0.5),
        lambda lib, a, b: a.addcdiv(a, b, value=0.5),
    ],
)
def test_binary_methods_broadcast_and_differentiate(op):
    rng = np.random.default_rng(RNG_SEED)
    parity(rng, op, draw(rng, 3, 4) * 4, draw(rng, 4))


def test_floor_division_and_remainder_signs():
    rng = np.random.default_rng(RNG_SEED)
    a = draw(rng, 3, 4) * 5
    b = draw(rng, 4)
    check(fn.tensor(a) // fn.tensor(b), torch.tensor(a) // torch.tensor(b), "//")
    check(fn.tensor(a) // 2, torch.tensor(a) // 2, "// 2")
    check(fn.tensor(a) % -1.5, torch.tensor(a) % -1.5, "% -1.5")
    ints = rng.integers(-9, 10, (3, 4))
    divisors = np.array([3, -3, 2, -7])
    for op in (
        lambda x, y: x // y,
        lambda x, y: x % y,
        lambda x, y: x.div(y, rounding_mode="trunc"),
        lambda x, y: x.fmod(y),
        lambda x, y: 7 // y,
        lambda x, y: 7 % y,
    ):
        check(
            op(fn.tensor(ints), fn.tensor(divisors)),
            op(torch.tensor(ints), torch.tensor(divisors)),
            "int",
        )


def test_rounding_division_has_zero_gradient_and_remainder_gradcheck():
    rng = np.random.default_rng(RNG_SEED)
    a = fn.tensor(draw(rng, 3, 4, dtype=np.float64) * 4, dtype=fn.float64, requires_grad=True)
    b = fn.tensor(draw(rng, 4, dtype=np.float64), dtype=fn.float64, requires_grad=True)
    a.div(b, rounding_mode="floor").sum().backward()
    assert not a.grad.numpy().any() and not b.grad.numpy().any()
    assert gradcheck(lambda x, y: x % y, [a, b])
    assert gradcheck(lambda x, y: x.fmod(y), [a, b])


def test_div_rejects_an_unknown_rounding_mode():
    with pytest.raises(ValueError, match="rounding_mode"):
        fn.ones(2).div(fn.ones(2), rounding_mode="round")


# ===================================================================== in place
@pytest.mark.parametrize(
    "call",
    [
        lambda x, y: x.add_(y),
        lambda x, y: x.add_(y, alpha=2),
        lambda x, y: x.sub_(y, alpha=0.5),
        lambda x, y: x.mul_(y),
        lambda x, y: x.div_(y),
        lambda x, y: x.div_(y, rounding_mode="floor"),
        lambda x, y: x.pow_(2),
        lambda x, y: x.exp_(),
        lambda x, y: x.neg_(),
        lambda x, y: x.abs_(),
        lambda x, y: x.relu_(),
        lambda x, y: x.sigmoid_(),
        lambda x, y: x.tanh_(),
        lambda x, y: x.floor_(),
    ],
)
def test_in_place_methods_change_the_tensor_itself(call):
    rng = np.random.default_rng(RNG_SEED)
    a, b = draw(rng, 3, 4), draw(rng, 4)
    ours, theirs = fn.tensor(a), torch.tensor(a)
    version = ours._version
    assert call(ours, fn.tensor(b)) is ours
    call(theirs, torch.tensor(b))
    check(ours, theirs, "in place")
    assert ours._version > version


def test_in_place_methods_follow_the_autograd_rules():
    leaf = fn.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        leaf.add_(1)
    with pytest.raises(RuntimeError, match="mul_"):
        (leaf * 2).mul_(3)  # not recorded: refused rather than silently wrong
    with fn.no_grad():
        leaf.mul_(2)
    saved = fn.ones(3, requires_grad=True) * 1
    out = saved * saved
    with fn.no_grad():
        saved.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
    ints = fn.tensor([1, 2])
    with pytest.raises(RuntimeError, match="can't be cast"):
        ints.add_(fn.tensor([0.5, 0.5]))
    with pytest.raises(RuntimeError, match="can't be cast"):
        ints.sqrt_()
    ints.add_(fn.tensor([2, 3]))
    assert ints.tolist() == [3, 5] and ints.dtype == np.int64


# ===================================================================== comparisons, logic
def test_comparison_methods_and_functions():
    rng = np.random.default_rng(RNG_SEED)
    a, b = draw(rng, 3, 4), draw(rng, 4)
    for name in ("lt", "le", "gt", "ge", "eq", "ne", "less", "greater_equal", "not_equal"):
        check(
            getattr(fn.tensor(a), name)(fn.tensor(b)),
            getattr(torch.tensor(a), name)(torch.tensor(b)),
            name,
        )
        check(
            getattr(fn, name)(fn.tensor(a), 0.5), getattr(torch, name)(torch.tensor(a), 0.5), name
        )
    near = b + np.float32(1e-7)
    check(
        fn.isclose(fn.tensor(b), fn.tensor(near)),
        torch.isclose(torch.tensor(b), torch.tensor(near)),
        "isclose",
    )
    assert fn.allclose(fn.tensor(b), fn.tensor(near)) is True
    assert fn.tensor(a).allclose(fn.tensor(a + 1)) is False
    assert fn.equal(fn.tensor(a), fn.tensor(a.copy())) and not fn.equal(fn.tensor(b), fn.tensor(a))


def test_logical_and_bitwise_ops():
    rng = np.random.default_rng(RNG_SEED)
    p, q = rng.random((3, 4)) > 0.5, rng.random(4) > 0.5
    for op in (
        lambda x, y: x & y,
        lambda x, y: x | y,
        lambda x, y: x ^ y,
        lambda x, y: ~x,
        lambda x, y: x.logical_and(y),
        lambda x, y: x.logical_or(y),
        lambda x, y: x.logical_xor(y),
        lambda x, y: x.logical_not(),
    ):
        check(op(fn.tensor(p), fn.tensor(q)), op(torch.tensor(p), torch.tensor(q)), "logic")
    with pytest.raises(TypeError):
        fn.ones(2) & fn.ones(2)


def test_accuracy_idioms():
    rng = np.random.default_rng(RNG_SEED)
    logits, labels = draw(rng, 10, 3), rng.integers(0, 3, 10)
    for lib in (fn, torch):
        pred = lib.tensor(logits).argmax(1)
        correct = pred == lib.tensor(labels)
        if lib is fn:
            ours = (correct.float().mean().item(), correct.sum().item(), correct.float().dtype)
        else:
            theirs = (correct.float().mean().item(), correct.sum().item(), correct.float().dtype)
    assert ours[:2] == pytest.approx(theirs[:2]) and ours[2] == np.float32
    assert fn.tensor([True, False]).sum().dtype == np.int64
    assert fn.tensor([True, False]).float().tolist() == [1.0, 0.0]


def test_reductions_all_any_count_nonzero_with_dims():
    rng = np.random.default_rng(RNG_SEED)
    m = rng.random((3, 4)) > 0.4
    for op in (
        lambda x: x.all(1),
        lambda x: x.any(dim=0),
        lambda x: x.any(1, keepdim=True),
        lambda x: x.all(),
        lambda x: x.count_nonzero(dim=1),
        lambda x: (x * 1).all(-1),
    ):
        check(op(fn.tensor(m)), op(torch.tensor(m)), "logical reduction")
    check(fn.any(fn.tensor(m), 1), torch.any(torch.tensor(m), 1), "fastnet.any")


def test_max_min_with_a_tensor_are_elementwise():
    rng = np.random.default_rng(RNG_SEED)
    parity(rng, lambda lib, a, b: a.max(b), draw(rng, 3, 4), draw(rng, 4))
    parity(rng, lambda lib, a, b: lib.min(a, b), draw(rng, 3, 4), draw(rng, 4))


# ===================================================================== norms, softmax
@pytest.mark.parametrize(
    "op",
    [
        lambda lib, x: x.norm(),
        lambda lib, x: x.norm(p=1),
        lambda lib, x: x.norm(2, dim=1),
        lambda lib, x: x.norm(dim=-1, keepdim=True),
        lambda lib, x: x.norm(float("inf"), dim=0),
        lambda lib, x: x.norm(3, dim=(0, 1)),
        lambda lib, x: lib.norm(x, dim=1),
        lambda lib, x: lib.linalg.vector_norm(x),
        lambda lib, x: lib.linalg.vector_norm(x, ord=1, dim=1),
        lambda lib, x: lib.linalg.vector_norm(x, ord=-math.inf, dim=1),
        lambda lib, x: lib.linalg.vector_norm(x, ord=0.5, dim=1, keepdim=True),
        lambda lib, x: lib.linalg.norm(x),
        lambda lib, x: x.dist(x * 0.5),
    ],
)
def test_norms_match_torch(op):
    rng = np.random.default_rng(RNG_SEED)
    parity(rng, op, draw(rng, 3, 4))


@pytest.mark.parametrize("ord", [2, 1, 3, 0.5, math.inf, -math.inf])
def test_vector_norm_gradcheck_float64(ord):
    rng = np.random.default_rng(RNG_SEED)
    x = fn.tensor(draw(rng, 3, 4, dtype=np.float64), dtype=fn.float64, requires_grad=True)
    assert gradcheck(lambda t: fn.linalg.vector_norm(t, ord, dim=1), [x])


def test_norm_of_zeros_has_zero_gradient_and_int_norm_raises():
    x = fn.zeros(3, requires_grad=True)
    x.norm().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(RuntimeError, match="floating point"):
        fn.tensor([1, 2]).norm()


def test_softmax_methods_call_the_functional_ops():
    rng = np.random.default_rng(RNG_SEED)
    parity(rng, lambda lib, x: x.softmax(dim=-1), draw(rng, 3, 4))
    parity(rng, lambda lib, x: x.softmax(1), draw(rng, 2, 3, 4))
    parity(rng, lambda lib, x: x.log_softmax(dim=0), draw(rng, 3, 4))
    parity(rng, lambda lib, x: lib.softmax(x, 1), draw(rng, 3, 4))
    parity(rng, lambda lib, x: lib.log_softmax(x, dim=1), draw(rng, 3, 4))


# ===================================================================== conversions
def test_from_numpy_as_tensor_is_tensor_manual_seed():
    array = np.arange(6.0).reshape(2, 3)
    shared = fn.from_numpy(array)
    assert shared.dtype == np.float64 and shared.shape == (2, 3)
    shared.add_(1)
    assert array[0, 0] == 1.0
    with pytest.raises(TypeError):
        fn.from_numpy([1.0, 2.0])
    assert fn.as_tensor(array).dtype == np.float64
    assert fn.as_tensor([1.0, 2.0]).dtype == np.float32
    assert fn.as_tensor([1, 2]).dtype == np.int64
    assert fn.as_tensor(np.arange(3), dtype=fn.float32).dtype == np.float32
    t = fn.ones(3)
    assert fn.as_tensor(t) is t
    assert fn.is_tensor(t) and not fn.is_tensor(array)
    fn.manual_seed(3)
    first = fn.randn(4).tolist()
    fn.manual_seed(3)
    assert fn.randn(4).tolist() == first


def test_scalar_conversions_and_sizes():
    x = fn.tensor(np.arange(12.0, dtype=np.float32).reshape(3, 4))
    assert x.dim() == 2 and x.ndimension() == 2 and x.size(-1) == 4 and x.size(dim=0) == 3
    assert x.shape == (3, 4) and x.size() == (3, 4)
    assert x.numel() == 12 and fn.numel(x) == 12 and x.nelement() == 12
    assert x.element_size() == 4 and x.long().element_size() == 8
    assert float(x[1, 1]) == 5.0 and int(x[2, 3]) == 11 and abs(-x)[0, 1].item() == 1.0
    assert [1, 2, 3][fn.tensor(1)] == 2
    assert x.is_floating_point() and not x.long().is_floating_point()
    assert x.half().dtype == np.float16 and x.byte().dtype == np.uint8
    assert x.type(fn.float64).dtype == np.float64
    leaf = fn.ones(2, requires_grad=True)
    assert leaf.is_leaf and leaf.grad_fn is None and not (leaf * 2).is_leaf
    assert (leaf * 2).grad_fn is not None
