"""Fine-tuning: freezing, heads, parameter groups, layer-wise decay, LoRA merge parity, adapter
files."""

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet import finetune, models, optim


def train_steps(model, opt, rng, steps=15, classes=10, shape=(4, 1, 28, 28)):
    for _ in range(steps):
        x = fn.tensor(rng.standard_normal(shape))
        y = fn.tensor(rng.integers(0, classes, shape[0]))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_freeze_by_pattern_keeps_weights_bit_identical_with_no_state(rng):
    fn.manual_seed(0)
    model = models.mnist_cnn()
    names = finetune.freeze(model, "features.*")
    assert names == ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"]
    frozen = {n: p.numpy().copy() for n, p in model.named_parameters() if n.startswith("features.")}
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1)
    train_steps(model, opt, rng)
    for name, parameter in model.named_parameters():
        if name.startswith("features."):
            np.testing.assert_array_equal(parameter.numpy(), frozen[name])
            assert parameter.grad is None and id(parameter) not in opt.state
        else:
            assert id(parameter) in opt.state
    finetune.unfreeze(model, model.features)
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_rejects_unknown_patterns():
    with pytest.raises(ValueError, match="'backbone.\\*' matches no parameter"):
        finetune.freeze(models.mlp(), "backbone.*")


def test_replace_head_and_param_groups(rng):
    model = models.mnist_cnn()
    new = finetune.replace_head(model, num_classes=5)
    assert model.head[3] is new and new.out_features == 5 and new.in_features == 128
    groups = finetune.param_groups(model, {"features.*": 1e-4, "head.*": 1e-3})
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [
        ("features.*", 1e-4, 4),
        ("head.*", 1e-3, 4),
    ]
    opt = optim.AdamW(groups)
    train_steps(model, opt, rng, steps=2, classes=5)
    assert model(fn.tensor(rng.standard_normal((2, 1, 28, 28)))).shape == (2, 5)
    with pytest.raises(ValueError, match="match none of"):
        finetune.param_groups(model, {"head.*": 1e-3})


def test_layerwise_lr_decay_orders_blocks_from_the_output():
    groups = finetune.layerwise_lr_decay(models.mnist_cnn(), base_lr=1.0, decay=0.5)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("features.0", 0.125),
        ("features.3", 0.25),
        ("head.1", 0.5),
        ("head.3", 1.0),
    ]


def test_summary_counts_trainable_and_frozen():
    model = models.mlp()
    finetune.freeze(model, "features.*")
    text = finetune.summary(model)
    assert "2,570" in text and f"{784 * 512 + 512 + 512 * 256 + 256:,}" in text


def test_lora_starts_equal_trains_only_adapters_and_merges_exactly(rng):
    fn.manual_seed(1)
    model = models.mlp(in_features=20, hidden=(16,), classes=3)
    x = fn.tensor(rng.standard_normal((6, 20)))
    before = model(x).numpy().copy()
    base = {n: p.numpy().copy() for n, p in model.named_parameters()}
    wrapped = finetune.add_lora(model, targets=["Linear"], rank=4, alpha=8)
    assert wrapped == ["features.1", "head"]
    np.testing.assert_array_equal(model(x).numpy(), before)  # B starts at zero
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["features.1.lora_A", "features.1.lora_B", "head.lora_A", "head.lora_B"]
    opt = optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    train_steps(model, opt, rng, steps=5, classes=3, shape=(6, 20))
    for name, value in base.items():  # the base weights did not move
        np.testing.assert_array_equal(dict(model.named_parameters())[name].numpy(), value)
    adapted = model(x).numpy().copy()
    assert not np.allclose(adapted, before)
    finetune.merge_lora(model)
    merged = model(x).numpy()
    assert np.abs(merged - adapted).max() <= 1e-5 * np.abs(adapted).max()
    finetune.unmerge_lora(model)
    assert np.abs(model(x).numpy() - adapted).max() <= 1e-5 * np.abs(adapted).max()


