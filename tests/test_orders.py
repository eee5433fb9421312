"""Convergence orders of every exponential solver (Princeps) and its reversible version (Rex),
for both predictions, against an independent high-accuracy reference on a nonlinear model.

Set-up: the smooth 3-component mixture of `helpers.mild_mixture` (exact denoiser), float64,
grids uniform in log-SNR from t=0.5 to t=1e-3, a Dopri8 reference at tolerance 1e-14 on the
probability-flow drift. The order is the least-squares slope of log(error) (L2 norm over the
batch) over three grids,
chosen per order so the errors are asymptotic and above the round-off floor.

Rex is measured with coupling 0.5. With a coupling close to 1 the gap between the coupled
copies grows as O(h^p) for about 1/(1 - coupling) steps before the coupling damps it, and the
(1 - coupling) * gap term then contributes a (1 - coupling) O(h^(p-1)) error: on grids of fewer
than ~1/(1 - coupling) steps the apparent order is p - 1 (with a small constant) or, before that
term dominates, a pre-asymptotic p + 1. `test_rex_coupling_regimes` pins this behaviour down.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rexjax as rx
from helpers import ODE_BASES, mild_mixture, pad_grid, reference_solution, solve_padded


SCHEDULE = rx.VPSchedule.linear()
T0, T1 = 0.5, 1e-3
# Step counts per order: asymptotic, and above the ~1e-14 round-off floor for the high orders.
GRIDS = {
    1: (128, 256, 512),
    2: (64, 128, 256),
    3: (128, 256, 512),
    4: (128, 256, 512),
    5: (128, 256, 512),
    8: (24, 32, 48),
}


@pytest.fixture(scope="module")
def problem():
    model = mild_mixture(SCHEDULE)
    term = model.term()
    y0 = jax.random.normal(jax.random.key(0), (4, 4))
    return term, y0, reference_solution(term, y0, T0, T1)


def measured_order(term, solver, y0, reference, order):
    ns = GRIDS[order]
    errors = []
    for n in ns:
        ts = pad_grid(rx.log_snr_grid(SCHEDULE, T0, T1, n), ns[-1] + 1)
        errors.append(float(jnp.linalg.norm(solve_padded(term, solver, y0, ts) - reference)))
    slope = np.polyfit(np.log(ns), np.log(errors), 1)[0]
    return -slope, errors


def _name(base):
    return type(base).__name__


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("reversible", [False, True], ids=["Princeps", "Rex"])
@pytest.mark.parametrize("base", ODE_BASES, ids=_name)
def test_order(problem, base, reversible, prediction):
    term, y0, reference = problem
    solver = rx.Rex(base, prediction, coupling=0.5) if reversible else rx.Princeps(base, prediction)
    order = base.order(term)
    measured, errors = measured_order(term, solver, y0, reference, order)
    assert abs(measured - order) < 0.35, (measured, errors)


def test_rex_coupling_regimes(problem):
    """Coupling 0.999 on grids shorter than 1/(1 - 0.999) steps: SSPRK3 (order 3) with data
    prediction shows the (1 - coupling) O(h^2) term (apparent order near 2 at 128-512 steps),
    far below Princeps' error at equal steps; coupling 1 has no such term (order 3)."""
    term, y0, reference = problem

    def slope(coupling, ns=(128, 256, 512)):
        errors = []
        for n in ns:
            ts = pad_grid(rx.log_snr_grid(SCHEDULE, T0, T1, n), ns[-1] + 1)
            solver = rx.Rex(rx.SSPRK3(), "data", coupling)
            errors.append(float(jnp.max(jnp.abs(solve_padded(term, solver, y0, ts) - reference))))
        return -np.polyfit(np.log(ns), np.log(errors), 1)[0], errors

    order_999, errors_999 = slope(0.999)
    order_1, _ = slope(1.0)
    assert 1.8 < order_999 < 2.6, order_999
    assert abs(order_1 - 3) < 0.35, order_1
    assert errors_999[-1] < 1e-7
