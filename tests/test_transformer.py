"""The attention layers of fastnet.nn: gradients (float64), PyTorch's names and outputs for the
same weights (when torch is installed), masks, errors, and the CUDA path in the simulator."""

import numpy as np
import pytest

import fastnet as fn
import fastnet.nn as nn
from fastnet.gradcheck import gradcheck


def to_float64(module):
    for parameter in module.parameters():
        parameter.data = parameter.data.astype(np.float64)
    return module


def leaf(rng, *shape):
    return fn.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True)


def torch_state(module):
    return {name: value.detach().numpy() for name, value in module.state_dict().items()}


# ===================================================================== small layers
def test_layer_norm_module_parameters_and_output(rng):
    norm = nn.LayerNorm(6)
    assert [name for name, _ in norm.named_parameters()] == ["weight", "bias"]
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(norm(fn.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert nn.LayerNorm((2, 3), elementwise_affine=False).num_parameters() == 0
    assert nn.LayerNorm(4, bias=False).bias is None


def test_embedding_and_positional_embedding(rng):
    fn.manual_seed(0)
    table = nn.Embedding(10, 4)
    assert (
        table.weight.shape == (10, 4) and 0.5 < table.weight.numpy().std() < 1.5
    )  # N(0, 1) as in PyTorch
    indices = np.array([[1, 2, 2], [9, 0, 1]])
    np.testing.assert_array_equal(table(indices).numpy(), table.weight.numpy()[indices])
    positions = nn.PositionalEmbedding(5, 4)
    assert (
        np.abs(positions.weight.numpy()).max() <= 0.04 + 1e-7
    )  # truncated at two standard deviations
    x = fn.tensor(rng.standard_normal((2, 3, 4)))
    np.testing.assert_allclose(
        positions(x).numpy(), x.numpy() + positions.weight.numpy()[:3], rtol=1e-6
    )
    with pytest.raises(
        ValueError, match=r"input of shape \(2, 6, 4\) must be \(\.\.\., T, 4\) with T <= 5"
    ):
        positions(fn.tensor(np.ones((2, 6, 4))))


def test_positional_embedding_gradients(rng):
    positions = to_float64(nn.PositionalEmbedding(7, 3))
    x = leaf(rng, 2, 5, 3)
    assert gradcheck(lambda x, w: positions(x), [x, positions.weight])


# ===================================================================== multi-head attention
def test_multihead_attention_parameter_layout():
    attention = nn.MultiheadAttention(12, 3, batch_first=True)
    shapes = {name: p.shape for name, p in attention.named_parameters()}
    assert shapes == {
        "in_proj_weight": (36, 12),
        "in_proj_bias": (36,),
        "out_proj.weight": (12, 12),
        "out_proj.bias": (12,),
    }
    assert np.all(attention.in_proj_bias.numpy() == 0) and np.all(
        attention.out_proj.bias.numpy() == 0
    )
    assert np.abs(attention.in_proj_weight.numpy()).max() <= np.sqrt(
        6 / (12 + 36)
    )  # Xavier-uniform
    with pytest.raises(ValueError, match="embed_dim 10 must be divisible by num_heads 3"):
        nn.MultiheadAttention(10, 3, batch_first=True)


@pytest.mark.parametrize("heads", [1, 2])
def test_multihead_attention_gradients(heads, rng):
    attention = to_float64(nn.MultiheadAttention(4, heads, batch_first=True))
    query, memory = leaf(rng, 2, 3, 4), leaf(rng, 2, 5, 4)
    padding = np.array([[False, False, True, False, True], [False] * 5])

    def attend(query, memory, *parameters):
        return attention(query, memory, memory, key_padding_mask=padding)[0]

    assert gradcheck(attend, [query, memory, *attention.parameters()])


def test_multihead_attention_self_attention_gradient_with_causal_mask(rng):
    attention = to_float64(nn.MultiheadAttention(6, 3, batch_first=True))
    x = leaf(rng, 1, 5, 6)
    assert gradcheck(lambda x: attention(x, x, x, is_causal=True)[0], [x])


def test_multihead_attention_masks_hide_keys(rng):
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    query, keys = fn.tensor(rng.standard_normal((2, 3, 8))), rng.standard_normal((2, 5, 8))
    padding = np.array([[False, False, False, True, True], [False] * 5])
    _, weights = attention(
        query,
        fn.tensor(keys),
        fn.tensor(keys),
        key_padding_mask=padding,
        need_weights=True,
        average_attn_weights=False,
    )
    assert weights.shape == (2, 2, 3, 5)
    assert np.all(weights.numpy()[0, :, :, 3:] == 0)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, rtol=1e-5)
    # changing a hidden key changes nothing
    changed = keys.copy()
    changed[0, 4] += 10.0
    before = attention(query, fn.tensor(keys), fn.tensor(keys), key_padding_mask=padding)[0].numpy()
    after = attention(query, fn.tensor(changed), fn.tensor(changed), key_padding_mask=padding)[
        0
    ].numpy()
    np.testing.assert_array_equal(before, after)


def test_multihead_attention_errors(rng):
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    x = fn.tensor(rng.standard_normal((2, 3, 8)))
    with pytest.raises(ValueError, match=r"query \(2, 3, 8\), key \(2, 3, 6\)"):
        attention(x, fn.tensor(np.ones((2, 3, 6))), x)
    with pytest.raises(
        ValueError, match=r"attn_mask of shape \(3, 4\) must be \(3, 3\) or \(4, 3, 3\)"
    ):
        attention(x, x, x, attn_mask=np.zeros((3, 4), bool))
    with pytest.raises(
        ValueError, match=r"key_padding_mask of shape \(3, 3\) must be \(batch, keys\) = \(2, 3\)"
    ):
        attention(x, x, x, key_padding_mask=np.zeros((3, 3), bool))


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_matches_pytorch(batch_first, rng):
    torch = pytest.importorskip("torch")
    theirs = torch.nn.MultiheadAttention(24, 3, batch_first=batch_first).double()
    ours = nn.MultiheadAttention(24, 3, batch_first=batch_first)
    ours.load_state_dict(
        torch_state(theirs)
    )  # strict: every PyTorch name exists here with its shape
    to_float64(ours)
    batch, queries, keys = 2, 13, 7
    layout = (lambda b, t: (b, t, 24)) if batch_first else (lambda b, t: (t, b, 24))
    query, key, value = (rng.standard_normal(layout(batch, n)) for n in (queries, keys, keys))
    attn_mask = (
        rng.random((batch * 3, queries, keys)) < 0.3
    )  # True = hidden (PyTorch's convention here)
    attn_mask[..., 0] = False
    padding = np.zeros((batch, keys), bool)
    padding[1, -2:] = True
    inputs = [fn.tensor(a, dtype=np.float64, requires_grad=True) for a in (query, key, value)]
    out, weights = ours(*inputs, key_padding_mask=padding, need_weights=True, attn_mask=attn_mask)
    torch_inputs = [torch.tensor(a, requires_grad=True) for a in (query, key, value)]
    expected, expected_weights = theirs(
        *torch_inputs,
        key_padding_mask=torch.from_numpy(padding),
        need_weights=True,
        attn_mask=torch.from_numpy(attn_mask),
    )
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        weights.numpy(), expected_weights.detach().numpy(), rtol=1e-10, atol=1e-12
    )
    upstream = rng.standard_normal(out.shape)
    out.backward(upstream)
    expected.backward(torch.from_numpy(upstream))
    for mine, reference in zip(inputs, torch_inputs, strict=True):
        np.testing.assert_allclose(
            mine.grad.numpy(), reference.grad.numpy(), rtol=1e-10, atol=1e-12
        )
    grads = dict(theirs.named_parameters())
    for name, parameter in ours.named_parameters():
        np.testing.assert_allclose(
            parameter.grad.numpy(), grads[name].grad.numpy(), rtol=1e-10, atol=1e-12
        )


