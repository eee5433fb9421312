"""Flax port of diffusers' `AutoencoderKL`, the Stable Diffusion VAE (Rombach et al. 2022).

??? cite "Reference"

    ```bibtex
    @inproceedings{rombach2022high,
        title={High-Resolution Image Synthesis with Latent Diffusion Models},
        author={Rombach, Robin and Blattmann, Andreas and Lorenz, Dominik and Esser, Patrick
                and Ommer, Bj{\"o}rn},
        booktitle={CVPR},
        year={2022}
    }
    ```
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PyTree

from ._blocks import BlockOptions, DownBlock, MidBlock, UpBlock
from ._bridge import (
    convert_state_dict,
    expected_params,
    read_json,
    read_state_dict,
    resolve_component,
)
from ._config import read_config
from ._dtypes import check_dtype
from ._layers import ACTIVATIONS, Dtype, activation, conv, group_norm


def _positive(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


_SPEC = {
    "in_channels": (3, _positive),
    "out_channels": (3, _positive),
    "down_block_types": (
        ("DownEncoderBlock2D",),
        lambda v: isinstance(v, tuple) and set(v) == {"DownEncoderBlock2D"},
    ),
    "up_block_types": (
        ("UpDecoderBlock2D",),
        lambda v: isinstance(v, tuple) and set(v) == {"UpDecoderBlock2D"},
    ),
    "block_out_channels": ((64,), lambda v: isinstance(v, tuple) and all(map(_positive, v))),
    "layers_per_block": (1, _positive),
    "act_fn": ("silu", tuple(ACTIVATIONS)),
    "latent_channels": (4, _positive),
    "norm_num_groups": (32, _positive),
    "scaling_factor": (0.18215, lambda v: isinstance(v, int | float) and v > 0),
    "shift_factor": (None, lambda v: v is None or isinstance(v, int | float)),
    "latents_mean": (None, (None,)),
    "latents_std": (None, (None,)),
    "use_quant_conv": (True, (True, False)),
    "use_post_quant_conv": (True, (True, False)),
    "mid_block_add_attention": (True, (True, False)),
}


@dataclass(frozen=True)
class AutoencoderKLConfig:
    """The subset of a diffusers `AutoencoderKL` config that the port implements."""

    in_channels: int
    out_channels: int
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    act_fn: str
    latent_channels: int
    norm_num_groups: int
    scaling_factor: float
    shift_factor: float | None
    use_quant_conv: bool
    use_post_quant_conv: bool
    mid_block_add_attention: bool

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "AutoencoderKLConfig":
        """Validate a `config.json` dict; unsupported values raise a `ValueError` naming them."""
        c = read_config(config, "AutoencoderKL", _SPEC)
        n = len(c["block_out_channels"])
        if len(c["down_block_types"]) != n or len(c["up_block_types"]) != n:
            raise ValueError(
                "AutoencoderKL config: down_block_types, up_block_types and block_out_channels "
                "must have the same length."
            )
        for key in ("down_block_types", "up_block_types", "latents_mean", "latents_std"):
            del c[key]
        return cls(**c)


def _options(cfg: AutoencoderKLConfig, dtype: Dtype) -> BlockOptions:
    # The VAE's resnets have no time embedding and a fixed group-norm epsilon of 1e-6.
    return BlockOptions(cfg.norm_num_groups, 1e-6, cfg.act_fn, False, dtype)


def _mid(cfg: AutoencoderKLConfig, o: BlockOptions) -> MidBlock:
    return MidBlock(
        o,
        attn="spatial" if cfg.mid_block_add_attention else None,
        heads_or_dim=cfg.block_out_channels[-1],
        name="mid_block",
    )


class Encoder(nn.Module):
    """Image (`NHWC`) -> `2 * latent_channels` moments, before `quant_conv`."""

    config: AutoencoderKLConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        o = _options(cfg, self.dtype)
        ch = cfg.block_out_channels
        h = conv(ch[0], 3, "conv_in", self.dtype)(x)
        for i, c in enumerate(ch):
            h, _ = DownBlock(
                o,
                cfg.layers_per_block,
                c,
                add_downsample=i < len(ch) - 1,
                downsample_padding=0,
                name=f"down_blocks_{i}",
            )(h, None)
        h = _mid(cfg, o)(h, None)
        h = activation(cfg.act_fn)(group_norm(o.groups, 1e-6, "conv_norm_out", self.dtype)(h))
        return conv(2 * cfg.latent_channels, 3, "conv_out", self.dtype)(h)


class Decoder(nn.Module):
    """Latent (`NHWC`, after `post_quant_conv`) -> image."""

    config: AutoencoderKLConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, z: Array) -> Array:
        cfg = self.config
        o = _options(cfg, self.dtype)
        rev = cfg.block_out_channels[::-1]
        h = conv(rev[0], 3, "conv_in", self.dtype)(z)
        h = _mid(cfg, o)(h, None)
        for i, c in enumerate(rev):
            h = UpBlock(
                o,
                cfg.layers_per_block + 1,
                c,
                add_upsample=i < len(rev) - 1,
                name=f"up_blocks_{i}",
            )(h, None, None)
        h = activation(cfg.act_fn)(group_norm(o.groups, 1e-6, "conv_norm_out", self.dtype)(h))
        return conv(cfg.out_channels, 3, "conv_out", self.dtype)(h)


class AutoencoderKLModule(nn.Module):
    """The KL autoencoder; `__call__` only exists to create all parameters at `init`.

    Use `apply(..., method="encode")` and `apply(..., method="decode")`.
    """

    config: AutoencoderKLConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        cfg = self.config
        self.encoder = Encoder(cfg, self.dtype)
        self.decoder = Decoder(cfg, self.dtype)
        n = 2 * cfg.latent_channels
        self.quant_conv = conv(n, 1, "quant_conv", self.dtype) if cfg.use_quant_conv else None
        self.post_quant_conv = (
            conv(cfg.latent_channels, 1, "post_quant_conv", self.dtype)
            if cfg.use_post_quant_conv
            else None
        )

    def encode(
        self, x: Float[Array, "b h w c"]
    ) -> tuple[Float[Array, "b h2 w2 l"], Float[Array, "b h2 w2 l"]]:
        """Mean and log-variance (clipped to [-30, 20]) of the diagonal Gaussian posterior."""
        moments = self.encoder(x.astype(self.dtype))
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z: Float[Array, "b h2 w2 l"]) -> Float[Array, "b h w c"]:
        z = z.astype(self.dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def __call__(self, x: Array) -> Array:
        return self.decode(self.encode(x)[0])


class VAE(eqx.Module):
    """A loaded `AutoencoderKL` with its parameters as a pytree field, in diffusers' `NCHW`
    layout. `scaling_factor` (0.18215 for SD 1.x) maps posterior samples to the diffusion
    model's latent scale: `latent = scaling_factor * z`.
    """

    module: AutoencoderKLModule = eqx.field(static=True)
    params: PyTree[Array]

    @property
    def config(self) -> AutoencoderKLConfig:
        return self.module.config

    @property
    def scaling_factor(self) -> float:
        return self.module.config.scaling_factor

    def encode(
        self, image: Float[ArrayLike, "b c h w"]
    ) -> tuple[Float[Array, "b l h2 w2"], Float[Array, "b l h2 w2"]]:
        """Posterior mean and log-variance of the latent (unscaled) for images in [-1, 1].

        **Arguments:**

        - `image`: `(b, c, h, w)` images, `h` and `w` divisible by the downsampling factor.

        **Returns:**

        `(mean, logvar)`, each `(b, latent_channels, h / f, w / f)`.
        """
        x = jnp.transpose(jnp.asarray(image), (0, 2, 3, 1))
        mean, logvar = self.module.apply({"params": self.params}, x, method="encode")
        return jnp.transpose(mean, (0, 3, 1, 2)), jnp.transpose(logvar, (0, 3, 1, 2))

    def decode(self, z: Float[ArrayLike, "b l h2 w2"]) -> Float[Array, "b c h w"]:
        """Decode an (unscaled) latent to an image in roughly [-1, 1]."""
        x = jnp.transpose(jnp.asarray(z), (0, 2, 3, 1))
        out = self.module.apply({"params": self.params}, x, method="decode")
        return jnp.transpose(out, (0, 3, 1, 2))


def load_vae(folder: str | Path, dtype: Any = jnp.float32, variant: str | None = None) -> VAE:
    """Load a diffusers `AutoencoderKL` folder (or the `vae/` of a pipeline folder).

    **Arguments:**

    - `folder`: a folder written by `save_pretrained`, or a pipeline folder with `vae/`.
    - `dtype`: parameter and compute dtype: float32, bfloat16, float16, or float64 (needs
        `jax_enable_x64`; for round-off studies).
    - `variant`: a weight-file variant such as `"fp16"`.

    **Returns:**

    A [`rexjax.models.VAE`][].

    **Raises:**

    As [`rexjax.models.load_unet`][].
    """
    path = resolve_component(folder, "vae")
    config = read_json(path / "config.json")
    name = config.get("_class_name", "AutoencoderKL")
    if name != "AutoencoderKL":
        raise ValueError(f"_class_name={name!r} is not supported; rexjax ports AutoencoderKL.")
    module = AutoencoderKLModule(AutoencoderKLConfig.from_dict(config), check_dtype(dtype))
    size = 2 ** (len(module.config.block_out_channels) - 1)
    shapes = expected_params(module, jnp.zeros((1, size, size, module.config.in_channels)))
    params = convert_state_dict(
        read_state_dict(path, variant),
        shapes,
        module.dtype,
        legacy_attention=True,
        what=f"VAE checkpoint in {str(path)!r}",
    )
    return VAE(module, params)
