"""The attention ops of fastnet.functional (kernel softmax, layer_norm, embedding,
scaled_dot_product_attention): gradients against finite differences (float64), values against
float64 NumPy written from the definitions, masks, odd sizes, large magnitudes, errors."""

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet.gradcheck import gradcheck
from numerics import relative_error


def leaf(rng, *shape, scale=1.0):
    return fn.tensor(rng.standard_normal(shape) * scale, dtype=np.float64, requires_grad=True)


def numpy_softmax(x, axis=-1):
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def numpy_attention(q, k, v, additive_mask=0.0):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]) + additive_mask
    return numpy_softmax(scores) @ v


# ===================================================================== softmax
def test_functional_softmax_is_the_kernel_one():
    from fastnet.functional import activations

    assert F.softmax is activations.softmax
    assert F.log_softmax is activations.log_softmax


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_gradients_and_values(axis, rng):
    x = leaf(rng, 3, 13, 5)
    assert gradcheck(lambda x: F.softmax(x, axis=axis), [x])
    np.testing.assert_allclose(
        F.softmax(x, axis=axis).numpy(), numpy_softmax(x.numpy(), axis), rtol=1e-12, atol=1e-15
    )


def test_softmax_float_mask_with_a_fully_masked_row(rng):
    x = leaf(rng, 2, 4, 7)
    mask = rng.standard_normal((4, 7))
    mask[1, [0, 3]] = -np.inf
    mask[2, :] = -np.inf  # every key hidden: that row attends to nothing
    assert gradcheck(lambda x: F.softmax(x, mask=mask), [x])
    got = F.softmax(x, mask=mask).numpy()
    assert np.all(got[:, 2] == 0.0)
    assert np.all(got[:, 1, [0, 3]] == 0.0)
    live = [0, 1, 3]
    np.testing.assert_allclose(
        got[:, live], numpy_softmax(x.numpy()[:, live] + mask[live]), rtol=1e-12, atol=1e-15
    )
    x.grad = None
    F.softmax(x, mask=mask).sum().backward()
    assert np.all(x.grad.numpy()[:, 2] == 0.0)


def test_softmax_boolean_mask_keeps_true_columns(rng):
    x = rng.standard_normal((2, 3, 6))
    keep = rng.random((2, 1, 6)) < 0.6
    keep[:, :, 0] = True
    got = F.softmax(fn.tensor(x, dtype=np.float64), mask=keep).numpy()
    expected = numpy_softmax(np.where(keep, x, -np.inf))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("queries,keys", [(13, 13), (5, 9)])
def test_softmax_causal(queries, keys, rng):
    x = leaf(rng, 2, queries, keys)
    assert gradcheck(lambda x: F.softmax(x, causal=True), [x])
    # query q sees keys c <= q + keys - queries (bottom-right aligned; the lower triangle when
    # square)
    visible = np.arange(keys)[None, :] <= np.arange(queries)[:, None] + keys - queries
    expected = numpy_softmax(np.where(visible, x.numpy(), -np.inf))
    np.testing.assert_allclose(F.softmax(x, causal=True).numpy(), expected, rtol=1e-12, atol=1e-15)


def test_softmax_large_magnitudes_in_float32(rng):
    x = (rng.standard_normal((5, 13)) * 1e4).astype(np.float32)
    got = F.softmax(fn.tensor(x)).numpy()
    assert np.isfinite(got).all()
    assert relative_error(got, numpy_softmax(x.astype(np.float64))) < 1e-5


def test_softmax_errors(rng):
    x = fn.tensor(rng.standard_normal((2, 3, 4)))
    with pytest.raises(
        ValueError, match=r"mask of shape \(5,\) does not broadcast to input of shape \(2, 3, 4\)"
    ):
        F.softmax(x, mask=np.zeros(5))
    with pytest.raises(ValueError, match="causal=True needs axis -1"):
        F.softmax(x, axis=1, causal=True)
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        F.softmax(x, axis=3)
    with pytest.raises(TypeError, match="mask must be boolean .* or float"):
        F.softmax(x, mask=np.zeros(4, dtype=np.int64))


# ===================================================================== layer norm
def numpy_layer_norm(x, width, weight, bias, eps=1e-5):
    rows = x.reshape(-1, width)
    normalised = (rows - rows.mean(1, keepdims=True)) / np.sqrt(rows.var(1, keepdims=True) + eps)
    return (normalised * weight.reshape(-1) + bias.reshape(-1)).reshape(x.shape)


