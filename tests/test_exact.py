"""ExactRex: bitwise round trips (integer state and float inputs on the grid), half a grid step
for off-grid floats, gradients vs checkpointed backprop, overflow refusals, sharding."""

import os
import subprocess
import sys
import textwrap

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, given, settings, strategies as st

import rexjax as rx
from helpers import invert_padded, step_padded


SCHEDULE = rx.VPSchedule.linear()
MIXTURE = rx.GaussianMixture.default(SCHEDULE)
TERM = MIXTURE.term()


_SLOW = pytest.mark.slow  # compile-heavy cases (the default suite's time budget)


def _bitwise_round_trip(solver, x0, ts, key=None, term=TERM):
    """data -> noise -> data with rexjax.invert/sample: (output, x0 on the grid)."""
    latent = rx.invert(term, solver, x0, ts, key=key)
    back = rx.sample(term, solver, latent, ts, key=key, full_state=True)
    on_grid = solver.init(
        rx.reverse_sde(term, solver, key, ts, x0) if key is not None else term,
        ts[-1],
        ts[0],
        x0,
        None,
    )
    return back, on_grid, latent


@pytest.mark.filterwarnings(
    "ignore::rexjax.CouplingWarning"
)  # noise at a fixed coupling, on purpose
@pytest.mark.parametrize(
    "dtype, prediction, base",
    [
        pytest.param(jnp.float32, "data", diffrax.Euler(), id="f32-data-Euler"),
        pytest.param(jnp.float32, "noise", rx.EES27(), id="f32-noise-EES27", marks=_SLOW),
        pytest.param(jnp.float64, "data", rx.EES27(), id="f64-data-EES27", marks=_SLOW),
        pytest.param(jnp.float64, "noise", rx.RK4(), id="f64-noise-RK4"),
    ],
)
def test_round_trip_is_bitwise(dtype, prediction, base):
    solver = rx.ExactRex(base, prediction)
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 12).astype(dtype)
    x0 = MIXTURE.sample_data(jax.random.key(1), 16, dtype=dtype)
    back, on_grid, _ = _bitwise_round_trip(solver, x0, ts)
    np.testing.assert_array_equal(back.solver_state.n, on_grid.n)
    np.testing.assert_array_equal(back.solver_state.n_hat, on_grid.n_hat)
    # The float output is the input rounded onto the grid: exact for inputs on the grid...
    x_on = solver.round_to_grid(TERM, x0, ts[-1], ts)
    np.testing.assert_array_equal(back.y, x_on)
    again = rx.sample(TERM, solver, rx.invert(TERM, solver, x_on, ts), ts)
    np.testing.assert_array_equal(again, x_on)
    # ...and within half a grid step for any float input (plus the view's one rounding).
    half = 0.5 * float(solver.grid_step(TERM, ts[-1], ts, dtype))
    eps = float(jnp.finfo(dtype).eps)
    assert float(jnp.max(jnp.abs(back.y - x0))) <= half + 4 * eps * float(jnp.max(jnp.abs(x0)))
    # noise -> data -> noise: the latent pair is recovered bitwise.
    z = jax.random.normal(jax.random.key(2), x0.shape, dtype)
    z_on = solver.round_to_grid(TERM, z, ts[0], ts)
    sampled = rx.sample(TERM, solver, z_on, ts, full_state=True)
    latent = rx.invert(TERM, solver, sampled, ts)
    np.testing.assert_array_equal(latent.y, z_on)
    np.testing.assert_array_equal(latent.solver_state.n_hat, latent.solver_state.n)


def test_two_limb_arithmetic_is_exact():
    """float32 states hold N = N_1 2^20 + N_0 in two int32 limbs: conversion from integer-valued
    floats, addition with carry and subtraction with borrow agree with int64 arithmetic."""
    from rexjax._exact import _add, _subtract, _to_limbs, _word

    rng = np.random.default_rng(0)
    word = _word(jnp.float32)
    assert word.limbs == 2 and word.bits == 41

    def value(n):
        n = np.asarray(n, np.int64)
        return n[..., 0] * 2**20 + n[..., 1]

    mags = 2.0 ** rng.uniform(0, 41, 2000)
    r = np.round(rng.choice([-1, 1], 2000) * mags).astype(np.float32)
    r[:4] = [0, -1, 2**20, -(2**20)]
    a = _to_limbs(jnp.asarray(r), word)
    assert a.dtype == jnp.int32 and bool(jnp.all((a[..., 1] >= 0) & (a[..., 1] < 2**20)))
    np.testing.assert_array_equal(value(a), r.astype(np.int64))
    b = a[::-1]
    np.testing.assert_array_equal(value(_add(a, b)), value(a) + value(b))
    np.testing.assert_array_equal(value(_subtract(a, b)), value(a) - value(b))
    np.testing.assert_array_equal(_subtract(_add(a, b), b), a)


