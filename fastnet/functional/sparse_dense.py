"""The sparse dense op: ``csr_linear``, a fully connected layer whose weight is held in CSR.

y = x·Wᵀ + b for x (..., in), W (out, in) given by its CSR arrays (``indptr`` (out + 1,),
``indices`` (nnz,) int32, ``values`` (nnz,)), b (out,), through the ``csr_matmul`` kernel on x
viewed as (rows, in). Backward, with dY viewed as (rows, out): dX = dY·W, which is ``csr_matmul``
on Wᵀ (``transpose``: the CSR arrays of Wᵀ, see ``fastnet.kernels.sparse.csr_transpose``) with no
bias, and db = Σ dY over the rows. W itself gets no gradient (its zeros are structural): a
gradient w.r.t. x without ``transpose`` raises.

(Not named ``sparse``: that module holds embedding and one_hot.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_device
from ..tensor import Function, Tensor

__all__ = ["csr_linear", "csr_from_dense", "csr_transpose", "check_csr"]


# Host helpers (NumPy) for building the arrays; the layers above the backend do not import the
# kernels, so these mirror fastnet.kernels.sparse's (whose tests pin the layout).
def csr_from_dense(w: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr int64 (N+1,), indices int32 (nnz,), values (nnz,)) of the nonzeros of the 2-D
    host array ``w`` (N, K), row by row, columns ascending within a row."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"csr_from_dense expects a 2-D matrix, got shape {w.shape}")
    rows, columns = np.nonzero(w)
    indptr = np.zeros(w.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=indptr[1:])
    return indptr, columns.astype(np.int32), np.ascontiguousarray(w[rows, columns])


def csr_transpose(indptr, indices, values, columns: int):
    """The CSR arrays of Wᵀ (``columns``, N) from the host CSR arrays of W (N, ``columns``)."""
    indptr, indices, values = (np.asarray(a) for a in (indptr, indices, values))
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    order = np.lexsort((rows, indices))
    t_indptr = np.zeros(columns + 1, np.int64)
    np.cumsum(np.bincount(indices, minlength=columns), out=t_indptr[1:])
    return t_indptr, rows[order].astype(np.int32), np.ascontiguousarray(values[order])


def check_csr(indptr, indices, values, in_features: int) -> None:
    """Raise the kernel's own ValueError/TypeError unless the host arrays are a valid CSR matrix
    of ``len(indptr) - 1`` rows and ``in_features`` columns (a product over zero rows of x)."""
    dtype = values.dtype
    get_device("cpu").csr_matmul(
        np.zeros((0, in_features), dtype),
        indptr,
        indices,
        values,
        np.zeros(0, dtype),
        np.zeros((0, indptr.shape[0] - 1), dtype),
    )


def _data(array: Any) -> Any:
    return array.data if isinstance(array, Tensor) else array


class CsrLinear(Function):
    saves_inputs = saves_output = False  # backward reads the CSR of Wᵀ and dY alone

    def forward(self, x, *bias, csr, transpose, check_structure):
        indptr, indices, values = csr
        out_features = indptr.shape[0] - 1
        xp = self.device.xp
        x2d = xp.ascontiguousarray(x.reshape(-1, x.shape[-1]))
        out = self.device.empty((x2d.shape[0], out_features), x.dtype)
        no_bias = xp.empty(0, x.dtype)
        self.device.csr_matmul(
            x2d, indptr, indices, values, bias[0] if bias else no_bias, out, check_structure
        )
        self.transpose, self.in_shape, self.no_bias = transpose, x.shape, no_bias
        return out.reshape(x.shape[:-1] + (out_features,))

    def backward(self, grad):
        grad2d = self.device.xp.ascontiguousarray(grad.reshape(-1, grad.shape[-1]))
        grad_x = None
        if self.inputs[0].requires_grad:
            if self.transpose is None:
                raise RuntimeError(
                    "csr_linear: a gradient w.r.t. the input needs the CSR arrays of the weight's "
                    "transpose (transpose=...; SparseLinear keeps them): this call is "
                    "inference-only"
                )
            grad_x = self.device.empty((grad2d.shape[0], self.in_shape[-1]), grad.dtype)
            self.device.csr_matmul(grad2d, *self.transpose, self.no_bias, grad_x, False)
            grad_x = grad_x.reshape(self.in_shape)
        grad_b = grad2d.sum(axis=0) if len(self.inputs) == 2 else None
        return grad_x, grad_b


def csr_linear(
    input: Tensor,
    indptr: Any,
    indices: Any,
    values: Any,
    bias: Tensor | None = None,
    transpose: tuple[Any, Any, Any] | None = None,
    check_structure: bool = True,
) -> Tensor:
    """y = x·Wᵀ + b with W (out_features, in_features) in CSR: ``indptr``, ``indices``, ``values``
    (arrays of the input's device, or Tensors); ``transpose``, the CSR arrays of Wᵀ, makes the
    result differentiable w.r.t. ``input``. ``check_structure=False`` skips checking the CSR
    arrays' contents (a device sync on a GPU) for arrays already known to be valid."""
    csr = tuple(_data(array) for array in (indptr, indices, values))
    if transpose is not None:
        transpose = tuple(_data(array) for array in transpose)
    return CsrLinear.apply(
        input,
        *([bias] if bias is not None else []),
        csr=csr,
        transpose=transpose,
        check_structure=bool(check_structure),
    )
