"""The training race: fastnet against PyTorch training the same models on the CPU (images/s).

Each model of :func:`train_models` is built by fastnet and mirrored in PyTorch (:func:`to_torch`:
each layer by its :data:`TORCH_EQUIVALENTS` entry, each container by a module holding its
children under the fastnet names, the weights copied). Before anything is timed,
:func:`compare_first_step` holds the two frameworks' first-step losses to each other and their
gradients to PyTorch's float64 gradients from the same weights; a model that computes differently
is refused, not timed.
"""

from __future__ import annotations

import copy
import functools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..backend import get_num_threads, set_num_threads
from ..functional import cross_entropy
from ..tensor import Tensor
from .contestants import TrainModel, train_models
from .flops import count_step_flops
from .harness import (
    Ceilings,
    MismatchError,
    aligned,
    gemm_gflops,
    host_copy,
    relative_error,
    settle,
    threads_text,
)


# ===================================================================== the PyTorch mirror
def _pair_of(value: Any) -> Any:
    return tuple(value) if isinstance(value, (tuple, list)) else value


def _activation_name(activation: Callable) -> str:
    name = getattr(activation, "__name__", repr(activation))
    if name not in ("relu", "gelu"):
        raise NotImplementedError(f"no PyTorch equivalent of the activation {name}")
    return name


def _max_pool(layer: Callable, m: Any) -> Any:
    return layer(
        _pair_of(m.kernel_size),
        _pair_of(m.stride),
        _pair_of(m.padding),
        _pair_of(m.dilation),
        ceil_mode=m.ceil_mode,
    )


def _avg_pool(layer: Callable, m: Any) -> Any:
    return layer(
        _pair_of(m.kernel_size),
        _pair_of(m.stride),
        _pair_of(m.padding),
        m.ceil_mode,
        m.count_include_pad,
        m.divisor_override,
    )


def _batch_norm(layer: Callable, m: Any) -> Any:
    return layer(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)


def _encoder_layer(nn: Any, m: Any) -> Any:
    return nn.TransformerEncoderLayer(
        m.self_attn.embed_dim,
        m.self_attn.num_heads,
        m.linear1.out_features,
        m.dropout.p,
        activation=_activation_name(m.activation),
        layer_norm_eps=m.norm1.eps,
        batch_first=m.self_attn.batch_first,
        norm_first=m.norm_first,
        bias=m.linear1.bias is not None,
    )


def _positional_embedding(nn: Any, m: Any) -> Any:
    import torch

    class PositionalEmbedding(nn.Module):
        """fastnet.nn.PositionalEmbedding: x (B, T, dim) + weight[:T]."""

        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(m.max_positions, m.dim))

        def forward(self, x: Any) -> Any:
            return x + self.weight[: x.shape[-2]]

    return PositionalEmbedding()


# fastnet layer class name -> its PyTorch equivalent (given torch.nn), built from the fastnet layer
TORCH_EQUIVALENTS: dict[str, Callable[[Any, Any], Any]] = {
    "Linear": lambda nn, m: nn.Linear(m.in_features, m.out_features, bias=m.bias is not None),
    "Conv2d": lambda nn, m: nn.Conv2d(
        m.in_channels,
        m.out_channels,
        _pair_of(m.kernel_size),
        _pair_of(m.stride),
        _pair_of(m.padding),
        _pair_of(m.dilation),
        m.groups,
        bias=m.bias is not None,
        padding_mode=m.padding_mode,
    ),
    "MaxPool2d": lambda nn, m: _max_pool(nn.MaxPool2d, m),
    "AvgPool2d": lambda nn, m: _avg_pool(nn.AvgPool2d, m),
    "AdaptiveAvgPool2d": lambda nn, m: nn.AdaptiveAvgPool2d(_pair_of(m.output_size)),
    "BatchNorm1d": lambda nn, m: _batch_norm(nn.BatchNorm1d, m),
    "BatchNorm2d": lambda nn, m: _batch_norm(nn.BatchNorm2d, m),
    "ReLU": lambda nn, m: nn.ReLU(),
    "LeakyReLU": lambda nn, m: nn.LeakyReLU(m.negative_slope),
    "GELU": lambda nn, m: nn.GELU(approximate=m.approximate),
    "Tanh": lambda nn, m: nn.Tanh(),
    "Sigmoid": lambda nn, m: nn.Sigmoid(),
    "Identity": lambda nn, m: nn.Identity(),
    "Dropout": lambda nn, m: nn.Dropout(m.p),
    "Flatten": lambda nn, m: nn.Flatten(m.start_dim, m.end_dim),
    "LayerNorm": lambda nn, m: nn.LayerNorm(
        m.normalized_shape, m.eps, m.elementwise_affine, bias=m.bias is not None
    ),
    "TransformerEncoderLayer": _encoder_layer,
    "PositionalEmbedding": _positional_embedding,
}


