r"""DDIM sampling with the usual (naive, approximate) DDIM inversion."""

from typing import ClassVar

from diffrax import RESULTS, AbstractTerm, LocalLinearInterpolation

from .._reversible import AbstractInvertibleSolver, _finite, unwrap_term
from ._common import comb, ddim_coefficients


class DDIM(AbstractInvertibleSolver):
    r"""Deterministic DDIM (Song et al. 2021), $\eta = 0$, with naive DDIM inversion.

    One step from $t_n$ to $t_{n+1}$ evaluates the noise prediction at the current point and
    moves along the DDIM map:

    $x_{n+1} = \alpha_{n+1}\,\frac{x_n - \sigma_n\hat\epsilon(t_n, x_n)}{\alpha_n}
    + \sigma_{n+1}\hat\epsilon(t_n, x_n)$.

    It equals `rexjax.Princeps(diffrax.Euler(), "noise")` (and, algebraically,
    `Princeps(Euler(), "data")`): DDIM is the first-order exponential integrator.

    `backward_step` is the *naive* DDIM inversion used for real-image editing (Dhariwal &
    Nichol 2021; Mokady et al. 2023): it evaluates the model at the known point
    $(t_{n+1}, x_{n+1})$ and applies the same map backwards,
    $x_n \approx D(x_{n+1}, \hat\epsilon(t_{n+1}, x_{n+1}); t_{n+1} \to t_n)$. It is not the
    inverse of `step` (the model is evaluated at a different point), so round trips drift with
    the step size: DDIM is an `AbstractInvertibleSolver` but not an `AbstractReversibleSolver`.

    State layout: no solver state (`None`). One model evaluation per step, either way.

    ??? cite "Reference"

        Song, Meng & Ermon, "Denoising diffusion implicit models", ICLR 2021.
    """

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar = LocalLinearInterpolation

    def order(self, terms):
        return 1

    def init(self, terms, t0, t1, y0, args):
        return None

    def _map(self, terms, t, t_new, x, args, where):
        term, t, t_new = unwrap_term(terms, t, t_new)
        a, b = ddim_coefficients(term.schedule, t, t_new)
        return _finite(comb((a, x), (b, term.noise(t, x, args))), where)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        y1 = self._map(terms, t0, t1, y0, args, "a DDIM step")
        return y1, None, dict(y0=y0, y1=y1), None, RESULTS.successful

    def backward_step(self, terms, t0, t1, y1, args, ts_state, solver_state, made_jump):
        del ts_state, solver_state, made_jump
        y0 = self._map(terms, t1, t0, y1, args, "a naive DDIM inversion step")
        return y0, dict(y0=y0, y1=y1), None, RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
