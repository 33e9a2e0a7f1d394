"""CI's check of ``int8_inference.py``: its ``--quick`` run (random weights, a batch of 8) writes
JSON with every contender, every number finite and positive, and the two ratios. Whether the
numbers are good is for the script's full run.

    python -m pytest benchmarks/test_compression_benchmarks.py -q
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytest.importorskip("torch", reason="needs PyTorch (the bench extra)")


def test_int8_inference_quick(tmp_path):
    out = tmp_path / "int8.json"
    subprocess.run(
        [sys.executable, str(HERE / "int8_inference.py"), "--quick", "--json", str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    results = json.loads(out.read_text())
    names = {"fastnet float32", "fastnet int8", "pytorch float32", "pytorch int8"}
    assert set(results["contenders"]) == names
    for row in results["contenders"].values():
        for value in row.values():
            assert math.isfinite(value) and value > 0
    assert results["int8_over_float_fastnet"] > 0 and results["fastnet_int8_over_pytorch_int8"] > 0
