r"""Log-densities of samples from a diffusion / flow-matching model, through any solver.

A probability-flow ODE $\dot x = v(t, x)$ carries densities by the instantaneous change of
variables $\tfrac{\mathrm{d}}{\mathrm{d}t}\log p_t(x_t) = -\nabla\cdot v(t, x_t)$. Two different
"log q" follow for a sample $x$ produced from noise $z$:

**(A) the accumulated divergence** (what continuous normalising flows and Boltzmann generators
use): solve the augmented ODE $\dot x = v$, $\dot\ell = \nabla\cdot v$ along with the sample and
take $\log q(x) = \log p_{\rm base}(z) - \int_{t_{\rm noise}}^{t_{\rm data}}\nabla\cdot v\,
\mathrm{d}t$. This is the density of the *exact* flow map, integrated along a *discretised*
path: for any solver (Rex included) it differs from the density of the map the solver actually
computes by the discretisation error. `sample_with_log_prob` (noise to data) and `flow_log_prob`
(log q of given points, data to noise) compute it with any diffrax solver, `rexjax.Princeps` or
`rexjax.Rex`, on fixed or adaptive steps. The augmented state is solved as one system: the
augmented model returns $(v, \nabla\cdot v)$ as a flow-matching velocity ("flow" model type),
which `DiffusionTerm` converts exactly into the data/noise predictions the Lawson solvers use.

**(B) the exact density of the discrete solver map** $\Phi: z \mapsto x_N$ on a fixed grid:
$\log q(x_N) = \log p_{\rm base}(z) - \log|\det\partial x_N/\partial z|$, the Jacobian taken by
forward-mode autodiff through the whole solve (`discrete_log_prob`; $D$ Jacobian-vector passes).
Valid whenever $\Phi$ is injective (it need not be reversible); then self-normalised importance
weights $p/q$ are consistent and $\hat Z$ is unbiased. On adaptive grids diffrax's step-size
controller stops gradients through the step size, so the Jacobian would miss the step's
dependence on $z$ (error $O(\mathrm{tol})$): freeze the grid first (`rexjax.adaptive_grid` on
a pilot batch) and use (B) on the frozen grid. For `rexjax.Rex` the map starts tied
($\hat x_0 = x_0 = z$) and returns $x_N$; that is a map $\mathbb{R}^D\to\mathbb{R}^D$ like any
other.

**The full Rex map** $(x_n, \hat x_n) \mapsto (x_{n+1}, \hat x_{n+1})$ is the composition of
two shears, $x_{n+1} = r\zeta x_n + g(\hat x_n)$ and $\hat x_{n+1} = \rho r\hat x_n +
h(x_{n+1})$ ($r = \kappa_{n+1}/\kappa_n$, $\rho$ the copy's damping, 1 except for noise
prediction with `coupling="auto"`), so its Jacobian determinant is the constant
$(r^2\zeta\rho)^D$ a step and $\log|\det| = D\sum_n\log(r_n^2\zeta_n\rho_n)$ over a grid
(`rex_pair_log_det`). It does not give $q(x_N)$ (the tied start $\hat x_0 = x_0$ is a
degenerate base) but gives exact weights on the augmented space $(x, \hat x)$ when $\hat x_0$
is drawn at random.

**Weights.** With an unnormalised target $\tilde p = Z p$, $\log w = \log\tilde p(x) - \log
q(x)$; `kish_ess` $=(\sum w)^2/(N\sum w^2)$, `log_normaliser` $=\log\frac1N\sum w$ (its
exponential is unbiased for $Z$ when $q$ is the exact density of the sampler; the log is biased
low by about $\mathrm{Var}(w)/(2N\bar w^2)$, Jensen), `self_normalised_weights`. `w2_1d` is the
exact 1-D Wasserstein-2 distance between equal-size samples (energy-W2).

??? cite "References"

    Chen et al., "Neural ordinary differential equations", 2018; Grathwohl et al., "FFJORD",
    2019 (Hutchinson's estimator); Noé et al., "Boltzmann generators", Science 2019; Köhler et
    al., "Equivariant flows", 2020; Kish, "Survey sampling", 1965.
"""

from collections.abc import Callable
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import Args, RealScalarLike, Times
from ._lawson import LawsonVariables
from ._reversible import Rex
from ._term import DiffusionTerm


Estimator = Literal["exact", "hutchinson"]


def standard_normal_log_prob(z: Array) -> Array:
    r"""$\log\mathcal N(z; 0, I)$ summed over all entries of one sample."""
    return -0.5 * jnp.sum(z**2) - 0.5 * z.size * np.log(2 * np.pi)


