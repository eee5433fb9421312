r"""Sampling (noise to data) and exact inversion (data to noise) on a time grid."""

import warnings

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._adjoint import ReversibleAdjoint
from ._brownian import GridBrownianPath, LawsonBrownianPath, ReverseSDE
from ._custom_types import Args, RealScalarLike, Times, Y
from ._exact import ExactRex
from ._lawson import LawsonVariables
from ._reversible import (
    AbstractInvertibleSolver,
    AbstractReversibleSolver,
    NearReversible,
    Princeps,
    Rex,
    noise_tableau,
)
from ._schedules import AbstractSchedule
from ._term import DiffusionTerm


class CouplingWarning(UserWarning):
    r"""A `rexjax.Rex` configuration that is known, before running, to let the coupled pair
    separate: a noise-prediction Rex on the probability-flow ODE whose fixed coupling exceeds
    $\min_n e^{-|\Delta\lambda_n|}$ on the grid (see `rexjax.sample`). Its samples are
    typically far less accurate than the base scheme's. Silence it with
    `warnings.filterwarnings("ignore", category=rexjax.CouplingWarning)` when the
    configuration is chosen on purpose (e.g. to reproduce the paper's `Rex(Euler(), "noise",
    0.999)`).
    """


class ReversibleState(eqx.Module):
    """The full state of a reversible solver at one end of a grid: the solution `y` and the
    solver's own state (for `rexjax.Rex`, the coupled copy $\\hat x$).

    `rexjax.invert` returns one (the latent); `rexjax.sample` accepts one in place of `y`.
    """

    y: Y
    solver_state: PyTree


