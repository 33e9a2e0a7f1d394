"""Depthwise convolution, forward and both adjoints, against the float64 references, on the CPU
(serial and parallel drivers) and in CUDA (the simulator without a GPU).

Every output sums at most M·KH·KW (y, dx) or N·OH·OW (dw, a few hundred here) float32 products in
another order than the reference: 1e-5 of the largest value holds in float32, 1e-12 in float64.
Every buffer the module allocates starts as NaN (``poisoned_outputs``), so an element a kernel
never writes fails the finiteness check.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels.depthwise import (
    depthwise_conv2d_backward_input_cpu,
    depthwise_conv2d_backward_input_cuda,
    depthwise_conv2d_backward_weight_cpu,
    depthwise_conv2d_backward_weight_cuda,
    depthwise_conv2d_forward_cpu,
    depthwise_conv2d_forward_cuda,
    reference_depthwise_conv2d_backward_input,
    reference_depthwise_conv2d_backward_weight,
    reference_depthwise_conv2d_forward,
)
from numerics import assert_close

OPS = {
    "cpu": (
        depthwise_conv2d_forward_cpu,
        depthwise_conv2d_backward_input_cpu,
        depthwise_conv2d_backward_weight_cpu,
    ),
    "cuda": (
        depthwise_conv2d_forward_cuda,
        depthwise_conv2d_backward_input_cuda,
        depthwise_conv2d_backward_weight_cuda,
    ),
}

# (x shape, multiplier M, kernel_hw, stride, padding, dilation)
CASES = [
    ((2, 3, 7, 6), 1, 3, 1, 1, 1),
    ((2, 3, 9, 11), 2, 3, 2, 1, 1),
    ((1, 4, 10, 7), 1, (3, 2), (2, 1), (1, 0), (2, 3)),
    ((3, 2, 8, 9), 2, 5, 1, 2, 1),
    ((2, 5, 6, 5), 1, 1, 1, 0, 1),
    ((1, 2, 9, 9), 3, 3, 3, 2, 2),  # stride 3: some pixels meet no tap
    ((1, 3, 4, 3), 2, 3, 1, (2, 1), 1),  # padding larger than the taps reach: rows of no input
]
# Tiny ones for the simulator (1-2 blocks a launch).
CUDA_CASES = [CASES[1], CASES[2], ((1, 2, 5, 4), 2, 3, 1, 1, 1)]


def case_id(case):
    shape, multiplier, kernel, stride, padding, dilation = case
    return f"x{'x'.join(map(str, shape))}-m{multiplier}-k{kernel}-s{stride}-p{padding}-d{dilation}"


def operands(rng, case, dtype):
    shape, multiplier, kernel, stride, padding, dilation = case
    kernel_hw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rng.standard_normal(shape)
    w = rng.standard_normal((shape[1] * multiplier, 1, *kernel_hw))
    window = (stride, padding, dilation)
    dy = rng.standard_normal(reference_depthwise_conv2d_forward(x, w, *window).shape)
    return x.astype(dtype), w.astype(dtype), dy.astype(dtype), kernel_hw, window


def check_against_references(variant, rng, case, dtype):
    forward, backward_input, backward_weight = OPS[variant]
    x, w, dy, kernel_hw, window = operands(rng, case, dtype)
    assert_close(forward(x, w, *window), reference_depthwise_conv2d_forward(x, w, *window), dtype)
    assert_close(
        backward_input(dy, w, x.shape, *window),
        reference_depthwise_conv2d_backward_input(dy, w, x.shape, *window),
        dtype,
        what="dx",
    )
    assert_close(
        backward_weight(dy, x, kernel_hw, *window),
        reference_depthwise_conv2d_backward_weight(dy, x, kernel_hw, *window),
        dtype,
        what="dw",
    )


# --- references ---------------------------------------------------------------------------------


def test_reference_on_a_hand_example():
    """One channel, M = 2: a 2x2 box filter and a tap picking the pixel below-right."""
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    w = np.array([[[[1.0, 1.0], [1.0, 1.0]]], [[[0.0, 0.0], [0.0, 1.0]]]])
    y = reference_depthwise_conv2d_forward(x, w, 1, 0)
    np.testing.assert_array_equal(y[0, 0], [[12, 16], [24, 28]])
    np.testing.assert_array_equal(y[0, 1], [[5, 6], [8, 9]])
    dx = reference_depthwise_conv2d_backward_input(np.ones((1, 2, 2, 2)), w, x.shape, 1, 0)
    np.testing.assert_array_equal(dx[0, 0], [[1, 2, 1], [2, 5, 3], [1, 3, 2]])
    dw = reference_depthwise_conv2d_backward_weight(np.ones((1, 2, 2, 2)), x, 2, 1, 0)
    np.testing.assert_array_equal(dw[0, 0], [[12, 16], [24, 28]])


@pytest.mark.parametrize("case", CASES[:4], ids=case_id)
def test_references_match_torch(rng, case):
    torch = pytest.importorskip("torch")
    x, w, dy, _, (stride, padding, dilation) = operands(rng, case, np.float64)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = torch.nn.functional.conv2d(xt, wt, None, stride, padding, dilation, x.shape[1])
    y.backward(torch.tensor(dy))
    window = (stride, padding, dilation)
    assert_close(reference_depthwise_conv2d_forward(x, w, *window), y.detach(), np.float64)
    assert_close(
        reference_depthwise_conv2d_backward_input(dy, w, x.shape, *window), xt.grad, np.float64
    )
    assert_close(
        reference_depthwise_conv2d_backward_weight(dy, x, w.shape[2:], *window),
        wt.grad,
        np.float64,
    )


# --- CPU ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["serial", "parallel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cpu_matches_references(force_driver, rng, case, dtype, driver):
    force_driver(driver)
    check_against_references("cpu", rng, case, dtype)


@pytest.mark.parametrize("case", CASES[1:4], ids=case_id)
def test_cpu_drivers_agree_bitwise(force_driver, rng, case):
    """Each plane (y, dx) and each channel (dw) is one task summing in a fixed order."""
    forward, backward_input, backward_weight = OPS["cpu"]
    x, w, dy, kernel_hw, window = operands(rng, case, np.float32)
    results = {}
    for driver in ("serial", "parallel"):
        force_driver(driver)
        results[driver] = (
            forward(x, w, *window),
            backward_input(dy, w, x.shape, *window),
            backward_weight(dy, x, kernel_hw, *window),
        )
    for serial, parallel in zip(results["serial"], results["parallel"], strict=True):
        np.testing.assert_array_equal(serial, parallel)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_adjoint_identities_in_float64(rng, variant):
    """<y(x, w), g> == <x, dx(g)> == <w, dw(g)>: y is linear in x and in w."""
    forward, backward_input, backward_weight = OPS[variant]
    x, w, g, kernel_hw, window = operands(rng, CUDA_CASES[2], np.float64)
    inner = np.vdot(forward(x, w, *window), g)
    scale = np.abs(forward(np.abs(x), np.abs(w), *window)).ravel() @ np.abs(g).ravel()
    assert abs(inner - np.vdot(x, backward_input(g, w, x.shape, *window))) <= 1e-13 * scale
    assert abs(inner - np.vdot(w, backward_weight(g, x, kernel_hw, *window))) <= 1e-13 * scale


def test_cpu_accepts_non_contiguous_inputs(rng):
    x, w, dy, kernel_hw, window = operands(rng, CASES[0], np.float64)
    x_strided = np.asfortranarray(x)
    w_strided = np.ascontiguousarray(np.swapaxes(w, 2, 3)).swapaxes(2, 3)
    assert not x_strided.flags.c_contiguous and not w_strided.flags.c_contiguous
    assert_close(
        depthwise_conv2d_forward_cpu(x_strided, w_strided, *window),
        reference_depthwise_conv2d_forward(x, w, *window),
        np.float64,
    )


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_empty_batch(variant):
    forward, backward_input, backward_weight = OPS[variant]
    x, w = np.ones((0, 2, 5, 5)), np.ones((4, 1, 3, 3))
    dy = forward(x, w, 1, 1)
    assert dy.shape == (0, 4, 5, 5)
    assert backward_input(dy, w, x.shape, 1, 1).shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(backward_weight(dy, x, 3, 1, 1), np.zeros((4, 1, 3, 3)))


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda ops: ops[0](np.ones((1, 2, 5, 5)), np.ones((3, 1, 3, 3)), 1, 0),
            ValueError,
            "C = 2",
        ),
        (lambda ops: ops[0](np.ones((1, 2, 5, 5)), np.ones((2, 2, 3, 3)), 1, 0), ValueError, "C*M"),
        (
            lambda ops: ops[0](np.ones((1, 2, 5, 5)), np.ones((2, 1, 3, 3), np.float32), 1, 0),
            TypeError,
            "w of dtype float64",
        ),
        (lambda ops: ops[0](np.ones((1, 2, 5)), np.ones((2, 1, 3, 3)), 1, 0), ValueError, "4 dim"),
        (
            lambda ops: ops[0](np.ones((1, 2, 5, 5), np.int64), np.ones((2, 1, 3, 3)), 1, 0),
            TypeError,
            "float32 or float64",
        ),
        (lambda ops: ops[0](np.ones((1, 2, 2, 2)), np.ones((2, 1, 3, 3)), 1, 0), ValueError, "fit"),
        (
            lambda ops: ops[1](np.ones((1, 2, 4, 4)), np.ones((2, 1, 3, 3)), (1, 2, 5, 5), 1, 0),
            ValueError,
            r"dy of shape \(1, 2, 3, 3\)",
        ),
        (
            lambda ops: ops[2](np.ones((1, 3, 3, 3)), np.ones((1, 2, 5, 5)), 3, 1, 0),
            ValueError,
            "C = 2",
        ),
        (
            lambda ops: ops[2](np.ones((1, 2, 3, 3), np.float32), np.ones((1, 2, 5, 5)), 3, 1, 0),
            TypeError,
            "dtype float64",
        ),
    ],
)
def test_rejects_bad_arguments(variant, call, error, message):
    with pytest.raises(error, match=message):
        call(OPS[variant])


# --- CUDA (simulator) ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CUDA_CASES, ids=case_id)
def test_cuda_matches_references(rng, case):
    check_against_references("cuda", rng, case, np.float32)
