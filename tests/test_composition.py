"""The symmetric composition EES27x5: exact orders on rooted trees, measured one-step
reversal defect and convergence, stage times inside the step, and use as a Rex base."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rexjax as rx


def test_suzuki_fractions():
    g = np.asarray(rx.suzuki_fractions())
    assert g.shape == (5,)
    np.testing.assert_allclose(g.sum(), 1.0, atol=1e-15)
    np.testing.assert_allclose((g**3).sum(), 0.0, atol=1e-15)
    np.testing.assert_array_equal(g, g[::-1])
    partial = np.cumsum(g)
    assert np.all((partial >= 0) & (partial <= 1 + 1e-15))


@pytest.mark.parametrize(
    "tableau, order, antisymmetric",
    [
        (rx.ees27_tableau(), 4, 7),
        (rx.ees25_tableau(), 4, 5),
        (rx.RK4.tableau, 4, 5),  # RK4 is not symmetric: composing it keeps order 4, m = 5
    ],
    ids=["EES27", "EES25", "RK4"],
)
def test_composition_orders_exact(tableau, order, antisymmetric):
    composite = rx.symmetric_composition(tableau)
    assert composite.b_sol.shape == (5 * tableau.b_sol.shape[0],)
    assert rx.classical_order(composite) == order
    assert rx.antisymmetric_order(composite) == antisymmetric


def test_ees27x5_tableau():
    tab = rx.EES27x5.tableau
    assert rx.classical_order(rx.EES27x5()) == 4
    assert rx.antisymmetric_order(rx.EES27x5()) == 7
    # Every stage time lies inside the step (a Lawson-time stage beyond it can leave the
    # schedule's domain); Yoshida's triple jump would not.
    assert tab.c.min() > 0 and tab.c.max() < 1
    g1 = 1 / (2 - 2 ** (1 / 3))
    yoshida = rx.symmetric_composition(rx.ees27_tableau(), (g1, 1 - 2 * g1, g1))
    assert rx.classical_order(yoshida) == 4 and yoshida.c.min() < 0 < yoshida.c.max() - 1


def test_composition_bad_input():
    with pytest.raises(ValueError, match="summing to one"):
        rx.symmetric_composition(rx.ees27_tableau(), (0.5, 0.4))
    with pytest.raises(ValueError, match="explicit"):
        rx.symmetric_composition(diffrax.Kvaerno3.tableau)


def _vf(t, y, args):
    return jnp.stack([jnp.sin(y[1]) + 0.3 * y[0] ** 2, -y[0] + jnp.cos(t)])


def _step(solver, t0, t1, y):
    term = diffrax.ODETerm(_vf)
    return solver.step(term, t0, t1, y, None, None, False)[0]


@pytest.mark.slow
def test_ees27x5_defect_and_convergence_slopes():
    """One-step reversal defect |Phi_{-h}(Phi_h(y)) - y| = O(h^8) (antisymmetric order 7) and
    global error O(h^4), both measured in float64 (steps taken eagerly: compiling a 20-stage
    step costs more than running it here)."""
    solver, y0 = rx.EES27x5(), jnp.asarray([0.7, -0.4])
    hs = 0.4 * 2.0 ** -np.arange(4)
    defects = [
        float(jnp.max(jnp.abs(_step(solver, h, 0.0, _step(solver, 0.0, h, y0)) - y0))) for h in hs
    ]
    slope = np.polyfit(np.log(hs), np.log(defects), 1)[0]
    assert 7.5 < slope < 8.6, (slope, defects)

    def solve(n):
        y = y0
        for k in range(n):
            y = _step(solver, k / n, (k + 1) / n, y)
        return y

    # Global error O(h^4): successive differences |y_n - y_2n| on [0, 1] (no reference solve).
    ns = (3, 6, 12, 24)
    ys = [solve(n) for n in ns]
    diffs = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(ys[:-1], ys[1:], strict=True)]
    order = -np.polyfit(np.log(ns[:-1]), np.log(diffs), 1)[0]
    assert 3.7 < order < 4.5, (order, diffs)


@pytest.mark.slow
def test_ees27x5_as_rex_base():
    """One Rex(EES27x5) step on the mixture and its backward step: exact to round-off."""
    schedule = rx.VPSchedule.linear()
    gmm = rx.GaussianMixture.default(schedule)
    term = gmm.term()
    x0 = gmm.sample_data(jax.random.key(1), 8)
    solver = rx.Rex(rx.EES27x5(), "data", 0.999)
    assert solver.evaluations_per_step() == 40
    t0, t1 = jnp.asarray(0.3), jnp.asarray(0.2)
    y1, _, _, yh1, _ = solver.step(term, t0, t1, x0, None, x0, False)
    y0, _, yh0, _ = solver.backward_step(term, t0, t1, y1, None, None, yh1, False)
    assert float(jnp.max(jnp.abs(y0 - x0))) < 1e-13 and float(jnp.max(jnp.abs(yh0 - x0))) < 1e-13
    assert 0 < float(jnp.max(jnp.abs(y1 - x0)))


@pytest.mark.slow
def test_ees27x5_as_rex_base_round_trip():
    schedule = rx.VPSchedule.linear()
    gmm = rx.GaussianMixture.default(schedule)
    term = gmm.term()
    x0 = gmm.sample_data(jax.random.key(1), 8)
    ts = rx.log_snr_grid(schedule, 1.0, 1e-3, 10)
    solver = rx.Rex(rx.EES27x5(), "data", 0.999)
    latent = rx.invert(term, solver, x0, ts)
    again = rx.sample(term, solver, latent, ts)
    assert float(jnp.max(jnp.abs(again - x0)) / jnp.max(jnp.abs(x0))) < 1e-12
