"""Optimizers over the fused update kernels: SGD (momentum, Nesterov), Adam, AdamW.

Each ``step()`` makes one kernel call per parameter, which reads the parameter, its gradient and
its state once and writes them once (see ``fastnet.kernels.optim``). Parameter groups carry their
own hyper-parameters (per-group learning rate and weight decay, as in PyTorch). Parameters
without a gradient (frozen, or unused this step) are skipped and get no state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..backend import to_numpy
from ..tensor import Tensor, no_grad


class Optimizer:
    """Holds parameter groups and per-parameter state; subclasses implement ``_update``."""

    defaults: dict

    def __init__(self, params: Iterable[Any], defaults: dict) -> None:
        self.defaults = defaults
        self.state: dict[int, dict] = {}  # id(parameter) -> state
        self.param_groups: list[dict] = []
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

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for parameter in group["params"]:
                if set_to_none or parameter.grad is None:
                    parameter.grad = None
                else:
                    parameter.grad.data = parameter.device.xp.zeros_like(parameter.grad.data)

    @no_grad()
    def step(self, *, skip_if: Any = None) -> None:
        """Update every parameter that has a gradient. ``skip_if``: a one-element array on the
        parameters' device; when it holds a non-zero value the update is skipped (the training
        loop passes "this or an earlier loss was not finite", so a NaN never reaches a weight)."""
        if skip_if is not None and bool(to_numpy(skip_if).reshape(-1)[0]):
            return
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None or not parameter.requires_grad:
                    continue
                if parameter.grad.device is not parameter.device:
                    raise RuntimeError(
                        f"parameter on {parameter.device} has a gradient on {parameter.grad.device}"
                    )
                grad = parameter.device.xp.ascontiguousarray(
                    parameter.grad.data, dtype=parameter.dtype
                )
                self._update(parameter, grad, self.state.setdefault(id(parameter), {}), group)
                # updated in place: autograd must see that a graph saving it is now stale
                parameter._version += 1

    def _update(
        self, parameter: Tensor, grad: Any, state: dict, group: dict
    ) -> None:  # pragma: no cover
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
        state = {
            index[key]: {
                name: (to_numpy(v).copy() if hasattr(v, "shape") else v)
                for name, v in entry.items()
            }
            for key, entry in self.state.items()
            if key in index
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

    def _update(self, parameter, grad, state, group):
        first_step = "momentum_buffer" not in state
        if group["momentum"] != 0 and first_step:
            state["momentum_buffer"] = parameter.device.xp.empty_like(parameter.data)
        parameter.device.sgd_step(
            parameter.data,
            grad,
            state.get("momentum_buffer"),
            lr=group["lr"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            first_step=first_step,
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

    def _update(self, parameter, grad, state, group):
        xp = parameter.device.xp
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(parameter.data)
            state["exp_avg_sq"] = xp.zeros_like(parameter.data)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        parameter.device.adam_step(
            parameter.data,
            grad,
            state["exp_avg"],
            state["exp_avg_sq"],
            step=state["step"],
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
def clip_grad_norm_(parameters: Iterable[Tensor], max_norm: float, norm_type: float = 2.0) -> float:
    """Scale gradients so their global norm is at most ``max_norm``; returns the norm before
    clipping."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    if norm_type == math.inf:
        total = max(float(abs(g.data).max()) for g in grads)
    else:
        total = sum(float((abs(g.data.astype("float64")) ** norm_type).sum()) for g in grads) ** (
            1.0 / norm_type
        )
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for g in grads:
            g.data = g.data * g.data.dtype.type(scale)  # a new array: gradients may be shared
    return total