@functools.lru_cache(maxsize=1)
def _torch_containers() -> dict[str, Any]:
    """PyTorch mirrors of fastnet's containers, keyed by the fastnet class name; each holds its
    children under the fastnet names, so that the two state_dicts have the same keys."""
    import torch

    class Chain(torch.nn.Module):
        """Children applied in order: fastnet's Sequential and Classifier (features → head)."""

        def __init__(self, children: dict) -> None:
            super().__init__()
            for name, child in children.items():
                self.add_module(name, child)

        def forward(self, x: Any) -> Any:
            for child in self.children():
                x = child(x)
            return x

    class BasicBlock(Chain):
        """fastnet.models.resnet.BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

        def forward(self, x: Any) -> Any:
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class SequenceClassifier(Chain):
        def forward(self, x: Any) -> Any:
            return self.head(self.encoder(x).mean(1))

    class PatchEmbedding(Chain):
        """fastnet.models.vit.PatchEmbedding: (B, C, H, W) → (B, patches, dim)."""

        def forward(self, x: Any) -> Any:
            return self.projection(x).flatten(2).transpose(1, 2)

    class TransformerEncoder(Chain):
        """fastnet.nn.TransformerEncoder (without masks): the layers in turn, then ``norm``."""

        def forward(self, x: Any) -> Any:
            for layer in self.layers:
                x = layer(x)
            return self.norm(x) if hasattr(self, "norm") else x

    class ViTFeatures(Chain):
        """fastnet.models.vit.ViTFeatures: the class token's encoding, (B, dim)."""

        def __init__(self, children: dict) -> None:
            super().__init__(children)
            dim = children["positions"].weight.shape[1]
            self.class_token = torch.nn.Parameter(torch.zeros(1, 1, dim))

        def forward(self, x: Any) -> Any:
            patches = self.patch_embedding(x)
            tokens = torch.cat([self.class_token.expand(len(x), -1, -1), patches], 1)
            return self.encoder(self.dropout(self.positions(tokens)))[:, 0]

    return {
        "Sequential": Chain,
        "Classifier": Chain,
        "BasicBlock": BasicBlock,
        "SequenceClassifier": SequenceClassifier,
        "ViT": Chain,
        "ModuleList": lambda children: torch.nn.ModuleList(children.values()),
        "PatchEmbedding": PatchEmbedding,
        "TransformerEncoder": TransformerEncoder,
        "ViTFeatures": ViTFeatures,
    }


def to_torch(module: Any) -> Any:
    """A PyTorch module computing what the fastnet ``module`` computes, with its weights copied."""
    import torch

    mirror = _torch_mirror(module, torch)
    state = {
        name: torch.from_numpy(np.array(value, copy=True))
        for name, value in module.state_dict().items()
    }
    mirror.load_state_dict(state, strict=True)
    return mirror


def _torch_mirror(module: Any, torch: Any) -> Any:
    kind = type(module).__name__
    if kind in TORCH_EQUIVALENTS:
        return TORCH_EQUIVALENTS[kind](torch.nn, module)
    containers = _torch_containers()
    if kind not in containers:
        raise NotImplementedError(
            f"no PyTorch equivalent of fastnet's {kind}: add one to "
            f"fastnet.bench.TORCH_EQUIVALENTS (a layer) or to _torch_containers (a module with "
            f"children)"
        )
    children = {name: _torch_mirror(child, torch) for name, child in module.named_children()}
    return containers[kind](children)


