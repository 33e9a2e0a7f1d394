"""One of Sequential's fusions switched on and off in one process: a model's training step in
alternating blocks, each fusion setting on 1 thread and on N, so a noisy host's slow phases fall
on both settings alike. The measurement behind the results log's "in-process A/B" lines.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/fusion_ab.py \\
        [--fusion conv_relu_pool] [--model mnist_cnn] [--batch 256] [--blocks 8] [--threads 2] \\
        [--parallel-min N]

Fusions (``fastnet/nn/containers.py``'s predicates, replaced by one that answers False):
``conv_relu_pool`` (Conv2d → ReLU → MaxPool2d(2) as ``F.conv2d_relu_max_pool2d``),
``batch_norm_relu`` (BatchNorm → ReLU as ``F.batch_norm_relu``; Sequential's pairs only, not the
ResNet block's own call) and ``pool_before_relu`` (ReLU → MaxPool2d run pool first). Prints per
thread count the median and best block (ms a step, 5 steps a block) of each setting ("on":
fused), the fused one's speed-up, and each setting's N/1 scaling. Models: those of ``fastnet
bench --train``.

With ``--parallel-min N`` the switch is the CPU policy's instead: ``kernels/_cpu.py``'s
``PARALLEL_MIN_ELEMENTS`` at N ("on") against its own value ("off"), no fusion changed (on 1
thread the two run alike: the policy only counts with more).

A script, not a test: timings are for reading. The machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import statistics
import time

import fastnet
from fastnet.bench.contestants import training_step
from fastnet.kernels import _cpu
from fastnet.nn import containers

PREDICATES = {
    "conv_relu_pool": "_conv_relu_pool_fuses",
    "batch_norm_relu": "relu_fuses",
    "pool_before_relu": "_pool_commutes",
}
STEPS_PER_BLOCK = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fusion", choices=sorted(PREDICATES), default="conv_relu_pool")
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel-min", type=int, metavar="N")
    options = parser.parse_args()
    try:
        step = training_step(options.model, options.batch)
    except ValueError as error:
        parser.error(str(error))
    name = PREDICATES[options.fusion]
    fused_predicate = getattr(containers, name)
    policy_threshold = _cpu.PARALLEL_MIN_ELEMENTS
    switched = (
        f"PARALLEL_MIN_ELEMENTS {options.parallel_min} (on) or {policy_threshold}"
        if options.parallel_min
        else options.fusion
    )

    def fuse(on: bool) -> None:
        if options.parallel_min:
            _cpu.PARALLEL_MIN_ELEMENTS = options.parallel_min if on else policy_threshold
        else:
            setattr(containers, name, fused_predicate if on else lambda *modules: False)

    counts = (1, options.threads)
    times: dict[tuple[int, bool], list[float]] = {}
    for count in counts:  # compile and allocate outside the timing
        for on in (True, False):
            fastnet.set_num_threads(count)
            fuse(on)
            step()
            step()
    for block in range(options.blocks):
        for count in counts:
            fastnet.set_num_threads(count)
            for on in (True, False) if block % 2 else (False, True):
                fuse(on)
                time.sleep(0.03)
                start = time.perf_counter()
                for _ in range(STEPS_PER_BLOCK):
                    step()
                elapsed = (time.perf_counter() - start) / STEPS_PER_BLOCK
                times.setdefault((count, on), []).append(elapsed * 1e3)
    fuse(True)
    median = {key: statistics.median(values) for key, values in times.items()}
    best = {key: min(values) for key, values in times.items()}
    print(f"{options.model} batch {options.batch}, {switched}: ms a step, median (best)")
    for count in counts:
        print(
            f"{count} thread(s): on {median[count, True]:.1f} ({best[count, True]:.1f}), "
            f"off {median[count, False]:.1f} ({best[count, False]:.1f}): on "
            f"{median[count, False] / median[count, True]:.3f}x"
        )
    for on in (True, False):
        scaling = median[1, on] / median[options.threads, on]
        print(f"{options.threads}/1 threads, {'on' if on else 'off'}: {scaling:.2f}x")


if __name__ == "__main__":
    main()
