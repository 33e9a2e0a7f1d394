"""The containers, with PyTorch's names and behaviour: Sequential, ModuleList, ModuleDict,
ParameterList, ParameterDict.

Children and parameters register under their index (``0``, ``1``, ...) or key, so state-dict
names match PyTorch's (``0.weight``, ``blocks.2.bias``, ``heads.cls.weight``). Deleting or
inserting renumbers a list-like container, as PyTorch does.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ..tensor import Tensor
from .fused import ConvReLU2d
from .layers import Conv2d, Identity, MaxPool2d, ReLU
from .module import Module, Parameter
from .normalization import relu_fuses

__all__ = ["Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"]


def _index(index: Any, length: int, container: str) -> int:
    """A list index (negative counts from the end) checked against ``length``."""
    position = operator.index(index)
    if not -length <= position < length:
        raise IndexError(f"index {index} is out of range for a {container} of length {length}")
    return position % length


class _ListOfModules(Module):
    """What Sequential and ModuleList share: children named by their position."""

    def _values(self) -> list[Module]:
        return list(self._modules.values())

    def _renumber(self, modules: Iterable[Module]) -> None:
        self._modules.clear()
        for position, module in enumerate(modules):
            self.add_module(str(position), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __setitem__(self, index: int, module: Module) -> None:
        name = list(self._modules)[_index(index, len(self), type(self).__name__)]
        self._modules[name] = module

    def __delitem__(self, index: int | slice) -> None:
        modules = self._values()
        if isinstance(index, slice):
            del modules[index]
        else:
            del modules[_index(index, len(modules), type(self).__name__)]
        self._renumber(modules)

    def append(self, module: Module) -> Any:
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> Any:
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        modules = self._values()
        modules.insert(index, module)
        self._renumber(modules)

    def pop(self, index: int = -1) -> Module:
        module = self[index]
        del self[index]
        return module

    def __iadd__(self, modules: Iterable[Module]) -> Any:
        return self.extend(modules)

    def __dir__(self) -> list[str]:
        return [name for name in super().__dir__() if not name.isdigit()]


def _pool_commutes(relu: Module, pool: Module) -> bool:
    """Whether Sequential may call ``pool`` before ``relu`` where it follows it: a ReLU followed
    by a 2-D max-pool gives the same values and the same gradients in either order (max and
    relu commute, NaN included; a window whose maximum is not positive passes no gradient either
    way), and after a 2x2 pool the ReLU has a quarter of the elements to read, write and mask
    (the MNIST CNN's step before and after: the results log; ``fastnet bench --train --only
    mnist_cnn``). Not when the ReLU works in place (its input would change) or when either has
    an instance ``forward`` (a hook, as :func:`fastnet.nn.summary.forward_hooks` installs)."""
    return (
        type(relu) is ReLU
        and type(pool) is MaxPool2d
        and not relu.inplace
        and not pool.return_indices
        and "forward" not in relu.__dict__
        and "forward" not in pool.__dict__
    )


def _plain(module: Module, kind: type) -> bool:
    """``module`` is exactly a ``kind`` (not a subclass, which may compute something else) and
    has no instance ``forward`` (a hook, as :func:`fastnet.nn.summary.forward_hooks` installs)."""
    return type(module) is kind and "forward" not in module.__dict__


def _halves(pool: MaxPool2d) -> bool:
    """The pool takes 2x2 windows at stride 2, unpadded, floor mode, no indices returned."""
    pairs = [
        value if isinstance(value, tuple) else (value, value)
        for value in (pool.kernel_size, pool.stride, pool.padding, pool.dilation)
    ]
    return pairs == [(2, 2), (2, 2), (0, 0), (1, 1)] and not (pool.ceil_mode or pool.return_indices)


def _conv_relu_pool_fuses(conv: Module, relu: Module | None, pool: Module) -> bool:
    """Whether Sequential may run Conv2d → ReLU → MaxPool2d(2) as
    ``conv.forward_relu_max_pool(x)`` (``F.conv2d_relu_max_pool2d``): the same values and
    gradients, without the convolution's output, the pool's pass over it and the ReLU's (the MNIST
    CNN's step: the results log, ``fastnet bench --train --only mnist_cnn``). An in-place ReLU
    fuses too: the tensor it would change exists only inside the three. So does what
    :func:`fastnet.inference.optimize_for_inference` makes of the three: a ConvReLU2d, the
    Identity left in the ReLU's place, the pool (``fastnet bench --infer --only mnist_cnn``), and
    a ConvReLU2d right before the pool (``relu`` None)."""
    if not (_plain(pool, MaxPool2d) and _halves(pool)):
        return False
    return (_plain(conv, Conv2d) and _plain(relu, ReLU)) or _conv_relu_then_pool(conv, relu)


def _conv_relu_then_pool(conv: Module, between: Module | None) -> bool:
    """A ConvReLU2d, then nothing or an Identity before a pool that
    :func:`_conv_relu_pool_fuses` takes (checked by the caller)."""
    return _plain(conv, ConvReLU2d) and (between is None or _plain(between, Identity))


class Sequential(_ListOfModules):
    """Children called in order; named ``0``, ``1``, ... as in PyTorch, or by the keys of an
    OrderedDict given alone."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (OrderedDict, dict)):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                self.add_module(str(index), module)

    def forward(self, input: Any) -> Any:
        modules = list(self._modules.values())
        index = 0
        while index < len(modules):
            module = modules[index]
            following = modules[index + 1] if index + 1 < len(modules) else None
            if index + 2 < len(modules) and _conv_relu_pool_fuses(*modules[index : index + 3]):
                input = module.forward_relu_max_pool(input)
                index += 3
            elif following is not None and _conv_relu_pool_fuses(module, None, following):
                input = module.forward_relu_max_pool(input)
                index += 2
            elif following is not None and _pool_commutes(module, following):
                input = module(following(input))
                index += 2
            elif following is not None and relu_fuses(module, following):
                input = module.forward_relu(input)
                index += 2
            else:
                input = module(input)
                index += 1
        return input

    def __getitem__(self, index: int | slice) -> Module:
        if isinstance(index, slice):  # keeps the names, as PyTorch's slicing does
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return self._values()[_index(index, len(self), "Sequential")]

    def __add__(self, other: Sequential) -> Sequential:
        if not isinstance(other, Sequential):
            raise ValueError(
                f"add operator supports only objects of Sequential class, but "
                f"{type(other).__name__} is given"
            )
        return Sequential(*self, *other)


