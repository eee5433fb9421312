r"""`ReversibleAdjoint`: exact gradients through a reversible solve in O(1) memory.

Forward, the solve runs as usual but keeps only its final state $(y_N, s_N)$ and the accepted
times $\tau_0 < \dots < \tau_N$ (one scalar per step). Backward, step by step from the end, the
solver's exact inverse reconstructs $(y_k, s_k)$ from $(y_{k+1}, s_{k+1})$, and the cotangents
are pulled back through the VJP of that one forward step:

$(\bar y_k, \bar s_k, \bar a, \bar\theta) \mathrel{+}=
(\partial \mathrm{step}/\partial(y_k, s_k, a, \theta))^\top (\bar y_{k+1}, \bar s_{k+1},
\overline{\mathrm{dense}}_k)$,

where $a$ are the `args`, $\theta$ the arrays inside the terms (the model's parameters, a
Brownian path) and $\overline{\mathrm{dense}}_k$ the cotangent of the step's dense output from
any `SaveAt(ts=...)` times inside it. This is discretise-then-optimise: the gradient of the
computed solution, equal to backpropagation through the solver up to round-off, at O(1) memory in
the number of steps (plus the accepted times).

Compute. For `rexjax.Rex` the backward pass reuses the inverse's work: the inverse evaluates
the two Lawson increments of the step, $\psi^-(y_{k+1})$ then $\psi(\hat y_k)$, at exactly the
points where the forward step evaluates them, so it linearises them there (`jax.vjp`) and the
VJP of the forward step is assembled from those two linearisations and the step's linear
combinations. A step backwards then costs two model evaluations and two model VJPs, as for
`diffrax.RecursiveCheckpointAdjoint` with every step checkpointed (without it: a third
forward step). When the schedule or the Brownian path themselves are differentiated, the
generic route (reconstruct, then VJP the forward step) is taken.

The adjoint is written against diffrax 0.7.2 without patching it: it records the accepted times
with an extra `SubSaveAt(steps=True)` and allocates its buffer with diffrax's private
`SaveState`, so diffrax is pinned exactly (`tests/test_adjoint.py` checks the pin).

??? cite "References"

    McCallum & Foster, "Efficient, accurate and stable gradients for neural ODEs", 2024
    (reversible solvers and their adjoint); diffrax PR #727 (prior art for the API).
"""

import functools as ft

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from diffrax._integrate import SaveState  # noqa: PLC2701  (private: diffrax is pinned exactly)
from diffrax._term import WrapTerm  # noqa: PLC2701  (private: diffrax is pinned exactly)

from ._brownian import ReverseSDE
from ._lawson import lawson_increment
from ._reversible import (
    AbstractReversibleSolver,
    Rex,
    base_tableau,
    rex_copy_back,
    rex_solution_back,
    unwrap_term,
)
from ._tree import add as _tree_add, lin as _lin, scale as _scale


_lax_while = ft.partial(eqxi.while_loop, kind="lax")


def _is_none(x) -> bool:
    return x is None


def _is_subsaveat(x) -> bool:
    return isinstance(x, diffrax.SubSaveAt)


_SAVE_Y = diffrax.SubSaveAt(t1=True).fn  # diffrax's default `fn`, which saves y


def _save_nothing(t, y, args):
    """The `fn` of the recording `SubSaveAt`: only the accepted times are kept."""
    del t, y, args
    return None


def _add(acc, ct):
    """`acc + ct` leafwise, where `ct` may be `None` (a symbolic zero) anywhere `acc` has a
    leaf; `acc` may also be `None` where nothing is accumulated."""
    return jtu.tree_map(lambda a, c: a if c is None else a + c, acc, ct, is_leaf=_is_none)


def _zeros(tree):
    return jtu.tree_map(jnp.zeros_like, tree)


def _integer_zeros(ct, primal):
    """`ct` with the (float0) cotangents of integer leaves of `primal` (e.g. the fixed-point
    state of `rexjax.ExactRex`) replaced by integer zeros, so that they can be carried."""
    return jtu.tree_map(
        lambda c, p: jnp.zeros_like(p) if c.dtype == jax.dtypes.float0 else c, ct, primal
    )


