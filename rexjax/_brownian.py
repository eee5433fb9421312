r"""Replayable Brownian paths in the Lawson time, and the reverse-time SDE as a diffrax term.

The reverse diffusion SDE in the Lawson variables of `rexjax.LawsonVariables(...,
stochastic=True)` reads $\mathrm{d}Y = f\,\mathrm{d}\varsigma + \mathrm{d}W_\varsigma$: the noise is
a standard Brownian motion in the Lawson time $\varsigma$ ($e^{2\lambda}$ for data prediction,
$e^{-2\lambda}$ for noise prediction), regenerated on demand from one PRNG key, bitwise
identically, in any order, with O(1) memory. That is what lets `rexjax.invert` run the reverse
SDE's exact inverse with the very increments of the forward pass, without storing them. Two
paths implement it:

- `GridBrownianPath` (the default of `rexjax.sample`/`invert`/`reverse_sde` on a fixed grid):
    the grid's Lawson times $\varsigma_0 < \dots < \varsigma_N$ are known, and a step only needs
    the increment $W_k$ and space-time Lévy area $H_k$ of its own interval
    $[\varsigma_k, \varsigma_{k+1}]$. For a Brownian motion these are independent across intervals
    and, within one, $W_k \sim N(0, \Delta_k)$ and $H_k \sim N(0, \Delta_k/12)$ independent
    ($\Delta_k = \varsigma_{k+1} - \varsigma_k$): drawn directly from `fold_in(key, k)`, one
    step costs one normal draw per number, whatever the number of steps.
- `LawsonBrownianPath`: a `diffrax.VirtualBrownianTree` on the grid's Lawson-time interval,
    for adaptive steps (no grid known in advance) or one path shared by several grids (strong
    order studies). A query costs $O(\log_2(\text{span}/\text{tol}))$ levels.

Batches and devices. The noise of a state leaf is drawn with the leaf's full shape from
counter-based (partitionable) threefry bits: the number at flat index $j$ is a function of the
key, the step and $j$ only. So each batch element's path depends on its global index and the
key, never on the batch size or on how the batch is sharded across devices or processes.

Direction. Queries are made on ordered intervals only. A step from Lawson time $a$ to $b$ uses
$(W, H)$ of the path on $[\min(a,b), \max(a,b)]$, with $W$ negated when $b < a$ and $H$
unchanged (time reversal of a Brownian path negates its increment and keeps its space-time
Lévy area). For noise prediction the sampling direction is decreasing $\varsigma$, so the driving
path is the time-reversed path, itself a Brownian motion: the law is exact either way.

Tolerance (tree only). The tree bisects its interval down to cells of length at most `tol`;
the values at a set of query times have exactly the law of a Brownian motion (and its Lévy
areas) when no two of them fall in one cell, i.e. when every step is longer than `tol`. Each
step checks this at run time (`eqx.error_if`), so a too-coarse tolerance is an error, never a
silent bias. Likewise a grid path checks that every step is one interval of its grid.

??? cite "References"

    Li, Wong, Chen & Duvenaud, "Scalable gradients for stochastic differential equations",
    AISTATS 2020 (virtual Brownian trees). Jelinčič, Foster & Kidger, "Single-seed generation of
    Brownian paths and integrals for adaptive and high order SDE solvers", 2024. Foster, Lyons &
    Oberhauser, "An optimal polynomial approximation of Brownian motion", SIAM J. Numer. Anal.
    2020 (the space-time Lévy area, $H \sim N(0, h/12)$ independent of $W$). Salmon, Moraes,
    Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011 (counter-based RNG).
"""

import abc

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._custom_types import Args, RealScalarLike, Y
from ._lawson import LawsonNoise, NoiseTableau, Prediction
from ._term import DiffusionTerm