def test_word_sizes_and_defaults():
    solver = rx.ExactRex()
    assert isinstance(solver.base, rx.EES27) and solver.coupling == 1.0
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 4)
    for dtype, word in ((jnp.float32, jnp.int32), (jnp.float64, jnp.int64)):
        x = jnp.zeros((2, MIXTURE.dim), dtype)
        state = solver.init(TERM, ts[-1].astype(dtype), ts[0].astype(dtype), x, None)
        assert state.n.dtype == word and state.y_hat.dtype == dtype


@pytest.mark.slow
def test_sde_round_trip_is_bitwise_and_adaptive_grid_replayed():
    # The reverse SDE's inverse expands: latents beyond the default x_max's range are refused.
    solver = rx.ExactRex(diffrax.Euler(), "data", x_max=64.0)
    key = jax.random.key(5)
    for dtype in (jnp.float64, jnp.float32):  # float32: kappa spans 2^21, within 41 bits
        x0 = MIXTURE.sample_data(jax.random.key(3), 8, dtype=dtype)
        ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 10).astype(dtype)
        back, on_grid, _ = _bitwise_round_trip(solver, x0, ts, key=key)
        np.testing.assert_array_equal(back.solver_state.n, on_grid.n)
        np.testing.assert_array_equal(back.y, on_grid.y_hat)
    # Adaptive (ODE, float64): the accepted grid is replayed exactly.
    solver = rx.ExactRex(diffrax.Tsit5(), "data")
    z = jax.random.normal(jax.random.key(4), (8, MIXTURE.dim))
    grid = rx.adaptive_grid(TERM, solver, z, 1.0, 1e-3, diffrax.PIDController(rtol=1e-4, atol=1e-4))
    assert 5 < len(grid) < 200
    sampled = rx.sample(TERM, solver, z, jnp.asarray(grid), full_state=True)
    latent = rx.invert(TERM, solver, sampled, jnp.asarray(grid))
    np.testing.assert_array_equal(latent.y, solver.round_to_grid(TERM, z, grid[0], grid))


def test_jit_vmap_and_diffeqsolve():
    solver = rx.ExactRex(rx.RK4(), "data")
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 8)
    x0 = MIXTURE.sample_data(jax.random.key(6), 6)
    # vmap over the batch, both directions.
    lat = jax.vmap(lambda x: rx.invert(TERM, solver, x[None], ts))(x0)
    back = jax.vmap(lambda s: rx.sample(TERM, solver, s, ts))(lat)
    np.testing.assert_array_equal(back[:, 0], solver.round_to_grid(TERM, x0, ts[-1], ts))
    # jit with a traced grid; diffrax.diffeqsolve with the state initialised on the whole span.
    z = jax.random.normal(jax.random.key(7), (4, MIXTURE.dim))
    jitted = jax.jit(lambda z, ts: rx.sample(TERM, solver, z, ts, full_state=True))(z, ts)
    sol = diffrax.diffeqsolve(
        TERM,
        solver,
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=z,
        solver_state=solver.init(TERM, ts[0], ts[-1], z, None),
        stepsize_controller=diffrax.StepTo(ts),
    )
    np.testing.assert_array_equal(sol.ys[-1], jitted.y)
    latent = jax.jit(lambda s, ts: rx.invert(TERM, solver, s, ts))(jitted, ts)
    np.testing.assert_array_equal(latent.y, solver.round_to_grid(TERM, z, ts[0], ts))


