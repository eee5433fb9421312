"""`rexjax.ReversibleAdjoint`: gradients equal backpropagation through the solver, memory does
not grow with the number of steps, and unsupported set-ups fail with a clear error.

Most of the time is XLA compilation (each comparison compiles two gradients). The default run
covers Euler (both predictions), Tsit5 and PID-Dopri5 (data prediction) and the SDE with
Euler; `pytest -m slow` adds the remaining solver/prediction/SaveAt combinations and ShARK
(about 4 min of CPU time)."""

import re
import tomllib
from pathlib import Path
from typing import ClassVar

import diffrax
import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import rexjax as rx
from helpers import rel_err


SCHEDULE = rx.VPSchedule.linear()
DIM = 3


class MLP(eqx.Module):
    """A small time-conditioned noise-prediction network, scaled by `args`."""

    l1: eqx.nn.Linear
    l2: eqx.nn.Linear

    def __init__(self, key, dtype=jnp.float64):
        k1, k2 = jax.random.split(key)
        self.l1 = eqx.nn.Linear(DIM + 1, 16, key=k1, dtype=dtype)
        self.l2 = eqx.nn.Linear(16, DIM, key=k2, dtype=dtype)

    def __call__(self, t, x, args):
        h = jnp.tanh(self.l1(jnp.concatenate([x, jnp.asarray(t, x.dtype)[None]])))
        return args * self.l2(h)


def _setup(dtype=jnp.float64, num_steps=12):
    model = MLP(jax.random.key(0), dtype)
    y0 = jax.random.normal(jax.random.key(1), (DIM,), dtype)
    args = jnp.asarray(0.8, dtype)
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-2, num_steps).astype(dtype)
    return model, y0, args, ts


def _loss(ys):
    # Nonlinear in every saved value, so every cotangent is non-trivial.
    return jnp.sum(ys**2) + jnp.sum(jnp.sin(3 * ys))


def _solve_loss(model, y0, args, *, adjoint, solver, ts, saveat, controller=None):
    term = rx.DiffusionTerm(model, SCHEDULE, "noise")
    adaptive = controller is not None
    sol = diffrax.diffeqsolve(
        term,
        solver,
        t0=ts[0],
        t1=ts[-1],
        dt0=(ts[1] - ts[0]) if adaptive else None,
        y0=y0,
        args=args,
        stepsize_controller=controller if adaptive else diffrax.StepTo(ts),
        saveat=saveat,
        adjoint=adjoint,
        max_steps=256,
    )
    return _loss(sol.ys)


def _grads(adjoint, model, y0, args, **kwargs):
    """Gradients w.r.t. (model parameters, y0, args), flattened, and each part's size."""

    def fn(m, y, a):
        return _solve_loss(m, y, a, adjoint=adjoint, **kwargs)

    g = eqx.filter_jit(eqx.filter_grad(lambda mya: fn(*mya)))((model, y0, args))
    return ravel_pytree(eqx.filter(g, eqx.is_inexact_array))[0], g


def _compare(model, y0, args, **kwargs):
    """Relative difference of ReversibleAdjoint and RecursiveCheckpointAdjoint gradients,
    overall and for each of (model, y0, args) separately."""
    a, ga = _grads(rx.ReversibleAdjoint(), model, y0, args, **kwargs)
    b, gb = _grads(diffrax.RecursiveCheckpointAdjoint(), model, y0, args, **kwargs)
    parts = []
    for pa, pb in zip(ga, gb, strict=True):
        va = ravel_pytree(eqx.filter(pa, eqx.is_inexact_array))[0]
        vb = ravel_pytree(eqx.filter(pb, eqx.is_inexact_array))[0]
        assert np.max(np.abs(vb)) > 0  # a non-trivial gradient for every part
        parts.append(rel_err(va, vb))
    return rel_err(a, b), parts


# Off-grid save times (between accepted steps: exercises the dense-output pull-back).
def _saveats(ts):
    mid = 0.5 * (ts[2:-1:3] + ts[3::3])
    return {
        "t1": diffrax.SaveAt(t1=True),
        "t0_ts_t1": diffrax.SaveAt(t0=True, ts=jnp.concatenate([ts[:1], mid]), t1=True),
    }


