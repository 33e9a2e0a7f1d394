"""The config of a training run: the settings' rules, the datasets, optimizer, scheduler and
transforms a config builds, and what a resumed run continues with.

* ``validate_config`` / ``check_setting``: each setting against its rule (``SETTING_RULES``).
* ``resumed_config``: the config and target epoch of a run resumed from its checkpoint.
* ``build_datasets``, ``build_optimizer``, ``build_scheduler``, ``eval_transform``,
  ``train_transform``, ``model_kwargs``: the pieces :func:`fastnet.train.run` assembles.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

# ===================================================================== what a config builds
DATASETS = ("mnist", "fashion-mnist", "cifar10")


def build_datasets(name: str, data_dir: str | None, download: bool = True) -> tuple[Any, Any]:
    """The (train, test) sets of dataset ``name``, looked up under ``data_dir`` (see
    fastnet.data), downloaded into the cache when missing and ``download`` allows."""
    from . import data

    classes = {"mnist": data.MNIST, "fashion-mnist": data.FashionMNIST, "cifar10": data.CIFAR10}
    if name not in classes:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(classes)}")
    return tuple(
        classes[name](root=data_dir, train=train, download=download) for train in (True, False)
    )


def build_optimizer(config: dict, parameters: Any) -> Any:
    from . import optim

    name, lr, decay = config["optimizer"], config["lr"], config.get("weight_decay", 0.0)
    if name == "adam":
        return optim.Adam(parameters, lr=lr, weight_decay=decay)
    if name == "adamw":
        return optim.AdamW(parameters, lr=lr, weight_decay=decay)
    if name == "sgd":
        momentum = config.get("momentum", 0.9)
        return optim.SGD(
            parameters, lr=lr, momentum=momentum, weight_decay=decay, nesterov=momentum > 0
        )
    raise ValueError(f"unknown optimizer {name!r}; choose from adam, adamw, sgd")


NORMALIZATION = {"mnist": "MNIST", "fashion-mnist": "FASHION_MNIST", "cifar10": "CIFAR10"}


def eval_transform(config: dict) -> Any:
    """Per-channel normalisation with the dataset's statistics (what the model sees at test
    time)."""
    from . import data

    prefix = NORMALIZATION.get(config["dataset"])
    if prefix is None:
        return None
    return data.Normalize(getattr(data, f"{prefix}_MEAN"), getattr(data, f"{prefix}_STD"))


def train_transform(config: dict) -> Any:
    """eval_transform, after random crops (padding 4 on 32×32 images, 2 on 28×28) and, for
    CIFAR-10, horizontal flips, when the config asks for ``augment``."""
    from . import data

    normalize = eval_transform(config)
    if not config.get("augment"):
        return normalize
    cifar = config["dataset"] == "cifar10"
    steps = [data.RandomCrop(32 if cifar else 28, padding=4 if cifar else 2)]
    if cifar:  # digits and clothes are not mirror-symmetric in the same way; CIFAR objects are
        steps.append(data.RandomHorizontalFlip())
    return data.Compose(steps + ([normalize] if normalize is not None else []))


def build_scheduler(config: dict, optimizer: Any, epochs: int, batches_per_epoch: int) -> Any:
    """none; cosine (stepped per epoch); onecycle (warm-up + cosine, stepped per batch)."""
    from . import optim

    schedule = config.get("schedule", "none")
    if schedule == "none":
        return None
    if schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if schedule == "onecycle":
        return optim.OneCycleLR(
            optimizer, max_lr=config["lr"], total_steps=max(2, epochs * batches_per_epoch)
        )
    raise ValueError(f"unknown schedule {schedule!r}; choose from none, cosine, onecycle")


def model_kwargs(model: str, images: Any, classes: int = 10) -> dict:
    """The builder arguments that fit a dataset's image shape (N, C, H, W)."""
    channels, side = int(images.shape[1]), int(images.shape[-1])
    if model == "mlp":
        return {"in_features": channels * side * side, "classes": classes}
    return {"channels": channels, "image_size": side, "classes": classes}


