"""The kernel-family contract: what each family module declares, and where it is read.

A family module (``kernels/<name>.py``, installed as ``fastnet.kernels.<name>``) ends with one
declaration, ``FAMILY = Family(...)``, naming:

* ``ops``: its entry points. For each op the module defines ``<op>_cpu`` and ``<op>_cuda`` with
  one signature; the backend makes each op a method of the ``cpu`` and ``cuda`` devices.
* ``references``: op -> its float64 NumPy specification (the tests hold both variants to it).
* ``cuda_kernels``: the CUDA kernels as :class:`KernelSpec`, which the PTX check compiles.
* ``bench_cases``: ``bench_cases(quick) -> list[CaseSpec]``, the family's benchmark cases with
  their peers (plain NumPy, PyTorch), which ``fastnet bench`` and ``benchmarks/`` time.

:func:`families` finds every module of the package that has a ``FAMILY``, so adding a family
touches its module, its tests and (for a new op) the functional layer, and nothing else.

The benchmark vocabulary lives here too, so a family can declare its cases without importing
anything above the kernels: a case is built from a :class:`BenchContext` that the caller (the
bench harness) fills with the device's ops, its array module and PyTorch when it is installed.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

OURS = "fastnet"
FLOAT32_BYTES = 4


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """One CUDA kernel as the PTX compile check builds it.

    ``argtypes`` are Numba types (e.g. ``numba.float32[:, ::1]``) of one representative
    specialisation; ``threads`` is the block size the launcher uses (an int or a 2-tuple).
    """

    name: str
    kernel: Any
    argtypes: tuple
    threads: int | tuple


# ===================================================================== benchmark cases
@dataclasses.dataclass(frozen=True)
class BenchContext:
    """What a case builder is handed: ``ops`` has every family op of one variant as an attribute
    (the device, e.g. ``ops.matmul(a, b, False, True)``), ``xp`` is its array module (NumPy or
    CuPy) and ``torch`` is PyTorch for a CPU case when it is installed, else None."""

    variant: str  # "cpu" or "cuda"
    ops: Any
    xp: Any
    torch: Any = None

    @property
    def plain(self) -> str:
        """The name of the plain array-library peer: "numpy", or "cupy" on a GPU."""
        return self.xp.__name__

    def random(self, shape: tuple[int, ...], seed: int = 0) -> Any:
        """Uniform [-1, 1) float32 values of ``shape`` on the context's device, reproducible by
        seed."""
        return self.xp.asarray(
            np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32)
        )


@dataclasses.dataclass(frozen=True)
class CaseInfo:
    """What a row needs to know about its case: the work and the traffic."""

    family: str  # the row's label, e.g. "relu_fwd"
    label: str
    flops: float
    bytes_moved: float
    fixed_bound: str | None = None  # e.g. "latency" for per-op overhead; else from intensity

    @property
    def name(self) -> str:
        return f"{self.family} {self.label}"


def _as_outputs(result: Any) -> Sequence[Any]:
    return result if isinstance(result, tuple) else (result,)


@dataclasses.dataclass
class Implementation:
    """One way to compute a case; ``comparable`` maps its result to arrays laid out as ours."""

    run: Callable[[], Any]
    comparable: Callable[[Any], Sequence[Any]] = _as_outputs


@dataclasses.dataclass
class Case:
    info: CaseInfo
    implementations: dict[str, Implementation]  # OURS first


@dataclasses.dataclass(frozen=True)
class CaseSpec:
    """A case before its buffers exist: ``build(context)`` allocates them."""

    family: str  # the row's label
    key: str  # short, no spaces: used in pytest ids
    shape: str
    build: Callable[[BenchContext], Case]
    implementations: tuple[str, ...]  # the names on the CPU, OURS first

    @property
    def id(self) -> str:
        return f"{self.family}-{self.key}"


def no_cases(quick: bool) -> list[CaseSpec]:
    return []


# ===================================================================== the declaration
@dataclasses.dataclass(frozen=True)
class Family:
    """What one kernel family provides (see the module docstring)."""

    name: str
    module: str  # the module's __name__
    ops: tuple[str, ...]
    references: Mapping[str, Callable[..., Any]]
    cuda_kernels: Callable[[], Sequence[KernelSpec]]
    bench_cases: Callable[[bool], Sequence[CaseSpec]] = no_cases

    def entry_point(self, op: str, variant: str) -> Callable[..., Any]:
        """The function ``<op>_<variant>`` of the family's module."""
        return getattr(importlib.import_module(self.module), f"{op}_{variant}")


# Public modules that are tools, not families: ``python -m fastnet.kernels.ptx`` must find the
# PTX check not yet imported (runpy warns otherwise), and discovery would import it.
TOOL_MODULES = ("ptx",)


def family_module_names() -> list[str]:
    """The full names of the package's family modules: every public module but the tools, in name
    order (a helper module's name starts with "_")."""
    package = importlib.import_module(__package__)
    return sorted(
        f"{__package__}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_") and info.name not in TOOL_MODULES
    )


@functools.lru_cache(maxsize=1)
def families() -> tuple[Family, ...]:
    """Every family of the package: each public module's ``FAMILY``, in module-name order."""
    found = []
    for name in family_module_names():
        family = getattr(importlib.import_module(name), "FAMILY", None)
        if family is not None:
            found.append(family)
    return tuple(found)
