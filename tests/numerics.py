"""Numerical helpers shared by the tests (importable as ``numerics``: pytest puts tests/ on the
path with its root conftest).

Kernel tests compare against float64 references by relative error: the largest absolute
difference over the largest magnitude of the reference, so one number judges a whole buffer
whatever its scale.
"""

from __future__ import annotations

import numpy as np

# Relative error allowed against a float64 reference, by the dtype the kernel computed in. A
# float32 kernel that sums in a different order than the reference lands near 1e-6; a test
# that needs a different bound defines its own, next to the reason.
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}


def relative_error(got, expected) -> float:
    """max |got - expected| / max |expected|, in float64."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


def assert_close(
    got, expected, dtype, tolerance: float | None = None, what: str = "output"
) -> None:
    """``got`` has ``expected``'s shape, the dtype ``dtype``, only finite values (an element never
    written stays NaN from the poisoned allocation) and a relative error within the tolerance."""
    got = np.asarray(got)
    assert got.shape == np.shape(expected), (
        f"{what}: shape {got.shape}, expected {np.shape(expected)}"
    )
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    not_finite = np.count_nonzero(~np.isfinite(got))
    assert not not_finite, f"{what}: {not_finite} elements are inf/NaN or were never written"
    bound = TOLERANCE[np.dtype(dtype).type] if tolerance is None else tolerance
    error = relative_error(got, expected)
    assert error <= bound, f"{what}: relative error {error:.2e} > {bound:.0e}"
