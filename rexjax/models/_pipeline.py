"""Load every part of a Stable Diffusion 1.x pipeline folder."""

from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp

from ._clip import TextEncoder, load_text_encoder
from ._scheduler import load_scheduler_config
from ._tokenizer import CLIPTokenizer, load_tokenizer
from ._unet import UNet, load_unet
from ._vae import VAE, load_vae


class Pipeline(NamedTuple):
    """The parts of a latent-diffusion pipeline folder."""

    unet: UNet
    vae: VAE
    text_encoder: TextEncoder
    tokenizer: CLIPTokenizer
    scheduler_config: dict[str, Any]


def load_pipeline(folder: str | Path, dtype: Any = jnp.float32) -> Pipeline:
    """Load a diffusers Stable Diffusion pipeline folder: `unet/`, `vae/`, `text_encoder/`,
    `tokenizer/` and `scheduler/` (the layout of `StableDiffusionPipeline.save_pretrained`).

    **Arguments:**

    - `folder`: the pipeline folder.
    - `dtype`: dtype of the three networks (float32, bfloat16, float16 or float64).

    **Returns:**

    A [`rexjax.models.Pipeline`][].
    """
    folder = Path(folder)
    missing = [
        sub
        for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
        if not (folder / sub).is_dir()
    ]
    if missing:
        raise FileNotFoundError(
            f"{str(folder)!r} is not a pipeline folder: missing subfolders {missing}."
        )
    return Pipeline(
        unet=load_unet(folder / "unet", dtype),
        vae=load_vae(folder / "vae", dtype),
        text_encoder=load_text_encoder(folder / "text_encoder", dtype),
        tokenizer=load_tokenizer(folder / "tokenizer"),
        scheduler_config=load_scheduler_config(folder / "scheduler"),
    )
