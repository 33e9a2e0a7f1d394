"""The dense (fully connected) op: ``linear``.

y = x·Wᵀ + b for x (..., in), W (out, in), b (out,), through the matmul kernel in its A·Bᵀ form
on x viewed as (rows, in). Backward, with dY viewed as (rows, out): dX = dY·W, dW = dYᵀ·X (the
Aᵀ·B form), db = Σ dY over the rows. ``linear_relu`` is relu(linear(...)) as one graph node
(:class:`~.activations.ReLUAfter`; inference fuses Linear → ReLU into it).

(The module is not named ``linear``: the package exports the function ``linear``, which would
hide a submodule of the same name.)
"""

from __future__ import annotations

from ..tensor import Function, Tensor
from .activations import ReLUAfter

__all__ = ["linear", "linear_relu"]


class Linear(Function):
    def forward(self, x, weight, *bias):
        if weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"linear: input of shape {tuple(x.shape)} does not match weight "
                f"of shape {tuple(weight.shape)} "
                f"(expected input (..., {weight.shape[-1]}))"
            )
        xp = self.device.xp
        self.x2d = xp.ascontiguousarray(x.reshape(-1, x.shape[-1]))
        self.weight, self.lead = weight, x.shape[:-1]
        out = self.device.matmul(self.x2d, weight, False, True)
        if bias:
            out += bias[0]
        return out.reshape(self.lead + (weight.shape[0],))

    def backward(self, grad):
        grad2d = self.device.xp.ascontiguousarray(grad.reshape(-1, grad.shape[-1]))
        grad_x = grad_w = None
        if self.inputs[0].requires_grad:
            grad_x = self.device.matmul(grad2d, self.weight, False, False)
            grad_x = grad_x.reshape(self.lead + (self.weight.shape[1],))
        if self.inputs[1].requires_grad:
            grad_w = self.device.matmul(grad2d, self.x2d, True, False)
        grad_b = grad2d.sum(axis=0) if len(self.inputs) == 3 else None
        return grad_x, grad_w, grad_b


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x·Wᵀ + b, with W of shape (out_features, in_features) as in PyTorch."""
    return Linear.apply(input, weight, *([bias] if bias is not None else []))


class LinearReLU(ReLUAfter, Linear):
    pass


def linear_relu(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """relu(linear(input, weight, bias)) as one op: the same values and gradients."""
    return LinearReLU.apply(input, weight, *([bias] if bias is not None else []))
