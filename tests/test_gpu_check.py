"""scripts/gpu_check.sh and fastnet.bench.gpu_check: the simulated run's fast stages write the
report's schema through the shell script; a stage over its limit is stopped and recorded; a
report is left even when Python never starts; goals are judged from the stages' numbers (never
in the simulator); the tests stage counts every outcome. Timings are not judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fastnet.bench import gpu_check
from fastnet.bench.gpu_stages import OutcomeRecorder

REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = REPOSITORY / "scripts" / "gpu_check.sh"


def _script(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), "--python", sys.executable, *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_simulated_run_of_the_fast_stages_writes_the_report(tmp_path):
    out = tmp_path / "report.json"
    done = _script("--simulate", "--only", "environment,launch", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["schema"] == gpu_check.SCHEMA and report["simulated"] and report["ok"]
    assert report["finished"] and report["path"] == str(out)
    statuses = {name: stage["status"] for name, stage in report["stages"].items()}
    assert statuses == {
        "setup": "ok",
        "environment": "ok",
        "tests": "skipped",
        "train": "skipped",
        "bench": "skipped",
        "launch": "ok",
        "nccl": "skipped",
    }
    assert report["device"]["simulated"] and report["versions"]["numba_cuda"]
    launch = report["stages"]["launch"]
    for timing in ("trivial_kernel", "typical_kernel", "matmul_launcher"):
        assert launch[timing]["host_us"] > 0 and launch[timing]["done_us"] >= 0, timing
    step = launch["training_step"]
    assert isinstance(step["launches"], int) and step["launches"] > 0
    assert step["all_kernels"]["count"] is None and step["all_kernels"]["note"]
    assert [goal["name"] for goal in report["goals"]] == list(gpu_check.GOALS)
    assert all(goal["met"] is None for goal in report["goals"])  # simulated: never judged
    assert "SIMULATED" in done.stdout and str(out) in done.stdout


def test_a_stage_over_its_limit_is_stopped_and_the_report_says_so(tmp_path):
    out = tmp_path / "report.json"
    # half a second cannot even start the stage's Python process (imports, git)
    code = gpu_check.main(
        ["--simulate", "--only", "environment", "--budget", "0.5", "--out", str(out)]
    )
    report = json.loads(out.read_text())
    assert code == 1 and not report["ok"]
    stage = report["stages"]["environment"]
    assert stage["status"] == "timeout" and "limit" in stage["error"], stage


def test_a_report_is_left_when_python_never_starts(tmp_path):
    out = tmp_path / "report.json"
    done = subprocess.run(
        ["bash", str(SCRIPT), "--python", str(tmp_path / "no-python"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(out.read_text())
    assert done.returncode == 1 and not report["ok"]
    assert report["stages"]["setup"]["status"] == "failed" and "no report" in report["error"]


def test_unknown_stages_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(["--only", "tests,warp"])
    assert stopped.value.code == 2 and "unknown stage warp" in capsys.readouterr().err


def _report(simulated: bool, train: dict, bench: dict) -> dict:
    return {"simulated": simulated, "stages": {"train": train, "bench": bench}}


def _bench(cublas_percent: float, memory_percents: list[float]) -> dict:
    return {
        "status": "ok",
        "matmul_vs_cublas": {"percent_of_cublas": cublas_percent},
        "memory_bound": [
            {"case": f"case {i}", "percent_of_copy": p} for i, p in enumerate(memory_percents)
        ],
    }


def _train(seconds_to_99: float | None) -> dict:
    return {
        "status": "ok",
        "epochs": [{}, {}],
        "final_test_acc": 0.991,
        "seconds_to_99": seconds_to_99,
    }


@pytest.mark.parametrize(
    "train, bench, expected",
    [
        (_train(4.2), _bench(85.0, [71.0, 90.0]), [True, True, True]),
        (_train(5.3), _bench(79.9, [71.0, 65.0]), [False, False, False]),
        (_train(None), _bench(80.0, []), [False, True, False]),  # 99% never reached
        (
            {"status": "failed", "error": "boom"},
            {"status": "timeout", "error": "limit"},
            [None] * 3,
        ),
    ],
)
def test_goals_are_judged_from_the_measurements(train, bench, expected):
    judged = gpu_check.goals(_report(False, train, bench))
    assert [goal["met"] for goal in judged] == expected
    assert [goal["met"] for goal in gpu_check.goals(_report(True, train, bench))] == [None] * 3


def test_the_memory_goal_names_how_many_cases_met_it():
    judged = {
        goal["name"]: goal
        for goal in gpu_check.goals(_report(False, _train(4.0), _bench(90.0, [75.0, 50.0, 71.0])))
    }
    memory = judged["memory_bound_vs_copy"]
    assert memory["value"] == 50.0 and memory["detail"].startswith("2 of 3")


def test_outcome_recorder_counts_every_kind_of_outcome():
    saved = []
    recorder = OutcomeRecorder(saved.append, every_s=0.0)

    def report(when: str, outcome: str, **extra) -> SimpleNamespace:
        return SimpleNamespace(
            when=when,
            outcome=outcome,
            failed=outcome == "failed",
            skipped=outcome == "skipped",
            nodeid=f"tests/test_x.py::{when}_{outcome}",
            longreprtext="Traceback\n  ...\nAssertionError: 1 != 2\n",
            **extra,
        )

    for event in (
        report("setup", "passed"),
        report("call", "passed"),
        report("teardown", "passed"),
        report("call", "failed"),
        report("setup", "failed"),  # an error in a fixture
        report("setup", "skipped"),
        report("call", "skipped", wasxfail=""),
        report("call", "passed", wasxfail=""),
    ):
        recorder.pytest_runtest_logreport(event)
    recorder.pytest_collectreport(
        SimpleNamespace(failed=True, nodeid="tests/test_y.py", longreprtext="E   ImportError: no")
    )
    assert dict(recorder.counts) == {
        "passed": 1,
        "failed": 1,
        "errors": 2,
        "skipped": 1,
        "xfailed": 1,
        "xpassed": 1,
    }
    assert [failure["error"] for failure in recorder.failures] == [
        "AssertionError: 1 != 2",
        "AssertionError: 1 != 2",
        "E   ImportError: no",
    ]
    assert saved and saved[-1]["counts"]["passed"] == 1  # saved as they came