# ===================================================================== the first step
@dataclass
class FirstStep:
    """Both frameworks' loss on the first batch from the same weights, and the worst relative error
    of each one's float32 gradients against PyTorch's float64 gradients from the same weights.

    The gradients are judged against float64, not against each other: in a deep network with
    batch norm (ResNet-20 at initialisation), float32 rounding alone moves some parameters'
    gradients past ``gradient_tolerance`` in either framework, in different parameters for each
    (``fastnet bench --train --only resnet20`` prints both frameworks' worst error)."""

    fastnet_loss: float
    torch_loss: float
    loss_relative_error: float
    worst_gradient: str  # fastnet's parameter farthest from float64
    fastnet_gradient_error: float
    torch_gradient_error: float

    def problems(
        self,
        loss_tolerance: float = 1e-4,
        gradient_tolerance: float = 1e-3,
        float32_slack: float = 4.0,
    ) -> list[str]:
        """What is wrong: losses apart by more than ``loss_tolerance``, or fastnet's gradients
        farther from float64 than both ``gradient_tolerance`` and ``float32_slack`` times
        PyTorch's."""
        found = []
        if not self.loss_relative_error <= loss_tolerance:
            found.append(
                f"first-step losses differ: fastnet {self.fastnet_loss:.7g}, torch "
                f"{self.torch_loss:.7g} (relative error "
                f"{self.loss_relative_error:.1e} > {loss_tolerance:.0e})"
            )
        allowed = max(gradient_tolerance, float32_slack * self.torch_gradient_error)
        if not self.fastnet_gradient_error <= allowed:
            found.append(
                f"first-step gradients differ: fastnet's {self.worst_gradient} is "
                f"{self.fastnet_gradient_error:.1e} from float64 (allowed {allowed:.1e}; "
                f"PyTorch's float32 worst is {self.torch_gradient_error:.1e})"
            )
        return found


def _worst_gradient_error(
    named_grads: Iterator[tuple[str, Any]], reference: dict[str, np.ndarray]
) -> tuple[str, float]:
    errors = {name: relative_error(host_copy(grad), reference[name]) for name, grad in named_grads}
    worst = max(errors, key=errors.get)
    return worst, errors[worst]


def compare_first_step(
    model: Any, torch_model: Any, x: np.ndarray, labels: np.ndarray
) -> FirstStep:
    """One forward and backward of fastnet, of PyTorch and of PyTorch in float64 on the same batch;
    the gradients (and nothing else) are cleared after."""
    import torch

    cross_entropy_torch = torch.nn.functional.cross_entropy
    x_torch, labels_torch = torch.from_numpy(x), torch.from_numpy(labels)
    reference_model = copy.deepcopy(torch_model).double()
    loss = cross_entropy(model(Tensor(x)), Tensor(labels))
    loss.backward()
    torch_loss = cross_entropy_torch(torch_model(x_torch), labels_torch)
    torch_loss.backward()
    cross_entropy_torch(reference_model(x_torch.double()), labels_torch).backward()
    reference = {
        name: parameter.grad.numpy() for name, parameter in reference_model.named_parameters()
    }
    worst, fastnet_error = _worst_gradient_error(
        ((name, p.grad) for name, p in model.named_parameters()), reference
    )
    _, torch_error = _worst_gradient_error(
        ((name, p.grad) for name, p in torch_model.named_parameters()), reference
    )
    model.zero_grad()
    torch_model.zero_grad()
    return FirstStep(
        loss.item(),
        torch_loss.item(),
        relative_error(loss.item(), torch_loss.item()),
        worst,
        fastnet_error,
        torch_error,
    )


# ===================================================================== the race
# fastnet on one thread, a third contestant of a race on more threads: the N-thread / 1-thread
# scaling then comes from one interleaved run, not from two runs minutes apart on a noisy machine.
# Each round also times BLAS's GEMM on 1 and N threads: the machine's own N/1 scaling in the same
# minutes, the yardstick for fastnet's (a shared host's second core gives anywhere from 1.3x to
# 1.9x; the results log).
ONE_THREAD = "fastnet_1_thread"


