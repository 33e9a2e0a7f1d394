"""Convolution variants against PyTorch: conv2d with dilation, groups (depthwise included) and
"same"/"valid" padding, conv_transpose2d with stride, padding, output_padding, dilation and groups,
forward and all three gradients; float64 gradchecks; the modules' parameter shapes, state_dict
keys, initialisation and outputs with PyTorch's weights; the errors PyTorch raises.

Float32 results are compared with PyTorch's float32 by relative error: both sum at most
C/G·KH·KW·(images) products in different orders (a few hundred here), so 1e-5 of the largest
value holds; float64 at 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet.backend import cuda_is_available
from fastnet.functional.conv import Conv2d, Conv2dWinograd
from fastnet.gradcheck import gradcheck
from fastnet.kernels.conv import reference_conv2d
from numerics import assert_close

torch = pytest.importorskip("torch")
# PyTorch warns that an even "same" padding copies the input (so does fastnet, through F.pad).
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

# (x shape, weight shape, keyword arguments of conv2d)
CONV_CASES = [
    ((2, 3, 11, 9), (4, 3, 3, 3), {"dilation": 2, "padding": 1}),
    ((2, 3, 11, 9), (5, 3, 3, 2), {"dilation": (2, 3), "stride": (2, 1), "padding": (2, 0)}),
    ((2, 4, 9, 8), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    ((1, 6, 10, 7), (9, 2, 2, 3), {"groups": 3, "stride": 2, "padding": (1, 2), "dilation": 2}),
    ((2, 5, 8, 9), (5, 1, 3, 3), {"groups": 5, "padding": 1}),  # depthwise
    ((2, 4, 7, 7), (8, 1, 5, 5), {"groups": 4, "stride": 2, "padding": 2}),  # channel multiplier 2
    ((2, 3, 9, 8), (5, 3, 2, 2), {"padding": "same"}),  # even kernel: one extra row/column after
    ((2, 4, 9, 8), (4, 2, 3, 4), {"padding": "same", "dilation": (2, 1), "groups": 2}),
    ((2, 3, 9, 8), (5, 3, 2, 4), {"padding": "valid", "dilation": 2}),
    ((1, 16, 6, 5), (3, 16, 3, 3), {"padding": 2, "dilation": 2}),  # 3x3 stride 1, not Winograd
]
# (x shape, weight shape, keyword arguments of conv_transpose2d)
TRANSPOSE_CASES = [
    ((2, 4, 5, 6), (4, 3, 3, 3), {}),
    ((2, 4, 5, 6), (4, 3, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
    ((2, 3, 4, 5), (3, 2, 2, 3), {"stride": (3, 2), "padding": (0, 1), "output_padding": (2, 1)}),
    ((2, 4, 5, 6), (4, 3, 3, 2), {"stride": 2, "padding": 1, "dilation": (2, 3), "groups": 2}),
    ((1, 6, 4, 5), (6, 1, 3, 3), {"stride": 2, "groups": 6}),  # depthwise
    ((2, 4, 5, 6), (4, 3, 3, 3), {"padding": 2, "output_padding": 2, "dilation": 3}),  # op >= S
    ((2, 4, 3, 4), (4, 2, 3, 2), {"stride": 2, "output_padding": (0, 2), "dilation": (1, 3)}),
]


def case_id(case):
    x_shape, w_shape, kwargs = case
    arguments = "-".join(f"{k}{v}" for k, v in kwargs.items()).replace(" ", "")
    return f"x{'x'.join(map(str, x_shape))}-w{'x'.join(map(str, w_shape))}-{arguments}"


def bias_size(op, w_shape, kwargs):
    return w_shape[0] if op == "conv2d" else w_shape[1] * kwargs.get("groups", 1)


def parity(rng, op, case, dtype, with_bias, tolerance=None):
    """fastnet's ``op`` against PyTorch's: output, dx, dW (and db), in ``dtype``."""
    x_shape, w_shape, kwargs = case
    arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape) / np.sqrt(w_shape[1])]
    if with_bias:
        arrays.append(rng.standard_normal(bias_size(op, w_shape, kwargs)))
    arrays = [a.astype(dtype) for a in arrays]
    ours = [fn.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = getattr(F, op)(*ours, **kwargs)
    expected = getattr(torch.nn.functional, op)(*theirs, **kwargs)
    upstream = rng.standard_normal(tuple(expected.shape)).astype(dtype)
    (y * fn.tensor(upstream, dtype=dtype)).sum().backward()
    (expected * torch.tensor(upstream)).sum().backward()
    assert_close(y.numpy(), expected.detach().numpy(), dtype, tolerance)
    for name, got, want in zip(("dx", "dW", "db"), ours, theirs, strict=False):
        assert_close(got.grad.numpy(), want.grad.numpy(), dtype, tolerance, what=name)


# --- conv2d ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d_matches_torch(rng, case, dtype):
    parity(rng, "conv2d", case, dtype, with_bias=True)


@pytest.mark.parametrize("case", CONV_CASES[2:6], ids=case_id)
def test_grouped_conv2d_without_bias_matches_torch(rng, case):
    parity(rng, "conv2d", case, np.float32, with_bias=False)


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d_gradcheck(rng, case):
    x_shape, w_shape, kwargs = case
    x = fn.tensor(rng.standard_normal(x_shape), dtype=np.float64, requires_grad=True)
    w = fn.tensor(rng.standard_normal(w_shape), dtype=np.float64, requires_grad=True)
    b = fn.tensor(rng.standard_normal(w_shape[0]), dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, **kwargs), [x, w, b])


@pytest.mark.parametrize("case", CONV_CASES[:6], ids=case_id)
def test_conv2d_matches_the_direct_reference(rng, case):
    """A second, torch-free check: the float64 sliding-window reference with dilation and
    groups."""
    x_shape, w_shape, kwargs = case
    x, w, b = (
        rng.standard_normal(x_shape),
        rng.standard_normal(w_shape),
        rng.standard_normal(w_shape[0]),
    )
    y = F.conv2d(*(fn.tensor(a, dtype=np.float64) for a in (x, w, b)), **kwargs)
    geometry = {k: v for k, v in kwargs.items() if k != "groups"}
    expected = reference_conv2d(
        x,
        w,
        b,
        geometry.get("stride", 1),
        geometry.get("padding", 0),
        geometry.get("dilation", 1),
        kwargs.get("groups", 1),
    )
    assert_close(y.numpy(), expected, np.float64)


def test_grouped_conv2d_in_uneven_chunks(rng, monkeypatch):
    """Groups with the batch split into chunks of 2, 2 and 1 images on the CPU."""
    x_shape, w_shape, _ = case = ((5, 4, 7, 6), (6, 2, 3, 3), {"groups": 2, "padding": 1})
    monkeypatch.setattr(fn.backend.CPU, "conv_workspace_bytes", 2 * (4 * 9 + 6) * 42 * 8)
    x = fn.tensor(rng.standard_normal(x_shape), dtype=np.float64, requires_grad=True)
    w = fn.tensor(rng.standard_normal(w_shape), dtype=np.float64, requires_grad=True)
    b = fn.tensor(rng.standard_normal(6), dtype=np.float64, requires_grad=True)
    assert F.conv2d(x, w, b, **case[2])._ctx.chunk_images == 2  # chunks of 2, 2 and 1
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, **case[2]), [x, w, b])


@pytest.mark.parametrize("needs", [(True, False, True), (False, True, True), (False, False, True)])
def test_grouped_conv2d_any_subset_of_gradients(rng, needs):
    arrays = (rng.standard_normal((2, 4, 6, 5)), rng.standard_normal((6, 2, 3, 3)))
    arrays += (rng.standard_normal(6),)
    leaves = [fn.tensor(a, requires_grad=n) for a, n in zip(arrays, needs, strict=True)]
    theirs = [torch.tensor(a, requires_grad=n) for a, n in zip(arrays, needs, strict=True)]
    F.conv2d(*leaves, padding=1, groups=2).sum().backward()
    torch.nn.functional.conv2d(*theirs, padding=1, groups=2).sum().backward()
    for ours, reference, flag in zip(leaves, theirs, needs, strict=True):
        assert (ours.grad is not None) == flag
        if flag:
            assert_close(ours.grad.numpy(), reference.grad.numpy(), np.float32)


def test_conv2d_on_an_unbatched_image(rng):
    x, w = rng.standard_normal((4, 7, 6)), rng.standard_normal((6, 2, 3, 3))
    y = F.conv2d(fn.tensor(x, dtype=np.float64), fn.tensor(w, dtype=np.float64), groups=2)
    expected = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), groups=2)
    assert_close(y.numpy(), expected.numpy(), np.float64)


def test_grouped_conv2d_on_an_empty_batch(rng):
    x = fn.tensor(np.ones((0, 4, 5, 5)), dtype=np.float64, requires_grad=True)
    w = fn.tensor(rng.standard_normal((6, 2, 3, 3)), dtype=np.float64, requires_grad=True)
    b = fn.tensor(rng.standard_normal(6), dtype=np.float64, requires_grad=True)
    y = F.conv2d(x, w, b, groups=2, padding=1)
    assert y.shape == (0, 6, 5, 5)
    y.sum().backward()
    assert x.grad.shape == (0, 4, 5, 5)
    assert not w.grad.numpy().any() and not b.grad.numpy().any()


def test_winograd_only_for_dense_undilated_layers(rng):
    x = fn.tensor(rng.standard_normal((1, 16, 6, 5)), requires_grad=True)
    dense = fn.tensor(rng.standard_normal((4, 16, 3, 3)), requires_grad=True)
    assert isinstance(F.conv2d(x, dense, padding=1)._ctx, Conv2dWinograd)
    assert isinstance(F.conv2d(x, dense, padding=2, dilation=2)._ctx, Conv2d)
    grouped = fn.tensor(rng.standard_normal((4, 8, 3, 3)), requires_grad=True)
    assert isinstance(F.conv2d(x, grouped, padding=1, groups=2)._ctx, Conv2d)


# --- conv_transpose2d -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=case_id)
def test_conv_transpose2d_matches_torch(rng, case, dtype):
    parity(rng, "conv_transpose2d", case, dtype, with_bias=True)


@pytest.mark.parametrize("case", TRANSPOSE_CASES[3:5], ids=case_id)
def test_conv_transpose2d_without_bias_matches_torch(rng, case):
    parity(rng, "conv_transpose2d", case, np.float32, with_bias=False)


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=case_id)
def test_conv_transpose2d_gradcheck(rng, case):
    x_shape, w_shape, kwargs = case
    x = fn.tensor(rng.standard_normal(x_shape), dtype=np.float64, requires_grad=True)
    w = fn.tensor(rng.standard_normal(w_shape), dtype=np.float64, requires_grad=True)
    b = fn.tensor(
        rng.standard_normal(bias_size("conv_transpose2d", w_shape, kwargs)),
        dtype=np.float64,
        requires_grad=True,
    )
    assert gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, **kwargs), [x, w, b])


def test_conv_transpose2d_is_the_input_gradient_of_conv2d(rng):
    """<conv2d(x, w), g> == <x, conv_transpose2d(g, w)>, with output_padding giving back the
    last row of x, which the stride-3 windows never reach."""
    x = rng.standard_normal((2, 4, 10, 9))
    w = rng.standard_normal((6, 2, 3, 3))
    geometry = {"stride": 3, "padding": 1, "dilation": 2, "groups": 2}
    y = F.conv2d(fn.tensor(x, dtype=np.float64), fn.tensor(w, dtype=np.float64), **geometry)
    g = rng.standard_normal(y.shape)
    back = F.conv_transpose2d(
        fn.tensor(g, dtype=np.float64),
        fn.tensor(w, dtype=np.float64),
        output_padding=(1, 0),
        **geometry,
    )
    assert back.shape == x.shape
    assert abs(np.vdot(y.numpy(), g) - np.vdot(x, back.numpy())) <= 1e-12 * np.abs(x).sum()


def test_conv_transpose2d_in_uneven_chunks(rng, monkeypatch):
    monkeypatch.setattr(fn.backend.CPU, "conv_workspace_bytes", 2 * (3 * 9 + 4) * 30 * 8)
    x = fn.tensor(rng.standard_normal((5, 4, 5, 6)), dtype=np.float64, requires_grad=True)
    w = fn.tensor(rng.standard_normal((4, 3, 3, 3)), dtype=np.float64, requires_grad=True)
    b = fn.tensor(rng.standard_normal(3), dtype=np.float64, requires_grad=True)
    assert F.conv_transpose2d(x, w, b, stride=2)._ctx.chunks == [(0, 2), (2, 4), (4, 5)]
    assert gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2), [x, w, b])


def test_conv_transpose2d_on_an_unbatched_image_and_an_empty_batch(rng):
    x, w = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 2, 3, 3))
    y = F.conv_transpose2d(fn.tensor(x, dtype=np.float64), fn.tensor(w, dtype=np.float64), None, 2)
    expected = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(w), None, 2)
    assert_close(y.numpy(), expected.numpy(), np.float64)
    empty = fn.tensor(np.ones((0, 4, 3, 5)), requires_grad=True)
    weight = fn.tensor(w, requires_grad=True)
    y = F.conv_transpose2d(empty, weight, stride=2)
    assert y.shape == (0, 2, 7, 11)
    y.sum().backward()
    assert empty.grad.shape == (0, 4, 3, 5) and not weight.grad.numpy().any()


# --- on the cuda device (the simulator without a GPU) ---------------------------------------------


@pytest.mark.skipif(not cuda_is_available(), reason="needs the cuda device (GPU or simulator)")
@pytest.mark.parametrize(
    "op, case",
    [
        ("conv2d", ((1, 4, 5, 4), (4, 2, 3, 3), {"groups": 2, "padding": 2, "dilation": 2})),
        ("conv_transpose2d", ((1, 4, 3, 3), (4, 1, 3, 2), {"stride": 2, "groups": 2})),
    ],
    ids=["conv2d", "conv_transpose2d"],
)
def test_on_cuda_matches_cpu(rng, op, case):
    """The batched GEMMs over groups, dilated im2col and col2im on the cuda device."""
    x_shape, w_shape, kwargs = case
    arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape)]
    arrays.append(rng.standard_normal(bias_size(op, w_shape, kwargs)))
    results = {}
    for device in ("cpu", "cuda"):
        leaves = [fn.tensor(a, device=device, requires_grad=True) for a in arrays]
        y = getattr(F, op)(*leaves, **kwargs)
        (y * y).sum().backward()
        results[device] = [y.numpy(), *(leaf.grad.numpy() for leaf in leaves)]
    for got, expected in zip(results["cuda"], results["cpu"], strict=True):
        assert_close(got, expected, np.float32)


# --- modules --------------------------------------------------------------------------------------

MODULES = [
    ("Conv2d", (4, 6, 3), {"dilation": 2, "groups": 2, "padding": 2}),
    ("Conv2d", (4, 4, (3, 2)), {"groups": 4, "stride": 2, "bias": False}),
    ("Conv2d", (3, 5, 4), {"padding": "same", "dilation": (1, 2)}),
    ("Conv2d", (3, 5, 3), {"padding": 1, "padding_mode": "reflect"}),
    ("Conv2d", (4, 6, 2), {"padding": "same", "padding_mode": "circular", "groups": 2}),
    ("ConvTranspose2d", (4, 6, 3), {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}),
    ("ConvTranspose2d", (3, 2, (2, 3)), {"dilation": 2, "bias": False}),
]


@pytest.mark.parametrize("name, args, kwargs", MODULES)
def test_module_matches_torch_with_its_weights(rng, name, args, kwargs):
    ours, theirs = getattr(fn.nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    state = theirs.state_dict()
    assert list(ours.state_dict()) == list(state)
    for key, value in state.items():
        assert tuple(ours.state_dict()[key].shape) == tuple(value.shape), key
    assert repr(ours) == repr(theirs)
    report = ours.load_state_dict({k: fn.tensor(v.numpy()) for k, v in state.items()})
    assert not any(report)
    x = rng.standard_normal((2, args[0], 7, 8)).astype(np.float32)
    expected = theirs(torch.tensor(x)).detach().numpy()
    assert_close(ours(fn.tensor(x)).numpy(), expected, np.float32)


@pytest.mark.parametrize("name, args, kwargs", MODULES)
def test_module_initialisation_follows_torch(name, args, kwargs):
    """Weights and bias U(±1/√fan_in), fan_in = weight.shape[1]·kh·kw: the same bound as PyTorch
    draws from, reached within a few percent by a few hundred draws."""
    fn.manual_seed(0)
    ours = getattr(fn.nn, name)(*args, **kwargs)
    weight = ours.weight.numpy()
    bound = 1 / np.sqrt(np.prod(weight.shape[1:]))
    assert ours.weight.dtype == np.float32
    for values in [weight] + ([ours.bias.numpy()] if ours.bias is not None else []):
        assert np.abs(values).max() <= bound
    assert np.abs(weight).max() >= 0.8 * bound


def test_conv_transpose_module_output_size(rng):
    ours = fn.nn.ConvTranspose2d(4, 6, 3, stride=2)
    theirs = torch.nn.ConvTranspose2d(4, 6, 3, stride=2)
    ours.load_state_dict({k: fn.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    for size in ((12, 11), (1, 6, 11, 12)):
        expected = theirs(torch.tensor(x), output_size=size).detach().numpy()
        assert_close(ours(fn.tensor(x), output_size=size).numpy(), expected, np.float32)
    with pytest.raises(ValueError, match=r"valid sizes range from 11 to 12"):
        ours(fn.tensor(x), output_size=(13, 13))


def test_models_build_their_convolutions_unchanged():
    """A plain Conv2d is as before: (out, in, kh, kw) weights, the dense layer's repr."""
    layer = fn.nn.Conv2d(3, 8, 3, padding=1)
    assert layer.weight.shape == (8, 3, 3, 3) and layer.bias.shape == (8,)
    assert repr(layer) == repr(torch.nn.Conv2d(3, 8, 3, padding=1))


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, message",
    [
        (
            (1, 3, 8, 8),
            (4, 1, 3, 3),
            {"groups": 2},
            r"\(1, 3, 8, 8\) has 3 channels but weight of shape \(4, 1, 3, 3\) .* expects 2",
        ),
        ((1, 4, 8, 8), (3, 2, 3, 3), {"groups": 2}, r"3 output channels, not divisible by groups"),
        (
            (1, 4, 8, 8),
            (4, 1, 3, 3),
            {"groups": 2},
            r"input of shape \(1, 4, 8, 8\) has 4 channels but weight of shape \(4, 1, 3, 3\) "
            r"\(out, in/groups, kh, kw\) with groups=2 expects 2",
        ),
        ((1, 4, 2, 2), (3, 4, 3, 3), {}, r"kernel 3x3 does not fit the 2x2 input"),
        ((1, 4, 5, 5), (3, 4, 3, 3), {"dilation": 3}, r"dilated by \(3, 3\) to 7x7 does not fit"),
        ((1, 4, 5, 5), (3, 4, 3, 3), {"groups": 0}, r"conv2d: groups must be a positive int"),
        ((1, 4, 5, 5), (3, 4, 3, 3), {"dilation": 0}, r"conv2d: dilation must be positive"),
        ((1, 4, 5, 5), (3, 4, 3, 3), {"stride": (1, 0)}, r"conv2d: stride must be positive"),
        ((1, 4, 5, 5), (3, 4, 3, 3), {"stride": 2, "padding": "same"}, r"not supported for str"),
        ((1, 4, 5, 5), (3, 4, 3, 3), {"padding": "full"}, r"padding must be 'valid', 'same' or"),
        ((1, 4, 5, 5), (3, 4, 3), {}, r"conv2d: weight must be 4-D, got shape \(3, 4, 3\)"),
    ],
)
def test_conv2d_errors(x_shape, w_shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        F.conv2d(fn.tensor(np.ones(x_shape)), fn.tensor(np.ones(w_shape)), **kwargs)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, message",
    [
        (
            (1, 3, 4, 4),
            (4, 3, 3, 3),
            {},
            r"conv_transpose2d: input of shape \(1, 3, 4, 4\) has 3 channels but weight of shape "
            r"\(4, 3, 3, 3\) \(in, out/groups, kh, kw\) with groups=1 expects 4",
        ),
        ((1, 4, 4, 4), (4, 3, 3, 3), {"groups": 3}, r"4 input channels, not divisible by groups"),
        (
            (1, 4, 4, 4),
            (4, 3, 3, 3),
            {"stride": 2, "output_padding": 2},
            r"output_padding must be smaller than either stride or dilation, got "
            r"output_padding=\(2, 2\), stride=\(2, 2\), dilation=\(1, 1\)",
        ),
        ((1, 4, 1, 1), (4, 3, 3, 3), {"padding": 2}, r"gives an output of -1x-1: too small"),
    ],
)
def test_conv_transpose2d_errors(x_shape, w_shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        F.conv_transpose2d(fn.tensor(np.ones(x_shape)), fn.tensor(np.ones(w_shape)), **kwargs)


@pytest.mark.parametrize(
    "name, args, kwargs, message",
    [
        ("Conv2d", (3, 4, 3), {"groups": 2}, "in_channels must be divisible by groups"),
        ("Conv2d", (4, 3, 3), {"groups": 2}, "out_channels must be divisible by groups"),
        ("Conv2d", (4, 4, 3), {"groups": 0}, "groups must be a positive integer"),
        ("Conv2d", (4, 4, 3), {"padding": "same", "stride": 2}, "not supported for strided"),
        ("Conv2d", (4, 4, 3), {"padding": "full"}, "Invalid padding string 'full'"),
        ("Conv2d", (4, 4, 3), {"padding_mode": "mirror"}, "padding_mode must be one of"),
        ("ConvTranspose2d", (4, 3, 3), {"groups": 2}, "out_channels must be divisible by groups"),
        ("ConvTranspose2d", (4, 4, 3), {"padding_mode": "reflect"}, 'Only "zeros" padding mode'),
    ],
)
def test_module_errors(name, args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        getattr(fn.nn, name)(*args, **kwargs)
    with pytest.raises(ValueError, match=message):  # PyTorch raises the same
        getattr(torch.nn, name)(*args, **kwargs)
