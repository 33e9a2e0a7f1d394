"""The CIFAR ResNets and the plain CIFAR CNN: structure, shapes on CIFAR and MNIST inputs, the
residual connection, learning on the CPU, and one training step on the cuda device equal to the
same step on the CPU."""

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet import models, nn
from fastnet.backend import cuda_is_available
from fastnet.models.resnet import BasicBlock, cifar_cnn, cifar_resnet, resnet18_cifar


def blocks_of(model):
    return [module for module in model.modules() if isinstance(module, BasicBlock)]


@pytest.mark.parametrize(
    "name,config,channels,side",
    [
        ("resnet", {}, 3, 32),
        ("resnet8", {"width": 4}, 3, 32),
        ("resnet8", {"width": 4}, 1, 28),
        ("resnet18", {"width": 2}, 3, 32),
        ("resnet18", {"width": 2}, 1, 28),
        ("cifar_cnn", {"width": 4}, 3, 32),
        ("cifar_cnn", {"width": 4}, 1, 28),
    ],
)
def test_models_map_images_to_class_scores(name, config, channels, side, rng):
    model = models.create(name, channels=channels, image_size=side, classes=7, **config)
    assert isinstance(model, models.Classifier)
    x = fn.tensor(rng.standard_normal((2, channels, side, side)).astype(np.float32))
    assert model(x).shape == (2, 7)
    assert model.eval()(x[:1]).shape == (1, 7)  # eval mode: BatchNorm needs no batch


def test_registry_defaults():
    assert {"resnet", "resnet8", "resnet18", "cifar_cnn"} <= set(models.names())
    resnet20 = models.create("resnet")
    # ResNet-20: stem + 3 stages of 3 blocks x 2 convs + Linear = 20 layers, 0.27 M parameters
    assert len(blocks_of(resnet20)) == 9 and resnet20.head.in_features == 64
    assert 0.26e6 < resnet20.num_parameters() < 0.28e6
    assert len(blocks_of(models.create("resnet8"))) == 3
    resnet18 = models.create("resnet18")
    assert len(blocks_of(resnet18)) == 8 and resnet18.head.in_features == 512
    assert resnet18.features.conv.kernel_size == (3, 3) and not any(
        isinstance(m, nn.MaxPool2d) for m in resnet18.modules()
    )


def test_only_shape_changing_blocks_have_projection_shortcuts():
    model = cifar_resnet(depth=14, width=4)
    projections = [
        name
        for name, module in model.named_modules()
        if isinstance(module, BasicBlock) and not isinstance(module.shortcut, nn.Identity)
    ]
    assert projections == ["features.layer2.0", "features.layer3.0"]
    shortcut = model.features.layer2[0].shortcut
    assert (
        shortcut[0].kernel_size == (1, 1)
        and shortcut[0].stride == (2, 2)
        and isinstance(shortcut[1], nn.BatchNorm2d)
    )
    assert all(conv.bias is None for conv in model.modules() if isinstance(conv, nn.Conv2d))


def test_basic_block_adds_its_input(rng):
    """With both convolutions zero, each BatchNorm outputs its bias (0), so the block is relu(x)."""
    block = BasicBlock(3, 3)
    for conv in (block.conv1, block.conv2):
        conv.weight.data[...] = 0
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(block(fn.tensor(x)).numpy(), np.maximum(x, 0))
    assert BasicBlock(3, 6, stride=2)(fn.tensor(x)).shape == (2, 6, 3, 3)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 2 .* got 21"):
        cifar_resnet(depth=21)
    with pytest.raises(ValueError, match="image_size 6 is too small"):
        cifar_cnn(image_size=6)


def test_state_dict_round_trip_through_a_file(tmp_path, rng):
    model = resnet18_cifar(width=2, classes=4)
    model(
        fn.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    )  # move the running statistics
    fn.save(model.state_dict(), tmp_path / "resnet.safetensors")
    copy = resnet18_cifar(width=2, classes=4)
    copy.load_state_dict(fn.load(tmp_path / "resnet.safetensors"))
    x = fn.tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    np.testing.assert_array_equal(copy.eval()(x).numpy(), model.eval()(x).numpy())
    assert copy.state_dict()["features.bn.num_batches_tracked"] == 1


def blob_images(rng, n, side, classes=4):
    """3-channel images whose class is the quadrant holding a bright blob."""
    labels = rng.integers(0, classes, n)
    images = rng.normal(0.0, 0.5, (n, 3, side, side))
    half = side // 2
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        images[i, :, half * r : half * (r + 1), half * c : half * (c + 1)] += 1.5
    return images.astype(np.float32), labels


def test_resnet_learns_on_the_cpu(rng):
    fn.manual_seed(0)
    model = cifar_resnet(depth=8, width=4, classes=4)
    optimizer = fn.optim.Adam(model.parameters(), lr=1e-2)
    images, labels = blob_images(rng, 16, side=12)
    x, y = fn.tensor(images), fn.tensor(labels)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.skipif(not cuda_is_available(), reason="needs the cuda device (GPU or simulator)")
def test_resnet_training_step_on_cuda_matches_cpu(rng):
    """ResNet-8 at width 2 on 5x5 images (the smallest shapes that keep several values per
    channel in every BatchNorm): one SGD step runs every kernel the model uses (im2col, matmul,
    col2im, batch norm, softmax cross-entropy, SGD) in the simulator."""
    fn.manual_seed(0)
    cpu = cifar_resnet(depth=8, width=2, classes=3)
    cuda = cifar_resnet(depth=8, width=2, classes=3)
    cuda.load_state_dict(cpu.state_dict())
    cuda.to("cuda")
    images, labels = rng.standard_normal((2, 3, 5, 5)).astype(np.float32), np.array([0, 2])
    results = {}
    for device, model in (("cpu", cpu), ("cuda", cuda)):
        optimizer = fn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loss = F.cross_entropy(
            model(fn.tensor(images, device=device)), fn.tensor(labels, device=device)
        )
        loss.backward()
        grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
        optimizer.step()
        results[device] = (loss.item(), grads, model.state_dict())
    (cpu_loss, cpu_grads, cpu_state), (cuda_loss, cuda_grads, cuda_state) = (
        results["cpu"],
        results["cuda"],
    )
    assert abs(cuda_loss - cpu_loss) <= 1e-5 * abs(cpu_loss)
    for (
        name
    ) in cpu_grads:  # float32 sums in a different order: relative to each tensor's largest value
        scale = np.abs(cpu_grads[name]).max()
        assert np.abs(cuda_grads[name] - cpu_grads[name]).max() <= 1e-4 * scale, name
    for name in cpu_state:
        np.testing.assert_allclose(
            cuda_state[name], cpu_state[name], rtol=1e-5, atol=1e-6, err_msg=name
        )
