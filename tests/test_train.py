"""The training loop: learning on real data, reproducibility, and bit-for-bit resume."""

import numpy as np
import pytest

import fastnet as fn
from fastnet import data
from fastnet.train import evaluate, run


def synthetic_sets(rng, n=192, classes=4):
    """Images whose class is the quadrant holding a bright blob: learnable in a few steps."""
    labels = rng.integers(0, classes, n)
    images = rng.uniform(0, 60, (n, 1, 8, 8))
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        images[i, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 180
    images = images.astype(np.uint8)
    return data.ArrayDataset(images[:128], labels[:128]), data.ArrayDataset(
        images[128:], labels[128:]
    )


CONFIG = {
    "dataset": "synthetic",
    "model": "mlp",
    "optimizer": "adam",
    "lr": 3e-3,
    "weight_decay": 0.0,
    "momentum": 0.9,
    "batch_size": 16,
    "seed": 5,
    "kwargs": {"in_features": 64, "hidden": (32,), "classes": 4, "dropout": 0.2},
}


def quiet(*_):
    pass


def test_training_learns_and_evaluate_agrees(tmp_path, rng):
    sets = synthetic_sets(rng)
    result = run(dict(CONFIG), 3, str(tmp_path), datasets=sets, progress=False, log=quiet)
    assert result["history"]["test_acc"][-1] > 0.9
    again = evaluate(result["model"], data.DataLoader(sets[1], batch_size=7))
    assert again["accuracy"] == result["history"]["test_acc"][-1]


def test_same_seed_same_run(tmp_path, rng):
    sets = synthetic_sets(rng)
    a = run(dict(CONFIG), 2, str(tmp_path / "a"), datasets=sets, progress=False, log=quiet)[
        "model"
    ].state_dict()
    b = run(dict(CONFIG), 2, str(tmp_path / "b"), datasets=sets, progress=False, log=quiet)[
        "model"
    ].state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path, rng):
    sets = synthetic_sets(rng)  # the model has dropout, so the RNG state must be restored too
    straight = run(
        dict(CONFIG), 2, str(tmp_path / "straight"), datasets=sets, progress=False, log=quiet
    )
    run(dict(CONFIG), 1, str(tmp_path / "split"), datasets=sets, progress=False, log=quiet)
    resumed = run(
        dict(CONFIG),
        2,
        str(tmp_path / "split"),
        datasets=sets,
        progress=False,
        log=quiet,
        resume=str(tmp_path / "split" / "checkpoint.safetensors"),
    )
    a, b = straight["model"].state_dict(), resumed["model"].state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert straight["history"]["train_loss"] == resumed["history"]["train_loss"]
    sa, sb = straight["optimizer"].state_dict()["state"], resumed["optimizer"].state_dict()["state"]
    assert all(np.array_equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


@pytest.mark.skipif(
    not (fn.backend.cuda_is_available()), reason="needs the cuda device (GPU or simulator)"
)
def test_two_training_steps_match_between_cpu_and_cuda(rng):
    """A small CNN (conv, pool, linear, cross-entropy, Adam) on tiny inputs: same loss and
    parameters."""
    import fastnet.functional as F
    from fastnet import nn, optim

    def build():
        fn.manual_seed(11)
        return nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(3 * 3 * 3, 4),
        )

    x, y = rng.standard_normal((2, 2, 6, 6)).astype(np.float32), rng.integers(0, 4, 2)
    results = {}
    for device in ("cpu", "cuda"):
        model = build().to(device)
        opt = optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(2):
            loss = F.cross_entropy(model(fn.tensor(x, device=device)), fn.tensor(y, device=device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        results[device] = (losses, model.state_dict())
    np.testing.assert_allclose(results["cuda"][0], results["cpu"][0], rtol=1e-5)
    for name, value in results["cpu"][1].items():
        np.testing.assert_allclose(
            results["cuda"][1][name], value, rtol=1e-4, atol=1e-6, err_msg=name
        )
