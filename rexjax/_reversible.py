r"""Exponential solvers inside diffrax: `Princeps` (one-step, non-reversible) and `Rex` (the
McCallum–Foster reversible coupling around it), and the `AbstractReversibleSolver` interface."""

import abc
from typing import ClassVar, Literal

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from diffrax import RESULTS, AbstractTerm, ButcherTableau, LocalLinearInterpolation
from diffrax._term import WrapTerm  # noqa: PLC2701  (private: diffrax is pinned exactly)

from ._brownian import AbstractLawsonBrownianPath, ReverseSDE
from ._custom_types import Args, RealScalarLike, Y
from ._lawson import LawsonNoise, LawsonVariables, NoiseTableau, Prediction, lawson_increment
from ._tableaus import EES27, EULER_TABLEAU, ExplicitTableau
from ._term import DiffusionTerm
from ._tree import lin as _lin, scale as _scale


_PREDICTIONS = ("data", "noise")
_AUTO_MAX = 0.999  # the largest coupling "auto" uses: a margin for learned (non-exact) scores


class AbstractInvertibleSolver(diffrax.AbstractSolver):
    r"""A solver with a backward step that maps the output of `step` back towards its input.

    `backward_step` takes the output `(y1, solver_state1)` of `step(t0, t1, y0, ...)` at `t1`
    and returns `(y0, dense_info, solver_state0, result)` at `t0`. The signature follows diffrax
    PR #727. For `AbstractReversibleSolver`s the inverse is exact (algebraic); for others (e.g.
    naive DDIM inversion) it is an approximation. `rexjax.invert` runs it along a grid.
    """

    @abc.abstractmethod
    def backward_step(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y1: Y,
        args: Args,
        ts_state: object,
        solver_state: object,
        made_jump: bool,
    ) -> tuple[Y, dict, object, RESULTS]:
        r"""Go back over one `step` from `t0` to `t1`.

        **Arguments:**

        - `terms`, `args`, `made_jump`: as passed to `step`.
        - `t0`, `t1`: the step's start and end times, as passed to `step`.
        - `y1`, `solver_state`: the step's output at `t1`.
        - `ts_state`: extra time information for multistep methods (the time before `t0`);
            one-step methods ignore it.

        **Returns:** `(y0, dense_info, solver_state0, result)`, the step's input.
        """


class AbstractReversibleSolver(AbstractInvertibleSolver):
    r"""A solver whose `backward_step` is the exact (algebraic) inverse of `step`: both the
    solution and the solver state are reconstructed to round-off. Adjoints that recompute the
    forward trajectory backwards (`rexjax.ReversibleAdjoint`) require this.
    """


def unwrap_term(terms: AbstractTerm, t0, t1) -> tuple[DiffusionTerm | ReverseSDE, object, object]:
    """The `DiffusionTerm` (or `ReverseSDE`) and the true diffusion times of a step.

    `diffrax.diffeqsolve` integrates backwards in time by negating times and wrapping terms;
    the exponential solvers work in the true time, so both are undone here (exactly).
    """
    if isinstance(terms, WrapTerm):
        flip = terms.direction == -1
        terms, t0, t1 = terms.term, jnp.where(flip, -t0, t0), jnp.where(flip, -t1, t1)
    if not isinstance(terms, DiffusionTerm | ReverseSDE):
        raise ValueError(
            "Rex and Princeps solvers integrate a `rexjax.DiffusionTerm` (they use its "
            f"semi-linear split); got {type(terms).__name__}. Wrap your model as "
            "`rexjax.DiffusionTerm(model, schedule, model_type)`."
        )
    return terms, t0, t1


def _additive_srk(base: diffrax.AbstractSolver) -> bool:
    return isinstance(base, diffrax.AbstractSRK) and base.tableau.is_additive_noise()


def base_tableau(base: diffrax.AbstractSolver) -> ExplicitTableau:
    """The tableau of an explicit diffrax RK solver (or `diffrax.Euler`), or the drift tableau
    of an additive-noise stochastic RK solver (ShARK, SRA1, SEA)."""
    if isinstance(base, diffrax.Euler):
        return EULER_TABLEAU
    if _additive_srk(base) and base.tableau.coeffs_kk is None:
        tab = base.tableau
        return ExplicitTableau(tab.c, tuple(tab.a), tab.b_sol, tab.b_error)
    if isinstance(base, diffrax.AbstractERK) and isinstance(base.tableau, ButcherTableau):
        if base.tableau.a_diagonal is None:
            return ExplicitTableau.from_butcher(base.tableau)
    raise ValueError(
        f"The base solver must be an explicit Runge–Kutta method: diffrax.Euler, Midpoint, "
        f"Heun, Ralston, Bosh3, Tsit5, Dopri5, Dopri8 or rexjax.RK4, RK38, SSPRK3, Fehlberg45, "
        f"or an additive-noise SRK: diffrax.ShARK, SRA1, SEA; got {type(base).__name__}."
    )


