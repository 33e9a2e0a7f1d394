"""``mpiexec -n 2 fastnet train``: the command line unchanged, one model trained by two ranks.

The runs are tiny (20 MNIST images per class, the MLP, 2 epochs) but real: the CLI, the run
folder, the checkpoint and its resume, all under two ranks.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from ranks import run_ranks

import fastnet as fn
from numerics import relative_error

SETTINGS = (
    "train --dataset mnist --model mlp --labels-per-class 20 --batch-size 20 --schedule none "
    "--optimizer sgd --lr 0.05 --no-progress --threads 1"
).split()


@pytest.fixture(scope="module")
def two_rank_run(shared_data, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ranks") / "run"
    data = ["--data-dir", shared_data / "mnist"]
    done = run_ranks(2, "fastnet.cli", *SETTINGS, *data, "--epochs", 2, "--out", out)
    return out, done, data


def test_only_rank_0_reports_and_writes_and_the_config_names_the_ranks(two_rank_run) -> None:
    out, done, _ = two_rank_run
    assert done.stdout.count("epoch 2/2: train loss") == 1
    assert "2 ranks x 10" in done.stdout
    assert json.loads((out / "config.json").read_text())["ranks"] == 2
    assert (out / "model.safetensors").is_file() and (out / "checkpoint.safetensors").is_file()


def test_resume_under_two_ranks_continues_bit_for_bit(two_rank_run, tmp_path) -> None:
    out, _, data = two_rank_run
    half = tmp_path / "half"
    run_ranks(2, "fastnet.cli", *SETTINGS, *data, "--epochs", 1, "--out", half)
    resume = ["train", "--resume", half / "checkpoint.safetensors", "--epochs", 2, *data]
    run_ranks(2, "fastnet.cli", *resume, "--no-progress", "--threads", 1)
    whole, resumed = fn.load(out / "model.safetensors"), fn.load(half / "model.safetensors")
    assert sorted(whole) == sorted(resumed)
    for name in whole:
        assert np.array_equal(whole[name], resumed[name]), name


def test_two_ranks_train_what_one_process_trains(two_rank_run, tmp_path) -> None:
    out, _, data = two_rank_run
    single = tmp_path / "single"
    command = [sys.executable, "-m", "fastnet.cli", *SETTINGS, *map(str, data)]
    subprocess.run(
        [*command, "--epochs", "2", "--out", str(single)], check=True, capture_output=True
    )
    ranks, one = fn.load(out / "model.safetensors"), fn.load(single / "model.safetensors")
    fn.manual_seed(0)  # the runs' seed: their initial weights
    start = fn.models.create("mlp").state_dict()
    for name in one:
        assert relative_error(ranks[name], one[name]) < 1e-4, name
        assert relative_error(start[name], one[name]) > 1e-2, name  # training moved it
    history = [json.loads((run / "history.json").read_text()) for run in (out, single)]
    assert abs(history[0]["test_acc"][-1] - history[1]["test_acc"][-1]) < 0.005


def test_a_global_batch_that_does_not_divide_over_the_ranks_is_a_user_error(shared_data) -> None:
    settings = [*SETTINGS, "--data-dir", shared_data / "mnist", "--batch-size", 21, "--epochs", 1]
    done = run_ranks(2, "fastnet.cli", *settings, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--batch-size 21 is the global batch" in lines[0], done.stderr