class _DivergenceModel(eqx.Module):
    """The augmented vector field (v, div v) as a flow-matching "model" on (x, ell)."""

    term: DiffusionTerm
    estimator: Estimator = eqx.field(static=True)

    def __call__(self, t, y, args):
        x, _ = y
        if self.estimator == "hutchinson":
            args, probe = args

            def v(x_):
                return self.term.vf(t, x_, args)

            vx, jv = jax.jvp(v, (x,), (probe,))
            return vx, jnp.sum(probe * jv)

        def v_flat(xf):
            return self.term.vf(t, xf.reshape(x.shape), args).reshape(-1)

        vx = self.term.vf(t, x, args)
        jac = jax.jacfwd(v_flat)(x.reshape(-1))
        return vx, jnp.trace(jac)


def divergence_term(term: DiffusionTerm, estimator: Estimator = "exact") -> DiffusionTerm:
    r"""The probability-flow ODE augmented with its divergence, $\tfrac{\mathrm{d}}{\mathrm{d}t}
    (x, \ell) = (v(t, x), \nabla\cdot v(t, x))$, as a `DiffusionTerm` on the pair `(x, ell)`.

    Any diffrax ODE solver integrates it, and so do `rexjax.Princeps` and `rexjax.Rex`: the pair
    is presented as a flow-matching velocity, converted exactly to the data/noise prediction the
    Lawson solvers need (the $\ell$ component is integrated in the same variables as $x$, which
    changes nothing in exact arithmetic and keeps the base's order).

    **Arguments:**

    - `term`: the `DiffusionTerm` of one sample $x$ (any array shape; the trace is over all
        entries).
    - `estimator`: `"exact"`: the trace of the Jacobian by forward mode ($D$ Jacobian-vector
        products per evaluation; for small $D$). `"hutchinson"`: $\epsilon^\top(\partial v/
        \partial x)\epsilon$ with a probe $\epsilon$ ($E[\epsilon\epsilon^\top] = I$, fixed along
        the solve) passed as `args=(args, probe)`; one JVP per evaluation. It is unbiased for
        $\ell$, hence for $\log q$, but $q$ and the weights $e^{-\ell}$ are biased (Jensen) and
        the variance adds to the weights' variance: do not use it for importance weights.

    **Returns:** a `DiffusionTerm` with `model_type="flow"` on `y = (x, ell)`.
    """
    if estimator not in ("exact", "hutchinson"):
        raise ValueError(f"estimator must be 'exact' or 'hutchinson'; got {estimator!r}.")
    if not isinstance(term, DiffusionTerm):
        raise ValueError(f"term must be a rexjax.DiffusionTerm; got {type(term).__name__}.")
    return DiffusionTerm(_DivergenceModel(term, estimator), term.schedule, "flow")


def _controller(ts, stepsize_controller):
    if ts is not None:
        if stepsize_controller is not None:
            raise ValueError("Pass either a grid `ts` or a `stepsize_controller`, not both.")
        return diffrax.StepTo(jnp.asarray(ts))
    if stepsize_controller is None:
        raise ValueError(
            "Give a fixed grid `ts` or an adaptive `stepsize_controller` (e.g. "
            "diffrax.PIDController(rtol=1e-5, atol=1e-5)) together with `dt0`."
        )
    return stepsize_controller


def divergence_solve(
    term: DiffusionTerm,
    solver: diffrax.AbstractSolver,
    y0: Array,
    t0: RealScalarLike,
    t1: RealScalarLike,
    args: Args = None,
    *,
    ts: Times | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    dt0: RealScalarLike | None = None,
    estimator: Estimator = "exact",
    probe: Array | None = None,
    max_steps: int = 4096,
) -> tuple[Array, Array, Array]:
    r"""Solve the divergence-augmented ODE for one sample from `t0` to `t1` (either direction).

    **Arguments:**

    - `term`, `solver`: the `DiffusionTerm` and any diffrax ODE solver, `rexjax.Princeps` or
        `rexjax.Rex` (its coupled copy starts tied, $\hat x_0 = x_0$, $\hat\ell_0 = 0$).
    - `y0`: one sample at `t0`.
    - `ts`: a fixed grid from `t0` to `t1`, or
    - `stepsize_controller` and `dt0`: adaptive steps (e.g. `diffrax.PIDController`).
    - `estimator`, `probe`: see `divergence_term` (`probe` is required for Hutchinson).
    - `max_steps`: for adaptive steps.

    **Returns:** `(y1, integral, num_steps)`: the solution at `t1`, $\int_{t_0}^{t_1}
    \nabla\cdot v\,\mathrm{d}t$ along the computed path, and the number of accepted steps.
    """
    aug = divergence_term(term, estimator)
    if estimator == "hutchinson":
        if probe is None:
            raise ValueError("Hutchinson's estimator needs a `probe` (e.g. Rademacher or N(0,I)).")
        args = (args, probe)
    elif probe is not None:
        raise ValueError("`probe` is only used by estimator='hutchinson'.")
    controller = _controller(ts, stepsize_controller)
    if ts is not None:
        ts = jnp.asarray(ts)
        t0, t1, dt0 = ts[0], ts[-1], None
        max_steps = ts.shape[0] - 1
    elif dt0 is None:
        raise ValueError("Adaptive steps need an initial step `dt0` (signed, from t0 to t1).")
    y0 = jnp.asarray(y0)
    sol = diffrax.diffeqsolve(
        aug,
        solver,
        t0=t0,
        t1=t1,
        dt0=dt0,
        y0=(y0, jnp.zeros((), y0.dtype)),
        args=args,
        stepsize_controller=controller,
        max_steps=max_steps,
    )
    x1, ell = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
    return x1, ell, sol.stats["num_accepted_steps"]


