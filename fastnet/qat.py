"""Quantization-aware training: fine-tune a float model while its Conv2d and Linear layers see the
int8 rounding they will meet after :func:`fastnet.quantize.quantize_model`.

:func:`prepare_qat` returns a copy of the model whose Conv2d and Linear layers (exactly those
types) become :class:`QATConv2d` and :class:`QATLinear`, with the same parameters. In their
forward pass

* the input is fake-quantized per tensor (``F.fake_quantize_per_tensor_affine``, codes
  [-128, 127], zero point 0) with scale r / 127, where r, a buffer ``input_range``, follows an
  exponential moving average of the batch's largest |x| in training mode (PyTorch's
  moving-average observer, averaging constant :data:`RANGE_MOMENTUM`; the first batch sets it)
  and stays fixed in evaluation mode;
* the weight is fake-quantized per output channel with s_w[c] = max|W[c]| / 127 (codes
  [-127, 127]: the post-training rule);

and the gradient passes straight through wherever the rounding did not clip. The optimizer, the
training loop and the checkpoints are the ordinary ones. :func:`convert` then returns the int8
model, with the learned ``input_range`` values as its activation scales, so inference rounds
exactly as training did (up to the order of float32 operations, and to BatchNorm folding, which
happens only at conversion).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import nn
from .functional.quantization import fake_quantize
from .models.base import copy_model
from .quantize import CODE_MAX, CODE_MIN, WEIGHT_CODE_MAX, QuantizedModel, quantize_model
from .tensor import Tensor

__all__ = ["QATConv2d", "QATLinear", "prepare_qat", "input_scales", "convert"]

RANGE_MOMENTUM = 0.01


class _FakeQuantized:
    """What both QAT layers add to their float layer: the input observer and the two roundings."""

    input_range: Tensor
    weight: Tensor

    def _quantized_input(self, x: Tensor) -> Tensor:
        # Everything stays on the device: a training step never waits to read a scale.
        observed = self.input_range.data
        xp = x.device.xp
        if self.training:
            largest = xp.abs(x.data).max().reshape(1).astype(np.float32)
            blended = (1 - RANGE_MOMENTUM) * observed + RANGE_MOMENTUM * largest
            observed[...] = xp.where(observed > 0, blended, largest)  # the first batch sets it
        # r = 0 (only zeros seen) rounds to the grid of a tiny scale: zeros stay zeros
        scale = xp.maximum(observed, np.float32(1e-30)) / np.float32(CODE_MAX)
        return fake_quantize(x, scale, CODE_MIN, CODE_MAX)

    def _quantized_weight(self) -> Tensor:
        xp = self.weight.device.xp
        flat = self.weight.data.reshape(len(self.weight.data), -1)
        largest = xp.abs(flat).max(axis=1)
        scale = xp.where(largest > 0, largest / np.float32(WEIGHT_CODE_MAX), np.float32(1.0))
        shape = (-1,) + (1,) * (self.weight.ndim - 1)
        return fake_quantize(self.weight, scale.reshape(shape), -WEIGHT_CODE_MAX, WEIGHT_CODE_MAX)


class QATConv2d(_FakeQuantized, nn.Conv2d):
    def forward(self, input: Tensor) -> Tensor:
        return nn.functional.conv2d(
            self._quantized_input(input),
            self._quantized_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )


class QATLinear(_FakeQuantized, nn.Linear):
    def forward(self, input: Tensor) -> Tensor:
        return nn.functional.linear(
            self._quantized_input(input), self._quantized_weight(), self.bias
        )


_QAT_OF = {nn.Conv2d: QATConv2d, nn.Linear: QATLinear}
_FLOAT_OF = {qat: plain for plain, qat in _QAT_OF.items()}


def prepare_qat(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every Conv2d and Linear made fake-quantizing (same parameters,
    plus an ``input_range`` buffer each)."""
    prepared = copy_model(model)
    for module in prepared.modules():
        qat = _QAT_OF.get(type(module))
        if qat is not None:
            module.__class__ = qat  # same attributes; only forward differs
            module.register_buffer(
                "input_range", Tensor(np.zeros(1, np.float32), device=module.weight.device)
            )
    return prepared


def _qat_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if type(m) in _FLOAT_OF]


def input_scales(model: nn.Module) -> dict[str, float]:
    """The activation scale r / 127 each QAT layer learned, by layer name."""
    scales = {}
    for name, module in _qat_layers(model):
        r = float(module.input_range.device.to_host(module.input_range.data)[0])
        if r <= 0:
            raise ValueError(f"QAT layer {name} has seen no input yet: train before converting")
        scales[name] = r / CODE_MAX
    return scales


def convert(model: nn.Module, config: dict | None = None, device: Any = "cpu") -> QuantizedModel:
    """The int8 model of a QAT-trained ``model`` (its learned activation scales, its weights
    quantized by the post-training rule it trained with)."""
    scales = input_scales(model)
    plain = copy_model(model)
    for _, module in _qat_layers(plain):
        del module._buffers["input_range"]
        module.__class__ = _FLOAT_OF[type(module)]
    return quantize_model(plain, input_scales=scales, config=config, device=device)
