"""cross_entropy and nll_loss (fastnet.functional.losses) and their modules, against PyTorch:
forward and backward over class-index targets (weights, ignored rows, label smoothing, (N, C, d)
inputs, unbatched inputs, every reduction, large logits) and probability targets; float64
gradient checks; the fast path's use of the fused kernel; errors. The elementwise losses are in
test_losses_pointwise.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet import nn
from fastnet.gradcheck import gradcheck
from numerics import relative_error

torch = pytest.importorskip("torch")

FLOAT32 = 1e-5  # float32 kernels against PyTorch's float32, relative to the largest value


def leaf(array, dtype=np.float32):
    return fn.tensor(array, dtype=dtype, requires_grad=True)


def parity(ours, theirs, inputs, tolerance=FLOAT32, what="loss"):
    """Run ``ours`` on fastnet leaves and ``theirs`` on torch leaves of the same float arrays
    (non-float arguments are passed through ``theirs`` as they are); compare the values and
    the gradients of a weighted sum of the output."""
    mine = [leaf(a, a.dtype) for a in inputs]
    torch_inputs = [torch.tensor(a, requires_grad=True) for a in inputs]
    got, expected = ours(*mine), theirs(*torch_inputs)
    assert got.shape == tuple(expected.shape), (got.shape, expected.shape)
    assert got.dtype == inputs[0].dtype
    assert relative_error(got.numpy(), expected.detach().numpy()) <= tolerance, what
    seed = np.random.default_rng(1).uniform(0.5, 1.5, got.shape).astype(inputs[0].dtype)
    (got * fn.tensor(seed, dtype=seed.dtype)).sum().backward()
    (expected * torch.tensor(seed)).sum().backward()
    for position, (a, b) in enumerate(zip(mine, torch_inputs, strict=True)):
        assert relative_error(a.grad.numpy(), b.grad.numpy()) <= tolerance, f"grad {position}"


def class_problem(rng, shape, ignore=True, dtype=np.float32, scale=2.0):
    """Logits of ``shape`` (N, C, d...) and labels (N, d...), some of them -100."""
    logits = (rng.standard_normal(shape) * scale).astype(dtype)
    labels = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    if ignore:
        labels.reshape(-1)[1::3] = -100
    return logits, labels


def torch_or_none(array):
    return None if array is None else torch.tensor(array)


# --- cross_entropy with class indices ------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 5), (2, 3, 3, 2), (1, 65)])
def test_cross_entropy_matches_torch(rng, shape, weighted, label_smoothing, reduction):
    logits, labels = class_problem(rng, shape)
    weight = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32) if weighted else None
    options = dict(reduction=reduction, label_smoothing=label_smoothing)
    parity(
        lambda x: (
            F.cross_entropy(x, fn.tensor(labels), fn.tensor(weight), **options)
            if weighted
            else F.cross_entropy(x, fn.tensor(labels), **options)
        ),
        lambda x: torch.nn.functional.cross_entropy(
            x, torch.tensor(labels), torch_or_none(weight), **options
        ),
        [logits],
    )


@pytest.mark.parametrize("ignore_index", [2, 0])
def test_cross_entropy_ignores_an_index_inside_the_classes(rng, ignore_index):
    logits, labels = class_problem(rng, (9, 4), ignore=False)
    labels[:3] = ignore_index
    parity(
        lambda x: F.cross_entropy(x, labels, ignore_index=ignore_index, label_smoothing=0.1),
        lambda x: torch.nn.functional.cross_entropy(
            x, torch.tensor(labels), ignore_index=ignore_index, label_smoothing=0.1
        ),
        [logits],
    )


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_unbatched_input(rng, reduction):
    logits = rng.standard_normal(6).astype(np.float32)
    parity(
        lambda x: F.cross_entropy(x, np.array(4), reduction=reduction),
        lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(4), reduction=reduction),
        [logits],
    )


@pytest.mark.parametrize("scale", [100.0, 1e4])
def test_cross_entropy_is_stable_for_huge_logits(rng, scale):
    logits, labels = class_problem(rng, (6, 10), scale=scale)
    weight = rng.uniform(0.5, 1.5, 10).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        parity(
            lambda x: F.cross_entropy(x, labels, fn.tensor(weight), label_smoothing=0.1),
            lambda x: torch.nn.functional.cross_entropy(
                x, torch.tensor(labels), torch.tensor(weight), label_smoothing=0.1
            ),
            [logits],
        )


def test_cross_entropy_every_row_ignored_is_nan_with_zero_gradient(rng):
    x = leaf(rng.standard_normal((3, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = F.cross_entropy(x, np.full(3, -100), fn.tensor(np.ones(4)), label_smoothing=0.1)
        loss.backward()
    assert np.isnan(loss.item())
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((3, 4)))
    assert F.cross_entropy(x, np.full(3, -100), reduction="sum").item() == 0


def test_cross_entropy_empty_batch(rng):
    x = leaf(rng.standard_normal((0, 4)))
    labels = np.zeros(0, np.int64)
    assert np.isnan(F.cross_entropy(x, labels).item())
    assert F.cross_entropy(x, labels, reduction="sum").item() == 0
    assert F.cross_entropy(x, labels, reduction="none").shape == (0,)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradients(rng, reduction):
    logits, labels = class_problem(rng, (5, 4, 2), dtype=np.float64)
    weight = fn.tensor(rng.uniform(0.5, 1.5, 4), dtype=np.float64)
    x = leaf(logits, np.float64)
    assert gradcheck(
        lambda x: F.cross_entropy(x, labels, weight, reduction=reduction, label_smoothing=0.2),
        [x],
    )


def test_cross_entropy_common_case_is_one_kernel_call(rng, monkeypatch):
    """2-D logits and integer labels go straight to the fused kernel (no composed softmax)."""
    calls = []
    kernel = fn.backend.CPU.softmax_xent
    monkeypatch.setattr(
        fn.backend.CPU, "softmax_xent", lambda *args: calls.append(args) or kernel(*args)
    )
    logits, labels = class_problem(rng, (8, 10), ignore=False)
    x = leaf(logits)
    F.cross_entropy(x, fn.tensor(labels)).backward()
    assert len(calls) == 1
    assert calls[0][0].shape == (8, 10) and calls[0][3] is None  # no class weights


def test_cross_entropy_on_the_cuda_device(rng):
    """The same path on the cuda device (the CUDA kernel, in the simulator without a GPU)."""
    logits, labels = class_problem(rng, (3, 5))
    weight = rng.uniform(0.5, 1.5, 5).astype(np.float32)
    x = fn.tensor(logits, device="cuda", requires_grad=True)
    loss = F.cross_entropy(
        x, fn.tensor(labels, device="cuda"), fn.tensor(weight, device="cuda"), label_smoothing=0.1
    )
    loss.backward()
    t = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(
        t, torch.tensor(labels), torch.tensor(weight), label_smoothing=0.1
    )
    expected.backward()
    assert abs(loss.item() - expected.item()) <= FLOAT32 * abs(expected.item())
    assert relative_error(x.grad.numpy(), t.grad.numpy()) <= FLOAT32


# --- cross_entropy with probability targets ------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 4), (6,)])
def test_cross_entropy_probability_targets_match_torch(rng, shape, label_smoothing, reduction):
    logits = rng.standard_normal(shape).astype(np.float32)
    axis = 1 if len(shape) > 1 else 0
    probabilities = rng.uniform(0.1, 1.0, shape).astype(np.float32)
    probabilities /= probabilities.sum(axis=axis, keepdims=True)
    weight = rng.uniform(0.5, 1.5, shape[axis]).astype(np.float32)
    options = dict(reduction=reduction, label_smoothing=label_smoothing)
    parity(  # the target gets its gradient too
        lambda x, t: F.cross_entropy(x, t, fn.tensor(weight), **options),
        lambda x, t: torch.nn.functional.cross_entropy(x, t, torch.tensor(weight), **options),
        [logits, probabilities],
    )


def test_cross_entropy_probability_target_gradients(rng):
    x = leaf(rng.standard_normal((3, 4, 2)), np.float64)
    t = leaf(rng.uniform(0.1, 1.0, (3, 4, 2)), np.float64)
    assert gradcheck(lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1), [x, t])


# --- nll_loss ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 2, 3)])
def test_nll_loss_matches_torch(rng, shape, weighted, reduction):
    log_probs, labels = class_problem(rng, shape)
    weight = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32) if weighted else None
    parity(
        lambda x: F.nll_loss(
            x, labels, None if weight is None else fn.tensor(weight), reduction=reduction
        ),
        lambda x: torch.nn.functional.nll_loss(
            x, torch.tensor(labels), torch_or_none(weight), reduction=reduction
        ),
        [log_probs],
    )


def test_nll_loss_gradients_and_edge_cases(rng):
    log_probs, labels = class_problem(rng, (6, 4), dtype=np.float64)
    weight = fn.tensor(rng.uniform(0.5, 1.5, 4), dtype=np.float64)
    assert gradcheck(lambda x: F.nll_loss(x, labels, weight), [leaf(log_probs, np.float64)])
    x = leaf(log_probs)
    loss = F.nll_loss(x, np.full(6, 3), ignore_index=3)
    loss.backward()
    assert np.isnan(loss.item()) and not x.grad.numpy().any()
    assert F.nll_loss(x, np.array(2)[None].repeat(6)).shape == ()
    unbatched = F.nll_loss(fn.tensor(log_probs[0]), np.array(1), reduction="none")
    assert unbatched.shape == () and unbatched.item() == pytest.approx(-log_probs[0, 1])


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [F.cross_entropy, F.nll_loss])
def test_class_index_errors(rng, loss):
    x = fn.tensor(rng.standard_normal((3, 4)))
    with pytest.raises(IndexError, match="4 is out of bounds"):
        loss(x, np.array([0, 4, 1]))
    with pytest.raises(IndexError, match="-1 is out of bounds"):
        loss(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"batch_size \(3\) to match target batch_size \(2\)"):
        loss(x, np.array([0, 1]))
    with pytest.raises(TypeError, match="must hold integers, got float"):
        loss(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"expected target of shape \(2, 3\) .* got \(2, 4\)"):
        loss(fn.tensor(rng.standard_normal((2, 4, 3))), np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="'avg' is not a valid value for reduction"):
        loss(x, np.array([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match=r"weight should be defined for all 4 classes"):
        loss(x, np.array([0, 1, 2]), fn.tensor(np.ones(3)))


def test_cross_entropy_argument_errors(rng):
    x = fn.tensor(rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match=r"label_smoothing must be between 0.0 and 1.0, got 1.5"):
        F.cross_entropy(x, np.array([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="ignore_index is not supported for a probability"):
        F.cross_entropy(x, fn.tensor(np.full((3, 4), 0.25)), ignore_index=1)
    with pytest.raises(TypeError, match="must hold integers"):
        F.cross_entropy(x, fn.tensor(np.full((3, 3), 0.25)))  # not the input's shape
    with pytest.raises(RuntimeError, match="input is on cpu but target on cuda"):
        F.cross_entropy(x, fn.tensor(np.array([0, 1, 2]), device="cuda"))


def test_label_smoothing_of_one_is_the_uniform_target(rng):
    logits, labels = class_problem(rng, (4, 5), ignore=False)
    parity(
        lambda x: F.cross_entropy(x, labels, label_smoothing=1.0),
        lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(labels), label_smoothing=1.0),
        [logits],
    )


def test_legacy_size_average_and_reduce_map_to_reduction_with_a_warning(rng):
    logits, labels = class_problem(rng, (4, 5), ignore=False)
    x = fn.tensor(logits)
    with pytest.warns(UserWarning, match="reduction='sum'"):
        total = F.cross_entropy(x, labels, size_average=False)
    assert total.item() == pytest.approx(F.cross_entropy(x, labels, reduction="sum").item())
    with pytest.warns(UserWarning, match="reduction='none'"):
        assert F.nll_loss(x, labels, reduce=False).shape == (4,)


# --- modules -------------------------------------------------------------------------------------


def test_cross_entropy_and_nll_modules_match_torch(rng):
    logits, labels = class_problem(rng, (6, 5))
    weight = rng.uniform(0.5, 1.5, 5).astype(np.float32)
    ours = nn.CrossEntropyLoss(fn.tensor(weight), label_smoothing=0.1, reduction="sum")
    theirs = torch.nn.CrossEntropyLoss(torch.tensor(weight), label_smoothing=0.1, reduction="sum")
    parity(lambda x: ours(x, labels), lambda x: theirs(x, torch.tensor(labels)), [logits])
    assert list(ours.state_dict()) == ["weight"] and repr(ours) == "CrossEntropyLoss()"
    assert list(nn.CrossEntropyLoss().state_dict()) == []
    nll = nn.NLLLoss(ignore_index=1, reduction="none")
    labels = np.where(labels == -100, 1, labels)  # 1 is ignored now
    parity(
        lambda x: nll(x, labels),
        lambda x: torch.nn.NLLLoss(ignore_index=1, reduction="none")(x, torch.tensor(labels)),
        [logits],
    )
    with pytest.warns(UserWarning, match="reduction='sum'"):
        assert nn.NLLLoss(size_average=False).reduction == "sum"
