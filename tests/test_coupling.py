"""The coupling of `rexjax.Rex`: the per-step "auto" coupling, and the defaults' guarantee
(within 1.5x of their own Princeps base at coarse steps, round trips at the floor)."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rexjax as rx
from helpers import rel_err


SCHEDULE = rx.VPSchedule.linear()


@pytest.fixture(scope="module")
def mixture():
    model = rx.GaussianMixture.default(SCHEDULE, prediction="noise")
    return model, model.term()


def test_auto_coupling_values():
    solver = rx.Rex(prediction="noise", coupling="auto")
    t0, t1 = jnp.asarray(0.8), jnp.asarray(0.3)
    dlam = SCHEDULE.log_snr(t1) - SCHEDULE.log_snr(t0)
    expected = float(jnp.exp(-2 * jnp.abs(dlam)))
    for stochastic in (False, True):
        v = rx.LawsonVariables(SCHEDULE, "noise", stochastic=stochastic)
        assert float(solver.step_coupling(v, t0, t1)) == pytest.approx(expected, rel=1e-14)
        # The same number in both directions: the inverse uses exactly the forward coupling.
        assert float(solver.step_coupling(v, t0, t1)) == float(solver.step_coupling(v, t1, t0))
    # On the SDE it is the ratio of the step's Lawson times (the stability bound).
    ratio = v.time(t1) / v.time(t0)
    assert expected == pytest.approx(float(jnp.minimum(ratio, 1 / ratio)), rel=1e-12)
    assert float(rx.Rex(coupling=0.9).step_coupling(v, t0, t1)) == 0.9


@pytest.mark.parametrize("coupling", ["fixed", 0.0, 1.5, None])
def test_bad_couplings(coupling):
    with pytest.raises(ValueError, match="coupling must be a number in"):
        rx.Rex(coupling=coupling)


def test_defaults():
    solver = rx.Rex()
    assert isinstance(solver.base, rx.EES27)
    assert solver.prediction == "data" and solver.coupling == "auto"
    v = rx.LawsonVariables(SCHEDULE, "data")
    assert float(solver.step_coupling(v, jnp.asarray(0.8), jnp.asarray(0.3))) == 0.999


@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_auto_round_trips(mixture, prediction):
    """Measured on the mixture (256 samples): noise prediction float64 5e-15 ... 1e-13, float32
    3e-6 ... 5e-6 at 15-100 steps (3e-5 at 10; fixed couplings 0.9-1: 2e-11 ... 3e-10 and
    4e-3 ... 8e-2); data prediction 4e-15 / 2e-6."""
    model, term = mixture
    solver = rx.Rex(prediction=prediction)
    x0 = model.sample_data(jax.random.key(1), 64)
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 25)
    back = rx.sample(term, solver, rx.invert(term, solver, x0, ts), ts)
    assert rel_err(back, x0) < 1e-12
    x32, ts32 = x0.astype(jnp.float32), ts.astype(jnp.float32)
    back32 = rx.sample(term, solver, rx.invert(term, solver, x32, ts32), ts32)
    assert rel_err(back32, x32) < 1e-5


@pytest.mark.parametrize("steps", [15, 25])
@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_default_tracks_its_base(mixture, steps, prediction):
    """`Rex(prediction=...)` against `Princeps` with the same base on the same grid (float64,
    256 samples, relative RMS error against Dopri8 at 1e-12). Measured ratios: data 1.25 / 1.04,
    noise 0.04 / 1.09 at 15 / 25 steps. At 10 steps noise prediction is 1.8x (a few samples
    change mode; see the README), data 1.44x."""
    model, term = mixture
    noise = jax.random.normal(jax.random.key(0), (256, model.dim))
    reference = diffrax.diffeqsolve(
        term,
        diffrax.Dopri8(),
        t0=1.0,
        t1=1e-3,
        dt0=-1e-3,
        y0=noise,
        stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
        max_steps=100_000,
    ).ys[-1]
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, steps)
    rex = rx.Rex(prediction=prediction)
    princeps = rx.Princeps(rex.base, prediction)

    def error(solver):
        x = rx.sample(term, solver, noise, ts)
        return float(jnp.linalg.norm(x - reference) / jnp.linalg.norm(reference))

    ratio = error(rex) / error(princeps)
    assert ratio < 1.5, ratio


def test_auto_coupling_on_the_noise_sde(mixture):
    """'auto' is each step's stability bound on the reverse SDE: accepted where a fixed coupling
    of 0.999 is refused, and the round trip along one Brownian path is exact (measured 2.1e-10,
    float64, Euler-Maruyama, 20 steps)."""
    model, term = mixture
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 20)
    x0 = model.sample_data(jax.random.key(2), 16)
    key = jax.random.key(3)
    with pytest.raises(ValueError, match="coupling='auto'"):
        rx.invert(term, rx.Rex(diffrax.Euler(), "noise", 0.999), x0, ts, key=key)
    solver = rx.Rex(diffrax.Euler(), "noise", "auto")
    back = rx.sample(term, solver, rx.invert(term, solver, x0, ts, key=key), ts, key=key)
    assert rel_err(back, x0) < 1e-9
    assert np.all(np.isfinite(np.asarray(rx.sample(term, solver, x0, ts, key=key))))
