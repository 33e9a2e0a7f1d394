"""The nn ops of fastnet.functional: gradients against finite differences (float64), values
against the kernels' float64 references, and their error messages."""

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet.functional.conv import WINOGRAD_MIN_CHANNELS, Conv2d, Conv2dWinograd, conv_image_chunks
from fastnet.gradcheck import gradcheck
from fastnet.kernels import conv as conv_kernels
from fastnet.kernels import pool as pool_kernels
from fastnet.kernels import softmax_xent as xent_kernels


def leaf(rng, *shape, scale=1.0):
    return fn.tensor(rng.standard_normal(shape) * scale, dtype=np.float64, requires_grad=True)


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_gradients(with_bias, rng):
    x, w, b = leaf(rng, 2, 3, 5), leaf(rng, 4, 5), leaf(rng, 4)
    inputs = [x, w, b] if with_bias else [x, w]
    assert gradcheck(lambda *t: F.linear(*t), inputs)


@pytest.mark.parametrize(
    "stride,padding,kernel", [(1, 0, 3), (2, 1, 3), (1, 2, (3, 2)), (2, 0, (2, 3))]
)
def test_conv2d_gradients(stride, padding, kernel, rng):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x, w, b = leaf(rng, 2, 3, 7, 6), leaf(rng, 4, 3, kh, kw), leaf(rng, 4)
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding), [x, w, b])


def test_conv2d_matches_direct_reference(rng):
    x, w, b = (
        rng.standard_normal((2, 3, 11, 9)),
        rng.standard_normal((5, 3, 3, 5)),
        rng.standard_normal(5),
    )
    got = F.conv2d(fn.tensor(x), fn.tensor(w), fn.tensor(b), stride=2, padding=(1, 2)).numpy()
    expected = conv_kernels.reference_conv2d(x, w, b, (2, 2), (1, 2))
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-5


@pytest.fixture
def small_conv_workspace(monkeypatch):
    """Set the CPU conv workspaces (im2col's and Winograd's) to ``images`` images of
    ``bytes_per_image`` (columns and output planes, or tiles), so that a conv runs in chunks of
    that many images."""

    def set_for(images, bytes_per_image):
        for name in ("conv_workspace_bytes", "winograd_workspace_bytes"):
            monkeypatch.setattr(fn.backend.CPU, name, images * bytes_per_image)

    return set_for


def test_conv2d_gradients_in_uneven_chunks(rng, small_conv_workspace):
    # 5 images, 2 per chunk: chunks of 2, 2 and 1, forward and backward (cols recomputed)
    x, w, b = leaf(rng, 5, 3, 7, 6), leaf(rng, 4, 3, 3, 2), leaf(rng, 4)
    oh, ow = conv_kernels.conv_output_shape(7, 6, (3, 2), 2, 1)
    small_conv_workspace(2, (3 * 3 * 2 + 4) * oh * ow * 8)
    assert conv_image_chunks(fn.backend.CPU, 5, 3 * 3 * 2, 4, oh * ow, 8) == [
        (0, 2),
        (2, 4),
        (4, 5),
    ]
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [x, w, b])


def test_conv2d_in_chunks_equals_one_chunk(rng, small_conv_workspace):
    x = fn.tensor(rng.standard_normal((7, 4, 9, 8)), dtype=np.float32, requires_grad=True)
    w = fn.tensor(rng.standard_normal((6, 4, 3, 3)), dtype=np.float32, requires_grad=True)
    b = fn.tensor(rng.standard_normal(6), dtype=np.float32, requires_grad=True)
    upstream = rng.standard_normal((7, 6, 9, 8)).astype(np.float32)
    results = []
    for images in (7, 3, 1):
        small_conv_workspace(images, (4 * 9 + 6) * 9 * 8 * 4)
        for t in (x, w, b):
            t.grad = None
        y = F.conv2d(x, w, b, stride=1, padding=1)
        (y * fn.tensor(upstream)).sum().backward()
        results.append([y.numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()])
    expected = conv_kernels.reference_conv2d(x.numpy(), w.numpy(), b.numpy(), 1, 1)
    for got in results:
        assert np.abs(got[0] - expected).max() / np.abs(expected).max() < 1e-5
        # each image's output and input gradient is computed alone, whatever the chunk: same bits
        np.testing.assert_array_equal(got[0], results[0][0])
        np.testing.assert_array_equal(got[1], results[0][1])
        # the weight and bias gradients sum the chunks in another order: float32 rounding only
        for index in (2, 3):
            assert (
                np.abs(got[index] - results[0][index]).max() / np.abs(results[0][index]).max()
                < 1e-5
            )