def _materialise(primal, ct):
    """The cotangent `ct` of `primal`, with symbolic zeros (`None`) made explicit."""
    if ct is None:
        return _zeros(primal)
    return jtu.tree_map(lambda p, c: jnp.zeros_like(p) if c is None else c, primal, ct)


def _check(solver, stepsize_controller, event, saveat, max_steps, terms):
    name = type(solver).__name__
    if not isinstance(solver, AbstractReversibleSolver):
        base = "diffrax.Euler()" if not isinstance(solver, diffrax.AbstractERK) else f"{name}()"
        raise ValueError(
            f"`ReversibleAdjoint` needs a solver with an exact (algebraic) inverse, such as "
            f"`rexjax.Rex({base})`; got {name}, which cannot reconstruct its trajectory "
            "backwards. Use `adjoint=diffrax.RecursiveCheckpointAdjoint()` with it instead."
        )
    if event is not None:
        raise ValueError(
            "`ReversibleAdjoint` does not support events (the end time would depend on the "
            "solution). Use `adjoint=diffrax.RecursiveCheckpointAdjoint()` instead."
        )
    if saveat.dense:
        raise ValueError(
            "`ReversibleAdjoint` does not support `SaveAt(dense=True)` (it would store every "
            "step). Save at the times you need with `SaveAt(ts=...)` instead."
        )
    for sub in jtu.tree_leaves(saveat.subs, is_leaf=_is_subsaveat):
        if sub.fn is not _SAVE_Y:
            # diffrax wraps `fn` in a closure over a traced value, which the backward pass
            # (traced separately) cannot use.
            raise ValueError(
                "`ReversibleAdjoint` does not support `SaveAt(fn=...)`: save `y` (the default) "
                "and apply the function to `sol.ys` afterwards."
            )
        if sub.steps:
            raise ValueError(
                "`ReversibleAdjoint` does not support `SaveAt(steps=...)` (it would store "
                "every step). Save at the times you need with `SaveAt(ts=...)`, or use "
                "`adjoint=diffrax.RecursiveCheckpointAdjoint()`."
            )
    if max_steps is None:
        raise ValueError(
            "`ReversibleAdjoint` needs a finite `max_steps`: it records the accepted times "
            "(one scalar per step) in a buffer of that size."
        )

    def is_unsafe(x):
        return isinstance(x, diffrax.UnsafeBrownianPath)

    if any(is_unsafe(x) for x in jtu.tree_leaves(terms, is_leaf=is_unsafe)):
        raise ValueError(
            "`ReversibleAdjoint` does not support `UnsafeBrownianPath`: the backward pass must "
            "query the same Brownian increments again. Use `diffrax.VirtualBrownianTree`."
        )

    def is_clip(x):
        return isinstance(x, diffrax.ClipStepSizeController)

    for c in jtu.tree_leaves(stepsize_controller, is_leaf=is_clip):
        if is_clip(c) and c.jump_ts is not None:
            raise ValueError(
                "`ReversibleAdjoint` does not support `ClipStepSizeController(jump_ts=...)`: "
                "steps across a jump do not join up. Use `step_ts=...` instead."
            )


def _mark_nondifferentiable(final_state):
    """A cotangent for the times or the controller state of the solve is an error; the saved
    values, the final `y` and the final solver state stay differentiable."""
    nondiff = ft.partial(
        eqxi.nondifferentiable_backward,
        msg="Only the saved values (and the saved solver state) of a solve with "
        "`ReversibleAdjoint` can be differentiated, not its times or controller state.",
        symbolic=False,
    )

    def is_save_state(x):
        return isinstance(x, SaveState)

    save_state = jtu.tree_map(
        lambda s: eqx.tree_at(lambda x: x.ts, s, replace_fn=nondiff) if is_save_state(s) else s,
        final_state.save_state,
        is_leaf=is_save_state,
    )
    return eqx.tree_at(
        lambda s: (s.tprev, s.tnext, s.controller_state, s.save_state),
        final_state,
        (
            nondiff(final_state.tprev),
            nondiff(final_state.tnext),
            nondiff(final_state.controller_state),
            save_state,
        ),
        is_leaf=_is_none,
    )