# ===================================================================== the config of a run
def _whole(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


_AT_LEAST_1 = (lambda v: _whole(v) and v >= 1, "an integer >= 1")
_AT_LEAST_0 = (lambda v: _whole(v) and v >= 0, "an integer >= 0")
_UNIT = (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)")
SETTING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": _AT_LEAST_1,
    "batch_size": _AT_LEAST_1,
    "lr": (lambda v: _real(v) and 0 < v < math.inf, "a number > 0"),
    "weight_decay": (lambda v: _real(v) and 0 <= v < math.inf, "a number >= 0"),
    "momentum": _UNIT,
    "label_smoothing": _UNIT,
    "val_fraction": _UNIT,
    "patience": (lambda v: v is None or _AT_LEAST_0[0](v), "an integer >= 0"),
    "labels_per_class": _AT_LEAST_0,
    "checkpoint_every": _AT_LEAST_0,
    "seed": (lambda v: v is None or _AT_LEAST_0[0](v), "an integer >= 0"),
}


def check_setting(key: str, value: Any) -> Any:
    """``value`` if it is allowed for config ``key`` (see SETTING_RULES), else ValueError."""
    rule = SETTING_RULES.get(key)
    if rule is not None and not rule[0](value):
        raise ValueError(f"{key} must be {rule[1]}, got {value!r}")
    return value


def validate_config(config: dict) -> None:
    """Raise ValueError naming the first setting of ``config`` out of its range."""
    for key, value in config.items():
        check_setting(key, value)
    if config.get("keep_best") and not config.get("val_fraction"):
        raise ValueError("keep_best needs a validation split (val_fraction > 0)")


# settings a resumed run may change: they steer what is kept, not what is learned
RESUME_OVERRIDES = ("patience", "keep_best", "checkpoint_every")


def resumed_config(saved: dict, epochs: int | None, given: dict) -> tuple[dict, int]:
    """The config and the last epoch of a run resumed from checkpoint ``saved``.

    The saved config wins; ``given`` may change the RESUME_OVERRIDES and must otherwise agree
    with it. ``epochs`` (default: the run's planned epochs) must lie beyond the saved epoch. A
    learning-rate schedule (onecycle, cosine) spans the planned epochs, saved as
    ``config["epochs"]``: stretching it would send the learning rate back up mid-run, so only a
    run without one (``schedule`` none) can be extended past its plan; the others refuse."""
    config, done = dict(saved["config"]), saved["epoch"]
    for key, value in given.items():
        if key in RESUME_OVERRIDES:
            config[key] = value
        elif key != "epochs" and value is not None and _json(value) != _json(config.get(key)):
            raise ValueError(
                f"cannot change {key} to {value!r} on resume: the run was trained with "
                f"{key} {config.get(key)!r} (start a new run to change it)"
            )
    # a checkpoint from before the plan was saved takes the asked-for epochs as its plan
    planned = config.get("epochs") or epochs or done
    target = planned if epochs is None else check_setting("epochs", epochs)
    if target <= done:
        raise ValueError(
            f"the checkpoint is already at epoch {done}"
            + (f" of its {planned} planned" if epochs is None else "")
            + f": ask for more epochs than {done} to train on"
        )
    schedule = config.get("schedule", "none")
    if target > planned and schedule != "none":
        raise ValueError(
            f"cannot extend this run to {target} epochs: its {schedule} learning-rate schedule "
            f"spans the {planned} epochs it was planned for, and stretching it would send the "
            f"learning rate back up; "
            + (f"resume with epochs <= {planned}, or " if planned > done else "")
            + "start a new run"
        )
    config["epochs"] = max(planned, target)
    return config, target


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples and lists compare as a checkpoint saved them
