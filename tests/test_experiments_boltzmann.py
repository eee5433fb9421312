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
    assert gmm.mode_tv(jnp.tile(jnp.asarray(targets.GMM40_MEANS[:1]), (10, 1))) > 0.9
    # GMM-40 is normalised: a Monte-Carlo check of log Z = 0 with a broad Gaussian proposal
    z = 30 * jax.random.normal(jax.random.key(2), (200000, 2))
    log_q = -0.5 * jnp.sum((z / 30) ** 2, -1) - math.log(2 * math.pi * 900)
    w = np.exp(np.asarray(jax.vmap(gmm.log_prob)(z) - log_q))
    assert abs(w.mean() - 1) < 4 * w.std() / np.sqrt(w.size)
    dw = targets.DW4()
    square = np.array([[0.0, 0], [2.5, 0], [0, 2.5], [2.5, 2.5]])
    u = np.array([2.5, 2.5, 2.5, 2.5, 2.5 * np.sqrt(2), 2.5 * np.sqrt(2)]) - 4
    expected = np.sum(-4 * u**2 + 0.9 * u**4)  # each unordered pair once (EACF / Koehler)
    np.testing.assert_allclose(dw.dw_energy(jnp.asarray(square.ravel())), expected, rtol=1e-12)
    rot = np.array([[0.6, -0.8], [0.8, 0.6]])
    moved = (square[::-1] @ rot.T + 1.0).ravel()  # permuted, rotated, translated
    np.testing.assert_allclose(dw.dw_energy(jnp.asarray(moved)), expected, rtol=1e-12)
    com = np.sqrt(4) * (square.mean(0) @ rot.T + 1.0)
    np.testing.assert_allclose(
        dw.energy(jnp.asarray(moved)), expected + 0.5 * np.sum(com**2), rtol=1e-12
    )


def _crude_flow():
    k1, k2 = jax.random.split(jax.random.key(1))
    w1, w2 = jax.random.normal(k1, (3, 16)), jax.random.normal(k2, (16, 2)) * 0.25

    def model(t, x, args):
        return jnp.tanh(jnp.concatenate([x, jnp.atleast_1d(t)]) @ w1) @ w2 + 0.3 * x

    return rx.DiffusionTerm(model, rx.FlowMatchingSchedule(), "flow")


def test_augmented_rex_weights_are_exact():
    """The joint weights on (x, x_hat) use the constant Rex determinant: they equal the weights
    built from a brute-force Jacobian of the full pair map (so they are exact importance
    weights, and Z_hat is unbiased); no Jacobian is computed by the method itself."""
    targets = pytest.importorskip("targets")
    augmented = pytest.importorskip("augmented")
    target = targets.ScaledTarget(targets.GMM40())
    term = _crude_flow()
    ts = jnp.linspace(1.0, 1e-3, 5)
    solver = rx.Rex(diffrax.Euler(), coupling=0.5)
    hat, aux, key = 0.3, 1e-4, jax.random.key(4)
    log_w, _ = augmented.augmented_log_weights(
        term, solver, ts, key, 3, 2, target.log_prob, hat, aux
    )
    k1, k2 = jax.random.split(key)
    z = jax.random.normal(k1, (3, 2))
    z_hat = z + hat * jax.random.normal(k2, (3, 2))

    def gauss(v, m, s):
        return -0.5 * jnp.sum(((v - m) / s) ** 2) - 2 * jnp.log(s) - jnp.log(2 * jnp.pi)

    for i in range(3):
        p = jnp.concatenate([z[i], z_hat[i]])
        out = _pair_direct(term, solver, ts, p)
        jac = jax.jacfwd(lambda q: _pair_direct(term, solver, ts, q))(p)
        log_q = gauss(z[i], 0.0, 1.0) + gauss(z_hat[i], z[i], hat) - np.linalg.slogdet(jac)[1]
        log_pi = target.log_prob(out[:2]) + gauss(out[2:], out[:2], aux)
        np.testing.assert_allclose(log_w[i], log_pi - log_q, rtol=1e-9)


def _pair_direct(term, solver, ts, q):
    state = rx.sample(
        term,
        solver,
        rx.ReversibleState(q[:2], q[2:]),
        ts,
        full_state=True,
        adjoint=diffrax.DirectAdjoint(),
    )
    return jnp.concatenate([state.y, state.solver_state])


@pytest.mark.slow  # minutes on 2 cores: `python -m pytest -m slow`
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
    assert float(rows["Rex Euler"]["roundtrip"]) < 1e-6  # exact up to round-off (t_end = 1e-3)
    assert float(rows["Euler"]["gap_AB"]) > 1e-4  # 4 Euler steps: (A) is not the map's density
    assert (tmp_path / "boltzmann_gmm40_quick.md").exists()
