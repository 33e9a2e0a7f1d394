"""Post-training int8 quantization (fastnet.quantize) and quantization-aware training
(fastnet.qat, F.fake_quantize_*): the int8 model against the float model and the error its
scales predict, the weight codes, calibration, the file, the refusals; fake quantization against
PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet as fn
from fastnet import models, nn, qat, quantize
from fastnet.functional.quantization import (
    fake_quantize_per_channel_affine,
    fake_quantize_per_tensor_affine,
)


def images(rng, count, channels=1, side=28):
    return rng.random((count, channels, side, side)).astype(np.float32)


def float_logits(model, x):
    with fn.no_grad():
        return model(fn.Tensor(x)).data.astype(np.float64)


def cnn_with_batchnorm(rng):
    """A chain with BatchNorm2d after a strided convolution, carrying non-trivial statistics."""
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(5 * 3 * 3, 7),
    )
    norm = model[1]
    norm.running_mean.data[:] = rng.normal(0, 0.3, 6).astype(np.float32)
    norm.running_var.data[:] = rng.uniform(0.5, 2.0, 6).astype(np.float32)
    norm.weight.data[:] = rng.uniform(0.5, 1.5, 6).astype(np.float32)
    norm.bias.data[:] = rng.normal(0, 0.2, 6).astype(np.float32)
    return model.eval()


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda rng: models.mnist_cnn().eval(), (1, 28)),
        (lambda rng: models.mlp(hidden=(37, 19)).eval(), (1, 28)),
        (cnn_with_batchnorm, (3, 15)),
    ],
    ids=["mnist_cnn", "mlp", "conv_bn_stride"],
)
def test_logits_within_the_error_the_scales_predict(rng, build, shape):
    fn.manual_seed(int(rng.integers(1 << 30)))
    model = build(rng)
    x = images(rng, 48, *shape)
    quantized = quantize.quantize_model(model, [x[:20], x[20:]])
    error = quantized(fn.Tensor(x)).data - float_logits(model, x)
    predicted = quantize.predicted_error(quantized, x)
    assert np.isfinite(predicted).all() and (predicted > 0).all()
    # the errors are of the predicted size: not larger (z) and not far smaller (the prediction
    # is no loose bound that any result would meet)
    assert np.abs(error / predicted).max() < 5.0
    rms_ratio = np.sqrt(np.mean(error**2) / np.mean(predicted**2))
    assert 0.3 < rms_ratio < 1.5, rms_ratio


def test_float_layers_before_the_first_quantized_one_and_a_trailing_relu(rng):
    model = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(12, 5), nn.ReLU())
    x = rng.normal(size=(9, 3, 4)).astype(np.float32)
    quantized = quantize.quantize_model(model, [x])
    out = quantized(fn.Tensor(x)).data
    assert out.dtype == np.float32 and out.shape == (9, 5) and (out >= 0).all()
    z = (out - float_logits(model, x)) / np.maximum(quantize.predicted_error(quantized, x), 1e-12)
    assert np.abs(z).max() < 5.0


def test_weight_codes_per_output_channel(rng):
    weight = rng.normal(size=(5, 3, 3, 3)).astype(np.float32) * np.array([1, 10, 0.01, 1, 0])[
        :, None, None, None
    ].astype(np.float32)
    codes, scales = quantize.weight_codes(weight)
    assert codes.dtype == np.int8 and scales.dtype == np.float32 and scales.shape == (5,)
    assert np.abs(codes[:4]).reshape(4, -1).max(axis=1).tolist() == [127] * 4
    assert scales[4] == 1.0 and not codes[4].any()  # an all-zero channel
    restored = codes * scales[:, None, None, None]
    assert (np.abs(restored - weight) <= scales[:, None, None, None] / 2 * (1 + 1e-6)).all()


def test_range_observer_minmax_and_percentile(rng):
    batches = [rng.normal(0, sigma, 5000) for sigma in (0.5, 2.0, 1.0)]  # the range grows
    everything = np.abs(np.concatenate(batches))
    minmax, percentile = quantize.RangeObserver("minmax"), quantize.RangeObserver("percentile", 99)
    for batch in batches:
        minmax.observe(batch)
        percentile.observe(batch)
    assert minmax.range() == everything.max()
    assert minmax.scale() == everything.max() / 127
    bin_width = percentile.top / quantize.HISTOGRAM_BINS
    assert abs(percentile.range() - np.percentile(everything, 99)) <= 2 * bin_width
    assert percentile.range() < minmax.range()
    with pytest.raises(ValueError, match="calibration method must be one of"):
        quantize.RangeObserver("entropy?")
    with pytest.raises(ValueError, match="non-finite"):
        minmax.observe(np.array([1.0, np.nan]))


def test_file_round_trip_and_size(rng, tmp_path):
    model = models.mnist_cnn().eval()
    x = images(rng, 16)
    quantized = quantize.quantize_model(model, [x], "percentile", config={"model": "cnn"})
    path = quantize.save_quantized(quantized, tmp_path / "int8.safetensors")
    loaded = quantize.load_quantized(path)
    assert loaded.config == {"model": "cnn"}
    np.testing.assert_array_equal(loaded(fn.Tensor(x)).data, quantized(fn.Tensor(x)).data)
    float_file = fn.save(model.state_dict(), tmp_path / "float.safetensors")
    assert path.stat().st_size <= 0.27 * float_file.stat().st_size
    assert loaded.num_parameters() == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="not an int8 model"):
        quantize.load_quantized(float_file)


@pytest.mark.parametrize(
    "layer, message",
    [
        (nn.Conv2d(3, 6, 3, groups=3), "needs groups=1"),
        (nn.AvgPool2d(2), "AvgPool2d.*has no int8 form"),
        (nn.Conv2d(3, 4, 3, stride=(1, 2)), "has a stride of"),
        (nn.MaxPool2d(3, stride=2), "stride = kernel size"),
    ],
    ids=["groups", "avgpool", "stride", "pool"],
)
def test_unsupported_layers_are_named(layer, message):
    model = nn.Sequential(nn.Conv2d(3, 3, 1), layer)
    with pytest.raises(quantize.UnsupportedLayerError, match=message):
        quantize.quantize_model(model, input_scales={})


def test_calibration_arguments():
    model = models.mlp(hidden=(8,))
    with pytest.raises(ValueError, match="not both or neither"):
        quantize.quantize_model(model)
    with pytest.raises(ValueError, match="at least one batch"):
        quantize.quantize_model(model, [])
    with pytest.raises(ValueError, match="no input scale for head"):
        quantize.quantize_model(model, input_scales={"features.1": 0.1})


# --------------------------------------------------------------------- fake quantization vs PyTorch
@pytest.mark.parametrize("quant_range", [(-128, 127), (0, 255), (-7, 7)])
def test_fake_quantize_per_tensor_matches_pytorch(rng, quant_range):
    torch = pytest.importorskip("torch")
    low, high = quant_range
    zero_point = int(rng.integers(low, high + 1))
    scale = float(rng.uniform(0.01, 0.1))
    values = rng.normal(0, 3.0, (17, 5)).astype(np.float32)
    values[0, :3] = (np.array([0.5, 1.5, -2.5]) + zero_point * 0) * np.float32(scale)  # ties
    x = fn.Tensor(values, requires_grad=True)
    y = fake_quantize_per_tensor_affine(x, scale, zero_point, low, high)
    upstream = rng.normal(size=values.shape).astype(np.float32)
    y.backward(fn.Tensor(upstream))
    tx = torch.tensor(values, requires_grad=True)
    ty = torch.fake_quantize_per_tensor_affine(tx, scale, zero_point, low, high)
    ty.backward(torch.tensor(upstream))
    np.testing.assert_array_equal(y.data, ty.detach().numpy())
    np.testing.assert_array_equal(x.grad.data, tx.grad.numpy())
    assert 0 < (x.grad.data == 0).mean() < 1  # some values clipped, some not


def test_fake_quantize_per_channel_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    values = rng.normal(0, 2.0, (3, 6, 4)).astype(np.float32)
    scale = rng.uniform(0.005, 0.05, 6)
    zero_point = rng.integers(-10, 10, 6)
    x = fn.Tensor(values, requires_grad=True)
    y = fake_quantize_per_channel_affine(x, scale, zero_point, 1, -128, 127)
    y.sum().backward()
    tx = torch.tensor(values, requires_grad=True)
    ty = torch.fake_quantize_per_channel_affine(
        tx,
        torch.tensor(scale, dtype=torch.float32),
        torch.tensor(zero_point, dtype=torch.int32),
        1,
        -128,
        127,
    )
    ty.sum().backward()
    np.testing.assert_array_equal(y.data, ty.detach().numpy())
    np.testing.assert_array_equal(x.grad.data, tx.grad.numpy())
    with pytest.raises(ValueError, match=r"scale must have shape \(6,\)"):
        fake_quantize_per_channel_affine(x, scale[:5], zero_point[:5], 1, -128, 127)
    with pytest.raises(ValueError, match="positive finite"):
        fake_quantize_per_tensor_affine(x, 0.0, 0, -128, 127)
    with pytest.raises(ValueError, match="must not exceed"):
        fake_quantize_per_tensor_affine(x, 0.1, 0, 5, 4)


def test_quantization_aware_training_then_convert(rng):
    fn.manual_seed(3)
    model = models.mnist_cnn(image_size=12).train()
    prepared = qat.prepare_qat(model)
    assert type(prepared.features[0]) is qat.QATConv2d and type(model.features[0]) is nn.Conv2d
    optimizer = fn.optim.SGD(prepared.parameters(), lr=0.05, momentum=0.9)
    x = images(rng, 32, 1, 12)
    labels = fn.Tensor(rng.integers(0, 10, 32))
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(prepared(fn.Tensor(x)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None and np.abs(p.grad.data).sum() > 0 for p in prepared.parameters())
    prepared.eval()
    scales = qat.input_scales(prepared)
    assert set(scales) == {"features.0", "features.3", "head.1", "head.3"}
    converted = qat.convert(prepared)
    # the int8 model rounds as training did: equal to the fake-quantized float model up to float
    # rounding (a rare value on a rounding tie may take the other code)
    simulated = float_logits(prepared, x)
    out = converted(fn.Tensor(x)).data
    close = np.isclose(out, simulated, rtol=1e-4, atol=1e-4 * np.abs(simulated).max())
    assert close.mean() > 0.95, close.mean()
    with pytest.raises(ValueError, match="has seen no input"):
        qat.input_scales(qat.prepare_qat(models.mnist_cnn(image_size=12)))


def test_the_int8_model_on_the_cuda_device_equals_the_cpu_one(rng):
    """The same int8 model through the CUDA kernels (the simulator here; a GPU where there is
    one): the same codes, so float32 logits equal to the epilogue's rounding."""
    fn.manual_seed(11)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 4),
    ).eval()
    x = rng.random((2, 2, 6, 6)).astype(np.float32)
    on_cpu = quantize.quantize_model(model, [x])
    on_cuda = on_cpu.to("cuda")
    got = on_cuda(fn.Tensor(x, device="cuda"))
    assert got.device == "cuda"
    expected = on_cpu(fn.Tensor(x)).data
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_onnx_qdq_export_runs_in_onnxruntime_as_fastnet_computes(rng, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from fastnet import export_int8

    fn.manual_seed(5)
    model = cnn_with_batchnorm(rng)
    x = images(rng, 40, 3, 15)
    quantized = quantize.quantize_model(model, [x])
    path = export_int8.export_quantized_onnx(quantized, tmp_path / "int8.onnx", (3, 15, 15))
    errors = export_int8.check_quantized_with_onnxruntime(quantized, path, x)
    # as written, the graph is fastnet's arithmetic: equal to float32 rounding but for the rare
    # input whose requantization met a tie
    assert errors["unfused_equal"] >= 0.9 and errors["unfused"] < 0.05
    assert errors["fused"] < 0.05  # onnxruntime's own int8 kernels: nearby codes

    import onnx

    graph = onnx.load(path).graph
    kinds = [node.op_type for node in graph.node]
    assert kinds.count("QuantizeLinear") == 3  # the input, and after each of the first two layers
    assert kinds.count("DequantizeLinear") == 3 + 3  # those, and the three weights
    codes = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims]
    assert sum(np.prod(t.dims) for t in codes) >= sum(
        s.weight.size for s in quantized.steps if s.kind == "affine"
    )
