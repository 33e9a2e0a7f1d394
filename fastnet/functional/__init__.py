"""Differentiable neural-network ops, built on the device contract (``fastnet.backend``).

Each op is a :class:`~fastnet.tensor.Function` with forward and backward side by side (or a
composition of Tensor ops), one module per topic:

* ``dense``: linear.
* ``conv``: conv2d (im2col and GEMMs, or Winograd F(2x2, 3x3)), conv_transpose2d, their
  chunking of the batch.
* ``pooling``: max_pool2d, avg_pool2d, adaptive_avg_pool2d.
* ``resample``: interpolate (nearest, nearest-exact, bilinear, linear, area).
* ``activations``: relu, tanh, sigmoid, leaky_relu, gelu, silu, softplus, elu, hardswish,
  hardsigmoid, mish, logsigmoid, softmax (the kernel one, with masks and ``causal``),
  log_softmax.
* ``losses``: cross_entropy (the fused softmax + cross-entropy kernel, or probability targets),
  nll_loss.
* ``pointwise_losses``: mse_loss, l1_loss, smooth_l1_loss, huber_loss, binary_cross_entropy,
  binary_cross_entropy_with_logits, kl_div.
* ``normalization``: batch_norm, layer_norm.
* ``attention``: scaled_dot_product_attention, attention_weights.
* ``sparse``: embedding.
* ``regularization``: dropout.
* ``shape``: flatten, pad (constant, reflect, replicate, circular).
* ``arguments``: ``Pair`` and ``to_pair``, the int-or-pair arguments the ops and layers take.
"""

from .activations import (
    Mask,
    elu,
    gelu,
    hardsigmoid,
    hardswish,
    leaky_relu,
    log_softmax,
    logsigmoid,
    mish,
    relu,
    sigmoid,
    silu,
    softmax,
    softplus,
    tanh,
)
from .arguments import Pair
from .attention import attention_weights, scaled_dot_product_attention
from .conv import conv2d, conv_transpose2d
from .dense import linear
from .losses import cross_entropy, nll_loss
from .normalization import batch_norm, layer_norm
from .pointwise_losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    smooth_l1_loss,
)
from .pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .regularization import dropout
from .resample import interpolate
from .shape import flatten, pad
from .sparse import embedding

__all__ = [
    "Mask",
    "Pair",
    "linear",
    "conv2d",
    "conv_transpose2d",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "interpolate",
    "relu",
    "tanh",
    "sigmoid",
    "leaky_relu",
    "gelu",
    "silu",
    "softplus",
    "elu",
    "hardswish",
    "hardsigmoid",
    "mish",
    "logsigmoid",
    "softmax",
    "log_softmax",
    "cross_entropy",
    "nll_loss",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "batch_norm",
    "layer_norm",
    "scaled_dot_product_attention",
    "attention_weights",
    "embedding",
    "dropout",
    "flatten",
    "pad",
]
