"""Write a `UNet2DModel` in diffusers' `save_pretrained` layout, readable by diffusers' own
`UNet2DModel.from_pretrained` and by [`rexjax.models.load_unet`][]."""

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

from ._bridge import _torch_name
from ._unet import UNet
from ._unet2d import UNet2DModule


def _to_torch(path: tuple[str, ...], value: np.ndarray) -> tuple[str, np.ndarray]:
    """A Flax parameter -> its PyTorch name and layout (inverse of the bridge's mapping)."""
    if path[-1] == "kernel":
        value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T  # HWIO -> OIHW
    return _torch_name(path), np.ascontiguousarray(value)


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def save_unet(
    unet: UNet,
    folder: str | Path,
    scheduler_config: Mapping[str, Any] | None = None,
    sample_size: int | None = None,
) -> Path:
    """Save a `UNet2DModel` as diffusers' `save_pretrained` does.

    Writes `folder/config.json` and `folder/diffusion_pytorch_model.safetensors` (PyTorch
    tensor names; convolution kernels `HWIO -> OIHW`, dense kernels transposed, norm scales
    and embedding tables as `weight`), and with `scheduler_config`,
    `folder/scheduler/scheduler_config.json`. The tensors keep the parameters' dtype
    (bfloat16, which numpy cannot store, is written as float32, losslessly).

    **Arguments:**

    - `unet`: a [`rexjax.models.UNet`][] holding a `UNet2DModel` (class-conditional or not).
    - `folder`: the output folder (created; existing files are overwritten).
    - `scheduler_config`: a diffusers scheduler config dict (it must name its `_class_name`,
        e.g. `"DDPMScheduler"`), or `None` to write none.
    - `sample_size`: the training resolution, recorded as diffusers' `sample_size`.

    **Returns:**

    `folder` as a `Path`.
    """
    from safetensors.numpy import save_file

    if not isinstance(unet.module, UNet2DModule):
        raise ValueError(
            "save_unet writes UNet2DModel checkpoints only; this UNet is a "
            f"{type(unet.module).__name__}."
        )
    if scheduler_config is not None and "_class_name" not in scheduler_config:
        raise ValueError(
            "scheduler_config needs a '_class_name' (e.g. 'DDPMScheduler') for diffusers to "
            "load it."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.asdict(unet.module.config)
    config = {
        "_class_name": "UNet2DModel",
        **{k: _json_value(v) for k, v in cfg.items()},
        "time_embedding_type": "positional",
        "mid_block_type": "UNetMidBlock2D",
        "downsample_type": "conv",
        "upsample_type": "conv",
        "resnet_time_scale_shift": "default",
        "class_embed_type": None,
    }
    if sample_size is not None:
        config["sample_size"] = sample_size
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tensors = {}
    for path, value in flatten_dict(unet.params).items():
        if value.dtype == jnp.bfloat16:
            value = value.astype(jnp.float32)
        name, array = _to_torch(path, np.asarray(value))
        tensors[name] = array
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"))
    if scheduler_config is not None:
        (folder / "scheduler").mkdir(exist_ok=True)
        text = json.dumps(dict(scheduler_config), indent=2, sort_keys=True) + "\n"
        (folder / "scheduler" / "scheduler_config.json").write_text(text)
    return folder
