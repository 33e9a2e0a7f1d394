"""What a kernel launch accepts (issue 16): the simulator runs kernels with arguments, grids and
blocks that a real launch refuses, so launch() refuses them in the simulator too (and checks the
grid and block on a GPU as well, where the driver's error would not name the kernel)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fastnet.kernels import _cuda
from fastnet.kernels._cuda import launch, row_grid, simulating

simulator_only = pytest.mark.skipif(not simulating(), reason="the check guards the simulator")


@cuda.jit
def _copy(source, target, scale):
    for index in range(cuda.grid(1), target.size, cuda.gridsize(1)):
        target[index] = source[index] * scale[0]


@simulator_only
@pytest.mark.parametrize("bad", [None, "1.0", [1.0], {"scale": 1.0}, object()])
def test_launch_refuses_what_a_real_launch_refuses(bad):
    source, target = np.arange(5.0), np.full(5, np.nan)
    with pytest.raises(TypeError, match="_copy: kernel argument 2 is a"):
        launch(_copy, 1, 8, source, target, bad)
    assert np.isnan(target).all()  # refused before anything ran


@simulator_only
def test_launch_takes_arrays_numbers_booleans_and_tuples_of_them():
    source, target = np.arange(5.0), np.full(5, np.nan)
    launch(_copy, 1, 8, source, target, np.array([2.0]))
    np.testing.assert_array_equal(target, 2 * source)
    with pytest.raises(TypeError, match="kernel argument 2 is a NoneType"):
        launch(_copy, 1, 8, source, target, (1, 2.0, True, None))


# --- grid and block limits (checked in both modes, before anything runs) -------------------------


@pytest.mark.parametrize(
    "blocks, threads, broken",
    [
        ((1, 65536), 8, r"gridDim\.y = 65536 > 65535"),
        ((1, 1, 65536), 8, r"gridDim\.z = 65536 > 65535"),
        (1, 1025, r"1025 threads a block > 1024"),
        (1, (32, 33), r"1056 threads a block > 1024"),
        (1, (1, 1, 65), r"blockDim\.z = 65 > 64"),
        (0, 8, r"gridDim\.x = 0 must be at least 1"),
        ((2, 0), (8, 0), r"gridDim\.y = 0 must be at least 1; blockDim\.y = 0 must be at least 1"),
        ((1, 1, 1, 1), 8, r"a grid and a block have at most 3 dimensions"),
    ],
)
def test_launch_refuses_a_grid_or_block_past_the_limits(blocks, threads, broken):
    source, target = np.arange(5.0), np.full(5, np.nan)
    before = _cuda.launches.count
    # an empty scale: were the launch not refused, its first thread would fail at once (in the
    # simulator, instead of running up to 2³¹ blocks)
    with pytest.raises(ValueError, match=rf"^_copy: a launch of grid .* is past .*: {broken}$"):
        launch(_copy, blocks, threads, source, target, np.empty(0))
    assert np.isnan(target).all()  # refused before anything ran
    assert _cuda.launches.count == before  # and not counted as a launch


def test_grid_x_limit():
    # checked without a launch: the simulator would take hours over a grid this size
    with pytest.raises(ValueError, match=r"gridDim\.x = 2147483648 > 2147483647$"):
        _cuda._check_launch_shape(_copy, (2**31, 1), 8)


@pytest.mark.parametrize(
    "blocks, threads",
    [((2**31 - 1, 65535, 65535), (16, 1, 64)), (1, 1024), ((3, 1), (32, 32)), ((1, 1, 1), (1,))],
)
def test_the_limits_themselves_pass(blocks, threads):
    _cuda._check_launch_shape(_copy, blocks, threads)  # no launch: these grids are huge


def test_the_limits_are_read_at_each_launch(monkeypatch):
    """Tests lower them to drive a launcher's path for grids past a limit on tiny inputs."""
    monkeypatch.setattr(_cuda, "MAX_GRID_Y", 2)
    with pytest.raises(ValueError, match=r"gridDim\.y = 3 > 2"):
        launch(_copy, (1, 3), 8, np.arange(5.0), np.full(5, np.nan), np.array([2.0]))


