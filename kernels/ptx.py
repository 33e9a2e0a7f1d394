"""Compile every CUDA kernel for real hardware, without a GPU, and report its resources.

For each kernel family (every module of ``fastnet.kernels`` with a ``FAMILY`` declaration, see
``_contract``), each of its ``cuda_kernels()`` and each compute capability in ``ccs``:

1. ``numba.cuda.compile_ptx(spec.kernel.py_func, spec.argtypes, cc=cc)`` writes PTX. Numba-cuda
   asks the *current device* for its compute capability when it compiles a
   ``@cuda.jit(device=True)`` helper, which fails without a GPU; a stand-in device reporting ``cc``
   is patched into ``numba.cuda.dispatcher`` for the duration of each compile.
2. The PTX is assembled for ``sm_XY`` by ``ptxas -v`` (from PATH) or, where there is no
   ``ptxas``, by nvJitLink through ``cuda.core``'s ``Linker``; both print the same resource log.
3. The log gives registers per thread, static shared memory, stack frame and spill bytes.

One row per (family, kernel, cc): ``family, kernel, cc ("sm_90"), threads, registers,
shared_bytes, stack_bytes, spill_stores, spill_loads, status ("ok" | "error"),
detail``. A module that fails to import, a family that fails to list its kernels, and a kernel
that fails to compile give ``error`` rows carrying the message.
:func:`problems` names every error, spill and shared-memory excess (over
:data:`MAX_STATIC_SHARED_BYTES`, the static limit of every GPU).

Run as ``python -m fastnet.kernels.ptx [--json]`` (exit status 1 when :func:`problems` finds any)
or through the CLI, ``fastnet bench --ptx``. The process must compile, not simulate:
with ``NUMBA_ENABLE_CUDASIM=1`` the kernels are plain Python and there is nothing to compile.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

from ._contract import Family, KernelSpec, family_module_names
from ._cuda import simulating

DEFAULT_CCS = ((8, 0), (9, 0))
MAX_STATIC_SHARED_BYTES = 48 * 1024

_REGISTERS = re.compile(r"Used (\d+) registers")
_SHARED = re.compile(r"(\d+) bytes smem")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_log(log: str) -> dict[str, int]:
    """Registers, shared memory, stack frame and spills from a ``ptxas -v`` log of one kernel.

    Spills and stack are summed over every function the log describes (the kernel and any device
    function ptxas kept out of line).
    """
    registers = _REGISTERS.search(log)
    if registers is None:
        raise ValueError(f"no register count in the ptxas log:\n{log}")
    shared = _SHARED.search(log)
    frames = [tuple(map(int, match)) for match in _FRAME.findall(log)]
    return {
        "registers": int(registers.group(1)),
        "shared_bytes": int(shared.group(1)) if shared else 0,
        "stack_bytes": sum(frame[0] for frame in frames),
        "spill_stores": sum(frame[1] for frame in frames),
        "spill_loads": sum(frame[2] for frame in frames),
    }


def _compile_ptx(spec: KernelSpec, cc: tuple[int, int]) -> str:
    from numba import cuda
    from numba.cuda import dispatcher

    stand_in_device = types.SimpleNamespace(compute_capability=cc)
    with mock.patch.object(dispatcher, "get_current_device", lambda: stand_in_device):
        ptx, _ = cuda.compile_ptx(spec.kernel.py_func, spec.argtypes, cc=cc)
    return ptx


def _assemble(ptx: str, cc: tuple[int, int]) -> str:
    """Assemble PTX for ``sm_XY``; return the resource log."""
    arch = f"sm_{cc[0]}{cc[1]}"
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        return _assemble_with_nvjitlink(ptx, arch)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        result = subprocess.run(
            [
                ptxas,
                "-v",
                "--gpu-name",
                arch,
                str(source),
                "-o",
                str(Path(folder) / "kernel.cubin"),
            ],
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"ptxas failed for {arch} (exit {result.returncode}): {result.stderr.strip()}"
        )
    return result.stderr + result.stdout


def _assemble_with_nvjitlink(ptx: str, arch: str) -> str:
    try:
        from cuda.core import Linker, LinkerOptions, ObjectCode
    except ImportError as error:
        raise RuntimeError(
            "neither ptxas (on PATH) nor cuda.core's nvJitLink Linker is available "
            "to assemble PTX; install the CUDA toolkit or cuda-core"
        ) from error
    linker = Linker(
        ObjectCode.from_ptx(ptx.encode()), options=LinkerOptions(arch=arch, verbose=True)
    )
    linker.link("cubin")
    return linker.get_info_log().rstrip("\x00")


def _family_row(family: str, status: str, detail: str) -> dict:
    return {
        "family": family,
        "kernel": None,
        "cc": None,
        "threads": None,
        "registers": None,
        "shared_bytes": None,
        "stack_bytes": None,
        "spill_stores": None,
        "spill_loads": None,
        "status": status,
        "detail": detail,
    }


def _declared_families() -> tuple[list[Family], list[dict]]:
    """Every module's FAMILY, and an error row for each module that fails to import."""
    found, failed = [], []
    for module_name in family_module_names():
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # noqa: BLE001 - a broken family is reported, the rest still run
            failed.append(
                _family_row(
                    module_name.rsplit(".", 1)[-1], "error", f"import {module_name}: {error!r}"
                )
            )
            continue
        if isinstance(getattr(module, "FAMILY", None), Family):
            found.append(module.FAMILY)
    return found, failed


