"""``model.summary(input_shape)``: each layer's output shape, parameters and FLOPs, from one
forward pass (as torchinfo's ``summary`` or Keras's ``model.summary()``).

:func:`summarize` runs the model once, in eval mode and under ``no_grad``, on standard-normal
input of ``input_shape``. ``input_shape`` is the whole input's shape, **batch dimension
included**, as torchinfo's ``input_size``: ``(1, 1, 28, 28)`` for one MNIST image,
``(16, 3, 32, 32)`` for a batch of 16 CIFAR-10 images. A list of shapes feeds several inputs.
Output shapes and FLOPs are those of that batch.

fastnet's Module has no forward hooks, so :func:`forward_hooks` gives each module an instance
attribute ``forward`` (which ``Module.__call__`` finds before the class's) wrapping the old one,
and removes them all when it exits, whatever happened. :func:`eval_mode` puts a model in eval
mode and gives every module its own flag back on exit. ``fastnet eval`` captures its feature
maps with the same two.

What is counted (a multiply-add is 2 FLOPs; each module counts what it computes itself, not
what its child modules do, so the column adds up to the total):

* Linear: 2·in·out per output row, plus one add per output element for the bias.
* Conv2d: 2·(in_channels/groups)·kh·kw per output element (dilation and stride show in the
  output size), plus the bias. ConvTranspose2d: 2·(out_channels/groups)·kh·kw per input element,
  plus the bias on the output.
* MultiheadAttention: the query, key and value projections (2·E² per token, plus bias), the
  scores Q·Kᵀ and the weighted sum of the values (2·T·S·E each per batch element), the softmax
  (about 5 per score); its output projection is a Linear child, counted there.
* Normalisation (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm): about 5 per element
  for the statistics and the normalisation, plus 2 for an affine transform.
* Pooling: one comparison or add per window element of each output (kh·kw per output element);
  adaptive pooling one per input element.
* Not counted: activations, dropout, embeddings (a lookup), reshapes, and arithmetic a model
  writes in its own ``forward`` (residual additions, a class token): small beside the above.
  :func:`register_flops` adds a counter for another layer type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import no_grad
from ..backend import Device, get_device
from ..tensor import Tensor
from .convolution import ConvTranspose2d
from .layers import Conv2d, Linear, MaxPool2d
from .module import Module
from .normalization import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    GroupNorm,
    RMSNorm,
    _BatchNorm,
    _InstanceNorm,
)
from .pooling import AdaptiveAvgPool1d, AdaptiveMaxPool2d, AvgPool1d, MaxPool1d
from .transformer import LayerNorm, MultiheadAttention

__all__ = [
    "LayerSummary",
    "ModelSummary",
    "summarize",
    "forward_hooks",
    "eval_mode",
    "register_flops",
]

Shape = tuple[int, ...]
Hook = Callable[[str, Module, tuple, dict, Any], None]
FlopCounter = Callable[[Module, tuple, dict, Any], int]


@contextmanager
def forward_hooks(modules: Iterable[tuple[str, Module]], hook: Hook) -> Iterator[None]:
    """While inside, every call of one of the (name, module) pairs runs as before and then calls
    ``hook(name, module, args, kwargs, output)``; on exit each module's ``forward`` is as it
    was, even if the forward pass raised."""
    wrapped: list[tuple[Module, Any]] = []

    def wrapper(name: str, module: Module, forward: Callable) -> Callable:
        def hooked(*args: Any, **kwargs: Any) -> Any:
            output = forward(*args, **kwargs)
            hook(name, module, args, kwargs, output)
            return output

        return hooked

    try:
        for name, module in modules:
            # an instance attribute already there (another hook) is put back on exit
            wrapped.append((module, module.__dict__.get("forward")))
            object.__setattr__(module, "forward", wrapper(name, module, module.forward))
        yield
    finally:
        for module, previous in reversed(wrapped):
            if previous is None:
                del module.__dict__["forward"]
            else:
                object.__setattr__(module, "forward", previous)


@contextmanager
def eval_mode(model: Module) -> Iterator[None]:
    """``model.eval()`` while inside; on exit every module gets back its own training flag (a
    model trained with a frozen part in eval mode comes back so)."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in modes:
            object.__setattr__(module, "training", training)


