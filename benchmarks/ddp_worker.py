"""One data-parallel training job, run by ``ddp_throughput.py`` under ``mpiexec -n R``: fastnet's
DistributedDataParallel against PyTorch's (gloo) on the same models, weights, data and batch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE FASTNET_NUM_THREADS=1 OMP_NUM_THREADS=1 \\
        .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/ddp_worker.py --json OUT.json \\
        --batch mnist_cnn=64 --batch transformer=32

Every rank runs on 1 thread. The ranks find each other through fastnet's MPI process group;
PyTorch's gloo group is set up beside it on a free local port that rank 0 picks and broadcasts.
Per model:

1. Every rank builds the model from the same seed and mirrors it in PyTorch
   (``fastnet.bench.to_torch``); each rank draws its own random batches (its shard). The first
   step is held to PyTorch's on every rank (``fastnet.bench.compare_first_step``); if any rank
   disagrees, every rank refuses.
2. With more than one rank, each framework wraps its model in its DistributedDataParallel
   (25 MB buckets in both); with one rank both train the bare model: the single-process
   baseline a user would run without data parallelism. Adam, lr 1e-3, in both.
3. Warm-up steps; then every rank's parameters must be bit-identical across the ranks in both
   frameworks (a CRC of their bytes, its minimum and maximum over the ranks compared).
4. Rounds: each framework in turn (the order alternates round by round) runs barrier, N steps,
   barrier; the slowest rank's time counts. Throughput = ranks x per-rank batch x N / seconds.
   With several ranks a third contestant, ``fastnet_alone``, trains a bare copy of the model on
   every rank with no communication: the machine's ceiling for that many processes.

Rank 0 writes the JSON that ``ddp_throughput.py`` reads. ``training_flops`` (training FLOPs per
sample, counted by PyTorch on the mirror) and ``run_under_mpiexec`` also serve
``scaling_projection.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

# The models raced and their default per-rank batch: the smallest batch of each in race.py's
# ``train_models`` (the one its training race reports first).
DEFAULT_BATCHES = {"mnist_cnn": 64, "transformer": 32}
FRAMEWORKS = ("fastnet", "torch")
# With several ranks, each also trains a bare copy of fastnet's model, with no communication at
# all: what R processes get from this machine side by side, the ceiling of any data parallelism.
ALONE = "fastnet_alone"


def workload(name: str) -> Any:
    """The ``fastnet.bench.TrainModel`` called ``name``."""
    from fastnet.bench import train_models

    for entry in train_models():
        if entry.name == name:
            return entry
    raise ValueError(f"no training-race model called {name!r}")


def training_flops(entry: Any, batch: int = 2) -> tuple[float, float]:
    """(training FLOPs per sample, the backward's share of them): matmuls, convolutions and
    attention of one forward and backward of the PyTorch mirror, counted by PyTorch's
    ``FlopCounterMode``; elementwise work and the optimizer step are not counted."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    from fastnet.bench import to_torch

    # PyTorch's CPU attention kernel is missing from the counter's table; its FLOPs are those of
    # any scaled-dot-product attention: (query, key, value, ...) forward, (grad_out, query, key,
    # value, ...) backward, which the counter hands over as shapes.
    aten = torch.ops.aten
    cpu_attention = {
        aten._scaled_dot_product_flash_attention_for_cpu: (
            lambda q, k, v, *_, **__: sdpa_flop_count(q, k, v)
        ),
        aten._scaled_dot_product_flash_attention_for_cpu_backward: (
            lambda grad, q, k, v, *_, **__: sdpa_backward_flop_count(grad, q, k, v)
        ),
    }
    mirror = to_torch(entry.build())
    x = torch.randn(batch, *entry.sample_shape)
    labels = torch.randint(0, entry.classes, (batch,))
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as forward:
        loss = torch.nn.functional.cross_entropy(mirror(x), labels)
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as backward:
        loss.backward()
    total = forward.get_total_flops() + backward.get_total_flops()
    return total / batch, backward.get_total_flops() / total


# ===================================================================== launching jobs
def one_thread_environment() -> dict[str, str]:
    """This process's environment with every thread pool of a rank limited to 1 thread: the
    ranks of one machine share its cores."""
    names = ("FASTNET_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    return dict(os.environ, **dict.fromkeys(names, "1"))


def run_under_mpiexec(ranks: int, arguments: list[str]) -> None:
    """``mpiexec -n ranks python arguments...`` with 1 thread per rank (the launcher beside this
    Python, the mpich wheel's, else the one on PATH); exits with every rank's output if it
    fails."""
    beside = Path(sys.executable).parent / "mpiexec"
    launcher = str(beside) if beside.exists() else "mpiexec"
    command = [launcher, "-n", str(ranks), sys.executable, *arguments]
    done = subprocess.run(command, env=one_thread_environment(), text=True, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} exited with {done.returncode}\n{done.stdout}{done.stderr}"
        )


# ===================================================================== agreement across ranks
def agree_port(communicator: Any) -> int:
    """A free local TCP port, chosen by rank 0, for PyTorch's gloo rendezvous."""
    port = np.zeros(1, np.int64)
    if communicator.rank == 0:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port[0] = probe.getsockname()[1]
    communicator.broadcast(port, 0)
    return int(port[0])


def refuse_unless_all_agree(communicator: Any, problems: list[str], what: str) -> None:
    """Exit every rank together (no rank left waiting in a collective) if any rank found a
    problem; the ranks that found one say what."""
    count = np.array([len(problems)], np.int64)
    communicator.allreduce(count, "sum")
    if count[0]:
        if problems:
            print(f"[rank {communicator.rank}] {what}: " + "; ".join(problems), flush=True)
        raise SystemExit(f"{what}: refusing to report a throughput")


def checksum(arrays: Iterable[np.ndarray]) -> int:
    """CRC-32 of the arrays' bytes, in order: equal on two ranks iff (but for a collision) every
    value is bit-identical."""
    crc = 0
    for array in arrays:
        crc = zlib.crc32(np.ascontiguousarray(array).view(np.uint8), crc)
    return crc


def identical_across_ranks(communicator: Any, checksums: dict[str, int]) -> list[str]:
    """The names whose checksum differs between ranks."""
    values = np.array(list(checksums.values()), np.int64)
    low, high = values.copy(), values.copy()
    communicator.allreduce(low, "min")
    communicator.allreduce(high, "max")
    return [
        f"{name}'s parameters differ between ranks after a synchronised step"
        for name, lo, hi in zip(checksums, low, high, strict=True)
        if lo != hi
    ]


# ===================================================================== the race
def training_steps(
    entry: Any, batch: int, rank: int, size: int, seed: int
) -> tuple[dict[str, Callable[[int], None]], dict[str, Callable[[], int]], Any]:
    """Each framework's training step (by step index), its parameters' checksum, and the
    first-step comparison, for ``entry`` at ``batch`` on this rank."""
    import torch

    import fastnet
    from fastnet import nn as fnn
    from fastnet.bench import compare_first_step, to_torch
    from fastnet.bench.harness import host_copy
    from fastnet.functional import cross_entropy
    from fastnet.tensor import Tensor

    fastnet.manual_seed(seed)  # the same initial weights on every rank (DDP broadcasts anyway)
    model = entry.build()
    torch_model = to_torch(model)
    rng = np.random.default_rng([seed, rank])  # each rank trains on its own shard
    batches = [
        (
            rng.standard_normal((batch, *entry.sample_shape), dtype=np.float32),
            rng.integers(0, entry.classes, batch),
        )
        for _ in range(4)
    ]
    first = compare_first_step(model, torch_model, *batches[0])
    fastnet_batches = [(Tensor(x), Tensor(y)) for x, y in batches]
    torch_batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]

    def fastnet_training(run: Any) -> Callable[[int], None]:
        """The step of ``run`` (a model, or its DDP wrapper) under its own Adam."""
        optimizer = fastnet.optim.Adam(run.parameters(), lr=1e-3)

        def step(index: int) -> None:
            x, y = fastnet_batches[index % len(fastnet_batches)]
            loss = cross_entropy(run(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        return step

    fastnet_run, torch_run = model, torch_model
    steps: dict[str, Callable[[int], None]] = {}
    if size > 1:
        fastnet_run = fnn.DistributedDataParallel(model)
        torch_run = torch.nn.parallel.DistributedDataParallel(torch_model)
        fastnet.manual_seed(seed)
        steps[ALONE] = fastnet_training(entry.build())
    fastnet_step = fastnet_training(fastnet_run)
    torch_optimizer = torch.optim.Adam(torch_run.parameters(), lr=1e-3)

    def torch_step(index: int) -> None:
        x, y = torch_batches[index % len(torch_batches)]
        loss = torch.nn.functional.cross_entropy(torch_run(x), y)
        torch_optimizer.zero_grad()
        loss.backward()
        torch_optimizer.step()

    checksums = {
        "fastnet": lambda: checksum(host_copy(p.data) for p in model.parameters()),
        "torch": lambda: checksum(host_copy(p) for p in torch_model.parameters()),
    }
    return {"fastnet": fastnet_step, "torch": torch_step, **steps}, checksums, first


def race(communicator: Any, name: str, batch: int, options: argparse.Namespace) -> dict[str, Any]:
    """Both frameworks' global samples/s training ``name`` at ``batch`` per rank, round by
    round (see the module docstring)."""
    rank, size = communicator.rank, communicator.size
    entry = workload(name)
    steps, checksums, first = training_steps(entry, batch, rank, size, options.seed)
    refuse_unless_all_agree(communicator, first.problems(), f"{name} batch {batch}: first step")

    contestants = list(steps)
    step_seconds = np.zeros(len(contestants))
    for index, framework in enumerate(contestants):  # compiles, allocates; the last step sizes N
        for step in range(options.warmup):
            start = time.perf_counter()
            steps[framework](step)
            step_seconds[index] = time.perf_counter() - start
    communicator.allreduce(step_seconds, "max")  # every rank must run the same number of steps
    differing = identical_across_ranks(
        communicator, {framework: checksums[framework]() for framework in FRAMEWORKS}
    )
    refuse_unless_all_agree(communicator, differing, f"{name} batch {batch}: after warm-up")
    per_round = {
        framework: options.steps or max(2, round(options.seconds / seconds))
        for framework, seconds in zip(contestants, step_seconds, strict=True)
    }

    samples: dict[str, list[float]] = {framework: [] for framework in contestants}
    for round_index in range(options.rounds):
        order = contestants if round_index % 2 == 0 else contestants[::-1]
        for framework in order:
            communicator.barrier()
            start = time.perf_counter()
            for step in range(per_round[framework]):
                steps[framework](step)
            communicator.barrier()
            elapsed = np.array([time.perf_counter() - start])
            communicator.allreduce(elapsed, "max")
            samples[framework].append(size * batch * per_round[framework] / float(elapsed[0]))
    flops, backward_share = training_flops(entry)
    return {
        "model": name,
        "ranks": size,
        "batch_per_rank": batch,
        "steps_per_round": per_round,
        "samples_per_second": samples,
        "first_step": asdict(first),
        "parameters_identical_across_ranks": True,  # refused above otherwise
        "training_flops_per_sample": flops,
        "backward_flop_share": backward_share,
    }


def measured_ceilings(quick: bool) -> dict[str, Any]:
    """This machine's 1-thread GEMM and copy ceilings (``fastnet.bench.measure_ceilings``)."""
    from fastnet.backend import CPU
    from fastnet.bench import measure_ceilings

    ceilings = measure_ceilings(CPU, 1, quick=quick)
    return asdict(ceilings) | {"description": ceilings.describe()}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where rank 0 writes results")
    parser.add_argument(
        "--batch",
        action="append",
        required=True,
        metavar="MODEL=B",
        help="a model to race and its per-rank batch (repeat for several)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per framework")
    parser.add_argument("--seconds", type=float, default=1.0, help="about how long a round runs")
    parser.add_argument("--steps", type=int, default=0, help="steps per round (0: from --seconds)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per framework")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="one round of 2 steps, 1 warm-up step (CI)"
    )
    parser.add_argument(
        "--ceilings",
        action="store_true",
        help="rank 0 also measures the 1-thread ceilings (ask a 1-rank job: no rank beside it)",
    )
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds, options.steps, options.warmup = 1, 2, 1
    return options


def main(argv: list[str] | None = None) -> None:
    options = parse(argv)
    import torch.distributed as torch_distributed

    from fastnet import distributed
    from fastnet.bench import pinned_threads

    communicator = distributed.init_process_group("mpi")
    if communicator.size > 1:
        torch_distributed.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{agree_port(communicator)}",
            rank=communicator.rank,
            world_size=communicator.size,
        )
    try:
        with pinned_threads(1):
            ceilings = (
                measured_ceilings(options.quick)
                if options.ceilings and communicator.rank == 0
                else None
            )
            results = []
            for item in options.batch:
                name, _, batch = item.partition("=")
                results.append(race(communicator, name, int(batch), options))
    finally:
        if communicator.size > 1:
            torch_distributed.destroy_process_group()
    if communicator.rank == 0:
        report = {"ranks": communicator.size, "ceilings": ceilings, "models": results}
        options.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
