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

Two hooks let data-parallel training overlap communication with the walk (PyTorch's names): a
leaf's ``register_post_accumulate_grad_hook(hook)`` calls ``hook(leaf)`` as soon as the walk
has finished the leaf's ``.grad`` (every path to it is summed by then), and
:func:`queue_callback`, called from such a hook, runs a function once the walk is done, before
``backward()`` returns.

Autograd is never silently wrong. Freeing a node drops what it saved and marks it freed: a later
walk that reaches it (a second ``backward()``, or a new loss built on part of the old graph)
raises unless the first walk passed ``retain_graph=True``. Every tensor carries ``_version``,
bumped by each in-place change; a node records its inputs' versions when it is recorded (if it
saves inputs), and the walk raises, naming the op, when an input or the node's saved output was
changed in place since.

The engine sees a tensor only through its attributes ``data``, ``device``, ``requires_grad``,
``grad``, ``_ctx``, ``_version`` and the constructor ``_wrap(array, device)``, so this module
imports nothing from :mod:`fastnet.tensor` (which builds on it) and the two have no import cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from .backend import Device

if TYPE_CHECKING:
    from .tensor import Tensor

__all__ = [
    "Function",
    "LeafHooks",
    "RemovableHandle",
    "queue_callback",
    "backward",
    "enable_grad",
    "inference_mode",
    "is_grad_enabled",
    "no_grad",
    "not_a_tensor",
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


def inference_mode() -> AbstractContextManager[None]:
    """PyTorch's ``inference_mode``: ops record no graph. The same as :func:`no_grad` here, since
    a tensor made without a graph carries nothing that a later backward could need."""
    return no_grad()


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
    try:
        device = tensors[0].device
    except (IndexError, AttributeError):
        device = None
    if device.__class__ is not Device:  # a NumPy array has a .device too ("cpu"): look closer
        _refuse_non_tensors(op, tensors)
    for other in tensors[1:]:
        if other.device is not device:
            if not isinstance(getattr(other, "device", None), Device):
                _refuse_non_tensors(op, tensors)
            raise RuntimeError(
                f"{op}: tensors are on different devices: {device} and {other.device}; "
                f"move one with .to()"
            )
    return device


def _refuse_non_tensors(op: str, inputs: Sequence[Any]) -> None:
    if not inputs:
        raise TypeError(f"{op}: expected at least one Tensor")
    for value in inputs:
        if not isinstance(getattr(value, "device", None), Device):
            raise not_a_tensor(op, value)


def not_a_tensor(op: str, value: Any) -> TypeError:
    """The error for a value that ``op`` needs as a Tensor (a NumPy array handed to a model)."""
    kind = type(value)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    return TypeError(f"{op}: expected a Tensor, got {name}; wrap it with fastnet.tensor(...)")


class Function:
    """One differentiable op. Subclasses define ``forward`` and ``backward`` over arrays.

    ``saves_inputs`` / ``saves_output``: whether backward reads the inputs' / the output's values
    (the version check looks only at what is read; an op that needs neither turns both off)."""

    device: Device
    inputs: tuple[Tensor, ...]
    saves_inputs: bool = True
    saves_output: bool = True
    _versions: tuple[int, ...] = ()

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
            if cls.saves_inputs:
                fn._versions = tuple([t._version for t in inputs])
            out.requires_grad = True
            out._ctx = fn
        return out

    @property
    def _freed(self) -> bool:
        """Freed by a backward walk, which clears the node's ``__dict__`` (its saved arrays and
        inputs); a node on a graph holds its inputs until then."""
        return "inputs" not in self.__dict__


def _check_saved(node: Tensor, fn: Function) -> None:
    """Raise, naming the op, when backward would read values changed in place since forward."""
    op = type(fn).__name__.lower()
    if fn._freed:
        raise RuntimeError(
            f"{op}: trying to backward through the graph a second time (or through part of a "
            "graph that an earlier backward() already freed); its saved values are gone. "
            "Specify retain_graph=True in the first backward() to walk the graph again"
        )
    if fn._versions:
        for position, (tensor, recorded) in enumerate(zip(fn.inputs, fn._versions, strict=True)):
            if tensor._version != recorded:
                _modified_in_place(op, f"input {position}", tensor, recorded)
    if node._version and fn.saves_output:
        _modified_in_place(op, "output", node, 0)


def _modified_in_place(op: str, which: str, tensor: Tensor, expected: int) -> None:
    raise RuntimeError(
        f"{op}: one of the variables needed for gradient computation has been modified by an "
        f"inplace operation: its {which} (shape {tuple(tensor.shape)}, {tensor.dtype}) is at "
        f"version {tensor._version}; expected version {expected} instead. Modify a copy, or do "
        "the in-place change after backward()"
    )


def backward(root: Tensor, seed: Any, retain_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf), with ``seed`` as d(root), into every leaf's ``.grad``; free
    the graph unless ``retain_graph``. ``Tensor.backward`` checks the arguments and calls this.
    Raises before touching any gradient when the graph was freed or a saved value changed."""
    xp = root.device.xp
    order = _topological_order(root)
    outer, _walk.callbacks = _walk.callbacks, []  # a hook may run a backward of its own
    try:
        _walk_graph(root, seed, retain_graph, xp, order)
        callbacks = _walk.callbacks
    finally:
        _walk.callbacks = outer
    for callback in callbacks:
        callback()


def _walk_graph(root: Tensor, seed: Any, retain_graph: bool, xp: Any, order: list) -> None:
    grads: dict[int, Any] = {id(root): seed}
    stored: set[int] = set()  # arrays already handed to a leaf: a second leaf gets a copy
    for node in reversed(order):
        grad = grads.pop(id(node), None)
        fn = node._ctx
        if grad is None:
            if fn is not None and not retain_graph:
                fn.__dict__.clear()  # free the node (see Function._freed)
            continue
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
            hooks = getattr(node, "_post_accumulate_grad_hooks", None)
            if hooks:
                for hook in list(hooks.values()):
                    hook(node)
            continue
        input_grads = fn.backward(grad)
        for parent, parent_grad in zip(fn.inputs, input_grads, strict=False):
            if parent_grad is None or not parent.requires_grad:
                continue
            parent_grad = unbroadcast(parent_grad, parent.shape)
            key = id(parent)
            grads[key] = parent_grad if key not in grads else grads[key] + parent_grad
        if not retain_graph:
            fn.__dict__.clear()  # free the node (see Function._freed)


class _Walk(threading.local):
    callbacks: list | None = None  # a list while this thread's backward walk runs


_walk = _Walk()


def queue_callback(callback: Any) -> None:
    """Run ``callback()`` once the backward walk in progress on this thread has finished every
    gradient, before ``backward()`` returns (from a hook; RuntimeError outside a walk)."""
    if _walk.callbacks is None:
        raise RuntimeError("queue_callback() can only be called during a backward walk")
    _walk.callbacks.append(callback)


class RemovableHandle:
    """What registering a hook returns: ``remove()`` unregisters it."""

    _next_id = 0

    def __init__(self, hooks: dict) -> None:
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self) -> None:
        self._hooks.pop(self.id, None)


class LeafHooks:
    """Tensor's hooks on a leaf's finished gradient (a mixin: Tensor's one slot for them)."""

    __slots__ = ("_post_accumulate_grad_hooks",)

    def register_post_accumulate_grad_hook(self, hook: Any) -> RemovableHandle:
        """Call ``hook(tensor)`` each time a backward walk has accumulated this leaf's
        ``.grad`` (PyTorch's hook of that name). Only leaves that require a gradient have one."""
        if not self.requires_grad or self._ctx is not None:
            raise RuntimeError(
                "register_post_accumulate_grad_hook: only leaf tensors that require grad "
                "accumulate a gradient"
            )
        if not callable(hook):
            raise TypeError(f"the hook must be callable, got {type(hook).__name__}")
        hooks = getattr(self, "_post_accumulate_grad_hooks", None)
        if hooks is None:
            hooks = self._post_accumulate_grad_hooks = {}
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle


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
        fn = node._ctx
        if fn is not None:
            if fn._versions or node._version or "inputs" not in fn.__dict__:
                _check_saved(node, fn)
            stack.extend((p, False) for p in fn.inputs if p.requires_grad and id(p) not in visited)
    return order