def _fusable(solver, perturbed_terms) -> bool:
    """Whether the fused `Rex` pull-back applies: a `Rex` solver, and nothing differentiated in
    the terms but the model (its step coefficients and noise are then constants)."""
    if not isinstance(solver, Rex):
        return False
    term = perturbed_terms.term if isinstance(perturbed_terms, WrapTerm) else perturbed_terms
    if isinstance(term, ReverseSDE):
        if any(jtu.tree_leaves(term.path)):
            return False
        term = term.term
    schedule = getattr(term, "schedule", None)
    return schedule is not None and not any(jtu.tree_leaves(schedule))


def _rex_reconstruct(solver, terms, tau0, tau1, y1, s1, diff, nondiff):
    r"""Rex's inverse step from $(y_1, \hat y_1)$, linearising its two Lawson increments, and
    the pull-back of the forward step assembled from them.

    Forward: $y_1 = r(\zeta y_0 + (1-\zeta)\hat y_0) + \kappa_1\psi(\hat y_0)$,
    $\hat y_1 = \rho(r\hat y_0 - \kappa_1\psi^-(y_1)) + (1-\rho)y_1$. Given $(\bar y_1,
    \bar{\hat y}_1)$ and the dense output's cotangents: $g = \bar y_1 + (1-\rho)\bar{\hat y}_1 +
    \partial\psi^-(y_1)^\top(-\rho\kappa_1\bar{\hat y}_1)$, $\bar y_0 = r\zeta g$,
    $\bar{\hat y}_0 = \rho r\bar{\hat y}_1 + r(1-\zeta)g + \partial\psi(\hat y_0)^\top
    (\kappa_1 g)$, the parameters collecting both VJPs.

    **Returns:** `(y0, yh0, info, pullback)` with `pullback(ct_y1, ct_s1, ct_info) ->
    (ct_y0, ct_s0, ct_args, ct_terms)`.
    """
    diff_args, diff_terms = diff
    nondiff_args, nondiff_terms = nondiff
    _, t0, t1, v, r, kappa0, kappa1, noise = solver._parts(terms, tau0, tau1)
    tableau, zeta = base_tableau(solver.base), solver.step_coupling(v, t0, t1)
    rho = solver.copy_damping(v, t0, t1)

    def increment(start, end, nz):
        def fn(y, d_args, d_terms):
            term, _, _ = unwrap_term(eqx.combine(d_terms, nondiff_terms), tau0, tau1)
            term = term.term if isinstance(term, ReverseSDE) else term
            a = eqx.combine(d_args, nondiff_args)
            return lawson_increment(tableau, v, term, start, end, y, a, nz)[0]

        return fn

    back_noise = None if noise is None else noise.reversed()
    psi_back, vjp_back = jax.vjp(increment(t1, t0, back_noise), y1, diff_args, diff_terms)
    yh0 = rex_copy_back(y1, s1, psi_back, r, rho, kappa0)
    psi, vjp_fwd = jax.vjp(increment(t0, t1, noise), yh0, diff_args, diff_terms)
    y0 = rex_solution_back(y1, yh0, psi, r, zeta, kappa0)

    def pullback(ct_y1, ct_s1, ct_info):
        dy1, da_back, dt_back = vjp_back(_scale(-rho * kappa1, ct_s1))
        g = _tree_add(_tree_add(ct_y1, ct_info["y1"]), _tree_add(dy1, _scale(1 - rho, ct_s1)))
        ct_y0 = _tree_add(_scale(r * zeta, g), ct_info["y0"])
        dyh0, da_fwd, dt_fwd = vjp_fwd(_scale(kappa1, g))
        ct_s0 = _tree_add(_lin(rho * r, ct_s1, r * (1 - zeta), g), dyh0)
        return ct_y0, ct_s0, _tree_add(da_back, da_fwd), _tree_add(dt_back, dt_fwd)

    return y0, yh0, dict(y0=y0, y1=y1), pullback


