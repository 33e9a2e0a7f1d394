"""ImageFolder and decode_image (issue 15): torchvision's layout, Pillow decoding to float32
(C, H, W) in [0, 1] like the other datasets, and batches through the DataLoader."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.data import (
    CIFAR10,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DataLoader,
    ImageFolder,
    Normalize,
    decode_image,
)

Image = pytest.importorskip("PIL.Image")


def _save(path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path) if mode else Image.fromarray(pixels).save(path)


@pytest.fixture
def cifar_folder(tmp_path, cifar_sample):
    """The 20 CIFAR-10 sample images in root/<class name>/<index>.png, as a user would keep them."""
    pngs, labels = cifar_sample
    for index, (pixels, label) in enumerate(zip(pngs, labels, strict=True)):
        _save(tmp_path / "cifar" / CIFAR10.class_names[label] / f"{index:02d}.png", pixels)
    return tmp_path / "cifar"


def test_the_layout_classes_samples_and_targets(cifar_folder, cifar_sample):
    pngs, labels = cifar_sample
    (cifar_folder / ".ipynb_checkpoints").mkdir()
    (cifar_folder / "cat" / "notes.txt").write_text("not an image")
    _save(cifar_folder / "cat" / "more" / "extra.PNG", pngs[0])  # nested, upper-case extension
    folder = ImageFolder(cifar_folder)
    present = sorted({CIFAR10.class_names[label] for label in labels})
    assert folder.classes == present
    assert folder.class_to_idx == {name: i for i, name in enumerate(present)}
    assert len(folder) == 21 and folder.targets == [index for _, index in folder.samples]
    assert folder.targets == sorted(folder.targets)
    cat = folder.class_to_idx["cat"]
    found = [path.relative_to(cifar_folder).as_posix() for path, i in folder.samples if i == cat]
    assert found == ["cat/00.png", "cat/08.png", "cat/more/extra.PNG"]


def test_items_match_the_cifar10_dataset_presentation(cifar_folder, cifar_sample):
    pngs, labels = cifar_sample
    folder = ImageFolder(cifar_folder)
    for position in (0, 7, -1):
        image, label = folder[position]
        path, _ = folder.samples[position]
        index = int(path.stem)
        assert image.dtype == np.float32 and image.shape == (3, 32, 32)
        np.testing.assert_array_equal(image, pngs[index].transpose(2, 0, 1) / np.float32(255))
        assert folder.classes[label] == CIFAR10.class_names[labels[index]]
    with pytest.raises(IndexError, match="index 20 out of range"):
        folder[20]


def test_batches_through_the_dataloader_with_the_cifar_normalisation(cifar_folder, cifar_sample):
    normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
    folder = ImageFolder(cifar_folder, transform=normalize)
    batches = list(DataLoader(folder, batch_size=8, shuffle=True, seed=0))
    assert [len(labels.numpy()) for _, labels in batches] == [8, 8, 4]
    images = np.concatenate([x.numpy() for x, _ in batches])
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert images.shape == (20, 3, 32, 32) and images.dtype == np.float32
    assert labels.dtype == np.int64
    expected = normalize(np.stack([ImageFolder(cifar_folder)[i][0] for i in range(20)]))
    order = [np.flatnonzero((expected == image).all(axis=(1, 2, 3)))[0] for image in images]
    assert sorted(order) == list(range(20))
    np.testing.assert_array_equal(labels, np.array(folder.targets)[order])


def test_grayscale_rgba_and_16_bit_files(tmp_path, rng):
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    _save(tmp_path / "gray.png", gray)
    image = decode_image(tmp_path / "gray.png")
    assert image.shape == (1, 5, 7) and image.dtype == np.float32
    np.testing.assert_array_equal(image[0], gray / np.float32(255))
    np.testing.assert_array_equal(
        decode_image(tmp_path / "gray.png", channels=3), np.repeat(image, 3, 0)
    )
    rgba = rng.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    _save(tmp_path / "rgba.png", rgba)
    np.testing.assert_array_equal(
        decode_image(tmp_path / "rgba.png"), rgba[..., :3].transpose(2, 0, 1) / np.float32(255)
    )
    luma = decode_image(tmp_path / "rgba.png", channels=1)
    weights = np.array([299, 587, 114]) / 1000  # ITU-R 601, as Pillow converts
    np.testing.assert_allclose(luma[0], rgba[..., :3] @ weights / 255, atol=1 / 255)
    deep = rng.integers(0, 65536, (3, 4), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_allclose(decode_image(tmp_path / "deep.png")[0], deep / 65535, rtol=1e-6)
    assert decode_image(tmp_path / "gray.png", size=(10, 3)).shape == (1, 10, 3)


def test_mixed_sizes_fail_at_collate_with_both_shapes(tmp_path, rng):
    _save(tmp_path / "a" / "small.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    _save(tmp_path / "b" / "large.png", rng.integers(0, 256, (6, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(1, 4, 4\), \(1, 6, 6\).*resize"):
        list(DataLoader(ImageFolder(tmp_path), batch_size=2))


def test_folder_errors(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="no folder at"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no class folders"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "root" / "cat").mkdir(parents=True)
    _save(tmp_path / "root" / "dog" / "1.png", rng.integers(0, 256, (3, 3), dtype=np.uint8))
    with pytest.raises(FileNotFoundError, match="cat holds no image"):
        ImageFolder(tmp_path / "root")
    with pytest.raises(ValueError, match="channels must be None, 1 or 3"):
        ImageFolder(tmp_path / "root", channels=2)
    (tmp_path / "root" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    folder = ImageFolder(tmp_path / "root")
    with pytest.raises(ValueError, match="broken.png: cannot decode as an image"):
        folder[0]
