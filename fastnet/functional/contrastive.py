"""Contrastive losses: ``nt_xent_loss``, SimCLR's normalised temperature-scaled cross-entropy, on
the ``contrastive`` kernel family (kernels/contrastive.py) around two of the device's GEMMs.

For embeddings z (2N, D) whose rows i and i + N are two views of one image (SimCLR's
``torch.cat([z1, z2])``), u_i = z_i / max(‖z_i‖, 1e-12) (as F.normalize), S = U Uᵀ / T, and the
positive of row i is p(i) = (i + N) mod 2N:

    l_i = −S_{i,p(i)} + log Σ_{k≠i} exp(S_ik)

"mean" averages the 2N row losses, "sum" sums them, "none" returns l (2N,). Nothing larger than
the (2N, 2N) similarity matrix is held: forward overwrites it with the row gradients G
(``ntxent_rows``), and backward turns G into the symmetric M = diag(w) G + Gᵀ diag(w) of the
row weights w (the upstream gradient times the reduction's factor), multiplies M U and goes back
through the normalisation. For "mean" and "sum" w is uniform: M = G + Gᵀ is formed in place (once,
so a retained graph can walk again) and w's one value is the last kernel's scale; for "none" M
is a new matrix and G stays.
"""

from __future__ import annotations

import math

import numpy as np

from ..tensor import Function, Tensor
from .pointwise_losses import legacy_reduction

__all__ = ["nt_xent_loss"]


class NTXent(Function):
    saves_output = False  # backward reads z, the unit rows and G, never the loss

    def forward(self, z, temperature, reduction):
        device = self.device
        self.z = device.xp.ascontiguousarray(z)
        self.units = device.ntxent_normalize(self.z)
        self.pairs = device.matmul(self.units, self.units, False, True)
        row_losses = device.ntxent_rows(self.pairs, 1.0 / temperature)  # pairs now holds G
        self.reduction, self.symmetrised = reduction, False
        if reduction == "none":
            return row_losses
        total = row_losses.sum(dtype=np.float64)  # accumulate in float64, report in z's dtype
        if reduction == "mean":
            total = total / row_losses.shape[0]
        return device.xp.asarray(total, dtype=z.dtype)

    def backward(self, grad):
        device = self.device
        grad = grad.astype(self.z.dtype, copy=False)
        if self.reduction == "none":
            pairs = device.ntxent_symmetrise(self.pairs, grad)
            scale = device.xp.ones(1, self.z.dtype)
        else:
            if not self.symmetrised:
                device.ntxent_symmetrise(self.pairs, out=self.pairs)
                self.symmetrised = True
            pairs = self.pairs
            scale = grad.reshape(1)
            if self.reduction == "mean":
                scale = scale / self.z.shape[0]
        dunits = device.matmul(pairs, self.units, False, False)
        return (device.ntxent_normalize_backward(self.z, dunits, scale),)


def nt_xent_loss(z: Tensor, temperature: float = 0.5, reduction: str = "mean") -> Tensor:
    """SimCLR's NT-Xent loss of the (2N, D) embeddings ``z`` (see the module docstring)."""
    reduction = legacy_reduction("nt_xent_loss", reduction)
    if not isinstance(z, Tensor):
        raise TypeError(f"nt_xent_loss: expected a Tensor, got {type(z).__name__}")
    if z.ndim != 2 or z.shape[0] % 2 or z.shape[0] == 0:
        raise ValueError(
            f"nt_xent_loss: expected embeddings of shape (2N, D) with N >= 1 (rows i and i + N "
            f"are two views of one image), got shape {z.shape}"
        )
    if np.dtype(z.dtype).kind != "f" or np.dtype(z.dtype).itemsize < 4:
        raise TypeError(f"nt_xent_loss: z must be float32 or float64, got {z.dtype}")
    temperature = float(temperature)
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"nt_xent_loss: temperature must be positive, got {temperature}")
    return NTXent.apply(z, temperature=temperature, reduction=reduction)
