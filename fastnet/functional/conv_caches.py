"""What conv2d keeps between calls: the Winograd tiles of weights that take no gradient
(:data:`WINOGRAD_WEIGHTS_CACHE`) and the kernel calls of signatures that record no graph
(:data:`FORWARD_PLANS`). Both are read by :mod:`.conv` and hold no values that could go stale."""

from __future__ import annotations

import weakref
from typing import Any

from ..autograd import is_grad_enabled
from ..tensor import Tensor

__all__ = ["FORWARD_PLANS", "MAX_PLANS", "WINOGRAD_WEIGHTS_CACHE"]


class _WinogradWeightsCache:
    """U = the Winograd tiles of a weight that takes no gradient, kept between calls: an eval-mode
    model (or :func:`fastnet.inference.optimize_for_inference`'s copy) computes its weights' tiles
    once instead of on every forward.

    One entry per weight Tensor (dropped with it): the bytes of the values U was computed from,
    and U. An entry is used only while the weight's array still holds exactly those bytes (same
    shape, dtype and every bit, compared in full on each call), so it can never be stale:
    not after ``weight.add_(...)``, ``weight.data[...] = ...``, an optimizer's step, a loaded
    state dict or a new ``weight.data``, whether or not the write bumped the version counter
    (raw writes into ``.data`` do not). U depends on the values alone, so equal bits give the
    same U (bitwise: a NaN matches itself, -0.0 does not match 0.0). The comparison, one copy of
    the weight's bytes and a memcmp, costs ~1 us for 16 channels and ~8 us for 64, against ~7
    and ~45 us for computing U. Only on the CPU: on a GPU the comparison's answer would be a
    device-to-host sync per call."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Any, tuple, Any, bytes, Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def tiles(self, weight: Tensor) -> Any:
        """U of ``weight`` (a CPU tensor), from the cache when its values are unchanged."""
        key, array = id(weight), weight.data
        entry = self._entries.get(key)
        if entry is not None:
            reference, shape, dtype, saved, u = entry
            if (
                reference() is weight
                and array.shape == shape
                and array.dtype == dtype
                and array.tobytes() == saved  # C-order bytes: one copy and a memcmp
            ):
                return u
        u = weight.device.winograd_weights(array)
        if entry is None or entry[0]() is not weight:
            reference = weakref.ref(weight, lambda dead, key=key: self._drop(key, dead))
        else:
            reference = entry[0]
        self._entries[key] = (reference, array.shape, array.dtype, array.tobytes(), u)
        return u

    def _drop(self, key: int, reference: Any) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is reference:
            del self._entries[key]


WINOGRAD_WEIGHTS_CACHE = _WinogradWeightsCache()


def _winograd_tiles(weight: Tensor) -> Any:
    """The cached U of a CPU weight that takes no gradient here (grad mode off, or the weight
    does not require one); None otherwise (Conv2dWinograd computes it, and its backward needs
    a fresh U of a weight being trained anyway)."""
    if not isinstance(weight, Tensor) or weight.device.name != "cpu":
        return None  # not a tensor: Function.apply names the error
    if weight.requires_grad and is_grad_enabled():
        return None
    return WINOGRAD_WEIGHTS_CACHE.tiles(weight)


class _ForwardPlans:
    """conv2d's kernel calls that record no graph, one per signature, checked once.

    A signature is what conv2d's choices depend on: the device, the shapes and dtypes of x, the
    weight and the bias, and the window arguments as the caller passed them. Its plan is the
    chosen Function's kernel call with everything derived from the signature worked out (the
    algorithm, the checks, the chunk of images), through the kernel family's own plan
    (``conv2d_im2col_plan``, ``winograd_conv2d_plan``: the kernel's checks done once too):
    batch-1 inference spends more on that Python path than on the kernel of a small layer. A
    plan holds no values: each call reads the tensors' arrays as they are then (on the CPU the
    Winograd tiles come from :data:`WINOGRAD_WEIGHTS_CACHE`, which compares the weight's
    bytes). It is made after conv2d succeeded on the signature once the general way, so every
    error is still raised there, and used only when the call records no graph (grad mode off,
    or no operand requires a gradient). The last :data:`MAX_PLANS` signatures are kept."""

    def __init__(self) -> None:
        self._plans: dict[tuple, Any] = {}

    def __len__(self) -> int:
        return len(self._plans)

    def clear(self) -> None:
        self._plans.clear()

    @staticmethod
    def signature(x: Any, weight: Any, bias: Any, *window: Any) -> tuple | None:
        """The key of a call that records no graph; None for any other (or arguments not to be
        keyed: non-tensors, padding given as a string, unhashable window arguments)."""
        if not (isinstance(x, Tensor) and isinstance(weight, Tensor)) or window[1].__class__ is str:
            return None
        if bias is not None and not isinstance(bias, Tensor):
            return None
        if is_grad_enabled() and (
            x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
        ):
            return None
        x_data, w_data = x.data, weight.data
        key = (
            x.device.name, weight.device.name, None if bias is None else (bias.device.name,
            bias.data.shape, bias.data.dtype), x_data.shape, x_data.dtype, w_data.shape,
            w_data.dtype, *window,
        )  # fmt: skip
        try:
            hash(key)
        except TypeError:  # a list for a stride, say: left to the general path
            return None
        return key

    def get(self, key: tuple) -> Any:
        return self._plans.get(key)

    def add(self, key: tuple, plan: Any) -> None:
        if len(self._plans) >= MAX_PLANS:
            self._plans.pop(next(iter(self._plans), None), None)  # the oldest
        self._plans[key] = plan


# How many conv2d signatures keep their plans: a model has a few per input shape; the bound keeps
# a sweep over many shapes from growing the table without end.
MAX_PLANS = 256
FORWARD_PLANS = _ForwardPlans()
