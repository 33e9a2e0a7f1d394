#!/usr/bin/env bash
# Quick start 2: run the test suite (CUDA kernels in Numba's simulator when there is no GPU).
# On a GPU host the CUDA tests run real kernels, which need CuPy: the cuda extra is installed too.
# Extra arguments go to pytest (e.g. -k conv, -x; -n 0 runs in this one process).
# The tests run in one worker process per core (pytest-xdist; at most 4: each worker compiles and
# holds its own kernels, and on a GPU host its own CUDA context).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras=dev
if bash "$root/scripts/gpu_host.sh"; then
    extras=dev,cuda
fi
bash "$root/scripts/setup.sh" "$extras"
cd "$root"
exec .venv/bin/python -m pytest --numprocesses auto --maxprocesses 4 "$@"
