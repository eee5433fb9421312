"""Bad input gets a clear error, raised early."""

import diffrax
import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import rexjax as rx
from helpers import GaussianModel


SCHEDULE = rx.VPSchedule.linear()
TERM = GaussianModel(SCHEDULE).term()
X = jnp.ones(3)


@pytest.mark.parametrize("coupling", [0.0, -0.5, 1.5, float("nan"), "0.9"])
def test_coupling_out_of_range(coupling):
    with pytest.raises(ValueError, match=r"coupling must be a number in \(0, 1\]"):
        rx.Rex(diffrax.Tsit5(), "data", coupling)


def test_unknown_prediction_and_unsupported_base():
    with pytest.raises(ValueError, match="Unknown prediction 'x0'"):
        rx.Rex(diffrax.Tsit5(), "x0")
    with pytest.raises(ValueError, match="Unknown prediction"):
        rx.Princeps(diffrax.Tsit5(), "eps")
    with pytest.raises(ValueError, match="explicit Runge.Kutta"):
        rx.Rex(diffrax.Kvaerno5())
    with pytest.raises(ValueError, match="explicit Runge.Kutta"):
        rx.Princeps(diffrax.ReversibleHeun())


def test_non_embedded_tableau_with_adaptive_controller():
    for solver in (rx.Rex(rx.RK4()), rx.Princeps(diffrax.Euler()), rx.RK4()):
        with pytest.raises(Exception, match="does not provide error estimates|error estimate"):
            diffrax.diffeqsolve(
                TERM,
                solver,
                t0=1.0,
                t1=0.01,
                dt0=-0.1,
                y0=X,
                stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-5),
            )


def test_solver_needs_a_diffusion_term():
    with pytest.raises(ValueError, match="integrate a `rexjax.DiffusionTerm`"):
        diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, a: -y), rx.Rex(diffrax.Euler()), 1.0, 0.1, -0.1, X
        )


@pytest.mark.parametrize(
    "ts, match",
    [
        (np.array([1.0, 0.5, 0.7, 0.1]), "strictly decreasing.*ts\\[1\\]=.*0.5"),
        (np.array([0.1, 0.5, 1.0]), "strictly decreasing"),
        (np.array([1.2, 0.5, 0.1]), "outside the schedule's domain"),
        (np.array([1.0, 0.5, 0.0]), "where sigma\\(t\\) = 0"),
        (np.array([1.0]), ">= 2 times"),
        (np.ones((2, 2)), "1-D"),
    ],
)
def test_bad_grids(ts, match):
    for fn in (rx.sample, rx.invert):
        with pytest.raises(ValueError, match=match):
            fn(TERM, rx.Rex(diffrax.Euler(), "data"), X, ts)


def test_traced_bad_grid_is_a_runtime_error():
    run = eqx.filter_jit(lambda ts: rx.invert(TERM, rx.Rex(diffrax.Euler()), X, ts).y)
    with pytest.raises(eqx.EquinoxRuntimeError, match="strictly decreasing"):
        run(jnp.array([1.0, 0.2, 0.5]))


def test_nan_from_the_model_says_where():
    def model(t, x, args):
        return jnp.where(t < 0.3, jnp.nan, x)

    term = rx.DiffusionTerm(model, SCHEDULE, "noise")
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 0.01, 10)
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite values .* in a Rex step"):
        rx.sample(term, rx.Rex(diffrax.Euler()), X, ts)
    with pytest.raises(eqx.EquinoxRuntimeError, match="in a Rex backward step"):
        rx.invert(term, rx.Rex(diffrax.Euler()), X, ts)
    with pytest.raises(eqx.EquinoxRuntimeError, match="in a Princeps step"):
        rx.sample(term, rx.Princeps(diffrax.Euler()), X, ts)


def test_accepted_grid_needs_saved_steps():
    sol = diffrax.diffeqsolve(TERM, rx.Rex(diffrax.Tsit5()), 1.0, 0.1, -0.1, X)
    with pytest.raises(ValueError, match="SaveAt\\(steps=True\\)"):
        rx.accepted_grid(sol)
