"""Post-training int8 quantization: a float model in, a model whose convolutions and linear layers
run in int8 arithmetic (the ``quant`` kernel family) out.

**The numbers.** Symmetric quantization, zero point 0: a real x is stored as the code
q = clip(rint(x / s), -128, 127) and read back as s·q (ONNX's QuantizeLinear and DequantizeLinear
with an int8 zero point of 0).

* Weights: one scale per output channel, s_w[c] = max|W[c]| / 127, so codes lie in [-127, 127].
* Activations: one scale per tensor entering a quantized layer, s_a = r / 127, where r is the
  range a calibration pass over a few batches observed (:class:`RangeObserver`): the largest |x|
  ("minmax"), or the p-th percentile of |x| ("percentile", p = 99.99 by default: a few outliers
  no longer coarsen the grid for every other value, at the price of clipping them).

**One layer.** For int8 input q_a (scale s_a) and weight codes q_w (scales s_w[n]) the kernel sums
acc[m, n] = Σ_k q_a[m, k]·q_w[n, k] exactly in int32; its epilogue computes
y = acc·(s_a·s_w[n]) + b[n], then max(y, 0) when a ReLU follows the layer (fused), and either
requantizes y to the next quantized layer's input scale (int8 out) or, after the model's last
quantized layer, returns it as float32. A max-pooling right after a convolution is fused into it:
the epilogue is monotone (every multiplier is positive), so the kernel pools the int32
accumulators and runs the epilogue on a quarter of them. Max-pooling elsewhere, ReLU and
flattening act on the codes themselves: rint is monotone, so the max of codes is the code of the
max. A BatchNorm2d after a convolution is folded into it first (its evaluation statistics).

**Error.** A code stands for x up to a rounding error e_a with |e_a| ≤ s_a/2 (unless clipped), a
weight code for W up to e_w with |e_w| ≤ s_w/2. Taken as independent and uniform over their steps
(variance s²/12), they give a layer output whose error has variance
Σ_k W[n,k]²·v[k] + s_w[n]²/12·Σ_k x[k]² (v: the variance of the error coming in), plus s_out²/12
from requantization; ReLU passes it where the output is positive, max-pooling passes the window's
winner's. :func:`predicted_error` carries this through the model: the standard deviation of the
int8 logits' error the scales predict.

Supported layers (in a Sequential or Classifier chain, see ``models.base.chain_layers``): Conv2d
(groups 1, dilation 1, zero padding, equal stride and padding in both dimensions), Linear,
BatchNorm2d right after a Conv2d, ReLU, MaxPool2d (stride = kernel, no padding), Flatten, Dropout
and Identity. Anything else is refused, naming the layer.

A quantized model saves as safetensors (:func:`save_quantized`): int8 weight codes, float32
scales and biases, and the layer list as metadata, about a quarter of the float file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from . import nn
from .backend import Device, get_device
from .checkpoint import load_with_metadata, save
from .inference import folded_conv_weights
from .models.base import chain_layers
from .tensor import Tensor, no_grad

__all__ = [
    "RangeObserver",
    "QuantizedModel",
    "UnsupportedLayerError",
    "calibrate",
    "predicted_error",
    "is_quantized_file",
    "load_quantized",
    "quantize_model",
    "save_quantized",
    "weight_codes",
]

CODE_MIN, CODE_MAX = -128, 127
WEIGHT_CODE_MAX = 127  # symmetric weights: -128 is never used, so -W quantizes as exactly -q
FORMAT = "fastnet-int8"
METHODS = ("minmax", "percentile")
DEFAULT_PERCENTILE = 99.99
HISTOGRAM_BINS = 4096
_TRANSPARENT = (nn.Dropout, nn.Identity)


class UnsupportedLayerError(ValueError):
    """A layer post-training quantization cannot run in int8."""


def weight_codes(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8 codes of ``weight`` (out, ...) and their float32 scales
    (out,); an all-zero channel gets scale 1 (its codes are 0 whatever the scale)."""
    weight = np.asarray(weight, np.float32)
    largest = np.abs(weight.reshape(len(weight), -1)).max(axis=1)
    scales = np.where(largest > 0, largest / WEIGHT_CODE_MAX, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    codes = np.clip(np.rint(weight / scales.reshape(shape)), -WEIGHT_CODE_MAX, WEIGHT_CODE_MAX)
    return codes.astype(np.int8), scales


class RangeObserver:
    """The range r of |x| over the calibration batches: the largest ("minmax") or the
    ``percentile``-th percentile of all values seen ("percentile", from a histogram of |x| whose
    range doubles, merging bin pairs, whenever a batch exceeds it)."""

    def __init__(self, method: str = "minmax", percentile: float = DEFAULT_PERCENTILE) -> None:
        if method not in METHODS:
            raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.method, self.percentile = method, percentile
        self.largest = 0.0
        self.histogram = np.zeros(HISTOGRAM_BINS, np.int64)
        self.top = 0.0  # the histogram covers [0, top)

    def observe(self, values: np.ndarray) -> None:
        magnitudes = np.abs(np.asarray(values, np.float64)).ravel()
        if not np.isfinite(magnitudes).all():
            raise ValueError("calibration met a non-finite activation")
        batch_largest = float(magnitudes.max(initial=0.0))
        self.largest = max(self.largest, batch_largest)
        if self.method != "percentile" or batch_largest == 0.0:
            return
        if self.top == 0.0:
            self.top = batch_largest * 1.0001
        while batch_largest >= self.top:  # two bins become one, the top doubles
            merged = self.histogram.reshape(-1, 2).sum(axis=1)
            self.histogram = np.concatenate([merged, np.zeros_like(merged)])
            self.top *= 2.0
        self.histogram += np.histogram(magnitudes, HISTOGRAM_BINS, (0.0, self.top))[0]

    def range(self) -> float:
        """r: the value the scale r / 127 maps to code 127 (0 before anything nonzero was seen)."""
        if self.method == "minmax" or self.top == 0.0:
            return self.largest
        counts = np.cumsum(self.histogram)
        bin_index = int(np.searchsorted(counts, counts[-1] * self.percentile / 100.0))
        return min(self.largest, (bin_index + 1) * self.top / HISTOGRAM_BINS)

    def scale(self) -> float:
        r = self.range()
        return r / CODE_MAX if r > 0 else 1.0


# ----------------------------------------------------------------------------- the layer list
@dataclasses.dataclass
class _Step:
    """One step of the quantized model: ``kind`` is "affine" (Conv2d or Linear in int8), "pool",
    "relu" or "flatten"."""

    kind: str
    name: str
    weight: np.ndarray | None = None  # int8 codes, (out, in) or (out, c, kh, kw)
    weight_scale: np.ndarray | None = None  # (out,)
    bias: np.ndarray | None = None  # float32 (out,)
    float_weight: np.ndarray | None = None  # the float weight the codes stand for (not saved)
    input_scale: float = 1.0
    output_scale: float | None = None  # None: float32 out (no quantized layer follows)
    relu: bool = False
    stride: int = 1
    padding: int = 0
    pool: int = 0  # "pool": the window; "affine": the window of a max-pool fused after it, or 0

    def describe(self) -> dict[str, Any]:
        fields = ("kind", "name", "input_scale", "output_scale", "relu", "stride", "padding")
        return {key: getattr(self, key) for key in fields} | {"pool": self.pool}


def _single(value: Any, layer: str, what: str) -> int:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if pair[0] != pair[1]:
        raise UnsupportedLayerError(f"int8 quantization: {layer} has a {what} of {pair}")
    return int(pair[0])


def _steps(model: nn.Module) -> list[_Step]:
    """The model's chain as steps, weights quantized, scales not yet known."""
    layers = [layer for layer in chain_layers(model, "int8 quantization")]
    steps: list[_Step] = []
    skip_next = False
    for position, (name, _, _, module) in enumerate(layers):
        if skip_next:
            skip_next = False
            continue
        following = layers[position + 1].module if position + 1 < len(layers) else None
        kind = type(module)
        if kind is nn.Conv2d:
            if module.groups != 1 or module.dilation != (1, 1) or module.padding_mode != "zeros":
                raise UnsupportedLayerError(
                    f"int8 quantization: {name} (Conv2d) needs groups=1, dilation=1 and zero "
                    f"padding, got groups={module.groups}, dilation={module.dilation}, "
                    f"padding_mode={module.padding_mode!r}"
                )
            if isinstance(module.padding, str):
                raise UnsupportedLayerError(
                    f"int8 quantization: {name} has padding {module.padding!r}"
                )
            norm = following if type(following) is nn.BatchNorm2d else None
            skip_next = norm is not None
            weight, bias = folded_conv_weights(module, norm)
            steps.append(
                _Step(
                    "affine",
                    name,
                    float_weight=weight,
                    bias=bias,
                    stride=_single(module.stride, name, "stride"),
                    padding=_single(module.padding, name, "padding"),
                )
            )
        elif kind is nn.Linear:
            bias = np.zeros(module.out_features) if module.bias is None else module.bias.numpy()
            steps.append(
                _Step(
                    "affine",
                    name,
                    float_weight=module.weight.numpy().astype(np.float32),
                    bias=np.asarray(bias, np.float32),
                )
            )
        elif kind is nn.ReLU:
            if steps and steps[-1].kind == "affine" and not steps[-1].relu:
                steps[-1].relu = True  # fused into the layer's epilogue
            else:
                steps.append(_Step("relu", name))
        elif kind is nn.MaxPool2d:
            size = _single(module.kernel_size, name, "kernel size")
            if (
                _single(module.stride, name, "stride") != size
                or _single(module.padding, name, "padding")
                or _single(module.dilation, name, "dilation") != 1
                or module.return_indices
            ):
                raise UnsupportedLayerError(
                    f"int8 quantization: {name} (MaxPool2d) needs stride = kernel size, no "
                    f"padding, no dilation and no indices"
                )
            previous = steps[-1] if steps else None
            if (
                previous is not None
                and previous.kind == "affine"
                and previous.float_weight.ndim == 4
                and not previous.pool
            ):
                previous.pool = size  # fused: the kernel pools its accumulators
            else:
                steps.append(_Step("pool", name, pool=size))
        elif kind is nn.Flatten:
            if (module.start_dim, module.end_dim) != (1, -1):
                raise UnsupportedLayerError(f"int8 quantization: {name} must flatten dims 1..-1")
            steps.append(_Step("flatten", name))
        elif not isinstance(module, _TRANSPARENT):
            raise UnsupportedLayerError(
                f"int8 quantization: layer {name} ({kind.__name__}) has no int8 form (supported: "
                f"Conv2d, Linear, BatchNorm2d after Conv2d, ReLU, MaxPool2d, Flatten, Dropout)"
            )
    affine = [step for step in steps if step.kind == "affine"]
    if not affine:
        raise UnsupportedLayerError("int8 quantization: the model has no Conv2d or Linear layer")
    for step in affine:
        step.weight, step.weight_scale = weight_codes(step.float_weight)
    return steps


def _float_step(step: _Step, x: np.ndarray) -> np.ndarray:
    """One step in float64 on the host, as the float model computes it (the calibration pass)."""
    if step.kind == "affine":
        if step.float_weight.ndim == 2:
            y = x @ step.float_weight.T.astype(np.float64) + step.bias
        else:
            y = (
                nn.functional.conv2d(
                    Tensor(x.astype(np.float32)),
                    Tensor(step.float_weight),
                    Tensor(step.bias),
                    step.stride,
                    step.padding,
                )
                .numpy()
                .astype(np.float64)
            )
        y = np.maximum(y, 0.0) if step.relu else y
        return _pool(y, step.pool) if step.pool else y
    return _host_step(step, x)


def _host_step(step: _Step, x: Any) -> Any:
    """The steps that act on codes and floats alike (any array module: they use methods only)."""
    if step.kind == "relu":
        return x.clip(0, None)
    if step.kind == "flatten":
        return x.reshape(len(x), -1)
    return _pool(x, step.pool)


def _pool(x: Any, k: int) -> Any:
    """k×k max-pooling with stride k: the elementwise max of the k² strided views of the window
    offsets (much faster in NumPy than a max over the axes of a (B, C, H/k, k, W/k, k) view)."""
    rows, columns = x.shape[2] // k * k, x.shape[3] // k * k
    out = x[:, :, 0:rows:k, 0:columns:k].copy()
    for offset in range(1, k * k):
        i, j = divmod(offset, k)
        np.maximum(out, x[:, :, i:rows:k, j:columns:k], out=out)  # CuPy's own, on its arrays
    return out


def calibrate(
    model: nn.Module,
    batches: Iterable[Any],
    method: str = "minmax",
    percentile: float = DEFAULT_PERCENTILE,
) -> dict[str, float]:
    """The input scale of every Conv2d and Linear (by layer name), from the ranges ``method``
    reads off the float activations entering them over ``batches`` (images, or (images, labels)
    pairs as a DataLoader gives them)."""
    steps = _steps(model)
    observers = {
        step.name: RangeObserver(method, percentile) for step in steps if step.kind == "affine"
    }
    seen = 0
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = (images.numpy() if isinstance(images, Tensor) else np.asarray(images)).astype(
            np.float64
        )
        for step in steps:
            if step.kind == "affine":
                observers[step.name].observe(x)
            x = _float_step(step, x)
        seen += 1
    if not seen:
        raise ValueError("calibration needs at least one batch")
    return {name: observer.scale() for name, observer in observers.items()}


# ----------------------------------------------------------------------------- the int8 model
class QuantizedModel:
    """The int8 model: ``model(x)`` takes float32 images (a Tensor) and returns float32 logits.

    It has no parameters to train; ``eval()`` and ``train(False)`` are accepted so evaluation code
    written for modules runs it unchanged."""

    training = False

    def __init__(self, steps: list[_Step], config: dict | None = None, device: Any = "cpu") -> None:
        self.steps = steps
        self.config = dict(config or {})
        self.device: Device = get_device(device)
        up = self.device.upload
        self._arrays = [
            (up(s.weight), up(s.weight_scale * np.float32(s.input_scale)), up(s.bias))
            if s.kind == "affine"
            else None
            for s in steps
        ]

    def eval(self) -> QuantizedModel:
        return self

    def train(self, mode: bool = True) -> QuantizedModel:
        if mode:
            raise ValueError("a quantized model cannot be trained: train the float model (QAT)")
        return self

    def to(self, device: Any) -> QuantizedModel:
        return QuantizedModel(self.steps, self.config, device)

    def num_parameters(self) -> int:
        return sum(s.weight.size + s.bias.size for s in self.steps if s.kind == "affine")

    def __call__(self, images: Tensor) -> Tensor:
        device = self.device
        x = device.asarray(getattr(images, "data", images), np.float32)
        first = next(i for i, step in enumerate(self.steps) if step.kind == "affine")
        for step in self.steps[:first]:  # layers before the first quantized one run in float
            x = _host_step(step, x)
        x = device.quantize(x, self.steps[first].input_scale, device.empty(x.shape, np.int8))
        for step, arrays in zip(self.steps[first:], self._arrays[first:], strict=True):
            x = self._affine(step, arrays, x) if arrays is not None else _host_step(step, x)
        return Tensor(device.xp.ascontiguousarray(x), device=device)

    def _affine(self, step: _Step, arrays: tuple, x: Any) -> Any:
        device = self.device
        weight, multiplier, bias = arrays
        dtype = np.float32 if step.output_scale is None else np.int8
        out_scale = 1.0 if step.output_scale is None else step.output_scale
        if weight.ndim == 2:
            out = device.empty((len(x), len(weight)), dtype)
            return device.linear_int8(x, weight, multiplier, bias, step.relu, out_scale, out)
        batch, _, height, width = x.shape
        size, pool = weight.shape[2], step.pool or 1
        side = (height + 2 * step.padding - size) // step.stride + 1
        wide = (width + 2 * step.padding - size) // step.stride + 1
        out = device.empty((batch, len(weight), side // pool, wide // pool), dtype)
        return device.conv2d_int8(
            x, weight, multiplier, bias, step.relu, out_scale, step.stride, step.padding, pool, out
        )


def quantize_model(
    model: nn.Module,
    batches: Iterable[Any] | None = None,
    method: str = "minmax",
    percentile: float = DEFAULT_PERCENTILE,
    *,
    input_scales: dict[str, float] | None = None,
    config: dict | None = None,
    device: Any = "cpu",
) -> QuantizedModel:
    """``model`` with int8 weights (per output channel) and activation scales from calibrating on
    ``batches`` (or given as ``input_scales`` by layer name, as quantization-aware training
    learns them)."""
    if (batches is None) == (input_scales is None):
        raise ValueError("give calibration batches or input_scales, not both or neither")
    with no_grad():
        scales = (
            input_scales
            if input_scales is not None
            else calibrate(model, batches, method, percentile)
        )
    steps = _steps(model)
    affine = [step for step in steps if step.kind == "affine"]
    missing = [step.name for step in affine if step.name not in scales]
    if missing:
        raise ValueError(f"no input scale for {', '.join(missing)}")
    for step, following in zip(affine, affine[1:] + [None], strict=True):
        step.input_scale = float(scales[step.name])
        step.output_scale = None if following is None else float(scales[following.name])
    return QuantizedModel(steps, config, device)


def predicted_error(model: QuantizedModel, images: np.ndarray) -> np.ndarray:
    """The standard deviation, per image and logit, of (quantized − float) logits that the scales
    predict for ``images`` (see the module docstring): every rounding modelled as an independent
    error uniform over its step (variance s²/12), calibration clipping nothing."""
    x = np.asarray(images, np.float64)
    variance = np.zeros_like(x)  # of (dequantized int8 activation - float activation)
    first = True
    for step in model.steps:
        if step.kind != "affine":  # pooling passes at most the window's largest variance
            x, variance = _float_step(step, x), _host_step(step, variance)
            continue
        if first:  # the float images quantized; later inputs carry the previous requantization
            variance = variance + step.input_scale**2 / 12
            first = False
        unbiased = dataclasses.replace(step, relu=False, bias=np.zeros_like(step.bias), pool=0)

        def apply(weight: np.ndarray, values: np.ndarray, layer: _Step = unbiased) -> np.ndarray:
            return _float_step(dataclasses.replace(layer, float_weight=weight), values)

        weight_variance = step.weight_scale.astype(np.float64) ** 2 / 12
        if step.float_weight.ndim == 4:
            weight_variance = weight_variance[:, None, None]
        squares = np.square(step.float_weight)
        variance = (
            apply(squares, variance)
            + apply(np.ones_like(squares), x * x + variance) * weight_variance
        )
        x = _float_step(dataclasses.replace(step, pool=0), x)
        if step.relu:
            variance = np.where(x > 0, variance, 0.0)
        if step.pool:  # the winner's variance: at most the window's largest
            x, variance = _pool(x, step.pool), _pool(variance, step.pool)
        if step.output_scale is not None:
            variance = variance + step.output_scale**2 / 12
    return np.sqrt(variance)


# ----------------------------------------------------------------------------- files
def save_quantized(model: QuantizedModel, path: str | os.PathLike) -> Path:
    """Write the int8 model as safetensors: per quantized layer i its int8 ``i.weight``, float32
    ``i.weight_scale`` and ``i.bias``; the steps and the float model's config as metadata."""
    tensors: dict[str, np.ndarray] = {}
    for index, step in enumerate(model.steps):
        if step.kind == "affine":
            tensors |= {
                f"{index}.weight": step.weight,
                f"{index}.weight_scale": step.weight_scale,
                f"{index}.bias": step.bias,
            }
    metadata = {
        "format": FORMAT,
        "steps": json.dumps([step.describe() for step in model.steps]),
        "config": json.dumps(model.config),
    }
    return save(tensors, path, metadata)


def is_quantized_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a safetensors file :func:`save_quantized` wrote (False for any other
    file, readable or not)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(Path(path), "numpy") as file:
            return (file.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError):
        return False


def load_quantized(path: str | os.PathLike, device: Any = "cpu") -> QuantizedModel:
    """The model :func:`save_quantized` wrote."""
    tensors, metadata = load_with_metadata(path)
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not an int8 model written by fastnet (format {metadata.get('format')!r})"
        )
    steps = []
    for index, fields in enumerate(json.loads(metadata["steps"])):
        step = _Step(**fields)
        if step.kind == "affine":
            step.weight = tensors[f"{index}.weight"]
            step.weight_scale = tensors[f"{index}.weight_scale"]
            step.bias = tensors[f"{index}.bias"]
            shape = (-1,) + (1,) * (step.weight.ndim - 1)
            step.float_weight = step.weight.astype(np.float32) * step.weight_scale.reshape(shape)
        steps.append(step)
    return QuantizedModel(steps, json.loads(metadata["config"]), device)
