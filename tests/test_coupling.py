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
    """Noise prediction's "auto": zeta_n = 0.999 q_n and rho_n = q_n^1.25, q_n the ratio of the
    two forms' Lawson ratios (exp(-|dlam|) on the ODE, exp(-2|dlam|) on the SDE), the same in
    both directions; data prediction and fixed couplings leave the copy undamped (rho = 1)."""
    solver = rx.Rex(prediction="noise", coupling="auto")
    t0, t1 = jnp.asarray(0.8), jnp.asarray(0.3)
    dlam = abs(float(SCHEDULE.log_snr(t1) - SCHEDULE.log_snr(t0)))
    for stochastic, q in ((False, np.exp(-dlam)), (True, np.exp(-2 * dlam))):
        v = rx.LawsonVariables(SCHEDULE, "noise", stochastic=stochastic)
        assert float(solver.step_coupling(v, t0, t1)) == pytest.approx(0.999 * q, rel=1e-12)
        assert float(solver.copy_damping(v, t0, t1)) == pytest.approx(q**1.25, rel=1e-12)
        # The same numbers in both directions: the inverse uses exactly the forward ones.
        assert float(solver.step_coupling(v, t0, t1)) == float(solver.step_coupling(v, t1, t0))
        assert float(solver.copy_damping(v, t0, t1)) == float(solver.copy_damping(v, t1, t0))
    # On the SDE zeta_n is below the stability bound of a fixed coupling (the Lawson-time ratio).
    ratio = float(v.time(t1) / v.time(t0))
    assert float(solver.step_coupling(v, t0, t1)) < min(ratio, 1 / ratio)
    for undamped in (rx.Rex(coupling=0.9), rx.Rex(), rx.Rex(prediction="noise", coupling=0.5)):
        for prediction in ("data", "noise"):
            v = rx.LawsonVariables(SCHEDULE, prediction)
            if undamped.prediction == prediction:
                assert float(undamped.copy_damping(v, t0, t1)) == 1.0
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
    """Measured on the mixture (256 samples, 10-100 steps, `coarse_steps.py`): noise prediction
    float64 1e-15 ... 8e-15, float32 5e-7 ... 4e-6 (the old rule, zeta = exp(-2|dlam|) with an
    undamped copy: 9.5e-5 at 10 steps; fixed couplings 0.9-1: 2e-11 ... 3e-10 and 4e-3 ...
    8e-2); data prediction 4e-15 / 2e-6."""
    model, term = mixture
    solver = rx.Rex(prediction=prediction)
    x0 = model.sample_data(jax.random.key(1), 64)
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 25)
    back = rx.sample(term, solver, rx.invert(term, solver, x0, ts), ts)
    assert rel_err(back, x0) < 1e-12
    x32, ts32 = x0.astype(jnp.float32), ts.astype(jnp.float32)
    back32 = rx.sample(term, solver, rx.invert(term, solver, x32, ts32), ts32)
    assert rel_err(back32, x32) < 1e-5


@pytest.mark.parametrize("steps", [10, 15, 25])
@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_default_tracks_its_base(mixture, steps, prediction):
    """`Rex(prediction=...)` against `Princeps` with the same base on the same grid (float64,
    256 samples, relative RMS error against Dopri8 at 1e-12). Measured ratios at 10 / 15 / 25
    steps: data 1.44 / 1.25 / 1.04, noise 1.00 / 0.98 / 1.01 (with the old noise rule, zeta =
    exp(-2|dlam|) and an undamped copy: 1.80 / 0.04 / 1.09)."""
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


def test_noise_ode_coupling_warning(mixture):
    """On the ODE, a noise-prediction Rex whose fixed coupling exceeds exp(-largest log-SNR step)
    warns before running (sample, invert and trajectory_gap), names the bound and the fixes,
    and its pair does separate (measured gap at 25 steps, Euler base, 0.999: about 2); "auto",
    a coupling under the bound and data prediction run silently."""
    model, term = mixture
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 25)  # largest log-SNR step 0.383: bound 0.6816
    noise = jax.random.normal(jax.random.key(0), (64, model.dim))
    unstable = rx.Rex(diffrax.Euler(), "noise", 0.999)
    with pytest.warns(rx.CouplingWarning, match=r"coupling <= 0\.6816.*coupling='auto'"):
        _, gaps = rx.trajectory_gap(term, unstable, noise, ts)
    assert float(gaps.max()) > rx.GAP_WARNING
    with pytest.warns(rx.CouplingWarning, match="prediction='data'"):
        rx.invert(term, unstable, model.sample_data(jax.random.key(1), 8), ts)
    with pytest.warns(rx.CouplingWarning, match=r"^ExactRex .* Use prediction='data'"):
        rx.sample(term, rx.ExactRex(rx.EES27(), "noise"), noise[:4], ts)  # always coupling 1
    for quiet in (
        rx.Rex(diffrax.Euler(), "noise", "auto"),
        rx.Rex(diffrax.Euler(), "noise", 0.68),
        rx.Rex(diffrax.Euler(), "data", 0.999),
    ):
        rx.sample(term, quiet, noise, ts)  # the suite turns warnings into errors
    # Traced grids are not checked (the bound needs concrete times).
    jax.jit(lambda t: rx.sample(term, unstable, noise, t))(ts)