def sample_with_log_prob(
    term: DiffusionTerm,
    solver: diffrax.AbstractSolver,
    z: Array,
    t_noise: RealScalarLike,
    t_data: RealScalarLike,
    args: Args = None,
    *,
    base_log_prob: Callable[[Array], Array] = standard_normal_log_prob,
    **kwargs,
) -> tuple[Array, Array]:
    r"""(A), sampling direction: $x = $ the solve of noise `z` from `t_noise` to `t_data`, and
    $\log q(x) = \log p_{\rm base}(z) - \int_{t_{\rm noise}}^{t_{\rm data}}\nabla\cdot v\,
    \mathrm{d}t$ (accumulated divergence). One sample; `jax.vmap` over a batch.

    **Arguments:** `term`, `solver`, `args` and the keyword arguments (`ts` or
    `stepsize_controller` and `dt0`, `estimator`, `probe`, `max_steps`) as `divergence_solve`;
    `base_log_prob` is the log-density of the noise (default standard normal).

    **Returns:** `(x, log_q)`.
    """
    x, ell, _ = divergence_solve(term, solver, z, t_noise, t_data, args, **kwargs)
    return x, base_log_prob(z) - ell


def flow_log_prob(
    term: DiffusionTerm,
    solver: diffrax.AbstractSolver,
    x: Array,
    t_data: RealScalarLike,
    t_noise: RealScalarLike,
    args: Args = None,
    *,
    base_log_prob: Callable[[Array], Array] = standard_normal_log_prob,
    **kwargs,
) -> Array:
    r"""(A), density direction: the log-density of given points `x` under the flow, by solving
    from `t_data` to `t_noise`: $\log q(x) = \log p_{\rm base}(z) + \int_{t_{\rm data}}^{t_{\rm
    noise}}\nabla\cdot v\,\mathrm{d}t$. This is the encoder map's estimate: for a discretised
    solve it is not the density of the sampler (which runs the other way), Rex included.

    **Arguments:** as `sample_with_log_prob` (a grid `ts` goes from `t_data` to `t_noise`).

    **Returns:** `log_q`.
    """
    z, ell, _ = divergence_solve(term, solver, x, t_data, t_noise, args, **kwargs)
    return base_log_prob(z) + ell


def _fixed_grid_solve(term, solver, z, ts, args):
    ts = jnp.asarray(ts)
    sol = diffrax.diffeqsolve(
        term,
        solver,
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=z,
        args=args,
        stepsize_controller=diffrax.StepTo(ts),
        max_steps=ts.shape[0] - 1,
        adjoint=diffrax.ForwardMode(),
    )
    return sol.ys[-1]


def discrete_log_det(
    term: DiffusionTerm,
    solver: diffrax.AbstractSolver,
    z: Array,
    ts: Times,
    args: Args = None,
) -> tuple[Array, Array]:
    r"""$\log|\det\partial x_N/\partial z|$ of the solver's map on the fixed grid `ts`, by
    forward-mode autodiff through the solve ($D$ JVPs, batched by `jax.jacfwd`). One sample.

    **Arguments:**

    - `term`, `solver`: any fixed-step diffrax solver, `rexjax.Princeps` or `rexjax.Rex`
        (tied start $\hat x_0 = z$; the map is $z \mapsto x_N$).
    - `z`: one starting point at `ts[0]`.
    - `ts`: the fixed grid (either direction; e.g. a frozen adaptive grid).

    **Returns:** `(x_N, log_abs_det)`.
    """
    z = jnp.asarray(z)

    def flat_map(zf):
        return _fixed_grid_solve(term, solver, zf.reshape(z.shape), ts, args).reshape(-1)

    x, jvp_out = flat_map(z.reshape(-1)), jax.jacfwd(flat_map)(z.reshape(-1))
    _, logdet = jnp.linalg.slogdet(jvp_out)
    return x.reshape(z.shape), logdet


