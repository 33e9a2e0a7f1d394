"""fastnet: a compact deep-learning framework whose hot paths are hand-written kernels.

    import fastnet as fn
    from fastnet import nn, optim
    model = fn.models.mnist_cnn()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    for x, y in fn.data.DataLoader(fn.data.MNIST(train=True), batch_size=64, shuffle=True):
        loss = fn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
"""
__version__ = "0.1.0"

from . import functional, nn, optim  # noqa: E402
from . import data, models  # noqa: E402
from .backend import Device, cuda_is_available, get_device as device, get_num_threads, set_num_threads  # noqa: E402
from .checkpoint import load, load_checkpoint, save, save_checkpoint  # noqa: E402
from .random import manual_seed  # noqa: E402
from .tensor import Tensor, cat, enable_grad, is_grad_enabled, no_grad, stack, tensor  # noqa: E402

__all__ = ["Tensor", "tensor", "cat", "stack", "no_grad", "enable_grad", "is_grad_enabled", "device", "Device",
           "cuda_is_available", "set_num_threads", "get_num_threads", "manual_seed", "save", "load", "save_checkpoint", "load_checkpoint",
           "functional", "nn", "optim", "data", "models"]