def _family_rows(family: Family, ccs: Sequence[tuple[int, int]]) -> list[dict]:
    """One row per kernel and cc, or the one row that says why the family has none."""
    try:
        specs = list(family.cuda_kernels())
    except Exception as error:  # noqa: BLE001 - reported as the family's row
        return [_family_row(family.name, "error", f"{family.module} cuda_kernels(): {error!r}")]
    if not specs:
        return [_family_row(family.name, "error", f"{family.module} declares no CUDA kernels")]
    rows = []
    for spec in specs:
        for cc in ccs:
            row = _family_row(family.name, "ok", "")
            row.update(kernel=spec.name, cc=f"sm_{cc[0]}{cc[1]}", threads=spec.threads)
            try:
                row.update(parse_ptxas_log(_assemble(_compile_ptx(spec, cc), cc)))
            except Exception as error:  # noqa: BLE001 - one failing kernel must not hide the rest
                row.update(status="error", detail=f"{type(error).__name__}: {error}")
            rows.append(row)
    return rows


def compile_report(ccs: Sequence[tuple[int, int]] = DEFAULT_CCS) -> list[dict]:
    """Compile every kernel of every family for every ``cc``; one row each (see module doc)."""
    if simulating():
        raise RuntimeError(
            "the PTX compile check cannot run in a process that simulates CUDA "
            "(NUMBA_ENABLE_CUDASIM=1): run it in a fresh process with "
            "NUMBA_ENABLE_CUDASIM=0 or unset"
        )
    found, failed = _declared_families()
    return failed + [row for family in found for row in _family_rows(family, ccs)]


def problems(rows: list[dict]) -> list[str]:
    """Every error, register spill and static shared memory excess in ``rows``, one line each."""
    found = []
    for row in rows:
        where = f"{row['family']}.{row['kernel']} {row['cc']}" if row["kernel"] else row["family"]
        if row["status"] == "error":
            found.append(f"{where}: {row['detail']}")
        elif row["status"] == "ok":
            if row["spill_stores"] or row["spill_loads"]:
                found.append(
                    f"{where}: spills {row['spill_stores']} B stored, {row['spill_loads']} B loaded"
                )
            if row["shared_bytes"] > MAX_STATIC_SHARED_BYTES:
                found.append(
                    f"{where}: {row['shared_bytes']} B static shared memory "
                    f"> {MAX_STATIC_SHARED_BYTES}"
                )
    return found


def _threads_text(threads: int | Sequence[int]) -> str:
    return "×".join(map(str, threads)) if isinstance(threads, (tuple, list)) else str(threads)


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table; errors listed below it."""
    header = (
        "family",
        "kernel",
        "cc",
        "threads",
        "regs",
        "smem B",
        "stack B",
        "spill st B",
        "spill ld B",
    )
    table = [header]
    notes = []
    for row in rows:
        if row["status"] == "ok":
            table.append(
                (
                    row["family"],
                    row["kernel"],
                    row["cc"],
                    _threads_text(row["threads"]),
                    *(
                        str(row[key])
                        for key in (
                            "registers",
                            "shared_bytes",
                            "stack_bytes",
                            "spill_stores",
                            "spill_loads",
                        )
                    ),
                )
            )
        else:
            kernel = f".{row['kernel']} {row['cc']}" if row["kernel"] else ""
            notes.append(f"{row['status']}: {row['family']}{kernel}: {row['detail']}")
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if column < 4 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines + notes)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the compile report (a table, or JSON rows); exit status 1 if :func:`problems`."""
    parser = argparse.ArgumentParser(
        prog="python -m fastnet.kernels.ptx", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    arguments = parser.parse_args(argv)
    try:
        rows = compile_report()
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=1) if arguments.json else format_table(rows))
    found = problems(rows)
    for line in found:
        print(f"problem: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