def test_gradients_equal_checkpointed_backprop():
    """ReversibleAdjoint reconstructs the states bitwise; the straight-through gradient then
    equals backpropagation through the same forward pass (measured: bitwise equal)."""
    solver = rx.ExactRex(rx.RK4(), "data")
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 6)
    z = jax.random.normal(jax.random.key(8), (4, MIXTURE.dim))

    def loss(z, means, adjoint):
        mixture = eqx.tree_at(lambda m: m.means, MIXTURE, means)
        return jnp.sum(rx.sample(mixture.term(), solver, z, ts, adjoint=adjoint) ** 2)

    grad = jax.grad(loss, argnums=(0, 1))
    g_rev = grad(z, MIXTURE.means, rx.ReversibleAdjoint())
    g_ckpt = grad(z, MIXTURE.means, diffrax.RecursiveCheckpointAdjoint())
    for a, b in zip(g_rev, g_ckpt, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        assert float(jnp.max(jnp.abs(b))) > 0


def test_overflow_and_range_are_refused():
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 4)
    solver = rx.ExactRex(rx.RK4(), "data", x_max=1.0)
    x = jnp.full((1, MIXTURE.dim), 50.0)
    with pytest.raises(Exception, match="leaves the fixed-point range"):
        rx.invert(TERM, solver, x, ts)
    # Reverse SDE: kappa = sigma^2/alpha spans ~2^21 on this grid, too much for 21 bits (the
    # default 41 bits of a float32 state hold it).
    x32 = MIXTURE.sample_data(jax.random.key(0), 2, dtype=jnp.float32)
    with pytest.raises(ValueError, match="kappa spans"):
        rx.ExactRex(diffrax.Euler(), bits=21).init(
            rx.reverse_sde(TERM, rx.ExactRex(diffrax.Euler()), jax.random.key(0), ts, x32),
            jnp.float32(1e-3),
            jnp.float32(1.0),
            x32,
            None,
        )
    with pytest.raises(ValueError, match="bits"):
        rx.ExactRex(bits=64)
    with pytest.raises(ValueError, match="unstable"):
        rx.sample(TERM, rx.ExactRex(diffrax.Euler(), "noise"), x32, ts, key=jax.random.key(1))