# float64: the reconstruction is exact to round-off, so both gradients are the same
# computation up to ~1e-16 amplified by the backward pass (about 1/coupling a step) and by the
# model's conditioning; 1e-8 is the bound, with a wide margin (measured <= 6e-11).
FIXED = [
    pytest.param(diffrax.Euler(), "data", "t0_ts_t1", id="euler-data"),
    pytest.param(diffrax.Euler(), "noise", "t0_ts_t1", id="euler-noise"),
    pytest.param(diffrax.Tsit5(), "data", "t0_ts_t1", id="tsit5-data", marks=pytest.mark.slow),
    pytest.param(diffrax.Tsit5(), "noise", "t0_ts_t1", id="tsit5-noise", marks=pytest.mark.slow),
] + [
    pytest.param(base, prediction, "t1", id=f"{name}-{prediction}-t1", marks=pytest.mark.slow)
    for base, name in ((diffrax.Euler(), "euler"), (diffrax.Tsit5(), "tsit5"))
    for prediction in ("data", "noise")
]


@pytest.mark.parametrize("base, prediction, save", FIXED)
def test_matches_checkpointing_fixed_grid(base, prediction, save):
    model, y0, args, ts = _setup()
    err, parts = _compare(
        model, y0, args, solver=rx.Rex(base, prediction), ts=ts, saveat=_saveats(ts)[save]
    )
    assert err <= 1e-8, (err, parts)
    assert max(parts) <= 1e-8, parts


@pytest.mark.parametrize(
    "prediction, save",
    [
        ("data", "t0_ts_t1"),
        pytest.param("noise", "t0_ts_t1", marks=pytest.mark.slow),
        pytest.param("data", "t1", marks=pytest.mark.slow),
        pytest.param("noise", "t1", marks=pytest.mark.slow),
    ],
)
def test_matches_checkpointing_pid_dopri5(prediction, save):
    model, y0, args, ts = _setup()
    controller = diffrax.PIDController(rtol=1e-6, atol=1e-6)
    solver = rx.Rex(diffrax.Dopri5(), prediction)
    err, parts = _compare(
        model,
        y0,
        args,
        solver=solver,
        ts=ts,
        controller=controller,
        saveat=_saveats(ts)[save],
    )
    assert err <= 1e-8, (err, parts)
    # Not a fixed grid in disguise: the accepted steps vary in size.
    term = rx.DiffusionTerm(model, SCHEDULE, "noise")
    grid = rx.adaptive_grid(term, solver, y0, ts[0], ts[-1], controller, args, dt0=ts[1] - ts[0])
    steps = np.abs(np.diff(grid))
    assert steps.size > 5 and np.ptp(steps) > 0.1 * np.max(steps), grid


class PerturbedGaussian(eqx.Module):
    """The exact noise prediction of Gaussian data N(0.5, 0.3^2) plus a small network: a
    realistic (well-conditioned) model."""

    mlp: MLP

    def __call__(self, t, x, args):
        a, s = SCHEDULE.alpha(t), SCHEDULE.sigma(t)
        exact = s * (x - 0.5 * a) / (0.09 * a**2 + s**2)
        return exact.astype(x.dtype) + self.mlp(t, x, args)


@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_float32_bound(prediction):
    """float32, 50 Euler steps, a well-conditioned model: the reconstruction is no longer
    exact (float32 round trip 2e-6 / 3e-5), so the gradients differ from backpropagation more
    than in float64. Measured 1.4e-7 (data) and 7.1e-6 (noise); bound 5e-5.

    Where the float32 inverse itself is ill-conditioned (e.g. data prediction with the random
    network of `_setup`, whose float32 round trip is off by 0.7), the gradients are off by as
    much (2e-2): use float64, the noise prediction or `RecursiveCheckpointAdjoint` there."""
    mlp, y0, _, ts = _setup(num_steps=50)

    def cast(x):
        return x.astype(jnp.float32) if eqx.is_inexact_array(x) else x

    model, y0, args, ts = jax.tree_util.tree_map(
        cast, (PerturbedGaussian(mlp), y0, jnp.asarray(0.1), ts)
    )
    solver = rx.Rex(diffrax.Euler(), prediction)
    err, parts = _compare(model, y0, args, solver=solver, ts=ts, saveat=diffrax.SaveAt(t1=True))
    assert err <= 5e-5, (err, parts)


# ---------------------------------------------------------------------------------------------
# rexjax.sample


