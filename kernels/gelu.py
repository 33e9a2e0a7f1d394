"""GELU (PyTorch's ``approximate='none'``): forward and backward, one pass over memory each.

Math, for every element of tensors of any shape, with Φ the standard normal's distribution and φ
its density::

    y  = x · Φ(x),              Φ(x) = ½ · erfc(-x / √2)
    dx = dy · (Φ(x) + x · φ(x)), φ(x) = exp(-x² / 2) / √(2π)

Φ is taken through erfc, never as ½·(1 + erf): in the left tail 1 + erf(x / √2) cancels to noise
(at x = -5 a float32 erf leaves about one significant bit) where erfc keeps every bit. The backward
reads the forward's input, not a saved Φ: the layer keeps x, which it holds anyway.

Buffers: ``x``, ``dy``, ``y``, ``dx`` share one shape and one dtype (float32 or float64). Outputs
are new C-contiguous arrays; inputs that are not contiguous are copied first.

Why a kernel: NumPy has no erf, so the layer went through a Numba ufunc calling libm's erf (about
14 ns an element, which no compiler vectorises) and four more whole-array passes. Here float32
takes a vectorisable erfc in float64 arithmetic: z = |x| / √2, t = 1 / (1 + z/2) and

    erfc(z) ≈ t · exp(-z² + P(t))      (P of degree 9; Press et al., Numerical Recipes, §6.2,
                                         "erfcc": relative error below 1.2e-7 for every z >= 0)

with exp evaluated on its own (:func:`_exp_nonpositive`: exp(s / 256) by its Taylor series to
degree 10, then squared 8 times; its relative error stays below 4e-10 on [-101, 0.01]). For
z >= 10 (|x| >= 14.15) Φ is taken as exactly 0 or 1: |x·Φ(x)| is then below 1.5e-44, a float32
denormal, returned as ±0. The result is within 3 float32 ulps of x·Φ(x) in float64
(tests/kernels/test_gelu.py measures it on a dense grid). float64 stays exact: it calls libm's
erfc and exp (``math``), as the CUDA kernels do in both dtypes (libdevice's, in float64
arithmetic for float32 buffers too).

Edges as in PyTorch: NaN stays NaN, +inf gives +inf, -inf gives NaN (-inf · 0); the gradient at
±inf is NaN, as PyTorch's is. ``fastnet bench --only gelu`` times the kernels against the
NumPy formula and PyTorch on a ViT block's hidden activation.

Variants, simplest first:

* ``reference_gelu_forward``, ``reference_gelu_backward``: float64 NumPy over ``math.erfc``.
* ``gelu_forward_cpu``, ``gelu_backward_cpu``: Numba, one loop over the elements, serial or
  parallel as the CPU policy (``_cpu.parallel_pays``) decides for the tensor's size; float32
  through the polynomial, float64 through libm.
* ``gelu_forward_cuda``, ``gelu_backward_cuda``: Numba CUDA, grid-stride loops over libdevice.
"""

from __future__ import annotations

import math
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
from ._fastmath import VECTORISING_FASTMATH

THREADS = 256
INV_SQRT2 = 1 / math.sqrt(2)
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
# |x| / √2 from which Φ(x) is taken as 0 or 1 on the float32 path (see the module docstring).
TAIL_Z = 10.0


# --------------------------------------------------------------------------- references


def _reference_cdf_pdf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    erfc = np.frompyfunc(math.erfc, 1, 1)
    cdf = 0.5 * erfc(-x * INV_SQRT2).astype(np.float64)
    return cdf, np.exp(-0.5 * x * x) * INV_SQRT_2PI


def reference_gelu_forward(x: np.ndarray) -> np.ndarray:
    cdf, _ = _reference_cdf_pdf(x)
    return np.asarray(x, np.float64) * cdf


def reference_gelu_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    cdf, pdf = _reference_cdf_pdf(x)
    return np.asarray(dy, np.float64) * (cdf + np.asarray(x, np.float64) * pdf)


# --------------------------------------------------------------------------- per element


@register_jitable
def _exp_nonpositive(s):
    """exp(s) for float64 s in [-101, 0.01]: (Σ_k (s/256)^k / k!, k <= 10) squared 8 times.
    Branch-free arithmetic, so the loops around it vectorise."""
    r = s * (1.0 / 256.0)
    p = 1.0 + r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (
        1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (
            1.0 / 362880 + r * (1.0 / 3628800))))))))))  # fmt: skip
    for _ in range(8):
        p = p * p
    return p


