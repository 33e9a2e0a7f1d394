"""Differentiable neural-network ops, built on the device contract (``fastnet.backend``).

Each op is a :class:`~fastnet.tensor.Function` with forward and backward side by side (or a
composition of Tensor ops), one module per topic:

* ``dense``: linear.
* ``conv``: conv2d (im2col and GEMMs, or Winograd F(2x2, 3x3)), its chunking of the batch.
* ``pooling``: max_pool2d, avg_pool2d, adaptive_avg_pool2d.
* ``activations``: relu, tanh, sigmoid, leaky_relu, gelu, softmax (the kernel one, with masks
  and ``causal``), log_softmax.
* ``losses``: cross_entropy (the fused softmax + cross-entropy kernel), mse_loss, l1_loss.
* ``normalization``: batch_norm, layer_norm.
* ``attention``: scaled_dot_product_attention, attention_weights.
* ``sparse``: embedding.
* ``regularization``: dropout.
* ``shape``: flatten.
* ``arguments``: ``Pair`` and ``to_pair``, the int-or-pair arguments the ops and layers take.
"""

from .activations import Mask, gelu, leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from .arguments import Pair
from .attention import attention_weights, scaled_dot_product_attention
from .conv import conv2d
from .dense import linear
from .losses import cross_entropy, l1_loss, mse_loss
from .normalization import batch_norm, layer_norm
from .pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .regularization import dropout
from .shape import flatten
from .sparse import embedding

__all__ = [
    "Mask",
    "Pair",
    "linear",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "relu",
    "tanh",
    "sigmoid",
    "leaky_relu",
    "gelu",
    "softmax",
    "log_softmax",
    "cross_entropy",
    "mse_loss",
    "l1_loss",
    "batch_norm",
    "layer_norm",
    "scaled_dot_product_attention",
    "attention_weights",
    "embedding",
    "dropout",
    "flatten",
]