def test_cuda_conv2d_works_in_a_bounded_workspace(rng, monkeypatch):
    """On the cuda device a batch larger than the conv workspace goes in chunks (no whole-batch
    im2col buffer), each chunk one GEMM, with the result of the CPU's float64 reference."""
    cuda = fn.backend.get_device("cuda")
    assert cuda.conv_workspace_bytes == fn.kernels._cuda.CONV_WORKSPACE_BYTES
    x_values, w_values = rng.standard_normal((5, 2, 5, 4)), rng.standard_normal((3, 2, 3, 3))
    b_values, upstream = rng.standard_normal(3), rng.standard_normal((5, 3, 5, 4))
    monkeypatch.setattr(cuda, "conv_workspace_bytes", 2 * (2 * 9 + 3) * 20 * 4)
    x, w, b = (
        fn.tensor(v, dtype=np.float32, device="cuda", requires_grad=True)
        for v in (x_values, w_values, b_values)
    )
    y = F.conv2d(x, w, b, padding=1)
    assert y._ctx.chunk_images == 2  # chunks of 2, 2 and 1
    (y * fn.tensor(upstream, dtype=np.float32, device="cuda")).sum().backward()
    x64, w64, b64 = (fn.tensor(v, requires_grad=True) for v in (x_values, w_values, b_values))
    y64 = F.conv2d(x64, w64, b64, padding=1)
    (y64 * fn.tensor(upstream)).sum().backward()
    for got, expected in ((y, y64), (x.grad, x64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        expected = expected.numpy()
        assert np.abs(got.numpy() - expected).max() / np.abs(expected).max() < 1e-5


def test_first_layer_weight_gradient_in_chunks(rng, small_conv_workspace):
    """Without an input gradient the CPU takes the weight gradient from per-image GEMMs: it must
    agree with the path that also computes the input gradient, and with the float64 gradcheck."""
    x_values, w_values = rng.standard_normal((5, 2, 9, 8)), rng.standard_normal((6, 2, 3, 3))
    upstream = rng.standard_normal((5, 6, 9, 8))
    small_conv_workspace(2, (2 * 9 + 6) * 9 * 8 * 8)  # chunks of 2, 2 and 1 images
    grads = {}
    for x_needs_grad in (True, False):
        x = fn.tensor(x_values, dtype=np.float64, requires_grad=x_needs_grad)
        w = fn.tensor(w_values, dtype=np.float64, requires_grad=True)
        b = fn.tensor(rng.standard_normal(6), dtype=np.float64, requires_grad=True)
        (F.conv2d(x, w, b, stride=1, padding=1) * fn.tensor(upstream)).sum().backward()
        grads[x_needs_grad] = (w.grad.numpy(), b.grad.numpy())
        assert (x.grad is not None) == x_needs_grad
    for with_x, without_x in zip(grads[True], grads[False], strict=True):
        assert np.abs(with_x - without_x).max() <= 1e-12 * np.abs(with_x).max()
    x = fn.tensor(x_values, dtype=np.float64)
    w, b = leaf(rng, 6, 2, 3, 3), leaf(rng, 6)
    assert gradcheck(lambda w, b: F.conv2d(x, w, b, stride=1, padding=1), [w, b])


@pytest.mark.parametrize(
    "needs_grad",
    [(True, True, False), (True, False, True), (False, False, True), (False, True, False)],
    ids=["x,w", "x,b", "b", "w"],
)
def test_conv2d_any_subset_of_gradients(rng, small_conv_workspace, needs_grad):
    """The bias gradient comes out of the weight GEMM (the ones row) only when both are wanted;
    each other subset takes its own path, in chunks of 2, 2 and 1 images: all agree with the
    gradients computed together."""
    values = [
        rng.standard_normal((5, 3, 7, 6)),
        rng.standard_normal((4, 3, 3, 3)),
        rng.standard_normal(4),
    ]
    upstream = fn.tensor(rng.standard_normal((5, 4, 7, 6)))
    small_conv_workspace(2, (3 * 9 + 4) * 7 * 6 * 8)

    def gradients(flags):
        leaves = [
            fn.tensor(v, dtype=np.float64, requires_grad=flag)
            for v, flag in zip(values, flags, strict=True)
        ]
        (F.conv2d(*leaves, stride=1, padding=1) * upstream).sum().backward()
        return [None if t.grad is None else t.grad.numpy() for t in leaves]

    everything = gradients((True, True, True))
    for got, flag, expected in zip(gradients(needs_grad), needs_grad, everything, strict=True):
        assert (got is not None) == flag
        if flag:
            assert np.abs(got - expected).max() <= 1e-12 * np.abs(expected).max()


def test_conv2d_channel_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"\(1, 3, 8, 8\) has 3 channels .* \(4, 2, 3, 3\)"):
        F.conv2d(fn.tensor(np.ones((1, 3, 8, 8))), fn.tensor(np.ones((4, 2, 3, 3))))
    with pytest.raises(
        ValueError, match=r"\(1, 16, 6, 6\) has 16 channels .* \(4, 2, 3, 3\)"
    ):  # Winograd's
        F.conv2d(fn.tensor(np.ones((1, 16, 6, 6))), fn.tensor(np.ones((4, 2, 3, 3))))


# --- Winograd: 3x3 kernels at stride 1 over WINOGRAD_MIN_CHANNELS or more input channels ----------


def winograd_operands(rng, shape, out_channels, dtype=np.float64):
    x = fn.tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=True)
    w = fn.tensor(
        rng.standard_normal((out_channels, shape[1], 3, 3)) / 3, dtype=dtype, requires_grad=True
    )
    b = fn.tensor(rng.standard_normal(out_channels), dtype=dtype, requires_grad=True)
    return x, w, b


