"""The tensor layer: every op's gradient against finite differences (float64), broadcasting,
graph bookkeeping, devices and error messages."""

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest

import fastnet as fn
from fastnet.gradcheck import gradcheck


def leaf(rng, *shape, low=-2.0, high=2.0):
    return fn.tensor(rng.uniform(low, high, shape), dtype=np.float64, requires_grad=True)


UNARY = {
    "exp": lambda a: a.exp(),
    "log": lambda a: (a * a + 0.5).log(),
    "tanh": lambda a: a.tanh(),
    "sigmoid": lambda a: a.sigmoid(),
    "relu": lambda a: a.relu(),
    "abs": lambda a: a.abs(),
    "neg": lambda a: -a,
    "pow_scalar": lambda a: (a * a + 0.1) ** 1.5,
    "sqrt": lambda a: (a * a + 0.1).sqrt(),
    "sum_all": lambda a: a.sum(),
    "sum_axis": lambda a: a.sum(axis=1),
    "sum_axes_keepdims": lambda a: a.sum(axis=(0, 2), keepdims=True),
    "mean_axis": lambda a: a.mean(axis=-1),
    "mean_all": lambda a: a.mean(),
    "max_axis": lambda a: a.max(axis=1),
    "max_all": lambda a: a.max(),
    "max_keepdims": lambda a: a.max(axis=0, keepdims=True),
    "reshape": lambda a: a.reshape(5, 6) * 2,
    "flatten": lambda a: a.flatten(1),
    "permute": lambda a: a.permute(2, 0, 1),
    "transpose": lambda a: a.transpose(0, 2),
    "T": lambda a: a.T,
    "slice": lambda a: a[1:, ::2, -1],
    "int_index": lambda a: a[0],
    "fancy_index_repeats": lambda a: a[np.array([0, 1, 0])],
    "bool_mask": lambda a: a[a.numpy() > 0],
    "scalar_ops": lambda a: 2.0 * a - 1.0 + a / 3.0 - 3.0 / (a * a + 1.0),
    "rpow": lambda a: 2.0**a,
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_op_gradients(name, rng):
    a = leaf(rng, 2, 3, 5)
    assert gradcheck(UNARY[name], [a])


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1.0),
    "pow": lambda a, b: (a * a + 0.5) ** b,
}


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize(
    "shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((1,), (2, 3))]
)
def test_binary_op_gradients_with_broadcasting(name, shapes, rng):
    a, b = leaf(rng, *shapes[0]), leaf(rng, *shapes[1])
    assert gradcheck(BINARY[name], [a, b])


@pytest.mark.parametrize(
    "shapes",
    [
        ((4, 3), (3, 5)),
        ((2, 4, 3), (2, 3, 5)),
        ((2, 4, 3), (3, 5)),
        ((2, 3, 4, 3), (2, 3, 3, 2)),
        ((1, 7), (7, 1)),
    ],
)
def test_matmul_gradients(shapes, rng):
    a, b = leaf(rng, *shapes[0]), leaf(rng, *shapes[1])
    assert gradcheck(lambda a, b: a @ b, [a, b])


def test_matmul_values_match_numpy(rng):
    a, b = rng.standard_normal((2, 37, 29)), rng.standard_normal((2, 29, 41))
    got = (fn.tensor(a, dtype=np.float64) @ fn.tensor(b, dtype=np.float64)).numpy()
    np.testing.assert_allclose(got, a @ b, rtol=1e-12)


def test_cat_and_stack_gradients(rng):
    a, b, c = leaf(rng, 2, 3), leaf(rng, 2, 1), leaf(rng, 2, 3)
    assert gradcheck(lambda a, b: fn.cat([a, b, a], axis=1), [a, b])
    assert gradcheck(lambda a, c: fn.stack([a, c], axis=1), [a, c])


def test_gradient_accumulates_when_a_tensor_is_used_twice(rng):
    a = leaf(rng, 3)
    (a * a + a).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), 2 * a.numpy() + 1)


def test_backward_accumulates_across_calls_and_frees_the_graph(rng):
    a = leaf(rng, 4)
    y = (a * 3).sum()
    y.backward()
    assert not hasattr(y._ctx, "inputs")  # graph freed: the inputs are released
    (a * 3).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), np.full(4, 6.0))


def test_accumulation_adds_into_the_existing_gradient_in_place(rng):
    a, b = leaf(rng, 4), leaf(rng, 4)
    (a * 3 + b).sum().backward()
    buffer_a, buffer_b = a.grad.data, b.grad.data
    (a * 2 + b).sum().backward()  # the add hands both leaves one upstream array
    assert a.grad.data is buffer_a and b.grad.data is buffer_b
    np.testing.assert_allclose(a.grad.numpy(), np.full(4, 5.0))
    np.testing.assert_allclose(b.grad.numpy(), np.full(4, 2.0))


def test_shared_upstream_gradient_is_not_aliased_between_leaves(rng):
    a, b = leaf(rng, 3), leaf(rng, 3)
    (a + b).sum().backward()
    a.grad.data *= 10  # an in-place edit of one leaf's gradient must not reach the other
    np.testing.assert_allclose(b.grad.numpy(), np.ones(3))


