"""Evaluate a saved checkpoint on a test set: ``fastnet eval CHECKPOINT [--dataset NAME]``.

The checkpoint's config (``{"model": name, "kwargs": {...}, "dataset": ...}``, written by
``fastnet train``) rebuilds the model through :func:`fastnet.models.create`; its weights are
loaded (checksum verified), and the whole test set is run in eval mode. Printed: the number of
images and the time taken, the classification report (precision, recall, F1 per class, accuracy,
macro averages), the accuracy as a count, and the training run's own last test accuracy when the
checkpoint recorded one, for comparison. Written (matplotlib needed; the folder of the
checkpoint unless ``--out`` says otherwise):

* ``confusion_matrix.png``: rows true class, columns predicted, the counts written in the cells
  and coloured by the share of the true class on a log scale, so a few errors stand out;
* with ``--show-features INDEX``, ``feature_maps_INDEX.png``: test image INDEX, its true and
  predicted class in the title, and the output of every convolution of the model for it, in
  forward order, captured by wrapping each convolution's forward
  (:func:`fastnet.nn.summary.forward_hooks`).

The test images get the transform the training run evaluated with
(:func:`fastnet.train.eval_transform` of the checkpoint's config: the dataset's normalisation).
The CLI wires :func:`add_arguments` and :func:`run` in as ``fastnet eval``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import models, train
from .checkpoint import load_checkpoint
from .data import DataLoader
from .extras import install_hint
from .metrics import classification_report, confusion_matrix
from .nn import Conv2d, Module
from .nn.summary import eval_mode, forward_hooks
from .plots import plot_confusion_matrix, plot_feature_maps
from .tensor import Tensor, no_grad
from .train import DATASETS, eval_transform, evaluate

__all__ = ["add_arguments", "run", "evaluate_checkpoint", "load_model", "conv_feature_maps"]


def load_model(path: str | os.PathLike, device: Any = "cpu") -> tuple[Module, dict]:
    """The model a checkpoint describes, with its weights, on ``device``; and the whole checkpoint
    (as :func:`fastnet.load_checkpoint` returns it)."""
    saved = load_checkpoint(path)
    config = saved["config"]
    if "model" not in config:
        raise ValueError(
            f"{path}: the checkpoint's config names no model (config {config}); "
            f"was it written by `fastnet train`?"
        )
    model = models.create(config["model"], **config.get("kwargs", {}))
    model.load_state_dict(saved["model"])
    return model.to(device), saved


def conv_feature_maps(model: Module, image: Tensor) -> list[tuple[str, np.ndarray]]:
    """(name, output (C, H, W)) of every Conv2d of ``model`` for one image (1, C, H, W), in the
    order they ran, from one forward pass in eval mode (each module's mode restored after)."""
    captured: list[tuple[str, np.ndarray]] = []
    convolutions = [
        (name, module) for name, module in model.named_modules() if isinstance(module, Conv2d)
    ]

    def keep(name: str, module: Module, args: tuple, kwargs: dict, output: Tensor) -> None:
        captured.append((name, output.numpy()[0].copy()))

    with eval_mode(model), forward_hooks(convolutions, keep), no_grad():
        model(image)
    return captured


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def _class_names(test_set: Any, predictions: np.ndarray, labels: np.ndarray) -> list[str]:
    """The dataset's class names, else the class indices seen as text."""
    names = [str(name) for name in getattr(test_set, "classes", ())]
    return names or [str(index) for index in range(int(max(predictions.max(), labels.max())) + 1)]


def evaluate_checkpoint(
    path: str | os.PathLike,
    test_set: Any = None,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: Any = "cpu",
    batch_size: int = 512,
    out: str | os.PathLike | None = None,
    show_features: int | None = None,
    max_channels: int = 16,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate the checkpoint at ``path``, print the report, write the plots (see the module).

    The test set is ``test_set`` when given, else the test split of ``dataset`` (default: the
    dataset the checkpoint was trained on), built as training builds it; its images get the
    training run's evaluation transform. Returns the loss, accuracy, predictions and labels of
    :func:`fastnet.train.evaluate`, plus ``report``, ``confusion_matrix`` and ``files`` (the PNGs
    written).
    """
    model, saved = load_model(path, device)
    config = saved["config"]
    name = dataset or config.get("dataset")
    if test_set is None:
        if name is None:
            raise ValueError(
                f"{path}: the checkpoint does not say which dataset it was trained on; "
                f"name one ({', '.join(DATASETS)})"
            )
        _, test_set = train.build_datasets(name, data_dir)  # looked up now: tests stand it in
    if show_features is not None and not 0 <= show_features < len(test_set):
        raise ValueError(
            f"--show-features {show_features} is not an index of the {len(test_set)} test images"
        )
    transform = eval_transform(config) if "dataset" in config else None

    start = time.perf_counter()
    result = evaluate(
        model,
        DataLoader(test_set, batch_size=batch_size, transform=transform),
        device,
        return_predictions=True,
    )
    predictions, labels = result["predictions"], result["labels"]
    class_names = _class_names(test_set, predictions, labels)
    result["report"] = classification_report(predictions, labels, class_names)
    result["confusion_matrix"] = confusion_matrix(predictions, labels, len(class_names))
    log(
        f"fastnet: {config['model']} from {path} (epoch {saved['epoch']}) "
        f"on the {name or 'given'} test set: "
        f"{result['count']:,} images in {time.perf_counter() - start:.1f}s on {device}"
    )
    log(result["report"])
    log(
        f"accuracy {_percent(result['accuracy'])} "
        f"({int((predictions == labels).sum()):,}/{result['count']:,} "
        f"correct), mean loss {result['loss']:.4f}"
    )
    trained = saved["extra"].get("history", {}).get("test_acc")
    if trained:
        log(f"the training run's test accuracy after epoch {len(trained)}: {_percent(trained[-1])}")

    folder = Path(out) if out is not None else Path(path).parent
    result["files"] = []
    if importlib.util.find_spec("matplotlib") is None:
        log(f"fastnet: no plots: they need matplotlib ({install_hint('plot')})")
        return result
    written = plot_confusion_matrix(
        result["confusion_matrix"], folder / "confusion_matrix.png", class_names
    )
    result["files"].append(written)
    log(f"fastnet: wrote the confusion matrix to {written}")
    if show_features is not None:
        image, _ = next(
            iter(DataLoader(test_set.take([show_features]), batch_size=1, transform=transform))
        )
        layers = conv_feature_maps(model, image.to(device))
        if not layers:
            log(f"fastnet: {config['model']} has no convolution: no feature maps to show")
            return result
        truth, guess = class_names[labels[show_features]], class_names[predictions[show_features]]
        written = plot_feature_maps(
            layers,
            folder / f"feature_maps_{show_features}.png",
            test_set.images[show_features],
            max_channels=max_channels,
            true_label=truth,
            predicted_label=guess,
        )
        result["files"].append(written)
        log(
            f"fastnet: wrote the feature maps of {len(layers)} convolutions "
            f"for test image {show_features} "
            f"(true {truth}, predicted {guess}) to {written}"
        )
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastnet eval``."""
    parser.add_argument(
        "checkpoint", help="a checkpoint written by `fastnet train` (checkpoint.safetensors)"
    )
    parser.add_argument(
        "--dataset",
        default=None,
        choices=DATASETS,
        help="test set to evaluate on (default: the one the checkpoint was trained on)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with the dataset files (default: FASTNET_DATA, "
        "then the user cache, then download)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument(
        "--out", default=None, help="folder for the plots (default: the checkpoint's folder)"
    )
    parser.add_argument(
        "--show-features",
        type=int,
        default=None,
        metavar="INDEX",
        help="also plot the feature maps of every convolution for test image INDEX",
    )
    parser.add_argument(
        "--max-channels", type=int, default=16, help="channels shown per layer in the feature maps"
    )


def run(args: argparse.Namespace) -> int:
    """``fastnet eval``: 0 on success; 2 with a one-line message when the checkpoint, the dataset
    or the device cannot be used."""
    try:
        evaluate_checkpoint(
            args.checkpoint,
            dataset=args.dataset,
            data_dir=args.data_dir,
            device=args.device,
            batch_size=args.batch_size,
            out=args.out,
            show_features=args.show_features,
            max_channels=args.max_channels,
        )
    except (OSError, ValueError, RuntimeError) as error:
        print(f"fastnet eval: {error}", file=sys.stderr)
        return 2
    return 0
