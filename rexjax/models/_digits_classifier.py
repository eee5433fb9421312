"""A small CNN that classifies the 16x16 digits: the evaluation network of the built-in model
(class accuracy of samples and edits, and the feature space of "FD-digits", the analogue of
FID/FD-DINOv2 on this data)."""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


# name -> shape; convolution kernels HWIO, dense kernels (in, out).
CLASSIFIER_SHAPES = {
    "conv1.kernel": (3, 3, 1, 16),
    "conv1.bias": (16,),
    "conv2.kernel": (3, 3, 16, 32),
    "conv2.bias": (32,),
    "conv3.kernel": (3, 3, 32, 64),
    "conv3.bias": (64,),
    "dense1.kernel": (4 * 4 * 64, 64),
    "dense1.bias": (64,),
    "dense2.kernel": (64, 10),
    "dense2.bias": (10,),
}
FEATURE_DIM = 64


def _conv(x: Array, kernel: Array, bias: Array) -> Array:
    y = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NCHW", "HWIO", "NCHW")
    )
    return y + bias[:, None, None]


def _pool(x: Array) -> Array:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


class DigitsClassifier(eqx.Module):
    """A 10-way classifier of 16x16 digit images in `[-1, 1]` (the format of
    [`rexjax.models.pretrained.digits_test_split`][]).

    conv3x3(16) - ReLU - avgpool2 - conv3x3(32) - ReLU - avgpool2 - conv3x3(64) - ReLU -
    dense(64) - ReLU [features] - dense(10) [logits]; 89,546 parameters.

    **Arguments:**

    - `params`: `{name: array}` with the names and shapes of `CLASSIFIER_SHAPES`.
    """

    params: dict[str, Array]

    def __check_init__(self):
        shapes = {k: tuple(v.shape) for k, v in self.params.items()}
        if shapes != CLASSIFIER_SHAPES:
            raise ValueError(
                f"DigitsClassifier parameters {shapes} do not match {CLASSIFIER_SHAPES}."
            )

    def features(self, x: Float[ArrayLike, "n 1 16 16"]) -> Float[Array, "n 64"]:
        """The penultimate-layer features (after the ReLU), `(n, 64)`."""
        p = self.params
        x = jnp.asarray(x)
        if x.ndim != 4 or x.shape[1:] != (1, 16, 16):
            raise ValueError(f"Expected images of shape (n, 1, 16, 16), got {x.shape}.")
        x = x.astype(p["conv1.kernel"].dtype)
        h = _pool(jax.nn.relu(_conv(x, p["conv1.kernel"], p["conv1.bias"])))
        h = _pool(jax.nn.relu(_conv(h, p["conv2.kernel"], p["conv2.bias"])))
        h = jax.nn.relu(_conv(h, p["conv3.kernel"], p["conv3.bias"]))
        h = h.reshape(h.shape[0], -1)
        return jax.nn.relu(h @ p["dense1.kernel"] + p["dense1.bias"])

    def logits(self, x: Float[ArrayLike, "n 1 16 16"]) -> Float[Array, "n 10"]:
        """Class logits, `(n, 10)`."""
        return self.features(x) @ self.params["dense2.kernel"] + self.params["dense2.bias"]

    def predict(self, x: Float[ArrayLike, "n 1 16 16"]) -> Array:
        """The predicted labels, int32 `(n,)`."""
        return jnp.argmax(self.logits(x), axis=-1).astype(jnp.int32)


def init_classifier(key: PRNGKeyArray) -> DigitsClassifier:
    """He-normal kernels, zero biases (for training)."""
    params = {}
    for (name, shape), k in zip(
        CLASSIFIER_SHAPES.items(), jax.random.split(key, len(CLASSIFIER_SHAPES)), strict=True
    ):
        if name.endswith("bias"):
            params[name] = jnp.zeros(shape, jnp.float32)
        else:
            fan_in = int(np.prod(shape[:-1]))
            params[name] = jax.random.normal(k, shape, jnp.float32) * np.sqrt(2.0 / fan_in)
    return DigitsClassifier(params)


def save_classifier(classifier: DigitsClassifier, path: str | Path) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.asarray(v) for k, v in classifier.params.items()}, str(path))


def load_classifier(path: str | Path, dtype=jnp.float32) -> DigitsClassifier:
    from safetensors.numpy import load_file

    return DigitsClassifier({k: jnp.asarray(v, dtype) for k, v in load_file(str(path)).items()})
