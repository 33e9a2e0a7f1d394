#!/usr/bin/env bash
# Quick start 1: train the MNIST CNN for 2 epochs on the CPU and print its test accuracy.
# Extra arguments go to `fastnet train` (e.g. --device cuda, --epochs 5, --model mlp).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# --device cuda needs the cuda extra (CuPy, numba-cuda): install it with the rest
extras=""
previous=""
for argument in "$@"; do
    case "$previous $argument" in
        "--device cuda"* | *" --device=cuda"*) extras="cuda" ;;
    esac
    previous="$argument"
done
bash "$root/scripts/setup.sh" $extras
cd "$root"
exec .venv/bin/fastnet train --dataset mnist --model cnn --epochs 2 "$@"
