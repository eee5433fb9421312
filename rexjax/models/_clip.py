"""Flax port of the CLIP text encoder (transformers' `CLIPTextModel`), as used by Stable
Diffusion 1.x (Radford et al. 2021).

??? cite "Reference"

    ```bibtex
    @inproceedings{radford2021learning,
        title={Learning Transferable Visual Models From Natural Language Supervision},
        author={Radford, Alec and Kim, Jong Wook and Hallacy, Chris and others},
        booktitle={ICML},
        year={2021}
    }
    ```
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PyTree

from ._bridge import (
    convert_state_dict,
    expected_params,
    read_json,
    read_state_dict,
    resolve_component,
)
from ._config import read_config
from ._dtypes import check_dtype
from ._layers import Dtype, attention, dense, layer_norm


def _quick_gelu(x: Array) -> Array:
    return x * jax.nn.sigmoid(jnp.asarray(1.702, x.dtype) * x)


def _gelu(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=False)


_ACTS = {"quick_gelu": _quick_gelu, "gelu": _gelu}


def _positive(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


_SPEC = {
    "vocab_size": (49408, _positive),
    "hidden_size": (512, _positive),
    "intermediate_size": (2048, _positive),
    "num_hidden_layers": (12, _positive),
    "num_attention_heads": (8, _positive),
    "max_position_embeddings": (77, _positive),
    "hidden_act": ("quick_gelu", tuple(_ACTS)),
    "layer_norm_eps": (1e-5, None),
    "model_type": ("clip_text_model", ("clip_text_model",)),
}
# Training, bookkeeping and token-id options that do not change `last_hidden_state`.
_IGNORED = frozenset(
    {
        "attention_dropout",
        "dropout",
        "initializer_range",
        "initializer_factor",
        "dtype",
        "torch_dtype",
        "transformers_version",
        "projection_dim",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "use_cache",
    }
)


@dataclass(frozen=True)
class CLIPTextConfig:
    """The subset of a transformers `CLIPTextConfig` that the port implements."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int
    hidden_act: str
    layer_norm_eps: float

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "CLIPTextConfig":
        """Validate a `config.json` dict; unsupported values raise a `ValueError` naming them."""
        c = read_config(config, "CLIPTextModel", _SPEC, _IGNORED)
        del c["model_type"]
        return cls(**c)


class _SelfAttention(nn.Module):
    config: CLIPTextConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = self.config.hidden_size
        q = dense(d, "q_proj", self.dtype)(x)
        k = dense(d, "k_proj", self.dtype)(x)
        v = dense(d, "v_proj", self.dtype)(x)
        h = attention(q, k, v, self.config.num_attention_heads, is_causal=True)
        return dense(d, "out_proj", self.dtype)(h)


class _MLP(nn.Module):
    config: CLIPTextConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        h = _ACTS[cfg.hidden_act](dense(cfg.intermediate_size, "fc1", self.dtype)(x))
        return dense(cfg.hidden_size, "fc2", self.dtype)(h)


class _EncoderLayer(nn.Module):
    config: CLIPTextConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array) -> Array:
        eps = self.config.layer_norm_eps
        h = layer_norm(eps, "layer_norm1", self.dtype)(x)
        x = x + _SelfAttention(self.config, self.dtype, name="self_attn")(h)
        h = layer_norm(eps, "layer_norm2", self.dtype)(x)
        return x + _MLP(self.config, self.dtype, name="mlp")(h)


class _Embeddings(nn.Module):
    config: CLIPTextConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, input_ids: Array) -> Array:
        cfg = self.config
        length = input_ids.shape[1]
        if length > cfg.max_position_embeddings:
            raise ValueError(
                f"{length} tokens exceed max_position_embeddings={cfg.max_position_embeddings};"
                " truncate the prompt (the tokenizer does so by default)."
            )

        def embed(n: int, name: str) -> nn.Embed:
            return nn.Embed(n, cfg.hidden_size, dtype=self.dtype, param_dtype=self.dtype, name=name)

        tokens = embed(cfg.vocab_size, "token_embedding")(input_ids)
        positions = embed(cfg.max_position_embeddings, "position_embedding")(
            jnp.arange(length)[None, :]
        )
        return tokens + positions


class _Encoder(nn.Module):
    config: CLIPTextConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for i in range(self.config.num_hidden_layers):
            x = _EncoderLayer(self.config, self.dtype, name=f"layers_{i}")(x)
        return x


class CLIPTextModule(nn.Module):
    """Token ids -> `last_hidden_state` (after the final layer norm), with causal attention.

    Parameter names are those of transformers' `CLIPTextModel` without the `text_model.`
    prefix (which older checkpoints have and transformers 5 drops).
    """

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: Int[Array, "b l"]) -> Float[Array, "b l d"]:
        cfg = self.config
        h = _Embeddings(cfg, self.dtype, name="embeddings")(input_ids)
        h = _Encoder(cfg, self.dtype, name="encoder")(h)
        return layer_norm(cfg.layer_norm_eps, "final_layer_norm", self.dtype)(h)


class TextEncoder(eqx.Module):
    """A loaded CLIP text encoder with its parameters as a pytree field.

    `encoder(input_ids)` returns `last_hidden_state`, `(b, l, hidden_size)`: the conditioning
    `encoder_hidden_states` of Stable Diffusion 1.x.
    """

    module: CLIPTextModule = eqx.field(static=True)
    params: PyTree[Array]

    @property
    def config(self) -> CLIPTextConfig:
        return self.module.config

    def __call__(self, input_ids: Int[ArrayLike, "b l"]) -> Float[Array, "b l d"]:
        ids = jnp.asarray(input_ids, jnp.int32)
        return self.module.apply({"params": self.params}, ids)


_BUFFERS = ("embeddings.position_ids",)


def load_text_encoder(
    folder: str | Path, dtype: Any = jnp.float32, variant: str | None = None
) -> TextEncoder:
    """Load a transformers `CLIPTextModel` folder (or the `text_encoder/` of a pipeline).

    Both tensor namings are accepted: `text_model.*` (transformers 4, the SD 1.5 files) and
    the unprefixed names of transformers 5. The `position_ids` buffer, if saved, is skipped.

    **Arguments:**

    - `folder`: a folder written by `save_pretrained` (`config.json` + `model.safetensors`).
    - `dtype`: parameter and compute dtype: float32, bfloat16, float16, or float64 (needs
        `jax_enable_x64`; for round-off studies).
    - `variant`: a weight-file variant such as `"fp16"`.

    **Returns:**

    A [`rexjax.models.TextEncoder`][].

    **Raises:**

    As [`rexjax.models.load_unet`][].
    """
    path = resolve_component(folder, "text_encoder")
    config = read_json(path / "config.json")
    module = CLIPTextModule(CLIPTextConfig.from_dict(config), check_dtype(dtype))
    state = read_state_dict(path, variant)
    prefix = "text_model."
    if any(k.startswith(prefix) for k in state):
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    shapes = expected_params(module, jnp.zeros((1, 1), jnp.int32))
    params = convert_state_dict(
        state,
        shapes,
        module.dtype,
        ignore=_BUFFERS,
        what=f"CLIP text-encoder checkpoint in {str(path)!r}",
    )
    return TextEncoder(module, params)
