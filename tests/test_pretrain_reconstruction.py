"""Reconstruction pretraining (fastnet.pretrain_reconstruction): the masked autoencoder encodes
only the visible patches and scores only the hidden ones, its unshuffling against a loop written
out by hand; the denoising autoencoder's corruption; both losses fall on a tiny synthetic set,
their gradients reach the encoder, and the cuda device (the simulator here) gives the cpu's loss
for the same draws."""

import numpy as np
import pytest

import fastnet as fn
from fastnet import models, nn, optim
from fastnet.backend import cuda_is_available
from fastnet.models.vit import ViTFeatures
from fastnet.pretrain_reconstruction import DenoisingAutoencoder, MaskedAutoencoder
from numerics import relative_error

SIZE, PATCH = 12, 3  # 16 patches of 3×3: 4 visible at the default mask ratio


def blobs(rng, count, size=SIZE):
    """Smooth images (two Gaussian blobs each at random places), standardised: a set whose
    hidden pixels can be guessed from the visible ones."""
    y, x = np.mgrid[:size, :size]
    centres = rng.uniform(2, size - 2, (count, 2, 2))
    distance = (y - centres[..., 0, None, None]) ** 2 + (x - centres[..., 1, None, None]) ** 2
    images = np.exp(-distance / 6.0).sum(1)[:, None]
    return ((images - images.mean()) / images.std()).astype(np.float32)


def tiny_mae(**options):
    vit = models.ViT(image_size=SIZE, patch_size=PATCH, channels=1, dim=16, depth=1, heads=2)
    return MaskedAutoencoder(
        vit.features, SIZE, 1, PATCH, decoder_dim=16, decoder_heads=2, **options
    )


