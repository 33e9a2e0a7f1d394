"""The elementwise losses (fastnet.functional.pointwise_losses) and their modules against PyTorch:
values and gradients (input and target) for every reduction, weights, pos_weight, huge logits,
float64 gradient checks, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_losses import parity

import fastnet as fn
import fastnet.functional as F
from fastnet import nn
from fastnet.gradcheck import gradcheck
from numerics import relative_error

torch = pytest.importorskip("torch")
TF = torch.nn.functional
REDUCTIONS = ["mean", "sum", "none"]
SHAPE = (3, 5, 2)


def normal(rng, shape=SHAPE, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def uniform(rng, low, high, shape=SHAPE):
    return rng.uniform(low, high, shape).astype(np.float32)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "name, options",
    [
        ("mse_loss", {}),
        ("l1_loss", {}),
        ("smooth_l1_loss", {"beta": 1.0}),
        ("smooth_l1_loss", {"beta": 0.4}),
        ("smooth_l1_loss", {"beta": 0.0}),
        ("huber_loss", {"delta": 1.0}),
        ("huber_loss", {"delta": 0.6}),
    ],
)
def test_regression_losses_match_torch(rng, name, options, reduction):
    ours, theirs = getattr(F, name), getattr(TF, name)
    parity(
        lambda x, t: ours(x, t, reduction=reduction, **options),
        lambda x, t: theirs(x, t, reduction=reduction, **options),
        [normal(rng), normal(rng)],
    )


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weighted_regression_losses_match_torch(rng, name, reduction):
    weight = uniform(rng, 0.5, 1.5)
    parity(
        lambda x, t: getattr(F, name)(x, t, reduction=reduction, weight=fn.tensor(weight)),
        lambda x, t: getattr(TF, name)(x, t, reduction=reduction, weight=torch.tensor(weight)),
        [normal(rng), normal(rng)],
    )


@pytest.mark.parametrize(
    "loss",
    [
        lambda x, t: F.smooth_l1_loss(x, t, beta=0.5),
        lambda x, t: F.huber_loss(x, t, reduction="sum", delta=0.7),
        lambda x, t: F.binary_cross_entropy_with_logits(x, t.sigmoid(), reduction="none"),
        lambda x, t: F.binary_cross_entropy(x.sigmoid(), t.sigmoid()),
        lambda x, t: F.kl_div(x, t.sigmoid(), reduction="batchmean"),
        lambda x, t: F.kl_div(x, t, reduction="sum", log_target=True),
    ],
)
def test_pointwise_loss_gradients(rng, loss):
    inputs = [fn.tensor(rng.standard_normal((3, 4)), dtype=np.float64, requires_grad=True)]
    inputs.append(fn.tensor(rng.standard_normal((3, 4)), dtype=np.float64, requires_grad=True))
    assert gradcheck(loss, inputs)


# --- binary cross-entropy ------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_matches_torch(rng, weighted, reduction):
    weight = uniform(rng, 0.5, 1.5, SHAPE[-1:]) if weighted else None  # broadcast

    def ours(x, t):
        return F.binary_cross_entropy(
            x, t, None if weight is None else fn.tensor(weight), reduction=reduction
        )

    def theirs(x, t):
        return TF.binary_cross_entropy(
            x, t, None if weight is None else torch.tensor(weight), reduction=reduction
        )

    parity(ours, theirs, [uniform(rng, 0.05, 0.95), uniform(rng, 0.0, 1.0)])


def test_binary_cross_entropy_clamps_its_logs_at_minus_100():
    x = fn.tensor([0.0, 1.0, 0.5], requires_grad=True)
    loss = F.binary_cross_entropy(x, fn.tensor([1.0, 0.0, 0.5]), reduction="none")
    t = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
    expected = TF.binary_cross_entropy(t, torch.tensor([1.0, 0.0, 0.5]), reduction="none")
    np.testing.assert_allclose(loss.numpy(), expected.detach().numpy(), rtol=1e-6)
    loss.sum().backward()
    expected.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos_weighted", [False, True])
def test_binary_cross_entropy_with_logits_matches_torch(rng, pos_weighted, weighted, reduction):
    weight = uniform(rng, 0.5, 1.5, SHAPE[1:]) if weighted else None
    pos_weight = uniform(rng, 0.5, 3.0, SHAPE[-1:]) if pos_weighted else None  # the last axis

    def ours(x, t):
        return F.binary_cross_entropy_with_logits(
            x,
            t,
            None if weight is None else fn.tensor(weight),
            reduction=reduction,
            pos_weight=None if pos_weight is None else fn.tensor(pos_weight),
        )

    def theirs(x, t):
        return TF.binary_cross_entropy_with_logits(
            x,
            t,
            None if weight is None else torch.tensor(weight),
            reduction=reduction,
            pos_weight=None if pos_weight is None else torch.tensor(pos_weight),
        )

    parity(ours, theirs, [normal(rng, scale=3.0), uniform(rng, 0.0, 1.0)])


@pytest.mark.parametrize("scale", [100.0, 1e4])
def test_binary_cross_entropy_with_logits_is_stable_for_huge_logits(rng, scale):
    pos_weight = uniform(rng, 0.5, 3.0, SHAPE[-1:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parity(
            lambda x, t: F.binary_cross_entropy_with_logits(
                x, t, reduction="none", pos_weight=fn.tensor(pos_weight)
            ),
            lambda x, t: TF.binary_cross_entropy_with_logits(
                x, t, reduction="none", pos_weight=torch.tensor(pos_weight)
            ),
            [normal(rng, scale=scale), uniform(rng, 0.0, 1.0)],
        )


# --- KL divergence -------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["sum", "none", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_torch(rng, log_target, reduction):
    log_probs = np.log(uniform(rng, 0.05, 1.0))
    target = uniform(rng, 0.05, 1.0)
    if log_target:
        target = np.log(target)
    parity(
        lambda x, t: F.kl_div(x, t, reduction=reduction, log_target=log_target),
        lambda x, t: TF.kl_div(x, t, reduction=reduction, log_target=log_target),
        [log_probs, target],
    )


def test_kl_div_mean_warns_and_zero_target_gives_zero():
    x = fn.tensor(np.log([[0.5, 0.5]]))
    with pytest.warns(UserWarning, match="batchmean"):
        mean = F.kl_div(x, fn.tensor([[0.0, 1.0]]))
    assert mean.item() == pytest.approx(np.log(2) / 2)


# --- errors and modules --------------------------------------------------------------------------


def test_pointwise_loss_errors(rng):
    x, t = fn.tensor(normal(rng)), fn.tensor(normal(rng))
    # PyTorch warns and broadcasts different shapes; fastnet raises (see the module docstring)
    with pytest.raises(ValueError, match=r"\(3, 5, 2\) and target of shape \(5, 2\) differ"):
        F.mse_loss(x, fn.tensor(normal(rng, (5, 2))))
    with pytest.raises(ValueError, match="'batchmean' is not a valid value for reduction"):
        F.l1_loss(x, t, reduction="batchmean")
    with pytest.raises(ValueError, match="beta must not be negative"):
        F.smooth_l1_loss(x, t, beta=-1.0)
    with pytest.raises(ValueError, match="delta must be positive"):
        F.huber_loss(x, t, delta=0.0)
    with pytest.raises(ValueError, match="input should be between 0 and 1"):
        F.binary_cross_entropy(x, t.sigmoid())
    with pytest.raises(ValueError, match=r"pos_weight of shape \(3,\) does not broadcast"):
        F.binary_cross_entropy_with_logits(x, t, pos_weight=fn.tensor(np.ones(3)))
    with pytest.raises(ValueError, match="weight and input must have the same size"):
        F.mse_loss(x, t, weight=fn.tensor(np.ones(2)))


def test_loss_modules_match_torch_and_register_their_weights(rng):
    x, t = normal(rng), uniform(rng, 0.0, 1.0)
    pos_weight = uniform(rng, 0.5, 2.0, SHAPE[-1:])
    pairs = [
        (nn.MSELoss(reduction="sum"), torch.nn.MSELoss(reduction="sum")),
        (nn.L1Loss(), torch.nn.L1Loss()),
        (nn.SmoothL1Loss(beta=0.5), torch.nn.SmoothL1Loss(beta=0.5)),
        (nn.HuberLoss(delta=0.5), torch.nn.HuberLoss(delta=0.5)),
        (
            nn.BCEWithLogitsLoss(pos_weight=fn.tensor(pos_weight)),
            torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight)),
        ),
        (nn.KLDivLoss(reduction="batchmean"), torch.nn.KLDivLoss(reduction="batchmean")),
    ]
    for ours, theirs in pairs:
        parity(ours, theirs, [x, t], what=type(ours).__name__)
    probabilities = uniform(rng, 0.05, 0.95)
    parity(nn.BCELoss(), torch.nn.BCELoss(), [probabilities, t])
    bce = nn.BCEWithLogitsLoss(fn.tensor(np.ones(2)), pos_weight=fn.tensor(pos_weight))
    assert list(bce.state_dict()) == ["weight", "pos_weight"]
    assert list(nn.BCEWithLogitsLoss().state_dict()) == []
    assert repr(nn.HuberLoss()) == "HuberLoss()"
    assert relative_error(bce.pos_weight.numpy(), pos_weight) == 0
