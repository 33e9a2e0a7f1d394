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
]
