"""The per-op fast paths (issue 20) keep the slow paths' semantics: a binary op on two tensors of
one dtype skips promotion yet still refuses two devices and non-tensors; grad mode is per thread;
the backward walk (consumer counts instead of a topological sort) gives every leaf its whole
gradient once, also through diamonds, unused branches and long chains; a loss's filled gradient
is the broadcast one."""

import threading

import numpy as np
import pytest

import fastnet as fn
from fastnet.autograd import Function, queue_callback


def leaf(rng, *shape, dtype=np.float64):
    return fn.tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=True)


# ===================================================================== binary ops
@pytest.mark.parametrize("op", ["__add__", "__sub__", "__mul__", "__truediv__"])
def test_same_dtype_and_promoted_operands_give_the_same_values(rng, op):
    x, y = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    fast = getattr(fn.tensor(x), op)(fn.tensor(y))  # float32 and float32: the fast path
    assert fast.dtype == np.float32
    slow = getattr(fn.tensor(x), op)(fn.tensor(y, dtype=np.float64))  # promoted
    assert slow.dtype == np.float64
    expected = getattr(x.astype(np.float32), op)(y.astype(np.float32))
    np.testing.assert_allclose(fast.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(slow.numpy(), getattr(x.astype(np.float32), op)(y), rtol=1e-6)


def test_promotion_still_follows_pytorch_next_to_the_fast_path():
    ints = fn.tensor([1, 2, 3])
    assert (ints + ints).dtype == np.int64  # same dtype, not floating: stays int
    assert (ints / ints).dtype == np.float32  # true division of ints: float32
    assert (ints + fn.tensor([1.0, 2.0, 3.0])).dtype == np.float32
    assert (fn.tensor([1, 2], dtype=np.int32) + fn.tensor([1, 2])).dtype == np.int64
    assert (fn.tensor([1.0, 2.0]) + 2).dtype == np.float32
    assert (ints * 2.5).dtype == np.float32


def test_a_parameter_takes_the_fast_path_and_records_the_graph(rng):
    weight = fn.nn.Parameter(fn.tensor(rng.standard_normal(3)))
    x = fn.tensor(rng.standard_normal(3))
    out = weight * x
    assert type(out) is fn.Tensor and out.requires_grad
    out.sum().backward()
    np.testing.assert_allclose(weight.grad.numpy(), x.numpy())


@pytest.mark.parametrize("op", ["__add__", "__sub__", "__mul__", "__truediv__"])
def test_same_dtype_on_two_devices_still_raises_naming_both(rng, op):
    a = fn.tensor(rng.standard_normal(3))
    b = a.to("cuda")  # the simulator stands in for a GPU in the test suite
    assert a.dtype == b.dtype
    with pytest.raises(RuntimeError, match="different devices: cpu and cuda"):
        getattr(a, op)(b)


@pytest.mark.parametrize("op", ["__add__", "__sub__", "__mul__", "__truediv__"])
def test_shapes_that_do_not_broadcast_name_the_op_and_both_shapes(op):
    name = {"__add__": "add", "__sub__": "sub", "__mul__": "mul", "__truediv__": "div"}[op]
    with pytest.raises(ValueError, match=rf"{name}: shapes \(2, 3\) and \(4,\) cannot"):
        getattr(fn.ones(2, 3), op)(fn.ones(4))


@pytest.mark.parametrize("count", [1, 2, 3])
def test_apply_refuses_a_non_tensor_whatever_the_number_of_inputs(count):
    class Plus(Function):
        def forward(self, *arrays):
            return sum(arrays)

        def backward(self, grad):
            return (grad,) * count

    inputs = [fn.ones(2)] * (count - 1) + [np.ones(2)]
    with pytest.raises(TypeError, match="plus: expected a Tensor, got numpy.ndarray"):
        Plus.apply(*inputs)


def test_a_single_input_op_on_each_device(rng):
    x = fn.tensor(rng.standard_normal(3))
    for device in ("cpu", "cuda"):
        np.testing.assert_allclose(x.to(device).exp().numpy(), np.exp(x.numpy()), rtol=1e-6)


# ===================================================================== grad mode
def test_grad_mode_nests_and_restores():
    assert fn.is_grad_enabled()
    with fn.no_grad():
        assert not fn.is_grad_enabled()
        with fn.enable_grad():
            assert fn.is_grad_enabled()
            with fn.no_grad():
                assert not fn.is_grad_enabled()
            assert fn.is_grad_enabled()
        assert not fn.is_grad_enabled()
    assert fn.is_grad_enabled()
    with pytest.raises(KeyError), fn.no_grad():
        raise KeyError("restored on an error too")
    assert fn.is_grad_enabled()


def test_grad_mode_belongs_to_one_thread(rng):
    w = leaf(rng, 3)
    seen = {}

    def other():
        seen["enabled"] = fn.is_grad_enabled()
        seen["records"] = (w * 2).requires_grad

    with fn.no_grad():
        assert not (w * 2).requires_grad
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen == {"enabled": True, "records": True}


# ===================================================================== the backward walk
def test_a_diamond_sums_both_paths_before_the_leaf_is_final(rng):
    x = leaf(rng, 4)
    seen = []
    x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    h = x * 3
    loss = (h * h + h.exp() + x).sum()
    loss.backward()
    xv = x.detach().numpy()
    expected = 18 * xv + 3 * np.exp(3 * xv) + 1
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], expected, rtol=1e-12)


