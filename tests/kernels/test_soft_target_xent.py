"""The fused soft-target (distillation) kernel against its float64 reference.

``soft_target_xent(z, t, T)`` returns the row losses KL(softmax(t/T) ‖ softmax(z/T)) (B,) and the
gradient of their mean w.r.t. the student's logits z, (q - p)/(T·B). Both variants compute in
float64 from the float32 logits and round once on output, so they sit within a float32 ulp or two
(~1e-7) of the reference relative to the largest value: ``FLOAT32_TOLERANCE`` leaves room.

CUDA tests run in Numba's simulator (see conftest) with few rows: blocks of 32..256 threads per
row and at most 2 blocks, so B=3..5 exercises the loop of blocks over rows, and C=1000 (256
threads) the loop of threads over columns. Outputs are poisoned with NaN (conftest).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels.softmax_xent import (
    FAMILY,
    reference_soft_target_xent,
    soft_target_xent_cpu,
    soft_target_xent_cuda,
)
from numerics import assert_close

FLOAT32_TOLERANCE = 2e-6
VARIANTS = [soft_target_xent_cpu, soft_target_xent_cuda]


def problem(rng, batch, classes, dtype=np.float32, scale=3.0):
    student = (scale * rng.standard_normal((batch, classes))).astype(dtype)
    teacher = (scale * rng.standard_normal((batch, classes))).astype(dtype)
    return student, teacher


def assert_matches_reference(kernel, student, teacher, temperature):
    row_losses, dlogits = kernel(student, teacher, temperature)
    ref_losses, ref_dlogits = reference_soft_target_xent(student, teacher, temperature)
    tolerance = FLOAT32_TOLERANCE if student.dtype == np.float32 else None
    assert_close(row_losses, ref_losses, student.dtype, tolerance, "row losses")
    assert_close(dlogits, ref_dlogits, student.dtype, tolerance, "dlogits")


def test_reference_on_a_hand_computed_row():
    # teacher softmax (1/2, 1/2), student softmax (3/4, 1/4) at T = 1
    student = np.array([[np.log(3.0), 0.0]])
    teacher = np.array([[0.0, 0.0]])
    losses, dlogits = reference_soft_target_xent(student, teacher, 1.0)
    expected = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    np.testing.assert_allclose(losses, [expected])
    np.testing.assert_allclose(dlogits, [[0.25, -0.25]])
    # at T = 2 the gradient carries 1/T
    _, halved = reference_soft_target_xent(2 * student, 2 * teacher, 2.0)
    np.testing.assert_allclose(halved, [[0.125, -0.125]])


def test_reference_matches_torch_kl_div():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    student, teacher = problem(rng, 6, 10, np.float64)
    temperature = 3.0
    z = torch.from_numpy(student).requires_grad_()
    loss = torch.nn.functional.kl_div(
        torch.log_softmax(z / temperature, 1),
        torch.softmax(torch.from_numpy(teacher) / temperature, 1),
        reduction="batchmean",
    )
    loss.backward()
    losses, dlogits = reference_soft_target_xent(student, teacher, temperature)
    np.testing.assert_allclose(losses.mean(), loss.item(), rtol=1e-12)
    np.testing.assert_allclose(dlogits, z.grad.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("kernel", VARIANTS)
@pytest.mark.parametrize("batch,classes", [(1, 2), (3, 7), (5, 10), (4, 1000), (2, 33)])
@pytest.mark.parametrize("temperature", [1.0, 4.0, 0.5])
def test_matches_reference(kernel, batch, classes, temperature):
    rng = np.random.default_rng(batch * 1000 + classes)
    student, teacher = problem(rng, batch, classes)
    assert_matches_reference(kernel, student, teacher, temperature)


@pytest.mark.parametrize("kernel", VARIANTS)
def test_one_class_has_zero_loss_and_gradient(kernel):
    student, teacher = problem(np.random.default_rng(2), 3, 1)
    row_losses, dlogits = kernel(student, teacher, 2.0)
    assert np.array_equal(row_losses, np.zeros(3, np.float32))
    assert np.array_equal(dlogits, np.zeros((3, 1), np.float32))


@pytest.mark.parametrize("kernel", VARIANTS)
def test_float64(kernel):
    student, teacher = problem(np.random.default_rng(3), 3, 10, np.float64)
    assert_matches_reference(kernel, student, teacher, 2.5)


def test_cpu_many_rows_and_large_logits(force_driver):
    rng = np.random.default_rng(4)
    for driver in ("serial", "parallel"):
        force_driver(driver)
        student, teacher = problem(rng, 300, 13, scale=1e3)
        assert_matches_reference(soft_target_xent_cpu, student, teacher, 2.0)


@pytest.mark.parametrize("kernel", VARIANTS)
def test_identical_logits_give_zero_loss_and_gradient(kernel):
    student, _ = problem(np.random.default_rng(5), 3, 10)
    row_losses, dlogits = kernel(student, student.copy(), 4.0)
    assert np.abs(row_losses).max() < 1e-6
    assert np.abs(dlogits).max() < 1e-8


@pytest.mark.parametrize("kernel", VARIANTS)
def test_teacher_in_another_float_dtype_is_taken_in_the_students(kernel):
    student, teacher = problem(np.random.default_rng(6), 2, 10)
    row_losses, dlogits = kernel(student, teacher.astype(np.float64), 2.0)
    assert row_losses.dtype == dlogits.dtype == np.float32
    ref_losses, _ = reference_soft_target_xent(student, teacher, 2.0)
    assert_close(row_losses, ref_losses, np.float32, FLOAT32_TOLERANCE)


@pytest.mark.parametrize("kernel", VARIANTS)
def test_bad_arguments_raise(kernel):
    student, teacher = problem(np.random.default_rng(8), 2, 5)
    with pytest.raises(ValueError, match="does not match"):
        kernel(student, teacher[:, :4], 1.0)
    with pytest.raises(ValueError, match="temperature"):
        kernel(student, teacher, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        kernel(student, teacher, float("inf"))
    with pytest.raises(ValueError, match="2-D"):
        kernel(student[0], teacher[0], 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        kernel(student.astype(np.int32), teacher, 1.0)


def test_family_declares_the_op():
    assert "soft_target_xent" in FAMILY.ops
    assert FAMILY.references["soft_target_xent"] is reference_soft_target_xent
    assert "soft_target_xent" in [spec.name for spec in FAMILY.cuda_kernels()]
    assert FAMILY.entry_point("soft_target_xent", "cpu") is soft_target_xent_cpu
