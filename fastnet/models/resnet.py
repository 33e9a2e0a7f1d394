"""CIFAR ResNets and a plain CIFAR CNN."""
