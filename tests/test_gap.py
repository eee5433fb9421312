"""The coupling-gap diagnostic: it flags the configurations whose coupled pair separates."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rexjax as rx


SCHEDULE = rx.VPSchedule.linear()


@pytest.fixture(scope="module")
def setting():
    model = rx.GaussianMixture.default(SCHEDULE, prediction="noise")
    noise = jax.random.normal(jax.random.key(0), (256, model.dim))
    return model.term(), noise, rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, 25)


def test_trajectory_gap_is_the_sample(setting):
    term, noise, ts = setting
    solver = rx.Rex()
    state, gaps = rx.trajectory_gap(term, solver, noise, ts)
    reference = rx.sample(term, solver, noise, ts, full_state=True)
    np.testing.assert_allclose(state.y, reference.y, rtol=0, atol=1e-13)
    np.testing.assert_allclose(state.solver_state, reference.solver_state, rtol=0, atol=1e-13)
    assert gaps.shape == (25, 256)
    np.testing.assert_allclose(gaps[-1], rx.coupling_gap(state), rtol=1e-12)


def test_gap_flags_a_separated_pair(setting):
    """Measured (float64, 25 log-SNR steps, 256 samples): Rex(Midpoint, data, 0.999) has its
    pair 0.2 apart mid-way (its error is 50x Princeps', a few samples in the wrong mode), but
    only 8e-4 at the end; Rex(EES27, data) peaks at 7e-3 (error 1.04x Princeps')."""
    term, noise, ts = setting
    _, bad = rx.trajectory_gap(term, rx.Rex(diffrax.Midpoint(), "data", 0.999), noise, ts)
    assert float(jnp.max(bad)) > 10 * rx.GAP_WARNING
    assert float(jnp.max(bad[-1])) < rx.GAP_WARNING  # why the final gap is not enough
    _, good = rx.trajectory_gap(term, rx.Rex(), noise, ts)
    assert float(jnp.max(good)) < rx.GAP_WARNING


def test_coupling_gap_batch_dims():
    x = jnp.ones((3, 2, 4))
    state = rx.ReversibleState(x, x.at[0].multiply(1.5))
    per_sample = rx.coupling_gap(state)
    np.testing.assert_allclose(per_sample, [0.5, 0.0, 0.0])
    assert rx.coupling_gap(state, batch_dims=2).shape == (3, 2)
    np.testing.assert_allclose(rx.coupling_gap(state, batch_dims=0), 0.5 / np.sqrt(3))


def test_gap_errors(setting):
    term, noise, ts = setting
    with pytest.raises(ValueError, match="full_state=True"):
        rx.coupling_gap(noise)
    with pytest.raises(ValueError, match="coupled copy"):
        rx.coupling_gap(rx.ReversibleState(noise, None))
    with pytest.raises(ValueError, match="rexjax.Rex"):
        rx.trajectory_gap(term, rx.Princeps(rx.EES27()), noise, ts)
