"""Class-conditional UNet2DModel (`num_class_embeds`): parity with diffusers, classifier-free
guidance in the adapter, and `save_unet` (round trip through our loader and diffusers')."""

import jax


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

import json  # noqa: E402

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from model_helpers import perturb, rel_err  # noqa: E402

import rexjax.models as rm  # noqa: E402


torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# float32 parity with diffusers PyTorch on the same weights (measured ~1.6e-6 here).
TOL = 2e-6
SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
}


SMALL = dict(
    in_channels=1,
    out_channels=1,
    block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=16,
    num_class_embeds=11,
)


@pytest.fixture(scope="module")
def torch_model():
    model = diffusers.UNet2DModel(sample_size=8, **SMALL).eval()
    perturb(model)
    return model


@pytest.fixture(scope="module")
def folder(torch_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("class_unet")
    torch_model.save_pretrained(path)
    return path


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    return x, np.array([3, 500, 981]), np.array([0, 10, 7])


def _reference(model, x, t, y):
    with torch.no_grad():
        out = model(torch.from_numpy(x), torch.from_numpy(t), class_labels=torch.from_numpy(y))
    return out.sample.numpy()


def _call(unet, x, t, y):
    return np.asarray(eqx.filter_jit(lambda u, x, t, y: u(x, t, class_labels=y))(unet, x, t, y))


def test_class_conditional_parity(torch_model, folder):
    unet = rm.load_unet(folder)
    assert unet.num_class_embeds == 11 and not unet.conditional
    x, t, y = _inputs()
    ref = _reference(torch_model, x, t, y)
    out = _call(unet, x, t.astype(np.float32), y)
    err = rel_err(out, ref)
    print(f"class-conditional UNet2DModel max relative error {err:.2e}")
    assert err < TOL
    # The label matters: another label gives another output.
    assert rel_err(_call(unet, x, t.astype(np.float32), (y + 1) % 11), ref) > 1e-3


def test_class_label_errors(folder):
    unet = rm.load_unet(folder)
    x, t, y = _inputs()
    with pytest.raises(ValueError, match="class-conditional"):
        unet(x, t.astype(np.float32))
    with pytest.raises(ValueError, match="integers of shape"):
        unet(x, t.astype(np.float32), class_labels=y[:2])
    with pytest.raises(Exception, match="class_labels must lie in 0..10"):
        _call(unet, x, t.astype(np.float32), np.array([0, 11, 2]))
    with pytest.raises(ValueError, match="class_embed_type='timestep'"):
        rm.build_unet_module(
            {**json.loads((folder / "config.json").read_text()), "class_embed_type": "timestep"}
        )


def test_class_guidance(folder):
    unet = rm.load_unet(folder)
    x, _, y = _inputs()
    x = jnp.asarray(x)
    term = rm.diffusion_term(unet, SCHEDULER)
    assert term.model_type == "noise"
    np.testing.assert_array_equal(term.model(0.5, x, y), unet(x, 499.0, class_labels=y))
    guided = rm.diffusion_term(unet, SCHEDULER, guidance_scale=2.5, null_label=10)
    e_c = unet(x, 249.0, class_labels=y)
    e_u = unet(x, 249.0, class_labels=np.full(3, 10))
    np.testing.assert_allclose(
        guided.model(0.25, x, y), e_u + 2.5 * (e_c - e_u), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="needs `null_label`"):
        rm.diffusion_term(unet, SCHEDULER, guidance_scale=2.5)
    with pytest.raises(ValueError, match="null_label=11"):
        rm.diffusion_term(unet, SCHEDULER, guidance_scale=2.5, null_label=11)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_save_unet_round_trip(folder, tmp_path, dtype):
    unet = rm.load_unet(folder, dtype=dtype)
    rm.save_unet(unet, tmp_path, scheduler_config=SCHEDULER, sample_size=8)
    again = rm.load_unet(tmp_path, dtype=dtype)
    assert again.config == unet.config
    leaves, again_leaves = jax.tree.leaves(unet.params), jax.tree.leaves(again.params)
    assert jax.tree.structure(unet.params) == jax.tree.structure(again.params)
    for a, b in zip(leaves, again_leaves, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))
    assert rm.load_scheduler_config(tmp_path) == SCHEDULER


def test_save_unet_loads_in_diffusers(torch_model, folder, tmp_path):
    unet = rm.load_unet(folder)
    rm.save_unet(unet, tmp_path, scheduler_config=SCHEDULER, sample_size=8)
    model = diffusers.UNet2DModel.from_pretrained(tmp_path).eval()
    # The same tensors as the model they came from, bit for bit.
    original = torch_model.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    x, t, y = _inputs()
    err = rel_err(_call(unet, x, t.astype(np.float32), y), _reference(model, x, t, y))
    print(f"save_unet -> diffusers from_pretrained: max relative error {err:.2e}")
    assert err < TOL
    scheduler = diffusers.DDPMScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    np.testing.assert_allclose(
        scheduler.alphas_cumprod.double().numpy(), rm.alphas_cumprod(SCHEDULER), rtol=2e-5
    )


def test_save_unet_rejects(tmp_path):
    config = {
        "_class_name": "UNet2DConditionModel",
        "block_out_channels": (8,),
        "down_block_types": ("CrossAttnDownBlock2D",),
        "up_block_types": ("CrossAttnUpBlock2D",),
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "attention_head_dim": 2,
        "cross_attention_dim": 8,
    }
    with pytest.raises(ValueError, match="UNet2DModel checkpoints only"):
        rm.save_unet(rm.random_unet(config, jax.random.key(0)), tmp_path)
    unet2d = rm.random_unet({**SMALL, "num_class_embeds": None}, jax.random.key(0))
    with pytest.raises(ValueError, match="_class_name"):
        rm.save_unet(unet2d, tmp_path, scheduler_config={"beta_schedule": "linear"})