class ReversibleAdjoint(diffrax.AbstractAdjoint):
    r"""Backpropagate through `diffrax.diffeqsolve` with a reversible solver in O(1) memory.

    Pass `adjoint=rexjax.ReversibleAdjoint()` to `diffrax.diffeqsolve` with a
    `rexjax.AbstractReversibleSolver` (e.g. `rexjax.Rex`). The forward pass keeps only the final
    state and the accepted times; the backward pass reconstructs each state with the solver's
    exact `backward_step` and pulls the cotangents back through one forward step at a time.
    The gradients are those of the discrete solution (as with
    `diffrax.RecursiveCheckpointAdjoint`) up to round-off, and the memory does not grow with
    the number of steps. `rexjax.sample` uses it by default for reversible solvers.

    Supported: ODEs and SDEs (a `diffrax.VirtualBrownianTree` inside the terms), any step-size
    controller (fixed, `StepTo`, `PIDController`: the accepted grid is replayed), and
    `SaveAt(t0=..., t1=..., ts=..., solver_state=...)`. Gradients flow to `y0`, to an
    explicitly passed `solver_state`, to `args` and to the arrays of the terms (an
    `equinox.Module` model, or a parameter pytree passed through `args`).

    Not supported (a `ValueError` says what to use instead): non-reversible solvers, events,
    `SaveAt(steps=...)`, `SaveAt(dense=True)`, `SaveAt(fn=...)`, `max_steps=None`,
    `diffrax.UnsafeBrownianPath`, `ClipStepSizeController(jump_ts=...)`. Gradients with
    respect to `t0`, `t1`, `dt0` or arrays closed over by the model are not computed (JAX
    raises a `CustomVJPException` for closed-over arrays: put them in an `equinox.Module` or
    in `args`). Forward-mode autodiff and higher derivatives are not supported (use
    `diffrax.DirectAdjoint`).

    !!! info

        The gradients are exactly as accurate as the reconstruction (`rexjax.invert`'s round
        trip), which the backward pass amplifies by about $1/\zeta$ a step for `rexjax.Rex`
        with coupling $\zeta$. Measured against backpropagation (`tests/test_adjoint.py`): in
        float64, 1e-16 to 2e-10 relative; in float32 on well-conditioned models, 1e-7 to 7e-6.
        Where the float32 inverse is ill-conditioned (data prediction with a poorly trained
        model: a round trip off by 0.7) the gradients are off by ~1e-2: check the round trip,
        and use float64, the noise prediction or `diffrax.RecursiveCheckpointAdjoint` there.
    """

    def loop(
        self,
        *,
        args,
        terms,
        solver,
        stepsize_controller,
        event,
        saveat,
        t0,
        t1,
        dt0,
        max_steps,
        throw,
        init_state,
        passed_solver_state,
        passed_controller_state,
        progress_meter,
    ):
        del throw, passed_solver_state, passed_controller_state
        _check(solver, stepsize_controller, event, saveat, max_steps, terms)
        # Record the accepted step end-times (in diffrax's internal, increasing time frame):
        # an extra `SubSaveAt(steps=True)` that saves no values, only `ts`.
        record = diffrax.SubSaveAt(steps=True, fn=_save_nothing)
        record_state = SaveState(
            saveat_ts_index=0,
            ts=jnp.full(max_steps, jnp.inf, dtype=jnp.result_type(t0)),
            ys=None,
            save_index=0,
        )
        saveat = eqx.tree_at(lambda s: s.subs, saveat, (saveat.subs, record))
        init_state = eqx.tree_at(
            lambda s: s.save_state,
            init_state,
            (init_state.save_state, record_state),
            is_leaf=_is_none,
        )
        y0, solver_state0 = init_state.y, init_state.solver_state
        # The initial solver state is an input of the custom VJP, so gradients reach an
        # explicitly passed state, and y0 through `solver.init` when diffrax computed it.
        init_state = eqx.tree_at(
            lambda s: (s.y, s.solver_state), init_state, (None, None), is_leaf=_is_none
        )
        init_state = eqx.tree_at(
            lambda s: s.controller_state,
            init_state,
            replace_fn=jax.lax.stop_gradient,
            is_leaf=_is_none,
        )
        final_state, aux_stats = _reversible_loop(
            (y0, solver_state0, args, terms),
            solver=solver,
            stepsize_controller=stepsize_controller,
            saveat=saveat,
            t0=t0,
            t1=t1,
            dt0=dt0,
            max_steps=max_steps,
            init_state=init_state,
            progress_meter=progress_meter,
        )

        # Integer outputs of a custom VJP carry (float0) tangents that some equinox
        # primitives downstream (e.g. `error_if`'s index) refuse; they are not differentiable.
        def is_int(x):
            return eqx.is_array(x) and not eqx.is_inexact_array(x)

        final_state = jtu.tree_map(
            lambda x: jax.lax.stop_gradient(x) if is_int(x) else x, final_state
        )
        final_state = _mark_nondifferentiable(final_state)
        user_save_state, _ = final_state.save_state
        final_state = eqx.tree_at(
            lambda s: s.save_state, final_state, user_save_state, is_leaf=_is_none
        )
        return final_state, aux_stats


