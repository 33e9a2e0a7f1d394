"""Training throughput, fastnet against PyTorch on the CPU: the same models, threads, batches,
optimizer (Adam, lr 1e-3) and initial weights; images/s for both and their ratio.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/train_throughput.py [--quick]
        [--only mlp] [--threads N] [--json PATH]

The same as ``fastnet bench --train``. Before timing a model it checks that both frameworks give
the same first-step loss and gradients from the same weights, and refuses to report otherwise.
"""

import sys

from fastnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--train", *sys.argv[1:]]))
