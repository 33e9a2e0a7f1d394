"""Layer norm and batch norm against the float64 reference, and the reference against finite
differences and PyTorch's running-statistics convention written out by hand.

Float32 tolerance: the statistics are exact sums up to rounding (float64 on the CPU, a float32
tree on the GPU), and each output is a handful of float32 operations on them, so it sits within a
few float32 ulps of the reference: 1e-5 relative to the largest value leaves room for the
subtractions in the backward's (g - mean(g) - xhat * mean(g * xhat)) and still catches a wrong
term. Inputs far from zero (|mean| >> std) lose more, unavoidably: the saved float32 mean is off
by up to |mean| * 2^-24, which moves every xhat by that times rstd (see
test_layernorm_large_offset). Float64 runs at 1e-12.

CUDA tests run in Numba's simulator (see conftest): layer norm runs one block per row and batch
norm one block per channel, so those tests keep to at most 4 rows or channels; D=300 runs a
128-thread block that also loops over the columns, N*H*W=96 a 32-thread block looping 3 times.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnet.kernels import _cuda
from fastnet.kernels.norm import (
    batchnorm_backward_cpu,
    batchnorm_backward_cuda,
    batchnorm_forward_cpu,
    batchnorm_forward_cuda,
    layernorm_backward_cpu,
    layernorm_backward_cuda,
    layernorm_forward_cpu,
    layernorm_forward_cuda,
    reference_batchnorm_backward,
    reference_batchnorm_forward,
    reference_layernorm_backward,
    reference_layernorm_forward,
)
from numerics import assert_close, relative_error

LAYERNORM = {
    "cpu": (layernorm_forward_cpu, layernorm_backward_cpu),
    "cuda": (layernorm_forward_cuda, layernorm_backward_cuda),
}
BATCHNORM = {
    "cpu": (batchnorm_forward_cpu, batchnorm_backward_cpu),
    "cuda": (batchnorm_forward_cuda, batchnorm_backward_cuda),
}
DEVICES = pytest.mark.parametrize("device", ["cpu", "cuda"])


def assert_all_close(got, ref, dtype, tolerance=None):
    for index, (value, expected) in enumerate(zip(got, ref, strict=True)):
        assert_close(value, expected, dtype, tolerance, f"output {index}")


def numerical_gradient(loss, x, step=1e-6):
    """Central differences of the scalar loss(x) at every element of x (float64)."""
    basis = np.eye(x.size).reshape(x.size, *x.shape) * step
    return np.array([(loss(x + e) - loss(x - e)) / (2 * step) for e in basis]).reshape(x.shape)


def normal(rng, shape, dtype, scale=1.0, offset=0.0):
    return (offset + scale * rng.standard_normal(shape)).astype(dtype)


def running_statistics(rng, channels, dtype):
    return normal(rng, channels, dtype), (0.5 + rng.random(channels)).astype(dtype)


# --- the references ----------------------------------------------------------------------------


def test_layernorm_reference_backward_matches_finite_differences(rng):
    x, weight, bias, dy = (
        rng.standard_normal((3, 5)),
        rng.standard_normal(5),
        rng.standard_normal(5),
        rng.standard_normal((3, 5)),
    )
    dx, dweight, dbias = reference_layernorm_backward(dy, x, weight)
    assert (
        relative_error(
            dx,
            numerical_gradient(
                lambda v: np.sum(reference_layernorm_forward(v, weight, bias)[0] * dy), x
            ),
        )
        < 1e-8
    )
    assert (
        relative_error(
            dweight,
            numerical_gradient(
                lambda v: np.sum(reference_layernorm_forward(x, v, bias)[0] * dy), weight
            ),
        )
        < 1e-8
    )
    assert (
        relative_error(
            dbias,
            numerical_gradient(
                lambda v: np.sum(reference_layernorm_forward(x, weight, v)[0] * dy), bias
            ),
        )
        < 1e-8
    )


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_batchnorm_reference_backward_matches_finite_differences(rng, training):
    x, dy = rng.standard_normal((3, 2, 2, 2)), rng.standard_normal((3, 2, 2, 2))
    weight, bias = rng.standard_normal(2), rng.standard_normal(2)
    running_mean, running_var = running_statistics(rng, 2, np.float64)

    def loss(x=x, weight=weight, bias=bias):
        y = reference_batchnorm_forward(
            x, weight, bias, running_mean, running_var, training=training
        )[0]
        return np.sum(y * dy)

    dx, dweight, dbias = reference_batchnorm_backward(
        dy, x, weight, running_mean, running_var, training=training
    )
    assert relative_error(dx, numerical_gradient(lambda v: loss(x=v), x)) < 1e-8
    assert relative_error(dweight, numerical_gradient(lambda v: loss(weight=v), weight)) < 1e-8
    assert relative_error(dbias, numerical_gradient(lambda v: loss(bias=v), bias)) < 1e-8


def test_batchnorm_reference_follows_pytorch_running_statistics(rng):
    x = rng.standard_normal((4, 3, 2, 5))
    running_mean, running_var = running_statistics(rng, 3, np.float64)
    y, mean, rstd, new_mean, new_var = reference_batchnorm_forward(
        x, None, None, running_mean, running_var, training=True, momentum=0.1, eps=1e-5
    )
    np.testing.assert_allclose(
        new_mean, 0.9 * running_mean + 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-14
    )
    np.testing.assert_allclose(
        new_var, 0.9 * running_var + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-14
    )
    np.testing.assert_allclose(rstd, 1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5), rtol=1e-14)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-14)


# --- layer norm --------------------------------------------------------------------------------


def layernorm_round_trip(device, rng, shape, dtype, affine=True, offset=0.0):
    forward, backward = LAYERNORM[device]
    x = normal(rng, shape, dtype, offset=offset)
    weight, bias = (
        (normal(rng, shape[1], dtype), normal(rng, shape[1], dtype)) if affine else (None, None)
    )
    dy = normal(rng, shape, dtype)
    y, mean, rstd = forward(x, weight, bias, 1e-5)
    return (y, mean, rstd), backward(dy, x, weight, mean, rstd), (x, weight, bias, dy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(13, 24), (13, 1000), (1, 7)])
def test_layernorm_cpu_matches_reference(rng, shape, dtype):
    outputs, grads, (x, weight, bias, dy) = layernorm_round_trip(
        "cpu", rng, shape, dtype, offset=2.0
    )
    assert_all_close(outputs, reference_layernorm_forward(x, weight, bias, 1e-5), dtype)
    assert_all_close(grads, reference_layernorm_backward(dy, x, weight, 1e-5), dtype)


@pytest.mark.parametrize(
    "shape, dtype", [((3, 24), np.float32), ((2, 300), np.float32), ((1, 7), np.float64)]
)
def test_layernorm_cuda_matches_reference(rng, shape, dtype):
    outputs, grads, (x, weight, bias, dy) = layernorm_round_trip(
        "cuda", rng, shape, dtype, offset=2.0
    )
    assert_all_close(outputs, reference_layernorm_forward(x, weight, bias, 1e-5), dtype)
    assert_all_close(grads, reference_layernorm_backward(dy, x, weight, 1e-5), dtype)


@DEVICES
def test_layernorm_without_affine(rng, device):
    outputs, grads, (x, _, _, dy) = layernorm_round_trip(
        device, rng, (3, 24), np.float32, affine=False
    )
    assert_all_close(outputs, reference_layernorm_forward(x, None, None, 1e-5), np.float32)
    assert_all_close(grads, reference_layernorm_backward(dy, x, None, 1e-5), np.float32)


@DEVICES
def test_layernorm_large_offset(rng, device):
    """Values 1e4 +- 1: one-pass sums of v and v^2 would cancel to noise; shifted sums do not."""
    outputs, grads, (x, weight, bias, dy) = layernorm_round_trip(
        device, rng, (3, 24), np.float32, offset=1e4
    )
    y, mean, rstd = outputs
    ref_y, ref_mean, ref_rstd = reference_layernorm_forward(x, weight, bias, 1e-5)
    assert relative_error(rstd, ref_rstd) < 1e-5
    assert relative_error(mean, ref_mean) < 1e-7
    saved_mean_error = (
        4 * 1e4 * 2.0**-24 * np.max(ref_rstd) * np.max(np.abs(weight))
    )  # see module docstring
    assert np.max(np.abs(y - ref_y)) < saved_mean_error
    assert relative_error(grads[0], reference_layernorm_backward(dy, x, weight, 1e-5)[0]) < 1e-3


@DEVICES
def test_layernorm_float64_backward_matches_finite_differences(rng, device):
    """The gradient-check path of the tensor layer: the kernels themselves, in float64."""
    (_, mean, rstd), (dx, dweight, dbias), (x, weight, bias, dy) = layernorm_round_trip(
        device, rng, (3, 5), np.float64
    )
    assert (
        relative_error(
            dx,
            numerical_gradient(
                lambda v: np.sum(reference_layernorm_forward(v, weight, bias)[0] * dy), x
            ),
        )
        < 1e-8
    )
    assert (
        relative_error(
            dweight,
            numerical_gradient(
                lambda v: np.sum(reference_layernorm_forward(x, v, bias)[0] * dy), weight
            ),
        )
        < 1e-8
    )


def test_layernorm_cpu_parameter_gradients_do_not_depend_on_the_thread_count(force_driver, rng):
    x, dy = normal(rng, (97, 24), np.float32), normal(rng, (97, 24), np.float32)
    _, mean, rstd = layernorm_forward_cpu(x, None, None)
    force_driver("serial")
    serial = layernorm_backward_cpu(dy, x, None, mean, rstd)
    force_driver("parallel")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        parallel = layernorm_backward_cpu(dy, x, None, mean, rstd)
    finally:
        numba.set_num_threads(before)
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel, strict=True))


@pytest.mark.parametrize("relu", [False, True])
def test_batchnorm_cpu_gives_the_same_bits_serial_and_parallel(force_driver, rng, relu):
    """The serial and parallel drivers are two compilations of one body: every output the same
    bits, whatever LLVM vectorises in each (sums reordered in float32 once made them differ), so
    training does not depend on the thread count. Several draws, odd channel runs."""
    for shape in ((6, 5, 7, 9), (3, 4, 33), (17, 3)):
        x, dy = normal(rng, shape, np.float32, 2.0, 0.5), normal(rng, shape, np.float32)
        weight, bias = normal(rng, shape[1], np.float32), normal(rng, shape[1], np.float32)
        results = []
        before = numba.get_num_threads()
        for driver in ("serial", "parallel"):
            force_driver(driver)
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # the work split for real
            try:
                y, mean, rstd = batchnorm_forward_cpu(
                    x, weight, bias, None, None, training=True, relu=relu
                )
                grads = batchnorm_backward_cpu(
                    dy, x, weight, mean, rstd, training=True, bias=bias, relu=relu
                )
            finally:
                numba.set_num_threads(before)
            results.append((y, mean, rstd, *grads))
        for serial, parallel in zip(*results, strict=True):
            np.testing.assert_array_equal(serial, parallel)


@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_cpu_serial_and_parallel_drivers_match_reference(force_driver, rng, driver):
    """The CPU policy picks a driver by size and threads: either gives the same results."""
    force_driver(driver)
    outputs, grads, (x, weight, bias, dy) = layernorm_round_trip("cpu", rng, (13, 24), np.float32)
    assert_all_close(outputs, reference_layernorm_forward(x, weight, bias, 1e-5), np.float32)
    assert_all_close(grads, reference_layernorm_backward(dy, x, weight, 1e-5), np.float32)
    x, dy = normal(rng, (4, 3, 5, 5), np.float32), normal(rng, (4, 3, 5, 5), np.float32)
    weight, bias = normal(rng, 3, np.float32), normal(rng, 3, np.float32)
    y, mean, rstd = batchnorm_forward_cpu(x, weight, bias, None, None, training=True)
    expected = reference_batchnorm_forward(x, weight, bias, None, None, training=True)[:3]
    assert_all_close((y, mean, rstd), expected, np.float32)
    assert_all_close(
        batchnorm_backward_cpu(dy, x, weight, mean, rstd, training=True),
        reference_batchnorm_backward(dy, x, weight, training=True),
        np.float32,
    )


@DEVICES
def test_layernorm_rejects_bad_arguments(device):
    forward, backward = LAYERNORM[device]
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"must be 2-D .* got shape \(4,\)"):
        forward(np.ones(4, np.float32), None, None)
    with pytest.raises(ValueError, match=r"shape \(3, 0\) has no values"):
        forward(np.ones((3, 0), np.float32), None, None)
    with pytest.raises(
        ValueError, match=r"weight shape \(3,\) must be \(4,\) for x of shape \(3, 4\)"
    ):
        forward(x, np.ones(3, np.float32), None)
    with pytest.raises(TypeError, match="bias dtype float64 must match x's dtype float32"):
        forward(x, None, np.ones(4))
    with pytest.raises(ValueError, match="eps=-1.0 must be between 0.0 and inf"):
        forward(x, None, None, -1.0)
    mean = rstd = np.ones(3, np.float32)
    with pytest.raises(
        ValueError, match=r"dy \(3, 5\) float32 must have the shape and dtype of x \(3, 4\)"
    ):
        backward(np.ones((3, 5), np.float32), x, None, mean, rstd)
    with pytest.raises(ValueError, match=r"rstd shape \(4,\) must be \(3,\)"):
        backward(x, x, None, mean, np.ones(4, np.float32))


# --- batch norm --------------------------------------------------------------------------------


def batchnorm_round_trip(
    device, rng, shape, dtype, training, affine=True, offset=0.0, momentum=0.1
):
    forward, backward = BATCHNORM[device]
    channels = shape[1]
    x, dy = normal(rng, shape, dtype, scale=2.0, offset=offset), normal(rng, shape, dtype)
    weight, bias = (
        (normal(rng, channels, dtype), normal(rng, channels, dtype)) if affine else (None, None)
    )
    running_mean, running_var = running_statistics(rng, channels, dtype)
    old_running = running_mean.copy(), running_var.copy()
    outputs = forward(
        x, weight, bias, running_mean, running_var, training=training, momentum=momentum, eps=1e-5
    )
    grads = backward(dy, x, weight, outputs[1], outputs[2], training=training)
    ref = reference_batchnorm_forward(
        x, weight, bias, *old_running, training=training, momentum=momentum, eps=1e-5
    )
    ref_grads = reference_batchnorm_backward(
        dy, x, weight, *old_running, training=training, eps=1e-5
    )
    return outputs + (running_mean, running_var), ref, grads, ref_grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("shape", [(13, 5), (4, 3, 7, 9), (3, 6, 1, 1), (1, 4, 3, 5)])
def test_batchnorm_cpu_matches_reference(rng, shape, training, dtype):
    outputs, ref, grads, ref_grads = batchnorm_round_trip(
        "cpu", rng, shape, dtype, training, offset=1.0
    )
    assert_all_close(outputs, ref, dtype)
    assert_all_close(grads, ref_grads, dtype)


@pytest.mark.parametrize(
    "shape, training, dtype",
    [
        ((3, 2, 4, 8), True, np.float32),
        ((5, 3), True, np.float64),
        ((2, 4, 3, 1), False, np.float32),
    ],
)
def test_batchnorm_cuda_matches_reference(rng, shape, training, dtype):
    outputs, ref, grads, ref_grads = batchnorm_round_trip(
        "cuda", rng, shape, dtype, training, offset=1.0
    )
    assert_all_close(outputs, ref, dtype)
    assert_all_close(grads, ref_grads, dtype)


def test_cuda_rows_and_channels_past_the_grid_x_limit_continue_in_y(rng, monkeypatch):
    """One block per layer-norm row or batch-norm channel: with gridDim.x lowered from 2³¹ - 1
    to 2, 5 rows (channels) take a grid of 2 × 3 blocks, the last one with nothing to do."""
    monkeypatch.setattr(_cuda, "MAX_GRID_X", 2)
    outputs, grads, (x, weight, bias, dy) = layernorm_round_trip("cuda", rng, (5, 6), np.float32)
    assert_all_close(outputs, reference_layernorm_forward(x, weight, bias, 1e-5), np.float32)
    assert_all_close(grads, reference_layernorm_backward(dy, x, weight, 1e-5), np.float32)
    outputs, ref, grads, ref_grads = batchnorm_round_trip("cuda", rng, (3, 5, 2), np.float32, True)
    assert_all_close(outputs, ref, np.float32)
    assert_all_close(grads, ref_grads, np.float32)


@DEVICES
@pytest.mark.parametrize("momentum", [0.0, 0.3, 1.0])
def test_batchnorm_running_statistics_update_in_place(rng, device, momentum):
    outputs, ref, _, _ = batchnorm_round_trip(
        device, rng, (5, 3, 2, 3), np.float32, True, momentum=momentum
    )
    running_mean, running_var = outputs[3:]
    assert_all_close((running_mean, running_var), ref[3:], np.float32)


@DEVICES
def test_batchnorm_eval_uses_running_statistics_and_leaves_them(rng, device):
    forward, _ = BATCHNORM[device]
    x = normal(rng, (1, 3, 2, 2), np.float32)  # one sample is fine in eval mode
    running_mean, running_var = running_statistics(rng, 3, np.float32)
    saved = running_mean.copy(), running_var.copy()
    y, mean, rstd = forward(x, None, None, running_mean, running_var, training=False)
    assert np.array_equal(running_mean, saved[0]) and np.array_equal(running_var, saved[1])
    assert np.array_equal(mean, running_mean)
    expected = (x - saved[0][:, None, None]) / np.sqrt(saved[1][:, None, None] + 1e-5)
    assert relative_error(y, expected) < 1e-6


@DEVICES
def test_batchnorm_large_offset(rng, device):
    outputs, ref, _, _ = batchnorm_round_trip(
        device, rng, (4, 2, 3, 5), np.float32, True, offset=1e4
    )
    assert relative_error(outputs[2], ref[2]) < 1e-5, "rstd"
    assert relative_error(outputs[4], ref[4]) < 1e-5, "running_var"


@DEVICES
def test_batchnorm_without_affine_or_running_statistics(rng, device):
    forward, backward = BATCHNORM[device]
    x, dy = normal(rng, (6, 3), np.float64), normal(rng, (6, 3), np.float64)
    outputs = forward(x, None, None, None, None, training=True)
    assert_all_close(
        outputs,
        reference_batchnorm_forward(x, None, None, None, None, training=True)[:3],
        np.float64,
    )
    grads = backward(dy, x, None, outputs[1], outputs[2], training=True)
    assert_all_close(grads, reference_batchnorm_backward(dy, x, None, training=True), np.float64)


@DEVICES
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_batchnorm_float64_backward_matches_finite_differences(rng, device, training):
    forward, backward = BATCHNORM[device]
    x, dy = normal(rng, (3, 2, 2, 2), np.float64), normal(rng, (3, 2, 2, 2), np.float64)
    weight, bias = normal(rng, 2, np.float64), normal(rng, 2, np.float64)
    running = running_statistics(rng, 2, np.float64)

    def loss(v):
        return np.sum(
            reference_batchnorm_forward(v, weight, bias, *running, training=training)[0] * dy
        )

    _, mean, rstd = forward(x, weight, bias, *(r.copy() for r in running), training=training)
    dx = backward(dy, x, weight, mean, rstd, training=training)[0]
    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-8


@DEVICES
@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1, 1)])
def test_batchnorm_training_needs_more_than_one_value_per_channel(rng, device, shape):
    forward, backward = BATCHNORM[device]
    x = normal(rng, shape, np.float32)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        forward(x, None, None, *running_statistics(rng, 3, np.float32), training=True)
    ones = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        backward(x, x, None, ones, ones, training=True)


@DEVICES
def test_batchnorm_rejects_bad_arguments(rng, device):
    forward, backward = BATCHNORM[device]
    x = normal(rng, (4, 3, 2), np.float32)
    running_mean, running_var = running_statistics(rng, 3, np.float32)
    with pytest.raises(
        ValueError, match=r"must be \(N, C\) or \(N, C, \*spatial\), got shape \(4,\)"
    ):
        forward(x[:, 0, 0], None, None, None, None, training=True)
    with pytest.raises(ValueError, match="eval mode .* needs running_mean and running_var"):
        forward(x, None, None, None, None, training=False)
    with pytest.raises(ValueError, match="both running_mean and running_var, or neither"):
        forward(x, None, None, running_mean, None, training=True)
    with pytest.raises(
        ValueError, match="running_var must be a contiguous array: it is updated in place"
    ):
        forward(x, None, None, running_mean, np.ones(6, np.float32)[::2], training=True)
    with pytest.raises(TypeError, match="running_mean dtype float64 must match x's dtype float32"):
        forward(x, None, None, running_mean.astype(np.float64), running_var, training=True)
    with pytest.raises(ValueError, match="momentum=1.5 must be between 0.0 and 1.0"):
        forward(x, None, None, running_mean, running_var, training=True, momentum=1.5)
    with pytest.raises(
        ValueError, match=r"weight shape \(4,\) must be \(3,\) for x of shape \(4, 3, 2\)"
    ):
        backward(x, x, np.ones(4, np.float32), running_mean, running_var, training=True)


# --- batch norm with the fused ReLU ------------------------------------------------------------


def fused_relu_round_trip(device, rng, shape, dtype, training):
    """The fused op, and batch norm then ReLU as two steps, from the same inputs: (y, mean,
    rstd) and (dx, dweight, dbias) each way. About half of the values are negative after the
    normalisation; a third of x is one repeated value, so whole runs share a sign."""
    forward, backward = BATCHNORM[device]
    channels = shape[1]
    x = normal(rng, shape, dtype, scale=2.0, offset=0.5)
    x.reshape(-1)[::3] = 0.0  # a value repeated on purpose
    dy = normal(rng, shape, dtype)
    weight, bias = normal(rng, channels, dtype), normal(rng, channels, dtype, scale=0.5)
    running = running_statistics(rng, channels, dtype)
    fused = forward(x, weight, bias, *(r.copy() for r in running), training=training, relu=True)
    plain = forward(x, weight, bias, *(r.copy() for r in running), training=training)
    kept = plain[0] > 0
    fused_grads = backward(
        dy, x, weight, fused[1], fused[2], training=training, bias=bias, relu=True
    )
    masked = np.where(kept, dy, dtype(0))
    plain_grads = backward(masked, x, weight, plain[1], plain[2], training=training)
    return fused, plain, fused_grads, plain_grads, (x, dy, weight, bias, running)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("shape", [(13, 5), (4, 3, 7, 9), (2, 6, 5, 3)])
def test_batchnorm_relu_cpu_is_batchnorm_then_relu(rng, shape, training, dtype):
    """The forward is batch norm's output through ReLU, bit for bit. The fused backward
    recomputes each value's sign from x; where it disagreed with the forward's output, dx would
    be off by a whole weight·rstd·dy there, far beyond the rounding of sums the vectoriser may
    order differently in the two kernels, which is all the tolerance leaves room for."""
    fused, plain, fused_grads, plain_grads, _ = fused_relu_round_trip(
        "cpu", rng, shape, dtype, training
    )
    assert np.array_equal(fused[0], np.maximum(plain[0], 0))
    assert (fused[0] == 0).any() and (fused[0] > 0).any()
    assert_all_close(fused_grads, plain_grads, dtype)


@pytest.mark.parametrize(
    "shape, training, dtype",
    [((3, 2, 4, 8), True, np.float32), ((5, 3), False, np.float64)],
)
def test_batchnorm_relu_cuda_is_batchnorm_then_relu(rng, shape, training, dtype):
    fused, plain, fused_grads, plain_grads, _ = fused_relu_round_trip(
        "cuda", rng, shape, dtype, training
    )
    assert np.array_equal(fused[0], np.maximum(plain[0], 0))
    assert_all_close(fused_grads, plain_grads, dtype)


@DEVICES
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_batchnorm_relu_matches_the_float64_reference(rng, device, training):
    fused, _, fused_grads, _, (x, dy, weight, bias, running) = fused_relu_round_trip(
        device, rng, (3, 4, 5, 3), np.float32, training
    )
    ref = reference_batchnorm_forward(x, weight, bias, *running, training=training, relu=True)
    ref_grads = reference_batchnorm_backward(
        dy, x, weight, *running, training=training, bias=bias, relu=True
    )
    assert_all_close(fused[:3], ref[:3], np.float32)
    assert_all_close(fused_grads, ref_grads, np.float32)


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_batchnorm_relu_reference_backward_matches_finite_differences(rng, training):
    x, dy = normal(rng, (3, 2, 2, 3), np.float64), normal(rng, (3, 2, 2, 3), np.float64)
    weight, bias = normal(rng, 2, np.float64), normal(rng, 2, np.float64)
    running = running_statistics(rng, 2, np.float64)

    def loss(v):
        y = reference_batchnorm_forward(v, weight, bias, *running, training=training, relu=True)
        return np.sum(y[0] * dy)

    dx = reference_batchnorm_backward(
        dy, x, weight, *running, training=training, bias=bias, relu=True
    )[0]
    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-7