def _sample_loss(model, y, args, ts, solver, adjoint=None, full_state=False):
    term = rx.DiffusionTerm(model, SCHEDULE, "noise")
    out = rx.sample(term, solver, y, ts, args, full_state=full_state, adjoint=adjoint)
    if full_state:
        return _loss(out.y) + jnp.sum(jnp.cos(out.solver_state))
    return _loss(out)


def test_sample_default_is_reversible_adjoint():
    """`sample` differentiates through `ReversibleAdjoint` by default for Rex (no memory
    growth: compiled temporaries equal those of an explicit ReversibleAdjoint), and through
    checkpointing for a non-reversible solver."""
    model, y0, args, ts = _setup(num_steps=16)

    def temp(adjoint, solver):
        f = jax.grad(lambda y: _sample_loss(model, y, args, ts, solver, adjoint))
        return jax.jit(f).lower(y0).compile().memory_analysis().temp_size_in_bytes

    rex = rx.Rex(diffrax.Euler(), "data")
    assert temp(None, rex) == temp(rx.ReversibleAdjoint(), rex)
    assert temp(None, rex) < temp(diffrax.RecursiveCheckpointAdjoint(), rex)
    princeps = rx.Princeps(diffrax.Euler(), "data")
    assert temp(None, princeps) == temp(diffrax.RecursiveCheckpointAdjoint(), princeps)


@pytest.mark.parametrize("full_state", [False, True])
def test_sample_gradients(full_state):
    """Through `sample`: w.r.t. the model, args, and a `ReversibleState` latent (both its
    `y` and its solver state), also when the output is the full state."""
    model, y0, args, ts = _setup()
    solver = rx.Rex(diffrax.Midpoint(), "data", coupling=0.9)
    latent = rx.ReversibleState(y0, 0.5 * y0 + 0.1)  # a coupled state != y

    def grads(adjoint):
        def f(m, lat, a):
            return _sample_loss(m, lat, a, ts, solver, adjoint, full_state)

        return eqx.filter_jit(eqx.filter_grad(lambda x: f(*x)))((model, latent, args))

    ga, gb = grads(None), grads(diffrax.RecursiveCheckpointAdjoint())
    for pa, pb in zip(
        jax.tree_util.tree_leaves(eqx.filter(ga, eqx.is_inexact_array)),
        jax.tree_util.tree_leaves(eqx.filter(gb, eqx.is_inexact_array)),
        strict=True,
    ):
        assert np.max(np.abs(pb)) > 0
        assert rel_err(pa, pb) <= 1e-8
    # The y0 cotangent includes the initial coupled state's when it is y0 itself.
    g_y = jax.grad(lambda y: _sample_loss(model, y, args, ts, solver))(y0)
    g_lat = jax.grad(lambda lat: _sample_loss(model, lat, args, ts, solver))(
        rx.ReversibleState(y0, y0)
    )
    np.testing.assert_allclose(g_y, g_lat.y + g_lat.solver_state, rtol=1e-12, atol=0)


@pytest.mark.filterwarnings(
    "ignore::rexjax.CouplingWarning"
)  # noise at a fixed coupling, on purpose
def test_flax_parameters_in_args():
    """A Flax (Linen) model whose parameter pytree is passed as `args`."""

    class Net(nn.Module):
        @nn.compact
        def __call__(self, t, x):
            h = jnp.concatenate([x, jnp.full((1,), t, x.dtype)])
            return nn.Dense(DIM, param_dtype=jnp.float64)(
                jnp.tanh(nn.Dense(8, param_dtype=jnp.float64)(h))
            )

    net = Net()
    _, y0, _, ts = _setup()
    params = net.init(jax.random.key(2), jnp.asarray(0.5), y0)["params"]

    def model(t, x, p):
        return net.apply({"params": p}, t, x)

    term = rx.DiffusionTerm(model, SCHEDULE, "noise")
    solver = rx.Rex(diffrax.Midpoint(), "noise", 0.999)

    def grads(adjoint):
        def f(p):
            return _loss(rx.sample(term, solver, y0, ts, p, adjoint=adjoint))

        return jax.jit(jax.grad(f))(params)

    a = ravel_pytree(grads(rx.ReversibleAdjoint()))[0]
    b = ravel_pytree(grads(diffrax.RecursiveCheckpointAdjoint()))[0]
    assert np.max(np.abs(b)) > 0
    assert rel_err(a, b) <= 1e-10