def measure_training(
    entry: TrainModel,
    batch: int,
    quick: bool = False,
    rounds: int = 3,
    round_seconds: float = 2.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Images/s of fastnet and PyTorch training ``entry`` at ``batch`` on the CPU: Adam lr 1e-3,
    the same initial weights and the same random batches of the model's input shape. Raises
    :class:`MismatchError` (before timing anything) if the first-step losses or gradients differ.

    The frameworks alternate, ``rounds`` rounds of about ``round_seconds`` each, after warm-up
    steps; the best round of each counts. Call inside :func:`pinned_threads`. On more than one
    thread fastnet also races on one (:data:`ONE_THREAD`), and ``scaling`` is its N-thread speed
    over its 1-thread speed; ``gemm_scaling`` is the same ratio of BLAS's GEMM
    (:func:`~fastnet.bench.harness.gemm_gflops`), timed in every round after the steps.

    ``flops_per_step`` is :func:`fastnet.bench.flops.count_step_flops`'s count of the step (the
    useful work: direct convolution FLOPs, 2 per multiply-add), and ``gflops`` each framework's
    rate of it at its best round's speed.
    """
    import torch

    import fastnet

    if quick:
        rounds, round_seconds = 1, 0.0
    fastnet.manual_seed(seed)
    model = entry.build()
    torch_model = to_torch(model)
    flops = count_step_flops(model, entry.sample_shape, batch, entry.classes)
    rng = np.random.default_rng(seed)
    batches = [
        (
            rng.standard_normal((batch, *entry.sample_shape), dtype=np.float32),
            rng.integers(0, entry.classes, batch),
        )
        for _ in range(4)
    ]
    first = compare_first_step(model, torch_model, *batches[0])
    if first.problems():
        raise MismatchError(
            f"{entry.name} batch {batch}: "
            + "; ".join(first.problems())
            + ": refusing to report a throughput"
        )

    fastnet_batches = [(Tensor(x), Tensor(y)) for x, y in batches]
    torch_batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
    optimizer = fastnet.optim.Adam(model.parameters(), lr=1e-3)
    torch_optimizer = torch.optim.Adam(torch_model.parameters(), lr=1e-3)

    def fastnet_step(index: int) -> None:
        x, y = fastnet_batches[index % len(fastnet_batches)]
        loss = cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def torch_step(index: int) -> None:
        x, y = torch_batches[index % len(torch_batches)]
        loss = torch.nn.functional.cross_entropy(torch_model(x), y)
        torch_optimizer.zero_grad()
        loss.backward()
        torch_optimizer.step()

    threads = get_num_threads()
    steps = {"fastnet": fastnet_step, "torch": torch_step}
    if threads > 1:
        steps[ONE_THREAD] = fastnet_step
    steps_per_round = {}
    samples: dict[str, list[float]] = {name: [] for name in steps}
    gemm: dict[int, list[float]] = {1: [], threads: []} if threads > 1 else {}
    try:
        # warm-up compiles and allocates; its last step sizes a round
        for name, step in steps.items():
            set_num_threads(1 if name == ONE_THREAD else threads)
            for index in range(2):
                start = time.perf_counter()
                step(index)
            steps_per_round[name] = max(2, round(round_seconds / (time.perf_counter() - start)))
        for _ in range(rounds):
            for name, step in steps.items():
                set_num_threads(1 if name == ONE_THREAD else threads)
                settle()
                start = time.perf_counter()
                for index in range(steps_per_round[name]):
                    step(index)
                samples[name].append(batch * steps_per_round[name] / (time.perf_counter() - start))
            for count, rates in gemm.items():
                settle()
                rates.append(gemm_gflops(count, quick))
    finally:
        set_num_threads(threads)
    best = {name: max(values) for name, values in samples.items()}
    medians = {name: statistics.median(values) for name, values in samples.items()}
    scaling = (
        {
            "scaling": best["fastnet"] / best[ONE_THREAD],
            "gemm_scaling": max(gemm[threads]) / max(gemm[1]),
        }
        if ONE_THREAD in best
        else {}
    )
    return {
        "model": entry.name,
        "batch": batch,
        "samples_per_second": best,
        "median_samples_per_second": medians,
        "ratio": best["fastnet"] / best["torch"],
        **scaling,
        "flops_per_step": flops.as_dict(),
        "gflops": {name: flops.total * speed / batch / 1e9 for name, speed in best.items()},
        "first_step": asdict(first),
    }


def against_ceiling(result: dict[str, Any], ceilings: Ceilings) -> dict[str, Any]:
    """``result`` with each framework's GFLOP/s as a percentage of the GEMM ceiling
    (``percent_of_ceiling``) and the ceiling itself (``gemm_ceiling_gflops``)."""
    return {
        **result,
        "gemm_ceiling_gflops": ceilings.gemm_gflops,
        "percent_of_ceiling": {
            name: 100.0 * gflops / ceilings.gemm_gflops for name, gflops in result["gflops"].items()
        },
    }


def run_training(
    quick: bool = False,
    only: str | None = None,
    progress: Callable[[str], None] = lambda line: None,
    ceilings: Ceilings | None = None,
) -> tuple[list[dict], list[str]]:
    """Every model of :func:`train_models` at each of its batch sizes (batch 4 with ``quick``);
    with ``ceilings`` (measured in the same :func:`pinned_threads`), each result also holds its
    fraction of the GEMM ceiling (:func:`against_ceiling`)."""
    results, failures = [], []
    for entry in train_models():
        if only and only not in entry.name:
            continue
        for batch in (4,) if quick else entry.batches:
            progress(f"train {entry.name} batch {batch} ...")
            try:
                result = measure_training(entry, batch, quick=quick)
                results.append(against_ceiling(result, ceilings) if ceilings else result)
            except MismatchError as error:
                failures.append(str(error))
    return results, failures


def _rate_text(row: dict[str, Any], name: str) -> str:
    text = f"{row['gflops'][name]:.2f}"
    if "percent_of_ceiling" in row:
        text += f" ({row['percent_of_ceiling'][name]:.1f}%)"
    return text


def format_training_table(
    results: list[dict[str, Any]],
    threads: int,
    failures: Sequence[str] = (),
    ceilings: Ceilings | None = None,
) -> str:
    """The ceilings line (when given) and one line per model and batch: speeds, the FLOPs of a
    step, and each framework's GFLOP/s with its fraction of the GEMM ceiling in parentheses."""
    rate = "GFLOP/s (% ceiling)" if ceilings else "GFLOP/s"
    header = [
        "model",
        "batch",
        "fastnet samples/s",
        "torch samples/s",
        "fastnet/torch",
        "GFLOP/step",
        f"fastnet {rate}",
        f"torch {rate}",
        "first-step loss (fastnet, torch)",
        "grad err vs float64 (fastnet, torch)",
    ]
    scaled = any("scaling" in row for row in results)
    if scaled:
        header[5:5] = [f"fastnet {threads}/1 thread", f"GEMM {threads}/1 thread"]
    lines = []
    for row in results:
        speed, first = row["samples_per_second"], row["first_step"]
        lines.append(
            [
                row["model"],
                str(row["batch"]),
                f"{speed['fastnet']:.0f}",
                f"{speed['torch']:.0f}",
                f"{row['ratio']:.2f}x",
                f"{row['flops_per_step']['total'] / 1e9:.3f}",
                _rate_text(row, "fastnet"),
                _rate_text(row, "torch"),
                f"{first['fastnet_loss']:.6f}, {first['torch_loss']:.6f}",
                f"{first['fastnet_gradient_error']:.1e}, {first['torch_gradient_error']:.1e}",
            ]
        )
        if scaled:
            lines[-1][5:5] = [
                f"{row[key]:.2f}x" if key in row else "-" for key in ("scaling", "gemm_scaling")
            ]
    text = [f"ceilings: {ceilings.describe()}"] if ceilings else []
    text += [
        f"training throughput on the CPU, {threads_text(threads)} each, Adam lr 1e-3, random data "
        "(a step's FLOPs: direct convolutions, 2 per multiply-add, fastnet.bench.flops):",
        aligned(header, lines),
    ]
    text += [
        f"note: {row['model']}: no FLOP rule for {', '.join(row['flops_per_step']['uncounted'])}"
        " (their work is missing from GFLOP/step)"
        for row in results
        if row["flops_per_step"]["uncounted"]
    ]
    text += [f"FAILED {failure}" for failure in failures]
    return "\n".join(text)
