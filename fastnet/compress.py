"""``fastnet compress``: make a trained model smaller and faster, and show what it cost.

The methods, applied in this order when several are asked for:

1. ``--prune-channels F``: structured pruning (``prune.prune_channels``): each convolution loses
   the fraction F of its filters with the smallest L1 norms and the layers are rebuilt smaller;
   the config's ``widths`` records the new sizes, so the saved model reloads by name.
2. ``--prune S``: global magnitude pruning to sparsity S (``prune.Pruner``), reached gradually
   (Zhu and Gupta's cubic schedule over the first :data:`PRUNE_RAMP` of the fine-tuning steps)
   while fine-tuning, or at once without fine-tuning; pruned weights stay exactly zero. The
   fully-connected layers then run as CSR sparse products where that measures faster
   (``nn.sparse_linear.sparsify``).
3. ``--finetune-epochs E`` of training at ``--lr`` (Adam; the run's own transform), after 1 and
   during 2.
4. ``--quantize int8``: post-training quantization (``fastnet.quantize``) calibrated on
   ``--calibration-batches`` training batches by ``--calibration`` (minmax or percentile), or,
   with ``--qat-epochs Q``, quantization-aware training (``fastnet.qat``) first.

Into ``--out`` go the float result as ``model.safetensors`` + ``config.json`` (which ``fastnet
eval``, ``export`` and ``compress`` read) or, with ``--quantize``, ``model-int8.safetensors``;
and ``compression.csv``, the table against the original model that is also printed: file size,
parameters (the nonzero ones after unstructured pruning), test accuracy, images/s at batch 256 and
latency at batch 1 (``fastnet.model_table``).
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from . import models, nn, prune, qat, quantize
from .backend import get_device
from .checkpoint import save
from .cli_options import UsageError
from .run_config import DATASETS, build_datasets, eval_transform, train_transform

__all__ = ["add_arguments", "run", "compress"]

PRUNE_RAMP = 0.8  # the sparsity schedule ends here; the rest of fine-tuning recovers at S
PRUNE_UPDATES = 20  # the schedule raises the sparsity this many times
MODEL_FILE, QUANTIZED_FILE, TABLE_FILE = (
    "model.safetensors",
    "model-int8.safetensors",
    "compression.csv",
)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastnet compress``."""
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="MODEL_FILE",
        help="a run's model.safetensors (its config.json names the model) or a checkpoint",
    )
    parser.add_argument("--out", required=True, help="the folder for the results")
    parser.add_argument(
        "--quantize", choices=("int8",), help="run convolutions and linear layers in int8"
    )
    parser.add_argument(
        "--calibration",
        choices=quantize.METHODS,
        default="percentile",
        help="activation ranges: largest |x| or its 99.99th percentile",
    )
    parser.add_argument(
        "--calibration-batches", type=_count, default=8, help="batches of 256 calibration reads"
    )
    parser.add_argument(
        "--qat-epochs",
        type=_count,
        default=0,
        help="quantization-aware training epochs before int8",
    )
    parser.add_argument(
        "--prune",
        type=_fraction,
        metavar="S",
        help="unstructured sparsity to reach (global magnitude)",
    )
    parser.add_argument(
        "--prune-channels",
        type=_fraction,
        metavar="F",
        help="fraction of each convolution's filters to remove",
    )
    parser.add_argument(
        "--finetune-epochs",
        type=_count,
        default=0,
        help="fine-tuning epochs after or while pruning",
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (Adam)")
    parser.add_argument("--batch-size", type=int, default=128, help="fine-tuning batch size")
    parser.add_argument(
        "--dataset", choices=DATASETS, help="default: the one the model was trained on"
    )
    parser.add_argument(
        "--data-dir",
        help="folder with the dataset files (default: FASTNET_DATA, the cache, then download)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="fine-tuning data order and calibration batches"
    )


def _finetune(
    model: nn.Module,
    train_loader: Any,
    epochs: int,
    lr: float,
    device: Any,
    pruner_target: float | None,
    log: Any,
) -> None:
    """``epochs`` of Adam on ``model``; with ``pruner_target``, magnitude pruning raised to it on
    the gradual schedule as the steps go."""
    from . import optim
    from .train import fit

    optimizer = optim.Adam(model.parameters(), lr=lr)
    if pruner_target is not None:
        pruner = prune.Pruner(model, optimizer)
        total = max(1, int(epochs * len(train_loader) * PRUNE_RAMP))
        every = max(1, total // PRUNE_UPDATES)
        steps = [0]

        def schedule(*_: Any) -> None:
            steps[0] += 1
            if steps[0] % every == 0 or steps[0] == total:
                pruner.step(min(steps[0], total), pruner_target, total)

        pruner.step(0, pruner_target, total)  # the schedule's first step (sparsity 0 → small)
        optimizer.register_step_post_hook(schedule)
    fit(model, train_loader, optimizer, epochs, device=device, log=log)
    if pruner_target is not None:
        pruner.prune(pruner_target)  # exactly the target, however the steps fell
        pruner.remove()


def compress(
    model: nn.Module,
    config: dict,
    train_set: Any,
    *,
    prune_fraction: float | None = None,
    channel_fraction: float | None = None,
    finetune_epochs: int = 0,
    lr: float = 1e-3,
    batch_size: int = 128,
    int8: bool = False,
    calibration: str = "percentile",
    calibration_batches: int = 8,
    qat_epochs: int = 0,
    device: Any = "cpu",
    seed: int = 0,
    log: Any = print,
) -> tuple[Any, dict]:
    """The compressed model (a Module, or a QuantizedModel with ``int8``) and its config (the
    float model's, with ``widths`` after channel pruning and a ``compression`` record)."""
    from .data import DataLoader

    device = get_device(device)
    config = json.loads(json.dumps(config))
    record: dict[str, Any] = {}
    model = model.to(device)
    loader = DataLoader(
        train_set, batch_size=batch_size, shuffle=True, seed=seed, transform=train_transform(config)
    )
    if channel_fraction is not None:
        model, _ = prune.prune_channels(model, channel_fraction)
        widths = [layer.out_channels for layer in model.modules() if type(layer) is nn.Conv2d]
        config.setdefault("kwargs", {})["widths"] = widths
        record["prune_channels"] = channel_fraction
        log(f"fastnet compress: channels kept per convolution {widths}")
    if prune_fraction is not None and not finetune_epochs:
        prune.Pruner(model).prune(prune_fraction)
    if finetune_epochs:
        _finetune(model, loader, finetune_epochs, lr, device, prune_fraction, log)
        record["finetune_epochs"] = finetune_epochs
    if prune_fraction is not None:
        record["prune"] = prune_fraction
        log(
            f"fastnet compress: sparsity {prune.sparsity(model).overall:.3f} of the prunable "
            f"weights"
        )
    if not int8:
        config["compression"] = record
        return model, config
    record |= {"quantize": "int8", "calibration": "qat" if qat_epochs else calibration}
    config["compression"] = record
    if qat_epochs:
        prepared = qat.prepare_qat(model)
        _finetune(prepared, loader, qat_epochs, lr / 10, device, None, log)
        prepared.eval()
        return qat.convert(prepared, config, device), config
    rng = np.random.default_rng(seed)
    calibration_loader = DataLoader(
        train_set,
        batch_size=256,
        shuffle=True,
        seed=int(rng.integers(1 << 30)),
        transform=eval_transform(config),
    )
    batches = itertools.islice(calibration_loader, calibration_batches)
    model.eval()
    return quantize.quantize_model(
        model, batches, calibration, config=config, device=device
    ), config


def _check_options(args: argparse.Namespace, config: dict) -> None:
    if not (args.quantize or args.prune or args.prune_channels):
        raise UsageError("nothing to do: give --quantize int8, --prune S or --prune-channels F")
    if args.qat_epochs and not args.quantize:
        raise UsageError("--qat-epochs needs --quantize int8")
    if args.finetune_epochs and not (args.prune or args.prune_channels):
        raise UsageError(
            "--finetune-epochs fine-tunes after pruning: give --prune or --prune-channels"
        )
    if args.prune_channels:
        builder = models.base._REGISTRY.get(config["model"])
        if builder is None or "widths" not in inspect.signature(builder).parameters:
            raise UsageError(
                f"--prune-channels: model {config['model']!r} cannot be rebuilt at other widths "
                f"(its builder takes no widths)"
            )
    if args.batch_size < 1 or not args.lr > 0:
        raise UsageError("--batch-size and --lr must be positive")


def run(args: argparse.Namespace) -> int:
    """``fastnet compress``: 0 on success."""
    from . import export, model_table

    source = Path(args.source)
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    try:
        model, config = export.load_model_file(source)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        raise UsageError(" ".join(str(error).split())) from None
    _check_options(args, config)
    out = Path(args.out)
    dataset = args.dataset or config.get("dataset")
    if dataset is None:
        raise UsageError(f"{source}: its config names no dataset: give --dataset")
    config = dict(config, dataset=dataset)
    try:
        out.mkdir(parents=True, exist_ok=True)
        train_set, test_set = build_datasets(dataset, args.data_dir)
    except (OSError, ValueError) as error:
        raise UsageError(" ".join(str(error).split())) from None
    original = model.to(args.device)
    compressed, new_config = compress(
        models.base.copy_model(model),
        config,
        train_set,
        prune_fraction=args.prune,
        channel_fraction=args.prune_channels,
        finetune_epochs=args.finetune_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        int8=args.quantize == "int8",
        calibration=args.calibration,
        calibration_batches=args.calibration_batches,
        qat_epochs=args.qat_epochs,
        device=args.device,
        seed=args.seed,
    )
    if isinstance(compressed, quantize.QuantizedModel):
        path = quantize.save_quantized(compressed, out / QUANTIZED_FILE)
        timed = compressed
    else:
        path = save(compressed.state_dict(), out / MODEL_FILE)
        (out / "config.json").write_text(json.dumps(new_config, indent=2) + "\n")
        timed = compressed
        if args.prune:
            from .nn.sparse_linear import sparsify

            nonzero = sum(int(np.count_nonzero(p.numpy())) for p in compressed.parameters())

            for row in sparsify(timed):
                verdict = "runs as CSR" if row["chosen"] else "stays dense"
                print(
                    f"fastnet compress: {row['name']} ({row['density']:.0%} nonzero) {verdict}: "
                    f"{row['sparse_ms']:.2f} ms CSR, {row['dense_ms']:.2f} ms dense at batch 256"
                )
    rows = [("original", original, source), (_label(args), timed, path)]
    table = model_table.compare_models(
        rows, test_set, args.device, transform=eval_transform(config)
    )
    if args.prune and not args.quantize:  # a pruned model's parameters are its nonzero ones
        table[1]["parameters"] = nonzero
    print(model_table.format_table(table))
    model_table.save_csv(table, out / TABLE_FILE)
    print(f"fastnet compress: wrote {path} and {out / TABLE_FILE}")
    return 0


def _label(args: argparse.Namespace) -> str:
    parts = []
    if args.prune_channels:
        parts.append(f"channels -{args.prune_channels:.0%}")
    if args.prune:
        parts.append(f"sparse {args.prune:.0%}")
    if args.quantize:
        parts.append("int8 (QAT)" if args.qat_epochs else f"int8 ({args.calibration})")
    return ", ".join(parts)
