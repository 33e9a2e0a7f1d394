"""MNIST CNN inference, float32 against int8, fastnet against PyTorch, same weights, same threads.

Four forward passes over one batch, interleaved round by round so that every contender sees the
same machine: fastnet float32, fastnet int8 (``fastnet.quantize``, percentile calibration),
PyTorch float32 and PyTorch's own int8 CNN (eager-mode post-training static quantization on its
x86 engine: fused conv+ReLU and linear+ReLU, per-channel weights, histogram observers), both int8
models calibrated on the same batches. Prints images/s at ``--batch`` (256) and the latency of one
image, the ratios that the README reports, and the accuracies over the test set when ``--model``
names a trained model file (else random weights and random images: speed only).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/int8_inference.py \\
        --model runs/mnist-cnn/model.safetensors --data-dir ../shared/data/mnist [--threads 1]
        [--quick] [--json FILE]

Needs PyTorch (the ``bench`` extra). Timings are for reading, not for asserting.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np

import fastnet
from fastnet import export, models, quantize
from fastnet.bench import optional_torch, pinned_threads
from fastnet.run_config import build_datasets, eval_transform
from fastnet.tensor import Tensor, no_grad


def torch_cnn(torch, model):
    """PyTorch's MNIST CNN with fastnet's weights, with the stubs and names eager quantization
    needs."""
    nn = torch.nn
    quant = torch.ao.quantization

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            convs = [m for m in model.modules() if type(m) is fastnet.nn.Conv2d]
            linears = [m for m in model.modules() if type(m) is fastnet.nn.Linear]
            self.quant, self.dequant = quant.QuantStub(), quant.DeQuantStub()
            self.conv1 = nn.Conv2d(convs[0].in_channels, convs[0].out_channels, 3, padding=1)
            self.conv2 = nn.Conv2d(convs[1].in_channels, convs[1].out_channels, 3, padding=1)
            self.fc1 = nn.Linear(linears[0].in_features, linears[0].out_features)
            self.fc2 = nn.Linear(linears[1].in_features, linears[1].out_features)
            self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            for theirs, ours in zip(
                (self.conv1, self.conv2, self.fc1, self.fc2), convs + linears, strict=True
            ):
                theirs.weight.data = torch.tensor(ours.weight.numpy())
                theirs.bias.data = torch.tensor(ours.bias.numpy())

        def forward(self, x):
            x = self.quant(x)
            x = self.pool(self.relu1(self.conv1(x)))
            x = self.pool(self.relu2(self.conv2(x)))
            x = self.relu3(self.fc1(torch.flatten(x, 1)))
            return self.dequant(self.fc2(x))

    return Net().eval()


def torch_int8(torch, float_model, batches):
    quant = torch.ao.quantization
    torch.backends.quantized.engine = "x86"
    model = quant.fuse_modules(
        torch_cnn(torch, float_model),
        [["conv1", "relu1"], ["conv2", "relu2"], ["fc1", "relu3"]],
    )
    model.qconfig = quant.get_default_qconfig("x86")
    quant.prepare(model, inplace=True)
    with torch.no_grad():
        for batch in batches:
            model(torch.tensor(batch))
    return quant.convert(model)


def race(contenders: dict, batch: np.ndarray, rounds: int) -> dict[str, float]:
    """Best seconds per call of each contender, interleaved round by round."""
    best = dict.fromkeys(contenders, float("inf"))
    for run in contenders.values():
        run(batch)  # warm-up: compilation, caches
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            run(batch)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained MNIST CNN's model.safetensors")
    parser.add_argument("--data-dir", help="the MNIST files (for calibration and accuracy)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny run: a check that it works")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    torch = optional_torch()
    if torch is None:
        raise SystemExit("needs PyTorch: bash scripts/setup.sh bench")
    with pinned_threads(args.threads):
        results = measure(torch, args)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


def measure(torch, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(0)
    test = None
    if args.model:
        model, config = export.load_model_file(args.model)
        train_set, test_set = build_datasets("mnist", args.data_dir)
        from fastnet.data import DataLoader

        def batches(dataset, count=None, **options):
            loader = DataLoader(dataset, args.batch, transform=eval_transform(config), **options)
            return list(itertools.islice(loader.numpy_batches(), count))

        test = batches(test_set)
        # calibration on 8 batches of training images, as fastnet compress does
        calibration = [images for images, _ in batches(train_set, 8, shuffle=True, seed=0)]
    else:
        model = models.mnist_cnn()
        calibration = [rng.random((args.batch, 1, 28, 28), np.float32) for _ in range(2)]
    if args.quick:
        args.batch, args.rounds = 8, 2
        test = test[:2] if test else None
    model.eval()
    ours_int8 = quantize.quantize_model(model, calibration, "percentile")
    theirs_float = torch_cnn(torch, model)
    theirs_int8 = torch_int8(torch, model, calibration)

    def ours_float(x):
        with no_grad():
            return model(Tensor(x)).numpy()

    def ours_quantized(x):
        return ours_int8(x).numpy()

    def torch_runner(net):
        def run(x):
            with torch.no_grad():
                return net(torch.from_numpy(x)).numpy()

        return run

    contenders = {
        "fastnet float32": ours_float,
        "fastnet int8": ours_quantized,
        "pytorch float32": torch_runner(theirs_float),
        "pytorch int8": torch_runner(theirs_int8),
    }
    batch = test[0][0][: args.batch] if test else calibration[0][: args.batch]
    throughput = race(contenders, batch, args.rounds)
    latency = race(contenders, batch[:1], args.rounds * 5)
    results: dict = {"batch": args.batch, "threads": args.threads, "contenders": {}}
    for name, run in contenders.items():
        row = {
            "images_per_second": len(batch) / throughput[name],
            "latency_ms": 1e3 * latency[name],
        }
        if test is not None:
            correct = sum(int((run(x).argmax(1) == y).sum()) for x, y in test)
            row["test_accuracy"] = correct / sum(len(y) for _, y in test)
        results["contenders"][name] = row
    rows = results["contenders"]
    results["int8_over_float_fastnet"] = (
        rows["fastnet int8"]["images_per_second"] / rows["fastnet float32"]["images_per_second"]
    )
    results["fastnet_int8_over_pytorch_int8"] = (
        rows["fastnet int8"]["images_per_second"] / rows["pytorch int8"]["images_per_second"]
    )
    print(
        f"MNIST CNN inference, batch {args.batch}, {args.threads} thread(s), best of {args.rounds}"
    )
    for name, row in rows.items():
        accuracy = f"  acc {row['test_accuracy']:.2%}" if "test_accuracy" in row else ""
        print(
            f"  {name:16s} {row['images_per_second']:9,.0f} img/s  "
            f"{row['latency_ms']:7.3f} ms @1{accuracy}"
        )
    print(
        f"  fastnet int8 / fastnet float32: {results['int8_over_float_fastnet']:.2f}x;  "
        f"fastnet int8 / pytorch int8: {results['fastnet_int8_over_pytorch_int8']:.2f}x"
    )
    return results


if __name__ == "__main__":
    main()
