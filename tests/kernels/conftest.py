"""Fixtures shared by the kernel tests."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from fastnet.kernels import _cpu
from fastnet.kernels._contract import family_module_names


def poisoned_empty(shape, dtype, like):
    """An allocation filled with NaN (floats) or -1 (integers), so an element a kernel never
    writes shows in the result instead of passing by luck."""
    dtype = np.dtype(dtype)
    return np.full(shape, np.nan if dtype.kind == "f" else -1, dtype=dtype)


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every kernel module allocates its outputs (and scratch buffers) poisoned."""
    for name in family_module_names():
        module = importlib.import_module(name)
        if hasattr(module, "empty"):
            monkeypatch.setattr(module, "empty", poisoned_empty)


@pytest.fixture
def force_driver(monkeypatch):
    """``force_driver("serial" | "parallel")``: every CPU kernel called afterwards in the test takes
    that driver, whatever the work size and the thread count."""

    def force(driver: str) -> None:
        assert driver in ("serial", "parallel"), driver
        monkeypatch.setattr(_cpu, "parallel_pays", lambda elements: driver == "parallel")

    return force
