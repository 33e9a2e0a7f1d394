"""fastnet: a compact deep-learning framework whose hot paths are hand-written kernels."""
__version__ = "0.1.0"
