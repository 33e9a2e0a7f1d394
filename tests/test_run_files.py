"""What a training run keeps in its folder: history, config, per-step log, TensorBoard events,
keep-best, snapshots, the NaN guard, and what a resumed run continues with."""

import csv
import json
import math
import sys

import numpy as np
import pytest

import fastnet as fn
from fastnet import data
from fastnet.train import NonFiniteLossError, fit, resumed_config, run

CONFIG = {
    "dataset": "synthetic",
    "model": "mlp",
    "optimizer": "adam",
    "lr": 3e-3,
    "batch_size": 16,
    "seed": 5,
    "kwargs": {"in_features": 64, "hidden": [32], "classes": 4, "dropout": 0.2},
}


def synthetic_sets(rng, n=192, classes=4, random_labels=False):
    """8x8 images whose class is the quadrant holding a bright blob (or random labels)."""
    labels = rng.integers(0, classes, n)
    images = rng.uniform(0, 60, (n, 1, 8, 8))
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        images[i, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 180
    if random_labels:
        labels = rng.integers(0, classes, n)
    images = images.astype(np.uint8)
    return (
        data.ArrayDataset(images[:128], labels[:128]),
        data.ArrayDataset(images[128:], labels[128:]),
    )


def quiet(*_):
    pass


def read_steps(folder):
    with open(folder / "steps.csv") as stream:
        return list(csv.DictReader(stream))


def test_history_config_and_steps_describe_the_run(tmp_path, rng):
    config = dict(CONFIG, schedule="onecycle")
    result = run(config, 2, tmp_path, datasets=synthetic_sets(rng), progress=False, log=quiet)
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["epoch"] == [1, 2]
    assert 0 < history["elapsed"][0] < history["elapsed"][1]
    assert history["test_acc"] == result["history"]["test_acc"]
    saved_config = json.loads((tmp_path / "config.json").read_text())
    assert saved_config == json.loads(json.dumps(result["config"])) and saved_config["epochs"] == 2
    steps = read_steps(tmp_path)
    assert [(int(s["epoch"]), int(s["step"])) for s in steps] == [
        (e, s) for e in (1, 2) for s in range(1, 9)
    ]
    lrs = [float(s["lr"]) for s in steps]
    assert lrs[0] == pytest.approx(3e-3 / 25)  # one-cycle starts at max_lr / div_factor
    assert max(lrs) == pytest.approx(3e-3, rel=0.05) and lrs[-1] < lrs[0]
    assert history["lr"] == [lrs[7], lrs[15]]  # the last rate each epoch trained with
    losses = [float(s["loss"]) for s in steps]
    assert np.mean(losses[:8]) == pytest.approx(history["train_loss"][0], rel=0.05)


def test_tensorboard_events_when_tensorboardx_is_installed(tmp_path, rng):
    pytest.importorskip("tensorboardX")
    run(dict(CONFIG), 1, tmp_path, datasets=synthetic_sets(rng), progress=False, log=quiet)
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 200


def test_without_tensorboardx_the_run_skips_its_events(tmp_path, rng, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # makes the import fail
    run(dict(CONFIG), 1, tmp_path, datasets=synthetic_sets(rng), progress=False, log=quiet)
    assert not (tmp_path / "tensorboard").exists() and (tmp_path / "steps.csv").is_file()


def test_keep_best_ends_with_the_best_validation_weights(tmp_path, rng):
    # random labels: validation accuracy wanders, so the best epoch is not the last
    sets = synthetic_sets(rng, random_labels=True)
    config = dict(CONFIG, lr=3e-2, val_fraction=0.25, keep_best=True, checkpoint_every=1)
    result = run(config, 4, tmp_path, datasets=sets, progress=False, log=quiet)
    val = result["history"]["val_acc"]
    best = int(np.argmax(val)) + 1
    assert best != 4, val  # the seed was chosen so that restoring matters
    snapshot = fn.load(tmp_path / f"checkpoint_epoch{best}.safetensors")
    final = result["model"].state_dict()
    assert all(np.array_equal(final[k], snapshot[k]) for k in snapshot)
    kept = fn.load(tmp_path / "best.safetensors")
    assert all(np.array_equal(kept[k], snapshot[k]) for k in snapshot)
    last = fn.load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert last["epoch"] == 4  # the resumable checkpoint stays the last epoch's
    assert sorted(p.name for p in tmp_path.glob("checkpoint_epoch*")) == [
        f"checkpoint_epoch{e}.safetensors" for e in (1, 2, 3, 4)
    ]


def test_a_nan_loss_stops_before_the_update_and_keeps_the_last_checkpoint(tmp_path, rng):
    train_set, test_set = synthetic_sets(rng)
    fn.manual_seed(0)
    model = fn.models.mlp(in_features=64, hidden=(16,), classes=4)
    optimizer = fn.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def loss_fn(logits, y, **kwargs):
        loss = fn.functional.cross_entropy(logits, y, **kwargs)
        if not kwargs:  # a training step (evaluation sums with reduction="sum")
            calls.append(1)
            if len(calls) == 8 + 2:  # epoch 2, step 2
                return loss * float("nan")
        return loss

    loader = data.DataLoader(train_set, batch_size=16, shuffle=True, seed=0)
    weights = []
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 2") as caught:
        fit(
            model,
            loader,
            optimizer,
            3,
            test_loader=data.DataLoader(test_set, batch_size=64),
            loss_fn=loss_fn,
            out=tmp_path,
            progress=False,
            log=lambda line: weights.append(
                {k: np.array(v) for k, v in model.state_dict().items()}
            ),
        )
    assert (caught.value.epoch, caught.value.step) == (2, 2) and math.isnan(caught.value.loss)
    saved = fn.load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert saved["epoch"] == 1
    assert all(np.array_equal(saved["model"][k], v) for k, v in weights[0].items())
    assert all(np.isfinite(p.numpy()).all() for p in model.parameters())
    assert json.loads((tmp_path / "history.json").read_text())["epoch"] == [1]
    assert [(s["epoch"], s["step"]) for s in read_steps(tmp_path)][-1] == ("2", "1")


def test_resume_keeps_the_step_log_of_finished_epochs_only(tmp_path, rng):
    sets = synthetic_sets(rng)
    run(dict(CONFIG), 2, tmp_path / "straight", datasets=sets, progress=False, log=quiet)
    split = tmp_path / "split"
    run(dict(CONFIG), 1, split, datasets=sets, progress=False, log=quiet)
    with open(split / "steps.csv", "a") as stream:  # an epoch 2 cut short by a crash
        stream.write("2,1,0.5,0.003\n2,2,0.4,0.003\n")
    run(
        dict(CONFIG),
        2,
        split,
        datasets=sets,
        progress=False,
        log=quiet,
        resume=str(split / "checkpoint.safetensors"),
    )
    assert read_steps(split) == read_steps(tmp_path / "straight")  # bit for bit, losses too
    history = json.loads((split / "history.json").read_text())
    assert history["epoch"] == [1, 2] and history["elapsed"][1] > history["elapsed"][0]


SAVED = {"epoch": 2, "config": dict(CONFIG, schedule="onecycle", epochs=5, patience=None)}


def test_resumed_config_continues_the_plan_and_takes_only_safe_overrides():
    config, epochs = resumed_config(SAVED, None, {"patience": 2, "model": "mlp"})
    assert epochs == 5 and config["epochs"] == 5 and config["patience"] == 2
    assert resumed_config(SAVED, 4, {})[1] == 4  # stopping early keeps the 5-epoch schedule
    assert resumed_config(SAVED, 3, {})[0]["epochs"] == 5
    with pytest.raises(ValueError, match="cannot change lr"):
        resumed_config(SAVED, None, {"lr": 0.1})
    with pytest.raises(ValueError, match="already at epoch 2"):
        resumed_config(SAVED, 2, {})
    with pytest.raises(ValueError, match="onecycle learning-rate schedule spans the 5 epochs"):
        resumed_config(SAVED, 6, {})
    plain = {"epoch": 2, "config": dict(CONFIG, schedule="none", epochs=2)}
    config, epochs = resumed_config(plain, 4, {})  # no schedule: a finished run extends
    assert epochs == 4 and config["epochs"] == 4
    with pytest.raises(ValueError, match="already at epoch 2 of its 2 planned"):
        resumed_config(plain, None, {})
