"""Neural-network building blocks with PyTorch's names, layouts and initialisations."""
from . import init
from .layers import (GELU, Conv2d, Dropout, Flatten, Identity, LeakyReLU, Linear, MaxPool2d, ReLU,
                     Sigmoid, Tanh)
from .module import LoadReport, Module, ModuleList, Parameter, Sequential
from .normalization import *  # noqa: F401,F403
from .normalization import __all__ as _normalization_all
from .transformer import *  # noqa: F401,F403
from .transformer import __all__ as _transformer_all
from .. import functional

__all__ = ["init", "functional", "Module", "Parameter", "Sequential", "ModuleList", "LoadReport", "Linear",
           "Conv2d", "MaxPool2d", "ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "Identity", "Dropout", "Flatten"] + _normalization_all + _transformer_all
