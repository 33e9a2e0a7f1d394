"""ReLU forward and backward: one pass over memory each, no mask array; and ReLU of a sum.

Math, for every element of tensors of any shape::

    y  = max(x, 0)          (a NaN in x stays NaN in y, as in PyTorch)
    dx = dy · [y > 0]       (the subgradient 0 at x = 0; where y is NaN, dx is 0)
    add_relu:  y = max(a + b, 0), whose gradient is dx above for a and for b alike
    of a sum:  dx = (dy + dy_other) · [y > 0]   (y fed two ops: its two gradients, summed in the
               same pass; the sum rounds as NumPy's dy + dy_other would)

``add_relu_forward`` is a residual block's end (ReLU of the block's output plus its shortcut) in
one pass, where the sum alone would allocate and write a whole activation first.

``relu_backward``'s optional ``dy_other`` serves autograd, which hands a node consumed twice (a
residual block's output: the next block's convolution and its shortcut) both gradients instead of
adding them in a pass and an allocation of their own.

The backward reads the forward's *output*: y > 0 exactly where x > 0, so the layer keeps y (which
the next layer holds anyway) instead of a separate mask of x.

Buffers: ``x``, ``a``, ``b``, ``y``, ``dy``, ``dy_other``, ``dx`` share one shape and one dtype
(float32 or float64). Outputs are new C-contiguous arrays; inputs that are not contiguous are
copied first.

Why a kernel for an elementwise op: NumPy needs three passes and a boolean temporary
(``x > 0``, ``maximum``, then ``dy * mask``, whose bool-to-float cast runs slowly). These make one
pass each, reading two streams and writing one at most; ``fastnet bench --only relu`` times them
against NumPy and PyTorch on the MNIST CNN's largest activation.

Variants, simplest first:

* ``reference_relu_forward``, ``reference_relu_backward``, ``reference_add_relu_forward``: float64
  NumPy.
* ``relu_forward_cpu``, ``relu_backward_cpu`` (of one gradient or of a sum): Numba, one loop over
  the elements, serial or parallel as the CPU policy (``_cpu.parallel_pays``) decides for the
  tensor's size.
* ``relu_forward_cuda``, ``relu_backward_cuda``: Numba CUDA, grid-stride loops.

The per-element rule is one ``register_jitable`` function each, shared by the CPU and CUDA kernels;
ReLU's own is ``_relu.relu_value``, which the convolutions' fused ReLU applies too.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numba
import numpy as np
from numba import cuda, prange
from numba.extending import register_jitable

from ._checks import flat_matching
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
from ._cuda import cuda_kernel, empty, launch, stride_grid
from ._relu import relu_value

THREADS = 256


# --------------------------------------------------------------------------- references


def reference_relu_forward(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.where(np.isnan(x) | (x > 0), x, 0.0)


def reference_relu_backward(
    dy: np.ndarray, y: np.ndarray, dy_other: np.ndarray | None = None
) -> np.ndarray:
    upstream = np.asarray(dy, np.float64)
    if dy_other is not None:
        upstream = upstream + np.asarray(dy_other, np.float64)
    return np.where(np.asarray(y) > 0, upstream, 0.0)


def reference_add_relu_forward(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return reference_relu_forward(np.asarray(a, np.float64) + np.asarray(b, np.float64))


# --------------------------------------------------------------------------- per element


@register_jitable
def _relu(x, y, index):
    y[index] = relu_value(x[index], y.dtype.type(0))


@register_jitable
def _add_relu(a, b, y, index):
    y[index] = relu_value(a[index] + b[index], y.dtype.type(0))


@register_jitable
def _relu_grad(dy, y, dx, index):
    dx[index] = dy[index] if y[index] > 0 else 0


@register_jitable
def _relu_grad_of_sum(dy, dy_other, y, dx, index):
    dx[index] = dy[index] + dy_other[index] if y[index] > 0 else 0


# --------------------------------------------------------------------------- CPU


@cpu_kernel
def _relu_forward_kernel_cpu(x, y):
    for index in prange(x.size):
        _relu(x, y, index)


@cpu_kernel
def _add_relu_kernel_cpu(a, b, y):
    for index in prange(a.size):
        _add_relu(a, b, y, index)


@cpu_kernel
def _relu_backward_kernel_cpu(dy, y, dx):
    for index in prange(dy.size):
        _relu_grad(dy, y, dx, index)


@cpu_kernel
def _relu_backward_of_sum_kernel_cpu(dy, dy_other, y, dx):
    for index in prange(dy.size):
        _relu_grad_of_sum(dy, dy_other, y, dx, index)


def relu_forward_cpu(x: np.ndarray) -> np.ndarray:
    """y = max(x, 0), of x's shape and dtype."""
    (flat_x,) = flat_matching("relu_forward", x=x)
    y = empty(x.shape, x.dtype, like=x)
    _relu_forward_kernel_cpu(flat_x.size, flat_x, y.reshape(-1))
    return y


