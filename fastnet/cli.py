"""The ``fastnet`` command line: train, info (and more subcommands as they land)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable:
    def register(function: Callable[[argparse.Namespace], int]) -> Callable:
        _COMMANDS[name] = function
        return function
    return register


# ===================================================================== train
DATASETS = ("mnist", "fashion-mnist")


def build_datasets(name: str, data_dir: str | None) -> tuple[Any, Any]:
    from . import data

    classes = {"mnist": data.MNIST, "fashion-mnist": data.FashionMNIST}
    if name not in classes:
        raise SystemExit(f"fastnet: unknown dataset {name!r}; choose from {', '.join(classes)}")
    return classes[name](root=data_dir, train=True), classes[name](root=data_dir, train=False)


def build_optimizer(name: str, parameters: Any, lr: float, weight_decay: float, momentum: float) -> Any:
    from . import optim

    if name == "adam":
        return optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    raise SystemExit(f"fastnet: unknown optimizer {name!r}; choose from adam, adamw, sgd")


def _announce_compilation() -> None:
    """Numba compiles each kernel on first use (cached afterwards): say so instead of sitting silent."""
    from .kernels import conv

    cache = Path(conv.__file__).parent / "__pycache__"
    if not any(cache.glob("conv.*.nbi")):
        print("fastnet: first run: compiling the CPU kernels (cached for later runs, ~1 minute)...", flush=True)


@command("train")
def train_command(args: argparse.Namespace) -> int:
    import fastnet as fn
    from .train import fit

    if args.seed is not None:
        fn.manual_seed(args.seed)
    device = fn.device(args.device)
    train_set, test_set = build_datasets(args.dataset, args.data_dir)
    channels, side = train_set.images.shape[1], train_set.images.shape[-1]
    config = {"model": args.model, "kwargs": {"classes": 10}}
    if args.model == "cnn":
        config["kwargs"].update(channels=channels, image_size=side)
    elif args.model == "mlp":
        config["kwargs"].update(in_features=channels * side * side)
    model = fn.models.create(args.model, **config["kwargs"]).to(device)
    optimizer = build_optimizer(args.optimizer, model.parameters(), args.lr, args.weight_decay, args.momentum)
    out = Path(args.out or f"runs/{args.dataset}-{args.model}")
    train_loader = fn.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    test_loader = fn.data.DataLoader(test_set, batch_size=512)
    _announce_compilation()
    params = model.num_parameters()
    print(f"fastnet: training {args.model} ({params:,} parameters) on {args.dataset} "
          f"({len(train_set):,} train / {len(test_set):,} test) for {args.epochs} epochs on {device}, "
          f"batch {args.batch_size}, {args.optimizer} lr {args.lr}", flush=True)
    start = time.perf_counter()
    history = fit(model, train_loader, optimizer, args.epochs, test_loader=test_loader, device=device,
                  checkpoint_path=str(out / "checkpoint.safetensors"), config=config,
                  progress=not args.no_progress)
    fn.save(model.state_dict(), out / "model.safetensors")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    print(f"fastnet: done in {time.perf_counter() - start:.0f}s: test accuracy {100 * history['test_acc'][-1]:.2f}% "
          f"after {args.epochs} epochs; weights in {out / 'model.safetensors'}, "
          f"checkpoint in {out / 'checkpoint.safetensors'}")
    return 0


# ===================================================================== info
@command("info")
def info_command(args: argparse.Namespace) -> int:
    import numba
    import numpy

    from . import __version__
    from .backend import cuda_is_available
    from .kernels import _cuda

    print(f"fastnet {__version__} on Python {platform.python_version()} ({platform.machine()}, "
          f"{os.cpu_count()} CPUs)")
    print(f"numpy {numpy.__version__}, numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads)")
    for package in ("numba_cuda", "cupy"):
        try:
            module = __import__(package)
            print(f"{package.replace('_', '-')} {getattr(module, '__version__', '?')}")
        except ImportError:
            print(f"{package.replace('_', '-')}: not installed (pip install 'fastnet[cuda]')")
    if _cuda.simulating():
        mode = "simulated (NUMBA_ENABLE_CUDASIM=1: CUDA kernels run in Numba's simulator on the CPU)"
    elif _cuda.gpu_available():
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        mode = f"real GPU: {props['name'].decode()} (compute capability {props['major']}.{props['minor']})"
    else:
        mode = "not available (no GPU found)"
    print("devices: cpu" + (", cuda" if cuda_is_available() else ""))
    print(f"cuda: {mode}")
    return 0


# ===================================================================== entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnet", description="fastnet: deep learning on hand-written kernels")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and report test accuracy")
    train.add_argument("--dataset", default="mnist", choices=DATASETS)
    train.add_argument("--model", default="cnn", help="model name (see fastnet.models.names())")
    train.add_argument("--epochs", type=int, default=2)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--optimizer", default="adam", choices=("adam", "adamw", "sgd"))
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    train.add_argument("--device", default="cpu", help="cpu or cuda")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-dir", default=None, help="folder with the dataset files (default: FASTNET_DATA, "
                                                        "then the user cache, then download)")
    train.add_argument("--out", default=None, help="run folder (default runs/DATASET-MODEL)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    commands.add_parser("info", help="versions, devices, and whether CUDA is real or simulated")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
