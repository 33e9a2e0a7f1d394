"""The kernel tests' round trip to the device on a GPU host (device_roundtrip.py), exercised here
in the simulator with a stand-in device whose uploads and downloads are distinct NumPy copies:
arguments reach the function as copies with their layout, in-place results come back into the
caller's arrays, and returned arguments (or views of them) are the caller's own."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from device_roundtrip import (
    DeviceArrays,
    copy_with_layout,
    cuda_entry_points,
    on_device,
    run_entry_points_on,
)

from fastnet.kernels._contract import families, family_module_names
from fastnet.kernels.matmul import matmul_cuda
from fastnet.kernels.norm import batchnorm_forward_cuda
from fastnet.kernels.optim import adam_step_cuda


class FakeDevice:
    """A "device" of NumPy copies that remembers what it uploaded."""

    def __init__(self) -> None:
        self.uploads: list[np.ndarray] = []
        self.downloads: list[np.ndarray] = []
        self.arrays = DeviceArrays(
            array_type=np.ndarray,
            upload=lambda array: self.copy(array, self.uploads),
            download=lambda array: self.copy(array, self.downloads),
            address=address,
        )

    @staticmethod
    def copy(array: np.ndarray, record: list[np.ndarray]) -> np.ndarray:
        copy = copy_with_layout(array, np, np.asarray)
        record.append(copy)
        return copy

    def holds(self, array: np.ndarray) -> bool:
        return any(array is upload for upload in self.uploads)


def address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


@pytest.fixture
def device() -> FakeDevice:
    return FakeDevice()


def random(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


# --- the real entry points give the simulator's very bits through the round trip -----------------


def test_out_comes_back_into_the_callers_array(rng, device):
    a, b = random(rng, 3, 5), random(rng, 4, 5)
    out = np.full((3, 4), np.nan, np.float32)
    returned = on_device(matmul_cuda, device.arrays)(a, b, trans_b=True, out=out)
    assert len(device.uploads) == 3
    # matmul returns a view of out (out[None][0]): the same view of the caller's array
    assert address(returned) == address(out) and returned.strides == out.strides
    np.testing.assert_array_equal(out, matmul_cuda(a, b, trans_b=True))


def test_in_place_updates_come_back(rng, device):
    hyper = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, decoupled=True)
    state = [random(rng, 37), random(rng, 37), random(rng, 37), np.abs(random(rng, 37))]
    expected = [array.copy() for array in state]
    adam_step_cuda(*expected, step=3, **hyper)
    assert on_device(adam_step_cuda, device.arrays)(*state, step=3, **hyper) is None
    for got, want in zip(state, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_tuple_results_and_running_statistics(rng, device):
    x, weight, bias = random(rng, 5, 3), random(rng, 3), random(rng, 3)
    running = [random(rng, 3), np.abs(random(rng, 3))]
    expected_running = [array.copy() for array in running]
    expected = batchnorm_forward_cuda(x, weight, bias, *expected_running, training=True)
    got = on_device(batchnorm_forward_cuda, device.arrays)(x, weight, bias, *running, training=True)
    assert isinstance(got, tuple) and len(got) == len(expected)
    for result, want in zip(got, expected, strict=True):
        assert any(result is download for download in device.downloads)
        np.testing.assert_array_equal(result, want)
    for statistic, want in zip(running, expected_running, strict=True):
        np.testing.assert_array_equal(statistic, want)


def test_strided_arguments_keep_their_layout(device):
    # a launcher that checks contiguity must see the test's strided array, not a packed copy
    x, weight, bias = np.ones((4, 3), np.float32), np.ones(3, np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="running_var must be a contiguous array"):
        on_device(batchnorm_forward_cuda, device.arrays)(
            x, weight, bias, np.zeros(3, np.float32), np.ones(6, np.float32)[::2], training=True
        )


# --- the wrapper's rules, on stand-in functions ---------------------------------------------------


def test_arguments_reach_the_function_as_device_copies(rng, device):
    a, b = random(rng, 2, 3), random(rng, 4)
    seen = []

    def function(pair, scale, listed, *, keyword):
        seen.extend([*pair, *listed, keyword])
        assert isinstance(pair, tuple) and isinstance(listed, list) and scale == 2.5
        return None

    on_device(function, device.arrays)((a, b), 2.5, [a], keyword=b)
    assert len(device.uploads) == 2  # one upload per array, however often it is passed
    assert all(device.holds(array) for array in seen)
    assert seen[0] is seen[2] and seen[1] is seen[3]


def test_layout_is_kept_both_ways(rng, device):
    base = random(rng, 6, 10)
    views = [base.T, base[:, ::3], base[::-1, 1::2], np.broadcast_to(base[0], (3, 10))]

    def identity_copies(*arrays):
        for array, view in zip(arrays, views, strict=True):
            assert array.strides == view.strides and not np.shares_memory(array, base)
        return [array.copy(order="K") for array in arrays[:1]] + [np.empty((4, 9))[:, ::2]]

    got = on_device(identity_copies, device.arrays)(*views)
    assert got[0].strides == base.T.strides and np.array_equal(got[0], base.T)
    assert got[1].strides == np.empty((4, 9))[:, ::2].strides


def test_a_returned_argument_is_the_callers_array(rng, device):
    x, out = random(rng, 3, 4), np.zeros((3, 4), np.float32)

    def double_into(x, out):
        out[...] = 2 * x
        return x, out, out[1:, ::-1], out.reshape(-1)[2:5]

    got_x, got_out, tail, flat = on_device(double_into, device.arrays)(x, out)
    assert got_x is x and got_out is out
    assert np.shares_memory(tail, out) and tail.strides == out[1:, ::-1].strides
    np.testing.assert_array_equal(tail, out[1:, ::-1])
    np.testing.assert_array_equal(flat, out.reshape(-1)[2:5])
    np.testing.assert_array_equal(out, 2 * x)
    tail[0, 0] = 7.0  # a view of the caller's array, not a copy
    assert out[1, -1] == 7.0


def test_an_unchanged_alias_does_not_overwrite_the_result(rng, device):
    def negate_into(out, source):  # here out and source are two views of one array
        out[...] = -source

    for out_first in (True, False):
        x = random(rng, 8)
        expected = -x
        arguments = (x[:], x) if out_first else (x, x[:])
        on_device(negate_into if out_first else lambda s, o: negate_into(o, s), device.arrays)(
            *arguments
        )
        np.testing.assert_array_equal(x, expected)


def test_read_only_arguments_are_not_written_back(rng, device):
    x = random(rng, 5)
    x.flags.writeable = False
    values = x.copy()

    def scribble(array):
        array[...] = np.nan
        return array.sum()

    assert np.isnan(on_device(scribble, device.arrays)(x))
    np.testing.assert_array_equal(x, values)


def test_calls_without_numpy_arrays_or_from_the_library_pass_through(rng, device):
    x = random(rng, 4)
    received = []

    def function(*args):
        received.extend(args)
        return args[0]

    wrapped = on_device(function, device.arrays)
    assert wrapped(3, (1.5,)) == 3
    # as the cuda device or a launcher calls an entry point: with the device's own arrays
    namespace = {"__name__": "fastnet.functional.fake", "wrapped": wrapped, "x": x}
    exec("result = wrapped(x)", namespace)
    assert namespace["result"] is x and received[-1] is x and not device.uploads


def test_errors_propagate_and_leave_arguments_alone(rng, device):
    x = random(rng, 4)
    values = x.copy()

    def refuse(array):
        array[...] = 0
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        on_device(refuse, device.arrays)(x)
    np.testing.assert_array_equal(x, values)


# --- which functions are wrapped ------------------------------------------------------------------


def test_every_cuda_entry_point_and_only_those_is_wrapped(monkeypatch, rng, device):
    run_entry_points_on(device.arrays, monkeypatch.setattr)
    for family in families():
        module = importlib.import_module(family.module)
        for op in family.ops:
            assert hasattr(getattr(module, f"{op}_cuda"), "__wrapped__"), f"{op}_cuda"
            assert not hasattr(getattr(module, f"{op}_cpu"), "__wrapped__"), f"{op}_cpu"
    matmul = importlib.import_module("fastnet.kernels.matmul")
    assert "matmul_cuda_naive" in cuda_entry_points(matmul)
    for name in family_module_names():
        for entry_point in cuda_entry_points(importlib.import_module(name)):
            assert not entry_point.startswith("_") and "kernel" not in entry_point, entry_point
    a, b = random(rng, 2, 3), random(rng, 3, 2)
    np.testing.assert_array_equal(matmul.matmul_cuda(a, b), matmul_cuda(a, b))  # imported unwrapped
    assert len(device.uploads) == 2  # through the wrapper; its inner calls pass through