def test_row_grid_continues_rows_past_the_x_limit_in_y(monkeypatch):
    assert row_grid(5) == (5, 1)
    assert row_grid(2**31) == (2**31 - 1, 2)
    monkeypatch.setattr(_cuda, "MAX_GRID_X", 2)
    assert row_grid(5) == (2, 3)  # 6 blocks: the last one has no row and returns
    assert row_grid(4) == (2, 2)


class _FakeCupyArray:
    """What _kernel_argument reads of a CuPy array: its pointer, layout and interface."""

    def __init__(self, pointer, shape, strides, dtype):
        self.data = type("Memory", (), {"ptr": pointer})()
        self.shape, self.strides, self.dtype = shape, strides, np.dtype(dtype)
        self.__cuda_array_interface__ = {"data": (pointer, False), "shape": shape}


def test_device_views_are_built_once_per_pointer_and_layout(monkeypatch):
    """A CuPy argument's Numba view is built once per (pointer, shape, strides, dtype), without a
    reference to the CuPy array (the cache must not keep memory alive) and without a sync; any
    other layout at the same pointer is a new view; the cache stays bounded."""
    fake_cupy = type("FakeCupy", (), {"ndarray": _FakeCupyArray})
    built = []

    def from_interface(interface, owner, sync):
        assert owner is None and sync is False
        built.append(interface)
        return ("view", len(built))

    monkeypatch.setattr(_cuda, "_cupy", fake_cupy)
    # raising=False: the simulator's numba.cuda has no such function (a GPU's has)
    monkeypatch.setattr(_cuda.cuda, "from_cuda_array_interface", from_interface, raising=False)
    monkeypatch.setattr(_cuda, "_device_views", {})
    first = _cuda._kernel_argument(_FakeCupyArray(4096, (3, 5), (20, 4), np.float32))
    again = _cuda._kernel_argument(_FakeCupyArray(4096, (3, 5), (20, 4), np.float32))
    assert first == again == ("view", 1) and len(built) == 1
    for other in (
        _FakeCupyArray(8192, (3, 5), (20, 4), np.float32),
        _FakeCupyArray(4096, (5, 3), (12, 4), np.float32),
        _FakeCupyArray(4096, (3, 5), (4, 12), np.float32),
        _FakeCupyArray(4096, (3, 5), (20, 4), np.int32),
    ):
        assert _cuda._kernel_argument(other) == ("view", len(built))
    assert len(built) == 5
    assert _cuda._kernel_argument(2.5) == 2.5 and len(built) == 5
    monkeypatch.setattr(_cuda, "MAX_DEVICE_VIEWS", 5)
    _cuda._kernel_argument(_FakeCupyArray(1 << 20, (1,), (4,), np.float32))
    assert len(_cuda._device_views) == 1  # full: cleared before the new view went in


@simulator_only
def test_every_thread_of_a_block_gets_the_one_shared_array():
    import sys
    import threading

    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    # 64 threads of one simulated block ask for their shared arrays at once, switching as often
    # as Python lets them: without fastnet's lock around the simulator's look-up-then-create,
    # about one block in thirty got two different "shared" arrays from one line (measured).
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(200):
            shared, first_line, second_line = FakeCUDAShared(0), [], []
            start = threading.Barrier(64)

            def thread(shared=shared, first=first_line, second=second_line, start=start):
                start.wait()
                first.append(shared.array((256,), np.float32))
                second.append(shared.array(8, np.float64))

            threads = [threading.Thread(target=thread) for _ in range(64)]
            for each in threads:
                each.start()
            for each in threads:
                each.join()
            # the arrays themselves, not their ids: a discarded duplicate's id can be reused
            assert len(first_line) == len(second_line) == 64
            assert all(array is first_line[0] for array in first_line)
            assert all(array is second_line[0] for array in second_line)
            assert first_line[0] is not second_line[0]
    finally:
        sys.setswitchinterval(previous)
