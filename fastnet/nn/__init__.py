"""Neural-network building blocks with PyTorch's names, layouts and initialisations."""
from . import init
from .layers import (GELU, Conv2d, Dropout, Flatten, Identity, LeakyReLU, Linear, MaxPool2d, ReLU,
                     Sigmoid, Tanh)
from .module import LoadReport, Module, ModuleList, Parameter, Sequential
from .. import functional

__all__ = ["init", "functional", "Module", "Parameter", "Sequential", "ModuleList", "LoadReport", "Linear",
           "Conv2d", "MaxPool2d", "ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "Identity", "Dropout", "Flatten"]
