#!/usr/bin/env bash
# Exits 0 on a GPU host (nvidia-smi lists a GPU), 1 elsewhere: the one place the scripts decide.
# Usage: if bash scripts/gpu_host.sh; then ...; fi
# (tests/conftest.py asks nvidia-smi the same question to choose real kernels or the simulator.)
command -v nvidia-smi > /dev/null 2>&1 && timeout 20 nvidia-smi -L > /dev/null 2>&1