def test_conv2d_takes_winograd_only_where_it_applies(rng):
    channels = WINOGRAD_MIN_CHANNELS
    x, w, b = winograd_operands(rng, (1, channels, 6, 5), 2)
    assert isinstance(F.conv2d(x, w, b, padding=1)._ctx, Conv2dWinograd)
    assert isinstance(F.conv2d(x, w, b, stride=2, padding=1)._ctx, Conv2d)  # stride 2
    narrow = fn.tensor(
        rng.standard_normal((1, channels - 1, 6, 5)), dtype=np.float64, requires_grad=True
    )
    assert isinstance(
        F.conv2d(narrow, fn.tensor(np.ones((2, channels - 1, 3, 3)), dtype=np.float64))._ctx, Conv2d
    )
    assert isinstance(
        F.conv2d(x, fn.tensor(np.ones((2, channels, 3, 2)), dtype=np.float64))._ctx, Conv2d
    )  # not 3x3


@pytest.mark.parametrize(
    "shape, out_channels, padding",
    [
        ((2, 16, 5, 4), 3, 1),
        ((1, 17, 6, 7), 2, 0),
        ((2, 16, 3, 5), 3, (2, 1)),
        ((2, 16, 4, 3), 16, 1),
    ],  # as many output channels as input: no buffer shared
    ids=["odd-p1", "p0", "p2x1", "square"],
)
def test_winograd_conv2d_gradients(rng, shape, out_channels, padding):
    x, w, b = winograd_operands(rng, shape, out_channels)
    y = F.conv2d(x, w, b, padding=padding)
    assert isinstance(y._ctx, Conv2dWinograd)
    expected = conv_kernels.reference_conv2d(x.numpy(), w.numpy(), b.numpy(), 1, padding)
    assert np.abs(y.numpy() - expected).max() <= 1e-12 * np.abs(expected).max()
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, padding=padding), [x, w, b])


def test_winograd_agrees_with_im2col_in_uneven_chunks(rng, small_conv_workspace):
    """Outputs and all three gradients, float32, 7 images in chunks of 3, 3 and 1 against im2col
    in one chunk: two algorithms, the same convolution to float32 rounding."""
    x, w, b = winograd_operands(rng, (7, 16, 9, 7), 5, np.float32)
    upstream = fn.tensor(rng.standard_normal((7, 5, 9, 7)).astype(np.float32))
    results = {}
    for name, function, images in (("im2col", Conv2d, 7), ("winograd", Conv2dWinograd, 3)):
        tiles_per_image = 5 * 4
        small_conv_workspace(
            images, 16 * (16 + 5) * tiles_per_image * 4 if name == "winograd" else 10**9
        )
        for t in (x, w, b):
            t.grad = None
        params = (
            {"padding": (1, 1)} if name == "winograd" else {"stride": (1, 1), "padding": (1, 1)}
        )
        y = function.apply(x, w, b, **params)
        if name == "winograd":
            assert y._ctx.chunk_images == 3  # chunks of 3, 3 and 1
        (y * upstream).sum().backward()
        results[name] = [y.numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()]
    for got, expected in zip(results["winograd"], results["im2col"], strict=True):
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_winograd_spreads_a_non_finite_input_as_far_as_a_direct_convolution(rng, bad):
    """The outputs a NaN or inf pixel reaches are those whose 3x3 window holds it, at an edge, a
    tile corner and inside a tile (an inf may come out as NaN: inf - inf in the transforms)."""
    w = rng.standard_normal((2, 16, 3, 3)).astype(np.float32)
    for row, col in ((0, 6), (2, 2), (3, 4), (5, 0)):
        x = rng.standard_normal((1, 16, 6, 7)).astype(np.float32)
        x[0, 5, row, col] = bad
        y = F.conv2d(fn.tensor(x), fn.tensor(w, requires_grad=True), padding=1)
        assert isinstance(y._ctx, Conv2dWinograd)
        expected = conv_kernels.reference_conv2d(x, w, None, 1, 1)
        np.testing.assert_array_equal(~np.isfinite(y.numpy()), ~np.isfinite(expected))


