#!/usr/bin/env bash
# Quick start 1: train the MNIST CNN for 2 epochs on the CPU and print its test accuracy.
# Extra arguments go to `fastnet train` (e.g. --device cuda, --epochs 5, --model mlp).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/fastnet train --dataset mnist --model cnn --epochs 2 "$@"
