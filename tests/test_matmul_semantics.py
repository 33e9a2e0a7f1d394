"""matmul with PyTorch's semantics: 1-D operands (vector·vector is 0-d, matrix·vector,
vector·matrix, batched·vector), broadcast batch dimensions, gradients reduced back to each
operand's shape, zero-size operands, integer operands, ``fastnet.matmul``, and the errors.
Forward and backward against PyTorch; float64 gradchecks."""

import numpy as np
import pytest

import fastnet as fn
from fastnet.gradcheck import gradcheck
from numerics import assert_close

torch = pytest.importorskip("torch")

SHAPES = [
    ((5,), (5,)),  # vector · vector -> 0-d
    ((5,), (5, 3)),  # vector · matrix
    ((4, 5), (5,)),  # matrix · vector
    ((2, 4, 5), (5,)),  # batched · vector
    ((5,), (3, 5, 2)),  # vector · batched
    ((4,), (2, 1, 4, 3)),
    ((3, 5), (5, 7)),  # the hot 2-D path
    ((2, 3, 5), (2, 5, 7)),  # the hot same-batch path
    ((2, 3, 3, 5), (5, 7)),  # a batch times a matrix (folded into rows)
    ((3, 5), (2, 5, 7)),  # a matrix times a batch
    ((2, 1, 3, 4), (5, 4, 6)),  # broadcast batch dimensions
    ((1, 3, 4), (5, 4, 2)),
    ((3, 1, 2, 4), (1, 5, 4, 3)),
]


def pair(rng, shape_a, shape_b, dtype):
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    ours = [fn.tensor(v, dtype=dtype, requires_grad=True) for v in (a, b)]
    theirs = [
        torch.tensor(v, dtype=getattr(torch, np.dtype(dtype).name), requires_grad=True)
        for v in (a, b)
    ]
    return ours, theirs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape_a, shape_b", SHAPES)
def test_matmul_matches_pytorch_forward_and_backward(rng, shape_a, shape_b, dtype):
    (a, b), (ta, tb) = pair(rng, shape_a, shape_b, dtype)
    out, expected = a @ b, ta @ tb
    assert out.shape == tuple(expected.shape)
    assert_close(out.numpy(), expected.detach().numpy(), dtype)
    weights = rng.uniform(0.5, 1.5, out.shape)
    (out * fn.tensor(weights, dtype=dtype)).sum().backward()
    (expected * torch.from_numpy(weights).to(expected.dtype)).sum().backward()
    assert_close(a.grad.numpy(), ta.grad.numpy(), dtype, what="grad a")
    assert_close(b.grad.numpy(), tb.grad.numpy(), dtype, what="grad b")


@pytest.mark.parametrize("shape_a, shape_b", SHAPES)
def test_matmul_gradcheck(rng, shape_a, shape_b):
    (a, b), _ = pair(rng, shape_a, shape_b, np.float64)
    assert gradcheck(lambda x, y: x @ y, [a, b])


def test_one_operand_without_gradient(rng):
    (a, b), (ta, tb) = pair(rng, (2, 1, 3, 4), (4,), np.float64)
    b.requires_grad = tb.requires_grad = False
    (a @ b).sum().backward()
    (ta @ tb).sum().backward()
    assert b.grad is None
    assert_close(a.grad.numpy(), ta.grad.numpy(), np.float64)


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [
        ((0,), (0,)),
        ((0, 3), (3,)),
        ((3,), (3, 0)),
        ((4, 0), (0,)),
        ((2, 0, 3), (1, 3, 4)),
        ((0, 1, 2, 3), (5, 3, 2)),
        ((2, 3, 0), (2, 0, 4)),
    ],
)
def test_zero_size_operands(rng, shape_a, shape_b):
    (a, b), (ta, tb) = pair(rng, shape_a, shape_b, np.float32)
    out, expected = a @ b, ta @ tb
    assert out.shape == tuple(expected.shape) and out.dtype == np.float32
    np.testing.assert_array_equal(out.numpy(), expected.detach().numpy())
    out.sum().backward()
    expected.sum().backward()
    assert a.grad.shape == shape_a and b.grad.shape == shape_b
    np.testing.assert_array_equal(a.grad.numpy(), ta.grad.numpy())
    np.testing.assert_array_equal(b.grad.numpy(), tb.grad.numpy())