@pytest.mark.skipif(
    not fn.backend.cuda_is_available(), reason="needs the cuda device (GPU or simulator)"
)
def test_winograd_layer_on_cuda_matches_cpu(rng):
    """Forward and backward of a Winograd layer on the cuda device (the whole batch one chunk, the
    CUDA transforms, the tiled matmul over the 16 tile matrices) against the CPU's (chunks, spaced
    buffers, BLAS). One layer, one step: in the simulator each of its batched GEMMs is 16 blocks."""
    values = [
        rng.standard_normal((2, 16, 4, 5)),
        rng.standard_normal((3, 16, 3, 3)) / 3,
        rng.standard_normal(3),
    ]
    upstream = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    results = {}
    for device in ("cpu", "cuda"):
        leaves = [fn.tensor(v, dtype=np.float32, device=device, requires_grad=True) for v in values]
        y = F.conv2d(*leaves, padding=1)
        assert isinstance(y._ctx, Conv2dWinograd)
        (y * fn.tensor(upstream, device=device)).sum().backward()
        results[device] = [y.numpy(), *(t.grad.numpy() for t in leaves)]
    for got, expected in zip(results["cuda"], results["cpu"], strict=True):
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize(
    "needs_grad",
    [(True, False, False), (False, True, False), (False, False, True)],
    ids=["x", "w", "b"],
)
def test_winograd_any_subset_of_gradients(rng, needs_grad):
    values = [t.numpy() for t in winograd_operands(rng, (3, 16, 5, 6), 4)]
    upstream = fn.tensor(rng.standard_normal((3, 4, 5, 6)))

    def gradients(flags):
        leaves = [
            fn.tensor(v, dtype=np.float64, requires_grad=flag)
            for v, flag in zip(values, flags, strict=True)
        ]
        (F.conv2d(*leaves, padding=1) * upstream).sum().backward()
        return [None if t.grad is None else t.grad.numpy() for t in leaves]

    everything = gradients((True, True, True))
    for got, flag, expected in zip(gradients(needs_grad), needs_grad, everything, strict=True):
        assert (got is not None) == flag
        if flag:
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), 0)])
def test_max_pool_gradients(kernel, stride, padding, rng):
    # distinct values so every window has a unique maximum (finite differences are then exact)
    values = rng.permutation(2 * 3 * 7 * 9).reshape(2, 3, 7, 9) / 10.0
    x = fn.tensor(values, dtype=np.float64, requires_grad=True)
    assert gradcheck(lambda x: F.max_pool2d(x, kernel, stride, padding), [x])


def test_max_pool_matches_reference(rng):
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    got = F.max_pool2d(fn.tensor(x), 3, 2, 1).numpy()
    expected, _ = pool_kernels.reference_maxpool2d_forward(x, (3, 3), (2, 2), (1, 1))
    np.testing.assert_array_equal(got, expected.astype(np.float32))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_gradients(reduction, smoothing, rng):
    logits = leaf(rng, 5, 7, scale=3.0)
    labels = rng.integers(0, 7, 5)
    assert gradcheck(
        lambda z: F.cross_entropy(z, labels, label_smoothing=smoothing, reduction=reduction),
        [logits],
    )


def test_cross_entropy_matches_reference_and_handles_large_logits(rng):
    logits = (rng.standard_normal((6, 10)) * 200).astype(np.float32)
    labels = rng.integers(0, 10, 6)
    got = F.cross_entropy(fn.tensor(logits), fn.tensor(labels)).item()
    rows, _ = xent_kernels.reference_softmax_xent(logits.astype(np.float64), labels)
    assert np.isfinite(got)
    assert abs(got - rows.mean()) / abs(rows.mean()) < 1e-5


