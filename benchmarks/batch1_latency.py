"""Batch-1 inference latency on a noisy host: fastnet against PyTorch, in alternating blocks.

``fastnet bench --infer`` reports the median of every call over five rounds. On a shared host a
round can fall into a slow phase for one framework only, and the same commit's batch-1 ratio then
moves by 0.2 between runs. This script takes more, shorter turns: ``--blocks`` rounds, each a
block of ``--calls`` calls of every contender in turn, and reports per contender the 10th
percentile of the blocks' mean latency (the statistic such noise moves least), the minimum and
the median, and the ratio of PyTorch's 10th percentile to each fastnet contender's.

Contenders: ``fastnet``, the model through ``optimize_for_inference`` under ``no_grad``;
``fastnet, no plans``, the same model with conv2d's forward-only plans turned off (the general
path at every call: what the plans save, measured in the same process); ``torch``, the eval-mode
mirror under ``torch.inference_mode``. All on one thread, after a check that the logits agree.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/batch1_latency.py
        [--only resnet20] [--blocks 15] [--calls 100]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import fastnet
from fastnet.bench.harness import RELATIVE_TOLERANCE, pinned_threads, relative_error
from fastnet.bench.infer import infer_models, randomize_batch_norms
from fastnet.bench.race import to_torch
from fastnet.functional import conv
from fastnet.inference import optimize_for_inference


def _contenders(entry: Any) -> dict[str, Callable[[], Any]]:
    import torch

    fastnet.manual_seed(0)
    model = randomize_batch_norms(entry.build(), 0).eval()
    torch_model = to_torch(model).eval()
    x = np.random.default_rng(0).standard_normal((1, *entry.sample_shape), dtype=np.float32)
    optimized = optimize_for_inference(model, x)
    x_fastnet, x_torch = fastnet.Tensor(x), torch.from_numpy(x)
    planned = conv.FORWARD_PLANS.signature

    def fastnet_call() -> Any:
        with fastnet.no_grad():
            return optimized(x_fastnet)

    def without_plans() -> Any:
        conv.FORWARD_PLANS.signature = lambda *arguments: None
        try:
            return fastnet_call()
        finally:
            conv.FORWARD_PLANS.signature = planned

    def torch_call() -> Any:
        with torch.inference_mode():
            return torch_model(x_torch)

    error = relative_error(fastnet_call().numpy(), torch_call().numpy())
    if not error <= RELATIVE_TOLERANCE:
        raise SystemExit(f"{entry.name}: logits differ from PyTorch's (relative error {error:.1e})")
    return {"fastnet": fastnet_call, "fastnet, no plans": without_plans, "torch": torch_call}


def race(entry: Any, blocks: int, calls: int) -> dict[str, list[float]]:
    """Each contender's mean seconds per call in each of ``blocks`` alternating blocks."""
    contenders = _contenders(entry)
    for call in contenders.values():  # warm-up: compile, allocate, make the plans
        for _ in range(20):
            call()
    means: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(blocks):
        for name, call in contenders.items():
            start = time.perf_counter()
            for _ in range(calls):
                call()
            means[name].append((time.perf_counter() - start) / calls)
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="models whose name contains this text")
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    print("batch 1, 1 thread; ms per call: 10th percentile / minimum / median of the blocks")
    with pinned_threads(1):
        for entry in infer_models():
            if args.only and args.only not in entry.name:
                continue
            means = race(entry, args.blocks, args.calls)
            low = {name: float(np.percentile(values, 10)) for name, values in means.items()}
            for name, values in means.items():
                ratio = f"  torch/this {low['torch'] / low[name]:.2f}x" if name != "torch" else ""
                print(
                    f"{entry.name:10s} {name:18s} {low[name] * 1e3:7.3f} / "
                    f"{min(values) * 1e3:7.3f} / {statistics.median(values) * 1e3:7.3f}{ratio}"
                )


if __name__ == "__main__":
    main()
