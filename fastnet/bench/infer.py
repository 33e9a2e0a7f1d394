"""The inference race: fastnet against PyTorch predicting with the same models on the CPU.

For each model of :func:`infer_models`, at batch 1 the latency (median milliseconds per call over
every timed call) and at batch 256 the throughput (images/s of the best round). fastnet runs the
model through :func:`fastnet.inference.optimize_for_inference` (BatchNorm folded into the
convolutions, parameters without gradients) under :func:`fastnet.no_grad`; PyTorch runs the
weight-for-weight mirror of :func:`.race.to_torch` in eval mode under ``torch.inference_mode``.
The BatchNorms get random running statistics and affine weights first (as after training; a new
model's are 0, 1, 1, 0, which would fold into nothing), and before anything is timed the two
frameworks' logits are held to each other: a model that computes differently is refused, not
timed.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import nn as fnn
from ..autograd import no_grad
from ..inference import optimize_for_inference
from ..tensor import Tensor
from .harness import (
    RELATIVE_TOLERANCE,
    MismatchError,
    aligned,
    relative_error,
    settle,
    threads_text,
)
from .race import to_torch

LATENCY_BATCH, THROUGHPUT_BATCH = 1, 256


@dataclass(frozen=True)
class InferModel:
    """A model whose inference fastnet and PyTorch race: built by fastnet, mirrored in PyTorch."""

    name: str
    build: Callable[[], Any]
    sample_shape: tuple[int, ...]


def infer_models() -> list[InferModel]:
    """The models ``--infer`` races: the MNIST CNN, ResNet-20 and the ViT (28×28 MNIST images in
    7×7 patches, dim 128, depth 4, 4 heads)."""
    from .. import models

    return [
        InferModel("mnist_cnn", models.mnist_cnn, (1, 28, 28)),
        InferModel("resnet20", functools.partial(models.create, "resnet"), (3, 32, 32)),
        InferModel("vit", models.ViT, (1, 28, 28)),
    ]


def randomize_batch_norms(model: fnn.Module, seed: int = 0) -> fnn.Module:
    """Give every BatchNorm random running statistics and affine weights (none zero, variances
    in [0.5, 2]); returns ``model``."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if not isinstance(module, (fnn.BatchNorm1d, fnn.BatchNorm2d)):
            continue
        channels = module.num_features
        values = {
            "running_mean": rng.uniform(-1.0, 1.0, channels),
            "running_var": rng.uniform(0.5, 2.0, channels),
            "weight": rng.uniform(0.5, 1.5, channels) * rng.choice((-1.0, 1.0), channels),
            "bias": rng.uniform(-1.0, 1.0, channels),
        }
        for name, value in values.items():
            tensor = getattr(module, name)
            if tensor is not None:
                tensor.data[...] = tensor.device.asarray(value.astype(np.float32))
    return model


def _batch_norms(model: fnn.Module) -> int:
    return sum(isinstance(module, fnn.BatchNorm2d) for module in model.modules())


def _median_and_best(times: list[float], rounds: int) -> tuple[float, float]:
    """The median of every call's seconds, and the best round's mean seconds per call."""
    per_round = len(times) // rounds
    means = [statistics.fmean(times[i * per_round : (i + 1) * per_round]) for i in range(rounds)]
    return statistics.median(times), min(means)