def log_snr_grid(
    schedule: AbstractSchedule, t_start: float, t_end: float, num_steps: int
) -> Float[Array, " n"]:
    r"""A grid uniform in log-SNR $\lambda$ from `t_start` to `t_end` (both exact), with
    `num_steps` steps. For sampling, `t_start > t_end` (noise to data). The default grid for the
    exponential solvers: the step in the Lawson time is a fixed ratio.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}.")
    lam = jnp.linspace(schedule.log_snr(t_start), schedule.log_snr(t_end), num_steps + 1)
    ts = schedule.t_from_log_snr(lam)
    dtype = ts.dtype
    return ts.at[0].set(jnp.asarray(t_start, dtype)).at[-1].set(jnp.asarray(t_end, dtype))


def check_grid(ts: Times, term: DiffusionTerm, solver: diffrax.AbstractSolver) -> Array:
    """Validate a sampling grid: 1-D, at least two times, strictly decreasing, inside the
    schedule's domain and where the solver's integrating factor is finite and positive.

    Concrete grids raise `ValueError`; traced ones are checked at run time (`eqx.error_if`).
    """
    schedule = term.schedule
    if isinstance(ts, jax.core.Tracer):
        ts = jnp.asarray(ts)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(f"The grid `ts` must be 1-D with >= 2 times; got shape {ts.shape}.")
        ok = jnp.all(jnp.diff(ts) < 0) & jnp.all((ts >= schedule.t_min) & (ts <= schedule.t_max))
        return eqx.error_if(
            ts,
            ~ok,
            "The grid `ts` must be strictly decreasing (noise to data) and lie in the "
            "schedule's domain [t_min, t_max].",
        )
    arr = np.asarray(ts)
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise ValueError(f"The grid `ts` must be 1-D with >= 2 times; got shape {arr.shape}.")
    if not np.all(np.diff(arr) < 0):
        bad = int(np.argmax(np.diff(arr) >= 0))
        raise ValueError(
            "The grid `ts` must be strictly decreasing: it is the sampling grid from noise "
            f"(large t) to data (small t), for `invert` too; ts[{bad}]={arr[bad]!r} is followed "
            f"by ts[{bad + 1}]={arr[bad + 1]!r}."
        )
    if arr.min() < schedule.t_min or arr.max() > schedule.t_max:
        raise ValueError(
            f"The grid `ts` spans [{arr.min()!r}, {arr.max()!r}], outside the schedule's "
            f"domain [{schedule.t_min!r}, {schedule.t_max!r}]."
        )
    if isinstance(solver, Rex | Princeps | NearReversible | ExactRex):
        with jax.ensure_compile_time_eval():
            lk = np.asarray(LawsonVariables(schedule, solver.prediction).log_kappa(jnp.asarray(ts)))
        if not np.all(np.isfinite(lk)):
            bad = arr[~np.isfinite(lk)][0]
            factor = "sigma" if solver.prediction == "data" else "alpha"
            raise ValueError(
                f"The grid reaches t={bad!r}, where {factor}(t) = 0: the {solver.prediction}-"
                f"prediction integrator divides by {factor}. End (or start) the grid at a time "
                f"where {factor} > 0, e.g. t=1e-3."
            )
    return jnp.asarray(ts)


def _state_dtype(y):
    """The floating dtype the computation runs in: that of the state (the grid is cast to it,
    so that a float32 state with a float64 grid under x64 is integrated in float32)."""
    leaves = jax.tree_util.tree_leaves(y.y if isinstance(y, ReversibleState) else y)
    return jnp.result_type(*leaves, float)


def _check_noise_coupling(solver, term, ts, stochastic: bool):
    r"""Refuse (SDE) or warn about (ODE) a noise-prediction Rex whose fixed coupling lets the
    coupled pair's parasitic mode grow: it needs $\zeta \le e^{-k\max_n|\Delta\lambda_n|}$,
    $k = 2$ on the reverse SDE and $k = 1$ on the probability-flow ODE.

    In the noise form the residual drift contracts: $z = h\,\partial f/\partial Y =
    (\Delta u/u)(I - \mathrm{Cov}(\epsilon|x))$ with $u$ the Lawson time ($e^{-2\lambda}$ on the
    SDE, $e^{-\lambda}$ on the ODE), so $-z \in [0, 1 - u_{n+1}/u_n]$ for exact scores (the bound
    is reached at the noise end, where $\mathrm{Cov}(\epsilon|x) \approx 0$). The pair's second
    mode has growth factor $\zeta e^{-z}$ a step (Euler: the step matrix has determinant $\zeta$
    and is stable iff $-(1-\zeta) \le z \le 0$), so $\zeta \le u_{n+1}/u_n = e^{-k\Delta
    \lambda_n}$ is needed. Data prediction has $z \ge 0$: stable for any coupling.

    On the SDE the samples blow up (std 1e6 instead of 0.3 on Gaussian data): `ValueError`. On
    the ODE they stay bounded but far from the base's. Measured (`experiments/coarse_steps.py`,
    the analytic mixture, float32, EES27 base): every fixed coupling above the bound left round
    trips of 5e-4 to 8e-2 and, at 0.99 and above, sample errors up to 75-250x the base's; below
    it (0.9 at 100 steps) 1.04x. The paper's `Rex(Euler(), "noise", 0.999)` is a configuration
    people reproduce, so there this warns (`CouplingWarning`).
    """
    if not (isinstance(solver, Rex | ExactRex) and solver.prediction == "noise"):
        return
    if isinstance(solver.coupling, str):
        return  # "auto": 0.999 times each step's bound, and a damped copy (Rex.copy_damping)
    if isinstance(ts, jax.core.Tracer) or ts.shape[0] <= 2:
        return  # traced, or only the end points (adaptive steps): not checked here
    with jax.ensure_compile_time_eval():
        lam = np.asarray(term.schedule.log_snr(jnp.asarray(ts)), np.float64)
    k = 2 if stochastic else 1
    bound = float(np.exp(-k * np.max(np.abs(np.diff(lam)))))
    if solver.coupling <= bound:
        return
    fix = "prediction='data' (stable for any coupling)"
    if isinstance(solver, Rex):
        smaller = np.floor(bound * 100) / 100
        fix = (
            f"coupling='auto' (below each step's bound), coupling={smaller:.2f} or smaller, "
            f"or {fix}"
        )
    name = type(solver).__name__
    if stochastic:
        raise ValueError(
            f"{name} with noise prediction is unstable on the reverse SDE for coupling > "
            f"{bound:.4f} on this grid (the smallest ratio of consecutive Lawson times "
            f"u = exp(-2 log-SNR)): the coupled copy's second mode grows by about coupling * "
            f"u_n/u_(n+1) a step, and samples blow up (std 1e6 instead of 0.3 on Gaussian "
            f"data). Use {fix}."
        )
    warnings.warn(
        f"{name} with noise prediction and coupling {solver.coupling:g} on this grid: on the "
        f"probability-flow ODE the coupled pair's parasitic mode grows unless coupling <= "
        f"{bound:.4f} (exp(-largest log-SNR step)); expect samples far less accurate than the "
        f"base scheme's and a large rexjax.trajectory_gap. Use {fix}.",
        CouplingWarning,
        stacklevel=4,  # the caller of sample / invert / trajectory_gap
    )


def reverse_sde(
    term: DiffusionTerm,
    solver: Rex | Princeps | NearReversible | ExactRex,
    key: PRNGKeyArray,
    ts: Times,
    y: Y,
    *,
    tol: RealScalarLike | None = None,
) -> ReverseSDE:
    r"""The reverse-time SDE of `term`, driven by a Brownian path replayable from `key`.

    The path lives in the Lawson time of `solver.prediction`, with the shape and dtype of `y` (a
    batch gets independent noise per element, a function of the element's global index and the
    key only, see `rexjax.GridBrownianPath`). By default (`tol=None`) it is a
    `rexjax.GridBrownianPath` on the grid `ts`: each step's increment and space-time Lévy area
    are drawn directly, O(1) per step; every step must then be one interval of `ts`. With an
    explicit `tol` it is a `diffrax.VirtualBrownianTree` on the interval spanned by `ts` (padded
    by `tol`), which any steps longer than `tol` can query: for adaptive steps, or one path
    shared by several grids. Both carry the space-time Lévy area (one key is one path,
    whichever SDE method integrates it); the grid and tree paths of one key are different
    paths.
    The same `(term, solver, key, ts, y-shape, tol)` always gives the same path: this is how
    `rexjax.sample(..., key=key)` and `rexjax.invert(..., key=key)` share their noise.

    To do the same with `diffrax.diffeqsolve` directly:

    ```python
    sde = rexjax.reverse_sde(term, solver, key, ts, x_T)
    sol = diffrax.diffeqsolve(sde, solver, t0=ts[0], t1=ts[-1], dt0=None, y0=x_T,
                              stepsize_controller=diffrax.StepTo(ts))
    ```

    and `solver.backward_step(sde, ...)` steps back with the same noise. For adaptive steps pass
    `ts=[t0, t1]` and an explicit `tol` (every accepted step must be longer than `tol` in the
    Lawson time; a shorter step is a run-time error).

    **Arguments:**

    - `term`: the `DiffusionTerm`.
    - `solver`: the `rexjax.Rex` or `rexjax.Princeps` solver that will integrate it; its base
        must be `diffrax.Euler()` (Euler–Maruyama) or an additive-noise SRK (`diffrax.ShARK()`,
        `SRA1()`, `SEA()`).
    - `key`: a JAX PRNG key: the whole path is a function of it.
    - `ts`: the grid (or, with `tol`, just its end points).
    - `y`: the state (or anything with its pytree structure, shapes and dtypes).
    - `tol`: `None` (default) for the grid path; a number for a Brownian tree with that
        tolerance in Lawson-time units. It must be smaller than every step (checked here for
        concrete grids and at run time for every step).

    **Returns:** a `rexjax.ReverseSDE`, a diffrax term for `Rex` / `Princeps`.
    """
    if not isinstance(solver, Rex | Princeps | NearReversible | ExactRex):
        raise ValueError(
            "The reverse SDE is integrated by rexjax.Rex, ExactRex, Princeps or NearReversible; "
            f"got {type(solver).__name__}."
        )
    tableau = noise_tableau(solver.base)
    v = LawsonVariables(term.schedule, solver.prediction, stochastic=True)
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"`ts` must be 1-D with >= 2 times; got shape {ts.shape}.")
    s = v.time(ts)
    steps = jnp.abs(jnp.diff(s))
    if not isinstance(s, jax.core.Tracer):
        s_np = np.asarray(s)
        if not (np.all(np.isfinite(s_np)) and np.all(s_np > 0)):
            raise ValueError(
                "The reverse SDE needs alpha(t) > 0 and sigma(t) > 0 on the whole grid (its "
                "Lawson time is exp(+-2 log-SNR)); end the grid inside the schedule's domain, "
                "e.g. at t=1e-3."
            )
    del tableau  # checked above: the base is an SDE method
    _check_noise_coupling(solver, term, ts, stochastic=True)
    shape = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), y)
    if tol is None:
        times = jnp.where(s[0] <= s[-1], s, s[::-1])
        return ReverseSDE(term, GridBrownianPath(times, key, shape, solver.prediction))
    tol = jnp.asarray(tol, s.dtype)
    if not isinstance(s, jax.core.Tracer) and not isinstance(tol, jax.core.Tracer):
        tol_np = float(tol)
        if not tol_np > 0:
            raise ValueError(f"tol must be positive; got {tol_np}.")
        if ts.shape[0] > 2 and not tol_np < float(np.min(np.asarray(steps))):
            raise ValueError(
                f"The Brownian tree's tolerance {tol_np:.3g} is not smaller than the smallest "
                f"step of the grid in the Lawson time ({float(np.min(np.asarray(steps))):.3g}): "
                "increments would not have the law of a Brownian motion. Leave tol=None (the "
                "grid path) or pass a smaller one."
            )
    # Padding by tol keeps queries at the grid's end points inside the tree even if their
    # Lawson times are recomputed with a different rounding.
    # Always with space-time Lévy area, whatever the method: diffrax's tree draws a different
    # path for each kind of Lévy area, and one key should mean one Brownian path (so that e.g.
    # Euler–Maruyama and ShARK samples with the same key converge to the same solution).
    tree = diffrax.VirtualBrownianTree(
        jnp.min(s) - tol, jnp.max(s) + tol, tol, shape, key, levy_area=diffrax.SpaceTimeLevyArea
    )
    return ReverseSDE(term, LawsonBrownianPath(tree, solver.prediction, tol))


def _sde_term(term, solver, key, ts, y, tol):
    if key is None:
        if tol is not None:
            raise ValueError("tol is the Brownian tree's tolerance: it needs a key (the SDE).")
        _check_noise_coupling(solver, term, ts, stochastic=False)
        return term
    return reverse_sde(term, solver, key, ts, y, tol=tol)


def _split_state(solver, term, y, ts, args):
    if isinstance(y, ReversibleState):
        return y.y, y.solver_state
    return y, solver.init(term, ts[0], ts[-1], y, args)


def _checked(sol: diffrax.Solution, y: Y) -> Y:
    """`y`, raising if the solve failed: diffrax's `throw=True` check, passed through a scalar.

    diffrax's own check sends the whole solution through the error branch, which XLA places on
    one device: a batch-sharded state would be gathered there. Here only a scalar goes through
    it, and an optimisation barrier ties the check to the output without touching the state
    (arithmetic with the checked scalar would also gather it).
    """
    checked = sol.result.error_if(jnp.ones(()), sol.result != diffrax.RESULTS.successful)
    _, y = jax.lax.optimization_barrier((checked, y))
    return y


def sample(
    term: DiffusionTerm,
    solver: diffrax.AbstractSolver,
    y: Y | ReversibleState,
    ts: Times,
    args: Args = None,
    *,
    key: PRNGKeyArray | None = None,
    tol: RealScalarLike | None = None,
    full_state: bool = False,
    adjoint: diffrax.AbstractAdjoint | None = None,
) -> Y | ReversibleState:
    r"""Integrate from noise to data along the grid `ts` (t decreasing).

    Exactly `diffrax.diffeqsolve(term, solver, t0=ts[0], t1=ts[-1], dt0=None,
    stepsize_controller=StepTo(ts), ...)`; jit-able and differentiable.

    **Arguments:**

    - `term`: the `DiffusionTerm`.
    - `solver`: any diffrax solver on the term (`Rex`, `Princeps`, or a plain diffrax ODE solver).
    - `y`: the noise at `ts[0]`, or a `ReversibleState` (e.g. from `rexjax.invert`).
    - `ts`: the sampling grid, strictly decreasing, e.g. `rexjax.log_snr_grid(...)` or the
        accepted grid of an adaptive solve (`rexjax.adaptive_grid`).
    - `args`: passed to the model.
    - `key`: `None` (default) integrates the probability-flow ODE; a PRNG key integrates the
        reverse-time SDE driven by the Brownian path of that key (`rexjax.reverse_sde`): the
        same key gives the same sample bitwise, and `invert` with the same key inverts it.
    - `tol`: SDE only: `None` (default) drives the SDE by a `rexjax.GridBrownianPath` on `ts`
        (O(1) per step); a number uses a Brownian tree of that tolerance instead (the
        path of `rexjax.adaptive_grid`, or one path shared by several grids).
    - `full_state`: return a `ReversibleState` (solution and solver state) instead of the
        solution alone; `rexjax.invert` of it reconstructs the input exactly.
    - `adjoint`: how to differentiate the solve. Default: `rexjax.ReversibleAdjoint()` (exact
        gradients in O(1) memory) for reversible solvers, else
        `diffrax.RecursiveCheckpointAdjoint()`. Pass `diffrax.DirectAdjoint()` for
        forward-mode autodiff.

    **Returns:** the sample at `ts[-1]` (or its `ReversibleState`).
    """
    ts = check_grid(ts, term, solver).astype(_state_dtype(y))
    sde = _sde_term(term, solver, key, ts, y.y if isinstance(y, ReversibleState) else y, tol)
    y0, state0 = _split_state(solver, sde, y, ts, args)
    if adjoint is None:
        if isinstance(solver, AbstractReversibleSolver):
            adjoint = ReversibleAdjoint()
        else:
            adjoint = diffrax.RecursiveCheckpointAdjoint()
    sol = diffrax.diffeqsolve(
        sde,
        solver,
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=y0,
        args=args,
        solver_state=state0,
        stepsize_controller=diffrax.StepTo(ts),
        saveat=diffrax.SaveAt(t1=True, solver_state=full_state),
        max_steps=ts.shape[0] - 1,
        adjoint=adjoint,
        throw=False,
    )
    y1 = jax.tree_util.tree_map(lambda x: x[-1], sol.ys)
    y1, state1 = _checked(sol, (y1, sol.solver_state))
    return ReversibleState(y1, state1) if full_state else y1


@eqx.filter_jit
def _invert_loop(term, solver, y, state, ts, args):
    def body(carry, times):
        y1, state1 = carry
        t0, t1 = times
        y0, _, state0, _ = solver.backward_step(term, t0, t1, y1, args, None, state1, False)
        return (y0, state0), None

    (y, state), _ = jax.lax.scan(body, (y, state), (ts[:-1], ts[1:]), reverse=True)
    return ReversibleState(y, state)


def invert(
    term: DiffusionTerm,
    solver: AbstractInvertibleSolver,
    x0: Y | ReversibleState,
    ts: Times,
    args: Args = None,
    *,
    key: PRNGKeyArray | None = None,
    tol: RealScalarLike | None = None,
) -> ReversibleState:
    r"""Map data to noise by running the solver's exact inverse backwards along the grid `ts`.

    `ts` is the *sampling* grid (t decreasing, noise to data), the same one `rexjax.sample`
    takes: `sample(term, solver, invert(term, solver, x0, ts), ts)` returns `x0` to round-off.
    Adaptive grids are replayed, never re-decided (see `rexjax.adaptive_grid`).

    **Arguments:**

    - `term`, `solver`, `args`: as for `rexjax.sample`; the solver must be reversible
        (`rexjax.Rex`).
    - `x0`: the data at `ts[-1]`; the coupled state starts equal to it. A `ReversibleState`
        (e.g. `sample(..., full_state=True)`) is inverted as it is.
    - `ts`: the sampling grid.
    - `key`, `tol`: as for `rexjax.sample`: with the key of a reverse-SDE sample, its exact
        inverse (the Brownian increments are regenerated from the key, not stored).

    **Returns:** the latent `ReversibleState` at `ts[0]`.
    """
    if not isinstance(solver, AbstractInvertibleSolver):
        raise ValueError(
            f"{type(solver).__name__} has no inverse. Use a reversible solver such as "
            f"`rexjax.Rex({getattr(solver, 'base', diffrax.Euler())!r})`, or the near-reversible "
            "`rexjax.NearReversible(rexjax.EES27())`."
        )
    ts = check_grid(ts, term, solver).astype(_state_dtype(x0))
    sde = _sde_term(term, solver, key, ts, x0.y if isinstance(x0, ReversibleState) else x0, tol)
    x, state = _split_state(solver, sde, x0, ts[::-1], args)
    return _invert_loop(sde, solver, x, state, ts, args)


def accepted_grid(sol: diffrax.Solution) -> Float[np.ndarray, " n"]:
    r"""The accepted time grid of an adaptive `diffrax.diffeqsolve`, to replay it exactly.

    The solve must have saved its steps: `saveat=diffrax.SaveAt(steps=True)` (optionally with
    `t0=True`). Works on concrete (not traced) solutions: the number of accepted steps is data
    dependent.
    """
    if sol.ts is None:
        raise ValueError(
            "The solution saved no times: solve with saveat=diffrax.SaveAt(steps=True)."
        )
    if isinstance(sol.ts, jax.core.Tracer):
        raise ValueError(
            "accepted_grid needs a concrete solution (call it outside jax.jit): the number of "
            "accepted steps is only known at run time."
        )
    ts = np.asarray(sol.ts)
    ts = ts[np.isfinite(ts)]
    t0 = np.asarray(sol.t0, dtype=ts.dtype)
    if ts.size and ts[0] == t0:
        ts = ts[1:]
    if ts.size != int(sol.stats["num_accepted_steps"]):
        raise ValueError(
            f"The solution saved {ts.size} times for {int(sol.stats['num_accepted_steps'])} "
            "accepted steps: solve with saveat=diffrax.SaveAt(steps=True) to record the grid."
        )
    ts = np.concatenate([t0[None], ts])
    return ts


def adaptive_grid(
    term: DiffusionTerm,
    solver: diffrax.AbstractSolver,
    y: Y,
    t0: float,
    t1: float,
    stepsize_controller: diffrax.AbstractStepSizeController,
    args: Args = None,
    *,
    dt0: float | None = None,
    max_steps: int = 4096,
    key: PRNGKeyArray | None = None,
    tol: RealScalarLike | None = None,
) -> Float[np.ndarray, " n"]:
    r"""Choose a grid adaptively from `t0` to `t1` (one solve with `stepsize_controller`, e.g.
    `diffrax.PIDController`) and return the accepted times.

    `sample(term, solver, y, grid)` then reproduces that adaptive solve step for step and
    `invert(term, solver, x0, grid)` inverts it exactly: the inverse replays the accepted grid
    rather than deciding its own steps.

    With a `key` the reverse SDE is solved adaptively (base ShARK or SRA1, which have an
    embedded error); `tol` (the Brownian tree's tolerance in the Lawson time) is then required,
    and `sample` / `invert` replay the solve when given the same `key` and `tol`.
    """
    if key is not None and tol is None:
        raise ValueError(
            "An adaptive SDE solve needs an explicit Brownian tolerance `tol` (in the Lawson "
            "time): the accepted steps are not known in advance. Pass the same key and tol to "
            "sample/invert on the returned grid."
        )
    sde = _sde_term(term, solver, key, jnp.asarray([t0, t1]), y, tol)
    sol = diffrax.diffeqsolve(
        sde,
        solver,
        t0=t0,
        t1=t1,
        dt0=dt0,
        y0=y,
        args=args,
        solver_state=solver.init(sde, t0, t1, y, args),  # the whole span (ExactRex's scale)
        stepsize_controller=stepsize_controller,
        saveat=diffrax.SaveAt(steps=True),
        max_steps=max_steps,
    )
    return accepted_grid(sol)
