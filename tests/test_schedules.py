import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rexjax as rx


def _diffusers_betas(kind, n=1000, beta_start=1e-4, beta_end=0.02):
    # diffusers' DDPMScheduler betas (float64 here).
    if kind == "linear":
        return np.linspace(beta_start, beta_end, n)
    return np.linspace(beta_start**0.5, beta_end**0.5, n) ** 2


SCHEDULES = {
    "linear": rx.VPSchedule.linear(0.1, 20.0),
    "scaled_linear": rx.VPSchedule.scaled_linear(0.00085, 0.012),
    "discrete": rx.VPSchedule.discrete(np.cumprod(1 - _diffusers_betas("linear"))),
    "cosine": rx.VPSchedule.cosine(),
    "flow": rx.FlowMatchingSchedule(),
    "custom": rx.CustomSchedule(
        lambda t: jnp.exp(-0.5 * t**2 * 3), lambda t: jnp.sqrt(-jnp.expm1(-(t**2) * 3))
    ),
}


def _domain(schedule, n=2000):
    """Times over the whole domain, dense near t_min (geometric) and uniform above."""
    lo, hi = max(schedule.t_min, 1e-6), min(schedule.t_max, 1 - 1e-6)
    return np.concatenate([np.geomspace(lo, hi / 2, n // 2), np.linspace(hi / 2, hi, n // 2)[1:]])


@pytest.mark.parametrize("name", SCHEDULES)
def test_log_snr_round_trip(name):
    schedule = SCHEDULES[name]
    ts = jnp.asarray(_domain(schedule))
    back = jax.vmap(schedule.t_from_log_snr)(jax.vmap(schedule.log_snr)(ts))
    rel = np.max(np.abs(np.asarray(back) - np.asarray(ts)) / np.asarray(ts))
    assert rel <= 1e-12, rel


@pytest.mark.parametrize("name", SCHEDULES)
def test_log_snr_decreasing_and_consistent(name):
    schedule = SCHEDULES[name]
    ts = jnp.asarray(_domain(schedule))
    lam = jax.vmap(schedule.log_snr)(ts)
    assert np.all(np.diff(np.asarray(lam)) < 0)
    alpha, sigma = jax.vmap(schedule.alpha)(ts), jax.vmap(schedule.sigma)(ts)
    np.testing.assert_allclose(np.log(alpha / sigma), lam, rtol=1e-12, atol=1e-12)
    if isinstance(schedule, rx.VPSchedule):
        np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", SCHEDULES)
def test_derivatives_match_finite_differences(name):
    schedule = SCHEDULES[name]
    for t in (0.1003, 0.3705, 0.8007):  # off the discrete schedule's knots
        da, ds = schedule.derivatives(t)
        eps = 1e-6
        fa = (schedule.alpha(t + eps) - schedule.alpha(t - eps)) / (2 * eps)
        fs = (schedule.sigma(t + eps) - schedule.sigma(t - eps)) / (2 * eps)
        np.testing.assert_allclose(da, fa, rtol=1e-6)
        np.testing.assert_allclose(ds, fs, rtol=1e-6)


def test_discrete_matches_diffusers_alphas_cumprod():
    betas = _diffusers_betas("scaled", beta_start=0.00085, beta_end=0.012)
    ac = np.cumprod(1 - betas)
    schedule = rx.VPSchedule.discrete(ac)
    t = (np.arange(1000) + 1) / 1000  # continuous t of discrete timestep n is (n+1)/N
    np.testing.assert_allclose(jax.vmap(schedule.alpha)(jnp.asarray(t)) ** 2, ac, rtol=1e-13)
    assert schedule.t_min == 1e-3 and schedule.t_max == 1.0


def test_continuous_schedules_approximate_discrete():
    # The closed forms are continuous-time approximations of diffusers' discrete betas.
    for kind, cont, (b0, b1) in (
        ("linear", rx.VPSchedule.linear(0.1, 20.0), (1e-4, 0.02)),
        ("scaled", rx.VPSchedule.scaled_linear(0.00085, 0.012), (0.00085, 0.012)),
    ):
        disc = rx.VPSchedule.discrete(np.cumprod(1 - _diffusers_betas(kind, 1000, b0, b1)))
        ts = jnp.linspace(0.01, 0.99, 50)
        gap = jax.vmap(cont.log_snr)(ts) - jax.vmap(disc.log_snr)(ts)
        # Measured: 0.033 (linear), within 0.05 in log-SNR, which spans about [-5, 7].
        assert np.max(np.abs(gap)) < 0.05, (kind, np.max(np.abs(gap)))


def test_custom_bisection_matches_closed_form():
    linear = rx.VPSchedule.linear()
    custom = rx.CustomSchedule(linear.alpha, linear.sigma, t_min=0.0, t_max=1.0)
    lam = jnp.linspace(-5, 9, 101)
    np.testing.assert_allclose(
        jax.jit(jax.vmap(custom.t_from_log_snr))(lam),
        jax.vmap(linear.t_from_log_snr)(lam),
        rtol=1e-13,
    )


def test_schedules_work_under_jit_and_float32():
    schedule = SCHEDULES["discrete"]
    ts = jnp.linspace(0.01, 1.0, 7, dtype=jnp.float32)
    out = jax.jit(jax.vmap(lambda t: schedule.t_from_log_snr(schedule.log_snr(t))))(ts)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ts, rtol=1e-5)


def test_log_snr_grid_is_uniform_in_log_snr():
    schedule = SCHEDULES["linear"]
    ts = rx.log_snr_grid(schedule, 1.0, 1e-3, 20)
    assert ts[0] == 1.0 and ts[-1] == 1e-3 and ts.shape == (21,)
    lam = np.asarray(jax.vmap(schedule.log_snr)(ts))
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-9)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: rx.VPSchedule.linear(20.0, 0.1), "beta_min < beta_max"),
        (lambda: rx.VPSchedule.scaled_linear(0.02, 0.01), "beta_start < beta_end"),
        (lambda: rx.VPSchedule.discrete(np.linspace(0.1, 0.9, 10)), "strictly decreasing"),
        (lambda: rx.VPSchedule.discrete(np.linspace(1.0, 0.1, 10)), "inside \\(0, 1\\)"),
        (lambda: rx.VPSchedule.cosine(t_max=1.0), "t_max"),
        (lambda: rx.CustomSchedule(lambda t: t, lambda t: 1 - t), "strictly decreasing"),
        (lambda: rx.FlowMatchingSchedule(t_min=0.5, t_max=0.2), "t_min < t_max"),
    ],
)
def test_bad_schedules_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()
