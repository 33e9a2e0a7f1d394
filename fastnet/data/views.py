"""Random views of a batch of images, for contrastive pretraining (SimCLR): each call gives one
random view of every image, on the images' own device.

    augment = ViewAugment.for_dataset("mnist")
    rng = np.random.default_rng(0)
    for images, _ in loader:                     # normalised float32 (B, C, H, W), cpu or cuda
        view1, view2 = augment.two_views(images, rng)

A view is, in this order:

1. A geometric warp, one affine matrix per image sampled bilinearly by the ``affine_warp``
   kernel (``fastnet.kernels.warp``; zero outside the image), folding together:
   a random resized crop (area fraction uniform in ``crop_scale``, aspect ratio log-uniform in
   (3/4, 4/3), moved toward 1 just enough for the crop to fit the image where it would not:
   torchvision draws again instead; position uniform), resized to the image's size;
   a rotation about the centre uniform in +-``rotation`` degrees; a horizontal shear uniform in
   +-``shear`` degrees; a translation uniform in +-``translate`` of each side; and, with
   ``flip``, a left-right mirror with probability 1/2.
2. Colour jitter (``color_jitter`` = j > 0, 3-channel images only), as torchvision's
   ``ColorJitter(j, j, j)`` in a fixed order on the pixels in [0, 1]: brightness (scale), contrast
   (blend with the image's mean grey), saturation (blend with each pixel's grey), each factor
   uniform in [1 - j, 1 + j] per image and each result clipped to [0, 1]. The images are
   normalised, so the jitter undoes ``Normalize(mean, std)`` first and redoes it after:
   ``for_dataset`` passes the dataset's constants; without them the images are taken as pixels.
3. Additive Gaussian noise of standard deviation ``noise``.
4. Random erasing: with probability ``erase``, one rectangle per image (area 2-33% of the image,
   aspect ratio log-uniform in (0.3, 3.3), clipped to the image; torchvision's
   ``RandomErasing`` defaults) set to 0.

Fill values and the noise are in the space of the images given, the loaders' normalised one:
0 there is the dataset's mean pixel, as after torchvision's ``Normalize`` then
``RandomErasing(value=0)``, and a noise of 0.05 is 0.05 of a channel's standard deviation.

Randomness. Every choice is drawn on the host from the ``numpy.random.Generator`` given, in one
vectorised draw per call (then the noise, when there is some), so a seeded generator gives the
same views on every device: the cuda device gets all of a call's draws in one upload (the
matrices, the erasing boxes, the jitter factors, the noise) and runs one warp launch, then array
operations. The warp's coordinates may round differently on a GPU (fused multiply-adds), by about
1e-7 of a pixel; on the CPU and in the simulator the views agree to the bit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._random import default_generator
from .transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    MNIST_MEAN,
    MNIST_STD,
)

ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)  # of the random resized crop (torchvision's default)
ERASE_AREA_RANGE = (0.02, 0.33)  # of the erased rectangle (torchvision's RandomErasing)
ERASE_ASPECT_RANGE = (0.3, 3.3)
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale

# The uniform draws of one image, one column each (see ViewAugment.draw)
_CROP_AREA, _CROP_ASPECT, _CROP_X, _CROP_Y, _ANGLE, _SHEAR, _SHIFT_X, _SHIFT_Y, _FLIP = range(9)
_ERASE, _ERASE_AREA, _ERASE_ASPECT, _ERASE_X, _ERASE_Y = range(9, 14)
_JITTER = slice(14, 17)  # brightness, contrast, saturation
UNIFORMS_PER_IMAGE = 17

# digits and clothes are not mirror-symmetric, and grey: no flip, no colour jitter
_GREY_VIEWS: dict[str, Any] = dict(
    crop_scale=(0.35, 1.0), rotation=15.0, translate=0.1, noise=0.05, erase=0.25
)
PRESETS: dict[str, dict[str, Any]] = {
    "mnist": dict(_GREY_VIEWS, mean=MNIST_MEAN, std=MNIST_STD),
    "fashion-mnist": dict(_GREY_VIEWS, mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD),
    # SimCLR's CIFAR-10 recipe: crops, flips, strong colour jitter, no rotation
    "cifar10": dict(
        crop_scale=(0.2, 1.0),
        rotation=0.0,
        translate=0.0,
        flip=True,
        color_jitter=0.4,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    ),
}
PRESET_SHAPES = {"mnist": (28, 1), "fashion-mnist": (28, 1), "cifar10": (32, 3)}


@dataclasses.dataclass(frozen=True)
class ViewDraws:
    """The random choices of one call, on the host, for a batch of B images of C x H x W:
    ``matrices`` (B, 2, 3) float32 (output pixel centre -> input coordinates, the
    ``affine_warp`` convention), ``erase_boxes`` (B, 4) float32 rows (top, bottom, left, right)
    of the rectangle set to 0, rows and columns in [top, bottom) x [left, right), empty where an
    image is not erased; ``jitter`` (B, 3) float32 brightness, contrast and saturation factors
    (1 without jitter); ``noise`` (B, C, H, W) float32 standard normal, or None without noise."""

    matrices: np.ndarray
    erase_boxes: np.ndarray
    jitter: np.ndarray
    noise: np.ndarray | None


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"ViewAugment: {name} must be a (low, high) pair, got {value!r}") from None
    return low, high


def _channel_constants(
    value: Sequence[float] | None, default: float, channels: int, name: str
) -> tuple[float, ...]:
    if value is None:
        return (default,) * channels
    constants = tuple(float(v) for v in value)
    if len(constants) != channels:
        raise ValueError(f"ViewAugment: {name} has {len(constants)} values for {channels} channels")
    return constants


def _log_uniform(uniform: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.exp(math.log(low) + (math.log(high) - math.log(low)) * uniform)


def _homogeneous(linear: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(B, 3, 3) matrices [[linear, offset], [0, 0, 1]] from (B, 2, 2) and (B, 2)."""
    matrices = np.zeros((len(linear), 3, 3))
    matrices[:, :2, :2], matrices[:, :2, 2], matrices[:, 2, 2] = linear, offset, 1.0
    return matrices


class ViewAugment:
    """One random view of each image of a batch per call (see the module docstring).

    ``image_size`` (an int or (H, W)) and ``channels`` are those of the images it takes;
    ``mean`` and ``std`` are the normalisation the images went through (used by the colour
    jitter only; None: the images are pixels in [0, 1])."""

    def __init__(
        self,
        image_size: int | Sequence[int],
        channels: int,
        *,
        crop_scale: Sequence[float] = (0.35, 1.0),
        rotation: float = 15.0,
        translate: float = 0.1,
        shear: float = 0.0,
        flip: bool = False,
        noise: float = 0.0,
        erase: float = 0.0,
        color_jitter: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
            raise ValueError(
                f"ViewAugment: image_size must be a positive int or (H, W), got {image_size!r}"
            )
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"ViewAugment: channels must be a positive int, got {channels!r}")
        self.image_size, self.channels = size, channels
        self.crop_scale = _pair(crop_scale, "crop_scale")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(
                f"ViewAugment: crop_scale must satisfy 0 < low <= high <= 1 (fractions of the "
                f"image's area), got {self.crop_scale}"
            )
        for name, value, high in (
            ("rotation", rotation, 180.0),
            ("shear", shear, 60.0),
            ("translate", translate, 1.0),
            ("erase", erase, 1.0),
            ("color_jitter", color_jitter, 1.0),
        ):
            if not 0 <= value <= high:
                raise ValueError(f"ViewAugment: {name} must be in [0, {high:g}], got {value!r}")
        if not (noise >= 0 and math.isfinite(noise)):
            raise ValueError(f"ViewAugment: noise must be a finite std >= 0, got {noise!r}")
        if color_jitter and channels != 3:
            raise ValueError(
                f"ViewAugment: color_jitter needs 3-channel (RGB) images, got channels={channels}"
            )
        self.rotation, self.shear, self.translate = float(rotation), float(shear), float(translate)
        self.flip, self.noise, self.erase = bool(flip), float(noise), float(erase)
        self.color_jitter = float(color_jitter)
        self.mean = _channel_constants(mean, 0.0, channels, "mean")
        self.std = _channel_constants(std, 1.0, channels, "std")
        if min(self.std) <= 0:
            raise ValueError(f"ViewAugment: std must be positive, got {self.std}")

    @classmethod
    def for_dataset(cls, name: str, **overrides: Any) -> ViewAugment:
        """The views for a published dataset ("mnist", "fashion-mnist", "cifar10"), normalised
        as the loaders normalise it; ``overrides`` replace any of the preset's settings."""
        if name not in PRESETS:
            raise ValueError(
                f"ViewAugment has no preset for {name!r}: choose one of {', '.join(PRESETS)}"
            )
        size, channels = PRESET_SHAPES[name]
        return cls(size, channels, **{**PRESETS[name], **overrides})

    # ------------------------------------------------------------------ the draws, on the host
    def draw(self, batch: int, rng: np.random.Generator) -> ViewDraws:
        """The random choices for ``batch`` images: one (batch, 17) uniform draw (column by
        column: the crop's area, aspect, x, y; the angle, the shear, the shifts in x and y, the
        flip; erasing or not, its area, aspect, x, y; three jitter factors), then the noise when
        ``noise`` > 0."""
        uniform = rng.random((batch, UNIFORMS_PER_IMAGE))
        height, width = self.image_size
        noise = None
        if self.noise:
            noise = rng.standard_normal((batch, self.channels, height, width), dtype=np.float32)
        jitter = 1 + self.color_jitter * (2 * uniform[:, _JITTER] - 1)
        return ViewDraws(
            self._matrices(uniform).astype(np.float32),
            self._erase_boxes(uniform).astype(np.float32),
            jitter.astype(np.float32),
            noise,
        )

    def _matrices(self, uniform: np.ndarray) -> np.ndarray:
        """(B, 2, 3) float64: output pixel -> flip -> rotation, shear and shift about the centre
        -> the crop's pixel in the input (pixel centres at integer coordinates)."""
        batch = len(uniform)
        height, width = self.image_size
        low, high = self.crop_scale
        area = height * width * (low + (high - low) * uniform[:, _CROP_AREA])
        aspect = _log_uniform(uniform[:, _CROP_ASPECT], *ASPECT_RATIO_RANGE)
        # width / height as near the aspect as fits: crop_width in [area / H, W] keeps both sides in
        crop_width = np.clip(np.sqrt(area * aspect), area / height, width)
        crop_height = area / crop_width
        left = uniform[:, _CROP_X] * (width - crop_width)
        top = uniform[:, _CROP_Y] * (height - crop_height)
        # the crop's edges [left, left + w) span the output's W columns: centre x -> left + (x +
        # 0.5) w / W - 0.5
        crop_x, crop_y = crop_width / width, crop_height / height
        crop = _homogeneous(
            np.einsum("b,ij->bij", crop_x, [[1.0, 0.0], [0.0, 0.0]])
            + np.einsum("b,ij->bij", crop_y, [[0.0, 0.0], [0.0, 1.0]]),
            np.stack([left + 0.5 * crop_x - 0.5, top + 0.5 * crop_y - 0.5], axis=1),
        )
        angle = np.deg2rad(self.rotation * (2 * uniform[:, _ANGLE] - 1))
        shear = np.tan(np.deg2rad(self.shear * (2 * uniform[:, _SHEAR] - 1)))
        cos, sin = np.cos(angle), np.sin(angle)
        # rotation @ shear along x: [[cos, -sin], [sin, cos]] @ [[1, shear], [0, 1]]
        linear = np.stack(
            [np.stack([cos, cos * shear - sin], -1), np.stack([sin, sin * shear + cos], -1)], 1
        )
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        shift = self.translate * (2 * uniform[:, [_SHIFT_X, _SHIFT_Y]] - 1) * [width, height]
        affine = _homogeneous(linear, centre - linear @ centre + shift)
        mirrored = self.flip & (uniform[:, _FLIP] < 0.5)
        sign = np.where(mirrored, -1.0, 1.0)
        flip = _homogeneous(
            np.einsum("b,ij->bij", sign, [[1.0, 0.0], [0.0, 0.0]]) + [[0.0, 0.0], [0.0, 1.0]],
            np.stack([np.where(mirrored, width - 1.0, 0.0), np.zeros(batch)], axis=1),
        )
        return (crop @ affine @ flip)[:, :2]

    def _erase_boxes(self, uniform: np.ndarray) -> np.ndarray:
        """(B, 4) float64 rows (top, bottom, left, right), integers; empty where not erased."""
        height, width = self.image_size
        low, high = ERASE_AREA_RANGE
        area = height * width * (low + (high - low) * uniform[:, _ERASE_AREA])
        aspect = _log_uniform(uniform[:, _ERASE_ASPECT], *ERASE_ASPECT_RANGE)
        box_height = np.clip(np.rint(np.sqrt(area * aspect)), 1, height)
        box_width = np.clip(np.rint(np.sqrt(area / aspect)), 1, width)
        top = np.floor(uniform[:, _ERASE_Y] * (height - box_height + 1))
        left = np.floor(uniform[:, _ERASE_X] * (width - box_width + 1))
        erased = uniform[:, _ERASE] < self.erase
        boxes = np.stack([top, top + box_height, left, left + box_width], axis=1)
        return np.where(erased[:, None], boxes, 0.0)

    # ------------------------------------------------------------------ the views, on the device
    def _check_images(self, images: Any) -> None:
        from fastnet.tensor import Tensor  # here: the data layer imports without the tensor

        if not isinstance(images, Tensor):
            raise TypeError(f"ViewAugment expects a Tensor of images, got {type(images).__name__}")
        expected = (self.channels, *self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected or images.dtype != np.float32:
            raise ValueError(
                f"ViewAugment for {'x'.join(map(str, expected))} images expects a float32 Tensor "
                f"(B, {', '.join(map(str, expected))}), got {images.dtype} {tuple(images.shape)}"
            )

    def __call__(self, images: Any, rng: np.random.Generator | None = None) -> Any:
        """A new float32 Tensor of ``images``' shape and device: one random view of each image,
        drawn from ``rng`` (default: the framework's generator, seeded by
        ``fastnet.manual_seed``)."""
        from fastnet.tensor import Tensor

        self._check_images(images)
        draws = self.draw(len(images), rng if rng is not None else default_generator())
        device, xp = images.device, images.device.xp
        batch, height, width = len(images), *self.image_size
        # one upload: matrices, erasing boxes, jitter factors, mean, std, noise
        host = [draws.matrices, draws.erase_boxes, draws.jitter]
        host += [np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)]
        host += [draws.noise] if draws.noise is not None else []
        packed = device.upload(np.concatenate([part.reshape(-1) for part in host]))
        sizes = [part.size for part in host]
        parts = xp.split(packed, np.cumsum(sizes)[:-1].tolist())
        matrices, boxes, jitter = parts[0].reshape(batch, 2, 3), parts[1], parts[2]
        out = device.affine_warp(images.data, matrices, (height, width))
        if self.color_jitter:
            mean, std = (part.reshape(1, -1, 1, 1) for part in parts[3:5])
            out = _color_jitter(out, jitter.reshape(batch, 3), mean, std, xp)
        if draws.noise is not None:
            out += self.noise * parts[5].reshape(out.shape)
        if self.erase:
            out *= _kept(boxes.reshape(batch, 4), height, width, xp)
        return Tensor._wrap(out, device)

    def two_views(self, images: Any, rng: np.random.Generator | None = None) -> tuple[Any, Any]:
        """Two independent random views of every image: ``(self(images, rng), self(images,
        rng))``."""
        return self(images, rng), self(images, rng)

    def __repr__(self) -> str:
        settings = ", ".join(
            f"{field}={getattr(self, field)!r}"
            for field in (
                "crop_scale",
                "rotation",
                "translate",
                "shear",
                "flip",
                "noise",
                "erase",
                "color_jitter",
            )
        )
        return f"ViewAugment({self.image_size}, {self.channels}, {settings})"


