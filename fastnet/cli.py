"""The ``fastnet`` command line: train, pretrain, finetune, predict, export, compress, distill,
eval, bench, info.

Every subcommand validates its options before it writes anything: a user error (a value out of
range, a missing file, an unknown name, a device that is not there, a folder that cannot be
written) is one line on stderr and exit code 2. The expected failures of the library calls a
command makes (FileNotFoundError, ValueError from a checkpoint or a dataset, ...) become such
lines too; anything else is a bug and shows its traceback. A training run whose loss turns NaN
or infinite stops with exit code 1, its files left as the last good epoch wrote them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .cli_options import TRAIN_DEFAULTS, UsageError, build_parser
from .extras import install_hint

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable:
    def register(function: Callable[[argparse.Namespace], int]) -> Callable:
        _COMMANDS[name] = function
        return function

    return register


# ===================================================================== checks shared by commands
@contextlib.contextmanager
def _user_errors(*kinds: type[BaseException], prefix: str = "") -> Iterator[None]:
    """Turn the expected exceptions of a library call into a UsageError (one line)."""
    expected = kinds or (ValueError, FileNotFoundError)
    try:
        yield
    except expected as error:
        raise UsageError(prefix + " ".join(str(error).split())) from None


def _device(name: str, ranks: bool = False) -> Any:
    """The device ``--device`` names; with ``ranks``, after joining the run's other ranks (when
    mpiexec started several), before anything touches a GPU: NCCL gives each rank its own."""
    from . import backend

    if ranks:
        from . import distributed

        with _user_errors(ImportError, prefix="mpiexec: "):
            distributed.init_process_group(device=name)
    if name.startswith("cuda") and not backend.cuda_is_available():
        raise UsageError(
            f"--device {name}: no CUDA GPU found (install the cuda extra, {install_hint('cuda')}, "
            "on a machine with an NVIDIA GPU, or set NUMBA_ENABLE_CUDASIM=1 to simulate one)"
        )
    with _user_errors(ValueError, RuntimeError, prefix="--device: "):
        return backend.get_device(name)


def _check_global_batch(batch_size: int) -> None:
    """Under mpiexec --batch-size is the global batch: each rank takes an equal part of it.
    Checked before the ranks join, where every rank meets the same error."""
    from . import distributed

    ranks = distributed.launched_ranks() or 1
    if batch_size % ranks:
        raise UsageError(
            f"--batch-size {batch_size} is the global batch: it must divide evenly over the "
            f"{ranks} ranks"
        )


def _datasets(name: str, data_dir: str | None) -> tuple[Any, Any]:
    """The (train, test) sets; with ``data_dir``, read from that folder and nowhere else."""
    from . import data
    from .train import build_datasets

    root = Path(data_dir) if data_dir is not None else None
    if root is not None and not root.is_dir():
        raise UsageError(f"--data-dir {data_dir}: no such folder")
    try:
        sets = build_datasets(name, data_dir, download=root is None)
    except data.DatasetNotFoundError:  # only with root: download is allowed otherwise
        raise UsageError(f"--data-dir {data_dir} holds no {name} dataset files") from None
    except (data.DownloadError, data.ChecksumError, data.CorruptFileError) as error:
        raise UsageError(f"{name}: " + " ".join(str(error).split())) from None
    if root is not None:  # the lookup goes on to the user cache: refuse a copy found there
        found = Path(sets[0].directory).resolve()
        if root.resolve() not in (found, *found.parents):
            raise UsageError(
                f"--data-dir {data_dir} holds no {name} dataset files (only the copy in {found})"
            )
    return sets


def _check_labels_per_class(count: int, train_set: Any, name: str) -> None:
    import numpy as np

    smallest = int(np.bincount(train_set.labels).min())
    if count > smallest:
        raise UsageError(
            f"--labels-per-class {count}: the smallest class of {name} has {smallest} "
            f"training images"
        )


def _check_writable(out: Path) -> None:
    """Create ``out`` and write (then remove) a probe file in it, so that a folder that cannot
    be written fails now rather than after an epoch of training."""
    probe = out / f".fastnet-probe-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"--out {out}: cannot write there ({error.strerror or error})") from None


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


# ===================================================================== train
def _ranks_text() -> str:
    """ ", on R ranks" when mpiexec started several, else nothing."""
    from . import distributed

    ranks = distributed.get_world_size()
    return f", on {ranks} ranks" if ranks > 1 else ""


def _describe(config: dict, device: Any) -> str:
    from . import distributed

    batch, ranks = config["batch_size"], distributed.get_world_size()
    if ranks > 1:
        batch = f"{batch} ({ranks} ranks x {batch // ranks})"
    return (
        f"{config['model']} on {config['dataset']} on {device}, batch {batch}, "
        f"{config['optimizer']} lr {config['lr']}, {config.get('schedule', 'none')} schedule"
    )


@command("train")
def train_command(args: argparse.Namespace) -> int:
    import fastnet as fn

    from . import train

    given = {key: getattr(args, key) for key in TRAIN_DEFAULTS if getattr(args, key) is not None}
    epochs = given.pop("epochs", None)
    if args.resume is not None:
        with _user_errors(prefix="--resume: "):
            saved = fn.load_checkpoint(args.resume)
            config, epochs = train.resumed_config(saved, epochs, given)
        out = Path(args.out) if args.out else Path(args.resume).parent
        plan = f"resuming {args.resume} after epoch {saved['epoch']}, up to epoch {epochs}"
    else:
        config = {**TRAIN_DEFAULTS, **given}
        del config["epochs"]
        if config["augment"] is None:
            config["augment"] = config["dataset"] == "cifar10"
        epochs = epochs or TRAIN_DEFAULTS["epochs"]
        out = Path(args.out or f"runs/{config['dataset']}-{config['model']}")
        plan = f"training for {epochs} epoch" + ("s" if epochs > 1 else "")
    with _user_errors():
        train.validate_config(dict(config, epochs=epochs))
    _check_global_batch(config["batch_size"])
    device = _device(args.device, ranks=True)
    datasets = _datasets(config["dataset"], args.data_dir)
    if config.get("labels_per_class"):
        _check_labels_per_class(config["labels_per_class"], datasets[0], config["dataset"])
    _check_writable(out)
    _announce_compilation()
    print(f"fastnet: {plan}: {_describe(config, device)}; run folder {out}", flush=True)
    start = time.perf_counter()
    try:
        result = train.run(
            config,
            epochs,
            out,
            device=device,
            datasets=datasets,
            resume=args.resume,
            progress=not args.no_progress,
        )
    except train.NonFiniteLossError as error:
        print(
            f"fastnet train: {error}; {out} keeps the files of the last good epoch",
            file=sys.stderr,
        )
        return 1
    if not fn.distributed.is_main_process():
        return 0  # rank 0 writes the weights and the plot
    history = result["history"]
    fn.save(result["model"].state_dict(), out / "model.safetensors")
    try:
        from .plots import plot_training_curves

        curves = {key: values for key, values in history.items() if key.endswith(("_loss", "_acc"))}
        with open(out / "steps.csv") as steps:  # the schedule step by step, for the lr panel
            lrs = [float(row["lr"]) for row in csv.DictReader(steps)]
        plot = plot_training_curves(curves, out / "curves.png", lr=lrs)
        print(f"fastnet: training curves in {plot}")
    except ImportError:
        print(f"fastnet: no training-curve plot (matplotlib missing: {install_hint('plot')})")
    kept = len(history["test_acc"]) - 1
    note = ""
    if result["config"].get("keep_best") and history.get("val_acc"):
        kept = max(range(len(history["val_acc"])), key=history["val_acc"].__getitem__)
        note = f" (the weights of epoch {kept + 1}, best on validation)"
    print(
        f"fastnet: done in {time.perf_counter() - start:.0f}s: "
        f"test accuracy {100 * history['test_acc'][kept]:.2f}%{note} "
        f"after {len(history['test_acc'])} epochs "
        f"({result['model'].num_parameters():,} parameters); "
        f"weights in {out / 'model.safetensors'}, checkpoint in {out / 'checkpoint.safetensors'}"
    )
    return 0


# ===================================================================== finetune
@command("finetune")
def finetune_command(args: argparse.Namespace) -> int:
    import numpy as np

    import fastnet as fn

    from . import finetune, finetune_table
    from .train import NonFiniteLossError, eval_transform, model_kwargs

    device = _device(args.device)
    source = Path(args.source)
    with _user_errors(prefix="--from: "):
        pretrained = fn.load(source)
    try:
        saved = fn.load_checkpoint(source)["config"]
    except ValueError:  # a plain state dict: the architecture comes from --model
        saved = {}
    train_set, test_set = _datasets(args.dataset, args.data_dir)
    name = saved.get("model", args.model)
    config = {"model": name, "kwargs": saved.get("kwargs") or model_kwargs(name, train_set.images)}
    _check_labels_per_class(max(args.labels_per_class), train_set, args.dataset)
    modes = tuple(mode for mode in args.mode if mode != "scratch")
    classes = int(train_set.labels.max()) + 1
    sample = fn.tensor(train_set.images[:1].astype(np.float32) / 255)
    for mode in (*modes, "scratch"):  # each mode set up now, so a mismatch fails before training
        preview = fn.models.create(config["model"], **config["kwargs"])
        with _user_errors(ValueError, RuntimeError, prefix=f"--from {source} ({mode}): "):
            loaded = (
                None if mode == "scratch" else finetune_table.load_pretrained(preview, pretrained)
            )
            finetune.prepare(preview, mode, classes, lr=args.lr, pretrained=loaded)
            preview(sample)
        if len(modes) == 1 and mode == modes[0]:
            shown = preview  # the trainable and frozen parameters of the one mode, shown below
    if args.out is not None:
        _check_writable(Path(args.out))
    budgets = ", ".join(str(b) if b else "all" for b in args.labels_per_class)
    print(
        f"fastnet: fine-tuning {config['model']} from {source} on {args.dataset}: "
        f"{', '.join((*modes, 'scratch'))}; labels per class {budgets}; "
        f"{args.epochs} epochs, batch {args.batch_size}, AdamW lr {args.lr}"
        + (
            ""
            if args.pretrained_lr_factor is None
            else f", the pretrained part at {args.pretrained_lr_factor} of it after the head"
        ),
        flush=True,
    )
    if len(modes) == 1:
        print(finetune.summary(shown))
    try:
        rows = finetune_table.label_budget_table(
            pretrained,
            config,
            train_set,
            test_set,
            budgets=args.labels_per_class,
            modes=modes,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            pretrained_lr_factor=args.pretrained_lr_factor,
            seed=args.seed,
            device=device,
            transform=eval_transform({"dataset": args.dataset}),
            progress=not args.no_progress,
            out=args.out,
        )
    except NonFiniteLossError as error:
        print(f"fastnet finetune: {error}", file=sys.stderr)
        return 1
    print(finetune_table.format_table(rows))
    if args.out is not None:
        settings = {
            "source": str(source),
            **config,
            "pretrain": saved.get("pretrain"),
            **{
                key: getattr(args, key)
                for key in (
                    "dataset",
                    "epochs",
                    "batch_size",
                    "lr",
                    "pretrained_lr_factor",
                    "seed",
                )
            },
        }
        written = finetune_table.write_table(rows, args.out, settings)
        print(f"fastnet: table in {written[0]} and {written[1]}; models in {args.out}/BUDGET/MODE/")
    return 0


# ===================================================================== pretrain
@command("pretrain")
def pretrain_command(args: argparse.Namespace) -> int:
    from . import pretrain
    from .train import NonFiniteLossError

    with _user_errors():
        pretrain.check_method(args.method, args.model, args.encoder)
    if args.temperature is not None and args.method != "simclr":
        raise UsageError(f"--temperature is SimCLR's: method {args.method} has none")
    _check_global_batch(args.batch_size or pretrain.METHOD_DEFAULTS[args.method]["batch_size"])
    device = _device(args.device, ranks=True)
    train_set, test_set = _datasets(args.dataset, args.data_dir)
    out = Path(args.out or f"runs/{args.dataset}-{args.model}-{args.method}")
    _check_writable(out)
    _announce_compilation()
    print(
        f"fastnet: pretraining {args.model} by {args.method} on the {len(train_set):,} "
        f"{args.dataset} training images (no labels) on {device}{_ranks_text()}; run folder {out}",
        flush=True,
    )
    try:
        pretrain.pretrain(
            args.method,
            args.model,
            train_set,
            test_set,
            dataset=args.dataset,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            temperature=args.temperature,
            encoder=args.encoder,
            seed=args.seed,
            device=device,
            out=out,
            progress=not args.no_progress,
            sync_batchnorm=args.sync_batchnorm,
        )
    except NonFiniteLossError as error:
        print(f"fastnet pretrain: {error}", file=sys.stderr)
        return 1
    return 0


# ===================================================================== predict
@command("predict")
def predict_command(args: argparse.Namespace) -> int:
    for path in (args.checkpoint, *args.images):
        if not Path(path).is_file():
            raise UsageError(f"{path}: no such file")
    _device(args.device)
    from .predict import predict

    with _user_errors(ValueError, FileNotFoundError, ImportError):  # ImportError: no Pillow
        results = predict(
            args.checkpoint, args.images, top_k=args.top_k, device=args.device, resize=args.resize
        )
    for path, top in results:
        print(f"{Path(path).name}: " + ", ".join(f"{name} {p:.2f}" for name, p in top))
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
            print(f"{package.replace('_', '-')}: not installed ({install_hint('cuda')})")
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
    print(f"ranks: {_ranks_line()}")
    return 0


def _ranks_line() -> str:
    """How many processes run this program, and over what (``fastnet info``)."""
    from . import distributed

    if distributed.launched_ranks() is None:
        try:
            import mpi4py
        except ImportError:
            return f"1 (no MPI: {install_hint('mpi')})"
        return f"1 (not started by mpiexec; mpi4py {mpi4py.__version__} installed)"
    with _user_errors(ImportError, prefix="mpiexec: "):
        return distributed.init_process_group("mpi").describe()


# ===================================================================== export
@command("export")
def export_command(args: argparse.Namespace) -> int:
    import numpy as np

    from . import export, quantize
    from .predict import input_shape

    source = Path(args.model_file)
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    if quantize.is_quantized_file(source):
        return _export_int8(args, source)
    # RuntimeError: weights that do not fit the model the config names
    with _user_errors(ValueError, FileNotFoundError, RuntimeError):
        model, config = export.load_model_file(source)
    shape = args.input_shape
    if shape is None:
        try:
            shape = input_shape(config)
        except ValueError as error:
            raise UsageError(f"{error}: give it with --input-shape") from None
    out = Path(args.out) if args.out else source.with_suffix(".onnx")
    _check_writable(out.parent)
    with _user_errors(ValueError, ImportError):  # an unsupported layer, a wrong shape, no onnx
        path = export.export_onnx(model, out, shape)
    described = f"fastnet: wrote {path} ({args.format}, {path.stat().st_size:,} bytes)"
    inputs = np.random.default_rng(0).standard_normal((4, *shape))
    try:
        error = export.check_with_onnxruntime(model, path, inputs)
    except ImportError:
        print(f"{described}; not checked: onnxruntime missing ({install_hint('onnx')})")
        return 0
    print(f"{described}; onnxruntime max relative error {error:.1e} on 4 random inputs")
    if not error <= export.TOLERANCE:
        print(
            f"fastnet export: onnxruntime differs from fastnet by over {export.TOLERANCE:.0e}",
            file=sys.stderr,
        )
        return 1
    return 0


def _export_int8(args: argparse.Namespace, source: Path) -> int:
    """``fastnet export`` of an int8 model (``fastnet compress --quantize int8``): a QDQ graph."""
    import numpy as np

    from . import export_int8, quantize
    from .predict import input_shape

    with _user_errors(ValueError, FileNotFoundError):
        model = quantize.load_quantized(source)
    try:
        shape = args.input_shape or input_shape(model.config)
    except (ValueError, KeyError):
        raise UsageError(
            "the int8 model's config gives no input shape: give --input-shape"
        ) from None
    out = Path(args.out) if args.out else source.with_suffix(".onnx")
    _check_writable(out.parent)
    with _user_errors(ValueError, ImportError):
        path = export_int8.export_quantized_onnx(model, out, shape)
    described = f"fastnet: wrote {path} (onnx, int8 QDQ, {path.stat().st_size:,} bytes)"
    inputs = np.random.default_rng(0).random((32, *shape))
    try:
        errors = export_int8.check_quantized_with_onnxruntime(model, path, inputs)
    except ImportError:
        print(f"{described}; not checked: onnxruntime missing ({install_hint('onnx')})")
        return 0
    print(
        f"{described}; onnxruntime on 32 random inputs, max relative error: "
        f"{errors['unfused']:.1e} as written ({errors['unfused_equal']:.0%} of inputs equal to "
        f"float32 rounding), {errors['fused']:.1e} with its int8 fusions"
    )
    return 0


# ============================================= compress, distill, eval and bench (loaded on use)
@command("compress")
def compress_command(args: argparse.Namespace) -> int:
    from . import compress

    _device(args.device)
    return compress.run(args)


@command("distill")
def distill_command(args: argparse.Namespace) -> int:
    from . import distill

    _device(args.device)
    return distill.run(args)


@command("eval")
def eval_command(args: argparse.Namespace) -> int:
    from . import evaluate

    return evaluate.run(args)


@command("bench")
def bench_command(args: argparse.Namespace) -> int:
    from .bench.command import run

    return run(args)


# ===================================================================== entry point
# the commands that run as several ranks under mpiexec (info reports them)
PARALLEL_COMMANDS = ("train", "pretrain", "info")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2: a user error, reported in one line)."""
    from . import distributed

    prog = "fastnet"
    rank, ranks = distributed.launched_rank(), distributed.launched_ranks() or 1
    if rank != 0:  # under mpiexec rank 0 alone reports; errors still reach stderr
        sys.stdout = open(os.devnull, "w")  # for the life of the process
    try:
        args = build_parser().parse_args(argv)
        prog = f"fastnet {args.command}"
        if ranks > 1 and args.command not in PARALLEL_COMMANDS:
            raise UsageError("runs in one process; under mpiexec, run train, pretrain or info")
        if args.threads is not None:
            from .backend import set_num_threads

            set_num_threads(args.threads)
        code = _COMMANDS[args.command](args)
    except UsageError as error:
        joined = distributed.is_initialized() and distributed.get_world_size() > 1
        if rank == 0 or joined:  # before joining, every rank meets the same error
            where = f"[rank {rank} of {ranks}] " if joined else ""
            print(f"{where}{error.prog or prog}: error: {error}", file=sys.stderr)
        code = 2
    if code and distributed.is_initialized() and distributed.get_world_size() > 1:
        distributed.get_communicator().abort(code)  # the other ranks may wait in a collective
    return code


if __name__ == "__main__":
    sys.exit(main())
