"""Fused optimizer updates: Adam/AdamW and SGD with momentum, in place, one pass over memory.

Math (PyTorch's ``torch.optim`` algorithms, one step ``t``, 1-based, for every element):

* SGD, learning rate γ, momentum μ, dampening τ, weight decay λ::

      g ← g + λ·p
      if μ ≠ 0:  b ← g                      on the first step
                 b ← μ·b + (1 - τ)·g        afterwards
                 g ← g + μ·b  (Nesterov)   or   g ← b
      p ← p - γ·g

* Adam (``decoupled=False``): g ← g + λ·p.  AdamW (``decoupled=True``): p ← p·(1 - γ·λ).  Then::

      m ← β1·m + (1 - β1)·g
      v ← β2·v + (1 - β2)·g²
      p ← p - γ·(m / (1 - β1^t)) / (sqrt(v / (1 - β2^t)) + ε)

  The kernels evaluate the last line as PyTorch does, ``p - (γ / (1 - β1^t))·m /
  (sqrt(v) / sqrt(1 - β2^t) + ε)``, with the bias corrections computed in float64 on the host.

Buffers: ``param``, ``grad``, ``exp_avg`` (m), ``exp_avg_sq`` (v), ``momentum_buffer`` (b) all
have the parameter's shape (any shape) and dtype (float32 or float64) and are C-contiguous.
``param`` and the state buffers are updated in place; ``grad`` is only read. Each element is read
once and written once, so the update runs at memory bandwidth.

Variants, simplest first:

* ``reference_sgd_step``, ``reference_adam_step``: float64 NumPy, returning new arrays.
* ``sgd_step_cpu``, ``adam_step_cpu``: Numba, one loop over the elements, serial or in parallel
  as ``_cpu.parallel_pays`` decides.
* ``sgd_step_cuda``, ``adam_step_cuda``: Numba CUDA, grid-stride loops.
* ``sgd_flat_step``, ``adam_flat_step`` (``_cpu`` and ``_cuda``): the same update over flat
  buffers that hold many parameters end to end (an optimizer's multi-tensor step: one launch for
  all of them), with the step count and a skip flag kept where the buffers live, so a GPU step
  never waits on the host. Two more buffers, one element each: ``skip`` (bool or any number;
  non-zero skips the call) and ``skipped_steps`` (int64, the calls skipped so far). The host
  passes ``calls``, the 1-based count of calls on these buffers including this one, and the step
  is ``t = calls - skipped_steps[0]`` (SGD: the first step is ``t == 1``). A skipped call changes
  nothing but ``skipped_steps[0] += 1``. On the GPU one thread reads and bumps the counter when
  skipping and every thread only reads it otherwise, so one launch needs no grid-wide barrier; the
  kernel computes the bias corrections of step ``t`` in float64 and rounds them to the buffers'
  dtype, as the host does for the other variants. The CPU variants read both on the host (free
  there) and call ``adam_step_cpu`` / ``sgd_step_cpu``.

The per-element update is one ``register_jitable`` function shared by the CPU and CUDA kernels.
The host turns the hyperparameters into a named tuple of coefficients in the buffers' dtype
(``1 - β2`` is rounded once from float64 rather than computed in float32), so float32 buffers
are updated with float32 arithmetic on both devices.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import numba
import numpy as np
from numba import cuda, prange
from numba.extending import register_jitable

from ._checks import check_float_dtype
from ._contract import (
    FLOAT32_BYTES,
    OURS,
    BenchContext,
    Case,
    CaseInfo,
    CaseSpec,
    Family,
    Implementation,
    KernelSpec,
)
from ._cpu import cpu_kernel
from ._cuda import array_module, cuda_kernel, launch, stride_grid

THREADS = 256


class AdamCoefficients(NamedTuple):
    """Per-step constants of the Adam update, each in the buffers' dtype."""

    beta1: Any
    one_minus_beta1: Any
    beta2: Any
    one_minus_beta2: Any
    eps: Any
    coupled_weight_decay: Any  # λ for Adam, 0 for AdamW
    param_scale: Any  # 1 - γ·λ for AdamW, 1 for Adam
    step_size: Any  # γ / (1 - β1^t)
    bias_correction2_sqrt: Any  # sqrt(1 - β2^t)