# ===================================================================== encoder
@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
def test_encoder_layer_gradients(norm_first, activation, rng):
    layer = to_float64(
        nn.TransformerEncoderLayer(
            4,
            2,
            dim_feedforward=6,
            dropout=0.0,
            activation=activation,
            batch_first=True,
            norm_first=norm_first,
        )
    )
    x = leaf(rng, 2, 3, 4)
    assert gradcheck(lambda x, *parameters: layer(x), [x, *layer.parameters()])


def test_encoder_layer_and_stack_names():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
    assert [name for name, _ in layer.named_children()] == [
        "self_attn",
        "linear1",
        "dropout",
        "linear2",
        "norm1",
        "norm2",
        "dropout1",
        "dropout2",
    ]
    encoder = nn.TransformerEncoder(layer, 3, norm=nn.LayerNorm(8))
    names = list(encoder.state_dict())
    assert names[0] == "layers.0.self_attn.in_proj_weight" and "layers.2.norm2.bias" in names
    assert names[-2:] == ["norm.weight", "norm.bias"]
    # copies of one layer start equal but train independently; a factory gives independent draws
    copies = encoder.layers
    np.testing.assert_array_equal(
        copies[0].linear1.weight.numpy(), copies[2].linear1.weight.numpy()
    )
    assert copies[0].linear1.weight is not copies[2].linear1.weight
    assert copies[0].linear1.weight.device is layer.linear1.weight.device
    fresh = nn.TransformerEncoder(
        lambda: nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True), 2
    )
    assert not np.array_equal(
        fresh.layers[0].linear1.weight.numpy(), fresh.layers[1].linear1.weight.numpy()
    )
    with pytest.raises(
        ValueError, match="activation must be 'relu', 'gelu' or a callable, got 'swish'"
    ):
        nn.TransformerEncoderLayer(8, 2, activation="swish")


