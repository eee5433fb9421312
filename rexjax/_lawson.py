r"""The exponential (Lawson) step $\Psi$ for any explicit Runge–Kutta tableau.

The probability-flow drift is semi-linear. With an integrating factor $\kappa(t)$ and a new time
$\varsigma(t)$, the state $Y = x/\kappa$ obeys $\mathrm{d}Y/\mathrm{d}\varsigma = f(t, \kappa Y)$:

| prediction | $\kappa$ | $\varsigma$ | $f$ |
|---|---|---|---|
| data | $\sigma$ | $\alpha/\sigma = e^{\lambda}$ | $\hat x_0$ |
| noise | $\alpha$ | $\sigma/\alpha = e^{-\lambda}$ | $\hat\epsilon$ |

One step of a tableau $(a, b, c)$ from $t_0$ to $t_1$ in these variables, with
$h = \varsigma(t_1) - \varsigma(t_0)$, stage times $t_i = t(\varsigma_0 + c_i h)$ computed through
the inverse schedule, $Z_i = x_0/\kappa_0 + h\sum_j a_{ij}k_j$ and $k_i = f(t_i, \kappa(t_i)Z_i)$,
gives $x_1 = \kappa_1(x_0/\kappa_0 + \Psi)$ with $\Psi = h\sum_i b_i k_i$. It is exact when $f$ is
constant, whatever the step: Euler with data prediction is DDIM (= DPM-Solver++(1)), with noise
prediction DPM-Solver-1.

??? cite "References"

    Lawson, "Generalized Runge–Kutta processes for stable systems with large Lipschitz
    constants", SIAM J. Numer. Anal. 1967. Lu et al., "DPM-Solver++", 2022. Blasingame &
    Liu, "Rex: reversible exponential solvers for diffusion models", 2025.
"""

from typing import Literal

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array

from ._custom_types import Args, RealScalarLike, Y
from ._schedules import AbstractSchedule
from ._tableaus import ExplicitTableau
from ._term import DiffusionTerm


Prediction = Literal["data", "noise"]


class LawsonVariables(eqx.Module):
    r"""The change of variables $(t, x) \mapsto (\varsigma, Y = x/\kappa)$ for one prediction."""

    schedule: AbstractSchedule
    prediction: Prediction

    def _sign(self) -> float:
        return 1.0 if self.prediction == "data" else -1.0

    def log_kappa(self, t: RealScalarLike) -> Array:
        r"""$\log\kappa(t)$: $\log\sigma$ for data prediction, $\log\alpha$ for noise."""
        if self.prediction == "data":
            return self.schedule.log_sigma(t)
        return self.schedule.log_alpha(t)

    def time(self, t: RealScalarLike) -> Array:
        r"""The Lawson time $\varsigma(t) = e^{\pm\lambda(t)}$."""
        return jnp.exp(self._sign() * self.schedule.log_snr(t))

    def inverse_time(self, s: RealScalarLike) -> Array:
        r"""$t(\varsigma)$, through the schedule's inverse log-SNR."""
        return self.schedule.t_from_log_snr(self._sign() * jnp.log(s))

    def f(self, term: DiffusionTerm, t: RealScalarLike, x: Y, args: Args) -> Y:
        r"""The transformed vector field: the model's data or noise prediction."""
        if self.prediction == "data":
            return term.data(t, x, args)
        return term.noise(t, x, args)


def _weighted_sum(weights: np.ndarray, ks: list) -> Y | None:
    """sum_j weights[j] k_j over the non-zero (static) weights; None if all are zero."""
    terms = [(float(w), k) for w, k in zip(weights, ks, strict=True) if w != 0]
    if not terms:
        return None
    w0, k0 = terms[0]
    out = jtu.tree_map(lambda x: w0 * x, k0)
    for w, k in terms[1:]:
        out = jtu.tree_map(lambda o, x, w=w: o + w * x, out, k)
    return out


def _scale(a: Array, tree: Y) -> Y:
    return jtu.tree_map(lambda x: a.astype(x.dtype) * x, tree)


def _add(x: Y, y: Y) -> Y:
    return jtu.tree_map(jnp.add, x, y)


def lawson_increment(
    tableau: ExplicitTableau,
    variables: LawsonVariables,
    term: DiffusionTerm,
    t0: RealScalarLike,
    t1: RealScalarLike,
    y0: Y,
    args: Args,
) -> tuple[Y, Y | None]:
    r"""The Lawson increment $\Psi$ from $(t_0, y_0)$ to $t_1$ (either direction in time).

    **Returns:** `(psi, psi_error)` in the transformed units ($x_1 = \kappa_1(y_0/\kappa_0 +
    \Psi)$); `psi_error` is the embedded error $h\sum_i (b_i - \hat b_i) k_i$ (same units), or
    `None` when the tableau has no embedded error.
    """
    s0, s1 = variables.time(t0), variables.time(t1)
    h = s1 - s0
    kappa0 = jnp.exp(variables.log_kappa(t0))
    ys0 = _scale(1 / kappa0, y0)
    ks = [variables.f(term, t0, y0, args)]
    for c_i, a_i in zip(tableau.c, tableau.a_lower, strict=True):
        # Stage times are placed in the Lawson time and mapped back through the schedule;
        # the end points are used exactly.
        if c_i == 0:
            t_i = t0
        elif c_i == 1:
            t_i = t1
        else:
            t_i = variables.inverse_time(s0 + float(c_i) * h)
        increment = _weighted_sum(a_i, ks)
        z_i = ys0 if increment is None else _add(ys0, _scale(h, increment))
        x_i = _scale(jnp.exp(variables.log_kappa(t_i)), z_i)
        ks.append(variables.f(term, t_i, x_i, args))
    psi = _scale(h, _weighted_sum(tableau.b_sol, ks))
    if tableau.b_error is None:
        return psi, None
    return psi, _scale(h, _weighted_sum(tableau.b_error, ks))