def discrete_log_prob(
    term: DiffusionTerm,
    solver: diffrax.AbstractSolver,
    z: Array,
    ts: Times,
    args: Args = None,
    *,
    base_log_prob: Callable[[Array], Array] = standard_normal_log_prob,
) -> tuple[Array, Array]:
    r"""(B): the sample $x_N = \Phi(z)$ of the fixed-grid solver map and its exact log-density
    $\log q(x_N) = \log p_{\rm base}(z) - \log|\det\partial\Phi/\partial z|$ (for an injective
    $\Phi$). Importance weights built from it are exact for the sampler actually run.

    **Arguments:** as `discrete_log_det`; `base_log_prob` the log-density of `z`.

    **Returns:** `(x_N, log_q)`.
    """
    x, logdet = discrete_log_det(term, solver, z, ts, args)
    return x, base_log_prob(jnp.asarray(z)) - logdet


def rex_pair_log_det(term: DiffusionTerm, solver: Rex, ts: Times, dim: int) -> Float[Array, ""]:
    r"""The constant $\log|\det|$ of the full Rex map $(x_0, \hat x_0) \mapsto (x_N, \hat x_N)$
    on the grid `ts`: $D\sum_n\log(r_n^2\zeta_n\rho_n) = D(2\log(\kappa_N/\kappa_0) +
    \sum_n\log(\zeta_n\rho_n))$ (`Rex.step_coupling`, `Rex.copy_damping`), independent of the
    state and of the model.

    **Arguments:** the `DiffusionTerm`, the `rexjax.Rex` solver, the grid and the dimension
    $D$ of one sample (the pair has $2D$ entries).

    **Returns:** the log-determinant (a scalar).
    """
    if not isinstance(solver, Rex):
        raise ValueError(f"rex_pair_log_det is for rexjax.Rex; got {type(solver).__name__}.")
    ts = jnp.asarray(ts)
    v = LawsonVariables(term.schedule, solver.prediction)
    lk = v.log_kappa(ts)
    zeta = jax.vmap(lambda a, b: solver.step_coupling(v, a, b))(ts[:-1], ts[1:])
    rho = jax.vmap(lambda a, b: solver.copy_damping(v, a, b))(ts[:-1], ts[1:])
    return dim * (2 * (lk[-1] - lk[0]) + jnp.sum(jnp.log(zeta) + jnp.log(rho)))


def log_importance_weights(
    log_target: Float[ArrayLike, " n"], log_q: Float[ArrayLike, " n"]
) -> Float[Array, " n"]:
    r"""$\log w_i = \log\tilde p(x_i) - \log q(x_i)$ ($\tilde p$ unnormalised: $-E/kT$)."""
    return jnp.asarray(log_target) - jnp.asarray(log_q)


def kish_ess(log_w: Float[ArrayLike, " n"]) -> Float[Array, ""]:
    r"""Kish's effective sample size as a fraction of $N$: $(\sum w)^2 / (N\sum w^2)$, computed
    in log space ($\exp(2\,\mathrm{LSE}(\log w) - \mathrm{LSE}(2\log w)) / N$)."""
    log_w = jnp.asarray(log_w)
    lse = jax.scipy.special.logsumexp
    return jnp.exp(2 * lse(log_w) - lse(2 * log_w)) / log_w.shape[0]


def self_normalised_weights(log_w: Float[ArrayLike, " n"]) -> Float[Array, " n"]:
    r"""$w_i / \sum_j w_j$ (self-normalised importance sampling: $\sum_i \bar w_i f(x_i)$
    estimates $E_p[f]$; consistent when $q$ is the sampler's exact density)."""
    return jax.nn.softmax(jnp.asarray(log_w))


def log_normaliser(log_w: Float[ArrayLike, " n"]) -> Float[Array, ""]:
    r"""$\log\hat Z = \log\frac1N\sum_i w_i$. $\hat Z$ is unbiased for $Z$ when the weights use
    the exact density of the sampler; $\log\hat Z$ is biased low by
    $\approx \mathrm{Var}(w)/(2N E[w]^2) = (1/\mathrm{ESS}_{\infty} - 1)/(2N)$ (delta method),
    which vanishes as $N$ grows. With an inexact $\log q$ the bias does not vanish."""
    log_w = jnp.asarray(log_w)
    return jax.scipy.special.logsumexp(log_w) - np.log(log_w.shape[0])


def w2_1d(a: Float[ArrayLike, " n"], b: Float[ArrayLike, " n"]) -> Float[Array, ""]:
    r"""The exact Wasserstein-2 distance between two 1-D empirical distributions of the same
    size (sorted samples matched in order): $\sqrt{\frac1n\sum_i(a_{(i)} - b_{(i)})^2}$."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"w2_1d needs two 1-D samples of the same size; got {a.shape} and {b.shape} "
            "(subsample the larger one)."
        )
    return jnp.sqrt(jnp.mean((jnp.sort(a) - jnp.sort(b)) ** 2))
