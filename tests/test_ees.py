"""EES bases, classical and antisymmetric orders on rooted trees, and near-reversible
inversion (`rexjax.NearReversible`)."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffrax import ODETerm

import rexjax as rx
from helpers import GaussianModel, invert_padded, pad_grid, rel_err, solve_padded


# Classical order p and antisymmetric order m (Phi_{-h} o Phi_h = id + O(h^{m+1})); the
# values for the classic methods are textbook, those of EES from Shmelev et al. (2025).
ORDERS = [
    (diffrax.Euler(), 1, 1),
    (diffrax.Midpoint(), 2, 3),
    (diffrax.Heun(), 2, 3),
    (diffrax.Ralston(), 2, 3),
    (diffrax.Bosh3(), 3, 3),
    (rx.SSPRK3(), 3, 3),
    (rx.RK4(), 4, 5),
    (rx.RK38(), 4, 5),
    (diffrax.Tsit5(), 5, 5),
    (diffrax.Dopri5(), 5, 5),
    (rx.EES25(), 2, 5),
    (rx.EES27(), 2, 7),
]


def test_rooted_tree_counts():
    # OEIS A000081.
    assert [len(rx.rooted_trees(n)) for n in range(1, 10)] == [1, 1, 2, 4, 9, 20, 48, 115, 286]
    with pytest.raises(ValueError, match="at least one vertex"):
        rx.rooted_trees(0)


@pytest.mark.parametrize("solver, p, m", ORDERS, ids=lambda x: type(x).__name__)
def test_classical_and_antisymmetric_orders(solver, p, m):
    assert rx.classical_order(solver) == p
    assert rx.antisymmetric_order(solver) == m


@pytest.mark.parametrize("x", [0.0, 0.2, 0.25, 1 / 3, -0.3])
def test_ees25_family(x):
    tableau = rx.ees25_tableau(x)
    assert rx.classical_order(tableau) == 2
    assert rx.antisymmetric_order(tableau) == 5


@pytest.mark.parametrize("x", [0.0, 0.1, 0.3])
def test_ees27_family(x):
    tableau = rx.ees27_tableau(x)
    assert rx.classical_order(tableau) == 2
    assert rx.antisymmetric_order(tableau) == 7


def test_published_tableaus():
    r2 = np.sqrt(2.0)
    t25 = rx.EES25.tableau
    np.testing.assert_allclose(t25.c, [1 / 3, 5 / 6], rtol=0, atol=1e-15)
    np.testing.assert_allclose(t25.a_lower[1], [-5 / 48, 15 / 16], rtol=0, atol=1e-15)
    np.testing.assert_allclose(t25.b_sol, [1 / 10, 1 / 2, 2 / 5], rtol=0, atol=1e-15)
    t27 = rx.EES27.tableau
    np.testing.assert_allclose(t27.c, [(2 - r2) / 3, (2 + r2) / 6, (4 + r2) / 6], atol=1e-15)
    np.testing.assert_allclose(t27.a_lower[1], [(-4 + r2) / 24, (4 + r2) / 8], atol=1e-15)
    np.testing.assert_allclose(
        t27.a_lower[2],
        [(-176 + 145 * r2) / 168, 3 * (8 - 5 * r2) / 56, 3 * (3 - r2) / 7],
        atol=1e-15,
    )
    expected_b = [(5 - 3 * r2) / 14, (3 + r2) / 14, 3 * (-1 + 2 * r2) / 14, (9 - 4 * r2) / 14]
    np.testing.assert_allclose(t27.b_sol, expected_b, atol=1e-15)


@pytest.mark.parametrize("x", [1.0, 0.5, -0.5])
def test_ees25_singular_parameter(x):
    with pytest.raises(ValueError, match="undefined"):
        rx.ees25_tableau(x)


def test_order_checks_reject_non_tableaus():
    with pytest.raises(ValueError, match="explicit diffrax RK solver"):
        rx.antisymmetric_order(diffrax.Kvaerno5())


def _defect_slope(solver, hs):
    """Slope of log |Phi_{-h}(Phi_h(y0)) - y0| against log h on y' = sin(y) + 0.3 y^2 - cos t."""
    term = ODETerm(lambda t, y, args: jnp.sin(y) + 0.3 * y**2 - jnp.cos(t))
    y0 = jnp.array([0.4, -0.7, 1.1])
    defects = []
    for h in hs:
        y1 = solver.step(term, 0.3, 0.3 + h, y0, None, None, False)[0]
        back = solver.step(term, 0.3 + h, 0.3, y1, None, None, False)[0]
        defects.append(float(jnp.max(jnp.abs(back - y0))))
    return np.polyfit(np.log(hs), np.log(defects), 1)[0]


