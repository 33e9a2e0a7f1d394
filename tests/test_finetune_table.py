"""Fine-tuning over label budgets from a pretrained encoder (issue 17): the modes and budgets
options, the encoder file, the same subset for every mode, LoRA on convolutions, and the table
(printed, JSON, text) of a tiny end-to-end run.

The datasets are tiny synthetic stand-ins (``fastnet.train.build_datasets`` is patched)."""

import json

import numpy as np
import pytest

import fastnet as fn
from fastnet import data, finetune, finetune_table, models, nn, optim
from fastnet import train as train_module
from fastnet.backend import cuda_is_available
from fastnet.cli import main
from numerics import relative_error

CLASSES, SIDE = 4, 8
CNN = {"channels": 1, "image_size": SIDE, "classes": 10}  # as model_kwargs builds it


def tiny_sets(*_args, **_kwargs):
    """8x8 images whose class (0-3) is the quadrant holding a bright blob: 240 train (60 per
    class, 57 for class 3), 80 test."""
    rng = np.random.default_rng(11)
    labels = np.arange(323) % CLASSES
    images = rng.uniform(0, 60, (len(labels), 1, SIDE, SIDE))
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        images[i, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 180
    images = images.astype(np.uint8)
    keep = np.ones(len(labels), bool)
    keep[np.flatnonzero(labels[:240] == 3)[:3]] = False  # class 3: 57 training images
    train = data.ArrayDataset(images[:240][keep[:240]], labels[:240][keep[:240]])
    return train, data.ArrayDataset(images[240:320], labels[240:320])


def encoder_file(path, seed=5, drop=None, **kwargs):
    """An encoder checkpoint as `fastnet pretrain` writes it: a Module whose only child is the
    classifier's features; ``drop`` leaves one tensor out."""
    fn.manual_seed(seed)
    config = {**CNN, **kwargs}
    encoder = nn.Module()
    encoder.features = models.create("cnn", **config).features
    if drop is not None:
        del encoder.features[int(drop.split(".")[1])]._parameters[drop.split(".")[2]]
    fn.checkpoint.save_checkpoint(
        path,
        encoder,
        config={
            "model": "cnn",
            "kwargs": config,
            "pretrain": {"method": "simclr", "epochs": 1, "dataset": "mnist"},
        },
    )
    return encoder


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_module, "build_datasets", tiny_sets)
    return tmp_path


def assert_user_error(argv, capsys, workdir, *fragments):
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastnet finetune: error:"), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    for fragment in fragments:
        assert fragment in lines[0]
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


