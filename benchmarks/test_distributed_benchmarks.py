"""CI's check of the data-parallel benchmarks: ``ddp_throughput.py`` and ``scaling_projection.py``
run in ``--quick`` mode (each starts its own ``mpiexec`` jobs) and write JSON with every field,
every number finite and positive. Whether the numbers are good is for the scripts' full runs.

    python -m pytest benchmarks/test_distributed_benchmarks.py -q
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
MODELS = ("mnist_cnn", "transformer")

pytest.importorskip("mpi4py", reason="needs the mpi extra (mpi4py and MPICH)")
pytest.importorskip("torch", reason="needs PyTorch (the bench extra)")
if not (Path(sys.executable).parent / "mpiexec").exists() and not shutil.which("mpiexec"):
    pytest.skip("no mpiexec beside this Python or on PATH", allow_module_level=True)


def numbers(value: Any) -> Iterator[float]:
    """Every number inside ``value`` (nested dicts and lists)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def assert_finite_positive(value: Any, what: str) -> None:
    found = list(numbers(value))
    assert found, f"{what}: no numbers"
    bad = [number for number in found if not (math.isfinite(number) and number > 0)]
    assert not bad, f"{what}: numbers that are not finite and positive: {bad}"


def run_script(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(HERE / name), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def ddp_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "ddp.json"
    printed = run_script("ddp_throughput.py", "--json", str(path))
    assert "fastnet/torch 2r" in printed
    return path


def test_ddp_throughput_quick(ddp_json: Path) -> None:
    report = json.loads(ddp_json.read_text())
    assert report["scaling"] == "weak"
    assert_finite_positive(report["ceilings"]["gemm_gflops"], "ceilings")
    assert set(report["models"]) == set(MODELS)
    for name, model in report["models"].items():
        for framework in ("fastnet", "torch"):
            assert set(model["median_samples_per_second"][framework]) == {"1", "2"}, name
            assert_finite_positive(model["best_samples_per_second"][framework], name)
            assert_finite_positive(model["scaling"][framework], f"{name} scaling")
        assert_finite_positive(model["fastnet_over_torch"], f"{name} fastnet/torch")
        assert_finite_positive(model["percent_of_gemm_ceiling_per_rank"], name)
        assert model["batch_per_rank"] == {"1": 4, "2": 4}
        assert not model["first_step_2_ranks"]["loss_relative_error"] > 1e-4


def test_scaling_projection_quick(ddp_json: Path, tmp_path: Path) -> None:
    path = tmp_path / "projection.json"
    printed = run_script("scaling_projection.py", "--json", str(path), "--ddp-json", str(ddp_json))
    assert "| p = 512 |" in printed
    report = json.loads(path.read_text())
    assert report["measured"]["ranks"] == 2
    assert_finite_positive(report["measured"]["allreduce"], "all-reduce sweep")
    assert_finite_positive(report["fitted"], "fitted α and B")
    assert_finite_positive(report["measured"]["models"], "step times")
    rows = report["projection"]
    assert {(row["model"], row["gpus"]) for row in rows} == {
        (model, gpus) for model in MODELS for gpus in (8, 64, 512)
    }
    assert_finite_positive(rows, "projection")
    for row in rows:
        assert row["efficiency_no_overlap"] <= row["efficiency_full_overlap"] <= 1.0
    assert_finite_positive(report["this_machine"], "p = 2 on this machine")
    assert all(row["measured_efficiency"] is not None for row in report["this_machine"])