def test_a_branch_that_gets_no_gradient_is_freed_and_its_leaves_left_alone(rng):
    class FirstOnly(Function):
        saves_inputs = saves_output = False

        def forward(self, a, b):
            return a + b

        def backward(self, grad):
            return grad, None

    a, b = leaf(rng, 3), leaf(rng, 3)
    hidden = b * 2  # reached by no gradient: FirstOnly gives b's side None
    out = FirstOnly.apply(a, hidden)
    out.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.ones(3))
    assert b.grad is None
    with pytest.raises(RuntimeError, match="second time"):
        hidden.sum().backward()  # the unreached node was freed all the same


def test_a_backward_that_returns_fewer_gradients_than_inputs(rng):
    class Short(Function):
        saves_inputs = saves_output = False

        def forward(self, a, b, c):
            return a + b + c

        def backward(self, grad):
            return (grad,)

    a, b, c = leaf(rng, 2), leaf(rng, 2), leaf(rng, 2)
    Short.apply(a, b * 1, c).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.ones(2))
    assert b.grad is None and c.grad is None


def test_a_long_chain_walks_without_recursion(rng):
    x = leaf(rng, 2)
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones(2))


def test_the_same_tensor_twice_and_a_repeated_walk(rng):
    a = leaf(rng, 3)
    loss = (a + a).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.full(3, 4.0))
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_an_in_place_change_still_raises_before_any_gradient(rng):
    a, b = leaf(rng, 3), leaf(rng, 3)
    hidden = a * 1
    out = (hidden * b).sum()
    with fn.no_grad():
        hidden += 1
    with pytest.raises(RuntimeError, match="mul: one of the variables"):
        out.backward()
    assert a.grad is None and b.grad is None


def test_a_leaf_root_and_a_given_seed_are_copied(rng):
    x = leaf(rng, 3)
    seed = fn.ones(3, dtype=np.float64)
    x.backward(seed)
    assert not np.shares_memory(x.grad.data, seed.data)
    c = x + x * 0
    c.backward(seed)
    np.testing.assert_array_equal(x.grad.numpy(), np.full(3, 2.0))
    np.testing.assert_array_equal(seed.numpy(), np.ones(3))  # never written through


def test_queue_callback_runs_after_the_walk_and_only_inside_one(rng):
    with pytest.raises(RuntimeError, match="during a backward walk"):
        queue_callback(lambda: None)
    x = leaf(rng, 2)
    ran = []
    x.register_post_accumulate_grad_hook(lambda t: queue_callback(lambda: ran.append(t.grad)))
    (x * 2).sum().backward()
    assert len(ran) == 1 and ran[0] is x.grad


# ===================================================================== filled sum gradients
@pytest.mark.parametrize("shape", [(), (3,), (2, 5), (70, 70)])
@pytest.mark.parametrize("dim", [None, 0, -1])
def test_the_sum_gradient_small_or_large(rng, shape, dim):
    if dim is not None and not shape:
        return
    x = leaf(rng, *shape)
    weights = fn.tensor(rng.standard_normal(shape), dtype=np.float64)
    total = x.sum() if dim is None else x.sum(dim=dim)
    (total * total).sum().backward()
    xv = x.detach().numpy()
    expected = 2 * np.broadcast_to(
        xv.sum() if dim is None else np.expand_dims(xv.sum(axis=dim), dim), xv.shape
    )
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)
    assert x.grad.data.flags.writeable and x.grad.data.flags.c_contiguous
    x.grad = None
    (x * weights).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), weights.numpy())


def test_a_scalar_backward_seeds_ones_of_its_dtype(rng):
    x = leaf(rng, 3, dtype=np.float32)
    loss = (x * 2).sum()
    loss.backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), np.full(3, 2.0, np.float32))