def noise_tableau(base: diffrax.AbstractSolver) -> NoiseTableau:
    """The Brownian coefficients of an SDE base method: Euler–Maruyama for `diffrax.Euler`,
    the `AdditiveCoeffs` of ShARK, SRA1 and SEA."""
    if isinstance(base, diffrax.Euler):
        return NoiseTableau(np.zeros(1), np.zeros(1), 1.0, 0.0)
    if _additive_srk(base) and base.tableau.coeffs_kk is None:
        tab = base.tableau
        cw, ch = tab.coeffs_w, tab.coeffs_hh
        a_h = np.zeros_like(cw.a) if ch is None else ch.a
        b_h = 0.0 if ch is None else float(ch.b_sol)
        return NoiseTableau(np.asarray(cw.a, float), np.asarray(a_h, float), float(cw.b_sol), b_h)
    raise ValueError(
        f"{type(base).__name__} is not an SDE method: with a Brownian path (a key) the base must "
        "be diffrax.Euler() (Euler–Maruyama) or an additive-noise SRK: diffrax.ShARK(), "
        "diffrax.SRA1() or diffrax.SEA(). Without a key the probability-flow ODE is solved."
    )


def _split_sde(terms, t0, t1, prediction, base):
    """The DiffusionTerm, the Brownian path (None for the ODE) and the true times of a step."""
    term, t0, t1 = unwrap_term(terms, t0, t1)
    if not isinstance(term, ReverseSDE):
        return term, None, t0, t1
    if term.path.prediction != prediction:
        raise ValueError(
            f"The Brownian path lives in the Lawson time of {term.path.prediction!r} prediction "
            f"but the solver integrates the {prediction!r} form: build the path for this solver "
            "(`rexjax.reverse_sde(term, solver, ...)`)."
        )
    noise_tableau(base)  # trace-time check that the base is an SDE method
    return term.term, term.path, t0, t1


def _step_noise(
    path: AbstractLawsonBrownianPath | None, base, v: LawsonVariables, t0, t1
) -> LawsonNoise | None:
    """The noise of the step from t0 to t1 (sampling direction), one path query."""
    if path is None:
        return None
    return path.noise(noise_tableau(base), v.time(t0), v.time(t1))


def _reversed(noise: LawsonNoise | None) -> LawsonNoise | None:
    return None if noise is None else noise.reversed()


def rex_copy_back(y1: Y, yh1: Y, psi_back: Y, r, rho, kappa0) -> Y:
    r"""The first half of Rex's inverse step: $\hat x_n = (\hat x_{n+1} - (1-\rho)x_{n+1})/(\rho
    r) + \kappa_n\Psi_{-h}(x_{n+1})$, with `psi_back` $= \Psi_{-h}(x_{n+1})$."""
    undamped = _lin(jnp.ones_like(rho), yh1, rho - 1, y1)
    return _lin(1 / (rho * r), undamped, kappa0, psi_back)


def rex_solution_back(y1: Y, yh0: Y, psi: Y, r, zeta, kappa0) -> Y:
    r"""The second half: $x_n = x_{n+1}/(r\zeta) + (1 - 1/\zeta)\hat x_n - (\kappa_n/\zeta)
    \Psi_h(\hat x_n)$, with `psi` $= \Psi_h(\hat x_n)$."""
    y0 = _lin(1 / (r * zeta), y1, 1 - 1 / zeta, yh0)
    return _lin(jnp.ones_like(r), y0, -kappa0 / zeta, psi)


def _strong_order(base, terms):
    # Euler-Maruyama has strong order 1 on additive noise (diffrax reports 0.5, for any noise).
    return 1.0 if isinstance(base, diffrax.Euler) else base.strong_order(terms)


def _check_prediction(prediction):
    if prediction not in _PREDICTIONS:
        raise ValueError(
            f"Unknown prediction {prediction!r}: the exponential integrator is built on the "
            "'data' (x0) or the 'noise' (eps) prediction."
        )


