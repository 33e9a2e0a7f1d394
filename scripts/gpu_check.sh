#!/usr/bin/env bash
# The GPU path proved on hardware in one command (issue 16), under 8 minutes on one H100: sets up
# the environment with the dev and cuda extras, then runs `python -m fastnet.bench.gpu_check`: the
# CUDA tests on the device, the MNIST CNN trained on the GPU (accuracy per epoch, images/s, seconds
# to 99%), every kernel against the device's ceilings and the tiled matmul against cuBLAS, the
# launch cost, and the NCCL backend of fastnet.distributed on one rank (under MPI, without
# mpiexec); one JSON report (default runs/gpu_check.json) and a short summary.
#
# Usage: bash scripts/gpu_check.sh [--simulate] [--out PATH] [--python PY] [--budget SECONDS]
#                                  [--only STAGES] [--epochs N] [--batch-size N] [--data-dir DIR]
#   --simulate   every stage in Numba's CUDA simulator at tiny sizes: no GPU needed (CI runs it)
#   --python PY  use this interpreter, which already holds CuPy and numba-cuda (a machine with no
#                package index): fastnet is installed into it from this checkout, nothing fetched
# Exit status 0 when every stage ran cleanly, 1 otherwise; the report says which stage and why.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python=""
simulate=""
out="$root/runs/gpu_check.json"
budget=""
forward=()
while [ $# -gt 0 ]; do
    case "$1" in
        --python) python="${2:?--python needs an interpreter}"; shift 2 ;;
        --out) out="${2:?--out needs a path}"; shift 2 ;;
        --budget) budget="${2:?--budget needs seconds}"; forward+=("$1" "$2"); shift 2 ;;
        --simulate) simulate=1; forward+=("$1"); shift ;;
        *) forward+=("$1"); shift ;;
    esac
done
[ -n "$budget" ] || budget=$([ -n "$simulate" ] && echo 600 || echo 450)

# 1. The environment (timed; the report records it as the setup stage)
started=$(date +%s)
status=ok
if [ -n "$python" ]; then
    # already importable from this checkout (fastnet.kernels included)?
    if "$python" -c 'import pathlib, sys, fastnet.kernels
sys.exit(pathlib.Path(fastnet.__file__).resolve().parents[1] != pathlib.Path(sys.argv[1]))' "$root" 2>/dev/null; then
        setup_command="none: fastnet already importable from $root"
    else
        setup_command="$python -m pip install --no-deps --no-build-isolation --no-index -e $root"
        $setup_command || status=failed
    fi
else
    extras=$([ -n "$simulate" ] && echo dev || echo dev,cuda)
    setup_command="bash scripts/setup.sh $extras"
    bash "$root/scripts/setup.sh" "$extras" || status=failed
    python="$root/.venv/bin/python"
fi
setup_seconds=$(($(date +%s) - started))

# 2. The stages, with a backstop past the report's own budget (it stops each stage in time and
# writes the report on SIGTERM)
rm -f "$out"
timeout --kill-after=20 $((${budget%.*} + 60)) "$python" -m fastnet.bench.gpu_check \
    ${forward[@]+"${forward[@]}"} --out "$out" --setup-status "$status" --setup-seconds "$setup_seconds" \
    --setup-command "$setup_command"
code=$?
if [ "$code" = 2 ]; then # a usage error, which it has printed
    exit 2
fi
if [ ! -s "$out" ]; then # the Python side never started: still leave a report that says so
    mkdir -p "$(dirname "$out")"
    printf '{"schema": "fastnet-gpu-check/1", "ok": false, "stages": {"setup": {"status": "%s", "command": "%s"}}, "error": "python -m fastnet.bench.gpu_check wrote no report (exit status %s); see its output"}\n' \
        "$status" "$setup_command" "$code" > "$out"
    echo "gpu_check: no report from $python (exit status $code); wrote $out" >&2
    exit 1
fi
exit "$code"