# ===================================================================== options
def test_parse_modes_lists_aliases_and_all():
    assert finetune.parse_modes("linear,full,lora") == ("linear", "full", "lora")
    assert finetune.parse_modes("lora, head") == ("lora", "linear")
    assert finetune.parse_modes("all") == ("linear", "full", "lora", "scratch")
    for text, fragment in [
        ("bogus", "unknown mode 'bogus'"),
        ("linear,head", "'linear' is given twice"),
        ("all,full", "unknown mode 'all'"),
        ("full,", "unknown mode ''"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            finetune.parse_modes(text)


@pytest.mark.parametrize(
    "option, fragment",
    [
        (["--mode", "linear,bogus"], "unknown mode 'bogus'"),
        (["--mode", "full,full"], "given twice"),
        (["--labels-per-class", "1,x"], "not int: 'x'"),
        (["--labels-per-class", "10,-1"], "labels_per_class must be an integer >= 0"),
        (["--labels-per-class", "1,10,1"], "a budget is given twice"),
        (["--labels-per-class", "1,58"], "--labels-per-class 58: the smallest class"),
        (["--pretrained-lr-factor", "0"], "expected a number > 0"),
    ],
)
def test_bad_modes_and_budgets_are_one_line_exit_2(option, fragment, workdir, capsys):
    encoder_file(workdir / "encoder.safetensors")
    argv = ["finetune", "--from", "encoder.safetensors", "--dataset", "mnist", *option]
    assert_user_error(argv, capsys, workdir, fragment)


def test_an_encoder_file_missing_a_tensor_is_refused_naming_it(workdir, capsys):
    encoder_file(workdir / "holed.safetensors", drop="features.3.bias")
    assert_user_error(
        [
            "finetune",
            "--from",
            "holed.safetensors",
            "--dataset",
            "mnist",
            "--labels-per-class",
            "5",
        ],
        capsys,
        workdir,
        "--from holed.safetensors (linear)",
        "features.3.bias",
    )


# ===================================================================== the encoder file
def test_the_encoder_file_loads_every_features_tensor_and_keeps_the_head(tmp_path):
    encoder = encoder_file(tmp_path / "encoder.safetensors")
    state = fn.load(tmp_path / "encoder.safetensors")
    assert sorted(state) == sorted(encoder.state_dict()) and all(
        name.startswith("features.") for name in state
    )
    fn.manual_seed(9)
    model = models.create("cnn", **CNN)
    head = {n: v.copy() for n, v in model.state_dict().items() if n.startswith("head.")}
    assert sorted(finetune_table.load_pretrained(model, state)) == sorted(state)
    for name, value in model.state_dict().items():
        expected = state[name] if name.startswith("features.") else head[name]
        np.testing.assert_array_equal(value, expected)


def test_an_encoder_missing_or_misshapen_tensor_raises_and_loads_nothing(tmp_path):
    encoder_file(tmp_path / "encoder.safetensors")
    state = fn.load(tmp_path / "encoder.safetensors")
    model = models.create("cnn", **CNN)
    before = {n: v.copy() for n, v in model.state_dict().items()}
    holed = {n: v for n, v in state.items() if n != "features.0.weight"}
    with pytest.raises(RuntimeError, match=r"does not fit the features of .*features\.0\.weight"):
        finetune_table.load_pretrained(model, holed)
    wrong = {**state, "features.3.weight": state["features.3.weight"][:, :7]}
    with pytest.raises(RuntimeError, match=r"features\.3\.weight: model \(64, 32, 3, 3\)"):
        finetune_table.load_pretrained(model, wrong)
    for name, value in model.state_dict().items():  # never a partial load
        np.testing.assert_array_equal(value, before[name])


def test_an_encoder_with_the_hidden_head_layer_loads_it_and_keeps_the_last(tmp_path):
    fn.manual_seed(3)
    trunk = finetune.drop_head(models.create("cnn", **CNN))  # as SimCLR pretrains the CNN
    state = trunk.state_dict()
    assert sorted(n for n in state if n.startswith("head.")) == ["head.1.bias", "head.1.weight"]
    fn.manual_seed(4)
    model = models.create("cnn", **CNN)
    last = {n: v.copy() for n, v in model.state_dict().items() if n.startswith("head.3.")}
    assert sorted(finetune_table.load_pretrained(model, state)) == sorted(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[name] if name in state else last[name])
    groups = finetune.prepare(model, "linear", CLASSES, lr=1e-3, pretrained=list(state))
    assert [p.shape for p in groups[0]["params"]] == [(CLASSES, 128), (CLASSES,)]
    extra = {**state, "head.2.weight": np.ones(3, np.float32)}  # the CNN's head.2 is a ReLU
    with pytest.raises(RuntimeError, match=r"unexpected keys \['head\.2\.weight'\]"):
        finetune_table.load_pretrained(models.create("cnn", **CNN), extra)


def test_drop_head_leaves_what_a_new_last_layer_reads(rng):
    fn.manual_seed(6)
    cnn = models.create("cnn", **CNN)
    x = fn.tensor(rng.standard_normal((3, 1, SIDE, SIDE)))
    hidden = cnn.head[2](cnn.head[1](cnn.head[0](cnn.features(x)))).numpy()
    assert finetune.head_layer_name(cnn) == "head.3"
    np.testing.assert_array_equal(finetune.drop_head(cnn)(x).numpy(), hidden)
    assert not any(name.startswith("head.3") for name in cnn.state_dict())
    vit = models.create("vit", image_size=SIDE, patch_size=4, dim=16, depth=1, heads=2)
    assert finetune.head_layer_name(vit) == "head"
    features = vit.features(x).numpy()
    np.testing.assert_array_equal(finetune.drop_head(vit)(x).numpy(), features)


@pytest.mark.parametrize(
    "mode, epochs, plan",
    [
        ("full", 10, [("linear", 5, 1.0), ("full", 5, 0.01)]),
        ("full", 1, [("linear", 1, 1.0), ("full", 0, 0.01)]),
        ("lora", 7, [("linear", 4, 1.0), ("lora", 3, 0.1)]),
        ("linear", 7, [("linear", 7, 1.0)]),
        ("scratch", 3, [("scratch", 3, 1.0)]),
    ],
)
def test_full_and_lora_train_the_new_head_alone_first(mode, epochs, plan):
    assert finetune_table._phases(mode, epochs) == plan
    later = [
        (phase, count, 0.5 if index else factor)
        for index, (phase, count, factor) in enumerate(plan)
    ]
    assert finetune_table._phases(mode, epochs, pretrained_lr_factor=0.5) == later


def test_a_later_phase_keeps_the_trained_head_and_thaws_for_full():
    fn.manual_seed(7)
    model = models.create("cifar_cnn", classes=10, width=4, channels=1, image_size=SIDE)
    encoder = [n for n in model.state_dict() if not n.startswith("head.")]
    finetune.prepare(model, "linear", CLASSES, lr=1e-3, pretrained=encoder)
    head = {n: v.copy() for n, v in model.state_dict().items() if n.startswith("head.")}
    groups = finetune.prepare(model, "full", CLASSES, lr=1e-5, pretrained=encoder, new_head=False)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert all(p.requires_grad for p in model.parameters())
    norms = [m for m in model.modules() if hasattr(m, "freeze_statistics")]
    assert norms and not any(m.freeze_statistics for m in norms)
    for name, value in head.items():  # the head the linear phase trained, not a new one
        np.testing.assert_array_equal(model.state_dict()[name], value)


# ===================================================================== modes on an encoder
def test_linear_trains_what_the_encoder_lacks_and_freezes_its_statistics():
    fn.manual_seed(1)
    model = models.create("cifar_cnn", classes=10, width=4, channels=1, image_size=SIDE)
    encoder = [n for n in model.state_dict() if n.startswith("features.")]
    finetune.prepare(model, "linear", CLASSES, lr=1e-3, pretrained=encoder)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.1.weight", "head.1.bias"]
    norms = [m for m in model.features.modules() if hasattr(m, "freeze_statistics")]
    assert len(norms) == 6 and all(m.freeze_statistics for m in norms)
    fn.manual_seed(1)
    cnn = models.create("cnn", **CNN)  # an encoder file: the whole head is new, and trains
    encoder = [n for n in cnn.state_dict() if n.startswith("features.")]
    finetune.prepare(cnn, "head", CLASSES, lr=1e-3, pretrained=encoder)  # head: linear's alias
    assert [n for n, p in cnn.named_parameters() if p.requires_grad] == [
        "head.1.weight",
        "head.1.bias",
        "head.3.weight",
        "head.3.bias",
    ]
    supervised = models.create("cnn", **CNN)  # a whole model: only the new last Linear trains
    finetune.prepare(supervised, "linear", CLASSES, lr=1e-3)
    assert [n for n, p in supervised.named_parameters() if p.requires_grad] == [
        "head.3.weight",
        "head.3.bias",
    ]


def test_lora_adapts_the_encoder_convolutions_starts_equal_and_merges_exactly(rng):
    fn.manual_seed(2)
    model = models.create("cnn", **CNN)
    encoder = [n for n in model.state_dict() if n.startswith("features.")]
    x = fn.tensor(rng.standard_normal((3, 1, SIDE, SIDE)))
    finetune.prepare(model, "lora", CLASSES, lr=1e-2, pretrained=encoder)
    base = {n: p.numpy().copy() for n, p in model.named_parameters() if not p.requires_grad}
    assert sorted(base) == sorted(encoder)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "features.0.lora_A",
        "features.0.lora_B",
        "features.3.lora_A",
        "features.3.lora_B",
        "head.1.weight",
        "head.1.bias",
        "head.3.weight",
        "head.3.bias",
    ]
    assert model.features[3].lora_A.shape == (4, 32 * 3 * 3)
    plain = models.create("cnn", **{**CNN, "classes": CLASSES})
    plain.load_state_dict(finetune.merged_state_dict(model))
    np.testing.assert_array_equal(plain(x).numpy(), model(x).numpy())  # B = 0: starts equal
    groups = [p for p in model.parameters() if p.requires_grad]
    opt = optim.Adam(groups, lr=1e-2)
    for _ in range(3):
        y = fn.tensor(rng.integers(0, CLASSES, 3))
        opt.zero_grad()
        fn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert np.abs(model.features[0].lora_B.numpy()).max() > 0  # the adapter learned
    for name, value in base.items():
        np.testing.assert_array_equal(dict(model.named_parameters())[name].numpy(), value)
    adapted = model(x).numpy().copy()
    plain.load_state_dict(finetune.merged_state_dict(model))
    tolerance = 1e-5 * np.abs(adapted).max()
    assert np.abs(plain(x).numpy() - adapted).max() <= tolerance
    finetune.merge_lora(model)
    assert np.abs(model(x).numpy() - adapted).max() <= tolerance
    finetune.unmerge_lora(model)
    assert np.abs(model(x).numpy() - adapted).max() <= tolerance


@pytest.mark.skipif(not cuda_is_available(), reason="needs the cuda device (GPU or simulator)")
def test_lora_on_a_convolution_runs_on_the_cuda_device_as_on_the_cpu(rng):
    x = rng.random((1, 2, 5, 5), dtype=np.float32)
    adapter_b = rng.standard_normal((3, 2)).astype(np.float32)  # not zero: the update counts
    outputs, gradients = {}, {}
    for device in ("cpu", "cuda"):
        fn.manual_seed(3)
        layer = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1))
        finetune.add_lora(layer, targets=["Conv2d"], rank=2)
        layer[0].lora_B.data = adapter_b
        layer.to(device)
        out = layer(fn.tensor(x).to(device))
        (out * out).sum().backward()
        outputs[device] = out.numpy()
        gradients[device] = [layer[0].lora_A.grad.numpy(), layer[0].lora_B.grad.numpy()]
    assert relative_error(outputs["cuda"], outputs["cpu"]) < 1e-5
    for on_cuda, on_cpu in zip(gradients["cuda"], gradients["cpu"], strict=True):
        assert relative_error(on_cuda, on_cpu) < 1e-4


