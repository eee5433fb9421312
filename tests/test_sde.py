"""Reverse-time SDE sampling with replayable Brownian paths: determinism, exact inversion,
distribution, strong order, the SDE-DPM-Solver++(1) identity, long runs, errors.

All figures in the comments were measured with these exact settings (float64 unless said)."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rexjax as rx
from helpers import GaussianModel, rel_err


SCHEDULE = rx.VPSchedule.linear()
T_START, T_END = 1.0, 1e-3
MU, S = 0.5, 0.3
KEY = jax.random.key(0)


def _gauss():
    return GaussianModel(SCHEDULE, mu=MU, s=S)


def _gmm_term():
    gmm = rx.GaussianMixture([[0.5, -0.2], [-0.7, 0.4]], [0.2, 0.3], [0.4, 0.6], SCHEDULE)
    return rx.DiffusionTerm(gmm, SCHEDULE, "noise")


def _grid(n, dtype=jnp.float64):
    return rx.log_snr_grid(SCHEDULE, T_START, T_END, n).astype(dtype)


def _marginal(t):
    a, s = SCHEDULE.alpha(t), SCHEDULE.sigma(t)
    return float(a * MU), float(jnp.sqrt(a**2 * S**2 + s**2))


def _prior_sample(n, key):
    mean, std = _marginal(T_START)
    return mean + std * jax.random.normal(key, (n,))


# Noise prediction needs coupling <= e^{-2 dlambda} on the SDE (see rexjax._inversion); 0.5 is
# below that for every grid used here (50 steps: bound 0.68).
def _rex(base, prediction):
    return rx.Rex(base, prediction, 0.999 if prediction == "data" else 0.5)


# --- key API and determinism ---------------------------------------------------------------


# Compilation dominates the run time (a tree query alone compiles in ~13 s on 2 CPU cores;
# running 50 steps takes 0.08 s), so the default tests share one configuration: 64 scalars,
# 50 log-SNR steps. Others are marked slow (their durations are noted).
N_STEPS, SHAPE = 50, (64,)


def test_same_key_bitwise_different_key_differs_no_key_is_ode():
    term, ts = _gauss().term(), _grid(N_STEPS)
    y = jax.random.normal(jax.random.key(1), SHAPE)
    solver = rx.Rex(diffrax.ShARK(), "data")
    a = rx.sample(term, solver, y, ts, key=jax.random.key(3))
    # A fresh path from the same key (the PyTorch reference's trap: it does not replay).
    b = rx.sample(term, solver, y, ts, key=jax.random.key(3))
    c = rx.sample(term, solver, y, ts, key=jax.random.key(4))
    ode = rx.sample(term, solver, y, ts)  # key=None: the probability-flow ODE
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.min(np.abs(np.asarray(a - c))) > 0  # every element differs
    assert np.min(np.abs(np.asarray(a - ode))) > 0
    assert rel_err(ode, _gauss().flow_map(ts[0], y, ts[-1])) < 4e-3  # RK2 drift: 1.9e-3
    # The same with diffrax.diffeqsolve directly (the documented recipe).
    sde = rx.reverse_sde(term, solver, jax.random.key(3), ts, y)
    sol = diffrax.diffeqsolve(
        sde, solver, ts[0], ts[-1], None, y, stepsize_controller=diffrax.StepTo(ts)
    )
    assert np.array_equal(np.asarray(sol.ys[-1]), np.asarray(a))
    # Batches get independent noise per element (one Brownian object for a whole batch, as in
    # the PyTorch reference, would map equal inputs to equal outputs).
    same = rx.sample(term, solver, jnp.zeros(SHAPE), ts, key=KEY)
    assert np.unique(np.asarray(same)).size == SHAPE[0]


# --- exact inversion --------------------------------------------------------------------


ROUND_TRIP_CASES = [
    pytest.param(diffrax.Euler(), "data"),
    pytest.param(diffrax.ShARK(), "data"),
    pytest.param(diffrax.Euler(), "noise", marks=pytest.mark.slow),  # ~45 s
    pytest.param(diffrax.ShARK(), "noise", marks=pytest.mark.slow),  # ~45 s
    pytest.param(diffrax.SRA1(), "data", marks=pytest.mark.slow),  # ~45 s
    pytest.param(diffrax.SEA(), "data", marks=pytest.mark.slow),  # ~45 s
    pytest.param(diffrax.SRA1(), "noise", marks=pytest.mark.slow),  # ~45 s
    pytest.param(diffrax.SEA(), "noise", marks=pytest.mark.slow),  # ~45 s
]


@pytest.mark.parametrize("base, prediction", ROUND_TRIP_CASES)
def test_round_trip_float64(base, prediction):
    # invert (data -> latent) then sample (latent -> data), same key, 50 steps.
    # Measured max relative error, data: EM 1.9e-12, ShARK 6.2e-14, SRA1 3.1e-13, SEA 2.1e-15;
    # noise (coupling 0.5): EM 2.3e-13, ShARK 3.0e-14. Bound 1e-10 (the floor).
    term, ts = _gauss().term(), _grid(N_STEPS)
    x0 = MU + S * jax.random.normal(jax.random.key(2), SHAPE)
    solver = _rex(base, prediction)
    latent = rx.invert(term, solver, x0, ts, key=KEY)
    assert np.all(np.isfinite(np.asarray(latent.y)))
    x0_again = rx.sample(term, solver, latent, ts, key=KEY)
    assert rel_err(x0_again, x0) < 1e-10


@pytest.mark.slow  # ~90 s
@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_round_trip_float32(prediction):
    # float32 states, grid and noise, 50 ShARK steps. Measured: data 5.0e-5, noise 2.1e-5.
    # Bound 1e-4: float32 round-off (6e-8) amplified by the coupled pair's conditioning.
    term, ts = _gauss().term(), _grid(N_STEPS, jnp.float32)
    x0 = (MU + S * jax.random.normal(jax.random.key(2), SHAPE)).astype(jnp.float32)
    solver = _rex(diffrax.ShARK(), prediction)
    latent = rx.invert(term, solver, x0, ts, key=KEY)
    assert latent.y.dtype == jnp.float32
    x0_again = rx.sample(term, solver, latent, ts, key=KEY)
    assert x0_again.dtype == jnp.float32
    err = rel_err(x0_again, x0)
    print(f"float32 SDE round trip ({prediction}): {err:.2e}")
    assert err < 1e-4


@pytest.mark.slow  # ~50 s
def test_sample_then_invert_full_state():
    # sample with its full state, then invert: x and the coupled copy come back, to the
    # conditioning of the inverse. With data prediction the inverse of a sampling step expands
    # the coupled pair's second mode (by about e^z/coupling, z = dvs/vs Cov(eps|x) >= 0), so
    # round-off grows to 4.2e-8 here (measured) although every step is algebraically inverted.
    term, ts = _gauss().term(), _grid(N_STEPS)
    y = jax.random.normal(jax.random.key(1), SHAPE)
    solver = rx.Rex(diffrax.ShARK(), "data")
    state = rx.sample(term, solver, y, ts, key=KEY, full_state=True)
    back = rx.invert(term, solver, state, ts, key=KEY)
    assert rel_err(back.y, y) < 1e-6
    assert rel_err(back.solver_state, y) < 1e-6


# --- distribution ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "solver",
    [
        pytest.param(rx.Rex(diffrax.Euler(), "data"), marks=pytest.mark.slow),  # ~25 s
        rx.Rex(diffrax.ShARK(), "data"),
        rx.Rex(diffrax.ShARK(), "noise", 0.5),
        pytest.param(rx.Princeps(diffrax.ShARK(), "noise"), marks=pytest.mark.slow),  # ~25 s
    ],
    ids=["rex-em-data", "rex-shark-data", "rex-shark-noise", "princeps-shark-noise"],
)
def test_gaussian_marginal(solver):
    # x_T from the exact prior; the sample at T_END must have the exact marginal
    # N(alpha mu, alpha^2 s^2 + sigma^2). n = 4000: standard errors 0.0047 (mean), 0.0034
    # (std); bound 3.5 standard errors (the key is fixed, so this is deterministic).
    # Measured (exact 0.5000, 0.3002): Rex EM data 0.5012, 0.2950; Rex ShARK data 0.5011,
    # 0.2949; Rex ShARK noise 0.4961, 0.2939; Princeps ShARK noise 0.4961, 0.2939 (the same
    # draws for all: the common deviation is sampling noise).
    n, steps = 4000, DIST_STEPS[solver.prediction]
    term, ts = _gauss().term(), _grid(steps)
    y = _prior_sample(n, jax.random.key(11))
    x = np.asarray(rx.sample(term, solver, y, ts, key=jax.random.key(12)))
    mean, std = _marginal(T_END)
    print(f"mean {x.mean():.4f} (exact {mean:.4f}), std {x.std():.4f} (exact {std:.4f})")
    assert abs(x.mean() - mean) < 3.5 * std / np.sqrt(n)
    assert abs(x.std() - std) < 3.5 * std / np.sqrt(2 * n)


# 200 steps: the discretisation bias of the std is then below one standard error (measured
# with 20000 samples, Princeps ShARK: data -0.6%, noise -0.2%; at 50 steps -1.6%, -1.6%).
DIST_STEPS = {"data": 200, "noise": 200}


# --- identities and orders -----------------------------------------------------------------


def test_princeps_euler_data_is_sde_dpm_solver_pp1():
    # SDE-DPM-Solver++(1) (Lu et al. 2022), h = lambda_t - lambda_s, z = W / sqrt(dvs):
    # x_t = (sigma_t/sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) x0_hat
    #       + sigma_t sqrt(1 - e^{-2h}) z
    model = _gauss()
    term, ts = model.term(), _grid(10)  # few steps: the reference below runs eagerly
    y = jax.random.normal(jax.random.key(1), SHAPE)
    solver = rx.Princeps(diffrax.Euler(), "data")
    sde = rx.reverse_sde(term, solver, KEY, ts, y)
    ours = rx.sample(term, solver, y, ts, key=KEY)
    v = rx.LawsonVariables(SCHEDULE, "data", stochastic=True)
    x = y
    for s_t, t_t in zip(ts[:-1], ts[1:], strict=True):
        w, _ = sde.path.increment(v.time(s_t), v.time(t_t))
        z = w / jnp.sqrt(v.time(t_t) - v.time(s_t))
        h = SCHEDULE.log_snr(t_t) - SCHEDULE.log_snr(s_t)
        a_t, sg_t, sg_s = SCHEDULE.alpha(t_t), SCHEDULE.sigma(t_t), SCHEDULE.sigma(s_t)
        x = (
            sg_t / sg_s * jnp.exp(-h) * x
            + a_t * (-jnp.expm1(-2 * h)) * term.data(s_t, x, None)
            + sg_t * jnp.sqrt(-jnp.expm1(-2 * h)) * z
        )
    # Measured 1.6e-15: round-off.
    assert rel_err(ours, x) < 1e-13


def _strong_errors(term, y, base, prediction, ns, n_ref):
    ts_ref = _grid(n_ref)
    s = rx.LawsonVariables(SCHEDULE, prediction, stochastic=True).time(ts_ref)
    tol = 0.5 * float(jnp.min(jnp.abs(jnp.diff(s))))  # one tree for every grid: one path
    ref = rx.sample(term, rx.Princeps(diffrax.ShARK(), prediction), y, ts_ref, key=KEY, tol=tol)
    errs = []
    for n in ns:
        x = rx.sample(
            term, rx.Princeps(base, prediction), y, ts_ref[:: n_ref // n], key=KEY, tol=tol
        )
        errs.append(float(jnp.sqrt(jnp.mean((x - ref) ** 2))))
    return np.array(errs), -np.polyfit(np.log(ns), np.log(errs), 1)[0]


@pytest.mark.slow  # ~2 min each
@pytest.mark.parametrize(
    "base, expected", [(diffrax.Euler(), 1.0), (diffrax.ShARK(), 1.5)], ids=["em", "shark"]
)
def test_strong_order_one_path(base, expected):
    # One Brownian path (same key and tree), nested log-SNR grids, RMS error at T_END against
    # a 1024-step ShARK solution on the same path; nonlinear model (Gaussian mixture).
    # Measured: see STRONG_ORDER below.
    errs, order = _strong_errors(
        _gmm_term(),
        jax.random.normal(jax.random.key(1), (64, 2)),
        base,
        "data",
        [16, 32, 64, 128],
        1024,
    )
    print(f"strong errors {errs}, order {order:.3f}")
    # Deterministic (fixed key): the measured slope must not drift, and must be at least the
    # theoretical strong order minus 0.2 (fits over 4 grids of one path fluctuate by ~0.1).
    assert abs(order - STRONG_ORDER[type(base).__name__]) < 0.05
    assert order > expected - 0.2


# Measured: EM RMS errors 0.155, 0.086, 0.061, 0.022 (16..128 steps): slope 0.888;
# ShARK 0.095, 0.0215, 0.0079, 0.0019: slope 1.840 (above 1.5 on this smooth problem).
STRONG_ORDER = {"Euler": 0.888, "ShARK": 1.840}


# --- long runs -----------------------------------------------------------------------------


@pytest.mark.slow  # ~60 s
def test_thousand_steps_sample_and_invert():
    # 1000 steps (the PyTorch reference's Brownian interval stalls after ~100 queries).
    term, ts = _gauss().term(), _grid(1000)
    x0 = MU + S * jax.random.normal(jax.random.key(2), (8,))
    solver = rx.Rex(diffrax.ShARK(), "data")
    latent = rx.invert(term, solver, x0, ts, key=KEY)
    x0_again = rx.sample(term, solver, latent, ts, key=KEY)
    err = rel_err(x0_again, x0)
    print(f"1000-step round trip {err:.2e}")
    assert err < 1e-10


# --- errors --------------------------------------------------------------------------------


def test_errors():
    term, ts = _gauss().term(), _grid(10)
    y = jnp.zeros((3,))
    with pytest.raises(ValueError, match="not an SDE method"):
        rx.sample(term, rx.Rex(diffrax.Tsit5(), "data"), y, ts, key=KEY)
    with pytest.raises(ValueError, match="not smaller than the smallest step"):
        rx.sample(term, rx.Rex(diffrax.Euler(), "data"), y, ts, key=KEY, tol=1e9)
    with pytest.raises(ValueError, match="needs a key"):
        rx.sample(term, rx.Rex(diffrax.Euler(), "data"), y, ts, tol=1e-3)
    with pytest.raises(ValueError, match="unstable on the reverse SDE"):
        rx.sample(term, rx.Rex(diffrax.Euler(), "noise", 0.999), y, ts, key=KEY)
    sde = rx.reverse_sde(term, rx.Rex(diffrax.Euler(), "data"), KEY, ts, y)
    step_to = diffrax.StepTo(ts)
    with pytest.raises(ValueError, match="Lawson time of 'data'"):
        princeps = rx.Princeps(diffrax.Euler(), "noise")
        diffrax.diffeqsolve(sde, princeps, ts[0], ts[-1], None, y, stepsize_controller=step_to)
    with pytest.raises(ValueError, match="can only be integrated by rexjax.Rex"):
        diffrax.diffeqsolve(
            sde, diffrax.Euler(), ts[0], ts[-1], None, y, stepsize_controller=step_to
        )


@pytest.mark.slow  # ~25 s
def test_step_shorter_than_tree_tolerance_is_a_runtime_error():
    # A path built for a coarse grid (tol = half its smallest Lawson step) used on a finer one.
    term, coarse, fine = _gauss().term(), _grid(5), _grid(40)
    y = jnp.zeros((3,))
    solver = rx.Rex(diffrax.Euler(), "data")
    s = rx.LawsonVariables(SCHEDULE, "data", stochastic=True).time(coarse)
    sde = rx.reverse_sde(term, solver, KEY, coarse, y, tol=0.5 * float(jnp.min(jnp.diff(s))))
    with pytest.raises(Exception, match="shorter \\(in the Lawson time\\) than the Brownian"):
        diffrax.diffeqsolve(
            sde, solver, fine[0], fine[-1], None, y, stepsize_controller=diffrax.StepTo(fine)
        )


# --- adaptive steps ------------------------------------------------------------------------


@pytest.mark.slow  # ~90 s
def test_adaptive_sde_grid_is_replayed_and_inverted():
    # ShARK's embedded error drives a PID controller on the SDE; the accepted grid, with the
    # same key and tree tolerance, is replayed by sample (same result) and inverted exactly.
    term = _gauss().term()
    y = jax.random.normal(jax.random.key(1), SHAPE)
    solver = rx.Rex(diffrax.ShARK(), "data")
    tol = 1e-9  # Lawson-time units: below every accepted step
    controller = diffrax.PIDController(rtol=1e-3, atol=1e-3)
    grid = rx.adaptive_grid(
        term, solver, y, T_START, T_END, controller, dt0=-0.01, key=KEY, tol=tol
    )
    sde = rx.reverse_sde(term, solver, KEY, jnp.asarray([T_START, T_END]), y, tol=tol)
    direct = diffrax.diffeqsolve(
        sde, solver, T_START, T_END, -0.01, y, stepsize_controller=controller, max_steps=4096
    ).ys[-1]
    replayed = rx.sample(term, solver, y, grid, key=KEY, tol=tol)
    print(f"adaptive SDE: {grid.shape[0] - 1} accepted steps")
    assert grid.shape[0] > 10
    assert rel_err(replayed, direct) < 1e-13
    x0 = MU + S * jax.random.normal(jax.random.key(2), SHAPE)
    latent = rx.invert(term, solver, x0, grid, key=KEY, tol=tol)
    assert rel_err(rx.sample(term, solver, latent, grid, key=KEY, tol=tol), x0) < 1e-10
