"""The fastnet.functional ops added or corrected by the PyTorch signature audit (issue 14):
values and gradients against PyTorch (random non-zero inputs, odd shapes, PyTorch's positional
and keyword forms), float64 gradient checks, and PyTorch's errors."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet.gradcheck import gradcheck
from numerics import assert_close

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def parity(ours, theirs, *arrays, tolerance=1e-10, grads=None):
    """ours(*tensors) and theirs(*torch tensors) agree in value and in the gradient of every
    float input (float64; ``grads`` picks which inputs take one)."""
    grads = [a.dtype.kind == "f" for a in arrays] if grads is None else grads
    mine = [
        fn.tensor(a, dtype=a.dtype, requires_grad=g) for a, g in zip(arrays, grads, strict=True)
    ]
    torchs = [torch.tensor(a, requires_grad=g) for a, g in zip(arrays, grads, strict=True)]
    got, expected = ours(*mine), theirs(*torchs)
    assert_close(got.numpy(), expected.detach().numpy(), got.dtype, tolerance)
    upstream = np.random.default_rng(7).uniform(0.5, 1.5, expected.shape)
    got.backward(fn.tensor(upstream, dtype=got.dtype))
    expected.backward(torch.tensor(upstream, dtype=expected.dtype))
    for position, (m, t) in enumerate(zip(mine, torchs, strict=True)):
        if t.requires_grad:
            assert_close(
                m.grad.numpy(), t.grad.numpy(), np.float64, tolerance, f"gradient {position}"
            )


def leaf(rng, *shape, low=-2.0, high=2.0):
    return fn.tensor(rng.uniform(low, high, shape), dtype=np.float64, requires_grad=True)


# ===================================================================== activations
POINTWISE = [
    ("hardtanh", {}),
    ("hardtanh", {"min_val": -0.5, "max_val": 1.5}),
    ("relu6", {}),
    ("threshold", {"threshold": 0.3, "value": -2.0}),
    ("hardshrink", {}),
    ("softshrink", {"lambd": 0.7}),
    ("selu", {}),
    ("celu", {}),
    # an alpha exact in float32: PyTorch's celu backward rounds alpha to float32
    ("celu", {"alpha": 0.375}),
    ("softsign", {}),
    ("tanhshrink", {}),
    ("relu", {}),
    ("leaky_relu", {"negative_slope": 0.2}),
]


@pytest.mark.parametrize(("name", "options"), POINTWISE, ids=[f"{n}{o}" for n, o in POINTWISE])
def test_pointwise_activations_match_pytorch(name, options, rng):
    x = rng.uniform(-8, 8, (3, 5, 7))
    parity(lambda t: getattr(F, name)(t, **options), lambda t: getattr(TF, name)(t, **options), x)


@pytest.mark.parametrize(("name", "options"), POINTWISE, ids=[f"{n}{o}" for n, o in POINTWISE])
def test_pointwise_activations_gradcheck(name, options, rng):
    x = leaf(rng, 4, 5, low=-8, high=8)
    assert gradcheck(lambda t: getattr(F, name)(t, **options), [x])


def test_inplace_activations_write_into_the_input(rng):
    for name in ("relu", "relu6", "hardtanh", "leaky_relu", "selu", "celu", "threshold"):
        data = rng.uniform(-8, 8, (4, 3)).astype(np.float32)
        args = (0.1, 0.5) if name == "threshold" else ()
        x = fn.tensor(data)
        y = getattr(F, name)(x, *args, inplace=True)
        expected = getattr(TF, name)(torch.tensor(data), *args)
        assert y is x
        assert_close(x.numpy(), expected.numpy(), np.float32, 1e-6, name)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        F.relu(fn.tensor(data, requires_grad=True), inplace=True)


@pytest.mark.parametrize("weight_shape", [(1,), (5,)])
def test_prelu_matches_pytorch(weight_shape, rng):
    x, weight = rng.uniform(-3, 3, (2, 5, 3, 4)), rng.uniform(0.1, 0.5, weight_shape)
    parity(F.prelu, TF.prelu, x, weight)
    assert gradcheck(F.prelu, [leaf(rng, 3, 5, 2), leaf(rng, *weight_shape)])
    with pytest.raises(RuntimeError, match="prelu: mismatch"):
        F.prelu(fn.tensor(x), fn.tensor(np.ones(3)))


@pytest.mark.parametrize("dim", [-1, 1, 0])
def test_glu_and_softmin_match_pytorch(dim, rng):
    x = rng.uniform(-3, 3, (4, 6, 2))
    parity(lambda t: F.glu(t, dim), lambda t: TF.glu(t, dim), x)
    parity(lambda t: F.softmin(t, dim), lambda t: TF.softmin(t, dim), x)
    assert gradcheck(lambda t: F.glu(t, dim), [leaf(rng, 2, 4, 2)])
    with pytest.raises(RuntimeError, match="Halving dimension must be even"):
        F.glu(fn.tensor(np.ones((3, 5))))


def test_softmax_takes_pytorchs_positional_dtype(rng):
    x = rng.uniform(-3, 3, (3, 4)).astype(np.float32)
    for op in ("softmax", "log_softmax"):
        got = getattr(F, op)(fn.tensor(x), 1, 3, np.float64)
        expected = getattr(TF, op)(torch.tensor(x), 1, 3, torch.float64)
        assert got.dtype == np.float64
        assert_close(got.numpy(), expected.numpy(), np.float64, 1e-6, op)
    assert F.softmax(input=fn.tensor(x), dim=0).shape == (3, 4)


def test_activation_signatures_follow_pytorch():
    names = {
        "relu": ["input", "inplace"],
        "leaky_relu": ["input", "negative_slope", "inplace"],
        "gelu": ["input", "approximate"],
        "linear": ["input", "weight", "bias"],
        "dropout": ["input", "p", "training", "inplace"],
        "hardtanh": ["input", "min_val", "max_val", "inplace"],
        "layer_norm": ["input", "normalized_shape", "weight", "bias", "eps"],
        "batch_norm": [
            "input",
            "running_mean",
            "running_var",
            "weight",
            "bias",
            "training",
            "momentum",
            "eps",
        ],
    }
    for name, expected in names.items():
        assert list(inspect.signature(getattr(F, name)).parameters) == expected, name


# ===================================================================== dropout
def test_dropout_inplace_and_p_one(rng):
    data = rng.uniform(1, 2, (50, 40))
    x = fn.tensor(data, dtype=np.float64)
    fn.manual_seed(1)
    y = F.dropout(x, 0.4, True, True)
    assert y is x
    kept = x.numpy() != 0
    assert 0.5 < kept.mean() < 0.7
    np.testing.assert_allclose(x.numpy()[kept], data[kept] / 0.6, rtol=1e-12)
    assert not F.dropout(fn.tensor(data), 1.0).numpy().any()
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(fn.tensor(data), -0.1)


@pytest.mark.parametrize(("op", "shape"), [("dropout1d", (6, 40, 5)), ("dropout2d", (6, 40, 3, 4))])
def test_channel_dropout_zeroes_whole_channels(op, shape, rng):
    data = rng.uniform(1, 2, shape)
    fn.manual_seed(2)
    y = getattr(F, op)(fn.tensor(data, dtype=np.float64), 0.5).numpy()
    planes = y.reshape(shape[0], shape[1], -1)
    zero = (planes == 0).all(axis=2)
    kept = (planes != 0).all(axis=2)
    assert (zero | kept).all() and 0.3 < zero.mean() < 0.7
    np.testing.assert_allclose(y[kept], 2 * data[kept], rtol=1e-12)
    x = fn.tensor(data)
    assert getattr(F, op)(x, 0.5, training=False) is x


# ===================================================================== embedding, one_hot
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
def test_embedding_options_match_pytorch(padding_idx, scale_grad_by_freq, rng):
    indices = np.array([[0, 2, 2, 6], [6, 1, 2, 0], [3, 3, 3, 5]])
    weight = rng.uniform(-1, 1, (7, 5))
    parity(
        lambda i, w: F.embedding(i, w, padding_idx, scale_grad_by_freq=scale_grad_by_freq),
        lambda i, w: TF.embedding(i, w, padding_idx, scale_grad_by_freq=scale_grad_by_freq),
        indices,
        weight,
    )


def test_embedding_max_norm_renormalises_looked_up_rows(rng):
    indices = np.array([1, 4, 4, 0])
    weight = rng.uniform(-2, 2, (6, 3))
    ours, theirs = fn.tensor(weight.copy(), dtype=np.float64), torch.tensor(weight.copy())
    got = F.embedding(fn.tensor(indices), ours, max_norm=1.0, norm_type=3.0)
    expected = TF.embedding(torch.tensor(indices), theirs, max_norm=1.0, norm_type=3.0)
    assert_close(got.numpy(), expected.numpy(), np.float64, 1e-12)
    assert_close(ours.numpy(), theirs.numpy(), np.float64, 1e-12, "renormalised table")


def test_embedding_errors(rng):
    weight = fn.tensor(rng.standard_normal((4, 2)))
    with pytest.raises(IndexError, match="index 4 is out of range"):
        F.embedding(np.array([4]), weight)
    with pytest.raises(ValueError, match="padding_idx 5 must be within"):
        F.embedding(np.array([1]), weight, padding_idx=5)


def test_one_hot_matches_pytorch():
    labels = np.array([[0, 3, 1], [2, 2, 0]])
    for classes in (-1, 6):
        got = F.one_hot(fn.tensor(labels), classes)
        expected = TF.one_hot(torch.tensor(labels), classes).numpy()
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got.numpy(), expected)
    with pytest.raises(RuntimeError, match="class values must be in"):
        F.one_hot(fn.tensor(labels), 3)
    with pytest.raises(RuntimeError, match="index tensor"):
        F.one_hot(fn.tensor(np.ones(3)))


# ===================================================================== distances
@pytest.mark.parametrize(("p", "dim"), [(2.0, 1), (1.0, -1), (3.0, 0), (float("inf"), 1)])
def test_normalize_matches_pytorch(p, dim, rng):
    x = rng.uniform(-2, 2, (3, 5, 4))
    parity(lambda t: F.normalize(t, p, dim), lambda t: TF.normalize(t, p, dim), x)
    assert gradcheck(lambda t: F.normalize(t, p, dim), [leaf(rng, 3, 4, 2)])


def test_cosine_similarity_and_pairwise_distance_match_pytorch(rng):
    a, b = rng.uniform(-2, 2, (4, 6, 3)), rng.uniform(-2, 2, (1, 6, 3))  # broadcast
    parity(F.cosine_similarity, TF.cosine_similarity, a, b)
    parity(
        lambda x, y: F.cosine_similarity(x, y, dim=-1),
        lambda x, y: TF.cosine_similarity(x, y, dim=-1),
        a,
        b,
    )
    for p, keepdim in ((2.0, False), (1.0, True), (3.0, False)):
        parity(
            lambda x, y, p=p, keepdim=keepdim: F.pairwise_distance(x, y, p, keepdim=keepdim),
            lambda x, y, p=p, keepdim=keepdim: TF.pairwise_distance(x, y, p, keepdim=keepdim),
            a,
            b,
        )
    assert gradcheck(F.cosine_similarity, [leaf(rng, 3, 4), leaf(rng, 3, 4)])
    assert gradcheck(F.pairwise_distance, [leaf(rng, 3, 4), leaf(rng, 3, 4)])


# ===================================================================== normalisation
@pytest.mark.parametrize("affine", [False, True])
def test_group_norm_matches_pytorch(affine, rng):
    x = rng.uniform(-2, 2, (3, 6, 5, 3))
    params = (rng.uniform(0.5, 1.5, 6), rng.uniform(-1, 1, 6)) if affine else ()
    if affine:
        parity(
            lambda t, w, b: F.group_norm(t, 3, w, b),
            lambda t, w, b: TF.group_norm(t, 3, w, b),
            x,
            *params,
        )
    else:
        parity(lambda t: F.group_norm(t, 2), lambda t: TF.group_norm(t, 2), x)
    assert gradcheck(
        lambda t, w, b: F.group_norm(t, 2, w, b),
        [leaf(rng, 2, 4, 3), leaf(rng, 4), leaf(rng, 4)],
    )
    with pytest.raises(RuntimeError, match="divisible by num_groups"):
        F.group_norm(fn.tensor(x), 4)


def test_instance_norm_matches_pytorch_and_updates_running_statistics(rng):
    x = rng.uniform(-2, 2, (3, 4, 5, 6))
    weight, bias = rng.uniform(0.5, 1.5, 4), rng.uniform(-1, 1, 4)
    parity(
        lambda t, w, b: F.instance_norm(t, weight=w, bias=b),
        lambda t, w, b: TF.instance_norm(t, weight=w, bias=b),
        x,
        weight,
        bias,
    )
    ours = [fn.tensor(np.zeros(4), dtype=np.float64), fn.tensor(np.ones(4), dtype=np.float64)]
    theirs = [torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)]
    F.instance_norm(fn.tensor(x, dtype=np.float64), *ours, momentum=0.3)
    TF.instance_norm(torch.tensor(x), *theirs, momentum=0.3)
    for mine, reference in zip(ours, theirs, strict=True):
        assert_close(mine.numpy(), reference.numpy(), np.float64, 1e-12, "running statistics")
    got = F.instance_norm(fn.tensor(x, dtype=np.float64), *ours, use_input_stats=False)
    expected = TF.instance_norm(torch.tensor(x), *theirs, use_input_stats=False)
    assert_close(got.numpy(), expected.numpy(), np.float64, 1e-12)


@pytest.mark.parametrize("shape", [(5,), (3, 5)])
def test_rms_norm_matches_pytorch(shape, rng):
    x, weight = rng.uniform(-2, 2, (2, 3, 5)), rng.uniform(0.5, 1.5, shape)
    parity(lambda t, w: F.rms_norm(t, shape, w), lambda t, w: TF.rms_norm(t, shape, w), x, weight)
    parity(lambda t: F.rms_norm(t, shape, eps=0.1), lambda t: TF.rms_norm(t, shape, eps=0.1), x)
    assert gradcheck(lambda t, w: F.rms_norm(t, shape, w), [leaf(rng, 2, 3, 5), leaf(rng, *shape)])


# ===================================================================== pooling
@pytest.mark.parametrize("output_size", [(3, 2), (4, 5), 1, (None, 3), (2, 7)])
def test_adaptive_max_pool2d_matches_pytorch(output_size, rng):
    x = rng.standard_normal((2, 3, 8, 7))
    parity(
        lambda t: F.adaptive_max_pool2d(t, output_size),
        lambda t: TF.adaptive_max_pool2d(t, output_size),
        x,
    )
    _, got = F.adaptive_max_pool2d(fn.tensor(x), output_size, return_indices=True)
    _, expected = TF.adaptive_max_pool2d(torch.tensor(x), output_size, return_indices=True)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    unbatched = F.adaptive_max_pool2d(fn.tensor(x[0], dtype=np.float64), output_size).numpy()
    np.testing.assert_array_equal(
        unbatched, TF.adaptive_max_pool2d(torch.tensor(x[0]), output_size).numpy()
    )


def test_adaptive_max_pool2d_gradcheck(rng):
    x = leaf(rng, 1, 2, 5, 4)
    assert gradcheck(lambda t: F.adaptive_max_pool2d(t, (3, 3)), [x])
    assert gradcheck(lambda t: F.adaptive_avg_pool2d(t, (None, 3)), [x])


def test_one_dimensional_pools_match_pytorch(rng):
    x = rng.standard_normal((2, 3, 11))
    cases = [
        ("max_pool1d", (3,), {}),
        ("max_pool1d", (3, 2, 1), {"ceil_mode": True}),
        ("avg_pool1d", (4, 3, 2), {"count_include_pad": False}),
        ("avg_pool1d", (3,), {"ceil_mode": True}),
        ("adaptive_avg_pool1d", (4,), {}),
        ("adaptive_max_pool1d", (4,), {}),
    ]
    for name, args, options in cases:

        def ours(t, name=name, args=args, options=options):
            return getattr(F, name)(t, *args, **options)

        def theirs(t, name=name, args=args, options=options):
            return getattr(TF, name)(t, *args, **options)

        parity(ours, theirs, x)
        parity(ours, theirs, x[0])
    got = F.max_pool1d(fn.tensor(x), 3, 2, return_indices=True)[1].numpy()
    np.testing.assert_array_equal(
        got, TF.max_pool1d(torch.tensor(x), 3, 2, return_indices=True)[1].numpy()
    )


# ===================================================================== unfold, fold, pixel shuffle
WINDOWS = [
    {"kernel_size": 3},
    {"kernel_size": (2, 3), "dilation": (2, 1), "padding": 1, "stride": (1, 2)},
    {"kernel_size": 2, "stride": 2},
]


@pytest.mark.parametrize("window", WINDOWS)
def test_unfold_and_fold_match_pytorch(window, rng):
    x = rng.standard_normal((2, 3, 7, 6))
    parity(lambda t: F.unfold(t, **window), lambda t: TF.unfold(t, **window), x)
    parity(lambda t: F.unfold(t, **window), lambda t: TF.unfold(t, **window), x[0])
    blocks = TF.unfold(torch.tensor(x), **window).numpy()
    parity(lambda t: F.fold(t, (7, 6), **window), lambda t: TF.fold(t, (7, 6), **window), blocks)
    assert gradcheck(lambda t: F.unfold(t, **window), [leaf(rng, 1, 2, 5, 4)])
    small = TF.unfold(torch.ones(1, 2, 5, 4), **window).shape
    assert gradcheck(lambda t: F.fold(t, (5, 4), **window), [leaf(rng, *small)])


def test_fold_errors():
    with pytest.raises(RuntimeError, match="divisible by the product of kernel_size"):
        F.fold(fn.tensor(np.ones((1, 5, 4))), (3, 3), 2)
    with pytest.raises(RuntimeError, match="number of sliding blocks"):
        F.fold(fn.tensor(np.ones((1, 4, 5))), (3, 3), 2)


def test_pixel_shuffle_matches_pytorch(rng):
    x = rng.standard_normal((2, 1, 12, 3, 5))
    parity(lambda t: F.pixel_shuffle(t, 2), lambda t: TF.pixel_shuffle(t, 2), x)
    parity(lambda t: F.pixel_shuffle(t, 2), lambda t: TF.pixel_shuffle(t, 2), x[0, 0])
    y = rng.standard_normal((2, 3, 6, 9))
    parity(lambda t: F.pixel_unshuffle(t, 3), lambda t: TF.pixel_unshuffle(t, 3), y)
    with pytest.raises(RuntimeError, match="divisible by r"):
        F.pixel_shuffle(fn.tensor(np.ones((1, 5, 2, 2))), 2)


# ===================================================================== attention
@pytest.mark.parametrize(("queries", "keys"), [(3, 5), (5, 3), (4, 4)])
def test_sdpa_is_causal_aligns_top_left_as_pytorch(queries, keys, rng):
    q, k, v = (rng.standard_normal((2, 3, n, 4)) for n in (queries, keys, keys))
    parity(
        lambda *t: F.scaled_dot_product_attention(*t, is_causal=True),
        lambda *t: TF.scaled_dot_product_attention(*t, is_causal=True),
        q,
        k,
        v,
    )


def test_sdpa_takes_scale_and_grouped_query_heads(rng):
    q, k, v = (
        rng.standard_normal((2, 6, 5, 4)),
        rng.standard_normal((2, 2, 7, 4)),
        rng.standard_normal((2, 2, 7, 3)),
    )
    parity(
        lambda *t: F.scaled_dot_product_attention(*t, scale=0.3, enable_gqa=True),
        lambda *t: TF.scaled_dot_product_attention(*t, scale=0.3, enable_gqa=True),
        q,
        k,
        v,
    )
    mask = rng.random((5, 7)) < 0.7
    mask[:, 0] = True
    parity(
        lambda *t: F.scaled_dot_product_attention(*t, mask, 0.0, False, 0.5),
        lambda *t: TF.scaled_dot_product_attention(*t, torch.tensor(mask), 0.0, False, scale=0.5),
        q[:, :2],
        k,
        v,
    )
