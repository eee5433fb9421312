"""Baselines (DDIM, EDICT, BDIA, O-BELM, DPM-Solver++(2M)): each method's defining property."""

import warnings

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import rexjax as rx
from helpers import GaussianModel, rel_err
from rexjax.baselines import BDIA, BELM, DDIM, EDICT, DPMSolverPP
from rexjax.baselines._common import ddim_coefficients


SCHEDULE = rx.VPSchedule.linear()
EXACT = (EDICT(), BDIA(), BELM())


def _batched_term(gmm):
    # The mixture's denoiser is written for one point (rank promotion is strict here).
    model = lambda t, x, args: jax.vmap(lambda xi: gmm(t, xi))(x)  # noqa: E731
    return rx.DiffusionTerm(model, gmm.schedule, gmm.prediction)


def _gmm_problem(n_steps=50, num=16):
    gmm = rx.GaussianMixture.default(SCHEDULE)
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, n_steps)
    x0 = gmm.sample_data(jax.random.key(0), num)
    return _batched_term(gmm), ts, x0


@pytest.mark.parametrize("solver", EXACT, ids=lambda s: type(s).__name__)
def test_exact_round_trip_float64(solver):
    # data -> latent -> data, and noise -> data -> noise, on the nonlinear mixture in float64.
    # Measured: data round trips 1e-15 (BELM), 1e-14 (BDIA), 4e-14 (EDICT); noise round trips
    # 2e-15 (EDICT), 5e-15 (BDIA), 5e-13 (BELM: its inverse has a parasitic root of modulus
    # (H1/H0)^2 > 1 on log-SNR grids, which amplifies round-off). Bounds leave ~20x.
    term, ts, x0 = _gmm_problem()
    assert isinstance(solver, rx.AbstractReversibleSolver)
    latent = rx.invert(term, solver, x0, ts)
    assert isinstance(latent, rx.ReversibleState)
    assert rel_err(rx.sample(term, solver, latent, ts), x0) < 1e-12
    noise = jax.random.normal(jax.random.key(1), x0.shape)
    full = rx.sample(term, solver, noise, ts, full_state=True)
    back = rx.invert(term, solver, full, ts)
    assert rel_err(back.y, noise) < 1e-11


@pytest.mark.parametrize("solver", EXACT, ids=lambda s: type(s).__name__)
def test_exact_round_trip_float32(solver):
    # float32: the inverse is algebraically exact, so only round-off remains (measured 6e-7
    # BELM, 4.5e-6 BDIA, 2.2e-5 EDICT relative at 50 steps); DDIM's round trip misses by 4e-2.
    term, ts, x0 = _gmm_problem()
    # diffrax promotes y to the dtype of the times: a float32 solve needs a float32 grid.
    x0, ts = x0.astype(jnp.float32), ts.astype(jnp.float32)
    latent = rx.invert(term, solver, x0, ts)
    out = rx.sample(term, solver, latent, ts)
    assert out.dtype == jnp.float32
    assert rel_err(out, x0) < 1e-4


def test_ddim_inversion_is_not_exact():
    # Naive DDIM inversion evaluates the model at the wrong point: the round trip misses by the
    # discretisation error (measured 4.1e-2 relative at 50 steps, 8.9e-3 at 200: first order).
    term, ts, x0 = _gmm_problem()
    assert isinstance(DDIM(), rx.AbstractInvertibleSolver)
    assert not isinstance(DDIM(), rx.AbstractReversibleSolver)
    assert rel_err(rx.sample(term, DDIM(), rx.invert(term, DDIM(), x0, ts), ts), x0) > 1e-2
    ts200 = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 200)
    latent = rx.invert(term, DDIM(), x0, ts200)
    assert rel_err(rx.sample(term, DDIM(), latent, ts200), x0) > 2e-3


def test_dpmsolver_inversion_is_not_exact():
    term, ts, x0 = _gmm_problem()
    assert not isinstance(DPMSolverPP(), rx.AbstractReversibleSolver)
    latent = rx.invert(term, DPMSolverPP(), x0, ts)
    err = rel_err(rx.sample(term, DPMSolverPP(), latent, ts), x0)
    assert 1e-4 < err < 1e-2  # measured 2.3e-3: second order, but not an inverse


@pytest.mark.parametrize("prediction", ["noise", "data"])
def test_ddim_is_first_order_exponential_integrator(prediction):
    # DDIM = Princeps(Euler) in either prediction (Song et al. 2021; Lu et al. 2022).
    term, ts, x0 = _gmm_problem(20)
    noise = jax.random.normal(jax.random.key(2), x0.shape)
    ref = rx.sample(term, rx.Princeps(diffrax.Euler(), prediction), noise, ts)
    assert rel_err(rx.sample(term, DDIM(), noise, ts), ref) < 1e-13