def _finite(tree: Y, where: str) -> Y:
    leaves = jtu.tree_leaves(tree)
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
    return eqx.error_if(
        tree,
        ~ok,
        f"rexjax: non-finite values (NaN/inf) appeared in {where}. The model returned NaN/inf "
        "for some input, or the grid reaches a time where the schedule is singular (sigma=0 "
        "for data prediction, alpha=0 for noise prediction).",
    )


class _AbstractExponential(diffrax.AbstractStratonovichSolver):
    """What `Princeps` and `NearReversible` share: one Lawson step of the base tableau."""

    base: eqx.AbstractVar[diffrax.AbstractSolver]
    prediction: eqx.AbstractVar[Prediction]

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar = LocalLinearInterpolation

    def __check_init__(self):
        _check_prediction(self.prediction)
        base_tableau(self.base)

    def order(self, terms):
        return self.base.order(terms)

    def strong_order(self, terms):
        return _strong_order(self.base, terms)

    def init(self, terms, t0, t1, y0, args):
        return None

    def evaluations_per_step(self, adaptive: bool = False) -> int:
        """Model evaluations per step (on fixed grids, error-only stages are not evaluated)."""
        tableau = base_tableau(self.base)
        return tableau.b_sol.shape[0] if adaptive else tableau.num_solution_stages

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        y1, err = _exponential_step(self, terms, t0, t1, y0, args, backward=False)
        return y1, err, dict(y0=y0, y1=y1), None, RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


class Princeps(_AbstractExponential):
    r"""The exponential (Lawson) version of an explicit Runge–Kutta scheme on a diffusion ODE.

    $x_{n+1} = \kappa_{n+1}(x_n/\kappa_n + \Psi_h(t_n \to t_{n+1}, x_n))$; see
    `rexjax.Rex` for the variables. Same order as the base tableau, exact on the linear part of
    the drift; not reversible. Euler + "data" is DDIM / DPM-Solver++(1); Euler + "noise" is
    DPM-Solver-1.

    **Arguments:**

    - `base`: an explicit diffrax RK solver or `diffrax.Euler()` (only its tableau is used);
        for the reverse SDE (a `rexjax.ReverseSDE` term), `diffrax.Euler()` (Euler–Maruyama;
        with "data" this is SDE-DPM-Solver++(1)) or an additive-noise SRK (`diffrax.ShARK()`,
        `SRA1()`, `SEA()`), whose drift tableau alone is used on the ODE.
    - `prediction`: `"data"` (integrate the $\hat x_0$ form) or `"noise"` ($\hat\epsilon$).
    """

    base: diffrax.AbstractSolver
    prediction: Prediction = "data"


def _exponential_step(solver, terms, t0, t1, y, args, *, backward: bool):
    r"""One Princeps step from t0 to t1 (`backward=False`), or the same scheme stepped from t1
    back to t0 (`backward=True`: $\Psi_{-h}$, with the step's Brownian increment reversed).
    Returns the new state and the scaled embedded error (or None)."""
    term, path, t0, t1 = _split_sde(terms, t0, t1, solver.prediction, solver.base)
    v = LawsonVariables(term.schedule, solver.prediction, stochastic=path is not None)
    noise = _step_noise(path, solver.base, v, t0, t1)  # always queried on the ordered interval
    if backward:
        t0, t1, noise = t1, t0, _reversed(noise)
    lk0, lk1 = v.log_kappa(t0), v.log_kappa(t1)
    psi, err = lawson_increment(base_tableau(solver.base), v, term, t0, t1, y, args, noise)
    kappa1 = jnp.exp(lk1)
    where = "a near-reversible backward step" if backward else "a Princeps step"
    y1 = _finite(_lin(jnp.exp(lk1 - lk0), y, kappa1, psi), where)
    return y1, None if err is None else _scale(kappa1, err)


