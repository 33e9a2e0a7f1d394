"""The reverse-mode autograd engine: grad mode, the ``Function`` node, the graph walk.

A differentiable op is a small :class:`Function` subclass whose ``forward`` and ``backward`` sit
next to each other and work on raw arrays of the device:

    forward(*arrays, **params) -> output array         (saves what backward needs on self)
    backward(grad_output) -> one gradient per input     (None where no gradient flows)
    backward_of_sum(first, second) -> the same, for grad_output = first + second (optional)

``Function.apply(*tensors, **params)`` runs ``forward`` on the tensors' arrays and, when grad mode
is on and an input requires a gradient, records itself as the output's ``_ctx`` with the input
tensors. :func:`backward` counts, once, how many ops consumed each tensor of that graph, then
walks it from the output as PyTorch's engine does (a node runs when its last consumer has run,
so its gradient is final), accumulates each gradient, reduces broadcast gradients back to their
input's shape (:func:`unbroadcast`), stores the results in the leaves' ``.grad`` and frees the
graph.

A tensor that several ops consumed gets the sum of their gradients. The walk keeps the last two
gradients apart until the node runs (an earlier pair is added when a third arrives, so the sum
rounds as adding them in arrival order does) and hands them to ``backward_of_sum``, which adds
them, then runs ``backward``, unless the op can add them inside its own pass (the ReLUs: a
residual block's output feeds the next block's convolution and its shortcut).

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

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from threading import get_ident
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

# The grad mode of each thread where it is off (PyTorch's grad mode is per thread, on by default),
# by thread id: an empty dict, the usual case, answers is_grad_enabled() with one global lookup
# (a threading.local attribute costs several times a whole small op's bookkeeping).
_grad_off: dict[int, bool] = {}


def is_grad_enabled() -> bool:
    return not _grad_off or get_ident() not in _grad_off


def _set_grad_enabled(key: int, enabled: bool) -> None:
    if enabled:
        _grad_off.pop(key, None)
    else:
        _grad_off[key] = True


@contextmanager
def no_grad() -> Iterator[None]:
    """Within this block, ops record no graph (evaluation, optimizer updates)."""
    key = get_ident()  # restored for this thread even if the block ends on another
    previous = key not in _grad_off
    _set_grad_enabled(key, False)
    try:
        yield
    finally:
        _set_grad_enabled(key, previous)


def inference_mode() -> AbstractContextManager[None]:
    """PyTorch's ``inference_mode``: ops record no graph. The same as :func:`no_grad` here, since
    a tensor made without a graph carries nothing that a later backward could need."""
    return no_grad()


@contextmanager
def enable_grad() -> Iterator[None]:
    key = get_ident()
    previous = key not in _grad_off
    _set_grad_enabled(key, True)
    try:
        yield
    finally:
        _set_grad_enabled(key, previous)


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

    def backward_of_sum(self, first: Any, second: Any) -> tuple:
        """``backward(first + second)``: the output fed two ops. An op that can add the two in
        its own pass over memory overrides this."""
        return self.backward(first + second)

    @classmethod
    def apply(cls, *inputs: Tensor, **params: Any) -> Tensor:
        fn = cls()
        # the hot paths, one to three inputs (three: a layer with a bias), check the devices and
        # read the arrays inline; any doubt (a non-tensor, two devices, no input) goes to
        # _check_devices, which raises
        if len(inputs) == 2 or len(inputs) == 3:
            a, b, c = inputs[0], inputs[1], inputs[-1]  # two inputs: c is b
            try:
                device = a.device
                same = device.__class__ is Device and b.device is device and c.device is device
            except AttributeError:
                same = False
            fn.device = device if same else _check_devices(cls.__name__.lower(), inputs)
            if len(inputs) == 3:
                data = fn.forward(a.data, b.data, c.data, **params)
            elif params:
                data = fn.forward(a.data, b.data, **params)
            else:
                data = fn.forward(a.data, b.data)
            record = a.requires_grad or b.requires_grad or c.requires_grad
        elif len(inputs) == 1:
            a = inputs[0]
            device = getattr(a, "device", None)
            fn.device = (
                device
                if device.__class__ is Device
                else _check_devices(cls.__name__.lower(), inputs)
            )
            data = fn.forward(a.data, **params)
            record = a.requires_grad
        else:
            fn.device = _check_devices(cls.__name__.lower(), inputs)
            data = fn.forward(*[t.data for t in inputs], **params)
            record = any([t.requires_grad for t in inputs])
        out = inputs[0]._wrap(data, fn.device)
        # requires_grad first: it is an attribute, grad mode a lookup
        if record and (not _grad_off or get_ident() not in _grad_off):
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
    consumers = _count_consumers(root)
    key = get_ident()
    outer = _callbacks.get(key)  # a hook may run a backward of its own
    _callbacks[key] = callbacks = []
    try:
        _walk_graph(root, seed, retain_graph, consumers)
    finally:
        if outer is None:
            del _callbacks[key]
        else:
            _callbacks[key] = outer
    for callback in callbacks:
        callback()


def _count_consumers(root: Tensor) -> dict[int, int]:
    """For each tensor below ``root`` that needs a gradient (by id): how many graph edges lead
    from it to an op, i.e. how many gradients it sums before it is final. Checks every node's
    saved values on the way, so that the walk raises before it touches any gradient."""
    consumers: dict[int, int] = {}
    stack = [root]
    while stack:  # iterative: deep graphs must not hit the recursion limit
        node = stack.pop()
        fn = node._ctx
        try:
            inputs = fn.inputs
        except AttributeError:  # None (a leaf root), or freed by an earlier walk
            if fn is None:
                continue
            _check_saved(node, fn)
        if fn._versions or node._version:
            _check_saved(node, fn)
        for parent in inputs:
            if parent.requires_grad:
                key = id(parent)
                if key in consumers:
                    consumers[key] += 1
                else:
                    consumers[key] = 1
                    if parent._ctx is not None:  # a leaf has nothing to look into
                        stack.append(parent)
    return consumers


class _Summands:
    """Two gradients of one tensor waiting to be added (first + second), until the node they
    belong to runs."""

    __slots__ = ("first", "second")

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    @staticmethod
    def joined(pending: Any, arrived: Any) -> _Summands:
        """``pending`` (a gradient or a pair) and one more: a pair, the earlier two added."""
        if pending.__class__ is _Summands:
            pending = pending.total()
        return _Summands(pending, arrived)

    def total(self) -> Any:
        return self.first + self.second


def _walk_graph(root: Tensor, seed: Any, retain_graph: bool, consumers: dict[int, int]) -> None:
    """Walk from ``root`` in an order where a node comes after every op that consumed it (it is
    ready when its last consumer is done, so its gradient is final), as PyTorch's engine."""
    grads: dict[int, Any] = {id(root): seed}
    stored: set[int] = set()  # arrays already handed to a leaf: a second leaf gets a copy
    ready = [root]
    while ready:
        node = ready.pop()
        grad = grads.pop(id(node), None)
        fn = node._ctx
        if fn is None:  # a leaf
            if grad is None:
                continue
            if grad.__class__ is _Summands:
                grad = grad.total()
            if node.grad is None:
                if (
                    id(grad) in stored
                    or grad is seed
                    or not grad.flags.c_contiguous
                    or grad.base is not None
                ):
                    # own, C-contiguous (a broadcast view's copy keeps its layout unless told),
                    # writable: optimizers update from it
                    grad = node.device.xp.array(grad, order="C")
                stored.add(id(grad))
                node.grad = node._wrap(grad, node.device)
            else:
                node.grad.data += grad  # in place, as PyTorch accumulates: no new array a step
            if _leaf_hooks_registered:
                hooks = getattr(node, "_post_accumulate_grad_hooks", None)
                if hooks:
                    for hook in list(hooks.values()):
                        hook(node)
            continue
        inputs = fn.inputs
        if grad is None:  # no gradient reached this node: none flows on, but it still counts
            parent_grads: Any = (None,) * len(inputs)
        else:
            parent_grads = (
                fn.backward_of_sum(grad.first, grad.second)
                if grad.__class__ is _Summands
                else fn.backward(grad)
            )
            if len(parent_grads) < len(inputs):  # the inputs past them get no gradient
                parent_grads = (*parent_grads, *(None,) * (len(inputs) - len(parent_grads)))
        for parent, parent_grad in zip(inputs, parent_grads):  # noqa: B905 (lengths match)
            if parent.requires_grad:
                key = id(parent)
                if parent_grad is not None:
                    if parent_grad.shape != parent.data.shape:
                        parent_grad = unbroadcast(parent_grad, parent.data.shape)
                    grads[key] = (
                        _Summands.joined(grads[key], parent_grad) if key in grads else parent_grad
                    )
                count = consumers[key] - 1
                if count:
                    consumers[key] = count
                else:
                    ready.append(parent)
        if not retain_graph:
            fn.__dict__.clear()  # free the node (see Function._freed)


# By thread id: the callbacks queued during the backward walk running on that thread.
_callbacks: dict[int, list] = {}
_leaf_hooks_registered = False  # until a hook is registered, the walk never looks for one


def queue_callback(callback: Any) -> None:
    """Run ``callback()`` once the backward walk in progress on this thread has finished every
    gradient, before ``backward()`` returns (from a hook; RuntimeError outside a walk)."""
    callbacks = _callbacks.get(get_ident())
    if callbacks is None:
        raise RuntimeError("queue_callback() can only be called during a backward walk")
    callbacks.append(callback)


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
        global _leaf_hooks_registered
        _leaf_hooks_registered = True
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle
