"""How to install an optional extra. fastnet is installed from its checkout, not from PyPI (a
different project owns the name there), so every hint names the checkout's own command."""

from __future__ import annotations

__all__ = ["install_hint"]


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` (plot, image, tensorboard, tsne, bench, mpi, onnx,
    cuda, dev)."""
    return f'bash scripts/setup.sh {extra} (or pip install -e ".[{extra}]") in the fastnet checkout'
