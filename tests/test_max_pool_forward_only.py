"""max_pool2d asks the pool kernel for its argmax only when a backward may follow (the op is
recorded) or indices are returned; otherwise it takes the kernel's forward-only path."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
import fastnet.functional as F
from fastnet import nn


@pytest.fixture
def argmax_requests(monkeypatch):
    """The ``with_argmax`` of every maxpool2d_forward call on the cpu device."""
    device = fastnet.backend.get_device("cpu")
    real, asked = device.maxpool2d_forward, []

    def spy(*args, with_argmax=True, **kwargs):
        asked.append(with_argmax)
        return real(*args, with_argmax=with_argmax, **kwargs)

    monkeypatch.setattr(device, "maxpool2d_forward", spy)
    return asked


def _x(requires_grad=False, shape=(2, 3, 9, 8)):
    values = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    values.reshape(-1)[5] = np.nan
    return fastnet.Tensor(values, requires_grad=requires_grad)


def test_no_argmax_under_no_grad_and_the_same_values(argmax_requests):
    x = _x(requires_grad=True)
    with fastnet.no_grad():
        fast = F.max_pool2d(x, 2).numpy()
    recorded = F.max_pool2d(x, 2)
    assert argmax_requests == [False, True]
    np.testing.assert_array_equal(fast, recorded.detach().numpy())
    recorded.sum().backward()  # the recorded op still routes its gradient
    assert x.grad is not None and x.grad.numpy().sum() == recorded.numel()


def test_no_argmax_for_an_input_without_gradient(argmax_requests):
    F.max_pool2d(_x(), 3, 2, 1)
    nn.MaxPool2d(2)(_x())
    assert argmax_requests == [False, False]


def test_return_indices_always_computes_them(argmax_requests):
    x = _x()
    with fastnet.no_grad():
        out, indices = F.max_pool2d(x, 2, return_indices=True)
    assert argmax_requests == [True]
    expected, expected_indices = F.max_pool2d(_x(requires_grad=True), 2, return_indices=True)
    np.testing.assert_array_equal(indices.numpy(), expected_indices.numpy())
    np.testing.assert_array_equal(out.numpy(), expected.detach().numpy())


def test_unbatched_and_adaptive_pools_take_the_forward_only_path(argmax_requests):
    x = _x(shape=(3, 8, 8))
    with fastnet.no_grad():
        unbatched = F.max_pool2d(x, 2)
        adaptive = F.adaptive_max_pool2d(x, 4)
    assert argmax_requests == [False, False]
    np.testing.assert_array_equal(unbatched.numpy(), adaptive.numpy())
    assert unbatched.shape == (3, 4, 4)


def test_bad_input_is_still_refused():
    with fastnet.no_grad():
        with pytest.raises(TypeError, match="Tensor"):
            F.max_pool2d(np.zeros((1, 1, 4, 4), np.float32), 2)
        with pytest.raises(ValueError, match="max_pool2d"):
            F.max_pool2d(_x(shape=(4, 4)), 2)
