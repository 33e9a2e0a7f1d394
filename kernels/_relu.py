"""The ReLU rule, defined once for every kernel that applies it: max(x, 0), a NaN kept.

The activation family's kernels apply it element by element; the convolutions (im2col, Winograd)
apply it to each output plane while the plane is still in cache, when their caller fuses
Conv2d → ReLU into one op.
"""

from __future__ import annotations

from numba import uint64
from numba.extending import register_jitable


@register_jitable
def relu_value(value, zero):
    """max(value, 0), ``zero`` the 0 of value's dtype; "not <=" rather than ">" so that a NaN is
    kept, as np.maximum and PyTorch keep it."""
    return value if not value <= zero else zero


@register_jitable
def relu_span(y, start, stop):
    """y[start:stop] = relu(y[start:stop]), in place (y 1-D, 0 <= start <= stop <= y.size)."""
    zero = y.dtype.type(0)
    # In place, "keep y[i] or store 0" becomes a masked store of the zeros (vmaskmovps), which
    # AMD's cores microcode: ~8x slower than storing every value. Times a one the compiler does
    # not fold (1 + 0·stop: 0·x may be -0.0 for all it knows), every value is stored, unchanged.
    one = y.dtype.type(1) + y.dtype.type(0) * y.dtype.type(stop)
    for index in range(uint64(start), uint64(stop)):  # unsigned: no wrap-around test
        y[index] = relu_value(y[index], zero) * one
