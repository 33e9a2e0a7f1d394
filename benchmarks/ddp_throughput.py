"""Data-parallel training throughput on the CPU: 2 MPI ranks x 1 thread against 1 process x 1
thread, for fastnet's DistributedDataParallel and PyTorch's (gloo backend) alike, on the MNIST
CNN and one transformer encoder layer (the models of fastnet.bench's training race).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/ddp_throughput.py \\
        [--quick] [--rounds 3] [--batch B] [--strong] [--seconds 1.0] [--json PATH]

The driver starts ``mpiexec -n 1`` and ``mpiexec -n 2`` jobs of ``ddp_worker.py`` in turn (1 rank,
2 ranks, 1 rank, 2 ranks, ...: ``--rounds`` pairs), so that slow drifts of the machine fall on
both; every rank gets 1 thread (FASTNET_NUM_THREADS, OMP_NUM_THREADS, torch.set_num_threads).
Inside a job the two frameworks take turns for two timed rounds of about ``--seconds`` each, after
warm-up, from the same initial weights, with the same per-rank batch and random data and Adam
(lr 1e-3). The 1-rank job trains bare models (no DDP wrapper): the single-process baseline.

Throughput is global samples (images or sequences) per second: ranks x per-rank batch x steps /
the slowest rank's seconds between two barriers. By default the per-rank batch is the same at 1
and 2 ranks (weak scaling: 64 for the CNN, 32 for the transformer, or ``--batch``), so perfect
scaling is 2.0x; ``--strong`` keeps the global batch instead (each of 2 ranks takes half).

Before timing, each job holds every rank's first step to PyTorch's float64 gradients and both
frameworks' losses to each other (``fastnet.bench.compare_first_step``), and checks after
warm-up that every rank ends with bit-identical parameters in both frameworks; a job that fails
either check exits non-zero and nothing is reported.

Printed: the 1-thread ceilings, then per model the medians and the best of all rounds of both
frameworks at 1 process and 2 ranks, each framework's scaling (2 ranks / 1 process) and fastnet's
ratio to PyTorch, against the issue's goals (scaling >= 1.8x, fastnet/torch >= 1.0x at 2 ranks),
the machine's own ceiling for 2 processes (2 bare fastnet processes side by side, no
communication, timed in the same 2-rank jobs) and the fraction of it fastnet's DDP keeps, and the
GFLOP/s of one rank as a fraction of the GEMM ceiling. ``--quick`` proves that every path
runs (tiny batch, one pair of jobs, two steps a round), not how fast.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from ddp_worker import ALONE, DEFAULT_BATCHES, FRAMEWORKS, run_under_mpiexec

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
RANKS = (1, 2)
SCALING_GOAL = 1.8  # issue 18: 2 ranks x 1 thread against 1 process x 1 thread
PEER_GOAL = 1.0  # issue 18: fastnet against PyTorch DDP (gloo) at the same ranks
QUICK_BATCH = 4


def launch(ranks: int, options: argparse.Namespace, out: Path, ceilings: bool) -> dict:
    """One job of ``ranks`` ranks (measuring the ceilings first with ``ceilings``); its rank 0's
    JSON."""
    arguments = [str(WORKER), "--json", str(out), "--seconds", str(options.seconds)]
    arguments += [f"--batch={name}={b}" for name, b in per_rank_batches(options, ranks).items()]
    arguments += ["--quick"] * options.quick + ["--ceilings"] * ceilings
    run_under_mpiexec(ranks, arguments)
    return json.loads(out.read_text())


def per_rank_batches(options: argparse.Namespace, ranks: int) -> dict[str, int]:
    """Each model's per-rank batch in a job of ``ranks`` ranks."""
    chosen = {
        name: QUICK_BATCH if options.quick else (options.batch or batch)
        for name, batch in DEFAULT_BATCHES.items()
        if options.only in name
    }
    if not options.strong:
        return chosen
    for name, batch in chosen.items():
        if batch % max(RANKS):
            raise SystemExit(f"--strong: {name}'s batch {batch} does not split over the ranks")
    return {name: batch // ranks for name, batch in chosen.items()}


def run_jobs(options: argparse.Namespace) -> tuple[dict | None, dict[str, dict], dict[str, dict]]:
    """Alternate the jobs: the ceilings, every round's samples/s by model, ranks and framework,
    and what each model's jobs reported besides (batch, first step, FLOPs)."""
    samples: dict[str, dict[int, dict[str, list[float]]]] = {}
    details: dict[str, dict] = {}
    ceilings = None
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(options.rounds):
            for ranks in RANKS:
                out = Path(folder) / f"round{round_index}-ranks{ranks}.json"
                # the first 1-rank job measures the ceilings: no other rank shares the machine
                first = round_index == 0 and ranks == 1
                report = launch(ranks, options, out, ceilings=first)
                ceilings = ceilings or report["ceilings"]
                for result in report["models"]:
                    by_framework = samples.setdefault(result["model"], {}).setdefault(ranks, {})
                    for framework, values in result["samples_per_second"].items():
                        by_framework.setdefault(framework, []).extend(values)
                    model = details.setdefault(result["model"], {"batch_per_rank": {}})
                    model["batch_per_rank"][ranks] = result["batch_per_rank"]
                    model[f"first_step_{ranks}_ranks"] = result["first_step"]
                    model["training_flops_per_sample"] = result["training_flops_per_sample"]
            print(f"round {round_index + 1} of {options.rounds} done", file=sys.stderr)
    return ceilings, samples, details


def summarise(samples: dict[int, dict[str, list[float]]], detail: dict, ceilings: Any) -> dict:
    """Medians, bests, scaling and fastnet/torch ratios of one model (JSON-ready)."""
    stats = {
        kind: {
            framework: {ranks: pick(samples[ranks][framework]) for ranks in RANKS}
            for framework in FRAMEWORKS
        }
        for kind, pick in (("median", statistics.median), ("best", max))
    }
    summary: dict[str, Any] = {
        **detail,
        "samples_per_second": {
            framework: {ranks: samples[ranks][framework] for ranks in RANKS}
            for framework in FRAMEWORKS
        },
        **{f"{kind}_samples_per_second": values for kind, values in stats.items()},
        "scaling": {
            framework: {
                kind: stats[kind][framework][2] / stats[kind][framework][1] for kind in stats
            }
            for framework in FRAMEWORKS
        },
        "fastnet_over_torch": {
            ranks: {
                kind: stats[kind]["fastnet"][ranks] / stats[kind]["torch"][ranks] for kind in stats
            }
            for ranks in RANKS
        },
    }
    alone = samples[max(RANKS)][ALONE]
    summary["independent_processes"] = {
        "samples_per_second": alone,
        # the machine's own scaling with no communication: R bare processes over one
        "scaling": statistics.median(alone) / stats["median"]["fastnet"][1],
        # how much of that ceiling fastnet's data parallelism keeps
        "ddp_fraction": stats["median"]["fastnet"][2] / statistics.median(alone),
    }
    if ceilings:
        # one rank's achieved training GFLOP/s (matmuls and convolutions counted) against the
        # 1-thread GEMM ceiling: how far each rank is from what its core can do
        summary["percent_of_gemm_ceiling_per_rank"] = {
            framework: {
                ranks: 100.0
                * detail["training_flops_per_sample"]
                * stats["median"][framework][ranks]
                / ranks
                / 1e9
                / ceilings["gemm_gflops"]
                for ranks in RANKS
            }
            for framework in FRAMEWORKS
        }
    return summary


def verdict(value: float, goal: float) -> str:
    return f"{value:.2f}x (goal {goal:.1f}x: {'met' if value >= goal else 'NOT met'})"


def format_model(name: str, summary: dict, strong: bool) -> str:
    from fastnet.bench.harness import aligned

    batches = summary["batch_per_rank"]
    if strong:
        scaling = f"strong scaling: global batch {batches[1]}, {batches[2]} per rank at 2 ranks"
    else:
        scaling = f"weak scaling: batch {batches[1]} per rank at 1 and 2 ranks"
    header = ["samples/s", "fastnet 1p", "fastnet 2r", "2r/1p", "torch 1p", "torch 2r", "2r/1p"]
    header += ["fastnet/torch 1p", "fastnet/torch 2r"]
    lines = []
    for kind in ("median", "best"):
        values = summary[f"{kind}_samples_per_second"]
        row = [kind]
        for framework in FRAMEWORKS:
            row += [f"{values[framework][ranks]:.0f}" for ranks in RANKS]
            row.append(f"{summary['scaling'][framework][kind]:.2f}x")
        row += [f"{summary['fastnet_over_torch'][ranks][kind]:.2f}x" for ranks in RANKS]
        lines.append(row)
    rounds = len(summary["samples_per_second"]["fastnet"][1])
    text = [f"{name} ({scaling}; timed rounds: {rounds} each):", aligned(header, lines)]
    text.append(
        "  median fastnet scaling "
        + verdict(summary["scaling"]["fastnet"]["median"], SCALING_GOAL)
        + "; median fastnet/torch at 2 ranks "
        + verdict(summary["fastnet_over_torch"][2]["median"], PEER_GOAL)
    )
    alone = summary["independent_processes"]
    text.append(
        f"  {max(RANKS)} bare fastnet processes side by side, no communication (the machine's "
        f"ceiling): median {statistics.median(alone['samples_per_second']):.0f} samples/s, "
        f"{alone['scaling']:.2f}x one process; fastnet's DDP keeps "
        f"{100 * alone['ddp_fraction']:.0f}%"
    )
    percent = summary.get("percent_of_gemm_ceiling_per_rank")
    if percent:
        text.append(
            "  one rank's training GFLOP/s, % of the 1-thread GEMM ceiling (median; 1p, 2r): "
            + ", ".join(
                f"{framework} {percent[framework][1]:.0f}%, {percent[framework][2]:.0f}%"
                for framework in FRAMEWORKS
            )
        )
    return "\n".join(text)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="prove every path runs (CI)")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of jobs (1 rank, 2 ranks)")
    parser.add_argument("--batch", type=int, default=None, help="per-rank batch of every model")
    parser.add_argument("--strong", action="store_true", help="the same global batch instead")
    parser.add_argument("--seconds", type=float, default=1.0, help="about how long a round runs")
    parser.add_argument("--only", default="", help="models whose name contains this")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds = 1
    return options


def main(argv: list[str] | None = None) -> None:
    options = parse(argv)
    ceilings, samples, details = run_jobs(options)
    summaries = {
        name: summarise(by_ranks, details[name], ceilings) for name, by_ranks in samples.items()
    }
    print(
        "data-parallel training on the CPU, 1 thread per rank, Adam lr 1e-3, random data; "
        "1p: one process, bare model; 2r: 2 MPI ranks, each framework's DistributedDataParallel "
        "(fastnet over MPI, PyTorch over gloo)"
    )
    if options.quick:
        print("--quick: a few steps at batch 4 to prove every path runs; not a measurement")
    if ceilings:
        print(f"ceilings: {ceilings['description']}")
    for name, summary in summaries.items():
        print()
        print(format_model(name, summary, options.strong))
    if options.json:
        report = {
            "quick": options.quick,
            "scaling": "strong" if options.strong else "weak",
            "rounds": options.rounds,
            "ceilings": ceilings,
            "models": summaries,
        }
        options.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