def test_first_steps_are_ddim():
    # BDIA and BELM start with a DDIM step (their papers); so does DPM-Solver++(2M).
    term, ts, x0 = _gmm_problem(10)
    noise = jax.random.normal(jax.random.key(3), x0.shape)
    ref = rx.sample(term, DDIM(), noise, ts[:2])
    for solver in (BDIA(), BDIA(0.3), BELM(), DPMSolverPP()):
        assert rel_err(rx.sample(term, solver, noise, ts[:2]), ref) < 1e-14


def _ddim_map(term, t, t_new, x):
    a, b = ddim_coefficients(term.schedule, t, t_new)
    return a * x + b * term.noise(t, x, None)


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_bdia_matches_paper_recursion(gamma):
    # The paper's two-step form z_{i-1} = gamma (z_{i+1} - D(z_i; t_i -> t_{i+1}))
    # + D(z_i; t_i -> t_{i-1}), written out literally, against the one-step pair form.
    term, ts, x0 = _gmm_problem(8)
    z = [jax.random.normal(jax.random.key(4), x0.shape)]
    z.append(_ddim_map(term, ts[0], ts[1], z[0]))
    for i in range(1, len(ts) - 1):
        back = _ddim_map(term, ts[i], ts[i - 1], z[i])
        z.append(gamma * (z[i - 1] - back) + _ddim_map(term, ts[i], ts[i + 1], z[i]))
    assert rel_err(rx.sample(term, BDIA(gamma), z[0], ts), z[-1]) < 1e-13


def test_belm_matches_paper_recursion():
    # O-BELM (Wang et al. 2024, eq. 11) in x-bar = x/alpha, sigma-bar = sigma/alpha, literally.
    term, ts, x0 = _gmm_problem(8)
    sched = term.schedule
    sbar = [float(sched.sigma(t) / sched.alpha(t)) for t in ts]
    alpha = [float(sched.alpha(t)) for t in ts]
    x = [jax.random.normal(jax.random.key(5), x0.shape)]
    x.append(_ddim_map(term, ts[0], ts[1], x[0]))
    for i in range(1, len(ts) - 1):
        h0, h1 = sbar[i] - sbar[i + 1], sbar[i - 1] - sbar[i]
        eps = term.noise(ts[i], x[i], None)
        xbar = (
            (h0 / h1) ** 2 * x[i - 1] / alpha[i - 1]
            + (1 - (h0 / h1) ** 2) * x[i] / alpha[i]
            - h0 * (h0 + h1) / h1 * eps
        )
        x.append(alpha[i + 1] * xbar)
    assert rel_err(rx.sample(term, BELM(), x[0], ts), x[-1]) < 1e-12


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver, order", [(DDIM(), 1), (BELM(), 2), (DPMSolverPP(), 2), (BDIA(1.0), 2)]
)
def test_convergence_order(solver, order):
    # Against the exact probability-flow map of Gaussian data on log-SNR grids, slope over the
    # three finest grids. (EDICT is left out: with p = 0.93 its coupled sequences oscillate on
    # coarse grids, errors 5.2, 0.41, 0.023, 0.014 here: no clean asymptotic rate.)
    # Measured slopes: DDIM 0.98, O-BELM 2.00, DPM-Solver++(2M) 1.94, BDIA(gamma=1) 2.00.
    model = GaussianModel(SCHEDULE)
    term = model.term()
    noise = jax.random.normal(jax.random.key(6), (8, 4))
    steps = [16, 32, 64, 128]
    errs = []
    for n in steps:
        ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-2, n)
        ref = model.flow_map(ts[0], noise, ts[-1])
        errs.append(rel_err(rx.sample(term, solver, noise, ts), ref))
    slope = -scipy.stats.linregress(np.log(steps[1:]), np.log(errs[1:])).slope
    assert abs(slope - order) < 0.15, (slope, errs)


@pytest.mark.parametrize(
    "solver",
    [
        BDIA(),
        DPMSolverPP(),
        pytest.param(DDIM(), marks=pytest.mark.slow),
        pytest.param(EDICT(), marks=pytest.mark.slow),
        pytest.param(BELM(), marks=pytest.mark.slow),
    ],
    ids=lambda s: type(s).__name__,
)
def test_diffeqsolve_and_jit(solver):
    # The multistep methods carry their history in the solver state, so a plain diffeqsolve
    # with constant steps (and under jit) equals rexjax.sample on the same grid.
    term, _, x0 = _gmm_problem()
    noise = jax.random.normal(jax.random.key(7), x0.shape)
    ts = jnp.linspace(1.0, 0.1, 11)
    sol = jax.jit(
        lambda y: diffrax.diffeqsolve(term, solver, t0=1.0, t1=0.1, dt0=-0.09, y0=y).ys[-1]
    )(noise)
    assert rel_err(sol, rx.sample(term, solver, noise, ts)) < 1e-12


def test_invalid_parameters():
    with pytest.raises(ValueError, match="p=0.93"):
        EDICT(p=0.0)
    with pytest.raises(ValueError, match="gamma=1.0"):
        BDIA(gamma=1.5)
    with pytest.raises(ValueError, match="order 1 or 2"):
        DPMSolverPP(order=3)


def _diffusers_setup(num_steps):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        prediction_type="epsilon",
        # Apples to apples: our grid ends at a positive time (the discrete schedule's t_min =
        # timestep 0), and every step after the first is second order.
        final_sigmas_type="sigma_min",
        lower_order_final=False,
        euler_at_final=False,
    )
    with warnings.catch_warnings():  # diffusers calls np.array on a torch tensor (numpy 2)
        warnings.simplefilter("ignore", DeprecationWarning)
        scheduler.set_timesteps(num_steps)
    alphas_cumprod = scheduler.alphas_cumprod.double().numpy()
    schedule = rx.VPSchedule.discrete(alphas_cumprod)
    n_train = alphas_cumprod.shape[0]
    timesteps = scheduler.timesteps.numpy()
    # Continuous t <-> discrete timestep t*N - 1; diffusers' final "sigma_min" is timestep 0.
    ts = jnp.asarray(np.concatenate([(timesteps + 1) / n_train, [1 / n_train]]))
    gmm = rx.GaussianMixture.default(schedule)
    noise = jax.random.normal(jax.random.key(8), (4, gmm.dim))
    return scheduler, _batched_term(gmm), ts, noise, alphas_cumprod


def test_dpmsolver_matches_diffusers_float64():
    # diffusers' own update formulas (convert_model_output, first- and second-order updates),
    # driven in float64: `step()` casts to float32 internally, so it is exercised separately
    # below. Sigmas recomputed in float64 from the same alphas_cumprod.
    torch = pytest.importorskip("torch")
    scheduler, term, ts, noise, ac = _diffusers_setup(20)
    gmm_model = jax.jit(term.model)
    timesteps = scheduler.timesteps.numpy()
    sig = np.sqrt((1 - ac) / ac)
    scheduler.sigmas = torch.from_numpy(np.concatenate([sig[timesteps], sig[:1]]))
    x = torch.tensor(np.array(noise))
    outputs = []
    for i, t in enumerate(ts[:-1]):
        scheduler._step_index = i
        eps = torch.tensor(np.array(gmm_model(t, jnp.asarray(x.numpy()), None)))
        outputs = [*outputs[-1:], scheduler.convert_model_output(eps, sample=x)]
        if i == 0:
            x = scheduler.dpm_solver_first_order_update(outputs[-1], sample=x)
        else:
            x = scheduler.multistep_dpm_solver_second_order_update(outputs, sample=x)
    ours = rx.sample(term, DPMSolverPP(), noise, ts)
    # Measured 5e-16: both evaluate the same formulas in float64 (different association).
    assert rel_err(ours, x.numpy()) < 1e-13


def test_dpmsolver_matches_diffusers_step_float32():
    # The public `step()` loop, which computes in float32 (sigmas stored as float32): agreement
    # to float32 round-off accumulated over 20 steps (measured 2.7e-7 relative).
    torch = pytest.importorskip("torch")
    scheduler, term, ts, noise, _ = _diffusers_setup(20)
    gmm_model = jax.jit(term.model)
    noise32, ts = noise.astype(jnp.float32), ts.astype(jnp.float32)
    x = torch.tensor(np.array(noise32))
    for t_disc, t in zip(scheduler.timesteps, ts[:-1], strict=True):
        eps = torch.tensor(np.array(gmm_model(t, jnp.asarray(x.numpy()), None)))
        x = scheduler.step(eps, t_disc, x).prev_sample
    ours = rx.sample(term, DPMSolverPP(), noise32, ts)
    assert ours.dtype == jnp.float32
    assert rel_err(ours, x.numpy()) < 5e-6
