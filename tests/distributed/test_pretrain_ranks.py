"""Pretraining under ``mpiexec -n 2``: SimCLR contrasts the global batch, the ranks agree."""

from __future__ import annotations

import json

import numpy as np
from pretrain_ranks import BATCH, DIM, TEMPERATURE, projections
from ranks import run_ranks

import fastnet as fn
from numerics import relative_error


def test_all_gather_gives_each_rank_the_gradient_of_the_global_nt_xent(tmp_path) -> None:
    run_ranks(2, "pretrain_ranks.py", "gather", tmp_path)
    z = fn.tensor(projections(), dtype=fn.float64, requires_grad=True)
    loss = fn.functional.nt_xent_loss(z, TEMPERATURE)
    loss.backward()
    expected = z.grad.numpy().reshape(2, BATCH, DIM)
    share = BATCH // 2
    for rank in (0, 1):
        got = np.load(tmp_path / f"gather-rank{rank}.npz")
        assert relative_error(got["loss"], loss.numpy()) < 1e-12
        mine = expected[:, rank * share : (rank + 1) * share].reshape(2 * share, DIM)
        # the same loss on both ranks: each gets twice its rows' gradient, which the
        # data-parallel average halves again
        assert relative_error(got["grad"], 2 * mine) < 1e-12, rank


def test_simclr_pretraining_on_two_ranks_keeps_one_encoder(tmp_path) -> None:
    done = run_ranks(2, "pretrain_ranks.py", "pretrain", tmp_path, "simclr")
    assert done.stdout.count("epoch 1/1: simclr loss") == 1  # rank 0 alone logs
    ranks = [np.load(tmp_path / f"simclr-rank{rank}.npz") for rank in (0, 1)]
    saved = fn.load(tmp_path / "simclr" / "encoder.safetensors")
    fn.manual_seed(0)  # the run's seed: its initial weights
    start = fn.models.create("cnn").state_dict()
    for name in ranks[0]:
        assert np.array_equal(ranks[0][name], ranks[1][name]), name
        assert np.array_equal(saved[name], ranks[0][name]), name
    moved = [n for n in ranks[0] if n.endswith("weight") and n in start]
    assert moved and all(relative_error(ranks[0][n], start[n]) > 1e-4 for n in moved)
    config = json.loads((tmp_path / "simclr" / "config.json").read_text())
    assert config["ranks"] == 2 and config["sync_batchnorm"] is True
