"""Optimizers on top of the fused kernels: groups, frozen parameters, state, schedules, clipping."""

import math

import numpy as np
import pytest

import fastnet as fn
from fastnet import nn, optim
from fastnet.kernels import optim as optim_kernels
from numerics import relative_error


def quadratic_step(model, rng):
    x = fn.tensor(rng.standard_normal((8, 4)))
    loss = (model(x) ** 2).mean()
    loss.backward()
    return loss.item()


@pytest.mark.parametrize(
    "make",
    [
        lambda p: optim.SGD(p, lr=0.1),
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        lambda p: optim.Adam(p, lr=0.05),
        lambda p: optim.AdamW(p, lr=0.05, weight_decay=0.1),
    ],
)
def test_optimizers_reduce_a_quadratic(make, rng):
    fn.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = make(model.parameters())
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = quadratic_step(model, rng)
        first = loss if first is None else first
        opt.step()
    assert loss < 0.5 * first


def test_adam_step_equals_the_kernel_reference(rng):
    model = nn.Linear(4, 3)
    start = model.weight.numpy().astype(np.float64).copy()
    opt = optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)
    opt.zero_grad()
    quadratic_step(model, rng)
    grad = model.weight.grad.numpy().astype(np.float64)
    opt.step()
    expected, _, _ = optim_kernels.reference_adam_step(
        start,
        grad,
        np.zeros_like(start),
        np.zeros_like(start),
        step=1,
        lr=0.01,
        beta1=0.8,
        beta2=0.99,
        eps=1e-6,
        weight_decay=0.05,
        decoupled=True,
    )
    np.testing.assert_allclose(model.weight.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_parameter_groups_use_their_own_learning_rates(rng):
    a, b = nn.Linear(4, 4), nn.Linear(4, 3)
    opt = optim.SGD([{"params": a.parameters(), "lr": 0.0}, {"params": b.parameters(), "lr": 0.1}])
    before_a, before_b = a.weight.numpy().copy(), b.weight.numpy().copy()
    opt.zero_grad()
    loss = (b(a(fn.tensor(rng.standard_normal((5, 4))))) ** 2).mean()
    loss.backward()
    opt.step()
    np.testing.assert_array_equal(a.weight.numpy(), before_a)
    assert not np.array_equal(b.weight.numpy(), before_b)


def test_frozen_parameters_stay_bit_identical_and_get_no_state(rng):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    frozen = model[0].weight.numpy().copy()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(20):
        opt.zero_grad()
        quadratic_step(model, rng)
        opt.step()
    np.testing.assert_array_equal(model[0].weight.numpy(), frozen)
    assert model[0].weight.grad is None
    assert id(model[0].weight) not in opt.state and id(model[2].weight) in opt.state


def test_optimizer_state_dict_round_trip(rng):
    fn.manual_seed(1)
    model = nn.Linear(4, 3)
    opt = optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        quadratic_step(model, rng)
        opt.step()
    clone = nn.Linear(4, 3)
    clone.load_state_dict(model.state_dict())
    clone_opt = optim.Adam(clone.parameters(), lr=0.5)
    clone_opt.load_state_dict(opt.state_dict())
    assert clone_opt.param_groups[0]["lr"] == 0.01
    x = rng.standard_normal((8, 4))
    for m, o in ((model, opt), (clone, clone_opt)):
        o.zero_grad()
        (m(fn.tensor(x)) ** 2).mean().backward()
        o.step()
    np.testing.assert_array_equal(model.weight.numpy(), clone.weight.numpy())


def test_bad_hyperparameters_raise():
    params = list(nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(params, lr=-1)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(params, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(params, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])


def test_step_and_cosine_schedules():
    opt = optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    step = optim.StepLR(opt, step_size=2, gamma=0.5)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        step.step()
    assert seen == [1.0, 1.0, 0.5, 0.5, 0.25]
    opt = optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    cosine = optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    values = [opt.param_groups[0]["lr"]]
    for _ in range(4):
        cosine.step()
        values.append(opt.param_groups[0]["lr"])
    expected = [0.1 + 0.9 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)]
    np.testing.assert_allclose(values, expected)


def test_one_cycle_warms_up_then_anneals():
    opt = optim.AdamW(nn.Linear(2, 2).parameters(), lr=0.1)
    schedule = optim.OneCycleLR(opt, max_lr=0.1, total_steps=100, pct_start=0.2)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        schedule.step()
    peak = int(np.argmax(lrs))
    assert peak == 20 and math.isclose(lrs[peak], 0.1)
    assert math.isclose(lrs[0], 0.1 / 25)
    assert all(np.diff(lrs[:21]) > 0) and all(np.diff(lrs[20:]) <= 0)
    assert lrs[-1] < 1e-5


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, math.inf])
@pytest.mark.parametrize("max_norm", [0.05, 1e3])
def test_clip_grad_norm_matches_pytorch(rng, norm_type, max_norm):
    """The returned 0-d norm and the clipped gradients, as torch.nn.utils.clip_grad_norm_ gives
    them (max_norm 1e3 clips nothing)."""
    torch = pytest.importorskip("torch")
    shapes = [(3, 5), (7,), (2, 3, 2)]
    values = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    ours = [fn.tensor(v, requires_grad=True) for v in values]
    theirs = [torch.tensor(v, requires_grad=True) for v in values]
    grads = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    for mine, their, grad in zip(ours, theirs, grads, strict=True):
        mine.grad, their.grad = fn.tensor(grad), torch.tensor(grad)
    got = optim.clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert isinstance(got, fn.Tensor) and got.shape == () and got.dtype == np.float32
    assert relative_error(got.numpy(), expected.numpy()) < 1e-6
    for mine, their in zip(ours, theirs, strict=True):
        assert relative_error(mine.grad.numpy(), their.grad.numpy()) < 1e-6


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0
def test_clip_grad_norm_refuses_a_nonfinite_norm_when_asked():
    weight = fn.tensor(np.ones(3, np.float32), requires_grad=True)
    weight.grad = fn.tensor(np.array([1.0, np.inf, 2.0], np.float32))
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.clip_grad_norm_(weight, 1.0, error_if_nonfinite=True)
    assert math.isinf(optim.clip_grad_norm_(weight, 1.0).item())


