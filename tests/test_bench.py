"""fastnet.bench at tiny sizes: every declared case agrees with its peers, mismatches are refused,
the table and JSON are written, the CUDA simulator is never timed, the PyTorch mirror trains
identically, and the benchmark suites time every case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastnet import bench, models
from fastnet.backend import CPU
from fastnet.cli import main as cli_main

torch = bench.optional_torch()
needs_torch = pytest.mark.skipif(
    torch is None, reason="PyTorch is not installed (bash scripts/setup.sh bench)"
)
QUICK_SPECS = bench.case_specs(quick=True)
REPOSITORY = Path(__file__).resolve().parents[1]


def test_case_ids_are_unique():
    ids = [spec.id for spec in QUICK_SPECS]
    assert len(ids) == len(set(ids)), sorted(ids)


@pytest.mark.parametrize("spec", QUICK_SPECS, ids=lambda spec: spec.id)
def test_every_quick_case_agrees_with_its_peers(spec):
    # The gate for every family's declared cases: each builds on the CPU, names ours first and
    # only the implementations it declares, and every peer computes what ours does.
    case = bench.build_and_verify(spec, CPU)
    assert list(case.implementations)[0] == bench.OURS
    assert set(case.implementations) <= set(spec.implementations), spec.id


# conv2d_train's implementations compose kernels tested on the cuda device elsewhere (the Winograd
# layer in tests/functional, each kernel in tests/kernels), and its tile GEMMs, three
# implementations over, are the slowest thing the simulator could run here.
@pytest.mark.parametrize(
    "spec",
    [spec for spec in QUICK_SPECS if spec.family != "conv2d_train"],
    ids=lambda spec: spec.id,
)
def test_every_quick_case_builds_and_agrees_on_the_cuda_device(spec):
    # In the simulator here: --device cuda refuses to time it, but its cases must still be right.
    from fastnet.backend import get_device

    names = list(bench.build_and_verify(spec, get_device("cuda")).implementations)
    assert names[0] == bench.OURS and "torch" not in names, spec.id
    assert len(names) > 1 or spec.id == "overhead-add.backward", spec.id


def test_full_cases_cover_the_issue_shapes():
    labels = {spec.id: spec.shape for spec in bench.case_specs()}
    assert (
        labels["softmax_xent-b256.c10"] == "256x10"
        and labels["softmax_xent-b128.c1000"] == "128x1000"
    )
    assert labels["adam-1M"] == "1000000" and labels["adam-10M"] == "10000000"
    assert labels["im2col-resnet.conv.b128"].startswith("128x64x16x16")
    assert {
        "im2col-mnist.conv2.b64",
        "im2col-mnist.conv2.b256",
        "maxpool_bwd-mnist.pool1.b256",
    } <= set(labels)
    assert labels["conv2d-mnist.conv2.b256"] == "256x32x14x14 k3s1p1"
    assert labels["conv2d_train-resnet20.stage1.b128"] == "128x16x32x32->16 k3s1p1"


def _case_with_peer(peer_output):
    ours = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    implementations = {
        bench.OURS: bench.Implementation(lambda: ours),
        "numpy": bench.Implementation(lambda: peer_output(ours)),
    }
    return bench.Case(bench.CaseInfo("toy", "3x4", 12.0, 96.0), implementations)


@pytest.mark.parametrize(
    "peer, message",
    [
        (
            lambda ours: ours * 1.01,
            r"numpy differs from fastnet in output 0 .*relative error 1\.00e-02",
        ),
        (lambda ours: ours.T, r"shapes \(4, 3\) and \(3, 4\)"),
        (lambda ours: (ours, ours), r"returned 2 outputs, fastnet 1"),
    ],
)
def test_verify_refuses_a_peer_computing_something_else(peer, message):
    with pytest.raises(bench.MismatchError, match=message):
        bench.verify(_case_with_peer(peer))


def test_verify_accepts_float32_rounding_and_requires_exact_indices():
    bench.verify(_case_with_peer(lambda ours: ours * np.float32(1 + 1e-6)))
    assert bench.relative_error(np.array([1, 2]), np.array([1, 3])) == np.inf
    assert bench.relative_error(np.array([1, 2]), np.array([1, 2])) == 0.0


def test_rates_pick_the_bound_and_its_ceiling():
    ceilings = bench.Ceilings("cpu", 2, gemm_gflops=100.0, copy_gbs=10.0, library="test BLAS")
    assert ceilings.balance == 10.0
    compute = bench.rates(bench.CaseInfo("toy", "gemm", flops=1e9, bytes_moved=1e6), 0.1, ceilings)
    assert compute["bound"] == "compute" and compute["gflops"] == pytest.approx(10.0)
    assert compute["percent_of_ceiling"] == pytest.approx(10.0)
    memory = bench.rates(bench.CaseInfo("toy", "copy", flops=0.0, bytes_moved=1e9), 0.5, ceilings)
    assert memory["bound"] == "memory" and memory["percent_of_ceiling"] == pytest.approx(20.0)
    latency = bench.rates(
        bench.CaseInfo("toy", "add", 4.0, 48.0, fixed_bound="latency"), 1e-5, ceilings
    )
    assert latency["bound"] == "latency" and latency["percent_of_ceiling"] is None


def test_quick_run_prints_one_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    only = ["--only", "conv2d-tiny.conv.s2"]
    assert cli_main(["bench", "--quick", *only, "--threads", "1", "--json", str(path)]) == 0
    table = capsys.readouterr().out
    assert "ceilings: cpu, 1 thread: GEMM" in table and "vs numpy" in table
    assert "conv2d tiny.conv.s2 1x2x8x8->3 k3s2p0" in table
    report = json.loads(path.read_text())
    (row,) = report["kernels"]
    assert row["family"] == "conv2d" and row["seconds"]["fastnet"] > 0
    assert row["ratios"]["numpy"] == pytest.approx(
        row["seconds"]["numpy"] / row["seconds"]["fastnet"]
    )
    assert report["ceilings"]["threads"] == 1 and report["failures"] == []
    assert report["machine"]["commit"]


def test_cuda_refuses_to_time_the_simulator(monkeypatch, capsys):
    from fastnet.kernels import _cuda

    monkeypatch.setattr(_cuda, "simulating", lambda: True)
    assert cli_main(["bench", "--device", "cuda", "--quick"]) == 2
    assert "refusing to time the CUDA simulator" in capsys.readouterr().err


def test_ptx_delegates_to_the_compile_report(monkeypatch):
    from fastnet.kernels import ptx

    calls = []
    monkeypatch.setattr(ptx, "main", lambda argv: calls.append(argv) or 7)
    assert cli_main(["bench", "--ptx"]) == 7 and calls == [[]]


def test_pinned_threads_pins_fastnet_and_torch_then_restores_them():
    import numba

    from fastnet.backend import get_num_threads

    before, most = get_num_threads(), numba.config.NUMBA_NUM_THREADS
    with bench.pinned_threads(most):
        assert get_num_threads() == numba.get_num_threads() == most
        if torch is not None:
            assert torch.get_num_threads() == most
    assert get_num_threads() == numba.get_num_threads() == before


def test_pinned_threads_rejects_impossible_counts():
    with pytest.raises(ValueError, match="threads must be between 1 and"):
        with bench.pinned_threads(0):
            pass


# ---------------------------------------------------------------- training against PyTorch

TINY_MLP = bench.TrainModel(
    "tiny_mlp",
    lambda: models.mlp(in_features=12, hidden=(8,), classes=3),
    (1, 3, 4),
    (4,),
    classes=3,
)


@needs_torch
def test_training_race_reports_both_frameworks_after_an_identical_first_step():
    with bench.pinned_threads(1):
        result = bench.measure_training(TINY_MLP, 4, quick=True)
    assert result["samples_per_second"]["fastnet"] > 0 and result["samples_per_second"]["torch"] > 0
    assert result["ratio"] == pytest.approx(
        result["samples_per_second"]["fastnet"] / result["samples_per_second"]["torch"]
    )
    assert result["first_step"]["loss_relative_error"] < 1e-6
    assert (
        result["first_step"]["fastnet_gradient_error"] < 1e-5
        and result["first_step"]["torch_gradient_error"] < 1e-5
    )


@needs_torch
def test_a_race_on_two_threads_also_races_fastnet_on_one_and_reports_the_scaling(monkeypatch):
    from fastnet.backend import get_num_threads

    seen = []  # fastnet's thread count at every step, by which contestant ran it
    original = bench.race.cross_entropy

    def recording(*args, **kwargs):
        seen.append(get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(bench.race, "cross_entropy", recording)
    with bench.pinned_threads(2):
        result = bench.measure_training(TINY_MLP, 4, quick=True)
        assert get_num_threads() == 2  # restored after the 1-thread rounds
    speeds = result["samples_per_second"]
    assert set(speeds) == {"fastnet", "torch", bench.race.ONE_THREAD}
    assert result["scaling"] == pytest.approx(speeds["fastnet"] / speeds[bench.race.ONE_THREAD])
    assert 1 in seen and 2 in seen
    assert result["gemm_scaling"] > 0  # BLAS's own 2/1, timed in the same rounds
    table = bench.format_training_table([result], threads=2)
    assert "fastnet 2/1 thread" in table and f"{result['scaling']:.2f}x" in table
    assert "GEMM 2/1 thread" in table and f"{result['gemm_scaling']:.2f}x" in table
    with bench.pinned_threads(1):
        one_thread = bench.measure_training(TINY_MLP, 4, quick=True)
        assert "scaling" not in one_thread and "gemm_scaling" not in one_thread


def test_gemm_gflops_leaves_numpys_blas_at_its_thread_count():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]

    before = blas_threads()
    for threads in (1, 2):
        assert bench.harness.gemm_gflops(threads, quick=True) > 0
        assert blas_threads() == before


def test_first_step_gradients_are_judged_against_float64_and_pytorchs_own_rounding():
    def first_step(fastnet_error, torch_error, torch_loss=2.5):
        return bench.FirstStep(
            2.5,
            torch_loss,
            abs(2.5 - torch_loss) / torch_loss,
            "head.weight",
            fastnet_error,
            torch_error,
        )

    assert first_step(7e-3, 1.7e-2).problems() == []  # ResNet-20's float32 noise, worse in PyTorch
    assert first_step(9e-4, 1e-7).problems() == []
    (gradients,) = first_step(7e-3, 1e-6).problems()
    assert "fastnet's head.weight is 7.0e-03 from float64 (allowed 1.0e-03" in gradients
    (losses,) = first_step(1e-7, 1e-7, torch_loss=2.6).problems()
    assert losses.startswith("first-step losses differ: fastnet 2.5, torch 2.6")


@needs_torch
def test_training_race_refuses_models_that_compute_differently(monkeypatch):
    from fastnet.bench import race

    honest = race.to_torch

    def perturbed(module):
        mirror = honest(module)
        with torch.no_grad():
            next(mirror.parameters()).add_(0.5)
        return mirror

    monkeypatch.setattr(race, "to_torch", perturbed)
    with pytest.raises(
        bench.MismatchError, match="first-step losses differ.*refusing to report a throughput"
    ):
        bench.measure_training(TINY_MLP, 4, quick=True)


@needs_torch
def test_torch_mirror_of_a_resnet_matches_loss_and_gradients():
    model = models.create("resnet8", width=4)
    mirror = bench.to_torch(model)
    assert [name for name, _ in mirror.named_parameters()] == [
        name for name, _ in model.named_parameters()
    ]
    rng = np.random.default_rng(0)
    first = bench.compare_first_step(
        model, mirror, rng.standard_normal((2, 3, 8, 8), dtype=np.float32), rng.integers(0, 10, 2)
    )
    assert first.problems() == [], first


@needs_torch
def test_torch_mirror_names_a_layer_it_cannot_translate():
    from fastnet import nn

    class Unheard(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(NotImplementedError, match="no PyTorch equivalent of fastnet's Unheard"):
        bench.to_torch(nn.Sequential(nn.Linear(2, 2), Unheard()))


def test_the_benchmark_suite_times_every_case_of_every_implementation():
    collected = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "benchmarks/test_bench_cases.py",
            "--quick",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    ids = {
        line.split("[", 1)[1].rstrip("]") for line in collected.stdout.splitlines() if "::" in line
    }
    assert ids == {f"{spec.id}-{name}" for spec in QUICK_SPECS for name in spec.implementations}


def test_the_package_exports_what_it_names():
    assert sorted(bench.__all__) == sorted(set(bench.__all__))
    for name in bench.__all__:
        assert getattr(bench, name) is not None, name
