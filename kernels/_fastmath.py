"""Vectorisable exp and max for the CPU kernels: float32 exp as inlined arithmetic, float64 via
libm.

Numba's ``math.exp`` is a call into libm (this llvmlite has no SVML), and a call keeps LLVM
from vectorising the loop around it, while NumPy's float32 exp runs 16 lanes at a time.
:func:`fast_exp` is plain arithmetic that LLVM inlines and vectorises. Inside a jitted function
it takes the argument's type: float32 goes through the polynomial below, anything else
(float64) stays on ``math.exp``, so that kernels stay generic and float64 stays exact.

Math, for float32 x:

* range reduction (Cody-Waite): x = n·ln2 + r with n = floor(x·log2 e), so r in [0, ln2), and
  r = (x - n·LN2_HI) - n·LN2_LO; LN2_HI has 9 significant bits, so n·LN2_HI is exact for every
  |n| <= 128 and r keeps the bits that a one-constant reduction would lose.
* exp(r) ≈ 1 + r + r²·(c2 + c3·r + c4·r² + c5·r³ + c6·r⁴), the minimax polynomial for relative
  error on [0, ln2] (widened by 2^-10 each side, for n·log2 e rounding across an integer): fitted
  in float64 by Lawson's algorithm (iteratively reweighted least squares on Chebyshev nodes),
  rounding one coefficient at a time to float32 and refitting the others. Its own error is
  3.0e-9, 0.05 ulp: the float32 rounding of its evaluation dominates.
* 2^n: a float32 built from its bits, (n + 127) << 23, read off n + 1.5·2^23 + 127 (an exact
  float sum whose low mantissa bits are n + 127) by a bit cast and a shift. Flooring, rather than
  rounding to nearest, keeps n in [-127, 127] for every x whose exp is a normal float32 (or
  exceeds one), so the exponent field never passes 255 and no second scaling factor is needed.

Edges: x is first raised to at least -88 (NaN passes), n is capped at 127, and IEEE arithmetic
does the rest. When exp(x) is below FLT_MIN (x below about -87.34, -inf included) n = -127 makes
the scale 0, so the result flushes to 0, not a denormal; when it is above FLT_MAX (x above about
88.72, +inf included) r passes ln2 and the last product overflows to +inf; NaN stays NaN through
every step. There are no branches, so a loop over it vectorises.

Accuracy, measured against float64 ``np.exp`` over [-100, 100] (tests/kernels/test_fastmath.py):
at most 1.44 ulp where the result is a normal float32.

:func:`maxnum` is the max that LLVM vectorises as a reduction without "nnan"; :func:`zero_of`
starts a sum in an array's own dtype.

Every CPU kernel of the package compiles with :data:`VECTORISING_FASTMATH`, the one fastmath
flag set (softmax, norm and softmax_xent alike), so that the loops around these helpers vectorise
and NaN and inf keep their meaning everywhere (masked softmax columns are -inf).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

# Reductions may be reordered (that is what lets them vectorise), but NaN and inf keep their
# IEEE meaning: no "nnan"/"ninf" (masked columns are -inf, a NaN input must show), and no "afn",
# which would let LLVM swap this exp for its own and sqrt/division for approximations.
VECTORISING_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

LOG2_E = np.float32(1.4426950408889634)
LN2_HI = np.float32(0.693359375)
LN2_LO = np.float32(np.log(2.0) - 0.693359375)
LOWEST = np.float32(-88.0)
HIGHEST_EXPONENT = np.float32(127.0)
# n + EXPONENT_MAGIC is exact and its low mantissa bits are n + 127, the biased exponent
EXPONENT_MAGIC = np.float32(1.5 * 2**23 + 127)
MANTISSA_BITS = 23
# c2 .. c6 of the polynomial above
POLYNOMIAL = tuple(
    np.float32(c)
    for c in (
        0.5000023245811462,
        0.16663143038749695,
        0.041856974363327026,
        0.007865063846111298,
        0.001914485706947744,
    )
)
C2, C3, C4, C5, C6 = POLYNOMIAL
ONE = np.float32(1.0)


@intrinsic
def _bits_as_float32(typingctx, value):
    """The float32 whose IEEE bit pattern is that of the float32 ``value`` shifted left by 23."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], ir.IntType(32))
        return builder.bitcast(
            builder.shl(bits, ir.Constant(ir.IntType(32), MANTISSA_BITS)), ir.FloatType()
        )

    return types.float32(types.float32), codegen


def _exp_float32(x):
    clamped = LOWEST if x < LOWEST else x  # in this order NaN passes
    n = np.floor(clamped * LOG2_E)
    n = HIGHEST_EXPONENT if n > HIGHEST_EXPONENT else n
    r = (clamped - n * LN2_HI) - n * LN2_LO
    poly = ONE + r * (ONE + r * (C2 + r * (C3 + r * (C4 + r * (C5 + r * C6)))))
    return poly * _bits_as_float32(n + EXPONENT_MAGIC)


@intrinsic
def maxnum(typingctx, a, b):
    """max(a, b) of two floats of one type, as LLVM's ``maxnum``: a NaN loses to a number.

    LLVM vectorises a loop reducing with it, where Python's ``max`` (a compare and select) needs
    the "nnan" flag. A NaN in the values no longer becomes the maximum; callers whose NaN must
    show anyway get it back from the exp of that value.
    """
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        kind = args[0].type
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(kind, [kind, kind]), f"llvm.maxnum.f{a.bitwidth}"
        )
        return builder.call(function, args)

    return a(a, b), codegen


def fast_exp(x: float) -> float:
    """exp(x): in jitted code a vectorisable polynomial for float32, ``math.exp`` otherwise."""
    return math.exp(x)


# "contract" (FMAs) only: reassociation could fold the two-constant Cody-Waite reduction into one.
@overload(fast_exp, jit_options={"fastmath": {"contract"}})
def _fast_exp_overload(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return _exp_float32
    return lambda x: math.exp(x)


def zero_of(array: np.ndarray) -> float:
    """0 in ``array``'s dtype: the start of a sum that stays in that dtype (a float32 accumulator
    keeps a float32 loop at full vector width, where a Python 0.0 would make the sum float64)."""
    return array.dtype.type(0)


@overload(zero_of)
def _zero_of_overload(array):
    zero = as_dtype(array.dtype).type(0)
    return lambda array: zero