# ===================================================================== FLOP counters
def tensor_numel(value: Any) -> int:
    return math.prod(value.shape) if isinstance(value, Tensor) else 0


def first_tensor(value: Any) -> Any:
    """The output itself, or the first tensor of a tuple output (attention's (output, weights))."""
    if isinstance(value, (tuple, list)):
        return next((item for item in value if isinstance(item, Tensor)), None)
    return value


def window_size(size: Any) -> int:
    """Elements of a convolution's kernel, given as a tuple (or one int)."""
    return math.prod(size) if isinstance(size, (tuple, list)) else int(size)


def pool_window(module: Module) -> int:
    """Elements in a pooling layer's window: an int ``kernel_size`` is a square window for a 2-D
    pool and a run of that many for a 1-D one."""
    size = module.kernel_size
    if isinstance(size, (tuple, list)):
        return math.prod(size)
    return int(size) ** (1 if type(module).__name__.endswith("1d") else 2)


def _bias_adds(module: Module, output: Any) -> int:
    return tensor_numel(first_tensor(output)) if getattr(module, "bias", None) is not None else 0


def _linear_flops(module: Module, args: tuple, kwargs: dict, output: Any) -> int:
    rows = tensor_numel(output) // module.out_features
    return 2 * rows * module.in_features * module.out_features + _bias_adds(module, output)


def _conv_flops(module: Module, args: tuple, kwargs: dict, output: Any) -> int:
    taps = module.in_channels // module.groups * window_size(module.kernel_size)
    return 2 * tensor_numel(output) * taps + _bias_adds(module, output)


def _conv_transpose_flops(module: Module, args: tuple, kwargs: dict, output: Any) -> int:
    scatter = module.out_channels // module.groups * window_size(module.kernel_size)
    return 2 * tensor_numel(args[0]) * scatter + _bias_adds(module, output)