@pytest.mark.parametrize("normalized_shape", [(7,), (3, 5)])
def test_layer_norm_gradients_and_values(normalized_shape, rng):
    x = leaf(rng, 2, 3, *normalized_shape, scale=3.0)
    weight, bias = leaf(rng, *normalized_shape), leaf(rng, *normalized_shape)
    assert gradcheck(lambda x, w, b: F.layer_norm(x, normalized_shape, w, b), [x, weight, bias])
    expected = numpy_layer_norm(
        x.numpy(), int(np.prod(normalized_shape)), weight.numpy(), bias.numpy()
    )
    np.testing.assert_allclose(
        F.layer_norm(x, normalized_shape, weight, bias).numpy(), expected, rtol=1e-10, atol=1e-12
    )


def test_layer_norm_without_affine_and_with_weight_only(rng):
    x = leaf(rng, 4, 13)
    weight = leaf(rng, 13)
    assert gradcheck(lambda x: F.layer_norm(x, 13), [x])
    assert gradcheck(lambda x, w: F.layer_norm(x, 13, w), [x, weight])
    expected = numpy_layer_norm(x.numpy(), 13, np.ones(13), np.zeros(13))
    np.testing.assert_allclose(F.layer_norm(x, 13).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_layer_norm_large_offset_in_float32(rng):
    x = (1e4 + rng.standard_normal((6, 24))).astype(np.float32)
    got = F.layer_norm(fn.tensor(x), 24).numpy()
    expected = numpy_layer_norm(x.astype(np.float64), 24, np.ones(24), np.zeros(24))
    assert (
        np.abs(got - expected).max() < 1e-2
    )  # float32 x: each value only carries ~1e4 * 6e-8 absolute precision


def test_layer_norm_errors(rng):
    x = fn.tensor(rng.standard_normal((2, 6)))
    with pytest.raises(
        ValueError,
        match=r"normalized_shape \(5,\) does not match the trailing axes of input "
        r"of shape \(2, 6\)",
    ):
        F.layer_norm(x, 5)
    with pytest.raises(
        ValueError, match=r"weight of shape \(5,\) does not match normalized_shape \(6,\)"
    ):
        F.layer_norm(x, 6, fn.tensor(np.ones(5)))


# ===================================================================== embedding
def test_embedding_gradients_with_repeated_indices(rng):
    weight = leaf(rng, 7, 5)
    indices = np.array([[1, 3, 1], [6, 1, 0]])
    assert gradcheck(lambda w: F.embedding(indices, w), [weight])
    output = F.embedding(fn.tensor(indices), weight)
    np.testing.assert_array_equal(output.numpy(), weight.numpy()[indices])
    weight.grad = None
    output.sum().backward()
    counts = np.bincount(indices.ravel(), minlength=7)[:, None] * np.ones((1, 5))
    np.testing.assert_array_equal(weight.grad.numpy(), counts)  # row 1 picked three times gets 3


def test_embedding_errors(rng):
    weight = fn.tensor(rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match="index 4 is out of range for 4 embeddings"):
        F.embedding(np.array([0, 4]), weight)
    with pytest.raises(ValueError, match="index -1 is out of range"):
        F.embedding(np.array([-1, 2]), weight)
    with pytest.raises(TypeError, match="indices must be integers"):
        F.embedding(np.array([0.0, 1.0]), weight)


# ===================================================================== attention
@pytest.mark.parametrize("mask_kind", [None, "bool", "float", "causal"])
def test_attention_gradients_end_to_end(mask_kind, rng):
    q, k, v = leaf(rng, 2, 3, 5, 4), leaf(rng, 2, 3, 6, 4), leaf(rng, 2, 3, 6, 3)
    mask, causal = None, mask_kind == "causal"
    if mask_kind == "bool":
        mask = rng.random((2, 1, 5, 6)) < 0.7
        mask[..., 0] = True
    elif mask_kind == "float":
        mask = rng.standard_normal((5, 6))
    assert gradcheck(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask, is_causal=causal), [q, k, v]
    )


@pytest.mark.parametrize("heads", [1, 3])
def test_attention_odd_sizes_match_the_definition(heads, rng):
    # sequence 13 against 11 keys, head dim 24, float32 through the kernels
    q, k, v = (
        rng.standard_normal((2, heads, length, 24)).astype(np.float32) for length in (13, 11, 11)
    )
    got = F.scaled_dot_product_attention(fn.tensor(q), fn.tensor(k), fn.tensor(v)).numpy()
    expected = numpy_attention(*(a.astype(np.float64) for a in (q, k, v)))
    assert got.shape == (2, heads, 13, 24)
    assert relative_error(got, expected) < 1e-5


