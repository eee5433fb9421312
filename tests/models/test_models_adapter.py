"""The UNet -> rexjax `DiffusionTerm` adapter and the scheduler-config schedules."""

import jax


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import rexjax as rx  # noqa: E402
import rexjax.models as rm  # noqa: E402


diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

SCHEDULES = [
    dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(beta_schedule="squaredcos_cap_v2"),
]


@pytest.mark.parametrize("config", SCHEDULES, ids=lambda c: c["beta_schedule"])
def test_alphas_cumprod_match_diffusers(config):
    reference = diffusers.DDPMScheduler(num_train_timesteps=1000, **config).alphas_cumprod
    ours = rm.alphas_cumprod({"num_train_timesteps": 1000, **config})
    assert ours.dtype == np.float64
    # diffusers computes in float32: agreement to float32 round-off over 1000 products.
    np.testing.assert_allclose(ours, reference.double().numpy(), rtol=2e-5)


def test_scheduler_config_errors():
    with pytest.raises(ValueError, match="beta_schedule='sigmoid'"):
        rm.alphas_cumprod({"beta_schedule": "sigmoid"})
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        rm.alphas_cumprod({"rescale_betas_zero_snr": True})
    with pytest.raises(ValueError, match="prediction_type='flow'"):
        rm.model_type({"prediction_type": "flow"})
    assert rm.model_type({"prediction_type": "v_prediction"}) == "velocity"
    assert rm.model_type({}) == "noise"


@pytest.fixture(scope="module")
def cond_unet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unet")
    diffusers.UNet2DConditionModel(
        sample_size=4,
        block_out_channels=(8,),
        down_block_types=("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=2,
        cross_attention_dim=8,
    ).save_pretrained(folder)
    return rm.load_unet(folder)


def test_time_convention_and_guidance(cond_unet):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 4, 4, 4)), jnp.float32)
    cond, uncond = (jnp.asarray(rng.standard_normal((1, 3, 8)), jnp.float32) for _ in range(2))
    config = {"prediction_type": "epsilon", **SCHEDULES[1]}
    term = rm.diffusion_term(cond_unet, config)
    assert isinstance(term, rx.DiffusionTerm) and term.model_type == "noise"
    assert term.schedule.t_min == 1 / 1000
    # t = (n + 1) / N is the discrete timestep n.
    np.testing.assert_array_equal(term.model(0.5, x, cond), cond_unet(x, 499, cond))
    guided = rm.diffusion_term(cond_unet, config, guidance_scale=7.5)
    both = cond_unet(jnp.concatenate([x, x]), 249, jnp.concatenate([cond, uncond]))
    e_c, e_u = both[:1], both[1:]
    np.testing.assert_allclose(
        guided.model(0.25, x, (cond, uncond)), e_u + 7.5 * (e_c - e_u), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="pair"):
        guided.model(0.25, x, cond)


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unet2d")
    diffusers.UNet2DModel(
        sample_size=4,
        in_channels=2,
        out_channels=2,
        block_out_channels=(8,),
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        layers_per_block=1,
        norm_num_groups=4,
        add_attention=False,
    ).save_pretrained(folder)
    return rm.load_unet(folder)


def _round_trip(unet, x0, context, scheduler, gradient: bool):
    term = rm.diffusion_term(unet, scheduler)
    solver = rx.Rex(diffrax.Euler(), prediction="data", coupling=0.999)
    # float32 grid: a float64 grid would promote the float32 state under x64.
    ts = rx.log_snr_grid(term.schedule, 1.0, 1 / 1000, 4).astype(jnp.float32)
    latent = rx.invert(term, solver, x0, ts, context)
    again = rx.sample(term, solver, latent, ts, context)
    err = float(jnp.abs(again - x0).max() / jnp.abs(x0).max())
    assert err < 1e-4
    if not gradient:
        return

    def loss(unet):
        t = rm.diffusion_term(unet, scheduler)
        return jnp.sum(rx.sample(t, solver, latent.y, ts, context) ** 2)

    grads = eqx.filter_grad(loss)(unet)
    leaves = jax.tree_util.tree_leaves(grads.params)
    assert all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert any(bool((g != 0).any()) for g in leaves)


def test_rex_round_trip(tiny_unet):
    x0 = jnp.asarray(np.random.default_rng(1).standard_normal((1, 2, 4, 4)), jnp.float32)
    scheduler = {"prediction_type": "v_prediction", **SCHEDULES[0]}
    _round_trip(tiny_unet, x0, None, scheduler, gradient=False)


def test_gradient_wrt_parameters(tiny_unet):
    x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 2, 4, 4)), jnp.float32)
    term = rm.diffusion_term(tiny_unet, SCHEDULES[0])

    def loss(term):
        return jnp.sum(term.model(0.3, x, None) ** 2)

    grads = eqx.filter_grad(loss)(term).model.unet.params
    leaves = jax.tree_util.tree_leaves(grads)
    assert len(leaves) == len(jax.tree_util.tree_leaves(tiny_unet.params))
    assert all(bool(jnp.isfinite(g).all() and (g != 0).any()) for g in leaves)


@pytest.mark.slow
def test_rex_round_trip_and_gradient_through_sampling(tiny_unet):
    x0 = jnp.asarray(np.random.default_rng(1).standard_normal((1, 2, 4, 4)), jnp.float32)
    scheduler = {"prediction_type": "v_prediction", **SCHEDULES[0]}
    _round_trip(tiny_unet, x0, None, scheduler, gradient=True)


@pytest.mark.slow
def test_rex_round_trip_and_gradient_conditional(cond_unet):
    rng = np.random.default_rng(1)
    x0 = jnp.asarray(rng.standard_normal((1, 4, 4, 4)), jnp.float32)
    context = jnp.asarray(rng.standard_normal((1, 3, 8)), jnp.float32)
    _round_trip(cond_unet, x0, context, SCHEDULES[1], gradient=True)
