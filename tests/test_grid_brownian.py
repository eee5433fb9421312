"""`rexjax.GridBrownianPath`: the exact law of a Brownian motion's grid increments and Lévy
areas, exact replay in either direction, independence of batch size and sharding, the default
on fixed grids, and a clear error off the grid.

The path is queried directly (no solve) where possible: compiling a solve dominates."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rexjax as rx
from helpers import GaussianModel, rel_err


SCHEDULE = rx.VPSchedule.linear()
KEY = jax.random.key(0)


def _grid(n):
    return rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, n)


def _path(ts, shape, prediction="data", dtype=jnp.float64, key=KEY):
    y = jnp.zeros(shape, dtype)
    solver = rx.Princeps(diffrax.ShARK(), prediction)  # the path does not depend on coupling
    sde = rx.reverse_sde(SCHEDULE_TERM, solver, key, ts, y)
    return sde.path, rx.LawsonVariables(SCHEDULE, prediction, stochastic=True)


SCHEDULE_TERM = GaussianModel(SCHEDULE).term()


def test_default_on_grids_tree_with_tol():
    ts = _grid(8)
    y = jnp.zeros((3,))
    solver = rx.Rex(diffrax.Euler(), "data")
    assert isinstance(rx.reverse_sde(SCHEDULE_TERM, solver, KEY, ts, y).path, rx.GridBrownianPath)
    tree = rx.reverse_sde(SCHEDULE_TERM, solver, KEY, ts, y, tol=1e-6).path
    assert isinstance(tree, rx.LawsonBrownianPath)


@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_moments_and_independence(prediction):
    # 20000 independent numbers per interval, 6 intervals: W / sqrt(dt) and H / sqrt(dt / 12)
    # must be standard normal, W and H uncorrelated, consecutive intervals uncorrelated.
    n = 20000
    ts = _grid(6)
    path, v = _path(ts, (n,), prediction)
    s = np.asarray(v.time(ts))
    ws, hs = [], []
    query = eqx.filter_jit(lambda p, a, b: p.increment(a, b))
    for a, b in zip(s[:-1], s[1:], strict=True):
        w, h = query(path, a, b)
        dt = abs(b - a)
        ws.append(np.asarray(w) / np.sqrt(dt) * np.sign(b - a))
        hs.append(np.asarray(h) / np.sqrt(dt / 12))
    ws, hs = np.stack(ws), np.stack(hs)
    bound = 5 / np.sqrt(n)  # 5 standard errors of a mean, a correlation or a variance / sqrt 2
    for z in (ws, hs):
        assert np.max(np.abs(z.mean(axis=1))) < bound
        assert np.max(np.abs(z.var(axis=1) - 1)) < np.sqrt(2) * bound
        assert np.max(np.abs(np.mean(z**4, axis=1) - 3)) < 5 * np.sqrt(96 / n)  # kurtosis
    assert np.max(np.abs(np.mean(ws * hs, axis=1))) < bound
    assert np.max(np.abs(np.mean(ws[1:] * ws[:-1], axis=1))) < bound
    assert np.max(np.abs(np.mean(hs[1:] * hs[:-1], axis=1))) < bound


def test_exact_replay_either_direction_and_float32():
    ts = _grid(5)
    for dtype in (jnp.float64, jnp.float32):
        path, v = _path(ts.astype(dtype), (4, 3), dtype=dtype)
        s = v.time(ts.astype(dtype))
        w, h = path.increment(s[2], s[3])
        w_back, h_back = path.increment(s[3], s[2])
        w_again, _ = _path(ts.astype(dtype), (4, 3), dtype=dtype)[0].increment(s[2], s[3])
        assert w.dtype == dtype and h.dtype == dtype
        assert np.array_equal(np.asarray(w), -np.asarray(w_back))
        assert np.array_equal(np.asarray(h), np.asarray(h_back))
        assert np.array_equal(np.asarray(w), np.asarray(w_again))
        other, _ = path.increment(s[1], s[2])
        assert np.min(np.abs(np.asarray(w - other))) > 0


def test_element_noise_depends_on_global_index_only():
    # Element i of a batch of 8 gets the same path as element i of a batch of 4 (the leading
    # rows of the counter-based bits), and the same under any sharding (tests/test_sharding.py).
    ts = _grid(5)
    big, v = _path(ts, (8, 3))
    small, _ = _path(ts, (4, 3))
    s = v.time(ts)
    wb, hb = big.increment(s[1], s[2])
    ws, hs = small.increment(s[1], s[2])
    assert np.array_equal(np.asarray(wb)[:4], np.asarray(ws))
    assert np.array_equal(np.asarray(hb)[:4], np.asarray(hs))


def test_round_trip_and_batch_prefix_in_a_solve():
    # The default path: invert then sample with the same key is exact, and a sample of a
    # batch's first rows equals the batch's first rows of the sample.
    term, ts = SCHEDULE_TERM, _grid(20)
    solver = rx.Rex(diffrax.SEA(), "data")
    x0 = 0.5 + 0.3 * jax.random.normal(jax.random.key(2), (6, 2))
    latent = rx.invert(term, solver, x0, ts, key=KEY)
    err = rel_err(rx.sample(term, solver, latent, ts, key=KEY), x0)
    assert err < 1e-12  # measured 1.3e-15
    y = jax.random.normal(jax.random.key(1), (6, 2))
    full = rx.sample(term, solver, y, ts, key=KEY)
    part = rx.sample(term, solver, y[:3], ts, key=KEY)
    assert rel_err(part, full[:3]) < 1e-14


def test_off_grid_step_is_a_runtime_error():
    term, coarse, fine = SCHEDULE_TERM, _grid(4), _grid(12)
    y = jnp.zeros((3,))
    solver = rx.Rex(diffrax.Euler(), "data")
    sde = rx.reverse_sde(term, solver, KEY, coarse, y)
    with pytest.raises(Exception, match="not one interval of the grid"):
        diffrax.diffeqsolve(
            sde, solver, fine[0], fine[-1], None, y, stepsize_controller=diffrax.StepTo(fine)
        )