class AbstractLawsonBrownianPath(eqx.Module):
    """A Brownian motion in the Lawson time of one prediction, replayable from its key: the
    interface `rexjax.Rex` and `rexjax.Princeps` use (`increment`, `noise`)."""

    prediction: eqx.AbstractVar[Prediction]

    @property
    @abc.abstractmethod
    def has_levy_area(self) -> bool:
        """Whether `increment` returns the space-time Lévy area."""

    @abc.abstractmethod
    def increment(self, s0: RealScalarLike, s1: RealScalarLike) -> tuple[Y, Y | None]:
        r"""$(W, H)$ of the path from Lawson time `s0` to `s1` (either order): $W$ is negated
        when `s1 < s0`, $H$ is kept.

        **Returns:** `(w, h)`, pytrees shaped like the state (`h` is `None` without Lévy area).
        """

    def noise(self, tableau: NoiseTableau, s0: RealScalarLike, s1: RealScalarLike) -> LawsonNoise:
        """The increment from `s0` to `s1` with a method's noise coefficients."""
        if tableau.uses_levy_area and not self.has_levy_area:
            raise ValueError(
                "This method uses the space-time Lévy area but the Brownian path has none: build "
                "the path for this solver (`rexjax.reverse_sde(term, solver, ...)`)."
            )
        w, h = self.increment(s0, s1)
        return LawsonNoise(tableau, w, h)


class LawsonBrownianPath(AbstractLawsonBrownianPath):
    r"""A Brownian motion in the Lawson time from a `diffrax.VirtualBrownianTree`: any
    interval, for adaptive steps or one path shared by several grids.

    Build it with `rexjax.reverse_sde` (which picks the interval and the tolerance from the
    grid); the fields are public for inspection.

    **Arguments:**

    - `tree`: a `diffrax.VirtualBrownianTree` on an interval of Lawson times containing every
        query, with the full shape (and dtype) of the state: batched states get independent
        noise per element.
    - `prediction`: `"data"` or `"noise"`: whose Lawson time the path lives in.
    - `tol`: the tree's tolerance in Lawson-time units; every step must be longer.
    """

    tree: diffrax.VirtualBrownianTree
    prediction: Prediction = eqx.field(static=True)
    tol: RealScalarLike

    @property
    def has_levy_area(self) -> bool:
        return self.tree.levy_area is not diffrax.BrownianIncrement

    def increment(self, s0: RealScalarLike, s1: RealScalarLike) -> tuple[Y, Y | None]:
        lo, hi = jnp.minimum(s0, s1), jnp.maximum(s0, s1)
        lo, hi = eqx.error_if(
            (lo, hi),
            hi - lo <= self.tol,
            "rexjax: a step is shorter (in the Lawson time) than the Brownian tree's tolerance, "
            "so the noise would not have the law of a Brownian motion. Build the path with a "
            "smaller `tol` (`rexjax.reverse_sde(..., tol=...)`, or `tol=` on sample/invert), "
            "or bound the step size from below (PIDController(dtmin=...)).",
        )
        inc = self.tree.evaluate(lo, hi, use_levy=True)
        sign = jnp.where(s1 >= s0, 1, -1)
        w = jtu.tree_map(lambda x: sign.astype(x.dtype) * x, inc.W)
        h = inc.H if isinstance(inc, diffrax.SpaceTimeLevyArea) else None
        return w, h


