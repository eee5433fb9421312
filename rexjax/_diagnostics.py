r"""Diagnostics of the McCallum–Foster coupling: how far the coupled copy has drifted."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Args, Times, Y
from ._inversion import ReversibleState, _sde_term, _split_state, _state_dtype, check_grid
from ._reversible import Rex
from ._term import DiffusionTerm


GAP_WARNING = 1e-2
r"""The coupling gap above which a `rexjax.Rex` sample should not be trusted (see
`rexjax.coupling_gap` and `rexjax.trajectory_gap`)."""


def coupling_gap(state: ReversibleState, batch_dims: int = 1) -> Float[Array, "..."]:
    r"""The relative gap $\|x - \hat x\| / \|x\|$ between the solution and its coupled copy.

    `rexjax.Rex` carries a pair $(x, \hat x)$ that starts tied ($\hat x_0 = x_0$). While the
    base scheme retraces its own steps well (an effectively symmetric base such as
    `rexjax.EES27`, or fine grids), $\hat x$ stays next to $x$ and Rex is as accurate as its
    base (`rexjax.Princeps`). When the coupling's parasitic mode is excited (a base of low
    antisymmetric order at coarse steps with a coupling near 1) the pair separates and the
    sample error grows with it. A gap above `rexjax.GAP_WARNING` (1e-2) flags a configuration
    whose samples should not be trusted: use an EES base or more steps (see the README's table
    of safe configurations).

    With data prediction the gap peaks in the middle of sampling and shrinks again by the end,
    while the damage (samples pushed into another mode) stays: the final gap then understates
    it. `rexjax.trajectory_gap` measures the gap after every step.

    **Arguments:**

    - `state`: the full state of a Rex solve, `rexjax.sample(..., full_state=True)` (or a
        latent from `rexjax.invert`).
    - `batch_dims`: leading axes of every leaf that index samples (the gap is per sample);
        0 gives one number for the whole state.

    **Returns:** the gap per sample, of shape `leaf.shape[:batch_dims]`.
    """
    if not isinstance(state, ReversibleState):
        raise ValueError(
            "coupling_gap takes the full state of a Rex solve: "
            "`rexjax.sample(term, solver, y, ts, full_state=True)`; got "
            f"{type(state).__name__}."
        )
    xs = jax.tree_util.tree_leaves(state.y)
    xhats = jax.tree_util.tree_leaves(state.solver_state)
    if len(xs) != len(xhats) or any(a.shape != b.shape for a, b in zip(xs, xhats, strict=True)):
        raise ValueError(
            "The solver state is not a coupled copy of the solution (shapes differ): the gap "
            "is defined for rexjax.Rex states."
        )

    def sq(leaf):
        axes = tuple(range(batch_dims, leaf.ndim))
        return jnp.sum(jnp.square(leaf), axis=axes)

    diff = sum(sq(a - b) for a, b in zip(xs, xhats, strict=True))
    norm = sum(sq(a) for a in xs)
    return jnp.sqrt(diff / norm)


def _gap(x, xhat, batch_dims):
    return coupling_gap(ReversibleState(x, xhat), batch_dims)


@eqx.filter_jit
def _gap_loop(term, solver, y, state, ts, args, batch_dims):
    def body(carry, times):
        y0, state0 = carry
        y1, _, _, state1, _ = solver.step(term, times[0], times[1], y0, args, state0, False)
        return (y1, state1), _gap(y1, state1, batch_dims)

    (y, state), gaps = jax.lax.scan(body, (y, state), (ts[:-1], ts[1:]))
    return ReversibleState(y, state), gaps


def trajectory_gap(
    term: DiffusionTerm,
    solver: Rex,
    y: Y | ReversibleState,
    ts: Times,
    args: Args = None,
    *,
    key: PRNGKeyArray | None = None,
    batch_dims: int = 1,
) -> tuple[ReversibleState, Float[Array, "steps ..."]]:
    r"""Sample as `rexjax.sample(..., full_state=True)` and return the coupling gap
    $\|x_n - \hat x_n\|/\|x_n\|$ after every step.

    The check to run on a new model, grid or solver (e.g. on a small batch): if
    `gaps.max()` exceeds `rexjax.GAP_WARNING` the coupled pair has separated somewhere along
    the way and the samples are less accurate than the base scheme's (see
    `rexjax.coupling_gap`). The steps are the solver's own `step`, taken in a `lax.scan`.

    **Arguments:** as `rexjax.sample` (`key` for the reverse SDE); `batch_dims` as
    `rexjax.coupling_gap`.

    **Returns:** `(state, gaps)`: the final `ReversibleState` and the gaps, one row per step,
    each of shape `leaf.shape[:batch_dims]`.
    """
    if not isinstance(solver, Rex):
        raise ValueError(
            f"trajectory_gap measures the coupled pair of rexjax.Rex; got {type(solver).__name__}."
        )
    ts = check_grid(ts, term, solver).astype(_state_dtype(y))
    y0, state0 = _split_state(solver, term, y, ts, args)
    sde = _sde_term(term, solver, key, ts, y0, None)
    return _gap_loop(sde, solver, y0, state0, ts, args, batch_dims)