def _forward(y__state__args__terms, *, init_state, **kwargs):
    from diffrax._integrate import loop  # noqa: PLC2701  (private: diffrax is pinned exactly)

    y0, solver_state0, args, terms = y__state__args__terms
    init_state = eqx.tree_at(
        lambda s: (s.y, s.solver_state), init_state, (y0, solver_state0), is_leaf=_is_none
    )
    return loop(
        args=args,
        terms=terms,
        init_state=init_state,
        event=None,
        inner_while_loop=_lax_while,
        outer_while_loop=_lax_while,
        **kwargs,
    )


@eqx.filter_custom_vjp
def _reversible_loop(y__state__args__terms, **kwargs):
    return _forward(y__state__args__terms, **kwargs)


@_reversible_loop.def_fwd
def _reversible_loop_fwd(perturbed, y__state__args__terms, **kwargs):
    del perturbed
    final_state, aux_stats = _forward(y__state__args__terms, **kwargs)
    _, record_state = final_state.save_state
    residuals = (
        final_state.y,
        final_state.solver_state,
        record_state.ts,
        final_state.num_accepted_steps,
    )
    return (final_state, aux_stats), residuals


@_reversible_loop.def_bwd
def _reversible_loop_bwd(
    residuals,
    grad_final_state__aux_stats,
    perturbed,
    y__state__args__terms,
    *,
    solver,
    saveat,
    t0,
    **kwargs,
):
    del kwargs
    y_final, state_final, record_ts, num_steps = residuals
    grad_final_state, _ = grad_final_state__aux_stats
    y0_in, _, args, terms = y__state__args__terms
    _, _, perturbed_args, perturbed_terms = perturbed
    # Only the perturbed arrays of `args` and `terms` are differentiated.
    diff_args, nondiff_args = eqx.partition(args, perturbed_args)
    diff_terms, nondiff_terms = eqx.partition(terms, perturbed_terms)
    times = jnp.concatenate([jnp.asarray(t0, record_ts.dtype)[None], record_ts])
    fused = _fusable(solver, perturbed_terms)

    subs = jtu.tree_leaves(saveat.subs[0], is_leaf=_is_subsaveat)
    grad_save_states, _ = grad_final_state.save_state
    grad_subs = jtu.tree_leaves(
        grad_save_states, is_leaf=lambda x: isinstance(x, SaveState) or x is None
    )
    if len(grad_subs) != len(subs):  # every SubSaveAt's cotangent is None
        grad_subs = [None] * len(subs)
    grad_ys = [None if g is None else g.ys for g in grad_subs]

    def pull_fn(sub, t, y, d_args, ct):
        """Cotangents of (y, args) from the saved value `sub.fn(t, y, args)`."""

        def fn(_y, _a):
            return sub.fn(t, _y, eqx.combine(_a, nondiff_args))

        _, vjp = jax.vjp(fn, y, d_args)
        return vjp(ct)

    def entry(ct_ys, index):
        return jtu.tree_map(lambda c: None if c is None else c[index], ct_ys, is_leaf=_is_none)

    # The end point: the final y and solver state, and any SaveAt(t1=True).
    ct_y = _materialise(y_final, grad_final_state.y)
    ct_state = _materialise(state_final, grad_final_state.solver_state)
    ct_args, ct_terms = _zeros(diff_args), _zeros(diff_terms)
    for sub, g in zip(subs, grad_ys, strict=True):
        if sub.t1 and g is not None:
            index = int(sub.t0) + (0 if sub.ts is None else len(sub.ts))
            dy, da = pull_fn(sub, times[num_steps], y_final, diff_args, entry(g, index))
            ct_y, ct_args = _add(ct_y, dy), _add(ct_args, da)

    # SaveAt(ts=...) entries are pulled back in the step that saved them; `pointers[i]` is the
    # last not-yet-handled entry of the i-th SubSaveAt.
    ts_subs = [
        (sub, g)
        for sub, g in zip(subs, grad_ys, strict=True)
        if sub.ts is not None and g is not None
    ]
    pointers = tuple(jnp.asarray(len(sub.ts) - 1) for sub, _ in ts_subs)

    def pull_dense(tau0, tau1, first, info, pointers, ct_info, ct_args):
        new_pointers = []
        for (sub, g), p in zip(ts_subs, pointers, strict=True):
            off = int(sub.t0)

            def cond(c, sub=sub):
                p = c[0]
                in_step = first | (sub.ts[jnp.maximum(p, 0)] > tau0)
                return (p >= 0) & in_step

            def body(c, sub=sub, g=g, off=off):
                p, ci, ca = c
                t = sub.ts[p]

                def value(_info, _a):
                    interp = solver.interpolation_cls(t0=tau0, t1=tau1, **_info)
                    return sub.fn(t, interp.evaluate(t), eqx.combine(_a, nondiff_args))

                _, vjp = jax.vjp(value, info, diff_args)
                d_info, d_args = vjp(entry(g, off + p))
                return p - 1, _add(ci, d_info), _add(ca, d_args)

            p, ct_info, ct_args = jax.lax.while_loop(cond, body, (p, ct_info, ct_args))
            new_pointers.append(p)
        return tuple(new_pointers), ct_info, ct_args

    def step_body(carry):
        k, y1, s1, ct_y, ct_s, ct_args, ct_terms, pointers = carry
        tau0, tau1 = times[k - 1], times[k]
        if fused:
            y0, s0, info, pullback = _rex_reconstruct(
                solver,
                terms,
                tau0,
                tau1,
                y1,
                s1,
                (diff_args, diff_terms),
                (nondiff_args, nondiff_terms),
            )
        else:
            # Reconstruct the state at the start of the step with the exact inverse...
            y0, _, s0, _ = solver.backward_step(terms, tau0, tau1, y1, args, None, s1, False)

            # ...then take the VJP of the forward step there.
            def forward(y, s, d_args, d_terms):
                a = eqx.combine(d_args, nondiff_args)
                tm = eqx.combine(d_terms, nondiff_terms)
                y_next, _, info, s_next, _ = solver.step(tm, tau0, tau1, y, a, s, False)
                return y_next, s_next, info

            (_, _, info), vjp = jax.vjp(forward, y0, s0, diff_args, diff_terms)

            def pullback(ct_y1, ct_s1, ct_info):
                return vjp((ct_y1, ct_s1, ct_info))

        pointers, ct_info, ct_args = pull_dense(
            tau0, tau1, k == 1, info, pointers, _zeros(info), ct_args
        )
        dy, ds, da, dterms = pullback(ct_y, ct_s, ct_info)
        ds = _integer_zeros(ds, s0)
        return k - 1, y0, s0, dy, ds, _add(ct_args, da), _add(ct_terms, dterms), pointers

    carry = (num_steps, y_final, state_final, ct_y, ct_state, ct_args, ct_terms, pointers)
    carry = jax.lax.while_loop(lambda c: c[0] > 0, step_body, carry)
    _, _, _, ct_y, ct_state, ct_args, ct_terms, pointers = carry

    # The start point: SaveAt(t0=True), and SaveAt(ts=...) entries left over when t0 == t1
    # (no step was taken: diffrax saves y0 at every such time).
    for sub, g in zip(subs, grad_ys, strict=True):
        if sub.t0 and g is not None:
            dy, da = pull_fn(sub, times[0], y0_in, diff_args, entry(g, 0))
            ct_y, ct_args = _add(ct_y, dy), _add(ct_args, da)
    for (sub, g), p in zip(ts_subs, pointers, strict=True):
        off = int(sub.t0)

        def body(c, sub=sub, g=g, off=off):
            p, cy, ca = c
            dy, da = pull_fn(sub, times[0], y0_in, diff_args, entry(g, off + p))
            return p - 1, _add(cy, dy), _add(ca, da)

        _, ct_y, ct_args = jax.lax.while_loop(lambda c: c[0] >= 0, body, (p, ct_y, ct_args))

    return ct_y, ct_state, ct_args, ct_terms
