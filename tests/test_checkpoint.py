"""Checkpoints: safetensors round trips, atomic writes, verification before use."""

import os

import numpy as np
import pytest

import fastnet as fn
from fastnet import nn, optim


def small_model():
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def test_state_dict_file_round_trip(tmp_path, rng):
    model = small_model()
    path = fn.save(model.state_dict(), tmp_path / "m.safetensors")
    clone = small_model()
    assert clone.load_state_dict(fn.load(path)) == ([], [], [])
    x = fn.tensor(rng.standard_normal((4, 6)))
    np.testing.assert_array_equal(model(x).numpy(), clone(x).numpy())


def test_plain_file_is_readable_by_safetensors_alone(tmp_path):
    from safetensors.numpy import load_file

    model = small_model()
    fn.save(model.state_dict(), tmp_path / "m.safetensors")
    raw = load_file(str(tmp_path / "m.safetensors"))
    assert sorted(raw) == ["0.bias", "0.weight", "2.bias", "2.weight"] and raw[
        "0.weight"
    ].shape == (5, 6)


def test_checkpoint_round_trip_with_optimizer_and_scheduler(tmp_path, rng):
    model = small_model()
    opt = optim.AdamW(model.parameters(), lr=0.01)
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(2):
        opt.zero_grad()
        (model(fn.tensor(rng.standard_normal((4, 6)))) ** 2).mean().backward()
        opt.step()
        sched.step()
    path = fn.save_checkpoint(
        tmp_path / "c.safetensors",
        model,
        opt,
        sched,
        epoch=2,
        config={"model": "x"},
        rng_state=fn.random.get_state(),
        extra={"note": 1},
    )
    saved = fn.load_checkpoint(path)
    assert (
        saved["epoch"] == 2 and saved["config"] == {"model": "x"} and saved["extra"] == {"note": 1}
    )
    assert saved["scheduler"]["last_epoch"] == 2
    clone = small_model()
    clone.load_state_dict(saved["model"])
    clone_opt = optim.AdamW(clone.parameters(), lr=1.0)
    clone_opt.load_state_dict(saved["optimizer"])
    original, restored = opt.state_dict(), clone_opt.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for index, entry in original["state"].items():
        for field, value in entry.items():
            np.testing.assert_array_equal(restored["state"][index][field], value)
    assert (
        fn.load(path).keys() == model.state_dict().keys()
    )  # the weights alone, for load_state_dict


def test_corrupted_file_is_refused(tmp_path):
    path = fn.save(small_model().state_dict(), tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        fn.load(path)


def test_truncated_or_garbage_file_is_refused(tmp_path):
    path = fn.save(small_model().state_dict(), tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="m.safetensors"):
        fn.load(path)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{nope")
    with pytest.raises(ValueError, match="corrupt safetensors header"):
        fn.load(garbage)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        fn.load(tmp_path / "missing.safetensors")


def test_plain_state_dict_is_not_a_checkpoint(tmp_path):
    path = fn.save(small_model().state_dict(), tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="not a fastnet checkpoint"):
        fn.load_checkpoint(path)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = fn.save(small_model().state_dict(), tmp_path / "m.safetensors")
    before = path.read_bytes()
    import fastnet.checkpoint as checkpoint

    def failing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        fn.save(small_model().state_dict(), path)
    assert path.read_bytes() == before  # the old file is intact
    assert os.listdir(tmp_path) == ["m.safetensors"]  # and no temporary file is left behind


def test_pytorch_trained_weights_saved_as_safetensors_give_the_same_outputs(tmp_path, rng):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 7 * 7, 10),
    )
    optimizer = torch.optim.SGD(
        twin.parameters(), lr=0.1
    )  # "trained": weights away from their init
    for _ in range(3):
        optimizer.zero_grad()
        twin(torch.randn(8, 1, 14, 14)).square().mean().backward()
        optimizer.step()
    save_file(
        {k: v.contiguous() for k, v in twin.state_dict().items()},
        str(tmp_path / "torch.safetensors"),
    )
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 7 * 7, 10),
    )
    assert model.load_state_dict(fn.load(tmp_path / "torch.safetensors")) == ([], [], [])
    x = rng.standard_normal((5, 1, 14, 14)).astype(np.float32)
    expected = twin(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(model(fn.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
