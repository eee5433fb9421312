"""The weight bridge: strict tensor checking, folder handling, config validation, no torch."""

import jax


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

import rexjax.models as rm  # noqa: E402


def _count(module) -> int:
    shapes = rm._unet.unet_param_shapes(module)
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes))


def test_sd15_unet_parameter_count():
    assert _count(rm.build_unet_module(rm.SD15_UNET_CONFIG)) == 859_520_964


def test_ddpm_cifar10_parameter_count():
    # diffusers' UNet2DModel(**config) for google/ddpm-cifar10-32 has 35,746,307 parameters.
    assert _count(rm.build_unet_module(rm.DDPM_CIFAR10_UNET_CONFIG)) == 35_746_307


def test_presets_are_read_only_and_match_diffusers():
    with pytest.raises(TypeError):
        rm.SD15_UNET_CONFIG["in_channels"] = 3
    diffusers = pytest.importorskip("diffusers")
    config = {k: v for k, v in rm.DDPM_CIFAR10_UNET_CONFIG.items() if k != "_class_name"}
    model = diffusers.UNet2DModel(**config)
    assert sum(p.numel() for p in model.parameters()) == 35_746_307
    for preset in (rm.SD15_SCHEDULER_CONFIG, rm.DDPM_SCHEDULER_CONFIG):
        scheduler = diffusers.DDPMScheduler(**preset)
        np.testing.assert_allclose(
            rm.alphas_cumprod(preset), scheduler.alphas_cumprod.double().numpy(), rtol=1e-6
        )


def test_random_unet_matches_checkpoint_layout(unet_folder):
    """A random UNet has exactly the tensors a loaded checkpoint has, the same network in
    every dtype, and different weights for different keys."""
    loaded = rm.load_unet(unet_folder)
    config = json.loads((unet_folder / "config.json").read_text())
    key = jax.random.key(0)
    nets = {d: rm.random_unet(config, key, d) for d in ("float32", "float64", "bfloat16")}
    shapes = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), nets["float32"].params)
    assert shapes == jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), loaded.params)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))

    # Compiled with the weights as arguments (an eager UNet call dispatches hundreds of small
    # ops; closed-over weights would be constant-folded into each program).
    run = eqx.filter_jit(lambda net, x: net(x, 500.0))
    out32, out64 = (np.asarray(run(nets[d], x.astype(d))) for d in ("float32", "float64"))
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, out32, rtol=1e-4, atol=1e-5 * np.abs(out64).max())
    # bfloat16 end to end (traced, not compiled); another key (the same compiled program).
    bf16 = jax.eval_shape(lambda net, x: net(x, 500.0), nets["bfloat16"], x.astype(jnp.bfloat16))
    assert bf16.dtype == jnp.bfloat16 and bf16.shape == out32.shape
    other = rm.random_unet(config, jax.random.key(1))
    assert not np.allclose(np.asarray(run(other, x.astype(np.float32))), out32)


def _save_unet(folder: Path) -> Path:
    diffusers = pytest.importorskip("diffusers")
    pytest.importorskip("torch")
    model = diffusers.UNet2DModel(
        sample_size=8,
        block_out_channels=(16, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
    )
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory) -> Path:
    return _save_unet(tmp_path_factory.mktemp("unet"))


def _edited_copy(src: Path, dst: Path, edit) -> Path:
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    state = load_file(str(src / "diffusion_pytorch_model.safetensors"))
    edit(state)
    save_file(state, str(dst / "diffusion_pytorch_model.safetensors"))
    return dst


def test_missing_tensors_named(unet_folder, tmp_path):
    def edit(state):
        del state["conv_in.weight"]
        del state["down_blocks.1.attentions.0.to_q.bias"]

    folder = _edited_copy(unet_folder, tmp_path / "c", edit)
    with pytest.raises(rm.CheckpointMismatchError) as info:
        rm.load_unet(folder)
    message = str(info.value)
    assert "missing tensors (2)" in message
    assert "conv_in.weight" in message
    assert "down_blocks.1.attentions.0.to_q.bias" in message


def test_unexpected_tensor_named(unet_folder, tmp_path):
    def edit(state):
        state["mid_block.extra.weight"] = np.zeros(3, np.float32)

    folder = _edited_copy(unet_folder, tmp_path / "c", edit)
    with pytest.raises(rm.CheckpointMismatchError, match=r"unexpected tensors \(1\): mid_block"):
        rm.load_unet(folder)


def test_misshaped_tensor_named(unet_folder, tmp_path):
    def edit(state):
        w = state["up_blocks.0.resnets.0.conv1.weight"]
        state["up_blocks.0.resnets.0.conv1.weight"] = np.ascontiguousarray(w[:, :-1])
        state["conv_out.bias"] = np.zeros(4, np.float32)

    folder = _edited_copy(unet_folder, tmp_path / "c", edit)
    with pytest.raises(rm.CheckpointMismatchError) as info:
        rm.load_unet(folder)
    message = str(info.value)
    assert "mis-shaped tensors (2)" in message
    assert "up_blocks.0.resnets.0.conv1.weight" in message and "conv_out.bias (4,)" in message
    assert "missing" not in message


