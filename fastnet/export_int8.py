"""Export an int8 model (:class:`fastnet.quantize.QuantizedModel`) to ONNX as a
quantize-dequantize (QDQ) graph, the form ONNX runtimes recognise and run in integer arithmetic.

Each of the model's steps becomes:

* the first quantized layer's input: QuantizeLinear → DequantizeLinear with its scale (int8 zero
  point 0), so the float images are rounded exactly as ``quant.quantize`` rounds them;
* a quantized Conv2d or Linear: its int8 weight codes as an int8 initializer, DequantizeLinear per
  output channel (axis 0, the weight scales), then Conv or Gemm (transB) with the float bias;
  Relu when the layer's epilogue has one, MaxPool when a pooling is fused into it; then, unless
  it is the last quantized layer, QuantizeLinear → DequantizeLinear with the next layer's input
  scale (the requantization);
* max-pooling, ReLU and flattening: MaxPool, Relu, Flatten.

onnxruntime, with its graph optimizations off, evaluates the graph as written, in float32 from the
dequantized values: fastnet's int8 results to float32 rounding, except where a requantized value
lies within that rounding of a tie and takes the neighbouring code (a few inputs in a hundred).
With them on, it fuses the pairs into integer kernels that also quantize the bias and requantize
in fixed point: nearby codes, not the same ones (:func:`check_quantized_with_onnxruntime`
reports both).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .bench.harness import relative_error
from .export import MIN_OPSET, _Graph, _onnx, save_graph
from .extras import install_hint
from .quantize import QuantizedModel

__all__ = ["export_quantized_onnx", "check_quantized_with_onnxruntime"]


def _int8(graph: _Graph, array: np.ndarray, hint: str) -> str:
    name = graph._name(hint)
    graph.initializers.append(graph.numpy_helper.from_array(np.asarray(array, np.int8), name))
    return name


def _round_trip(graph: _Graph, source: str, scale: float) -> str:
    """QuantizeLinear then DequantizeLinear at ``scale``, zero point 0 (int8)."""
    scale_name = graph.constant(np.float32(scale), "scale")
    zero = _int8(graph, np.int8(0), "zero_point")
    codes = graph.node("QuantizeLinear", [source, scale_name, zero])
    return graph.node("DequantizeLinear", [codes, scale_name, zero])


def export_quantized_onnx(
    model: QuantizedModel,
    path: str | os.PathLike,
    input_shape: tuple[int, ...],
    opset: int = MIN_OPSET,
) -> Path:
    """Write ``model`` as a QDQ ONNX graph (input ``input``, (batch, *input_shape) float32;
    output ``output``, the float logits), checked by ``onnx.checker``."""
    onnx = _onnx()
    graph = _Graph(onnx)
    x = "input"
    quantized_input = False
    for step in model.steps:
        if step.kind == "affine":
            if not quantized_input:
                x, quantized_input = _round_trip(graph, x, step.input_scale), True
            channels = len(step.weight)
            weight = graph.node(
                "DequantizeLinear",
                [
                    _int8(graph, step.weight, "weight_codes"),
                    graph.constant(step.weight_scale, "weight_scale"),
                    _int8(graph, np.zeros(channels, np.int8), "weight_zero_point"),
                ],
                axis=0,
            )
            bias = graph.constant(step.bias, "bias")
            if step.weight.ndim == 4:
                size = list(step.weight.shape[2:])
                x = graph.node(
                    "Conv",
                    [x, weight, bias],
                    kernel_shape=size,
                    strides=[step.stride] * 2,
                    pads=[step.padding] * 4,
                )
            else:
                x = graph.node("Gemm", [x, weight, bias], transB=1)
            if step.relu:
                x = graph.node("Relu", [x])
            if step.pool:  # fused into the kernel; before or after requantization, the same
                x = graph.node(
                    "MaxPool", [x], kernel_shape=[step.pool] * 2, strides=[step.pool] * 2
                )
            if step.output_scale is not None:
                x = _round_trip(graph, x, step.output_scale)
        elif step.kind == "pool":
            x = graph.node("MaxPool", [x], kernel_shape=[step.pool] * 2, strides=[step.pool] * 2)
        elif step.kind == "relu":
            x = graph.node("Relu", [x])
        else:
            x = graph.node("Flatten", [x], axis=1)
    classes = model(np.zeros((1, *input_shape), np.float32)).shape[1]
    return save_graph(graph, x, input_shape, (classes,), opset, path, "fastnet-int8")


def check_quantized_with_onnxruntime(
    model: QuantizedModel, path: str | os.PathLike, inputs: Any
) -> dict[str, float]:
    """onnxruntime against fastnet's int8 model on ``inputs``: ``unfused`` and ``fused``, max
    |difference| / max |fastnet| with onnxruntime's graph optimizations off (the QDQ graph
    evaluated as written, in float) and on (integer kernels that also quantize the bias and
    requantize in fixed point); ``unfused_equal``, the fraction of inputs whose outputs agree
    unfused to float32 rounding (1e-5 of the largest), the rest having met a rounding tie."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            f"checking an ONNX file needs onnxruntime: {install_hint('onnx')}"
        ) from None
    batch = np.ascontiguousarray(inputs, dtype=np.float32)
    expected = model(batch).numpy()
    levels = onnxruntime.GraphOptimizationLevel
    errors = {}
    for key, level in (("unfused", levels.ORT_DISABLE_ALL), ("fused", levels.ORT_ENABLE_ALL)):
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = level
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        (got,) = session.run(None, {"input": batch})
        errors[key] = relative_error(got, expected)
        if key == "unfused":
            close = np.abs(got - expected) <= 1e-5 * np.abs(expected).max()
            errors["unfused_equal"] = float(close.reshape(len(batch), -1).all(axis=1).mean())
    return errors