@register_jitable
def _erfc_parts(x):
    """For float64 x, z = |x|/√2 clipped at TAIL_Z: (t, z, P(t), whether z is below TAIL_Z), so
    that erfc(z) ≈ t·exp(-z² + P(t)). Selects, not branches: the loops around it vectorise."""
    z = abs(x) * INV_SQRT2
    clipped = z if z < TAIL_Z else TAIL_Z
    t = 1.0 / (1.0 + 0.5 * clipped)
    exponent = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))  # fmt: skip
    return t, clipped, exponent, z < TAIL_Z


@register_jitable
def _cdf_of_half_erfc(x, half_erfc):
    """Φ(x) from ½·erfc(|x|/√2)."""
    return 1.0 - half_erfc if x >= 0 else half_erfc


@register_jitable
def _cdf_pdf_libm(x):
    """(Φ(x), φ(x)) through libm's erfc and exp (libdevice's on the GPU)."""
    return 0.5 * math.erfc(-x * INV_SQRT2), math.exp(-0.5 * x * x) * INV_SQRT_2PI


# libm's (the CPU's float64 path, the GPU's): in float64 whatever the buffers' dtype, since -x/√2
# rounded to float32 alone would cost Φ's left tail |x|·2^-24 of relative error (6e-7 at x = -10).
@register_jitable
def _gelu_libm(x, y, index):
    value = float(x[index])
    cdf, _ = _cdf_pdf_libm(value)
    y[index] = value * cdf


@register_jitable
def _gelu_grad_libm(dy, x, dx, index):
    value = float(x[index])
    cdf, pdf = _cdf_pdf_libm(value)
    dx[index] = dy[index] * (cdf + value * pdf)


# --------------------------------------------------------------------------- CPU


# float32 through the polynomial, float64 through libm: one kernel each. The polynomial's steps
# stay in the loop's body: behind one helper with both exps, LLVM kept the helper a call (too
# large to inline) and the loop scalar, 5x slower.
@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _gelu_forward_kernel_cpu(x, y):
    for index in prange(x.size):
        value = np.float64(x[index])
        t, clipped, exponent, inside = _erfc_parts(value)
        half_erfc = 0.5 * t * _exp_nonpositive(exponent - clipped * clipped)
        y[index] = value * _cdf_of_half_erfc(value, half_erfc if inside else 0.0)


@cpu_kernel(fastmath=VECTORISING_FASTMATH)
def _gelu_backward_kernel_cpu(dy, x, dx):
    for index in prange(dy.size):
        value = np.float64(x[index])
        t, clipped, exponent, inside = _erfc_parts(value)
        gauss = _exp_nonpositive(-clipped * clipped)
        gauss = gauss if inside else 0.0
        cdf = _cdf_of_half_erfc(value, 0.5 * t * gauss * _exp_nonpositive(exponent))
        dx[index] = dy[index] * (cdf + value * gauss * INV_SQRT_2PI)


@cpu_kernel
def _gelu_forward_libm_kernel_cpu(x, y):
    for index in prange(x.size):
        _gelu_libm(x, y, index)


@cpu_kernel
def _gelu_backward_libm_kernel_cpu(dy, x, dx):
    for index in prange(dy.size):
        _gelu_grad_libm(dy, x, dx, index)


def gelu_forward_cpu(x: np.ndarray) -> np.ndarray:
    """y = x · Φ(x), of x's shape and dtype."""
    (flat_x,) = flat_matching("gelu_forward", x=x)
    y = empty(x.shape, x.dtype, like=x)
    kernel = _gelu_forward_kernel_cpu if x.dtype == np.float32 else _gelu_forward_libm_kernel_cpu
    kernel(flat_x.size, flat_x, y.reshape(-1))
    return y


