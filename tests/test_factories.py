"""Tensor factories against PyTorch: shapes from varargs, a sequence or size=, dtypes (float32
by default; full's fill value; arange's int64 or float32), values, requires_grad, devices,
reproducible random draws under fastnet.manual_seed, the *_like forms and the errors."""

import numpy as np
import pytest

import fastnet as fn
from numerics import assert_close

torch = pytest.importorskip("torch")

# fastnet and torch share these names: each call runs on both modules
DETERMINISTIC = [
    "zeros(2, 3)",
    "zeros((2, 3))",
    "zeros([4])",
    "zeros([])",
    "zeros(())",
    "zeros(0, 3)",
    "zeros(size=(2, 3))",
    "zeros(2, dtype=M.float64)",
    "zeros(2, dtype=M.int64)",
    "zeros(3, dtype=M.bool)",
    "ones(3, 1, 2)",
    "ones((2,), dtype=M.int32)",
    "ones(2, dtype=float)",
    "ones(2, dtype=int)",
    "full((2, 3), 1.5)",
    "full((2, 3), 7)",
    "full((2,), True)",
    "full((), -2)",
    "full([2, 2], 3, dtype=M.float64)",
    "full((3,), 2.7, dtype=M.int64)",
    "arange(5)",
    "arange(0)",
    "arange(2, 9)",
    "arange(2, 9, 3)",
    "arange(9, 2, -2)",
    "arange(1, 5.0)",
    "arange(0, 1, 0.1)",
    "arange(-3.3, 7.1, 0.37)",
    "arange(1, 2.5, 0.5)",
    "arange(0.5, 5, 1, dtype=M.int64)",
    "arange(0, 5, 1.5, dtype=M.int64)",
    "arange(5, dtype=M.float64)",
    "arange(M.tensor(4))",
    "linspace(0, 1, 5)",
    "linspace(-3.3, 7.1, 101)",
    "linspace(2, -5, 7)",
    "linspace(0, 1, 1)",
    "linspace(0, 1, 0)",
    "linspace(0, 10, 4, dtype=M.int64)",
    "linspace(-10, 10, 4, dtype=M.int64)",
    "linspace(0, 1, 6, dtype=M.float64)",
    "eye(3)",
    "eye(2, 4)",
    "eye(4, 2)",
    "eye(0)",
    "eye(3, dtype=M.bool)",
    "eye(3, dtype=M.int64)",
]


@pytest.mark.parametrize("call", DETERMINISTIC)
def test_deterministic_factories_match_pytorch(call):
    ours, expected = eval(call, {"M": fn, **vars(fn)}), eval(call, {"M": torch, **vars(torch)})
    expected = expected.numpy()
    assert ours.shape == expected.shape and ours.dtype == expected.dtype, call
    assert not ours.requires_grad and ours.device == "cpu"
    if ours.dtype.kind == "f" and expected.size and np.any(expected):
        assert_close(ours.numpy(), expected, ours.dtype.type, what=call)
    else:
        np.testing.assert_array_equal(ours.numpy(), expected)


@pytest.mark.parametrize(
    "call",
    ["empty(2, 3)", "empty((4,), dtype=M.float64)", "empty([])", "empty(size=(0, 3))"],
)
def test_empty_shapes_and_dtypes(call):
    ours, expected = eval(call, {"M": fn, **vars(fn)}), eval(call, {"M": torch, **vars(torch)})
    assert ours.shape == tuple(expected.shape) and ours.dtype == expected.numpy().dtype


@pytest.mark.parametrize(
    "factory",
    [
        lambda **k: fn.zeros(2, 3, **k),
        lambda **k: fn.ones((2, 3), **k),
        lambda **k: fn.full((2, 3), 0.5, **k),
        lambda **k: fn.empty(2, 3, **k),
        lambda **k: fn.arange(0.0, 6.0, **k),
        lambda **k: fn.linspace(0, 1, 6, **k),
        lambda **k: fn.eye(2, 3, **k),
        lambda **k: fn.rand(2, 3, **k),
        lambda **k: fn.randn(2, 3, **k),
    ],
)
def test_requires_grad_makes_a_leaf(factory):
    x = factory(requires_grad=True)
    assert x.requires_grad and x._ctx is None and x.dtype == np.float32
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "call",
    [
        lambda: fn.zeros(2, dtype=fn.int64, requires_grad=True),
        lambda: fn.full((2,), 3, requires_grad=True),
        lambda: fn.arange(5, requires_grad=True),
        lambda: fn.randint(5, (2,), requires_grad=True),
        lambda: fn.ones_like(fn.tensor([1, 2]), requires_grad=True),
    ],
)
def test_requires_grad_refused_for_non_floating_dtypes(call):
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        call()


