"""Flax port of diffusers' `UNet2DModel`, the pixel-space DDPM UNet (Ho et al. 2020).

??? cite "Reference"

    ```bibtex
    @inproceedings{ho2020denoising,
        title={Denoising Diffusion Probabilistic Models},
        author={Ho, Jonathan and Jain, Ajay and Abbeel, Pieter},
        booktitle={Advances in Neural Information Processing Systems},
        year={2020}
    }
    ```
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._blocks import BlockOptions, DownBlock, MidBlock, UpBlock
from ._config import read_config
from ._layers import ACTIVATIONS, Dtype, TimestepEmbedding, conv, group_norm, timestep_embedding


_DOWN = {"DownBlock2D": None, "AttnDownBlock2D": "spatial"}
_UP = {"UpBlock2D": None, "AttnUpBlock2D": "spatial"}


def _positive(v: Any) -> bool:
    return isinstance(v, int) and v > 0


_SPEC = {
    "in_channels": (3, _positive),
    "out_channels": (3, _positive),
    "center_input_sample": (False, (True, False)),
    "time_embedding_type": ("positional", ("positional",)),
    "time_embedding_dim": (None, lambda v: v is None or _positive(v)),
    "freq_shift": (0, None),
    "flip_sin_to_cos": (True, (True, False)),
    "down_block_types": (None, lambda v: isinstance(v, tuple) and set(v) <= set(_DOWN)),
    "mid_block_type": ("UNetMidBlock2D", ("UNetMidBlock2D",)),
    "up_block_types": (None, lambda v: isinstance(v, tuple) and set(v) <= set(_UP)),
    "block_out_channels": (None, lambda v: isinstance(v, tuple) and all(map(_positive, v))),
    "layers_per_block": (2, _positive),
    "mid_block_scale_factor": (1, None),
    "downsample_padding": (1, (0, 1)),
    "downsample_type": ("conv", ("conv",)),
    "upsample_type": ("conv", ("conv",)),
    "act_fn": ("silu", tuple(ACTIVATIONS)),
    "attention_head_dim": (8, lambda v: v is None or _positive(v)),
    "norm_num_groups": (32, _positive),
    "attn_norm_num_groups": (None, lambda v: v is None or _positive(v)),
    "norm_eps": (1e-5, None),
    "resnet_time_scale_shift": ("default", ("default",)),
    "add_attention": (True, (True, False)),
    "class_embed_type": (None, (None,)),
    "num_class_embeds": (None, lambda v: v is None or _positive(v)),
}


@dataclass(frozen=True)
class UNet2DConfig:
    """The subset of a diffusers `UNet2DModel` config that the port implements."""

    in_channels: int
    out_channels: int
    center_input_sample: bool
    time_embedding_dim: int | None
    freq_shift: float
    flip_sin_to_cos: bool
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    mid_block_scale_factor: float
    downsample_padding: int
    act_fn: str
    attention_head_dim: int | None
    norm_num_groups: int
    attn_norm_num_groups: int | None
    norm_eps: float
    add_attention: bool
    num_class_embeds: int | None

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "UNet2DConfig":
        """Validate a `config.json` dict; unsupported values raise a `ValueError` naming them."""
        c = read_config(config, "UNet2DModel", _SPEC)
        n = len(c["block_out_channels"])
        if len(c["down_block_types"]) != n or len(c["up_block_types"]) != n:
            raise ValueError(
                "UNet2DModel config: down_block_types, up_block_types and block_out_channels "
                f"must have the same length, got {len(c['down_block_types'])}, "
                f"{len(c['up_block_types'])} and {n}."
            )
        for key in (
            "time_embedding_type",
            "mid_block_type",
            "downsample_type",
            "upsample_type",
            "resnet_time_scale_shift",
            "class_embed_type",
        ):
            del c[key]
        return cls(**c)


class UNet2DModule(nn.Module):
    """The network; inputs and outputs are channels-last (`NHWC`).

    With `num_class_embeds` set (diffusers' `class_embed_type=None` path), a learnt table
    `class_embedding` of `num_class_embeds` vectors is looked up at `class_labels` and added to
    the time embedding before it reaches the residual blocks (Dhariwal & Nichol 2021).
    """

    config: UNet2DConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        sample: Float[Array, "b h w c"],
        timesteps: Float[Array, " b"],
        class_labels: Int[Array, " b"] | None = None,
    ) -> Float[Array, "b h w c"]:
        cfg = self.config
        ch = cfg.block_out_channels
        o = BlockOptions(cfg.norm_num_groups, cfg.norm_eps, cfg.act_fn, True, self.dtype)
        x = sample.astype(self.dtype)
        if cfg.center_input_sample:
            x = 2 * x - 1
        t = timestep_embedding(timesteps, ch[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        temb_dim = cfg.time_embedding_dim or 4 * ch[0]
        # diffusers' UNet2DModel always uses SiLU in its time embedding and output head.
        temb = TimestepEmbedding(temb_dim, "silu", self.dtype, name="time_embedding")(t)
        if (cfg.num_class_embeds is None) != (class_labels is None):
            raise ValueError(
                "class_labels must be given exactly when the config has num_class_embeds "
                f"(num_class_embeds={cfg.num_class_embeds})."
            )
        if cfg.num_class_embeds is not None:
            table = nn.Embed(
                cfg.num_class_embeds, temb_dim, dtype=self.dtype, name="class_embedding"
            )
            temb = temb + table(class_labels)

        def head_dim(c: int) -> int:
            return c if cfg.attention_head_dim is None else cfg.attention_head_dim

        h = conv(ch[0], 3, "conv_in", self.dtype)(x)
        skips = [h]
        for i, kind in enumerate(cfg.down_block_types):
            h, s = DownBlock(
                o,
                cfg.layers_per_block,
                ch[i],
                add_downsample=i < len(ch) - 1,
                downsample_padding=cfg.downsample_padding,
                attn=_DOWN[kind],
                heads_or_dim=head_dim(ch[i]),
                name=f"down_blocks_{i}",
            )(h, temb)
            skips += s
        h = MidBlock(
            o,
            attn="spatial" if cfg.add_attention else None,
            heads_or_dim=head_dim(ch[-1]),
            attn_groups=cfg.attn_norm_num_groups,
            output_scale_factor=cfg.mid_block_scale_factor,
            name="mid_block",
        )(h, temb)
        rev = ch[::-1]
        for i, kind in enumerate(cfg.up_block_types):
            n = cfg.layers_per_block + 1
            block_skips = skips[len(skips) - n :]
            skips = skips[: len(skips) - n]
            h = UpBlock(
                o,
                n,
                rev[i],
                add_upsample=i < len(ch) - 1,
                attn=_UP[kind],
                heads_or_dim=head_dim(rev[i]),
                name=f"up_blocks_{i}",
            )(h, block_skips, temb)
        h = jax.nn.silu(
            group_norm(cfg.norm_num_groups, cfg.norm_eps, "conv_norm_out", self.dtype)(h)
        )
        return conv(cfg.out_channels, 3, "conv_out", self.dtype)(h)
