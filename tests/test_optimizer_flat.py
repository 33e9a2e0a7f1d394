"""Multi-tensor optimizer steps (fastnet/optim/optimizer.py): a group's parameters and state live in
flat buffers updated by one kernel call, the step count and the skip flag stay on the device.

Every test runs on the CPU and on the cuda device (Numba's simulator here): each step is checked
against per-parameter float64 references (``fastnet.kernels.optim``) with per-parameter step
counts, so a bucket that updated a stale buffer, a parameter without a gradient, or a skipped step
would show. Tolerance: the displacement after a few float32 steps (tests/kernels/test_optim.py says
why 1e-4).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnet as fn
from fastnet import nn, optim
from fastnet.kernels import _cuda
from fastnet.kernels import gather as gather_kernels
from fastnet.kernels import optim as optim_kernels
from fastnet.kernels.optim import reference_adam_step, reference_sgd_step
from fastnet.optim import optimizer as optimizer_module
from numerics import assert_close

pytestmark = pytest.mark.skipif(
    not fn.backend.cuda_is_available(), reason="needs the cuda device (GPU or simulator)"
)

DEVICES = ["cpu", "cuda"]
SEVERAL_STEPS_TOLERANCE = 1e-4
SHAPES = [(3, 5, 7), (11,), (1,), (13, 17)]  # odd sizes; on the CPU (13, 17) gets its own bucket
CONFIGS = {
    "sgd": (optim.SGD, dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)),
    "sgd-momentum-decay": (
        optim.SGD,
        dict(momentum=0.9, dampening=0.3, weight_decay=0.1, nesterov=False),
    ),
    "sgd-nesterov": (optim.SGD, dict(momentum=0.9, dampening=0.0, weight_decay=0.1, nesterov=True)),
    "adam": (optim.Adam, dict(betas=(0.9, 0.99), eps=1e-3, weight_decay=0.1)),
    "adamw": (optim.AdamW, dict(betas=(0.9, 0.99), eps=1e-3, weight_decay=0.1)),
}
LEARNING_RATES = (0.1, 0.03)  # group 0, group 1


@pytest.fixture(autouse=True)
def small_cpu_buckets(monkeypatch):
    """On the CPU, parameters over 150 elements get buckets of their own: both kinds are tested."""
    monkeypatch.setattr(optimizer_module, "CPU_OWN_BUCKET_ELEMENTS", 150)


def parameters(rng, device, shapes=SHAPES):
    return [
        nn.Parameter(fn.tensor(rng.standard_normal(shape).astype(np.float32), device=device))
        for shape in shapes
    ]


def set_gradients(rng, params, without=()):
    """Fresh random gradients; None for the parameters at the indices in ``without``."""
    grads = {}
    for index, p in enumerate(params):
        p.grad = None
        if index not in without:
            grads[index] = (0.1 * rng.standard_normal(p.shape)).astype(np.float32)
            p.grad = fn.tensor(grads[index], device=p.device)
    return grads


class PerParameterReference:
    """The float64 per-parameter algorithm, with PyTorch's state rules: a parameter without a
    gradient is not updated and keeps its state (and step count) as it was."""

    def __init__(self, name, params):
        self.kind, self.options = CONFIGS[name]
        self.values = [p.numpy().astype(np.float64) for p in params]
        self.state: dict[int, dict] = {}

    def step(self, grads, lrs):
        for index, grad in grads.items():
            lr, state = lrs[index], self.state.setdefault(index, {"step": 0})
            state["step"] += 1
            if self.kind is optim.SGD:
                self.values[index], state["buffer"] = reference_sgd_step(
                    self.values[index],
                    grad,
                    state.get("buffer"),
                    lr=lr,
                    first_step=state["step"] == 1,
                    **self.options,
                )
            else:
                beta1, beta2 = self.options["betas"]
                self.values[index], state["m"], state["v"] = reference_adam_step(
                    self.values[index],
                    grad,
                    state.get("m", 0.0),
                    state.get("v", 0.0),
                    step=state["step"],
                    lr=lr,
                    beta1=beta1,
                    beta2=beta2,
                    eps=self.options["eps"],
                    weight_decay=self.options["weight_decay"],
                    decoupled=self.kind is optim.AdamW,
                )


def two_groups(name, params):
    kind, options = CONFIGS[name]
    return kind(
        [
            {"params": params[:2], "lr": LEARNING_RATES[0]},
            {"params": params[2:], "lr": LEARNING_RATES[1]},
        ],
        **options,
    )


def assert_matches(params, reference, starts, what):
    for index, (p, expected) in enumerate(zip(params, reference.values, strict=True)):
        if index not in reference.state:  # never stepped: bit for bit where it started
            np.testing.assert_array_equal(p.numpy(), starts[index])
            continue
        assert_close(
            p.numpy() - starts[index],
            expected - starts[index],
            np.float32,
            SEVERAL_STEPS_TOLERANCE,
            f"{what}: parameter {index} displacement",
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CONFIGS)
def test_flat_steps_match_per_parameter_references(rng, device, name):
    """Two groups (different learning rates); parameter 3 has no gradient at step 1 and parameter
    0 none at step 3, so the buckets are rebuilt and hold parameters of different step counts."""
    params = parameters(rng, device)
    opt = two_groups(name, params)
    reference = PerParameterReference(name, params)
    starts = [p.numpy().copy() for p in params]
    lrs = [LEARNING_RATES[0]] * 2 + [LEARNING_RATES[1]] * 2
    for step, without in enumerate([(3,), (), (0,)], start=1):
        before = params[without[0]].numpy().copy() if without else None
        grads = set_gradients(rng, params, without)
        opt.step()
        reference.step(grads, lrs)
        assert_matches(params, reference, starts, f"{name} step {step}")
        if step == 1:  # no gradient yet: no state, not moved
            assert id(params[3]) not in opt.state
        if without:
            np.testing.assert_array_equal(params[without[0]].numpy(), before)
    saved = opt.state_dict()["state"]
    if name != "sgd":
        assert sorted(saved) == [0, 1, 2, 3]
    if optim.Adam in type(opt).__mro__:
        assert [saved[i]["step"] for i in range(4)] == [2, 3, 3, 2]
        assert opt.state[id(params[1])]["step"] == 3 and int(opt.state[id(params[0])]["step"]) == 2


def test_cuda_group_is_one_flat_buffer_updated_by_two_launches(rng, monkeypatch):
    params = parameters(rng, "cuda")
    opt = two_groups("adam", params)
    set_gradients(rng, params)
    opt.step()
    for group in (params[:2], params[2:]):
        flat = group[0].data.base
        assert flat is not None and flat.size == sum(p.data.size for p in group)
        for p in group:
            assert p.data.base is flat
            assert opt.state[id(p)]["exp_avg"].base is opt.state[id(group[0])]["exp_avg"].base
    set_gradients(rng, params)
    launched = []
    for module in (gather_kernels, optim_kernels):

        def recorded(kernel, *args, launch=module.launch):
            launched.append(kernel)
            return launch(kernel, *args)

        monkeypatch.setattr(module, "launch", recorded)
    before = _cuda.launches.count
    opt.step()
    assert _cuda.launches.count - before == 4
    # per group: the gradients gathered by one kernel, then one update kernel
    names = [getattr(kernel, "__name__", None) or kernel.py_func.__name__ for kernel in launched]
    assert names == ["_gather_flat_cuda", "_adam_flat_cuda_kernel"] * 2


@pytest.mark.parametrize("device", DEVICES)
def test_rebinding_after_load_state_dict_assignment_and_to(rng, device):
    """Values loaded, assigned or moved after the flattening are the ones updated, and the state
    carries on: never a stale flat buffer."""
    params = parameters(rng, device)
    opt = two_groups("sgd-momentum-decay", params)
    reference = PerParameterReference("sgd-momentum-decay", params)
    lrs = [LEARNING_RATES[0]] * 2 + [LEARNING_RATES[1]] * 2
    grads = set_gradients(rng, params)
    opt.step()
    reference.step(grads, lrs)
    model = nn.Module()
    for index, p in enumerate(params):
        setattr(model, f"p{index}", p)
    loaded = {
        f"p{i}": rng.standard_normal(p.shape).astype(np.float32) for i, p in enumerate(params)
    }
    model.load_state_dict(loaded)
    params[1].data = params[1].device.asarray(rng.standard_normal(SHAPES[1]).astype(np.float32))
    stale = params[0].data
    model.to("cpu" if device == "cuda" else "cuda")
    starts = []
    for index, p in enumerate(params):
        starts.append(p.numpy().copy())
        reference.values[index] = starts[-1].astype(np.float64)
    kept = stale.copy()
    grads = set_gradients(rng, params)
    opt.step()
    reference.step(grads, lrs)
    assert_matches(params, reference, starts, "after load, assignment and to()")
    np.testing.assert_array_equal(stale, kept)  # the old buffer was left alone
    momentum = opt.state[id(params[2])]["momentum_buffer"]
    assert_close(momentum, reference.state[2]["buffer"], np.float32, SEVERAL_STEPS_TOLERANCE)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["sgd-nesterov", "adamw"])
@pytest.mark.parametrize("flag_dtype", [np.bool_, np.float32])
def test_a_skipped_step_changes_nothing_and_later_steps_match(rng, device, name, flag_dtype):
    """A skipped step leaves every parameter and all state bit for bit as it was (Adam's step
    count included); the next step is the one an optimizer that never skipped takes."""
    params = parameters(rng, device, SHAPES[:2])
    twins = [nn.Parameter(fn.tensor(p.numpy().copy(), device=device)) for p in params]
    kind, options = CONFIGS[name]
    skipping, plain = kind(params, lr=0.05, **options), kind(twins, lr=0.05, **options)

    def flag(value):
        return fn.tensor(np.array([value], flag_dtype), device=device)

    def gradients():
        grads = set_gradients(rng, params)
        for index, twin in enumerate(twins):
            twin.grad = fn.tensor(grads[index], device=device)

    gradients()
    skipping.step(skip_if=flag(1))  # the very first step skipped: no state taken
    assert skipping.state_dict()["state"] == {}
    for p, twin in zip(params, twins, strict=True):
        np.testing.assert_array_equal(p.numpy(), twin.numpy())
    for _ in range(2):
        gradients()
        skipping.step(skip_if=flag(0))
        plain.step()
    before = ([p.numpy().copy() for p in params], skipping.state_dict())
    gradients()
    skipping.step(skip_if=flag(1).data)  # a bare device array does too
    after = ([p.numpy().copy() for p in params], skipping.state_dict())
    for was, now in zip(before[0], after[0], strict=True):
        np.testing.assert_array_equal(now, was)
    assert_same_state(after[1], before[1])
    gradients()
    skipping.step(skip_if=flag(0))
    plain.step()
    for p, twin in zip(params, twins, strict=True):
        np.testing.assert_array_equal(p.numpy(), twin.numpy())
    assert_same_state(skipping.state_dict(), plain.state_dict())


def assert_same_state(got, expected):
    assert got["param_groups"] == expected["param_groups"]
    assert got["state"].keys() == expected["state"].keys()
    for index, entry in expected["state"].items():
        assert got["state"][index].keys() == entry.keys()
        for field, value in entry.items():
            np.testing.assert_array_equal(got["state"][index][field], value, err_msg=field)


def test_cuda_step_with_a_skip_flag_copies_nothing_between_host_and_device(rng, monkeypatch):
    """Counted by the device's transfer counters; and to_numpy, which the simulator's NumPy device
    arrays would pass uncounted, is not called at all."""

    def no_host_reads(array):
        raise AssertionError("step() read an array on the host")

    monkeypatch.setattr(optimizer_module, "to_numpy", no_host_reads)
    params = parameters(rng, "cuda", SHAPES[:2])
    opt = optim.Adam(params, lr=0.01)
    flag = fn.tensor(np.array([False]), device="cuda")
    cuda = params[0].device
    set_gradients(rng, params)
    opt.step(skip_if=flag)  # lays the buckets out
    for _ in range(2):
        set_gradients(rng, params)
        cuda.transfers.reset()
        opt.step(skip_if=flag)
        assert (cuda.transfers.to_host, cuda.transfers.to_device) == (0, 0)
    assert opt.state[id(params[0])]["step"] == 3  # reading it is a transfer, outside the step


@pytest.mark.parametrize("device", DEVICES)
def test_step_takes_a_closure_and_returns_its_loss(rng, device):
    (weight,) = parameters(rng, device, [(7,)])
    start = weight.numpy().astype(np.float64)
    opt = optim.SGD([weight], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (weight * weight).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx((start**2).sum(), rel=1e-6)
    assert_close(weight.numpy(), start - 0.1 * 2 * start, np.float32)
    assert opt.step() is None
