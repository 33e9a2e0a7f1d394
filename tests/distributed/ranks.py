"""Run a Python file as N MPI ranks (``mpiexec -n N``) from a test, and read what they wrote.

The tests in this folder are ordinary pytest tests that launch small programs under ``mpiexec``
(the ``mpi`` extra puts MPICH's launcher in the virtual environment's ``bin/``); the programs
write their results (``.npz``, text) into a folder the test then checks. Each rank runs on one
thread: the ranks of this machine share its cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def mpiexec() -> str:
    """The launcher beside this Python (the mpich wheel's), or skip when MPI is not installed."""
    pytest.importorskip("mpi4py", reason="needs the mpi extra (mpi4py and MPICH)")
    launcher = Path(sys.executable).parent / "mpiexec"
    if not launcher.exists():
        pytest.skip("no mpiexec beside this Python (install the mpi extra)")
    return str(launcher)


def run_ranks(
    ranks: int, program: str | Path, *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess:
    """``mpiexec -n ranks python program args...`` (a file of this folder, or a module:
    ``fastnet.cli``); with ``check`` a non-zero exit fails the test with every rank's output."""
    env = dict(os.environ, FASTNET_NUM_THREADS="1", OMP_NUM_THREADS="1")
    script = [str(HERE / program)] if str(program).endswith(".py") else ["-m", str(program)]
    command = [mpiexec(), "-n", str(ranks), sys.executable, *script, *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(command[1:])} exited with {done.returncode}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
    return done
