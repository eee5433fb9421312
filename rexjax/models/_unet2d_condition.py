"""Flax port of diffusers' `UNet2DConditionModel`, the latent-diffusion UNet of Stable
Diffusion 1.x (Rombach et al. 2022).

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
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._blocks import BlockOptions, DownBlock, MidBlock, UpBlock
from ._config import per_block, read_config
from ._layers import (
    ACTIVATIONS,
    Dtype,
    TimestepEmbedding,
    activation,
    conv,
    group_norm,
    timestep_embedding,
)


_DOWN = {"DownBlock2D": None, "CrossAttnDownBlock2D": "transformer"}
_UP = {"UpBlock2D": None, "CrossAttnUpBlock2D": "transformer"}


def _positive(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _int_or_ints(v: Any) -> bool:
    return _positive(v) or (isinstance(v, tuple) and all(map(_positive, v)))


def _odd(v: Any) -> bool:
    return _positive(v) and v % 2 == 1


_SPEC = {
    "in_channels": (4, _positive),
    "out_channels": (4, _positive),
    "center_input_sample": (False, (True, False)),
    "flip_sin_to_cos": (True, (True, False)),
    "freq_shift": (0, None),
    "down_block_types": (None, lambda v: isinstance(v, tuple) and set(v) <= set(_DOWN)),
    "mid_block_type": ("UNetMidBlock2DCrossAttn", ("UNetMidBlock2DCrossAttn",)),
    "up_block_types": (None, lambda v: isinstance(v, tuple) and set(v) <= set(_UP)),
    "only_cross_attention": (False, (False,)),
    "block_out_channels": (None, lambda v: isinstance(v, tuple) and all(map(_positive, v))),
    "layers_per_block": (2, _int_or_ints),
    "downsample_padding": (1, (0, 1)),
    "mid_block_scale_factor": (1, None),
    "act_fn": ("silu", tuple(ACTIVATIONS)),
    "norm_num_groups": (32, _positive),
    "norm_eps": (1e-5, None),
    "cross_attention_dim": (1280, _positive),
    "transformer_layers_per_block": (1, _int_or_ints),
    "reverse_transformer_layers_per_block": (None, (None,)),
    "encoder_hid_dim": (None, (None,)),
    "encoder_hid_dim_type": (None, (None,)),
    "attention_head_dim": (8, _int_or_ints),
    "num_attention_heads": (None, (None,)),
    "dual_cross_attention": (False, (False,)),
    "use_linear_projection": (False, (True, False)),
    "class_embed_type": (None, (None,)),
    "addition_embed_type": (None, (None,)),
    "addition_time_embed_dim": (None, (None,)),
    "num_class_embeds": (None, (None,)),
    # The attention softmax always runs in float32 here, so both values compute the same.
    "upcast_attention": (False, (True, False)),
    "resnet_time_scale_shift": ("default", ("default",)),
    "resnet_skip_time_act": (False, (False,)),
    "resnet_out_scale_factor": (1.0, None),
    "time_embedding_type": ("positional", ("positional",)),
    "time_embedding_dim": (None, lambda v: v is None or _positive(v)),
    "time_embedding_act_fn": (None, (None,)),
    "timestep_post_act": (None, (None,)),
    "time_cond_proj_dim": (None, (None,)),
    "conv_in_kernel": (3, _odd),
    "conv_out_kernel": (3, _odd),
    "projection_class_embeddings_input_dim": (None, (None,)),
    "attention_type": ("default", ("default",)),
    "class_embeddings_concat": (False, (False,)),
    "mid_block_only_cross_attention": (None, (None, False)),
    "cross_attention_norm": (None, (None,)),
    "addition_embed_type_num_heads": (64, None),
}


@dataclass(frozen=True)
class UNet2DConditionConfig:
    """The subset of a diffusers `UNet2DConditionModel` config that the port implements.

    Per-block options are expanded to one entry per down block. `heads` is diffusers'
    `attention_head_dim`, which (for historical reasons) is the number of heads.
    """

    in_channels: int
    out_channels: int
    center_input_sample: bool
    flip_sin_to_cos: bool
    freq_shift: float
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    block_out_channels: tuple[int, ...]
    layers_per_block: tuple[int, ...]
    transformer_layers_per_block: tuple[int, ...]
    heads: tuple[int, ...]
    downsample_padding: int
    mid_block_scale_factor: float
    resnet_out_scale_factor: float
    act_fn: str
    norm_num_groups: int
    norm_eps: float
    cross_attention_dim: int
    use_linear_projection: bool
    time_embedding_dim: int | None
    conv_in_kernel: int
    conv_out_kernel: int

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "UNet2DConditionConfig":
        """Validate a `config.json` dict; unsupported values raise a `ValueError` naming them."""
        c = read_config(config, "UNet2DConditionModel", _SPEC)
        n = len(c["block_out_channels"])
        if len(c["down_block_types"]) != n or len(c["up_block_types"]) != n:
            raise ValueError(
                "UNet2DConditionModel config: down_block_types, up_block_types and "
                "block_out_channels must have the same length."
            )
        return cls(
            in_channels=c["in_channels"],
            out_channels=c["out_channels"],
            center_input_sample=c["center_input_sample"],
            flip_sin_to_cos=c["flip_sin_to_cos"],
            freq_shift=c["freq_shift"],
            down_block_types=c["down_block_types"],
            up_block_types=c["up_block_types"],
            block_out_channels=c["block_out_channels"],
            layers_per_block=per_block(c["layers_per_block"], n, "layers_per_block"),
            transformer_layers_per_block=per_block(
                c["transformer_layers_per_block"], n, "transformer_layers_per_block"
            ),
            heads=per_block(c["attention_head_dim"], n, "attention_head_dim"),
            downsample_padding=c["downsample_padding"],
            mid_block_scale_factor=c["mid_block_scale_factor"],
            resnet_out_scale_factor=c["resnet_out_scale_factor"],
            act_fn=c["act_fn"],
            norm_num_groups=c["norm_num_groups"],
            norm_eps=c["norm_eps"],
            cross_attention_dim=c["cross_attention_dim"],
            use_linear_projection=c["use_linear_projection"],
            time_embedding_dim=c["time_embedding_dim"],
            conv_in_kernel=c["conv_in_kernel"],
            conv_out_kernel=c["conv_out_kernel"],
        )


class UNet2DConditionModule(nn.Module):
    """The network; `sample` and the output are channels-last (`NHWC`), `context` is the text
    encoder's `(b, tokens, cross_attention_dim)` hidden states."""

    config: UNet2DConditionConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        sample: Float[Array, "b h w c"],
        timesteps: Float[Array, " b"],
        context: Float[Array, "b l d"],
    ) -> Float[Array, "b h w c"]:
        cfg = self.config
        ch = cfg.block_out_channels
        o = BlockOptions(
            cfg.norm_num_groups,
            cfg.norm_eps,
            cfg.act_fn,
            True,
            self.dtype,
            cfg.use_linear_projection,
            cfg.resnet_out_scale_factor,
        )
        x = sample.astype(self.dtype)
        context = context.astype(self.dtype)
        if cfg.center_input_sample:
            x = 2 * x - 1
        t = timestep_embedding(timesteps, ch[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        temb_dim = cfg.time_embedding_dim or 4 * ch[0]
        temb = TimestepEmbedding(temb_dim, cfg.act_fn, self.dtype, name="time_embedding")(t)

        h = conv(ch[0], cfg.conv_in_kernel, "conv_in", self.dtype)(x)
        skips = [h]
        for i, kind in enumerate(cfg.down_block_types):
            h, s = DownBlock(
                o,
                cfg.layers_per_block[i],
                ch[i],
                add_downsample=i < len(ch) - 1,
                downsample_padding=cfg.downsample_padding,
                attn=_DOWN[kind],
                heads_or_dim=cfg.heads[i],
                transformer_layers=cfg.transformer_layers_per_block[i],
                name=f"down_blocks_{i}",
            )(h, temb, context)
            skips += s
        h = MidBlock(
            o,
            attn="transformer",
            heads_or_dim=cfg.heads[-1],
            transformer_layers=cfg.transformer_layers_per_block[-1],
            output_scale_factor=cfg.mid_block_scale_factor,
            name="mid_block",
        )(h, temb, context)
        rev_ch = ch[::-1]
        rev_layers = cfg.layers_per_block[::-1]
        rev_tlayers = cfg.transformer_layers_per_block[::-1]
        rev_heads = cfg.heads[::-1]
        for i, kind in enumerate(cfg.up_block_types):
            n = rev_layers[i] + 1
            block_skips = skips[len(skips) - n :]
            skips = skips[: len(skips) - n]
            h = UpBlock(
                o,
                n,
                rev_ch[i],
                add_upsample=i < len(ch) - 1,
                attn=_UP[kind],
                heads_or_dim=rev_heads[i],
                transformer_layers=rev_tlayers[i],
                name=f"up_blocks_{i}",
            )(h, block_skips, temb, context)
        h = group_norm(cfg.norm_num_groups, cfg.norm_eps, "conv_norm_out", self.dtype)(h)
        h = activation(cfg.act_fn)(h)
        return conv(cfg.out_channels, cfg.conv_out_kernel, "conv_out", self.dtype)(h)
