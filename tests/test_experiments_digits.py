"""The digits scripts run end to end in their --quick modes (slow: each compiles a training
step), and an interrupted, resumed training run equals an uninterrupted one bit for bit."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


EXPERIMENTS = Path(__file__).parents[1] / "experiments"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not EXPERIMENTS.exists(), reason="experiments/ not in this checkout"),
]


def _run(script, *args):
    cmd = [sys.executable, str(EXPERIMENTS / script), *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_train_digits_quick_resumes_exactly(tmp_path):
    from safetensors.numpy import load_file

    _run("train_digits.py", "--quick", "--out", tmp_path / "a")
    _run("train_digits.py", "--quick", "--out", tmp_path / "b", "--stop-after", 2)
    _run("train_digits.py", "--quick", "--out", tmp_path / "b", "--resume")
    weights = "digits/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(tmp_path / "a" / weights)), load_file(str(tmp_path / "b" / weights))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert (tmp_path / "a" / "train_digits_loss_quick.png").is_file()


def test_classifier_and_eval_quick(tmp_path):
    stdout = _run("train_digits_classifier.py", "--quick", "--out", tmp_path)
    assert "accuracy: test" in stdout
    stdout = _run("eval_digits.py", "--quick", "--out", tmp_path)
    assert "class accuracy" in stdout
    assert (tmp_path / "eval_digits_quick.csv").is_file()
