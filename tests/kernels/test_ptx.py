"""The PTX compile check: every CUDA kernel builds for sm_80 and sm_90 without spills.

This pytest process simulates CUDA (see conftest), and a simulating process cannot compile, so the
check runs in a subprocess with the simulator switched off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastnet.kernels import ptx
from fastnet.kernels._contract import Family, KernelSpec, families

CCS = {"sm_80", "sm_90"}


def run_ptx_module(simulate: str, *arguments: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, NUMBA_ENABLE_CUDASIM=simulate)
    return subprocess.run(
        [sys.executable, "-m", "fastnet.kernels.ptx", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


@pytest.mark.ptx
def test_every_kernel_compiles_for_real_hardware_without_spills():
    result = run_ptx_module("0", "--json")
    assert result.stdout, f"no report (exit {result.returncode}):\n{result.stderr}"
    rows = json.loads(result.stdout)

    errors = [
        f"{row['family']}.{row['kernel']} {row['cc']}: {row['detail']}"
        for row in rows
        if row["status"] == "error"
    ]
    assert not errors, "\n".join(errors)
    present = {row["family"] for row in rows if row["status"] == "ok"}
    assert present == {family.name for family in families()}, "every declared family is compiled"

    compiled = [row for row in rows if row["status"] == "ok"]
    for row in compiled:
        where = f"{row['family']}.{row['kernel']} {row['cc']}"
        assert isinstance(row["registers"], int) and row["registers"] > 0, where
        assert row["spill_stores"] == 0 and row["spill_loads"] == 0, f"{where} spills: {row}"
        assert row["shared_bytes"] <= ptx.MAX_STATIC_SHARED_BYTES, f"{where}: {row}"
    kernels = {(row["family"], row["kernel"]) for row in compiled}
    for family, kernel in kernels:
        ccs = {row["cc"] for row in compiled if (row["family"], row["kernel"]) == (family, kernel)}
        assert ccs == CCS, f"{family}.{kernel} compiled only for {sorted(ccs)}"
    assert result.returncode == 0, result.stderr


def test_refuses_to_run_in_a_simulating_process():
    result = run_ptx_module("1")
    assert result.returncode == 2
    assert "cannot run in a process that simulates CUDA" in result.stderr


PTXAS_LOG = """\
ptxas info    : 8 bytes gmem
ptxas info    : Compiling entry function '_Z6kernel' for 'sm_90'
ptxas info    : Function properties for _Z6kernel
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Function properties for _Z6helper
    4 bytes stack frame, 0 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 96 registers, used 1 barriers, 8448 bytes smem, 616 bytes cmem[0]
"""


def test_parse_ptxas_log_sums_spills_over_functions():
    assert ptx.parse_ptxas_log(PTXAS_LOG) == {
        "registers": 96,
        "shared_bytes": 8448,
        "stack_bytes": 20,
        "spill_stores": 8,
        "spill_loads": 16,
    }
    without_shared = PTXAS_LOG.replace(", 8448 bytes smem", "")
    assert ptx.parse_ptxas_log(without_shared)["shared_bytes"] == 0
    with pytest.raises(ValueError, match="no register count"):
        ptx.parse_ptxas_log("ptxas info    : 0 bytes gmem")


def test_problems_and_table_name_spills_excess_shared_memory_and_errors():
    base = {
        "family": "matmul",
        "kernel": "k",
        "cc": "sm_90",
        "threads": (16, 16),
        "registers": 40,
        "shared_bytes": 0,
        "stack_bytes": 0,
        "spill_stores": 0,
        "spill_loads": 0,
        "status": "ok",
        "detail": "",
    }
    rows = [
        base,
        dict(base, kernel="spilly", spill_stores=8),
        dict(base, kernel="greedy", shared_bytes=ptx.MAX_STATIC_SHARED_BYTES + 4),
        dict(base, family="conv", kernel=None, cc=None, status="error", detail="import failed"),
        dict(base, kernel="broken", status="error", detail="ptxas failed"),
    ]
    assert ptx.problems(rows) == [
        "matmul.spilly sm_90: spills 8 B stored, 0 B loaded",
        f"matmul.greedy sm_90: {ptx.MAX_STATIC_SHARED_BYTES + 4} B static shared memory "
        f"> {ptx.MAX_STATIC_SHARED_BYTES}",
        "conv: import failed",
        "matmul.broken sm_90: ptxas failed",
    ]
    table = ptx.format_table(rows)
    assert "16×16" in table and "spilly" in table
    assert (
        "error: conv: import failed" in table
        and "error: matmul.broken sm_90: ptxas failed" in table
    )


def _failing_kernel_list():
    raise RuntimeError("cannot list")


def test_a_family_without_kernels_or_failing_to_list_them_is_an_error_row():
    # Neither reaches a compile, so this runs in the simulating test process.
    def family(cuda_kernels):
        return Family("broken", __name__, ("op",), {}, cuda_kernels)

    [empty] = ptx._family_rows(family(list), ptx.DEFAULT_CCS)
    assert empty["status"] == "error" and "declares no CUDA kernels" in empty["detail"]
    [failing] = ptx._family_rows(family(_failing_kernel_list), ptx.DEFAULT_CCS)
    assert failing["status"] == "error" and "cannot list" in failing["detail"]


def test_every_family_declares_kernel_specs():
    for family in families():
        specs = family.cuda_kernels()
        assert specs and all(isinstance(spec, KernelSpec) for spec in specs), family.name
