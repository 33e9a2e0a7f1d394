"""Convolutions that pool their own output (``pool=True``): kernels/conv.py's im2col and
kernels/winograd.py's convolution through kernels/_pool2x2.py's 2x2 stride-2 max-pool (and ReLU)
while each chunk is in cache, and their backward through the kept argmax (``pool_argmax``).

Held against the float64 references composed (the convolution's reference, the max-pool's, the
ReLU), and bit for bit against the family kernels run one after the other (convolution, max-pool
kernel, ReLU), serial and parallel, in the simulator against the CPU; NaNs, ties and the errors.
Outputs are poisoned (conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import conv, pool, winograd
from numerics import TOLERANCE, relative_error

# (family, x shape (N, C, H, W), output channels, stride, padding, images a chunk, bias, relu):
# odd output sides (their last row / column is in no window), uneven last chunks, stride 2,
# unequal padding, a chunk of the whole batch, no bias, no ReLU
CASES = [
    ("im2col", (5, 2, 9, 7), 3, 1, 1, 2, True, True),
    ("im2col", (3, 3, 11, 10), 4, 2, 0, 1, False, True),
    ("im2col", (4, 1, 8, 8), 5, 1, (0, 1), 8, True, False),
    ("winograd", (5, 3, 9, 7), 4, 1, 1, 2, True, True),
    ("winograd", (3, 4, 12, 11), 5, 1, (0, 2), 1, False, True),
    ("winograd", (2, 2, 6, 6), 3, 1, 1, 4, True, False),
]


def case_id(case):
    family, shape, out_channels, stride, padding, chunk, bias, relu = case
    return (
        f"{family}-x{'x'.join(map(str, shape))}-k{out_channels}-s{stride}-p{padding}-chunk{chunk}"
        f"{'-bias' if bias else ''}{'-relu' if relu else ''}"
    )


class Conv:
    """One case's convolution through either family's entry points, on one variant."""

    def __init__(self, rng, case, dtype=np.float32, variant="cpu"):
        self.family, shape, out_channels, stride, padding, self.chunk, bias, self.relu = case
        self.x = rng.standard_normal(shape).astype(dtype)
        self.weight = rng.standard_normal((out_channels, shape[1], 3, 3)).astype(dtype)
        self.bias = rng.standard_normal(out_channels).astype(dtype) if bias else None
        self.stride, self.padding, self.variant = stride, padding, variant
        if self.family == "winograd":
            self.u = getattr(winograd, f"winograd_weights_{variant}")(self.weight)

    def forward(self, **options):
        if self.family == "im2col":
            run = getattr(conv, f"conv2d_im2col_{self.variant}")
            window = (self.stride, self.padding, 1, 1, self.chunk)
            return run(self.x, self.weight, self.bias, *window, **options)
        run = getattr(winograd, f"winograd_conv2d_{self.variant}")
        return run(self.x, self.u, self.bias, self.padding, self.chunk, **options)

    def backward(self, dy, **options):
        if self.family == "im2col":
            run = getattr(conv, f"conv2d_im2col_backward_{self.variant}")
            window = (self.stride, self.padding, 1, 1, self.chunk)
            return run(dy, self.x, self.weight, *window, **options)
        run = getattr(winograd, f"winograd_conv2d_backward_{self.variant}")
        return run(dy, self.x, self.u, self.padding, self.chunk, **options)

    def references(self, pooled_grad):
        """(pooled, where, gradients) in float64: the references composed."""
        if self.family == "im2col":
            window = (self.stride, self.padding)
            y = conv.reference_conv2d(self.x, self.weight, self.bias, *window)
        else:
            y = winograd.reference_conv2d(self.x, self.u, self.bias, self.padding, self.chunk)
        half = (y.shape[2] // 2 * 2, y.shape[3] // 2 * 2)
        maxima, argmax = pool.reference_maxpool2d_forward(y[:, :, : half[0], : half[1]], 2, 2, 0)
        rows, columns = argmax // half[1], argmax % half[1]
        argmax = rows * y.shape[3] + columns  # as an index into the whole (uncut) plane
        passes = maxima > 0 if self.relu else np.ones(maxima.shape, bool)
        grad = np.zeros((y.shape[0] * y.shape[1], y.shape[2] * y.shape[3]))
        planes = np.arange(grad.shape[0])[:, None]
        flat_where = argmax.reshape(grad.shape[0], -1)
        grad[planes, flat_where] = (pooled_grad * passes).reshape(grad.shape[0], -1)
        grad = grad.reshape(y.shape)
        if self.family == "im2col":
            gradients = conv.reference_conv2d_im2col_backward(
                grad, self.x, self.weight, self.stride, self.padding
            )
        else:
            gradients = winograd.reference_conv2d_backward(
                grad, self.x, self.u, self.padding, self.chunk
            )
        pooled = np.maximum(maxima, 0) if self.relu else maxima
        return pooled, np.where(passes, argmax, -1), gradients


def composed(layer, pooled_grad):
    """(pooled, where, gradients) by the kernels one after the other: the convolution, the max-pool
    family's kernels, the ReLU's rule (max(v, 0), gradient where the pooled value is > 0)."""
    y = layer.forward()
    maxima, argmax = pool.maxpool2d_forward_cpu(y, 2, 2, 0)
    passes = maxima > 0 if layer.relu else np.ones(maxima.shape, bool)
    masked = np.where(passes, pooled_grad, 0).astype(y.dtype)
    grad = pool.maxpool2d_backward_cpu(masked, argmax, y.shape, 2, 2, 0)
    pooled = np.where(maxima <= 0, 0, maxima).astype(y.dtype) if layer.relu else maxima
    return pooled, np.where(passes, argmax, -1), layer.backward(grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_pooled_convolution_matches_the_references(rng, case, dtype):
    layer = Conv(rng, case, dtype)
    pooled, where = layer.forward(relu=layer.relu, pool=True)
    pooled_grad = rng.standard_normal(pooled.shape).astype(dtype)
    expected_pooled, expected_where, expected_grads = layer.references(pooled_grad)
    assert pooled.dtype == dtype and where.dtype == np.int32
    assert pooled.shape == expected_pooled.shape == where.shape
    assert relative_error(pooled, expected_pooled) <= TOLERANCE[dtype]
    np.testing.assert_array_equal(where, expected_where)
    if layer.relu:
        assert (where == -1).any() and (where >= 0).any()  # both sides of the ReLU
    got = layer.backward(pooled_grad, pool_argmax=where)
    for name, value, reference in zip(("dx", "dw", "db"), got, expected_grads, strict=True):
        if layer.bias is None and name == "db":
            continue
        assert value.dtype == dtype and value.shape == reference.shape, name
        assert relative_error(value, reference) <= TOLERANCE[dtype], name


@pytest.mark.parametrize("driver", ["serial", "parallel"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_pooled_convolution_is_the_kernels_in_a_row_bit_for_bit(
    force_driver, two_threads, rng, case, driver
):
    force_driver(driver)
    layer = Conv(rng, case)
    pooled, where = layer.forward(relu=layer.relu, pool=True)
    pooled_grad = rng.standard_normal(pooled.shape).astype(np.float32)
    expected_pooled, expected_where, expected_grads = composed(layer, pooled_grad)
    np.testing.assert_array_equal(pooled, expected_pooled)
    np.testing.assert_array_equal(where, expected_where)
    got = layer.backward(pooled_grad, pool_argmax=where)
    for value, expected in zip(got, expected_grads, strict=True):
        np.testing.assert_array_equal(value, expected)


@pytest.mark.parametrize("family", ["im2col", "winograd"])
def test_ties_and_nans_follow_the_max_pool_and_the_relu(rng, family):
    """Integer inputs and weights: exact outputs with many equal maxima (the first in window order
    wins) and many zeros; a NaN pixel makes NaN outputs, which win their window, stay NaN through
    the ReLU and pass no gradient."""
    layer = Conv(rng, (family, (3, 2, 8, 8), 3, 1, 1, 2, True, True))
    layer.x = rng.integers(-2, 3, layer.x.shape).astype(np.float32)
    layer.x[1, 0, 3, 4] = np.nan
    layer.weight = rng.integers(-1, 2, layer.weight.shape).astype(np.float32)
    layer.bias = np.zeros(3, np.float32)
    if family == "winograd":
        layer.u = winograd.winograd_weights_cpu(layer.weight)
    pooled, where = layer.forward(relu=True, pool=True)
    pooled_grad = rng.standard_normal(pooled.shape).astype(np.float32)
    expected_pooled, expected_where, expected_grads = composed(layer, pooled_grad)
    assert np.isnan(pooled).any() and (pooled == 0).any()
    np.testing.assert_array_equal(pooled, expected_pooled)  # NaNs in the same places
    np.testing.assert_array_equal(where, expected_where)
    assert (where[np.isnan(pooled)] == -1).all()
    got = layer.backward(pooled_grad, pool_argmax=where)
    for value, expected in zip(got, expected_grads, strict=True):
        np.testing.assert_array_equal(value, expected)


@pytest.mark.parametrize("case", [CASES[0], CASES[3]], ids=case_id)
def test_the_simulator_pools_as_the_cpu_does(rng, case):
    cpu = Conv(rng, case)
    cuda = Conv(np.random.default_rng(0), case, variant="cuda")
    cuda.x, cuda.weight, cuda.bias = cpu.x, cpu.weight, cpu.bias
    if cuda.family == "winograd":
        cuda.u = winograd.winograd_weights_cuda(cpu.weight)
    pooled, where = cpu.forward(relu=True, pool=True)
    got_pooled, got_where = cuda.forward(relu=True, pool=True)
    assert relative_error(np.asarray(got_pooled), pooled) <= TOLERANCE[np.float32]
    np.testing.assert_array_equal(np.asarray(got_where), where)
    pooled_grad = rng.standard_normal(pooled.shape).astype(np.float32)
    expected = cpu.backward(pooled_grad, pool_argmax=where)
    got = cuda.backward(pooled_grad, pool_argmax=where)
    for value, reference in zip(got, expected, strict=True):
        assert relative_error(np.asarray(value), reference) <= TOLERANCE[np.float32]


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
@pytest.mark.parametrize("family", ["im2col", "winograd"])
def test_bad_pooling_arguments_name_what_is_wrong(rng, variant, family):
    layer = Conv(rng, (family, (2, 2, 6, 6), 3, 1, 1, 1, True, True), variant=variant)
    with pytest.raises(ValueError, match="pool=True writes no y, so it takes no out"):
        layer.forward(pool=True, out=np.empty((2, 3, 6, 6), np.float32))
    pooled, where = layer.forward(relu=True, pool=True)
    pooled_grad = np.ones(pooled.shape, np.float32)
    with pytest.raises(ValueError, match=r"pool_argmax as an int32 array of shape \(2, 3, 3, 3\)"):
        layer.backward(pooled_grad, pool_argmax=np.asarray(where).astype(np.int64))
    with pytest.raises(ValueError, match=r"expects dy of shape \(2, 3, 3, 3\)"):
        layer.backward(np.ones((2, 3, 6, 6), np.float32), pool_argmax=where)
    small = Conv(rng, (family, (2, 2, 1, 3), 3, 1, 1, 1, True, True), variant=variant)
    with pytest.raises(ValueError, match="a 2x2 max-pool needs an output of at least 2x2"):
        small.forward(pool=True)


@pytest.mark.parametrize("family", ["im2col", "winograd"])
def test_an_argmax_outside_the_plane_is_an_error(rng, family):
    layer = Conv(rng, (family, (2, 2, 6, 6), 3, 1, 1, 1, True, True))
    pooled, where = layer.forward(relu=True, pool=True)
    where[1, 2, 0, 1] = 36  # one past the 6x6 plane
    with pytest.raises(ValueError, match="1 pool_argmax entries are neither -1 nor inside"):
        layer.backward(np.ones(pooled.shape, np.float32), pool_argmax=where)


def test_im2col_pools_a_bias_only_with_one_group(rng):
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    weight = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    bias = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="takes a bias only with groups=1, got groups=2"):
        conv.conv2d_im2col_cpu(x, weight, bias, 1, 1, 1, 2, 1, pool=True)
    pooled, where = conv.conv2d_im2col_cpu(x, weight, None, 1, 1, 1, 2, 1, relu=True, pool=True)
    y = conv.conv2d_im2col_cpu(x, weight, None, 1, 1, 1, 2, 1)
    maxima, _ = pool.maxpool2d_forward_cpu(y, 2, 2, 0)
    np.testing.assert_array_equal(pooled, np.maximum(maxima, 0))
