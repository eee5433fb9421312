"""Down, mid and up blocks of the diffusers UNets and VAE, in Flax Linen.

One module per role covers the plain, the self-attention (DDPM) and the cross-attention (LDM)
variants; `attn` selects which: `None`, `"spatial"` or `"transformer"`.
"""

from dataclasses import dataclass
from typing import Literal

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array

from ._layers import (
    Downsample2D,
    Dtype,
    ResnetBlock2D,
    SpatialSelfAttention,
    Transformer2D,
    Upsample2D,
)


AttnKind = Literal["spatial", "transformer"] | None


@dataclass(frozen=True)
class BlockOptions:
    """Options shared by all the blocks of one network.

    **Arguments:**

    - `groups`: group-norm groups of the resnets (`norm_num_groups`).
    - `eps`: group-norm epsilon of the resnets (`norm_eps`).
    - `act`: activation name (`act_fn`).
    - `use_temb`: whether resnets take a time embedding (False in the VAE).
    - `dtype`: parameter and compute dtype.
    - `use_linear_projection`: transformer `proj_in`/`proj_out` as dense layers, not 1x1 convs.
    - `resnet_scale`: resnet `output_scale_factor` in down/up blocks.
    """

    groups: int
    eps: float
    act: str
    use_temb: bool
    dtype: Dtype
    use_linear_projection: bool = False
    resnet_scale: float = 1.0


def _attention(o: BlockOptions, attn: AttnKind, heads_or_dim: int, layers: int, name: str):
    if attn == "spatial":
        return SpatialSelfAttention(heads_or_dim, o.groups, o.eps, o.dtype, name=name)
    return Transformer2D(
        heads_or_dim, o.groups, layers, o.use_linear_projection, o.dtype, name=name
    )


def _call_attention(module, attn: AttnKind, h: Array, context: Array | None) -> Array:
    if attn == "transformer":
        if context is None:
            raise ValueError("This UNet has cross-attention: pass `encoder_hidden_states`.")
        return module(h, context)
    return module(h)


def _resnet_attention_layer(block, i: int, h: Array, temb, context) -> Array:
    """Layer `i` of a down or up block: a resnet (`resnets_i`), then the block's attention
    (`attentions_i`) if it has one. Called inside the block's compact `__call__`."""
    o = block.options
    h = ResnetBlock2D(
        block.out_channels,
        o.groups,
        o.eps,
        o.act,
        o.dtype,
        o.use_temb,
        o.resnet_scale,
        name=f"resnets_{i}",
    )(h, temb)
    if block.attn is not None:
        module = _attention(
            o, block.attn, block.heads_or_dim, block.transformer_layers, f"attentions_{i}"
        )
        h = _call_attention(module, block.attn, h, context)
    return h


class DownBlock(nn.Module):
    """`num_layers` resnets (each optionally followed by attention), then an optional
    strided-conv downsample. Returns the output and every intermediate for the skips.

    `heads_or_dim` is the attention head dimension for `"spatial"` attention and the number of
    heads for `"transformer"` attention (diffusers' own conventions for those blocks).
    """

    options: BlockOptions
    num_layers: int
    out_channels: int
    add_downsample: bool
    downsample_padding: int = 1
    attn: AttnKind = None
    heads_or_dim: int = 0
    transformer_layers: int = 1

    @nn.compact
    def __call__(self, h: Array, temb: Array | None, context: Array | None = None):
        o = self.options
        skips = []
        for i in range(self.num_layers):
            h = _resnet_attention_layer(self, i, h, temb, context)
            skips.append(h)
        if self.add_downsample:
            h = Downsample2D(
                self.out_channels, self.downsample_padding, o.dtype, name="downsamplers_0"
            )(h)
            skips.append(h)
        return h, skips


class MidBlock(nn.Module):
    """resnet, then (attention, resnet) pairs: diffusers' `UNetMidBlock2D[CrossAttn]`."""

    options: BlockOptions
    attn: AttnKind = "spatial"
    heads_or_dim: int = 0
    attn_groups: int | None = None
    transformer_layers: int = 1
    output_scale_factor: float = 1.0

    @nn.compact
    def __call__(self, h: Array, temb: Array | None, context: Array | None = None) -> Array:
        o = self.options
        c = h.shape[-1]

        def resnet(i: int) -> ResnetBlock2D:
            return ResnetBlock2D(
                c,
                o.groups,
                o.eps,
                o.act,
                o.dtype,
                o.use_temb,
                self.output_scale_factor,
                name=f"resnets_{i}",
            )

        h = resnet(0)(h, temb)
        if self.attn == "spatial":
            groups = o.groups if self.attn_groups is None else self.attn_groups
            module = SpatialSelfAttention(
                self.heads_or_dim,
                groups,
                o.eps,
                o.dtype,
                self.output_scale_factor,
                name="attentions_0",
            )
            h = module(h)
        elif self.attn == "transformer":
            module = _attention(
                o, self.attn, self.heads_or_dim, self.transformer_layers, "attentions_0"
            )
            h = _call_attention(module, self.attn, h, context)
        return resnet(1)(h, temb)


class UpBlock(nn.Module):
    """`num_layers` resnets on `concat(h, skip)` (each optionally followed by attention),
    then an optional nearest-upsample + conv. `skips=None` is the VAE decoder (no skips)."""

    options: BlockOptions
    num_layers: int
    out_channels: int
    add_upsample: bool
    attn: AttnKind = None
    heads_or_dim: int = 0
    transformer_layers: int = 1

    @nn.compact
    def __call__(
        self,
        h: Array,
        skips: list[Array] | None,
        temb: Array | None,
        context: Array | None = None,
    ) -> Array:
        o = self.options
        for i in range(self.num_layers):
            if skips is not None:
                h = jnp.concatenate([h, skips.pop()], axis=-1)
            h = _resnet_attention_layer(self, i, h, temb, context)
        if self.add_upsample:
            h = Upsample2D(self.out_channels, o.dtype, name="upsamplers_0")(h)
        return h
