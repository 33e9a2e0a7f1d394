"""Assigning to a module attribute registers a Parameter, keeps a buffer a buffer, and refuses
a value that would silently drop a registered parameter, buffer or child (PyTorch's rules)."""

import numpy as np
import pytest

import fastnet as fn
from fastnet import nn, optim
from numerics import relative_error

# name -> value kind; each kind is built the same way for fastnet and for PyTorch
KINDS = ("tensor", "parameter", "none", "int", "module")


def _value(kind, framework, rng):
    array = rng.standard_normal((2, 3)).astype(np.float32)
    if framework == "torch":
        import torch

        make = {
            "tensor": lambda: torch.from_numpy(array),
            "parameter": lambda: torch.nn.Parameter(torch.from_numpy(array)),
            "module": lambda: torch.nn.Identity(),
        }
    else:
        make = {
            "tensor": lambda: fn.Tensor(array),
            "parameter": lambda: nn.Parameter(array),
            "module": lambda: nn.Identity(),
        }
    return {"none": None, "int": 5}.get(kind) if kind in ("none", "int") else make[kind]()


def _module(framework):
    """A Linear without bias (parameters weight, and bias = None) holding a buffer ``buf`` and a
    child ``child``."""
    if framework == "torch":
        import torch

        module = torch.nn.Linear(3, 2, bias=False)
        module.register_buffer("buf", torch.ones(2))
        module.child = torch.nn.Identity()
    else:
        module = nn.Linear(3, 2, bias=False)
        module.register_buffer("buf", fn.Tensor(np.ones(2, np.float32)))
        module.child = nn.Identity()
    return module


def _kind_of(value):
    if value is None:
        return "none"
    if isinstance(value, int):
        return "int"
    name = type(value).__name__
    return {"Parameter": "parameter", "Tensor": "tensor"}.get(name, "module")


def _outcome(framework, name, kind, rng):
    module = _module(framework)
    try:
        setattr(module, name, _value(kind, framework, rng))
    except TypeError:
        raised = True
    else:
        raised = False
    return (
        raised,
        [n for n, _ in module.named_parameters()],
        [n for n, _ in module.named_buffers()],
        list(module.state_dict()),
        [n for n, _ in module.named_children()],
        _kind_of(getattr(module, name, None)),
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["weight", "bias", "buf", "child", "extra"])
def test_attribute_assignment_matches_pytorch(name, kind, rng):
    pytest.importorskip("torch")
    assert _outcome("fastnet", name, kind, rng) == _outcome("torch", name, kind, rng)


def test_plain_tensor_for_a_parameter_raises_and_keeps_the_weight(rng):
    model = nn.Linear(3, 2)
    weight = model.weight
    with pytest.raises(
        TypeError, match=r"cannot assign 'Tensor' as parameter 'weight' \(Parameter or None"
    ):
        model.weight = fn.Tensor(rng.standard_normal((2, 3)).astype(np.float32))
    assert model.weight is weight
    assert [n for n, _ in model.named_parameters()] == ["weight", "bias"]
    assert list(model.state_dict()) == ["weight", "bias"]


def test_parameter_set_to_none_leaves_the_state_and_comes_back(rng):
    model = nn.Linear(3, 2)
    model.bias = None
    assert model.bias is None and list(model.state_dict()) == ["weight"]
    model.bias = nn.Parameter(rng.standard_normal(2).astype(np.float32))
    assert list(model.state_dict()) == ["weight", "bias"]


def test_parameter_assigned_over_a_plain_attribute_is_the_one_read_back(rng):
    model = nn.Linear(3, 2, bias=False)
    bias = nn.Parameter(rng.standard_normal(2).astype(np.float32))
    model.bias = bias
    assert model.bias is bias  # not shadowed by the plain ``bias = None`` set in __init__
    x = rng.standard_normal((4, 3)).astype(np.float32)
    expected = x.astype(np.float64) @ model.weight.numpy().T + bias.numpy()
    assert relative_error(model(fn.tensor(x)).numpy(), expected) < 1e-6
    assert [n for n, _ in model.named_parameters()] == ["weight", "bias"]


def test_tensor_assigned_to_a_buffer_stays_a_buffer(rng):
    norm = nn.BatchNorm1d(3)
    fresh = rng.standard_normal(3).astype(np.float32)
    norm.running_mean = fn.Tensor(fresh)
    assert "running_mean" in norm.state_dict()
    np.testing.assert_array_equal(norm.state_dict()["running_mean"], fresh)
    with pytest.raises(TypeError, match=r"cannot assign 'int' as buffer 'running_var'"):
        norm.running_var = 1


def test_register_parameter_refuses_a_plain_tensor():
    model = nn.Linear(3, 2)
    with pytest.raises(TypeError, match=r"'Tensor' .*parameter 'extra'"):
        model.register_parameter("extra", fn.Tensor(np.ones(2, np.float32)))
    with pytest.raises(TypeError, match=r"'int' .*buffer 'extra'"):
        model.register_buffer("extra", 3)


def test_optimizer_built_after_assignment_sees_the_new_parameter(rng):
    model = nn.Linear(3, 2)
    model.weight = nn.Parameter(rng.standard_normal((2, 3)).astype(np.float32))
    opt = optim.SGD(model.parameters(), lr=0.1)
    assert any(p is model.weight for p in opt.param_groups[0]["params"])