class ModuleList(_ListOfModules):
    """A list of modules, registered as children ``0``, ``1``, ..."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ModuleList(self._values()[index])
        return self._values()[_index(index, len(self), "ModuleList")]

    def __add__(self, other: Iterable[Module]) -> ModuleList:
        return ModuleList([*self, *other])


class ModuleDict(Module):
    """Modules by string key, in insertion order (PyTorch's ModuleDict)."""

    def __init__(self, modules: Mapping[str, Module] | Iterable | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: str) -> bool:
        return key in self._modules

    def keys(self) -> Iterable[str]:
        return self._modules.keys()

    def items(self) -> Iterable[tuple[str, Module]]:
        return self._modules.items()

    def values(self) -> Iterable[Module]:
        return self._modules.values()

    def clear(self) -> None:
        self._modules.clear()

    def pop(self, key: str) -> Module:
        return self._modules.pop(key)

    def update(self, modules: Mapping[str, Module] | Iterable) -> None:
        pairs = modules.items() if isinstance(modules, Mapping) else modules
        for key, module in pairs:
            self[key] = module


def _as_parameter(value: Any) -> Any:
    """PyTorch's rule: a plain tensor (or array) put in a ParameterList/Dict becomes a
    Parameter; anything else is kept as an attribute."""
    if isinstance(value, Parameter) or not isinstance(value, (Tensor, np.ndarray)):
        return value
    return Parameter(value)


class ParameterList(Module):
    """Parameters registered as ``0``, ``1``, ... (PyTorch's ParameterList)."""

    def __init__(self, values: Iterable[Any] | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_size", 0)
        if values is not None:
            self.extend(values)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ParameterList([self[i] for i in range(len(self))[index]])
        return getattr(self, str(_index(index, len(self), "ParameterList")))

    def __setitem__(self, index: int, value: Any) -> None:
        setattr(self, str(_index(index, len(self), "ParameterList")), _as_parameter(value))

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self)))

    def append(self, value: Any) -> ParameterList:
        position = self._size
        object.__setattr__(self, "_size", position + 1)
        setattr(self, str(position), _as_parameter(value))
        return self

    def extend(self, values: Iterable[Any]) -> ParameterList:
        for value in values:
            self.append(value)
        return self

    def __iadd__(self, values: Iterable[Any]) -> ParameterList:
        return self.extend(values)


class ParameterDict(Module):
    """Parameters by string key, in insertion order (PyTorch's ParameterDict)."""

    def __init__(self, parameters: Mapping[str, Any] | Iterable | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_keys", [])
        if parameters is not None:
            self.update(parameters)

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._keys:
            self._keys.append(key)
        setattr(self, key, _as_parameter(value))

    def __delitem__(self, key: str) -> None:
        self._keys.remove(key)
        delattr(self, key)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys))

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def keys(self) -> list[str]:
        return list(self._keys)

    def items(self) -> list[tuple[str, Any]]:
        return [(key, self[key]) for key in self._keys]

    def values(self) -> list[Any]:
        return [self[key] for key in self._keys]

    def pop(self, key: str) -> Any:
        value = self[key]
        del self[key]
        return value

    def update(self, parameters: Mapping[str, Any] | Iterable) -> None:
        pairs = parameters.items() if isinstance(parameters, Mapping) else parameters
        for key, value in pairs:
            self[key] = value
