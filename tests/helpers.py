"""Shared test helpers: models with exact answers, error measures, solver registries."""

import diffrax
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
)
