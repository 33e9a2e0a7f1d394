"""Benchmarks: every kernel against its peers and the machine's own ceilings, and training
throughput against PyTorch. The library behind ``fastnet bench`` and the suites in benchmarks/.

Vocabulary:

* **ceilings**: what this machine measured, with the threads pinned to the count the benchmarks
  use: a large float32 GEMM through the BLAS NumPy links (GFLOP/s; cuBLAS through CuPy on a GPU)
  and a large copy (GB/s, bytes read + bytes written). Their quotient, the *machine balance*
  (FLOP per byte), splits kernels into compute-bound and memory-bound.
* **case**: one computation at one realistic training shape, with its FLOPs, the minimum bytes it
  must move and its implementations: ``fastnet`` (ours) and its peers (plain NumPy or CuPy,
  PyTorch, cuBLAS). Each kernel family declares its own cases (``FAMILY.bench_cases`` in
  ``fastnet.kernels``); :func:`case_specs` adds the ops above the kernels. Before anything is
  timed, every peer's result is compared with ours: a benchmark of a different computation is
  worthless.
* **row**: a case's timings against the ceilings and as a ratio to each peer (``harness``).

One module per concern: ``harness`` (threads, ceilings, timers, verification, rows and the
table), ``cases`` (collecting the cases; the op-level ones), ``race`` (the training race and its
PyTorch mirror) and ``command`` (what ``fastnet bench`` runs; ``fastnet.cli`` parses its options
and imports this package only for that command).
"""

from __future__ import annotations

from ..kernels._contract import (
    FLOAT32_BYTES,
    OURS,
    BenchContext,
    Case,
    CaseInfo,
    CaseSpec,
    Implementation,
)
from .cases import case_specs, op_case_specs, plain_conv2d, run_kernels
from .command import machine, run
from .contestants import SequenceClassifier, TrainModel, train_models
from .harness import (
    Ceilings,
    MismatchError,
    Timing,
    bench_context,
    build_and_verify,
    cuda_refusal,
    format_table,
    make_row,
    measure_ceilings,
    optional_torch,
    pinned_threads,
    rates,
    relative_error,
    time_cpu,
    time_cuda,
    verify,
)
from .race import (
    TORCH_EQUIVALENTS,
    FirstStep,
    compare_first_step,
    format_training_table,
    measure_training,
    run_training,
    to_torch,
)

__all__ = [
    "OURS",
    "FLOAT32_BYTES",
    "BenchContext",
    "CaseInfo",
    "Implementation",
    "Case",
    "CaseSpec",
    "optional_torch",
    "pinned_threads",
    "Ceilings",
    "measure_ceilings",
    "Timing",
    "time_cpu",
    "time_cuda",
    "cuda_refusal",
    "MismatchError",
    "relative_error",
    "verify",
    "bench_context",
    "build_and_verify",
    "rates",
    "make_row",
    "format_table",
    "case_specs",
    "op_case_specs",
    "run_kernels",
    "plain_conv2d",
    "TrainModel",
    "SequenceClassifier",
    "train_models",
    "TORCH_EQUIVALENTS",
    "to_torch",
    "FirstStep",
    "compare_first_step",
    "measure_training",
    "run_training",
    "format_training_table",
    "run",
    "machine",
]