class SgdCoefficients(NamedTuple):
    """Per-step constants of the SGD update: four in the buffers' dtype, two flags."""

    lr: Any
    weight_decay: Any
    momentum: Any
    one_minus_dampening: Any
    nesterov: bool
    first_step: bool


# --------------------------------------------------------------------------- validation


def _flat_buffers(op: str, param: Any, **buffers: Any) -> list:
    """Check ``param`` and ``buffers`` agree and return raveled views, ``param`` first.

    Views, never copies: the update must land in the caller's arrays, so a non-contiguous or
    read-only buffer is an error rather than something to copy.
    """
    check_float_dtype(param, "param", op)
    module = array_module(param)
    flat = []
    for name, buffer in {"param": param, **buffers}.items():
        if array_module(buffer) is not module:
            raise TypeError(
                f"{name} is a {type(buffer).__name__} but param is a {type(param).__name__}"
            )
        if buffer.shape != param.shape:
            raise ValueError(
                f"{name} shape {buffer.shape} does not match param shape {param.shape}"
            )
        if buffer.dtype != param.dtype:
            raise TypeError(f"{name} dtype {buffer.dtype} does not match param dtype {param.dtype}")
        if not buffer.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous: the update is written in place")
        if not getattr(buffer.flags, "writeable", True):
            raise ValueError(f"{name} is read-only")
        flat.append(buffer.reshape(-1))
    return flat


def _check_at_least(name: str, value: float, lowest: float) -> None:
    if not value >= lowest:  # also rejects NaN
        raise ValueError(f"{name} must be >= {lowest}, got {value}")


