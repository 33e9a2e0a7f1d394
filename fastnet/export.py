"""Export a trained float model to ONNX: ``fastnet export MODEL_FILE --format onnx``.

:func:`export_onnx` walks a fastnet Module in eval mode and writes an ONNX graph (built with the
``onnx`` package, the ``onnx`` extra; opset 17 by default, float32 weights as initializers, the
batch dimension dynamic: every Reshape copies it with 0). One emitter per layer type, in
:data:`EMITTERS`; a module whose class is not there, and whose forward is not inherited from a
class that is, is refused with :class:`UnsupportedLayerError` naming it. What each layer becomes:

* Sequential, Classifier (and ViT), TransformerEncoder: their children in forward order.
* Linear: Gemm on (N, in) inputs; MatMul (weight transposed) + Add on higher-rank inputs.
* Conv2d: Conv (stride, padding including "same"/"valid", dilation, groups); padding modes
  reflect and replicate put a Pad (reflect, edge) in front. Circular padding is not supported.
* BatchNorm1d/2d: BatchNormalization with the running statistics (eval mode); a BatchNorm that
  tracks no running statistics is not supported (it normalises with batch statistics always).
* ReLU, LeakyReLU, Sigmoid, Tanh: Relu, LeakyRelu, Sigmoid, Tanh; GELU: its formula from Erf
  (exact) or Tanh (approximate="tanh"), since opset 17 has no Gelu.
* MaxPool2d (not return_indices), AvgPool2d (not divisor_override): MaxPool, AveragePool.
* AdaptiveAvgPool2d: GlobalAveragePool for a 1×1 output, else AveragePool when the bins are
  equal (input divisible by output); unequal bins are not supported.
* Flatten: Flatten (start_dim 1 to the end) or Reshape; Identity and Dropout*: nothing.
* LayerNorm: LayerNormalization (opset 17).
* the ResNet's BasicBlock: conv, BN, Relu, conv, BN, Add of the shortcut, Relu.
* TransformerEncoderLayer (relu or gelu, pre- or post-norm, without masks) and its
  MultiheadAttention: projections, heads by Reshape/Transpose, MatMul, Softmax, MatMul.
* the ViT's PatchEmbedding (Conv, Reshape, Transpose), class token (Expand to the batch, then
  Concat), PositionalEmbedding (Add), and the class token's output (Gather).

Every other layer, attention masks, integer or float64 models are not supported.
:func:`check_with_onnxruntime` runs the file with ``onnxruntime`` and returns its relative
error against fastnet's forward pass.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import functional as F
from . import models, nn
from .bench.harness import relative_error
from .checkpoint import FORMAT, load
from .evaluate import load_model
from .extras import install_hint
from .models.resnet import BasicBlock
from .models.vit import PatchEmbedding, ViTFeatures
from .nn.normalization import _BatchNorm
from .nn.summary import eval_mode
from .tensor import Tensor, cat, no_grad

__all__ = [
    "EMITTERS",
    "TOLERANCE",
    "UnsupportedLayerError",
    "export_onnx",
    "check_with_onnxruntime",
    "load_model_file",
]

MIN_OPSET = 17  # LayerNormalization appeared in opset 17
TOLERANCE = 1e-5  # the relative error a float32 export may have against fastnet


class UnsupportedLayerError(ValueError):
    """A layer (or a setting of one) that has no ONNX emitter."""


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(f"ONNX export needs the onnx package: {install_hint('onnx')}") from None
    return onnx


@dataclass
class _Value:
    """A tensor of the graph: its ONNX name, and fastnet's value of it for the sample batch (which
    gives the shapes the emitters need)."""

    name: str
    tensor: Tensor


class _Graph:
    """The nodes and initializers emitted so far, with unique names."""

    def __init__(self, onnx: Any) -> None:
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, array: Any, hint: str = "const") -> str:
        """An initializer: float arrays as float32, integer ones as int64 (shapes, indices)."""
        array = np.asarray(array.numpy() if isinstance(array, Tensor) else array)
        # order "C" and not ascontiguousarray, which would turn a scalar into a vector
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32, order="C")
        name = self._name(hint)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], **attributes: Any) -> str:
        output = self._name(op.lower())
        self.nodes.append(self.helper.make_node(op, inputs, [output], **attributes))
        return output

    def op(self, op: str, inputs: list[str], tensor: Tensor, **attributes: Any) -> _Value:
        return _Value(self.node(op, inputs, **attributes), tensor)


Emitter = Callable[[_Graph, Any, _Value], _Value]


def _emit(graph: _Graph, module: Any, x: _Value) -> _Value:
    """The emitter of the module's class, or of the nearest base class whose forward it keeps."""
    for cls in type(module).__mro__:
        if cls in EMITTERS and type(module).forward is cls.forward:
            return EMITTERS[cls](graph, module, x)
    raise UnsupportedLayerError(
        f"ONNX export: no emitter for the layer {type(module).__name__}"
        f"({module.extra_repr()}); supported: "
        + ", ".join(sorted(cls.__name__.lstrip("_") for cls in EMITTERS))
    )


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * 2


