import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rexjax as rx
from helpers import GaussianModel, rel_err


SCHEDULE = rx.VPSchedule.linear()


def _terms_of_every_type(schedule):
    """The same exact mixture denoiser, exposed as each model type."""
    gmm = rx.GaussianMixture.default(schedule)

    def velocity(t, x, args):
        a, s = schedule.alpha(t), schedule.sigma(t)
        return a * gmm.noise(t, x) - s * gmm.data(t, x)

    def flow(t, x, args):
        da, ds = schedule.derivatives(t)
        return da * gmm.data(t, x) + ds * gmm.noise(t, x)

    return {
        "noise": rx.DiffusionTerm(lambda t, x, a: gmm.noise(t, x), schedule, "noise"),
        "data": rx.DiffusionTerm(lambda t, x, a: gmm.data(t, x), schedule, "data"),
        "velocity": rx.DiffusionTerm(velocity, schedule, "velocity"),
        "flow": rx.DiffusionTerm(flow, schedule, "flow"),
    }, gmm


@pytest.mark.parametrize("schedule", [SCHEDULE, rx.FlowMatchingSchedule(), rx.VPSchedule.cosine()])
def test_model_types_convert_exactly(schedule):
    terms, gmm = _terms_of_every_type(schedule)
    x = jax.random.normal(jax.random.key(0), (5, gmm.dim))
    for t in (0.05, 0.5, 0.9):
        for term in terms.values():
            np.testing.assert_allclose(term.data(t, x, None), gmm.data(t, x), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(
                term.noise(t, x, None), gmm.noise(t, x), rtol=1e-9, atol=1e-9
            )
        vfs = [term.vf(t, x, None) for term in terms.values()]
        for vf in vfs[1:]:
            np.testing.assert_allclose(vf, vfs[0], rtol=1e-9, atol=1e-9)


def test_vf_is_the_probability_flow_drift():
    # A plain diffrax solver on DiffusionTerm.vf reproduces the exact Gaussian flow map.
    model = GaussianModel(SCHEDULE)
    x = jax.random.normal(jax.random.key(1), (7,))
    sol = diffrax.diffeqsolve(
        model.term(),
        diffrax.Tsit5(),
        t0=1.0,
        t1=0.01,
        dt0=-0.01,
        y0=x,
        stepsize_controller=diffrax.PIDController(rtol=1e-11, atol=1e-11),
    )
    assert rel_err(sol.ys[-1], model.flow_map(1.0, x, 0.01)) < 1e-9


def test_bad_model_type_and_schedule():
    with pytest.raises(ValueError, match="Unknown model_type 'epsilon'.*'noise'"):
        rx.DiffusionTerm(lambda t, x, a: x, SCHEDULE, "epsilon")
    with pytest.raises(ValueError, match="rexjax schedule"):
        rx.DiffusionTerm(lambda t, x, a: x, object(), "noise")


def test_pytree_states():
    # DiffusionTerm and the solvers act leafwise on pytrees.
    model = GaussianModel(SCHEDULE)
    term = rx.DiffusionTerm(
        lambda t, y, a: {"u": model.noise(t, y["u"]), "v": model.noise(t, y["v"])},
        SCHEDULE,
        "noise",
    )
    y = {"u": jnp.ones(3), "v": -jnp.ones((2, 2))}
    ts = rx.log_snr_grid(SCHEDULE, 1.0, 0.01, 10)
    out = rx.sample(term, rx.Rex(diffrax.Tsit5(), "data"), y, ts)
    np.testing.assert_allclose(
        out["u"], rx.sample(model.term(), rx.Rex(diffrax.Tsit5(), "data"), y["u"], ts), rtol=1e-12
    )
