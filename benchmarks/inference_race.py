"""Inference speed, fastnet against PyTorch on the CPU: the MNIST CNN, ResNet-20 and the ViT with
the same weights and threads; batch-1 median latency and batch-256 images/s for both, and their
ratio. fastnet runs ``optimize_for_inference`` (BatchNorm folded into the convolutions) under
``no_grad``, PyTorch its eval-mode mirror under ``torch.inference_mode``.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/inference_race.py [--quick]
        [--only resnet] [--threads N] [--json PATH]

The same as ``fastnet bench --infer``. Before timing a model it checks that both frameworks give
the same logits, and refuses to report otherwise.
"""

import sys

from fastnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--infer", *sys.argv[1:]]))
