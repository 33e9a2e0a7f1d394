"""Optimizers over the fused update kernels: SGD (momentum, Nesterov), Adam, AdamW.

Parameter groups carry their own hyper-parameters (per-group learning rate and weight decay, as in
PyTorch). Parameters without a gradient (frozen, or unused this step) are not updated and get no
state.

**Multi-tensor steps.** The parameters of a group that have a gradient live as views into flat
buffers, one per device and dtype (a :class:`_Bucket`), and their state (``momentum_buffer``,
``exp_avg``, ``exp_avg_sq``) in flat buffers of the same layout; ``optimizer.state[id(p)]`` holds
per-parameter views of them. A step gathers the gradients into a flat buffer with one kernel
(``gather_flat``, ``fastnet.kernels.gather``) and updates each bucket with one kernel call
(``adam_flat_step`` / ``sgd_flat_step``, ``fastnet.kernels.optim``): on cuda two launches per
group, not one or two per parameter. On the CPU, where a call costs Python time rather than a
launch, only parameters of up to :data:`CPU_OWN_BUCKET_ELEMENTS` share a bucket; a larger one has
its own and its gradient is not copied (on the MNIST CNN the optimizer step is faster this way than
with one call per parameter or one bucket for all: results log, "the CPU's bucket policy").

The layout is checked at every step, one identity test per parameter. When a parameter's
``.data`` is no longer its view (``module.to()``, ``load_state_dict``, an assignment), or the set
of parameters with a gradient changed, the group's buckets are built again: values and state are
copied in (moved to the parameter's device and dtype) and each parameter's data is rebound to its
view; nothing is ever updated in a stale buffer. Leaving the parameters without a gradient out of
the buckets is how one launch keeps PyTorch's rule: a model whose set of parameters with
gradients changes from step to step pays a rebuild at each change (and on cuda one device read of
the step counters); a constant set pays nothing.

**Skipping on the device.** ``step(skip_if=flag)`` takes a one-element array (bool or float32, any
number: non-zero skips) on the parameters' device. The kernels read it, so the host never waits on
the GPU. A bucket's step count lives where its buffers do: the host counts the calls, the kernel
counts the skipped ones in a one-element device array, and the step is their difference, so a
skipped step neither moves a parameter nor advances Adam's bias correction. Adam's
``state["step"]`` is a :class:`StepCount` that reads it when converted; ``state_dict()`` writes
plain ints (one device read per bucket, at checkpoint time). A bucket whose every call was
skipped has taken no step: its parameters are left out of ``state_dict()``, and lose their
(untouched, initial) state when the buckets are rebuilt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..autograd import RemovableHandle
from ..backend import Device, to_numpy
from ..tensor import Tensor, enable_grad, no_grad

# On the CPU a kernel call's Python cost is about that of gathering a parameter of this size, so
# a larger parameter gets a bucket of its own there (its gradient used where it lies, no copy)
# and the smaller ones share one; on cuda a launch costs far more than a copy: one bucket for
# all. Re-measure with benchmarks/step_time.py's Adam line, this threshold changed.
CPU_OWN_BUCKET_ELEMENTS = 1 << 16


class StepCount:
    """The steps a bucket's parameters have taken (Adam's ``state["step"]``), kept where their
    buffers live; ``int()`` reads it (on cuda a device-to-host copy: not for a training step)."""

    __slots__ = ("_bucket",)

    def __init__(self, bucket: _Bucket) -> None:
        self._bucket = bucket

    def __int__(self) -> int:
        return self._bucket.steps_taken()

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return int(self) == other

    __hash__ = None  # type: ignore[assignment] - compares by a value that changes

    def __repr__(self) -> str:
        return repr(int(self))


def _on(device: Device, array: Any) -> Any:
    """``array`` on ``device`` (copied there when it lives elsewhere)."""
    return array if isinstance(array, device.xp.ndarray) else device.asarray(to_numpy(array))


class _Bucket:
    """Parameters of one group, device and dtype, end to end in flat buffers, with their state
    buffers laid out alike and their step counter (module docstring)."""

    def __init__(
        self,
        members: list[Tensor],
        device: Device,
        dtype: Any,
        steps: int,
        state_names: tuple[str, ...],
    ) -> None:
        xp = device.xp
        self.members = members
        self.device = device
        self.dtype = np.dtype(dtype)
        sizes = [int(p.data.size) for p in members]
        bounds = np.cumsum([0, *sizes]).tolist()
        self.spans = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.offsets = tuple(bounds[:-1])
        self.param = xp.empty(bounds[-1], self.dtype)
        # one member's gradient is used as it is: nothing to gather
        self.grad = xp.empty(bounds[-1], self.dtype) if len(members) > 1 else None
        self.state = {name: xp.zeros(bounds[-1], self.dtype) for name in state_names}
        self.calls = steps  # calls so far; the kernel counts the skipped ones in skipped_steps
        self.skipped_steps = xp.zeros(1, np.int64)

    def steps_taken(self) -> int:
        """Calls that were not skipped (on cuda: reads the device)."""
        return self.calls - int(self.device.to_host(self.skipped_steps)[0])

    def gather(self) -> Any:
        """The members' gradients, flat, in this bucket's layout and dtype."""
        xp = self.device.xp
        if self.grad is None:
            return xp.ascontiguousarray(self.members[0].grad.data, dtype=self.dtype).reshape(-1)
        sources = [xp.ascontiguousarray(p.grad.data, self.dtype).reshape(-1) for p in self.members]
        return self.device.gather_flat(sources, self.offsets, self.grad)


class _Layout:
    """A group's buckets and what they were built for: the parameters with a gradient (each with
    the view its data was bound to) and the names of the state buffers."""

    def __init__(
        self, parameters: list[Tensor], state_names: tuple[str, ...], buckets: list[_Bucket]
    ) -> None:
        self.bound = [(p, p.data) for p in parameters]
        self.state_names = state_names
        self.buckets = buckets

    def fits(self, parameters: list[Tensor], state_names: tuple[str, ...]) -> bool:
        return (
            state_names == self.state_names
            and len(parameters) == len(self.bound)
            and all(
                p is q and p.data is view
                for p, (q, view) in zip(parameters, self.bound, strict=True)
            )
        )


class Optimizer:
    """Holds parameter groups and per-parameter state; subclasses name their state buffers and
    call their flat update kernel (``_state_names``, ``_steps_taken``, ``_record_steps``,
    ``_flat_update``)."""

    defaults: dict

    def __init__(self, params: Iterable[Any], defaults: dict) -> None:
        self.defaults = defaults
        self.state: dict[int, dict] = {}  # id(parameter) -> state
        self.param_groups: list[dict] = []
        self._layouts: dict[int, _Layout] = {}  # group index -> its buckets
        self._never_skip: dict[str, Any] = {}  # device name -> a zero flag
        self._step_post_hooks: dict[int, Callable[[Optimizer, tuple, dict], None]] = {}
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        group = dict(group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        unknown = set(group) - set(self.defaults) - {"params", "name", "initial_lr"}
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown options {sorted(unknown)} in a parameter group"
            )
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        # one check for a tensor listed twice in this group or already in another: either way
        # step() would update it twice
        new_group = len(self.param_groups)
        seen = {
            id(p): (g, i)
            for g, old in enumerate(self.param_groups)
            for i, p in enumerate(old["params"])
        }
        for index, parameter in enumerate(group["params"]):
            if not isinstance(parameter, Tensor):
                raise TypeError(
                    f"{type(self).__name__} can only optimize Tensors, got "
                    f"{type(parameter).__name__}"
                )
            first = seen.setdefault(id(parameter), (new_group, index))
            if first != (new_group, index):
                where = (
                    "the same group" if first[0] == new_group else "more than one parameter group"
                )
                raise ValueError(
                    f"{type(self).__name__}: parameter {index} of group {new_group} (shape "
                    f"{parameter.shape}) is parameter {first[1]} of group {first[0]} again: a "
                    f"parameter listed twice ({where}) would be updated twice per step"
                )
        self._check_hyperparameters(group)
        self.param_groups.append(group)

    def _check_hyperparameters(self, group: dict) -> None:
        if group["lr"] < 0:
            raise ValueError(f"invalid learning rate {group['lr']}")
        if group.get("weight_decay", 0.0) < 0:
            raise ValueError(f"invalid weight_decay {group['weight_decay']}")

    def register_step_post_hook(
        self, hook: Callable[[Optimizer, tuple, dict], None]
    ) -> RemovableHandle:
        """Call ``hook(optimizer, args, kwargs)`` after every ``step()`` (PyTorch's hook), also one
        skipped on the device (its outcome is not read back); ``args`` is ``(closure,)`` when one
        was given, ``kwargs`` holds ``skip_if`` when given. ``handle.remove()`` unregisters it."""
        handle = RemovableHandle(self._step_post_hooks)
        self._step_post_hooks[handle.id] = hook
        return handle

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for parameter in group["params"]:
                if set_to_none or parameter.grad is None:
                    parameter.grad = None
                else:
                    parameter.grad.data = parameter.device.xp.zeros_like(parameter.grad.data)

    @no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, skip_if: Any = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss (or None).

        ``closure``: as PyTorch's, a function that recomputes the loss (zero_grad, forward,
        backward); it runs with gradients enabled before the update. ``skip_if``: None, or a
        one-element array (or Tensor) on the parameters' device, bool or float32 (any number):
        non-zero skips this step on every parameter, step count included. The training loop passes
        "this or an earlier loss was not finite", so a NaN never reaches a weight. On cuda the
        kernels read it: the host does not wait on the GPU.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            parameters = self._parameters_to_update(group)
            names = self._state_names(group)
            layout = self._layouts.get(index)
            if layout is None or not layout.fits(parameters, names):
                layout = self._layouts[index] = self._lay_out(group, parameters, names, layout)
            for bucket in layout.buckets:
                self._flat_update(
                    bucket,
                    bucket.gather(),
                    self._skip_flag(bucket.device, skip_if),
                    bucket.calls + 1,
                    group,
                )
                bucket.calls += 1
            for parameter in parameters:
                # updated in place (or maybe, when skipped on the device): a graph that saved it
                # is stale for autograd
                parameter._version += 1
        args = () if closure is None else (closure,)
        kwargs = {} if skip_if is None else {"skip_if": skip_if}
        for hook in list(self._step_post_hooks.values()):
            hook(self, args, kwargs)
        return loss

    @staticmethod
    def _parameters_to_update(group: dict) -> list[Tensor]:
        parameters = []
        for parameter in group["params"]:
            if parameter.grad is None or not parameter.requires_grad:
                continue
            if parameter.grad.device is not parameter.device:
                raise RuntimeError(
                    f"parameter on {parameter.device} has a gradient on {parameter.grad.device}"
                )
            parameters.append(parameter)
        return parameters

    def _skip_flag(self, device: Device, skip_if: Any) -> Any:
        if skip_if is None:
            flag = self._never_skip.get(device.name)
            if flag is None:
                flag = self._never_skip[device.name] = device.xp.zeros(1, np.bool_)
            return flag
        return skip_if.data if isinstance(skip_if, Tensor) else skip_if

    def _lay_out(
        self,
        group: dict,
        parameters: list[Tensor],
        names: tuple[str, ...],
        old: _Layout | None,
    ) -> _Layout:
        """New buckets for ``parameters``: one per device, dtype and step count (and per large
        parameter on the CPU), each parameter's values and state copied in."""
        if old is not None:
            self._settle(old)
        members: dict[tuple, list[Tensor]] = {}
        for parameter in parameters:
            state = self.state.get(id(parameter))
            steps = self._steps_taken(state, group) if state else 0
            key = (parameter.device, parameter.dtype, steps)
            if parameter.device.name == "cpu" and parameter.data.size > CPU_OWN_BUCKET_ELEMENTS:
                key += (id(parameter),)
            members.setdefault(key, []).append(parameter)
        buckets = [
            self._fill(_Bucket(together, device, dtype, steps, names))
            for (device, dtype, steps, *_), together in members.items()
        ]
        return _Layout(parameters, names, buckets)

    def _fill(self, bucket: _Bucket) -> _Bucket:
        """Copy the members' values and state into ``bucket`` and bind both to its views."""
        device = bucket.device
        for parameter, span in zip(bucket.members, bucket.spans, strict=True):
            shape = parameter.data.shape
            old = self.state.get(id(parameter), {}) if bucket.calls else {}
            view = bucket.param[span].reshape(shape)
            view[...] = _on(device, parameter.data)
            parameter.data = view
            entry = {}
            for name, flat in bucket.state.items():
                entry[name] = flat[span].reshape(shape)
                if name in old:
                    entry[name][...] = _on(device, old[name])
            self._record_steps(entry, StepCount(bucket))
            self.state[id(parameter)] = entry
        return bucket

    def _settle(self, layout: _Layout) -> None:
        """Bring the step counts of ``layout``'s buckets to the host before they are dropped; the
        state of a bucket that has taken no step is dropped with it."""
        for bucket in layout.buckets:
            steps = bucket.steps_taken()
            for parameter in bucket.members:
                if steps == 0:
                    self.state.pop(id(parameter), None)
                elif id(parameter) in self.state:
                    self._record_steps(self.state[id(parameter)], steps)

    # what a subclass says about its state and update
    def _state_names(self, group: dict) -> tuple[str, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _steps_taken(self, state: dict, group: dict) -> int:  # pragma: no cover - abstract
        """The steps a parameter with this (per-parameter, host) state has taken."""
        raise NotImplementedError

    def _record_steps(self, state: dict, steps: int | StepCount) -> None:
        """Write the step count into a parameter's state (where the state format has one)."""

    def _flat_update(
        self, bucket: _Bucket, grad: Any, skip: Any, calls: int, group: dict
    ) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ----------------------------------------------------------------- checkpoints
    def _ordered_parameters(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict:
        """{"state": {index: {name: ndarray | number}},
        "param_groups": [hyper-parameters, params as indices]}.

        Parameters are numbered in group order, as PyTorch does, so the state moves between
        identical models.
        """
        index = {id(p): i for i, p in enumerate(self._ordered_parameters())}
        steps = {  # one read of each bucket's counter
            id(p): bucket.steps_taken()
            for layout in self._layouts.values()
            for bucket in layout.buckets
            for p in bucket.members
        }
        state = {
            index[key]: {
                name: (
                    to_numpy(v).copy()
                    if hasattr(v, "shape")
                    else steps[key]
                    if isinstance(v, StepCount)
                    else v
                )
                for name, v in entry.items()
            }
            for key, entry in self.state.items()
            if key in index and steps.get(key) != 0  # every call skipped: no step taken
        }
        groups = []
        for group in self.param_groups:
            saved = {k: v for k, v in group.items() if k != "params"}
            saved["params"] = [index[id(p)] for p in group["params"]]
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(saved["params"]) != len(own["params"])
            for saved, own in zip(groups, self.param_groups, strict=True)
        ):
            raise ValueError(
                "optimizer state does not match: different numbers of parameter "
                "groups or parameters"
            )
        parameters = self._ordered_parameters()
        for saved, own in zip(groups, self.param_groups, strict=True):
            own.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        self._layouts = {}  # the next step lays the loaded state out afresh
        for i, entry in state_dict["state"].items():
            parameter = parameters[int(i)]
            self.state[id(parameter)] = {
                name: (parameter.device.asarray(v).copy() if hasattr(v, "shape") else v)
                for name, v in entry.items()
            }

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            options = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} tensors, {options}")
        return "\n".join(lines + [")"])


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and weight decay."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
            ),
        )

    def _state_names(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _steps_taken(self, state, group):
        # the update only tells the first step from the others
        return int(group["momentum"] != 0 and "momentum_buffer" in state)

    def _flat_update(self, bucket, grad, skip, calls, group):
        bucket.device.sgd_flat_step(
            bucket.param,
            grad,
            bucket.state.get("momentum_buffer"),
            skip,
            bucket.skipped_steps,
            calls=calls,
            lr=group["lr"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
        )


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` is L2 added to the gradient (as
    torch.optim.Adam)."""

    decoupled = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}: each must be in [0, 1)")
        if eps < 0:
            raise ValueError(f"invalid eps {eps}")
        super().__init__(
            params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        )

    def _state_names(self, group):
        return ("exp_avg", "exp_avg_sq")

    def _steps_taken(self, state, group):
        return int(state.get("step", 0))

    def _record_steps(self, state, steps):
        state["step"] = steps

    def _flat_update(self, bucket, grad, skip, calls, group):
        beta1, beta2 = group["betas"]
        bucket.device.adam_flat_step(
            bucket.param,
            grad,
            bucket.state["exp_avg"],
            bucket.state["exp_avg_sq"],
            skip,
            bucket.skipped_steps,
            calls=calls,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled=self.decoupled,
        )


class AdamW(Adam):
    """Adam with decoupled weight decay: p ← p·(1 − lr·wd) before the Adam update."""

    decoupled = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


@no_grad()
def clip_grad_norm_(
    parameters: Iterable[Tensor] | Tensor,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> Tensor:
    """Scale the gradients so their global ``norm_type`` norm is at most ``max_norm``; returns
    the norm before clipping as a 0-d tensor (PyTorch's ``torch.nn.utils.clip_grad_norm_``).

    Computed on the gradients' device and applied as a factor clamped to 1, with no branch on its
    value, so a GPU step does not wait for the norm (``error_if_nonfinite`` reads it back)."""
    parameters = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return Tensor(0.0)
    device, dtype = grads[0].device, grads[0].dtype
    xp = device.xp
    if norm_type == math.inf:
        total = xp.stack([xp.abs(g.data).max().astype(np.float64) for g in grads]).max()
    else:
        powers = [(xp.abs(g.data.astype(np.float64)) ** norm_type).sum() for g in grads]
        total = xp.stack(powers).sum() ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(float(device.to_host(total))):
        raise RuntimeError(
            f"the total norm of order {norm_type} of the gradients is non-finite, so it cannot "
            "be clipped; set error_if_nonfinite=False to clip anyway"
        )
    factor = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g.data = g.data * factor.astype(g.dtype)  # a new array: gradients may be shared
    return Tensor._wrap(xp.asarray(total, dtype=dtype), device)
