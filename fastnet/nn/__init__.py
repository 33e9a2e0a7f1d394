"""Neural-network building blocks with PyTorch's names, layouts and initialisations.

* ``module``: Module, Parameter, Sequential, ModuleList, LoadReport.
* ``layers``: Linear, Conv2d, MaxPool2d, the activations, Identity, Dropout, Flatten.
* ``activations``: SiLU, Softplus, ELU, Hardswish, Hardsigmoid, Mish, LogSigmoid, Softmax,
  LogSoftmax.
* ``losses``: CrossEntropyLoss, NLLLoss, MSELoss, L1Loss, BCEWithLogitsLoss, BCELoss,
  SmoothL1Loss, HuberLoss, KLDivLoss.
* ``convolution``: ConvTranspose2d (and what it shares with Conv2d).
* ``normalization``: BatchNorm1d/2d, AvgPool2d, AdaptiveAvgPool2d.
* ``resample``: Upsample, UpsamplingNearest2d, UpsamplingBilinear2d.
* ``transformer``: LayerNorm, Embedding, PositionalEmbedding, MultiheadAttention,
  TransformerEncoderLayer, TransformerEncoder.
* ``init``: the initialisers.
"""

from .. import functional
from . import init
from .activations import (
    ELU,
    Hardsigmoid,
    Hardswish,
    LogSigmoid,
    LogSoftmax,
    Mish,
    SiLU,
    Softmax,
    Softplus,
)
from .convolution import ConvTranspose2d
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
from .losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from .module import LoadReport, Module, ModuleList, Parameter, Sequential
from .normalization import AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d
from .resample import Upsample, UpsamplingBilinear2d, UpsamplingNearest2d
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
    "ConvTranspose2d",
    "MaxPool2d",
    "ReLU",
    "LeakyReLU",
    "GELU",
    "Tanh",
    "Sigmoid",
    "Identity",
    "SiLU",
    "Softplus",
    "ELU",
    "Hardswish",
    "Hardsigmoid",
    "Mish",
    "LogSigmoid",
    "Softmax",
    "LogSoftmax",
    "CrossEntropyLoss",
    "NLLLoss",
    "MSELoss",
    "L1Loss",
    "BCEWithLogitsLoss",
    "BCELoss",
    "SmoothL1Loss",
    "HuberLoss",
    "KLDivLoss",
    "Dropout",
    "Flatten",
    "BatchNorm1d",
    "BatchNorm2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Upsample",
    "UpsamplingNearest2d",
    "UpsamplingBilinear2d",
    "LayerNorm",
    "Embedding",
    "PositionalEmbedding",
    "MultiheadAttention",
    "TransformerEncoderLayer",
    "TransformerEncoder",
]