def test_cross_entropy_rejects_bad_labels(rng):
    logits = fn.tensor(rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match="4"):
        F.cross_entropy(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"batch_size \(3\) to match target batch_size \(2\)"):
        F.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(TypeError, match="integers"):
        F.cross_entropy(logits, np.array([0.0, 1.0, 2.0]))


@pytest.mark.parametrize("loss", [F.mse_loss, F.l1_loss])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_loss_gradients(loss, reduction, rng):
    a, b = leaf(rng, 3, 4), leaf(rng, 3, 4)
    assert gradcheck(lambda a, b: loss(a, b, reduction=reduction), [a, b])


def test_regression_loss_values(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    assert np.isclose(
        F.mse_loss(fn.tensor(a, dtype=np.float64), fn.tensor(b, dtype=np.float64)).item(),
        ((a - b) ** 2).mean(),
    )
    assert np.isclose(
        F.l1_loss(fn.tensor(a, dtype=np.float64), fn.tensor(b, dtype=np.float64)).item(),
        np.abs(a - b).mean(),
    )
    with pytest.raises(ValueError, match=r"\(3, 4\) and target of shape \(4, 3\)"):
        F.mse_loss(fn.tensor(a), fn.tensor(b.T))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_gradients_and_values(approximate, rng):
    x = leaf(rng, 4, 5, scale=2.0)
    assert gradcheck(lambda x: F.gelu(x, approximate), [x])
    from math import erfc, pi, sqrt, tanh

    v = x.numpy()
    if approximate == "none":  # Φ through erfc: 1 + erf(t/√2) cancels in the left tail
        expected = np.vectorize(lambda t: 0.5 * t * erfc(-t / sqrt(2)))(v)
    else:
        expected = np.vectorize(
            lambda t: 0.5 * t * (1 + tanh(sqrt(2 / pi) * (t + 0.044715 * t**3)))
        )(v)
    np.testing.assert_allclose(F.gelu(x, approximate).numpy(), expected, rtol=1e-12)


def test_leaky_relu_and_softmax_gradients(rng):
    x = leaf(rng, 3, 6)
    assert gradcheck(lambda x: F.leaky_relu(x, 0.2), [x])
    assert gradcheck(lambda x: F.softmax(x, axis=1), [x])
    assert gradcheck(lambda x: F.log_softmax(x, axis=0), [x])
    np.testing.assert_allclose(F.softmax(x).numpy().sum(axis=1), np.ones(3))


def test_dropout_scales_kept_units_and_is_identity_in_eval(rng):
    fn.manual_seed(3)
    x = fn.tensor(rng.uniform(1, 2, (200, 50)))
    y = F.dropout(x, 0.3, training=True).numpy()
    kept = y != 0
    assert 0.65 < kept.mean() < 0.75
    np.testing.assert_allclose(y[kept], x.numpy()[kept] / 0.7, rtol=1e-6)
    assert F.dropout(x, 0.3, training=False) is x
    assert not F.dropout(x, 1.0).numpy().any()  # PyTorch's p = 1 zeroes everything
    with pytest.raises(ValueError, match="dropout probability"):
        F.dropout(x, 1.5)


@pytest.mark.parametrize("channels", [2, WINOGRAD_MIN_CHANNELS], ids=["im2col", "winograd"])
@pytest.mark.parametrize("needs", [(True, True, True), (False, True, True), (True, False, True)])
def test_conv2d_on_an_empty_batch_gives_empty_outputs_and_zero_gradients(rng, channels, needs):
    """PyTorch convolves a batch of 0 images: an empty output, zero weight and bias gradients."""
    x = fn.tensor(np.empty((0, channels, 5, 6), np.float32), requires_grad=needs[0])
    w = fn.tensor(rng.standard_normal((3, channels, 3, 3)), requires_grad=needs[1])
    b = fn.tensor(rng.standard_normal(3), requires_grad=needs[2])
    y = F.conv2d(x, w, b, padding=1)
    assert y.shape == (0, 3, 5, 6)
    y.sum().backward()
    for tensor, need in zip((x, w, b), needs, strict=True):
        if need:
            assert tensor.grad.shape == tensor.shape and tensor.grad.dtype == np.float32
            assert not np.any(tensor.grad.data)
        else:
            assert tensor.grad is None
