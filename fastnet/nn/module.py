"""Module and Parameter: the PyTorch-shaped skeleton every layer hangs on (the containers are
in ``containers``).

Parameter names and layouts follow PyTorch (``0.weight`` for the first child of a Sequential,
Linear weights (out, in), Conv2d weights (out, in, kh, kw)), so a state dict moves between the
two frameworks unchanged.
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..backend import Device, get_device, to_numpy
from ..tensor import Tensor

if TYPE_CHECKING:
    from .summary import ModelSummary


class Parameter(Tensor):
    """A tensor that a Module registers as trainable (``requires_grad=True`` unless told
    otherwise)."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        if isinstance(data, Tensor):
            super().__init__(data.data, device=data.device, requires_grad=requires_grad)
        else:
            super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class LoadReport(NamedTuple):
    """What ``load_state_dict`` matched: keys missing from the file, keys the model lacks, and
    keys whose shapes differ (name, shape in the model, shape in the file)."""

    missing_keys: list
    unexpected_keys: list
    mismatched_keys: list


class Module:
    """Base class of layers and models: registers parameters, buffers and child modules."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ----------------------------------------------------------------- registration
    def __setattr__(self, name: str, value: Any) -> None:
        # PyTorch's rules: a Parameter or Module registers; a registered name only takes a value
        # of its own kind (or None), so no assignment silently drops a weight from the state dict
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}.__init__ must call super().__init__() "
                f"before assigning {name!r}"
            )
        parameters, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            _remove(name, self.__dict__, buffers, modules)
            self.register_parameter(name, value)
        elif name in parameters:
            if value is not None:
                raise TypeError(_refusal(value, "parameter", name, "Parameter or None"))
            parameters[name] = None
        elif isinstance(value, Module):
            _remove(name, self.__dict__, parameters, buffers)
            modules[name] = value
        elif name in modules:
            if value is not None:
                raise TypeError(_refusal(value, "child module", name, "Module or None"))
            modules[name] = None
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(_refusal(value, "buffer", name, "Tensor or None"))
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # called for every child and parameter read (self.conv1, self.weight): written out
        attributes = self.__dict__
        if "_modules" in attributes:  # set up by __init__, the three registries together
            if name in attributes["_parameters"]:
                return attributes["_parameters"][name]
            if name in attributes["_buffers"]:
                return attributes["_buffers"][name]
            if name in attributes["_modules"]:
                return attributes["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: Tensor | None) -> None:
        """A tensor saved in the state dict but not trained (e.g. BatchNorm running statistics)."""
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(_refusal(value, "buffer", name, "Tensor or None"))
        _remove(name, self.__dict__, self._parameters, self._modules)
        self._buffers[name] = value

    def register_parameter(self, name: str, value: Parameter | None) -> None:
        if value is not None and not isinstance(value, Parameter):
            raise TypeError(_refusal(value, "parameter", name, "Parameter or None"))
        _remove(name, self.__dict__, self._buffers, self._modules)
        self._parameters[name] = value  # an existing name keeps its place in the state dict

    def add_module(self, name: str, module: Module) -> None:
        self._modules[name] = module

    # ----------------------------------------------------------------- traversal
    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, child in self._modules.items():
            if child is not None:  # a child set to None is a placeholder, as in PyTorch
                yield name, child

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        for module_name, module in self.named_modules(prefix):
            for name, parameter in module._parameters.items():
                if parameter is None or id(parameter) in seen:
                    continue
                seen.add(id(parameter))  # a shared parameter is listed once
                yield (f"{module_name}.{name}" if module_name else name), parameter

    def parameters(self) -> Iterator[Parameter]:
        for _, parameter in self.named_parameters():
            yield parameter

    def named_buffers(self) -> Iterator[tuple[str, Tensor]]:
        for module_name, module in self.named_modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield (f"{module_name}.{name}" if module_name else name), buffer

    def get_submodule(self, target: str) -> Module:
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(
                    f"{type(module).__name__} has no submodule {part!r} (looking up {target!r})"
                )
            module = module._modules[part]
        return module

    def apply(self, fn: Any) -> Module:
        for module in self.modules():
            fn(module)
        return self

    # ----------------------------------------------------------------- modes and devices
    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for parameter in self.parameters():
            parameter.requires_grad = requires_grad
        return self

    def zero_grad(self) -> None:
        for parameter in self.parameters():
            parameter.grad = None

    def to(self, *args: Any, device: str | Device | None = None, dtype: Any = None) -> Module:
        """Move every parameter and buffer to ``device`` and cast the floating ones to ``dtype``,
        in place (parameters keep their identity, so an optimizer built before still holds them).
        As PyTorch's: ``to(device)``, ``to(dtype)``, ``to(device, dtype)`` or keywords."""
        for argument in args:
            if isinstance(argument, (str, Device)):
                device = argument
            else:
                dtype = argument
        target = None if device is None else get_device(device)
        dtype = None if dtype is None else np.dtype(dtype)
        if dtype is not None and dtype.kind != "f":
            raise TypeError(f"Module.to: only floating point dtypes are accepted, got {dtype}")
        for tensor in list(self.parameters()) + [b for _, b in self.named_buffers()]:
            if target is not None and tensor.device is not target:
                tensor.data = target.upload(tensor.device.to_host(tensor.data))
                if tensor.grad is not None:
                    tensor.grad = Tensor(tensor.grad.data, device=target)
                tensor.device = target
            if dtype is not None and tensor.dtype.kind == "f" and tensor.dtype != dtype:
                tensor.data = tensor.data.astype(dtype)
                if tensor.grad is not None:
                    tensor.grad = Tensor._wrap(tensor.grad.data.astype(dtype), tensor.device)
        return self

    def double(self) -> Module:
        return self.to(dtype=np.float64)

    def float(self) -> Module:
        return self.to(dtype=np.float32)

    @property
    def device(self) -> Device | None:
        first = next(self.parameters(), None)
        return first.device if first is not None else None

    # ----------------------------------------------------------------- state
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Parameters and buffers by PyTorch-style dotted name, as NumPy arrays (copies)."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for name, parameter in self.named_parameters():
            state[name] = parameter.detach().numpy().copy()
        for name, buffer in self.named_buffers():
            state[name] = buffer.detach().numpy().copy()
        return state

    def load_state_dict(self, state: dict, strict: bool = True) -> LoadReport:
        """Copy values from ``state`` (name → array or Tensor) into this module.

        Returns a :class:`LoadReport`. With ``strict=True`` any missing, unexpected or
        shape-mismatched key raises a RuntimeError listing them all; with ``strict=False``
        the matching keys are loaded and the rest reported.
        """
        own = dict(self.named_parameters())
        own.update(self.named_buffers())
        missing = [name for name in own if name not in state]
        unexpected = [name for name in state if name not in own]
        mismatched = []
        for name, value in state.items():
            if name in own:
                shape = tuple(np.shape(value.data if isinstance(value, Tensor) else value))
                if shape != own[name].shape:
                    mismatched.append((name, own[name].shape, shape))
        report = LoadReport(missing, unexpected, mismatched)
        if strict and (missing or unexpected or mismatched):
            raise RuntimeError(
                f"load_state_dict: the state does not match the model: {_describe(report)}"
            )
        bad = {name for name, _, _ in mismatched}
        for name, value in state.items():
            if name in own and name not in bad:
                target = own[name]
                array = value.numpy() if isinstance(value, Tensor) else to_numpy(value)
                target.data = target.device.upload(array.astype(target.dtype))
        return report

    # ----------------------------------------------------------------- calling, printing
    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [
            f"({name}): " + repr(child).replace("\n", "\n  ")
            for name, child in self._modules.items()
        ]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def summary(self, input_shape: Any, device: str | Device | None = None) -> ModelSummary:
        """Each layer's output shape, parameters and FLOPs from one forward pass on random input
        of ``input_shape``, batch dimension first as in torchinfo (``(1, 1, 28, 28)``); print it
        for the table. See :func:`fastnet.nn.summary.summarize`."""
        from .summary import summarize  # summary imports the layers, which import this module

        return summarize(self, input_shape, device)


def _remove(name: str, *registries: dict) -> None:
    for registry in registries:
        registry.pop(name, None)


def _refusal(value: Any, role: str, name: str, expected: str) -> str:
    return f"cannot assign {type(value).__name__!r} as {role} {name!r} ({expected} expected)"


def _describe(report: LoadReport) -> str:
    parts = []
    if report.missing_keys:
        parts.append(f"missing keys {report.missing_keys}")
    if report.unexpected_keys:
        parts.append(f"unexpected keys {report.unexpected_keys}")
    if report.mismatched_keys:
        parts.append(
            "shape mismatches "
            + ", ".join(
                f"{name}: model {model} vs state {file}"
                for name, model, file in report.mismatched_keys
            )
        )
    return "; ".join(parts)


def match_names(names: Any, pattern: str) -> list[str]:
    """The names matching a glob pattern (``features.*``) — used by freezing and param groups."""
    return [name for name in names if fnmatch.fnmatchcase(name, pattern)]
