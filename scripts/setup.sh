#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install fastnet into it.
# Usage: bash scripts/setup.sh [EXTRAS]   EXTRAS: comma-separated, e.g. dev (the test tools),
#        cuda (CuPy and the CUDA 13.0 wheels, for a GPU), dev,cuda (the tests on a GPU host)
# Reinstalls only when pyproject.toml or the extras changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
    echo "setup: creating virtual environment in $root/.venv"
    "$python" -m venv "$root/.venv"
fi
stamp="$root/.venv/.fastnet-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -c1-16) extras=[$extras]"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
    echo "setup: installing fastnet${extras:+[$extras]} and its dependencies"
    "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
    "$root/.venv/bin/python" -m pip install --quiet -e "$root${extras:+[$extras]}"
    echo "$want" > "$stamp"
fi