@pytest.mark.slow
def test_random_unet_round_trip_is_bitwise():
    """A random-weight diffusers UNet2DModel (Flax port, 16/32 channels, 3x16x16), float32."""
    import rexjax.models as rm

    config = {
        **rm.DDPM_CIFAR10_UNET_CONFIG,
        "block_out_channels": (16, 32),
        "down_block_types": ("DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sample_size": 16,
    }
    term = rm.diffusion_term(rm.random_unet(config, jax.random.key(0)), rm.DDPM_SCHEDULER_CONFIG)
    # A random network's ODE is strongly expanding: its inversion leaves |x| <= 8, the range of
    # the default x_max, and is refused; x_max=256 costs 6 of the 41 bits.
    solver = rx.ExactRex(rx.EES25(), "data", x_max=256.0)
    ts = rx.log_snr_grid(term.schedule, 1.0, 1e-3, 6).astype(jnp.float32)
    x0 = jnp.clip(jax.random.normal(jax.random.key(1), (2, 3, 16, 16), jnp.float32), -1, 1)
    back, on_grid, _ = _bitwise_round_trip(solver, x0, ts, term=term)
    np.testing.assert_array_equal(back.solver_state.n, on_grid.n)
    np.testing.assert_array_equal(back.y, on_grid.y_hat)


@pytest.mark.slow
def test_trained_digits_round_trip_is_bitwise():
    """The built-in trained digits model (class-conditional, CFG 2), held-out real digits,
    float32, both directions."""
    pretrained = pytest.importorskip("rexjax.models.pretrained")
    term = pretrained.digits_term(guidance_scale=2.0)
    images, labels = pretrained.digits_test_split()
    x0, y = jnp.asarray(images[:4]), jnp.asarray(labels[:4])
    solver = rx.ExactRex()
    ts = rx.log_snr_grid(term.schedule, 1.0, 1e-3, 8).astype(jnp.float32)
    latent = rx.invert(term, solver, x0, ts, y)
    back = rx.sample(term, solver, latent, ts, y, full_state=True)
    np.testing.assert_array_equal(back.y, solver.round_to_grid(term, x0, ts[-1], ts))
    # The real digits are on the grid already except for a few pixels (one ulp at most).
    assert float(jnp.max(jnp.abs(back.y - x0))) <= float(jnp.finfo(jnp.float32).eps)
    z = jax.random.normal(jax.random.key(3), x0.shape, jnp.float32)
    sampled = rx.sample(term, solver, z, ts, y, full_state=True)
    np.testing.assert_array_equal(
        rx.invert(term, solver, sampled, ts, y).y, solver.round_to_grid(term, z, ts[0], ts)
    )


_SHARDING_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    jax.config.update("jax_enable_x64", True)
    import rexjax as rx
    assert len(jax.devices()) == 8
    schedule = rx.VPSchedule.linear()
    mixture = rx.GaussianMixture.default(schedule)
    term = mixture.term()
    solver = rx.ExactRex(rx.EES27(), "data")
    ts = rx.log_snr_grid(schedule, 1.0, 1e-3, 8).astype(jnp.float32)
    mesh = jax.make_mesh((8,), ("batch",))
    x0 = mixture.sample_data(jax.random.key(0), 32, dtype=jnp.float32)
    x0 = jax.device_put(x0, NamedSharding(mesh, P("batch")))
    inv = jax.jit(lambda x: rx.invert(term, solver, x, ts))
    smp = jax.jit(lambda s: rx.sample(term, solver, s, ts))
    back = smp(inv(x0))
    assert len(back.sharding.device_set) == 8
    np.testing.assert_array_equal(back, solver.round_to_grid(term, x0, ts[-1], ts))
    print("OK")
    """
)


def test_batch_sharding_round_trip_is_bitwise():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["PYTHONPATH"] = os.getcwd() + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", _SHARDING_SCRIPT], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


MAX_STEPS = 24


@st.composite
def grids(draw):
    """Random decreasing grids from 1 to 1e-3 with 1 to 24 steps, padded to one length."""
    n = draw(st.integers(1, MAX_STEPS))
    lam = draw(
        st.lists(st.floats(-5.0, 6.9, allow_nan=False), min_size=n - 1, max_size=n - 1, unique=True)
    )
    ts = np.sort(np.asarray(SCHEDULE.t_from_log_snr(jnp.asarray(lam))))[::-1]
    ts = np.concatenate([[1.0], ts[(ts < 1.0) & (ts > 1e-3)], [1e-3]])
    ts = ts[np.concatenate([[True], np.diff(ts) < 0])]
    return np.concatenate([ts, np.full(MAX_STEPS + 1 - ts.shape[0], 1e-3)])


# (solver, float32) pairs: each pair and batch shape is one compilation.
_PROPERTY_CASES = (
    (rx.ExactRex(diffrax.Euler(), "data"), False),
    (rx.ExactRex(rx.RK4(), "data"), True),
    (rx.ExactRex(rx.EES25(), "noise"), False),
)
_ALL_CASES = tuple(
    (rx.ExactRex(base, prediction), float32)
    for base in (diffrax.Euler(), rx.RK4(), rx.EES25(), rx.EES27())
    for prediction in ("data", "noise")
    for float32 in (False, True)
    if not (prediction == "noise" and isinstance(base, diffrax.Euler))
)


def _property_round_trip(ts, case, batch, seed):
    solver, float32 = case
    dtype = jnp.float32 if float32 else jnp.float64
    ts = jnp.asarray(ts, dtype)
    x0 = MIXTURE.sample_data(jax.random.key(seed), int(np.prod(batch)), dtype=dtype)
    x0 = x0.reshape(*batch, MIXTURE.dim)
    state = solver.init(TERM, ts[-1], ts[0], x0, None)
    y, latent = invert_padded(TERM, solver, state.y_hat, state, ts)
    back, state_back = step_padded(TERM, solver, y, latent, ts)
    np.testing.assert_array_equal(state_back.n, state.n)
    np.testing.assert_array_equal(state_back.n_hat, state.n_hat)
    np.testing.assert_array_equal(back, state.y_hat)


_PHASES = (Phase.explicit, Phase.generate)


@settings(max_examples=10, deadline=None, phases=_PHASES, derandomize=True)
@given(
    ts=grids(),
    case=st.sampled_from(_PROPERTY_CASES),
    batch=st.sampled_from([(3,), (2, 2)]),
    seed=st.integers(0, 2**16),
)
def test_property_round_trip_is_bitwise(ts, case, batch, seed):
    """Over random grids, bases, predictions, dtypes, batch shapes and seeds, the integer state
    and the float view come back bitwise (zero failures allowed)."""
    _property_round_trip(ts, case, batch, seed)


@pytest.mark.slow
@settings(max_examples=100, deadline=None, phases=_PHASES, derandomize=True)
@given(
    ts=grids(),
    case=st.sampled_from(_ALL_CASES),
    batch=st.sampled_from([(1,), (3,), (2, 2)]),
    seed=st.integers(0, 2**16),
)
def test_property_round_trip_is_bitwise_all_bases(ts, case, batch, seed):
    """The same over Euler/RK4/EES(2,5)/EES(2,7), both predictions and both dtypes."""
    _property_round_trip(ts, case, batch, seed)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_thousand_step_round_trip_is_bitwise(dtype):
    solver = rx.ExactRex(rx.EES27(), "data")
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 1000).astype(dtype)
    x0 = MIXTURE.sample_data(jax.random.key(9), 8, dtype=dtype)
    back, on_grid, _ = _bitwise_round_trip(solver, x0, ts)
    np.testing.assert_array_equal(back.solver_state.n, on_grid.n)
    np.testing.assert_array_equal(back.y, on_grid.y_hat)
