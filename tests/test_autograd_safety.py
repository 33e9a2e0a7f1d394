"""An autograd that refuses to be wrong (issue 14 defects): backward through a freed graph raises,
in-place changes to saved tensors raise naming the op (version counters), and a non-Tensor input
gets a TypeError naming the op and the type."""

import numpy as np
import pytest

import fastnet as fn
from fastnet import models


def leaf(rng, *shape):
    return fn.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True)


# ===================================================================== 6. freed graphs
def test_second_backward_through_a_freed_graph_raises(rng):
    w = leaf(rng, 3)
    loss = (w * w).sum()
    loss.backward()
    first = w.grad.numpy().copy()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()
    np.testing.assert_array_equal(w.grad.numpy(), first)  # nothing accumulated before raising


def test_a_new_loss_sharing_a_freed_part_raises(rng):
    w = leaf(rng, 4)
    hidden = (w * 2).exp()
    hidden.sum().backward()
    with pytest.raises(RuntimeError, match="exp: trying to backward through the graph"):
        (hidden * 3).sum().backward()


def test_retain_graph_keeps_the_graph_for_one_more_walk(rng):
    w = leaf(rng, 3)
    values = w.numpy().copy()
    hidden = (w * w).exp()
    loss = hidden.sum()
    loss.backward(retain_graph=True)
    (hidden * 2).sum().backward(retain_graph=True)  # the shared part is still there
    expected = 3 * np.exp(values**2) * 2 * values
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-12)
    loss.backward()  # retained: this walk works, and frees it
    np.testing.assert_allclose(w.grad.numpy(), expected + np.exp(values**2) * 2 * values)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_freeing_releases_the_saved_arrays(rng):
    w = leaf(rng, 3)
    product = w * w
    product.sum().backward()
    assert not hasattr(product._ctx, "a") and not hasattr(product._ctx, "inputs")


# ===================================================================== 7. version counters
def test_in_place_change_of_a_saved_input_raises_naming_the_op(rng):
    w = leaf(rng, 3)
    x = fn.tensor(rng.standard_normal(3), dtype=np.float64)
    loss = (w * x).sum()
    x += 1.0
    assert x._version == 1
    with pytest.raises(RuntimeError, match=r"mul: .*modified by an inplace operation.*version 1; "):
        loss.backward()


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.__isub__(1.0),
        lambda t: t.__imul__(2.0),
        lambda t: t.__itruediv__(2.0),
        lambda t: t.__setitem__(0, 5.0),
        lambda t: t.fill_(1.0),
        lambda t: t.zero_(),
        lambda t: t.copy_(np.ones(3)),
    ],
)
def test_every_in_place_operation_bumps_the_version(rng, change):
    x = fn.tensor(rng.standard_normal(3), dtype=np.float64)
    before = x.numpy().copy()
    result = change(x)
    assert x._version == 1 and (result is None or result is x)
    assert not np.array_equal(x.numpy(), before)


def test_in_place_change_of_a_parameter_under_no_grad_raises_in_linear(rng):
    layer = fn.nn.Linear(4, 3)
    loss = layer(fn.tensor(rng.standard_normal((2, 4)))).sum()
    with fn.no_grad():
        layer.weight -= 0.1
    with pytest.raises(RuntimeError, match=r"linear: .*is at version 1; expected version 0"):
        loss.backward()


def test_optimizer_step_between_forward_and_backward_raises(rng):
    layer = fn.nn.Linear(4, 3)
    optimizer = fn.optim.SGD(layer.parameters(), lr=0.1)
    layer(fn.tensor(rng.standard_normal((2, 4)))).sum().backward()
    loss = layer(fn.tensor(rng.standard_normal((2, 4)))).sum()
    optimizer.step()
    with pytest.raises(RuntimeError, match="linear: .*modified by an inplace operation"):
        loss.backward()


def test_in_place_change_of_a_saved_output_raises(rng):
    w = leaf(rng, 3)
    out = w.exp()
    with fn.no_grad():
        out *= 2.0
    with pytest.raises(RuntimeError, match="exp: .*its output"):
        out.sum().backward()


def test_a_change_backward_does_not_read_is_allowed(rng):
    w = leaf(rng, 3)
    x = fn.tensor(rng.standard_normal(3), dtype=np.float64)
    loss = (w + x).sum()  # add saves nothing
    x += 1.0
    loss.backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.ones(3))


def test_in_place_on_a_leaf_that_requires_grad_raises(rng):
    w = leaf(rng, 3)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w += 1.0
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w[0] = 1.0
    with fn.no_grad():
        w += 1.0  # allowed, as in PyTorch
    assert w._version == 1


def test_in_place_inside_a_graph_stays_correct(rng):
    """Inside a graph, `h += x` is recorded out of place: the gradient is the chain rule's."""
    w = leaf(rng, 3)
    h = w * 2
    h += w * w
    h.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 + 2 * w.numpy(), rtol=1e-12)


def test_in_place_refuses_a_wider_category():
    counts = fn.tensor([1, 2, 3])
    with pytest.raises(RuntimeError, match="can't be cast"):
        counts += 1.5
    counts += 2
    np.testing.assert_array_equal(counts.numpy(), [3, 4, 5])


# ===================================================================== 8. non-Tensor inputs
def test_a_numpy_array_into_a_model_raises_a_type_error(rng):
    images = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    with pytest.raises(TypeError, match=r"conv2d: expected a Tensor, got numpy.ndarray; wrap it"):
        models.mnist_cnn()(images)
    with pytest.raises(TypeError, match=r"linear: expected a Tensor, got numpy.ndarray; wrap it"):
        fn.nn.Linear(784, 3)(images.reshape(2, 784))


def test_linear_names_a_list_input(rng):
    layer = fn.nn.Linear(2, 3)
    with pytest.raises(TypeError, match="linear: expected a Tensor, got list"):
        layer([[1.0, 2.0]])


def test_devices_mismatch_message_still_names_both(rng):
    a = fn.tensor(rng.standard_normal(3))
    with pytest.raises(RuntimeError, match="different devices: cpu and cuda"):
        fn.functional.linear(a.reshape(1, 3), fn.tensor(np.ones((2, 3))).to("cuda"))


def test_a_numpy_array_into_an_mlp_raises_at_flatten(rng):
    """The MLP starts with Flatten, which a NumPy array would answer with its own flatten."""
    images = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    with pytest.raises(TypeError, match=r"flatten: expected a Tensor, got numpy.ndarray; wrap it"):
        models.mlp()(images)


def test_inference_mode_records_no_graph_and_restores_grad_mode(rng):
    w = fn.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    x = fn.tensor(rng.standard_normal((2, 4)))
    with fn.inference_mode():
        assert not fn.is_grad_enabled()
        y = x @ w.T
        assert not y.requires_grad
    assert fn.is_grad_enabled()

    @fn.inference_mode()
    def predict(batch):
        return batch @ w.T

    assert not predict(x).requires_grad and fn.is_grad_enabled()