def test_legacy_attention_names_accepted(unet_folder, tmp_path):
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def edit(state):
        for key in list(state):
            for new, old in renames.items():
                if f".attentions.0.{new}." in key:
                    state[key.replace(f".{new}.", f".{old}.")] = state.pop(key)

    folder = _edited_copy(unet_folder, tmp_path / "c", edit)
    a = rm.load_unet(folder).params
    b = rm.load_unet(unet_folder).params
    assert jax.tree_util.tree_all(jax.tree.map(lambda x, y: bool((x == y).all()), a, b))


def test_missing_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rm.load_unet(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="No config.json"):
        rm.load_vae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(rm.DDPM_CIFAR10_UNET_CONFIG)))
    with pytest.raises(FileNotFoundError, match="No weights"):
        rm.load_unet(tmp_path)


@pytest.mark.parametrize(
    "key, value",
    [
        ("time_embedding_type", "fourier"),
        ("resnet_time_scale_shift", "scale_shift"),
        ("down_block_types", ["SkipDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]),
        ("class_embed_type", "timestep"),
        ("some_future_option", 3),
    ],
)
def test_bad_unet2d_config_named(key, value):
    config = {**rm.DDPM_CIFAR10_UNET_CONFIG, key: value}
    with pytest.raises(ValueError, match=key):
        rm.build_unet_module(config)


@pytest.mark.parametrize(
    "key, value",
    [
        ("addition_embed_type", "text_time"),
        ("only_cross_attention", True),
        ("attention_type", "gated"),
        ("time_cond_proj_dim", 256),
        ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"),
    ],
)
def test_bad_unet2d_condition_config_named(key, value):
    with pytest.raises(ValueError, match=key):
        rm.build_unet_module({**rm.SD15_UNET_CONFIG, key: value})


def test_bad_dtype_and_class():
    with pytest.raises(ValueError, match="int32"):
        rm.build_unet_module(rm.SD15_UNET_CONFIG, dtype="int32")
    with pytest.raises(ValueError, match="UNet3DConditionModel"):
        rm.build_unet_module({**rm.SD15_UNET_CONFIG, "_class_name": "UNet3DConditionModel"})


def test_float64_needs_x64():
    with jax.enable_x64(False), pytest.raises(ValueError, match="jax_enable_x64"):
        rm.build_unet_module(rm.SD15_UNET_CONFIG, dtype="float64")


def test_pipeline_folder_and_variant(unet_folder, tmp_path):
    pipeline = tmp_path / "pipe"
    (pipeline / "unet").mkdir(parents=True)
    (pipeline / "unet" / "config.json").write_text((unet_folder / "config.json").read_text())
    state = load_file(str(unet_folder / "diffusion_pytorch_model.safetensors"))
    half = {k: v.astype(jnp.bfloat16) for k, v in state.items()}  # bfloat16 files load too
    save_file(half, str(pipeline / "unet" / "diffusion_pytorch_model.bf16.safetensors"))
    unet = rm.load_unet(pipeline, variant="bf16", dtype="bfloat16")
    assert unet.params["conv_in"]["kernel"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(unet.params["conv_in"]["kernel"], np.float32),
        np.asarray(half["conv_in.weight"].transpose(2, 3, 1, 0), np.float32),
    )
    with pytest.raises(FileNotFoundError, match="No weights"):
        rm.load_unet(pipeline)


def test_bin_checkpoint(unet_folder, tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "config.json").write_text((unet_folder / "config.json").read_text())
    state = load_file(str(unet_folder / "diffusion_pytorch_model.safetensors"))
    torch.save(
        {k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "diffusion_pytorch_model.bin"
    )
    a = rm.load_unet(tmp_path).params
    b = rm.load_unet(unet_folder).params
    assert jax.tree_util.tree_all(jax.tree.map(lambda x, y: bool((x == y).all()), a, b))


# A finder that makes `import torch` fail, as if torch were not installed.
_NO_TORCH = (
    "import sys\n"
    "class NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ModuleNotFoundError(name)\n"
    "sys.meta_path.insert(0, NoTorch())\n"
)


def test_imports_and_loads_without_torch(unet_folder, tmp_path):
    code = (
        _NO_TORCH + "import rexjax.models as m\n"
        f"u = m.load_unet({str(unet_folder)!r})\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    (tmp_path / "config.json").write_text((unet_folder / "config.json").read_text())
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"not really a pickle")
    code = _NO_TORCH + f"import rexjax.models as m\nm.load_unet({str(tmp_path)!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "Install torch, or convert the checkpoint to safetensors" in out.stderr
