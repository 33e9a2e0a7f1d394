"""The ReLU rule, defined once for every kernel that applies it: max(x, 0), a NaN kept.

The activation family's kernels apply it element by element; the convolutions (im2col, Winograd)
apply it to each output plane while the plane is still in cache, when their caller fuses
Conv2d → ReLU into one op.
"""

from __future__ import annotations

from numba.extending import register_jitable


@register_jitable
def relu_value(value, zero):
    """max(value, 0), ``zero`` the 0 of value's dtype; "not <=" rather than ">" so that a NaN is
    kept, as np.maximum and PyTorch keep it."""
    return value if not value <= zero else zero


@register_jitable
def relu_span(y, start, stop):
    """y[start:stop] = relu(y[start:stop]), in place (y 1-D)."""
    zero = y.dtype.type(0)
    for index in range(start, stop):
        y[index] = relu_value(y[index], zero)