def _attention_flops(module: Module, args: tuple, kwargs: dict, output: Any) -> int:
    names = ("query", "key", "value")
    query, key, value = (args[i] if i < len(args) else kwargs[n] for i, n in enumerate(names))
    width = module.embed_dim
    tokens = [tensor_numel(tensor) // width for tensor in (query, key, value)]  # B·T, B·S, B·S
    projections = sum(2 * count * width * width for count in tokens)
    if module.in_proj_bias is not None:
        projections += sum(tokens) * width
    batch = key.shape[0] if module.batch_first else key.shape[1]
    pairs = tokens[0] * (tokens[1] // batch)  # B·T·S (query, key) pairs, in every head
    # Q·Kᵀ and weights·V: 2·D per pair and head, so 2·E per pair each
    return projections + 2 * 2 * pairs * width + 5 * pairs * module.num_heads


def _norm_flops(module: Module, args: tuple, kwargs: dict, output: Any) -> int:
    affine = any(p is not None for p in module._parameters.values())
    return (5 + (2 if affine else 0)) * tensor_numel(first_tensor(output))


def _pool_flops(module: Module, args: tuple, kwargs: dict, output: Any) -> int:
    return tensor_numel(first_tensor(output)) * pool_window(module)


def _adaptive_pool_flops(module: Module, args: tuple, kwargs: dict, output: Any) -> int:
    return tensor_numel(args[0])


_FLOP_COUNTERS: dict[type, FlopCounter] = {
    Linear: _linear_flops,
    Conv2d: _conv_flops,
    ConvTranspose2d: _conv_transpose_flops,
    MultiheadAttention: _attention_flops,
    _BatchNorm: _norm_flops,
    _InstanceNorm: _norm_flops,
    GroupNorm: _norm_flops,
    LayerNorm: _norm_flops,
    RMSNorm: _norm_flops,
    MaxPool2d: _pool_flops,
    AvgPool2d: _pool_flops,
    MaxPool1d: _pool_flops,
    AvgPool1d: _pool_flops,
    AdaptiveAvgPool2d: _adaptive_pool_flops,
    AdaptiveMaxPool2d: _adaptive_pool_flops,
    AdaptiveAvgPool1d: _adaptive_pool_flops,
}


def register_flops(layer_type: type, counter: FlopCounter) -> None:
    """Count ``counter(module, args, kwargs, output)`` FLOPs for each call of a ``layer_type``
    (and its subclasses without a counter of their own) in :func:`summarize`."""
    if not (isinstance(layer_type, type) and issubclass(layer_type, Module)):
        raise TypeError(f"register_flops: {layer_type!r} is not a Module subclass")
    _FLOP_COUNTERS[layer_type] = counter


def _count_flops(module: Module, args: tuple, kwargs: dict, output: Any) -> int:
    for cls in type(module).__mro__:
        if cls in _FLOP_COUNTERS:
            return int(_FLOP_COUNTERS[cls](module, args, kwargs, output))
    return 0


# ===================================================================== the summary
@dataclass
class LayerSummary:
    """One module of the model: its name in ``named_modules`` ("" for the model itself), its
    class, the shape of its output (a list of shapes for a tuple output, None for a module the
    forward pass never called), its own parameters (not its children's), and the FLOPs it
    computed itself, over all its calls."""

    name: str
    type: str
    output_shape: Any = None
    params: int = 0
    trainable_params: int = 0
    flops: int = 0
    calls: int = 0
    has_children: bool = False


@dataclass
class ModelSummary:
    """The rows of :func:`summarize`, in ``named_modules`` order, and their totals; ``str()``
    is the table."""

    input_shapes: list[Shape]
    rows: list[LayerSummary] = field(default_factory=list)
    param_bytes: int = 0

    @property
    def total_params(self) -> int:
        return sum(row.params for row in self.rows)

    @property
    def trainable_params(self) -> int:
        return sum(row.trainable_params for row in self.rows)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def total_flops(self) -> int:
        return sum(row.flops for row in self.rows)

    def __str__(self) -> str:
        header = ("Layer", "Type", "Output shape", "Params", "FLOPs")
        body = [
            (
                row.name or "(model)",
                row.type,
                _format_shape(row.output_shape),
                _format_count(row.params, row.has_children),
                _format_count(row.flops, row.has_children),
            )
            for row in self.rows
        ]
        widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                cell.ljust(width) if i < 3 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        rule = "-" * len(line(header))
        inputs = ", ".join(_format_shape(shape) for shape in self.input_shapes)
        return "\n".join(
            [
                line(header),
                rule,
                *(line(cells) for cells in body),
                rule,
                f"Total params: {self.total_params:,} "
                f"(trainable {self.trainable_params:,}, "
                f"non-trainable {self.non_trainable_params:,}; "
                f"{_format_quantity(self.param_bytes)}B)",
                f"Total FLOPs: {self.total_flops:,} ({_format_quantity(self.total_flops)}FLOPs) "
                f"for one forward pass of input {inputs}",
            ]
        )

    __repr__ = __str__  # a notebook cell or the REPL shows the table


def _format_shape(shape: Any) -> str:
    if shape is None:
        return "--"
    if isinstance(shape, list):
        return ", ".join(_format_shape(item) for item in shape)
    if isinstance(shape, str):
        return shape
    return "(" + ", ".join(str(size) for size in shape) + ")"


def _format_count(count: int, has_children: bool) -> str:
    return "--" if count == 0 and has_children else f"{count:,}"


def _format_quantity(value: float) -> str:
    """1234567 → '1.23 M' (SI prefixes, so the unit follows)."""
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {prefix}"
    return f"{value:.0f} "


def _output_shape(output: Any) -> Any:
    if isinstance(output, Tensor):
        return output.shape
    if isinstance(output, (tuple, list)):
        return [_output_shape(item) for item in output]
    return None if output is None else type(output).__name__


def _input_shapes(input_shape: Any) -> list[Shape]:
    """One shape, or a list of shapes (one per input), each a sequence of positive ints."""

    def is_shape(value: Any) -> bool:
        return (
            isinstance(value, (tuple, list))
            and len(value) > 0
            and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in value)
        )

    shapes = [input_shape] if is_shape(input_shape) else input_shape
    if (
        not isinstance(shapes, (tuple, list))
        or not shapes
        or not all(is_shape(shape) and min(shape) > 0 for shape in shapes)
    ):
        raise ValueError(
            "summary: input_shape must be a shape of positive ints, batch dimension first "
            f"(e.g. (1, 1, 28, 28)), or a list of such shapes; got {input_shape!r}"
        )
    return [tuple(int(size) for size in shape) for shape in shapes]


def _summary_device(model: Module, device: str | Device | None) -> Device:
    own = model.device
    if device is None:
        return own if own is not None else get_device("cpu")
    chosen = get_device(device)
    if own is not None and own is not chosen:
        raise ValueError(
            f"summary: the model's parameters are on {own.name}, not on {chosen.name}: "
            f"move it first (model.to({chosen.name!r}))"
        )
    return chosen


def summarize(
    model: Module, input_shape: Sequence[int] | Sequence[Sequence[int]], device: Any = None
) -> ModelSummary:
    """Run ``model`` once on random input of ``input_shape`` (batch dimension first; see the
    module docstring) and return each module's output shape, parameters and FLOPs.

    ``device`` is where the input is made; by default the model's (the CPU for a model without
    parameters). The model runs in eval mode under ``no_grad`` and is left as it was: every
    module's training flag, its forward, its weights and buffers (eval mode leaves BatchNorm's
    running statistics alone), and fastnet's random state (the input comes from a private
    generator). The input has the dtype of the model's first floating parameter (float32 if
    none).
    """
    shapes = _input_shapes(input_shape)
    where = _summary_device(model, device)
    dtype = next((p.dtype for p in model.parameters() if p.dtype.kind == "f"), np.dtype(np.float32))
    generator = np.random.default_rng(0)
    inputs = [
        Tensor(generator.standard_normal(shape).astype(dtype), device=where) for shape in shapes
    ]

    named: dict[int, tuple[str, Module]] = {}
    for name, module in model.named_modules():
        named.setdefault(id(module), (name, module))  # a module registered twice is one row
    counted: set[int] = set()
    rows: dict[int, LayerSummary] = {}
    param_bytes = 0
    for key, (name, module) in named.items():
        row = LayerSummary(name, type(module).__name__)
        row.has_children = any(True for _ in module.children())
        for parameter in module._parameters.values():
            if parameter is None or id(parameter) in counted:
                continue  # a shared parameter counts once, where named_parameters lists it
            counted.add(id(parameter))
            row.params += parameter.numel()
            row.trainable_params += parameter.numel() if parameter.requires_grad else 0
            param_bytes += parameter.numel() * parameter.dtype.itemsize
        rows[key] = row

    def record(name: str, module: Module, args: tuple, kwargs: dict, output: Any) -> None:
        row = rows[id(module)]
        row.output_shape = _output_shape(output)
        row.flops += _count_flops(module, args, kwargs, output)
        row.calls += 1

    try:
        with eval_mode(model), forward_hooks(named.values(), record), no_grad():
            model(*inputs)
    except Exception as error:
        raise ValueError(
            f"summary: {type(model).__name__} failed on an input of shape "
            f"{', '.join(map(str, shapes))} (batch dimension first): {error}"
        ) from error
    return ModelSummary(shapes, list(rows.values()), param_bytes)
