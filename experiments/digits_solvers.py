r"""The solvers, grids and jitted loops shared by the digits studies (`experiments/digits_*.py`).

The built-in digits model (`rexjax.models.pretrained`) is a class-conditional noise-prediction
UNet on 1 x 16 x 16 images with the discrete DDPM schedule; continuous time runs from
`T_START = 1` (noise) to `T_END = 1e-3` (data, diffusers' timestep 0). Every grid is uniform in
log-SNR (`rexjax.log_snr_grid`).

`sample_loop` / `invert_loop` call each solver's `step` / `backward_step` exactly as
`rexjax.sample` (`diffeqsolve` + `StepTo`) and `rexjax.invert` do, inside one loop over a grid
padded to `MAX_STEPS`, so that each method compiles once for every number of steps; the
studies' smoke test checks them against `rexjax.sample` / `rexjax.invert`.
"""

from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import rexjax as rx
from rexjax.baselines import BDIA, BELM, DDIM, EDICT, DPMSolverPP
from rexjax.models import pretrained


T_START, T_END = 1.0, 1e-3
MAX_STEPS = 50
COUPLING = 0.999  # the Rex paper's coupling for images


class Method(NamedTuple):
    """A named solver; `sde` selects the reverse SDE (Brownian path replayed from a key);
    `nfe` is model evaluations per step (a guided evaluation counts once)."""

    name: str
    solver: diffrax.AbstractSolver
    nfe: int
    sde: bool = False


def _rex(name, base, nfe_base, sde=False):
    solver = rx.Rex(base, "data", COUPLING)
    return Method(name, solver, 2 * nfe_base, sde)


def all_methods() -> dict[str, Method]:
    """Every method of the studies, by name (data prediction for the exponential solvers;
    "NearRev EES27" samples as Princeps(EES27))."""
    methods = [
        Method("DDIM", DDIM(), 1),
        Method("EDICT", EDICT(0.93), 2),
        Method("BDIA", BDIA(1.0), 1),
        Method("O-BELM", BELM(), 1),
        Method("DPM-Solver++(2M)", DPMSolverPP(2), 1),
        # Princeps sampling; inverted by stepping the scheme backwards (`NearReversible`,
        # whose forward step is Princeps'): with Midpoint a naive inversion, with EES27 the
        # near-reversible one.
        Method("Princeps Midpoint", rx.NearReversible(diffrax.Midpoint(), "data"), 2),
        Method("NearRev EES27", rx.NearReversible(rx.EES27(), "data"), 4),
        _rex("Rex Euler", diffrax.Euler(), 1),
        _rex("Rex Midpoint", diffrax.Midpoint(), 2),
        _rex("Rex RK4", rx.RK4(), 4),
        _rex("Rex EES25", rx.EES25(), 3),
        _rex("Rex EES27", rx.EES27(), 4),
        _rex("Rex EM SDE", diffrax.Euler(), 1, sde=True),
        _rex("Rex ShARK SDE", diffrax.ShARK(), 2, sde=True),
    ]
    return {m.name: m for m in methods}


def pick(names: str | list[str]) -> list[Method]:
    """Methods by name (a comma-separated string or a list)."""
    table = all_methods()
    names = names.split(",") if isinstance(names, str) else names
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {list(table)}")
    return [table[n] for n in names]


def load_term(guidance_scale: float | None = None, dtype=jnp.float32) -> rx.DiffusionTerm:
    """The built-in digits model as a `DiffusionTerm` (`args`: int32 class labels)."""
    return pretrained.digits_term(guidance_scale=guidance_scale, dtype=dtype)


def grid(schedule, n: int, t_start: float = T_START, dtype=jnp.float32) -> np.ndarray:
    """The `n`-step log-SNR sampling grid from `t_start` to `T_END`, padded to `MAX_STEPS + 1`
    entries by repeating `T_END` (the loops stop after `n` steps)."""
    if not 1 <= n <= MAX_STEPS:
        raise ValueError(f"steps must be in [1, {MAX_STEPS}]; got {n}.")
    with jax.ensure_compile_time_eval():
        return pad(rx.log_snr_grid(schedule, t_start, T_END, n), dtype)


def pad(ts, dtype=jnp.float32) -> np.ndarray:
    """A sampling grid (e.g. an adaptive one) padded to `MAX_STEPS + 1` entries by repeating its
    last time, for `sample_loop` / `invert_loop` with `n = len(ts) - 1`."""
    ts = np.asarray(ts, np.float64)
    if len(ts) - 1 > MAX_STEPS:
        raise ValueError(f"the grid has {len(ts) - 1} steps, more than MAX_STEPS={MAX_STEPS}.")
    return np.concatenate([ts, np.full(MAX_STEPS + 1 - len(ts), ts[-1])]).astype(dtype)


def brownian_tol(schedule) -> float:
    """Half the smallest Lawson-time step of the finest (MAX_STEPS) grid: one Brownian path
    (per key) serves every grid, so SDE samples at 10, 20 and 50 steps share their noise."""
    with jax.ensure_compile_time_eval():
        v = rx.LawsonVariables(schedule, "data", stochastic=True)
        s = np.asarray(v.time(rx.log_snr_grid(schedule, T_START, T_END, MAX_STEPS)), np.float64)
    return 0.5 * float(np.min(np.abs(np.diff(s))))


def _term_for(method, term, key, y, tol):
    if not method.sde:
        return term
    ends = jnp.asarray([T_START, T_END], y.dtype)
    return rx.reverse_sde(term, method.solver, key, ends, y, tol=tol)


def sample_loop(method, term, y, ts, n, args, key=None, tol=None, state=None):
    """`n` sampling steps of `method` along the padded grid `ts` from `y` (noise); `state`: the
    solver state to start from (default `solver.init`). Returns `(x, solver_state)`. One
    compilation serves every `n` (passed as an array)."""
    return _sample_loop(method, term, y, jnp.asarray(ts), jnp.asarray(n), args, key, tol, state)


def invert_loop(method, term, x, ts, n, args, key=None, tol=None, state=None):
    """The inverse of `sample_loop` (for naive inversions, its approximation): from data `x`
    at `ts[n]` back to `ts[0]`. Returns `(latent, solver_state)`."""
    return _invert_loop(method, term, x, jnp.asarray(ts), jnp.asarray(n), args, key, tol, state)


@eqx.filter_jit
def _sample_loop(method, term, y, ts, n, args, key, tol, state):
    solver = method.solver
    term = _term_for(method, term, key, y, tol)
    if state is None:
        state = solver.init(term, ts[0], ts[n], y, args)

    def body(i, carry):
        x, s = carry
        x, _, _, s, _ = solver.step(term, ts[i], ts[i + 1], x, args, s, False)
        return x, s

    return jax.lax.fori_loop(0, n, body, (y, state))


@eqx.filter_jit
def _invert_loop(method, term, x, ts, n, args, key, tol, state):
    solver = method.solver
    term = _term_for(method, term, key, x, tol)
    if state is None:
        state = solver.init(term, ts[n], ts[0], x, args)

    def body(j, carry):
        y, s = carry
        i = n - 1 - j
        y, _, s, _ = solver.backward_step(term, ts[i], ts[i + 1], y, args, None, s, False)
        return y, s

    return jax.lax.fori_loop(0, n, body, (x, state))


def in_batches(fn, *arrays, batch: int):
    """`fn(*chunks)` over the leading axis in batches of `batch`, outputs concatenated (NumPy)."""
    n = len(arrays[0])
    outs = [fn(*(a[i : i + batch] for a in arrays)) for i in range(0, n, batch)]
    return np.concatenate([np.asarray(o) for o in outs])