def test_closed_over_parameters_raise():
    """Arrays closed over by the model cannot get gradients: JAX says so (rather than
    returning a silent zero)."""
    model, y0, args, ts = _setup()
    solver = rx.Rex(diffrax.Euler(), "data")

    def f(scale):
        term = rx.DiffusionTerm(lambda t, x, a: scale * model(t, x, a), SCHEDULE, "noise")
        return _loss(rx.sample(term, solver, y0, ts, args))

    with pytest.raises(Exception, match="closed-over value"):
        jax.grad(f)(jnp.asarray(1.0))


# ---------------------------------------------------------------------------------------------
# Edge cases


def test_one_step():
    model, y0, args, ts = _setup()
    ts = ts[:2]
    saveat = diffrax.SaveAt(t0=True, ts=ts.mean()[None], t1=True)
    solver = rx.Rex(diffrax.Euler(), "noise")
    err, _ = _compare(model, y0, args, solver=solver, ts=ts, saveat=saveat)
    assert err <= 1e-12


def test_zero_steps():
    """t0 == t1: no step is taken and every saved value is y0, so the gradient of the loss
    is exact (sum of the loss's gradient at y0 over the saved copies)."""
    model, y0, args, _ = _setup()
    term = rx.DiffusionTerm(model, SCHEDULE, "noise")

    def f(y, adjoint):
        sol = diffrax.diffeqsolve(
            term,
            rx.Rex(diffrax.Euler(), "data"),
            t0=0.5,
            t1=0.5,
            dt0=-0.1,
            y0=y,
            args=args,
            saveat=diffrax.SaveAt(t0=True, ts=jnp.array([0.5, 0.5]), t1=True),
            adjoint=adjoint,
            max_steps=4,
        )
        assert sol.ys.shape == (4, DIM)
        return _loss(sol.ys)

    g = jax.jit(jax.grad(lambda y: f(y, rx.ReversibleAdjoint())))(y0)
    exact = 4 * (2 * y0 + 3 * jnp.cos(3 * y0))
    np.testing.assert_allclose(g, exact, rtol=1e-14)
    g_rca = jax.grad(lambda y: f(y, diffrax.RecursiveCheckpointAdjoint()))(y0)
    np.testing.assert_allclose(g, g_rca, rtol=1e-14)


def test_batched():
    """`jax.vmap` over a batch of y0 (the backward loop runs under vmap)."""
    model, y0, args, ts = _setup()
    y0s = jnp.stack([y0, -y0, 2 * y0])
    saveat = diffrax.SaveAt(ts=ts[1:4], t1=True)
    solver = rx.Rex(diffrax.Euler(), "noise")

    def grads(adjoint):
        def f(a):
            return jnp.sum(
                jax.vmap(
                    lambda y: _solve_loss(
                        model, y, a, adjoint=adjoint, solver=solver, ts=ts, saveat=saveat
                    )
                )(y0s)
            )

        return jax.jit(jax.grad(f))(args)

    a, b = grads(rx.ReversibleAdjoint()), grads(diffrax.RecursiveCheckpointAdjoint())
    assert rel_err(a, b) <= 1e-8


@pytest.mark.parametrize(
    "base, prediction, coupling",
    [
        pytest.param(diffrax.Euler(), "data", 0.999, id="euler-data"),
        pytest.param(diffrax.ShARK(), "noise", 0.25, id="shark-noise", marks=pytest.mark.slow),
    ],
)
def test_rex_sde_with_key(base, prediction, coupling):
    """The reverse SDE (`sample(..., key=...)`, a replayable Brownian path): gradients w.r.t.
    the model, y0 and args equal checkpointing's in float64 (measured 5e-13 Euler/data, 2e-11
    ShARK/noise). The model is well conditioned (a perturbed exact score): the adjoint is as
    accurate as the reconstruction, and with the random network of `_setup` the float64 SDE
    round trip itself is off by 1e-2 for data prediction."""
    mlp, y0, _, ts = _setup()
    model, args = PerturbedGaussian(mlp), jnp.asarray(0.1)
    solver = rx.Rex(base, prediction, coupling=coupling)
    key = jax.random.key(5)

    def grads(adjoint):
        def f(x):
            m, y, a = x
            term = rx.DiffusionTerm(m, SCHEDULE, "noise")
            return _loss(rx.sample(term, solver, y, ts, a, key=key, adjoint=adjoint))

        g = eqx.filter_jit(eqx.filter_grad(f))((model, y0, args))
        return [ravel_pytree(eqx.filter(p, eqx.is_inexact_array))[0] for p in g]

    for a, b in zip(grads(None), grads(diffrax.RecursiveCheckpointAdjoint()), strict=True):
        assert np.max(np.abs(b)) > 0
        assert rel_err(a, b) <= 1e-8


