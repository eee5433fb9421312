"""Flax Linen building blocks shared by the UNets and the VAE.

Every module names its parameters the way diffusers' PyTorch modules name their tensors (with
`.N.` list indices written `_N`), so that the weight bridge is a mechanical rename plus the
layout changes conv `OIHW -> HWIO`, linear `(out, in) -> (in, out)`, norm `weight -> scale`.
Activations are channels-last (`NHWC`) inside the networks.
"""

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


Dtype = Any


def _mish(x: Array) -> Array:
    return x * jnp.tanh(jax.nn.softplus(x))


def _gelu(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": _gelu,
    "mish": _mish,
}


def activation(name: str) -> Callable[[Array], Array]:
    """The activation function called `name` in a diffusers config (`act_fn`)."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"act_fn={name!r} is not supported; supported values: {sorted(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]


def conv(
    features: int, kernel: int, name: str, dtype: Dtype, stride: int = 1, padding=None
) -> nn.Conv:
    """A 2-D convolution with PyTorch's default symmetric padding `(kernel - 1) // 2`."""
    if padding is None:
        p = (kernel - 1) // 2
        padding = ((p, p), (p, p))
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=padding,
        dtype=dtype,
        param_dtype=dtype,
        name=name,
    )


def dense(features: int, name: str, dtype: Dtype, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=dtype, name=name)


def group_norm(groups: int, eps: float, name: str, dtype: Dtype) -> nn.GroupNorm:
    # The two-pass variance matches torch's GroupNorm to float32 round-off.
    return nn.GroupNorm(
        num_groups=groups,
        epsilon=eps,
        dtype=dtype,
        param_dtype=dtype,
        use_fast_variance=False,
        name=name,
    )


def layer_norm(eps: float, name: str, dtype: Dtype) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=eps, dtype=dtype, param_dtype=dtype, use_fast_variance=False, name=name
    )


def attention(
    q: Float[Array, "b tq d"],
    k: Float[Array, "b tk d"],
    v: Float[Array, "b tk d"],
    heads: int,
    is_causal: bool = False,
) -> Float[Array, "b tq d"]:
    """Multi-head scaled dot-product attention through `jax.nn.dot_product_attention`.

    The backend picks a fused kernel where it has one (cuDNN on GPU); the scale is
    `head_dim ** -0.5` and the logits and softmax are float32 for float32 and lower-precision
    inputs; float64 inputs are computed entirely in float64.
    """
    b, tq, d = q.shape
    tk = k.shape[1]
    if d % heads != 0:
        raise ValueError(f"Attention width {d} is not divisible by the number of heads {heads}.")
    hd = d // heads
    dtype = q.dtype
    if dtype == jnp.float16 and jax.default_backend() == "cpu":
        # XLA:CPU has no float16 dot with float32 accumulation (which the attention uses),
        # so on CPU float16 attention runs in float32.
        q, k, v = (a.astype(jnp.float32) for a in (q, k, v))
    q, k, v = q.reshape(b, tq, heads, hd), k.reshape(b, tk, heads, hd), v.reshape(b, tk, heads, hd)
    scale = 1.0 / math.sqrt(hd)
    if dtype == jnp.float64:
        # jax.nn.dot_product_attention accumulates the logits in float32 whatever the input
        # (about 1e-7 relative error in float64), so float64 (round-off studies) is written out.
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
        if is_causal:
            logits = jnp.where(jnp.tril(jnp.ones((tq, tk), bool)), logits, -jnp.inf)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
    else:
        out = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=is_causal)
    return out.reshape(b, tq, d).astype(dtype)


def timestep_embedding(
    timesteps: Float[Array, " b"], dim: int, flip_sin_to_cos: bool, freq_shift: float
) -> Float[Array, "b dim"]:
    """Sinusoidal timestep features of DDPM (Ho et al. 2020), as diffusers' `Timesteps`.

    Computed in float32 exactly as diffusers does: `exp(-log(10000) k / (dim/2 - shift))`.
    """
    half = dim // 2
    exponent = jnp.float32(-math.log(10000.0)) * jnp.arange(half, dtype=jnp.float32)
    freqs = jnp.exp(exponent / jnp.float32(half - freq_shift))
    args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if flip_sin_to_cos:
        emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
    if dim % 2 == 1:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nn.Module):
    """`linear_1 -> act -> linear_2`, diffusers' `TimestepEmbedding`."""

    features: int
    act: str
    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = dense(self.features, "linear_1", self.dtype)(x.astype(self.dtype))
        x = activation(self.act)(x)
        return dense(self.features, "linear_2", self.dtype)(x)


class ResnetBlock2D(nn.Module):
    """Pre-activation residual block with an additive time embedding (Ho et al. 2020).

    `temb=None` (and `use_temb=False`) is the VAE's variant without `time_emb_proj`.
    """

    out_channels: int
    groups: int
    eps: float
    act: str
    dtype: Dtype
    use_temb: bool = True
    output_scale_factor: float = 1.0

    @nn.compact
    def __call__(self, x: Array, temb: Array | None) -> Array:
        act = activation(self.act)
        h = act(group_norm(self.groups, self.eps, "norm1", self.dtype)(x))
        h = conv(self.out_channels, 3, "conv1", self.dtype)(h)
        if self.use_temb:
            if temb is None:
                raise ValueError("This ResnetBlock2D needs a time embedding `temb`.")
            t = dense(self.out_channels, "time_emb_proj", self.dtype)(act(temb))
            h = h + t[:, None, None, :]
        h = act(group_norm(self.groups, self.eps, "norm2", self.dtype)(h))
        h = conv(self.out_channels, 3, "conv2", self.dtype)(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, "conv_shortcut", self.dtype)(x)
        out = x + h
        if self.output_scale_factor != 1.0:
            out = out / jnp.asarray(self.output_scale_factor, self.dtype)
        return out


