"""The Boltzmann study's targets, the augmented Rex generator's exactness and the study's smoke
run (`experiments/boltzmann/`)."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rexjax as rx


FOLDER = Path(__file__).parents[1] / "experiments" / "boltzmann"
pytestmark = pytest.mark.skipif(not FOLDER.exists(), reason="experiments/ not in this checkout")
sys.path.insert(0, str(FOLDER))


def test_targets():
    targets = pytest.importorskip("targets")
    mw = targets.ManyWell32()
    # fab-jax's constant: log Z per copy = log 11784.50927 + 0.5 log(2 pi)
    assert abs(mw.log_z - 16 * (math.log(11784.50927) + 0.5 * math.log(2 * math.pi))) < 1e-6
    xs = mw.sample(jax.random.key(0), 4000)
    assert mw.deep_well_error(xs) < 0.01
    gmm = targets.GMM40()
    ys = gmm.sample(jax.random.key(1), 4000)
    assert gmm.mode_tv(ys) < 0.1
    assert gmm.mode_tv(jnp.zeros((10, 2)) + jnp.asarray(targets.GMM40_MEANS[0])) > 0.9
    # GMM-40 is normalised: a Monte-Carlo check of log Z = 0 with a broad Gaussian proposal
    z = 30 * jax.random.normal(jax.random.key(2), (200000, 2))
    log_q = -0.5 * jnp.sum((z / 30) ** 2, -1) - math.log(2 * math.pi * 900)
    w = np.exp(np.asarray(jax.vmap(gmm.log_prob)(z) - log_q))
    assert abs(w.mean() - 1) < 4 * w.std() / np.sqrt(w.size)
    dw = targets.DW4()
    square = jnp.asarray([0.0, 0, 5.5, 0, 5.5, 5.5, 0, 5.5]) - 2.75
    assert float(dw.dw_energy(square)) < float(dw.dw_energy(square * 0.9))


def _crude_flow():
    k1, k2 = jax.random.split(jax.random.key(1))
    w1, w2 = jax.random.normal(k1, (3, 16)), jax.random.normal(k2, (16, 2)) * 0.25

    def model(t, x, args):
        return jnp.tanh(jnp.concatenate([x, jnp.atleast_1d(t)]) @ w1) @ w2 + 0.3 * x

    return rx.DiffusionTerm(model, rx.FlowMatchingSchedule(), "flow")


def test_augmented_rex_weights_are_exact():
    """Joint weights on (x, x_hat) with the constant Rex determinant: Z_hat is unbiased
    (log Z = 0 for GMM-40) without any Jacobian."""
    targets = pytest.importorskip("targets")
    augmented = pytest.importorskip("augmented")
    target = targets.ScaledTarget(targets.GMM40())
    term = _crude_flow()
    ts = jnp.linspace(1.0, 1e-3, 5)
    for solver in (rx.Rex(diffrax.Euler(), coupling=0.5), rx.Rex(rx.EES27(), coupling=0.999)):
        aux = augmented.fit_aux_scale(term, solver, ts, jax.random.key(3), 2, hat_scale=0.3)
        log_w, _ = jax.jit(
            lambda k, s=solver, a=aux: augmented.augmented_log_weights(
                term, s, ts, k, 40000, 2, target.log_prob, 0.3, a
            )
        )(jax.random.key(4))
        w = np.exp(np.asarray(log_w))
        assert abs(w.mean() - 1.0) < 4 * w.std() / np.sqrt(w.size), (w.mean(), w.std())
        assert 0 < float(rx.kish_ess(log_w)) < 1


def test_study_quick(tmp_path):
    script = FOLDER / "study.py"
    cmd = [sys.executable, str(script), "--target", "gmm40", "--quick", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with (tmp_path / "boltzmann_gmm40_quick.csv").open() as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"Euler", "Rex Euler", "Dopri5 tol 1e-03"}
    for r in rows.values():
        assert float(r["a_b_same_samples"]) < 1e-10  # (A) and (B) score the same samples
        assert 0 < float(r["ess_B"]) <= 1
    assert float(rows["Rex Euler"]["roundtrip"]) < 1e-10
    assert float(rows["Euler"]["gap_AB"]) > 1e-3  # 4 Euler steps: (A) is not the map's density
    assert (tmp_path / "boltzmann_gmm40_quick.md").exists()