def _refuse(module: Any, why: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(f"ONNX export: {type(module).__name__} {why} is not supported")


# ===================================================================== containers
def _sequential(graph: _Graph, module: Any, x: _Value) -> _Value:
    for child in module.children():
        x = _emit(graph, child, x)
    return x


def _classifier(graph: _Graph, module: Any, x: _Value) -> _Value:
    return _emit(graph, module.head, _emit(graph, module.features, x))


def _identity(graph: _Graph, module: Any, x: _Value) -> _Value:
    return x  # Dropout too: the model is in eval mode


# ===================================================================== dense and convolution
def _dense(graph: _Graph, source: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
    """source·weightᵀ + bias for a source of any rank: MatMul, then Add."""
    product = graph.node("MatMul", [source, graph.constant(weight.T, "weight")])
    return product if bias is None else graph.node("Add", [product, graph.constant(bias, "bias")])


def _linear(graph: _Graph, module: Any, x: _Value) -> _Value:
    out = module(x.tensor)
    bias = module.bias.numpy() if module.bias is not None else None
    if x.tensor.ndim != 2:  # Gemm takes matrices only
        return _Value(_dense(graph, x.name, module.weight.numpy(), bias), out)
    inputs = [x.name, graph.constant(module.weight, "weight")]
    if bias is not None:
        inputs.append(graph.constant(bias, "bias"))
    return graph.op("Gemm", inputs, out, transB=1)


_PAD_MODES = {"reflect": "reflect", "replicate": "edge"}


def _conv2d(graph: _Graph, module: Any, x: _Value) -> _Value:
    out = module(x.tensor)
    # the layer's own (left, right, top, bottom) widths, "same" and "valid" resolved
    left, right, top, bottom = module._reversed_padding_repeated_twice
    pads, source = [top, left, bottom, right], x.name
    if module.padding_mode != "zeros":
        if module.padding_mode not in _PAD_MODES:
            raise _refuse(module, f"with padding_mode={module.padding_mode!r}")
        widths = graph.constant(np.array([0, 0, top, left, 0, 0, bottom, right]), "pads")
        source = graph.node("Pad", [x.name, widths], mode=_PAD_MODES[module.padding_mode])
        pads = [0, 0, 0, 0]
    inputs = [source, graph.constant(module.weight, "weight")]
    if module.bias is not None:
        inputs.append(graph.constant(module.bias, "bias"))
    return graph.op(
        "Conv",
        inputs,
        out,
        kernel_shape=_pair(module.kernel_size),
        strides=_pair(module.stride),
        dilations=_pair(module.dilation),
        group=module.groups,
        pads=pads,
    )


# ===================================================================== normalisation
def _batch_norm(graph: _Graph, module: Any, x: _Value) -> _Value:
    if module.running_mean is None:
        raise _refuse(module, "without running statistics (track_running_stats=False)")
    ones = np.ones(module.num_features, np.float32)
    scale = module.weight if module.weight is not None else ones
    shift = module.bias if module.bias is not None else np.zeros_like(ones)
    inputs = [
        x.name,
        graph.constant(scale, "scale"),
        graph.constant(shift, "shift"),
        graph.constant(module.running_mean, "running_mean"),
        graph.constant(module.running_var, "running_var"),
    ]
    return graph.op("BatchNormalization", inputs, module(x.tensor), epsilon=module.eps)


def _layer_norm(graph: _Graph, module: Any, x: _Value) -> _Value:
    shape = module.normalized_shape
    weight = module.weight if module.weight is not None else np.ones(shape, np.float32)
    inputs = [x.name, graph.constant(weight, "scale")]
    if module.bias is not None:
        inputs.append(graph.constant(module.bias, "shift"))
    return graph.op(
        "LayerNormalization", inputs, module(x.tensor), axis=-len(shape), epsilon=module.eps
    )


# ===================================================================== activations
def _elementwise(op: str) -> Emitter:
    def emit(graph: _Graph, module: Any, x: _Value) -> _Value:
        return graph.op(op, [x.name], module(x.tensor))

    return emit


def _then_relu(emit: Emitter) -> Emitter:
    """A fused layer (ConvReLU2d, LinearReLU): its layer's nodes, then a Relu."""

    def emit_fused(graph: _Graph, module: Any, x: _Value) -> _Value:
        layer = emit(graph, module, x)  # its tensor is already the fused layer's output
        return graph.op("Relu", [layer.name], layer.tensor)

    return emit_fused


def _leaky_relu(graph: _Graph, module: Any, x: _Value) -> _Value:
    return graph.op("LeakyRelu", [x.name], module(x.tensor), alpha=module.negative_slope)


def _gelu_nodes(graph: _Graph, x: _Value, approximate: str, out: Tensor) -> _Value:
    """0.5·x·(1 + erf(x/√2)), or 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) for "tanh"."""
    if approximate == "tanh":
        cube = graph.node("Mul", [x.name, graph.node("Mul", [x.name, x.name])])
        inner = graph.node("Add", [x.name, graph.node("Mul", [cube, graph.constant(0.044715)])])
        scaled = graph.node("Mul", [inner, graph.constant(math.sqrt(2 / math.pi))])
        curve = graph.node("Tanh", [scaled])
    else:
        curve = graph.node("Erf", [graph.node("Div", [x.name, graph.constant(math.sqrt(2))])])
    gate = graph.node("Add", [curve, graph.constant(1.0)])
    half = graph.node("Mul", [x.name, graph.constant(0.5)])
    return graph.op("Mul", [half, gate], out)


def _gelu(graph: _Graph, module: Any, x: _Value) -> _Value:
    return _gelu_nodes(graph, x, module.approximate, module(x.tensor))


# ===================================================================== pooling and shape
def _max_pool(graph: _Graph, module: Any, x: _Value) -> _Value:
    if module.return_indices:
        raise _refuse(module, "with return_indices=True")
    return graph.op(
        "MaxPool",
        [x.name],
        module(x.tensor),
        kernel_shape=_pair(module.kernel_size),
        strides=_pair(module.stride),
        dilations=_pair(module.dilation),
        pads=_pair(module.padding) * 2,
        ceil_mode=int(module.ceil_mode),
    )


def _avg_pool(graph: _Graph, module: Any, x: _Value) -> _Value:
    if module.divisor_override is not None:
        raise _refuse(module, "with divisor_override")
    return graph.op(
        "AveragePool",
        [x.name],
        module(x.tensor),
        kernel_shape=_pair(module.kernel_size),
        strides=_pair(module.stride),
        pads=_pair(module.padding) * 2,
        ceil_mode=int(module.ceil_mode),
        count_include_pad=int(module.count_include_pad),
    )


def _adaptive_avg_pool(graph: _Graph, module: Any, x: _Value) -> _Value:
    out = module(x.tensor)
    (height, width), (rows, columns) = x.tensor.shape[-2:], out.shape[-2:]
    if (rows, columns) == (1, 1):
        return graph.op("GlobalAveragePool", [x.name], out)
    if height % rows or width % columns:
        raise _refuse(module, f"from {height}x{width} to unequal bins {rows}x{columns}")
    window = [height // rows, width // columns]
    return graph.op("AveragePool", [x.name], out, kernel_shape=window, strides=window)


def _flatten(graph: _Graph, module: Any, x: _Value) -> _Value:
    out, rank = module(x.tensor), x.tensor.ndim
    start, end = module.start_dim % rank, module.end_dim % rank
    if start == 1 and end == rank - 1:
        return graph.op("Flatten", [x.name], out, axis=1)
    # 0 copies a leading axis (the batch stays dynamic), -1 is the merged one
    shape = [0] * start + [-1] + list(x.tensor.shape[end + 1 :])
    return graph.op("Reshape", [x.name, graph.constant(np.array(shape), "shape")], out)


# ===================================================================== ResNet
def _relu(graph: _Graph, x: _Value) -> _Value:
    return graph.op("Relu", [x.name], F.relu(x.tensor))


def _basic_block(graph: _Graph, module: Any, x: _Value) -> _Value:
    out = _relu(graph, _emit(graph, module.bn1, _emit(graph, module.conv1, x)))
    out = _emit(graph, module.bn2, _emit(graph, module.conv2, out))
    shortcut = _emit(graph, module.shortcut, x)
    summed = graph.op("Add", [out.name, shortcut.name], out.tensor + shortcut.tensor)
    return _relu(graph, summed)


# ===================================================================== transformer
def _self_attention(graph: _Graph, module: Any, x: _Value) -> _Value:
    """MultiheadAttention(x, x, x) without masks, as its forward computes it."""
    out, _ = module(x.tensor, x.tensor, x.tensor, need_weights=False)
    source = x.name
    if not module.batch_first:
        source = graph.node("Transpose", [source], perm=[1, 0, 2])
    width, heads = module.embed_dim, module.num_heads
    split = graph.constant(np.array([0, 0, heads, module.head_dim]), "shape")

    def project(part: int) -> str:  # (B, L, E) → (B, H, L, D)
        rows = slice(part * width, (part + 1) * width)
        bias = module.in_proj_bias.numpy()[rows] if module.in_proj_bias is not None else None
        projected = _dense(graph, source, module.in_proj_weight.numpy()[rows], bias)
        return graph.node(
            "Transpose", [graph.node("Reshape", [projected, split])], perm=[0, 2, 1, 3]
        )

    # scaled before the product, as fastnet's attention_weights does
    query = graph.node("Mul", [project(0), graph.constant(1 / math.sqrt(module.head_dim))])
    keys = graph.node("Transpose", [project(1)], perm=[0, 1, 3, 2])
    weights = graph.node("Softmax", [graph.node("MatMul", [query, keys])], axis=-1)
    heads_out = graph.node("MatMul", [weights, project(2)])
    merged = graph.node(
        "Reshape",
        [
            graph.node("Transpose", [heads_out], perm=[0, 2, 1, 3]),
            graph.constant(np.array([0, 0, width]), "shape"),
        ],
    )
    linear = module.out_proj
    bias = linear.bias.numpy() if linear.bias is not None else None
    projected = _dense(graph, merged, linear.weight.numpy(), bias)
    if module.batch_first:
        return _Value(projected, out)
    return graph.op("Transpose", [projected], out, perm=[1, 0, 2])


def _encoder_layer(graph: _Graph, module: Any, x: _Value) -> _Value:
    if module.activation not in (F.relu, F.gelu):
        raise _refuse(module, f"with the activation {module.activation!r}")

    def activation(v: _Value) -> _Value:
        if module.activation is F.relu:
            return _relu(graph, v)
        return _gelu_nodes(graph, v, "none", F.gelu(v.tensor))

    def add(a: _Value, b: _Value) -> _Value:
        return graph.op("Add", [a.name, b.name], a.tensor + b.tensor)

    def feed_forward(v: _Value) -> _Value:  # the dropouts are identities in eval mode
        return _emit(graph, module.linear2, activation(_emit(graph, module.linear1, v)))

    if module.norm_first:
        x = add(x, _self_attention(graph, module.self_attn, _emit(graph, module.norm1, x)))
        return add(x, feed_forward(_emit(graph, module.norm2, x)))
    x = _emit(graph, module.norm1, add(x, _self_attention(graph, module.self_attn, x)))
    return _emit(graph, module.norm2, add(x, feed_forward(x)))


def _encoder(graph: _Graph, module: Any, x: _Value) -> _Value:
    for layer in module.layers:
        x = _emit(graph, layer, x)
    return _emit(graph, module.norm, x) if module.norm is not None else x


def _positional_embedding(graph: _Graph, module: Any, x: _Value) -> _Value:
    positions = graph.constant(module.weight.numpy()[: x.tensor.shape[-2]], "positions")
    return graph.op("Add", [x.name, positions], module(x.tensor))


def _patch_embedding(graph: _Graph, module: Any, x: _Value) -> _Value:
    maps = _emit(graph, module.projection, x)  # (B, dim, h, w) → (B, h·w, dim)
    rows = graph.node("Reshape", [maps.name, graph.constant(np.array([0, 0, -1]), "shape")])
    return graph.op("Transpose", [rows], module(x.tensor), perm=[0, 2, 1])


def _vit_features(graph: _Graph, module: Any, x: _Value) -> _Value:
    module(x.tensor)  # fastnet's own checks of the input shape
    patches = _emit(graph, module.patch_embedding, x)
    batch, _, dim = patches.tensor.shape
    # the class token repeated over the batch, whose size only the input's shape knows
    size = graph.node(
        "Slice",
        [
            graph.node("Shape", [x.name]),
            graph.constant(np.array([0]), "start"),
            graph.constant(np.array([1]), "end"),
        ],
    )
    shape = graph.node("Concat", [size, graph.constant(np.array([1, dim]), "shape")], axis=0)
    tokens = graph.node("Expand", [graph.constant(module.class_token, "class_token"), shape])
    token_values = np.broadcast_to(module.class_token.numpy(), (batch, 1, dim))
    class_tokens = Tensor(np.ascontiguousarray(token_values), device=patches.tensor.device)
    joined = graph.op(
        "Concat", [tokens, patches.name], cat([class_tokens, patches.tensor], axis=1), axis=1
    )
    encoded = _emit(graph, module.encoder, _emit(graph, module.positions, joined))
    first = graph.constant(np.array(0), "index")  # a scalar index drops the token axis
    return graph.op("Gather", [encoded.name, first], encoded.tensor[:, 0], axis=1)


EMITTERS: dict[type, Emitter] = {
    nn.Sequential: _sequential,
    models.Classifier: _classifier,
    nn.Identity: _identity,
    nn.Dropout: _identity,
    nn.Linear: _linear,
    nn.Conv2d: _conv2d,
    nn.LinearReLU: _then_relu(_linear),
    nn.ConvReLU2d: _then_relu(_conv2d),
    _BatchNorm: _batch_norm,  # BatchNorm1d and BatchNorm2d, which keep its forward
    nn.LayerNorm: _layer_norm,
    nn.ReLU: _elementwise("Relu"),
    nn.Sigmoid: _elementwise("Sigmoid"),
    nn.Tanh: _elementwise("Tanh"),
    nn.LeakyReLU: _leaky_relu,
    nn.GELU: _gelu,
    nn.MaxPool2d: _max_pool,
    nn.AvgPool2d: _avg_pool,
    nn.AdaptiveAvgPool2d: _adaptive_avg_pool,
    nn.Flatten: _flatten,
    BasicBlock: _basic_block,
    nn.TransformerEncoderLayer: _encoder_layer,
    nn.TransformerEncoder: _encoder,
    nn.PositionalEmbedding: _positional_embedding,
    PatchEmbedding: _patch_embedding,
    ViTFeatures: _vit_features,
}


# ===================================================================== the file
def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: tuple[int, ...],
    opset: int = MIN_OPSET,
    *,
    seed: int = 0,
) -> Path:
    """Write ``model`` (eval mode; its modes restored after) as an ONNX file at ``path`` and
    return the path. ``input_shape`` is one sample's shape, (C, H, W) for images; the graph's
    input ``input`` is (batch, *input_shape) with the batch dynamic, its output ``output``.

    One forward pass on a random batch (``seed``) gives the emitters their shapes. Raises
    UnsupportedLayerError (a ValueError) naming a layer without an emitter, ImportError without
    the onnx package; the model is checked by ``onnx.checker`` before it is written."""
    onnx = _onnx()
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(
            f"ONNX export: opset {opset} outside [{MIN_OPSET}, {onnx.defs.onnx_opset_version()}]"
        )
    sample = np.random.default_rng(seed).standard_normal((1, *input_shape)).astype(np.float32)
    graph = _Graph(onnx)
    with eval_mode(model), no_grad():
        out = _emit(graph, model, _Value("input", Tensor(sample, device=model.device)))
    return save_graph(graph, out.name, input_shape, out.tensor.shape[1:], opset, path)


def save_graph(
    graph: _Graph,
    output: str,
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    opset: int,
    path: str | os.PathLike,
    name: str = "fastnet",
) -> Path:
    """Write ``graph`` as an ONNX model whose float32 input ``input`` is (batch, *input_shape) and
    whose output ``output`` (the value named ``output`` in the graph) is (batch, *output_shape),
    after ``onnx.checker``'s full check."""
    onnx = _onnx()
    # the graph's output under a fixed name, whatever node made it
    graph.nodes.append(onnx.helper.make_node("Identity", [output], ["output"]))
    float_type = onnx.TensorProto.FLOAT
    opsets = [onnx.helper.make_opsetid("", opset)]
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(
            graph.nodes,
            name,
            [onnx.helper.make_tensor_value_info("input", float_type, ["batch", *input_shape])],
            [onnx.helper.make_tensor_value_info("output", float_type, ["batch", *output_shape])],
            graph.initializers,
        ),
        opset_imports=opsets,
        producer_name="fastnet",
        # the oldest IR version that holds these opsets, so that older runtimes load the file
        ir_version=onnx.helper.find_min_ir_version_for(opsets),
    )
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    onnx.save(proto, path)
    return path


def check_with_onnxruntime(model: nn.Module, path: str | os.PathLike, inputs: Any) -> float:
    """max |onnxruntime − fastnet| / max |fastnet| of the outputs for ``inputs`` (a batch)."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            f"checking an ONNX file needs onnxruntime: {install_hint('onnx')}"
        ) from None
    batch = np.ascontiguousarray(inputs, dtype=np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": batch})
    with eval_mode(model), no_grad():
        expected = model(Tensor(batch, device=model.device)).numpy()
    return relative_error(got, expected)


# ===================================================================== loading a model file
def _is_checkpoint(path: Path) -> bool:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "numpy") as file:
            return (file.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError):
        return True  # load_model names what is wrong with the file


def load_model_file(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """The model in ``path`` and its config: a checkpoint (its config rebuilds the model, as for
    ``fastnet eval``), or a plain state dict such as a run's ``model.safetensors``, whose
    architecture the ``config.json`` beside it names."""
    path = Path(path)
    if _is_checkpoint(path):
        model, saved = load_model(path)
        return model, saved["config"]
    config_file = path.parent / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"{path}: a plain state dict, and no config.json beside it names its model "
            f"(export a checkpoint, or the model.safetensors of a fastnet train run folder)"
        )
    config = json.loads(config_file.read_text())
    if "model" not in config:
        raise ValueError(f"{config_file} names no model")
    model = models.create(config["model"], **config.get("kwargs", {}))
    model.load_state_dict(load(path))
    return model, config
