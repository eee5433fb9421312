"""Shared test helpers: models with exact answers, error measures, solver registries."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import rexjax as rx


def rel_err(a, b) -> float:
    """max |a - b| / max |b|."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


class GaussianModel:
    r"""Data N(mu, s^2 I): exact noise prediction and exact probability-flow map (DESIGN 2.8)."""

    def __init__(self, schedule, mu=0.5, s=0.3):
        self.schedule, self.mu, self.s = schedule, mu, s

    def noise(self, t, x, args=None):
        a, sg = self.schedule.alpha(t), self.schedule.sigma(t)
        return (sg * (x - a * self.mu) / (a**2 * self.s**2 + sg**2)).astype(x.dtype)

    def flow_map(self, t, x, t_new):
        """The exact probability-flow solution from (t, x) to t_new."""
        a, sg = self.schedule.alpha(t), self.schedule.sigma(t)
        a2, sg2 = self.schedule.alpha(t_new), self.schedule.sigma(t_new)
        ratio = jnp.sqrt(a2**2 * self.s**2 + sg2**2) / jnp.sqrt(a**2 * self.s**2 + sg**2)
        return a2 * self.mu + ratio * (x - a * self.mu)

    def term(self):
        return rx.DiffusionTerm(self.noise, self.schedule, "noise")


ODE_BASES = (
    diffrax.Euler(),
    diffrax.Midpoint(),
    diffrax.Heun(),
    diffrax.Ralston(),
    diffrax.Bosh3(),
    rx.SSPRK3(),
    rx.RK4(),
    rx.RK38(),
    rx.Fehlberg45(),
    diffrax.Tsit5(),
    diffrax.Dopri5(),
    diffrax.Dopri8(),
    rx.EES25(),
    rx.EES27(),
)


def mild_mixture(schedule, prediction="noise"):
    """A nonlinear but smooth 3-component mixture in 4 dimensions (for order measurements)."""
    rng = np.random.default_rng(1)
    return rx.GaussianMixture(
        rng.normal(size=(3, 4)),
        np.array([0.5, 0.7, 0.6]),
        np.array([0.5, 0.3, 0.2]),
        schedule,
        prediction,
    )


def reference_solution(term, y0, t0, t1):
    """The probability-flow solution by Dopri8 at tolerance 1e-14 (float64)."""
    return diffrax.diffeqsolve(
        term,
        diffrax.Dopri8(),
        t0,
        t1,
        dt0=(t1 - t0) / 1000,
        y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=1e-14, atol=1e-14),
        max_steps=100_000,
    ).ys[-1]


def solve_padded(term, solver, y0, ts):
    """Step `solver` along `ts`, skipping zero-length steps: grids of several sizes padded with
    their final time to one length share one compilation."""
    return step_padded(term, solver, y0, solver.init(term, ts[0], ts[-1], y0, None), ts)[0]


@eqx.filter_jit
def step_padded(term, solver, y0, state, ts):
    """`solve_padded` from a given solver state; returns `(y1, state1)`."""

    def body(carry, times):
        def step(carry):
            y, st = carry
            y, _, _, st, _ = solver.step(term, times[0], times[1], y, None, st, False)
            return y, st

        return jax.lax.cond(times[0] == times[1], lambda c: c, step, carry), None

    return jax.lax.scan(body, (y0, state), (ts[:-1], ts[1:]))[0]


def pad_grid(ts, length):
    return jnp.concatenate([ts, jnp.full(length - ts.shape[0], ts[-1])])


@eqx.filter_jit
def invert_padded(term, solver, y1, state1, ts):
    """`backward_step` along `ts` from its end to its start, skipping zero-length steps (the
    inverse of `solve_padded` with a full state); returns `(y0, state0)`."""

    def body(carry, times):
        def back(carry):
            y, st = carry
            y, _, st, _ = solver.backward_step(term, times[0], times[1], y, None, None, st, False)
            return y, st

        return jax.lax.cond(times[0] == times[1], lambda c: c, back, carry), None

    (y, st), _ = jax.lax.scan(body, (y1, state1), (ts[:-1], ts[1:]), reverse=True)
    return y, st
