"""Turn a loaded diffusers UNet into a rexjax diffusion model (a `DiffusionTerm`)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

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
    - class-conditional `UNet2DModel` (`num_class_embeds` set): integer class labels, `(b,)`,
        with or without guidance (the unconditional branch uses `null_label`);
    - cross-attention UNet without guidance: `encoder_hidden_states`, `(b, l, d)`;
    - cross-attention UNet with guidance: a pair `(cond, uncond)` of such arrays (e.g. the text
        encoder's output for the prompt and for `""`).

    Both guidance branches run as one batch of `2b`.

    **Arguments:**

    - `unet`: a [`rexjax.models.UNet`][].
    - `num_train_timesteps`: $N$.
    - `guidance_scale`: `None` for no guidance.
    - `null_label`: the label a class-conditional UNet was trained with for "no class"
        (needed for guidance on such a UNet; diffusers has no convention for it).
    """

    unet: UNet
    num_train_timesteps: int = eqx.field(static=True)
    guidance_scale: float | None = eqx.field(static=True, default=None)
    null_label: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        n = self.unet.num_class_embeds
        if self.guidance_scale is not None and not self.unet.conditional and n is None:
            raise ValueError(
                "guidance_scale needs a conditional UNet (UNet2DConditionModel, or a "
                "UNet2DModel with num_class_embeds)."
            )
        if self.null_label is not None and (n is None or not 0 <= self.null_label < n):
            raise ValueError(
                f"null_label={self.null_label} needs a class-conditional UNet2DModel with the "
                f"label in 0..num_class_embeds-1 (num_class_embeds={n})."
            )
        if self.guidance_scale is not None and n is not None and self.null_label is None:
            raise ValueError(
                "Guidance on a class-conditional UNet2DModel needs `null_label` (the label it "
                "was trained with for the unconditional model)."
            )

    def __call__(self, t: Float[ArrayLike, ""], x: Float[Array, "b c h w"], args: Any) -> Array:
        timestep = jnp.asarray(t, jnp.float32) * self.num_train_timesteps - 1
        if self.unet.num_class_embeds is not None:
            return self._class_conditional(timestep, x, args)
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
        return self._guide(out, b).astype(x.dtype)

    def _guide(self, out: Array, b: int) -> Array:
        out_u, out_c = out[:b], out[b:]
        w = jnp.asarray(self.guidance_scale, out.dtype)
        return out_u + w * (out_c - out_u)

    def _class_conditional(self, timestep: Array, x: Array, labels: Int[ArrayLike, " b"]) -> Array:
        if self.guidance_scale is None:
            return self.unet(x, timestep, class_labels=labels).astype(x.dtype)
        labels = jnp.asarray(labels)
        null = jnp.full(labels.shape, self.null_label, labels.dtype)
        out = self.unet(
            jnp.concatenate([x, x]), timestep, class_labels=jnp.concatenate([null, labels])
        )
        return self._guide(out, x.shape[0]).astype(x.dtype)


def diffusion_term(
    unet: UNet,
    scheduler: str | Path | Mapping[str, Any],
    guidance_scale: float | None = None,
    null_label: int | None = None,
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
    - `null_label`: for a class-conditional `UNet2DModel` with guidance, its "no class" label.

    **Returns:**

    `rexjax.DiffusionTerm(DiscreteTimeModel(...), schedule, model_type)`; its domain is
    `t in [1/N, 1]`.
    """
    config = load_scheduler_config(scheduler)
    ac = alphas_cumprod(config)
    model = DiscreteTimeModel(unet, ac.shape[0], guidance_scale, null_label)
    return DiffusionTerm(model, VPSchedule.discrete(ac), model_type(config))
