"""Turn a loaded diffusers UNet into a rexjax diffusion model (a `DiffusionTerm`)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._schedules import VPSchedule
from .._term import DiffusionTerm
from ._scheduler import alphas_cumprod, load_scheduler_config, model_type
from ._unet import UNet


class DiscreteTimeModel(eqx.Module):
    r"""A diffusers UNet as a rexjax model `model(t, x, args)` on continuous time.

    Continuous $t \in [1/N, 1]$ maps to diffusers' discrete timestep $tN - 1$ (DPM-Solver's
    convention, matching `rexjax.VPSchedule.discrete`). With `guidance_scale = w`, the output
    is classifier-free guided (Ho & Salimans 2022): $\hat\epsilon_u + w(\hat\epsilon_c -
    \hat\epsilon_u)$, applied to whatever the UNet predicts, as diffusers does.

    `args` carries the conditioning:

    - unconditional UNet (`UNet2DModel`): `None`;
    - conditional UNet without guidance: `encoder_hidden_states`, `(b, l, d)`;
    - with guidance: a pair `(cond, uncond)` of such arrays (e.g. the text encoder's output
        for the prompt and for `""`).

    **Arguments:**

    - `unet`: a [`rexjax.models.UNet`][].
    - `num_train_timesteps`: $N$.
    - `guidance_scale`: `None` for no guidance.
    """

    unet: UNet
    num_train_timesteps: int = eqx.field(static=True)
    guidance_scale: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.guidance_scale is not None and not self.unet.conditional:
            raise ValueError("guidance_scale needs a conditional UNet (UNet2DConditionModel).")

    def __call__(self, t: Float[ArrayLike, ""], x: Float[Array, "b c h w"], args: Any) -> Array:
        timestep = jnp.asarray(t, jnp.float32) * self.num_train_timesteps - 1
        if self.guidance_scale is None:
            return self.unet(x, timestep, args).astype(x.dtype)
        if not (isinstance(args, tuple) and len(args) == 2):
            raise ValueError("With guidance_scale set, args must be a pair (cond, uncond).")
        cond, uncond = args
        b = x.shape[0]
        out = self.unet(
            jnp.concatenate([x, x]),
            timestep,
            jnp.concatenate([jnp.asarray(uncond), jnp.asarray(cond)]),
        )
        out_u, out_c = out[:b], out[b:]
        w = jnp.asarray(self.guidance_scale, out.dtype)
        return (out_u + w * (out_c - out_u)).astype(x.dtype)


def diffusion_term(
    unet: UNet,
    scheduler: str | Path | Mapping[str, Any],
    guidance_scale: float | None = None,
) -> DiffusionTerm:
    """A `rexjax.DiffusionTerm` for a loaded UNet and its training schedule.

    **Arguments:**

    - `unet`: a [`rexjax.models.UNet`][].
    - `scheduler`: a diffusers scheduler config: a dict, a `scheduler_config.json`, its
        folder, or a pipeline folder with `scheduler/`. Its betas give the discrete schedule
        (`rexjax.VPSchedule.discrete(alphas_cumprod)`) and its `prediction_type` the
        `model_type`.
    - `guidance_scale`: classifier-free guidance weight, or `None` (see
        [`rexjax.models.DiscreteTimeModel`][] for what `args` must then be).

    **Returns:**

    `rexjax.DiffusionTerm(DiscreteTimeModel(...), schedule, model_type)`; its domain is
    `t in [1/N, 1]`.
    """
    config = load_scheduler_config(scheduler)
    ac = alphas_cumprod(config)
    model = DiscreteTimeModel(unet, ac.shape[0], guidance_scale)
    return DiffusionTerm(model, VPSchedule.discrete(ac), model_type(config))
