"""Normalisation and pooling layers for CNNs: BatchNorm1d/2d, AvgPool2d, AdaptiveAvgPool2d."""
__all__: list[str] = []
