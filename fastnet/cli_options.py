"""The options of every ``fastnet`` subcommand: the parser, its checked types, the defaults of a
training run, and :class:`UsageError`, the one exception for a mistake on the command line.

Building the parser loads no workflow (no benchmark, no dataset): `fastnet --help` stays fast.
Every parse error is one line (``UsageError``), not argparse's usage block.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from . import models
from .train import DATASETS, check_setting


class UsageError(Exception):
    """A mistake in what the user asked for: reported as one line on stderr, exit code 2."""

    def __init__(self, message: str, prog: str | None = None) -> None:
        super().__init__(message)
        self.prog = prog


# a new run's settings; the options default to None so that a resume can tell what was given
TRAIN_DEFAULTS: dict[str, Any] = {
    "dataset": "mnist",
    "model": "cnn",
    "epochs": 2,
    "batch_size": 64,
    "optimizer": "adam",
    "lr": 2e-3,
    "weight_decay": 0.0,
    "momentum": 0.9,
    "augment": None,
    "schedule": "onecycle",
    "label_smoothing": 0.0,
    "val_fraction": 0.0,
    "patience": None,
    "keep_best": False,
    "checkpoint_every": 0,
    "seed": 0,
    "labels_per_class": 0,
    "sync_batchnorm": False,
}

SYNC_BATCHNORM_HELP = (
    "under mpiexec: batch statistics over every rank's images (SyncBatchNorm), not each rank's own"
)


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
        "--only",
        metavar="TEXT",
        help="only the cases (or --train/--infer models) whose name contains TEXT",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="race fastnet against PyTorch training the same models on the CPU (images/s)",
    )
    parser.add_argument(
        "--infer",
        action="store_true",
        help="race fastnet against PyTorch predicting with the same models on the CPU (batch-1 "
        "latency, batch-256 images/s)",
    )
    parser.add_argument(
        "--ptx",
        action="store_true",
        help="compile every CUDA kernel for sm_80/sm_90 and report registers and spills",
    )


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is None or False (which mean "not given")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in action.help:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(f"{message} (see {self.prog} --help)", self.prog)


def _setting(key: str, convert: type) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then check it with the run config's rule."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {convert.__name__}: {text!r}") from None
        try:
            return check_setting(key, value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _device_name(text: str) -> str:
    name, _, index = text.partition(":")
    if name not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise argparse.ArgumentTypeError(f"expected cpu or cuda (or cuda:N), got {text!r}")
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _shape(text: str) -> tuple[int, ...]:
    """Comma-separated positive sizes: "1,28,28"."""
    try:
        sizes = tuple(int(size) for size in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected sizes >= 1 such as 1,28,28, got {text!r}")
    return sizes


def _add_common(parser: argparse.ArgumentParser, device: bool = True) -> None:
    """--threads (also accepted after the subcommand) and --device."""
    parser.add_argument(
        "--threads",
        type=_positive,
        default=argparse.SUPPRESS,  # leaves the value given before the subcommand in place
        help="CPU threads for the kernels and the BLAS (default 1, or FASTNET_NUM_THREADS)",
    )
    if device:
        parser.add_argument("--device", type=_device_name, default="cpu", help="cpu or cuda")


def _add_train_arguments(train: argparse.ArgumentParser) -> None:
    def option(flag: str, help: str, convert: type | None = None, **kwargs: Any) -> None:
        key = flag[2:].replace("-", "_")
        default = TRAIN_DEFAULTS[key]
        if default is not None and default is not False:
            help += f" (default: {default})"
        if convert is not None:
            kwargs["type"] = _setting(key, convert)
        train.add_argument(flag, default=None, help=help, **kwargs)

    option("--dataset", "dataset", choices=DATASETS)
    option("--model", "model", choices=models.names())
    option("--epochs", "train up to this epoch (resume: default the run's planned epochs)", int)
    option("--batch-size", "images per step", int)
    option("--optimizer", "optimizer", choices=("adam", "adamw", "sgd"))
    option("--lr", "learning rate (the peak of the one-cycle schedule)", float)
    option("--weight-decay", "weight decay", float)
    option("--momentum", "SGD momentum, in [0, 1)", float)
    option(
        "--augment",
        "random crops (and flips on CIFAR-10) (default: on for cifar10 only)",
        action=argparse.BooleanOptionalAction,
    )
    option(
        "--schedule",
        "learning-rate schedule: onecycle warms up linearly to --lr over the first 30%% of the "
        "steps, then anneals it by a cosine to nearly zero; a run with a schedule cannot be "
        "resumed past the epochs it was planned for",
        choices=("none", "cosine", "onecycle"),
    )
    option("--label-smoothing", "label smoothing, in [0, 1)", float)
    option("--val-fraction", "hold out this fraction of the training set for validation", float)
    option("--patience", "stop after this many epochs without a better validation accuracy", int)
    option(
        "--keep-best",
        "keep the weights of the best validation accuracy (best.safetensors) and end the run "
        "with them (needs --val-fraction)",
        action="store_true",
    )
    option("--checkpoint-every", "also keep checkpoint_epochN.safetensors every N epochs", int)
    option("--seed", "random seed (data order, initialisation, dropout)", int)
    option("--labels-per-class", "train on this many images of each class (0: the whole set)", int)
    option("--sync-batchnorm", SYNC_BATCHNORM_HELP, action="store_true")
    train.add_argument(
        "--resume",
        default=None,
        metavar="CHECKPOINT",
        help="continue a run from its checkpoint, with its saved settings: only --epochs, "
        "--patience, --keep-best and --checkpoint-every may change; --out defaults to the "
        "checkpoint's folder",
    )
    train.add_argument(
        "--data-dir",
        default=None,
        help="folder with the dataset files, used alone (default: FASTNET_DATA, "
        "then the user cache, then download)",
    )
    train.add_argument(
        "--out",
        default=None,
        help="run folder (default runs/DATASET-MODEL, or the resumed checkpoint's folder)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_common(train)


def _fine_tuning_modes(text: str) -> tuple[str, ...]:
    from .finetune import parse_modes

    try:
        return parse_modes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _label_budgets(text: str) -> tuple[int, ...]:
    """A comma-separated list of labels per class (0: all), each once."""
    budgets = tuple(_setting("labels_per_class", int)(part.strip()) for part in text.split(","))
    if len(set(budgets)) < len(budgets):
        raise argparse.ArgumentTypeError(f"a budget is given twice in {text!r}")
    return budgets


def _add_finetune_arguments(tune: argparse.ArgumentParser) -> None:
    tune.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="WEIGHTS",
        help="a model.safetensors state dict or a checkpoint from fastnet train, or the "
        "encoder.safetensors of fastnet pretrain (its features; the head is new)",
    )
    tune.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    tune.add_argument(
        "--mode",
        type=_fine_tuning_modes,
        default="all",
        metavar="MODES",
        help="comma-separated modes: linear (frozen pretrained part, new head; alias head), "
        "full, lora, or all; scratch (the same network from scratch on the same labels) is "
        "always trained once per budget and reported beside each",
    )
    tune.add_argument(
        "--labels-per-class",
        type=_label_budgets,
        default="100",
        metavar="BUDGETS",
        help="comma-separated label budgets, training images per class (0: all), e.g. 1,10,100; "
        "class-balanced, drawn with --seed, the same subset for every mode of a budget",
    )
    tune.add_argument(
        "--model",
        default="cnn",
        choices=models.names(),
        help="architecture, when --from is a plain state dict",
    )
    tune.add_argument(
        "--epochs", type=_setting("epochs", int), default=10, help="epochs of each mode"
    )
    tune.add_argument(
        "--batch-size", type=_setting("batch_size", int), default=64, help="images per step"
    )
    tune.add_argument("--lr", type=_setting("lr", float), default=1e-3, help="AdamW learning rate")
    tune.add_argument(
        "--pretrained-lr-factor",
        type=_positive_number,
        default=None,
        help="full and lora train the new head alone for half the epochs, then the pretrained "
        "part too at this fraction of --lr (default: full 0.01, lora 0.1, for self-supervised "
        "encoders; 1 for a model from another task, which must change more)",
    )
    tune.add_argument(
        "--seed", type=_setting("seed", int), default=0, help="random seed (subset, data order)"
    )
    tune.add_argument("--data-dir", default=None, help="folder with the dataset files, used alone")
    tune.add_argument(
        "--out",
        default=None,
        help="write the table to OUT/finetune_table.json and .txt, and each model to "
        "OUT/BUDGET/MODE/model.safetensors, BUDGET being N-per-class or all-labels (and, for "
        "lora, the adapter alone to OUT/BUDGET/lora/adapter.safetensors)",
    )
    tune.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_common(tune)


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    from .pretrain import ENCODERS, METHOD_DEFAULTS, METHODS

    def per_method(key: str) -> str:
        shown = [f"{m} {d[key]}" for m, d in METHOD_DEFAULTS.items() if d[key] is not None]
        return f" (default: {', '.join(shown)})"

    parser.add_argument(
        "--method",
        required=True,
        choices=METHODS,
        help="simclr (contrastive, any model), mae (masked patches, vit), denoise (convolutional "
        "models)",
    )
    parser.add_argument("--dataset", default="mnist", choices=DATASETS, help="training images")
    parser.add_argument("--model", default="cnn", choices=models.names(), help="whose features")
    parser.add_argument(
        "--epochs", type=_setting("epochs", int), help="epochs" + per_method("epochs")
    )
    parser.add_argument(
        "--batch-size",
        type=_setting("batch_size", int),
        help="images per step" + per_method("batch_size"),
    )
    parser.add_argument(
        "--lr",
        type=_setting("lr", float),
        help="AdamW peak learning rate (linear warm-up, then cosine)" + per_method("lr"),
    )
    parser.add_argument(
        "--temperature",
        type=_positive_number,
        help="NT-Xent temperature, simclr only" + per_method("temperature"),
    )
    parser.add_argument(
        "--encoder",
        choices=ENCODERS,
        help="the part of the model pretrained, simclr's choice: trunk (all but the last Linear) "
        "or features (the convolutional or transformer features alone)" + per_method("encoder"),
    )
    parser.add_argument(
        "--seed", type=_setting("seed", int), default=0, help="random seed (init, order, views)"
    )
    parser.add_argument("--sync-batchnorm", action="store_true", help=SYNC_BATCHNORM_HELP)
    parser.add_argument(
        "--out",
        default=None,
        help="run folder for encoder.safetensors, history.json, config.json and steps.csv "
        "(default runs/DATASET-MODEL-METHOD)",
    )
    parser.add_argument(
        "--data-dir", default=None, help="folder with the dataset files, used alone"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_common(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastnet",
        description="fastnet: deep learning on hand-written kernels",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="CPU threads for the kernels and the BLAS (default 1, or FASTNET_NUM_THREADS)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def subcommand(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, formatter_class=_HelpFormatter)

    _add_train_arguments(subcommand("train", "train a model and report test accuracy"))
    _add_finetune_arguments(
        subcommand(
            "finetune", "fine-tune saved weights on a new dataset, next to training from scratch"
        )
    )
    _add_pretrain_arguments(
        subcommand(
            "pretrain",
            "pretrain a model's features without labels (SimCLR, masked or denoising "
            "reconstruction), for fastnet finetune --from",
        )
    )
    predict = subcommand("predict", "the top classes of images, by a trained model")
    predict.add_argument("checkpoint", help="a checkpoint written by fastnet train")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    predict.add_argument("--top-k", type=_positive, default=5, help="classes shown per image")
    predict.add_argument(
        "--resize",
        action="store_true",
        help="resize (bilinear) an image whose size differs from the model's input (else refused)",
    )
    _add_common(predict)

    export = subcommand(
        "export", "write a trained model as an ONNX file, checked against fastnet by onnxruntime"
    )
    export.add_argument(
        "model_file",
        help="a checkpoint, or a run's model.safetensors (its config.json names the model)",
    )
    export.add_argument("--format", choices=("onnx",), default="onnx", help="the file format")
    export.add_argument(
        "--out", metavar="PATH", help="the file to write (default: MODEL_FILE with suffix .onnx)"
    )
    export.add_argument(
        "--input-shape",
        type=_shape,
        metavar="C,H,W",
        help="one input's shape, C,H,W for images (default: from the model's config)",
    )
    _add_common(export, device=False)

    from . import compress, distill, evaluate

    compress_parser = subcommand(
        "compress",
        "quantize to int8, prune or remove channels of a trained model; a table against it",
    )
    compress.add_arguments(compress_parser)
    _add_common(compress_parser)
    distill_parser = subcommand(
        "distill", "train a small student from a trained teacher, beside the student alone"
    )
    distill.add_arguments(distill_parser)
    _add_common(distill_parser, device=False)  # its own --device

    evaluate_parser = subcommand(
        "eval",
        "accuracy, per-class precision/recall/F1, confusion matrix and feature maps of a "
        "checkpoint",
    )
    evaluate.add_arguments(evaluate_parser)
    _add_common(evaluate_parser, device=False)
    bench = subcommand(
        "bench",
        "kernel timings against NumPy/PyTorch and the machine's ceilings; "
        "--train, --ptx, --device cuda",
    )
    _add_bench_arguments(bench)
    _add_common(bench, device=False)
    _add_common(
        subcommand("info", "versions, devices, and whether CUDA is real or simulated"), device=False
    )
    return parser