@pytest.mark.parametrize(
    "solver, slope, hs",
    [
        (rx.EES25(), 6, 0.2 * 2.0 ** -np.arange(5)),
        (rx.EES27(), 8, 0.4 * 2.0 ** -np.arange(4)),
        (rx.RK4(), 6, 0.2 * 2.0 ** -np.arange(5)),
        (diffrax.Heun(), 4, 0.2 * 2.0 ** -np.arange(5)),
    ],
    ids=lambda x: type(x).__name__ if not isinstance(x, int | np.ndarray) else None,
)
def test_one_step_defect_slope(solver, slope, hs):
    """Measured: EES25 6.0, EES27 7.9, RK4 6.0, Heun 4.0 (float64)."""
    assert abs(_defect_slope(solver, hs) - slope) < 0.3


def test_ees_alone_in_diffeqsolve():
    """EES bases are plain diffrax solvers: order 2 on y' = -y (exact e^{-t})."""
    term = ODETerm(lambda t, y, args: -y)
    errors = []
    for n in (16, 32, 64):
        sol = diffrax.diffeqsolve(term, rx.EES27(), 0.0, 1.0, 1 / n, jnp.array(1.0))
        errors.append(abs(float(sol.ys[-1]) - np.exp(-1.0)))
    assert abs(-np.polyfit(np.log([16, 32, 64]), np.log(errors), 1)[0] - 2) < 0.1


# ----------------------------------------------------------------------------- NearReversible

SCHEDULE = rx.VPSchedule.linear()


def _round_trip(solver, term, x0, n):
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, n)
    latent = rx.invert(term, solver, x0, ts)
    return rel_err(rx.sample(term, solver, latent, ts), x0), latent


def test_near_reversible_euler_is_naive_ddim_inversion():
    """NearReversible(Euler, data) is DDIM with its usual (naive) inversion, both ways."""
    gauss = GaussianModel(SCHEDULE)
    term = gauss.term()
    x0 = 0.5 + 0.3 * jax.random.normal(jax.random.key(0), (8, 3))
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 20)
    ours = rx.NearReversible(diffrax.Euler(), "data")
    ddim = rx.baselines.DDIM()
    assert rel_err(rx.invert(term, ours, x0, ts).y, rx.invert(term, ddim, x0, ts).y) < 1e-12
    z = rx.invert(term, ours, x0, ts).y
    assert rel_err(rx.sample(term, ours, z, ts), rx.sample(term, ddim, z, ts)) < 1e-12


@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_near_reversible_round_trip_order(prediction):
    """The round trip of NearReversible(EES27) misses by O(h^7) (antisymmetric order 7):
    measured slope 7.0 (data) / 7.1 (noise) on Gaussian data, float64, grids of 4-16 steps
    from t=0.5; the base's own sample error is only O(h^2)."""
    schedule = SCHEDULE
    gauss = GaussianModel(schedule, mu=0.5, s=0.3)
    term = gauss.term()
    x0 = 0.5 + 0.3 * jax.random.normal(jax.random.key(1), (8, 3))
    solver = rx.NearReversible(rx.EES27(), prediction)
    ns = np.array([4, 8, 16])
    errors = []
    for n in ns:  # padded grids: one compilation for all n
        ts = pad_grid(rx.log_snr_grid(schedule, 0.5, 1e-2, int(n)), ns[-1] + 1)
        x1, _ = invert_padded(term, solver, x0, None, ts)
        errors.append(rel_err(solve_padded(term, solver, x1, ts), x0))
    slope = -np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert 6.3 < slope < 8.0, (slope, errors)


def test_near_reversible_is_refused_by_the_reversible_adjoint():
    term = GaussianModel(SCHEDULE).term()
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 4)
    solver = rx.NearReversible()

    def loss(y):
        return jnp.sum(rx.sample(term, solver, y, ts, adjoint=rx.ReversibleAdjoint()))

    with pytest.raises(ValueError, match="exact"):
        jax.grad(loss)(jnp.ones((2, 3)))
    # Its default adjoint is checkpointing: the gradient of the approximate map exists.
    grad = jax.grad(lambda y: jnp.sum(rx.sample(term, solver, y, ts)))(jnp.ones((2, 3)))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_near_reversible_checks_its_base():
    with pytest.raises(ValueError, match="explicit Runge"):
        rx.NearReversible(diffrax.Kvaerno5())
    with pytest.raises(ValueError, match="prediction"):
        rx.NearReversible(rx.EES27(), "velocity")
