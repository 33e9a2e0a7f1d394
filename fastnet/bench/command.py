"""fastnet bench: every kernel against its peers and the machine's own ceilings, or (--train)
training throughput against PyTorch, or (--infer) inference latency and throughput against
PyTorch, or (--ptx) the CUDA compile report.

One table goes to stdout, progress to stderr; ``--json PATH`` also writes the rows with the
machine they were measured on. The exit status is 1 when any case or model disagreed with its
peers (it is then reported as FAILED, never timed), 2 when the request cannot be met here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numba
import numpy as np

from ..backend import get_device, get_num_threads
from ..extras import install_hint
from .cases import run_kernels
from .harness import cuda_refusal, format_table, measure_ceilings, optional_torch, pinned_threads
from .infer import format_inference_table, run_inference
from .race import format_training_table, run_training


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + ("+modified" if dirty else "")) or "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    torch = optional_torch()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__ if torch else None,
    }


def run(args: argparse.Namespace) -> int:
    """``fastnet bench``: print one table (kernels, ``--train`` throughput or ``--infer`` speed);
    1 if anything mismatched, 2 if it cannot run here."""
    races = [flag for flag in ("train", "infer", "ptx") if getattr(args, flag)]
    if len(races) > 1:
        print(
            f"fastnet bench: --{' and --'.join(races)} are alternatives: give one",
            file=sys.stderr,
        )
        return 2
    if args.ptx:
        from ..kernels import ptx

        return ptx.main([])
    if args.device == "cuda":
        refusal = cuda_refusal()
        if refusal:
            print(refusal, file=sys.stderr)
            return 2
    race = "train" if args.train else "infer" if args.infer else None
    if race and (args.device != "cpu" or optional_torch() is None):
        print(
            f"fastnet bench --{race}: races PyTorch on the CPU: needs --device cpu and PyTorch "
            f"({install_hint('bench')})",
            file=sys.stderr,
        )
        return 2
    threads = args.threads or get_num_threads()
    report: dict[str, Any] = {"machine": machine()}

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with pinned_threads(threads):
        if race == "train":
            progress("ceilings ...")
            ceilings = measure_ceilings(get_device("cpu"), threads, args.quick)
            results, failures = run_training(args.quick, args.only, progress, ceilings)
            report.update(ceilings=asdict(ceilings), train=results)
            print(format_training_table(results, threads, failures, ceilings))
        elif race == "infer":
            results, failures = run_inference(args.quick, args.only, progress)
            report["infer"] = results
            print(format_inference_table(results, threads, failures))
        else:
            device = get_device(args.device)
            ceilings = measure_ceilings(device, threads, args.quick)
            rows, failures = run_kernels(device, ceilings, args.quick, args.only, progress)
            report.update(ceilings=asdict(ceilings), kernels=rows)
            print(format_table(rows, ceilings, failures))
    report["failures"] = failures
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 1 if failures else 0
