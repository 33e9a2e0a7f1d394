"""How data-parallel training would scale: this machine's all-reduce latency and bandwidth and the
step's compute time, measured, then the ring all-reduce cost model projected to 8, 64 and 512
GPUs over NVLink, InfiniBand and Ethernet at stated link speeds.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/scaling_projection.py \\
        [--quick] [--json PATH] [--ddp-json DDP.json] [--gpu-fraction 0.25]

The script starts itself under ``mpiexec -n 2`` (1 thread per rank) to measure, then fits and
projects in the calling process, and prints Markdown tables for benchmarks/README.md.

Measured (2 ranks on this machine):

* all-reduce (sum, in place) of float32 buffers of 4 B to 64 MiB through fastnet's MPI
  communicator: after warm-up, the median of 7 repeats of back-to-back calls, the slower rank's
  time; the ring model below is fitted to it by least squares on relative error.
* per model (the MNIST CNN at batch 64 and the transformer layer at batch 32, the per-rank
  batches of ddp_throughput.py): fastnet's training step (forward, cross-entropy, backward, Adam)
  on 1 thread, both ranks stepping at once as in data-parallel training (the median step of the
  slower rank), its gradient bytes, and its training FLOPs per sample (PyTorch's FLOP counter on
  the identical PyTorch model) with the backward's share of them.

The model. A ring all-reduce of n bytes over p ranks with per-message latency α and link
bandwidth B (each way, per rank) takes

    T(n, p) = 2 (p - 1) α + 2 (p - 1) / p · n / B

(p - 1 reduce-scatter steps and p - 1 all-gather steps, each moving n / p bytes); one all-reduce
per DistributedDataParallel bucket. With compute time C per step at a fixed per-GPU batch (weak
scaling), efficiency = C / (C + exposed communication): all of T without overlap; with full
overlap the all-reduce hides behind the backward, so only max(0, T - backward time) is exposed.
The GPU step time cannot be measured here: it is assumed to be the counted training FLOPs at
``--gpu-fraction`` of an H100's dense TF32 peak. Also printed: the per-GPU batch at which the
no-overlap efficiency reaches 90%, and the model's projection at p = 2 with this machine's
fitted α and B next to ddp_throughput.py's measured 2-rank weak scaling (``--ddp-json``).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ddp_worker import DEFAULT_BATCHES, run_under_mpiexec, training_flops, workload


@dataclass(frozen=True)
class Link:
    """An interconnect as the model sees it: bandwidth each way per GPU and latency per message."""

    name: str
    bandwidth: float  # bytes/s
    latency: float  # seconds


# Datasheet-class assumptions, not measurements:
LINKS = (
    # NVIDIA H100 SXM datasheet: NVLink 4 at 900 GB/s per GPU, both directions together; the
    # per-message latency of a few µs is that of NCCL over NVSwitch, as NVIDIA's talks state it
    Link("NVLink 4 (H100 SXM)", 450e9, 3e-6),
    # NVIDIA ConnectX-7 / Quantum-2: InfiniBand NDR, 400 Gb/s per port, one port per GPU; a few
    # µs per message through a switch with GPUDirect RDMA
    Link("InfiniBand NDR 400 Gb/s", 50e9, 5e-6),
    # IEEE 802.3 100 Gigabit Ethernet, one port per GPU; TCP or RoCE through a switch: tens of µs
    Link("100 GbE", 12.5e9, 20e-6),
)
GPU_COUNTS = (8, 64, 512)
# NVIDIA H100 SXM datasheet: 494.7 TFLOP/s dense TF32 on the tensor cores (989 "with sparsity")
H100_DENSE_TF32_FLOPS = 494.7e12
# The default fraction of that peak a training step is assumed to reach (an assumption: small
# layers reach far less on a GPU, which makes the step longer and communication matter less)
GPU_FRACTION = 0.25
# fastnet's and PyTorch's DistributedDataParallel default bucket cap: one all-reduce per bucket
DDP_BUCKET_BYTES = 25 * 2**20
TARGET_EFFICIENCY = 0.9
WORKER_RANKS = 2


# ===================================================================== measured under mpiexec
def allreduce_sweep(communicator: Any, quick: bool) -> list[dict[str, float]]:
    """The slower rank's median seconds per all-reduce of each buffer size (bytes)."""
    largest, repeats, seconds_each = (2**20, 3, 0.002) if quick else (2**26, 7, 0.01)
    points = []
    nbytes = 4
    while nbytes <= largest:
        # zeros: the sums stay zero, never overflowing or turning denormal however often reduced
        buffer = np.zeros(nbytes // 4, np.float32)
        for _ in range(2):  # MPI's internal buffers, the pages of ours
            communicator.allreduce(buffer, "sum")
        start = time.perf_counter()
        communicator.allreduce(buffer, "sum")
        one = np.array([time.perf_counter() - start])
        communicator.allreduce(one, "max")  # every rank must make the same number of calls
        calls = max(1, int(seconds_each / one[0]))
        samples = np.empty(repeats)
        for index in range(repeats):
            communicator.barrier()
            start = time.perf_counter()
            for _ in range(calls):
                communicator.allreduce(buffer, "sum")
            samples[index] = (time.perf_counter() - start) / calls
        communicator.allreduce(samples, "max")
        points.append({"bytes": nbytes, "seconds": float(np.median(samples))})
        nbytes *= 4
    return points


def step_time(communicator: Any, name: str, batch: int, quick: bool) -> dict[str, Any]:
    """fastnet's 1-thread training step of model ``name`` at ``batch`` (both ranks at once)."""
    import fastnet
    from fastnet.functional import cross_entropy

    entry = workload(name)
    fastnet.manual_seed(0)
    model = entry.build()
    optimizer = fastnet.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(communicator.rank)
    x = fastnet.tensor(rng.standard_normal((batch, *entry.sample_shape), dtype=np.float32))
    labels = fastnet.tensor(rng.integers(0, entry.classes, batch))

    def step() -> None:
        loss = cross_entropy(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    warmup, repeats, calls = (1, 2, 1) if quick else (3, 7, 3)
    for _ in range(warmup):
        step()
    samples = np.empty(repeats)
    for index in range(repeats):
        communicator.barrier()
        start = time.perf_counter()
        for _ in range(calls):
            step()
        samples[index] = (time.perf_counter() - start) / calls
    communicator.allreduce(samples, "max")
    gradient_bytes = sum(p.data.nbytes for p in model.parameters() if p.requires_grad)
    return {
        "model": name,
        "batch": batch,
        "step_seconds": float(np.median(samples)),
        "gradient_bytes": int(gradient_bytes),
    }


def measure(out: Path, quick: bool) -> None:
    """Under mpiexec: every rank measures; rank 0 adds the FLOP counts and writes ``out``."""
    from fastnet import distributed
    from fastnet.bench import pinned_threads

    communicator = distributed.init_process_group("mpi")
    with pinned_threads(1):
        sweep = allreduce_sweep(communicator, quick)
        models = [
            step_time(communicator, name, batch, quick) for name, batch in DEFAULT_BATCHES.items()
        ]
    if communicator.rank == 0:
        for model in models:
            flops, backward_share = training_flops(workload(model["model"]))
            model |= {"training_flops_per_sample": flops, "backward_flop_share": backward_share}
        library = " ".join(communicator.MPI.Get_library_version().splitlines()[0].split())
        report = {
            "ranks": communicator.size,
            "communicator": f"{communicator.size} ranks, fastnet's MPI communicator ({library})",
            "allreduce": sweep,
            "models": models,
        }
        out.write_text(json.dumps(report, indent=1))


# ===================================================================== the model
def ring_allreduce_seconds(nbytes: float, ranks: int, link: Link) -> float:
    """T(n, p) of the module docstring, one all-reduce per DDP bucket."""
    buckets = max(1, math.ceil(nbytes / DDP_BUCKET_BYTES))
    return (
        buckets * 2 * (ranks - 1) * link.latency + 2 * (ranks - 1) / ranks * nbytes / link.bandwidth
    )


def fit_ring(points: list[dict[str, float]], ranks: int) -> tuple[Link, float]:
    """α and B of the ring model fitted to the sweep (least squares on relative error), and the
    worst relative error of the fit over the sweep."""
    nbytes = np.array([point["bytes"] for point in points], float)
    seconds = np.array([point["seconds"] for point in points])
    # T = α · 2(p-1) + (1/B) · 2(p-1)/p · n: linear in (α, 1/B); each row divided by its T so
    # that the microsecond latencies of small buffers count as much as the large transfers
    design = np.stack([np.full_like(nbytes, 2 * (ranks - 1)), 2 * (ranks - 1) / ranks * nbytes])
    (latency, inverse_bandwidth), *_ = np.linalg.lstsq((design / seconds).T, np.ones_like(seconds))
    if not (latency > 0 and inverse_bandwidth > 0):
        raise SystemExit(
            f"the ring model does not fit this machine's all-reduce times (α {latency:.3g} s, "
            f"1/B {inverse_bandwidth:.3g} s/byte): refusing to project from it"
        )
    link = Link(f"this machine, {ranks} MPI ranks (fitted)", 1 / inverse_bandwidth, latency)
    predicted = np.array([ring_allreduce_seconds(n, ranks, link) for n in nbytes])
    return link, float(np.max(np.abs(predicted - seconds) / seconds))


def efficiencies(compute: float, backward: float, communication: float) -> tuple[float, float]:
    """(without overlap, with the all-reduce fully overlapped by the backward's ``backward``
    seconds) of a step of ``compute`` seconds."""
    exposed = max(0.0, communication - backward)
    return compute / (compute + communication), compute / (compute + exposed)


def project(measured: dict[str, Any], gpu_fraction: float) -> list[dict[str, Any]]:
    """Every (model, link, GPU count): the assumed H100 step, the all-reduce, the efficiencies
    and the per-GPU batch that reaches TARGET_EFFICIENCY without overlap."""
    rows = []
    for model in measured["models"]:
        per_sample = model["training_flops_per_sample"] / (gpu_fraction * H100_DENSE_TF32_FLOPS)
        compute = per_sample * model["batch"]
        for link in LINKS:
            for gpus in GPU_COUNTS:
                communication = ring_allreduce_seconds(model["gradient_bytes"], gpus, link)
                plain, overlapped = efficiencies(
                    compute, model["backward_flop_share"] * compute, communication
                )
                target = TARGET_EFFICIENCY / (1 - TARGET_EFFICIENCY) * communication
                rows.append(
                    {
                        "model": model["model"],
                        "link": link.name,
                        "gpus": gpus,
                        "batch_per_gpu": model["batch"],
                        "compute_seconds": compute,
                        "allreduce_seconds": communication,
                        "efficiency_no_overlap": plain,
                        "efficiency_full_overlap": overlapped,
                        "batch_for_target_no_overlap": math.ceil(target / per_sample),
                    }
                )
    return rows


def this_machine(measured: dict[str, Any], fitted: Link, ddp: dict | None) -> list[dict]:
    """Each model at p = 2 with the fitted α and B and the step measured here, beside
    ddp_throughput.py's measured fastnet 2-rank weak scaling / 2 when given."""
    rows = []
    for model in measured["models"]:
        compute = model["step_seconds"]
        communication = ring_allreduce_seconds(model["gradient_bytes"], WORKER_RANKS, fitted)
        plain, overlapped = efficiencies(
            compute, model["backward_flop_share"] * compute, communication
        )
        found = (ddp or {}).get("models", {}).get(model["model"])
        measured_efficiency = None
        if found and ddp["scaling"] == "weak":
            measured_efficiency = found["scaling"]["fastnet"]["median"] / WORKER_RANKS
        rows.append(
            {
                "model": model["model"],
                "batch_per_rank": model["batch"],
                "compute_seconds": compute,
                "allreduce_seconds": communication,
                "efficiency_no_overlap": plain,
                "efficiency_full_overlap": overlapped,
                "measured_efficiency": measured_efficiency,
            }
        )
    return rows


# ===================================================================== the tables
def _table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _percent(fraction: float) -> str:
    """Two significant digits (the projections at scale fall far below 1%), whole percents
    from 10% up."""
    percent = 100 * fraction
    return f"{percent:.0f}%" if percent >= 10 else f"{percent:.2g}%"


def _time(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} µs"


def markdown(report: dict[str, Any]) -> str:
    measured, fitted = report["measured"], report["fitted"]
    text = [
        f"Measured: {measured['communicator']}, 1 thread per rank. Ring all-reduce fitted to "
        f"{len(measured['allreduce'])} sizes ({measured['allreduce'][0]['bytes']} B to "
        f"{measured['allreduce'][-1]['bytes'] / 2**20:g} MiB): α = {fitted['latency'] * 1e6:.2f} "
        f"µs, B = {fitted['bandwidth'] / 1e9:.2f} GB/s (worst relative error of the fit "
        f"{fitted['worst_relative_error']:.0%}).",
        "",
        _table(
            ["model", "batch", "gradient", "training GFLOP/sample", "backward share", "step here"],
            [
                [
                    model["model"],
                    str(model["batch"]),
                    f"{model['gradient_bytes'] / 2**20:.2f} MiB",
                    f"{model['training_flops_per_sample'] / 1e9:.4f}",
                    f"{model['backward_flop_share']:.0%}",
                    _time(model["step_seconds"]),
                ]
                for model in measured["models"]
            ],
        ),
        "",
        f"Projected efficiency at the same per-GPU batch (weak scaling), no overlap / full "
        f"overlap with backward; the H100 step assumed at {report['gpu_fraction']:.0%} of "
        f"{H100_DENSE_TF32_FLOPS / 1e12:.1f} TFLOP/s dense TF32; links "
        + "; ".join(
            f"{link.name} {link.bandwidth / 1e9:g} GB/s, α {link.latency * 1e6:g} µs"
            for link in LINKS
        )
        + " (datasheet-class assumptions). Last columns: the per-GPU batch for "
        f"{TARGET_EFFICIENCY:.0%} without overlap.",
        "",
    ]
    by_key = {(row["model"], row["link"], row["gpus"]): row for row in report["projection"]}
    rows = []
    for model in measured["models"]:
        for link in LINKS:
            cells = [by_key[model["model"], link.name, gpus] for gpus in GPU_COUNTS]
            rows.append(
                [model["model"], link.name, _time(cells[0]["compute_seconds"])]
                + [
                    f"{_percent(cell['efficiency_no_overlap'])} / "
                    f"{_percent(cell['efficiency_full_overlap'])}"
                    for cell in cells
                ]
                + [str(cell["batch_for_target_no_overlap"]) for cell in cells]
            )
    header = ["model", "link", "H100 step"] + [f"p = {gpus}" for gpus in GPU_COUNTS]
    header += [f"batch, p = {gpus}" for gpus in GPU_COUNTS]
    text += [_table(header, rows), ""]
    text.append(
        "This machine at p = 2 (fitted α and B, the step measured here) against "
        "ddp_throughput.py's fastnet weak scaling / 2:"
    )
    text.append("")
    text.append(
        _table(
            ["model", "step", "all-reduce", "projected (no / full overlap)", "measured"],
            [
                [
                    row["model"],
                    _time(row["compute_seconds"]),
                    _time(row["allreduce_seconds"]),
                    f"{_percent(row['efficiency_no_overlap'])} / "
                    f"{_percent(row['efficiency_full_overlap'])}",
                    "-"
                    if row["measured_efficiency"] is None
                    else _percent(row["measured_efficiency"]),
                ]
                for row in report["this_machine"]
            ],
        )
    )
    return "\n".join(text)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes to 1 MiB, few repeats (CI)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.add_argument(
        "--ddp-json", type=Path, default=None, help="ddp_throughput.py's --json, for p = 2"
    )
    parser.add_argument(
        "--gpu-fraction",
        type=float,
        default=GPU_FRACTION,
        help="fraction of the H100's dense TF32 peak a step is assumed to reach",
    )
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    options = parse(argv)
    if options.measure:
        measure(options.measure, options.quick)
        return
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "measured.json"
        arguments = [__file__, "--measure", str(out)] + ["--quick"] * options.quick
        run_under_mpiexec(WORKER_RANKS, arguments)
        measured = json.loads(out.read_text())
    fitted, worst = fit_ring(measured["allreduce"], measured["ranks"])
    ddp = json.loads(options.ddp_json.read_text()) if options.ddp_json else None
    report = {
        "quick": options.quick,
        "measured": measured,
        "fitted": asdict(fitted) | {"worst_relative_error": worst},
        "gpu_fraction": options.gpu_fraction,
        "assumed_links": [asdict(link) for link in LINKS],
        "h100_dense_tf32_flops": H100_DENSE_TF32_FLOPS,
        "projection": project(measured, options.gpu_fraction),
        "this_machine": this_machine(measured, fitted, ddp),
    }
    print(markdown(report))
    if options.json:
        options.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
