"""The flat gather against its reference: both variants, odd sizes, empty sources, checks.

The CUDA kernel runs in the simulator with 2 blocks of 256 threads (``stride_grid``), so a
gather of a few hundred values also exercises the grid-stride loop."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels.gather import gather_flat_cpu, gather_flat_cuda, reference_gather_flat

VARIANTS = [gather_flat_cpu, gather_flat_cuda]


def sources_of(rng, sizes, dtype=np.float32):
    sources = tuple(rng.standard_normal(size).astype(dtype) for size in sizes)
    offsets = tuple(int(start) for start in np.cumsum((0, *sizes[:-1])))
    return sources, offsets


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "sizes", [(7,), (5, 1, 13), (0, 9, 0, 4, 0), (300, 3, 701), (2,) * 9], ids=str
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_reference(rng, variant, sizes, dtype):
    sources, offsets = sources_of(rng, sizes, dtype)
    out = np.full(sum(sizes), np.nan, dtype)
    returned = variant(sources, offsets, out)
    assert returned is out
    expected = reference_gather_flat(sources, offsets, out)
    np.testing.assert_array_equal(out, expected.astype(dtype))  # a copy: exact


@pytest.mark.parametrize("variant", VARIANTS)
def test_refuses_what_does_not_fit(rng, variant):
    sources, offsets = sources_of(rng, (4, 3))
    out = np.full(7, np.nan, np.float32)
    with pytest.raises(ValueError, match="source 1 starts at 4, but its offset is 5"):
        variant(sources, (0, 5), out)
    with pytest.raises(ValueError, match="the sources hold 7 values, out has 8"):
        variant(sources, offsets, np.empty(8, np.float32))
    with pytest.raises(TypeError, match="source 0 is a float64"):
        variant((sources[0].astype(np.float64), sources[1]), offsets, out)
    with pytest.raises(ValueError, match="source 1 must be contiguous and 1-D"):
        variant((sources[0], np.ones((1, 3), np.float32)), offsets, out)
    with pytest.raises(ValueError, match="2 sources but 1 offsets"):
        variant(sources, (0,), out)
    with pytest.raises(ValueError, match="at least one source"):
        variant((), (), np.empty(0, np.float32))
    assert np.isnan(out).all()  # nothing written by a refused call
