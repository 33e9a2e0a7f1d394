"""The host never waits on the GPU inside a training step (issue 16).

* Every device-to-host copy in fastnet's layers goes through ``Device.to_host`` (counted on the
  cuda device): a source check finds no other way out. The kernels (``fastnet.kernels``) know
  nothing of devices and are not checked here: the CUDA cross-entropy launcher is handed the
  labels' range by its caller (proven on the host, or read through the counted transfer).
* Integer tensors made from host data for the device record their value range on the host, and
  the class-index checks (losses, gather, scatter, index_select) trust it instead of reading the
  device; an op's output or an in-place write has no range, and is checked on the device.
* A Python scalar operand is uploaded once, not at every op.
* The proof: the MNIST CNN trains on the cuda device with no device-to-host transfer between
  progress refreshes and exactly one per refresh; a NaN at step k raises naming step k and leaves
  the weights of step k - 1; on the CPU the numbers equal those of a per-step host read.

In the simulator the cuda device runs here with the CPU's kernels in place of the simulated CUDA
ones (:func:`cuda`): a simulated launch costs a second or more, the kernels never copy anything
to the host (they cannot: they know nothing of devices), and what is counted is the fastnet code
around them, which is the same either way. On a GPU host the real kernels run.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet import backend, data, models, optim, train
from fastnet.kernels._contract import families
from fastnet.kernels._cuda import simulating
from fastnet.train import NonFiniteLossError, evaluate, train_epoch

needs_cuda = pytest.mark.skipif(
    not backend.cuda_is_available(), reason="needs the cuda device (GPU or simulator)"
)
FASTNET = Path(fn.__file__).resolve().parent

# Modules that may still convert arrays of unknown origin with backend.to_numpy (it routes a
# CuPy array through the cuda device's counted to_host): values handed in by users (state dicts,
# checkpoints, the scales given to F.fake_quantize_per_channel_affine) and the optimizer state
# and benchmark modules of other owners.
TO_NUMPY_USERS = {
    "functional/quantization.py",
    "backend/__init__.py",
    "nn/module.py",
    "checkpoint.py",
    "optim/optimizer.py",
    "bench/harness.py",
}


def _is_xp_call(node: ast.AST) -> bool:
    """``xp.f(...)``, ``device.xp.f(...)``, ...: an array op of the device's array module."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, (ast.Name, ast.Attribute))
        and (getattr(node.func.value, "id", None) or node.func.value.attr) == "xp"
    )


