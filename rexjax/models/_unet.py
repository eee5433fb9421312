"""`UNet`: a loaded diffusers UNet as a pytree, called in diffusers' layout and conventions."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree

from ._bridge import (
    convert_state_dict,
    expected_params,
    read_json,
    read_state_dict,
    resolve_component,
)
from ._dtypes import check_dtype
from ._unet2d import UNet2DConfig, UNet2DModule
from ._unet2d_condition import UNet2DConditionConfig, UNet2DConditionModule


class UNet(eqx.Module):
    """A diffusers `UNet2DModel` or `UNet2DConditionModel` ported to Flax, with its
    parameters as a pytree field (so `jax.grad` and solvers' adjoints see them).

    Call it as diffusers' PyTorch model: `unet(sample, timestep, encoder_hidden_states)` with
    `sample` of shape `(b, c, h, w)` and `timestep` a scalar or `(b,)` array of discrete
    timesteps (integer-valued in `0..num_train_timesteps-1`; fractional values are allowed).
    A class-conditional `UNet2DModel` (`num_class_embeds` in its config) takes
    `unet(sample, timestep, class_labels=labels)` with integer `labels` of shape `(b,)` in
    `0..num_class_embeds-1` (checked inside `jit`).
    Returns the prediction (noise, data or velocity, per the scheduler's `prediction_type`) of
    shape `(b, out_channels, h, w)` in the parameters' dtype.
    """

    module: UNet2DModule | UNet2DConditionModule = eqx.field(static=True)
    params: PyTree[Array]

    @property
    def config(self) -> UNet2DConfig | UNet2DConditionConfig:
        return self.module.config

    @property
    def conditional(self) -> bool:
        """Whether the UNet takes `encoder_hidden_states` (cross-attention)."""
        return isinstance(self.module, UNet2DConditionModule)

    @property
    def num_class_embeds(self) -> int | None:
        """The number of class labels of a class-conditional `UNet2DModel`, else `None`."""
        if self.conditional:
            return None
        return self.module.config.num_class_embeds

    def __call__(
        self,
        sample: Float[ArrayLike, "b c h w"],
        timestep: Float[ArrayLike, "*b"],
        encoder_hidden_states: Float[ArrayLike, "b l d"] | None = None,
        class_labels: Int[ArrayLike, " b"] | None = None,
    ) -> Float[Array, "b c2 h w"]:
        sample = jnp.asarray(sample)
        b, c, h, w = sample.shape
        factor = 2 ** (len(self.config.block_out_channels) - 1)
        if h % factor or w % factor:
            raise ValueError(
                f"Spatial size {h}x{w} must be divisible by {factor} (this UNet downsamples "
                f"{len(self.config.block_out_channels) - 1} times); pad or resize the input."
            )
        t = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32), (b,))
        x = jnp.transpose(sample, (0, 2, 3, 1))
        if self.conditional:
            if encoder_hidden_states is None:
                raise ValueError("This UNet has cross-attention: pass `encoder_hidden_states`.")
            out = self.module.apply(
                {"params": self.params}, x, t, jnp.asarray(encoder_hidden_states)
            )
        else:
            if encoder_hidden_states is not None:
                raise ValueError("This UNet (UNet2DModel) takes no `encoder_hidden_states`.")
            out = self.module.apply({"params": self.params}, x, t, self._labels(class_labels, b))
        return jnp.transpose(out, (0, 3, 1, 2))

    def _labels(self, class_labels: Int[ArrayLike, " b"] | None, b: int) -> Array | None:
        n = self.num_class_embeds
        if n is None:
            if class_labels is not None:
                raise ValueError("This UNet has no class embedding (num_class_embeds is unset).")
            return None
        if class_labels is None:
            raise ValueError(f"This UNet is class-conditional: pass `class_labels` in 0..{n - 1}.")
        labels = jnp.asarray(class_labels)
        if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.shape != (b,):
            raise ValueError(
                f"class_labels must be integers of shape ({b},), got {labels.dtype} {labels.shape}."
            )
        return eqx.error_if(
            labels, (labels < 0) | (labels >= n), f"class_labels must lie in 0..{n - 1}."
        )


def build_unet_module(config: Mapping[str, Any], dtype: Any = jnp.float32):
    """The Flax module for a diffusers UNet `config.json` dict (by its `_class_name`)."""
    dtype = check_dtype(dtype)
    name = config.get("_class_name", "UNet2DModel")
    if name == "UNet2DModel":
        return UNet2DModule(UNet2DConfig.from_dict(config), dtype)
    if name == "UNet2DConditionModel":
        return UNet2DConditionModule(UNet2DConditionConfig.from_dict(config), dtype)
    raise ValueError(
        f"_class_name={name!r} is not supported; rexjax ports UNet2DModel and UNet2DConditionModel."
    )


def _dummy_inputs(module: UNet2DModule | UNet2DConditionModule) -> tuple[Array, ...]:
    """The smallest inputs the module accepts (batch 1, the minimal spatial size)."""
    cfg = module.config
    size = 2 ** (len(cfg.block_out_channels) - 1)
    x = jnp.zeros((1, size, size, cfg.in_channels), jnp.float32)
    t = jnp.zeros((1,), jnp.float32)
    if isinstance(module, UNet2DConditionModule):
        return x, t, jnp.zeros((1, 1, cfg.cross_attention_dim), jnp.float32)
    if cfg.num_class_embeds is not None:
        return x, t, jnp.zeros((1,), jnp.int32)
    return x, t


def unet_param_shapes(module: UNet2DModule | UNet2DConditionModule) -> PyTree:
    """The parameter shapes of `module`, computed abstractly (no memory, no FLOPs)."""
    return expected_params(module, *_dummy_inputs(module))


def random_unet(config: Mapping[str, Any], key: PRNGKeyArray, dtype: Any = jnp.float32) -> UNet:
    """A UNet with random weights for a diffusers UNet `config.json` dict, without a
    checkpoint (for benchmarks and studies of the solvers on a real architecture).

    The weights come from Flax's default initialisers (LeCun-normal kernels, zero biases),
    not PyTorch's, so they differ from a randomly initialised diffusers model; the same key
    gives the same network in every dtype (it is initialised in float32 and cast).

    **Arguments:**

    - `config`: as in `config.json` (`_class_name` `"UNet2DModel"` or `"UNet2DConditionModel"`),
        e.g. [`rexjax.models.SD15_UNET_CONFIG`][].
    - `key`: a JAX PRNG key.
    - `dtype`: as for [`rexjax.models.load_unet`][].
    """
    module = build_unet_module(config, dtype)
    params = build_unet_module(config).init(key, *_dummy_inputs(module))["params"]
    params = jax.tree_util.tree_map(lambda p: p.astype(module.dtype), params)
    return UNet(module, params)


def load_unet(folder: str | Path, dtype: Any = jnp.float32, variant: str | None = None) -> UNet:
    """Load a diffusers UNet checkpoint folder (or the `unet/` of a pipeline folder).

    **Arguments:**

    - `folder`: a folder written by diffusers' `save_pretrained` (`config.json` plus
        `diffusion_pytorch_model.safetensors`), or a pipeline folder with a `unet/` subfolder.
    - `dtype`: parameter and compute dtype: float32, bfloat16, float16, or float64 (needs
        `jax_enable_x64`; for round-off studies).
    - `variant`: a weight-file variant such as `"fp16"` (`diffusion_pytorch_model.fp16.*`).

    **Returns:**

    A [`rexjax.models.UNet`][].

    **Raises:**

    `FileNotFoundError` for a missing folder or files, `ValueError` for unsupported config
    values, [`rexjax.models.CheckpointMismatchError`][] naming every missing, unexpected or
    mis-shaped tensor.
    """
    path = resolve_component(folder, "unet")
    module = build_unet_module(read_json(path / "config.json"), dtype)
    params = convert_state_dict(
        read_state_dict(path, variant),
        unet_param_shapes(module),
        module.dtype,
        legacy_attention=isinstance(module, UNet2DModule),
        what=f"UNet checkpoint in {str(path)!r}",
    )
    return UNet(module, params)
