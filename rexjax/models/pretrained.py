"""The built-in trained model: a class-conditional diffusion model of 16x16 handwritten digits,
its held-out test images and an evaluation classifier, all shipped inside the package (nothing is
downloaded).

- [`rexjax.models.pretrained.digits_unet`][]: a diffusers `UNet2DModel` with
    `num_class_embeds=11` (labels 0-9, `NULL_LABEL = 10` for classifier-free guidance), trained
    here with `experiments/train_digits.py` (epsilon prediction, DDPM linear-beta schedule,
    1000 steps). The checkpoint in `CHECKPOINT_DIR / "digits"` is in diffusers' layout, so
    diffusers' `UNet2DModel.from_pretrained` and `DDPMScheduler.from_pretrained(...,
    subfolder="scheduler")` load it too.
- [`rexjax.models.pretrained.digits_term`][]: the same as a `rexjax.DiffusionTerm`.
- [`rexjax.models.pretrained.digits_test_split`][]: the 360 held-out test images.
- [`rexjax.models.pretrained.digits_classifier`][]: a small CNN trained on the training split
    (99.7% test accuracy); `digits_reference_statistics`, `feature_statistics` and
    `frechet_distance` give FD-digits, the Fréchet distance in its 64 penultimate features.

Data: the UCI "Optical Recognition of Handwritten Digits" set (E. Alpaydin and C. Kaynak, 1998;
UCI Machine Learning Repository, CC BY 4.0) as bundled with scikit-learn, upsampled from 8x8 to
16x16; see `rexjax/models/_digits.py` for the preprocessing and the split.
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, Int

from .._term import DiffusionTerm
from ._adapter import diffusion_term
from ._digits import CHECKPOINT_DIR, IMAGE_SHAPE, NULL_LABEL, test_split
from ._digits_classifier import DigitsClassifier, load_classifier
from ._fd import feature_statistics, frechet_distance
from ._unet import UNet, load_unet


__all__ = [
    "CHECKPOINT_DIR",
    "IMAGE_SHAPE",
    "NULL_LABEL",
    "DigitsClassifier",
    "digits_classifier",
    "digits_reference_statistics",
    "feature_statistics",
    "frechet_distance",
    "digits_term",
    "digits_test_split",
    "digits_unet",
]

_UNET_DIR = CHECKPOINT_DIR / "digits"
_CLASSIFIER_FILE = CHECKPOINT_DIR / "digits_classifier.safetensors"
_FEATURES_FILE = CHECKPOINT_DIR / "digits_features.safetensors"


def digits_unet(dtype=jnp.float32) -> UNet:
    """The trained digits UNet (EMA weights).

    Call it as `unet(x, timestep, class_labels=labels)` with `x` of shape `(b, 1, 16, 16)`,
    discrete `timestep` in `0..999` and int `labels` `(b,)` in `0..10` (10 = unconditional).

    **Arguments:**

    - `dtype`: as for [`rexjax.models.load_unet`][] (float32, bfloat16, float16, float64).
    """
    return load_unet(_UNET_DIR, dtype)


def digits_term(guidance_scale: float | None = None, dtype=jnp.float32) -> DiffusionTerm:
    r"""The digits model as a `rexjax.DiffusionTerm`: `model_type="noise"`, the discrete DDPM
    schedule of its scheduler config, continuous time $t \in [1/1000, 1]$.

    `args` are the class labels, int32 `(b,)`; `NULL_LABEL` (10) samples unconditionally.

    **Arguments:**

    - `guidance_scale`: classifier-free guidance weight $w$: the model returns
        $\hat\epsilon(x, \varnothing) + w(\hat\epsilon(x, y) - \hat\epsilon(x, \varnothing))$
        (two UNet evaluations as one batch of `2b`); `None` for the plain conditional model.
    - `dtype`: the UNet's parameter and compute dtype.
    """
    return diffusion_term(digits_unet(dtype), _UNET_DIR, guidance_scale, NULL_LABEL)


def digits_test_split() -> tuple[Float[np.ndarray, "n 1 16 16"], Int[np.ndarray, " n"]]:
    """The held-out test split: float32 images `(360, 1, 16, 16)` in `[-1, 1]` and int32
    labels `(360,)` (never seen by the UNet or the classifier in training)."""
    return test_split()


def digits_classifier(dtype=jnp.float32) -> DigitsClassifier:
    """The evaluation classifier (trained by `experiments/train_digits_classifier.py` on the
    training split): `.logits(x)`, `.features(x)` (64 penultimate features) and `.predict(x)`
    on images in the format of [`rexjax.models.pretrained.digits_test_split`][]."""
    return load_classifier(_CLASSIFIER_FILE, dtype)


def digits_reference_statistics(
    split: str = "test",
) -> tuple[Float[np.ndarray, " 64"], Float[np.ndarray, "64 64"]]:
    """The mean and covariance (float64) of the classifier's features on the `"test"` (360)
    or `"train"` (1437) split, for FD-digits:
    `frechet_distance(*feature_statistics(digits_classifier().features(x)),
    *digits_reference_statistics())`."""
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}.")
    from safetensors.numpy import load_file

    stats = load_file(str(_FEATURES_FILE))
    return stats[f"{split}.mean"], stats[f"{split}.cov"]
