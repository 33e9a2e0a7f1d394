"""The test suite on a GPU host (issue 16): the test command installs CuPy there (and only there),
and a GPU host where CuPy cannot run kernels stops the session at once with what to run, instead
of failing every CUDA test on its own. (The kernel tests' uploads: tests/kernels/
test_device_roundtrip.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fake_program(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/usr/bin/env bash\n{script}\n")
    path.chmod(0o755)


@pytest.mark.parametrize(
    "nvidia_smi, gpu_host",
    [("exit 0", True), ("exit 9", False), (None, False)],
    ids=["gpu", "driver-fails", "no-nvidia-smi"],
)
def test_the_test_command_adds_the_cuda_extra_on_a_gpu_host_only(tmp_path, nvidia_smi, gpu_host):
    # a copy of the scripts whose setup.sh and python only say how they were called
    checkout = tmp_path / "checkout"
    for script in ("test.sh", "gpu_host.sh"):
        (checkout / "scripts").mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "scripts" / script, checkout / "scripts" / script)
    fake_program(checkout / "scripts", "setup.sh", 'echo "setup $*"')
    fake_program(checkout / ".venv" / "bin", "python", 'echo "python $*"')
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    if nvidia_smi is not None:
        fake_program(bin_folder, "nvidia-smi", nvidia_smi)
    # PATH: the fake nvidia-smi (or none) and links to the few tools the scripts use, so a real
    # nvidia-smi beside them cannot answer
    for tool in ("bash", "timeout", "dirname"):
        (bin_folder / tool).symlink_to(shutil.which(tool))
    environment = dict(os.environ, PATH=str(bin_folder))
    result = subprocess.run(
        ["bash", str(checkout / "scripts" / "test.sh"), "-q", "-k", "conv"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=True,
    )
    extras = "dev,cuda" if gpu_host else "dev"
    assert result.stdout.splitlines() == [
        f"setup {extras}",
        "python -m pytest --numprocesses auto --maxprocesses 4 -q -k conv",
    ]


@pytest.mark.parametrize(
    "cupy, reason",
    [
        ("raise ImportError('no module named cupy')", "CuPy is not installed"),
        ("def is_available():\n    return False", "cupy.is_available() is False"),
        ("def is_available():\n    raise RuntimeError('driver too old')", "driver too old"),
    ],
    ids=["missing", "unavailable", "driver-error"],
)
def test_a_gpu_host_where_cupy_cannot_run_stops_at_once(tmp_path, cupy, reason):
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(cupy + "\n")
    environment = dict(
        os.environ,
        NUMBA_ENABLE_CUDASIM="0",  # as on a GPU host
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_imports.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    message = result.stderr.strip()
    assert message.startswith("ERROR: the CUDA tests run on the GPU here") and reason in message
    assert "bash scripts/setup.sh dev,cuda" in message or "nvidia-smi" in message
    assert "NUMBA_ENABLE_CUDASIM=1" in message and "Traceback" not in message