class NearReversible(AbstractInvertibleSolver, _AbstractExponential):
    r"""Near-reversible inversion: `rexjax.Princeps` inverted by stepping the same scheme
    backwards, $x_n \approx \kappa_n(x_{n+1}/\kappa_{n+1} + \Psi_{-h}(t_{n+1}\to t_n,
    x_{n+1}))$.

    One Lawson increment a step (the base scheme's cost, half of `rexjax.Rex`'s) and no
    coupled copy, so no parasitic mode: the linear stability is the base tableau's own. The
    inverse is *approximate*: a step is undone up to $\Phi_{-h}\circ\Phi_h - \mathrm{id} =
    O(h^{m+1})$, where $m$ is the base's antisymmetric order (`rexjax.antisymmetric_order`), so
    a round trip over a grid misses by $O(h^m)$. Use an effectively symmetric base:
    `rexjax.EES27()` ($m = 7$) or `rexjax.EES25()` ($m = 5$); with Euler ($m = 1$) this is
    the usual naive DDIM inversion. `rexjax.ReversibleAdjoint` refuses it (its gradients would
    be approximate); use `diffrax.RecursiveCheckpointAdjoint`.

    **Arguments:** as `rexjax.Princeps` (default base `rexjax.EES27()`).

    ??? cite "References"

        Barancikova, Shmelev, Salvi, "Stable and near-reversible diffusion ODE solvers for
        image editing", arXiv:2605.16399, 2026. Shmelev et al., arXiv:2507.21006, 2025.
    """

    base: diffrax.AbstractSolver = eqx.field(default_factory=lambda: EES27())
    prediction: Prediction = "data"

    def backward_step(self, terms, t0, t1, y1, args, ts_state, solver_state, made_jump):
        del ts_state, solver_state, made_jump
        y0, _ = _exponential_step(self, terms, t0, t1, y1, args, backward=True)
        return y0, dict(y0=y0, y1=y1), None, RESULTS.successful


