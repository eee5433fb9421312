r"""DPM-Solver++ multistep (2M): the standard non-reversible fast sampler."""

from typing import ClassVar

import jax.numpy as jnp
import jax.tree_util as jtu
from diffrax import RESULTS, AbstractTerm, LocalLinearInterpolation

from .._reversible import AbstractInvertibleSolver, _finite, unwrap_term
from ._common import comb, zeros_like


class DPMSolverPP(AbstractInvertibleSolver):
    r"""DPM-Solver++ multistep in data prediction (Lu et al. 2022, Algorithm 2; "2M").

    With $\lambda = \log(\alpha/\sigma)$, $h_i = \lambda_{t_i} - \lambda_{t_{i-1}}$,
    $r_i = h_{i-1}/h_i$ and the data prediction $\hat x_0$ at the grid points,

    $x_{t_i} = \frac{\sigma_{t_i}}{\sigma_{t_{i-1}}}x_{t_{i-1}} - \alpha_{t_i}(e^{-h_i} - 1)D_i$,
    $D_i = (1 + \tfrac{1}{2r_i})\hat x_0(t_{i-1}) - \tfrac{1}{2r_i}\hat x_0(t_{i-2})$;

    the first step (no history) uses $D_1 = \hat x_0(t_0)$ (DPM-Solver++(1) = DDIM). This is
    diffusers' `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
    solver_type="midpoint")`. With `order=1` every step is first order.

    State layout: `(x0_prev, t_prev)`, the previous step's data prediction and its time
    (`t_prev = nan` before the first step). History is used only if it lies on the side the
    step comes from, so the same state works in both directions.

    `backward_step` is the naive inversion: the same multistep formula run from $t_1$ back to
    $t_0$ with the model evaluated at the known point $(t_1, x_1)$ and the history of the
    previous backward steps (first order on the first backward step). It is not the inverse of
    `step`: the round trip is only as accurate as the discretisation. One model evaluation per
    step.

    **Arguments:**

    - `order`: 1 or 2 (default 2).

    ??? cite "Reference"

        Lu, Zhou, Bao, Chen, Li & Zhu, "DPM-Solver++: fast solver for guided sampling of
        diffusion probabilistic models", 2022 (arXiv:2211.01095).
    """

    order_: int = 2

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar = LocalLinearInterpolation

    def __init__(self, order: int = 2):
        self.order_ = order

    def __check_init__(self):
        if self.order_ not in (1, 2):
            raise ValueError(
                f"DPMSolverPP supports order 1 or 2 (the multistep 2M); got order={self.order_}."
            )

    def order(self, terms):
        return self.order_

    def init(self, terms, t0, t1, y0, args):
        dtype = jnp.result_type(t0, float)
        return zeros_like(y0), jnp.full((), jnp.nan, dtype=dtype)

    def _update(self, term, t_from, t_to, y, state, args, history_ok):
        """One DPM-Solver++ update from `(t_from, y)` to `t_to`; returns `(y_new, new_state)`."""
        x0_prev, t_prev = state
        sched = term.schedule
        x0 = term.data(t_from, y, args)
        lam_from, lam_to = sched.log_snr(t_from), sched.log_snr(t_to)
        h = lam_to - lam_from
        use = history_ok(t_prev) & (self.order_ == 2)
        r = jnp.where(use, (lam_from - sched.log_snr(jnp.where(use, t_prev, t_from))) / h, 1.0)
        d = comb((1 + 1 / (2 * r), x0), (-1 / (2 * r), x0_prev))
        d = jtu.tree_map(lambda a, b: jnp.where(use, a, b), d, x0)
        ratio = jnp.exp(sched.log_sigma(t_to) - sched.log_sigma(t_from))
        coef = -jnp.exp(sched.log_alpha(t_to)) * jnp.expm1(-h)
        y_new = comb((ratio, y), (coef, d))
        return y_new, (x0, jnp.asarray(t_from, dtype=t_prev.dtype))

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        term, t0, t1 = unwrap_term(terms, t0, t1)
        # Sampling: the history comes from a noisier time than t0.
        y1, state = self._update(term, t0, t1, y0, solver_state, args, lambda tp: tp > t0)
        y1 = _finite(y1, "a DPM-Solver++ step")
        return y1, None, dict(y0=y0, y1=y1), state, RESULTS.successful

    def backward_step(self, terms, t0, t1, y1, args, ts_state, solver_state, made_jump):
        del ts_state, made_jump
        term, t0, t1 = unwrap_term(terms, t0, t1)
        # Naive inversion: the history comes from a cleaner time than t1.
        y0, state = self._update(term, t1, t0, y1, solver_state, args, lambda tp: tp < t1)
        y0 = _finite(y0, "a DPM-Solver++ inversion step")
        return y0, dict(y0=y0, y1=y1), state, RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
