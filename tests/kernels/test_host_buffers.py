"""The host buffer cache behind every kernel's outputs: a large buffer is handed out again only
once no array refers to it, whatever view, reshape or dtype the arrays took."""

import numpy as np
import pytest

from fastnet.kernels import _cuda

LARGE = (_cuda.CACHED_BUFFER_BYTES // 4 + 3,)  # float32 elements: just above the threshold


@pytest.fixture
def cache(monkeypatch):
    fresh = _cuda._HostBufferCache()
    monkeypatch.setattr(_cuda, "host_buffers", fresh)
    return fresh


def test_a_released_buffer_is_reused(cache):
    first = _cuda.empty(LARGE, np.float32, like=np.empty(0))
    address = first.__array_interface__["data"][0]
    del first
    again = _cuda.empty(LARGE, np.float32, like=np.empty(0))
    assert again.__array_interface__["data"][0] == address
    assert again.shape == LARGE and again.dtype == np.float32 and again.flags.c_contiguous


def test_a_buffer_in_use_through_any_view_is_not_handed_out(cache, rng):
    first = _cuda.empty(LARGE, np.float32, like=np.empty(0))
    first[:] = rng.standard_normal(LARGE).astype(np.float32)
    kept = first[5:].reshape(-1, 1)[::2]  # a view of a view: its base is still the buffer
    expected = kept.copy()
    del first
    second = _cuda.empty(LARGE, np.float32, like=np.empty(0))
    second[:] = np.nan
    assert not np.shares_memory(second, kept)
    np.testing.assert_array_equal(kept, expected)
    del kept, second
    # both released: the next two requests get the two buffers back, no third one
    reused = [_cuda.empty(LARGE, np.float32, like=np.empty(0)) for _ in range(2)]
    assert not np.shares_memory(reused[0], reused[1])
    assert sum(len(buffers) for buffers in cache._buffers.values()) == 2


def test_same_bytes_other_shape_and_dtype_share_a_buffer(cache):
    first = _cuda.empty((2, LARGE[0]), np.float32, like=np.empty(0))
    address = first.__array_interface__["data"][0]
    del first
    other = _cuda.empty(LARGE[0], np.float64, like=np.empty(0))
    assert other.__array_interface__["data"][0] == address and other.shape == LARGE


def test_small_arrays_and_the_limit_bypass_the_cache(cache, monkeypatch):
    _cuda.empty((16, 16), np.float32, like=np.empty(0))
    assert not any(cache._buffers.values())
    nbytes = LARGE[0] * 4
    monkeypatch.setattr(_cuda, "CACHE_LIMIT_BYTES", 2 * nbytes)
    kept = [_cuda.empty(LARGE, np.float32, like=np.empty(0)) for _ in range(3)]
    assert len({array.__array_interface__["data"][0] for array in kept}) == 3
    assert (
        cache._cached_bytes == 2 * nbytes and len(cache._buffers[nbytes]) == 2
    )  # the third: plain
    cache.clear()
    assert not cache._buffers and cache._cached_bytes == 0
