#!/usr/bin/env bash
# Quick start 2: run the test suite (CUDA kernels run in Numba's simulator when there is no GPU).
# Extra arguments go to pytest (e.g. -k conv, -x).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" dev
cd "$root"
exec .venv/bin/python -m pytest "$@"