def test_adapter_only_checkpoint_is_small_and_loads(tmp_path, rng):
    fn.manual_seed(2)
    model = models.mlp()
    finetune.add_lora(model, rank=4, alpha=8)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data + np.float32(0.01)
    path = finetune.save_lora(model, tmp_path / "adapter.safetensors")
    full = fn.save(model.state_dict(), tmp_path / "full.safetensors")
    assert path.stat().st_size < full.stat().st_size / 20
    clone = models.mlp()
    clone.load_state_dict(model.state_dict(), strict=False)  # base weights by the shared names
    finetune.add_lora(clone, rank=4, alpha=8)
    report = clone.load_state_dict(fn.load(path), strict=False)
    assert report.unexpected_keys == [] and report.mismatched_keys == []
    x = fn.tensor(rng.standard_normal((3, 1, 28, 28)))
    np.testing.assert_array_equal(clone(x).numpy(), model(x).numpy())


def test_lora_on_attention_projections_merges_exactly(rng):
    from fastnet import nn

    fn.manual_seed(3)
    layer = nn.TransformerEncoderLayer(
        d_model=16, nhead=2, dim_feedforward=24, dropout=0.0, batch_first=True
    )
    x = fn.tensor(rng.standard_normal((2, 5, 16)))
    before = layer(x).numpy().copy()
    names = [n for n, _ in layer.named_parameters()]
    wrapped = finetune.add_lora(
        layer, targets=["MultiheadAttention", "*.out_proj"], rank=2, alpha=4
    )
    assert wrapped == ["self_attn", "self_attn.out_proj"]
    assert [
        n for n, _ in layer.named_parameters() if "lora_" not in n
    ] == names  # PyTorch names kept
    np.testing.assert_array_equal(layer(x).numpy(), before)
    trainable = sorted(n for n, p in layer.named_parameters() if p.requires_grad)
    assert trainable == [
        "self_attn.lora_A",
        "self_attn.lora_B",
        "self_attn.out_proj.lora_A",
        "self_attn.out_proj.lora_B",
    ]
    opt = optim.Adam([p for p in layer.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(3):
        opt.zero_grad()
        (layer(x) ** 2).mean().backward()
        opt.step()
    adapted = layer(x).numpy().copy()
    assert not np.allclose(adapted, before)
    finetune.merge_lora(layer)
    assert np.abs(layer(x).numpy() - adapted).max() <= 1e-5 * np.abs(adapted).max()
    finetune.unmerge_lora(layer)
    assert np.abs(layer(x).numpy() - adapted).max() <= 1e-5 * np.abs(adapted).max()


def test_save_finetuned_writes_a_plain_model_and_the_lora_adapter(tmp_path, rng):
    fn.manual_seed(4)
    model = models.mlp(in_features=20, hidden=(16,), classes=3)
    groups = finetune.prepare(model, "lora", num_classes=5, lr=1e-2)
    train_steps(model, optim.Adam(groups), rng, steps=4, classes=5, shape=(6, 20))
    x = fn.tensor(rng.standard_normal((4, 20)))
    adapted = model(x).numpy().copy()
    paths = finetune.save_finetuned(model, tmp_path / "lora")
    assert [p.name for p in paths] == ["model.safetensors", "adapter.safetensors"]
    np.testing.assert_array_equal(model(x).numpy(), adapted)  # saving left the adapters apart
    plain = models.mlp(in_features=20, hidden=(16,), classes=5)
    plain.load_state_dict(fn.load(paths[0]))  # strict: no adapter keys, merged weights
    assert np.abs(plain(x).numpy() - adapted).max() <= 1e-5 * np.abs(adapted).max()
    adapter = fn.load(paths[1])
    assert sorted(adapter) == [
        "features.1.lora_A",
        "features.1.lora_B",
        "head.bias",
        "head.weight",
    ]  # the adapters and the new head: what the base model lacks
    rebuilt = models.mlp(in_features=20, hidden=(16,), classes=5)
    rebuilt.load_state_dict(model.state_dict(), strict=False)
    finetune.add_lora(rebuilt, targets=["features.1"], rank=4, alpha=8)
    rebuilt.load_state_dict(adapter, strict=False)
    np.testing.assert_array_equal(rebuilt(x).numpy(), adapted)
