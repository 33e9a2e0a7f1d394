"""Optimizers refuse what would make them silently wrong: a parameter listed twice (stepped twice
per step), and a graph that saved a parameter before step() changed it in place."""

import numpy as np
import pytest

import fastnet as fn
from fastnet import nn, optim

OPTIMIZERS = {
    "SGD": lambda params: optim.SGD(params, lr=0.1),
    "SGD-momentum": lambda params: optim.SGD(params, lr=0.1, momentum=0.9),
    "Adam": lambda params: optim.Adam(params, lr=0.01),
    "AdamW": lambda params: optim.AdamW(params, lr=0.01),
}


def _parameter(rng, *shape):
    return nn.Parameter(rng.standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_parameter_listed_twice_is_refused(name, rng):
    w, other = _parameter(rng, 3, 5), _parameter(rng, 5)
    make = OPTIMIZERS[name]
    with pytest.raises(
        ValueError, match=r"parameter 2 of group 0 \(shape \(3, 5\)\) is parameter 0 of group 0"
    ):
        make([w, other, w])
    with pytest.raises(ValueError, match=r"listed twice"):
        make(iter([w, w]))  # a generator is read once, like model.parameters()
    model = nn.Linear(5, 3)
    with pytest.raises(ValueError, match=r"parameter 2 of group 0 .* parameter 0 of group 0"):
        make([*model.parameters(), model.weight])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_parameter_in_two_groups_is_refused(name, rng):
    w, other = _parameter(rng, 4), _parameter(rng, 2, 3)
    make = OPTIMIZERS[name]
    with pytest.raises(
        ValueError, match=r"parameter 1 of group 1 \(shape \(4,\)\) is parameter 0 of group 0"
    ):
        make([{"params": [w]}, {"params": [other, w]}])
    opt = make([w])
    with pytest.raises(ValueError, match=r"more than one parameter group"):
        opt.add_param_group({"params": [other, w]})
    assert len(opt.param_groups) == 1  # the refused group was not half-added


def test_a_parameter_listed_once_steps_once(rng):
    # the reference: one SGD step is w - lr * grad, so a double step would be off by lr * grad
    w = _parameter(rng, 7)
    start = w.numpy().astype(np.float64)
    loss = (w * w).sum()
    loss.backward()
    optim.SGD([w], lr=0.1).step()
    np.testing.assert_allclose(w.numpy(), start - 0.1 * 2 * start, rtol=1e-6)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_bumps_the_version_of_each_updated_parameter(name, rng):
    # needs Tensor._version (the autograd in-place check)
    model = nn.Linear(5, 3)
    frozen = nn.Linear(5, 3)
    frozen.requires_grad_(False)
    opt = OPTIMIZERS[name]([{"params": model.parameters()}, {"params": frozen.parameters()}])
    x = fn.tensor(rng.standard_normal((4, 5)))
    (model(x) ** 2 + frozen(x)).mean().backward()
    before = {id(p): p._version for p in [*model.parameters(), *frozen.parameters()]}
    opt.step()
    for p in model.parameters():
        assert p._version == before[id(p)] + 1
    for p in frozen.parameters():  # no gradient: not updated, not bumped
        assert p._version == before[id(p)]
    opt.zero_grad(set_to_none=False)  # touches gradients, not parameters
    opt.zero_grad()
    for p in model.parameters():
        assert p._version == before[id(p)] + 1


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_backward_after_step_changed_a_saved_weight_raises(name, rng):
    # needs the autograd in-place check: the Linear saved its weight, step() then changed it
    model = nn.Linear(5, 3)
    opt = OPTIMIZERS[name](model.parameters())
    x = fn.tensor(rng.standard_normal((4, 5)))
    (model(x) ** 2).mean().backward()  # gradients for the step
    loss = (model(x) ** 2).mean()
    opt.step()
    with pytest.raises(RuntimeError, match=r"(?i)linear"):
        loss.backward()
