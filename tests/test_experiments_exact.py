"""The ExactRex study runs end to end (`--quick`) and measures what it claims."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).parents[1] / "experiments" / "exact_rex.py"


@pytest.mark.skipif(not SCRIPT.exists(), reason="experiments/ not in this checkout")
@pytest.mark.slow  # minutes on 2 cores: `python -m pytest -m slow`
def test_exact_rex_study_quick(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    import common

    cmd = [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)]
    # This checkout's rexjax, not an installed one.
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[1]))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for name in ("exact_rex.md", "exact_rex_accuracy.csv", "exact_rex_speed.csv"):
        assert (tmp_path / name).exists()
    trips = {
        r["method"]: r["error"] for r in common.read_csv(tmp_path / "exact_rex_round_trips.csv")
    }
    assert trips["ExactRex EES27 (data)"] == 0
    assert trips["EDICT p=0.93"] > 0
    (acc,) = common.read_csv(tmp_path / "exact_rex_accuracy.csv")
    assert acc["ratio"] < 1.5, acc
    (speed,) = common.read_csv(tmp_path / "exact_rex_speed.csv")
    assert speed["ratio"] > 0