class CoupledEuler(rx.AbstractReversibleSolver, diffrax.AbstractItoSolver):
    r"""A test-only reversible solver for any terms (SDEs included): the McCallum–Foster
    coupling of Euler's method, $y_1 = \zeta y_0 + (1-\zeta)z_0 + \Phi(t_0\to t_1, z_0)$,
    $z_1 = z_0 - \Phi(t_1 \to t_0, y_1)$ with $\Phi$ one Euler step of the terms. It checks
    that nothing in the adjoint is specific to ODEs or to `DiffusionTerm`."""

    coupling: float = 0.9
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return 1

    def init(self, terms, t0, t1, y0, args):
        return y0

    def _phi(self, terms, t0, t1, y, args):
        return terms.vf_prod(t0, y, args, terms.contr(t0, t1))

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        z0, c = solver_state, self.coupling
        y1 = c * y0 + (1 - c) * z0 + self._phi(terms, t0, t1, z0, args)
        z1 = z0 - self._phi(terms, t1, t0, y1, args)
        return y1, None, dict(y0=y0, y1=y1), z1, diffrax.RESULTS.successful

    def backward_step(self, terms, t0, t1, y1, args, ts_state, solver_state, made_jump):
        c = self.coupling
        z0 = solver_state + self._phi(terms, t1, t0, y1, args)
        y0 = (y1 - (1 - c) * z0 - self._phi(terms, t0, t1, z0, args)) / c
        return y0, dict(y0=y0, y1=y1), z0, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


class Diffusion(eqx.Module):
    scale: jax.Array

    def __call__(self, t, y, args):
        return lx.DiagonalLinearOperator(self.scale * jnp.tanh(y) + args)


@pytest.mark.slow  # suite time (`pytest -m slow`): ~30 s; the Rex SDE
# adjoint with a key is also tested by test_rex_sde_with_key
def test_sde_with_key_generic_solver():
    """An SDE (drift network, state-dependent diffusion, a `VirtualBrownianTree` from a key):
    gradients w.r.t. both terms' parameters, y0 and args equal checkpointing's (float64)."""
    model, y0, args, ts = _setup()
    bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-3, shape=(DIM,), key=jax.random.key(3))

    def loss(m, dif, y, a, adjoint):
        terms = diffrax.MultiTerm(diffrax.ODETerm(m), diffrax.ControlTerm(dif, bm))
        sol = diffrax.diffeqsolve(
            terms,
            CoupledEuler(),
            0.0,
            1.0,
            0.05,
            y,
            a,
            saveat=diffrax.SaveAt(ts=jnp.array([0.33, 0.5]), t1=True),
            adjoint=adjoint,
            max_steps=32,
        )
        return _loss(sol.ys)

    dif = Diffusion(jnp.array([0.3, 0.5, 0.7]))

    def grads(adjoint):
        def f(x):
            return loss(*x, adjoint)

        g = eqx.filter_jit(eqx.filter_grad(f))((model, dif, y0, args))
        return ravel_pytree(eqx.filter(g, eqx.is_inexact_array))[0]

    a, b = grads(rx.ReversibleAdjoint()), grads(diffrax.RecursiveCheckpointAdjoint())
    assert np.max(np.abs(b)) > 0
    assert rel_err(a, b) <= 1e-10


# ---------------------------------------------------------------------------------------------
# Memory


class Elementwise(eqx.Module):
    """A noise prediction acting elementwise on a 1024-dimensional state, so that the state
    (8 KiB), not the per-step scalars, sets the memory scale."""

    w: jax.Array
    b: jax.Array

    def __call__(self, t, x, args):
        return jnp.tanh(self.w * x + self.b * t)


