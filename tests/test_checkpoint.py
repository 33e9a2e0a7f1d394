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

    def failing_fsync(handle):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "fsync", failing_fsync)  # after the bytes were written
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


# ---------------------------------------------------------------- issue 15: what the digest covers


def trained_checkpoint(tmp_path, rng):
    model = small_model()
    opt = optim.AdamW(model.parameters(), lr=0.01)
    opt.zero_grad()
    (model(fn.tensor(rng.standard_normal((4, 6)))) ** 2).mean().backward()
    opt.step()
    return fn.save_checkpoint(
        tmp_path / "c.safetensors",
        model,
        opt,
        epoch=3,
        config={"model": "x", "lr": 0.01},
        rng_state=fn.random.get_state(),
    )


def _edit_header(path, before: bytes) -> None:
    """Change one digit in the JSON header: the first one after `before` (a one-character edit)."""
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    position = data.index(before, 0, header_end) + len(before)
    while not data[position : position + 1].isdigit():
        position += 1
    digit = (int(data[position : position + 1]) + 1) % 10
    path.write_bytes(data[:position] + str(digit).encode() + data[position + 1 :])


@pytest.mark.parametrize(
    "before",
    [
        b'\\"lr\\": ',  # the config's learning rate
        b'"epoch":"',  # the epoch
        b'\\"step\\": ',  # an optimizer step
        b'"rng":"',  # the RNG state
        b'\\"param_groups\\": ',  # the optimizer's hyper-parameters
    ],
)
def test_a_one_character_edit_of_the_metadata_is_refused(tmp_path, rng, before):
    path = trained_checkpoint(tmp_path, rng)
    untouched = path.read_bytes()
    _edit_header(path, before)
    edited = path.read_bytes()
    assert len(edited) == len(untouched) and edited != untouched
    with pytest.raises(ValueError, match="checksum mismatch"):
        fn.load_checkpoint(path)
    with pytest.raises(ValueError, match="checksum mismatch"):
        fn.load(path)
    assert fn.load_checkpoint(path, verify=False)["model"].keys()  # the explicit opt-out


def _rewrite_without_digest(path, keep_legacy: bool = False) -> None:
    """Rewrite a fastnet file with the same tensors and metadata but no digest (or the old
    tensors-only one), as a file from elsewhere or an older fastnet would be."""
    from safetensors.numpy import load_file, save_file

    import fastnet.checkpoint as checkpoint

    tensors = load_file(str(path))
    metadata = dict(checkpoint._parse_header(path, path.read_bytes()))
    del metadata["fastnet.digest"]
    if keep_legacy:
        metadata["fastnet.sha256"] = checkpoint._digest(tensors, {})
    save_file(tensors, str(path), metadata=metadata)


def test_a_checkpoint_without_a_digest_is_refused_unless_trusted(tmp_path, rng):
    path = trained_checkpoint(tmp_path, rng)
    _rewrite_without_digest(path)
    for load in (fn.load_checkpoint, fn.load):
        with pytest.raises(ValueError, match="no fastnet digest.*verify=False"):
            load(path)
    assert fn.load_checkpoint(path, verify=False)["epoch"] == 3


def test_an_old_tensors_only_digest_is_accepted_only_where_it_covers_everything(tmp_path, rng):
    state = small_model().state_dict()
    plain = fn.save(state, tmp_path / "m.safetensors")
    _rewrite_without_digest(plain, keep_legacy=True)
    loaded = fn.load(plain)  # a state dict: the old digest covers every byte loaded
    assert all(np.array_equal(loaded[name], state[name]) for name in state)
    data = bytearray(plain.read_bytes())
    data[-3] ^= 0xFF
    plain.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        fn.load(plain)
    path = trained_checkpoint(tmp_path, rng)
    _rewrite_without_digest(path, keep_legacy=True)
    with pytest.raises(ValueError, match="older fastnet.*verify=False"):
        fn.load_checkpoint(path)


def test_a_state_dict_written_by_safetensors_alone_still_loads(tmp_path, rng):
    from safetensors.numpy import save_file

    weights = {"weight": rng.standard_normal((3, 4)).astype(np.float32)}
    save_file(weights, str(tmp_path / "foreign.safetensors"), metadata={"format": "pt"})
    np.testing.assert_array_equal(
        fn.load(tmp_path / "foreign.safetensors")["weight"], weights["weight"]
    )


# ------------------------------------------------------------- issue 15: file modes and leftovers


def test_a_new_file_gets_the_umask_mode_and_an_overwrite_keeps_the_old_mode(tmp_path):
    previous = os.umask(0o027)
    try:
        path = fn.save(small_model().state_dict(), tmp_path / "m.safetensors")
        assert oct(path.stat().st_mode & 0o777) == oct(0o640)
        os.umask(0o022)
        fresh = fn.save(small_model().state_dict(), tmp_path / "n.safetensors")
        assert oct(fresh.stat().st_mode & 0o777) == oct(0o644)
        path.chmod(0o604)
        fn.save(small_model().state_dict(), path)
        assert oct(path.stat().st_mode & 0o777) == oct(0o604)
    finally:
        os.umask(previous)


def test_a_save_killed_midway_leaves_nothing_the_next_save_does_not_remove(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import os, signal
        import fastnet as fn
        import fastnet.checkpoint as checkpoint
        from fastnet import nn

        def killed(*args):  # dies like kill -9 between writing the bytes and the rename
            os.kill(os.getpid(), signal.SIGKILL)

        checkpoint.os.replace = killed
        fn.save(nn.Linear(3, 2).state_dict(), {str(tmp_path / "m.safetensors")!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9, result.stderr.decode()
    leftovers = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".m.safetensors.")
    fn.save(small_model().state_dict(), tmp_path / "m.safetensors")
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_a_temporary_file_of_a_running_save_is_left_alone(tmp_path):
    live = tmp_path / f".m.safetensors.{os.getpid()}.0123abcd.tmp"  # this process is running
    live.write_bytes(b"in progress")
    fn.save(small_model().state_dict(), tmp_path / "m.safetensors")
    assert live.exists()


def test_the_folder_is_synced_after_the_rename(tmp_path, monkeypatch):
    import fastnet.checkpoint as checkpoint

    events = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst):
        events.append("rename")
        real_replace(src, dst)

    def fsync(handle):
        events.append("folder" if os.path.isdir(f"/proc/self/fd/{handle}") else "file")
        real_fsync(handle)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    fn.save(small_model().state_dict(), tmp_path / "m.safetensors")
    assert events == ["file", "rename", "folder"]
