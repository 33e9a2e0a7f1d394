"""CIFAR ResNets and a plain CIFAR CNN, all ``Classifier(features, head)``.

* ``cifar_resnet(depth)``: the CIFAR ResNet of He et al. (2016, section 4.2): a 3×3 stem, three
  stages of (depth − 2)/6 :class:`BasicBlock` s at ``width``, 2·``width``, 4·``width`` channels
  (the first block of stages 2 and 3 halves the image with stride 2), global average pooling,
  one Linear. ResNet-20 (depth 20, 0.27 M parameters) and ResNet-8 (depth 8, 78 k). Where the
  shape changes, the shortcut is a 1×1 convolution + BatchNorm (the paper's option B).
* ``resnet18_cifar``: ResNet-18's four stages of two blocks (64 … 512 channels, 11 M parameters)
  with the usual CIFAR stem: one 3×3 convolution, no 7×7 convolution and no max-pool.
* ``cifar_cnn``: a plain (non-residual) CNN: three stages of two 3×3 conv + BatchNorm + ReLU and
  a 2×2 max-pool, then one Linear over the flattened maps.

``features`` ends with the pooled, flattened vector for the ResNets, so ``head`` is the single
Linear that fine-tuning replaces. Every builder takes ``channels`` and ``image_size`` so the same
models run on 1×28×28 MNIST / Fashion-MNIST; the ResNets accept ``image_size`` only for that
common interface: their global pool makes them work at any image size.

Registered names: ``resnet`` (ResNet-20), ``resnet8``, ``resnet18``, ``cifar_cnn``.
"""

from __future__ import annotations

from collections import OrderedDict

from .. import functional as F
from .. import nn
from ..nn.normalization import norm_relu
from ..tensor import Tensor
from .base import Classifier, register

__all__ = ["BasicBlock", "cifar_resnet", "resnet18_cifar", "cifar_cnn"]


def _conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
) -> list[nn.Module]:
    """A bias-free convolution (the BatchNorm after it has the bias) and its BatchNorm."""
    return [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False
        ),
        nn.BatchNorm2d(out_channels),
    ]


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), both convolutions 3×3.

    ``conv1`` has the block's stride; the shortcut is the identity when the shape is kept, and a
    strided 1×1 convolution + BatchNorm when the channels or the image size change. The first
    ReLU is a module, ``relu1``, so that :func:`fastnet.inference.optimize_for_inference` can fuse
    it into ``conv1``; it holds no state, so state dicts are those of a functional ReLU. In
    training, ``bn1`` and ``relu1`` run as one op (``F.batch_norm_relu``), and the block ends
    in ``F.add_relu``: the block makes no ReLU pass of its own."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_channels, out_channels, 3, stride)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = _conv_bn(out_channels, out_channels, 3)
        reshaping = stride != 1 or in_channels != out_channels
        self.shortcut = (
            nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride))
            if reshaping
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = norm_relu(self.bn1, self.relu1, self.conv1(x))
        return F.add_relu(self.bn2(self.conv2(out)), self.shortcut(x))


def _resnet(
    blocks_per_stage: tuple[int, ...], width: int, channels: int, classes: int
) -> Classifier:
    """Stem (3×3 conv, BN, ReLU), then stages of BasicBlocks doubling the width and halving the
    image after the first, global average pool, Linear."""
    stem_conv, stem_bn = _conv_bn(channels, width, 3)
    layers: list[tuple[str, nn.Module]] = [
        ("conv", stem_conv),
        ("bn", stem_bn),
        ("relu", nn.ReLU()),
    ]
    in_channels = width
    for stage, blocks in enumerate(blocks_per_stage):
        out_channels = width * 2**stage
        stride = 1 if stage == 0 else 2
        stage_blocks = []
        for index in range(blocks):
            stage_blocks.append(BasicBlock(in_channels, out_channels, stride if index == 0 else 1))
            in_channels = out_channels
        layers.append((f"layer{stage + 1}", nn.Sequential(*stage_blocks)))
    layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
    return Classifier(nn.Sequential(OrderedDict(layers)), nn.Linear(in_channels, classes))


def cifar_resnet(
    depth: int = 20, classes: int = 10, width: int = 16, channels: int = 3, image_size: int = 32
) -> Classifier:
    """ResNet-``depth`` for CIFAR (depth = 6n + 2: 8, 14, 20, 32, 44, 56, 110): three stages of n
    BasicBlocks at width, 2·width, 4·width channels."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"cifar_resnet: depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...), got {depth}"
        )
    blocks = (depth - 2) // 6
    return _resnet((blocks,) * 3, width, channels, classes)


def resnet18_cifar(
    classes: int = 10, width: int = 64, channels: int = 3, image_size: int = 32
) -> Classifier:
    """ResNet-18 (four stages of two BasicBlocks, width … 8·width channels) with a 3×3 stem and
    no max-pool, as usual for 32×32 images."""
    return _resnet((2, 2, 2, 2), width, channels, classes)


def cifar_cnn(
    classes: int = 10, width: int = 32, channels: int = 3, image_size: int = 32
) -> Classifier:
    """Three stages of [3×3 conv, BN, ReLU] × 2 and a 2×2 max-pool (width, 2·width, 4·width
    channels), then Flatten and one Linear."""
    if image_size < 8:
        raise ValueError(
            f"cifar_cnn: image_size {image_size} is too small: its three 2×2 "
            f"max-pools need at least 8"
        )
    layers: list[nn.Module] = []
    in_channels = channels
    for stage in range(3):
        out_channels = width * 2**stage
        for _ in range(2):
            layers += _conv_bn(in_channels, out_channels, 3) + [nn.ReLU()]
            in_channels = out_channels
        layers.append(nn.MaxPool2d(2))
    side = image_size // 8
    return Classifier(
        nn.Sequential(*layers),
        nn.Sequential(nn.Flatten(), nn.Linear(in_channels * side * side, classes)),
    )


def resnet8(**config) -> Classifier:
    return cifar_resnet(depth=8, **config)


register("resnet", cifar_resnet)
register("resnet8", resnet8)
register("resnet18", resnet18_cifar)
register("cifar_cnn", cifar_cnn)
