"""Flax ports of diffusers/transformers models and the PyTorch-weight bridge.

Nothing here imports torch: checkpoints are read with safetensors' numpy API (torch is needed
only for legacy `.bin` files).
"""

from ._adapter import DiscreteTimeModel as DiscreteTimeModel, diffusion_term as diffusion_term
from ._bridge import CheckpointMismatchError as CheckpointMismatchError
from ._clip import (
    CLIPTextConfig as CLIPTextConfig,
    CLIPTextModule as CLIPTextModule,
    TextEncoder as TextEncoder,
    load_text_encoder as load_text_encoder,
)
from ._pipeline import Pipeline as Pipeline, load_pipeline as load_pipeline
from ._presets import (
    DDPM_CIFAR10_UNET_CONFIG as DDPM_CIFAR10_UNET_CONFIG,
    DDPM_SCHEDULER_CONFIG as DDPM_SCHEDULER_CONFIG,
    SD15_SCHEDULER_CONFIG as SD15_SCHEDULER_CONFIG,
    SD15_UNET_CONFIG as SD15_UNET_CONFIG,
)
from ._scheduler import (
    alphas_cumprod as alphas_cumprod,
    load_scheduler_config as load_scheduler_config,
    model_type as model_type,
)
from ._tokenizer import CLIPTokenizer as CLIPTokenizer, load_tokenizer as load_tokenizer
from ._unet import (
    UNet as UNet,
    build_unet_module as build_unet_module,
    load_unet as load_unet,
    random_unet as random_unet,
)
from ._unet2d import UNet2DConfig as UNet2DConfig, UNet2DModule as UNet2DModule
from ._unet2d_condition import (
    UNet2DConditionConfig as UNet2DConditionConfig,
    UNet2DConditionModule as UNet2DConditionModule,
)
from ._vae import (
    VAE as VAE,
    AutoencoderKLConfig as AutoencoderKLConfig,
    AutoencoderKLModule as AutoencoderKLModule,
    load_vae as load_vae,
)
from ._writer import save_unet as save_unet
