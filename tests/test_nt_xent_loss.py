"""nt_xent_loss (fastnet.functional.contrastive): loss and gradient against a PyTorch formulation
of SimCLR's loss for every reduction, float64 gradient checks, the cuda device (simulator or GPU)
against the CPU, a retained graph walked twice, norms under ε, and errors."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet.gradcheck import gradcheck
from numerics import relative_error

torch = pytest.importorskip("torch")

FLOAT32 = 1e-5  # float32 against PyTorch's float32, relative to the largest value
REDUCTIONS = ["mean", "sum", "none"]


def torch_nt_xent(z, temperature, reduction):
    """SimCLR's formulation: normalise, similarities over T, the diagonal masked out,
    cross-entropy with row i's positive at (i + N) mod 2N."""
    rows = z.shape[0]
    units = torch.nn.functional.normalize(z, dim=1)
    similarity = units @ units.T / temperature
    similarity = similarity.masked_fill(torch.eye(rows, dtype=torch.bool), float("-inf"))
    positives = torch.arange(rows).roll(rows // 2)
    return torch.nn.functional.cross_entropy(similarity, positives, reduction=reduction)


def embeddings(rng, rows, width, dtype=np.float32):
    return (rng.standard_normal((rows, width)) * rng.uniform(0.5, 3.0, (rows, 1))).astype(dtype)


def upstream(rng, shape, dtype=np.float32):
    return rng.uniform(0.5, 1.5, shape).astype(dtype)


def check_against_torch(z, temperature, reduction, rng, device="cpu"):
    ours = fn.tensor(z, device=device, requires_grad=True)
    theirs = torch.tensor(z, requires_grad=True)
    got = F.nt_xent_loss(ours, temperature, reduction)
    expected = torch_nt_xent(theirs, temperature, reduction)
    assert got.shape == tuple(expected.shape) and got.dtype == z.dtype
    assert relative_error(got.numpy(), expected.detach().numpy()) <= FLOAT32, "loss"
    seed = upstream(rng, got.shape)
    (got * fn.tensor(seed, device=device)).sum().backward()
    (expected * torch.tensor(seed)).sum().backward()
    assert relative_error(ours.grad.numpy(), theirs.grad.numpy()) <= FLOAT32, "gradient"


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_matches_pytorch(reduction, temperature, rng):
    check_against_torch(embeddings(rng, 10, 7), temperature, reduction, rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_pytorch_at_a_training_shape(reduction, rng):
    check_against_torch(embeddings(rng, 130, 33), 0.2, reduction, rng)


def test_a_norm_under_eps_is_divided_by_eps_as_pytorch(rng):
    z = embeddings(rng, 6, 5)
    z[4] *= 1e-14
    check_against_torch(z, 0.5, "sum", rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float64_gradient_check(reduction, rng):
    z = fn.tensor(embeddings(rng, 6, 5, np.float64), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda x: F.nt_xent_loss(x, 0.3, reduction), [z])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cuda_device_matches_the_cpu(reduction, rng):
    z = embeddings(rng, 6, 5)
    seed = upstream(rng, () if reduction != "none" else (6,))
    results = []
    for device in ("cpu", "cuda"):
        x = fn.tensor(z, device=device, requires_grad=True)
        loss = F.nt_xent_loss(x, 0.5, reduction)
        assert loss.device == device
        (loss * fn.tensor(seed, device=device)).sum().backward()
        results.append((loss.numpy(), x.grad.numpy()))
    (cpu_loss, cpu_grad), (cuda_loss, cuda_grad) = results
    assert relative_error(cuda_loss, cpu_loss) <= FLOAT32
    assert relative_error(cuda_grad, cpu_grad) <= FLOAT32


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_a_retained_graph_gives_the_same_gradient_twice(reduction, rng):
    """Backward forms G + Gᵀ in place for "mean" and "sum": a second walk must not do it again."""
    x = fn.tensor(embeddings(rng, 10, 7), requires_grad=True)
    loss = F.nt_xent_loss(x, 0.5, reduction)
    seed = fn.tensor(upstream(rng, loss.shape))
    (loss * seed).sum().backward(retain_graph=True)
    first = x.grad.numpy().copy()
    x.grad = None
    (loss * seed).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), first)


def test_the_loss_is_the_mean_of_the_row_losses(rng):
    x = fn.tensor(embeddings(rng, 8, 3))
    rows = F.nt_xent_loss(x, reduction="none").numpy()
    assert rows.shape == (8,) and np.all(rows > 0)
    assert abs(F.nt_xent_loss(x).item() - rows.mean()) <= 1e-6 * rows.mean()
    assert abs(F.nt_xent_loss(x, reduction="sum").item() - rows.sum()) <= 1e-6 * rows.sum()


def test_errors_name_the_op(rng):
    with pytest.raises(ValueError, match="nt_xent_loss.*2N"):
        F.nt_xent_loss(fn.tensor(embeddings(rng, 5, 4)))
    with pytest.raises(ValueError, match="nt_xent_loss.*2N"):
        F.nt_xent_loss(fn.tensor(rng.standard_normal(6).astype(np.float32)))
    with pytest.raises(ValueError, match="nt_xent_loss.*2N"):
        F.nt_xent_loss(fn.tensor(np.ones((0, 4), np.float32)))
    for bad in (0.0, -0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            F.nt_xent_loss(fn.tensor(embeddings(rng, 6, 4)), bad)
    with pytest.raises(ValueError, match="reduction"):
        F.nt_xent_loss(fn.tensor(embeddings(rng, 6, 4)), reduction="batchmean")
    with pytest.raises(TypeError, match="float32 or float64"):
        F.nt_xent_loss(fn.tensor(np.ones((6, 4), np.int64)))