def test_backward_on_non_scalar_needs_a_gradient(rng):
    a = leaf(rng, 2, 2)
    with pytest.raises(RuntimeError, match=r"non-scalar output \(shape \(2, 2\)\)"):
        (a * 2).backward()
    (a * 2).backward(np.ones((2, 2)))
    np.testing.assert_allclose(a.grad.numpy(), np.full((2, 2), 2.0))


def test_backward_without_graph_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        fn.tensor([1.0, 2.0]).sum().backward()


def test_no_grad_records_nothing(rng):
    a = leaf(rng, 3)
    with fn.no_grad():
        b = a * 2
    assert not b.requires_grad and b._ctx is None


def test_detach_cuts_the_graph(rng):
    a = leaf(rng, 3)
    b = (a * 2).detach()
    assert not b.requires_grad
    np.testing.assert_allclose(b.numpy(), 2 * a.numpy())


def test_deep_graph_does_not_hit_the_recursion_limit():
    x = fn.tensor(np.ones(2), dtype=np.float64, requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.ones(2))


def test_outputs_and_gradients_of_a_parameter_are_plain_tensors(rng):
    weight = fn.nn.Parameter(rng.standard_normal(3))
    out = weight * 2
    out.sum().backward()
    assert type(out) is fn.Tensor and type(weight.grad) is fn.Tensor


@pytest.mark.parametrize(
    "module, above", [("autograd", {"tensor", "tensor_ops"}), ("tensor_ops", {"tensor"})]
)
def test_the_engine_and_the_ops_import_nothing_above_them(module, above):
    """autograd <- tensor_ops <- tensor: a module-level import the other way would be a cycle."""
    tree = ast.parse(Path(fn.__file__).with_name(f"{module}.py").read_text())
    imported = {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module is None
        for alias in node.names
    }
    assert not imported & above


def test_fastnet_tensor_re_exports_the_engine():
    engine = importlib.import_module("fastnet.autograd")
    tensor_module = importlib.import_module("fastnet.tensor")  # fn.tensor is the function
    for name in ("Function", "no_grad", "enable_grad", "is_grad_enabled", "unbroadcast"):
        assert getattr(tensor_module, name) is getattr(engine, name)
        assert name in tensor_module.__all__


def test_default_dtype_is_float32_and_integers_stay_integers():
    assert fn.tensor([1.0, 2.0]).dtype == np.float32
    assert fn.tensor(np.ones(3)).dtype == np.float32
    assert fn.tensor([1, 2]).dtype.kind == "i"
    assert (fn.tensor([1.0]) * 2.5).dtype == np.float32  # Python scalars do not promote


def test_item_numpy_and_errors():
    t = fn.tensor([[3.5]])
    assert t.item() == 3.5
    with pytest.raises(ValueError, match="one-element"):
        fn.tensor([1.0, 2.0]).item()


@pytest.mark.parametrize("op", ["add", "mul", "sub", "div"])
def test_broadcast_error_names_both_shapes(op):
    a, b = fn.tensor(np.ones((3, 4))), fn.tensor(np.ones((5,)))
    with pytest.raises(ValueError, match=rf"{op}: shapes \(3, 4\) and \(5,\)"):
        {"add": a.__add__, "mul": a.__mul__, "sub": a.__sub__, "div": a.__truediv__}[op](b)


def test_matmul_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) @ \(5, 6\)"):
        fn.tensor(np.ones((3, 4))) @ fn.tensor(np.ones((5, 6)))


def test_reshape_and_permute_errors():
    with pytest.raises(ValueError, match=r"cannot reshape .* \(2, 3\)"):
        fn.tensor(np.ones((2, 3))).reshape(4, 2)
    with pytest.raises(ValueError, match="not a permutation"):
        fn.tensor(np.ones((2, 3))).permute(0, 0)


def test_requires_grad_only_for_floats():
    with pytest.raises(TypeError, match="floating-point"):
        fn.tensor([1, 2], requires_grad=True)


def test_mixing_devices_raises_naming_both(rng):
    a = fn.tensor(rng.standard_normal(3))
    b = a.to("cuda")  # the simulator stands in for a GPU in the test suite
    with pytest.raises(RuntimeError, match="different devices: cpu and cuda"):
        a + b


def test_to_device_round_trip_carries_gradients(rng):
    a = leaf(rng, 3)
    b = a.to("cuda")
    assert b.device == "cuda" and a.device == "cpu"
    (b * 2).to("cpu").sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), np.full(3, 2.0))
    assert a.grad.device == "cpu"


def test_dtype_conversion_is_differentiable(rng):
    a = leaf(rng, 3)
    b = a.float()
    assert b.dtype == np.float32
    (b * 2).sum().backward()
    assert a.grad.dtype == np.float64
    np.testing.assert_array_equal(a.grad.numpy(), np.full(3, 2.0))


@pytest.mark.parametrize("axis", [None, 0, 1, 2, (0, 2), (1,)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_max_has_numpys_shape_and_values(rng, axis, keepdims):
    """Leading size-1 axes included: dropping the reduced axes must not drop those too."""
    values = rng.standard_normal((1, 5, 3))
    got = fn.tensor(values).max(axis=axis, keepdims=keepdims).numpy()
    expected = values.max(axis=axis, keepdims=keepdims).astype(np.float32)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
