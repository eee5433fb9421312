"""The reconstruction study runs end to end (a small setting) and measures what it claims."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).parents[1] / "experiments" / "reconstruction.py"


@pytest.mark.slow  # suite time (`pytest -m slow`): ~1.5 min, the study's own start-up
# check compares its loops with rexjax.sample/invert on every run
@pytest.mark.skipif(not SCRIPT.exists(), reason="experiments/ not in this checkout")
def test_reconstruction_study_small(tmp_path):
    methods = "DDIM (naive inv.),O-BELM,Rex Euler data,Rex EM noise SDE"
    cmd = [sys.executable, str(SCRIPT), "--models", "gmm", "--steps", "10"]
    cmd += ["--dtypes", "float64", "--methods", methods, "--no-nfe", "--out", str(tmp_path)]
    # The start-up check inside compares the study's loops with rexjax.invert/sample for
    # every baseline and SDE method, and fails the run if they differ.
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "start-up check" in out.stdout
    csvs = list(tmp_path.glob("reconstruction_roundtrip_*.csv"))
    assert len(csvs) == 1
    with csvs[0].open() as f:
        rows = {(r["method"], int(r["steps"])): r for r in csv.DictReader(f)}
    assert set(rows) == {(m, 10) for m in methods.split(",")}
    n = 10
    assert float(rows["O-BELM", n]["rt_maxrel"]) < 1e-13
    assert float(rows["Rex Euler data", n]["rt_maxrel"]) < 1e-13
    assert float(rows["Rex EM noise SDE", n]["rt_maxrel"]) < 1e-7
    assert float(rows["DDIM (naive inv.)", n]["rt_maxrel"]) > 1e-3  # not exact
    # The PF latent is compared for ODE methods only.
    assert float(rows["Rex Euler data", n]["latent_rel"]) < 2.0
    assert rows["Rex EM noise SDE", n]["latent_rel"] == "nan"