# ===================================================================== budgets and the table
def test_every_mode_of_a_budget_trains_on_the_same_balanced_subset(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(
        train_module, "train_epoch", lambda model, loader, *a, **k: seen.append(loader.dataset)
    )
    encoder_file(tmp_path / "encoder.safetensors")
    train, test = tiny_sets()
    rows = finetune_table.label_budget_table(
        fn.load(tmp_path / "encoder.safetensors"),
        {"model": "cnn", "kwargs": CNN},
        train,
        test,
        budgets=(3, 0),
        modes=("full", "linear", "lora"),
        epochs=1,
        seed=4,
        log=lambda line: None,
    )
    assert [(r["labels_per_class"], r["mode"]) for r in rows] == [
        (b, m) for b in (3, 0) for m in ("full", "linear", "lora", "scratch")
    ]
    assert len(seen) == 8
    expected = data.subset(train, 3, seed=4)
    for dataset in seen[:4]:
        np.testing.assert_array_equal(dataset.images, expected.images)
        np.testing.assert_array_equal(dataset.labels, expected.labels)
    assert np.bincount(seen[0].labels).tolist() == [3] * CLASSES
    assert all(dataset is train for dataset in seen[4:])  # 0: every label
    assert [r["train_images"] for r in rows] == [12] * 4 + [len(train)] * 4


def test_a_tiny_run_prints_and_saves_the_table_beside_the_models(workdir, capsys):
    encoder_file(workdir / "encoder.safetensors")
    argv = [
        "finetune",
        "--from",
        "encoder.safetensors",
        "--dataset",
        "mnist",
        "--mode",
        "lora,linear",
        "--labels-per-class",
        "5,0",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        "tuned",
        "--no-progress",
        "--pretrained-lr-factor",
        "0.5",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "the pretrained part at 0.5 of it after the head" in printed
    table = json.loads((workdir / "tuned" / "finetune_table.json").read_text())
    assert {"source", "model", "kwargs", "pretrain", "dataset", "epochs", "seed"} <= set(table)
    assert table["pretrained_lr_factor"] == 0.5
    assert table["model"] == "cnn" and table["pretrain"]["method"] == "simclr"
    rows = table["rows"]
    assert [(r["labels_per_class"], r["mode"]) for r in rows] == [
        (b, m) for b in (5, 0) for m in ("lora", "linear", "scratch")
    ]
    keys = {"labels_per_class", "train_images", "mode", "accuracy", "scratch_accuracy"}
    assert all(keys | {"trainable", "total", "seconds", "files"} <= set(r) for r in rows)
    for budget in (5, 0):
        mine = [r for r in rows if r["labels_per_class"] == budget]
        scratch = [r for r in mine if r["mode"] == "scratch"]
        assert len(scratch) == 1 and scratch[0]["scratch_accuracy"] is None
        assert all(r["scratch_accuracy"] == scratch[0]["accuracy"] for r in mine[:-1])
        assert 0 <= scratch[0]["accuracy"] <= 1 and scratch[0]["trainable"] == scratch[0]["total"]
    assert [r["train_images"] for r in rows] == [20] * 3 + [len(tiny_sets()[0])] * 3
    linear = rows[1]  # the frozen encoder: the head's two Linears alone train
    assert linear["trainable"] == (64 * 2 * 2 * 128 + 128) + (128 * CLASSES + CLASSES)
    text = (workdir / "tuned" / "finetune_table.txt").read_text()
    assert text.strip() in printed and "| 5 | lora |" in text and "| all | scratch |" in text
    for row in rows:  # every model loads into the plain architecture (LoRA merged)
        folder = "5-per-class" if row["labels_per_class"] else "all-labels"
        assert row["files"][0] == f"tuned/{folder}/{row['mode']}/model.safetensors"
        plain = models.create("cnn", **{**CNN, "classes": CLASSES})
        plain.load_state_dict(fn.load(workdir / row["files"][0]))
    assert (workdir / "tuned" / "5-per-class" / "lora" / "adapter.safetensors").is_file()
