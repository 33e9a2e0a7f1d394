"""``gpu_check``: the GPU path proved on hardware in one command, one JSON report (issue 16).

    python -m fastnet.bench.gpu_check [--simulate] [--out runs/gpu_check.json] [--budget S]

(``scripts/gpu_check.sh`` sets up the environment first, then runs this.) Six stages, each in a
process of its own under a time limit (:mod:`fastnet.bench.gpu_stages` says what each does):
``environment``, ``tests``, ``train``, ``bench``, ``launch``, ``nccl``. A stage that fails, raises
or overruns is recorded with its error (and whatever it had measured) and the next one runs; the
report is rewritten at every stage's start and end and whenever a running stage saves progress,
so a run killed from outside still leaves what it had. Stage limits fit within ``--budget``
(default 450 s on a GPU: the whole run stays under 8 minutes on one H100).

The report also judges the issue's goals: the MNIST CNN at 99% test accuracy within 5 s of
training, the tiled matmul at >= 80% of cuBLAS at 4096³, memory-bound kernels at >= 70% of the
device's copy bandwidth. Under ``--simulate`` every stage runs in Numba's CUDA simulator at tiny
sizes (no GPU needed; CI runs it), the report has the same schema, ``simulated`` is true and no
goal is judged. The exit status is 0 when every stage ran cleanly, 1 when any stage failed or
overran (goals missed do not change it: they are measurements), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .gpu_stages import STAGES

SCHEMA = "fastnet-gpu-check/1"
STAGE_LIMITS_S = {  # each stage's own limit; the run's --budget caps them all
    False: {"environment": 30, "tests": 150, "train": 120, "bench": 150, "launch": 60, "nccl": 45},
    # simulated: generous, for a busy CI machine (the whole run takes ~1.5 minutes on 2 idle cores)
    True: {"environment": 60, "tests": 120, "train": 120, "bench": 180, "launch": 120, "nccl": 60},
}
DEFAULT_BUDGET_S = {False: 450.0, True: 600.0}
RESERVE_S = 30.0  # kept back for each stage still to come, so a slow stage cannot starve them
GOALS = {
    "mnist_cnn_99_percent": "MNIST CNN at 99% test accuracy within 5 s of training",
    "matmul_vs_cublas": "tiled matmul >= 80% of cuBLAS at 4096^3",
    "memory_bound_vs_copy": "every memory-bound bench case >= 70% of the device's copy bandwidth",
}


class Stopped(Exception):
    """SIGTERM (or SIGINT) arrived: record what there is and stop."""


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fastnet.bench.gpu_check",
        description="Prove fastnet's CUDA path on a GPU (or, with --simulate, in Numba's CUDA "
        "simulator) and write one JSON report.",
    )
    parser.add_argument(
        "--simulate", action="store_true", help="run every stage in the simulator, tiny sizes"
    )
    parser.add_argument("--out", default="runs/gpu_check.json", help="the JSON report's path")
    parser.add_argument(
        "--budget", type=float, help="seconds for all stages (default 450 on a GPU, 600 simulated)"
    )
    parser.add_argument(
        "--only", help=f"comma-separated stages to run (default all: {','.join(STAGES)})"
    )
    parser.add_argument("--epochs", type=int, default=2, help="MNIST CNN epochs (default 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch (default 64)")
    parser.add_argument(
        "--data-dir",
        help="a folder holding mnist/ (default: FASTNET_DATA, the cache, then ../shared/data "
        "beside the checkout)",
    )
    # what scripts/gpu_check.sh did before starting this
    parser.add_argument("--setup-status", choices=("ok", "failed"), help=argparse.SUPPRESS)
    parser.add_argument("--setup-seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--setup-command", help=argparse.SUPPRESS)
    # one stage, in its own process (what the orchestrator starts)
    parser.add_argument("--stage", choices=tuple(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--stage-result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.epochs <= 10:
        parser.error("--epochs must be between 1 and 10")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    wanted = args.only.split(",") if args.only else list(STAGES)
    unknown = [name for name in wanted if name not in STAGES]
    if unknown:
        parser.error(f"--only: unknown stage {', '.join(unknown)} (stages: {', '.join(STAGES)})")
    args.stages = [name for name in STAGES if name in wanted]
    if args.budget is None:
        args.budget = DEFAULT_BUDGET_S[args.simulate]
    return args


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON atomically (a reader never sees half a report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=1, default=str))
    os.replace(temporary, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ===================================================================== one stage, in its process
def run_stage(args: argparse.Namespace) -> int:
    """Run ``args.stage``, saving its results to ``args.stage_result`` as they come."""
    import traceback

    if args.simulate:
        sys.setswitchinterval(2e-4)  # the simulator's syncthreads() wait one switch interval
    path = Path(args.stage_result)
    result: dict[str, Any] = {}

    def record(update: dict) -> None:
        result.update(update)
        write_json(path, {"status": "running", **result})

    try:
        status = STAGES[args.stage](args, record)
    except Exception as error:  # noqa: BLE001 - recorded in the report; the next stage runs
        status = "failed"
        result["error"] = f"{type(error).__name__}: {error}"
        result["traceback"] = traceback.format_exc().splitlines()[-25:]
        traceback.print_exc()
    write_json(path, {**result, "status": status})
    return 0 if status == "ok" else 1


# ===================================================================== the orchestrator
def _kill(process: subprocess.Popen) -> None:
    """End the stage and every process it started (its own session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _run_stage_process(
    command: list[str], env: dict, limit_s: float, result_path: Path, on_progress: Callable
) -> dict:
    """Start one stage, pass on its saved progress, and stop it at ``limit_s``."""
    start = time.monotonic()
    process = subprocess.Popen(command, env=env, start_new_session=True)
    seen = None
    status = None
    try:
        while status is None:
            try:
                code = process.wait(timeout=1.0)
                status = "ok" if code == 0 else "failed"
            except subprocess.TimeoutExpired:
                if time.monotonic() - start > limit_s:
                    _kill(process)
                    status = "timeout"
            stamp = result_path.stat().st_mtime_ns if result_path.exists() else None
            if stamp != seen and status is None:
                seen = stamp
                on_progress(_read_json(result_path))
    except BaseException:
        _kill(process)
        raise
    result = _read_json(result_path)
    finished = result.get("status") in ("ok", "failed")  # the stage wrote its verdict
    if status == "timeout":
        result.update(status="timeout", error=f"stopped after its limit of {limit_s:.0f} s")
    elif not finished:
        result.update(status="failed", error=f"the stage process ended (status {code}) early")
    result["seconds"] = time.monotonic() - start
    result["limit_seconds"] = limit_s
    return result


def goals(report: dict) -> list[dict]:
    """The issue's goals, judged from the stages' results (not judged in the simulator, nor where
    the measuring stage did not finish)."""
    stages, simulated = report["stages"], report["simulated"]

    def finished(name: str) -> dict | None:
        stage = stages.get(name, {})
        done = stage.get("status") in ("ok", "failed") and "error" not in stage
        return stage if done else None

    train, bench = finished("train"), finished("bench")
    measured: dict[str, tuple] = {}
    if train is not None:
        seconds = train.get("seconds_to_99")
        measured["mnist_cnn_99_percent"] = (
            seconds,
            "s",
            seconds is not None and seconds < 5.0,
            f"{100 * train['final_test_acc']:.2f}% after {len(train['epochs'])} epochs",
        )
    if bench is not None:
        percent = bench["matmul_vs_cublas"]["percent_of_cublas"]
        measured["matmul_vs_cublas"] = (percent, "%", percent >= 80.0, "")
        shares = [row["percent_of_copy"] for row in bench["memory_bound"]]
        good = sum(share >= 70.0 for share in shares)
        measured["memory_bound_vs_copy"] = (
            min(shares) if shares else None,
            "% (lowest)",
            bool(shares) and good == len(shares),
            f"{good} of {len(shares)} memory-bound cases at >= 70%",
        )
    judged = []
    for name, target in GOALS.items():
        value, unit, met, detail = measured.get(name, (None, None, None, "not measured"))
        judged.append(
            {
                "name": name,
                "target": target,
                "value": value,
                "unit": unit,
                "met": None if simulated else met,
                "detail": "simulated: not judged" if simulated else detail,
            }
        )
    return judged


def _stage_line(name: str, stage: dict) -> str:
    """One line per stage for the summary."""
    status, seconds = stage.get("status", "not run"), stage.get("seconds")
    head = f"  {name:<12} {status:<8} " + (
        f"{seconds:6.1f} s  " if seconds is not None else " " * 10
    )
    if "error" in stage:
        return head + stage["error"][:200]
    if name == "environment":
        versions = stage.get("versions", {})
        return head + ", ".join(f"{key} {value}" for key, value in versions.items() if value)
    if name == "tests" and "counts" in stage:
        return head + ", ".join(
            f"{count} {what}" for what, count in stage["counts"].items() if count
        )
    if name == "train" and "epochs" in stage:
        epochs = "; ".join(
            f"epoch {e['epoch']}: {100 * e['test_acc']:.2f}%, {e['images_per_second']:,.0f} img/s"
            for e in stage["epochs"]
        )
        reached = stage["seconds_to_99"]
        return (
            head
            + epochs
            + ("; 99% not reached" if reached is None else f"; 99% after {reached:.2f} s")
        )
    if name == "bench" and "matmul_vs_cublas" in stage:
        return head + (
            f"{len(stage['kernels'])} cases, {len(stage['failures'])} failed; matmul "
            f"{stage['matmul_vs_cublas']['percent_of_cublas']:.0f}% of cuBLAS"
        )
    if name == "launch" and "training_step" in stage:
        step, every = stage["training_step"], stage["training_step"].get("all_kernels", {})
        return head + (
            f"launch() {stage['trivial_kernel']['host_us']:.1f} us (trivial), "
            f"{stage['typical_kernel']['host_us']:.1f} us (matmul); {step['launches']} launches "
            f"a training step"
            + (f" ({every['count']} kernels in all)" if every.get("count") else "")
        )
    if name == "nccl" and "checks" in stage:
        good = sum(check["ok"] for check in stage["checks"])
        return head + f"{stage['communicator']}; {good} of {len(stage['checks'])} checks passed"
    return head.rstrip()


def summary(report: dict) -> str:
    default = "Numba's CUDA simulator" if report["simulated"] else "an unknown device"
    device = report.get("device") or {}
    lines = [
        f"gpu_check on {device.get('name', default)}"
        + (" (SIMULATED: the numbers say nothing about a GPU)" if report["simulated"] else "")
    ]
    lines += [_stage_line(name, stage) for name, stage in report["stages"].items()]
    for goal in report["goals"]:
        verdict = {True: "met", False: "NOT MET", None: "not judged"}[goal["met"]]
        value = goal["value"]
        shown = f"{value:.2f} {goal['unit']}" if isinstance(value, float) else "-"
        lines.append(f"  goal: {goal['target']}: {verdict} ({shown}; {goal['detail']})".rstrip())
    lines.append(f"report: {report['path']}")
    return "\n".join(line.rstrip() for line in lines)


def orchestrate(args: argparse.Namespace, argv: list[str]) -> int:
    out = Path(args.out).resolve()
    started = time.monotonic()
    deadline = started + args.budget
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "simulated": args.simulate,
        "started": _now(),
        "finished": None,
        "budget_seconds": args.budget,
        "path": str(out),
        "command": [sys.executable, "-m", "fastnet.bench.gpu_check", *argv],
        "device": None,
        "versions": None,
        "stages": {},
        "goals": [],
        "ok": False,
    }
    if args.setup_status:
        report["stages"]["setup"] = {
            "status": args.setup_status,
            "seconds": args.setup_seconds,
            "command": args.setup_command,
            **(
                {"error": "setup failed: see its output above"}
                if args.setup_status == "failed"
                else {}
            ),
        }

    def save() -> None:
        environment = report["stages"].get("environment", {})
        report["device"] = environment.get("device")
        report["versions"] = environment.get("versions")
        report["goals"] = goals(report)
        report["elapsed_seconds"] = time.monotonic() - started
        write_json(out, report)

    def stop(signum: int, frame: Any) -> None:
        raise Stopped(signal.Signals(signum).name)

    handlers = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1" if args.simulate else "0", PYTHONUNBUFFERED="1")
    common = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    common += ["--simulate"] if args.simulate else []
    common += ["--data-dir", args.data_dir] if args.data_dir else []
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    for name in STAGES:
        report["stages"][name] = {"status": "not run" if name in args.stages else "skipped"}
    try:
        for position, name in enumerate(args.stages):
            later = len(args.stages) - position - 1
            limit = min(
                STAGE_LIMITS_S[args.simulate][name], deadline - time.monotonic() - RESERVE_S * later
            )
            if limit <= 0:
                report["stages"][name] = {"status": "timeout", "error": "no time left in --budget"}
                save()
                continue
            print(f"gpu_check: stage {name} (limit {limit:.0f} s)", flush=True)
            result_path = scratch / f"{name}.json"
            command = [sys.executable, "-m", "fastnet.bench.gpu_check", "--stage", name]
            command += ["--stage-result", str(result_path), *common]
            report["stages"][name] = {"status": "running", "started": _now()}
            save()

            def progress(partial: dict, name: str = name) -> None:
                report["stages"][name] = {**partial, "status": "running"}
                save()

            report["stages"][name] = _run_stage_process(command, env, limit, result_path, progress)
            save()
    except Stopped as signal_name:
        for stage in report["stages"].values():
            if stage.get("status") == "running":
                stage.update(status="interrupted", error=f"stopped by {signal_name}")
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        shutil.rmtree(scratch, ignore_errors=True)
        ran = [stage for stage in report["stages"].values() if stage["status"] != "skipped"]
        report["ok"] = all(stage["status"] == "ok" for stage in ran)
        report["finished"] = _now()
        save()
    print(summary(report), flush=True)
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_arguments(argv)
    if args.stage:
        return run_stage(args)
    return orchestrate(args, argv)


if __name__ == "__main__":
    sys.exit(main())
