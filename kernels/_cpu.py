"""The CPU execution policy: when a kernel runs on the calling thread and when on Numba's pool.

Every CPU kernel body is written once, with ``prange`` over its independent outer loop, and
compiled twice by :func:`cpu_kernel`: a serial driver (``prange`` is then a plain ``range``) and a
parallel one over Numba's threads. A call takes the parallel driver only when it pays
(:func:`parallel_pays`): more than one thread is configured (``fastnet.set_num_threads``) and the
call touches at least :data:`PARALLEL_MIN_ELEMENTS` entries. Below that, waking the pool and
splitting the loop cost more than the other threads give back; with one thread the parallel
driver is pure overhead. Re-measure the threshold with ``python benchmarks/parallel_threshold.py``.
"""
from __future__ import annotations

import types
from typing import Any, Callable

import numba
from numba import njit

PARALLEL_MIN_ELEMENTS = 1 << 20


def parallel_pays(elements: int) -> bool:
    """True when a kernel call over ``elements`` entries should run on Numba's threads."""
    return elements >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1


class CpuKernel:
    """One kernel body compiled as a serial and a parallel driver; call it with the work size
    first: ``kernel(elements, *args)`` runs the driver :func:`parallel_pays` picks."""

    def __init__(self, function: Callable[..., Any], options: dict[str, Any]) -> None:
        self.serial = njit(cache=True, **options)(function)
        # Numba's on-disk cache keys a function by its qualified name, not by its flags: the
        # parallel driver compiles a renamed copy so the two never load each other's machine code.
        twin = types.FunctionType(function.__code__, function.__globals__, function.__name__,
                                  function.__defaults__, function.__closure__)
        twin.__qualname__ = f"{function.__qualname__}__parallel"
        self.parallel = njit(cache=True, parallel=True, **options)(twin)
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__

    def driver(self, elements: int) -> Any:
        """The dispatcher for a call over ``elements`` entries."""
        return self.parallel if parallel_pays(elements) else self.serial

    def __call__(self, elements: int, *args: Any) -> Any:
        return self.driver(elements)(*args)


def cpu_kernel(function: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Decorator: compile ``function`` as a :class:`CpuKernel` (``options`` go to ``njit``,
    e.g. ``fastmath=``). Use bare (``@cpu_kernel``) or with options (``@cpu_kernel(fastmath=...)``)."""
    if function is None:
        return lambda function: CpuKernel(function, options)
    return CpuKernel(function, options)