def measure_inference(
    entry: InferModel,
    batch: int,
    quick: bool = False,
    rounds: int = 5,
    round_seconds: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Seconds per call of fastnet and PyTorch predicting ``entry`` on a random batch of ``batch``
    images, and images/s. Raises :class:`MismatchError` (before timing anything) if the logits
    differ by more than the harness's relative tolerance.

    The frameworks alternate, ``rounds`` rounds of about ``round_seconds`` each, after warm-up
    calls, every call timed alone. Call inside :func:`pinned_threads`."""
    import torch

    import fastnet

    if quick:
        rounds, round_seconds = 1, 0.0
    fastnet.manual_seed(seed)
    model = randomize_batch_norms(entry.build(), seed).eval()
    torch_model = to_torch(model).eval()
    x = np.random.default_rng(seed).standard_normal((batch, *entry.sample_shape), dtype=np.float32)
    optimized = optimize_for_inference(model, x[:1])
    folded = _batch_norms(model) - _batch_norms(optimized)
    x_fastnet, x_torch = Tensor(x), torch.from_numpy(x)

    def fastnet_call() -> Any:
        with no_grad():
            return optimized(x_fastnet)

    def torch_call() -> Any:
        with torch.inference_mode():
            return torch_model(x_torch)

    error = relative_error(fastnet_call().numpy(), torch_call().numpy())
    if not error <= RELATIVE_TOLERANCE:
        raise MismatchError(
            f"{entry.name} batch {batch}: logits differ from PyTorch's (relative error "
            f"{error:.1e} > {RELATIVE_TOLERANCE:.0e}): refusing to report a speed"
        )
    calls = {"fastnet": fastnet_call, "torch": torch_call}
    calls_per_round = {}
    for name, call in calls.items():  # warm-up compiles and allocates; its last call sizes a round
        for _ in range(3):
            start = time.perf_counter()
            call()
        calls_per_round[name] = max(2, round(round_seconds / (time.perf_counter() - start)))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            settle()
            for _ in range(calls_per_round[name]):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    summary = {name: _median_and_best(values, rounds) for name, values in times.items()}
    latency = {name: median for name, (median, _) in summary.items()}
    images_per_second = {name: batch / best for name, (_, best) in summary.items()}
    speedup = (
        latency["torch"] / latency["fastnet"]
        if batch == LATENCY_BATCH
        else images_per_second["fastnet"] / images_per_second["torch"]
    )
    return {
        "model": entry.name,
        "batch": batch,
        "median_seconds_per_call": latency,
        "images_per_second": images_per_second,
        "ratio": speedup,
        "relative_error": error,
        "folded_batch_norms": folded,
        "calls": {name: len(values) for name, values in times.items()},
    }


def run_inference(
    quick: bool = False,
    only: str | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> tuple[list[dict], list[str]]:
    """Every model of :func:`infer_models` at batch 1 and 256 (1 and 4 with ``quick``)."""
    results, failures = [], []
    for entry in infer_models():
        if only and only not in entry.name:
            continue
        for batch in (LATENCY_BATCH, 4) if quick else (LATENCY_BATCH, THROUGHPUT_BATCH):
            progress(f"infer {entry.name} batch {batch} ...")
            try:
                results.append(measure_inference(entry, batch, quick=quick))
            except MismatchError as error:
                failures.append(str(error))
    return results, failures


def format_inference_table(
    results: list[dict[str, Any]], threads: int, failures: Sequence[str] = ()
) -> str:
    """Batch 1 as median ms per call, larger batches as images/s; fastnet/torch is fastnet's
    speed over PyTorch's (above 1: fastnet is faster)."""
    header = ["model", "batch", "fastnet", "torch", "fastnet/torch", "logits rel. err", "BN folded"]
    lines = []
    for row in results:
        if row["batch"] == LATENCY_BATCH:
            cells = [
                f"{row['median_seconds_per_call'][name] * 1e3:.3f} ms"
                for name in ("fastnet", "torch")
            ]
        else:
            cells = [
                f"{row['images_per_second'][name]:.0f} images/s" for name in ("fastnet", "torch")
            ]
        lines.append(
            [
                row["model"],
                str(row["batch"]),
                *cells,
                f"{row['ratio']:.2f}x",
                f"{row['relative_error']:.1e}",
                str(row["folded_batch_norms"]),
            ]
        )
    text = [
        f"inference on the CPU, {threads_text(threads)} each, eval mode, random data: "
        f"batch {LATENCY_BATCH} median latency, larger batches images/s (best round); fastnet "
        f"optimize_for_inference under no_grad, torch under inference_mode:",
        aligned(header, lines),
    ]
    text += [f"FAILED {failure}" for failure in failures]
    return "\n".join(text)