@pytest.mark.parametrize(
    "call, error, message",
    [
        ("zeros(-1, 2)", RuntimeError, "non-negative"),
        ("ones((2, -3))", RuntimeError, "non-negative"),
        ("rand(-2)", RuntimeError, "non-negative"),
        ("full((-1,), 2.0)", RuntimeError, "non-negative"),
        ("eye(-1)", RuntimeError, "non-negative"),
        ("zeros(2.0)", TypeError, "tuple of ints"),
        ("zeros()", TypeError, "size"),
        ("full(2, 3.0)", TypeError, "tuple of ints"),
        ("arange(0, 1, 0)", RuntimeError, "step must be nonzero"),
        ("arange(5, 1)", RuntimeError, "inconsistent with step sign"),
        ("arange(1, 5, -1)", RuntimeError, "inconsistent with step sign"),
        ("linspace(0, 1, -1)", RuntimeError, "non-negative"),
        ("randint(5, 5, (3,))", RuntimeError, "less than"),
        ("randint(3, 2)", TypeError, "tuple of ints"),
    ],
)
def test_errors_as_pytorch(call, error, message):
    with pytest.raises(error):
        eval(call, {"M": torch, **vars(torch)})
    with pytest.raises(error, match=message):
        eval(call, vars(fn))


@pytest.mark.parametrize("call", ["rand(2, dtype=fn.int64)", "randn(2, dtype=fn.bool)"])
def test_random_floats_refuse_integer_dtypes(call):
    with pytest.raises(TypeError, match="not a floating-point dtype"):
        eval(call, {"fn": fn, **vars(fn)})


@pytest.mark.parametrize(
    "draw",
    [
        lambda: fn.rand(3, 4),
        lambda: fn.randn((3, 4), dtype=fn.float64),
        lambda: fn.randint(-2, 7, (3, 4)),
        lambda: fn.rand_like(fn.ones(3, 4)),
        lambda: fn.randn_like(fn.ones(3, 4, dtype=fn.float64)),
    ],
)
def test_random_factories_follow_manual_seed(draw):
    fn.manual_seed(123)
    first = draw().numpy()
    fn.manual_seed(123)
    np.testing.assert_array_equal(draw().numpy(), first)
    assert not np.array_equal(draw().numpy(), first)


def test_random_distributions():
    fn.manual_seed(0)
    uniform = fn.rand(20000)
    assert uniform.dtype == np.float32 and uniform.shape == (20000,)
    assert 0.0 <= uniform.numpy().min() and uniform.numpy().max() < 1.0
    assert abs(uniform.numpy().mean() - 0.5) < 0.01
    normal = fn.randn(200, 100, dtype=fn.float64).numpy()
    assert normal.dtype == np.float64
    assert abs(normal.mean()) < 0.02 and abs(normal.std() - 1.0) < 0.02
    integers = fn.randint(-2, 7, (20000,))
    assert integers.dtype == np.int64
    assert set(np.unique(integers.numpy())) == set(range(-2, 7))
    assert fn.randint(4, (3, 2)).numpy().max() < 4
    assert fn.randint(4, (3,), dtype=fn.float32).dtype == np.float32
    assert fn.randint(0, 3, size=(2,)).shape == (2,)
    assert fn.randint(3, size=(5,)).numpy().max() < 3
    assert fn.rand([]).shape == () and fn.randn(0, 3).shape == (0, 3)


@pytest.mark.parametrize(
    "name", ["zeros_like", "ones_like", "empty_like", "rand_like", "randn_like"]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_like_factories_keep_shape_dtype_and_device(name, dtype):
    source = fn.tensor(np.ones((2, 0, 3) if name == "empty_like" else (2, 3)), dtype=dtype)
    out = getattr(fn, name)(source)
    expected = getattr(torch, name)(torch.from_numpy(source.numpy()))
    assert out.shape == tuple(expected.shape) and out.dtype == dtype and out.device == "cpu"
    if name in ("zeros_like", "ones_like"):
        np.testing.assert_array_equal(out.numpy(), expected.numpy())
    assert getattr(fn, name)(source, dtype=fn.float64).dtype == np.float64
    assert getattr(fn, name)(source, requires_grad=True).requires_grad


def test_like_factories_of_integer_tensors():
    ints = fn.tensor(np.arange(6).reshape(2, 3))
    assert fn.zeros_like(ints).dtype == np.int64 and fn.ones_like(ints).dtype == np.int64
    filled = fn.full_like(ints, 2.7)
    expected = torch.full_like(torch.zeros(2, 3, dtype=torch.int64), 2.7)
    assert filled.dtype == np.int64
    np.testing.assert_array_equal(filled.numpy(), expected.numpy())
    assert fn.full_like(ints, 0.5, dtype=fn.float32).numpy().tolist() == [[0.5] * 3] * 2
    for name in ("rand_like", "randn_like"):
        with pytest.raises(TypeError, match="not a floating-point dtype"):
            getattr(fn, name)(ints)


def test_factories_on_the_cuda_device():
    device = fn.device("cuda")
    for tensor in (
        fn.zeros(2, 3, device="cuda"),
        fn.full((2,), 4.0, device=device),
        fn.arange(5, device="cuda"),
        fn.linspace(0, 1, 3, device="cuda"),
        fn.eye(3, device="cuda"),
        fn.rand(2, device="cuda"),
        fn.randint(3, (2,), device="cuda"),
        fn.zeros_like(fn.ones(2, device="cuda")),
    ):
        assert tensor.device == device
    fn.manual_seed(5)
    on_cpu = fn.randn(4).numpy()
    fn.manual_seed(5)
    np.testing.assert_array_equal(fn.randn(4, device="cuda").numpy(), on_cpu)  # same seed, values


def test_dtype_names():
    assert fn.zeros(2, dtype="float").dtype == np.float32
    assert fn.zeros(2, dtype=fn.long).dtype == np.int64
    assert fn.ones(2, dtype=np.float64).dtype == np.float64