def _uncounted_copies(tree: ast.AST) -> list[int]:
    """Lines of ways to copy a device array to the host other than Device.to_host: CuPy's
    ``get()`` and ``asnumpy``, and ``tolist()``/``item()``/``float()``/``int()``/``bool()`` of
    an ``xp`` expression (each an uncounted GPU read)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.Attribute)) and "asnumpy" in ast.unparse(node):
            lines.append(node.lineno)
        if not isinstance(node, ast.Call):
            continue
        method = node.func.attr if isinstance(node.func, ast.Attribute) else None
        if method == "get" and not node.args and not node.keywords:
            lines.append(node.lineno)
        elif method in ("tolist", "item") and _is_xp_call(node.func.value):
            lines.append(node.lineno)
        elif (
            isinstance(node.func, ast.Name)
            and node.func.id in ("float", "int", "bool")
            and node.args
            and _is_xp_call(node.args[0])
        ):
            lines.append(node.lineno)
    return lines


def test_no_device_copy_outside_the_transfer_function():
    offending, to_numpy_users = [], set()
    for path in sorted(FASTNET.rglob("*.py")):
        name = path.relative_to(FASTNET).as_posix()
        if name.startswith("kernels/"):
            continue
        source = path.read_text()
        lines = source.splitlines()
        if "to_numpy(" in source.replace("def to_numpy(", ""):
            to_numpy_users.add(name)
        for number in _uncounted_copies(ast.parse(source)):
            # the one CuPy get() is Device.to_host's; the data loader's get() is a queue's; the
            # GPU check's NCCL stage runs no training step and reads each result on purpose
            exempt = name in ("backend/__init__.py", "bench/gpu_nccl.py")
            if not exempt and "ready.get()" not in lines[number - 1]:
                offending.append(f"{name}:{number}: {lines[number - 1].strip()}")
    assert not offending, "device-to-host copies that bypass Device.to_host:\n" + "\n".join(
        offending
    )
    assert to_numpy_users <= TO_NUMPY_USERS, sorted(to_numpy_users - TO_NUMPY_USERS)


@pytest.fixture
def cuda(monkeypatch):
    """The cuda device with its transfer counts reset; in the simulator, running the CPU's
    kernels (see the module docstring)."""
    device = backend.get_device("cuda")
    if simulating():
        cpu = backend.get_device("cpu")
        for family in families():
            for op in family.ops:
                monkeypatch.setattr(device, op, getattr(cpu, op))
    device.transfers.reset()
    return device


def counts(device) -> tuple[int, int]:
    return device.transfers.to_host, device.transfers.to_device


# --------------------------------------------------------------------------- value ranges
@needs_cuda
def test_host_integers_record_their_range_when_uploaded_and_nowhere_else(cuda, rng):
    values = rng.integers(-3, 40, 9)
    expected = (int(values.min()), int(values.max()))
    assert fn.tensor(values, device="cuda")._value_range == expected
    assert fn.tensor(values).to("cuda")._value_range == expected
    assert fn.tensor(values.tolist(), device="cuda")._value_range == expected
    assert fn.tensor(values)._value_range is None  # the CPU never needs one
    assert fn.tensor(values.astype(np.float32), device="cuda")._value_range is None
    assert fn.tensor(values[:0], device="cuda")._value_range is None
    labels = fn.tensor(values, device="cuda")
    for derived in (labels + 0, labels.clone(), labels[1:], labels.to(dtype=np.int32)):
        assert derived._value_range is None, derived
    for write in (
        lambda t: t.__iadd__(1),
        lambda t: t.__setitem__(0, 99),
        lambda t: t.fill_(2),
        lambda t: t.copy_(fn.tensor(values, device="cuda")),
        lambda t: t.clamp_(0, 5),
    ):
        changed = fn.tensor(values, device="cuda")
        write(changed)
        assert changed._value_range is None


@needs_cuda
def test_class_index_checks_trust_a_recorded_range_and_read_the_device_otherwise(cuda, rng):
    classes = 7
    log_probs = F.log_softmax(fn.tensor(rng.standard_normal((5, classes)), device="cuda"), 1)
    labels = fn.tensor(rng.integers(0, classes, 5), device="cuda")
    source = fn.tensor(rng.standard_normal((classes, 3)), device="cuda")
    index = fn.tensor(rng.integers(0, classes, (5, 3)), device="cuda")
    cuda.transfers.reset()
    F.nll_loss(log_probs, labels)
    source.index_select(0, labels)
    source.gather(0, index)
    source.scatter(0, index, 1.0)
    assert cuda.transfers.to_host == 0
    computed = labels + 0  # an op's output has no recorded range: one read each
    F.nll_loss(log_probs, computed)
    source.index_select(0, computed)
    assert counts(cuda)[0] == 2
    expected = F.nll_loss(log_probs.cpu(), labels.cpu())
    np.testing.assert_allclose(F.nll_loss(log_probs, labels).item(), expected.item(), rtol=1e-6)


@needs_cuda
def test_cross_entropy_hands_the_kernel_a_proven_label_range(cuda, rng, monkeypatch):
    """The cuda kernel would read the labels' range back itself: cross_entropy gives it the range
    recorded on the host (no transfer), or one read through the counted transfer."""
    given = []
    kernel = cuda.softmax_xent

    def spy(*args):
        given.append(args[-1])
        return kernel(*args)

    monkeypatch.setattr(cuda, "softmax_xent", spy)
    logits = fn.tensor(rng.standard_normal((5, 7)), device="cuda")
    values = rng.integers(1, 6, 5)
    labels = fn.tensor(values, device="cuda")
    cuda.transfers.reset()
    F.cross_entropy(logits, labels)
    assert given == [(int(values.min()), int(values.max()))] and counts(cuda)[0] == 0
    F.cross_entropy(logits, labels + 0)
    assert given[-1] == (int(values.min()), int(values.max())) and counts(cuda)[0] == 1
    with pytest.raises(IndexError, match="target 7 is out of bounds"):
        F.cross_entropy(logits, fn.tensor(np.r_[values[:4], 7], device="cuda"))


@needs_cuda
def test_a_recorded_range_outside_the_classes_is_checked_on_the_device(cuda, rng):
    log_probs = F.log_softmax(fn.tensor(rng.standard_normal((3, 4)), device="cuda"), 1)
    with pytest.raises(IndexError, match="target 9 is out of bounds"):
        F.nll_loss(log_probs, fn.tensor([0, 9, 2], device="cuda"))
    cuda.transfers.reset()  # ignore_index lies outside [0, C): the rest is read and found good
    loss = F.nll_loss(log_probs, fn.tensor([-100, 3, 2], device="cuda"))
    assert cuda.transfers.to_host == 1
    assert math.isfinite(loss.item())
    with pytest.raises(RuntimeError, match="index 5 is out of bounds"):
        fn.tensor(rng.standard_normal((4, 2)), device="cuda").gather(
            0, fn.tensor([[1, 5]], device="cuda")
        )


# --------------------------------------------------------------------------- scalars
@needs_cuda
def test_python_scalar_operands_are_uploaded_once(cuda, rng, monkeypatch):
    x = fn.tensor(rng.standard_normal(6).astype(np.float32), device="cuda")
    monkeypatch.setattr(cuda, "_constants", {})  # none cached by earlier tests

    def ops():
        return [x * 2.0, 2.0 - x, x / 3, x**2, x + 0.5, x > 0.25, x.masked_fill(x > 0, 1.5)]

    cuda.transfers.reset()
    first = ops()
    assert cuda.transfers.to_device == 7  # 2.0, 3, 2, 0.5, 0.25, 0 and 1.5 as float32
    again = ops()
    assert cuda.transfers.to_device == 7  # the same scalars: no new upload
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    host = x.numpy()
    np.testing.assert_allclose(again[1].numpy(), 2.0 - host, rtol=1e-6)
    np.testing.assert_allclose(again[2].numpy(), host / 3, rtol=1e-6)


# --------------------------------------------------------------------------- the training loop
STEPS, BATCH, SIDE, CLASSES = 5, 3, 4, 10


def mnist_cnn_on(device: str, seed: int = 3):
    fn.manual_seed(seed)
    model = models.mnist_cnn(image_size=SIDE, classes=CLASSES).to(device)
    return model, optim.Adam(model.parameters(), lr=1e-2)


def loader_of(rng, steps: int = STEPS, nan_at: int | None = None):
    images = rng.standard_normal((steps * BATCH, 1, SIDE, SIDE)).astype(np.float32)
    if nan_at is not None:
        images[(nan_at - 1) * BATCH] = np.nan
    labels = rng.integers(0, CLASSES, steps * BATCH)
    return data.DataLoader(data.ArrayDataset(images, labels), batch_size=BATCH)


class Counting:
    """A loader that notes the device's transfer counts as each batch is drawn."""

    def __init__(self, loader, device):
        self.loader, self.device, self.seen = loader, device, []

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.seen.append(counts(self.device))
            yield batch


