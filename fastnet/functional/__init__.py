"""Differentiable neural-network ops, built on the device contract (``fastnet.backend``).

Each op is a :class:`~fastnet.tensor.Function` with forward and backward side by side (or a
composition of Tensor ops), one module per topic:

* ``dense``: linear, linear_relu.
* ``conv``: conv2d, conv2d_relu, conv2d_relu_max_pool2d (im2col and GEMMs, Winograd F(2x2,
  3x3), or the depthwise kernels), its chunking of the batch; ``conv_transpose``:
  conv_transpose2d, its adjoint.
* ``pooling``: max_pool2d, avg_pool2d, adaptive_avg_pool2d, adaptive_max_pool2d.
* ``pooling1d``: max_pool1d, avg_pool1d, adaptive_avg_pool1d, adaptive_max_pool1d.
* ``patches``: unfold, fold (im2col / col2im), pixel_shuffle, pixel_unshuffle.
* ``resample``: interpolate (nearest, nearest-exact, bilinear, linear, area).
* ``activations``: relu, add_relu, tanh, sigmoid, leaky_relu, gelu, silu, softplus, elu, hardswish,
  hardsigmoid, mish, logsigmoid, softmax (the kernel one, with masks and ``causal``),
  log_softmax.
* ``activation_variants``: hardtanh, relu6, threshold, hardshrink, softshrink, selu, celu,
  softsign, tanhshrink, prelu, glu, softmin.
* ``losses``: cross_entropy (the fused softmax + cross-entropy kernel, or probability targets),
  nll_loss.
* ``distillation``: distillation_loss, soft_target_loss (the fused soft-target kernel).
* ``contrastive``: nt_xent_loss (SimCLR's NT-Xent over (2N, D) embeddings).
* ``pointwise_losses``: mse_loss, l1_loss, smooth_l1_loss, huber_loss, binary_cross_entropy,
  binary_cross_entropy_with_logits, kl_div.
* ``normalization``: batch_norm, batch_norm_relu, layer_norm, group_norm, instance_norm, rms_norm.
* ``distance``: normalize, cosine_similarity, pairwise_distance.
* ``attention``: scaled_dot_product_attention, attention_weights.
* ``sparse``: embedding, one_hot.
* ``sparse_dense``: csr_linear (x·Wᵀ + b with W in CSR form: pruned layers).
* ``quantization``: fake_quantize_per_tensor_affine, fake_quantize_per_channel_affine
  (quantization-aware training's rounding, straight-through gradient).
* ``sync_batch_norm``: sync_batch_norm (batch norm over every rank's batch).
* ``collectives``: all_gather (every rank's rows, differentiable).
* ``regularization``: dropout, dropout1d, dropout2d, dropout3d.
* ``shape``: flatten, pad (constant, reflect, replicate, circular).
* ``arguments``: ``Pair`` and ``to_pair``, the int-or-pair arguments the ops and layers take.
"""

from .activation_variants import (
    celu,
    glu,
    hardshrink,
    hardtanh,
    prelu,
    relu6,
    selu,
    softmin,
    softshrink,
    softsign,
    tanhshrink,
    threshold,
)
from .activations import (
    Mask,
    add_relu,
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
from .collectives import all_gather
from .contrastive import nt_xent_loss
from .conv import conv2d, conv2d_relu, conv2d_relu_max_pool2d
from .conv_transpose import conv_transpose2d
from .dense import linear, linear_relu
from .distance import cosine_similarity, normalize, pairwise_distance
from .distillation import distillation_loss, soft_target_loss
from .losses import cross_entropy, nll_loss
from .normalization import (
    batch_norm,
    batch_norm_relu,
    group_norm,
    instance_norm,
    layer_norm,
    rms_norm,
)
from .patches import fold, pixel_shuffle, pixel_unshuffle, unfold
from .pointwise_losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    smooth_l1_loss,
)
from .pooling import adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool2d
from .pooling1d import adaptive_avg_pool1d, adaptive_max_pool1d, avg_pool1d, max_pool1d
from .quantization import fake_quantize_per_channel_affine, fake_quantize_per_tensor_affine
from .regularization import dropout, dropout1d, dropout2d, dropout3d
from .resample import interpolate
from .shape import flatten, pad
from .sparse import embedding, one_hot
from .sparse_dense import csr_linear
from .sync_batch_norm import sync_batch_norm

__all__ = [
    "Mask",
    "csr_linear",
    "fake_quantize_per_tensor_affine",
    "fake_quantize_per_channel_affine",
    "Pair",
    "linear",
    "linear_relu",
    "conv2d",
    "conv2d_relu",
    "conv2d_relu_max_pool2d",
    "conv_transpose2d",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "max_pool1d",
    "avg_pool1d",
    "adaptive_avg_pool1d",
    "adaptive_max_pool1d",
    "unfold",
    "fold",
    "pixel_shuffle",
    "pixel_unshuffle",
    "interpolate",
    "relu",
    "add_relu",
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
    "softmin",
    "hardtanh",
    "relu6",
    "threshold",
    "hardshrink",
    "softshrink",
    "selu",
    "celu",
    "softsign",
    "tanhshrink",
    "prelu",
    "glu",
    "cross_entropy",
    "nll_loss",
    "nt_xent_loss",
    "distillation_loss",
    "soft_target_loss",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "batch_norm",
    "batch_norm_relu",
    "layer_norm",
    "group_norm",
    "instance_norm",
    "rms_norm",
    "normalize",
    "cosine_similarity",
    "pairwise_distance",
    "scaled_dot_product_attention",
    "attention_weights",
    "embedding",
    "one_hot",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "flatten",
    "pad",
    "sync_batch_norm",
    "all_gather",
]
