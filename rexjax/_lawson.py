r"""The exponential (Lawson) step $\Psi$ for any explicit Runge–Kutta tableau.

The probability-flow drift is semi-linear. With an integrating factor $\kappa(t)$ and a new time
$\varsigma(t)$, the state $Y = x/\kappa$ obeys $\mathrm{d}Y/\mathrm{d}\varsigma = f(t, \kappa Y)$:

| prediction | $\kappa$ | $\varsigma$ | $f$ |
|---|---|---|---|
| data | $\sigma$ | $\alpha/\sigma = e^{\lambda}$ | $\hat x_0$ |
| noise | $\alpha$ | $\sigma/\alpha = e^{-\lambda}$ | $\hat\epsilon$ |

The reverse-time SDE $\mathrm{d}x = (a x + \tfrac{g^2}{\sigma}\hat\epsilon)\,\mathrm{d}t +
g\,\mathrm{d}\bar W_t$ ($a = \dot\alpha/\alpha$, $g^2 = -2\sigma^2\dot\lambda$) becomes, in the
variables below, $\mathrm{d}Y = f\,\mathrm{d}\varsigma + \mathrm{d}W_\varsigma$ with a standard
Brownian motion $W$ in the Lawson time (its increment over a step has variance
$|\Delta\varsigma|$; it runs in the sampling direction):

| prediction (SDE) | $\kappa$ | $\varsigma$ | $f$ |
|---|---|---|---|
| data | $\sigma^2/\alpha$ | $\alpha^2/\sigma^2 = e^{2\lambda}$ | $\hat x_0$ |
| noise | $\alpha$ | $\sigma^2/\alpha^2 = e^{-2\lambda}$ | $\hat\epsilon/\sqrt{\varsigma}$ |

An additive-noise stochastic RK step (diffrax's `StochasticButcherTableau` with `AdditiveCoeffs`:
ShARK, SRA1, SEA; Euler–Maruyama is Euler with $b^W = 1$) adds $a^W_i W + a^H_i H$ to stage $i$
and $b^W W + b^H H$ to $\Psi$, where $W$, $H$ are the Brownian increment and space-time Lévy
area over the step in the Lawson time. The diffusion is the identity in these variables, so
no time-variation correction is needed. With data prediction, Euler–Maruyama is
SDE-DPM-Solver++(1).

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

import dataclasses
from typing import Literal, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array

from ._custom_types import Args, RealScalarLike, Y
from ._schedules import AbstractSchedule
from ._tableaus import ExplicitTableau
from ._term import DiffusionTerm
from ._tree import add as _add, scale as _scale


Prediction = Literal["data", "noise"]


class LawsonVariables(eqx.Module):
    r"""The change of variables $(t, x) \mapsto (\varsigma, Y = x/\kappa)$ for one prediction.

    **Arguments:**

    - `schedule`: the noise schedule.
    - `prediction`: `"data"` or `"noise"`.
    - `stochastic`: `False` for the probability-flow ODE, `True` for the reverse-time SDE
        (the two use different $\kappa$, $\varsigma$ and $f$; see the module docstring).
    """

    schedule: AbstractSchedule
    prediction: Prediction
    stochastic: bool = eqx.field(static=True, default=False)

    def _sign(self) -> float:
        return 1.0 if self.prediction == "data" else -1.0

    def log_kappa(self, t: RealScalarLike) -> Array:
        r"""$\log\kappa(t)$: $\log\sigma$ (ODE) or $\log(\sigma^2/\alpha)$ (SDE) for data
        prediction, $\log\alpha$ for noise."""
        if self.prediction == "data":
            if self.stochastic:
                return 2 * self.schedule.log_sigma(t) - self.schedule.log_alpha(t)
            return self.schedule.log_sigma(t)
        return self.schedule.log_alpha(t)

    def time(self, t: RealScalarLike) -> Array:
        r"""The Lawson time: $e^{\pm\lambda(t)}$ (ODE) or $e^{\pm 2\lambda(t)}$ (SDE)."""
        if self.stochastic:
            return jnp.exp(2 * self._sign() * self.schedule.log_snr(t))
        return jnp.exp(self._sign() * self.schedule.log_snr(t))

    def inverse_time(self, s: RealScalarLike) -> Array:
        r"""$t(\varsigma)$, through the schedule's inverse log-SNR."""
        if self.stochastic:
            return self.schedule.t_from_log_snr(self._sign() * (0.5 * jnp.log(s)))
        return self.schedule.t_from_log_snr(self._sign() * jnp.log(s))

    def f(self, term: DiffusionTerm, t: RealScalarLike, x: Y, args: Args) -> Y:
        r"""The transformed vector field: the model's data or noise prediction (for the noise
        SDE, $\hat\epsilon/\sqrt{\varsigma} = e^{\lambda}\hat\epsilon$)."""
        if self.prediction == "data":
            return term.data(t, x, args)
        if self.stochastic:
            return _scale(jnp.exp(self.schedule.log_snr(t)), term.noise(t, x, args))
        return term.noise(t, x, args)


