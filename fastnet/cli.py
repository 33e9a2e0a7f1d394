"""The ``fastnet`` command line: train, info (and more subcommands as they land)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .train import DATASETS

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable:
    def register(function: Callable[[argparse.Namespace], int]) -> Callable:
        _COMMANDS[name] = function
        return function

    return register


# ===================================================================== train
def _announce_compilation() -> None:
    """Numba compiles each kernel on first use (cached afterwards): say so instead of sitting
    silent."""
    from .kernels import conv

    cache = Path(conv.__file__).parent / "__pycache__"
    if not any(cache.glob("conv.*.nbi")):
        print(
            "fastnet: first run: compiling the CPU kernels (cached for later runs, ~1 minute)...",
            flush=True,
        )


@command("train")
def train_command(args: argparse.Namespace) -> int:
    import fastnet as fn

    from .train import run

    config = {
        "dataset": args.dataset,
        "model": args.model,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "momentum": args.momentum,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "labels_per_class": args.labels_per_class,
        "augment": args.dataset == "cifar10" if args.augment is None else args.augment,
        "schedule": args.schedule,
        "label_smoothing": args.label_smoothing,
        "val_fraction": args.val_fraction,
        "patience": args.patience,
    }
    out = Path(args.out or f"runs/{args.dataset}-{args.model}")
    _announce_compilation()
    device = fn.device(args.device)
    print(
        f"fastnet: training {args.model} on {args.dataset} for {args.epochs} epochs on {device}, "
        f"batch {args.batch_size}, {args.optimizer} lr {args.lr}",
        flush=True,
    )
    start = time.perf_counter()
    result = run(
        config,
        args.epochs,
        str(out),
        device=device,
        data_dir=args.data_dir,
        resume=args.resume,
        progress=not args.no_progress,
    )
    history = result["history"]
    fn.save(result["model"].state_dict(), out / "model.safetensors")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    try:
        from .plots import plot_training_curves

        curves = {key: values for key, values in history.items() if key.endswith(("_loss", "_acc"))}
        print(f"fastnet: training curves in {plot_training_curves(curves, out / 'curves.png')}")
    except ImportError:
        print("fastnet: no training-curve plot (matplotlib missing: pip install 'fastnet[plot]')")
    print(
        f"fastnet: done in {time.perf_counter() - start:.0f}s: "
        f"test accuracy {100 * history['test_acc'][-1]:.2f}% "
        f"after {len(history['test_acc'])} epochs "
        f"({result['model'].num_parameters():,} parameters); "
        f"weights in {out / 'model.safetensors'}, checkpoint in {out / 'checkpoint.safetensors'}"
    )
    return 0


# ===================================================================== finetune
@command("finetune")
def finetune_command(args: argparse.Namespace) -> int:
    import fastnet as fn

    from . import data, finetune
    from .train import build_datasets, eval_transform, model_kwargs

    source = Path(args.source)
    try:
        config = fn.load_checkpoint(source)["config"]
    except ValueError:  # a plain state dict: the architecture comes from --model
        config = {}
    train_set, test_set = build_datasets(args.dataset, args.data_dir)
    config = {
        "model": config.get("model", args.model),
        "kwargs": config.get("kwargs") or model_kwargs(args.model, train_set.images),
    }
    if args.labels_per_class:
        train_set = data.subset(train_set, args.labels_per_class, seed=args.seed)
    modes = (
        finetune.MODES
        if args.mode == "all"
        else (args.mode,)
        if args.mode == "scratch"
        else (args.mode, "scratch")
    )
    print(
        f"fastnet: fine-tuning {config['model']} from {source} on {args.dataset} "
        f"({len(train_set):,} training images)"
        f", {args.epochs} epochs, batch {args.batch_size}, AdamW lr {args.lr}",
        flush=True,
    )
    if args.mode not in ("all", "scratch"):
        preview = fn.models.create(config["model"], **config["kwargs"])
        finetune.prepare(preview, args.mode, int(train_set.labels.max()) + 1, lr=args.lr)
        print(finetune.summary(preview))
    rows = finetune.transfer(
        fn.load(source),
        config,
        train_set,
        test_set,
        modes=modes,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        transform=eval_transform({"dataset": args.dataset}),
        progress=not args.no_progress,
    )
    print(finetune.format_table(rows))
    return 0


# ===================================================================== info
@command("info")
def info_command(args: argparse.Namespace) -> int:
    import numba
    import numpy

    from . import __version__
    from .backend import cuda_is_available
    from .kernels import _cuda

    print(
        f"fastnet {__version__} on Python {platform.python_version()} ({platform.machine()}, "
        f"{os.cpu_count()} CPUs)"
    )
    print(
        f"numpy {numpy.__version__}, numba {numba.__version__} "
        f"({numba.config.NUMBA_NUM_THREADS} threads)"
    )
    for package in ("numba_cuda", "cupy"):
        try:
            module = __import__(package)
            print(f"{package.replace('_', '-')} {getattr(module, '__version__', '?')}")
        except ImportError:
            print(f"{package.replace('_', '-')}: not installed (pip install 'fastnet[cuda]')")
    if _cuda.simulating():
        mode = (
            "simulated (NUMBA_ENABLE_CUDASIM=1: CUDA kernels run in Numba's simulator on the CPU)"
        )
    elif _cuda.gpu_available():
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        mode = (
            f"real GPU: {props['name'].decode()} "
            f"(compute capability {props['major']}.{props['minor']})"
        )
    else:
        mode = "not available (no GPU found)"
    print("devices: cpu" + (", cuda" if cuda_is_available() else ""))
    print(f"cuda: {mode}")
    return 0


# =================================================================== eval and bench (loaded on use)
@command("eval")
def eval_command(args: argparse.Namespace) -> int:
    from . import evaluate

    return evaluate.run(args)


@command("bench")
def bench_command(args: argparse.Namespace) -> int:
    from .bench.command import run

    return run(args)


# ===================================================================== entry point
def _add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastnet bench``, here so that building the parser loads no benchmark."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and one round: checks that every benchmark runs, not how fast",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results (and the machine) as JSON to PATH"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="time the CPU kernels (default) or the CUDA kernels on a real GPU",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for fastnet, the BLAS and PyTorch alike (default: "
        "fastnet's, FASTNET_NUM_THREADS or 1)",
    )
    parser.add_argument(
        "--only", metavar="TEXT", help="only the cases (or --train models) whose name contains TEXT"
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="race fastnet against PyTorch training the same models on the CPU (images/s)",
    )
    parser.add_argument(
        "--ptx",
        action="store_true",
        help="compile every CUDA kernel for sm_80/sm_90 and report registers and spills",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastnet", description="fastnet: deep learning on hand-written kernels"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for the kernels and the BLAS (default 1, or FASTNET_NUM_THREADS)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and report test accuracy")
    train.add_argument("--dataset", default="mnist", choices=DATASETS)
    train.add_argument(
        "--resume",
        default=None,
        metavar="CHECKPOINT",
        help="continue a run from its checkpoint (its config wins over these options)",
    )
    train.add_argument("--model", default="cnn", help="model name (see fastnet.models.names())")
    train.add_argument("--epochs", type=int, default=2)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--optimizer", default="adam", choices=("adam", "adamw", "sgd"))
    train.add_argument(
        "--lr", type=float, default=2e-3, help="learning rate (the peak of the one-cycle schedule)"
    )
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    train.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random crops (and flips on CIFAR-10); default: on for cifar10 only",
    )
    train.add_argument(
        "--schedule",
        default="onecycle",
        choices=("none", "cosine", "onecycle"),
        help="learning-rate schedule: onecycle (default) warms up linearly to --lr over the first "
        "30%% of the steps, then anneals it by a cosine to nearly zero",
    )
    train.add_argument("--label-smoothing", type=float, default=0.0)
    train.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="hold out this fraction of the training set for validation",
    )
    train.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop after this many epochs without a better validation accuracy",
    )
    train.add_argument("--device", default="cpu", help="cpu or cuda")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--labels-per-class",
        type=int,
        default=0,
        help="train on this many images of each class (0: the whole training set)",
    )
    train.add_argument(
        "--data-dir",
        default=None,
        help="folder with the dataset files (default: FASTNET_DATA, "
        "then the user cache, then download)",
    )
    train.add_argument("--out", default=None, help="run folder (default runs/DATASET-MODEL)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    tune = commands.add_parser(
        "finetune", help="fine-tune saved weights on a new dataset, next to training from scratch"
    )
    tune.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="WEIGHTS",
        help="a model.safetensors state dict or a checkpoint from fastnet train",
    )
    tune.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    tune.add_argument(
        "--mode",
        default="all",
        choices=("head", "full", "lora", "scratch", "all"),
        help="what trains (each mode is reported next to training from scratch)",
    )
    tune.add_argument(
        "--labels-per-class", type=int, default=100, help="training labels per class (0: all)"
    )
    tune.add_argument(
        "--model", default="cnn", help="architecture, when --from is a plain state dict"
    )
    tune.add_argument("--epochs", type=int, default=10)
    tune.add_argument("--batch-size", type=int, default=64)
    tune.add_argument("--lr", type=float, default=1e-3)
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--device", default="cpu")
    tune.add_argument("--data-dir", default=None)
    tune.add_argument("--no-progress", action="store_true")

    from . import evaluate

    evaluate.add_arguments(
        commands.add_parser(
            "eval",
            help="accuracy, per-class precision/recall/F1, confusion matrix and feature maps of a "
            "checkpoint",
        )
    )
    _add_bench_arguments(
        commands.add_parser(
            "bench",
            help="kernel timings against NumPy/PyTorch and the machine's ceilings; "
            "--train, --ptx, --device cuda",
        )
    )
    commands.add_parser("info", help="versions, devices, and whether CUDA is real or simulated")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        from .backend import set_num_threads

        set_num_threads(args.threads)
    return _COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