@pytest.mark.parametrize("shape_a, shape_b", [((2, 3), (3, 4)), ((3,), (3,)), ((2, 1, 3), (3, 4))])
def test_integer_operands_match_pytorch(rng, shape_a, shape_b):
    a, b = rng.integers(-5, 6, shape_a), rng.integers(-5, 6, shape_b)
    out = fn.tensor(a) @ fn.tensor(b)
    expected = torch.from_numpy(a) @ torch.from_numpy(b)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out.numpy(), expected.numpy())


def test_mixed_dtypes_promote_as_pytorch(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal(4)
    out = fn.tensor(a, dtype=np.float32) @ fn.tensor(b, dtype=np.float64)
    assert out.dtype == np.float64 and out.shape == (3,)


def test_top_level_matmul(rng):
    (a, b), (ta, tb) = pair(rng, (2, 4, 5), (5,), np.float64)
    out = fn.matmul(a, b)
    out.sum().backward()
    torch.matmul(ta, tb).sum().backward()
    assert_close(out.numpy(), torch.matmul(ta, tb).detach().numpy(), np.float64)
    assert_close(a.grad.numpy(), ta.grad.numpy(), np.float64)
    with pytest.raises(TypeError, match="matmul: expected a Tensor, got numpy.ndarray"):
        fn.matmul(np.ones((2, 2)), fn.tensor(np.ones((2, 2))))


@pytest.mark.parametrize(
    "shape_a, shape_b, message",
    [
        ((), (3,), r"at least 1 dimension, got shapes \(\) @ \(3,\)"),
        ((3,), (), r"at least 1 dimension, got shapes \(3,\) @ \(\)"),
        ((3,), (4,), r"shapes \(3,\) @ \(4,\): inner dimensions 3 and 4 differ"),
        ((2, 3), (4,), r"shapes \(2, 3\) @ \(4,\): inner dimensions 3 and 4 differ"),
        ((3,), (4, 2), r"shapes \(3,\) @ \(4, 2\): inner dimensions 3 and 4 differ"),
        ((3, 4), (5, 6), r"shapes \(3, 4\) @ \(5, 6\): inner dimensions 4 and 5 differ"),
        ((2, 3, 4), (3, 4, 5), r"shapes \(2, 3, 4\) @ \(3, 4, 5\): batch dimensions"),
        ((2, 2, 3, 4), (3, 4, 5), r"shapes \(2, 2, 3, 4\) @ \(3, 4, 5\): batch dimensions"),
    ],
)
def test_errors_name_both_shapes(shape_a, shape_b, message):
    with pytest.raises(ValueError, match="matmul: (both operands need )?" + message):
        fn.tensor(np.ones(shape_a)) @ fn.tensor(np.ones(shape_b))


@pytest.mark.parametrize(
    "shape_a, shape_b", [((3, 5), (5, 7)), ((2, 3, 5), (2, 5, 7)), ((2, 3, 3, 5), (5, 7))]
)
def test_hot_paths_copy_no_operand(rng, shape_a, shape_b):
    """2-D, same-batch and batch-times-matrix products hand the operands' own arrays to the
    kernel (and save them for backward) without a copy."""
    (a, b), _ = pair(rng, shape_a, shape_b, np.float32)
    node = (a @ b)._ctx
    assert node.a is a.data and node.b is b.data


def test_vector_operands_are_saved_as_views(rng):
    (a, b), _ = pair(rng, (5,), (2, 4, 5), np.float32)
    node = (b @ a)._ctx
    assert np.shares_memory(node.a, b.data) and np.shares_memory(node.b, a.data)


def test_on_the_cuda_device(rng):
    """A batch times a vector reaches the CUDA kernel (in the simulator without a GPU; three
    one-block launches)."""
    (a, b), (ta, tb) = pair(rng, (2, 1, 3, 4), (4,), np.float32)
    a, b = (fn.tensor(t.numpy(), device="cuda", requires_grad=True) for t in (a, b))
    out = a @ b
    assert out.device == "cuda"
    out.sum().backward()
    (ta @ tb).sum().backward()
    assert_close(out.numpy(), (ta @ tb).detach().numpy(), np.float32)
    assert_close(a.grad.numpy(), ta.grad.numpy(), np.float32, what="grad a")
    assert_close(b.grad.numpy(), tb.grad.numpy(), np.float32, what="grad b")
