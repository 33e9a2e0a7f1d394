"""distillation_loss, soft_target_loss (fastnet.functional.distillation) and nn.DistillationLoss:
loss and gradient against PyTorch's formulation, α·T²·kl_div(log_softmax(z/T), softmax(t/T),
"batchmean") + (1 − α)·cross_entropy(z, y), for odd shapes and several T and α; the teacher gets
no gradient; float64 gradient checks; the cuda device (simulator or GPU) against the CPU; errors."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet.gradcheck import gradcheck
from numerics import relative_error

torch = pytest.importorskip("torch")

FLOAT32 = 1e-5  # against PyTorch in float64 from the same float32 inputs, relative


def torch_distillation(z, t, y, temperature, alpha):
    soft = torch.nn.functional.kl_div(
        torch.log_softmax(z / temperature, 1),
        torch.softmax(t / temperature, 1),
        reduction="batchmean",
    )
    return alpha * temperature**2 * soft + (1 - alpha) * torch.nn.functional.cross_entropy(z, y)


def problem(rng, batch, classes, dtype=np.float32):
    z = (3 * rng.standard_normal((batch, classes))).astype(dtype)
    t = (3 * rng.standard_normal((batch, classes))).astype(dtype)
    return z, t, rng.integers(0, classes, batch)


def check_against_torch(z, t, y, temperature, alpha, device="cpu"):
    student = fn.tensor(z, device=device, requires_grad=True)
    teacher = fn.tensor(t, device=device, requires_grad=True)
    got = F.distillation_loss(student, teacher, fn.tensor(y, device=device), temperature, alpha)
    assert got.shape == () and got.dtype == z.dtype
    theirs = torch.tensor(z.astype(np.float64), requires_grad=True)
    expected = torch_distillation(
        theirs, torch.tensor(t.astype(np.float64)), torch.tensor(y), temperature, alpha
    )
    assert relative_error(got.numpy(), expected.item()) <= FLOAT32, "loss"
    got.backward()
    expected.backward()
    assert relative_error(student.grad.numpy(), theirs.grad.numpy()) <= FLOAT32, "gradient"
    assert teacher.grad is None, "the teacher's logits got a gradient"


@pytest.mark.parametrize("batch,classes", [(1, 2), (7, 10), (33, 7), (5, 1000), (64, 10)])
@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (4.0, 0.9), (2.5, 0.0), (8.0, 1.0)])
def test_matches_pytorch(batch, classes, temperature, alpha, rng):
    check_against_torch(*problem(rng, batch, classes), temperature, alpha)


def test_soft_target_loss_is_batchmean_kl_div(rng):
    z, t, _ = problem(rng, 9, 11)
    student = fn.tensor(z, requires_grad=True)
    got = F.soft_target_loss(student, fn.tensor(t), 3.0)
    theirs = torch.tensor(z.astype(np.float64), requires_grad=True)
    expected = torch.nn.functional.kl_div(
        torch.log_softmax(theirs / 3.0, 1),
        torch.softmax(torch.tensor(t.astype(np.float64)) / 3.0, 1),
        reduction="batchmean",
    )
    assert relative_error(got.numpy(), expected.item()) <= FLOAT32
    got.backward()
    expected.backward()
    assert relative_error(student.grad.numpy(), theirs.grad.numpy()) <= FLOAT32
    # and it agrees with the elementwise F.kl_div composed of tensor ops
    composed = F.kl_div(
        F.log_softmax(fn.tensor(z) / 3.0, 1),
        F.softmax(fn.tensor(t) / 3.0, 1),
        reduction="batchmean",
    )
    assert relative_error(got.numpy(), composed.numpy()) <= FLOAT32


def test_teacher_as_a_plain_array_and_in_float64(rng):
    z, t, y = problem(rng, 6, 10)
    a = F.distillation_loss(fn.tensor(z), t.astype(np.float64), fn.tensor(y), 4.0, 0.7)
    b = F.distillation_loss(fn.tensor(z), fn.tensor(t), fn.tensor(y), 4.0, 0.7)
    assert relative_error(a.numpy(), b.numpy()) <= 1e-6


def test_gradcheck_float64(rng):
    z, t, y = problem(rng, 4, 5, np.float64)
    student = fn.tensor(z, dtype=np.float64, requires_grad=True)
    labels = fn.tensor(y)
    for temperature, alpha in [(1.0, 0.5), (3.0, 0.9), (0.7, 1.0)]:
        assert gradcheck(
            lambda s, temperature=temperature, alpha=alpha: F.distillation_loss(
                s, t, labels, temperature, alpha
            ),
            [student],
        )


def test_module_matches_functional(rng):
    z, t, y = problem(rng, 8, 10)
    loss = fn.nn.DistillationLoss(temperature=3.0, alpha=0.8)
    assert "temperature=3.0" in repr(loss) and "alpha=0.8" in repr(loss)
    got = loss(fn.tensor(z), fn.tensor(t), fn.tensor(y))
    want = F.distillation_loss(fn.tensor(z), fn.tensor(t), fn.tensor(y), 3.0, 0.8)
    assert got.item() == want.item()


def test_alpha_one_needs_no_target(rng):
    z, t, _ = problem(rng, 3, 4)
    got = F.distillation_loss(fn.tensor(z), fn.tensor(t), None, 2.0, 1.0)
    want = F.soft_target_loss(fn.tensor(z), fn.tensor(t), 2.0) * 4.0
    assert relative_error(got.numpy(), want.numpy()) <= 1e-6


def test_cuda_device_matches_cpu(rng):
    z, t, y = problem(rng, 3, 10)
    cpu = F.distillation_loss(fn.tensor(z), fn.tensor(t), fn.tensor(y), 4.0, 0.9)
    student = fn.tensor(z, device="cuda", requires_grad=True)
    gpu = F.distillation_loss(
        student, fn.tensor(t, device="cuda"), fn.tensor(y, device="cuda"), 4.0, 0.9
    )
    assert relative_error(gpu.numpy(), cpu.numpy()) <= 1e-6
    gpu.backward()
    check_against_torch(z, t, y, 4.0, 0.9)  # the CPU's gradient is PyTorch's (above)
    reference = fn.tensor(z, requires_grad=True)
    F.distillation_loss(reference, fn.tensor(t), fn.tensor(y), 4.0, 0.9).backward()
    assert relative_error(student.grad.numpy(), reference.grad.numpy()) <= 1e-6


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0"),
        ({"temperature": -1.0}, ValueError, "temperature"),
        ({"temperature": float("nan")}, ValueError, "temperature"),
        ({"alpha": 1.5}, ValueError, r"alpha must be in \[0, 1\]"),
        ({"alpha": -0.1}, ValueError, "alpha"),
        ({"temperature": "hot"}, TypeError, "temperature must be a number"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match, rng):
    z, t, y = problem(rng, 3, 4)
    with pytest.raises(error, match=match):
        F.distillation_loss(fn.tensor(z), fn.tensor(t), fn.tensor(y), **kwargs)


def test_shape_mismatch_and_missing_target_raise(rng):
    z, t, y = problem(rng, 3, 4)
    with pytest.raises(ValueError, match=r"teacher_logits shape \(3, 3\) does not match"):
        F.distillation_loss(fn.tensor(z), fn.tensor(t[:, :3]), fn.tensor(y))
    with pytest.raises(ValueError, match="must be 2-D"):
        F.distillation_loss(fn.tensor(z[0]), fn.tensor(t[0]), fn.tensor(y[:1]))
    with pytest.raises(ValueError, match="target"):
        F.distillation_loss(fn.tensor(z), fn.tensor(t), None, 4.0, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        fn.nn.DistillationLoss(alpha=2.0)
    with pytest.raises(ValueError, match="temperature"):
        fn.nn.DistillationLoss(temperature=0)
