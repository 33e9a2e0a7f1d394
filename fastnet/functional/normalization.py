"""Normalisation and average-pooling ops (batch norm, avg_pool2d, adaptive_avg_pool2d)."""
__all__: list[str] = []