@pytest.mark.skipif(not fn.backend.cuda_is_available(), reason="needs the cuda device")
def test_clip_grad_norm_on_the_cuda_device_reads_nothing_back(rng):
    cuda = fn.backend.get_device("cuda")
    weight = fn.tensor(rng.standard_normal((4, 3)), device="cuda", requires_grad=True)
    grad = rng.standard_normal((4, 3)).astype(np.float32)
    weight.grad = fn.tensor(grad, device="cuda")
    cuda.transfers.reset()
    norm = optim.clip_grad_norm_([weight], 0.5)
    assert cuda.transfers.to_host == 0
    expected = np.sqrt((grad.astype(np.float64) ** 2).sum())
    assert relative_error(norm.numpy(), expected) < 1e-6
    assert relative_error(weight.grad.numpy(), grad * (0.5 / (expected + 1e-6))) < 1e-6


def test_clip_grad_norm(rng):
    model = nn.Linear(4, 3)
    quadratic_step(model, rng)
    grads = [p.grad.numpy().astype(np.float64).copy() for p in model.parameters()]
    norm = math.sqrt(sum((g**2).sum() for g in grads))
    returned = optim.clip_grad_norm_(model.parameters(), max_norm=norm / 4)
    assert math.isclose(returned, norm, rel_tol=1e-6)
    clipped = math.sqrt(
        sum((p.grad.numpy().astype(np.float64) ** 2).sum() for p in model.parameters())
    )
    assert math.isclose(clipped, norm / 4, rel_tol=1e-4)
