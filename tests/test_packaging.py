"""What the extras install (issue 16): CuPy's matmul and random numbers need cuBLAS and cuRAND,
which the cuda extra's CUDA 13.0 pins must bring themselves (cupy-cuda13x does not)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_cuda_extra_brings_cublas_and_curand_pinned_to_cuda_13_0():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    toolkit = [spec for spec in extras["cuda"] if spec.startswith("cuda-toolkit[")]
    assert len(toolkit) == 1 and toolkit[0].endswith("==13.0.*")
    components = set(toolkit[0].split("[", 1)[1].split("]", 1)[0].split(","))
    assert {"cublas", "curand", "nvrtc", "nvvm", "cudart"} <= components
