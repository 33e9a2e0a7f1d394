"""Run as ``mpiexec -n 2 python sync_batchnorm_ranks.py OUT`` by test_sync_batchnorm_ranks.py.

Every rank draws the same global batches (one seed), takes its own rows of them (uneven shards:
3 and 5 rows, and 0 and 8) and runs a BatchNorm model converted to SyncBatchNorm for two
training steps with loss sum(y·upstream) over its rows, so the ranks' losses add up to the
loss of the whole batch. Rank r writes ``OUT/rank{r}_{case}.npz``: the global batches and this
rank's rows, its last step's output, input gradient and (local and all-reduced) parameter
gradients, the running statistics, and its rows' output in eval mode. The test holds them
against BatchNorm of the whole batch, computed there in float64.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import fastnet as fn
from fastnet import distributed, nn

# name: (layer, shape of one sample, rows per rank, dtype)
CASES = {
    "1d": (nn.BatchNorm1d, (3,), (3, 5), np.float32),
    "1d_sequence": (nn.BatchNorm1d, (3, 7), (3, 5), np.float32),
    "2d": (nn.BatchNorm2d, (3, 5, 3), (3, 5), np.float32),
    "2d_float64": (nn.BatchNorm2d, (2, 3, 3), (5, 3), np.float64),
    "empty_shard": (nn.BatchNorm1d, (3, 2), (0, 8), np.float32),
}
STEPS, MOMENTUM = 2, 0.3


def run_case(out: Path, name: str, group: distributed.Communicator) -> None:
    layer, sample, rows, dtype = CASES[name]
    rng = np.random.default_rng(20240611)  # the same global batches on every rank
    channels, batch = sample[0], sum(rows)
    mine = slice(sum(rows[: group.rank]), sum(rows[: group.rank + 1]))
    model = nn.Sequential(layer(channels, momentum=MOMENTUM)).to(dtype=dtype)
    norm = model[0]
    norm.weight.data[...] = rng.uniform(0.5, 1.5, channels)
    norm.bias.data[...] = rng.standard_normal(channels)
    saved = {"weight": norm.weight.numpy().copy(), "bias": norm.bias.numpy().copy()}
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    norm = model[0]
    for step in range(STEPS):
        x = (3.0 + 2.0 * rng.standard_normal((batch, *sample))).astype(dtype)
        upstream = rng.standard_normal(x.shape).astype(dtype)
        model.zero_grad()
        local = fn.tensor(x[mine], dtype=dtype, requires_grad=True)
        y = model(local)
        (y * fn.tensor(upstream[mine], dtype=dtype)).sum().backward()
        saved[f"x{step}"], saved[f"upstream{step}"] = x, upstream
    grads = {"dweight": norm.weight.grad.numpy().copy(), "dbias": norm.bias.grad.numpy().copy()}
    saved.update(grads)
    for key, value in grads.items():  # what a data-parallel wrapper does with them
        saved[f"{key}_sum"] = group.allreduce(value.copy(), "sum")
    saved.update(
        rows=np.array([mine.start, mine.stop]),
        y=y.numpy(),
        dx=local.grad.numpy(),
        running_mean=norm.running_mean.numpy(),
        running_var=norm.running_var.numpy(),
        num_batches_tracked=norm.num_batches_tracked.numpy(),
        eval_y=model.eval()(fn.tensor(x[mine], dtype=dtype)).numpy(),
    )
    np.savez(out / f"rank{group.rank}_{name}.npz", **saved)


def main() -> None:
    out = Path(sys.argv[1])
    group = distributed.init_process_group(device="cpu")
    if group.size != 2:
        raise SystemExit(f"run this as 2 ranks, not {group.size}")
    for name in CASES:
        run_case(out, name, group)


if __name__ == "__main__":
    main()