@dataclasses.dataclass(frozen=True)
class NoiseTableau:
    r"""The Brownian coefficients of an additive-noise stochastic RK method (not a pytree).

    Stage $i$ adds $a^W_i W + a^H_i H$; the step adds $b^W W + b^H H$. `uses_levy_area` says
    whether the space-time Lévy area $H$ is needed. Checked on construction: one coefficient
    per stage, and $b^W = 1$ (consistency).
    """

    a_w: np.ndarray
    a_h: np.ndarray
    b_w: float
    b_h: float

    def __post_init__(self):
        if self.a_w.ndim != 1 or self.a_w.shape != self.a_h.shape:
            raise ValueError("a_w and a_h need one entry per stage.")
        if self.b_w != 1:
            raise ValueError(f"b_w must be 1 for a consistent scheme; got {self.b_w}.")

    @property
    def num_stages(self) -> int:
        return self.a_w.shape[0]

    @property
    def uses_levy_area(self) -> bool:
        return bool(np.any(self.a_h != 0) or self.b_h != 0)


class LawsonNoise(NamedTuple):
    """The Brownian increment `w` and space-time Lévy area `h` (or `None`) of one step in the
    Lawson time, in the step's direction, with the method's coefficients `tableau`."""

    tableau: NoiseTableau
    w: Y
    h: Y | None

    def reversed(self) -> "LawsonNoise":
        r"""The same increment seen on the reversed substep: $W \to -W$, $H$ unchanged."""
        return LawsonNoise(self.tableau, jtu.tree_map(jnp.negative, self.w), self.h)

    def combination(self, cw: float, ch: float) -> Y | None:
        """`cw W + ch H` (None when both coefficients are zero)."""
        cw, ch = float(cw), float(ch)
        out = None if cw == 0 else jtu.tree_map(lambda w: cw * w, self.w)
        if ch != 0 and self.h is not None:
            hh = jtu.tree_map(lambda h: ch * h, self.h)
            out = hh if out is None else _add(out, hh)
        return out


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


def lawson_increment(
    tableau: ExplicitTableau,
    variables: LawsonVariables,
    term: DiffusionTerm,
    t0: RealScalarLike,
    t1: RealScalarLike,
    y0: Y,
    args: Args,
    noise: LawsonNoise | None = None,
) -> tuple[Y, Y | None]:
    r"""The Lawson increment $\Psi$ from $(t_0, y_0)$ to $t_1$ (either direction in time).

    **Arguments:**

    - `tableau`: the (drift) tableau of the base method.
    - `variables`: the Lawson variables (ODE or SDE).
    - `term`: the `DiffusionTerm`.
    - `t0`, `t1`, `y0`, `args`: the step.
    - `noise`: for the SDE, the Brownian increment and Lévy area over the step (in the step's
        direction, in the Lawson time) with the method's noise coefficients; `None` for the ODE.

    **Returns:** `(psi, psi_error)` in the transformed units ($x_1 = \kappa_1(y_0/\kappa_0 +
    \Psi)$); `psi_error` is the embedded error $h\sum_i (b_i - \hat b_i) k_i$ (same units), or
    `None` when the tableau has no embedded error.
    """
    s0, s1 = variables.time(t0), variables.time(t1)
    h = s1 - s0
    kappa0 = jnp.exp(variables.log_kappa(t0))
    ys0 = _scale(1 / kappa0, y0)
    if noise is not None and noise.tableau.num_stages != tableau.b_sol.shape[0]:
        raise ValueError("The noise and drift tableaus have different numbers of stages.")

    def stage_noise(i):
        if noise is None:
            return None
        return noise.combination(noise.tableau.a_w[i], noise.tableau.a_h[i])

    n0 = stage_noise(0)
    if n0 is None:
        ks = [variables.f(term, t0, y0, args)]
    else:
        ks = [variables.f(term, t0, _scale(kappa0, _add(ys0, n0)), args)]
    for i, (c_i, a_i) in enumerate(zip(tableau.c, tableau.a_lower, strict=True)):
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
        n_i = stage_noise(i + 1)
        if n_i is not None:
            z_i = _add(z_i, n_i)
        x_i = _scale(jnp.exp(variables.log_kappa(t_i)), z_i)
        ks.append(variables.f(term, t_i, x_i, args))
    psi = _scale(h, _weighted_sum(tableau.b_sol, ks))
    if noise is not None:
        psi = _add(psi, noise.combination(noise.tableau.b_w, noise.tableau.b_h))
    if tableau.b_error is None:
        return psi, None
    return psi, _scale(h, _weighted_sum(tableau.b_error, ks))
