"""fastnet: a compact deep-learning framework whose hot paths are hand-written kernels.

One epoch of training a CNN on MNIST:

    import fastnet as fn
    from fastnet import nn, optim
    model = fn.models.mnist_cnn()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    for x, y in fn.data.DataLoader(fn.data.MNIST(train=True), batch_size=64, shuffle=True):
        loss = fn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
"""

__version__ = "0.1.0"

import numpy as _np

from . import data, functional, models, nn, optim
from .backend import Device, cuda_is_available, get_num_threads, set_num_threads
from .backend import get_device as device
from .checkpoint import load, load_checkpoint, save, save_checkpoint
from .factories import (
    arange,
    empty,
    empty_like,
    eye,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    zeros,
    zeros_like,
)
from .random import manual_seed
from .reduction_functions import (
    amax,
    amin,
    argmax,
    argmin,
    argsort,
    cumprod,
    cumsum,
    logsumexp,
    max,
    mean,
    min,
    prod,
    sort,
    std,
    sum,
    topk,
    var,
)
from .tensor import (
    Tensor,
    cat,
    enable_grad,
    inference_mode,
    is_grad_enabled,
    no_grad,
    stack,
    tensor,
)
from .tensor_functions import clone, flip, matmul, squeeze, unsqueeze
from .tensor_selection import (
    clamp,
    clip,
    gather,
    masked_fill,
    maximum,
    minimum,
    scatter,
    scatter_add,
    tril,
    triu,
    where,
)

# PyTorch's dtype names (fastnet.float32, fastnet.long, ...) for the NumPy dtypes tensors hold
float32 = float = _np.dtype(_np.float32)
float64 = double = _np.dtype(_np.float64)
int32 = int = _np.dtype(_np.int32)
int64 = long = _np.dtype(_np.int64)
uint8 = _np.dtype(_np.uint8)
bool = _np.dtype(_np.bool_)

__all__ = [
    "Tensor",
    "tensor",
    "cat",
    "stack",
    "no_grad",
    "inference_mode",
    "enable_grad",
    "is_grad_enabled",
    "device",
    "Device",
    "cuda_is_available",
    "set_num_threads",
    "get_num_threads",
    "manual_seed",
    "save",
    "load",
    "save_checkpoint",
    "load_checkpoint",
    "functional",
    "nn",
    "optim",
    "data",
    "models",
    "float32",
    "float64",
    "float",
    "double",
    "int32",
    "int",
    "int64",
    "long",
    "uint8",
    "bool",
    # reductions, scans and orderings (fastnet.reduction_functions)
    "sum",
    "mean",
    "prod",
    "var",
    "std",
    "logsumexp",
    "cumsum",
    "cumprod",
    "max",
    "min",
    "amax",
    "amin",
    "argmax",
    "argmin",
    "sort",
    "argsort",
    "topk",
    # selection (fastnet.tensor_selection)
    "where",
    "masked_fill",
    "clamp",
    "clip",
    "maximum",
    "minimum",
    "gather",
    "scatter",
    "scatter_add",
    "tril",
    "triu",
    # factories (fastnet.factories)
    "zeros",
    "ones",
    "full",
    "empty",
    "arange",
    "linspace",
    "eye",
    "rand",
    "randn",
    "randint",
    "zeros_like",
    "ones_like",
    "full_like",
    "empty_like",
    "rand_like",
    "randn_like",
    # functions that mirror Tensor methods (fastnet.tensor_functions)
    "matmul",
    "squeeze",
    "unsqueeze",
    "flip",
    "clone",
]
