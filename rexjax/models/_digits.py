r"""The handwritten-digits data of the built-in model: preprocessing and the fixed split.

The images are the 1797 8x8 digits of the UCI "Optical Recognition of Handwritten Digits"
data set (E. Alpaydin and C. Kaynak, 1998; UCI Machine Learning Repository, licensed CC BY 4.0),
in the copy bundled with scikit-learn (`sklearn.datasets.load_digits`, no download). Each pixel
counts the ink in a 4x4 block of a 32x32 bitmap, an integer in `0..16`.

**Preprocessing.** Pixels are mapped to `[-1, 1]` by $x \mapsto x/8 - 1$ and the images are
upsampled 2x to 16x16 by bilinear interpolation with half-pixel centres and clamped edges: along
each axis, output pixel $2i$ is $\tfrac34 x_i + \tfrac14 x_{i-1}$ and output pixel $2i+1$ is
$\tfrac34 x_i + \tfrac14 x_{i+1}$ (indices clamped to `0..7`), so the mean intensity is kept and
no value leaves `[-1, 1]`. 16x16 is the smallest size a UNet with three resolution levels
(two downsamplings, 16 -> 8 -> 4, self-attention at 8x8 and 4x4) can use without the 4x4 level
collapsing to 2x2, and it keeps training affordable on two CPU cores (a 32x32 model costs about
four times as much per step). Layout is `NCHW`, `(n, 1, 16, 16)`.

**Split.** Stratified by label with scikit-learn's `train_test_split(test_size=360,
random_state=0, stratify=labels)`: 1437 training and 360 test images (36 per class). The test
split is stored in the package (`checkpoints/digits_test.safetensors`, 25 kB: the original 8x8
pixel counts as uint8, the labels and the indices into `load_digits()`) so that it is available
without scikit-learn; the training split is rebuilt from scikit-learn and those indices.
"""

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from jaxtyping import Float, Int


CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
TEST_FILE = CHECKPOINT_DIR / "digits_test.safetensors"
NULL_LABEL = 10
IMAGE_SHAPE = (1, 16, 16)
SPLIT_SEED = 0
TEST_SIZE = 360


def _upsample_axis(x: np.ndarray, axis: int) -> np.ndarray:
    n = x.shape[axis]
    prev = np.take(x, np.clip(np.arange(n) - 1, 0, n - 1), axis=axis)
    nxt = np.take(x, np.clip(np.arange(n) + 1, 0, n - 1), axis=axis)
    even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
    out = np.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)


def preprocess_digits(images: Float[np.ndarray, "n 8 8"]) -> Float[np.ndarray, "n 1 16 16"]:
    """`load_digits` images (pixels in `0..16`) -> float32 `(n, 1, 16, 16)` in `[-1, 1]`
    (bilinear 2x upsampling, see the module docstring)."""
    images = np.asarray(images, np.float64)
    if images.ndim != 3 or images.shape[1:] != (8, 8):
        raise ValueError(f"Expected 8x8 digit images of shape (n, 8, 8), got {images.shape}.")
    x = images / 8.0 - 1.0
    x = _upsample_axis(_upsample_axis(x, 1), 2)
    return x[:, None].astype(np.float32)


def test_split() -> tuple[Float[np.ndarray, "n 1 16 16"], Int[np.ndarray, " n"]]:
    """The committed test split: float32 images `(360, 1, 16, 16)` in `[-1, 1]` and int32
    labels `(360,)`."""
    from safetensors.numpy import load_file

    data = load_file(str(TEST_FILE))
    return preprocess_digits(data["pixels"]), data["labels"].astype(np.int32)


def train_split() -> tuple[Float[np.ndarray, "n 1 16 16"], Int[np.ndarray, " n"]]:
    """The training split (1437 images), rebuilt from scikit-learn's bundled copy; needs
    scikit-learn (an experiments dependency, not a runtime one)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "The digits training split is rebuilt from scikit-learn's bundled copy: install "
            "scikit-learn (rexjax's `experiments` extra)."
        ) from error
    from safetensors.numpy import load_file

    bunch = load_digits()
    test = load_file(str(TEST_FILE))["indices"]
    train = np.setdiff1d(np.arange(len(bunch.target)), test)
    return preprocess_digits(bunch.images[train]), bunch.target[train].astype(np.int32)


def make_test_file() -> None:
    """Write `digits_test.safetensors` from scikit-learn (run once; the file is committed)."""
    from safetensors.numpy import save_file
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    index = np.arange(len(bunch.target))
    _, test = train_test_split(
        index, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=bunch.target
    )
    test = np.sort(test)
    CHECKPOINT_DIR.mkdir(exist_ok=True)
    save_file(
        {
            "pixels": bunch.images[test].astype(np.uint8),
            "labels": bunch.target[test].astype(np.int32),
            "indices": test.astype(np.int32),
        },
        str(TEST_FILE),
    )


# The built-in model: a class-conditional diffusers `UNet2DModel` (labels 0-9, null label 10 for
# classifier-free guidance), three levels 16/8/4 with self-attention at 8x8 and 4x4.
DIGITS_UNET_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "_class_name": "UNet2DModel",
        "sample_size": 16,
        "in_channels": 1,
        "out_channels": 1,
        "block_out_channels": (16, 32, 64),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "attention_head_dim": 32,
        "norm_num_groups": 8,
        "num_class_embeds": NULL_LABEL + 1,
    }
)

# A standard diffusers DDPM scheduler config: Ho et al.'s linear betas, epsilon prediction.
DIGITS_SCHEDULER_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": 1000,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "prediction_type": "epsilon",
        "variance_type": "fixed_small",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "timestep_spacing": "leading",
        "steps_offset": 0,
        "trained_betas": None,
    }
)