def gelu_backward_cpu(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dx = dy · (Φ(x) + x · φ(x)) from the forward's input x."""
    flat_dy, flat_x = flat_matching("gelu_backward", dy=dy, x=x)
    dx = empty(dy.shape, dy.dtype, like=dy)
    kernel = _gelu_backward_kernel_cpu if dy.dtype == np.float32 else _gelu_backward_libm_kernel_cpu
    kernel(dx.size, flat_dy, flat_x, dx.reshape(-1))
    return dx


# --------------------------------------------------------------------------- CUDA


@cuda_kernel
def _gelu_forward_kernel_cuda(x, y):
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        _gelu_libm(x, y, index)


@cuda_kernel
def _gelu_backward_kernel_cuda(dy, x, dx):
    for index in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        _gelu_grad_libm(dy, x, dx, index)


def gelu_forward_cuda(x: Any) -> Any:
    """:func:`gelu_forward_cpu` on the GPU (CuPy arrays), or in the simulator (NumPy arrays)."""
    (flat_x,) = flat_matching("gelu_forward", x=x)
    y = empty(x.shape, x.dtype, like=x)
    launch(
        _gelu_forward_kernel_cuda, stride_grid(flat_x.size, THREADS), THREADS, flat_x, y.reshape(-1)
    )
    return y


def gelu_backward_cuda(dy: Any, x: Any) -> Any:
    """:func:`gelu_backward_cpu` on the GPU (CuPy arrays), or in the simulator (NumPy arrays)."""
    flat_dy, flat_x = flat_matching("gelu_backward", dy=dy, x=x)
    dx = empty(dy.shape, dy.dtype, like=dy)
    grid = stride_grid(dx.size, THREADS)
    launch(_gelu_backward_kernel_cuda, grid, THREADS, flat_dy, flat_x, dx.reshape(-1))
    return dx


def cuda_kernels() -> list[KernelSpec]:
    """Every CUDA kernel of this module, specialised for float32 buffers."""
    vector = numba.float32[::1]
    return [
        KernelSpec("gelu_forward", _gelu_forward_kernel_cuda, (vector, vector), THREADS),
        KernelSpec("gelu_backward", _gelu_backward_kernel_cuda, (vector, vector, vector), THREADS),
    ]


# --------------------------------------------------------------------------- benchmark cases


def plain_gelu(erf: Any, x: Any) -> Any:
    """The formula as whole-array passes (what the layer did before the kernel)."""
    return x * (0.5 * (1 + erf(x * x.dtype.type(INV_SQRT2))))


def plain_gelu_backward(xp: Any, erf: Any, dy: Any, x: Any) -> Any:
    """The gradient as whole-array passes (what the layer did before the kernel)."""
    cdf = 0.5 * (1 + erf(x * x.dtype.type(INV_SQRT2)))
    return dy * (cdf + x * (xp.exp(-0.5 * x * x) * x.dtype.type(INV_SQRT_2PI)))


def _gelu_case(context: BenchContext, key: str, x_shape: tuple, backward: bool) -> Case:
    """GELU over one activation, forward (y from x) or backward (dx from dy and x)."""
    ops = context.ops
    x = context.random(x_shape)
    dy = context.random(x_shape, 1)
    if backward:
        implementations = {
            OURS: Implementation(lambda: ops.gelu_backward(dy, x)),
            context.plain: Implementation(lambda: plain_gelu_backward(context.xp, ops.erf, dy, x)),
        }
    else:
        implementations = {
            OURS: Implementation(lambda: ops.gelu_forward(x)),
            context.plain: Implementation(lambda: plain_gelu(ops.erf, x)),
        }
    torch = context.torch
    if torch:
        x_torch, dy_torch = torch.from_numpy(x), torch.from_numpy(dy)
        implementations["torch"] = Implementation(
            (lambda: torch.ops.aten.gelu_backward(dy_torch, x_torch))
            if backward
            else (lambda: torch.nn.functional.gelu(x_torch))
        )
    family, arrays = ("gelu_bwd", 3) if backward else ("gelu_fwd", 2)
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
    """GELU forward and backward on the ViT's feed-forward activation at batch 256 (a tiny shape
    with ``quick``)."""
    shapes = (("tiny", (2, 3, 5)),) if quick else (("vit.ffn.b256", (256, 17, 256)),)
    return [
        CaseSpec(
            family,
            key,
            "x".join(map(str, x_shape)),
            partial(_gelu_case, key=key, x_shape=x_shape, backward=backward),
            (OURS, "numpy", "torch"),
        )
        for key, x_shape in shapes
        for backward, family in ((False, "gelu_fwd"), (True, "gelu_bwd"))
    ]


FAMILY = Family(
    name="gelu",
    module=__name__,
    ops=("gelu_forward", "gelu_backward"),
    references={"gelu_forward": reference_gelu_forward, "gelu_backward": reference_gelu_backward},
    cuda_kernels=cuda_kernels,
    bench_cases=bench_cases,
)
