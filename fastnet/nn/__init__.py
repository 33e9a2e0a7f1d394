"""Neural-network building blocks with PyTorch's names, layouts and initialisations.

* ``module``: Module, Parameter, LoadReport.
* ``containers``: Sequential, ModuleList, ModuleDict, ParameterList, ParameterDict.
* ``layers``: Linear, Conv2d, MaxPool2d, the activations, Identity, Dropout (1d/2d/3d),
  Flatten, Unflatten.
* ``activation_variants``: ReLU6, Hardtanh, Threshold, Hardshrink, Softshrink, SELU, CELU,
  Softsign, Tanhshrink, PReLU, GLU, Softmin.
* ``activations``: SiLU, Softplus, ELU, Hardswish, Hardsigmoid, Mish, LogSigmoid, Softmax,
  LogSoftmax.
* ``losses``: CrossEntropyLoss, NLLLoss, MSELoss, L1Loss, BCEWithLogitsLoss, BCELoss,
  SmoothL1Loss, HuberLoss, KLDivLoss.
* ``convolution``: ConvTranspose2d (and what it shares with Conv2d).
* ``fused``: ConvReLU2d, LinearReLU (a layer and the ReLU after it as one op: inference).
* ``normalization``: BatchNorm1d/2d, AvgPool2d, AdaptiveAvgPool2d, GroupNorm,
  InstanceNorm1d/2d, RMSNorm.
* ``pooling``: AdaptiveMaxPool2d, MaxPool1d, AvgPool1d, AdaptiveAvgPool1d, AdaptiveMaxPool1d.
* ``patches``: Unfold, Fold, PixelShuffle, PixelUnshuffle, the padding layers, CosineSimilarity,
  PairwiseDistance.
* ``resample``: Upsample, UpsamplingNearest2d, UpsamplingBilinear2d.
* ``transformer``: LayerNorm, Embedding, PositionalEmbedding, MultiheadAttention,
  TransformerEncoderLayer, TransformerEncoder.
* ``init``: the initialisers.
"""

from .. import functional
from . import init
from .activation_variants import (
    CELU,
    GLU,
    SELU,
    Hardshrink,
    Hardtanh,
    PReLU,
    ReLU6,
    Softmin,
    Softshrink,
    Softsign,
    Tanhshrink,
    Threshold,
)
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
from .containers import ModuleDict, ModuleList, ParameterDict, ParameterList, Sequential
from .convolution import ConvTranspose2d
from .distillation import DistillationLoss
from .fused import ConvReLU2d, LinearReLU
from .layers import (
    GELU,
    Conv2d,
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    Flatten,
    Identity,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Tanh,
    Unflatten,
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
from .module import LoadReport, Module, Parameter
from .normalization import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    RMSNorm,
)
from .parallel import DistributedDataParallel
from .patches import (
    CircularPad1d,
    CircularPad2d,
    ConstantPad1d,
    ConstantPad2d,
    CosineSimilarity,
    Fold,
    PairwiseDistance,
    PixelShuffle,
    PixelUnshuffle,
    ReflectionPad1d,
    ReflectionPad2d,
    ReplicationPad1d,
    ReplicationPad2d,
    Unfold,
    ZeroPad1d,
    ZeroPad2d,
)
from .pooling import (
    AdaptiveAvgPool1d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AvgPool1d,
    MaxPool1d,
)
from .resample import Upsample, UpsamplingBilinear2d, UpsamplingNearest2d
from .sparse_linear import SparseLinear  # noqa: F401
from .sync_batchnorm import SyncBatchNorm
from .transformer import (
    Embedding,
    LayerNorm,
    MultiheadAttention,
    PositionalEmbedding,
    TransformerEncoder,
    TransformerEncoderLayer,
)

__all__ = [
    "DistributedDataParallel",
    "init",
    "functional",
    "Module",
    "Parameter",
    "Sequential",
    "ModuleList",
    "ModuleDict",
    "ParameterList",
    "ParameterDict",
    "LoadReport",
    "Linear",
    "Conv2d",
    "ConvTranspose2d",
    "ConvReLU2d",
    "LinearReLU",
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
    "ReLU6",
    "Hardtanh",
    "Threshold",
    "Hardshrink",
    "Softshrink",
    "SELU",
    "CELU",
    "Softsign",
    "Tanhshrink",
    "PReLU",
    "GLU",
    "Softmin",
    "CrossEntropyLoss",
    "NLLLoss",
    "DistillationLoss",
    "MSELoss",
    "L1Loss",
    "BCEWithLogitsLoss",
    "BCELoss",
    "SmoothL1Loss",
    "HuberLoss",
    "KLDivLoss",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "Flatten",
    "Unflatten",
    "BatchNorm1d",
    "BatchNorm2d",
    "SyncBatchNorm",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "MaxPool1d",
    "AvgPool1d",
    "AdaptiveAvgPool1d",
    "AdaptiveMaxPool1d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "RMSNorm",
    "Unfold",
    "Fold",
    "PixelShuffle",
    "PixelUnshuffle",
    "ZeroPad1d",
    "ZeroPad2d",
    "ConstantPad1d",
    "ConstantPad2d",
    "ReflectionPad1d",
    "ReflectionPad2d",
    "ReplicationPad1d",
    "ReplicationPad2d",
    "CircularPad1d",
    "CircularPad2d",
    "CosineSimilarity",
    "PairwiseDistance",
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