@needs_cuda
def test_a_training_step_reads_nothing_from_the_device_between_refreshes(cuda, rng):
    model, optimizer = mnist_cnn_on("cuda")
    train_epoch(model, loader_of(rng, 1), optimizer, "cuda", progress=False)  # makes its state
    cuda.transfers.reset()
    loader, steps = Counting(loader_of(rng), cuda), []
    result = train_epoch(
        model,
        loader,
        optimizer,
        "cuda",
        progress=False,
        refresh_seconds=math.inf,
        on_step=lambda *step: steps.append(step),
    )
    # no read during the epoch; two uploads a step (the images and the labels); one read at the end
    assert loader.seen == [(0, 2 * step) for step in range(STEPS)]
    assert counts(cuda) == (1, 2 * STEPS)
    assert [step for step, _, _ in steps] == list(range(1, STEPS + 1))
    assert all(math.isfinite(loss) for _, loss, _ in steps) and result["lr"] == 1e-2
    cuda.transfers.reset()  # a refresh after every step: exactly one read each
    loader = Counting(loader_of(rng), cuda)
    train_epoch(model, loader, optimizer, "cuda", progress=False, refresh_seconds=0)
    assert [seen[0] for seen in loader.seen] == list(range(STEPS))
    assert cuda.transfers.to_host == STEPS


