"""What a kernel launch accepts (issue 16): the simulator runs kernels with arguments that
numba-cuda's real launcher refuses, so launch() refuses them in the simulator too."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fastnet.kernels._cuda import launch, simulating

pytestmark = pytest.mark.skipif(not simulating(), reason="the check guards the simulator")


@cuda.jit
def _copy(source, target, scale):
    for index in range(cuda.grid(1), target.size, cuda.gridsize(1)):
        target[index] = source[index] * scale[0]


@pytest.mark.parametrize("bad", [None, "1.0", [1.0], {"scale": 1.0}, object()])
def test_launch_refuses_what_a_real_launch_refuses(bad):
    source, target = np.arange(5.0), np.full(5, np.nan)
    with pytest.raises(TypeError, match="_copy: kernel argument 2 is a"):
        launch(_copy, 1, 8, source, target, bad)
    assert np.isnan(target).all()  # refused before anything ran


def test_launch_takes_arrays_numbers_booleans_and_tuples_of_them():
    source, target = np.arange(5.0), np.full(5, np.nan)
    launch(_copy, 1, 8, source, target, np.array([2.0]))
    np.testing.assert_array_equal(target, 2 * source)
    with pytest.raises(TypeError, match="kernel argument 2 is a NoneType"):
        launch(_copy, 1, 8, source, target, (1, 2.0, True, None))