def test_attention_large_magnitude_scores(rng):
    q, k, v = (rng.standard_normal((1, 2, 13, 24)) * scale for scale in (100.0, 100.0, 1.0))
    got = F.scaled_dot_product_attention(
        *(fn.tensor(a, dtype=np.float32) for a in (q, k, v))
    ).numpy()
    assert np.isfinite(got).all()
    expected = numpy_attention(
        q.astype(np.float32).astype(np.float64), k.astype(np.float32).astype(np.float64), v
    )
    # scores of order 1e4 carry float32 rounding of ~1e-3 absolute into the exponent
    assert relative_error(got, expected) < 1e-2


def test_attention_dropout_only_in_training(rng):
    q, k, v = (fn.tensor(rng.standard_normal((2, 2, 9, 8))) for _ in range(3))
    plain = F.scaled_dot_product_attention(q, k, v).numpy()
    np.testing.assert_array_equal(
        F.scaled_dot_product_attention(q, k, v, dropout_p=0.5, training=False).numpy(), plain
    )
    fn.manual_seed(3)
    dropped = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy()
    fn.manual_seed(3)
    np.testing.assert_array_equal(
        F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy(), dropped
    )
    assert np.abs(dropped - plain).max() > 0.1


def test_attention_gradients_through_dropout(rng):
    q, k, v = leaf(rng, 1, 2, 4, 3), leaf(rng, 1, 2, 5, 3), leaf(rng, 1, 2, 5, 3)

    def attend(q, k, v):
        fn.manual_seed(11)  # the same dropout mask on every evaluation
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.3)

    assert gradcheck(attend, [q, k, v])


def test_attention_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    q, k, v = (rng.standard_normal((2, 3, length, 24)) for length in (13, 7, 7))
    keep = rng.random((13, 7)) < 0.7
    keep[:, 0] = True
    got = F.scaled_dot_product_attention(
        *(fn.tensor(a, dtype=np.float64) for a in (q, k, v)), attn_mask=keep
    ).numpy()
    expected = torch.nn.functional.scaled_dot_product_attention(
        *(torch.from_numpy(a) for a in (q, k, v)), attn_mask=torch.from_numpy(keep)
    ).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_attention_shape_errors(rng):
    q = fn.tensor(rng.standard_normal((2, 5, 4)))
    with pytest.raises(
        ValueError, match=r"query of shape \(2, 5, 4\) and key of shape \(2, 5, 3\)"
    ):
        F.scaled_dot_product_attention(
            q, fn.tensor(np.ones((2, 5, 3))), fn.tensor(np.ones((2, 5, 3)))
        )
    with pytest.raises(
        ValueError,
        match=r"value of shape \(2, 6, 4\) must be \(\.\.\., S, Dv\) for key of shape \(2, 5, 4\)",
    ):
        F.scaled_dot_product_attention(q, q, fn.tensor(np.ones((2, 6, 4))))


def test_a_float_mask_that_requires_grad_gets_pytorchs_gradient(rng):
    """A learned additive attention bias (a float mask with requires_grad) trains: its gradient
    is the scores' gradient summed over the axes it broadcast along, as in PyTorch."""
    torch = pytest.importorskip("torch")
    q, k, v = (rng.standard_normal((2, 3, 5, 4)).astype(np.float32) for _ in range(3))
    bias = rng.standard_normal((5, 5)).astype(np.float32)
    upstream = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    ours = [fn.tensor(a, requires_grad=True) for a in (q, k, v, bias)]
    F.scaled_dot_product_attention(*ours[:3], attn_mask=ours[3]).backward(fn.tensor(upstream))
    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v, bias)]
    torch.nn.functional.scaled_dot_product_attention(*theirs[:3], attn_mask=theirs[3]).backward(
        torch.from_numpy(upstream)
    )
    for name, mine, expected in zip("qkv", ours, theirs, strict=False):
        assert relative_error(mine.grad.data, expected.grad.numpy()) < 1e-5, name
    assert ours[3].grad is not None, "the mask got no gradient"
    assert relative_error(ours[3].grad.data, theirs[3].grad.numpy()) < 1e-5


def test_a_trainable_float_mask_passes_a_float64_gradient_check(rng):
    scores = fn.tensor(rng.standard_normal((3, 4, 6)), dtype=np.float64, requires_grad=True)
    bias = fn.tensor(rng.standard_normal((4, 6)), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda s, m: F.softmax(s, mask=m), [scores, bias])
