"""Ready models. Each is a :class:`Classifier` with a ``features`` trunk and a ``head``, so
fine-tuning can address them by name (``features.*``, ``head.*``), and has a registry entry so
checkpoints can rebuild it from its saved config (:func:`create`).

* ``base``: Classifier and the registry (register, names, create).
* ``mnist``: mlp, mnist_cnn.
* ``resnet``: cifar_resnet, resnet18_cifar, cifar_cnn.
* ``vit``: ViT.
* ``students``: small_cnn, dw_cnn (distillation students).

Importing this package imports every model module, and each registers its builders.
"""

from .base import Classifier, create, names, register
from .mnist import mlp, mnist_cnn
from .resnet import cifar_cnn, cifar_resnet, resnet18_cifar
from .students import dw_cnn, small_cnn
from .vit import ViT

__all__ = [
    "Classifier",
    "mlp",
    "mnist_cnn",
    "cifar_cnn",
    "cifar_resnet",
    "resnet18_cifar",
    "ViT",
    "small_cnn",
    "dw_cnn",
    "create",
    "register",
    "names",
]
