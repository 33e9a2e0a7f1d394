"""fastnet bench --infer at tiny sizes: both frameworks are timed after their logits agree, a model
that computes differently is refused, the table and JSON are written, and the option excludes the
other races."""

from __future__ import annotations

import functools
import json

import pytest

from fastnet import models
from fastnet.bench import infer, pinned_threads
from fastnet.cli import main as cli_main

TINY_RESNET = infer.InferModel(
    "tiny_resnet", functools.partial(models.create, "resnet8", width=4), (3, 8, 8)
)
TINY_VIT = infer.InferModel(
    "tiny_vit",
    functools.partial(models.ViT, image_size=8, patch_size=4, dim=16, depth=1, heads=2),
    (1, 8, 8),
)


@pytest.mark.parametrize("entry", [TINY_RESNET, TINY_VIT], ids=lambda entry: entry.name)
@pytest.mark.parametrize("batch", [1, 3])
def test_inference_race_times_both_frameworks_after_their_logits_agree(entry, batch):
    pytest.importorskip("torch")
    with pinned_threads(1):
        result = infer.measure_inference(entry, batch, quick=True)
    latency, speed = result["median_seconds_per_call"], result["images_per_second"]
    assert all(latency[name] > 0 and speed[name] > 0 for name in ("fastnet", "torch"))
    expected = (
        latency["torch"] / latency["fastnet"] if batch == 1 else speed["fastnet"] / speed["torch"]
    )
    assert result["ratio"] == pytest.approx(expected)
    assert result["relative_error"] < 1e-5
    assert result["folded_batch_norms"] == (9 if entry is TINY_RESNET else 0)


def test_inference_race_refuses_models_that_compute_differently(monkeypatch):
    torch = pytest.importorskip("torch")
    honest = infer.to_torch

    def perturbed(module):
        mirror = honest(module)
        with torch.no_grad():
            next(mirror.parameters()).add_(0.5)
        return mirror

    monkeypatch.setattr(infer, "to_torch", perturbed)
    with pytest.raises(infer.MismatchError, match="logits differ.*refusing to report a speed"):
        infer.measure_inference(TINY_RESNET, 2, quick=True)


def test_bench_infer_prints_the_table_and_writes_json(tmp_path, capsys):
    pytest.importorskip("torch")
    path = tmp_path / "infer.json"
    status = cli_main(
        ["bench", "--infer", "--quick", "--only", "mnist", "--threads", "1", "--json", str(path)]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "inference on the CPU, 1 thread each" in printed
    assert "mnist_cnn |     1 |" in printed and "mnist_cnn |     4 |" in printed
    report = json.loads(path.read_text())
    assert [row["batch"] for row in report["infer"]] == [1, 4] and report["failures"] == []


def test_bench_infer_excludes_the_other_races(capsys):
    assert cli_main(["bench", "--infer", "--train"]) == 2
    assert "--train and --infer are alternatives" in capsys.readouterr().err