def add_relu_forward_cpu(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = max(a + b, 0), of a's shape and dtype (b's must match)."""
    flat_a, flat_b = flat_matching("add_relu_forward", a=a, b=b)
    y = empty(a.shape, a.dtype, like=a)
    _add_relu_kernel_cpu(flat_a.size, flat_a, flat_b, y.reshape(-1))
    return y


def _backward_operands(dy: Any, y: Any, dy_other: Any) -> tuple[list, Any, bool]:
    """relu_backward's flattened operands (dy, [dy_other,] y), checked, a new dx, and whether
    they are those of a sum."""
    if dy_other is None:
        flat = flat_matching("relu_backward", dy=dy, y=y)
    else:
        flat = flat_matching("relu_backward", dy=dy, dy_other=dy_other, y=y)
    return flat, empty(dy.shape, dy.dtype, like=dy), dy_other is not None


def relu_backward_cpu(
    dy: np.ndarray, y: np.ndarray, dy_other: np.ndarray | None = None
) -> np.ndarray:
    """dx = dy where the forward's output y is positive, else 0; with ``dy_other``, dx = dy +
    dy_other there."""
    flat, dx, of_sum = _backward_operands(dy, y, dy_other)
    kernel = _relu_backward_of_sum_kernel_cpu if of_sum else _relu_backward_kernel_cpu
    kernel(dx.size, *flat, dx.reshape(-1))
    return dx


# --------------------------------------------------------------------------- CUDA


@cuda_kernel
def _relu_forward_kernel_cuda(x, y):
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        _relu(x, y, index)


@cuda_kernel
def _add_relu_kernel_cuda(a, b, y):
    for index in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        _add_relu(a, b, y, index)


@cuda_kernel
def _relu_backward_kernel_cuda(dy, y, dx):
    for index in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        _relu_grad(dy, y, dx, index)


@cuda_kernel
def _relu_backward_of_sum_kernel_cuda(dy, dy_other, y, dx):
    for index in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        _relu_grad_of_sum(dy, dy_other, y, dx, index)


def relu_forward_cuda(x: Any) -> Any:
    """:func:`relu_forward_cpu` on the GPU (CuPy arrays), or in the simulator (NumPy arrays)."""
    (flat_x,) = flat_matching("relu_forward", x=x)
    y = empty(x.shape, x.dtype, like=x)
    launch(
        _relu_forward_kernel_cuda, stride_grid(flat_x.size, THREADS), THREADS, flat_x, y.reshape(-1)
    )
    return y


def add_relu_forward_cuda(a: Any, b: Any) -> Any:
    """:func:`add_relu_forward_cpu` on the GPU (CuPy arrays), or in the simulator."""
    flat_a, flat_b = flat_matching("add_relu_forward", a=a, b=b)
    y = empty(a.shape, a.dtype, like=a)
    grid = stride_grid(flat_a.size, THREADS)
    launch(_add_relu_kernel_cuda, grid, THREADS, flat_a, flat_b, y.reshape(-1))
    return y


def relu_backward_cuda(dy: Any, y: Any, dy_other: Any | None = None) -> Any:
    """:func:`relu_backward_cpu` on the GPU (CuPy arrays), or in the simulator (NumPy arrays)."""
    flat, dx, of_sum = _backward_operands(dy, y, dy_other)
    kernel = _relu_backward_of_sum_kernel_cuda if of_sum else _relu_backward_kernel_cuda
    launch(kernel, stride_grid(dx.size, THREADS), THREADS, *flat, dx.reshape(-1))
    return dx


def cuda_kernels() -> list[KernelSpec]:
    """Every CUDA kernel of this module, specialised for float32 buffers."""
    vector = numba.float32[::1]
    return [
        KernelSpec("relu_forward", _relu_forward_kernel_cuda, (vector, vector), THREADS),
        KernelSpec("relu_backward", _relu_backward_kernel_cuda, (vector, vector, vector), THREADS),
        KernelSpec(
            "relu_backward_of_sum",
            _relu_backward_of_sum_kernel_cuda,
            (vector, vector, vector, vector),
            THREADS,
        ),
        KernelSpec("add_relu_forward", _add_relu_kernel_cuda, (vector, vector, vector), THREADS),
    ]


# --------------------------------------------------------------------------- benchmark cases


def plain_relu_backward(dy: Any, y: Any) -> Any:
    """dx = dy · [y > 0], the mask as NumPy makes it: a boolean temporary, then a multiply."""
    return dy * (y > 0)


def _relu_case(context: BenchContext, key: str, x_shape: tuple, backward: bool) -> Case:
    """ReLU over one activation, forward (y = max(x, 0)) or backward (dx from dy and y)."""
    ops, xp = context.ops, context.xp
    x = context.random(x_shape)
    y = ops.relu_forward(x)
    dy = context.random(x_shape, 1)
    if backward:
        implementations = {
            OURS: Implementation(lambda: ops.relu_backward(dy, y)),
            context.plain: Implementation(lambda: plain_relu_backward(dy, y)),
        }
    else:
        implementations = {
            OURS: Implementation(lambda: ops.relu_forward(x)),
            context.plain: Implementation(lambda: xp.maximum(x, x.dtype.type(0))),
        }
    torch = context.torch
    if torch:
        x_torch, y_torch, dy_torch = (torch.from_numpy(a) for a in (x, y, dy))
        implementations["torch"] = Implementation(
            (lambda: torch.ops.aten.threshold_backward(dy_torch, y_torch, 0))
            if backward
            else (lambda: torch.relu(x_torch))
        )
    family, arrays = ("relu_bwd", 3) if backward else ("relu_fwd", 2)
    return Case(
        CaseInfo(
            family,
            f"{key} {'x'.join(map(str, x_shape))}",
            float(x.size),
            arrays * FLOAT32_BYTES * x.size,
        ),
        implementations,
    )


def bench_cases(quick: bool) -> list[CaseSpec]:
    """ReLU forward and backward on the MNIST CNN's first activation and its first dense layer's
    (tiny shapes with ``quick``)."""
    shapes = (
        (("tiny", (2, 3, 5, 7)),)
        if quick
        else (("mnist.relu1.b256", (256, 32, 28, 28)), ("mnist.fc1.b64", (64, 128)))
    )
    return [
        CaseSpec(
            family,
            key,
            "x".join(map(str, x_shape)),
            partial(_relu_case, key=key, x_shape=x_shape, backward=backward),
            (OURS, "numpy", "torch"),
        )
        for key, x_shape in shapes
        for backward, family in ((False, "relu_fwd"), (True, "relu_bwd"))
    ]


FAMILY = Family(
    name="activation",
    module=__name__,
    ops=("relu_forward", "relu_backward", "add_relu_forward"),
    references={
        "relu_forward": reference_relu_forward,
        "relu_backward": reference_relu_backward,
        "add_relu_forward": reference_add_relu_forward,
    },
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
