r"""EDICT: exact inversion by two coupled DDIM sequences."""

from typing import ClassVar

from diffrax import RESULTS, AbstractTerm, LocalLinearInterpolation

from .._reversible import AbstractReversibleSolver, _finite, unwrap_term
from ._common import comb, ddim_coefficients


class EDICT(AbstractReversibleSolver):
    r"""EDICT (Wallace, Gokul & Naik 2023): two coupled DDIM sequences with mixing $p$.

    State: the pair $(x, y)$; $x$ is diffrax's `y` (the sample) and $y$ is the solver state,
    initialised to $x$. With the DDIM coefficients $a = \alpha_{n+1}/\alpha_n$,
    $b = \sigma_{n+1} - a\sigma_n$ and the noise prediction evaluated at the step's start time
    $t_n$ (eqs. 11–14 of the paper):

    $x^{\rm inter} = a x_n + b\hat\epsilon(t_n, y_n)$,
    $y^{\rm inter} = a y_n + b\hat\epsilon(t_n, x^{\rm inter})$,
    $x_{n+1} = p x^{\rm inter} + (1-p) y^{\rm inter}$,
    $y_{n+1} = p y^{\rm inter} + (1-p) x_{n+1}$,

    inverted in closed form (eqs. 15–18):

    $y^{\rm inter} = (y_{n+1} - (1-p)x_{n+1})/p$,
    $x^{\rm inter} = (x_{n+1} - (1-p)y^{\rm inter})/p$,
    $y_n = (y^{\rm inter} - b\hat\epsilon(t_n, x^{\rm inter}))/a$,
    $x_n = (x^{\rm inter} - b\hat\epsilon(t_n, y_n))/a$.

    Two model evaluations per step. The averaging layers amplify round-off by about $1/p$ per
    step in the inverse direction; the first-order DDIM map limits the accuracy.

    **Arguments:**

    - `p`: the mixing coefficient in $(0, 1]$ (the paper's 0.93).

    ??? cite "Reference"

        Wallace, Gokul & Naik, "EDICT: exact diffusion inversion via coupled transformations",
        CVPR 2023.
    """

    p: float = 0.93

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar = LocalLinearInterpolation

    def __check_init__(self):
        if not (isinstance(self.p, int | float) and 0 < self.p <= 1):
            raise ValueError(
                f"EDICT's mixing coefficient p must be a number in (0, 1]; got {self.p!r}. "
                "The paper uses p=0.93."
            )

    def order(self, terms):
        return 1

    def init(self, terms, t0, t1, y0, args):
        return y0

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        term, t0, t1 = unwrap_term(terms, t0, t1)
        a, b = ddim_coefficients(term.schedule, t0, t1)
        p = self.p
        x, y = y0, solver_state
        x_inter = comb((a, x), (b, term.noise(t0, y, args)))
        y_inter = comb((a, y), (b, term.noise(t0, x_inter, args)))
        x1 = _finite(comb((p, x_inter), (1 - p, y_inter)), "an EDICT step")
        y1 = _finite(comb((p, y_inter), (1 - p, x1)), "an EDICT step")
        return x1, None, dict(y0=y0, y1=x1), y1, RESULTS.successful

    def backward_step(self, terms, t0, t1, y1, args, ts_state, solver_state, made_jump):
        del ts_state, made_jump
        term, t0, t1 = unwrap_term(terms, t0, t1)
        a, b = ddim_coefficients(term.schedule, t0, t1)
        p = self.p
        x1, y1_ = y1, solver_state
        y_inter = comb((1 / p, y1_), (-(1 - p) / p, x1))
        x_inter = comb((1 / p, x1), (-(1 - p) / p, y_inter))
        y0 = comb((1 / a, y_inter), (-b / a, term.noise(t0, x_inter, args)))
        x0 = comb((1 / a, x_inter), (-b / a, term.noise(t0, y0, args)))
        x0 = _finite(x0, "an EDICT backward step")
        return x0, dict(y0=x0, y1=x1), _finite(y0, "an EDICT backward step"), RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