def tiny_trunk():
    """A one-stage CNN trunk whose output is a (8, 6, 6) map, as mnist_cnn's is a map."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


# ------------------------------------------------------------------ the masked autoencoder
def test_mae_shapes_and_masking(rng):
    mae = tiny_mae()
    images = fn.tensor(rng.standard_normal((5, 1, SIZE, SIZE)))
    assert (mae.patches, mae.visible) == (16, 4)
    masking = mae.draw_masking(5, rng)
    assert masking.order.shape == (5, 16)
    assert all(sorted(row) == list(range(16)) for row in masking.order.tolist())
    assert masking.hidden.sum(axis=1).tolist() == [12] * 5
    for row, hidden in zip(masking.order, masking.hidden, strict=True):
        assert not hidden[row[:4]].any() and hidden[row[4:]].all()
    assert mae.predict(images, masking).shape == (5, 16, PATCH * PATCH)
    assert mae.encoder is mae.get_submodule("encoder")
    masked, recon = mae.reconstruct(images, rng)
    assert masked.shape == recon.shape == images.shape
    assert relative_error(mae.unpatchify(mae.patchify(images)).numpy(), images.numpy()) == 0


def test_patchify_is_the_vit_patch_order(rng):
    mae = tiny_mae()
    images = rng.standard_normal((2, 1, SIZE, SIZE)).astype(np.float32)
    patches = mae.patchify(fn.tensor(images)).numpy()
    # patch 5 is row 1, column 1 of the 4×4 grid
    assert np.array_equal(patches[:, 5], images[:, 0, 3:6, 3:6].reshape(2, 9))


def test_mae_encodes_only_the_visible_patches(rng):
    mae = tiny_mae()
    seen = []
    encoder_blocks = mae.encoder.encoder
    original = encoder_blocks.forward
    encoder_blocks.forward = lambda tokens, *args, **kwargs: (
        seen.append(tokens.shape) or original(tokens, *args, **kwargs)
    )
    images = rng.standard_normal((3, 1, SIZE, SIZE)).astype(np.float32)
    masking = mae.draw_masking(3, rng)
    prediction = mae.predict(fn.tensor(images), masking).numpy()
    assert seen == [(3, 1 + 4, 16)]  # the class token and 4 of the 16 patches
    # new pixels in the hidden patches change nothing; in a visible one, the prediction
    changed = mae.patchify(fn.tensor(images)).numpy()
    changed[masking.hidden] = rng.standard_normal((36, PATCH * PATCH))
    again = mae.predict(mae.unpatchify(fn.tensor(changed)), masking).numpy()
    assert np.array_equal(again, prediction)
    changed[0, masking.order[0, 0]] += 1.0
    moved = mae.predict(mae.unpatchify(fn.tensor(changed)), masking).numpy()
    assert relative_error(moved, prediction) > 1e-3


def test_vit_encode_keep_all_is_the_full_encoding(rng):
    features = models.ViT(image_size=SIZE, patch_size=PATCH, dim=16, depth=1, heads=2).features
    assert isinstance(features, ViTFeatures)
    images = fn.tensor(rng.standard_normal((2, 1, SIZE, SIZE)))
    everything = features.encode(images).numpy()
    assert everything.shape == (2, 17, 16)
    assert np.array_equal(features(images).numpy(), everything[:, 0])
    in_order = fn.tensor(np.tile(np.arange(16), (2, 1)))
    assert relative_error(features.encode(images, in_order).numpy(), everything) <= 1e-6
    with pytest.raises(ValueError, match="keep of shape"):
        features.encode(images, fn.tensor(np.zeros((2, 17), np.int64)))
    with pytest.raises(TypeError, match="integer patch indices"):
        features.encode(images, fn.tensor(np.zeros((2, 3))))


def test_mae_unshuffles_each_token_to_its_own_patch(rng):
    """predict against the decoder input laid out by a loop: visible tokens at their patches,
    the mask token at every hidden one."""
    mae = tiny_mae()
    images = fn.tensor(rng.standard_normal((3, 1, SIZE, SIZE)))
    masking = mae.draw_masking(3, rng)
    keep = fn.tensor(masking.order[:, : mae.visible])
    tokens = mae.decoder_embedding(mae.encoder.encode(images, keep)).numpy()
    laid_out = np.empty((3, 17, 16), np.float32)
    laid_out[:, 0] = tokens[:, 0]
    for b in range(3):
        for position, patch in enumerate(masking.order[b]):
            visible = position < mae.visible
            laid_out[b, 1 + patch] = (
                tokens[b, 1 + position] if visible else mae.mask_token.numpy()[0, 0]
            )
    decoded = mae.decoder(mae.decoder_positions(fn.tensor(laid_out)))
    expected = mae.prediction(decoded[:, 1:]).numpy()
    assert relative_error(mae.predict(images, masking).numpy(), expected) <= 1e-6


@pytest.mark.parametrize("normalize_targets", [False, True])
def test_mae_loss_covers_only_the_hidden_patches(rng, normalize_targets):
    mae = tiny_mae(normalize_targets=normalize_targets)
    images = fn.tensor(rng.standard_normal((4, 1, SIZE, SIZE)))
    masking = mae.draw_masking(4, rng)
    prediction = mae.predict(images, masking).numpy()
    loss = mae.masked_loss(fn.tensor(prediction), images, masking).item()
    targets = mae.patchify(images).numpy().astype(np.float64)
    if normalize_targets:
        targets = (targets - targets.mean(-1, keepdims=True)) / np.sqrt(
            targets.var(-1, ddof=1, keepdims=True) + 1e-6
        )
    squared = (prediction - targets) ** 2
    assert relative_error(loss, squared[masking.hidden].mean()) <= 1e-5
    visible = np.argwhere(~masking.hidden)[0]
    hidden = np.argwhere(masking.hidden)[0]
    for (b, patch), expect_change in ((visible, False), (hidden, True)):
        edited = prediction.copy()
        edited[b, patch] += rng.standard_normal(PATCH * PATCH).astype(np.float32)
        new_loss = mae.masked_loss(fn.tensor(edited), images, masking).item()
        assert (new_loss != loss) == expect_change


def test_mae_reconstruction_keeps_the_visible_patches(rng):
    mae = tiny_mae()
    images = fn.tensor(rng.standard_normal((2, 1, SIZE, SIZE)))
    masked, recon = mae.reconstruct(images, np.random.default_rng(7))
    hidden = mae.draw_masking(2, np.random.default_rng(7)).hidden
    patches, masked_patches = mae.patchify(images).numpy(), mae.patchify(masked).numpy()
    recon_patches = mae.patchify(recon).numpy()
    assert np.array_equal(masked_patches[~hidden], patches[~hidden])
    assert not masked_patches[hidden].any()
    assert np.array_equal(recon_patches[~hidden], patches[~hidden])
    assert np.isfinite(recon_patches).all() and not np.allclose(recon_patches[hidden], 0)


def test_mae_refuses_a_mismatched_vit_or_mask_ratio():
    features = models.ViT(image_size=SIZE, patch_size=PATCH, dim=16, depth=1, heads=2).features
    with pytest.raises(ValueError, match="differ from the ViT"):
        MaskedAutoencoder(features, SIZE, 1, 4)
    with pytest.raises(ValueError, match="keep at least one"):
        MaskedAutoencoder(features, SIZE, 1, PATCH, mask_ratio=0.99)
    with pytest.raises(TypeError, match="ViTFeatures"):
        MaskedAutoencoder(tiny_trunk(), SIZE, 1, PATCH)


# ------------------------------------------------------------------ the denoising autoencoder
def test_dae_corruption_and_shapes(rng):
    dae = DenoisingAutoencoder(tiny_trunk(), SIZE, 1, noise=0.5, mask_ratio=0.5, block_size=5)
    corruption = dae.draw_corruption(6, rng)
    assert corruption.shape == (6, 2, SIZE, SIZE) and corruption.dtype == np.float32
    keep = corruption[:, 1]
    assert set(np.unique(keep)) <= {0.0, 1.0} and 0 < keep.mean() < 1
    # whole 5×5 blocks (cut at the image's edge) are dropped or kept together
    for r in (0, 5, 10):
        for c in (0, 5, 10):
            assert (np.ptp(keep[:, r : r + 5, c : c + 5], axis=(1, 2)) == 0).all()
    images = rng.standard_normal((6, 1, SIZE, SIZE)).astype(np.float32)
    corrupted = dae.corrupt(fn.tensor(images), corruption).numpy()
    expected = (images[:, 0] + 0.5 * corruption[:, 0]) * keep
    assert relative_error(corrupted[:, 0], expected) <= 1e-6
    assert dae(fn.tensor(corrupted)).shape == images.shape
    noisy, recon = dae.reconstruct(fn.tensor(images), rng)
    assert noisy.shape == recon.shape == images.shape


@pytest.mark.parametrize("name, size", [("cnn", 28), ("resnet8", 13)])
def test_dae_reaches_the_image_from_any_trunk(rng, name, size):
    """mnist_cnn's features end in a map, the ResNets' in a vector; odd sizes too."""
    model = models.create(name, channels=1, image_size=size)
    dae = DenoisingAutoencoder(model.features, size, 1, decoder_channels=4)
    images = fn.tensor(rng.standard_normal((2, 1, size, size)))
    assert dae(images).shape == (2, 1, size, size)
    assert dae.encoder is model.features


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("kind", ["mae", "dae"])
def test_loss_falls_and_gradients_reach_the_encoder(rng, kind):
    fn.manual_seed(0)
    autoencoder = (
        tiny_mae()
        if kind == "mae"
        else DenoisingAutoencoder(tiny_trunk(), SIZE, 1, decoder_channels=8)
    )
    data = blobs(rng, 96)
    held_out = fn.tensor(data[:16])

    def held_out_loss():
        return autoencoder.loss(held_out, np.random.default_rng(1)).item()

    before = held_out_loss()
    optimizer = optim.Adam(autoencoder.parameters(), lr=1e-2)
    for step in range(30):
        batch = fn.tensor(data[16 + rng.choice(80, 16, replace=False)])
        optimizer.zero_grad()
        autoencoder.loss(batch, rng).backward()
        if step == 0:
            encoder_gradients = [p.grad for p in autoencoder.encoder.parameters()]
            assert all(g is not None and np.abs(g.numpy()).max() > 0 for g in encoder_gradients)
        optimizer.step()
    assert held_out_loss() < 0.85 * before


needs_cuda = pytest.mark.skipif(
    not cuda_is_available(), reason="needs the cuda device (GPU or simulator)"
)


@needs_cuda
def test_dae_loss_on_cuda_is_the_cpu_loss(rng):
    """The whole loss (forward) of a tiny denoising autoencoder, for the same draws."""
    size = 6
    trunk = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    autoencoder = DenoisingAutoencoder(trunk, size, 1, decoder_channels=2)
    images = rng.standard_normal((2, 1, size, size)).astype(np.float32)
    losses = []
    for device in ("cpu", "cuda"):
        autoencoder.to(device)
        with fn.no_grad():
            loss = autoencoder.loss(fn.tensor(images, device=device), np.random.default_rng(3))
        assert loss.device == device
        losses.append(loss.item())
    assert relative_error(losses[1], losses[0]) <= 1e-5


@needs_cuda
@pytest.mark.parametrize("normalize_targets", [False, True])
def test_mae_device_steps_on_cuda_match_the_cpu(rng, normalize_targets):
    """The masked autoencoder's own steps on the device: unshuffling (forward and backward)
    and the masked loss. Its transformer blocks, whose cuda path tests/test_transformer.py
    covers, are left out: the simulator runs each of their ~20 matmul launches in Python."""
    mae = tiny_mae(normalize_targets=normalize_targets)
    masking = mae.draw_masking(3, np.random.default_rng(5))
    tokens = rng.standard_normal((3, 1 + mae.visible, 16)).astype(np.float32)
    upstream = rng.standard_normal((3, 1 + mae.patches, 16)).astype(np.float32)
    prediction = rng.standard_normal((3, mae.patches, PATCH * PATCH)).astype(np.float32)
    images = rng.standard_normal((3, 1, SIZE, SIZE)).astype(np.float32)
    results = []
    for device in ("cpu", "cuda"):
        mae.to(device)
        mae.zero_grad()
        inputs = fn.tensor(tokens, device=device, requires_grad=True)
        order = fn.tensor(masking.order, device=device)
        laid_out = mae.unshuffle(inputs, order)
        laid_out.backward(fn.tensor(upstream, device=device))
        predicted = fn.tensor(prediction, device=device, requires_grad=True)
        loss = mae.masked_loss(predicted, fn.tensor(images, device=device), masking)
        loss.backward()
        assert laid_out.device == loss.device == device
        results.append(
            [laid_out.numpy(), inputs.grad.numpy(), mae.mask_token.grad.numpy()]
            + [loss.numpy(), predicted.grad.numpy()]
        )
    for on_cpu, on_cuda in zip(*results, strict=True):
        assert relative_error(on_cuda, on_cpu) <= 1e-5
