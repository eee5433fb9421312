"""Smoke test of `experiments/gpu_suite.py --tiny`: every part runs end to end on the CPU at toy
sizes (a 2-level UNet on 8x8 latents, a few steps) and writes its dated table."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


EXPERIMENTS = Path(__file__).parent.parent / "experiments"


@pytest.mark.slow  # minutes on 2 cores: `python -m pytest -m slow`
def test_gpu_suite_tiny(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(EXPERIMENTS.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "gpu_suite.py", "--tiny", "--out", str(tmp_path)],
        cwd=EXPERIMENTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = (tmp_path / "gpu_suite_tiny.md").read_text()
    for heading in ("(a) SD 1.5 UNet", "(b) Rex overhead", "(d) Gradient", "(e) Sharded"):
        assert heading in text
    assert "Grid query" in text or "grid query" in text
    assert (tmp_path / "gpu_suite_tiny.csv").stat().st_size > 0