@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
def test_encoder_matches_pytorch(norm_first, activation, rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    their_layer = torch.nn.TransformerEncoderLayer(
        24,
        3,
        dim_feedforward=40,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
    )
    theirs = torch.nn.TransformerEncoder(
        their_layer, 2, norm=torch.nn.LayerNorm(24), enable_nested_tensor=False
    )
    for index, layer in enumerate(
        theirs.layers
    ):  # distinct weights per layer, so a mix-up would show
        for parameter in layer.parameters():
            parameter.data += 0.1 * index * torch.randn_like(parameter)
    theirs = theirs.double()
    ours = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(
            24,
            3,
            dim_feedforward=40,
            dropout=0.0,
            activation=activation,
            batch_first=True,
            norm_first=norm_first,
        ),
        2,
        norm=nn.LayerNorm(24),
    )
    ours.load_state_dict(torch_state(theirs))
    to_float64(ours)
    x = rng.standard_normal((2, 13, 24))
    padding = np.zeros((2, 13), bool)
    padding[0, -3:] = True
    mine = fn.tensor(x, dtype=np.float64, requires_grad=True)
    out = ours(mine, src_key_padding_mask=padding)
    reference = torch.tensor(x, requires_grad=True)
    expected = theirs(reference, src_key_padding_mask=torch.from_numpy(padding))
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-9, atol=1e-10)
    upstream = rng.standard_normal(out.shape)
    out.backward(upstream)
    expected.backward(torch.from_numpy(upstream))
    np.testing.assert_allclose(mine.grad.numpy(), reference.grad.numpy(), rtol=1e-9, atol=1e-10)


def test_encoder_dropout_trains_and_evaluates(rng):
    encoder = nn.TransformerEncoder(
        lambda: nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.5, batch_first=True),
        2,
    )
    x = fn.tensor(rng.standard_normal((2, 5, 8)))
    encoder.eval()
    np.testing.assert_array_equal(encoder(x).numpy(), encoder(x).numpy())
    encoder.train()
    assert np.abs(encoder(x).numpy() - encoder(x).numpy()).max() > 1e-3


def test_tiny_encoder_on_cuda_matches_cpu(rng):
    """One forward and backward of a one-layer, two-head encoder on the cuda device (the simulator
    without a GPU: the matmul, softmax and layer-norm CUDA kernels) against the CPU kernels. One
    layer and one sequence because the simulator runs each 256-thread matmul block in Python."""
    fn.manual_seed(1)
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, batch_first=True), 1
    )
    x = rng.standard_normal((1, 5, 8)).astype(np.float32)
    padding = np.array([[False] * 4 + [True]])
    results = {}
    for device in ("cpu", "cuda"):
        encoder.to(device)
        encoder.zero_grad()
        inputs = fn.tensor(x, device=device, requires_grad=True)
        out = encoder(inputs, src_key_padding_mask=padding)
        assert out.device == device
        (out * out).sum().backward()
        results[device] = [out.numpy(), inputs.grad.numpy()] + [
            p.grad.numpy() for p in encoder.parameters()
        ]
    for on_cpu, on_cuda in zip(results["cpu"], results["cuda"], strict=True):
        assert np.abs(on_cuda - on_cpu).max() <= 1e-4 * max(np.abs(on_cpu).max(), 1.0)