@needs_cuda
@pytest.mark.parametrize("refresh_seconds", [math.inf, 0])
def test_a_nan_at_step_k_is_named_and_leaves_the_weights_of_step_k_minus_1(
    cuda, rng, refresh_seconds
):
    k, seed = 3, int(rng.integers(2**31))
    model, optimizer = mnist_cnn_on("cuda")
    good = loader_of(np.random.default_rng(seed))
    train_epoch(model, good, optimizer, "cuda", progress=False, max_batches=k - 1)
    expected = model.state_dict()
    model, optimizer = mnist_cnn_on("cuda")
    logged = []
    with pytest.raises(NonFiniteLossError, match=f"loss became nan at epoch 4, step {k};"):
        train_epoch(
            model,
            loader_of(np.random.default_rng(seed), STEPS, nan_at=k),
            optimizer,
            "cuda",
            progress=False,
            epoch=4,
            refresh_seconds=refresh_seconds,
            on_step=lambda step, loss, lr: logged.append(step),
        )
    assert logged == list(range(1, k))  # the good steps reached the step log
    state = model.state_dict()
    for name, value in expected.items():
        np.testing.assert_array_equal(state[name], value, err_msg=name)


class HostSGD:
    """A minimal optimizer that is not a fastnet.optim.Optimizer (no ``skip_if``)."""

    def __init__(self, parameters, lr):
        self.parameters, self.param_groups, self.steps = list(parameters), [{"lr": lr}], 0

    def zero_grad(self):
        for parameter in self.parameters:
            parameter.grad = None

    def step(self):
        self.steps += 1
        with fn.no_grad():
            for parameter in self.parameters:
                parameter -= self.param_groups[0]["lr"] * parameter.grad


@needs_cuda
def test_another_optimizer_is_guarded_by_a_read_before_each_update(cuda, rng):
    model, _ = mnist_cnn_on("cuda")
    host_sgd = HostSGD(model.parameters(), 0.05)
    with pytest.raises(NonFiniteLossError, match="step 2;"):
        train_epoch(model, loader_of(rng, nan_at=2), host_sgd, "cuda", progress=False)
    assert host_sgd.steps == 1 and cuda.transfers.to_host == 2