def _color_jitter(out: Any, factors: Any, mean: Any, std: Any, xp: Any) -> Any:
    """Brightness, contrast and saturation (``factors`` (B, 3)) on the pixels of the normalised
    RGB batch ``out`` (B, 3, H, W), each clipped to [0, 1]; normalised again."""
    brightness, contrast, saturation = (factors[:, i].reshape(-1, 1, 1, 1) for i in range(3))
    pixels = xp.clip((out * std + mean) * brightness, 0.0, 1.0)
    grey_mean = _grey(pixels).mean(axis=(1, 2, 3), keepdims=True)
    pixels = xp.clip(contrast * pixels + (1 - contrast) * grey_mean, 0.0, 1.0)
    pixels = xp.clip(saturation * pixels + (1 - saturation) * _grey(pixels), 0.0, 1.0)
    return (pixels - mean) / std


def _grey(pixels: Any) -> Any:
    """(B, 1, H, W): the luma of RGB pixels (B, 3, H, W)."""
    red, green, blue = GREY_WEIGHTS
    return red * pixels[:, 0:1] + green * pixels[:, 1:2] + blue * pixels[:, 2:3]


def _kept(boxes: Any, height: int, width: int, xp: Any) -> Any:
    """(B, 1, H, W) bool: False inside each image's erasing box (rows (top, bottom, left,
    right))."""
    rows = xp.arange(height, dtype=np.float32).reshape(1, 1, -1, 1)
    columns = xp.arange(width, dtype=np.float32).reshape(1, 1, 1, -1)
    top, bottom, left, right = (boxes[:, i].reshape(-1, 1, 1, 1) for i in range(4))
    inside = (rows >= top) & (rows < bottom) & (columns >= left) & (columns < right)
    return ~inside