def _temp_bytes(adjoint, num_steps, dim=1024):
    model = Elementwise(jnp.linspace(0.5, 1.5, dim), jnp.linspace(-1.0, 1.0, dim))
    y0 = jnp.sin(jnp.arange(dim, dtype=jnp.float64))
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-2, num_steps)
    solver = rx.Rex(diffrax.Euler(), "data")

    def f(m):
        term = rx.DiffusionTerm(m, SCHEDULE, "noise")
        return _loss(rx.sample(term, solver, y0, ts, adjoint=adjoint))

    lowered = jax.jit(lambda m: eqx.filter_grad(f)(m)).lower(model)
    return lowered.compile().memory_analysis().temp_size_in_bytes


def test_memory_flat_in_steps():
    """Compiled temporary memory of the gradient w.r.t. the model: flat for ReversibleAdjoint
    (512 steps under 1.5x of 16 steps; only the buffer of accepted times, 8 bytes a step,
    grows; measured 75 KB -> 79 KB), growing for checkpointing (measured 185 KB -> 784 KB)."""
    rev = [_temp_bytes(rx.ReversibleAdjoint(), n) for n in (16, 512)]
    rca = [_temp_bytes(diffrax.RecursiveCheckpointAdjoint(), n) for n in (16, 512)]
    assert rev[1] < 1.5 * rev[0], rev
    assert rca[1] > 2 * rca[0], rca
    assert rev[1] < rca[1] / 4, (rev, rca)


# ---------------------------------------------------------------------------------------------
# Errors


def _solve(solver, adjoint=None, term=None, **kwargs):
    model, y0, args, ts = _setup()
    term = rx.DiffusionTerm(model, SCHEDULE, "noise") if term is None else term
    kw = dict(t0=ts[0], t1=ts[-1], dt0=ts[1] - ts[0], y0=y0, args=args, max_steps=64)
    kw.update(kwargs)
    adjoint = rx.ReversibleAdjoint() if adjoint is None else adjoint
    return diffrax.diffeqsolve(term, solver, adjoint=adjoint, **kw)


def test_errors():
    rex = rx.Rex(diffrax.Euler())
    with pytest.raises(ValueError, match=r"exact .*inverse.*rexjax.Rex\(diffrax.Euler"):
        _solve(rx.Princeps(diffrax.Euler()))
    with pytest.raises(ValueError, match="RecursiveCheckpointAdjoint"):
        _solve(rx.Princeps(diffrax.Tsit5()))
    with pytest.raises(ValueError, match="events"):
        _solve(rex, event=diffrax.Event(lambda t, y, args, **kw: jnp.sum(y) > 10.0))
    with pytest.raises(ValueError, match=re.escape("SaveAt(steps=...)")):
        _solve(rex, saveat=diffrax.SaveAt(steps=True))
    with pytest.raises(ValueError, match=re.escape("SaveAt(fn=...)")):
        _solve(rex, saveat=diffrax.SaveAt(t1=True, fn=lambda t, y, a: y**2))
    with pytest.raises(ValueError, match=re.escape("SaveAt(dense=True)")):
        _solve(rex, saveat=diffrax.SaveAt(dense=True))
    with pytest.raises(ValueError, match="max_steps"):
        _solve(rex, max_steps=None)
    with pytest.raises(ValueError, match="jump_ts"):
        controller = diffrax.ClipStepSizeController(
            diffrax.PIDController(rtol=1e-3, atol=1e-3), jump_ts=[0.5]
        )
        _solve(rx.Rex(diffrax.Dopri5()), stepsize_controller=controller)
    model, _, _, _ = _setup()
    bm = diffrax.UnsafeBrownianPath(shape=(DIM,), key=jax.random.key(0))
    sde = diffrax.MultiTerm(
        rx.DiffusionTerm(model, SCHEDULE, "noise"),
        diffrax.ControlTerm(lambda t, y, a: jnp.ones(DIM), bm),
    )
    with pytest.raises(ValueError, match="VirtualBrownianTree"):
        _solve(CoupledEuler(), term=sde)


def test_diffrax_pin():
    """The adjoint uses private diffrax helpers (`SaveState`, the integrate loop): the
    installed diffrax must be exactly the version pinned in pyproject.toml."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("diffrax")]
    assert len(pins) == 1 and "==" in pins[0], pins
    assert diffrax.__version__ == pins[0].split("==")[1].strip()
