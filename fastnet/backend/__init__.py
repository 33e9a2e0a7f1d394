"""Devices: which array library and which kernel set a tensor's data lives with.

A :class:`Device` is an array module (``xp``) plus the kernel functions of one variant. The
contract that the CPU and CUDA variants both implement is the union of every kernel family's
``ops`` (``fastnet.kernels._contract``): for each op a family module defines ``<op>_cpu`` and
``<op>_cuda`` with one signature, and each device has the op as a method. The math and the
buffer shapes of each op are in its family's module docstring. Besides the ops, a device has
``empty`` (an uninitialised array; large host ones recycled), ``asarray``, ``constant`` (a Python
scalar as a 0-d array) and the two transfer functions.

Every copy between the host and a device goes through one of two methods, so that tests can count
them (``device.transfers``): ``to_host`` (device to host: on a GPU it waits for the device's queue
to drain, so a training step must make none) and ``upload`` (host to device; ``asarray`` and
``constant`` upload through it). On the cpu both are free and not counted; on the cuda device,
real or simulated, each call counts one. Nothing else in fastnet's layers calls CuPy's ``get``
or ``asnumpy`` or reads an ``xp`` expression with ``tolist``/``item``/``float``
(tests/test_host_transfers.py checks), and CuPy refuses the implicit conversion ``np.asarray``.

``cpu`` runs NumPy arrays through the ``@njit`` kernels. ``cuda`` runs CuPy arrays through the
``@cuda.jit`` kernels on a GPU; with ``NUMBA_ENABLE_CUDASIM=1`` set before ``numba.cuda`` is
first imported it runs the very same CUDA kernels in Numba's simulator over NumPy arrays, which
is how the GPU path is tested on machines without one. Elementwise math and reductions go
through ``xp`` directly (NumPy or CuPy): they are not worth hand-written kernels. ReLU is the
exception, for the CPU's sake: NumPy needs a boolean mask and three passes where one will do, on
a CNN's largest activations.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from ..extras import install_hint
from ..kernels import _blas, _cpu, _cuda
from ..kernels._contract import families
from ..kernels._cpu import images_per_chunk  # noqa: F401 - re-exported for the layers above
from ..kernels._geometry import conv_output_shape  # noqa: F401 - re-exported for the layers above


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def _erf_cpu(x):
    return math.erf(x)


@dataclass
class TransferCounts:
    """Copies between the host and a device since the last :meth:`reset` (only the cuda device
    counts: the cpu's "transfers" are free views)."""

    to_host: int = 0
    to_device: int = 0

    def reset(self) -> None:
        self.to_host = self.to_device = 0


# How many (value, dtype) constants a device keeps uploaded: a model uses a handful; the bound
# keeps a loop over many distinct scalars from growing the cache without end.
MAX_CONSTANTS = 256


class Device:
    """One place tensors can live: ``cpu`` or ``cuda``. Compares equal to its name."""

    def __init__(
        self,
        name: str,
        xp: Any,
        variant: str,
        erf: Any,
        conv_workspace_bytes: int,
        winograd_workspace_bytes: int,
    ) -> None:
        self.name = name
        self.xp = xp
        self.erf = erf
        # How many bytes of im2col columns and output planes a convolution works on at once, and
        # of a Winograd convolution's tiles (V and M).
        self.conv_workspace_bytes = conv_workspace_bytes
        self.winograd_workspace_bytes = winograd_workspace_bytes
        for family in families():
            for op in family.ops:
                if hasattr(self, op):
                    raise RuntimeError(
                        f"kernel family {family.name} declares the op {op!r}, which "
                        f"the device already has"
                    )
                setattr(self, op, family.entry_point(op, variant))
        self._prototype = xp.empty(0, np.float32)  # tells the kernels' allocator which device
        self.transfers = TransferCounts()
        self._counts_transfers = name != "cpu"
        self._constants: dict[tuple, Any] = {}

    def empty(self, shape: Any, dtype: Any) -> Any:
        """An uninitialised array of this device. Large host arrays come from the kernels' buffer
        cache (``fastnet.kernels._cuda``), so a layer's big per-step buffers are not faulted in
        afresh every step."""
        return _cuda.empty(shape, dtype, like=self._prototype)

    def asarray(self, data: Any, dtype: Any = None) -> Any:
        """``data`` as a C-contiguous array of this device (copied only when it must be): an
        array of the device is converted there; anything else is host data, uploaded.

        Contiguous because kernels and in-place optimizer updates need it; 0-d stays 0-d. In the
        simulator, whose device arrays are NumPy's, a NumPy array counts as the device's (callers
        that know they hold host data call :meth:`upload`)."""
        if isinstance(data, self.xp.ndarray):
            return self.xp.asarray(data, dtype=dtype, order="C")
        return self.upload(data, dtype)

    def upload(self, data: Any, dtype: Any = None) -> Any:
        """Host data (a NumPy array, a list, a number) as a new C-contiguous array of this
        device: the one host-to-device copy, counted on the cuda device."""
        if not self._counts_transfers:
            return np.asarray(data, dtype=dtype, order="C")
        self.transfers.to_device += 1
        host = data if isinstance(data, np.ndarray) else np.asarray(data)
        return self.xp.array(host, dtype=dtype, order="C")  # a copy in the simulator too

    def to_host(self, array: Any) -> np.ndarray:
        """``array`` (of this device) as a NumPy array: the one device-to-host copy. On the cuda
        device it is counted and a copy (in the simulator too, so that no code there can come to
        rely on sharing memory with the device), and on a GPU it waits until the queue has
        computed ``array``; on the cpu it is the array itself (0-d for a NumPy scalar), free."""
        if not self._counts_transfers:
            return np.asarray(array)
        self.transfers.to_host += 1
        if self.xp is not np and isinstance(array, self.xp.ndarray):
            return array.get()
        return np.array(array)

    def constant(self, value: bool | int | float, dtype: Any) -> Any:
        """``value`` as a 0-d array of ``dtype`` for an op with a Python scalar operand.

        On the cuda device each (value, dtype) is uploaded once and kept (the last
        :data:`MAX_CONSTANTS`), so ``x * 2.0`` in a training step makes no host-to-device copy.
        The array is shared: it is an operand only, never an output or written in place (the
        simulator's are read-only, so a write raises). The cpu makes a fresh one, as NumPy
        does for any scalar operand."""
        if not self._counts_transfers:
            return np.asarray(value, dtype=dtype)
        if isinstance(value, float):  # by its bits: -0.0 is not 0.0, and every NaN is one NaN
            key = (np.dtype(dtype), value.hex())
        elif isinstance(value, int):
            key = (np.dtype(dtype), int(value))
        else:  # a NumPy scalar: rare in an op, uploaded as it is
            return self.upload(value, dtype)
        cached = self._constants.get(key)
        if cached is None:
            if len(self._constants) >= MAX_CONSTANTS:
                del self._constants[next(iter(self._constants))]  # the oldest
            cached = self.upload(value, dtype)
            if isinstance(cached, np.ndarray):
                cached.flags.writeable = False
            self._constants[key] = cached
        return cached

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Device):
            return other.name == self.name
        return isinstance(other, str) and other.split(":")[0] == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"device(type='{self.name}')"

    def __str__(self) -> str:
        return self.name


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy array holding the values of ``array``, an array of unknown origin (a state dict's
    values): host data as it is, a CuPy array through the cuda device's counted
    :meth:`Device.to_host`. Code that holds a Tensor calls ``tensor.device.to_host`` instead,
    which the simulator counts too (its device arrays are NumPy's, which this cannot tell
    apart)."""
    if isinstance(array, np.ndarray):
        return array
    if _cuda.array_module(array) is not np:  # CuPy's
        return get_device("cuda").to_host(array)
    return np.asarray(array)


# The CPU's conv workspaces are part of the CPU execution policy (kernels/_cpu.py says why their
# sizes).
CPU = Device("cpu", np, "cpu", _erf_cpu, _cpu.CONV_WORKSPACE_BYTES, _cpu.WINOGRAD_WORKSPACE_BYTES)
_cuda_device: Device | None = None


def _make_cuda_device() -> Device:
    if _cuda.simulating():
        workspace = _cuda.CONV_WORKSPACE_BYTES
        return Device("cuda", np, "cuda", _erf_cpu, workspace, workspace)
    if not _cuda.gpu_available():
        raise RuntimeError(
            "device 'cuda' is not available: no CUDA GPU was found (CuPy missing or "
            "cupy.is_available() is False). Install the cuda extra "
            f"({install_hint('cuda')}) on a machine with an NVIDIA GPU, or set "
            "NUMBA_ENABLE_CUDASIM=1 before importing fastnet to run the CUDA kernels in Numba's "
            "simulator."
        )
    import cupy
    from cupyx.scipy.special import erf

    workspace = _cuda.CONV_WORKSPACE_BYTES  # one bound for both: a chunk's GEMMs fill the GPU
    return Device("cuda", cupy, "cuda", erf, workspace, workspace)


def get_device(device: str | Device | None) -> Device:
    """The :class:`Device` for ``'cpu'``, ``'cuda'`` (or ``'cuda:0'``), or a Device itself."""
    global _cuda_device
    if device is None:
        return CPU
    if isinstance(device, Device):
        return device
    name = str(device).split(":")[0]
    if name == "cpu":
        return CPU
    if name == "cuda":
        if _cuda_device is None:
            _cuda_device = _make_cuda_device()
        return _cuda_device
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


# ----------------------------------------------------------------- CPU threads
def set_num_threads(threads: int) -> None:
    """Threads for fastnet's CPU kernels: one pool, Numba's, runs everything in parallel.

    The kernels split their work over Numba's threads themselves (a convolution's chunks of
    images, a large product's blocks of rows) and call NumPy's BLAS from inside, one thread each
    (``fastnet.kernels._blas``), so NumPy's BLAS is held to one thread: two pools of spinning
    threads taking turns through a training step competed for the cores. Where no BLAS could be
    bound for the kernels, NumPy's BLAS gets ``threads`` instead. Numba's pool itself starts when
    a kernel first runs on more than one thread (``kernels/_cpu.py`` says why not at import).

    The default is 1, or ``FASTNET_NUM_THREADS``. Measure a count with
    ``fastnet bench --train --only mnist_cnn --threads N``.
    """
    if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"threads must be between 1 and {numba.config.NUMBA_NUM_THREADS} "
            f"(NUMBA_NUM_THREADS), got {threads}"
        )
    from threadpoolctl import threadpool_limits

    _cpu.set_threads(threads)
    threadpool_limits(limits=1 if _blas.AVAILABLE else threads, user_api="blas")


def get_num_threads() -> int:
    return _cpu.threads()


def _default_threads() -> int:
    value = os.environ.get("FASTNET_NUM_THREADS", "1")
    try:
        return max(1, min(int(value), numba.config.NUMBA_NUM_THREADS))
    except ValueError:
        raise ValueError(f"FASTNET_NUM_THREADS must be an integer, got {value!r}") from None


set_num_threads(_default_threads())


def cuda_is_available() -> bool:
    """True when the ``cuda`` device can run: a real GPU, or the CUDA simulator."""
    return _cuda.simulating() or _cuda.gpu_available()