class GridBrownianPath(AbstractLawsonBrownianPath):
    r"""A Brownian motion in the Lawson time on a fixed grid: each interval's increment and
    space-time Lévy area drawn directly (O(1) per step), replayable from the key.

    Interval $k$ of the grid, $[\varsigma_k, \varsigma_{k+1}]$ with $\Delta_k = \varsigma_{k+1} -
    \varsigma_k$ (Lawson times sorted increasingly), gets
    $W_k = \sqrt{\Delta_k}\,Z$ and $H_k = \sqrt{\Delta_k/12}\,Z'$ with $Z, Z'$ standard normal from
    `jax.random.fold_in(key, k)`: the exact joint law of a Brownian motion's increments and
    space-time Lévy areas on the grid. A query must be one interval of the grid (either order,
    up to round-off in the Lawson times); anything else is a run-time error.
    Build it with `rexjax.reverse_sde` (the default on grids of more than one step).

    **Arguments:**

    - `times`: the grid's Lawson times, strictly increasing.
    - `key`: the PRNG key the whole path is a function of.
    - `shape`: the state's structure, shapes and dtypes (`jax.ShapeDtypeStruct` leaves).
    - `prediction`: `"data"` or `"noise"`: whose Lawson time the path lives in.
    """

    times: Float[Array, " n"]
    key: PRNGKeyArray
    shape: PyTree[jax.ShapeDtypeStruct] = eqx.field(static=True)
    prediction: Prediction = eqx.field(static=True)

    @property
    def has_levy_area(self) -> bool:
        return True

    def interval(self, s0: RealScalarLike, s1: RealScalarLike) -> Array:
        """The index `k` of the grid interval `[times[k], times[k+1]]` that the step from `s0`
        to `s1` spans (checked at run time)."""
        lo, hi = jnp.minimum(s0, s1), jnp.maximum(s0, s1)
        n = self.times.shape[0]
        k = jnp.clip(jnp.searchsorted(self.times, 0.5 * (lo + hi)) - 1, 0, n - 2)
        a, b = self.times[k], self.times[k + 1]
        off = jnp.abs(lo - a) + jnp.abs(hi - b)
        return eqx.error_if(
            k,
            ~(off <= 1e-4 * (b - a)),
            "rexjax: a step is not one interval of the grid the Brownian path was built on. "
            "Build the path on the grid you integrate (`rexjax.reverse_sde(term, solver, key, "
            "ts, y)` with the same `ts`), or pass `tol=` to use a Brownian tree (adaptive steps).",
        )

    def increment(self, s0: RealScalarLike, s1: RealScalarLike) -> tuple[Y, Y | None]:
        k = self.interval(s0, s1)
        delta = self.times[k + 1] - self.times[k]
        leaves, treedef = jtu.tree_flatten(self.shape)
        keys = jax.random.split(jax.random.fold_in(self.key, k), (len(leaves), 2))
        sign = jnp.where(s1 >= s0, 1, -1)
        ws, hs = [], []
        for leaf, (kw, kh) in zip(leaves, keys, strict=True):
            d = delta.astype(leaf.dtype)
            ws.append(sign.astype(leaf.dtype) * jnp.sqrt(d) * _normal(kw, leaf))
            hs.append(jnp.sqrt(d / 12) * _normal(kh, leaf))
        return jtu.tree_unflatten(treedef, ws), jtu.tree_unflatten(treedef, hs)


def _normal(key: PRNGKeyArray, leaf: jax.ShapeDtypeStruct) -> Array:
    return jax.random.normal(key, leaf.shape, leaf.dtype)


class ReverseSDE(diffrax.AbstractTerm):
    r"""The reverse-time diffusion SDE: a `DiffusionTerm` driven by a replayable Brownian path.

    `rexjax.Rex` and `rexjax.Princeps` recognise it and integrate
    $\mathrm{d}Y = f\,\mathrm{d}\varsigma + \mathrm{d}W_\varsigma$ in the path's Lawson variables.
    Build it with `rexjax.reverse_sde(term, solver, key, ts, y)` and pass it to
    `diffrax.diffeqsolve` in place of the `DiffusionTerm`. `vf` is the reverse-SDE drift
    $2v - \dot\alpha/\alpha\,x$ with $v$ the probability-flow drift (used only for step-size
    heuristics); plain diffrax solvers cannot integrate it (its noise is in the Lawson
    time), so `prod` raises.

    **Arguments:**

    - `term`: the `DiffusionTerm` (model, schedule, parameterisation).
    - `path`: the Brownian path (`GridBrownianPath` or `LawsonBrownianPath`).
    """

    term: DiffusionTerm
    path: AbstractLawsonBrownianPath

    def vf(self, t: RealScalarLike, y: Y, args: Args) -> Y:
        schedule = self.term.schedule
        t = jnp.asarray(t)
        dalpha, _ = schedule.derivatives(t)
        a = dalpha / schedule.alpha(t)
        pf = self.term.vf(t, y, args)
        return jtu.tree_map(lambda v, x: 2 * v - a.astype(x.dtype) * x, pf, y)

    def contr(self, t0: RealScalarLike, t1: RealScalarLike, **kwargs) -> Array:
        return jnp.asarray(t1) - jnp.asarray(t0)

    def prod(self, vf: Y, control: Array) -> Y:
        raise ValueError(
            "rexjax.ReverseSDE can only be integrated by rexjax.Rex or rexjax.Princeps (its noise "
            "lives in their Lawson time). Use one of them as the solver, with base "
            "diffrax.Euler() (Euler–Maruyama), diffrax.ShARK(), diffrax.SRA1() or diffrax.SEA()."
        )