class Rex(AbstractReversibleSolver, diffrax.AbstractStratonovichSolver):
    r"""Rex: the McCallum–Foster reversible coupling of an exponential (Lawson) RK step.

    The state is a pair $(x, \hat x)$: $x$ is the solution (diffrax's `y`) and $\hat x$ lives in
    the solver state, initialised to $x$. With coupling $\zeta \in (0, 1]$,
    $r = \kappa_{n+1}/\kappa_n$ and the Lawson increment $\Psi$ (see `rexjax.Princeps`),

    $x_{n+1} = r(\zeta x_n + (1-\zeta)\hat x_n) + \kappa_{n+1}\Psi_h(t_n\to t_{n+1}, \hat x_n)$,

    $\hat x_{n+1} = \rho\,[r\hat x_n - \kappa_{n+1}\Psi_{-h}(t_{n+1}\to t_n, x_{n+1})] +
    (1-\rho)\,x_{n+1}$,

    where $\rho = 1$ (the McCallum–Foster pair) except for `coupling="auto"` with noise
    prediction (below). It has the closed-form inverse

    $\hat x_n = (\hat x_{n+1} - (1-\rho)x_{n+1})/(\rho r) + \kappa_n\Psi_{-h}(t_{n+1}\to t_n,
    x_{n+1})$,

    $x_n = x_{n+1}/(r\zeta) + (1 - 1/\zeta)\hat x_n - (\kappa_n/\zeta)\Psi_h(t_n\to t_{n+1},
    \hat x_n)$.

    Every step is invertible to round-off for any $\zeta, \rho \in (0, 1]$ (a different pair per
    step too), with the base tableau's order; each step costs two increments (twice the base
    scheme's evaluations). In terms of the base step $\Phi_h$ (in $x$), $x_{n+1} =
    \Phi_h(\hat x_n) + r\zeta(x_n - \hat x_n)$ and the gap $e = x - \hat x$ obeys $e_{n+1} =
    \rho r(\Phi_{-h}(x_{n+1}) - \hat x_n)$: it is fed by the base's asymmetry $\Phi_{-h}\circ
    \Phi_h - \mathrm{id} = O(h^{m+1})$ ($m$ its antisymmetric order), grows through a
    parasitic mode $\rho\zeta r^2\,\partial\Phi_{-h}$ (on $y' = ay$ in the Lawson variables:
    eigenvalues about $R(ha)$, the base's, and $\rho\zeta/R(ha)$, growing along contracting
    directions unless $\rho\zeta \le e^{-|ha|}$), and leaks into $x$ through $\partial\Phi_h -
    r\zeta$. Effectively symmetric bases keep $\hat x$ next to $x$ (`rexjax.trajectory_gap`
    measures it). Embedded error estimates (for adaptive steps) come from the forward
    increment.

    On the reverse SDE (a `rexjax.ReverseSDE` term, e.g. `rexjax.sample(..., key=key)`), $\Psi_h$
    uses the Brownian increment $W$ and space-time Lévy area $H$ of the step in the Lawson time
    and $\Psi_{-h}$ the same increment reversed, $(-W, H)$; the backward step regenerates both
    from the path, so the inverse is exact without storing the noise.

    **Arguments:**

    - `base`: an explicit diffrax RK solver or `diffrax.Euler()` (only its tableau is used);
        for the reverse SDE, `diffrax.Euler()` (Euler–Maruyama) or an additive-noise SRK
        (`diffrax.ShARK()`, `SRA1()`, `SEA()`). Default `rexjax.EES27()`, effectively
        symmetric: Rex's accuracy at practical step counts depends on how well the base
        retraces its own steps (its antisymmetric order, `rexjax.antisymmetric_order`) far more
        than on its order; see the README's table of safe configurations.
    - `prediction`: `"data"` (default) or `"noise"`: which form of the drift is integrated
        (independent of what the model outputs; `DiffusionTerm` converts exactly).
    - `coupling`: $\zeta \in (0, 1]$ (with $\rho = 1$), or `"auto"` (default): per step,
        $\zeta = 0.999$ for data prediction and, for noise prediction, the data prediction's
        pair carried over to $x$ with extra damping of the copy (see `step_coupling`).
        Measured on the analytic mixture (`experiments/coarse_steps.py`: 256 samples, 10–100
        log-SNR steps, float64 and float32): `Rex()` and `Rex(prediction="noise")` are within
        1.44x and 1.01x of `Princeps(EES27())` in the same form, with round trips of at most
        8e-15 (float64) and 4e-6 (float32).

    ??? cite "References"

        McCallum & Foster, "Efficient, accurate and stable gradients for neural ODEs", 2024.
        Blasingame & Liu, "Rex: reversible exponential solvers for diffusion models", 2025.
    """

    base: diffrax.AbstractSolver = eqx.field(default_factory=lambda: EES27())
    prediction: Prediction = "data"
    coupling: float | Literal["auto"] = "auto"

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar = LocalLinearInterpolation

    def __check_init__(self):
        _check_prediction(self.prediction)
        base_tableau(self.base)
        if self.coupling == "auto":
            return
        if not (isinstance(self.coupling, int | float) and 0 < self.coupling <= 1):
            raise ValueError(
                f"coupling must be a number in (0, 1] or 'auto' (a coupling per step, the "
                f"ratio of consecutive Lawson times); got {self.coupling!r}."
            )

    def step_coupling(self, v: LawsonVariables, t0, t1):
        r"""The coupling $\zeta_n$ of the step from `t0` to `t1` (the same number in both
        directions): the fixed `coupling`, or with `"auto"` $0.999\,q_n$, where $q_n \le 1$
        is the ratio of the data prediction's Lawson ratio $r$ to this form's (1 for data
        prediction; $e^{-|\Delta\lambda_n|}$ for noise prediction on the ODE,
        $e^{-2|\Delta\lambda_n|}$ on the SDE).

        - Data prediction: 0.999. Its sampling direction expands ($h\,\partial f/\partial Y
            \succeq 0$ for exact scores), where the parasitic mode decays for any coupling;
            0.999 leaves a margin for learned scores.
        - Noise prediction: $r\zeta_n$, the factor by which the gap leaks into $x$, is then
            the data prediction's ($0.999\,r^{\rm data}$), and with `copy_damping` the pair
            is the data prediction's pair in $x$ up to an extra damping of the copy. Its
            residual drift contracts by up to $1 - e^{-|\Delta\lambda_n|}$ a step (ODE), where
            a coupling near 1 lets the parasitic mode grow.
        """
        if not isinstance(self.coupling, str):
            return jnp.asarray(self.coupling)
        return _AUTO_MAX * self._form_ratio(v, t0, t1)

    def copy_damping(self, v: LawsonVariables, t0, t1):
        r"""The damping $\rho_n$ of the copy's update: 1 for a fixed coupling and for data
        prediction; $q_n^{5/4}$ for noise prediction with `"auto"` ($q_n$ as in
        `step_coupling`).

        $\rho = q_n$ would make the pair exactly the data prediction's in $x$ (the gap
        recursion $e_{n+1} = \rho r(\Phi_{-h}(x_{n+1}) - \hat x_n)$ and its parasitic mode
        $\rho\zeta r^2\partial\Phi_{-h} = 0.999\,(r^{\rm data})^2\partial\Phi_{-h}$); the further
        $q_n^{1/4}$ absorbs the noise form's larger asymmetry (its linear part $-Y$ at the
        noise end is integrated by the base, not exactly), at the price of the inverse, which
        divides the gap by $\rho$. The exponent is measured, not derived (EES27 base, ratio to
        the base at 10–100 log-SNR steps; worst float32 round trip):

        | $\rho$ | mixture (256 samples) | digits model |
        |---|---|---|
        | $q$ | 1.51x at 10 steps; 3e-6 | 1.54x at 15 steps; 4e-6 |
        | $q^{5/4}$ | 1.01x; 2e-6 | 1.37x; 2e-6 |
        | $q^{3/2}$ | 1.01x; 4e-6 | 1.27x; 1.5e-4 |

        The old rule ($\zeta = e^{-2|\Delta\lambda|}$, $\rho = 1$) gave 1.8x on the mixture and
        3.8x on the digits model.
        """
        if not isinstance(self.coupling, str):
            return jnp.ones(())
        return self._form_ratio(v, t0, t1) ** 1.25

    @staticmethod
    def _form_ratio(v: LawsonVariables, t0, t1):
        r"""$q_n = \min(r^{\rm data}/r, r/r^{\rm data})$ over the step: 1 for data
        prediction."""
        if v.prediction == "data":
            return jnp.ones(())
        data = LawsonVariables(v.schedule, "data", stochastic=v.stochastic)
        log_q = (data.log_kappa(t1) - data.log_kappa(t0)) - (v.log_kappa(t1) - v.log_kappa(t0))
        return jnp.exp(-jnp.abs(log_q))

    def order(self, terms):
        return self.base.order(terms)

    def strong_order(self, terms):
        return _strong_order(self.base, terms)

    def init(self, terms, t0, t1, y0, args):
        return y0

    def evaluations_per_step(self, adaptive: bool = False) -> int:
        """Model evaluations per step: two Lawson increments (on fixed grids, error-only stages
        are not evaluated; the reverse increment never needs them)."""
        tableau = base_tableau(self.base)
        forward = tableau.b_sol.shape[0] if adaptive else tableau.num_solution_stages
        return forward + tableau.num_solution_stages

    def _parts(self, terms, t0, t1):
        term, path, t0, t1 = _split_sde(terms, t0, t1, self.prediction, self.base)
        v = LawsonVariables(term.schedule, self.prediction, stochastic=path is not None)
        lk0, lk1 = v.log_kappa(t0), v.log_kappa(t1)
        noise = _step_noise(path, self.base, v, t0, t1)
        return term, t0, t1, v, jnp.exp(lk1 - lk0), jnp.exp(lk0), jnp.exp(lk1), noise

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        term, t0, t1, v, r, kappa0, kappa1, noise = self._parts(terms, t0, t1)
        tableau, zeta = base_tableau(self.base), self.step_coupling(v, t0, t1)
        rho = self.copy_damping(v, t0, t1)
        yh0 = solver_state
        psi, err = lawson_increment(tableau, v, term, t0, t1, yh0, args, noise)
        y1 = _lin(r, _lin(zeta, y0, 1 - zeta, yh0), kappa1, psi)
        y1 = _finite(y1, "a Rex step (forward substep)")
        psi_back, _ = lawson_increment(tableau, v, term, t1, t0, y1, args, _reversed(noise))
        yh1 = _lin(rho, _lin(r, yh0, -kappa1, psi_back), 1 - rho, y1)
        yh1 = _finite(yh1, "a Rex step (reverse substep)")
        y_error = None if err is None else _scale(kappa1, err)
        return y1, y_error, dict(y0=y0, y1=y1), yh1, RESULTS.successful

    def backward_step(self, terms, t0, t1, y1, args, ts_state, solver_state, made_jump):
        del ts_state, made_jump
        term, t0, t1, v, r, kappa0, kappa1, noise = self._parts(terms, t0, t1)
        tableau, zeta = base_tableau(self.base), self.step_coupling(v, t0, t1)
        rho = self.copy_damping(v, t0, t1)
        psi_back, _ = lawson_increment(tableau, v, term, t1, t0, y1, args, _reversed(noise))
        yh0 = rex_copy_back(y1, solver_state, psi_back, r, rho, kappa0)
        yh0 = _finite(yh0, "a Rex backward step")
        psi, _ = lawson_increment(tableau, v, term, t0, t1, yh0, args, noise)
        y0 = _finite(rex_solution_back(y1, yh0, psi, r, zeta, kappa0), "a Rex backward step")
        return y0, dict(y0=y0, y1=y1), yh0, RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