def _adam_coefficients(
    dtype: Any,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> AdamCoefficients:
    step = operator.index(step)
    if step < 1:
        raise ValueError(f"step must be the 1-based count of steps taken, got {step}")
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {beta}")
    _check_at_least("lr", lr, 0.0)
    _check_at_least("eps", eps, 0.0)
    _check_at_least("weight_decay", weight_decay, 0.0)
    as_dtype = np.dtype(dtype).type
    return AdamCoefficients(
        beta1=as_dtype(beta1),
        one_minus_beta1=as_dtype(1.0 - beta1),
        beta2=as_dtype(beta2),
        one_minus_beta2=as_dtype(1.0 - beta2),
        eps=as_dtype(eps),
        coupled_weight_decay=as_dtype(0.0 if decoupled else weight_decay),
        param_scale=as_dtype(1.0 - lr * weight_decay if decoupled else 1.0),
        step_size=as_dtype(lr / (1.0 - beta1**step)),
        bias_correction2_sqrt=as_dtype(math.sqrt(1.0 - beta2**step)),
    )


def _sgd_coefficients(
    dtype: Any,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    first_step: bool,
) -> SgdCoefficients:
    _check_at_least("lr", lr, 0.0)
    _check_at_least("momentum", momentum, 0.0)
    _check_at_least("weight_decay", weight_decay, 0.0)
    if nesterov and (momentum == 0.0 or dampening != 0.0):
        raise ValueError(
            f"Nesterov momentum needs momentum > 0 and zero dampening, "
            f"got momentum={momentum}, dampening={dampening}"
        )
    as_dtype = np.dtype(dtype).type
    return SgdCoefficients(
        lr=as_dtype(lr),
        weight_decay=as_dtype(weight_decay),
        momentum=as_dtype(momentum),
        one_minus_dampening=as_dtype(1.0 - dampening),
        nesterov=bool(nesterov),
        first_step=bool(first_step),
    )


def _sgd_buffers(param: Any, grad: Any, momentum_buffer: Any, momentum: float) -> list:
    """Raveled ``[param, grad, momentum_buffer]``; the buffer is None when momentum is 0."""
    if momentum == 0.0:
        return _flat_buffers("sgd_step", param, grad=grad) + [None]
    if momentum_buffer is None:
        raise ValueError(f"momentum={momentum} needs a momentum_buffer, got None")
    return _flat_buffers("sgd_step", param, grad=grad, momentum_buffer=momentum_buffer)


class AdamSchedule(NamedTuple):
    """What Adam's step-dependent coefficients are made of, in float64: the flat CUDA kernel
    computes ``step_size`` and ``bias_correction2_sqrt`` from the step count it reads on the
    device."""

    lr: float
    beta1: float
    beta2: float


def _check_step_counters(op: str, param: Any, skip: Any, skipped_steps: Any, calls: int) -> int:
    """Check the flat variants' ``skip`` flag, ``skipped_steps`` counter and ``calls``; returns
    ``calls`` as an int."""
    module = array_module(param)
    for name, counter in (("skip", skip), ("skipped_steps", skipped_steps)):
        if array_module(counter) is not module:
            raise TypeError(
                f"{op}: {name} is a {type(counter).__name__} but param is a {type(param).__name__}"
                " (it must live on the parameters' device)"
            )
        if counter.size != 1:
            raise ValueError(f"{op}: {name} must hold one element, got shape {counter.shape}")
    if skip.dtype.kind not in "biuf":
        raise TypeError(f"{op}: skip must be a bool or numeric flag, got dtype {skip.dtype}")
    if skipped_steps.dtype != np.int64 or skipped_steps.shape != (1,):
        raise TypeError(
            f"{op}: skipped_steps must be an int64 array of shape (1,), got "
            f"{skipped_steps.dtype} of shape {skipped_steps.shape}"
        )
    calls = operator.index(calls)
    if calls < 1:
        raise ValueError(f"{op}: calls must count this call too (>= 1), got {calls}")
    return calls


def _host_step(op: str, param: Any, skip: Any, skipped_steps: Any, calls: int) -> int:
    """The CPU variants' step count, read on the host: 0 (after counting the skip) when ``skip``
    is set, else ``calls - skipped_steps[0]``."""
    calls = _check_step_counters(op, param, skip, skipped_steps, calls)
    if skip.reshape(-1)[0]:
        skipped_steps[0] += 1
        return 0
    return calls - int(skipped_steps[0])


# ------------------------------------------------------------------------ the update of one element


@register_jitable
def _adam_update(index, param, grad, exp_avg, exp_avg_sq, coefficients):
    c = coefficients
    p = param[index]
    g = grad[index] + c.coupled_weight_decay * p
    m = c.beta1 * exp_avg[index] + c.one_minus_beta1 * g
    v = c.beta2 * exp_avg_sq[index] + c.one_minus_beta2 * (g * g)
    exp_avg[index] = m
    exp_avg_sq[index] = v
    param[index] = p * c.param_scale - c.step_size * m / (
        math.sqrt(v) / c.bias_correction2_sqrt + c.eps
    )


@register_jitable
def _sgd_update(index, param, grad, momentum_buffer, coefficients):
    # A None buffer (momentum 0) is a separate specialisation whose momentum branch is pruned.
    c = coefficients
    p = param[index]
    g = grad[index] + c.weight_decay * p
    if momentum_buffer is not None:
        # On the first step the buffer holds nothing yet (maybe not even numbers): never read it.
        buffer = (
            g if c.first_step else c.momentum * momentum_buffer[index] + c.one_minus_dampening * g
        )
        momentum_buffer[index] = buffer
        g = g + c.momentum * buffer if c.nesterov else buffer
    param[index] = p - c.lr * g


# --------------------------------------------------------------------------- float64 references


def reference_adam_step(
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Adam (or AdamW) step in float64; returns new ``(param, exp_avg, exp_avg_sq)``."""
    p, g, m, v = (np.array(a, dtype=np.float64) for a in (param, grad, exp_avg, exp_avg_sq))
    if decoupled:
        p = p * (1.0 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g**2
    m_hat = m / (1.0 - beta1**step)
    v_hat = v / (1.0 - beta2**step)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def reference_sgd_step(
    param: Any,
    grad: Any,
    momentum_buffer: Any,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    first_step: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One SGD step in float64; returns new ``(param, momentum_buffer)``, the buffer None without
    momentum."""
    p, g = (np.array(a, dtype=np.float64) for a in (param, grad))
    g = g + weight_decay * p
    buffer = None
    if momentum != 0.0:
        buffer = (
            g.copy()
            if first_step
            else momentum * np.array(momentum_buffer, dtype=np.float64) + (1.0 - dampening) * g
        )
        g = g + momentum * buffer if nesterov else buffer
    return p - lr * g, buffer


# --------------------------------------------------------------------------- CPU


@cpu_kernel
def _adam_cpu_kernel(param, grad, exp_avg, exp_avg_sq, coefficients):
    for index in prange(param.size):
        _adam_update(index, param, grad, exp_avg, exp_avg_sq, coefficients)


@cpu_kernel
def _sgd_cpu_kernel(param, grad, momentum_buffer, coefficients):
    for index in prange(param.size):
        _sgd_update(index, param, grad, momentum_buffer, coefficients)


def adam_step_cpu(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """One Adam (``decoupled=False``) or AdamW step, updating ``param``, ``exp_avg``, ``exp_avg_sq``
    in place."""
    flat = _flat_buffers("adam_step", param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    coefficients = _adam_coefficients(
        param.dtype, step, lr, beta1, beta2, eps, weight_decay, decoupled
    )
    _adam_cpu_kernel(param.size, *flat, coefficients)


def sgd_step_cpu(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    first_step: bool,
) -> None:
    """One SGD step, updating ``param`` and (when ``momentum`` ≠ 0) ``momentum_buffer`` in place.

    With ``momentum == 0`` the buffer is neither checked nor touched and may be None; on the
    ``first_step`` it is only written, so it may start uninitialised.
    """
    flat = _sgd_buffers(param, grad, momentum_buffer, momentum)
    coefficients = _sgd_coefficients(
        param.dtype, lr, momentum, dampening, weight_decay, nesterov, first_step
    )
    _sgd_cpu_kernel(param.size, *flat, coefficients)


def adam_flat_step_cpu(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    skip: np.ndarray,
    skipped_steps: np.ndarray,
    *,
    calls: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """:func:`adam_step_cpu` at step ``calls - skipped_steps[0]``, or only ``skipped_steps[0] +=
    1`` when ``skip`` is set (module docstring)."""
    step = _host_step("adam_flat_step", param, skip, skipped_steps, calls)
    if step:
        adam_step_cpu(
            param,
            grad,
            exp_avg,
            exp_avg_sq,
            step=step,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            decoupled=decoupled,
        )


def sgd_flat_step_cpu(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None,
    skip: np.ndarray,
    skipped_steps: np.ndarray,
    *,
    calls: int,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
) -> None:
    """:func:`sgd_step_cpu`, its first step being step 1 of ``calls - skipped_steps[0]``, or only
    ``skipped_steps[0] += 1`` when ``skip`` is set (module docstring)."""
    step = _host_step("sgd_flat_step", param, skip, skipped_steps, calls)
    if step:
        sgd_step_cpu(
            param,
            grad,
            momentum_buffer,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            first_step=step == 1,
        )


# --------------------------------------------------------------------------- CUDA


@cuda_kernel
def _adam_cuda_kernel(param, grad, exp_avg, exp_avg_sq, coefficients):
    for index in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _adam_update(index, param, grad, exp_avg, exp_avg_sq, coefficients)


@cuda_kernel
def _sgd_cuda_kernel(param, grad, momentum_buffer, has_momentum, coefficients):
    # A real launch takes no None: without momentum the buffer is a stand-in, never touched, and
    # the update gets the None that prunes its momentum branch (as on the CPU).
    for index in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        if has_momentum:
            _sgd_update(index, param, grad, momentum_buffer, coefficients)
        else:
            _sgd_update(index, param, grad, None, coefficients)


def adam_step_cuda(
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """:func:`adam_step_cpu` on the GPU (CuPy arrays), or in the simulator (NumPy arrays)."""
    flat = _flat_buffers("adam_step", param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    coefficients = _adam_coefficients(
        param.dtype, step, lr, beta1, beta2, eps, weight_decay, decoupled
    )
    launch(_adam_cuda_kernel, stride_grid(param.size, THREADS), THREADS, *flat, coefficients)


def sgd_step_cuda(
    param: Any,
    grad: Any,
    momentum_buffer: Any,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    first_step: bool,
) -> None:
    """:func:`sgd_step_cpu` on the GPU (CuPy arrays), or in the simulator (NumPy arrays)."""
    flat = _sgd_buffers(param, grad, momentum_buffer, momentum)
    coefficients = _sgd_coefficients(
        param.dtype, lr, momentum, dampening, weight_decay, nesterov, first_step
    )
    param, grad, momentum_buffer = flat
    has_momentum = momentum_buffer is not None
    launch(
        _sgd_cuda_kernel,
        stride_grid(param.size, THREADS),
        THREADS,
        param,
        grad,
        momentum_buffer if has_momentum else grad,
        has_momentum,
        coefficients,
    )


@cuda_kernel
def _adam_flat_cuda_kernel(
    param, grad, exp_avg, exp_avg_sq, skip, skipped_steps, calls, coefficients, schedule
):
    # Skipping: one thread counts the skip and no thread reads the counter, so no thread of this
    # launch can see it half-updated; otherwise every thread only reads it.
    if skip[0] != 0:
        if cuda.grid(1) == 0:
            skipped_steps[0] += 1
        return
    step = calls - skipped_steps[0]
    c = coefficients
    at_step = AdamCoefficients(
        c.beta1,
        c.one_minus_beta1,
        c.beta2,
        c.one_minus_beta2,
        c.eps,
        c.coupled_weight_decay,
        c.param_scale,
        param.dtype.type(schedule.lr / (1.0 - schedule.beta1**step)),
        param.dtype.type(math.sqrt(1.0 - schedule.beta2**step)),
    )
    for index in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _adam_update(index, param, grad, exp_avg, exp_avg_sq, at_step)


@cuda_kernel
def _sgd_flat_cuda_kernel(
    param, grad, momentum_buffer, has_momentum, skip, skipped_steps, calls, coefficients
):
    # The skip and the counter as in _adam_flat_cuda_kernel; the buffer as in _sgd_cuda_kernel.
    if skip[0] != 0:
        if cuda.grid(1) == 0:
            skipped_steps[0] += 1
        return
    c = coefficients
    at_step = SgdCoefficients(
        c.lr,
        c.weight_decay,
        c.momentum,
        c.one_minus_dampening,
        c.nesterov,
        calls - skipped_steps[0] == 1,
    )
    for index in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        if has_momentum:
            _sgd_update(index, param, grad, momentum_buffer, at_step)
        else:
            _sgd_update(index, param, grad, None, at_step)


def adam_flat_step_cuda(
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    skip: Any,
    skipped_steps: Any,
    *,
    calls: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """:func:`adam_flat_step_cpu` on the GPU, one launch, the host never reading ``skip`` or
    ``skipped_steps``."""
    flat = _flat_buffers("adam_flat_step", param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    calls = _check_step_counters("adam_flat_step", param, skip, skipped_steps, calls)
    # validates the hyperparameters; the kernel replaces the fields of step 1 with its step's
    coefficients = _adam_coefficients(
        param.dtype, 1, lr, beta1, beta2, eps, weight_decay, decoupled
    )
    launch(
        _adam_flat_cuda_kernel,
        stride_grid(param.size, THREADS),
        THREADS,
        *flat,
        skip.reshape(-1),
        skipped_steps,
        calls,
        coefficients,
        AdamSchedule(float(lr), float(beta1), float(beta2)),
    )


def sgd_flat_step_cuda(
    param: Any,
    grad: Any,
    momentum_buffer: Any,
    skip: Any,
    skipped_steps: Any,
    *,
    calls: int,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
) -> None:
    """:func:`sgd_flat_step_cpu` on the GPU, one launch, the host never reading ``skip`` or
    ``skipped_steps``."""
    param, grad, momentum_buffer = _sgd_buffers(param, grad, momentum_buffer, momentum)
    calls = _check_step_counters("sgd_flat_step", param, skip, skipped_steps, calls)
    # the kernel decides first_step from the counter
    coefficients = _sgd_coefficients(
        param.dtype, lr, momentum, dampening, weight_decay, nesterov, False
    )
    has_momentum = momentum_buffer is not None
    launch(
        _sgd_flat_cuda_kernel,
        stride_grid(param.size, THREADS),
        THREADS,
        param,
        grad,
        momentum_buffer if has_momentum else grad,
        has_momentum,
        skip.reshape(-1),
        skipped_steps,
        calls,
        coefficients,
    )


def cuda_kernels() -> list[KernelSpec]:
    """Every CUDA kernel of this module, specialised for float32 buffers with momentum (the flat
    ones with a float32 skip flag)."""
    vector = numba.float32[::1]
    zero = np.float32(0.0)
    adam_coefficients = numba.typeof(AdamCoefficients(*[zero] * len(AdamCoefficients._fields)))
    sgd_coefficients = numba.typeof(
        SgdCoefficients(zero, zero, zero, zero, nesterov=False, first_step=False)
    )
    counters = (vector, numba.int64[::1], numba.int64)  # skip, skipped_steps, calls
    schedule = numba.typeof(AdamSchedule(0.0, 0.0, 0.0))
    return [
        KernelSpec(
            "adam_step",
            _adam_cuda_kernel,
            (vector, vector, vector, vector, adam_coefficients),
            THREADS,
        ),
        KernelSpec(
            "sgd_step",
            _sgd_cuda_kernel,
            (vector, vector, vector, numba.boolean, sgd_coefficients),
            THREADS,
        ),
        KernelSpec(
            "adam_flat_step",
            _adam_flat_cuda_kernel,
            (vector, vector, vector, vector, *counters, adam_coefficients, schedule),
            THREADS,
        ),
        KernelSpec(
            "sgd_flat_step",
            _sgd_flat_cuda_kernel,
            (vector, vector, vector, numba.boolean, *counters, sgd_coefficients),
            THREADS,
        ),
    ]


# --------------------------------------------------------------------------- benchmark cases


def plain_adam_step(
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """Adam in place, one array expression per line of the algorithm."""
    xp = array_module(param)
    exp_avg *= beta1
    exp_avg += (1 - beta1) * grad
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    param -= (lr / (1 - beta1**step)) * exp_avg / (xp.sqrt(exp_avg_sq / (1 - beta2**step)) + eps)


def plain_sgd_momentum_step(
    param: Any, grad: Any, buffer: Any, first_step: bool, lr: float, momentum: float
) -> None:
    """SGD with momentum in place (PyTorch's: the buffer starts as the first gradient)."""
    if first_step:
        buffer[...] = grad
    else:
        buffer *= momentum
        buffer += grad
    param -= lr * buffer


def _torch_optimizer_step(
    torch: Any,
    param_start: np.ndarray,
    grad: np.ndarray,
    state_names: tuple[str, ...],
    make_optimizer: Callable[[list], Any],
) -> Callable[[], tuple]:
    """A torch optimizer's step over its own copy of the parameter; returns (param, *state)."""
    param = torch.from_numpy(param_start.copy()).requires_grad_()
    param.grad = torch.from_numpy(grad)
    optimizer = make_optimizer([param])

    def step() -> tuple:
        optimizer.step()
        return (param, *(optimizer.state[param][name] for name in state_names))

    return step


_ADAM = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def _adam_case(context: BenchContext, key: str, size: int) -> Case:
    """Adam's first and later steps over one flat parameter, each implementation on its own copy
    of the same state (zero moments, as at the start of training)."""
    param_start, grad = context.random((size,)), context.random((size,), seed=1)
    xp = context.xp

    def fresh_state() -> list:
        return [param_start.copy(), grad, xp.zeros_like(grad), xp.zeros_like(grad)]

    ours_state, plain_state, step = fresh_state(), fresh_state(), {"ours": 0, "plain": 0}

    def ours() -> tuple:
        step["ours"] += 1
        context.ops.adam_step(
            *ours_state,
            step=step["ours"],
            lr=_ADAM["lr"],
            beta1=_ADAM["beta1"],
            beta2=_ADAM["beta2"],
            eps=_ADAM["eps"],
            weight_decay=0.0,
            decoupled=False,
        )
        return ours_state[0], ours_state[2], ours_state[3]

    def plain() -> tuple:
        step["plain"] += 1
        plain_adam_step(*plain_state, step["plain"], **_ADAM)
        return plain_state[0], plain_state[2], plain_state[3]

    implementations = {OURS: Implementation(ours), context.plain: Implementation(plain)}
    torch = context.torch
    if torch:
        for name, fused in (("torch", None), ("torch-fused", True)):
            implementations[name] = Implementation(
                _torch_optimizer_step(
                    torch,
                    param_start,
                    grad,
                    ("exp_avg", "exp_avg_sq"),
                    lambda params, fused=fused: torch.optim.Adam(
                        params,
                        lr=_ADAM["lr"],
                        betas=(_ADAM["beta1"], _ADAM["beta2"]),
                        eps=_ADAM["eps"],
                        fused=fused,
                    ),
                )
            )
    # per element ~16 FLOPs; reads param, grad, m, v and writes param, m, v
    info = CaseInfo("adam", f"{key} {size:,} params", 16.0 * size, 7.0 * FLOAT32_BYTES * size)
    return Case(info, implementations)


def _sgd_case(context: BenchContext, key: str, size: int) -> Case:
    """SGD with momentum 0.9 over one flat parameter, each implementation on its own state."""
    lr, momentum = 0.01, 0.9
    param_start, grad = context.random((size,)), context.random((size,), seed=1)
    xp = context.xp
    ours_state = [param_start.copy(), grad, xp.empty_like(grad)]
    plain_state = [param_start.copy(), grad, xp.empty_like(grad)]
    steps = {"ours": 0, "plain": 0}

    def ours() -> tuple:
        steps["ours"] += 1
        context.ops.sgd_step(
            *ours_state,
            lr=lr,
            momentum=momentum,
            dampening=0.0,
            weight_decay=0.0,
            nesterov=False,
            first_step=steps["ours"] == 1,
        )
        return ours_state[0], ours_state[2]

    def plain() -> tuple:
        steps["plain"] += 1
        plain_sgd_momentum_step(*plain_state, steps["plain"] == 1, lr, momentum)
        return plain_state[0], plain_state[2]

    implementations = {OURS: Implementation(ours), context.plain: Implementation(plain)}
    torch = context.torch
    if torch:
        implementations["torch"] = Implementation(
            _torch_optimizer_step(
                torch,
                param_start,
                grad,
                ("momentum_buffer",),
                lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum),
            )
        )
    # per element: momentum update (2) and parameter update (2); reads param, grad, buffer,
    # writes param, buffer
    info = CaseInfo(
        "sgd_momentum", f"{key} {size:,} params", 4.0 * size, 5.0 * FLOAT32_BYTES * size
    )
    return Case(info, implementations)


def bench_cases(quick: bool) -> list[CaseSpec]:
    """Adam and SGD with momentum over 1M and 10M parameters (a thousand with ``quick``)."""
    sizes = (("tiny", 1001),) if quick else (("1M", 1_000_000), ("10M", 10_000_000))
    specs = []
    for key, size in sizes:
        specs.append(
            CaseSpec(
                "adam",
                key,
                f"{size}",
                functools.partial(_adam_case, key=key, size=size),
                (OURS, "numpy", "torch", "torch-fused"),
            )
        )
        specs.append(
            CaseSpec(
                "sgd_momentum",
                key,
                f"{size}",
                functools.partial(_sgd_case, key=key, size=size),
                (OURS, "numpy", "torch"),
            )
        )
    return specs


FAMILY = Family(
    name="optim",
    module=__name__,
    ops=("adam_step", "sgd_step", "adam_flat_step", "sgd_flat_step"),
    references={
        "adam_step": reference_adam_step,
        "sgd_step": reference_sgd_step,
        # the flat variants compute the same update (over many parameters, with a device step count)
        "adam_flat_step": reference_adam_step,
        "sgd_flat_step": reference_sgd_step,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
