"""Flax ports against the diffusers / transformers PyTorch models on the same weights."""

import jax


# The repo's conftest sets these too; repeated so the module runs the same on its own.
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from model_helpers import perturb, rel_err  # noqa: E402

import rexjax.models as rm  # noqa: E402


torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

# float32 parity bound (measured: ~1e-6, see the report in experiments/results/).
TOL = 1e-5

UNET2D_CONFIGS = {
    # google/ddpm-cifar10-32 style: no flip, shift 1, asymmetric downsample pad, 1-head attention.
    "ddpm_cifar10": dict(
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=None,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
        norm_eps=1e-6,
    ),
    # diffusers defaults plus the remaining supported options.
    "options": dict(
        block_out_channels=(32, 48),
        down_block_types=("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D"),
        attention_head_dim=8,
        center_input_sample=True,
        mid_block_scale_factor=2.0,
        attn_norm_num_groups=4,
        time_embedding_dim=96,
    ),
    "no_mid_attention": dict(
        block_out_channels=(32, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        add_attention=False,
    ),
}


def _jit_call(model, *args):
    return np.asarray(eqx.filter_jit(lambda m, *a: m(*a))(model, *args))


@pytest.mark.parametrize("name", sorted(UNET2D_CONFIGS))
def test_unet2d_parity(name, tmp_path):
    model = diffusers.UNet2DModel(
        sample_size=16, layers_per_block=1, norm_num_groups=8, **UNET2D_CONFIGS[name]
    ).eval()
    perturb(model)
    model.save_pretrained(tmp_path)
    unet = rm.load_unet(tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    t = np.array([3, 981])
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
    err = rel_err(_jit_call(unet, x, t.astype(np.float32)), ref)
    print(f"UNet2DModel[{name}] max relative error {err:.2e}")
    assert err < TOL


def _sd_unet(use_linear_projection: bool, **kwargs):
    config = dict(
        sample_size=16,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=4,
        cross_attention_dim=24,
        use_linear_projection=use_linear_projection,
    )
    config.update(kwargs)
    return diffusers.UNet2DConditionModel(**config).eval()


@pytest.mark.parametrize("use_linear_projection", [False, True])
def test_unet2d_condition_parity(use_linear_projection, tmp_path):
    model = _sd_unet(use_linear_projection)
    perturb(model)
    model.save_pretrained(tmp_path)
    unet = rm.load_unet(tmp_path)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 16, 16)).astype(np.float32)
    context = rng.standard_normal((2, 7, 24)).astype(np.float32)
    t = np.array([0, 999])
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(context)).sample
    err = rel_err(_jit_call(unet, x, t.astype(np.float32), context), ref.numpy())
    print(f"UNet2DConditionModel[linear={use_linear_projection}] max relative error {err:.2e}")
    assert err < TOL


def test_unet2d_condition_float64_parity(tmp_path):
    """float64 (for round-off studies) against diffusers in double. At t=0 the float32
    timestep features (both compute them in float32) are exact, so everything else is checked
    at float64 round-off; at other t, sin/cos of float32 arguments differ by an ulp between
    XLA and torch (measured 4e-9 relative at the output)."""
    model = _sd_unet(False)
    perturb(model)
    model.save_pretrained(tmp_path)
    unet = rm.load_unet(tmp_path, dtype="float64")
    model = model.double()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 16, 16))
    context = rng.standard_normal((2, 7, 24))
    for t, tol in ((np.array([0, 0]), 1e-12), (np.array([3, 981]), 1e-7)):
        with torch.no_grad():
            ref = model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(context))
        out = _jit_call(unet, x, t.astype(np.float64), context)
        err = rel_err(out, ref.sample.numpy())
        print(f"UNet2DConditionModel float64, t={t}: max relative error {err:.2e}")
        assert out.dtype == np.float64
        assert err < tol


def test_unet2d_condition_per_block_options(tmp_path):
    model = _sd_unet(
        False,
        attention_head_dim=(2, 4),
        layers_per_block=(1, 2),
        transformer_layers_per_block=(2, 1),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    perturb(model)
    model.save_pretrained(tmp_path)
    unet = rm.load_unet(tmp_path)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    context = rng.standard_normal((1, 5, 24)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x), 500, torch.from_numpy(context)).sample.numpy()
    assert rel_err(_jit_call(unet, x, 500.0, context), ref) < TOL


def test_vae_parity(tmp_path):
    model = diffusers.AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        layers_per_block=1,
        latent_channels=4,
    ).eval()
    perturb(model)
    model.save_pretrained(tmp_path)
    vae = rm.load_vae(tmp_path)
    x = np.random.default_rng(3).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        dist = model.encode(torch.from_numpy(x)).latent_dist
        decoded = model.decode(dist.mean).sample.numpy()
    mean, logvar = eqx.filter_jit(lambda v, x: v.encode(x))(vae, x)
    out = eqx.filter_jit(lambda v, z: v.decode(z))(vae, dist.mean.numpy())
    errs = (
        rel_err(mean, dist.mean.numpy()),
        rel_err(logvar, dist.logvar.numpy()),
        rel_err(out, decoded),
    )
    print(
        "AutoencoderKL max relative errors (mean, logvar, decode): "
        + ", ".join(f"{e:.2e}" for e in errs)
    )
    assert max(errs) < TOL
    assert vae.scaling_factor == model.config.scaling_factor


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_clip_text_parity(hidden_act, tmp_path):
    config = transformers.CLIPTextConfig(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        bos_token_id=998,
        eos_token_id=999,
        pad_token_id=999,
    )
    model = transformers.CLIPTextModel(config).eval()
    model.save_pretrained(tmp_path)
    encoder = rm.load_text_encoder(tmp_path)
    ids = np.random.default_rng(4).integers(0, 1000, (2, 77))
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).last_hidden_state.numpy()
    err = rel_err(_jit_call(encoder, ids), ref)
    print(f"CLIPTextModel[{hidden_act}] max relative error {err:.2e}")
    assert err < TOL


@pytest.mark.parametrize(
    "dtype, tol", [("bfloat16", 5e-2), pytest.param("float16", 5e-3, marks=pytest.mark.slow)]
)
def test_unet_low_precision(dtype, tol, tmp_path):
    model = _sd_unet(True)
    perturb(model)
    model.save_pretrained(tmp_path)
    unet = rm.load_unet(tmp_path, dtype=dtype)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 4, 16, 16)).astype(np.float32)
    context = rng.standard_normal((1, 7, 24)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x), 250, torch.from_numpy(context)).sample.numpy()
    out = _jit_call(unet, x, 250.0, context)
    assert out.dtype == np.dtype(dtype)
    err = rel_err(out, ref)
    print(f"UNet2DConditionModel in {dtype} vs PyTorch float32: max relative error {err:.2e}")
    assert err < tol
