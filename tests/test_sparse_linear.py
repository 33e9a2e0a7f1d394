"""SparseLinear against the masked dense Linear, its gradients, its state, and sparsify's choice
(with an injected timer: no real timings in tests)."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet as fn
from fastnet import nn
from fastnet.functional.sparse_dense import csr_from_dense, csr_linear
from fastnet.nn.sparse_linear import SparseLinear, sparsify
from fastnet.prune import Pruner


def pruned_linear(rng, in_features, out_features, sparsity, bias=True):
    layer = nn.Linear(in_features, out_features, bias=bias)
    Pruner(nn.Sequential(layer)).prune(sparsity)
    return layer


@pytest.mark.parametrize("batch", [(1,), (5,), (3, 2)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_masked_dense_linear(rng, batch, bias):
    dense = pruned_linear(rng, 37, 11, 0.9, bias)
    sparse = SparseLinear.from_linear(dense)
    weight = dense.weight.numpy()
    assert sparse.nnz == np.count_nonzero(weight)
    assert sparse.density == pytest.approx(np.count_nonzero(weight) / weight.size)
    np.testing.assert_array_equal(sparse.to_dense(), weight)
    x = fn.tensor(rng.uniform(-1, 1, batch + (37,)).astype(np.float32))
    np.testing.assert_allclose(sparse(x).numpy(), dense(x).numpy(), rtol=1e-5, atol=1e-6)


def test_gradients_match_dense(rng):
    dense = pruned_linear(rng, 23, 7, 0.8)
    sparse = SparseLinear.from_linear(dense)
    host = rng.uniform(-1, 1, (4, 23)).astype(np.float32)
    upstream = rng.uniform(-1, 1, (4, 7)).astype(np.float32)
    grads = []
    for layer in (dense, sparse):
        layer.zero_grad()
        x = fn.tensor(host, requires_grad=True)
        (layer(x) * fn.tensor(upstream)).sum().backward()
        grads.append((x.grad.numpy(), layer.bias.grad.numpy()))
    for got, wanted in zip(grads[1], grads[0], strict=True):
        np.testing.assert_allclose(got, wanted, rtol=1e-5, atol=1e-6)
    assert [name for name, _ in sparse.named_parameters()] == ["bias"]


def test_gradcheck_in_float64(rng):
    w = rng.uniform(-1, 1, (5, 6))
    w[rng.random((5, 6)) < 0.5] = 0
    layer = SparseLinear(6, 5, *csr_from_dense(w), bias=rng.uniform(-1, 1, 5)).double()
    x = fn.tensor(rng.uniform(-1, 1, (3, 6)), dtype=np.float64, requires_grad=True)
    (layer(x) ** 2).sum().backward()
    eps, host = 1e-6, x.numpy().copy()
    numeric = np.zeros_like(host)
    for index in np.ndindex(host.shape):
        for sign in (1, -1):
            shifted = host.copy()
            shifted[index] += sign * eps
            value = (layer(fn.tensor(shifted, dtype=np.float64)) ** 2).sum().item()
            numeric[index] += sign * value / (2 * eps)
    np.testing.assert_allclose(x.grad.numpy(), numeric, rtol=1e-6, atol=1e-8)


def test_inference_only_without_transpose(rng):
    indptr, indices, values = csr_from_dense(np.eye(3, dtype=np.float32))
    x = fn.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    y = csr_linear(x, indptr, indices, values)
    np.testing.assert_array_equal(y.numpy(), np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="csr_linear: a gradient w.r.t. the input needs"):
        y.sum().backward()


def test_state_dict_round_trip(rng):
    dense = pruned_linear(rng, 9, 4, 0.7)
    sparse = SparseLinear.from_linear(dense)
    state = sparse.state_dict()
    assert set(state) == {
        "bias",
        "indptr",
        "indices",
        "values",
        "t_indptr",
        "t_indices",
        "t_values",
    }
    assert state["indices"].dtype == np.int32 and state["indptr"].dtype == np.int64
    other = SparseLinear.from_linear(dense)
    other.values.data[:] = 0
    other.load_state_dict(state)
    x = fn.tensor(rng.uniform(-1, 1, (2, 9)).astype(np.float32))
    np.testing.assert_array_equal(other(x).numpy(), sparse(x).numpy())


def test_refuses_bad_csr():
    with pytest.raises(ValueError, match="csr_matmul: indices must lie in"):
        SparseLinear(3, 2, [0, 1, 2], np.array([0, 3], np.int32), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="indptr must have out_features \\+ 1 = 4"):
        SparseLinear(3, 3, [0, 1, 2], np.array([0, 1], np.int32), np.ones(2, np.float32))


def model_with_two_layers(rng):
    model = nn.Sequential(
        nn.Flatten(), nn.Sequential(nn.Linear(64, 32), nn.ReLU()), nn.Linear(32, 3)
    )
    big = model[1][0]
    Pruner(nn.Sequential(big)).prune(0.95)
    return model


def test_sparsify_swaps_a_faster_sparse_layer_and_leaves_a_dense_one(rng):
    model = model_with_two_layers(rng)
    x = fn.tensor(rng.uniform(-1, 1, (4, 64)).astype(np.float32))
    before = model(x).numpy()
    big = model[1][0]

    calls = []

    def recording_timer(function):
        result = function()
        calls.append(result.shape[-1])
        # dense first, then sparse, for each layer; the 95%-sparse layer's CSR is 10x faster
        if result.shape[-1] == 32:
            return 1.0 if len(calls) % 2 else 0.1
        return 1.0 if len(calls) % 2 else 2.0

    rows = sparsify(model, batch_size=8, timer=recording_timer)
    assert [row["name"] for row in rows] == ["1.0", "2"]
    assert rows[0]["chosen"] and not rows[1]["chosen"]
    assert rows[0]["density"] == pytest.approx(np.count_nonzero(big.weight.numpy()) / (64 * 32))
    assert rows[0]["speedup"] == pytest.approx(10.0)
    assert isinstance(model[1][0], SparseLinear) and isinstance(model[2], nn.Linear)
    np.testing.assert_allclose(model(x).numpy(), before, rtol=1e-5, atol=1e-6)


def test_sparsify_respects_min_speedup(rng):
    model = model_with_two_layers(rng)
    rows = sparsify(model, batch_size=2, min_speedup=20.0, timer=lambda function: 1.0)
    assert not any(row["chosen"] for row in rows)
    assert isinstance(model[1][0], nn.Linear)
    rows = sparsify(model, batch_size=2, min_speedup=1.0, timer=lambda function: 1.0)
    assert all(row["chosen"] for row in rows)


def test_sparsify_default_timer_runs(rng):
    model = model_with_two_layers(rng)
    rows = sparsify(model, batch_size=3)
    assert all(row["dense_ms"] > 0 and row["sparse_ms"] > 0 for row in rows)
