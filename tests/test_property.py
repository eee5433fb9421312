"""Property test: invertibility on random grids, couplings, tableaus, predictions and dtypes."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

import rexjax as rx
from helpers import ODE_BASES, rel_err


SCHEDULE = rx.VPSchedule.linear()
MIXTURE = rx.GaussianMixture.default(SCHEDULE)
BASES = tuple(b for b in ODE_BASES if not isinstance(b, diffrax.Dopri8))  # compile time


@st.composite
def grids(draw):
    """Random strictly decreasing grids inside [1e-3, 1] with 2 to 40 steps."""
    n = draw(st.integers(2, 40))
    lam = draw(
        st.lists(st.floats(-5.0, 6.9, allow_nan=False), min_size=n - 1, max_size=n - 1, unique=True)
    )
    ts = np.sort(np.asarray(SCHEDULE.t_from_log_snr(jnp.asarray(lam))))[::-1]
    ts = np.concatenate([[1.0], ts[(ts < 1.0) & (ts > 1e-3)], [1e-3]])
    return ts[np.concatenate([[True], np.diff(ts) < 0])]


def _round_trip(ts, coupling, base, prediction, dtype, seed):
    x0 = MIXTURE.sample_data(jax.random.key(seed), 4, dtype=dtype)
    solver = rx.Rex(base, prediction, coupling)
    ts = jnp.asarray(ts, dtype=dtype)
    again = rx.sample(MIXTURE.term(), solver, rx.invert(MIXTURE.term(), solver, x0, ts), ts)
    return rel_err(again, x0)


@settings(max_examples=25, deadline=None)
@given(
    ts=grids(),
    coupling=st.floats(0.8, 1.0),
    base=st.sampled_from(BASES),
    float32=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_data_prediction_round_trip_at_the_floor(ts, coupling, base, float32, seed):
    dtype = jnp.float32 if float32 else jnp.float64
    error = _round_trip(ts, coupling, base, "data", dtype, seed)
    # Random grids include a few huge steps (e.g. t = 1 -> 0.26 -> 1e-3), where every backward
    # step divides by a tiny ratio sigma(t_{n+1})/sigma(t_n): measured up to ~2e3 eps there,
    # ~10 eps on 10-50 step log-SNR grids.
    assert error <= 1e4 * float(jnp.finfo(dtype).eps), error


@settings(max_examples=15, deadline=None)
@given(
    ts=grids(),
    coupling=st.floats(0.8, 1.0),
    base=st.sampled_from(BASES),
    seed=st.integers(0, 2**16),
)
def test_noise_prediction_round_trip_float64(ts, coupling, base, seed):
    """Noise prediction: round-off amplified by the coupling's parasitic mode (contractive
    sampling direction), by up to ~1e7 here: measured up to 3e-10 on 10-50 step grids."""
    error = _round_trip(ts, coupling, base, "noise", jnp.float64, seed)
    assert error <= 1e-8, error
