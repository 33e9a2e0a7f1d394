"""The fastnet.nn modules added or corrected by the PyTorch signature audit (issue 14): the
containers (Sequential, ModuleList, ModuleDict, ParameterList, ParameterDict), the new layers
against PyTorch's (state dicts copied across, forward and backward), Embedding's padding_idx,
MultiheadAttention's need_weights default, Module.to(dtype)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import fastnet as fn
from fastnet import nn
from fastnet.gradcheck import gradcheck
from numerics import assert_close

torch = pytest.importorskip("torch")


def copy_state(theirs, ours):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def module_parity(ours, theirs, x, tolerance=1e-10):
    """Same state, same input: the same output and the same input and parameter gradients."""
    theirs = theirs.double()
    copy_state(theirs, ours)
    ours.double()
    mine, reference = (
        fn.tensor(x, dtype=np.float64, requires_grad=True),
        torch.tensor(x, requires_grad=True),
    )
    got, expected = ours(mine), theirs(reference)
    assert_close(got.numpy(), expected.detach().numpy(), np.float64, tolerance)
    upstream = np.random.default_rng(3).uniform(0.5, 1.5, expected.shape)
    got.backward(fn.tensor(upstream, dtype=np.float64))
    expected.backward(torch.tensor(upstream))
    assert_close(mine.grad.numpy(), reference.grad.numpy(), np.float64, tolerance, "input gradient")
    their_parameters = dict(theirs.named_parameters())
    for name, parameter in ours.named_parameters():
        assert_close(
            parameter.grad.numpy(), their_parameters[name].grad.numpy(), np.float64, tolerance, name
        )


LAYERS = [
    ("ReLU6", (), (2, 3, 4)),
    ("Hardtanh", (-0.5, 0.7), (2, 3, 4)),
    ("Threshold", (0.2, -1.0), (2, 3, 4)),
    ("Hardshrink", (), (2, 3, 4)),
    ("Softshrink", (0.3,), (2, 3, 4)),
    ("SELU", (), (2, 3, 4)),
    ("CELU", (0.5,), (2, 3, 4)),
    ("Softsign", (), (2, 3, 4)),
    ("Tanhshrink", (), (2, 3, 4)),
    ("PReLU", (), (2, 3, 4)),
    ("PReLU", (3,), (2, 3, 4)),
    ("GLU", (1,), (2, 4, 3)),
    ("Softmin", (1,), (2, 3, 4)),
    ("GroupNorm", (2, 4), (2, 4, 3, 5)),
    ("GroupNorm", (1, 4, 1e-3, False), (2, 4, 5)),
    ("InstanceNorm2d", (3,), (2, 3, 4, 5)),
    ("InstanceNorm1d", (3, 1e-5, 0.1, True), (2, 3, 7)),
    ("RMSNorm", ((3, 4),), (2, 3, 4)),
    ("RMSNorm", (4, 1e-3), (2, 3, 4)),
    ("AdaptiveMaxPool2d", ((3, 2),), (2, 3, 7, 5)),
    ("MaxPool1d", (3, 2, 1), (2, 3, 9)),
    ("AvgPool1d", (3, 2, 1), (2, 3, 9)),
    ("AdaptiveAvgPool1d", (4,), (2, 3, 9)),
    ("AdaptiveMaxPool1d", (4,), (2, 3, 9)),
    ("Unfold", ((2, 3), 1, 1, 2), (2, 3, 5, 6)),
    ("PixelShuffle", (2,), (2, 8, 3, 2)),
    ("PixelUnshuffle", (2,), (2, 3, 4, 6)),
    ("Unflatten", (1, (2, 3)), (4, 6, 5)),
    ("Flatten", (0, 1), (4, 6, 5)),
    ("ZeroPad2d", ((1, 2, 0, 3),), (2, 3, 4, 5)),
    ("ConstantPad1d", (2, 0.5), (2, 3, 4)),
    ("ReflectionPad2d", (1,), (2, 3, 4, 5)),
    ("ReplicationPad1d", ((2, 1),), (2, 3, 4)),
    ("Identity", (7, "ignored"), (2, 3)),
]


@pytest.mark.parametrize(("name", "args", "shape"), LAYERS, ids=[f"{n}{a}" for n, a, _ in LAYERS])
def test_layers_match_pytorch(name, args, shape, rng):
    module_parity(
        getattr(nn, name)(*args), getattr(torch.nn, name)(*args), rng.uniform(-3, 3, shape)
    )


def test_fold_and_distance_layers_match_pytorch(rng):
    blocks = rng.standard_normal((2, 12, 6))
    got = nn.Fold((4, 5), 2, stride=(1, 2))(fn.tensor(blocks, dtype=np.float64)).numpy()
    expected = torch.nn.Fold((4, 5), 2, stride=(1, 2))(torch.tensor(blocks)).numpy()
    assert_close(got, expected, np.float64, 1e-12)
    a, b = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    for ours, theirs in (
        (nn.CosineSimilarity(dim=0), torch.nn.CosineSimilarity(dim=0)),
        (nn.PairwiseDistance(1.0, keepdim=True), torch.nn.PairwiseDistance(1.0, keepdim=True)),
    ):
        got = ours(fn.tensor(a, dtype=np.float64), fn.tensor(b, dtype=np.float64)).numpy()
        assert_close(got, theirs(torch.tensor(a), torch.tensor(b)).numpy(), np.float64, 1e-12)


def test_prelu_and_group_norm_gradcheck(rng):
    prelu, norm = nn.PReLU(3).double(), nn.GroupNorm(3, 3).double()
    x = fn.tensor(rng.uniform(-2, 2, (2, 3, 4)), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda x, w: prelu(x), [x, prelu.weight])
    assert gradcheck(lambda x, w, b: norm(x), [x, norm.weight, norm.bias])


# ===================================================================== embedding
def test_embedding_padding_row_is_zero_and_gets_no_gradient(rng):
    theirs = torch.nn.Embedding(6, 3, padding_idx=-2).double()
    ours = nn.Embedding(6, 3, padding_idx=-2)
    assert ours.padding_idx == 4 and not ours.weight.numpy()[4].any()
    copy_state(theirs, ours)
    ours.double()
    indices = np.array([[4, 1, 4], [0, 5, 1]])
    out = ours(fn.tensor(indices))
    expected = theirs(torch.tensor(indices))
    assert_close(out.numpy(), expected.detach().numpy(), np.float64, 1e-12)
    upstream = rng.uniform(0.5, 1.5, out.shape)
    out.backward(fn.tensor(upstream, dtype=np.float64))
    expected.backward(torch.tensor(upstream))
    assert_close(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), np.float64, 1e-12)
    assert not ours.weight.grad.numpy()[4].any()


def test_embedding_from_pretrained_is_frozen(rng):
    table = rng.standard_normal((4, 2)).astype(np.float32)
    layer = nn.Embedding.from_pretrained(fn.tensor(table))
    assert not layer.weight.requires_grad
    np.testing.assert_array_equal(layer(fn.tensor(np.array([3, 0]))).numpy(), table[[3, 0]])
    assert nn.Embedding.from_pretrained(table, freeze=False).weight.requires_grad


# ===================================================================== containers
def test_sequential_behaves_as_pytorchs():
    model = nn.Sequential(OrderedDict(a=nn.Linear(2, 3), b=nn.ReLU(), c=nn.Linear(3, 1)))
    assert len(model) == 3 and isinstance(model[-1], nn.Linear)
    head = model[:2]
    assert isinstance(head, nn.Sequential) and list(head.state_dict()) == ["a.weight", "a.bias"]
    model.append(nn.Tanh())
    assert list(model._modules) == ["a", "b", "c", "3"]
    del model[1]
    assert list(model._modules) == ["0", "1", "2"] and isinstance(model[1], nn.Linear)
    model.insert(0, nn.Identity())
    assert isinstance(model[0], nn.Identity) and len(model) == 4
    joined = model + nn.Sequential(nn.ReLU())
    assert len(joined) == 5
    assert model(fn.tensor(np.ones((5, 2)))).shape == (5, 1)
    with pytest.raises(IndexError, match="out of range"):
        model[7]


def test_module_list_and_module_dict():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    layers.extend([nn.ReLU()])
    layers += [nn.Tanh()]
    assert len(layers) == 5 and isinstance(layers[1:3], nn.ModuleList)
    layers[0] = nn.Identity()
    assert isinstance(layers[0], nn.Identity)
    assert isinstance(layers.pop(), nn.Tanh) and len(layers) == 4
    assert [name for name, _ in layers.named_parameters()][:2] == ["1.weight", "1.bias"]
    heads = nn.ModuleDict({"cls": nn.Linear(4, 2), "box": nn.Linear(4, 4)})
    heads["extra"] = nn.ReLU()
    assert list(heads.keys()) == ["cls", "box", "extra"] and "box" in heads
    assert sorted(heads.state_dict()) == ["box.bias", "box.weight", "cls.bias", "cls.weight"]
    del heads["extra"]
    assert len(heads) == 2 and isinstance(heads.pop("box"), nn.Linear) and list(heads) == ["cls"]


def test_parameter_list_and_dict_register_parameters(rng):
    values = nn.ParameterList([nn.Parameter(np.ones(2, np.float32)), fn.tensor(np.zeros(3))])
    values.append(np.full(4, 2.0, np.float32))
    assert len(values) == 3 and all(isinstance(p, nn.Parameter) for p in values)
    assert [name for name, _ in values.named_parameters()] == ["0", "1", "2"]
    table = nn.ParameterDict({"scale": nn.Parameter(np.ones(1, np.float32))})
    table["shift"] = fn.tensor(np.zeros(1))
    assert list(table.keys()) == ["scale", "shift"] and "shift" in table
    assert sorted(name for name, _ in table.named_parameters()) == ["scale", "shift"]
    model = nn.Module()
    model.values = values
    assert "values.2" in model.state_dict()


# ===================================================================== modules
def test_dropout_modules_take_inplace_and_p_one(rng):
    x = fn.tensor(rng.uniform(1, 2, (8, 4, 3)))
    assert nn.Dropout(1.0)(x).numpy().sum() == 0
    layer = nn.Dropout2d(0.5, inplace=True)
    assert layer(x) is x
    assert "inplace=True" in repr(layer)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_relu_and_leaky_relu_take_inplace(rng):
    data = rng.uniform(-2, 2, (3, 4)).astype(np.float32)
    x = fn.tensor(data)
    assert nn.ReLU(inplace=True)(x) is x and (x.numpy() >= 0).all()
    y = fn.tensor(data)
    nn.LeakyReLU(0.1, True)(y)
    np.testing.assert_allclose(y.numpy(), np.where(data > 0, data, 0.1 * data), rtol=1e-6)


def test_multihead_attention_returns_weights_by_default(rng):
    attention = nn.MultiheadAttention(8, 2)
    x = fn.tensor(rng.standard_normal((2, 3, 8)))
    out, weights = attention(x, x, x)  # (T, B, E) as PyTorch's default layout: T = 2, B = 3
    assert out.shape == (2, 3, 8) and weights.shape == (3, 2, 2)
    assert attention(x, x, x, need_weights=False)[1] is None


def test_module_to_dtype_casts_floating_tensors():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    model.to(fn.float64)
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model[1].running_mean.dtype == np.float64
    assert model[1].num_batches_tracked.dtype == np.int64
    model.float()
    assert model[0].weight.dtype == np.float32
    with pytest.raises(TypeError, match="floating point"):
        model.to(dtype=np.int32)
