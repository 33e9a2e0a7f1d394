"""Differentiable neural-network ops, built on the device contract (``fastnet.backend``).

One module per family, each op a :class:`~fastnet.tensor.Function` with forward and backward
side by side: ``core`` (linear, conv2d, pooling, losses, activations, dropout),
``normalization`` (batch norm, average pooling), ``attention`` (softmax kernel, layer norm,
embedding, scaled dot-product attention).
"""
from .core import *  # noqa: F401,F403
from .core import _pair  # noqa: F401 - the layers normalise their int-or-pair arguments with it
from .normalization import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
