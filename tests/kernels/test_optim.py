"""Fused Adam/AdamW and SGD updates against the float64 references, over several steps.

Each test runs the kernel on float32 (or float64) buffers and the reference on its own float64
copy of the same starting state for several consecutive steps, then compares the parameter's
total displacement and the final state buffers by relative error.

Float32 tolerance 1e-4 (``SEVERAL_STEPS_TOLERANCE``; CUDA-NOTES suggests rtol >= 1e-4 for float32
Adam): the kernels round each coefficient (1 - β2 included) once from float64, so one step is within
a few ulps, but the displacement p_K - p_0 is a difference of numbers ~1 carrying ~1e-2 of change,
so it keeps only ~6e-8 / 1e-2 ≈ 1e-5 of relative precision per step. Any wrong term (a missed bias
correction, decay applied the coupled way instead of the decoupled one, dampening on the first step)
moves the displacement by 1e-2 or more. Float64 runs at 1e-10.

CUDA tests run in the simulator over ~10k elements: the launcher caps the grid at 2 blocks of 256
threads there, so each thread walks ~20 elements of the grid-stride loop.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels.optim import (
    adam_flat_step_cpu,
    adam_flat_step_cuda,
    adam_step_cpu,
    adam_step_cuda,
    reference_adam_step,
    reference_sgd_step,
    sgd_flat_step_cpu,
    sgd_flat_step_cuda,
    sgd_step_cpu,
    sgd_step_cuda,
)
from numerics import assert_close, relative_error

# Looser than the shared bounds: the displacement after several steps (module docstring).
SEVERAL_STEPS_TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}
SHAPES = [(1,), (1001,), (3, 5, 7)]
STEPS = 4
ADAM = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-3)
ADAM_VARIANTS = [(False, 0.0), (False, 0.1), (True, 0.1)]  # (decoupled, weight_decay)
SGD_VARIANTS = [  # (momentum, dampening, nesterov, weight_decay)
    (0.0, 0.0, False, 0.0),
    (0.0, 0.0, False, 0.1),
    (0.9, 0.0, False, 0.0),
    (0.9, 0.5, False, 0.1),
    (0.9, 0.0, True, 0.1),
]


def assert_steps_close(got, ref, dtype, what):
    assert_close(got, ref, dtype, SEVERAL_STEPS_TOLERANCE[dtype], what)


def random_array(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def run_adam(step_fn, rng, shape, dtype, decoupled, weight_decay):
    """STEPS Adam steps through ``step_fn`` and through the reference; compare at the end."""
    param = random_array(rng, shape, dtype)
    exp_avg = random_array(rng, shape, dtype, 0.1)
    # Second moments around 1e-4, so sqrt(v̂) ~ 1e-2 and ε = 1e-3 changes the step by ~10%.
    exp_avg_sq = (1e-4 * rng.random(shape) + 1e-6).astype(dtype)
    start = param.copy()
    ref = [a.astype(np.float64) for a in (param, exp_avg, exp_avg_sq)]
    for step in range(1, STEPS + 1):
        grad = random_array(rng, shape, dtype, 0.01)
        hyper = dict(ADAM, step=step, weight_decay=weight_decay, decoupled=decoupled)
        step_fn(param, grad, exp_avg, exp_avg_sq, **hyper)
        ref = list(reference_adam_step(*ref[:1], grad, *ref[1:], **hyper))
    assert_steps_close(param - start, ref[0] - start, dtype, "param displacement")
    assert_steps_close(exp_avg, ref[1], dtype, "exp_avg")
    assert_steps_close(exp_avg_sq, ref[2], dtype, "exp_avg_sq")


def run_sgd(step_fn, rng, shape, dtype, momentum, dampening, nesterov, weight_decay):
    """STEPS SGD steps through ``step_fn`` and through the reference; compare at the end."""
    param = random_array(rng, shape, dtype)
    # Like an optimizer's fresh `empty_like` buffer: the first step must never read it.
    buffer = np.full(shape, np.nan, dtype) if momentum else None
    start = param.copy()
    ref_param, ref_buffer = param.astype(np.float64), None
    for step in range(STEPS):
        grad = random_array(rng, shape, dtype, 0.1)
        hyper = dict(
            lr=0.1,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            first_step=step == 0,
        )
        step_fn(param, grad, buffer, **hyper)
        ref_param, ref_buffer = reference_sgd_step(ref_param, grad, ref_buffer, **hyper)
    assert_steps_close(param - start, ref_param - start, dtype, "param displacement")
    if momentum:
        assert_steps_close(buffer, ref_buffer, dtype, "momentum_buffer")


# --- references ----------------------------------------------------------------------------------


def test_reference_adam_on_hand_computed_steps():
    one = np.array([1.0])
    hyper = dict(step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=0.0)
    # m̂ = g, v̂ = g²: the first step moves every element by exactly lr against the gradient's sign.
    p, m, v = reference_adam_step(
        one, 0.5 * one, 0 * one, 0 * one, **hyper, weight_decay=0.0, decoupled=False
    )
    np.testing.assert_allclose([p[0], m[0], v[0]], [0.9, 0.05, 0.00025])
    # Adam adds λ·p = 0.1 to the gradient; AdamW first shrinks p to 1 - 0.1·0.1 = 0.99.
    p, m, _ = reference_adam_step(
        one, 0.5 * one, 0 * one, 0 * one, **hyper, weight_decay=0.1, decoupled=False
    )
    np.testing.assert_allclose([p[0], m[0]], [0.9, 0.06])
    p, m, _ = reference_adam_step(
        one, 0.5 * one, 0 * one, 0 * one, **hyper, weight_decay=0.1, decoupled=True
    )
    np.testing.assert_allclose([p[0], m[0]], [0.89, 0.05])
    # Step 2 from m = 0.05, v = 0.00025 with g = 0.5 again: m = 0.095, v = 0.00049975,
    # m̂ = 0.095 / 0.19 = 0.5, v̂ = 0.00049975 / 0.001999 = 0.25: again exactly lr.
    p, _, _ = reference_adam_step(
        one,
        0.5 * one,
        0.05 * one,
        0.00025 * one,
        **dict(hyper, step=2),
        weight_decay=0.0,
        decoupled=False,
    )
    np.testing.assert_allclose(p, [0.9])


def test_reference_sgd_on_hand_computed_steps():
    one = np.array([1.0])
    hyper = dict(lr=0.1, weight_decay=0.0, nesterov=False)
    p, buffer = reference_sgd_step(
        one, 2 * one, None, **hyper, momentum=0.0, dampening=0.0, first_step=True
    )
    assert buffer is None and p[0] == pytest.approx(0.8)
    # The first step copies g into the buffer, ignoring dampening; later steps apply it.
    p, buffer = reference_sgd_step(
        one, 2 * one, None, **hyper, momentum=0.9, dampening=0.5, first_step=True
    )
    assert (p[0], buffer[0]) == pytest.approx((0.8, 2.0))
    p, buffer = reference_sgd_step(
        one, 2 * one, buffer, **hyper, momentum=0.9, dampening=0.5, first_step=False
    )
    assert (p[0], buffer[0]) == pytest.approx((1 - 0.1 * 2.8, 2.8))
    p, buffer = reference_sgd_step(
        one,
        2 * one,
        2 * one,
        lr=0.1,
        weight_decay=0.5,
        nesterov=True,
        momentum=0.9,
        dampening=0.0,
        first_step=False,
    )
    # g = 2 + 0.5·1 = 2.5, b = 0.9·2 + 2.5 = 4.3, step along g + 0.9·b = 6.37
    assert (p[0], buffer[0]) == pytest.approx((1 - 0.637, 4.3))


# --- CPU -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("decoupled, weight_decay", ADAM_VARIANTS)
def test_cpu_adam_matches_reference(rng, decoupled, weight_decay, shape, dtype):
    run_adam(adam_step_cpu, rng, shape, dtype, decoupled, weight_decay)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum, dampening, nesterov, weight_decay", SGD_VARIANTS)
def test_cpu_sgd_matches_reference(rng, momentum, dampening, nesterov, weight_decay, shape, dtype):
    run_sgd(sgd_step_cpu, rng, shape, dtype, momentum, dampening, nesterov, weight_decay)


@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_cpu_serial_and_parallel_drivers_match_reference(force_driver, rng, driver):
    """The CPU policy picks a driver by size and threads: either gives the same results."""
    force_driver(driver)
    run_adam(adam_step_cpu, rng, (1001,), np.float32, True, 0.1)
    run_sgd(sgd_step_cpu, rng, (1001,), np.float32, 0.9, 0.0, True, 0.1)


def test_cpu_adam_and_adamw_differ(rng):
    state = [random_array(rng, 101, np.float32) for _ in range(3)]
    state[2] = np.abs(state[2])
    grad = random_array(rng, 101, np.float32)
    updated = []
    for decoupled in (False, True):
        param, exp_avg, exp_avg_sq = (a.copy() for a in state)
        adam_step_cpu(
            param, grad, exp_avg, exp_avg_sq, **ADAM, step=3, weight_decay=0.5, decoupled=decoupled
        )
        updated.append(param)
    assert relative_error(updated[0], updated[1]) > 1e-3


def test_cpu_sgd_ignores_a_buffer_without_momentum(rng):
    param, grad = random_array(rng, 17, np.float32), random_array(rng, 17, np.float32)
    buffer = random_array(rng, 17, np.float32)
    before = buffer.copy()
    sgd_step_cpu(
        param,
        grad,
        buffer,
        lr=0.1,
        momentum=0.0,
        dampening=0.0,
        weight_decay=0.0,
        nesterov=False,
        first_step=False,
    )
    np.testing.assert_array_equal(buffer, before)


# --- CUDA (simulator) ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(10007,), (3, 5, 7)])
@pytest.mark.parametrize("decoupled, weight_decay", [(False, 0.1), (True, 0.1)])
def test_cuda_adam_matches_reference(rng, decoupled, weight_decay, shape):
    run_adam(adam_step_cuda, rng, shape, np.float32, decoupled, weight_decay)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_adam_float64_and_one_element(rng, dtype):
    run_adam(adam_step_cuda, rng, (1,), dtype, False, 0.0)


@pytest.mark.parametrize("shape", [(10007,), (1,)])
@pytest.mark.parametrize("momentum, dampening, nesterov, weight_decay", SGD_VARIANTS[1:])
def test_cuda_sgd_matches_reference(rng, momentum, dampening, nesterov, weight_decay, shape):
    run_sgd(sgd_step_cuda, rng, shape, np.float32, momentum, dampening, nesterov, weight_decay)


# --- errors (one validation shared by both variants) ---------------------------------------------

ADAM_FUNCTIONS = [adam_step_cpu, adam_step_cuda]
SGD_FUNCTIONS = [sgd_step_cpu, sgd_step_cuda]
SGD_MOMENTUM = dict(
    lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, first_step=True
)


def adam_state(rng, shape=(4, 5), dtype=np.float32):
    return [random_array(rng, shape, dtype) for _ in range(4)]


@pytest.mark.parametrize("adam", ADAM_FUNCTIONS)
def test_adam_shape_mismatch_names_both_shapes(rng, adam):
    param, grad, exp_avg, _ = adam_state(rng)
    with pytest.raises(
        ValueError, match=r"exp_avg_sq shape \(20,\) does not match param shape \(4, 5\)"
    ):
        adam(
            param,
            grad,
            exp_avg,
            random_array(rng, 20, np.float32),
            **ADAM,
            step=1,
            weight_decay=0.0,
            decoupled=False,
        )


@pytest.mark.parametrize("sgd", SGD_FUNCTIONS)
def test_sgd_dtype_mismatch_names_both_dtypes(rng, sgd):
    param, grad, buffer, _ = adam_state(rng)
    with pytest.raises(TypeError, match="grad dtype float64 does not match param dtype float32"):
        sgd(param, grad.astype(np.float64), buffer, **SGD_MOMENTUM)


@pytest.mark.parametrize("adam", ADAM_FUNCTIONS)
def test_non_contiguous_state_raises_rather_than_updating_a_copy(rng, adam):
    param, grad, exp_avg, exp_avg_sq = adam_state(rng, (5, 4))
    exp_avg_fortran = np.asfortranarray(exp_avg)  # same shape and values, not C-contiguous
    with pytest.raises(ValueError, match="exp_avg must be C-contiguous"):
        adam(
            param,
            grad,
            exp_avg_fortran,
            exp_avg_sq,
            **ADAM,
            step=1,
            weight_decay=0.0,
            decoupled=False,
        )


def test_other_bad_arguments_raise(rng):
    param, grad, exp_avg, exp_avg_sq = adam_state(rng)
    adam_hyper = dict(ADAM, weight_decay=0.0, decoupled=False)
    with pytest.raises(ValueError, match="step must be the 1-based count of steps taken, got 0"):
        adam_step_cpu(param, grad, exp_avg, exp_avg_sq, **adam_hyper, step=0)
    with pytest.raises(ValueError, match=r"beta2 must be in \[0, 1\), got 1.0"):
        adam_step_cpu(param, grad, exp_avg, exp_avg_sq, **dict(adam_hyper, beta2=1.0), step=1)
    with pytest.raises(TypeError, match="expects param of dtype float32 or float64, got int64"):
        sgd_step_cpu(
            np.ones(3, np.int64), np.ones(3, np.int64), None, **dict(SGD_MOMENTUM, momentum=0.0)
        )
    with pytest.raises(ValueError, match="momentum=0.9 needs a momentum_buffer, got None"):
        sgd_step_cpu(param, grad, None, **SGD_MOMENTUM)
    with pytest.raises(ValueError, match="Nesterov momentum needs momentum > 0 and zero dampening"):
        sgd_step_cpu(param, grad, exp_avg, **dict(SGD_MOMENTUM, nesterov=True, dampening=0.1))
    exp_avg.flags.writeable = False
    with pytest.raises(ValueError, match="momentum_buffer is read-only"):
        sgd_step_cpu(param, grad, exp_avg, **SGD_MOMENTUM)


# --- flat variants: the step count and the skip flag where the buffers live ----------------------

ADAM_FLAT = {"cpu": adam_flat_step_cpu, "cuda": adam_flat_step_cuda}
SGD_FLAT = {"cpu": sgd_flat_step_cpu, "cuda": sgd_flat_step_cuda}
# Calls 2 and 4 are skipped (a bool flag, then a float32 one): the steps taken are 1, 2, 3.
SKIPPED_CALLS = {2: np.array([True]), 4: np.array([np.float32(1.0)])}
NO_SKIP = [np.array([False]), np.array([np.float32(0.0)])]


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
@pytest.mark.parametrize("decoupled, weight_decay", [(False, 0.1), (True, 0.1)])
def test_flat_adam_counts_steps_and_skips_on_the_device(rng, variant, decoupled, weight_decay):
    """Five calls, two skipped: each skip changes nothing but the counter (bit for bit), and the
    three others are the reference's steps 1, 2, 3 (the bias corrections of the steps taken)."""
    size = 1001
    param = random_array(rng, size, np.float32)
    exp_avg, exp_avg_sq = np.zeros(size, np.float32), np.zeros(size, np.float32)
    skipped_steps = np.zeros(1, np.int64)
    start = param.copy()
    ref = [param.astype(np.float64), np.zeros(size), np.zeros(size)]
    steps_taken = 0
    for calls in range(1, 6):
        grad = random_array(rng, size, np.float32, 0.01)
        skip = SKIPPED_CALLS.get(calls, NO_SKIP[calls % 2])
        before = [a.copy() for a in (param, exp_avg, exp_avg_sq)]
        hyper = dict(ADAM, weight_decay=weight_decay, decoupled=decoupled)
        ADAM_FLAT[variant](
            param, grad, exp_avg, exp_avg_sq, skip, skipped_steps, calls=calls, **hyper
        )
        if calls in SKIPPED_CALLS:
            for got, was in zip((param, exp_avg, exp_avg_sq), before, strict=True):
                np.testing.assert_array_equal(got, was)
        else:
            steps_taken += 1
            ref = list(reference_adam_step(ref[0], grad, ref[1], ref[2], step=steps_taken, **hyper))
        assert skipped_steps[0] == calls - steps_taken
    assert_steps_close(param - start, ref[0] - start, np.float32, "param displacement")
    assert_steps_close(exp_avg, ref[1], np.float32, "exp_avg")
    assert_steps_close(exp_avg_sq, ref[2], np.float32, "exp_avg_sq")


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
@pytest.mark.parametrize("momentum, dampening, nesterov, weight_decay", SGD_VARIANTS[1:])
def test_flat_sgd_first_step_is_the_first_one_not_skipped(
    rng, variant, momentum, dampening, nesterov, weight_decay
):
    """A skipped first call leaves the (NaN) momentum buffer unread and unwritten; the next call
    is the first step (the buffer starts as the gradient, no dampening)."""
    size = 257
    param = random_array(rng, size, np.float32)
    buffer = np.full(size, np.nan, np.float32) if momentum else None
    skipped_steps = np.zeros(1, np.int64)
    start = param.copy()
    hyper = dict(
        lr=0.1, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov
    )
    ref_param, ref_buffer, steps_taken = param.astype(np.float64), None, 0
    for calls in range(1, 5):
        grad = random_array(rng, size, np.float32, 0.1)
        skip = np.array([calls in (1, 3)])
        before = param.copy()
        SGD_FLAT[variant](param, grad, buffer, skip, skipped_steps, calls=calls, **hyper)
        if skip[0]:
            np.testing.assert_array_equal(param, before)
            if momentum and calls == 1:
                assert np.isnan(buffer).all()
            continue
        steps_taken += 1
        ref_param, ref_buffer = reference_sgd_step(
            ref_param, grad, ref_buffer, **hyper, first_step=steps_taken == 1
        )
    assert skipped_steps[0] == 2
    assert_steps_close(param - start, ref_param - start, np.float32, "param displacement")
    if momentum:
        assert_steps_close(buffer, ref_buffer, np.float32, "momentum_buffer")


@pytest.mark.parametrize("adam", [adam_flat_step_cpu, adam_flat_step_cuda])
def test_flat_step_counters_are_checked(rng, adam):
    param, grad, exp_avg, exp_avg_sq = adam_state(rng)
    hyper = dict(ADAM, weight_decay=0.0, decoupled=False)
    skip, counter = np.zeros(1, bool), np.zeros(1, np.int64)
    with pytest.raises(ValueError, match=r"skip must hold one element, got shape \(2,\)"):
        adam(param, grad, exp_avg, exp_avg_sq, np.zeros(2, bool), counter, calls=1, **hyper)
    with pytest.raises(TypeError, match="skipped_steps must be an int64 array of shape"):
        adam(param, grad, exp_avg, exp_avg_sq, skip, np.zeros(1, np.int32), calls=1, **hyper)
    with pytest.raises(TypeError, match="skip must be a bool or numeric flag"):
        adam(param, grad, exp_avg, exp_avg_sq, np.array(["x"]), counter, calls=1, **hyper)
    with pytest.raises(ValueError, match="calls must count this call too"):
        adam(param, grad, exp_avg, exp_avg_sq, skip, counter, calls=0, **hyper)
