r"""O-BELM: the optimal second-order bidirectional explicit linear multistep sampler."""

from typing import ClassVar

import jax.numpy as jnp
from diffrax import RESULTS, AbstractTerm, LocalLinearInterpolation

from .._reversible import AbstractReversibleSolver, _finite, unwrap_term
from ._common import comb, sigma_bar_step, zeros_like


class BELM(AbstractReversibleSolver):
    r"""O-BELM (Wang et al. 2024): the exactly invertible two-step linear multistep method with
    the smallest local truncation error.

    In the variables $\bar x = x/\alpha$, $\bar\sigma = \sigma/\alpha$ the probability-flow ODE is
    $\mathrm{d}\bar x/\mathrm{d}\bar\sigma = \hat\epsilon$. On a grid $t_N > \dots > t_0$ with
    $H_0 = \bar\sigma_i - \bar\sigma_{i-1}$ (this step) and $H_1 = \bar\sigma_{i+1} - \bar\sigma_i$
    (the previous one), O-BELM (the paper's eq. 11, coefficients from the LTE minimisation) is

    $\bar x_{i-1} = \frac{H_0^2}{H_1^2}\bar x_{i+1} + \left(1 - \frac{H_0^2}{H_1^2}\right)\bar x_i
    - \frac{H_0(H_0 + H_1)}{H_1}\hat\epsilon(t_i, x_i)$,

    exact for $\bar x$ quadratic in $\bar\sigma$ (second order, one evaluation per step); its
    first step is DDIM. It is explicit in $\bar x_{i+1}$ too, hence exactly invertible. Written
    as $\bar x_{i-1} = \bar x_i - H_0\hat\epsilon_i + H_0^2 q_i$ with the divided difference
    $q_i = (\bar x_{i+1} - \bar x_i - H_1\hat\epsilon_i)/H_1^2$ (an estimate of
    $\tfrac12\mathrm{d}^2\bar x/\mathrm{d}\bar\sigma^2$), it is a one-step map on
    $(\bar x_i, q_i)$ that needs only $(t_i, t_{i-1})$.

    State layout: the solver state at $t_i$ is $(q_i, \hat\epsilon_i)$, $\hat\epsilon_i =
    \hat\epsilon(t_i, x_i)$ cached; `init` gives $q = 0$ (so the first step is DDIM, and the first
    step of `invert` from data alone is the naive DDIM inversion, as in the paper). With
    $h = \bar\sigma(t_1) - \bar\sigma(t_0)$: forward $\bar x_1 = \bar x_0 + h\hat\epsilon_0 + h^2
    q_0$, $\hat\epsilon_1 = \hat\epsilon(t_1, x_1)$, $q_1 = (\bar x_0 - \bar x_1 +
    h\hat\epsilon_1)/h^2$; backward $\bar x_0 = \bar x_1 - h\hat\epsilon_1 + h^2 q_1$,
    $\hat\epsilon_0 = \hat\epsilon(t_0, x_0)$, $q_0 = (\bar x_1 - \bar x_0 - h\hat\epsilon_0)/h^2$.
    The latent returned by `invert` is $(x_N, (q_N, \hat\epsilon_N))$, equivalent to the paper's
    pair $(x_N, x_{N-1})$. One model evaluation per step (plus one in `init`).

    ??? cite "Reference"

        Wang, Zhang, Liu, Lei, Li & Liu, "BELM: bidirectional explicit linear multi-step
        sampler for exact inversion in diffusion models", NeurIPS 2024.
    """

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar = LocalLinearInterpolation

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        term, t0, _ = unwrap_term(terms, t0, t1)
        return zeros_like(y0), term.noise(t0, y0, args)

    def _parts(self, terms, t0, t1):
        term, t0, t1 = unwrap_term(terms, t0, t1)
        sched = term.schedule
        alpha0, alpha1 = jnp.exp(sched.log_alpha(t0)), jnp.exp(sched.log_alpha(t1))
        return term, t0, t1, alpha0, alpha1, sigma_bar_step(sched, t0, t1)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        term, t0, t1, alpha0, alpha1, h = self._parts(terms, t0, t1)
        q0, eps0 = solver_state
        xbar0 = comb((1 / alpha0, y0))
        xbar1 = comb((1.0, xbar0), (h, eps0), (h**2, q0))
        y1 = _finite(comb((alpha1, xbar1)), "a BELM step")
        eps1 = term.noise(t1, y1, args)
        q1 = comb((1 / h**2, xbar0), (-1 / h**2, xbar1), (1 / h, eps1))
        return y1, None, dict(y0=y0, y1=y1), (q1, eps1), RESULTS.successful

    def backward_step(self, terms, t0, t1, y1, args, ts_state, solver_state, made_jump):
        del ts_state, made_jump
        term, t0, t1, alpha0, alpha1, h = self._parts(terms, t0, t1)
        q1, eps1 = solver_state
        xbar1 = comb((1 / alpha1, y1))
        xbar0 = comb((1.0, xbar1), (-h, eps1), (h**2, q1))
        y0 = _finite(comb((alpha0, xbar0)), "a BELM backward step")
        eps0 = term.noise(t0, y0, args)
        q0 = comb((1 / h**2, xbar1), (-1 / h**2, xbar0), (-1 / h, eps0))
        return y0, dict(y0=y0, y1=y1), (q0, eps0), RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
