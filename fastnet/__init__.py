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
from .random import manual_seed
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
]