class Downsample2D(nn.Module):
    """Strided 3x3 convolution; `padding=0` pads right/bottom by one as diffusers does."""

    out_channels: int
    padding: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array) -> Array:
        pad = ((0, 1), (0, 1)) if self.padding == 0 else ((self.padding,) * 2,) * 2
        return conv(self.out_channels, 3, "conv", self.dtype, stride=2, padding=pad)(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour upsampling by 2 followed by a 3x3 convolution."""

    out_channels: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return conv(self.out_channels, 3, "conv", self.dtype)(x)


class SpatialSelfAttention(nn.Module):
    """Self-attention over pixels with a group norm and a residual (DDPM and VAE blocks).

    diffusers' `Attention(..., residual_connection=True, _from_deprecated_attn_block=True)`.
    """

    head_dim: int
    groups: int
    eps: float
    dtype: Dtype
    rescale_output_factor: float = 1.0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        if c % self.head_dim != 0:
            raise ValueError(f"attention_head_dim {self.head_dim} does not divide {c} channels.")
        h = group_norm(self.groups, self.eps, "group_norm", self.dtype)(x).reshape(b, hh * ww, c)
        q = dense(c, "to_q", self.dtype)(h)
        k = dense(c, "to_k", self.dtype)(h)
        v = dense(c, "to_v", self.dtype)(h)
        h = attention(q, k, v, c // self.head_dim)
        h = dense(c, "to_out_0", self.dtype)(h).reshape(b, hh, ww, c)
        out = h + x
        if self.rescale_output_factor != 1.0:
            out = out / jnp.asarray(self.rescale_output_factor, self.dtype)
        return out


class CrossAttention(nn.Module):
    """Multi-head attention of the transformer blocks (`to_q/k/v` without bias, `to_out_0`)."""

    heads: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array, context: Array | None) -> Array:
        d = x.shape[-1]
        context = x if context is None else context
        q = dense(d, "to_q", self.dtype, use_bias=False)(x)
        k = dense(d, "to_k", self.dtype, use_bias=False)(context)
        v = dense(d, "to_v", self.dtype, use_bias=False)(context)
        return dense(d, "to_out_0", self.dtype)(attention(q, k, v, self.heads))


class GEGLU(nn.Module):
    """`proj` to twice the width, then `hidden * gelu(gate)` (Shazeer 2020)."""

    features: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array) -> Array:
        hidden, gate = jnp.split(dense(2 * self.features, "proj", self.dtype)(x), 2, axis=-1)
        return hidden * _gelu(gate)


class GEGLUFeedForward(nn.Module):
    """diffusers' `FeedForward(activation_fn="geglu")`: `net_0` GEGLU to 4x width, `net_2` back."""

    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = x.shape[-1]
        h = GEGLU(4 * d, self.dtype, name="net_0")(x)
        return dense(d, "net_2", self.dtype)(h)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention and GEGLU feed-forward, each pre-LayerNorm + residual."""

    heads: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array, context: Array) -> Array:
        x = x + CrossAttention(self.heads, self.dtype, name="attn1")(
            layer_norm(1e-5, "norm1", self.dtype)(x), None
        )
        x = x + CrossAttention(self.heads, self.dtype, name="attn2")(
            layer_norm(1e-5, "norm2", self.dtype)(x), context
        )
        return x + GEGLUFeedForward(self.dtype, name="ff")(layer_norm(1e-5, "norm3", self.dtype)(x))


class Transformer2D(nn.Module):
    """diffusers' `Transformer2DModel` on continuous inputs (LDM, Rombach et al. 2022).

    `use_linear_projection` selects dense `proj_in`/`proj_out` on tokens instead of 1x1
    convolutions on the feature map.
    """

    heads: int
    groups: int
    num_layers: int
    use_linear_projection: bool
    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array, context: Array) -> Array:
        b, hh, ww, c = x.shape
        h = group_norm(self.groups, 1e-6, "norm", self.dtype)(x)
        if self.use_linear_projection:
            h = dense(c, "proj_in", self.dtype)(h.reshape(b, hh * ww, c))
        else:
            h = conv(c, 1, "proj_in", self.dtype)(h).reshape(b, hh * ww, c)
        for i in range(self.num_layers):
            h = BasicTransformerBlock(self.heads, self.dtype, name=f"transformer_blocks_{i}")(
                h, context
            )
        if self.use_linear_projection:
            h = dense(c, "proj_out", self.dtype)(h).reshape(b, hh, ww, c)
        else:
            h = conv(c, 1, "proj_out", self.dtype)(h.reshape(b, hh, ww, c))
        return h + x
