"""The configs of two public diffusers checkpoints, for their exact architectures and schedules
without downloading anything: `random_unet(SD15_UNET_CONFIG, key)` is Stable Diffusion 1.5's
UNet (859,520,964 parameters) with random weights, `diffusion_term(unet,
SD15_SCHEDULER_CONFIG)` its training schedule.

Read-only mappings; build variants with `{**SD15_UNET_CONFIG, "block_out_channels": ...}`.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


# `unet/config.json` of Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5).
SD15_UNET_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": (320, 640, 1280, 1280),
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    }
)

# Its `scheduler/scheduler_config.json` (the schedule-defining keys).
SD15_SCHEDULER_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
    }
)

# `config.json` of DDPM on CIFAR-10 (google/ddpm-cifar10-32), 35,746,307 parameters.
DDPM_CIFAR10_UNET_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "_class_name": "UNet2DModel",
        "act_fn": "silu",
        "attention_head_dim": None,
        "block_out_channels": (128, 256, 256, 256),
        "center_input_sample": False,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "downsample_padding": 0,
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "in_channels": 3,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-06,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 32,
        "time_embedding_type": "positional",
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    }
)

# Its `scheduler_config.json` (Ho et al.'s linear betas).
DDPM_SCHEDULER_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
    }
)
