"""The command line, end to end on the real MNIST / Fashion-MNIST files (small subsets)."""

import json
import subprocess
import sys

import pytest

import fastnet as fn
from fastnet.cli import main


@pytest.fixture
def data_env(shared_data, monkeypatch):
    monkeypatch.setenv("FASTNET_DATA", str(shared_data))


def test_train_then_resume_then_finetune(data_env, shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "mnist",
                "--model",
                "mlp",
                "--epochs",
                "1",
                "--labels-per-class",
                "20",
                "--schedule",
                "none",  # a scheduled run cannot be extended past its planned epochs
                "--data-dir",
                str(shared_data),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "epoch 1/1" in printed and "test accuracy" in printed
    history = json.loads((out / "history.json").read_text())
    assert 0.5 < history["test_acc"][-1] <= 1.0  # 200 images of MNIST already teach an MLP a lot
    assert (
        main(
            [
                "train",
                "--resume",
                str(out / "checkpoint.safetensors"),
                "--epochs",
                "2",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "resuming" in printed and "epoch 2/2" in printed
    assert fn.load_checkpoint(out / "checkpoint.safetensors")["epoch"] == 2
    final = json.loads((out / "history.json").read_text())["test_acc"][-1]

    assert main(["eval", str(out / "checkpoint.safetensors")]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {100 * final:.2f}%" in printed and "macro avg" in printed
    assert (out / "confusion_matrix.png").stat().st_size > 0

    assert (
        main(
            [
                "finetune",
                "--from",
                str(out / "checkpoint.safetensors"),
                "--dataset",
                "fashion-mnist",
                "--mode",
                "lora",
                "--labels-per-class",
                "5",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "tuned"),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| lora |" in printed and "| scratch |" in printed and "trainable" in printed
    for mode in ("lora", "scratch"):  # the fine-tuned weights load into the plain architecture
        fn.models.mlp(in_features=784, classes=10).load_state_dict(
            fn.load(tmp_path / "tuned" / "5-per-class" / mode / "model.safetensors")
        )
    assert (tmp_path / "tuned" / "5-per-class" / "lora" / "adapter.safetensors").is_file()


def test_info_reports_devices(capsys):
    assert main(["info"]) == 0
    printed = capsys.readouterr().out
    assert "numba" in printed and "cuda:" in printed


def test_bench_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["bench", "--help"])
    assert exit_status.value.code == 0
    printed = capsys.readouterr().out
    for option in ("--quick", "--json", "--device", "--threads", "--only", "--train", "--ptx"):
        assert option in printed


def test_only_the_bench_command_loads_the_benchmarks():
    # In a fresh interpreter: this one has imported fastnet.bench already.
    probe = (
        "import sys; from fastnet.cli import build_parser; build_parser(); "
        "print(sorted(name for name in sys.modules if name.startswith('fastnet.bench')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    ).stdout.strip()
    assert loaded == "[]"
