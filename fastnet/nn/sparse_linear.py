"""SparseLinear: a pruned Linear whose weight is held in CSR, and ``sparsify``, which swaps one in
wherever the sparse product is faster than the dense one.

A :class:`SparseLinear` keeps the nonzeros of W (out_features, in_features) as three buffers,
``indptr`` (out + 1,) int64, ``indices`` (nnz,) int32 and ``values`` (nnz,), and the same for Wᵀ
(``t_indptr``, ``t_indices``, ``t_values``), so that the input's gradient (dX = dY·W) is the same
kernel on Wᵀ: a sparse layer can sit inside fine-tuning of the layers around it and of its bias.
Its weight values are buffers, not parameters: they are fixed (the pruned positions stay pruned
by construction); only the bias trains.

State: every buffer is in ``state_dict``, so a sparse model saves and loads through the
checkpoint code as any other; loading needs a model with the same sparsity pattern sizes (nnz),
e.g. one built by :func:`sparsify` from the same pruned model (``load_state_dict`` refuses a
shape mismatch by name).

:func:`sparsify` times, for every ``Linear`` of a model at a batch size, the dense forward
against the CSR one on the model's device and replaces the Linear by its SparseLinear where
dense_ms / sparse_ms ≥ ``min_speedup``; a table of the decisions is returned. On one CPU core
(``fastnet.set_num_threads(1)``) the CSR kernel beats NumPy's BLAS at batch 256 from about 90%
sparsity, and at batch 1 only from about 95% (a single row is a memory-bound GEMV for BLAS).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..functional.sparse_dense import check_csr, csr_from_dense, csr_transpose
from ..tensor import Tensor
from .layers import Linear
from .module import Module, Parameter

__all__ = ["SparseLinear", "sparsify"]

_CSR_NAMES = ("indptr", "indices", "values")


class SparseLinear(Module):
    """y = x·Wᵀ + b with W (out_features, in_features) in CSR (module docstring)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        indptr: Any,
        indices: Any,
        values: Any,
        bias: Any = None,
        device: Any = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        indptr = np.ascontiguousarray(indptr, np.int64)
        indices = np.ascontiguousarray(indices, np.int32)
        values = np.ascontiguousarray(values)
        if values.dtype.kind != "f":
            values = values.astype(np.float32)
        # check once here, on the host, so that every forward can skip the check (a GPU sync)
        if indptr.shape != (self.out_features + 1,):
            raise ValueError(
                f"SparseLinear: indptr must have out_features + 1 = {self.out_features + 1} "
                f"entries, got shape {indptr.shape}"
            )
        check_csr(indptr, indices, values, self.in_features)
        transpose = csr_transpose(indptr, indices, values, self.in_features)
        for prefix, arrays in (("", (indptr, indices, values)), ("t_", transpose)):
            for name, array in zip(_CSR_NAMES, arrays, strict=True):
                self.register_buffer(prefix + name, Tensor(array, dtype=array.dtype))
        if bias is not None:
            bias = (
                bias if isinstance(bias, Parameter) else Parameter(np.asarray(bias, values.dtype))
            )
        self.register_parameter("bias", bias)
        if device is not None:
            self.to(device)

    @classmethod
    def from_linear(cls, linear: Linear) -> SparseLinear:
        """The SparseLinear of ``linear``'s current weight (its exact zeros dropped), on its
        device; the bias is shared (the same Parameter)."""
        weight = linear.weight.device.to_host(linear.weight.data)
        layer = cls(linear.in_features, linear.out_features, *csr_from_dense(weight))
        layer.to(linear.weight.device)
        if linear.bias is not None:
            layer.bias = linear.bias
        return layer

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.in_features * self.out_features)

    def to_dense(self) -> np.ndarray:
        """W as a dense host array (out_features, in_features)."""
        host = [self.values.device.to_host(getattr(self, n).data) for n in _CSR_NAMES]
        dense = np.zeros((self.out_features, self.in_features), host[2].dtype)
        dense[np.repeat(np.arange(self.out_features), np.diff(host[0])), host[1]] = host[2]
        return dense

    def forward(self, input: Tensor) -> Tensor:
        return F.csr_linear(
            input,
            self.indptr,
            self.indices,
            self.values,
            self.bias,
            transpose=(self.t_indptr, self.t_indices, self.t_values),
            check_structure=False,
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, density={self.density:.3f}"
        )


def _best_seconds(function: Callable[[], Any], repeats: int = 5) -> float:
    """The best of ``repeats`` timings of ``function`` (after a warm-up that compiles), each
    waiting for its result (a host copy of one value, which waits for a GPU queue)."""

    def run() -> None:
        out = function()
        out.device.to_host(out.data.reshape(-1)[:1])

    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def sparsify(
    model: Module,
    batch_size: int = 256,
    min_speedup: float = 1.0,
    timer: Callable[[Callable[[], Any]], float] | None = None,
) -> list[dict[str, Any]]:
    """Replace, in place, every ``Linear`` of ``model`` (at any depth; not the model itself) by
    its :class:`SparseLinear` where the CSR forward at ``batch_size`` on the model's device is at
    least ``min_speedup`` times faster than the dense one. ``timer(function) -> seconds`` times a
    forward (default: best of 5). Returns one row per Linear: name, density, dense_ms, sparse_ms,
    speedup, chosen."""
    timer = timer or _best_seconds
    rows = []
    linears = [
        (name, module) for name, module in model.named_modules() if isinstance(module, Linear)
    ]
    for name, linear in linears:
        if not name:
            continue  # the model itself: nothing to put it in
        sparse = SparseLinear.from_linear(linear)
        rng = np.random.default_rng(0)
        host = rng.uniform(-1.0, 1.0, (batch_size, linear.in_features))
        x = Tensor(host.astype(linear.weight.dtype), device=linear.weight.device)
        with no_grad():
            dense_s = timer(lambda linear=linear, x=x: linear(x))
            sparse_s = timer(lambda sparse=sparse, x=x: sparse(x))
        speedup = dense_s / sparse_s if sparse_s > 0 else float("inf")
        chosen = speedup >= min_speedup
        if chosen:
            parent_name, _, key = name.rpartition(".")
            setattr(model.get_submodule(parent_name), key, sparse)
        rows.append(
            {
                "name": name,
                "density": sparse.density,
                "dense_ms": dense_s * 1e3,
                "sparse_ms": sparse_s * 1e3,
                "speedup": speedup,
                "chosen": chosen,
            }
        )
    return rows
