"""SyncBatchNorm over 2 MPI ranks with uneven shards is BatchNorm of the whole batch: output,
input gradient, parameter gradients (summed over the ranks, as a data-parallel wrapper does),
running statistics and eval output, each rank's rows against a float64 NumPy reference of the
concatenated batch (sync_batchnorm_ranks.py runs the ranks)."""

import numpy as np
import pytest
from ranks import run_ranks

from numerics import relative_error

CASES = ("1d", "1d_sequence", "2d", "2d_float64", "empty_shard")
MOMENTUM, EPS = 0.3, 1e-5


def whole_batch_reference(saved, steps=2):
    """BatchNorm of the whole batch in float64 from the definitions: the last step's y, dx,
    dweight, dbias (loss sum(y·upstream)), the running statistics after every step, and the
    eval output."""
    channels = saved["weight"].shape[0]
    weight, bias = saved["weight"].astype(np.float64), saved["bias"].astype(np.float64)
    running_mean, running_var = np.zeros(channels), np.ones(channels)
    per_channel = None
    for step in range(steps):
        x = saved[f"x{step}"].astype(np.float64)
        dy = saved[f"upstream{step}"].astype(np.float64)
        axes = (0,) + tuple(range(2, x.ndim))
        per_channel = (1, channels) + (1,) * (x.ndim - 2)
        count = x.size // channels
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        running_mean = (1 - MOMENTUM) * running_mean + MOMENTUM * mean
        running_var = (1 - MOMENTUM) * running_var + MOMENTUM * var * count / (count - 1)
        rstd = 1 / np.sqrt(var + EPS)
        xhat = (x - mean.reshape(per_channel)) * rstd.reshape(per_channel)
        dbias, dweight = dy.sum(axis=axes), (dy * xhat).sum(axis=axes)
        dxhat = dy * weight.reshape(per_channel)
        dx = rstd.reshape(per_channel) * (
            dxhat
            - dxhat.mean(axis=axes, keepdims=True)
            - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)
        )
    eval_xhat = (x - running_mean.reshape(per_channel)) / np.sqrt(
        running_var.reshape(per_channel) + EPS
    )
    return {
        "y": xhat * weight.reshape(per_channel) + bias.reshape(per_channel),
        "dx": dx,
        "dy_xhat": dy * xhat,
        "dy": dy,
        "dweight_sum": dweight,
        "dbias_sum": dbias,
        "running_mean": running_mean,
        "running_var": running_var,
        "eval_y": eval_xhat * weight.reshape(per_channel) + bias.reshape(per_channel),
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync_batchnorm")
    run_ranks(2, "sync_batchnorm_ranks.py", out, timeout=120)
    return {
        (rank, case): dict(np.load(out / f"rank{rank}_{case}.npz"))
        for rank in range(2)
        for case in CASES
    }


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rank", [0, 1])
def test_each_rank_matches_batchnorm_of_the_whole_batch(results, case, rank):
    saved = results[rank, case]
    tolerance = 1e-12 if saved["x0"].dtype == np.float64 else 1e-5
    reference = whole_batch_reference(saved)
    start, stop = saved["rows"]
    mine = slice(start, stop)
    assert saved["y"].shape == saved["x1"][mine].shape
    local = {
        "y": reference["y"][mine],
        "dx": reference["dx"][mine],
        "eval_y": reference["eval_y"][mine],
        # a rank's own parameter gradients cover its rows only, and add up over the ranks
        "dweight": reference["dy_xhat"][mine].sum(axis=(0, *range(2, saved["x1"].ndim))),
        "dbias": reference["dy"][mine].sum(axis=(0, *range(2, saved["x1"].ndim))),
    }
    for name in ("dweight_sum", "dbias_sum", "running_mean", "running_var"):
        local[name] = reference[name]
    for name, expected in local.items():
        got = saved[name]
        assert got.dtype == saved["x0"].dtype, name
        if expected.size == 0:  # the empty shard's output
            assert got.shape == expected.shape, name
        elif np.abs(expected).max() == 0:  # the empty shard's own parameter gradients
            np.testing.assert_array_equal(got, expected, err_msg=name)
        else:
            assert relative_error(got, expected) < tolerance, name
    assert saved["num_batches_tracked"] == 2


@pytest.mark.parametrize("case", CASES)
def test_ranks_keep_identical_running_statistics(results, case):
    for name in ("running_mean", "running_var"):
        np.testing.assert_array_equal(results[0, case][name], results[1, case][name])
