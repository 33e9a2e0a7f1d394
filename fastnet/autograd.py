"""The reverse-mode autograd engine: grad mode, the ``Function`` node, the graph walk.

A differentiable op is a small :class:`Function` subclass whose ``forward`` and ``backward`` sit
next to each other and work on raw arrays of the device:

    forward(*arrays, **params) -> output array         (saves what backward needs on self)
    backward(grad_output) -> one gradient per input     (None where no gradient flows)

``Function.apply(*tensors, **params)`` runs ``forward`` on the tensors' arrays and, when grad mode
is on and an input requires a gradient, records itself as the output's ``_ctx`` with the input
tensors. :func:`backward` orders that graph topologically once, walks it in reverse, accumulates
each gradient, reduces broadcast gradients back to their input's shape (:func:`unbroadcast`),
stores the results in the leaves' ``.grad`` and frees the graph.

The engine sees a tensor only through its attributes ``data``, ``device``, ``requires_grad``,
``grad``, ``_ctx`` and the constructor ``_wrap(array, device)``, so this module imports nothing
from :mod:`fastnet.tensor` (which builds on it) and the two have no import cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import Device
    from .tensor import Tensor

__all__ = [
    "Function",
    "backward",
    "enable_grad",
    "is_grad_enabled",
    "no_grad",
    "unbroadcast",
]

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextmanager
def no_grad() -> Iterator[None]:
    """Within this block, ops record no graph (evaluation, optimizer updates)."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


@contextmanager
def enable_grad() -> Iterator[None]:
    previous = is_grad_enabled()
    _state.grad_enabled = True
    try:
        yield
    finally:
        _state.grad_enabled = previous


def unbroadcast(grad: Any, shape: tuple) -> Any:
    """Sum ``grad`` over the axes that broadcasting added or stretched to reach its shape."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _check_devices(op: str, tensors: Sequence[Tensor]) -> Device:
    device = tensors[0].device
    for other in tensors[1:]:
        if other.device is not device:
            raise RuntimeError(
                f"{op}: tensors are on different devices: {device} and {other.device}; "
                f"move one with .to()"
            )
    return device


class Function:
    """One differentiable op. Subclasses define ``forward`` and ``backward`` over arrays."""

    device: Device
    inputs: tuple[Tensor, ...]

    def forward(self, *arrays: Any, **params: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad: Any) -> tuple:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs: Tensor, **params: Any) -> Tensor:
        fn = cls()
        fn.device = _check_devices(cls.__name__.lower(), inputs)
        data = fn.forward(*(t.data for t in inputs), **params)
        out = inputs[0]._wrap(data, fn.device)
        # requires_grad first: it is an attribute, grad mode a thread-local lookup
        if any([t.requires_grad for t in inputs]) and is_grad_enabled():
            fn.inputs = inputs
            out.requires_grad = True
            out._ctx = fn
        return out


def backward(root: Tensor, seed: Any, retain_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf), with ``seed`` as d(root), into every leaf's ``.grad``; free
    the graph unless ``retain_graph``. ``Tensor.backward`` checks the arguments and calls this."""
    xp = root.device.xp
    grads: dict[int, Any] = {id(root): seed}
    stored: set[int] = set()  # arrays already handed to a leaf: a second leaf gets a copy
    for node in reversed(_topological_order(root)):
        grad = grads.pop(id(node), None)
        if grad is None:
            continue
        fn = node._ctx
        if fn is None:  # a leaf
            if node.grad is None:
                if (
                    id(grad) in stored
                    or grad is seed
                    or not grad.flags.c_contiguous
                    or grad.base is not None
                ):
                    grad = xp.array(grad)  # own, contiguous, writable: optimizers update from it
                stored.add(id(grad))
                node.grad = node._wrap(grad, node.device)
            else:
                node.grad.data += grad  # in place, as PyTorch accumulates: no new array a step
            continue
        input_grads = fn.backward(grad)
        for parent, parent_grad in zip(fn.inputs, input_grads, strict=False):
            if parent_grad is None or not parent.requires_grad:
                continue
            parent_grad = unbroadcast(parent_grad, parent.shape)
            key = id(parent)
            grads[key] = parent_grad if key not in grads else grads[key] + parent_grad
        if not retain_graph:
            node._ctx = None


def _topological_order(root: Tensor) -> list[Tensor]:
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:  # iterative depth-first search: deep graphs must not hit the recursion limit
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            stack.extend(
                (p, False) for p in node._ctx.inputs if p.requires_grad and id(p) not in visited
            )
    return order