def per_step_reference(model, loader, optimizer):
    """The loop as it was: the loss and the predictions read to the host at every step."""
    total_loss, correct, count, steps = 0.0, 0, 0, []
    for x, y in loader:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        value = float(loss.item())
        lr = float(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += value * len(y)
        correct += int((logits.numpy().argmax(axis=1) == y.numpy()).sum())
        count += len(y)
        steps.append((len(steps) + 1, value, lr))
    return total_loss / count, correct / count, steps


def test_on_the_cpu_the_numbers_equal_a_per_step_host_read(rng):
    seed = int(rng.integers(2**31))

    def mlp():  # dropout: the random draws must stay in step too
        fn.manual_seed(5)
        model = models.mlp(SIDE * SIDE, hidden=(16,), classes=CLASSES, dropout=0.2)
        return model, optim.Adam(model.parameters(), lr=3e-3)

    model, optimizer = mlp()
    loss, accuracy, steps = per_step_reference(
        model, loader_of(np.random.default_rng(seed)), optimizer
    )
    expected_state = model.state_dict()
    model, optimizer = mlp()
    logged = []
    result = train_epoch(
        model,
        loader_of(np.random.default_rng(seed)),
        optimizer,
        progress=False,
        on_step=lambda *step: logged.append(step),
    )
    assert (result["loss"], result["accuracy"]) == (loss, accuracy)
    assert logged == steps
    state = model.state_dict()
    assert all(np.array_equal(state[name], value) for name, value in expected_state.items())
    loader = loader_of(np.random.default_rng(seed))
    model.eval()
    total, right, count = 0.0, 0, 0
    for x, y in loader:
        logits = model(x)
        total += float(F.cross_entropy(logits, y, reduction="sum").item())
        right += int((logits.numpy().argmax(axis=1) == y.numpy()).sum())
        count += len(y)
    evaluated = evaluate(model, loader, return_predictions=True)
    assert (evaluated["loss"], evaluated["accuracy"]) == (total / count, right / count)
    assert evaluated["predictions"].shape == evaluated["labels"].shape == (count,)


@needs_cuda
def test_evaluate_reads_the_device_once_and_once_more_for_predictions(cuda, rng):
    model, _ = mnist_cnn_on("cuda")
    cpu_model, _ = mnist_cnn_on("cpu")
    loader = loader_of(rng)
    cuda.transfers.reset()
    result = evaluate(model, loader, "cuda")
    assert cuda.transfers.to_host == 1
    cuda.transfers.reset()
    with_predictions = evaluate(model, loader, "cuda", return_predictions=True)
    assert cuda.transfers.to_host == 2
    expected = evaluate(cpu_model, loader, "cpu", return_predictions=True)
    np.testing.assert_allclose(result["loss"], expected["loss"], rtol=1e-5)
    np.testing.assert_array_equal(with_predictions["labels"], expected["labels"])
    model.eval()  # the predictions of the same device, read batch by batch
    predicted = [model(x.to("cuda")).numpy().argmax(axis=1) for x, _ in loader]
    np.testing.assert_array_equal(with_predictions["predictions"], np.concatenate(predicted))
    assert with_predictions["predictions"].dtype == np.int64


@needs_cuda
def test_a_run_on_the_cuda_device_keeps_its_data_there(cuda, rng, tmp_path, monkeypatch):
    """``train.run`` on the cuda device serves every split from a DeviceDataLoader (uploaded
    once, batches made on the device: no upload per step) and learns what the CPU learns."""
    made = []

    class Recorded(data.DeviceDataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(data, "DeviceDataLoader", Recorded)
    labels = rng.integers(0, 4, 96)
    images = rng.integers(0, 256, (96, 1, 6, 6)).astype(np.uint8)
    sets = data.ArrayDataset(images[:64], labels[:64]), data.ArrayDataset(images[64:], labels[64:])
    config = {
        "dataset": "synthetic",
        "model": "mlp",
        "optimizer": "sgd",
        "lr": 0.05,
        "batch_size": 4,
        "seed": 3,
        "val_fraction": 0.25,
        "kwargs": {"in_features": 36, "hidden": (8,), "classes": 4, "dropout": 0.0},
    }
    histories = {}
    for device in ("cpu", "cuda"):
        cuda.transfers.reset()
        result = train.run(
            dict(config),
            2,
            tmp_path / device,
            device=device,
            datasets=sets,
            progress=False,
            log=lambda line: None,
        )
        histories[device] = result["history"]
        if device == "cuda":
            # the datasets and each epoch's draws: a handful of uploads, none per step
            # per split: images, labels, mean and std, then per split and epoch its draws; the
            # model's 4 parameters; nothing per step (24 training steps, 4 evaluation batches)
            assert cuda.transfers.to_device == 3 * 3 + 3 * 2 + 4
    assert len(made) == 3  # train, validation and test splits
    for key in ("train_loss", "val_loss", "test_loss", "train_acc", "test_acc"):
        np.testing.assert_allclose(histories["cuda"][key], histories["cpu"][key], rtol=1e-5)
