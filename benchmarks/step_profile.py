"""Where a training step's time goes, kernel by kernel, on 1 thread and on N: every kernel op of
the cpu device is wrapped with a timer, and steps alternate between the two thread counts in one
process (a noisy host's slow phases then fall on both alike).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/step_profile.py \\
        [--model mnist_cnn] [--batch 256] [--steps 10] [--threads 2]

Prints the median step at each count and their ratio, the time outside the kernels, and per op
its time a step at 1 and at N threads, its own N/1 ratio and what it loses against an ideal
``--ideal`` (1.85, about what a GEMM gains on a second core here) scaling. An op that calls
another op of the device counts both (the times overlap). Models: those of ``fastnet bench
--train`` (``fastnet.bench.race.train_models``), Adam lr 1e-3, random data.

A script, not a test: timings are for reading. The machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from collections.abc import Callable
from typing import Any

from fastnet.backend import get_device, set_num_threads
from fastnet.bench.contestants import training_step
from fastnet.kernels._contract import families


def timed_ops(totals: dict[int, collections.Counter], current: list[int]) -> None:
    """Wrap every kernel op of the cpu device: each call adds its seconds to
    ``totals[current[0]][op]``."""
    device = get_device("cpu")
    for family in families():
        for op in family.ops:
            function = getattr(device, op)

            def timed(*args: Any, _function: Callable = function, _op: str = op, **kwargs: Any):
                start = time.perf_counter()
                result = _function(*args, **kwargs)
                totals[current[0]][_op] += time.perf_counter() - start
                return result

            setattr(device, op, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ideal", type=float, default=1.85)
    options = parser.parse_args()
    try:
        step = training_step(options.model, options.batch)
    except ValueError as error:
        parser.error(str(error))

    counts = (1, options.threads)
    totals: dict[int, collections.Counter] = {count: collections.Counter() for count in counts}
    current = [1]
    for count in counts:  # compile and allocate outside the timing
        set_num_threads(count)
        step()
        step()
    timed_ops(totals, current)
    steps: dict[int, list[float]] = {count: [] for count in counts}
    for _ in range(options.steps):
        for count in counts:
            set_num_threads(count)
            current[0] = count
            time.sleep(0.05)  # the other count's idle threads stop spinning
            start = time.perf_counter()
            step()
            steps[count].append(time.perf_counter() - start)
    one, many = (statistics.median(steps[count]) for count in counts)
    print(
        f"{options.model} batch {options.batch}: step {one * 1e3:.1f} ms on 1 thread, "
        f"{many * 1e3:.1f} ms on {options.threads} ({one / many:.2f}x)"
    )
    kernels = {count: sum(totals[count].values()) / options.steps for count in counts}
    print(
        f"outside the kernels: {(one - kernels[1]) * 1e3:.1f} ms on 1 thread, "
        f"{(many - kernels[options.threads]) * 1e3:.1f} ms on {options.threads}"
    )
    many_label = f"{options.threads} threads"
    print(f"{'op':40s} {'1 thread':>9s} {many_label:>10s} {'ratio':>6s} {'lost':>7s}")
    for op, seconds in totals[1].most_common():
        one_op = seconds / options.steps * 1e3
        many_op = totals[options.threads][op] / options.steps * 1e3
        ratio = one_op / many_op if many_op else float("inf")
        lost = many_op - one_op / options.ideal
        print(f"{op:40s} {one_op:9.2f} {many_op:10.2f} {ratio:5.2f}x {lost:7.2f}")


if __name__ == "__main__":
    main()
