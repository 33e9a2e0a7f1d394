"""A trained model against its compressed versions (``fastnet compress`` output folders), the
inference timed interleaved round by round so every model sees the same machine.

For each folder: its ``model-int8.safetensors`` (an int8 model) or its ``model.safetensors`` +
``config.json`` (a pruned or channel-pruned float model; after unstructured pruning its Linear
layers run as CSR where that measures faster, as ``fastnet compress`` does). Prints per model:
file size, parameters, test accuracy (the whole test set), best images/s at ``--batch`` (256),
best latency of one image, and the speed ratios to the original.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/compression_race.py \\
        --original runs/mnist-cnn/model.safetensors --data-dir ../shared/data/mnist \\
        runs/mnist-cnn-int8 runs/mnist-cnn-sparse90 runs/mnist-cnn-channels50 [--threads 1]

Timings are for reading, not for asserting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from int8_inference import race  # beside this script: the same interleaved timing

from fastnet import export, quantize
from fastnet.bench import pinned_threads
from fastnet.data import DataLoader
from fastnet.nn.sparse_linear import sparsify
from fastnet.run_config import build_datasets, eval_transform
from fastnet.tensor import Tensor, no_grad


def load(folder: Path):
    """(model, file, parameters) of a ``fastnet compress`` output folder."""
    int8 = folder / "model-int8.safetensors"
    if int8.is_file():
        model = quantize.load_quantized(int8)
        return model, int8, model.num_parameters()
    path = folder / "model.safetensors"
    model, config = export.load_model_file(path)
    model.eval()
    parameters = model.num_parameters()
    if config.get("compression", {}).get("prune"):
        sparsify(model)
    return model, path, parameters


def runner(model):
    def run(x: np.ndarray) -> np.ndarray:
        with no_grad():
            return model(Tensor(x)).numpy()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--original", required=True, type=Path)
    parser.add_argument("--data-dir")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    original, config = export.load_model_file(args.original)
    original.eval()
    models = {"original": (original, args.original, original.num_parameters())}
    for folder in args.folders:
        models[folder.name] = load(folder)
    _, test_set = build_datasets(config["dataset"], args.data_dir)
    loader = DataLoader(test_set, batch_size=512, transform=eval_transform(config))
    test = list(loader.numpy_batches())
    batch = np.concatenate([x for x, _ in test])[: args.batch]
    runs = {name: runner(model) for name, (model, _, _) in models.items()}
    with pinned_threads(args.threads):
        throughput = race(runs, batch, args.rounds)
        latency = race(runs, batch[:1], args.rounds * 5)
    rows = {}
    for name, (_, path, parameters) in models.items():
        correct = sum(int((runs[name](x).argmax(1) == y).sum()) for x, y in test)
        rows[name] = {
            "file_bytes": path.stat().st_size,
            "parameters": parameters,
            "test_accuracy": correct / sum(len(y) for _, y in test),
            "images_per_second": len(batch) / throughput[name],
            "latency_ms": 1e3 * latency[name],
        }
    base = rows["original"]
    print(f"batch {args.batch}, {args.threads} thread(s), best of {args.rounds} interleaved rounds")
    for name, row in rows.items():
        print(
            f"  {name:22s} {row['file_bytes'] / 1e3:8.1f} kB {row['parameters']:9,d} params "
            f"acc {row['test_accuracy']:.2%}  {row['images_per_second']:8,.0f} img/s "
            f"({row['images_per_second'] / base['images_per_second']:.2f}x)  "
            f"{row['latency_ms']:6.3f} ms @1 ({base['latency_ms'] / row['latency_ms']:.2f}x)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
