"""Neural-network building blocks with PyTorch's names, layouts and initialisations.

* ``module``: Module, Parameter, Sequential, ModuleList, LoadReport.
* ``layers``: Linear, Conv2d, MaxPool2d, the activations, Identity, Dropout, Flatten.
* ``normalization``: BatchNorm1d/2d, AvgPool2d, AdaptiveAvgPool2d.
* ``transformer``: LayerNorm, Embedding, PositionalEmbedding, MultiheadAttention,
  TransformerEncoderLayer, TransformerEncoder.
* ``init``: the initialisers.
"""

from .. import functional
from . import init
from .layers import (
    GELU,
    Conv2d,
    Dropout,
    Flatten,
    Identity,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Tanh,
)
from .module import LoadReport, Module, ModuleList, Parameter, Sequential
from .normalization import AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d
from .transformer import (
    Embedding,
    LayerNorm,
    MultiheadAttention,
    PositionalEmbedding,
    TransformerEncoder,
    TransformerEncoderLayer,
)

__all__ = [
    "init",
    "functional",
    "Module",
    "Parameter",
    "Sequential",
    "ModuleList",
    "LoadReport",
    "Linear",
    "Conv2d",
    "MaxPool2d",
    "ReLU",
    "LeakyReLU",
    "GELU",
    "Tanh",
    "Sigmoid",
    "Identity",
    "Dropout",
    "Flatten",
    "BatchNorm1d",
    "BatchNorm2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "LayerNorm",
    "Embedding",
    "PositionalEmbedding",
    "MultiheadAttention",
    "TransformerEncoderLayer",
    "TransformerEncoder",
]
